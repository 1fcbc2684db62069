//! What a manufacturer receives passes through small-cell suppression: every MeasureReport in a
//! JSON answer to a manufacturer (an `$evaluate-measure` report, a published report read,
//! searched, included or listed in history) is masked by [`small_cells::suppress`] before it
//! leaves the server. Other callers' answers pass untouched.
//!
//! [`small_cells::suppress`]: crate::reports::small_cells::suppress

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::auth::access::Access;
use crate::error::FhirError;
use crate::reports::small_cells;

/// The middleware (runs inside the guard, which has put the caller in the request).
pub async fn mask(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let manufacturer = req
        .extensions()
        .get::<Access>()
        .is_some_and(Access::is_manufacturer);
    let resp = next.run(req).await;
    if !manufacturer || s.small_cell_threshold == 0 {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return FhirError::Storage("response body could not be read".into()).into_response();
    };
    let Ok(mut doc) = crate::fhir::number_text::parse(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if !small_cells::suppress(&mut doc, s.small_cell_threshold) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    match serde_json::to_vec(&doc) {
        Ok(out) => {
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(out))
        }
        Err(e) => FhirError::Storage(e.to_string()).into_response(),
    }
}

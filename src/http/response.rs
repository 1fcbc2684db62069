//! Building FHIR responses: a resource or Bundle body with the version headers and Prefer.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::headers::{set_version_headers, Return};
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::interaction::write::Written;

const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A JSON body response.
pub fn json(status: StatusCode, body: &Value) -> Response {
    bytes(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A response from already-serialized FHIR JSON.
pub fn bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    resp
}

/// The response to a write (create, update, patch, delete) honouring `Prefer`.
pub fn written(base: &str, w: &Written, prefer: Return, issues: &[Issue]) -> Response {
    let status = StatusCode::from_u16(w.status).unwrap_or(StatusCode::OK);
    let mut resp = match (status, prefer, &w.resource) {
        (StatusCode::NO_CONTENT, _, _) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = StatusCode::NO_CONTENT;
            r
        }
        (_, Return::Minimal, _) | (_, _, None) => {
            let mut r = Response::new(Body::empty());
            *r.status_mut() = status;
            r
        }
        (_, Return::OperationOutcome, _) => {
            let mut all = issues.to_vec();
            all.push(Issue::information(
                "informational",
                format!(
                    "{}/{} stored as version {}",
                    w.rtype,
                    w.id,
                    w.version.unwrap_or(0)
                ),
            ));
            json(status, &operation_outcome(&all))
        }
        (_, Return::Representation, Some(r)) => json(status, r),
    };
    if let Some(v) = w.version {
        if w.status != 204 {
            set_version_headers(resp.headers_mut(), v, w.last_updated_ms);
            let loc = format!("{base}/{}/{}/_history/{v}", w.rtype, w.id);
            if let Ok(h) = HeaderValue::from_str(&loc) {
                resp.headers_mut().insert(header::LOCATION, h.clone());
                resp.headers_mut().insert(header::CONTENT_LOCATION, h);
            }
        } else {
            set_version_headers(resp.headers_mut(), v, w.last_updated_ms);
        }
    }
    resp
}

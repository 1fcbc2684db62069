//! `/health` (liveness) and `/ready` (readiness: the store accepts work).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use crate::error::FhirError;

/// Liveness: the process answers.
pub async fn live() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

/// Readiness: the store is open and readable.
pub async fn ready(State(s): State<AppState>) -> Response {
    let readable = s
        .services
        .store
        .current("Patient", "readiness-probe")
        .is_ok();
    if s.services.store.ready() && readable {
        (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response()
    } else {
        FhirError::Unavailable("the store is not ready".into()).into_response()
    }
}

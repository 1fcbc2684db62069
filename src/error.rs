//! The server's one error type, and the one place where errors become OperationOutcome responses.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::fhir::outcome::{operation_outcome, Issue};

/// Everything that can go wrong while serving a request.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    /// Request syntax problem (400).
    #[error("{0}")]
    BadRequest(String),
    /// Resource content failed validation (400 with one issue per problem, or 422 on business rules).
    #[error("resource is invalid ({} issues)", .0.len())]
    Invalid(Vec<Issue>),
    /// No valid credentials (401, with a `WWW-Authenticate: Bearer` challenge).
    #[error("{0}")]
    Unauthorized(String),
    /// Authenticated, but the scopes or the party's role do not allow this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Unknown resource type, id, route or operation (404).
    #[error("{0}")]
    NotFound(String),
    /// The resource was deleted (410).
    #[error("{0}")]
    Gone(String),
    /// Method not allowed on this route (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Version conflict or ambiguous conditional match (412).
    #[error("{0}")]
    PreconditionFailed(String),
    /// Concurrent modification detected (409).
    #[error("{0}")]
    Conflict(String),
    /// Body larger than the configured limit (413).
    #[error("request body exceeds the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// The requested response format cannot be produced (406).
    #[error("{0}")]
    NotAcceptable(String),
    /// A request that exceeds a configured limit other than body size (413).
    #[error("{0}")]
    TooCostly(String),
    /// A request line longer than the HTTP layer accepts (414).
    #[error("{0}")]
    UriTooLong(String),
    /// Header fields larger than the HTTP layer accepts (431).
    #[error("{0}")]
    HeadersTooLarge(String),
    /// Content-Type that the server cannot read (415).
    #[error("unsupported media type {0}")]
    UnsupportedMediaType(String),
    /// An operation that is recognised but not supported (501).
    #[error("{0}")]
    NotImplemented(String),
    /// Storage failure (500; never caused by client input).
    #[error("storage failure: {0}")]
    Storage(String),
    /// The server is shutting down or the store is closed (503).
    #[error("{0}")]
    Unavailable(String),
}

/// Result alias used throughout the server.
pub type Result<T, E = FhirError> = std::result::Result<T, E>;

impl FhirError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            FhirError::BadRequest(_) | FhirError::Invalid(_) => StatusCode::BAD_REQUEST,
            FhirError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            FhirError::Forbidden(_) => StatusCode::FORBIDDEN,
            FhirError::NotFound(_) => StatusCode::NOT_FOUND,
            FhirError::Gone(_) => StatusCode::GONE,
            FhirError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            FhirError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            FhirError::Conflict(_) => StatusCode::CONFLICT,
            FhirError::PayloadTooLarge(_) | FhirError::TooCostly(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            FhirError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            FhirError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            FhirError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            FhirError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            FhirError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            FhirError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            FhirError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The issues this error reports.
    pub fn issues(&self) -> Vec<Issue> {
        let code = match self {
            FhirError::Invalid(issues) => return issues.clone(),
            FhirError::BadRequest(_) => "invalid",
            FhirError::Unauthorized(_) => "login",
            FhirError::Forbidden(_) => "forbidden",
            FhirError::NotFound(_) => "not-found",
            FhirError::Gone(_) => "deleted",
            FhirError::MethodNotAllowed | FhirError::NotImplemented(_) => "not-supported",
            FhirError::PreconditionFailed(_) | FhirError::Conflict(_) => "conflict",
            FhirError::PayloadTooLarge(_)
            | FhirError::TooCostly(_)
            | FhirError::UriTooLong(_)
            | FhirError::HeadersTooLarge(_) => "too-costly",
            FhirError::UnsupportedMediaType(_) | FhirError::NotAcceptable(_) => "not-supported",
            FhirError::Storage(_) => "exception",
            FhirError::Unavailable(_) => "transient",
        };
        vec![Issue::error(code, self.to_string())]
    }

    /// The OperationOutcome for this error.
    pub fn outcome(&self) -> serde_json::Value {
        operation_outcome(&self.issues())
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        if matches!(self, FhirError::Storage(_)) {
            tracing::error!(error = %self, "storage failure");
        }
        let body = serde_json::to_vec(&self.outcome()).unwrap_or_default();
        let mut resp = (self.status(), body).into_response();
        if let FhirError::Unauthorized(why) = &self {
            let why: String = why
                .chars()
                .map(|c| if c == '"' || !c.is_ascii() { '\'' } else { c })
                .collect();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "Bearer realm=\"vbc-server\", error=\"invalid_token\", error_description=\"{why}\""
            )) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/fhir+json; charset=utf-8"),
        );
        resp
    }
}

impl From<sled::Error> for FhirError {
    fn from(e: sled::Error) -> Self {
        FhirError::Storage(e.to_string())
    }
}

impl From<fjall::Error> for FhirError {
    fn from(e: fjall::Error) -> Self {
        FhirError::Storage(e.to_string())
    }
}

//! Requests naming an operation (`$name`) the server does not serve: the generic routes would
//! read `$export` as a resource type, an id or a compartment, and answer with a misleading
//! error. This middleware answers them first: 501 for an operation of the FHIR specifications
//! the server does not implement, 404 for any other name, both with an OperationOutcome that
//! lists the operations the server has.

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::FhirError;

/// Operations defined by FHIR R4 and its common implementation guides that this server does
/// not implement.
const STANDARD: &[&str] = &[
    "$export",
    "$everything",
    "$import",
    "$bulk-submit",
    "$bulk-submit-data",
    "$meta",
    "$meta-add",
    "$meta-delete",
    "$expand",
    "$lookup",
    "$validate-code",
    "$subsumes",
    "$translate",
    "$closure",
    "$match",
    "$document",
    "$process-message",
    "$convert",
    "$graphql",
    "$graph",
    "$lastn",
    "$stats",
    "$populate",
    "$questionnaire",
    "$apply",
    "$find",
    "$member-match",
    "$docref",
    "$purge",
    "$reindex",
    "$evaluate",
    "$submit-data-bulk",
];

/// What the server serves, for the error's text.
const SERVED: &str = "$validate, Patient/[id]/$everything, Measure: $evaluate-measure, $data-requirements, $collect-data, $submit-data, $care-gaps, $outcomes, $publish-reports; $load-contract; AuditEvent/$verify-chain (see /metadata)";

/// The error for a request whose path names `op` on a generic route.
pub fn error(op: &str) -> FhirError {
    if STANDARD.contains(&op) {
        FhirError::NotImplemented(format!(
            "operation {op} is not supported by this server; it serves {SERVED}"
        ))
    } else {
        FhirError::NotFound(format!(
            "unknown operation {op}; this server serves {SERVED}"
        ))
    }
}

/// The middleware (a route layer: it sees which route matched).
pub async fn check(req: Request, next: Next) -> Response {
    let matched_op = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|m| m.as_str().contains('$'));
    // Patient/[id]/$everything is served by the compartment route
    let segments: Vec<&str> = req.uri().path().split('/').skip(1).collect();
    let everything = matches!(segments.as_slice(), ["Patient", _, "$everything"]);
    if !matched_op && !everything {
        if let Some(op) = segments.iter().find(|s| s.starts_with('$')) {
            return error(op).into_response();
        }
    }
    next.run(req).await
}

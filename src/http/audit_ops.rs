//! `GET /AuditEvent/$verify-chain`: walk the audit hash chain and answer a Parameters resource
//! (`events`, `intact`, and for a broken chain `brokenAt` and `reason`). Administrators and
//! auditors only.

use axum::http::StatusCode;
use axum::response::Response;

use super::guard::Caller;
use super::response;
use crate::auth::access::Op;
use crate::auth::audit;
use crate::error::{FhirError, Result};

/// The handler.
pub async fn verify_chain(Caller(s): Caller) -> Result<Response> {
    s.services.access.operation(Op::VerifyAudit, None)?;
    let log = s
        .services
        .audit
        .log()
        .cloned()
        .ok_or_else(|| FhirError::NotFound("this server keeps no audit trail".into()))?;
    s.services.audit.flush().await;
    let verified = tokio::task::spawn_blocking(move || log.verify())
        .await
        .map_err(|e| FhirError::Storage(e.to_string()))??;
    Ok(response::json(
        StatusCode::OK,
        &audit::verified_parameters(&verified),
    ))
}

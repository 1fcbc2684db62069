//! `$validate` at type and instance level: 200 with an OperationOutcome listing every issue.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use super::guard::Caller;
use super::negotiate::FhirBody;
use super::{check_type, response, AppState};
use crate::error::{FhirError, Result};
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::fhir::validate::Context;

/// The resource to validate: the body itself, or the `resource` parameter of a Parameters body.
fn resource_from(body: Value) -> Result<Value> {
    if body["resourceType"] == "Parameters" {
        let params = body["parameter"].as_array().cloned().unwrap_or_default();
        return params
            .into_iter()
            .find(|p| p["name"] == "resource")
            .and_then(|p| p.get("resource").cloned())
            .ok_or_else(|| {
                FhirError::BadRequest("Parameters needs a 'resource' parameter".into())
            });
    }
    Ok(body)
}

fn run(s: &AppState, rtype: &str, resource: &Value, id: Option<&str>) -> Response {
    let mut issues: Vec<Issue> = Vec::new();
    if resource["resourceType"].as_str() != Some(rtype) {
        issues.push(
            Issue::error("invalid", format!("resourceType must be {rtype}")).at("resourceType"),
        );
    }
    if let Some(id) = id {
        if resource["id"].as_str() != Some(id) {
            issues.push(
                Issue::error(
                    "invalid",
                    format!("id must be '{id}' for instance-level $validate"),
                )
                .at(format!("{rtype}.id")),
            );
        }
    }
    issues.extend(s.services.validator.validate(resource, Context::default()));
    response::json(StatusCode::OK, &operation_outcome(&issues))
}

/// `POST [type]/$validate`
pub async fn type_level(
    Caller(s): Caller,
    Path(rtype): Path<String>,
    body: FhirBody,
) -> Result<Response> {
    check_type(&rtype)?;
    s.services
        .access
        .operation(crate::auth::access::Op::Validate, None)?;
    let resource = resource_from(body.resource()?)?;
    Ok(run(&s, &rtype, &resource, None))
}

/// `POST [type]/[id]/$validate` (validates the body, or the stored version when the body is empty)
pub async fn instance_level(
    Caller(s): Caller,
    Path((rtype, id)): Path<(String, String)>,
    body: FhirBody,
) -> Result<Response> {
    check_type(&rtype)?;
    s.services
        .access
        .operation(crate::auth::access::Op::Validate, None)?;
    let resource = if body.bytes.iter().all(u8::is_ascii_whitespace) {
        s.services.read(&rtype, &id)?.resource
    } else {
        resource_from(body.resource()?)?
    };
    Ok(run(&s, &rtype, &resource, Some(&id)))
}

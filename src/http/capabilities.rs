//! `GET /metadata`: the CapabilityStatement, built at start from `capability/` and from what the
//! server implements (every resource type, its interactions, search parameters and operations).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{response, AppState};
use crate::error::{FhirError, Result};
use crate::fhir::resource_types::RESOURCE_TYPES;
use crate::search::SUPPORTED_PARAMS;

const TEMPLATE: &str = include_str!("../../capability/CapabilityStatement-vbc-server.json");

const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
];

/// Build the CapabilityStatement JSON.
pub fn build(base_url: Option<&str>) -> Result<Value> {
    let mut cs: Value = serde_json::from_str(TEMPLATE)
        .map_err(|e| FhirError::Storage(format!("bad capability template: {e}")))?;
    if let Some(b) = base_url {
        cs["implementation"]["url"] = json!(b);
    }
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|t| {
            json!({
                "type": t,
                "interaction": TYPE_INTERACTIONS.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "modified-since",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchParam": SUPPORTED_PARAMS.iter().map(|(name, ty, doc)| json!({
                    "name": name,
                    "definition": if *name == "_id" { "http://hl7.org/fhir/SearchParameter/Resource-id".to_string() } else { format!("http://hl7.org/fhir/SearchParameter/{t}-identifier") },
                    "type": ty,
                    "documentation": doc
                })).collect::<Vec<_>>(),
                "operation": [{
                    "name": "validate",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"
                }]
            })
        })
        .collect();
    cs["rest"][0]["resource"] = Value::Array(resources);
    Ok(cs)
}

/// metadata
pub async fn metadata(State(s): State<AppState>) -> Result<Response> {
    Ok(response::bytes(
        StatusCode::OK,
        s.capability.as_ref().clone(),
    ))
}

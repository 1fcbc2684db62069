//! `GET /metadata`: the CapabilityStatement, built at start from `capability/` and from what the
//! server implements (every resource type, its interactions, search parameters and operations).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::{response, AppState};
use crate::error::{FhirError, Result};
use crate::fhir::operation_definitions;
use crate::fhir::resource_types::RESOURCE_TYPES;
use crate::search::params::ParamType;

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

/// The interactions on AuditEvent: the server alone writes the audit trail.
const AUDIT_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "history-instance",
    "history-type",
    "search-type",
];

/// The security block: SMART backend services with the token endpoint (when auth is on).
fn security(token_url: Option<&str>) -> Value {
    match token_url {
        Some(token) => json!({
            "cors": true,
            "service": [{
                "coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR",
                    "display": "SMART-on-FHIR"
                }],
                "text": "SMART backend services: client_credentials with private_key_jwt (RS384, ES384)"
            }],
            "extension": [{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": token}]
            }],
            "description": "Every request except /metadata, /.well-known/smart-configuration and /health needs a bearer token from the token endpoint (SMART backend services). Scopes v1 and v2 are enforced on every interaction, and each party sees only its own data."
        }),
        None => json!({
            "cors": true,
            "description": "Authentication is OFF (--no-auth, loopback only): every request acts with full rights."
        }),
    }
}

/// What a type's entry says beyond its interactions.
fn documentation(rtype: &str) -> Option<&'static str> {
    match rtype {
        "Measure" | "Library" | "ValueSet" => Some("Resources of a loaded contract version are immutable: a PUT, PATCH or DELETE that would change one is refused with 409 (load the changed contract under a new version); a PUT of identical content (server-assigned meta.versionId, meta.lastUpdated and tags aside) succeeds with 200 and creates no new version."),
        "MeasureReport" => Some("Published reports are immutable: a change is refused with 409 (publish the period again to issue a correction); a PUT of identical content succeeds with 200 and creates no new version. Manufacturers receive every report with small-cell suppression (counts of 1 to 10 patients masked with the data-absent-reason extension, with complementary suppression)."),
        "OperationDefinition" => Some("The server's own OperationDefinitions (one per operation listed here) are stored at start and restored there if changed."),
        "AuditEvent" => Some("Written by the server only (a hash chain); read and searched by administrators and auditors."),
        _ => None,
    }
}

/// Build the CapabilityStatement JSON; `token_url` is the token endpoint when auth is on.
pub fn build(base_url: Option<&str>, token_url: Option<&str>) -> Result<Value> {
    let mut cs: Value = serde_json::from_str(TEMPLATE)
        .map_err(|e| FhirError::Storage(format!("bad capability template: {e}")))?;
    if let Some(b) = base_url {
        cs["implementation"]["url"] = json!(b);
    }
    cs["rest"][0]["security"] = security(token_url);
    let op_defs = operation_definitions::all()?;
    cs["rest"][0]["operation"] = json!(operation_definitions::for_type(&op_defs, None)
        .into_iter()
        .map(|(code, url, doc)| json!({"name": code, "definition": url, "documentation": doc}))
        .collect::<Vec<_>>());
    let engine = crate::search::init(base_url)?;
    let reg = &engine.registry;
    let resources: Vec<Value> = RESOURCE_TYPES
        .iter()
        .map(|t| {
            let mut params: Vec<Value> = vec![json!({
                "name": "_id",
                "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
                "type": "token",
                "documentation": "Logical id of the resource"
            })];
            let mut includes = Vec::new();
            for p in reg.params(t) {
                if p.code == "_id" {
                    continue;
                }
                let mut sp = json!({"name": p.code, "definition": p.url, "type": p.kind.code()});
                if !p.description.is_empty() {
                    sp["documentation"] = json!(p.description);
                }
                params.push(sp);
                if p.kind == ParamType::Reference {
                    includes.push(format!("{t}:{}", p.code));
                }
            }
            for (alias, real) in reg.aliases(t) {
                if let Some(p) = reg.param(t, &real) {
                    params.push(json!({
                        "name": alias,
                        "definition": p.url,
                        "type": p.kind.code(),
                        "documentation": format!("Same as '{real}'")
                    }));
                }
            }
            if *t == "AuditEvent" {
                // the audit trail is searched in place, by its own parameters
                let own = crate::interaction::audit_search::PARAMS;
                params.retain(|p| own.iter().any(|(n, _)| p["name"] == *n));
                includes.clear();
            }
            let revincludes: Vec<String> = crate::search::params::SEARCHABLE_TYPES
                .iter()
                .filter(|_| *t != "AuditEvent")
                .flat_map(|src| {
                    reg.params(src)
                        .filter(|p| p.kind == ParamType::Reference && (p.targets.is_empty() || p.targets.iter().any(|x| x == t)))
                        .map(move |p| format!("{src}:{}", p.code))
                })
                .collect();
            let ops: Vec<Value> = operation_definitions::for_type(&op_defs, Some(t))
                .into_iter()
                .map(|(code, url, doc)| json!({"name": code, "definition": url, "documentation": doc}))
                .collect();
            let interactions = if *t == "AuditEvent" { AUDIT_INTERACTIONS } else { TYPE_INTERACTIONS };
            let mut r = json!({
                "type": t,
                "interaction": interactions.iter().map(|c| json!({"code": c})).collect::<Vec<_>>(),
                "versioning": "versioned-update",
                "readHistory": true,
                "conditionalRead": "modified-since",
                "searchParam": params,
            });
            if *t != "AuditEvent" {
                // nobody writes the audit trail: no create or update of any kind
                r["updateCreate"] = json!(true);
                r["conditionalCreate"] = json!(true);
                r["conditionalUpdate"] = json!(true);
                r["conditionalDelete"] = json!("single");
            }
            if let Some(doc) = documentation(t) {
                r["documentation"] = json!(doc);
            }
            if !ops.is_empty() {
                r["operation"] = json!(ops);
            }
            if !includes.is_empty() {
                includes.push("*".into());
                r["searchInclude"] = json!(includes);
            }
            if !revincludes.is_empty() {
                r["searchRevInclude"] = json!(revincludes);
            }
            r
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

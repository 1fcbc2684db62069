//! The client registration API (administrators only): `GET /auth/clients` lists the registered
//! clients, `PUT /auth/clients/{id}` registers or replaces one (JSON: `party`, `role`, `scope`,
//! `jwks` or `jwks_uri`), `DELETE /auth/clients/{id}` removes one. Changes are written back to
//! the registry file (atomically), so they survive a restart; a removed client's tokens stop
//! working at once, and stay refused when the id is registered again (tokens carry the
//! registration they were issued to; a new party, role or keys is a new registration too).

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::guard::Caller;
use super::AppState;
use crate::auth::access::Op;
use crate::auth::clients::{Client, Registry};
use crate::auth::smart_scopes_valid;
use crate::error::{FhirError, Result};

fn auth(s: &AppState) -> Result<&std::sync::Arc<super::smart::Auth>> {
    s.services.access.operation(Op::ManageClients, None)?;
    s.auth
        .as_ref()
        .ok_or_else(|| FhirError::NotFound("authentication is off on this server".into()))
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn save(a: &super::smart::Auth, reg: &Registry) -> Result<()> {
    let Some(path) = &a.registry_file else {
        return Ok(());
    };
    let text = serde_json::to_string_pretty(reg).map_err(|e| FhirError::Storage(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| FhirError::Storage(format!("cannot write {}: {e}", path.display())))
}

/// `GET /auth/clients`
pub async fn list(Caller(s): Caller) -> Result<Response> {
    let a = auth(&s)?;
    let reg = a.registry.read().unwrap_or_else(|p| p.into_inner());
    Ok(json_response(
        StatusCode::OK,
        json!({"clients": reg.clients}),
    ))
}

/// `PUT /auth/clients/{id}`
pub async fn put(Caller(s): Caller, Path(id): Path<String>, body: Bytes) -> Result<Response> {
    let a = auth(&s)?;
    let mut v: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| FhirError::BadRequest(format!("the body is not a JSON client: {e}")))?;
    match v.get("client_id").and_then(|x| x.as_str()) {
        Some(x) if x != id => {
            return Err(FhirError::BadRequest(format!(
                "client_id '{x}' does not match the URL id '{id}'"
            )))
        }
        _ => v["client_id"] = json!(id),
    }
    let client: Client = serde_json::from_value(v)
        .map_err(|e| FhirError::BadRequest(format!("not a valid client: {e}")))?;
    let mut problems = Vec::new();
    if !client.party.starts_with("Organization/") {
        problems.push("party must be an Organization reference (Organization/[id])".to_string());
    }
    if client.jwks.is_none() && client.jwks_uri.is_none() {
        problems.push("a client needs jwks or jwks_uri".to_string());
    }
    if let Err(bad) = smart_scopes_valid(&client.scope) {
        problems.push(format!("not SMART scopes: {bad}"));
    }
    if !problems.is_empty() {
        return Err(FhirError::BadRequest(problems.join("; ")));
    }
    let mut reg = a.registry.write().unwrap_or_else(|p| p.into_inner());
    let mut clients = reg.clients.clone();
    let created = match clients.iter_mut().find(|c| c.client_id == id) {
        Some(c) => {
            // the same holder keeps its registration (and its tokens); another party, role or
            // keys is a new registration, and tokens issued before it are refused
            let mut next = client.clone();
            if c.same_holder(&client) {
                next.registration = c.registration.clone();
            }
            *c = next;
            false
        }
        None => {
            clients.push(client.clone());
            true
        }
    };
    let next = Registry::new(clients);
    save(a, &next)?;
    *reg = next;
    tracing::info!(client = %id, created, "client registered");
    Ok(json_response(
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        serde_json::to_value(&client).map_err(|e| FhirError::Storage(e.to_string()))?,
    ))
}

/// `DELETE /auth/clients/{id}`
pub async fn delete(Caller(s): Caller, Path(id): Path<String>) -> Result<Response> {
    let a = auth(&s)?;
    let mut reg = a.registry.write().unwrap_or_else(|p| p.into_inner());
    if reg.get(&id).is_none() {
        return Err(FhirError::NotFound(format!(
            "no client '{id}' is registered"
        )));
    }
    let next = Registry::new(
        reg.clients
            .iter()
            .filter(|c| c.client_id != id)
            .cloned()
            .collect(),
    );
    save(a, &next)?;
    *reg = next;
    tracing::info!(client = %id, "client removed");
    Ok(StatusCode::NO_CONTENT.into_response())
}

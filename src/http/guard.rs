//! Authentication on the request path and the audit record of every request.
//!
//! The guard middleware reads the bearer token (401 with an OperationOutcome and a
//! `WWW-Authenticate` challenge when it is missing or invalid), puts the caller ([`Access`]) in
//! the request, runs the request and queues its AuditEvent. `/metadata`,
//! `/.well-known/smart-configuration`, `/health`, `/ready` and the token endpoint are open.
//! Handlers take the [`Caller`] extractor: the application state acting for the caller, so every
//! interaction they run is checked against the caller's scopes and party.

use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::listener::Peer;
use super::smart::{CLIENTS_PATH, TOKEN_PATH};
use super::AppState;
use crate::auth::access::{Access, Principal};
use crate::auth::audit;
use crate::auth::scopes::Scope;
use crate::error::FhirError;

/// Paths that need no token.
const OPEN: &[&str] = &[
    "/metadata",
    "/.well-known/smart-configuration",
    "/health",
    "/ready",
    TOKEN_PATH,
];

fn bearer(req: &Request) -> Option<String> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// Who the request comes from (Err: why it is refused).
async fn caller(
    s: &AppState,
    token: Option<String>,
    path: &str,
    request_id: &str,
) -> Result<Access, String> {
    let Some(auth) = &s.auth else {
        tracing::warn!(
            %path,
            "AUTHENTICATION IS OFF (--no-auth): this request acts with full rights"
        );
        return Ok(Access::System);
    };
    let token = token.ok_or("this request needs a bearer token (Authorization: Bearer ...)")?;
    let b = auth.authenticate(&token).await?;
    Ok(Access::Client(Arc::new(Principal {
        party: b.client.party.clone(),
        role: b.client.role,
        scopes: b
            .scope
            .split_whitespace()
            .filter_map(Scope::parse)
            .collect(),
        client_id: b.client.client_id,
        patient: b.patient,
        engine: s.engine.clone(),
        request_id: request_id.to_string(),
    })))
}

/// The middleware.
pub async fn guard(State(s): State<AppState>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if OPEN.contains(&path.as_str()) {
        req.extensions_mut().insert(Access::Anonymous);
        return next.run(req).await;
    }
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let method = req.method().as_str().to_string();
    let query = req.uri().query().map(str::to_string);
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|c| c.0 .0.ip().to_string());
    let token = bearer(&req);
    let (access, resp) = match caller(&s, token, &path, &request_id).await {
        Ok(access) => {
            req.extensions_mut().insert(access.clone());
            (access, next.run(req).await)
        }
        Err(why) => {
            tracing::warn!(%path, reason = %why, "request refused: not authenticated");
            (
                Access::Anonymous,
                FhirError::Unauthorized(why).into_response(),
            )
        }
    };
    // the registration API's bodies hold keys, not patient data: its path is recorded like any
    s.services.audit.record(audit::access_event(
        &access,
        &method,
        if path.starts_with(CLIENTS_PATH) {
            CLIENTS_PATH
        } else {
            &path
        },
        query.as_deref(),
        resp.status().as_u16(),
        &request_id,
        peer.as_deref(),
    ));
    resp
}

/// The application state acting for the request's caller: its [`Services`] check every
/// interaction against the caller's scopes and party, and AuditEvent requests go to the audit
/// trail's store.
///
/// [`Services`]: crate::interaction::Services
pub struct Caller(pub AppState);

impl FromRequestParts<AppState> for Caller {
    type Rejection = FhirError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, FhirError> {
        let access = parts
            .extensions
            .get::<Access>()
            .cloned()
            .unwrap_or(Access::Anonymous);
        let mut s = state.clone();
        s.services = s.services.acting_for(access);
        let first = parts.uri.path().split('/').find(|x| !x.is_empty());
        if first == Some("AuditEvent") {
            if let Some(audit_store) = &state.audit_store {
                s.services.store = audit_store.clone();
            }
        }
        Ok(Caller(s))
    }
}

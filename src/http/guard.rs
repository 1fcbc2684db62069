//! Authentication on the request path and the audit record of every request.
//!
//! The guard middleware reads the bearer token (401 with an OperationOutcome and a
//! `WWW-Authenticate` challenge when it is missing or invalid), puts the caller ([`Access`]) in
//! the request, runs the request and queues its AuditEvent. `/metadata`,
//! `/.well-known/smart-configuration`, `/health`, `/ready` and the token endpoint are open, and
//! so is `/metrics` to loopback peers. The caller goes into the response too, for the access log.
//! Handlers take the [`Caller`] extractor: the application state acting for the caller, so every
//! interaction they run is checked against the caller's scopes and party.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::listener::Peer;
use super::metrics::{self, METRICS_PATH};
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

/// Seconds between reminders that authentication is off (besides the warning at start).
const NO_AUTH_REMINDER_SECS: u64 = 60;
/// When the last reminder was logged (seconds since the epoch; 0: never).
static NO_AUTH_REMINDED: AtomicU64 = AtomicU64::new(0);

/// Remind that authentication is off, at most once a minute (not on every request: the log
/// would be nothing else).
fn remind_no_auth(path: &str) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = NO_AUTH_REMINDED.load(Ordering::Relaxed);
    if now.saturating_sub(last) >= NO_AUTH_REMINDER_SECS
        && NO_AUTH_REMINDED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            %path,
            "AUTHENTICATION IS OFF (--no-auth): requests act with full rights (reminded at most once a minute)"
        );
    }
}

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
        remind_no_auth(path);
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
    let peer_addr = req.extensions().get::<ConnectInfo<Peer>>().map(|c| c.0 .0);
    if OPEN.contains(&path.as_str()) || (path == METRICS_PATH && metrics::open_to(peer_addr)) {
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
    let peer = peer_addr.map(|a| a.ip());
    let token = bearer(&req);
    let (access, mut resp) = match caller(&s, token, &path, &request_id).await {
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
        peer,
    ));
    resp.extensions_mut().insert(access);
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

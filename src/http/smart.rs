//! SMART on FHIR backend services endpoints: `GET /.well-known/smart-configuration` (open, with
//! CORS) and the token endpoint `POST /auth/token` (`client_credentials` with a
//! `private_key_jwt` client assertion). Errors are OAuth JSON: 400 `unsupported_grant_type`,
//! `invalid_request`, `invalid_scope`; 401 `invalid_client`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::AppState;
use crate::auth::assertion::{self, Replays};
use crate::auth::clients::Registry;
use crate::auth::scopes;
use crate::auth::tokens::{Issuer, ACCESS_TOKEN_SECS};

/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/auth/token";

/// The client assertion type of `private_key_jwt`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// What the token endpoint needs.
pub struct Auth {
    /// Registered clients.
    pub registry: Registry,
    /// Signs and verifies access tokens.
    pub issuer: Issuer,
    /// Assertion `jti`s seen.
    pub replays: Replays,
}

impl Auth {
    /// From a registry, with a fresh random signing secret (tokens live five minutes, so a
    /// restart only makes clients ask again).
    pub fn new(registry: Registry, issuer_name: &str) -> Arc<Auth> {
        let secret: Vec<u8> = (0..4)
            .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
            .collect();
        Arc::new(Auth {
            registry,
            issuer: Issuer::new(issuer_name, &secret),
            replays: Replays::default(),
        })
    }
}

fn oauth_error(status: StatusCode, error: &str, description: impl Into<String>) -> Response {
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": error, "error_description": description.into()}).to_string(),
    )
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `GET /.well-known/smart-configuration`.
pub async fn configuration(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let base = s.base(&headers);
    let body = json!({
        "issuer": base,
        "token_endpoint": format!("{base}{TOKEN_PATH}"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["system/*.rs", "system/*.cruds", "system/*.read", "system/*.write", "system/*.*", "patient/*.rs"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    });
    let mut r = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

/// `POST /auth/token`.
pub async fn token(State(s): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(auth) = s.auth.clone() else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "no clients are registered on this server",
        );
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let get = |k: &str| form.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str());
    match get("grant_type") {
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is required",
            )
        }
        Some("client_credentials") => {}
        Some(g) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type '{g}' is not supported; use client_credentials"),
            )
        }
    }
    if get("client_assertion_type") != Some(JWT_BEARER) {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("client_assertion_type must be {JWT_BEARER}"),
        );
    }
    let Some(assertion_jwt) = get("client_assertion") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion is required",
        );
    };
    let Some(requested) = get("scope").filter(|s| !s.trim().is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "scope is required",
        );
    };
    let token_url = format!("{}{TOKEN_PATH}", s.base(&headers));
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let client = match assertion::verify(
        assertion_jwt,
        &auth.registry,
        &token_url,
        &auth.replays,
        now,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(reason = %e, "client assertion refused");
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", e.0);
        }
    };
    let (granted, refused) = scopes::grant(&client.scope, requested);
    if granted.is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            format!(
                "none of the requested scopes may be granted to {}: {}",
                client.client_id,
                refused.join(" ")
            ),
        );
    }
    match auth.issuer.issue(client, &granted, now) {
        Ok(token) => {
            let mut r = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                json!({"access_token": token, "token_type": "bearer", "expires_in": ACCESS_TOKEN_SECS, "scope": granted}).to_string(),
            )
                .into_response();
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => oauth_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            e.to_string(),
        ),
    }
}

//! SMART on FHIR backend services endpoints: `GET /.well-known/smart-configuration` (open, with
//! CORS) and the token endpoint `POST /auth/token` (`client_credentials` with a
//! `private_key_jwt` client assertion, whose `aud` must be the token URL at the configured base
//! URL, whatever the request's Host header says). Every error of the token endpoint is OAuth
//! JSON: 400 `unsupported_grant_type`, `invalid_request`, `invalid_scope`; 401 `invalid_client`;
//! 405 and 413 `invalid_request`.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::json;

use super::AppState;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::auth::assertion::{self, Refused, Replays};
use crate::auth::clients::{Client, Registry};
use crate::auth::keys::KeyCache;
use crate::auth::scopes;
use crate::auth::tokens::{Issuer, ACCESS_TOKEN_SECS};

/// The path of the token endpoint.
pub const TOKEN_PATH: &str = "/auth/token";

/// The path of the client registration API.
pub const CLIENTS_PATH: &str = "/auth/clients";

/// The client assertion type of `private_key_jwt`.
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An external authorization server whose access tokens the server accepts.
#[derive(Debug, Clone)]
pub struct External {
    /// Its `iss`.
    pub issuer: String,
    /// The `aud` its tokens must carry for this server.
    pub audience: String,
    /// Where its signing keys are published.
    pub jwks_url: String,
}

/// What authentication needs: registered clients, the token signer, the replay cache, fetched
/// keys and the external issuer (if any).
pub struct Auth {
    /// Registered clients.
    pub registry: RwLock<Registry>,
    /// Where the registry is kept (the registration API writes it back).
    pub registry_file: Option<PathBuf>,
    /// Signs and verifies access tokens.
    pub issuer: Issuer,
    /// Assertion `jti`s seen.
    pub replays: Replays,
    /// Keys fetched from `jwks_uri`s and the external issuer.
    pub keys: KeyCache,
    /// An external authorization server.
    pub external: Option<External>,
}

/// The claims read from an accepted bearer token.
#[derive(Debug, Clone)]
pub struct Bearer {
    /// The registered client.
    pub client: Client,
    /// The granted scopes.
    pub scope: String,
    /// The patient of `patient/` scopes.
    pub patient: Option<String>,
}

impl Auth {
    /// From a registry, with a fresh random signing secret (tokens live five minutes, so a
    /// restart only makes clients ask again).
    pub fn new(
        registry: Registry,
        registry_file: Option<PathBuf>,
        issuer_name: &str,
        external: Option<External>,
    ) -> Arc<Auth> {
        let secret: Vec<u8> = (0..4)
            .flat_map(|_| uuid::Uuid::new_v4().into_bytes())
            .collect();
        Arc::new(Auth {
            registry: RwLock::new(registry),
            registry_file,
            issuer: Issuer::new(issuer_name, &secret),
            replays: Replays::default(),
            keys: KeyCache::default(),
            external,
        })
    }

    /// The token URL: the audience every client assertion must name (this server's configured
    /// base URL, never a request's Host header).
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.issuer.name())
    }

    /// A registered client by id.
    pub fn client(&self, id: &str) -> Option<Client> {
        self.registry
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Verify a client assertion (keys inline or from the client's `jwks_uri`).
    async fn verify_assertion(&self, jwt: &str, token_url: &str) -> Result<Client, Refused> {
        let iss = assertion::issuer_of(jwt)?;
        let client = self
            .client(&iss)
            .ok_or_else(|| Refused(format!("'{iss}' is not a registered client")))?;
        let now = jsonwebtoken::get_current_timestamp() as i64;
        if let Some(jwks) = &client.jwks {
            assertion::verify_for(jwt, &client, jwks, token_url, &self.replays, now)?;
            return Ok(client);
        }
        let uri = client
            .jwks_uri
            .clone()
            .ok_or_else(|| Refused(format!("{iss} has no registered keys")))?;
        let jwks = self.keys.get(&uri, false).await.map_err(Refused)?;
        match assertion::verify_for(jwt, &client, &jwks, token_url, &self.replays, now) {
            Err(r) if assertion::is_unknown_key(&r) => {
                // a rotated key: ask the client's key URL again
                let jwks = self.keys.get(&uri, true).await.map_err(Refused)?;
                assertion::verify_for(jwt, &client, &jwks, token_url, &self.replays, now)?;
            }
            other => other?,
        }
        Ok(client)
    }

    /// Verify a bearer token: one this server issued, or one of the external issuer (whose
    /// subject or `client_id` must be a registered client: party and role come from the
    /// registration, and the scopes are narrowed to what it allows).
    pub async fn authenticate(&self, token: &str) -> Result<Bearer, String> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| format!("not a signed JWT: {e}"))?;
        let claims = assertion::unverified_claims(token, header.alg)
            .map_err(|e| format!("the token cannot be read: {e}"))?;
        let iss = claims["iss"].as_str().unwrap_or_default();
        if iss == self.issuer.name() {
            let c = self
                .issuer
                .verify(token)
                .map_err(|e| format!("the token is not valid: {e}"))?;
            let client = self
                .client(&c.sub)
                .ok_or_else(|| format!("client {} is no longer registered", c.sub))?;
            if client.registration != c.registration {
                return Err(format!(
                    "client {} was registered again since this token was issued",
                    c.sub
                ));
            }
            // a registration narrowed since the token was issued takes effect at once
            let (scope, _) = scopes::grant(&client.scope, &c.scope);
            return Ok(Bearer {
                client,
                scope,
                patient: None,
            });
        }
        let Some(ext) = &self.external else {
            return Err(format!("tokens of issuer '{iss}' are not accepted"));
        };
        if iss != ext.issuer {
            return Err(format!("tokens of issuer '{iss}' are not accepted"));
        }
        if !matches!(
            header.alg,
            Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::ES256
                | Algorithm::ES384
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512
        ) {
            return Err(format!("alg {:?} is not accepted", header.alg));
        }
        let kid = header.kid.clone().ok_or("the token has no kid")?;
        let mut jwks = self.keys.get(&ext.jwks_url, false).await?;
        if jwks.find(&kid).is_none() {
            jwks = self.keys.get(&ext.jwks_url, true).await?;
        }
        let jwk = jwks
            .find(&kid)
            .ok_or_else(|| format!("the issuer has no key '{kid}'"))?;
        let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("key '{kid}': {e}"))?;
        let mut v = Validation::new(header.alg);
        v.set_issuer(&[&ext.issuer]);
        v.set_audience(&[&ext.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.validate_nbf = true;
        v.leeway = 30;
        let c = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| format!("the token is not valid: {e}"))?
            .claims;
        let client_id = c["client_id"]
            .as_str()
            .or_else(|| c["sub"].as_str())
            .unwrap_or_default();
        let client = self
            .client(client_id)
            .ok_or_else(|| format!("'{client_id}' is not a registered client"))?;
        let asked = c["scope"].as_str().unwrap_or_default();
        let (scope, _) = scopes::grant(&client.scope, asked);
        Ok(Bearer {
            client,
            scope,
            patient: c["patient"].as_str().map(str::to_string),
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
    // with auth on, the issuer's own address (the one assertions must name)
    let base = match &s.auth {
        Some(a) => a.issuer.name().to_string(),
        None => s.base(&headers),
    };
    let body = json!({
        "issuer": base,
        "token_endpoint": format!("{base}{TOKEN_PATH}"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "scopes_supported": ["system/*.rs", "system/*.cruds", "system/*.read", "system/*.write", "system/*.*", "patient/*.rs"],
        "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
    });
    // CORS headers come from the router's CORS layer (any origin by default)
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Most bytes of a token request (a form with a grant type, a scope and a signed assertion).
pub const MAX_TOKEN_REQUEST_BYTES: usize = 64 * 1024;

/// The form of a token request, read up to [`MAX_TOKEN_REQUEST_BYTES`]; a larger body is a 413
/// `invalid_request` (OAuth JSON, like every error of the endpoint).
async fn token_form(body: Body) -> Result<Vec<(String, String)>, Response> {
    let limited = http_body_util::Limited::new(body, MAX_TOKEN_REQUEST_BYTES);
    match limited.collect().await {
        Ok(b) => Ok(form_urlencoded::parse(&b.to_bytes()).into_owned().collect()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("a token request is at most {MAX_TOKEN_REQUEST_BYTES} bytes"),
        )),
        Err(e) => Err(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("could not read the request body: {e}"),
        )),
    }
}

/// Any method but POST at the token endpoint: 405 `invalid_request` (OAuth JSON).
pub async fn token_method_not_allowed() -> Response {
    let mut r = oauth_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request",
        "the token endpoint takes POST only",
    );
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST"));
    r
}

/// `POST /auth/token`.
pub async fn token(State(s): State<AppState>, req: Request) -> Response {
    let declared_len = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let body = req.into_body();
    if declared_len.is_some_and(|n| n > MAX_TOKEN_REQUEST_BYTES) {
        // read what was sent (within bounds) so that the client gets to read the answer
        super::negotiate::drain(body).await;
        return oauth_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            format!("a token request is at most {MAX_TOKEN_REQUEST_BYTES} bytes"),
        );
    }
    let form = match token_form(body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some(auth) = s.auth.clone() else {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "no clients are registered on this server",
        );
    };
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
    let token_url = auth.token_url();
    let now = jsonwebtoken::get_current_timestamp() as i64;
    let client = match auth.verify_assertion(assertion_jwt, &token_url).await {
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
    match auth.issuer.issue(&client, &granted, now) {
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

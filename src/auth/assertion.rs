//! Verifying a client's `private_key_jwt` assertion (SMART App Launch 2.2 backend services):
//! `typ` JWT, `alg` RS384 or ES384 only, the key chosen by `kid` from the client's registered
//! JWKS (and of the algorithm's key type), `iss` = `sub` = a registered client id, `aud` = the
//! token URL, `exp` present and at most five minutes ahead, `nbf` (when present) passed, and a
//! `jti` never seen before within its lifetime.

use std::collections::HashMap;
use std::sync::Mutex;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet};
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::clients::{Client, Registry};

/// The most an assertion's `exp` may lie ahead (seconds).
pub const MAX_LIFETIME_SECS: i64 = 300;

/// Why an assertion was refused (each is `invalid_client`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

fn refused(s: impl Into<String>) -> Refused {
    Refused(s.into())
}

#[derive(Debug, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    exp: i64,
    jti: String,
}

/// `jti`s seen, kept until their assertion expires.
#[derive(Default)]
pub struct Replays {
    seen: Mutex<HashMap<String, i64>>,
}

impl Replays {
    /// Record a jti; false when it was already used (and has not expired).
    fn first_use(&self, key: String, exp: i64, now: i64) -> bool {
        let mut seen = match self.seen.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        seen.retain(|_, e| *e >= now);
        if seen.contains_key(&key) {
            return false;
        }
        seen.insert(key, exp);
        true
    }
}

fn key_for<'k>(jwks: &'k JwkSet, kid: &str) -> Option<&'k Jwk> {
    jwks.keys
        .iter()
        .find(|k| k.common.key_id.as_deref() == Some(kid))
}

/// Verify an assertion of a client with inline keys at `now` (seconds since the epoch); the
/// client it authenticates.
pub fn verify<'r>(
    assertion: &str,
    registry: &'r Registry,
    token_url: &str,
    replays: &Replays,
    now: i64,
) -> Result<&'r Client, Refused> {
    let iss = issuer_of(assertion)?;
    let client = registry
        .get(&iss)
        .ok_or_else(|| refused(format!("'{iss}' is not a registered client")))?;
    let jwks = client
        .jwks
        .as_ref()
        .ok_or_else(|| refused(format!("{iss} has no inline keys")))?;
    verify_for(assertion, client, jwks, token_url, replays, now)?;
    Ok(client)
}

/// Check the header of an assertion (`typ`, `alg`, `kid`) and read the client it claims to come
/// from (`iss`, not yet verified).
pub fn issuer_of(assertion: &str) -> Result<String, Refused> {
    let header = decode_header(assertion)
        .map_err(|e| refused(format!("the client assertion is not a signed JWT: {e}")))?;
    if !header
        .typ
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("JWT"))
    {
        return Err(refused("the client assertion's typ must be JWT"));
    }
    if !matches!(header.alg, Algorithm::RS384 | Algorithm::ES384) {
        return Err(refused(format!(
            "alg {:?} is not accepted; use RS384 or ES384",
            header.alg
        )));
    }
    if header.kid.is_none() {
        return Err(refused("the client assertion has no kid"));
    }
    let claims = unverified_claims(assertion, header.alg)
        .map_err(|e| refused(format!("the client assertion cannot be read: {e}")))?;
    Ok(claims["iss"].as_str().unwrap_or_default().to_string())
}

/// A JWT's claims without checking its signature (to find who should have signed it).
pub fn unverified_claims(
    jwt: &str,
    alg: Algorithm,
) -> jsonwebtoken::errors::Result<serde_json::Value> {
    let mut peek = Validation::new(alg);
    peek.insecure_disable_signature_validation();
    peek.validate_exp = false;
    peek.validate_aud = false;
    peek.required_spec_claims.clear();
    decode::<serde_json::Value>(jwt, &DecodingKey::from_secret(&[]), &peek).map(|d| d.claims)
}

/// Whether a refusal is about a key the client's key set lacks (worth fetching its
/// `jwks_uri` again).
pub fn is_unknown_key(r: &Refused) -> bool {
    r.0.starts_with("no key '")
}

/// Verify an assertion of `client` against its key set `jwks`.
pub fn verify_for(
    assertion: &str,
    client: &Client,
    jwks: &JwkSet,
    token_url: &str,
    replays: &Replays,
    now: i64,
) -> Result<(), Refused> {
    let header = decode_header(assertion)
        .map_err(|e| refused(format!("the client assertion is not a signed JWT: {e}")))?;
    let iss = client.client_id.as_str();
    let kid = header
        .kid
        .as_deref()
        .ok_or_else(|| refused("the client assertion has no kid"))?;
    let jwk = key_for(jwks, kid)
        .ok_or_else(|| refused(format!("no key '{kid}' is registered for {iss}")))?;
    let type_ok = matches!(
        (&jwk.algorithm, header.alg),
        (AlgorithmParameters::EllipticCurve(_), Algorithm::ES384)
            | (AlgorithmParameters::RSA(_), Algorithm::RS384)
    );
    if !type_ok {
        return Err(refused(format!(
            "key '{kid}' is not a key for {:?}",
            header.alg
        )));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|e| refused(format!("key '{kid}': {e}")))?;
    let mut v = Validation::new(header.alg);
    v.set_audience(&[token_url]);
    v.set_issuer(&[iss]);
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    v.validate_nbf = true;
    v.leeway = 0;
    let claims = decode::<Claims>(assertion, &key, &v)
        .map_err(|e| refused(format!("the client assertion is not valid: {e}")))?
        .claims;
    if claims.sub != claims.iss {
        return Err(refused("iss and sub of the client assertion differ"));
    }
    if claims.exp > now + MAX_LIFETIME_SECS {
        return Err(refused(format!(
            "the client assertion expires more than {MAX_LIFETIME_SECS} s ahead"
        )));
    }
    if claims.exp < now {
        return Err(refused("the client assertion has expired"));
    }
    if !replays.first_use(format!("{iss}|{}", claims.jti), claims.exp, now) {
        return Err(refused("the client assertion's jti was already used"));
    }
    Ok(())
}

//! Access tokens the server issues: short-lived HS256 JWTs signed with a server secret, carrying
//! the client, its party and role and the granted scopes.

use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::clients::{Client, Role};

/// Lifetime of an access token (seconds).
pub const ACCESS_TOKEN_SECS: i64 = 300;

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// This server.
    pub iss: String,
    /// The client id.
    pub sub: String,
    /// This server.
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Issued at.
    pub iat: i64,
    /// Token id.
    pub jti: String,
    /// Granted scopes.
    pub scope: String,
    /// The party (`Organization/[id]`).
    pub party: String,
    /// The party's role.
    pub role: Role,
    /// The client's registration when the token was issued ([`Client::registration`]): the
    /// token is refused once the id is registered again.
    pub registration: String,
}

/// Signs and verifies access tokens.
pub struct Issuer {
    issuer: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Issuer {
    /// An issuer named `issuer` (the base URL) with a signing secret.
    pub fn new(issuer: &str, secret: &[u8]) -> Issuer {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[issuer]);
        validation.leeway = 0;
        Issuer {
            issuer: issuer.to_string(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// The issuer name (`iss` of the tokens).
    pub fn name(&self) -> &str {
        &self.issuer
    }

    /// Issue a token for a client with the granted scopes at `now`.
    pub fn issue(
        &self,
        client: &Client,
        scope: &str,
        now: i64,
    ) -> jsonwebtoken::errors::Result<String> {
        let claims = AccessClaims {
            iss: self.issuer.clone(),
            sub: client.client_id.clone(),
            aud: self.issuer.clone(),
            exp: now + ACCESS_TOKEN_SECS,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            scope: scope.to_string(),
            party: client.party.clone(),
            role: client.role,
            registration: client.registration.clone(),
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }

    /// Verify a bearer token.
    pub fn verify(&self, token: &str) -> jsonwebtoken::errors::Result<AccessClaims> {
        decode::<AccessClaims>(token, &self.decoding, &self.validation).map(|d| d.claims)
    }
}

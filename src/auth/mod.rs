//! SMART backend services authentication: registered clients, `private_key_jwt` assertions,
//! scopes, and the access tokens the server issues.
//!
//! Authorization by party and role on every interaction, external token issuers, `jwks_uri`
//! fetching and the audit trail are the next steps (issue 7).

pub mod assertion;
pub mod clients;
pub mod scopes;
pub mod tokens;

#[cfg(test)]
mod tests;

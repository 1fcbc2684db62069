//! SMART backend services authentication and authorization: registered clients,
//! `private_key_jwt` assertions, scopes, the access tokens the server issues (or an external
//! issuer's), the access rules by scope and party, Provenance of submitted Bundles and the
//! tamper-evident audit trail.

pub mod access;
pub mod assertion;
pub mod audit;
pub mod audit_store;
pub mod clients;
pub mod keys;
pub mod provenance;
pub mod scopes;
pub mod tokens;

#[cfg(test)]
mod tests;

/// Check a space-separated scope list: Err with the tokens that are not SMART resource scopes.
pub fn smart_scopes_valid(scope: &str) -> std::result::Result<(), String> {
    let bad: Vec<&str> = scope
        .split_whitespace()
        .filter(|t| scopes::Scope::parse(t).is_none())
        .collect();
    if bad.is_empty() && !scope.trim().is_empty() {
        Ok(())
    } else if bad.is_empty() {
        Err("(empty)".into())
    } else {
        Err(bad.join(" "))
    }
}

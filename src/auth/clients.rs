//! Registered clients (SMART backend services): each has an id, the party (an Organization) it
//! acts for, a role, the scopes it may be granted and its public keys (an inline JWKS; a
//! `jwks_uri` is recorded for fetching).

use std::collections::HashMap;

use jsonwebtoken::jwk::JwkSet;
use serde::{Deserialize, Serialize};

use crate::error::{FhirError, Result};

/// What a client's party does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// An EHR, lab or pharmacy: writes clinical data, reads what it wrote.
    Submitter,
    /// A payer: its members' patient-level data, reports and evidence.
    Payer,
    /// A manufacturer: its contracts' definitions, performance and quality reports.
    Manufacturer,
    /// Manages contracts and clients.
    Admin,
    /// Reads the audit trail.
    Auditor,
}

/// One registered client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    /// The client id (`iss` and `sub` of its assertions).
    pub client_id: String,
    /// The party it acts for (`Organization/[id]`).
    pub party: String,
    /// The party's role.
    pub role: Role,
    /// Scopes it may be granted (space separated).
    pub scope: String,
    /// Its public keys.
    #[serde(default)]
    pub jwks: Option<JwkSet>,
    /// Where its public keys are published.
    #[serde(default)]
    pub jwks_uri: Option<String>,
}

/// The client registry file: `{"clients": [Client, ...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    /// Clients.
    pub clients: Vec<Client>,
    #[serde(skip)]
    by_id: HashMap<String, usize>,
}

impl Registry {
    /// Build from a list.
    pub fn new(clients: Vec<Client>) -> Registry {
        let by_id = clients
            .iter()
            .enumerate()
            .map(|(i, c)| (c.client_id.clone(), i))
            .collect();
        Registry { clients, by_id }
    }

    /// Load a registry file.
    pub fn load(path: &std::path::Path) -> Result<Registry> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FhirError::BadRequest(format!("cannot read {}: {e}", path.display())))?;
        let r: Registry = serde_json::from_str(&text)
            .map_err(|e| FhirError::BadRequest(format!("{}: {e}", path.display())))?;
        for c in &r.clients {
            if c.jwks.is_none() && c.jwks_uri.is_none() {
                return Err(FhirError::BadRequest(format!(
                    "client {} has neither jwks nor jwks_uri",
                    c.client_id
                )));
            }
        }
        Ok(Registry::new(r.clients))
    }

    /// A client by id.
    pub fn get(&self, client_id: &str) -> Option<&Client> {
        self.by_id.get(client_id).and_then(|i| self.clients.get(*i))
    }
}

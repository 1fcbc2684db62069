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
    /// Which registration of the id this is: new each time the id is registered (at start,
    /// again after a removal, or with another party, role or keys), and carried by every access
    /// token issued to it, so that tokens of an earlier registration are refused. Kept in memory
    /// only: tokens do not outlive a restart (their signing secret does not).
    #[serde(skip)]
    pub registration: String,
}

impl Client {
    /// Whether `other` registers the same holder: the same party, role and keys (a changed
    /// scope only narrows or widens what the holder's tokens grant).
    pub fn same_holder(&self, other: &Client) -> bool {
        let keys = |c: &Client| (serde_json::to_value(&c.jwks).ok(), c.jwks_uri.clone());
        self.party == other.party && self.role == other.role && keys(self) == keys(other)
    }
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
    /// Build from a list; a client without a registration id gets a new one.
    pub fn new(mut clients: Vec<Client>) -> Registry {
        for c in clients.iter_mut().filter(|c| c.registration.is_empty()) {
            c.registration = uuid::Uuid::new_v4().to_string();
        }
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

//! The FHIR interactions, independent of HTTP: what create, read, update, delete, patch, history
//! and Bundles do to the store. HTTP handlers and Bundle processing both call these.

pub mod audit_search;
pub mod bundle;
pub mod cohort_groups;
pub mod history;
pub mod load_contract;
pub mod read;
pub mod search;
pub mod write;

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::config::Limits;
use crate::fhir::validate::Validator;
use crate::store::SharedStore;

pub use crate::clock::{instant, now_ms, parse_instant_ms};

/// What the interactions need: the store, the validator and the limits.
#[derive(Clone)]
pub struct Services {
    /// The storage engine.
    pub store: SharedStore,
    /// The validator (shared with write jobs).
    pub validator: Arc<Validator>,
    /// Configured limits.
    pub limits: Limits,
    /// Who the interactions run for (the server itself unless a request says otherwise).
    pub access: crate::auth::access::Access,
    /// The audit trail.
    pub audit: crate::auth::audit::Audit,
}

impl Services {
    /// The same services acting for another caller.
    pub fn acting_for(&self, access: crate::auth::access::Access) -> Services {
        Services {
            access,
            ..self.clone()
        }
    }
}

/// A searchset Bundle with its `total` placed right after `type`.
pub fn with_total(mut bundle: Value, total: u64) -> Value {
    if let Value::Object(b) = &mut bundle {
        let mut ordered = Map::new();
        for (k, v) in std::mem::take(b) {
            let is_type = k == "type";
            ordered.insert(k, v);
            if is_type {
                ordered.insert("total".into(), Value::from(total));
            }
        }
        *b = ordered;
    }
    bundle
}

/// A Bundle of `kind` with a fresh id, `meta.lastUpdated` now, and its links and entries (empty
/// lists are left out: FHIR allows no empty arrays).
pub fn new_bundle(kind: &str, links: Vec<Value>, entries: Vec<Value>) -> Value {
    let mut b = Map::new();
    b.insert("resourceType".into(), Value::from("Bundle"));
    b.insert("id".into(), Value::from(uuid::Uuid::new_v4().to_string()));
    let mut meta = Map::new();
    meta.insert("lastUpdated".into(), Value::from(instant(now_ms())));
    b.insert("meta".into(), Value::Object(meta));
    b.insert("type".into(), Value::from(kind));
    if !links.is_empty() {
        b.insert("link".into(), Value::Array(links));
    }
    if !entries.is_empty() {
        b.insert("entry".into(), Value::Array(entries));
    }
    Value::Object(b)
}

/// Set `id`, `meta.versionId` and `meta.lastUpdated`, putting resourceType, id and meta first.
pub fn stamp(resource: &mut Value, id: &str, version: u64, last_updated_ms: i64) {
    let Value::Object(old) = std::mem::take(resource) else {
        return;
    };
    let mut out = Map::with_capacity(old.len() + 2);
    let mut rest = old;
    out.insert(
        "resourceType".into(),
        rest.remove("resourceType").unwrap_or(Value::Null),
    );
    out.insert("id".into(), Value::String(id.to_string()));
    rest.remove("id");
    let mut meta = match rest.remove("meta") {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    meta.remove("versionId");
    meta.remove("lastUpdated");
    let mut new_meta = Map::with_capacity(meta.len() + 2);
    new_meta.insert("versionId".into(), Value::String(version.to_string()));
    new_meta.insert(
        "lastUpdated".into(),
        Value::String(instant(last_updated_ms)),
    );
    new_meta.extend(meta);
    out.insert("meta".into(), Value::Object(new_meta));
    out.extend(rest);
    *resource = Value::Object(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stamp_orders_and_overwrites_meta() {
        let mut r = json!({"status": "final", "resourceType": "Observation", "id": "old",
            "meta": {"versionId": "9", "profile": ["p"]}});
        stamp(&mut r, "new", 3, 1_700_000_000_005);
        let keys: Vec<&String> = r
            .as_object()
            .map(|m| m.keys().collect())
            .unwrap_or_default();
        assert_eq!(keys, vec!["resourceType", "id", "meta", "status"]);
        assert_eq!(r["meta"]["versionId"], "3");
        assert_eq!(r["meta"]["lastUpdated"], "2023-11-14T22:13:20.005Z");
        assert_eq!(r["meta"]["profile"][0], "p");
    }
}

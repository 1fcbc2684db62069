//! Loading a contract version into the store: compile it, refuse different content under a
//! loaded `id` + `version` (a loaded version is immutable; the same content again changes
//! nothing), write its resources as one transaction and audit the load.

use std::path::Path;

use serde_json::{json, Value};

use super::Services;
use crate::contracts::{compile, fhir, Compiled};
use crate::engine::rules_of_library;
use crate::error::{FhirError, Result};

/// What loading did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// The contract version was new and is now stored.
    Created,
    /// The same content was already loaded under this version.
    Unchanged,
}

/// Compile and store a contract version (validating every resource like any other write).
pub async fn load(services: &Services, text: &str, base: &str) -> Result<(Loaded, Compiled)> {
    let compiled = compile(text)?;
    let ids = fhir::Ids::of(&compiled.rules);
    let store = services.store.clone();
    let library_id = ids.library();
    let existing = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.current("Library", &library_id))
            .await
            .map_err(|e| FhirError::Storage(e.to_string()))??
    };
    if let Some(rec) = existing.filter(|r| !r.deleted()) {
        let old = rec
            .resource
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
            .as_ref()
            .and_then(rules_of_library);
        return if old.as_ref() == Some(&compiled.rules) {
            Ok((Loaded::Unchanged, compiled))
        } else {
            Err(FhirError::Conflict(format!(
                "version {} of contract {} is already loaded with different content, and a loaded version is immutable; give the changed contract a new version",
                compiled.rules.contract.version, compiled.rules.contract.id
            )))
        };
    }
    let mut entries = Vec::new();
    for r in &compiled.resources {
        let rtype = r["resourceType"].as_str().unwrap_or_default().to_string();
        let id = r["id"].as_str().unwrap_or_default().to_string();
        if rtype == "Organization" {
            let (s, t, i) = (store.clone(), rtype.clone(), id.clone());
            let present = tokio::task::spawn_blocking(move || s.current(&t, &i))
                .await
                .map_err(|e| FhirError::Storage(e.to_string()))??
                .is_some_and(|r| !r.deleted());
            if present {
                continue;
            }
        }
        entries.push(json!({
            "fullUrl": format!("{base}/{rtype}/{id}"),
            "resource": r,
            "request": {"method": "PUT", "url": format!("{rtype}/{id}")}
        }));
    }
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    services.bundle(bundle, base, false).await?;
    services.audit.record(crate::auth::audit::activity_event(
        &services.access,
        crate::auth::audit::Activity::ContractLoad,
        &format!(
            "contract {} version {} loaded",
            compiled.rules.contract.id, compiled.rules.contract.version
        ),
        &[
            format!("Measure/{}", ids.contract()),
            format!("Library/{}", ids.library()),
        ],
    ));
    Ok((Loaded::Created, compiled))
}

/// Load every `*.toml` in a directory (in name order); returns (file, result) per file.
pub async fn load_dir(
    services: &Services,
    dir: &Path,
    base: &str,
) -> Vec<(String, Result<Loaded>)> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(_) => Vec::new(),
    };
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let r = match std::fs::read_to_string(&f) {
            Ok(text) => load(services, &text, base).await.map(|(l, _)| l),
            Err(e) => Err(FhirError::BadRequest(format!("cannot read {name}: {e}"))),
        };
        out.push((name, r));
    }
    out
}

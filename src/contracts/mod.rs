//! Contracts: the authoring form analysts write ([`source`]), the rule format the engine runs
//! ([`rules`]), the FHIR resources a contract is published as ([`fhir`]), and loading.
//!
//! A loaded `id` + `version` is immutable: loading different content under it is refused, and
//! loading the same content again changes nothing.

pub mod command;
pub mod fhir;
pub mod rules;
pub mod source;

use std::path::Path;

use serde_json::{json, Value};

use crate::engine::rules_of_library;
use crate::error::{FhirError, Result};
use crate::interaction::Services;
use rules::RuleSet;

/// A compiled contract: its rules and the resources that publish it.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The rules.
    pub rules: RuleSet,
    /// Organizations, ValueSets, Library, outcome Measures and the contract Measure.
    pub resources: Vec<Value>,
}

/// Compile an authoring file; every mistake is an issue of the error.
pub fn compile(text: &str) -> Result<Compiled> {
    let rules = source::compile(text).map_err(FhirError::Invalid)?;
    let ids = fhir::Ids::of(&rules);
    let mut issues = Vec::new();
    for o in &rules.outcomes {
        if ids.outcome(&o.id).len() > 64 {
            issues.push(
                crate::fhir::outcome::Issue::error(
                    "too-long",
                    format!("the outcome Measure id '{}' would be longer than 64 characters; shorten the contract id, version or outcome id", ids.outcome(&o.id)),
                )
                .at("outcome.id"),
            );
        }
    }
    for name in rules.valuesets.keys() {
        if ids.valueset(name).len() > 64 {
            issues.push(
                crate::fhir::outcome::Issue::error(
                    "too-long",
                    format!(
                        "the ValueSet id '{}' would be longer than 64 characters",
                        ids.valueset(name)
                    ),
                )
                .at(format!("valuesets.{name}")),
            );
        }
    }
    if !issues.is_empty() {
        return Err(FhirError::Invalid(issues));
    }
    let resources = fhir::resources(&rules, text).map_err(|e| FhirError::Storage(e.to_string()))?;
    Ok(Compiled { rules, resources })
}

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

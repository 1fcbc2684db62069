//! Contracts: the authoring form analysts write ([`source`]), the rule format the engine runs
//! ([`rules`]) and the FHIR resources a contract is published as ([`fhir`]). Loading a compiled
//! contract into the store is an interaction (`interaction::load_contract`).

pub mod exposure_source;
pub mod fhir;
pub mod rules;
pub mod source;

use serde_json::Value;

use crate::error::{FhirError, Result};
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

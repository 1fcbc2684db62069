//! What the access rules need to know about parties: which contract (and so which payer and
//! manufacturer) a contract resource or report belongs to, and whether a patient is a payer's
//! member.

use std::sync::Arc;

use serde_json::Value;

use super::facts::Fact;
use super::result::Membership;
use super::Engine;
use crate::contracts::fhir::org_id;

/// The two parties of a contract, as `Organization/[id]` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractParties {
    /// The payer.
    pub payer: String,
    /// The manufacturer.
    pub manufacturer: String,
}

/// The Measure id a MeasureReport's `measure` canonical (or reference) names.
fn measure_id(measure: &str) -> &str {
    let no_version = measure.split('|').next().unwrap_or(measure);
    no_version.rsplit('/').next().unwrap_or(no_version)
}

/// The parties of a compiled contract.
pub fn parties_of(plan: &super::plan::Plan) -> ContractParties {
    let c = &plan.rules.contract;
    ContractParties {
        payer: format!("Organization/{}", org_id(&c.payer.name)),
        manufacturer: format!("Organization/{}", org_id(&c.manufacturer.name)),
    }
}

impl Engine {
    /// The parties of the contract a resource belongs to: a MeasureReport by its `measure`; a
    /// Measure, Library, ValueSet or Group compiled from a contract by its id. None for anything
    /// else (including what no loaded contract defines).
    pub fn contract_parties(&self, rtype: &str, resource: &Value) -> Option<ContractParties> {
        let st = self.read();
        let of = parties_of;
        match rtype {
            "MeasureReport" => {
                let wanted = measure_id(resource.get("measure")?.as_str()?);
                st.contracts.values().find_map(|c| {
                    let ids = &c.plan.ids;
                    let hit = ids.contract() == wanted
                        || c.plan
                            .rules
                            .outcomes
                            .iter()
                            .any(|o| ids.outcome(&o.id) == wanted);
                    hit.then(|| of(&c.plan))
                })
            }
            "Measure" | "Library" | "ValueSet" | "Group" => {
                let id = resource.get("id")?.as_str()?;
                st.contracts.values().find_map(|c| {
                    let base = &c.plan.ids.base;
                    let hit = id == base
                        || id
                            .strip_prefix(base.as_str())
                            .is_some_and(|rest| rest.starts_with('-'));
                    hit.then(|| of(&c.plan))
                })
            }
            _ => None,
        }
    }

    /// Whether a patient (or any record linked to it) is a member of `payer`
    /// (`Organization/[id]`): an eligible member of one of the payer's contract cohorts, or the
    /// beneficiary of an active Coverage the payer pays that covers today.
    pub fn is_member(&self, payer: &str, patient: &str) -> bool {
        let st = self.read();
        let today = crate::days::today();
        let patient: Arc<str> = Arc::from(patient);
        let person = st.identity.person(&patient);
        let in_cohort = st.contracts.values().any(|c| {
            c.plan.payer_refs.first().is_some_and(|p| p == payer)
                && c.results
                    .get(&person)
                    .is_some_and(|r| r.membership == Membership::Member)
        });
        if in_cohort {
            return true;
        }
        let mut records = st.identity.component(&patient);
        if !records.contains(&patient) {
            records.push(patient);
        }
        records.iter().any(|rec| {
            st.timeline.of_patient(rec).any(|slot| {
                st.timeline.visible_slot(slot, None).is_some_and(|v| {
                    matches!(v.fact.as_deref(), Some(Fact::Coverage(cv))
                        if cv.active
                            && cv.start.is_none_or(|d| d <= today)
                            && cv.end.is_none_or(|d| d >= today)
                            && cv.payors.iter().any(|p| &**p == payer))
                })
            })
        })
    }
}

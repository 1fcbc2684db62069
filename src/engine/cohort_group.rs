//! Each contract's cohort as a FHIR `Group` (actual, one member per person with `period.start`
//! = the index date); `interaction::cohort_groups` writes it whenever membership changes.

use serde_json::{json, Value};

use super::{Engine, Members};
use crate::contracts::fhir::{canonical, org_id};
use crate::contracts::rules::CANONICAL_BASE;
use crate::days;

/// The Group resource of a contract's cohort.
pub fn group(engine: &Engine, contract: &str) -> Option<(String, Value, Members)> {
    let (plan, members) = engine.members(contract)?;
    let id = plan.ids.group();
    let g = json!({
        "resourceType": "Group",
        "id": id,
        "identifier": [{"system": format!("{CANONICAL_BASE}/cohort"), "value": contract}],
        "active": true,
        "type": "person",
        "actual": true,
        "name": format!("Cohort of {}", plan.rules.contract.title),
        "quantity": members.len(),
        "managingEntity": {"reference": format!("Organization/{}", org_id(&plan.rules.contract.payer.name))},
        "characteristic": [{
            "code": {"text": "contract"},
            "valueReference": {"reference": format!("Measure/{contract}"), "display": canonical("Measure", contract)},
            "exclude": false
        }],
        "member": members.iter().map(|(p, d)| json!({
            "entity": {"reference": format!("Patient/{p}")},
            "period": {"start": days::format(*d)}
        })).collect::<Vec<_>>()
    });
    let mut g = g;
    if members.is_empty() {
        if let Some(o) = g.as_object_mut() {
            o.remove("member");
        }
    }
    Some((id, g, members))
}

//! Each contract's cohort as a FHIR `Group` (actual, one member per person with `period.start`
//! = the index date), rewritten by a background task whenever membership changes. The lag is
//! bounded by the task's period (two seconds) plus one write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::days;
use super::{Engine, Members};
use crate::contracts::fhir::{canonical, org_id};
use crate::contracts::rules::CANONICAL_BASE;
use crate::interaction::Services;

/// How often membership is compared with the stored Groups.
pub const PERIOD: Duration = Duration::from_secs(2);

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

/// Keep every contract's Group current (runs until the process ends).
pub async fn maintain(engine: Arc<Engine>, services: Services) {
    let mut written: HashMap<String, Members> = HashMap::new();
    loop {
        for contract in engine.contract_ids() {
            let e = engine.clone();
            let c = contract.clone();
            let Ok(Some((id, g, members))) =
                tokio::task::spawn_blocking(move || group(&e, &c)).await
            else {
                continue;
            };
            if written.get(&contract) == Some(&members) {
                continue;
            }
            match services.update("Group", &id, g, None).await {
                Ok(_) => {
                    written.insert(contract, members);
                }
                Err(e) => tracing::warn!(group = %id, error = %e, "cannot write the cohort Group"),
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
}

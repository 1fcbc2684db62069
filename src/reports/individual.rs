//! DEQM individual MeasureReports: one patient's status per outcome, the evidence that decided it
//! (versioned references in `evaluatedResource`) and, for a contract, the patient's money lines.

use serde_json::{json, Value};

use super::common::*;
use super::performance::money;
use crate::days::{self, Day};
use crate::engine::plan::Plan;
use crate::engine::result::{Membership, PersonResult, Status};
use crate::settlement::Settlement;

/// The individual report of `person` for the given outcomes (all reported outcomes of the
/// contract, or one). `person` None: the patient is not in the initial population of the period.
pub fn report(
    plan: &Plan,
    measure_id: &str,
    outcomes: &[&str],
    patient: &str,
    person: Option<&PersonResult>,
    settlement: Option<&Settlement>,
    (period, today): (&Period, Day),
) -> Value {
    let mut groups = Vec::new();
    let mut evaluated: Vec<Value> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut add_evidence = |rtype: &str, id: &str, version: u64| {
        let r = format!("{rtype}/{id}/_history/{version}");
        if !seen.contains(&r) {
            seen.push(r.clone());
            evaluated.push(json!({"reference": r}));
        }
    };
    if let Some(p) = person {
        for e in &p.evidence {
            add_evidence(e.rtype, &e.id, e.version);
        }
    }
    let one: Vec<&PersonResult> = person.into_iter().collect();
    for outcome in outcomes {
        let c = Counts::of(&one, outcome);
        let o = person.and_then(|p| p.outcomes.iter().find(|o| &*o.id == *outcome));
        let status = match (person.map(|p| p.membership), o) {
            (None, _) => "not-in-initial-population".to_string(),
            (Some(Membership::Member), Some(o)) => o.status.code().to_string(),
            (Some(m), _) => m.code().to_string(),
        };
        let mut ext = group_scoring(plan, outcome);
        ext.push(json!({"url": format!("{EXT}/outcome-status"), "valueCode": status}));
        let mut g = json!({
            "id": outcome,
            "extension": ext,
            "code": {"text": plan.rules.outcomes.iter().find(|d| d.id == *outcome).map_or(*outcome, |d| d.title.as_str())},
            "population": c.populations("")
                .into_iter()
                .map(|mut p| { if let Some(m) = p.as_object_mut() { m.remove("id"); } p })
                .collect::<Vec<_>>(),
        });
        if let Some(o) = o {
            if let Some(ext) = g["extension"].as_array_mut() {
                ext.push(json!({"url": format!("{EXT}/outcome-reason"), "valueString": o.reason}));
                if let Some(d) = o.decided_on {
                    ext.push(
                        json!({"url": format!("{EXT}/decided-on"), "valueDate": days::format(d)}),
                    );
                }
            }
            g["measureScore"] = match o.status {
                Status::Met => json!({"value": 1}),
                Status::NotMet => json!({"value": 0}),
                _ => absent_score(),
            };
            for e in &o.evidence {
                add_evidence(e.rtype, &e.id, e.version);
            }
        }
        if o.is_none() {
            g["measureScore"] = absent_score();
        }
        groups.push(g);
    }
    let mut ext = Vec::new();
    if let (Some(s), Some(p)) = (settlement, person) {
        for l in s.lines.iter().filter(|l| l.person == p.person) {
            ext.push(json!({"url": format!("{EXT}/money-line"), "extension": [
                {"url": "stream", "valueCode": l.stream},
                {"url": "state", "valueCode": l.state.code()},
                {"url": "amount", "valueMoney": money(l.amount, &s.currency)},
                {"url": "basis", "valueString": l.basis},
            ]}));
            for e in &l.priced {
                add_evidence(e.rtype, &e.id, e.version);
            }
        }
    }
    let mut r = json!({
        "resourceType": "MeasureReport",
        "meta": {"profile": [format!("{DEQM}/StructureDefinition/indv-measurereport-deqm")]},
        "status": "complete",
        "type": "individual",
        "measure": measure_canonical(plan, measure_id),
        "subject": {"reference": format!("Patient/{patient}")},
        "date": days::format(today),
        "reporter": payer_ref(plan),
        "period": period.fhir(),
        "group": groups,
    });
    if !ext.is_empty() {
        r["extension"] = json!(ext);
    }
    if !evaluated.is_empty() {
        r["evaluatedResource"] = json!(evaluated);
    }
    r
}

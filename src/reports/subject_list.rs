//! DEQM subject-list MeasureReports: for each outcome, the patients in each population, as
//! contained `List` resources referenced from `population.subjectResults`.

use serde_json::{json, Value};

use super::common::*;
use crate::days::{self, Day};
use crate::engine::plan::Plan;
use crate::engine::result::{Membership, PersonResult, Status};

/// Which population a person is in for an outcome (a person is in every population up to it).
fn populations_of(r: &PersonResult, outcome: &str) -> Vec<&'static str> {
    let mut p = vec!["initial-population"];
    if r.membership != Membership::Member {
        return p;
    }
    p.push("denominator");
    match r
        .outcomes
        .iter()
        .find(|o| &*o.id == outcome)
        .map(|o| o.status)
    {
        Some(Status::Met) => p.extend([
            "numerator",
            "calculated-numerator",
            "calculated-denominator",
        ]),
        Some(Status::NotMet) => p.push("calculated-denominator"),
        Some(Status::Excluded) => p.push("denominator-exclusion"),
        Some(Status::MissingData) => p.push("numerator-exclusion"),
        _ => {}
    }
    p
}

/// The subject-list report of the given outcomes.
pub fn report(
    plan: &Plan,
    measure_id: &str,
    outcomes: &[&str],
    results: &[&PersonResult],
    period: &Period,
    today: Day,
) -> Value {
    let mut contained = Vec::new();
    let mut groups = Vec::new();
    for outcome in outcomes {
        let counts = Counts::of(results, outcome);
        let mut pops = counts.populations("");
        for pop in pops.iter_mut() {
            let code = pop["code"]["coding"][0]["code"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let list_id = format!("{outcome}-{code}");
            let entries: Vec<Value> = results
                .iter()
                .filter(|r| populations_of(r, outcome).contains(&code.as_str()))
                .map(|r| json!({"item": {"reference": format!("Patient/{}", r.person)}}))
                .collect();
            let mut list = json!({
                "resourceType": "List",
                "id": list_id,
                "status": "current",
                "mode": "snapshot",
                "title": format!("{outcome}: {code}"),
            });
            if !entries.is_empty() {
                list["entry"] = json!(entries);
            }
            contained.push(list);
            pop["subjectResults"] = json!({"reference": format!("#{list_id}")});
        }
        let g = json!({
            "id": outcome,
            "extension": group_scoring(plan, outcome),
            "population": pops,
            "measureScore": score_json(counts.score()).unwrap_or_else(absent_score),
        });
        groups.push(g);
    }
    json!({
        "resourceType": "MeasureReport",
        "meta": {"profile": [format!("{DEQM}/StructureDefinition/subjectlist-measurereport-deqm")]},
        "contained": contained,
        "status": "complete",
        "type": "subject-list",
        "measure": measure_canonical(plan, measure_id),
        "date": days::format(today),
        "reporter": payer_ref(plan),
        "period": period.fhir(),
        "group": groups,
    })
}

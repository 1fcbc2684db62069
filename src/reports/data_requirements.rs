//! What data a contract reads, as FHIR `DataRequirement`s (for `$data-requirements`): the
//! resource types and the ValueSets their codes are filtered by.

use serde_json::{json, Value};

use crate::contracts::fhir::canonical;
use crate::contracts::rules::{EventSource, Rule};
use crate::engine::plan::Plan;

/// (resource type, code path, value set name) triples, deduplicated in first-use order.
pub fn needs(plan: &Plan) -> Vec<(String, &'static str, Option<String>)> {
    let r = &plan.rules;
    let mut out: Vec<(String, &'static str, Option<String>)> = vec![("Patient".into(), "", None)];
    let mut add = |t: &str, path: &'static str, vs: Option<&str>| {
        let item = (t.to_string(), path, vs.map(str::to_string));
        if !out.contains(&item) {
            out.push(item);
        }
    };
    let medication = |vs: &str, add: &mut dyn FnMut(&str, &'static str, Option<&str>)| {
        for source in &r.cohort.sources {
            let path = if source == "Procedure" {
                "code"
            } else {
                "medication"
            };
            add(source, path, Some(vs));
        }
    };
    medication(&r.cohort.exposure, &mut add);
    medication(&r.contract.drug, &mut add);
    for d in &r.cohort.diagnoses {
        add("Condition", "code", Some(d));
    }
    for l in &r.cohort.labs {
        if let Some(def) = r.labs.get(&l.lab) {
            add("Observation", "code", Some(&def.valueset));
        }
    }
    for f in &r.cohort.findings {
        add("Observation", "code", Some(&f.observation));
    }
    for t in &r.cohort.therapies {
        medication(&t.valueset, &mut add);
    }
    if r.cohort.coverage {
        add("Coverage", "", None);
    }
    for d in &r.exclusions.diagnoses {
        add("Condition", "code", Some(d));
    }
    for s in &r.exclusions.switches {
        medication(s, &mut add);
    }
    for o in &r.outcomes {
        match &o.rule {
            Rule::LabTarget { lab, .. } | Rule::ChangeFromBaseline { lab, .. } => {
                if let Some(def) = r.labs.get(lab) {
                    add("Observation", "code", Some(&def.valueset));
                }
            }
            Rule::Event {
                source, diagnosis, ..
            } => {
                if *source == EventSource::Encounter {
                    add("Encounter", "reasonCode", Some(diagnosis));
                }
                add("Condition", "code", Some(diagnosis));
            }
            Rule::CodedResponse { observation, .. } => {
                add("Observation", "code", Some(observation));
            }
            Rule::Adherence { valueset, .. } | Rule::Persistence { valueset, .. } => {
                medication(valueset, &mut add);
            }
            _ => {}
        }
    }
    out
}

/// The `module-definition` Library of a Measure's data requirements.
pub fn library(plan: &Plan, measure_id: &str) -> Value {
    let reqs: Vec<Value> = needs(plan)
        .into_iter()
        .map(|(t, path, vs)| {
            let mut d = json!({"type": t});
            if let Some(vs) = vs {
                d["codeFilter"] = json!([{
                    "path": path,
                    "valueSet": canonical("ValueSet", &plan.ids.valueset(&vs))
                }]);
            }
            d
        })
        .collect();
    json!({
        "resourceType": "Library",
        "status": "active",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/library-type", "code": "module-definition"}]},
        "name": "DataRequirements",
        "title": format!("Data requirements of Measure/{measure_id}"),
        "relatedArtifact": [{"type": "depends-on", "resource": canonical("Library", &plan.ids.library())}],
        "dataRequirement": reqs,
    })
}

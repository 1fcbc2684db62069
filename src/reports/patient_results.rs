//! Per-patient outcome results as a FHIR `Parameters` resource: for each person their index date,
//! cohort membership and, per outcome, status, reason, decisive value, window, the rule and the
//! versioned references to the resources that decided it (enough to replay the decision).

use serde_json::{json, Map, Value};

use crate::contracts::fhir::{canonical, Ids};
use crate::days;
use crate::engine::result::{Evidence, Membership, OutcomeResult, PersonResult, Status};

/// Which results to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only the person with this Patient id (any linked record).
    pub patient: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// Only persons with an outcome in this status.
    pub status: Option<Status>,
    /// Only persons with this membership (member, ineligible, not-new-user).
    pub membership: Option<String>,
}

impl Filter {
    fn keeps_outcome(&self, o: &OutcomeResult) -> bool {
        self.outcome.as_ref().is_none_or(|id| *o.id == **id)
    }

    /// True when a person passes the filter.
    pub fn keeps(&self, r: &PersonResult) -> bool {
        if let Some(p) = &self.patient {
            if !r.patients.iter().any(|x| x.as_ref() == p) && r.person.as_ref() != p {
                return false;
            }
        }
        if let Some(m) = &self.membership {
            if r.membership.code() != m {
                return false;
            }
        }
        if let Some(s) = self.status {
            return r
                .outcomes
                .iter()
                .any(|o| self.keeps_outcome(o) && o.status == s);
        }
        true
    }
}

fn param(name: &str, key: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert(key.into(), value);
    Value::Object(m)
}

fn part(name: &str, parts: Vec<Value>) -> Value {
    json!({"name": name, "part": parts})
}

fn evidence(e: &Evidence) -> Value {
    let mut display = e.role.to_string();
    if !e.note.is_empty() {
        display.push_str(": ");
        display.push_str(&e.note);
    }
    param(
        "evidence",
        "valueReference",
        json!({"reference": format!("{}/{}/_history/{}", e.rtype, e.id, e.version), "display": display}),
    )
}

fn outcome(ids: &Ids, o: &OutcomeResult) -> Value {
    let mut parts = vec![
        param("id", "valueString", json!(&*o.id)),
        param(
            "measure",
            "valueCanonical",
            json!(canonical("Measure", &ids.outcome(&o.id))),
        ),
        param("status", "valueCode", json!(o.status.code())),
    ];
    if !o.reason.is_empty() {
        parts.push(param("reason", "valueString", json!(o.reason)));
    }
    if let Some(v) = o.value {
        let mut q = Map::new();
        q.insert(
            "value".into(),
            json!(v
                .normalize()
                .to_string()
                .parse::<serde_json::Number>()
                .unwrap_or_else(|_| 0.into())),
        );
        if !o.unit.is_empty() {
            q.insert("unit".into(), json!(o.unit));
            q.insert("system".into(), json!("http://unitsofmeasure.org"));
            q.insert("code".into(), json!(o.unit));
        }
        parts.push(param("value", "valueQuantity", Value::Object(q)));
    }
    parts.push(param(
        "window",
        "valuePeriod",
        json!({"start": days::format(o.window.0), "end": days::format(o.window.1)}),
    ));
    if let Some(d) = o.decided_on {
        parts.push(param("decidedOn", "valueDate", json!(days::format(d))));
    }
    parts.push(param("rule", "valueString", json!(&*o.rule)));
    parts.extend(o.evidence.iter().map(evidence));
    part("outcome", parts)
}

/// One person's result.
pub fn person(ids: &Ids, r: &PersonResult, filter: &Filter) -> Value {
    let mut parts = vec![param(
        "subject",
        "valueReference",
        json!({"reference": format!("Patient/{}", r.person)}),
    )];
    for p in r.patients.iter().filter(|p| **p != r.person) {
        parts.push(param(
            "linkedPatient",
            "valueReference",
            json!({"reference": format!("Patient/{p}")}),
        ));
    }
    parts.push(param(
        "indexDate",
        "valueDate",
        json!(days::format(r.index)),
    ));
    parts.push(param("membership", "valueCode", json!(r.membership.code())));
    if !r.reason.is_empty() {
        parts.push(param("reason", "valueString", json!(r.reason)));
    }
    parts.extend(r.evidence.iter().map(evidence));
    if r.membership == Membership::Member {
        parts.extend(
            r.outcomes
                .iter()
                .filter(|o| filter.keeps_outcome(o))
                .map(|o| outcome(ids, o)),
        );
    }
    part("result", parts)
}

/// Counts per membership and per outcome status.
pub fn counts(results: &[PersonResult]) -> Vec<Value> {
    let mut out = Vec::new();
    let members = results
        .iter()
        .filter(|r| r.membership == Membership::Member)
        .count();
    out.push(param(
        "initialPopulation",
        "valueInteger",
        json!(results
            .iter()
            .filter(|r| r.membership != Membership::NotNewUser)
            .count()),
    ));
    out.push(param("members", "valueInteger", json!(members)));
    let mut ids: Vec<&str> = Vec::new();
    for r in results {
        for o in &r.outcomes {
            if !ids.contains(&&*o.id) {
                ids.push(&o.id);
            }
        }
    }
    for id in ids {
        let mut parts = vec![param("id", "valueString", json!(id))];
        for s in [
            Status::Met,
            Status::NotMet,
            Status::Pending,
            Status::MissingData,
            Status::Excluded,
        ] {
            let n = results
                .iter()
                .filter(|r| r.outcomes.iter().any(|o| &*o.id == id && o.status == s))
                .count();
            parts.push(param(s.code(), "valueInteger", json!(n)));
        }
        out.push(part("count", parts));
    }
    out
}

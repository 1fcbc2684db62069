//! What every MeasureReport the server builds shares: the report period, coding helpers, the
//! population counts of an outcome over a set of person results, and the strata.

use serde_json::{json, Value};

pub use crate::contracts::fhir::cc;
use crate::contracts::fhir::{canonical, org_id};
use crate::days::{self, Day};
use crate::engine::plan::Plan;
use crate::engine::result::{Membership, PersonResult, Status};

/// The VBPR canonical base.
pub const VBPR: &str = "http://hl7.org/fhir/us/davinci-vbpr";
/// The DEQM canonical base.
pub const DEQM: &str = "http://hl7.org/fhir/us/davinci-deqm";
/// FHIR measure-population code system.
pub const POPULATION: &str = "http://terminology.hl7.org/CodeSystem/measure-population";
/// VBPR calculated populations.
pub const VBP_POPULATION: &str =
    "http://hl7.org/fhir/us/davinci-vbpr/CodeSystem/vbp-measure-population";
/// Local stratifier codes.
pub const STRATIFIER: &str = "https://vbc-server.dev/fhir/CodeSystem/report-stratifier";
/// Local extensions.
pub const EXT: &str = "https://vbc-server.dev/fhir/StructureDefinition";

/// A report period as calendar days (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First day.
    pub start: Day,
    /// Last day.
    pub end: Day,
}

impl Period {
    /// The period as FHIR.
    pub fn fhir(&self) -> Value {
        json!({"start": days::format(self.start), "end": days::format(self.end)})
    }
    /// True when a day lies in the period.
    pub fn contains(&self, d: Day) -> bool {
        d >= self.start && d <= self.end
    }
}

/// The canonical of a server-defined Measure with its version.
pub fn measure_canonical(plan: &Plan, measure_id: &str) -> String {
    format!(
        "{}|{}",
        canonical("Measure", measure_id),
        plan.rules.contract.version
    )
}

/// The payer's Organization reference (the reporter: the party that runs the server).
pub fn payer_ref(plan: &Plan) -> Value {
    let p = &plan.rules.contract.payer;
    json!({"reference": format!("Organization/{}", org_id(&p.name)), "display": p.name})
}

/// The manufacturer's Organization reference (the counter-party).
pub fn manufacturer_ref(plan: &Plan) -> Value {
    let m = &plan.rules.contract.manufacturer;
    json!({"reference": format!("Organization/{}", org_id(&m.name)), "display": m.name})
}

/// Person results of the period: everyone in the initial population whose index date is in it.
pub fn in_period<'r>(results: &'r [PersonResult], period: &Period) -> Vec<&'r PersonResult> {
    results
        .iter()
        .filter(|r| r.membership != Membership::NotNewUser && period.contains(r.index))
        .collect()
}

/// Population counts of one outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// New users indexed in the period.
    pub initial: u64,
    /// Eligible members.
    pub denominator: u64,
    /// Excluded.
    pub excluded: u64,
    /// Met.
    pub met: u64,
    /// Not met.
    pub not_met: u64,
    /// Missing data (window closed without a usable measurement).
    pub missing: u64,
    /// Pending.
    pub pending: u64,
}

impl Counts {
    /// Count one outcome over results.
    pub fn of(results: &[&PersonResult], outcome: &str) -> Counts {
        let mut c = Counts::default();
        for r in results {
            c.initial += 1;
            if r.membership != Membership::Member {
                continue;
            }
            c.denominator += 1;
            match r
                .outcomes
                .iter()
                .find(|o| &*o.id == outcome)
                .map(|o| o.status)
            {
                Some(Status::Met) => c.met += 1,
                Some(Status::NotMet) => c.not_met += 1,
                Some(Status::Excluded) => c.excluded += 1,
                Some(Status::MissingData) => c.missing += 1,
                Some(Status::Pending) | None => c.pending += 1,
            }
        }
        c
    }

    /// Decided members (met + not met): the calculated denominator.
    pub fn decided(&self) -> u64 {
        self.met + self.not_met
    }

    /// met / decided, None when nobody is decided.
    pub fn score(&self) -> Option<f64> {
        (self.decided() > 0).then(|| self.met as f64 / self.decided() as f64)
    }

    /// The populations as FHIR (`prefix` makes the ids unique within a report).
    pub fn populations(&self, prefix: &str) -> Vec<Value> {
        let p = |code: &str, system: &str, n: u64| json!({"id": format!("{prefix}{code}"), "code": cc(system, code, None), "count": n});
        vec![
            p("initial-population", POPULATION, self.initial),
            p("denominator", POPULATION, self.denominator),
            p("denominator-exclusion", POPULATION, self.excluded),
            p("numerator", POPULATION, self.met),
            p("numerator-exclusion", POPULATION, self.missing),
            p("calculated-numerator", VBP_POPULATION, self.met),
            p("calculated-denominator", VBP_POPULATION, self.decided()),
        ]
    }
}

/// A measure score as FHIR (rounded to 4 decimals), or None.
pub fn score_json(score: Option<f64>) -> Option<Value> {
    score.map(|s| json!({"value": (s * 10000.0).round() / 10000.0}))
}

/// The age band of a person on the index date.
pub fn age_band(r: &PersonResult) -> &'static str {
    match r.birth.and_then(|b| days::age_on(b, r.index)) {
        None => "unknown",
        Some(a) if a < 18 => "0-17",
        Some(a) if a < 45 => "18-44",
        Some(a) if a < 65 => "45-64",
        Some(a) if a < 75 => "65-74",
        Some(_) => "75+",
    }
}

/// A stratifier: code, label, and the value of a person.
pub type Stratifier = (&'static str, &'static str, fn(&PersonResult) -> String);

/// The stratifiers of a report.
pub fn stratifiers() -> Vec<Stratifier> {
    vec![
        ("age-band", "Age band at the index date", |r| {
            age_band(r).to_string()
        }),
        ("sex", "Administrative gender", |r| {
            r.sex.as_deref().unwrap_or("unknown").to_string()
        }),
        (
            "index-performer",
            "Prescriber or dispensing organization of the index exposure",
            |r| r.performer.as_deref().unwrap_or("unknown").to_string(),
        ),
    ]
}

/// Group results by a stratifier value (values sorted).
pub fn strata<'r>(
    results: &[&'r PersonResult],
    value: fn(&PersonResult) -> String,
) -> Vec<(String, Vec<&'r PersonResult>)> {
    let mut map: std::collections::BTreeMap<String, Vec<&PersonResult>> = Default::default();
    for r in results {
        map.entry(value(r)).or_default().push(r);
    }
    map.into_iter().collect()
}

/// The group-level scoring and improvement-notation extensions of an outcome (DEQM deqm-3 and
/// deqm-6: reports with several groups carry the scoring on every group).
pub fn group_scoring(plan: &Plan, outcome: &str) -> Vec<Value> {
    let def = plan.rules.outcomes.iter().find(|o| o.id == outcome);
    let scoring = def.map_or("proportion", |d| d.scoring.as_str());
    let improvement = def.map_or("increase", |d| d.improvement.as_str());
    vec![
        json!({
            "url": format!("{DEQM}/StructureDefinition/extension-measureScoring"),
            "valueCodeableConcept": cc("http://terminology.hl7.org/CodeSystem/measure-scoring", scoring, None)
        }),
        json!({
            "url": format!("{DEQM}/StructureDefinition/extension-groupImprovementNotation"),
            "valueCodeableConcept": cc("http://terminology.hl7.org/CodeSystem/measure-improvement-notation", improvement, None)
        }),
    ]
}

/// A score that cannot be computed (nobody decided): 0, marked not applicable, because DEQM
/// (deqm-6) wants a proportion score in 0..1.
pub fn absent_score() -> Value {
    json!({
        "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
            "valueCode": "not-applicable"
        }],
        "value": 0
    })
}

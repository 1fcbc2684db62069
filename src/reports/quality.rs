//! The VBP quality MeasureReport (`vbp-quality-measurereport`, on DEQM summary) of one outcome
//! Measure over a period: population counts, calculated numerator and denominator, the score
//! (met / decided for proportions, the mean value for continuous variables) and strata by age
//! band, sex and index performer.

use rust_decimal::prelude::ToPrimitive;
use serde_json::{json, Value};

use super::common::*;
use crate::days::{self, Day};
use crate::engine::plan::Plan;
use crate::engine::result::{Membership, PersonResult, Status};

/// The quality report of `outcome` (an outcome id of the plan's contract).
pub fn report(
    plan: &Plan,
    outcome: &str,
    results: &[&PersonResult],
    period: &Period,
    today: Day,
) -> Value {
    let def = plan.rules.outcomes.iter().find(|o| o.id == outcome);
    let scoring = def.map_or("proportion", |d| d.scoring.as_str());
    let improvement = def.map_or("increase", |d| d.improvement.as_str());
    let measure_id = plan.ids.outcome(outcome);
    let counts = Counts::of(results, outcome);
    let score = |rs: &[&PersonResult], c: &Counts| -> Option<f64> {
        if scoring == "continuous-variable" {
            let values: Vec<f64> = rs
                .iter()
                .filter(|r| r.membership == Membership::Member)
                .filter_map(|r| r.outcomes.iter().find(|o| &*o.id == outcome))
                .filter(|o| matches!(o.status, Status::Met | Status::NotMet))
                .filter_map(|o| o.value.and_then(|v| v.to_f64()))
                .collect();
            (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
        } else {
            c.score()
        }
    };
    let mut group = json!({
        "id": outcome,
        "code": {"text": def.map_or(outcome, |d| d.title.as_str())},
        "population": counts.populations(""),
    });
    group["measureScore"] = score_json(score(results, &counts)).unwrap_or_else(absent_score);
    let mut out = Vec::new();
    for (code, label, value) in stratifiers() {
        let strata: Vec<Value> = strata(results, value)
            .into_iter()
            .enumerate()
            .map(|(i, (v, rs))| {
                let c = Counts::of(&rs, outcome);
                let mut st = json!({
                    "value": {"text": v},
                    "population": c.populations(&format!("{code}-{i}-")),
                });
                if let Some(s) = score_json(score(&rs, &c)) {
                    st["measureScore"] = s;
                }
                st
            })
            .collect();
        let mut stratifier = json!({
            "code": [{"coding": [{"system": STRATIFIER, "code": code}], "text": label}],
        });
        // an empty population has no strata (FHIR allows no empty arrays)
        if !strata.is_empty() {
            stratifier["stratum"] = json!(strata);
        }
        out.push(stratifier);
    }
    group["stratifier"] = json!(out);
    let mut extension = vec![json!({
        "url": format!("{DEQM}/StructureDefinition/extension-measureScoring"),
        "valueCodeableConcept": cc("http://terminology.hl7.org/CodeSystem/measure-scoring", scoring, None)
    })];
    if let Some(s) = score(results, &counts) {
        extension.push(json!({
            "url": format!("{VBPR}/StructureDefinition/score"),
            "valueDecimal": (s * 10000.0).round() / 10000.0
        }));
    }
    extension.extend(thresholds(plan, outcome));
    json!({
        "resourceType": "MeasureReport",
        "meta": {"profile": [format!("{VBPR}/StructureDefinition/vbp-quality-measurereport")]},
        "extension": extension,
        "status": "complete",
        "type": "summary",
        "measure": measure_canonical(plan, &measure_id),
        "date": days::format(today),
        "reporter": payer_ref(plan),
        "period": period.fhir(),
        "improvementNotation": cc(
            "http://terminology.hl7.org/CodeSystem/measure-improvement-notation",
            improvement,
            None
        ),
        "group": [group],
    })
}

/// Local threshold types (VBPR's binding is extensible; its codes are star ratings and HEDIS
/// percentiles).
pub const THRESHOLD_TYPE: &str = "https://vbc-server.dev/fhir/CodeSystem/threshold-type";

/// The contract's thresholds on an outcome's rate, as VBPR `threshold` extensions: the minimum
/// responder rate of each rebate tier, and the event rate above which an event-rate rebate is
/// owed (percent).
fn thresholds(plan: &Plan, outcome: &str) -> Vec<Value> {
    let pct = |s: &str| -> Value {
        let v = s
            .parse::<rust_decimal::Decimal>()
            .map(|d| {
                (d * rust_decimal::Decimal::from(100))
                    .normalize()
                    .to_string()
            })
            .unwrap_or_default();
        serde_json::from_str(&v).unwrap_or(json!(0))
    };
    let mut out = Vec::new();
    let mut push = |value: Value, code: &str, display: String| {
        out.push(json!({
            "url": format!("{VBPR}/StructureDefinition/threshold"),
            "extension": [
                {"url": "threshold", "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "%"}},
                {"url": "type", "valueCodeableConcept": {"coding": [{"system": THRESHOLD_TYPE, "code": code}], "text": display}}
            ]
        }));
    };
    for t in plan
        .rules
        .payments
        .iter()
        .filter(|t| t.outcomes.first().is_some_and(|o| o == outcome))
    {
        match t.kind.as_str() {
            "tiered-rebate" => {
                for (min, share) in &t.tiers {
                    push(
                        pct(min),
                        "rebate-tier",
                        format!("responder rate from which the rebate is {share} %"),
                    );
                }
            }
            "event-rate-rebate" => {
                if let Some(r) = &t.rate_above {
                    push(
                        pct(r),
                        "event-rate-limit",
                        format!(
                            "event rate above which a {} % rebate is owed",
                            t.share.as_deref().unwrap_or("0")
                        ),
                    );
                }
            }
            _ => {}
        }
    }
    out
}

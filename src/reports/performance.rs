//! The VBP performance MeasureReport (`vbp-performance-measurereport`) of a contract over a
//! period: one group per payment stream with the amount owed as a Money score, the amounts at
//! stake (pending, missing data) as extensions, and references to the quality reports.

use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::common::*;
use crate::contracts::fhir::stream_system;
use crate::days::{self, Day};
use crate::engine::plan::Plan;
use crate::settlement::Settlement;

/// A money value as FHIR.
pub fn money(value: Decimal, currency: &str) -> Value {
    let v: Value = serde_json::from_str(&value.normalize().to_string()).unwrap_or(json!(0));
    json!({"value": v, "currency": currency})
}

/// The performance report. `quality` lists (reference, outcome id) of the quality reports it
/// rests on, for `evaluatedResource`.
pub fn report(
    plan: &Plan,
    settlement: &Settlement,
    period: &Period,
    today: Day,
    quality: &[(String, String)],
) -> Value {
    let cur = &settlement.currency;
    let groups: Vec<Value> = settlement
        .streams
        .iter()
        .map(|s| {
            let system = stream_system(&s.stream);
            json!({
                "id": s.stream,
                "extension": [
                    {"url": format!("{VBPR}/StructureDefinition/payment-stream"), "extension": [
                        {"url": "type", "valueCodeableConcept": cc(&system, &s.stream, None)}
                    ]},
                    {"url": format!("{VBPR}/StructureDefinition/service-period"), "valuePeriod": period.fhir()},
                    {"url": format!("{VBPR}/StructureDefinition/paid-through-date"), "valueDate": days::format(today.min(period.end))},
                    {"url": format!("{EXT}/payment-direction"), "valueCode": s.direction.code()},
                    {"url": format!("{EXT}/at-stake-pending"), "valueMoney": money(s.at_stake_pending, cur)},
                    {"url": format!("{EXT}/at-stake-missing-data"), "valueMoney": money(s.at_stake_missing_data, cur)},
                    {"url": format!("{EXT}/patients-owed"), "valueUnsignedInt": s.patients_owed},
                    {"url": format!("{EXT}/patients-missing-data"), "valueUnsignedInt": s.patients_missing_data},
                    {"url": format!("{EXT}/patients-pending"), "valueUnsignedInt": s.patients_pending},
                ],
                "code": cc(&system, &s.stream, None),
                "measureScore": {"extension": [{
                    "url": format!("{VBPR}/StructureDefinition/alternate-measurescore"),
                    "valueMoney": money(s.owed, cur)
                }]},
            })
        })
        .collect();
    let evaluated: Vec<Value> = quality
        .iter()
        .map(|(reference, outcome)| {
            json!({
                "extension": [{"url": format!("{VBPR}/StructureDefinition/group-reference"), "valueString": outcome}],
                "reference": reference,
            })
        })
        .collect();
    let mut r = json!({
        "resourceType": "MeasureReport",
        "meta": {"profile": [format!("{VBPR}/StructureDefinition/vbp-performance-measurereport")]},
        "extension": [{
            "url": "http://hl7.org/fhir/StructureDefinition/measurereport-category",
            "valueCodeableConcept": cc("http://hl7.org/fhir/CodeSystem/measurereport-category", "vbp", None)
        }],
        "status": "complete",
        "type": "summary",
        "measure": measure_canonical(plan, &plan.ids.contract()),
        "subject": {
            "extension": [{
                "url": format!("{VBPR}/StructureDefinition/organization-subject"),
                "valueReference": manufacturer_ref(plan)
            }],
            "display": plan.rules.contract.manufacturer.name,
        },
        "date": days::format(today),
        "reporter": payer_ref(plan),
        "period": period.fhir(),
        "group": groups,
    });
    if !evaluated.is_empty() {
        r["evaluatedResource"] = json!(evaluated);
    }
    r
}

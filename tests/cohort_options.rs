//! Cohort options of issue 15 through the HTTP API, against hand-computed memberships: which
//! sources break the washout (an order alone does not, when the contract says so), a background
//! therapy whose supply reaches into the look-back, and ICD-10-GM codes. The same data under a
//! contract without the options is evaluated as before (a loaded contract keeps its rules).

mod common;

use common::*;
use serde_json::{json, Value};

const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";

fn fill(id: &str, p: &str, rxnorm: &str, day: &str, supply: u32) -> Value {
    put_entry(
        "MedicationDispense",
        id,
        json!({"status": "completed", "subject": {"reference": format!("Patient/{p}")},
               "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm}]},
               "quantity": {"value": supply}, "daysSupply": {"value": supply, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"},
               "whenHandedOver": format!("{day}T10:00:00Z")}),
    )
}

fn order(id: &str, p: &str, rxnorm: &str, day: &str) -> Value {
    put_entry(
        "MedicationRequest",
        id,
        json!({"status": "active", "intent": "order", "subject": {"reference": format!("Patient/{p}")},
               "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": rxnorm}]},
               "authoredOn": day}),
    )
}

const WITH_OPTIONS: &str = r#"
format = "vbc-contract/1"
[contract]
id = "test-cohort"
version = "1"
title = "Cohort options"
status = "active"
period = "2024-01-01..2028-12-31"
currency = "EUR"
[parties.payer]
name = "Test Kasse"
[parties.manufacturer]
name = "Test Maker"
[drug]
valueset = "drug"
[valuesets.drug]
codes = ["rxnorm|1656339|sacubitril / valsartan"]
[valuesets.metformin]
codes = ["rxnorm|6809|metformin"]
[valuesets.fracture]
codes = ["icd10gm|S72.00|Schenkelhalsfraktur"]
[cohort]
intake = "2024-07-01..2026-12-31"
sources = ["MedicationDispense"]
washout_days = 180
washout_sources = ["MedicationDispense", "MedicationAdministration"]
[[cohort.therapy]]
valueset = "metformin"
within_days = 90
supply_counts = true
[valuesets.repair]
codes = ["https://vbc-server.dev/fhir/CodeSystem/test|hip-repair|Hip fracture repair"]
[[outcome]]
id = "no-fracture"
title = "No hip fracture in a year"
kind = "event"
source = "condition"
diagnosis = "fracture"
window = "0..364"
[[outcome]]
id = "no-repair"
title = "No hip fracture repair in a year"
kind = "event"
source = "procedure"
diagnosis = "repair"
window = "0..364"
"#;

/// (membership, reason, status of no-fracture, status of no-repair) of a patient.
fn result(
    s: &Server,
    c: &reqwest::blocking::Client,
    m: &str,
    p: &str,
) -> (String, String, String, String) {
    let v = get_json(s, c, &format!("/Measure/{m}/$outcomes?subject=Patient/{p}"));
    let r = v["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["name"] == "result")
        .cloned()
        .unwrap_or_else(|| panic!("no result for {p}: {v}"));
    let part = |v: &Value, name: &str| -> Vec<Value> {
        v["part"]
            .as_array()
            .map(|ps| ps.iter().filter(|x| x["name"] == name).cloned().collect())
            .unwrap_or_default()
    };
    let s_of = |v: &[Value], k: &str| {
        v.first()
            .and_then(|x| x[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let status = |id: &str| {
        part(&r, "outcome")
            .iter()
            .find(|o| {
                part(o, "id")
                    .first()
                    .and_then(|x| x["valueString"].as_str())
                    == Some(id)
            })
            .map(|o| s_of(&part(o, "status"), "valueCode"))
            .unwrap_or_default()
    };
    (
        s_of(&part(&r, "membership"), "valueCode"),
        s_of(&part(&r, "reason"), "valueString"),
        status("no-fracture"),
        status("no-repair"),
    )
}

#[test]
fn washout_sources_therapy_supply_and_icd10gm_decide_membership_as_the_contract_says() {
    let s = Server::start();
    let c = client();
    for text in [
        WITH_OPTIONS.to_string(),
        // the same contract without the options: today's rules
        WITH_OPTIONS
            .replace("id = \"test-cohort\"", "id = \"test-plain\"")
            .replace(
                "washout_sources = [\"MedicationDispense\", \"MedicationAdministration\"]\n",
                "",
            )
            .replace("supply_counts = true\n", ""),
    ] {
        let r = load_contract(&s, &c, &text);
        assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    }
    // ordered: an order 30 days before the first fill (2025-03-01); metformin filled for 90
    // days on day -91 (2024-11-30: covers days -91..-2, reaching into the 90-day look-back);
    // a hip fracture (ICD-10-GM) on day 100
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![
            put_entry("Patient", "ordered", json!({"birthDate": "1950-02-03"})),
            order("ordered-rx", "ordered", "1656339", "2025-01-30"),
            fill("ordered-f1", "ordered", "1656339", "2025-03-01", 30),
            fill("ordered-met", "ordered", "6809", "2024-11-30", 90),
            put_entry(
                "Condition",
                "ordered-fx",
                json!({"clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                       "code": {"coding": [{"system": "http://fhir.de/CodeSystem/bfarm/icd-10-gm", "code": "S72.00"}]},
                       "subject": {"reference": "Patient/ordered"}, "onsetDateTime": "2025-06-09"}),
            ),
            // its repair on day 101
            put_entry(
                "Procedure",
                "ordered-repair",
                json!({"status": "completed", "subject": {"reference": "Patient/ordered"},
                       "code": {"coding": [{"system": "https://vbc-server.dev/fhir/CodeSystem/test", "code": "hip-repair"}]},
                       "performedDateTime": "2025-06-10T08:00:00Z"}),
            ),
        ]),
    );
    // short: metformin for 30 days on day -120 (covers -120..-91): no therapy in the look-back
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![
            put_entry("Patient", "short", json!({"birthDate": "1950-02-03"})),
            fill("short-f1", "short", "1656339", "2025-03-01", 30),
            fill("short-met", "short", "6809", "2024-10-31", 30),
        ]),
    );
    // refilled: a fill of the drug before the intake (2024-06-15) and again on 2024-08-01:
    // a prior user under both contracts
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![
            put_entry("Patient", "refilled", json!({"birthDate": "1950-02-03"})),
            fill("refilled-f0", "refilled", "1656339", "2024-06-15", 30),
            fill("refilled-f1", "refilled", "1656339", "2024-08-01", 30),
            fill("refilled-met", "refilled", "6809", "2024-07-20", 30),
        ]),
    );
    let (m, reason, fracture, repair) = result(&s, &c, "test-cohort-1", "ordered");
    assert_eq!(m, "member", "{reason}");
    assert_eq!(
        fracture, "not-met",
        "the ICD-10-GM fracture on day 100 counts"
    );
    assert_eq!(
        repair, "not-met",
        "the repair Procedure on day 101 is an event"
    );
    let (m, reason, _, _) = result(&s, &c, "test-cohort-1", "short");
    assert_eq!(m, "ineligible");
    assert!(reason.contains("metformin"), "{reason}");
    let (m, _, _, _) = result(&s, &c, "test-cohort-1", "refilled");
    assert_eq!(m, "not-new-user");
    // without the options: the order breaks the washout, as before
    let (m, reason, _, _) = result(&s, &c, "test-plain-1", "ordered");
    assert_eq!(m, "not-new-user", "{reason}");
    assert!(reason.contains("2025-01-30"), "{reason}");
    let (m, _, _, _) = result(&s, &c, "test-plain-1", "refilled");
    assert_eq!(m, "not-new-user");
    // a washout source that is not one is refused and located
    let bad = WITH_OPTIONS
        .replace("id = \"test-cohort\"", "id = \"test-bad\"")
        .replace("\"MedicationAdministration\"]", "\"Claim\"]");
    let r = load_contract(&s, &c, &bad);
    assert_eq!(r.status(), 400);
    let at = error_expressions(&body_json(r));
    assert!(
        at.iter().any(|a| a == "cohort.washout_sources[1]"),
        "{at:?}"
    );
}

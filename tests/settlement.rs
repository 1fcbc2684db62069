//! Settlement through the HTTP API against hand-computed amounts (issue 15): lab units converted
//! by UCUM wherever they are commensurable, cohort-rate rebates at stake before any member is
//! decided, and one patient's money lines taken under the period's cohort rate.

mod common;

use common::*;
use rust_decimal::Decimal;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::str::FromStr;
use vbc_server::engine::days;

fn dispense(id: &str, p: &str, rxnorm: &str, day: &str, quantity: u32) -> Value {
    put_entry(
        "MedicationDispense",
        id,
        json!({"status": "completed", "subject": {"reference": format!("Patient/{p}")},
               "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxnorm}]},
               "quantity": {"value": quantity}, "daysSupply": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"},
               "whenHandedOver": format!("{day}T10:00:00Z")}),
    )
}

fn lab(id: &str, p: &str, loinc: &str, day: &str, value: &str, unit: &str) -> Value {
    let v: serde_json::Number = value.parse().expect("number");
    put_entry(
        "Observation",
        id,
        json!({"status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": loinc}]},
               "subject": {"reference": format!("Patient/{p}")}, "effectiveDateTime": day,
               "valueQuantity": {"value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}),
    )
}

/// An active Condition of `p` coded `system|code`, with its onset date.
fn active_condition(id: &str, p: &str, system: &str, code: &str, onset: &str) -> Value {
    put_entry(
        "Condition",
        id,
        json!({"clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
               "code": {"coding": [{"system": system, "code": code}]},
               "subject": {"reference": format!("Patient/{p}")}, "onsetDateTime": onset}),
    )
}

fn part<'a>(v: &'a Value, name: &str) -> Vec<&'a Value> {
    v["part"]
        .as_array()
        .map(|ps| ps.iter().filter(|p| p["name"] == name).collect())
        .unwrap_or_default()
}

/// (membership, reason, status of `outcome`) of a patient from `$outcomes`.
fn result_of(
    s: &Server,
    c: &reqwest::blocking::Client,
    measure: &str,
    p: &str,
    outcome: &str,
) -> (String, String, String) {
    let v = get_json(
        s,
        c,
        &format!("/Measure/{measure}/$outcomes?subject=Patient/{p}"),
    );
    let r = v["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["name"] == "result")
        .cloned()
        .unwrap_or(Value::Null);
    let text = |x: Option<&&Value>, k: &str| {
        x.and_then(|x| x[k].as_str())
            .unwrap_or_default()
            .to_string()
    };
    let status = part(&r, "outcome")
        .into_iter()
        .find(|o| {
            part(o, "id")
                .first()
                .and_then(|x| x["valueString"].as_str())
                == Some(outcome)
        })
        .map(|o| text(part(o, "status").first(), "valueCode"))
        .unwrap_or_default();
    (
        text(part(&r, "membership").first(), "valueCode"),
        text(part(&r, "reason").first(), "valueString"),
        status,
    )
}

/// A dapagliflozin new user (index 2025-03-01) with type 2 diabetes, metformin 28 days before
/// index, a baseline HbA1c of 8.0 % and 7.0 % on day 180 (-12.5 %: a response), and one eGFR
/// result 9 days before index as given.
fn dapagliflozin_patient(p: &str, egfr_value: &str, egfr_unit: &str) -> Value {
    transaction_bundle(vec![
        put_entry(
            "Patient",
            p,
            json!({"birthDate": "1965-04-02", "gender": "male"}),
        ),
        active_condition(
            &format!("{p}-t2d"),
            p,
            "http://snomed.info/sct",
            "44054006",
            "2020-03-01",
        ),
        dispense(&format!("{p}-met"), p, "6809", "2025-02-01", 60),
        dispense(&format!("{p}-dapa"), p, "1488564", "2025-03-01", 28),
        lab(
            &format!("{p}-egfr"),
            p,
            "62238-1",
            "2025-02-20",
            egfr_value,
            egfr_unit,
        ),
        lab(&format!("{p}-a1c0"), p, "4548-4", "2025-02-15", "8.0", "%"),
        lab(&format!("{p}-a1c1"), p, "4548-4", "2025-08-28", "7.0", "%"),
    ])
}

#[test]
fn an_egfr_in_any_commensurable_ucum_unit_counts_and_its_annotation_must_match() {
    let s = Server::start_with(&["--contracts-dir", "contracts"]);
    let c = client();
    let m = "dapagliflozin-uk-1.1.0";
    // (patient, value, unit, membership): 1.10 mL/s = 66 mL/min and 0.066 L/min = 66 mL/min,
    // both per 1.73 m2, are above 60; 0.99 mL/s = 59.4 is not; 66 mL/min without the body
    // surface annotation is another measure and cannot be used
    let cases = [
        ("egfr-mls", "1.10", "mL/s/{1.73_m2}", "member"),
        ("egfr-lmin", "0.066", "L/min/{1.73_m2}", "member"),
        ("egfr-low", "0.99", "mL/s/{1.73_m2}", "ineligible"),
        ("egfr-bare", "66", "mL/min", "ineligible"),
    ];
    for (p, v, u, _) in cases {
        post_bundle(&s, &c, &dapagliflozin_patient(p, v, u));
    }
    for (p, _, u, want) in cases {
        let (membership, reason, status) = result_of(&s, &c, m, p, "hba1c-response");
        assert_eq!(membership, want, "{p} ({u}): {reason}");
        if want == "member" {
            assert_eq!(status, "met", "{p}: {reason}");
        } else {
            assert!(reason.contains("egfr"), "{p}: {reason}");
        }
    }
}

const RATES: &str = r#"
format = "vbc-contract/1"
[contract]
id = "test-rates"
version = "1"
title = "Cohort rates"
status = "active"
period = "2024-01-01..2028-12-31"
currency = "USD"
[parties.payer]
name = "Test Payer"
[parties.manufacturer]
name = "Test Maker"
[drug]
valueset = "drug"
unit_price = "10 USD"
[valuesets.drug]
codes = ["rxnorm|1656339|sacubitril / valsartan"]
[valuesets.hf]
codes = ["icd10cm|I50.9"]
[cohort]
intake = "2024-07-01..2026-12-31"
sources = ["MedicationDispense"]
[[outcome]]
id = "no-stay"
title = "No heart-failure stay in 90 days"
kind = "event"
source = "encounter"
encounter_class = ["IMP"]
diagnosis = "hf"
window = "0..89"
[[payment]]
stream = "event-rebate"
kind = "event-rate-rebate"
outcome = "no-stay"
rate_above = "0.25"
share = "5 %"
[[payment]]
stream = "tier-rebate"
kind = "tiered-rebate"
outcome = "no-stay"
tiers = [{ min_rate = "0", share = "20 %" }, { min_rate = "0.5", share = "10 %" }]
"#;

fn rates_member(p: &str, index: &str, stay: Option<&str>) -> Value {
    let mut e = vec![
        put_entry("Patient", p, json!({"birthDate": "1960-01-01"})),
        dispense(&format!("{p}-d"), p, "1656339", index, 30),
    ];
    if let Some(day) = stay {
        e.push(put_entry(
            "Encounter",
            &format!("{p}-stay"),
            json!({"status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                   "subject": {"reference": format!("Patient/{p}")},
                   "period": {"start": format!("{day}T08:00:00Z"), "end": format!("{day}T20:00:00Z")},
                   "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I50.9"}]}]}),
        ));
    }
    transaction_bundle(e)
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

#[test]
fn cohort_rate_rebates_are_at_stake_before_any_decision_and_one_patient_shares_the_period_rate() {
    let s = Server::start();
    let c = client();
    let resp = load_contract(&s, &c, RATES);
    assert_eq!(resp.status(), 201, "{}", resp.text().unwrap_or_default());
    let m = "test-rates-1";
    // a: index 2025-01-10, no stay in days 0..89: met; b: same index, a stay on day 22: not
    // met; open: indexed 30 days ago, window open: pending. Each has one fill of 30 x 10 USD.
    let open_day = days::format(days::today() - 30);
    post_bundle(&s, &c, &rates_member("a", "2025-01-10", None));
    post_bundle(&s, &c, &rates_member("b", "2025-01-10", Some("2025-02-01")));
    post_bundle(&s, &c, &rates_member("open", &open_day, None));
    assert_eq!(result_of(&s, &c, m, "a", "no-stay").2, "met");
    assert_eq!(result_of(&s, &c, m, "b", "no-stay").2, "not-met");
    assert_eq!(result_of(&s, &c, m, "open", "no-stay").2, "pending");

    // A period holding only the open window: no decided member, so every line is at stake
    // (pending) at the most the rate could make it: 5 % x 300 = 15.00 for the event-rate rebate,
    // the largest tier 20 % x 300 = 60.00 for the tiered one.
    let only_open = format!("periodStart={open_day}&periodEnd={open_day}");
    let perf = performance_money(&get_json(
        &s,
        &c,
        &format!("/Measure/{m}/$evaluate-measure?{only_open}"),
    ));
    assert_eq!(
        perf["event-rebate"],
        [d("0"), d("15.00"), d("0")],
        "{perf:?}"
    );
    assert_eq!(
        perf["tier-rebate"],
        [d("0"), d("60.00"), d("0")],
        "{perf:?}"
    );

    // 2025: a and b decided, event rate 1/2 = 0.5 > 0.25 -> 5 % x 300 = 15.00 each; responder
    // rate 1/2 = 0.5 -> tier 10 % x 300 = 30.00 each.
    let y2025 = "periodStart=2025-01-01&periodEnd=2025-12-31";
    let perf = performance_money(&get_json(
        &s,
        &c,
        &format!("/Measure/{m}/$evaluate-measure?{y2025}"),
    ));
    assert_eq!(
        perf["event-rebate"],
        [d("30.00"), d("0"), d("0")],
        "{perf:?}"
    );
    assert_eq!(
        perf["tier-rebate"],
        [d("60.00"), d("0"), d("0")],
        "{perf:?}"
    );
    // each patient's individual report shows its line under the period's rate (alone, a's
    // event rate would be 0 and b's responder rate 0)
    for p in ["a", "b"] {
        let ind = individual_money(&get_json(
            &s,
            &c,
            &format!("/Measure/{m}/$evaluate-measure?{y2025}&subject=Patient/{p}"),
        ));
        let want: BTreeMap<(String, String), Decimal> = [
            (("event-rebate".into(), "owed".into()), d("15.00")),
            (("tier-rebate".into(), "owed".into()), d("30.00")),
        ]
        .into_iter()
        .collect();
        assert_eq!(ind, want, "{p}");
    }
    // the whole intake: the individual reports add up to the performance report
    let all_time = "periodStart=2024-01-01&periodEnd=2026-12-31";
    let perf = performance_money(&get_json(
        &s,
        &c,
        &format!("/Measure/{m}/$evaluate-measure?{all_time}"),
    ));
    // over all three: rates as in 2025 (open is undecided); open's lines at stake: 15.00, 30.00
    assert_eq!(
        perf["event-rebate"],
        [d("30.00"), d("15.00"), d("0")],
        "{perf:?}"
    );
    assert_eq!(
        perf["tier-rebate"],
        [d("60.00"), d("30.00"), d("0")],
        "{perf:?}"
    );
    let mut sum: BTreeMap<(String, String), Decimal> = BTreeMap::new();
    for p in ["a", "b", "open"] {
        for (k, v) in individual_money(&get_json(
            &s,
            &c,
            &format!("/Measure/{m}/$evaluate-measure?{all_time}&subject=Patient/{p}"),
        )) {
            *sum.entry(k).or_insert(Decimal::ZERO) += v;
        }
    }
    for (stream, [owed, pending, missing]) in &perf {
        let get = |st: &str| {
            sum.get(&(stream.clone(), st.to_string()))
                .copied()
                .unwrap_or(Decimal::ZERO)
        };
        assert_eq!(
            [
                get("owed"),
                get("at-stake-pending"),
                get("at-stake-missing-data")
            ],
            [*owed, *pending, *missing],
            "{stream}"
        );
    }
}

const POLICIES: &str = r#"
format = "vbc-contract/1"
[contract]
id = "test-policies"
version = "1"
title = "Missing data and death"
status = "active"
period = "2024-01-01..2028-12-31"
currency = "USD"
[parties.payer]
name = "Test Payer"
[parties.manufacturer]
name = "Test Maker"
[drug]
valueset = "drug"
unit_price = "10 USD"
[valuesets.drug]
codes = ["rxnorm|1656339|sacubitril / valsartan"]
[valuesets.hf]
codes = ["icd10cm|I50.9"]
[valuesets.hba1c]
codes = ["loinc|4548-4"]
[labs.hba1c]
valueset = "hba1c"
unit = "%"
[cohort]
intake = "2024-07-01..2026-12-31"
sources = ["MedicationDispense"]
[exclusions]
death = true
[[outcome]]
id = "a1c-strict"
title = "HbA1c below 7 %, missing counts as not met after 60 days"
kind = "lab-target"
lab = "hba1c"
window = "150..210"
target = "< 7.0 %"
missing_data = "not-met-after-days 60"
on_death = "not-met"
[[outcome]]
id = "a1c-lenient"
title = "HbA1c below 7 %, missing counts as met right after the window"
kind = "lab-target"
lab = "hba1c"
window = "150..210"
target = "< 7.0 %"
missing_data = "met-after-days 0"
[[outcome]]
id = "a1c-plain"
title = "HbA1c below 7 %"
kind = "lab-target"
lab = "hba1c"
window = "150..210"
target = "< 7.0 %"
[[outcome]]
id = "no-stay"
title = "No heart-failure stay in a year, counted until death"
kind = "event"
source = "encounter"
encounter_class = ["IMP"]
diagnosis = "hf"
window = "0..364"
on_death = "until-death"
[[outcome]]
id = "no-stay-plain"
title = "No heart-failure stay in a year"
kind = "event"
source = "encounter"
encounter_class = ["IMP"]
diagnosis = "hf"
window = "0..364"
[[payment]]
stream = "refund"
kind = "refund-per-non-responder"
outcome = "a1c-strict"
amount = "100 USD"
"#;

fn policy_member(p: &str, index: &str, died: Option<&str>) -> Value {
    let mut patient = json!({"birthDate": "1960-01-01"});
    if let Some(d) = died {
        patient["deceasedDateTime"] = json!(d);
    }
    transaction_bundle(vec![
        put_entry("Patient", p, patient),
        dispense(&format!("{p}-d"), p, "1656339", index, 30),
    ])
}

#[test]
fn missing_data_and_death_are_settled_as_each_outcome_says() {
    let s = Server::start();
    let c = client();
    // an option where it does not apply, and a policy that is not one, are refused and located
    let bad = POLICIES
        .replace(
            "missing_data = \"met-after-days 0\"",
            "missing_data = \"met-after 3\"\non_death = \"until-death\"",
        )
        .replace("test-policies", "test-bad")
        + "[[outcome]]\nid = \"alive\"\ntitle = \"Alive\"\nkind = \"survival\"\nday = 30\non_death = \"not-met\"\n";
    let r = load_contract(&s, &c, &bad);
    assert_eq!(r.status(), 400);
    let oo = body_json(r);
    let at = error_expressions(&oo);
    for expected in [
        "outcome[1].missing_data",
        "outcome[1].on_death",
        "outcome[5].on_death",
    ] {
        assert!(at.iter().any(|a| a == expected), "{expected}: {oo}");
    }

    let r = load_contract(&s, &c, POLICIES);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let m = "test-policies-1";
    let today = days::today();
    // gone: index 2025-01-10, no HbA1c: the window 2025-06-09..2025-08-08 closed long ago and the
    // 60 days of grace ended 2025-10-07
    post_bundle(&s, &c, &policy_member("gone", "2025-01-10", None));
    // late: the window closed 20 days ago; the data may still come for 40 days
    let late_index = today - 210 - 20;
    post_bundle(
        &s,
        &c,
        &policy_member("late", &days::format(late_index), None),
    );
    // died: index 2025-01-10, died 2025-04-20 (day 100) without a stay
    post_bundle(
        &s,
        &c,
        &policy_member("died", "2025-01-10", Some("2025-04-20")),
    );
    // died-after-stay: a heart-failure stay on day 30, died on day 100
    post_bundle(
        &s,
        &c,
        &policy_member("stayed", "2025-01-10", Some("2025-04-20")),
    );
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![put_entry(
            "Encounter",
            "stayed-stay",
            json!({"status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                   "subject": {"reference": "Patient/stayed"},
                   "period": {"start": "2025-02-09T08:00:00Z", "end": "2025-02-09T20:00:00Z"},
                   "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I50.9"}]}]}),
        )]),
    );
    let status = |p: &str, o: &str| result_of(&s, &c, m, p, o).2;
    assert_eq!(status("gone", "a1c-strict"), "not-met");
    assert_eq!(status("gone", "a1c-lenient"), "met");
    assert_eq!(status("gone", "a1c-plain"), "missing-data");
    assert_eq!(status("late", "a1c-strict"), "missing-data");
    assert_eq!(
        status("late", "a1c-lenient"),
        "met",
        "0 days of grace: met the day after the window"
    );
    assert_eq!(
        status("died", "a1c-strict"),
        "not-met",
        "on_death = not-met"
    );
    assert_eq!(status("died", "a1c-plain"), "excluded");
    assert_eq!(
        status("died", "no-stay"),
        "met",
        "no stay before the death: the window ended there"
    );
    assert_eq!(status("died", "no-stay-plain"), "excluded");
    assert_eq!(status("stayed", "no-stay"), "not-met");
    assert_eq!(status("stayed", "no-stay-plain"), "not-met");

    // money: gone, died and stayed (both died before the window) are owed 100 each; late's 100
    // is at stake for missing data
    let perf = performance_money(&get_json(
        &s,
        &c,
        &format!("/Measure/{m}/$evaluate-measure?periodStart=2024-07-01&periodEnd=2026-12-31"),
    ));
    assert_eq!(
        perf["refund"],
        [d("300.00"), d("0"), d("100.00")],
        "{perf:?}"
    );
    // the care-gaps list gives late's deadline: window end + 60 days
    let deadline = days::format(today - 20 + 60);
    let gaps = get_json(
        &s,
        &c,
        &format!("/Measure/{m}/$care-gaps?periodStart=2024-07-01&periodEnd=2026-12-31&status=open-gap&subject=Patient/late"),
    );
    let issues: Vec<Value> = gaps["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| {
            p["resource"]["entry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|e| e["resource"].clone())
        .collect();
    let strict = issues
        .iter()
        .find(|i| i["id"] == "late-a1c-strict")
        .unwrap_or_else(|| panic!("no gap for a1c-strict: {gaps}"));
    assert_eq!(
        strict["extension"][1]["valueDate"],
        deadline.as_str(),
        "{strict}"
    );
    assert!(
        strict["detail"]
            .as_str()
            .is_some_and(|d| d.contains(&format!("needed by {deadline}"))),
        "{strict}"
    );
    let plain = issues
        .iter()
        .find(|i| i["id"] == "late-a1c-plain")
        .unwrap_or_else(|| panic!("no gap for a1c-plain: {gaps}"));
    assert_eq!(
        plain["extension"][1]["valueDate"],
        days::format(today - 20).as_str()
    );
}

const EXPOSURES: &str = r#"
format = "vbc-contract/1"
[contract]
id = "test-exposures"
version = "1"
title = "Units and matched records"
status = "active"
period = "2024-01-01..2028-12-31"
currency = "EUR"
[parties.payer]
name = "Test Payer"
[parties.manufacturer]
name = "Test Maker"
[drug]
valueset = "drug"
unit_price = "1000 EUR"
unit = "100 mg"
price_stopped = true
same_exposure_days = 3
[valuesets.drug]
codes = ["rxnorm|318341|cetuximab", "cpt|96413|Chemotherapy IV infusion"]
[cohort]
intake = "2024-07-01..2026-12-31"
sources = ["MedicationDispense", "MedicationAdministration", "Procedure"]
washout_days = 180
[[outcome]]
id = "alive"
title = "Alive at 30 days"
kind = "survival"
day = 30
[[payment]]
stream = "refund"
kind = "refund-per-non-responder"
outcome = "alive"
share_of_drug_cost = "100 %"
"#;

fn infusion(id: &str, p: &str, day: &str, mg: u32, status: &str) -> Value {
    put_entry(
        "MedicationAdministration",
        id,
        json!({"status": status, "subject": {"reference": format!("Patient/{p}")},
               "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "318341"}]},
               "effectiveDateTime": format!("{day}T09:00:00Z"),
               "dosage": {"dose": {"value": mg, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}}),
    )
}

#[test]
fn one_exposure_is_counted_once_and_priced_by_the_dose_it_states() {
    let s = Server::start();
    let c = client();
    for text in [
        EXPOSURES.to_string(),
        // without the options: every record counts, an administration is one unit
        EXPOSURES
            .replace("id = \"test-exposures\"", "id = \"test-records\"")
            .replace(
                "unit = \"100 mg\"\nprice_stopped = true\nsame_exposure_days = 3\n",
                "",
            ),
    ] {
        let r = load_contract(&s, &c, &text);
        assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    }
    // matched: the pharmacy dispenses 5 vials on 2025-01-10, the 500 mg infusion is given on
    // 2025-01-12 and also sent as a Procedure; died 2025-01-20 (before day 30: not met)
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![
            put_entry(
                "Patient",
                "matched",
                json!({"birthDate": "1955-01-01", "deceasedDateTime": "2025-01-20"}),
            ),
            put_entry(
                "MedicationDispense",
                "matched-md",
                json!({"status": "completed", "subject": {"reference": "Patient/matched"},
                       "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "318341"}]},
                       "quantity": {"value": 5}, "whenHandedOver": "2025-01-10T10:00:00Z"}),
            ),
            infusion("matched-ma", "matched", "2025-01-12", 500, "completed"),
            put_entry(
                "Procedure",
                "matched-pr",
                json!({"status": "completed", "subject": {"reference": "Patient/matched"},
                       "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "96413"}]},
                       "performedDateTime": "2025-01-12T09:00:00Z"}),
            ),
        ]),
    );
    // dosed: 450 mg on 2025-01-10 (4.5 vials: 5 opened), an infusion of 200 mg stopped on
    // 2025-01-15 (2 vials used); died 2025-01-20
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![
            put_entry(
                "Patient",
                "dosed",
                json!({"birthDate": "1955-01-01", "deceasedDateTime": "2025-01-20"}),
            ),
            infusion("dosed-1", "dosed", "2025-01-10", 450, "completed"),
            // 5 vials dispensed the day before the stopped infusion: one exposure with it
            put_entry(
                "MedicationDispense",
                "dosed-md",
                json!({"status": "completed", "subject": {"reference": "Patient/dosed"},
                       "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "318341"}]},
                       "quantity": {"value": 5}, "whenHandedOver": "2025-01-14T10:00:00Z"}),
            ),
            infusion("dosed-2", "dosed", "2025-01-15", 200, "stopped"),
        ]),
    );
    let period = "periodStart=2024-07-01&periodEnd=2026-12-31";
    let owed = |m: &str, p: &str| {
        let r = get_json(
            &s,
            &c,
            &format!("/Measure/{m}/$evaluate-measure?{period}&subject=Patient/{p}"),
        );
        individual_money(&r)
            .get(&("refund".to_string(), "owed".to_string()))
            .copied()
            .unwrap_or_default()
    };
    let index = |m: &str, p: &str| {
        let v = get_json(
            &s,
            &c,
            &format!("/Measure/{m}/$outcomes?subject=Patient/{p}"),
        );
        let r = v["parameter"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["name"] == "result")
            .cloned()
            .unwrap_or(Value::Null);
        part(&r, "indexDate")
            .first()
            .and_then(|x| x["valueDate"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    // with the options: one exposure, the administration's day and its 5 vials (the dispense
    // two days before is the same exposure, not a prior use in the washout)
    assert_eq!(index("test-exposures-1", "matched"), "2025-01-12");
    assert_eq!(owed("test-exposures-1", "matched"), d("5000.00"));
    // 5 vials + the stopped infusion's 2 vials, which stands for the dispense matched with it
    assert_eq!(owed("test-exposures-1", "dosed"), d("7000.00"));
    // without: the dispense is the index; 5 dispensed + 1 administration, the Procedure unpriced
    assert_eq!(index("test-records-1", "matched"), "2025-01-10");
    assert_eq!(owed("test-records-1", "matched"), d("6000.00"));
    // 1 administration + 5 dispensed; the stopped infusion is not priced
    assert_eq!(owed("test-records-1", "dosed"), d("6000.00"));
}

#[test]
fn a_contract_loaded_earlier_keeps_its_rules_beside_its_new_version() {
    // the catalog's Kymriah (1.1.0 on) counts an early death as a non-response; 1.0.0 (the same
    // text without the later options) excluded it. Both are loaded, as a store that held 1.0.0
    // keeps it.
    let s = Server::start_with(&["--contracts-dir", "contracts"]);
    let c = client();
    let v120 = std::fs::read_to_string("contracts/kymriah-novartis.toml").expect("contract");
    let v100 = v120
        .replace("version = \"1.2.0\"", "version = \"1.0.0\"")
        .lines()
        .filter(|l| {
            !["on_death", "same_exposure_days", "cost_days"]
                .iter()
                .any(|o| l.starts_with(o))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let r = load_contract(&s, &c, &v100);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    // infused 2025-03-03 (a Procedure), died on day 10, before the day 23..37 window
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![
            put_entry(
                "Patient",
                "cart",
                json!({"birthDate": "1990-01-01", "deceasedDateTime": "2025-03-13"}),
            ),
            active_condition(
                "cart-dx",
                "cart",
                "http://hl7.org/fhir/sid/icd-10-cm",
                "C83.30",
                "2024-11-01",
            ),
            put_entry(
                "Procedure",
                "cart-infusion",
                json!({"status": "completed", "subject": {"reference": "Patient/cart"},
                       "code": {"coding": [{"system": "http://www.cms.gov/Medicare/Coding/ICD10", "code": "XW033J7"}]},
                       "performedDateTime": "2025-03-03T09:00:00Z"}),
            ),
        ]),
    );
    let (_, _, old) = result_of(&s, &c, "kymriah-novartis-1.0.0", "cart", "response-day-30");
    let (_, reason, new) = result_of(&s, &c, "kymriah-novartis-1.2.0", "cart", "response-day-30");
    assert_eq!(old, "excluded");
    assert_eq!(new, "not-met", "{reason}");
    let period = "periodStart=2025-01-01&periodEnd=2025-12-31";
    let perf = |m: &str| {
        performance_money(&get_json(
            &s,
            &c,
            &format!("/Measure/{m}/$evaluate-measure?{period}"),
        ))["refund"]
    };
    assert_eq!(perf("kymriah-novartis-1.0.0"), [d("0"), d("0"), d("0")]);
    // the Procedure is priced at the pack price: the full price is refunded
    assert_eq!(
        perf("kymriah-novartis-1.2.0"),
        [d("475000.00"), d("0"), d("0")]
    );
}

/// An eligible dapagliflozin patient (see [`dapagliflozin_patient`]) with fills of 28 tablets
/// (GBP 1.31 each: 36.68 a fill) on the given days and a follow-up HbA1c of `follow_up` % on
/// 2025-08-28 (baseline 8.0 %).
fn dapagliflozin_fills(p: &str, follow_up: &str, fills: &[&str]) -> Value {
    let mut b = dapagliflozin_patient(p, "75", "mL/min/{1.73_m2}");
    let entries = b["entry"].as_array_mut().expect("entries");
    for e in entries.iter_mut() {
        if e["resource"]["id"] == format!("{p}-a1c1").as_str() {
            e["resource"]["valueQuantity"]["value"] =
                json!(follow_up.parse::<f64>().expect("value"));
        }
    }
    for (i, day) in fills.iter().enumerate() {
        entries.push(dispense(&format!("{p}-fill{i}"), p, "1488564", day, 28));
    }
    b
}

#[test]
fn no_fill_is_paid_twice_and_a_refund_covers_only_the_days_its_outcome_answers_for() {
    let s = Server::start_with(&["--contracts-dir", "contracts"]);
    let c = client();
    // Dapagliflozin 1.1.0: index 2025-03-01 (28 tablets), refills 03-29, 04-26, 08-10 and, after
    // the window (days 150..210, to 2025-09-27), 10-15 and 11-12: six fills of 36.68.
    let later = [
        "2025-03-29",
        "2025-04-26",
        "2025-08-10",
        "2025-10-15",
        "2025-11-12",
    ];
    // a non-responder (8.0 -> 7.6 %: -5 %): the two fills after the decision are free drug
    // (73.36 owed), and the up-front 10 % rebate covers only the four others: 14.672 -> 14.67
    // (22.01 if the free fills earned it too)
    post_bundle(&s, &c, &dapagliflozin_fills("slow", "7.6", &later));
    // a responder (8.0 -> 7.0 %): no free drug, 10 % of all six fills: 22.008 -> 22.01
    post_bundle(&s, &c, &dapagliflozin_fills("fast", "7.0", &later));
    let lines = |m: &str, p: &str| {
        individual_money(&get_json(
            &s,
            &c,
            &format!("/Measure/{m}/$evaluate-measure?periodStart=2025-01-01&periodEnd=2025-12-31&subject=Patient/{p}"),
        ))
    };
    let owed = |l: &BTreeMap<(String, String), Decimal>, stream: &str| {
        l.get(&(stream.to_string(), "owed".to_string()))
            .copied()
            .unwrap_or_default()
    };
    let dapa = "dapagliflozin-uk-1.1.0";
    let slow = lines(dapa, "slow");
    assert_eq!(owed(&slow, "free-drug"), d("73.36"), "{slow:?}");
    assert_eq!(owed(&slow, "rebate"), d("14.67"), "{slow:?}");
    let fast = lines(dapa, "fast");
    assert_eq!(owed(&fast, "free-drug"), d("0"), "{fast:?}");
    assert_eq!(owed(&fast, "rebate"), d("22.01"), "{fast:?}");

    // Erbitux 1.2.0: cetuximab from 2025-03-03; no response in days 35..56 (a worsened status on
    // 2025-04-20). Vials of 100 mg at GBP 178.10: 500 mg (5), 450 mg on day 14 (5), an infusion
    // stopped after 200 mg on day 42 (2, priced: the vials were used), 400 mg on day 70 (4, after
    // the assessment: not in the rebate). 12 vials: 2137.20 (16 would be 2849.60).
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![
            put_entry(
                "Patient",
                "crc",
                json!({"birthDate": "1960-05-05", "gender": "female"}),
            ),
            active_condition(
                "crc-dx",
                "crc",
                "http://hl7.org/fhir/sid/icd-10",
                "C18.9",
                "2025-01-10",
            ),
            infusion("crc-1", "crc", "2025-03-03", 500, "completed"),
            infusion("crc-2", "crc", "2025-03-17", 450, "completed"),
            infusion("crc-3", "crc", "2025-04-14", 200, "stopped"),
            infusion("crc-4", "crc", "2025-05-12", 400, "completed"),
            put_entry(
                "Observation",
                "crc-status",
                json!({"status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "97509-4"}]},
                       "subject": {"reference": "Patient/crc"}, "effectiveDateTime": "2025-04-20",
                       "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "271299001"}]}}),
            ),
        ]),
    );
    let (membership, reason, status) =
        result_of(&s, &c, "erbitux-nhs-1.2.0", "crc", "response-week-6");
    assert_eq!(
        (membership.as_str(), status.as_str()),
        ("member", "not-met"),
        "{reason}"
    );
    let crc = lines("erbitux-nhs-1.2.0", "crc");
    assert_eq!(owed(&crc, "rebate"), d("2137.20"), "{crc:?}");
}

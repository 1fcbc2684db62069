//! Contracts and outcome evaluation through the HTTP API, against hand-computed expectations.
//!
//! The Januvia contract (`contracts/januvia-aetna.toml`): new users of sitagliptin (180-day
//! washout), 18 or older, with type 2 diabetes and Aetna coverage at index; outcome
//! `hba1c-control` = latest HbA1c in days 150..210 after index below 7.0 %.
//! Index 2025-01-10 gives the window 2025-06-09 .. 2025-08-08 (checked by hand).

mod common;

use common::*;
use serde_json::{json, Value};

const JANUVIA: &str = "januvia-aetna-1.0.0";
const SITAGLIPTIN: &str = "665033";
const MEMBER_ID: &str = "https://vbc-server.dev/fhir/sid/member-id";

fn server() -> Server {
    Server::start_with(&["--contracts-dir", "contracts"])
}

fn patient(id: &str, birth: &str, member: &str) -> Value {
    put_entry(
        "Patient",
        id,
        json!({"birthDate": birth, "gender": "female",
               "identifier": [{"system": MEMBER_ID, "value": member}]}),
    )
}

fn dispense(id: &str, patient: &str, day: &str) -> Value {
    put_entry(
        "MedicationDispense",
        id,
        json!({"status": "completed", "subject": {"reference": format!("Patient/{patient}")},
               "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": SITAGLIPTIN}]},
               "quantity": {"value": 30}, "daysSupply": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"},
               "whenHandedOver": format!("{day}T10:00:00Z")}),
    )
}

fn hba1c(id: &str, patient: &str, when: &str, value: &str, unit: &str, status: &str) -> Value {
    let v: serde_json::Number = value.parse().expect("number");
    put_entry(
        "Observation",
        id,
        json!({"status": status, "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
               "subject": {"reference": format!("Patient/{patient}")}, "effectiveDateTime": when,
               "valueQuantity": {"value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}),
    )
}

/// An eligible new user with index date `index` and the given extra resources.
fn member(p: &str, index: &str, extra: Vec<Value>) -> Value {
    let mut e = vec![
        patient(p, "1970-05-01", &format!("M-{p}")),
        put_entry(
            "Condition",
            &format!("{p}-t2d"),
            json!({"clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
                   "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
                   "subject": {"reference": format!("Patient/{p}")}, "onsetDateTime": "2019-03-01"}),
        ),
        put_entry(
            "Coverage",
            &format!("{p}-cov"),
            json!({"status": "active", "beneficiary": {"reference": format!("Patient/{p}")},
                   "payor": [{"reference": "Organization/org-aetna"}],
                   "period": {"start": "2024-01-01", "end": "2027-12-31"}}),
        ),
        dispense(&format!("{p}-d1"), p, index),
    ];
    e.extend(extra);
    transaction_bundle(e)
}

/// The person result (a `result` part) for a patient.
fn result_of(
    s: &Server,
    c: &reqwest::blocking::Client,
    contract: &str,
    patient: &str,
    extra: &str,
) -> Option<Value> {
    let v = get_json(
        s,
        c,
        &format!("/Measure/{contract}/$outcomes?subject=Patient/{patient}{extra}"),
    );
    assert_eq!(v["resourceType"], "Parameters", "{v}");
    v["parameter"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|p| p["name"] == "result")
        .cloned()
}

fn part<'a>(v: &'a Value, name: &str) -> Vec<&'a Value> {
    v["part"]
        .as_array()
        .map(|ps| ps.iter().filter(|p| p["name"] == name).collect())
        .unwrap_or_default()
}

fn membership(r: &Value) -> String {
    part(r, "membership")[0]["valueCode"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// (status, reason) of an outcome in a person result.
fn outcome(r: &Value, id: &str) -> (String, String) {
    let o = part(r, "outcome")
        .into_iter()
        .find(|o| part(o, "id")[0]["valueString"] == id)
        .unwrap_or_else(|| panic!("no outcome {id} in {r}"));
    let status = part(o, "status")[0]["valueCode"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let reason = part(o, "reason")
        .first()
        .and_then(|r| r["valueString"].as_str())
        .unwrap_or("")
        .to_string();
    (status, reason)
}

fn evidence(r: &Value, id: &str) -> Vec<String> {
    let o = part(r, "outcome")
        .into_iter()
        .find(|o| part(o, "id")[0]["valueString"] == id)
        .expect("outcome");
    part(o, "evidence")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["valueReference"]["reference"].as_str().unwrap_or(""),
                e["valueReference"]["display"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn status_of(s: &Server, c: &reqwest::blocking::Client, p: &str) -> String {
    let r = result_of(s, c, JANUVIA, p, "").unwrap_or_else(|| panic!("no result for {p}"));
    assert_eq!(membership(&r), "member", "{r}");
    outcome(&r, "hba1c-control").0
}

#[test]
fn januvia_hba1c_outcomes_follow_the_window_units_time_zones_and_data_hygiene() {
    let s = server();
    let c = client();
    let idx = "2025-01-10";
    let cases: Vec<Value> = vec![
        // met: 6.8 % on day 180
        member(
            "jmet",
            idx,
            vec![hba1c(
                "jmet-a",
                "jmet",
                "2025-07-09T09:00:00Z",
                "6.8",
                "%",
                "final",
            )],
        ),
        // IFCC 53 mmol/mol = 7.0004 % NGSP: not below 7.0
        member(
            "jifcc53",
            idx,
            vec![hba1c(
                "jifcc53-a",
                "jifcc53",
                "2025-07-09T09:00:00Z",
                "53",
                "mmol/mol",
                "final",
            )],
        ),
        // IFCC 52 mmol/mol = 6.9090 %: met
        member(
            "jifcc52",
            idx,
            vec![hba1c(
                "jifcc52-a",
                "jifcc52",
                "2025-07-09T09:00:00Z",
                "52",
                "mmol/mol",
                "final",
            )],
        ),
        // latest counts: 6.5 on day 160, 7.4 on day 200
        member(
            "jlatest",
            idx,
            vec![
                hba1c(
                    "jlatest-a",
                    "jlatest",
                    "2025-06-19T09:00:00Z",
                    "6.5",
                    "%",
                    "final",
                ),
                hba1c(
                    "jlatest-b",
                    "jlatest",
                    "2025-07-29T09:00:00Z",
                    "7.4",
                    "%",
                    "final",
                ),
            ],
        ),
        // first window day (day 150) counts; day 149 does not
        member(
            "jfirstday",
            idx,
            vec![hba1c(
                "jfirstday-a",
                "jfirstday",
                "2025-06-09T08:00:00Z",
                "6.1",
                "%",
                "final",
            )],
        ),
        member(
            "jbefore",
            idx,
            vec![hba1c(
                "jbefore-a",
                "jbefore",
                "2025-06-08T08:00:00Z",
                "6.1",
                "%",
                "final",
            )],
        ),
        // last window day late in the evening at UTC-5 (UTC: the next day) counts by local date
        member(
            "jtzlate",
            idx,
            vec![hba1c(
                "jtzlate-a",
                "jtzlate",
                "2025-08-08T23:30:00-05:00",
                "6.2",
                "%",
                "final",
            )],
        ),
        // the day after the window at UTC+14 (UTC: still the last day) does not count
        member(
            "jtzearly",
            idx,
            vec![hba1c(
                "jtzearly-a",
                "jtzearly",
                "2025-08-09T00:30:00+14:00",
                "6.2",
                "%",
                "final",
            )],
        ),
        // entered-in-error removes the only value
        member(
            "jeie",
            idx,
            vec![hba1c(
                "jeie-a",
                "jeie",
                "2025-07-09T09:00:00Z",
                "6.0",
                "%",
                "entered-in-error",
            )],
        ),
        // a unit that cannot be converted is reported, never compared
        member(
            "junit",
            idx,
            vec![hba1c(
                "junit-a",
                "junit",
                "2025-07-09T09:00:00Z",
                "6.0",
                "mg",
                "final",
            )],
        ),
        // the same result from two sources counts once
        member(
            "jdup",
            idx,
            vec![
                hba1c(
                    "jdup-lab",
                    "jdup",
                    "2025-07-09T09:00:00Z",
                    "6.4",
                    "%",
                    "final",
                ),
                hba1c(
                    "jdup-ehr",
                    "jdup",
                    "2025-07-09T09:00:00Z",
                    "6.40",
                    "%",
                    "final",
                ),
            ],
        ),
        // died on day 100, before the window: excluded
        {
            let mut b = member("jdead", idx, vec![]);
            b["entry"][0]["resource"]["deceasedDateTime"] = json!("2025-04-20");
            b
        },
        // type 1 diabetes: excluded
        member(
            "jt1d",
            idx,
            vec![put_entry(
                "Condition",
                "jt1d-t1d",
                json!({
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "46635009"}]},
            "subject": {"reference": "Patient/jt1d"}, "onsetDateTime": "2010-01-01"}),
            )],
        ),
        // a fill 92 days before the first fill in the intake period (2024-07-01..): not a new user
        member(
            "jwash",
            "2024-08-01",
            vec![dispense("jwash-d0", "jwash", "2024-05-01")],
        ),
        // a fill 181 days before: outside the washout, a new user
        member(
            "jwash181",
            "2024-08-01",
            vec![dispense("jwash181-d0", "jwash181", "2024-02-02")],
        ),
        // 17 at index: ineligible
        {
            let mut b = member("jyoung", idx, vec![]);
            b["entry"][0]["resource"]["birthDate"] = json!("2007-06-01");
            b
        },
        // window closed, no HbA1c
        member("jmissing", idx, vec![]),
    ];
    for b in &cases {
        post_bundle(&s, &c, b);
    }
    assert_eq!(status_of(&s, &c, "jmet"), "met");
    assert_eq!(status_of(&s, &c, "jifcc53"), "not-met");
    assert_eq!(status_of(&s, &c, "jifcc52"), "met");
    assert_eq!(status_of(&s, &c, "jlatest"), "not-met");
    assert_eq!(status_of(&s, &c, "jfirstday"), "met");
    assert_eq!(status_of(&s, &c, "jbefore"), "missing-data");
    assert_eq!(status_of(&s, &c, "jtzlate"), "met");
    assert_eq!(status_of(&s, &c, "jtzearly"), "missing-data");
    assert_eq!(status_of(&s, &c, "jeie"), "missing-data");
    assert_eq!(status_of(&s, &c, "junit"), "missing-data");
    let r = result_of(&s, &c, JANUVIA, "junit", "").expect("junit");
    assert!(
        evidence(&r, "hba1c-control")
            .iter()
            .any(|e| e.contains("Observation/junit-a/_history/1 unusable")),
        "{r}"
    );
    assert_eq!(status_of(&s, &c, "jdup"), "met");
    let r = result_of(&s, &c, JANUVIA, "jdup", "").expect("jdup");
    let ev = evidence(&r, "hba1c-control");
    assert!(ev.iter().any(|e| e.contains("duplicate")), "{ev:?}");
    assert_eq!(
        ev.iter().filter(|e| e.contains(" value: ")).count(),
        1,
        "{ev:?}"
    );
    let r = result_of(&s, &c, JANUVIA, "jdead", "").expect("jdead");
    let (st, reason) = outcome(&r, "hba1c-control");
    assert_eq!(st, "excluded");
    assert!(reason.contains("died on 2025-04-20"), "{reason}");
    assert_eq!(status_of(&s, &c, "jt1d"), "excluded");
    assert_eq!(
        membership(&result_of(&s, &c, JANUVIA, "jwash", "").expect("jwash")),
        "not-new-user"
    );
    assert_eq!(
        membership(&result_of(&s, &c, JANUVIA, "jwash181", "").expect("jwash181")),
        "member"
    );
    let r = result_of(&s, &c, JANUVIA, "jyoung", "").expect("jyoung");
    assert_eq!(membership(&r), "ineligible");
    assert!(
        part(&r, "reason")[0]["valueString"]
            .as_str()
            .unwrap_or("")
            .contains("age 17"),
        "{r}"
    );
    assert_eq!(status_of(&s, &c, "jmissing"), "missing-data");
    // the met evidence names the decisive version and the rule
    let r = result_of(&s, &c, JANUVIA, "jmet", "").expect("jmet");
    assert!(evidence(&r, "hba1c-control")
        .iter()
        .any(|e| e.starts_with("Observation/jmet-a/_history/1 value")));
    let index_ev: Vec<String> = part(&r, "evidence")
        .iter()
        .map(|e| {
            e["valueReference"]["reference"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        index_ev.contains(&"MedicationDispense/jmet-d1/_history/1".to_string()),
        "{index_ev:?}"
    );
    assert_eq!(part(&r, "indexDate")[0]["valueDate"], "2025-01-10");
}

#[test]
fn corrections_deletes_late_data_and_as_of_reproduce_each_state() {
    let s = server();
    let c = client();
    let idx = "2025-01-10";
    post_bundle(
        &s,
        &c,
        &member(
            "jamend",
            idx,
            vec![hba1c(
                "jamend-a",
                "jamend",
                "2025-07-09T09:00:00Z",
                "7.5",
                "%",
                "final",
            )],
        ),
    );
    assert_eq!(status_of(&s, &c, "jamend"), "not-met");
    std::thread::sleep(std::time::Duration::from_millis(20));
    let before_amend = vbc_server::interaction::instant(vbc_server::interaction::now_ms());
    std::thread::sleep(std::time::Duration::from_millis(20));
    // the lab amends the result: the new version replaces the old one
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![hba1c(
            "jamend-a",
            "jamend",
            "2025-07-09T09:00:00Z",
            "6.5",
            "%",
            "amended",
        )]),
    );
    assert_eq!(status_of(&s, &c, "jamend"), "met");
    // as of before the amendment, the settlement saw not-met
    let r = result_of(
        &s,
        &c,
        JANUVIA,
        "jamend",
        &format!("&asOf={}", before_amend.replace('+', "%2B")),
    )
    .expect("as of");
    assert_eq!(outcome(&r, "hba1c-control").0, "not-met");
    // an amendment sent as a new resource with the same identifier replaces the earlier one
    let mut first = hba1c(
        "jident-a",
        "jident",
        "2025-07-09T09:00:00Z",
        "6.5",
        "%",
        "final",
    );
    first["resource"]["identifier"] = json!([{"system": "urn:lab:accession", "value": "A-1"}]);
    post_bundle(&s, &c, &member("jident", idx, vec![first]));
    assert_eq!(status_of(&s, &c, "jident"), "met");
    let mut second = hba1c(
        "jident-b",
        "jident",
        "2025-07-09T09:00:00Z",
        "7.9",
        "%",
        "corrected",
    );
    second["resource"]["identifier"] = json!([{"system": "urn:lab:accession", "value": "A-1"}]);
    post_bundle(&s, &c, &transaction_bundle(vec![second]));
    assert_eq!(status_of(&s, &c, "jident"), "not-met");
    // deleting the decisive result: missing data
    let resp = c
        .delete(s.url("/Observation/jident-b"))
        .send()
        .expect("delete");
    assert!(resp.status().is_success());
    assert_eq!(
        status_of(&s, &c, "jident"),
        "met",
        "without its replacement the original counts again"
    );
    // late data: a result dated inside the closed window, sent now
    post_bundle(&s, &c, &member("jlate", idx, vec![]));
    assert_eq!(status_of(&s, &c, "jlate"), "missing-data");
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![hba1c(
            "jlate-a",
            "jlate",
            "2025-08-01T09:00:00Z",
            "6.9",
            "%",
            "final",
        )]),
    );
    assert_eq!(status_of(&s, &c, "jlate"), "met");
    // incremental results equal a full evaluation
    let inc = get_json(&s, &c, &format!("/Measure/{JANUVIA}/$outcomes?_count=1000"));
    let full = get_json(
        &s,
        &c,
        &format!("/Measure/{JANUVIA}/$outcomes?_count=1000&mode=full"),
    );
    let strip = |v: &Value| -> Vec<Value> {
        v["parameter"]
            .as_array()
            .expect("p")
            .iter()
            .filter(|p| p["name"] != "mode" && p["name"] != "link")
            .cloned()
            .collect()
    };
    assert_eq!(strip(&inc), strip(&full));
}

#[test]
fn one_person_under_two_patient_records_is_evaluated_once() {
    let s = server();
    let c = client();
    // the fill arrives under one record, the lab under the other (another system's Patient with the
    // same payer member id)
    post_bundle(&s, &c, &member("kz2", "2025-01-10", vec![]));
    assert_eq!(status_of(&s, &c, "kz2"), "missing-data");
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![
            patient("ka1", "1970-05-01", "M-kz2"),
            hba1c("ka1-a", "ka1", "2025-07-09T09:00:00Z", "6.6", "%", "final"),
        ]),
    );
    // the person is named by the smallest id ("ka1" < "kz2") and evaluated once
    let r = result_of(&s, &c, JANUVIA, "kz2", "").expect("linked");
    assert_eq!(
        part(&r, "subject")[0]["valueReference"]["reference"],
        "Patient/ka1"
    );
    assert_eq!(
        part(&r, "linkedPatient")[0]["valueReference"]["reference"],
        "Patient/kz2"
    );
    assert_eq!(outcome(&r, "hba1c-control").0, "met");
    let all = get_json(&s, &c, &format!("/Measure/{JANUVIA}/$outcomes?_count=1000"));
    let subjects: Vec<&Value> = all["parameter"]
        .as_array()
        .expect("p")
        .iter()
        .filter(|p| p["name"] == "result")
        .collect();
    assert_eq!(subjects.len(), 1, "{all}");
    // unlinking (the second record's member id corrected) splits them again
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![patient("ka1", "1970-05-01", "M-other")]),
    );
    assert_eq!(status_of(&s, &c, "kz2"), "missing-data");
    assert!(result_of(&s, &c, JANUVIA, "ka1", "").is_none());
}

#[test]
fn an_open_window_is_pending() {
    let s = server();
    let c = client();
    let today = time::OffsetDateTime::now_utc().date();
    let index = today - time::Duration::days(30);
    let idx = format!(
        "{:04}-{:02}-{:02}",
        index.year(),
        index.month() as u8,
        index.day()
    );
    post_bundle(&s, &c, &member("jpending", &idx, vec![]));
    let r = result_of(&s, &c, JANUVIA, "jpending", "").expect("pending");
    let (st, reason) = outcome(&r, "hba1c-control");
    assert_eq!(st, "pending");
    assert!(reason.contains("window open until"), "{reason}");
}

const TEST_CONTRACT: &str = r#"
format = "vbc-contract/1"
[contract]
id = "test-kinds"
version = "1"
title = "Rule kinds"
status = "active"
period = "2024-01-01..2028-12-31"
currency = "USD"
[parties.payer]
name = "Test Payer"
[parties.manufacturer]
name = "Test Maker"
[drug]
valueset = "drug"
[valuesets.drug]
codes = ["rxnorm|1665684|evolocumab"]
[valuesets.ldl]
codes = ["loinc|13457-7", "loinc|18262-6"]
[valuesets.mi]
codes = ["icd10cm|I21.9"]
[valuesets.status]
codes = ["loinc|97509-4"]
[valuesets.improved]
codes = ["snomed|268910001"]
[labs.ldl]
valueset = "ldl"
unit = "mg/dL"
[cohort]
intake = "2024-07-01..2026-12-31"
sources = ["MedicationDispense"]
[[outcome]]
id = "ldl-drop"
title = "LDL halved"
kind = "change-from-baseline"
lab = "ldl"
baseline = "-90..0"
window = "30..180"
change = "relative"
target = "<= -50 %"
[[outcome]]
id = "no-mi"
title = "No MI on therapy"
kind = "event"
diagnosis = "mi"
encounter_class = ["IMP"]
window = "0..365"
on_therapy_grace_days = 30
[[outcome]]
id = "pdc"
title = "Adherent"
kind = "adherence"
window = "0..179"
min_pdc = "0.8"
[[outcome]]
id = "persist"
title = "Persistent"
kind = "persistence"
window = "0..179"
max_gap_days = 30
[[outcome]]
id = "response"
title = "Responded"
kind = "coded-response"
observation = "status"
response = "improved"
window = "20..40"
pick = "any"
[[outcome]]
id = "alive"
title = "Alive at a year"
kind = "survival"
day = 365
[[outcome]]
id = "both"
title = "Adherent and responded"
kind = "all"
of = ["pdc", "response"]
"#;

fn fill(id: &str, p: &str, day: &str, supply: u32) -> Value {
    put_entry(
        "MedicationDispense",
        id,
        json!({"status": "completed", "subject": {"reference": format!("Patient/{p}")},
               "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "1665684"}]},
               "daysSupply": {"value": supply, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"},
               "whenHandedOver": format!("{day}T10:00:00Z")}),
    )
}

fn ldl(id: &str, p: &str, when: &str, value: &str, unit: &str) -> Value {
    let v: serde_json::Number = value.parse().expect("n");
    put_entry(
        "Observation",
        id,
        json!({"status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "13457-7"}]},
               "subject": {"reference": format!("Patient/{p}")}, "effectiveDateTime": when,
               "valueQuantity": {"value": v, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}),
    )
}

fn mi_stay(id: &str, p: &str, day: &str) -> Value {
    put_entry(
        "Encounter",
        id,
        json!({"status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
               "subject": {"reference": format!("Patient/{p}")}, "period": {"start": format!("{day}T08:00:00Z"), "end": format!("{day}T20:00:00Z")},
               "reasonCode": [{"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I21.9"}]}]}),
    )
}

fn assessment(id: &str, p: &str, day: &str, code: &str) -> Value {
    put_entry(
        "Observation",
        id,
        json!({"status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "97509-4"}]},
               "subject": {"reference": format!("Patient/{p}")}, "effectiveDateTime": day,
               "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": code}]}}),
    )
}

#[test]
fn every_rule_kind_decides_hand_computed_cases() {
    let s = Server::start();
    let c = client();
    let resp = load_contract(&s, &c, TEST_CONTRACT);
    assert_eq!(resp.status(), 201, "{}", resp.text().unwrap_or_default());
    let k = "test-kinds-1";
    // index 2025-01-01; monthly 30-day fills on days 0, 30, ... 150 (6 fills: days 0..179
    // covered, PDC 1.0); LDL 140 mg/dL on day -10, 3.6 mmol/L = 139.212 mg/dL... not halved
    let p1 = "r1";
    let mut e = vec![put_entry("Patient", p1, json!({"birthDate": "1960-01-01"}))];
    for (i, d) in [
        "2025-01-01",
        "2025-01-31",
        "2025-03-02",
        "2025-04-01",
        "2025-05-01",
        "2025-05-31",
    ]
    .iter()
    .enumerate()
    {
        e.push(fill(&format!("r1-f{i}"), p1, d, 30));
    }
    e.push(ldl("r1-l0", p1, "2024-12-22", "140", "mg/dL"));
    // 1.8 mmol/L x 38.67 = 69.606 mg/dL: change (69.606-140)/140 = -50.281 %: met
    e.push(ldl("r1-l1", p1, "2025-04-11", "1.8", "mmol/L"));
    // coded response on day 25: improved
    e.push(assessment("r1-s1", p1, "2025-01-26", "268910001"));
    post_bundle(&s, &c, &transaction_bundle(e));
    let r = result_of(&s, &c, k, p1, "").expect("r1");
    assert_eq!(outcome(&r, "ldl-drop").0, "met", "{r}");
    assert_eq!(outcome(&r, "pdc").0, "met");
    assert_eq!(outcome(&r, "persist").0, "met");
    assert_eq!(outcome(&r, "response").0, "met");
    assert_eq!(outcome(&r, "no-mi").0, "met");
    assert_eq!(outcome(&r, "alive").0, "met");
    assert_eq!(outcome(&r, "both").0, "met");

    // r2: fills on day 0 (30 d), day 20 (30 d, early: shifted to days 30..59), then day 120
    // (30 d: 120..149). Covered in days 0..179: 60 + 30 = 90 -> PDC 0.5, not met. Gap 60..119 =
    // 60 days > 30: not persistent. MI stay on day 100: covered? supply 0..59 + grace 30 reaches
    // day 89 only (with the shift the 2nd fill covers 30..59, +30 grace -> 89), so day 100 is
    // off therapy and does not count; MI on day 130 (covered) does: not met.
    let p2 = "r2";
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![
            put_entry("Patient", p2, json!({"birthDate": "1960-01-01"})),
            fill("r2-f0", p2, "2025-01-01", 30),
            fill("r2-f1", p2, "2025-01-21", 30),
            fill("r2-f2", p2, "2025-05-01", 30),
            mi_stay("r2-mi-off", p2, "2025-04-11"),
            assessment("r2-s1", p2, "2025-01-26", "271299001"),
        ]),
    );
    let r = result_of(&s, &c, k, p2, "").expect("r2");
    assert_eq!(outcome(&r, "pdc").0, "not-met");
    assert_eq!(outcome(&r, "persist").0, "not-met");
    assert_eq!(
        outcome(&r, "no-mi").0,
        "met",
        "the stay on day 100 was off therapy: {r}"
    );
    assert_eq!(outcome(&r, "response").0, "not-met");
    assert_eq!(outcome(&r, "ldl-drop").0, "missing-data");
    assert_eq!(outcome(&r, "both").0, "not-met");
    post_bundle(
        &s,
        &c,
        &transaction_bundle(vec![mi_stay("r2-mi-on", p2, "2025-05-11")]),
    );
    let r = result_of(&s, &c, k, p2, "").expect("r2");
    let (st, reason) = outcome(&r, "no-mi");
    assert_eq!(st, "not-met", "{reason}");
    // r3: died on day 200: survival to day 365 not met; PDC window closed before death stands
    let p3 = "r3";
    let mut e = vec![put_entry(
        "Patient",
        p3,
        json!({"birthDate": "1960-01-01", "deceasedDateTime": "2025-07-20"}),
    )];
    for (i, d) in [
        "2025-01-01",
        "2025-01-31",
        "2025-03-02",
        "2025-04-01",
        "2025-05-01",
        "2025-05-31",
    ]
    .iter()
    .enumerate()
    {
        e.push(fill(&format!("r3-f{i}"), p3, d, 30));
    }
    post_bundle(&s, &c, &transaction_bundle(e));
    let r = result_of(&s, &c, k, p3, "").expect("r3");
    assert_eq!(outcome(&r, "alive").0, "not-met");
    assert_eq!(outcome(&r, "pdc").0, "met");
    assert_eq!(
        outcome(&r, "no-mi").0,
        "excluded",
        "death before the event window closed"
    );
    assert_eq!(outcome(&r, "response").0, "missing-data");
}

#[test]
fn a_contract_with_mistakes_is_rejected_with_every_mistake_located() {
    let s = Server::start();
    let c = client();
    let bad = TEST_CONTRACT
        .replace("window = \"30..180\"", "window = \"180..30\"")
        .replace("target = \"<= -50 %\"", "")
        .replace("observation = \"status\"", "observation = \"no-such-set\"")
        .replace(
            "period = \"2024-01-01..2028-12-31\"",
            "period = \"2028-01-01..2024-12-31\"",
        )
        + "\n[[cohort.lab]]\nlab = \"ldl\"\nwithin_days = 30\nvalue = \"> 3 mg\"\n";
    let resp = load_contract(&s, &c, &bad);
    assert_eq!(resp.status(), 400);
    let oo = body_json(resp);
    let at = error_expressions(&oo);
    for expected in [
        "outcome[0].window",
        "outcome[0].target",
        "outcome[4].observation",
        "contract.period",
        "cohort.lab[0].value",
    ] {
        assert!(
            at.iter().any(|a| a == expected),
            "missing {expected} in {at:?}: {oo}"
        );
    }
    // broken TOML: one issue with a line
    let resp = load_contract(&s, &c, "format = \"vbc-contract/1\"\n[contract\n");
    assert_eq!(resp.status(), 400);
    let oo = body_json(resp);
    assert!(
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or("")
            .contains("TOML"),
        "{oo}"
    );
}

#[test]
fn a_loaded_version_is_immutable_and_published_as_fhir() {
    let s = Server::start();
    let c = client();
    assert_eq!(load_contract(&s, &c, TEST_CONTRACT).status(), 201);
    assert_eq!(
        load_contract(&s, &c, TEST_CONTRACT).status(),
        200,
        "same content again: no change"
    );
    let changed = TEST_CONTRACT.replace("title = \"Rule kinds\"", "title = \"Changed\"");
    let resp = load_contract(&s, &c, &changed);
    assert_eq!(resp.status(), 409);
    assert_outcome(&body_json(resp));
    let v2 = changed.replace("version = \"1\"", "version = \"2\"");
    assert_eq!(load_contract(&s, &c, &v2).status(), 201);
    // the contract Measure is a VBPR vbp-measure composed of its outcome Measures
    let m = get_json(&s, &c, "/Measure/test-kinds-2");
    assert_eq!(
        m["meta"]["profile"][0],
        "http://hl7.org/fhir/us/davinci-vbpr/StructureDefinition/vbp-measure"
    );
    let parts: Vec<&str> = m["relatedArtifact"]
        .as_array()
        .expect("ra")
        .iter()
        .map(|r| r["resource"].as_str().unwrap_or(""))
        .collect();
    assert!(
        parts.contains(&"https://vbc-server.dev/fhir/Measure/test-kinds-2-ldl-drop|2"),
        "{parts:?}"
    );
    let o = get_json(&s, &c, "/Measure/test-kinds-2-ldl-drop");
    let pops: Vec<&str> = o["group"][0]["population"]
        .as_array()
        .expect("pop")
        .iter()
        .map(|p| p["code"]["coding"][0]["code"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        pops,
        [
            "initial-population",
            "denominator",
            "denominator-exclusion",
            "numerator",
            "numerator-exclusion"
        ]
    );
    let lib = get_json(&s, &c, "/Library/test-kinds-2-rules");
    assert_eq!(
        lib["content"][0]["contentType"],
        "application/vnd.vbc.rules+json;version=1"
    );
    let vs = get_json(
        &s,
        &c,
        "/ValueSet?url=https://vbc-server.dev/fhir/ValueSet/test-kinds-2-ldl",
    );
    assert_eq!(vs["total"], 1);

    // the compiled resources refuse every change: PUT, PATCH, DELETE, and a transaction entry
    let mut changed_m = m.clone();
    changed_m["title"] = json!("Tampered");
    let r = c
        .put(s.url("/Measure/test-kinds-2"))
        .header("Content-Type", "application/fhir+json")
        .body(changed_m.to_string())
        .send()
        .expect("put");
    assert_eq!(r.status(), 409);
    assert_outcome(&body_json(r));
    let r = c
        .patch(s.url("/Library/test-kinds-2-rules"))
        .header("Content-Type", "application/json-patch+json")
        .body(r#"[{"op":"replace","path":"/status","value":"retired"}]"#)
        .send()
        .expect("patch");
    assert_eq!(r.status(), 409);
    let r = c
        .delete(s.url("/Measure/test-kinds-2-ldl-drop"))
        .send()
        .expect("delete");
    assert_eq!(r.status(), 409);
    let vs_res = vs["entry"][0]["resource"].clone();
    let vs_id = vs_res["id"].as_str().expect("vs id").to_string();
    let r = c
        .post(s.url("/"))
        .header("Content-Type", "application/fhir+json")
        .body(
            transaction_bundle(vec![
                put_entry(
                    "Patient",
                    "bystander",
                    json!({"resourceType": "Patient", "id": "bystander"}),
                ),
                json!({"request": {"method": "DELETE", "url": format!("ValueSet/{vs_id}")}}),
            ])
            .to_string(),
        )
        .send()
        .expect("txn");
    assert_eq!(r.status(), 409);
    assert_eq!(
        c.get(s.url("/Patient/bystander"))
            .send()
            .expect("get")
            .status(),
        404,
        "nothing of a refused transaction is written"
    );
    let after = get_json(&s, &c, "/Measure/test-kinds-2");
    assert_eq!(after["meta"]["versionId"], m["meta"]["versionId"]);
    assert_eq!(after["title"], m["title"]);
    assert_eq!(
        get_json(&s, &c, &format!("/ValueSet/{vs_id}"))["id"],
        vs_id.as_str()
    );
}

#[test]
fn the_cohort_is_published_as_a_group_and_kept_current() {
    let s = server();
    let c = client();
    post_bundle(&s, &c, &member("gm1", "2025-01-10", vec![]));
    post_bundle(&s, &c, &member("gm2", "2025-02-03", vec![]));
    post_bundle(
        &s,
        &c,
        &member(
            "gwash",
            "2024-08-01",
            vec![dispense("gwash-d0", "gwash", "2024-05-01")],
        ),
    );
    let wait_for = |n: usize| -> Value {
        for _ in 0..50 {
            let resp = get(&s, &c, "/Group/januvia-aetna-1.0.0-cohort");
            if resp.status() == 200 {
                let g = body_json(resp);
                if g["member"].as_array().map_or(0, |m| m.len()) == n {
                    return g;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        panic!("the Group never reached {n} members");
    };
    let g = wait_for(2);
    assert_eq!(g["actual"], true);
    assert_eq!(g["member"][0]["entity"]["reference"], "Patient/gm1");
    assert_eq!(g["member"][0]["period"]["start"], "2025-01-10");
    assert_eq!(g["member"][1]["period"]["start"], "2025-02-03");
    // the second member's fill is entered in error: it leaves the cohort
    let mut d = dispense("gm2-d1", "gm2", "2025-02-03");
    d["resource"]["status"] = json!("entered-in-error");
    post_bundle(&s, &c, &transaction_bundle(vec![d]));
    let g = wait_for(1);
    assert_eq!(g["member"][0]["entity"]["reference"], "Patient/gm1");
}

#[test]
fn a_result_without_a_value_is_stored_and_cited_by_the_missing_data_decision() {
    let s = server();
    let c = client();
    // index 2025-01-10: window 2025-06-09 .. 2025-08-08, closed today; the only HbA1c in it was
    // attempted without a result (specimen unsatisfactory), sent in the member's transaction
    let absent = put_entry(
        "Observation",
        "jdar-a",
        json!({"status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
               "subject": {"reference": "Patient/jdar"}, "effectiveDateTime": "2025-07-09T09:00:00Z",
               "dataAbsentReason": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "error"}]}}),
    );
    post_bundle(&s, &c, &member("jdar", "2025-01-10", vec![absent]));
    let stored = get_json(&s, &c, "/Observation/jdar-a");
    assert_eq!(stored["dataAbsentReason"]["coding"][0]["code"], "error");
    let r = result_of(&s, &c, JANUVIA, "jdar", "").expect("a result");
    let (status, reason) = outcome(&r, "hba1c-control");
    assert_eq!(status, "missing-data", "{r}");
    assert!(reason.contains("no usable"), "{reason}");
    let ev = evidence(&r, "hba1c-control");
    assert!(
        ev.iter()
            .any(|e| e.starts_with("Observation/jdar-a/_history/1") && e.contains("error")),
        "the attempt is cited: {ev:?}"
    );
    // neither a value nor a reason: refused, naming the rule and where
    let r = c
        .post(s.url("/Observation"))
        .header("Content-Type", FHIR_JSON)
        .json(&json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"reference": "Patient/jdar"}, "effectiveDateTime": "2025-07-10"}))
        .send()
        .expect("post");
    let oo = expect_error(r, reqwest::StatusCode::BAD_REQUEST);
    assert!(oo.to_string().contains("vbc-obs-1"), "{oo}");
    assert!(
        error_expressions(&oo).contains(&"Observation".to_string()),
        "{oo}"
    );
}

//! Privacy of manufacturers' aggregates through HTTP: small-cell suppression of every report a
//! manufacturer receives (on demand and published), no practitioner narrowing, and
//! `$everything` naming no other patient.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use vbc_server::engine::days;

const JANUVIA: &str = "januvia-aetna-1.0.0";

/// A server with auth on and the Januvia contract (Aetna pays, Merck makes the drug).
fn server(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let contracts = tmp.path().join("contracts");
    std::fs::create_dir_all(&contracts).expect("dir");
    std::fs::copy(
        "contracts/januvia-aetna.toml",
        contracts.join("januvia-aetna.toml"),
    )
    .expect("copy contract");
    let clients = tmp.path().join("clients.json");
    std::fs::copy("tests/data/auth/clients.json", &clients).expect("copy clients");
    let mut args = vec![
        "--auth-clients",
        clients.to_str().expect("path"),
        "--contracts-dir",
        contracts.to_str().expect("path"),
        "--report-schedule-secs",
        "0",
    ];
    args.extend_from_slice(extra);
    (Server::start_with(&args), tmp)
}

/// A bearer token for a registered client of `tests/data/auth/clients.json`.
fn bearer(s: &Server, client_id: &str) -> String {
    token_for(
        &s.url("/auth/token"),
        client_id,
        "system/*.rs system/*.cruds system/*.*",
    )
}

fn get_as(s: &Server, token: &str, path: &str) -> reqwest::blocking::Response {
    client()
        .get(s.url(path))
        .bearer_auth(token)
        .send()
        .expect("GET")
}

/// Every population count of a report (or the reports of a Bundle), with its location.
fn counts(v: &Value, at: &str, out: &mut Vec<(String, u64)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "count" || k == "valueUnsignedInt" {
                    if let Some(n) = x.as_u64() {
                        out.push((at.to_string(), n));
                    }
                }
                counts(x, &format!("{at}.{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                counts(x, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn masked(v: &Value) -> usize {
    v.to_string().matches("\"valueCode\":\"masked\"").count()
}

/// No count of 1 to 10 anywhere in what the manufacturer received.
fn assert_no_small_cell(v: &Value) {
    let mut all = Vec::new();
    counts(v, "", &mut all);
    for (at, n) in &all {
        assert!(
            *n == 0 || *n > 10,
            "count {n} at {at} reached the manufacturer"
        );
    }
    for ext in ["patients-owed", "patients-missing-data", "patients-pending"] {
        let text = v.to_string();
        let mut rest = text.as_str();
        while let Some(i) = rest.find(&format!("{ext}\",\"valueUnsignedInt\":")) {
            let tail = &rest[i + ext.len() + 21..];
            let n: u64 = tail
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .expect("number");
            assert!(n == 0 || n > 10, "{ext} {n} reached the manufacturer");
            rest = tail;
        }
    }
}

#[test]
fn manufacturers_receive_no_small_cell_and_no_practitioner_narrowing() {
    let (s, _tmp) = server(&[]);
    let admin = bearer(&s, "admin-app");
    let merck = bearer(&s, "pharma-app");
    // a population of 60 generated Januvia patients
    let text = std::fs::read_to_string("contracts/januvia-aetna.toml").expect("contract");
    let rules = vbc_server::contracts::source::compile(&text).expect("compiles");
    let mut performers = Vec::new();
    for (bundles, _) in vbc_server::synth::generate(&rules, 60, 5, days::today()) {
        for b in &bundles {
            for e in b["entry"].as_array().into_iter().flatten() {
                if let Some(p) = e["resource"]["performer"][0]["actor"]["reference"].as_str() {
                    performers.push(p.to_string());
                }
            }
            let r = client()
                .post(s.url("/"))
                .bearer_auth(&admin)
                .header("Content-Type", "application/fhir+json")
                .json(b)
                .send()
                .expect("post");
            assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
        }
    }
    let period = "periodStart=1900-01-01&periodEnd=2100-12-31";
    let outcome = {
        let all = body_json(get_as(&s, &admin, "/Measure?_count=100"));
        entries(&all)
            .iter()
            .filter_map(|e| e["resource"]["id"].as_str().map(String::from))
            .find(|id| id.starts_with(JANUVIA) && id != JANUVIA)
            .expect("an outcome Measure")
    };
    let mut small_somewhere = false;
    for measure in [JANUVIA.to_string(), outcome.clone()] {
        let path = format!("/Measure/{measure}/$evaluate-measure?{period}");
        let full = body_json(get_as(&s, &admin, &path));
        let seen = body_json(get_as(&s, &merck, &path));
        assert_eq!(seen["resourceType"], "MeasureReport", "{seen}");
        assert_no_small_cell(&seen);
        // what the administrator sees in full has small cells, and the manufacturer's copy
        // masks them (and shows every count above the threshold it does show unchanged)
        let (mut a, mut m) = (Vec::new(), Vec::new());
        counts(&full, "", &mut a);
        counts(&seen, "", &mut m);
        if a.iter().any(|(_, n)| (1..=10).contains(n)) {
            small_somewhere = true;
            assert!(masked(&seen) > 0, "{seen}");
        }
        for (at, n) in &m {
            assert!(
                a.contains(&(at.clone(), *n)),
                "{at} = {n} is not the true count"
            );
        }
    }
    assert!(small_somewhere, "the population has small cells");
    // a one-day period isolates nobody either
    let day = body_json(get_as(
        &s,
        &merck,
        &format!(
            "/Measure/{outcome}/$evaluate-measure?periodStart={0}&periodEnd={0}",
            days::format(days::today())
        ),
    ));
    assert_no_small_cell(&day);
    // no narrowing to one prescriber
    if let Some(p) = performers.first() {
        expect_error(
            get_as(
                &s,
                &merck,
                &format!("/Measure/{outcome}/$evaluate-measure?{period}&practitioner={p}"),
            ),
            StatusCode::FORBIDDEN,
        );
    }
    // published reports, read or searched, reach the manufacturer masked too
    let r = client()
        .post(s.url(&format!("/Measure/{JANUVIA}/$publish-reports?{period}")))
        .bearer_auth(&admin)
        .send()
        .expect("publish");
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
    let found = body_json(get_as(&s, &merck, "/MeasureReport?_count=100"));
    assert!(!entries(&found).is_empty(), "{found}");
    assert_no_small_cell(&found);
    assert!(masked(&found) > 0);
    let admin_found = body_json(get_as(&s, &admin, "/MeasureReport?_count=100"));
    assert_eq!(masked(&admin_found), 0, "the payer side sees every count");
    for e in entries(&found) {
        let id = e["resource"]["id"].as_str().expect("id");
        let one = body_json(get_as(&s, &merck, &format!("/MeasureReport/{id}")));
        assert_no_small_cell(&one);
    }
}

#[test]
fn the_threshold_is_configurable() {
    let (s, _tmp) = server(&["--small-cell-threshold", "0"]);
    let admin = bearer(&s, "admin-app");
    let merck = bearer(&s, "pharma-app");
    let text = std::fs::read_to_string("contracts/januvia-aetna.toml").expect("contract");
    let rules = vbc_server::contracts::source::compile(&text).expect("compiles");
    for (bundles, _) in vbc_server::synth::generate(&rules, 8, 9, days::today()) {
        for b in &bundles {
            let r = client()
                .post(s.url("/"))
                .bearer_auth(&admin)
                .header("Content-Type", "application/fhir+json")
                .json(b)
                .send()
                .expect("post");
            assert_eq!(r.status(), 200);
        }
    }
    let path =
        format!("/Measure/{JANUVIA}/$evaluate-measure?periodStart=1900-01-01&periodEnd=2100-12-31");
    let seen = body_json(get_as(&s, &merck, &path));
    assert_eq!(
        masked(&seen),
        0,
        "threshold 0 turns suppression off: {seen}"
    );
    let (mut a, mut m) = (Vec::new(), Vec::new());
    counts(&seen, "", &mut m);
    counts(&body_json(get_as(&s, &admin, &path)), "", &mut a);
    assert_eq!(m, a);
    assert!(m.iter().any(|(_, n)| (1..=10).contains(n)), "{m:?}");
}

#[test]
fn everything_about_a_patient_names_no_other_patient() {
    let s = Server::start();
    let c = client();
    post_bundle(
        &s,
        &c,
        &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "ev-1"}, "request": {"method": "PUT", "url": "Patient/ev-1"}},
            {"resource": {"resourceType": "Patient", "id": "ev-2"}, "request": {"method": "PUT", "url": "Patient/ev-2"}},
            {"resource": {"resourceType": "Group", "id": "cohort", "type": "person", "actual": true,
                          "member": [{"entity": {"reference": "Patient/ev-1"}}, {"entity": {"reference": "Patient/ev-2"}}]},
             "request": {"method": "PUT", "url": "Group/cohort"}},
            {"resource": {"resourceType": "Observation", "id": "ev-obs", "status": "final", "code": {"text": "x"},
                          "subject": {"reference": "Patient/ev-1"}},
             "request": {"method": "PUT", "url": "Observation/ev-obs"}}
        ]}),
    );
    let all = get_json(&s, &c, "/Patient/ev-1/$everything");
    let text = all.to_string();
    assert!(text.contains("ev-obs"), "{all}");
    assert!(
        !text.contains("Patient/ev-2"),
        "another patient is named: {all}"
    );
    assert!(
        entries(&all)
            .iter()
            .all(|e| e["resource"]["resourceType"] != "Group"),
        "{all}"
    );
    // asked for by type, still no Group: a 400 that says why
    let oo = expect_error(
        get(&s, &c, "/Patient/ev-1/$everything?_type=Group"),
        StatusCode::BAD_REQUEST,
    );
    assert!(oo.to_string().contains("Group"), "{oo}");
}

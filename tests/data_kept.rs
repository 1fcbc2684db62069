//! Data a client sends in good faith is kept as sent, and parameters mean what R4 says, through
//! HTTP: decimals keep their text, a malformed report period is a 400, history `_at` takes a
//! date, and an identical PUT of an immutable contract resource succeeds without a new version.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

fn post_raw(
    s: &Server,
    c: &reqwest::blocking::Client,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    let r = c
        .post(s.url(path))
        .header("Content-Type", FHIR_JSON)
        .body(body.to_string())
        .send()
        .expect("post");
    let st = r.status();
    (st, r.text().expect("body"))
}

#[test]
fn decimals_keep_the_text_they_were_sent_with() {
    let s = Server::start();
    let c = client();
    for value in [
        "1e400",
        "1E-7",
        "18446744073709551616",
        "-18446744073709551617",
        "340282366920938463463374607431768211456",
        "7.20",
        "0.000000000000000000000000000001",
        &"9".repeat(400),
    ] {
        let body = format!(
            r#"{{"resourceType":"Observation","status":"final","code":{{"text":"x"}},"valueQuantity":{{"value":{value},"unit":"u"}}}}"#
        );
        let (st, text) = post_raw(&s, &c, "/Observation", &body);
        assert_eq!(st, StatusCode::CREATED, "{value}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        let id = v["id"].as_str().expect("id");
        let read = get(&s, &c, &format!("/Observation/{id}"))
            .text()
            .expect("read");
        assert!(
            read.contains(&format!("\"value\":{value}")),
            "{value} came back as {read}"
        );
        let xml = c
            .get(s.url(&format!("/Observation/{id}?_format=xml")))
            .send()
            .expect("xml")
            .text()
            .expect("xml body");
        assert!(
            xml.contains(&format!("value=\"{value}\"")),
            "{value}: {xml}"
        );
    }
    // what is not a FHIR decimal is still refused, naming where
    for bad in ["1e", "NaN", "01.5"] {
        let body = format!(
            r#"{{"resourceType":"Observation","status":"final","code":{{"text":"x"}},"valueQuantity":{{"value":{bad}}}}}"#
        );
        let (st, text) = post_raw(&s, &c, "/Observation", &body);
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {text}");
    }
}

#[test]
fn a_malformed_report_period_is_a_400() {
    let s = Server::start_with(&[
        "--contracts-dir",
        "contracts",
        "--report-schedule-secs",
        "0",
    ]);
    let c = client();
    for (start, end) in [
        ("2024-01-01T25:61:61+99:99", "2024-12-31"),
        ("2024-01-01", "2024-12-31T10:00:00+15:00"),
        ("2024-01-01T", "2024-12-31"),
        ("2024-02-30", "2024-12-31"),
    ] {
        let oo = expect_error(
            c.get(s.url("/Measure/januvia-aetna-1.0.0/$evaluate-measure"))
                .query(&[("periodStart", start), ("periodEnd", end)])
                .send()
                .expect("get"),
            StatusCode::BAD_REQUEST,
        );
        let where_ = error_expressions(&oo);
        assert!(
            where_
                .iter()
                .any(|e| e == "periodStart" || e == "periodEnd"),
            "{start} {end}: {oo}"
        );
    }
    let ok = c
        .get(s.url("/Measure/januvia-aetna-1.0.0/$evaluate-measure"))
        .query(&[
            ("periodStart", "2024-01-01T00:00:00Z"),
            ("periodEnd", "2024-12-31T23:59:59-05:00"),
        ])
        .send()
        .expect("get");
    assert_eq!(ok.status(), StatusCode::OK);
}

#[test]
fn history_at_takes_a_date() {
    let s = Server::start();
    let c = client();
    let (st, text) = post_raw(&s, &c, "/Patient", r#"{"resourceType":"Patient"}"#);
    assert_eq!(st, StatusCode::CREATED, "{text}");
    let today = vbc_server::engine::days::format(vbc_server::engine::days::today());
    let tomorrow = vbc_server::engine::days::format(vbc_server::engine::days::today() + 1);
    // versions current at some point during today include the one just written
    let b = get_json(&s, &c, &format!("/Patient/_history?_at={today}"));
    assert_eq!(entries(&b).len(), 1, "{b}");
    let b = get_json(&s, &c, &format!("/_history?_at={tomorrow}"));
    assert!(!entries(&b).is_empty(), "{b}");
    let b = get_json(&s, &c, "/Patient/_history?_at=2000-01");
    assert!(entries(&b).is_empty(), "{b}");
    let b = get_json(&s, &c, "/Patient/_history?_at=2000");
    assert!(entries(&b).is_empty(), "{b}");
    for bad in ["2026-13-01", "yesterday", "2026-12-02T10:00:00"] {
        expect_error(
            get(&s, &c, &format!("/Patient/_history?_at={bad}")),
            StatusCode::BAD_REQUEST,
        );
    }
}

#[test]
fn an_identical_put_of_a_contract_resource_succeeds_without_a_new_version() {
    let s = Server::start_with(&[
        "--contracts-dir",
        "contracts",
        "--report-schedule-secs",
        "0",
    ]);
    let c = client();
    let path = "/Measure/januvia-aetna-1.0.0";
    let m = get_json(&s, &c, path);
    let version = m["meta"]["versionId"].clone();
    let r = c
        .put(s.url(path))
        .header("Content-Type", FHIR_JSON)
        .json(&m)
        .send()
        .expect("put");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().unwrap_or_default()
    );
    assert_eq!(get_json(&s, &c, path)["meta"]["versionId"], version);
    // also without what the server assigns (version, time, the contract-content tag)
    let mut bare = m.clone();
    for k in ["versionId", "lastUpdated", "tag"] {
        bare["meta"].as_object_mut().expect("meta").remove(k);
    }
    let r = c
        .put(s.url(path))
        .header("Content-Type", FHIR_JSON)
        .json(&bare)
        .send()
        .expect("put");
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().unwrap_or_default()
    );
    let h = get_json(&s, &c, &format!("{path}/_history"));
    assert_eq!(entries(&h).len(), 1, "no new version: {h}");
    // a change is still refused
    let mut changed = m.clone();
    changed["title"] = Value::String("something else".into());
    expect_error(
        c.put(s.url(path))
            .header("Content-Type", FHIR_JSON)
            .json(&changed)
            .send()
            .expect("put"),
        StatusCode::CONFLICT,
    );
}

//! FHIR and browser conventions through HTTP: CORS, `_include`/`_revinclude` on canonical
//! references, the CapabilityStatement's operations and their OperationDefinitions, `$outcomes`
//! paging, an OperationOutcome for the HTTP layer's own refusals, and unknown operations.

mod common;

use std::io::{Read, Write};

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn put(s: &Server, c: &reqwest::blocking::Client, path: &str, body: &Value) -> StatusCode {
    let r = c
        .put(s.url(path))
        .header("Content-Type", FHIR_JSON)
        .json(body)
        .send()
        .expect("PUT");
    let st = r.status();
    assert!(st.is_success(), "{path}: {}", r.text().unwrap_or_default());
    st
}

#[test]
fn browsers_get_cors_headers_and_preflights_pass() {
    let s = Server::start();
    let c = client();
    let r = c
        .request(reqwest::Method::OPTIONS, s.url("/Patient"))
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type,if-match",
        )
        .send()
        .expect("preflight");
    assert!(r.status().is_success(), "preflight {}", r.status());
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    let methods = h["access-control-allow-methods"]
        .to_str()
        .expect("methods")
        .to_ascii_uppercase();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .expect("headers")
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("if-match"));
    let r = c
        .post(s.url("/Patient"))
        .header("Origin", "https://app.example")
        .header("Content-Type", FHIR_JSON)
        .body(r#"{"resourceType":"Patient"}"#)
        .send()
        .expect("post");
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    let exposed = r.headers()["access-control-expose-headers"]
        .to_str()
        .expect("exposed")
        .to_ascii_lowercase();
    for h in ["location", "etag", "content-location"] {
        assert!(exposed.contains(h), "{exposed}");
    }
}

#[test]
fn configured_origins_only() {
    let s = Server::start_with(&["--cors-origins", "https://app.example"]);
    let c = client();
    let ok = c
        .get(s.url("/metadata"))
        .header("Origin", "https://app.example")
        .send()
        .expect("get");
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let other = c
        .get(s.url("/metadata"))
        .header("Origin", "https://evil.example")
        .send()
        .expect("get");
    assert!(other.headers().get("access-control-allow-origin").is_none());
}

#[test]
fn canonical_references_are_included_and_revincluded() {
    let s = Server::start();
    let c = client();
    let url = "http://example.org/fhir/Measure/hba1c";
    put(
        &s,
        &c,
        "/Library/lib-1",
        &json!({"resourceType": "Library", "id": "lib-1", "url": "http://example.org/fhir/Library/logic",
                "version": "2", "status": "active", "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/library-type", "code": "logic-library"}]}}),
    );
    put(
        &s,
        &c,
        "/Measure/m-1",
        &json!({"resourceType": "Measure", "id": "m-1", "url": url, "version": "1.0.0", "status": "active",
                "relatedArtifact": [{"type": "depends-on", "resource": "http://example.org/fhir/Library/logic|2"}]}),
    );
    put(
        &s,
        &c,
        "/Measure/m-2",
        &json!({"resourceType": "Measure", "id": "m-2", "url": url, "version": "2.0.0", "status": "active"}),
    );
    put(
        &s,
        &c,
        "/MeasureReport/r-1",
        &json!({"resourceType": "MeasureReport", "id": "r-1", "status": "complete", "type": "summary",
                "measure": format!("{url}|1.0.0"), "period": {"start": "2024-01-01", "end": "2024-12-31"}}),
    );
    let ids = |b: &Value| -> Vec<String> {
        let mut v: Vec<String> = entries(b)
            .iter()
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap_or(""),
                    e["resource"]["id"].as_str().unwrap_or("")
                )
            })
            .collect();
        v.sort();
        v
    };
    // the versioned canonical names one Measure version
    let b = get_json(
        &s,
        &c,
        "/MeasureReport?_id=r-1&_include=MeasureReport:measure",
    );
    assert_eq!(ids(&b), vec!["Measure/m-1", "MeasureReport/r-1"], "{b}");
    let b = get_json(&s, &c, "/MeasureReport?_id=r-1&_include=*");
    assert!(ids(&b).contains(&"Measure/m-1".to_string()), "{b}");
    let b = get_json(&s, &c, "/Measure?_id=m-1&_include=Measure:depends-on");
    assert_eq!(ids(&b), vec!["Library/lib-1", "Measure/m-1"], "{b}");
    let b = get_json(&s, &c, "/Measure?_id=m-1&_revinclude=MeasureReport:measure");
    assert_eq!(ids(&b), vec!["Measure/m-1", "MeasureReport/r-1"], "{b}");
    let b = get_json(&s, &c, "/Measure?_id=m-2&_revinclude=MeasureReport:measure");
    assert_eq!(ids(&b), vec!["Measure/m-2"], "{b}");
}

#[test]
fn every_operation_is_listed_and_defined() {
    let catalog = [
        "--contracts-dir",
        "contracts",
        "--report-schedule-secs",
        "0",
    ];
    let s = Server::start_with(&catalog);
    let c = client();
    let cs = get_json(&s, &c, "/metadata");
    let rest = &cs["rest"][0];
    let measure = rest["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "Measure")
        .expect("Measure");
    let ops: Vec<(String, String)> = measure["operation"]
        .as_array()
        .expect("operations")
        .iter()
        .map(|o| {
            (
                o["name"].as_str().expect("name").to_string(),
                o["definition"].as_str().expect("definition").to_string(),
            )
        })
        .collect();
    for op in [
        "evaluate-measure",
        "care-gaps",
        "data-requirements",
        "collect-data",
        "submit-data",
        "publish-reports",
        "outcomes",
    ] {
        assert!(ops.iter().any(|(n, _)| n == op), "{op} not listed: {ops:?}");
    }
    let system: Vec<&str> = rest["operation"]
        .as_array()
        .expect("system operations")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert!(system.contains(&"load-contract"), "{system:?}");
    // every definition named is served, by id and by url
    let mut all = ops.clone();
    for r in rest["resource"].as_array().expect("resources") {
        for o in r["operation"].as_array().into_iter().flatten() {
            all.push((
                o["name"].as_str().unwrap_or("").to_string(),
                o["definition"].as_str().unwrap_or("").to_string(),
            ));
        }
    }
    for o in rest["operation"].as_array().into_iter().flatten() {
        all.push((
            o["name"].as_str().unwrap_or("").to_string(),
            o["definition"].as_str().unwrap_or("").to_string(),
        ));
    }
    all.sort();
    all.dedup();
    for (name, url) in &all {
        let id = url.rsplit('/').next().expect("id");
        let def = get_json(&s, &c, &format!("/OperationDefinition/{id}"));
        assert_eq!(def["code"], name.as_str(), "{def}");
        let found = body_json(
            c.get(s.url("/OperationDefinition"))
                .query(&[("url", url.as_str())])
                .send()
                .expect("search"),
        );
        assert_eq!(entries(&found).len(), 1, "{url}: {found}");
        assert_eq!(entries(&found)[0]["resource"]["id"], id);
    }
    let none = get_json(
        &s,
        &c,
        "/OperationDefinition?url=https://vbc-server.dev/fhir/OperationDefinition/nothing",
    );
    assert!(entries(&none).is_empty(), "{none}");
    // nobody creates an AuditEvent: no conditional or update-as-create claims
    let audit = rest["resource"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["type"] == "AuditEvent")
        .expect("AuditEvent");
    assert!(audit.get("conditionalCreate").is_none(), "{audit}");
    assert!(audit.get("updateCreate").is_none(), "{audit}");
    // a restart stores nothing new
    let before = get_json(&s, &c, "/OperationDefinition/Measure-outcomes");
    drop(c);
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = Server::start_on(dir.path(), &catalog);
    let c = client();
    let v1 = get_json(&a, &c, "/OperationDefinition/Measure-outcomes");
    assert!(a.terminate());
    let b = Server::start_on(dir.path(), &catalog);
    let v2 = get_json(&b, &c, "/OperationDefinition/Measure-outcomes");
    assert_eq!(v1["meta"]["versionId"], v2["meta"]["versionId"]);
    assert_eq!(before["url"], v2["url"]);
}

#[test]
fn a_request_line_over_the_http_limit_gets_an_operation_outcome() {
    let s = Server::start();
    for (len, status) in [(70_000usize, 414u16), (600_000, 431)] {
        let path = format!("/Patient?name={}", "a".repeat(len));
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        tcp.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        let _ = tcp.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/fhir+json\r\n\r\n"
            )
            .as_bytes(),
        );
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {status} ")),
            "{}",
            &text[..text.len().min(200)]
        );
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/fhir+json"),
            "{head}"
        );
        let oo: Value = serde_json::from_str(body).expect("JSON body");
        assert_outcome(&oo);
        assert!(body.contains("_search"), "{body}");
    }
    // the server goes on serving
    assert_eq!(get(&s, &client(), "/metadata").status(), 200);
}

#[test]
fn unknown_operations_say_so() {
    let s = Server::start();
    let c = client();
    for (path, status) in [
        ("/$export", StatusCode::NOT_IMPLEMENTED),
        ("/Patient/$export", StatusCode::NOT_IMPLEMENTED),
        ("/Group/g1/$export", StatusCode::NOT_IMPLEMENTED),
        ("/Measure/x/$foo", StatusCode::NOT_FOUND),
        ("/$foo", StatusCode::NOT_FOUND),
        ("/Patient/$everything", StatusCode::NOT_IMPLEMENTED),
    ] {
        let oo = expect_error(get(&s, &c, path), status);
        let text = oo.to_string();
        assert!(text.contains("operation"), "{path}: {text}");
        assert!(!text.contains("resource type"), "{path}: {text}");
        assert!(!text.contains("not a valid id"), "{path}: {text}");
        assert!(!text.contains("compartment"), "{path}: {text}");
    }
    // the served ones still answer
    put(
        &s,
        &c,
        "/Patient/op-1",
        &json!({"resourceType": "Patient", "id": "op-1"}),
    );
    assert_eq!(get(&s, &c, "/Patient/op-1/$everything").status(), 200);
}

#[test]
fn outcomes_page_like_a_search_and_an_unknown_subject_is_404() {
    let s = Server::start_with(&[
        "--contracts-dir",
        "contracts",
        "--report-schedule-secs",
        "0",
    ]);
    let c = client();
    let contract = "januvia-aetna-1.0.0";
    let text = std::fs::read_to_string("contracts/januvia-aetna.toml").expect("contract");
    let rules = vbc_server::contracts::source::compile(&text).expect("compiles");
    let mut expected = Vec::new();
    for (bundles, e) in
        vbc_server::synth::generate(&rules, 25, 3, vbc_server::engine::days::today())
    {
        for b in &bundles {
            post_bundle(&s, &c, b);
        }
        expected.push(e);
    }
    let param = |p: &Value, name: &str| -> Vec<Value> {
        p["parameter"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|x| x["name"] == name)
            .cloned()
            .collect()
    };
    let link = |p: &Value, rel: &str| -> Option<String> {
        param(p, "link").into_iter().find_map(|l| {
            let parts = l["part"].as_array()?;
            (parts.iter().any(|x| x["valueString"] == rel)).then(|| {
                parts
                    .iter()
                    .find_map(|x| x["valueUri"].as_str().map(String::from))
                    .expect("url")
            })
        })
    };
    let first = get_json(&s, &c, &format!("/Measure/{contract}/$outcomes?_count=10"));
    let total = param(&first, "total")[0]["valueInteger"]
        .as_u64()
        .expect("total") as usize;
    assert!(total > 10, "{total}");
    assert!(link(&first, "previous").is_none());
    // walk the next links: every person once, total the same on every page
    let mut seen = Vec::new();
    let mut page = first.clone();
    loop {
        assert_eq!(param(&page, "total")[0]["valueInteger"], total);
        for r in param(&page, "result") {
            seen.push(r.to_string());
        }
        let Some(next) = link(&page, "next") else {
            break;
        };
        assert!(next.starts_with(&s.base), "{next}");
        let r = c.get(&next).send().expect("next");
        page = body_json(r);
        assert!(link(&page, "previous").is_some());
    }
    assert_eq!(seen.len(), total);
    let mut unique = seen.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), total);
    // counts describe the population, the same under a status filter
    let all = get_json(
        &s,
        &c,
        &format!("/Measure/{contract}/$outcomes?_summary=count"),
    );
    let pending = get_json(
        &s,
        &c,
        &format!("/Measure/{contract}/$outcomes?status=pending&_count=1"),
    );
    for name in ["initialPopulation", "members", "count"] {
        assert_eq!(param(&all, name), param(&pending, name), "{name}");
    }
    let pending_total = param(&pending, "total")[0]["valueInteger"]
        .as_u64()
        .expect("total");
    let counted: u64 = param(&all, "count")
        .iter()
        .flat_map(|c| c["part"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["name"] == "pending")
        .filter_map(|p| p["valueInteger"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(pending_total >= counted.min(1));
    // an unknown subject is not known, as in $evaluate-measure
    expect_error(
        get(
            &s,
            &c,
            &format!("/Measure/{contract}/$outcomes?subject=Patient/nobody-here"),
        ),
        StatusCode::NOT_FOUND,
    );
    let known = &expected[0].person;
    let one = get_json(
        &s,
        &c,
        &format!("/Measure/{contract}/$outcomes?subject=Patient/{known}"),
    );
    assert_eq!(param(&one, "total")[0]["valueInteger"], 1);
}

//! REST API behaviour of vbc-server, exercised over HTTP against the real binary.
//!
//! Every test starts its own server on a fresh temporary data directory, so tests are independent.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use common::{
    assert_outcome, body_json, client, content_type, entries, error_expressions, expect_error, get,
    get_json, search_total, Server, FHIR_JSON,
};
use reqwest::blocking::{Client, Response};
use reqwest::header::{
    CONTENT_TYPE, ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, LOCATION,
};
use reqwest::StatusCode;
use serde_json::{json, Value};

const JSON_PATCH: &str = "application/json-patch+json";
const FHIR_XML: &str = "application/fhir+xml";

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn patient(family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "active": true,
        "name": [{"family": family, "given": ["Ann"]}],
        "gender": "female",
        "birthDate": "1970-01-01"
    })
}

fn patient_with_identifier(family: &str, system: &str, value: &str) -> Value {
    let mut p = patient(family);
    p["identifier"] = json!([{"system": system, "value": value}]);
    p
}

fn header(resp: &Response, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn post(s: &Server, c: &Client, path: &str, body: &Value) -> Response {
    c.post(s.url(path))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body(body.to_string())
        .send()
        .expect("POST")
}

fn put(s: &Server, c: &Client, path: &str, body: &Value) -> Response {
    c.put(s.url(path))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body(body.to_string())
        .send()
        .expect("PUT")
}

/// POST a resource, expect 201 and return (id, body).
fn create(s: &Server, c: &Client, rtype: &str, body: &Value) -> (String, Value) {
    let r = post(s, c, rtype, body);
    let status = r.status();
    let v = body_json(r);
    assert_eq!(status, StatusCode::CREATED, "create {rtype}: {v}");
    let id = v["id"].as_str().expect("id").to_string();
    (id, v)
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")
        .and_then(|l| l["url"].as_str())
        .map(String::from)
}

fn ms_of(instant: &str) -> i64 {
    let t = time::OffsetDateTime::parse(instant, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("bad instant '{instant}': {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn instant_of(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).expect("time");
    let fmt = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&fmt).expect("format")
}

const HBA1C_RAW: &str = r#"{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org","code":"4548-4"}]},"subject":{"reference":"Patient/p1"},"effectiveDateTime":"2024-02-29T10:00:00+01:00","valueQuantity":{"value":7.20,"unit":"%","system":"http://unitsofmeasure.org","code":"%"}}"#;

// ---------------------------------------------------------------------------------------------
// create
// ---------------------------------------------------------------------------------------------

#[test]
fn create_assigns_id_and_version_headers() {
    let s = Server::start();
    let c = client();
    let mut body = patient("Create");
    body["id"] = json!("client-chosen");
    let r = post(&s, &c, "Patient", &body);
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(content_type(&r).starts_with(FHIR_JSON));
    let location = header(&r, LOCATION).expect("Location");
    let etag = header(&r, ETAG).expect("ETag");
    let last_modified = header(&r, LAST_MODIFIED).expect("Last-Modified");
    let v = body_json(r);
    let id = v["id"].as_str().expect("id").to_string();
    assert_ne!(
        id, "client-chosen",
        "the client's id must be ignored on create"
    );
    assert!(!id.is_empty());
    assert_eq!(location, s.url(&format!("Patient/{id}/_history/1")));
    assert_eq!(etag, "W/\"1\"");
    assert_eq!(v["meta"]["versionId"], "1");
    let lu = v["meta"]["lastUpdated"].as_str().expect("lastUpdated");
    let lu_ms = ms_of(lu);
    let lm = httpdate::parse_http_date(&last_modified).expect("HTTP date");
    let lm_s = lm
        .duration_since(std::time::UNIX_EPOCH)
        .expect("epoch")
        .as_secs() as i64;
    assert_eq!(
        lm_s,
        lu_ms.div_euclid(1000),
        "Last-Modified vs meta.lastUpdated"
    );
    assert_eq!(v["name"][0]["family"], "Create");
    // the client's id does not exist; the assigned one does
    expect_error(get(&s, &c, "Patient/client-chosen"), StatusCode::NOT_FOUND);
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read, v);
}

#[test]
fn create_keeps_decimal_precision() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Observation"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body(HBA1C_RAW)
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = r.text().expect("text");
    assert!(text.contains("\"value\":7.20"), "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let id = v["id"].as_str().expect("id");
    let read = get(&s, &c, &format!("Observation/{id}"))
        .text()
        .expect("text");
    assert!(read.contains("\"value\":7.20"), "{read}");
}

#[test]
fn create_outcome_lab_without_profile_fields_is_rejected() {
    let s = Server::start();
    let c = client();
    let obs = json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}
    });
    let oo = expect_error(post(&s, &c, "Observation", &obs), StatusCode::BAD_REQUEST);
    let x: BTreeSet<String> = error_expressions(&oo).into_iter().collect();
    // a value or a dataAbsentReason (vbc-obs-1) is reported on the Observation itself
    let want: BTreeSet<String> = [
        "Observation.subject",
        "Observation.effective",
        "Observation",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(x, want, "{oo}");
    let h = get_json(&s, &c, "Observation/_history");
    assert!(entries(&h).is_empty(), "{h}");
}

// ---------------------------------------------------------------------------------------------
// read / vread
// ---------------------------------------------------------------------------------------------

#[test]
fn read_existing_returns_resource_and_headers() {
    let s = Server::start();
    let c = client();
    let (id, created) = create(&s, &c, "Patient", &patient("Read"));
    let r = get(&s, &c, &format!("Patient/{id}"));
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with(FHIR_JSON));
    assert_eq!(header(&r, ETAG).as_deref(), Some("W/\"1\""));
    assert!(header(&r, LAST_MODIFIED).is_some());
    assert_eq!(body_json(r), created);
}

#[test]
fn read_unknown_id_is_404() {
    let s = Server::start();
    let c = client();
    let oo = expect_error(get(&s, &c, "Patient/does-not-exist"), StatusCode::NOT_FOUND);
    assert_eq!(oo["issue"][0]["code"], "not-found");
}

#[test]
fn read_unknown_type_is_404() {
    let s = Server::start();
    let c = client();
    expect_error(get(&s, &c, "Foo/1"), StatusCode::NOT_FOUND);
}

#[test]
fn read_bad_id_syntax_is_400() {
    let s = Server::start();
    let c = client();
    expect_error(get(&s, &c, "Patient/bad$id"), StatusCode::BAD_REQUEST);
    let long = "a".repeat(65);
    expect_error(
        get(&s, &c, &format!("Patient/{long}")),
        StatusCode::BAD_REQUEST,
    );
    // 64 characters is still a valid (unknown) id
    let max = "a".repeat(64);
    expect_error(
        get(&s, &c, &format!("Patient/{max}")),
        StatusCode::NOT_FOUND,
    );
}

#[test]
fn read_after_delete_is_410() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("Gone"));
    let d = c
        .delete(s.url(&format!("Patient/{id}")))
        .send()
        .expect("DELETE");
    assert_eq!(d.status(), StatusCode::NO_CONTENT);
    let oo = expect_error(get(&s, &c, &format!("Patient/{id}")), StatusCode::GONE);
    assert_eq!(oo["issue"][0]["code"], "deleted");
}

#[test]
fn vread_returns_old_version_after_update() {
    let s = Server::start();
    let c = client();
    let (id, v1) = create(&s, &c, "Patient", &patient("Before"));
    let mut upd = patient("After");
    upd["id"] = json!(id);
    let r = put(&s, &c, &format!("Patient/{id}"), &upd);
    assert_eq!(r.status(), StatusCode::OK);
    let r = get(&s, &c, &format!("Patient/{id}/_history/1"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, ETAG).as_deref(), Some("W/\"1\""));
    let old = body_json(r);
    assert_eq!(old, v1);
    assert_eq!(old["name"][0]["family"], "Before");
    let new = get_json(&s, &c, &format!("Patient/{id}/_history/2"));
    assert_eq!(new["meta"]["versionId"], "2");
    assert_eq!(new["name"][0]["family"], "After");
    let current = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(current, new);
}

#[test]
fn vread_unknown_version_is_404() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("V"));
    expect_error(
        get(&s, &c, &format!("Patient/{id}/_history/2")),
        StatusCode::NOT_FOUND,
    );
    expect_error(
        get(&s, &c, &format!("Patient/{id}/_history/x")),
        StatusCode::NOT_FOUND,
    );
    expect_error(
        get(&s, &c, "Patient/nobody/_history/1"),
        StatusCode::NOT_FOUND,
    );
}

// ---------------------------------------------------------------------------------------------
// update
// ---------------------------------------------------------------------------------------------

#[test]
fn update_creates_version_2() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("U"));
    let mut upd = patient("U2");
    upd["id"] = json!(id);
    let r = put(&s, &c, &format!("Patient/{id}"), &upd);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, ETAG).as_deref(), Some("W/\"2\""));
    assert_eq!(
        header(&r, LOCATION).as_deref(),
        Some(s.url(&format!("Patient/{id}/_history/2")).as_str())
    );
    let v = body_json(r);
    assert_eq!(v["meta"]["versionId"], "2");
    assert_eq!(v["id"], json!(id));
    assert_eq!(v["name"][0]["family"], "U2");
}

#[test]
fn update_as_create_with_client_id_is_201() {
    let s = Server::start();
    let c = client();
    let mut body = patient("Mine");
    body["id"] = json!("my-own-id");
    let r = put(&s, &c, "Patient/my-own-id", &body);
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, ETAG).as_deref(), Some("W/\"1\""));
    assert_eq!(
        header(&r, LOCATION).as_deref(),
        Some(s.url("Patient/my-own-id/_history/1").as_str())
    );
    let v = body_json(r);
    assert_eq!(v["id"], "my-own-id");
    assert_eq!(v["meta"]["versionId"], "1");
    let read = get_json(&s, &c, "Patient/my-own-id");
    assert_eq!(read["name"][0]["family"], "Mine");
}

#[test]
fn update_id_mismatch_is_400() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("M"));
    let mut body = patient("M2");
    body["id"] = json!("other-id");
    expect_error(
        put(&s, &c, &format!("Patient/{id}"), &body),
        StatusCode::BAD_REQUEST,
    );
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["meta"]["versionId"], "1");
    expect_error(get(&s, &c, "Patient/other-id"), StatusCode::NOT_FOUND);
}

#[test]
fn update_without_id_in_body_is_400() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("NoId"));
    expect_error(
        put(&s, &c, &format!("Patient/{id}"), &patient("NoId2")),
        StatusCode::BAD_REQUEST,
    );
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["meta"]["versionId"], "1");
}

#[test]
fn update_wrong_resource_type_is_400() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("T"));
    let org = json!({"resourceType": "Organization", "id": id, "name": "Acme"});
    expect_error(
        put(&s, &c, &format!("Patient/{id}"), &org),
        StatusCode::BAD_REQUEST,
    );
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["resourceType"], "Patient");
    assert_eq!(read["meta"]["versionId"], "1");
}

#[test]
fn update_if_match_current_version_succeeds() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("IM"));
    let mut body = patient("IM2");
    body["id"] = json!(id);
    let r = c
        .put(s.url(&format!("Patient/{id}")))
        .header(CONTENT_TYPE, FHIR_JSON)
        .header(IF_MATCH, "W/\"1\"")
        .body(body.to_string())
        .send()
        .expect("PUT");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, ETAG).as_deref(), Some("W/\"2\""));
}

#[test]
fn update_if_match_stale_version_is_412() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("Stale"));
    let mut body = patient("Stale2");
    body["id"] = json!(id);
    assert_eq!(
        put(&s, &c, &format!("Patient/{id}"), &body).status(),
        StatusCode::OK
    );
    body["name"][0]["family"] = json!("Stale3");
    let r = c
        .put(s.url(&format!("Patient/{id}")))
        .header(CONTENT_TYPE, FHIR_JSON)
        .header(IF_MATCH, "W/\"1\"")
        .body(body.to_string())
        .send()
        .expect("PUT");
    let oo = expect_error(r, StatusCode::PRECONDITION_FAILED);
    assert_eq!(oo["issue"][0]["code"], "conflict");
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["meta"]["versionId"], "2");
    assert_eq!(read["name"][0]["family"], "Stale2");
}

#[test]
fn update_if_match_on_missing_resource_is_412() {
    let s = Server::start();
    let c = client();
    let mut body = patient("Nobody");
    body["id"] = json!("not-there");
    let r = c
        .put(s.url("Patient/not-there"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .header(IF_MATCH, "W/\"1\"")
        .body(body.to_string())
        .send()
        .expect("PUT");
    expect_error(r, StatusCode::PRECONDITION_FAILED);
    expect_error(get(&s, &c, "Patient/not-there"), StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------------
// delete
// ---------------------------------------------------------------------------------------------

#[test]
fn delete_then_history_shows_three_versions() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("Del"));
    let mut upd = patient("Del2");
    upd["id"] = json!(id);
    assert_eq!(
        put(&s, &c, &format!("Patient/{id}"), &upd).status(),
        StatusCode::OK
    );
    let d = c
        .delete(s.url(&format!("Patient/{id}")))
        .send()
        .expect("DELETE");
    assert_eq!(d.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&d, ETAG).as_deref(), Some("W/\"3\""));
    assert!(d.text().expect("text").is_empty());
    expect_error(get(&s, &c, &format!("Patient/{id}")), StatusCode::GONE);

    let h = get_json(&s, &c, &format!("Patient/{id}/_history"));
    assert_eq!(h["type"], "history");
    assert_eq!(h["total"], 3, "{h}");
    let e = entries(&h);
    assert_eq!(e.len(), 3, "{h}");
    assert_eq!(e[0]["request"]["method"], "DELETE");
    assert!(e[0].get("resource").is_none(), "{}", e[0]);
    assert_eq!(e[0]["response"]["etag"], "W/\"3\"");
    assert_eq!(e[1]["request"]["method"], "PUT");
    assert_eq!(e[1]["resource"]["meta"]["versionId"], "2");
    assert_eq!(e[2]["request"]["method"], "POST");
    assert_eq!(e[2]["resource"]["meta"]["versionId"], "1");
    assert_eq!(e[2]["response"]["status"], "201 Created");
    // the old versions are still readable
    let v2 = get_json(&s, &c, &format!("Patient/{id}/_history/2"));
    assert_eq!(v2["name"][0]["family"], "Del2");
}

#[test]
fn delete_twice_is_still_success() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("Twice"));
    let d1 = c
        .delete(s.url(&format!("Patient/{id}")))
        .send()
        .expect("DELETE");
    assert_eq!(d1.status(), StatusCode::NO_CONTENT);
    let d2 = c
        .delete(s.url(&format!("Patient/{id}")))
        .send()
        .expect("DELETE");
    assert!(d2.status().is_success(), "{}", d2.status());
    // the second delete wrote nothing
    let h = get_json(&s, &c, &format!("Patient/{id}/_history"));
    assert_eq!(entries(&h).len(), 2, "{h}");
    // deleting something that never existed also succeeds
    let d3 = c.delete(s.url("Patient/never-was")).send().expect("DELETE");
    assert!(d3.status().is_success(), "{}", d3.status());
}

#[test]
fn delete_if_match_stale_is_412_and_vread_of_tombstone_is_410() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("DelIM"));
    let r = c
        .delete(s.url(&format!("Patient/{id}")))
        .header(IF_MATCH, "W/\"5\"")
        .send()
        .expect("DELETE");
    expect_error(r, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        get(&s, &c, &format!("Patient/{id}")).status(),
        StatusCode::OK
    );
    let r = c
        .delete(s.url(&format!("Patient/{id}")))
        .header(IF_MATCH, "W/\"1\"")
        .send()
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        get(&s, &c, &format!("Patient/{id}/_history/2")),
        StatusCode::GONE,
    );
    assert_eq!(
        get(&s, &c, &format!("Patient/{id}/_history/1")).status(),
        StatusCode::OK
    );
}

// ---------------------------------------------------------------------------------------------
// conditional create / update / delete
// ---------------------------------------------------------------------------------------------

#[test]
fn conditional_create_if_none_exist() {
    let s = Server::start();
    let c = client();
    let body = patient_with_identifier("Cond", "http://sys", "123");
    let send = || {
        c.post(s.url("Patient"))
            .header(CONTENT_TYPE, FHIR_JSON)
            .header("If-None-Exist", "identifier=http://sys|123")
            .body(body.to_string())
            .send()
            .expect("POST")
    };
    let r1 = send();
    assert_eq!(r1.status(), StatusCode::CREATED);
    let id1 = body_json(r1)["id"].as_str().expect("id").to_string();
    let r2 = send();
    assert_eq!(r2.status(), StatusCode::OK);
    assert_eq!(header(&r2, ETAG).as_deref(), Some("W/\"1\""));
    let v2 = body_json(r2);
    assert_eq!(v2["id"], json!(id1));
    assert_eq!(v2["meta"]["versionId"], "1");
    assert_eq!(
        search_total(&s, &c, "Patient", "identifier=http://sys|123"),
        1
    );
    let h = get_json(&s, &c, "Patient/_history");
    assert_eq!(entries(&h).len(), 1, "{h}");
}

#[test]
fn conditional_create_with_multiple_matches_is_412() {
    let s = Server::start();
    let c = client();
    let body = patient_with_identifier("Dup", "http://sys", "123");
    create(&s, &c, "Patient", &body);
    create(&s, &c, "Patient", &body);
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .header("If-None-Exist", "identifier=http://sys|123")
        .body(body.to_string())
        .send()
        .expect("POST");
    expect_error(r, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        search_total(&s, &c, "Patient", "identifier=http://sys|123"),
        2
    );
}

#[test]
fn conditional_update_no_match_creates() {
    let s = Server::start();
    let c = client();
    let body = patient_with_identifier("CU", "sys", "v");
    let r = put(&s, &c, "Patient?identifier=sys|v", &body);
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = body_json(r);
    let id = v["id"].as_str().expect("id");
    assert_eq!(v["meta"]["versionId"], "1");
    assert_eq!(search_total(&s, &c, "Patient", "identifier=sys|v"), 1);
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["name"][0]["family"], "CU");
}

#[test]
fn conditional_update_one_match_updates_it() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(
        &s,
        &c,
        "Patient",
        &patient_with_identifier("One", "sys", "v"),
    );
    create(
        &s,
        &c,
        "Patient",
        &patient_with_identifier("Other", "sys", "w"),
    );
    let r = put(
        &s,
        &c,
        "Patient?identifier=sys|v",
        &patient_with_identifier("One2", "sys", "v"),
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, ETAG).as_deref(), Some("W/\"2\""));
    let v = body_json(r);
    assert_eq!(v["id"], json!(id));
    assert_eq!(v["meta"]["versionId"], "2");
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["name"][0]["family"], "One2");
    assert_eq!(search_total(&s, &c, "Patient", "identifier=sys|v"), 1);
}

#[test]
fn conditional_update_two_matches_is_412() {
    let s = Server::start();
    let c = client();
    let (a, _) = create(&s, &c, "Patient", &patient_with_identifier("A", "sys", "v"));
    let (b, _) = create(&s, &c, "Patient", &patient_with_identifier("B", "sys", "v"));
    expect_error(
        put(
            &s,
            &c,
            "Patient?identifier=sys|v",
            &patient_with_identifier("C", "sys", "v"),
        ),
        StatusCode::PRECONDITION_FAILED,
    );
    for id in [a, b] {
        let read = get_json(&s, &c, &format!("Patient/{id}"));
        assert_eq!(read["meta"]["versionId"], "1");
    }
}

#[test]
fn conditional_delete_single_match() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(
        &s,
        &c,
        "Patient",
        &patient_with_identifier("CD", "http://sys", "del"),
    );
    let (keep, _) = create(
        &s,
        &c,
        "Patient",
        &patient_with_identifier("Keep", "http://sys", "keep"),
    );
    let r = c
        .delete(s.url("Patient?identifier=http://sys|del"))
        .send()
        .expect("DELETE");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(get(&s, &c, &format!("Patient/{id}")), StatusCode::GONE);
    assert_eq!(
        get_json(&s, &c, &format!("Patient/{keep}"))["meta"]["versionId"],
        "1"
    );
    assert_eq!(
        search_total(&s, &c, "Patient", "identifier=http://sys|del"),
        0
    );
}

#[test]
fn conditional_delete_multiple_matches_is_412() {
    let s = Server::start();
    let c = client();
    let (a, _) = create(
        &s,
        &c,
        "Patient",
        &patient_with_identifier("A", "http://sys", "many"),
    );
    let (b, _) = create(
        &s,
        &c,
        "Patient",
        &patient_with_identifier("B", "http://sys", "many"),
    );
    let r = c
        .delete(s.url("Patient?identifier=http://sys|many"))
        .send()
        .expect("DELETE");
    expect_error(r, StatusCode::PRECONDITION_FAILED);
    for id in [a, b] {
        assert_eq!(
            get(&s, &c, &format!("Patient/{id}")).status(),
            StatusCode::OK
        );
    }
}

// ---------------------------------------------------------------------------------------------
// patch
// ---------------------------------------------------------------------------------------------

fn patch(s: &Server, c: &Client, path: &str, ctype: &str, body: &Value) -> Response {
    c.patch(s.url(path))
        .header(CONTENT_TYPE, ctype)
        .body(body.to_string())
        .send()
        .expect("PATCH")
}

#[test]
fn patch_replaces_field() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("P"));
    let r = patch(
        &s,
        &c,
        &format!("Patient/{id}"),
        JSON_PATCH,
        &json!([{"op": "replace", "path": "/gender", "value": "male"}]),
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, ETAG).as_deref(), Some("W/\"2\""));
    let v = body_json(r);
    assert_eq!(v["gender"], "male");
    assert_eq!(v["meta"]["versionId"], "2");
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["gender"], "male");
    assert_eq!(read["name"][0]["family"], "P");
}

#[test]
fn patch_making_resource_invalid_is_400_and_unchanged() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("P"));
    let oo = expect_error(
        patch(
            &s,
            &c,
            &format!("Patient/{id}"),
            JSON_PATCH,
            &json!([{"op": "replace", "path": "/gender", "value": "nope"}]),
        ),
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(
        error_expressions(&oo),
        vec!["Patient.gender".to_string()],
        "{oo}"
    );
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["meta"]["versionId"], "1");
    assert_eq!(read["gender"], "female");
}

#[test]
fn patch_with_wrong_content_type_is_415() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("P"));
    expect_error(
        patch(
            &s,
            &c,
            &format!("Patient/{id}"),
            FHIR_JSON,
            &json!([{"op": "replace", "path": "/gender", "value": "male"}]),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    );
    assert_eq!(
        get_json(&s, &c, &format!("Patient/{id}"))["meta"]["versionId"],
        "1"
    );
}

#[test]
fn patch_unknown_id_is_404() {
    let s = Server::start();
    let c = client();
    expect_error(
        patch(
            &s,
            &c,
            "Patient/nobody",
            JSON_PATCH,
            &json!([{"op": "replace", "path": "/gender", "value": "male"}]),
        ),
        StatusCode::NOT_FOUND,
    );
}

#[test]
fn patch_if_match_stale_is_412() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("P"));
    let r = c
        .patch(s.url(&format!("Patient/{id}")))
        .header(CONTENT_TYPE, JSON_PATCH)
        .header(IF_MATCH, "W/\"3\"")
        .body(json!([{"op": "replace", "path": "/gender", "value": "male"}]).to_string())
        .send()
        .expect("PATCH");
    expect_error(r, StatusCode::PRECONDITION_FAILED);
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["meta"]["versionId"], "1");
    assert_eq!(read["gender"], "female");
}

// ---------------------------------------------------------------------------------------------
// Prefer
// ---------------------------------------------------------------------------------------------

#[test]
fn prefer_return_minimal_gives_empty_body() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .header("Prefer", "return=minimal")
        .body(patient("Min").to_string())
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = header(&r, LOCATION).expect("Location");
    assert_eq!(header(&r, ETAG).as_deref(), Some("W/\"1\""));
    assert!(r.text().expect("text").is_empty());
    let prefix = s.url("Patient/");
    let rest = loc.strip_prefix(&prefix).unwrap_or_else(|| panic!("{loc}"));
    let id = rest
        .strip_suffix("/_history/1")
        .unwrap_or_else(|| panic!("{loc}"));
    let read = get_json(&s, &c, &format!("Patient/{id}"));
    assert_eq!(read["name"][0]["family"], "Min");
}

#[test]
fn prefer_return_operation_outcome() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .header("Prefer", "return=OperationOutcome")
        .body(patient("OO").to_string())
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(header(&r, LOCATION).is_some());
    let v = body_json(r);
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    let issues = v["issue"].as_array().expect("issues");
    assert!(!issues.is_empty());
    assert!(issues.iter().all(|i| i["severity"] != "error"), "{v}");
}

#[test]
fn prefer_default_returns_resource() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .header("Prefer", "return=representation")
        .body(patient("Rep").to_string())
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = body_json(r);
    assert_eq!(v["resourceType"], "Patient");
    assert_eq!(v["name"][0]["family"], "Rep");
    // and without any Prefer header
    let (_, v) = create(&s, &c, "Patient", &patient("NoPrefer"));
    assert_eq!(v["resourceType"], "Patient");
    assert_eq!(v["name"][0]["family"], "NoPrefer");
}

// ---------------------------------------------------------------------------------------------
// conditional read
// ---------------------------------------------------------------------------------------------

#[test]
fn if_none_match_current_version_is_304() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("INM"));
    let r = c
        .get(s.url(&format!("Patient/{id}")))
        .header(IF_NONE_MATCH, "W/\"1\"")
        .send()
        .expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&r, ETAG).as_deref(), Some("W/\"1\""));
    assert!(r.text().expect("text").is_empty());
    // a different version is not a match
    let r = c
        .get(s.url(&format!("Patient/{id}")))
        .header(IF_NONE_MATCH, "W/\"7\"")
        .send()
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn if_modified_since_future_is_304() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("IMS"));
    let future = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(3600));
    let r = c
        .get(s.url(&format!("Patient/{id}")))
        .header(IF_MODIFIED_SINCE, future)
        .send()
        .expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert!(r.text().expect("text").is_empty());
    let past = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(3600));
    let r = c
        .get(s.url(&format!("Patient/{id}")))
        .header(IF_MODIFIED_SINCE, past)
        .send()
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------------
// history
// ---------------------------------------------------------------------------------------------

#[test]
fn history_instance_type_and_system_levels() {
    let s = Server::start();
    let c = client();
    let (p1, _) = create(&s, &c, "Patient", &patient("H1"));
    let mut upd = patient("H1b");
    upd["id"] = json!(p1);
    assert_eq!(
        put(&s, &c, &format!("Patient/{p1}"), &upd).status(),
        StatusCode::OK
    );
    let (p2, _) = create(&s, &c, "Patient", &patient("H2"));
    let r = c
        .post(s.url("Observation"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body(HBA1C_RAW)
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let o1 = body_json(r)["id"].as_str().expect("id").to_string();

    let inst = get_json(&s, &c, &format!("Patient/{p1}/_history"));
    assert_eq!(inst["type"], "history");
    let e = entries(&inst);
    let got: Vec<(String, String)> = e
        .iter()
        .map(|x| {
            (
                x["resource"]["id"].as_str().unwrap_or("").to_string(),
                x["resource"]["meta"]["versionId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(p1.clone(), "2".into()), (p1.clone(), "1".into())]
    );
    assert_eq!(e[0]["fullUrl"], json!(s.url(&format!("Patient/{p1}"))));

    let ty = get_json(&s, &c, "Patient/_history");
    let ids: Vec<(String, String)> = entries(&ty)
        .iter()
        .map(|x| {
            (
                x["resource"]["id"].as_str().unwrap_or("").to_string(),
                x["resource"]["meta"]["versionId"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        vec![
            (p2.clone(), "1".into()),
            (p1.clone(), "2".into()),
            (p1.clone(), "1".into())
        ]
    );

    let sys = get_json(&s, &c, "_history");
    let all: Vec<(String, String)> = entries(&sys)
        .iter()
        .map(|x| {
            (
                x["resource"]["resourceType"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                x["resource"]["id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        all,
        vec![
            ("Observation".to_string(), o1),
            ("Patient".to_string(), p2),
            ("Patient".to_string(), p1.clone()),
            ("Patient".to_string(), p1)
        ]
    );
    // unknown instance
    expect_error(
        get(&s, &c, "Patient/nobody/_history"),
        StatusCode::NOT_FOUND,
    );
}

fn collect_pages(c: &Client, first: String) -> (Vec<Value>, usize) {
    let mut url = Some(first);
    let mut all = Vec::new();
    let mut pages = 0;
    while let Some(u) = url {
        pages += 1;
        assert!(pages < 50, "paging does not end");
        let r = c.get(&u).send().expect("GET page");
        assert_eq!(r.status(), StatusCode::OK, "{u}");
        let b = body_json(r);
        let e = entries(&b);
        assert!(e.len() <= 2, "page larger than _count: {b}");
        all.extend(e);
        url = next_link(&b);
    }
    (all, pages)
}

#[test]
fn history_paging_sees_every_version_once_newest_first() {
    let s = Server::start();
    let c = client();
    // a write log: (type, id, version), in write order
    let mut log: Vec<(String, String, String)> = Vec::new();
    let (a, _) = create(&s, &c, "Patient", &patient("A"));
    log.push(("Patient".into(), a.clone(), "1".into()));
    let (b, _) = create(&s, &c, "Patient", &patient("B"));
    log.push(("Patient".into(), b.clone(), "1".into()));
    for v in 2..=4 {
        let mut upd = patient(&format!("A{v}"));
        upd["id"] = json!(a);
        assert_eq!(
            put(&s, &c, &format!("Patient/{a}"), &upd).status(),
            StatusCode::OK
        );
        log.push(("Patient".into(), a.clone(), v.to_string()));
    }
    let d = c
        .delete(s.url(&format!("Patient/{b}")))
        .send()
        .expect("DELETE");
    assert_eq!(d.status(), StatusCode::NO_CONTENT);
    log.push(("Patient".into(), b.clone(), "2".into()));
    let (o, _) = create(
        &s,
        &c,
        "Organization",
        &json!({"resourceType": "Organization", "name": "Org"}),
    );
    log.push(("Organization".into(), o.clone(), "1".into()));

    let key = |e: &Value| -> (String, String, String) {
        let full = e["fullUrl"].as_str().unwrap_or("").to_string();
        let path = full.rsplit('/').take(2).collect::<Vec<_>>();
        let etag = e["response"]["etag"].as_str().unwrap_or("");
        (
            path.get(1).copied().unwrap_or("").to_string(),
            path.first().copied().unwrap_or("").to_string(),
            etag.trim_start_matches("W/").trim_matches('"').to_string(),
        )
    };

    // system level
    let (all, pages) = collect_pages(&c, s.url("_history?_count=2"));
    let got: Vec<_> = all.iter().map(key).collect();
    let mut want = log.clone();
    want.reverse();
    assert_eq!(got, want);
    assert_eq!(pages, 4);

    // type level
    let (all, pages) = collect_pages(&c, s.url("Patient/_history?_count=2"));
    let got: Vec<_> = all.iter().map(key).collect();
    let want_p: Vec<_> = want.iter().filter(|x| x.0 == "Patient").cloned().collect();
    assert_eq!(got, want_p);
    assert_eq!(pages, 3);

    // instance level
    let (all, pages) = collect_pages(&c, s.url(&format!("Patient/{a}/_history?_count=2")));
    let versions: Vec<String> = all
        .iter()
        .map(|e| {
            e["resource"]["meta"]["versionId"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(versions, vec!["4", "3", "2", "1"]);
    assert_eq!(pages, 2);
    let unique: HashSet<_> = versions.iter().collect();
    assert_eq!(unique.len(), 4);
}

#[test]
fn history_since_filters() {
    let s = Server::start();
    let c = client();
    let (a, va) = create(&s, &c, "Patient", &patient("Early"));
    std::thread::sleep(Duration::from_millis(30));
    let (b, vb) = create(&s, &c, "Patient", &patient("Late"));
    let ta = ms_of(va["meta"]["lastUpdated"].as_str().expect("lu"));
    let tb = ms_of(vb["meta"]["lastUpdated"].as_str().expect("lu"));
    assert!(tb - ta >= 20, "writes too close: {ta} {tb}");
    let since = instant_of(ta + (tb - ta) / 2);

    let sys = get_json(&s, &c, &format!("_history?_since={since}"));
    let ids: Vec<Value> = entries(&sys)
        .iter()
        .map(|e| e["resource"]["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(b)], "{sys}");

    let ty = get_json(&s, &c, &format!("Patient/_history?_since={since}"));
    let ids: Vec<Value> = entries(&ty)
        .iter()
        .map(|e| e["resource"]["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!(b)], "{ty}");

    let inst = get_json(&s, &c, &format!("Patient/{a}/_history?_since={since}"));
    assert!(entries(&inst).is_empty(), "{inst}");
    let inst = get_json(&s, &c, &format!("Patient/{b}/_history?_since={since}"));
    assert_eq!(entries(&inst).len(), 1, "{inst}");

    // an instant before both writes sees both
    let before = instant_of(ta - 1000);
    let sys = get_json(&s, &c, &format!("_history?_since={before}"));
    assert_eq!(entries(&sys).len(), 2);
}

#[test]
fn history_bad_since_is_400() {
    let s = Server::start();
    let c = client();
    create(&s, &c, "Patient", &patient("X"));
    expect_error(
        get(&s, &c, "_history?_since=yesterday"),
        StatusCode::BAD_REQUEST,
    );
    expect_error(
        get(&s, &c, "Patient/_history?_since=2024-13-01"),
        StatusCode::BAD_REQUEST,
    );
    expect_error(
        get(&s, &c, "Patient/_history?_count=abc"),
        StatusCode::BAD_REQUEST,
    );
}

// ---------------------------------------------------------------------------------------------
// XML and formatting
// ---------------------------------------------------------------------------------------------

const PATIENT_XML: &str = r#"<Patient xmlns="http://hl7.org/fhir"><identifier><system value="http://sys"/><value value="xml-1"/></identifier><active value="true"/><name><family value="Xmlson"/><given value="Xena"/></name><gender value="female"/><birthDate value="1980-05-06"/></Patient>"#;

const OBS_XML: &str = r#"<Observation xmlns="http://hl7.org/fhir"><status value="final"/><code><coding><system value="http://loinc.org"/><code value="4548-4"/></coding></code><subject><reference value="Patient/p1"/></subject><effectiveDateTime value="2024-02-29T10:00:00+01:00"/><valueQuantity><value value="7.20"/><unit value="%"/><system value="http://unitsofmeasure.org"/><code value="%"/></valueQuantity></Observation>"#;

#[test]
fn xml_create_and_read_back() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_XML)
        .header("Accept", FHIR_JSON)
        .body(PATIENT_XML)
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(content_type(&r).starts_with(FHIR_JSON));
    let v = body_json(r);
    let id = v["id"].as_str().expect("id").to_string();
    assert_eq!(v["name"][0]["family"], "Xmlson");
    assert_eq!(v["gender"], "female");
    assert_eq!(v["birthDate"], "1980-05-06");
    assert_eq!(v["active"], true);
    assert_eq!(v["identifier"][0]["value"], "xml-1");

    let r = c
        .get(s.url(&format!("Patient/{id}")))
        .header("Accept", FHIR_XML)
        .send()
        .expect("GET");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        content_type(&r).starts_with(FHIR_XML),
        "{}",
        content_type(&r)
    );
    let text = r.text().expect("text");
    assert!(
        text.contains(r#"<Patient xmlns="http://hl7.org/fhir">"#),
        "{text}"
    );
    assert!(text.contains(r#"<family value="Xmlson"/>"#), "{text}");
    assert!(text.contains(&format!(r#"<id value="{id}"/>"#)), "{text}");

    let r = get(&s, &c, &format!("Patient/{id}?_format=xml"));
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        content_type(&r).starts_with(FHIR_XML),
        "{}",
        content_type(&r)
    );
    let text2 = r.text().expect("text");
    assert_eq!(text2, text);

    let r = get(
        &s,
        &c,
        &format!("Patient/{id}?_format=application/fhir%2Bxml"),
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with(FHIR_XML));
}

#[test]
fn xml_decimal_in_json_out() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Observation"))
        .header(CONTENT_TYPE, FHIR_XML)
        .body(OBS_XML)
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = r.text().expect("text");
    assert!(text.contains("\"value\":7.20"), "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    let id = v["id"].as_str().expect("id");
    let read = get(&s, &c, &format!("Observation/{id}"))
        .text()
        .expect("text");
    assert!(read.contains("\"value\":7.20"), "{read}");
}

#[test]
fn json_decimal_in_xml_out() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Observation"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .header("Accept", FHIR_XML)
        .body(HBA1C_RAW)
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(content_type(&r).starts_with(FHIR_XML));
    let loc = header(&r, LOCATION).expect("Location");
    let text = r.text().expect("text");
    assert!(text.contains(r#"<value value="7.20"/>"#), "{text}");
    assert!(
        text.contains(r#"<Observation xmlns="http://hl7.org/fhir">"#),
        "{text}"
    );
    let read = c
        .get(loc.replace("/_history/1", ""))
        .query(&[("_format", "xml")])
        .send()
        .expect("GET")
        .text()
        .expect("text");
    assert!(read.contains(r#"<value value="7.20"/>"#), "{read}");
}

#[test]
fn pretty_json_has_newlines() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("Pretty"));
    let compact = get(&s, &c, &format!("Patient/{id}")).text().expect("text");
    assert!(!compact.contains('\n'), "{compact}");
    let r = get(&s, &c, &format!("Patient/{id}?_pretty=true"));
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with(FHIR_JSON));
    let pretty = r.text().expect("text");
    assert!(pretty.contains('\n'), "{pretty}");
    let a: Value = serde_json::from_str(&compact).expect("json");
    let b: Value = serde_json::from_str(&pretty).expect("json");
    assert_eq!(a, b);
}

#[test]
fn mismatched_xml_is_400() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_XML)
        .body(r#"<Patient xmlns="http://hl7.org/fhir"><name><family value="x"/></Patient>"#)
        .send()
        .expect("POST");
    expect_error(r, StatusCode::BAD_REQUEST);
    assert!(entries(&get_json(&s, &c, "_history")).is_empty());
}

/// A document cut off at EOF (end tags missing) is not well-formed XML and must be rejected,
/// not stored as a partial resource.
#[test]
fn truncated_xml_is_400() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_XML)
        .body(r#"<Patient xmlns="http://hl7.org/fhir"><name><family value="Cut"/></name><gender value="female"/>"#)
        .send()
        .expect("POST");
    expect_error(r, StatusCode::BAD_REQUEST);
    assert!(entries(&get_json(&s, &c, "_history")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------------------------

#[test]
fn text_plain_body_is_415() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, "text/plain")
        .body(patient("Plain").to_string())
        .send()
        .expect("POST");
    expect_error(r, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(entries(&get_json(&s, &c, "_history")).is_empty());
}

#[test]
fn body_over_limit_is_413() {
    let s = Server::start_with(&["--max-body-bytes", "1000"]);
    let c = client();
    let mut big = patient("Big");
    big["name"][0]["text"] = json!("x".repeat(2000));
    let body = big.to_string();
    assert!(body.len() > 1000);
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body(body.clone())
        .send()
        .expect("POST");
    let oo = expect_error(r, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(oo["issue"][0]["code"], "too-costly");
    // a body under the limit is fine
    create(&s, &c, "Patient", &patient("Small"));
    let h = get_json(&s, &c, "_history");
    assert_eq!(entries(&h).len(), 1);
}

#[test]
fn chunked_body_over_limit_is_413() {
    let s = Server::start_with(&["--max-body-bytes", "1000"]);
    let c = client();
    let mut big = patient("Big");
    big["name"][0]["text"] = json!("x".repeat(2000));
    let bytes = big.to_string().into_bytes();
    // a reader body is sent chunked, without Content-Length
    let body = reqwest::blocking::Body::new(std::io::Cursor::new(bytes));
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body(body)
        .send()
        .expect("POST");
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(entries(&get_json(&s, &c, "_history")).is_empty());
}

#[test]
fn patch_on_type_is_405() {
    let s = Server::start();
    let c = client();
    expect_error(
        patch(
            &s,
            &c,
            "Patient",
            JSON_PATCH,
            &json!([{"op": "replace", "path": "/gender", "value": "male"}]),
        ),
        StatusCode::METHOD_NOT_ALLOWED,
    );
}

#[test]
fn unknown_route_is_404() {
    let s = Server::start();
    let c = client();
    expect_error(get(&s, &c, "Patient/1/foo/bar/baz"), StatusCode::NOT_FOUND);
}

#[test]
fn unsupported_format_is_406() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("Fmt"));
    expect_error(
        get(&s, &c, &format!("Patient/{id}?_format=html")),
        StatusCode::NOT_ACCEPTABLE,
    );
    expect_error(
        get(&s, &c, "metadata?_format=text/html"),
        StatusCode::NOT_ACCEPTABLE,
    );
}

#[test]
fn malformed_json_is_400() {
    let s = Server::start();
    let c = client();
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body("{\"resourceType\": \"Patient\",")
        .send()
        .expect("POST");
    expect_error(r, StatusCode::BAD_REQUEST);
    let r = c
        .post(s.url("Patient"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body("")
        .send()
        .expect("POST");
    expect_error(r, StatusCode::BAD_REQUEST);
}

#[test]
fn create_with_wrong_resource_type_for_url_is_400() {
    let s = Server::start();
    let c = client();
    expect_error(
        post(&s, &c, "Observation", &patient("Wrong")),
        StatusCode::BAD_REQUEST,
    );
    expect_error(
        post(&s, &c, "Foo", &patient("Wrong")),
        StatusCode::NOT_FOUND,
    );
    assert!(entries(&get_json(&s, &c, "_history")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// validation
// ---------------------------------------------------------------------------------------------

#[test]
fn invalid_patient_reports_every_problem() {
    let s = Server::start();
    let c = client();
    let bad = json!({
        "resourceType": "Patient",
        "gender": "nope",
        "birthDate": "2024-13-45",
        "bogusElement": true,
        "managingOrganization": {"reference": "Nope/1"}
    });
    let oo = expect_error(post(&s, &c, "Patient", &bad), StatusCode::BAD_REQUEST);
    let issues = oo["issue"].as_array().expect("issues");
    assert_eq!(issues.len(), 4, "{oo}");
    for i in issues {
        assert_eq!(i["severity"], "error", "{i}");
        assert_eq!(i["expression"].as_array().map(Vec::len), Some(1), "{i}");
    }
    let got: BTreeSet<String> = error_expressions(&oo).into_iter().collect();
    let want: BTreeSet<String> = [
        "Patient.gender",
        "Patient.birthDate",
        "Patient.bogusElement",
        "Patient.managingOrganization.reference",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(got, want, "{oo}");
    let h = get_json(&s, &c, "Patient/_history");
    assert!(h.get("entry").is_none(), "{h}");
}

#[test]
fn validate_operation_valid_resource() {
    let s = Server::start();
    let c = client();
    let r = post(&s, &c, "Patient/$validate", &patient("Valid"));
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with(FHIR_JSON));
    let oo = body_json(r);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    let issues = oo["issue"].as_array().expect("issues");
    assert!(!issues.is_empty());
    assert!(
        issues
            .iter()
            .all(|i| i["severity"] != "error" && i["severity"] != "fatal"),
        "{oo}"
    );
    // nothing is stored by $validate
    assert!(entries(&get_json(&s, &c, "_history")).is_empty());
}

#[test]
fn validate_operation_invalid_resource() {
    let s = Server::start();
    let c = client();
    let bad = json!({"resourceType": "Patient", "gender": "nope", "birthDate": "2024-13-45"});
    let r = post(&s, &c, "Patient/$validate", &bad);
    assert_eq!(r.status(), StatusCode::OK);
    let oo = body_json(r);
    assert_outcome(&oo);
    let got: BTreeSet<String> = error_expressions(&oo).into_iter().collect();
    let want: BTreeSet<String> = ["Patient.gender", "Patient.birthDate"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(got, want, "{oo}");
    // a resource of the wrong type for the URL is reported too
    let r = post(&s, &c, "Observation/$validate", &patient("Wrong"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_outcome(&body_json(r));
}

#[test]
fn validate_operation_parameters_body() {
    let s = Server::start();
    let c = client();
    let params = json!({
        "resourceType": "Parameters",
        "parameter": [{"name": "resource", "resource": patient("InParams")}]
    });
    let r = post(&s, &c, "Patient/$validate", &params);
    assert_eq!(r.status(), StatusCode::OK);
    let oo = body_json(r);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert!(
        oo["issue"]
            .as_array()
            .expect("issues")
            .iter()
            .all(|i| i["severity"] != "error"),
        "{oo}"
    );

    let mut bad = patient("Bad");
    bad["gender"] = json!("nope");
    let params = json!({
        "resourceType": "Parameters",
        "parameter": [{"name": "mode", "valueCode": "create"}, {"name": "resource", "resource": bad}]
    });
    let r = post(&s, &c, "Patient/$validate", &params);
    assert_eq!(r.status(), StatusCode::OK);
    let oo = body_json(r);
    assert_outcome(&oo);
    assert_eq!(
        error_expressions(&oo),
        vec!["Patient.gender".to_string()],
        "{oo}"
    );

    // Parameters without a resource parameter is a bad request
    let params = json!({"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "create"}]});
    expect_error(
        post(&s, &c, "Patient/$validate", &params),
        StatusCode::BAD_REQUEST,
    );
}

#[test]
fn validate_operation_instance_level_uses_stored_resource() {
    let s = Server::start();
    let c = client();
    let (id, _) = create(&s, &c, "Patient", &patient("Stored"));
    let r = c
        .post(s.url(&format!("Patient/{id}/$validate")))
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::OK);
    let oo = body_json(r);
    assert_eq!(oo["resourceType"], "OperationOutcome");
    assert!(
        oo["issue"]
            .as_array()
            .expect("issues")
            .iter()
            .all(|i| i["severity"] != "error"),
        "{oo}"
    );
    // instance-level with an unknown id and no body
    let r = c
        .post(s.url("Patient/nobody/$validate"))
        .send()
        .expect("POST");
    expect_error(r, StatusCode::NOT_FOUND);
    // instance-level with a body whose id differs is reported
    let mut other = patient("Other");
    other["id"] = json!("different");
    let r = post(&s, &c, &format!("Patient/{id}/$validate"), &other);
    assert_eq!(r.status(), StatusCode::OK);
    let oo = body_json(r);
    assert_eq!(
        error_expressions(&oo),
        vec!["Patient.id".to_string()],
        "{oo}"
    );
}

// ---------------------------------------------------------------------------------------------
// metadata, health, request ids
// ---------------------------------------------------------------------------------------------

#[test]
fn metadata_capability_statement() {
    let s = Server::start();
    let c = client();
    let r = get(&s, &c, "metadata");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(content_type(&r).starts_with(FHIR_JSON));
    let cs = body_json(r);
    assert_eq!(cs["resourceType"], "CapabilityStatement");
    assert_eq!(cs["fhirVersion"], "4.0.1");
    let resources = cs["rest"][0]["resource"].as_array().expect("resources");
    for t in ["Patient", "Observation", "MedicationDispense", "Encounter"] {
        let r = resources
            .iter()
            .find(|r| r["type"] == t)
            .unwrap_or_else(|| panic!("{t} missing"));
        let codes: HashSet<&str> = r["interaction"]
            .as_array()
            .expect("interactions")
            .iter()
            .filter_map(|i| i["code"].as_str())
            .collect();
        for want in [
            "read",
            "vread",
            "create",
            "update",
            "patch",
            "delete",
            "history-instance",
            "history-type",
        ] {
            assert!(codes.contains(want), "{t} lacks {want}: {codes:?}");
        }
    }
}

#[test]
fn metadata_as_xml() {
    let s = Server::start();
    let c = client();
    let r = get(&s, &c, "metadata?_format=xml");
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        content_type(&r).starts_with(FHIR_XML),
        "{}",
        content_type(&r)
    );
    let text = r.text().expect("text");
    assert!(
        text.contains(r#"<CapabilityStatement xmlns="http://hl7.org/fhir">"#),
        "{}",
        &text[..text.len().min(500)]
    );
    assert!(text.contains(r#"<fhirVersion value="4.0.1"/>"#));
}

#[test]
fn health_and_ready() {
    let s = Server::start();
    let c = client();
    let r = get(&s, &c, "health");
    assert_eq!(r.status(), StatusCode::OK);
    let r = get(&s, &c, "ready");
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn request_id_generated_and_echoed() {
    let s = Server::start();
    let c = client();
    let r = get(&s, &c, "health");
    let id = header(&r, "x-request-id").expect("x-request-id");
    assert!(!id.is_empty());
    let r2 = get(&s, &c, "health");
    assert_ne!(header(&r2, "x-request-id").expect("x-request-id"), id);
    let r = c
        .get(s.url("metadata"))
        .header("X-Request-Id", "my-request-42")
        .send()
        .expect("GET");
    assert_eq!(header(&r, "x-request-id").as_deref(), Some("my-request-42"));
    // also on errors
    let r = c
        .get(s.url("Patient/nobody"))
        .header("X-Request-Id", "err-req-7")
        .send()
        .expect("GET");
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&r, "x-request-id").as_deref(), Some("err-req-7"));
}

// ---------------------------------------------------------------------------------------------
// listing
// ---------------------------------------------------------------------------------------------

#[test]
fn list_type_with_paging() {
    let s = Server::start();
    let c = client();
    let mut ids = BTreeSet::new();
    for i in 0..3 {
        ids.insert(create(&s, &c, "Patient", &patient(&format!("L{i}"))).0);
    }
    let (gone, _) = create(&s, &c, "Patient", &patient("Deleted"));
    let d = c
        .delete(s.url(&format!("Patient/{gone}")))
        .send()
        .expect("DELETE");
    assert_eq!(d.status(), StatusCode::NO_CONTENT);
    create(
        &s,
        &c,
        "Organization",
        &json!({"resourceType": "Organization", "name": "NotAPatient"}),
    );

    let all = get_json(&s, &c, "Patient");
    assert_eq!(all["type"], "searchset");
    let got: BTreeSet<String> = entries(&all)
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(got, ids);
    assert!(next_link(&all).is_none());

    let mut url = Some(s.url("Patient?_count=1"));
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(u) = url {
        pages += 1;
        assert!(pages <= 10, "paging does not end");
        let r = c.get(&u).send().expect("GET");
        assert_eq!(r.status(), StatusCode::OK);
        let b = body_json(r);
        let e = entries(&b);
        assert_eq!(e.len(), 1, "{b}");
        assert_eq!(e[0]["search"]["mode"], "match");
        let id = e[0]["resource"]["id"].as_str().expect("id").to_string();
        assert_eq!(e[0]["fullUrl"], json!(s.url(&format!("Patient/{id}"))));
        seen.push(id);
        url = next_link(&b);
    }
    assert_eq!(pages, 3);
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), 3, "{seen:?}");
    assert_eq!(unique, ids);
}

/// A search that matches more resources than `_count` must let the client reach the rest
/// (a `next` link), not silently drop them.
#[test]
fn identifier_search_pages_when_truncated() {
    let s = Server::start();
    let c = client();
    let mut ids = BTreeSet::new();
    for i in 0..3 {
        ids.insert(
            create(
                &s,
                &c,
                "Patient",
                &patient_with_identifier(&format!("S{i}"), "http://sys", "shared"),
            )
            .0,
        );
    }
    let first = get_json(&s, &c, "Patient?identifier=http://sys|shared&_count=1");
    assert_eq!(first["total"], 3, "{first}");
    assert_eq!(entries(&first).len(), 1, "{first}");
    let mut seen: BTreeSet<String> = entries(&first)
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap_or("").to_string())
        .collect();
    let mut next = next_link(&first);
    assert!(
        next.is_some(),
        "3 matches, 1 returned, and no next link: {first}"
    );
    let mut pages = 1;
    while let Some(u) = next {
        pages += 1;
        assert!(pages <= 10, "paging does not end");
        let r = c.get(&u).send().expect("GET");
        assert_eq!(r.status(), StatusCode::OK);
        let b = body_json(r);
        for e in entries(&b) {
            seen.insert(e["resource"]["id"].as_str().unwrap_or("").to_string());
        }
        next = next_link(&b);
    }
    assert_eq!(seen, ids);
}

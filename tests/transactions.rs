//! Transaction and batch Bundles (`POST /`), exercised over HTTP against the real binary.
//!
//! Every test starts its own server on a fresh temporary data directory, so tests are independent.

mod common;

use std::collections::BTreeSet;

use base64::Engine as _;
use common::{
    assert_outcome, body_json, client, entries, error_expressions, expect_error, get, get_json,
    search_total, Server, FHIR_JSON,
};
use reqwest::blocking::{Client, Response};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn urn() -> String {
    format!("urn:uuid:{}", uuid::Uuid::new_v4())
}

fn patient(family: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "name": [{"family": family}],
        "gender": "female",
        "birthDate": "1965-03-04"
    })
}

fn patient_with_identifier(family: &str, system: &str, value: &str) -> Value {
    let mut p = patient(family);
    p["identifier"] = json!([{"system": system, "value": value}]);
    p
}

fn heart_rate(subject: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2024-03-01T09:30:00Z",
        "valueQuantity": {"value": 72, "unit": "beats/minute", "system": "http://unitsofmeasure.org", "code": "/min"}
    })
}

fn post_entry(full_url: &str, resource: Value) -> Value {
    let rtype = resource["resourceType"].as_str().expect("type").to_string();
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": rtype}})
}

fn bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

fn post_bundle(s: &Server, c: &Client, b: &Value) -> Response {
    c.post(s.url(""))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body(b.to_string())
        .send()
        .expect("POST /")
}

/// POST a Bundle, expect 200 and the response type, return the response Bundle.
fn run_ok(s: &Server, c: &Client, b: &Value, want_type: &str) -> Value {
    let r = post_bundle(s, c, b);
    let status = r.status();
    let ct = r
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let v = body_json(r);
    assert_eq!(status, StatusCode::OK, "{v}");
    assert!(ct.starts_with(FHIR_JSON), "{ct}");
    assert_eq!(v["resourceType"], "Bundle", "{v}");
    assert_eq!(v["type"], want_type, "{v}");
    v
}

fn create(s: &Server, c: &Client, body: &Value) -> String {
    let rtype = body["resourceType"].as_str().expect("type");
    let r = c
        .post(s.url(rtype))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body(body.to_string())
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::CREATED);
    body_json(r)["id"].as_str().expect("id").to_string()
}

fn system_history_len(s: &Server, c: &Client) -> usize {
    entries(&get_json(s, c, "_history")).len()
}

/// `(type, id)` of a response entry's location `base/Type/id/_history/n`.
fn located(s: &Server, e: &Value) -> (String, String, String) {
    let loc = e["response"]["location"]
        .as_str()
        .unwrap_or_else(|| panic!("no location: {e}"));
    let rest = loc
        .strip_prefix(&s.url(""))
        .unwrap_or_else(|| panic!("location not on this server: {loc}"));
    let parts: Vec<&str> = rest.split('/').collect();
    assert_eq!(parts.len(), 4, "{loc}");
    assert_eq!(parts[2], "_history", "{loc}");
    (
        parts[0].to_string(),
        parts[1].to_string(),
        parts[3].to_string(),
    )
}

// ---------------------------------------------------------------------------------------------
// transaction: success
// ---------------------------------------------------------------------------------------------

#[test]
fn transaction_creates_and_rewrites_references() {
    let s = Server::start();
    let c = client();
    let (p, e, o, m, pr) = (urn(), urn(), urn(), urn(), urn());
    let encounter = json!({
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": p}
    });
    let mut obs = heart_rate(&p);
    obs["encounter"] = json!({"reference": e});
    let dispense = json!({
        "resourceType": "MedicationDispense",
        "status": "completed",
        "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}]},
        "subject": {"reference": p},
        "context": {"reference": e},
        "performer": [{"actor": {"reference": pr}}],
        "quantity": {"value": 30},
        "daysSupply": {"value": 30},
        "whenHandedOver": "2024-03-01T10:00:00Z"
    });
    let practitioner = json!({"resourceType": "Practitioner", "name": [{"family": "Doc"}]});
    let b = bundle(
        "transaction",
        vec![
            post_entry(&p, patient("Tx")),
            post_entry(&e, encounter),
            post_entry(&o, obs),
            post_entry(&m, dispense),
            post_entry(&pr, practitioner),
        ],
    );
    let resp = run_ok(&s, &c, &b, "transaction-response");
    let es = entries(&resp);
    assert_eq!(es.len(), 5, "{resp}");
    let want_types = [
        "Patient",
        "Encounter",
        "Observation",
        "MedicationDispense",
        "Practitioner",
    ];
    let mut ids = Vec::new();
    for (i, entry) in es.iter().enumerate() {
        assert_eq!(entry["response"]["status"], "201 Created", "{entry}");
        assert_eq!(entry["response"]["etag"], "W/\"1\"", "{entry}");
        let lm = entry["response"]["lastModified"]
            .as_str()
            .unwrap_or_else(|| panic!("lastModified: {entry}"));
        assert!(
            time::OffsetDateTime::parse(lm, &time::format_description::well_known::Rfc3339).is_ok(),
            "{lm}"
        );
        let (t, id, v) = located(&s, entry);
        assert_eq!(t, want_types[i], "entry {i} out of request order: {resp}");
        assert_eq!(v, "1");
        assert_eq!(entry["fullUrl"], json!(s.url(&format!("{t}/{id}"))));
        ids.push(id);
    }
    let (pid, eid, oid, mid, prid) = (&ids[0], &ids[1], &ids[2], &ids[3], &ids[4]);

    let mut stored = Vec::new();
    for (t, id) in want_types.iter().zip(ids.iter()) {
        let r = get(&s, &c, &format!("{t}/{id}"));
        assert_eq!(r.status(), StatusCode::OK, "{t}/{id}");
        let text = r.text().expect("text");
        assert!(
            !text.contains("urn:uuid"),
            "{t}/{id} still holds a urn: {text}"
        );
        assert!(!text.contains("urn:"), "{text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["meta"]["versionId"], "1");
        stored.push(v);
    }
    let patient_ref = json!(format!("Patient/{pid}"));
    let encounter_ref = json!(format!("Encounter/{eid}"));
    assert_eq!(stored[1]["subject"]["reference"], patient_ref);
    assert_eq!(stored[2]["subject"]["reference"], patient_ref);
    assert_eq!(stored[2]["encounter"]["reference"], encounter_ref);
    assert_eq!(stored[3]["subject"]["reference"], patient_ref);
    assert_eq!(stored[3]["context"]["reference"], encounter_ref);
    assert_eq!(
        stored[3]["performer"][0]["actor"]["reference"],
        json!(format!("Practitioner/{prid}"))
    );
    assert_eq!(stored[2]["id"], json!(oid));
    assert_eq!(stored[3]["id"], json!(mid));
    assert_eq!(system_history_len(&s, &c), 5);
}

#[test]
fn transaction_prefer_representation_returns_resources() {
    let s = Server::start();
    let c = client();
    let p = urn();
    let b = bundle(
        "transaction",
        vec![
            post_entry(&p, patient("Rep")),
            post_entry(&urn(), heart_rate(&p)),
        ],
    );
    let r = c
        .post(s.url(""))
        .header(CONTENT_TYPE, FHIR_JSON)
        .header("Prefer", "return=representation")
        .body(b.to_string())
        .send()
        .expect("POST");
    assert_eq!(r.status(), StatusCode::OK);
    let resp = body_json(r);
    let es = entries(&resp);
    assert_eq!(es.len(), 2);
    let pid = es[0]["resource"]["id"].as_str().expect("id");
    assert_eq!(es[0]["resource"]["resourceType"], "Patient");
    assert_eq!(
        es[1]["resource"]["subject"]["reference"],
        json!(format!("Patient/{pid}"))
    );
    // without Prefer, no resources
    let resp = run_ok(
        &s,
        &c,
        &bundle("transaction", vec![post_entry(&urn(), patient("NoRep"))]),
        "transaction-response",
    );
    assert!(entries(&resp)[0].get("resource").is_none(), "{resp}");
}

// ---------------------------------------------------------------------------------------------
// transaction: atomicity
// ---------------------------------------------------------------------------------------------

#[test]
fn transaction_with_invalid_last_entry_stores_nothing() {
    let s = Server::start();
    let c = client();
    let p = urn();
    let mut bad = heart_rate(&p);
    bad["status"] = json!("bogus");
    let b = bundle(
        "transaction",
        vec![
            post_entry(&p, patient("Atomic")),
            post_entry(
                &urn(),
                json!({"resourceType": "Practitioner", "name": [{"family": "Doc"}]}),
            ),
            post_entry(&urn(), heart_rate(&p)),
            post_entry(
                &urn(),
                json!({"resourceType": "Organization", "name": "Org"}),
            ),
            post_entry(&urn(), bad),
        ],
    );
    let oo = expect_error(post_bundle(&s, &c, &b), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_expressions(&oo),
        vec!["Bundle.entry[4].resource.status".to_string()],
        "{oo}"
    );
    assert_eq!(system_history_len(&s, &c), 0);
    for t in ["Patient", "Practitioner", "Observation", "Organization"] {
        let b = get_json(&s, &c, t);
        assert!(entries(&b).is_empty(), "{t}: {b}");
    }
}

#[test]
fn transaction_failing_at_commit_stores_nothing() {
    let s = Server::start();
    let c = client();
    let existing = create(&s, &c, &patient("Existing"));
    let mut upd = patient("Changed");
    upd["id"] = json!(existing);
    let p = urn();
    let b = bundle(
        "transaction",
        vec![
            post_entry(&p, patient("New")),
            post_entry(&urn(), heart_rate(&p)),
            json!({
                "resource": upd,
                "request": {"method": "PUT", "url": format!("Patient/{existing}"), "ifMatch": "W/\"9\""}
            }),
        ],
    );
    expect_error(post_bundle(&s, &c, &b), StatusCode::PRECONDITION_FAILED);
    assert_eq!(system_history_len(&s, &c), 1);
    let cur = get_json(&s, &c, &format!("Patient/{existing}"));
    assert_eq!(cur["meta"]["versionId"], "1");
    assert_eq!(cur["name"][0]["family"], "Existing");
    assert!(entries(&get_json(&s, &c, "Observation")).is_empty());

    // the same transaction with the right version goes through
    let mut b = b;
    b["entry"][2]["request"]["ifMatch"] = json!("W/\"1\"");
    let resp = run_ok(&s, &c, &b, "transaction-response");
    let es = entries(&resp);
    assert_eq!(es[2]["response"]["status"], "200 OK");
    assert_eq!(es[2]["response"]["etag"], "W/\"2\"");
    assert_eq!(system_history_len(&s, &c), 4);
}

// ---------------------------------------------------------------------------------------------
// conditional create and conditional references
// ---------------------------------------------------------------------------------------------

#[test]
fn transaction_conditional_create_replayed() {
    let s = Server::start();
    let c = client();
    let p = urn();
    let mut pe = post_entry(&p, patient_with_identifier("Cond", "http://sys", "abc"));
    pe["request"]["ifNoneExist"] = json!("identifier=http://sys|abc");
    let b = bundle("transaction", vec![pe, post_entry(&urn(), heart_rate(&p))]);

    let first = run_ok(&s, &c, &b, "transaction-response");
    let e1 = entries(&first);
    assert_eq!(e1[0]["response"]["status"], "201 Created", "{first}");
    assert_eq!(e1[1]["response"]["status"], "201 Created", "{first}");
    let (_, pid, _) = located(&s, &e1[0]);

    let second = run_ok(&s, &c, &b, "transaction-response");
    let e2 = entries(&second);
    assert_eq!(e2[0]["response"]["status"], "200 OK", "{second}");
    let (t, pid2, v) = located(&s, &e2[0]);
    assert_eq!(
        (t.as_str(), pid2.as_str(), v.as_str()),
        ("Patient", pid.as_str(), "1")
    );
    assert_eq!(e2[1]["response"]["status"], "201 Created", "{second}");
    let (_, oid2, _) = located(&s, &e2[1]);

    assert_eq!(
        search_total(&s, &c, "Patient", "identifier=http://sys|abc"),
        1
    );
    let all_patients = get_json(&s, &c, "Patient");
    assert_eq!(entries(&all_patients).len(), 1);
    let obs = get_json(&s, &c, &format!("Observation/{oid2}"));
    assert_eq!(obs["subject"]["reference"], json!(format!("Patient/{pid}")));
    let pat = get_json(&s, &c, &format!("Patient/{pid}"));
    assert_eq!(pat["meta"]["versionId"], "1");
    assert_eq!(entries(&get_json(&s, &c, "Observation")).len(), 2);
}

#[test]
fn conditional_reference_resolves_to_existing() {
    let s = Server::start();
    let c = client();
    let pid = create(&s, &c, &patient_with_identifier("Ref", "http://sys", "abc"));
    create(
        &s,
        &c,
        &patient_with_identifier("Other", "http://sys", "xyz"),
    );
    let b = bundle(
        "transaction",
        vec![post_entry(
            &urn(),
            heart_rate("Patient?identifier=http://sys|abc"),
        )],
    );
    let resp = run_ok(&s, &c, &b, "transaction-response");
    let (_, oid, _) = located(&s, &entries(&resp)[0]);
    let obs = get_json(&s, &c, &format!("Observation/{oid}"));
    assert_eq!(obs["subject"]["reference"], json!(format!("Patient/{pid}")));
}

#[test]
fn conditional_reference_ambiguous_is_412() {
    let s = Server::start();
    let c = client();
    create(&s, &c, &patient_with_identifier("A", "http://sys", "abc"));
    create(&s, &c, &patient_with_identifier("B", "http://sys", "abc"));
    let b = bundle(
        "transaction",
        vec![
            post_entry(
                &urn(),
                json!({"resourceType": "Organization", "name": "Org"}),
            ),
            post_entry(&urn(), heart_rate("Patient?identifier=http://sys|abc")),
        ],
    );
    expect_error(post_bundle(&s, &c, &b), StatusCode::PRECONDITION_FAILED);
    assert_eq!(system_history_len(&s, &c), 2);
}

#[test]
fn conditional_reference_without_match_is_412() {
    let s = Server::start();
    let c = client();
    create(&s, &c, &patient_with_identifier("A", "http://sys", "abc"));
    let b = bundle(
        "transaction",
        vec![post_entry(
            &urn(),
            heart_rate("Patient?identifier=http://sys|none"),
        )],
    );
    expect_error(post_bundle(&s, &c, &b), StatusCode::PRECONDITION_FAILED);
    assert_eq!(system_history_len(&s, &c), 1);
}

#[test]
fn conditional_reference_outside_transaction_is_400() {
    let s = Server::start();
    let c = client();
    create(&s, &c, &patient_with_identifier("A", "http://sys", "abc"));
    let r = c
        .post(s.url("Observation"))
        .header(CONTENT_TYPE, FHIR_JSON)
        .body(heart_rate("Patient?identifier=http://sys|abc").to_string())
        .send()
        .expect("POST");
    let oo = expect_error(r, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_expressions(&oo),
        vec!["Observation.subject.reference".to_string()]
    );
}

#[test]
fn unresolved_urn_reference_is_400() {
    let s = Server::start();
    let c = client();
    let b = bundle(
        "transaction",
        vec![
            post_entry(&urn(), patient("Lonely")),
            post_entry(&urn(), heart_rate(&urn())),
        ],
    );
    expect_error(post_bundle(&s, &c, &b), StatusCode::BAD_REQUEST);
    assert_eq!(system_history_len(&s, &c), 0);
}

// ---------------------------------------------------------------------------------------------
// structure and processing order
// ---------------------------------------------------------------------------------------------

#[test]
fn duplicate_full_urls_are_400() {
    let s = Server::start();
    let c = client();
    let p = urn();
    let b = bundle(
        "transaction",
        vec![
            post_entry(&p, patient("One")),
            post_entry(&p, patient("Two")),
        ],
    );
    let oo = expect_error(post_bundle(&s, &c, &b), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_expressions(&oo),
        vec!["Bundle.entry[1].fullUrl".to_string()],
        "{oo}"
    );
    assert_eq!(system_history_len(&s, &c), 0);
}

#[test]
fn get_after_delete_in_same_transaction_sees_410() {
    let s = Server::start();
    let c = client();
    let pid = create(&s, &c, &patient("DelGet"));
    // GET listed first, DELETE second: the DELETE runs first, the GET last
    let b = bundle(
        "transaction",
        vec![
            json!({"request": {"method": "GET", "url": format!("Patient/{pid}")}}),
            json!({"request": {"method": "DELETE", "url": format!("Patient/{pid}")}}),
        ],
    );
    expect_error(post_bundle(&s, &c, &b), StatusCode::GONE);
    // the failed transaction deleted nothing
    let cur = get_json(&s, &c, &format!("Patient/{pid}"));
    assert_eq!(cur["meta"]["versionId"], "1");
    assert_eq!(system_history_len(&s, &c), 1);
}

#[test]
fn get_sees_put_of_same_transaction() {
    let s = Server::start();
    let c = client();
    let pid = create(&s, &c, &patient("Before"));
    let mut upd = patient("After");
    upd["id"] = json!(pid);
    let b = bundle(
        "transaction",
        vec![
            json!({"request": {"method": "GET", "url": format!("Patient/{pid}")}}),
            json!({"resource": upd, "request": {"method": "PUT", "url": format!("Patient/{pid}")}}),
            json!({"request": {"method": "GET", "url": "Patient/made-by-put"}}),
            json!({
                "resource": {"resourceType": "Patient", "id": "made-by-put", "gender": "male"},
                "request": {"method": "PUT", "url": "Patient/made-by-put"}
            }),
        ],
    );
    let resp = run_ok(&s, &c, &b, "transaction-response");
    let es = entries(&resp);
    assert_eq!(es.len(), 4);
    assert_eq!(es[0]["response"]["status"], "200 OK");
    assert_eq!(
        es[0]["response"]["etag"], "W/\"2\"",
        "GET must run after PUT: {resp}"
    );
    assert_eq!(es[1]["response"]["status"], "200 OK");
    assert_eq!(es[1]["response"]["etag"], "W/\"2\"");
    assert_eq!(es[2]["response"]["status"], "200 OK", "{resp}");
    assert_eq!(es[2]["response"]["etag"], "W/\"1\"");
    assert_eq!(es[3]["response"]["status"], "201 Created");
    assert_eq!(get_json(&s, &c, "Patient/made-by-put")["gender"], "male");
}

#[test]
fn deletes_run_before_posts_and_puts() {
    let s = Server::start();
    let c = client();
    let gone = create(&s, &c, &patient("ToDelete"));
    let kept = create(&s, &c, &patient("ToUpdate"));
    let mut upd = patient("Updated");
    upd["id"] = json!(kept);
    // listed PUT, POST, DELETE; processed DELETE, POST, PUT
    let b = bundle(
        "transaction",
        vec![
            json!({"resource": upd, "request": {"method": "PUT", "url": format!("Patient/{kept}")}}),
            post_entry(&urn(), patient("Posted")),
            json!({"request": {"method": "DELETE", "url": format!("Patient/{gone}")}}),
        ],
    );
    let resp = run_ok(&s, &c, &b, "transaction-response");
    let es = entries(&resp);
    assert_eq!(es.len(), 3);
    assert_eq!(es[0]["response"]["status"], "200 OK");
    assert_eq!(es[1]["response"]["status"], "201 Created");
    assert_eq!(es[2]["response"]["status"], "204 No Content");
    let (_, posted, _) = located(&s, &es[1]);
    expect_error(get(&s, &c, &format!("Patient/{gone}")), StatusCode::GONE);
    assert_eq!(
        get_json(&s, &c, &format!("Patient/{kept}"))["name"][0]["family"],
        "Updated"
    );
    // history (newest first) shows the processing order
    let h = get_json(&s, &c, "_history");
    let order: Vec<(String, String)> = entries(&h)
        .iter()
        .take(3)
        .map(|e| {
            (
                e["request"]["method"].as_str().unwrap_or("").to_string(),
                e["fullUrl"]
                    .as_str()
                    .unwrap_or("")
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(
        order,
        vec![
            ("PUT".to_string(), kept.clone()),
            ("POST".to_string(), posted),
            ("DELETE".to_string(), gone.clone())
        ]
    );
}

#[test]
fn conditional_delete_inside_transaction() {
    let s = Server::start();
    let c = client();
    let pid = create(&s, &c, &patient_with_identifier("CD", "http://sys", "cd"));
    let b = bundle(
        "transaction",
        vec![json!({"request": {"method": "DELETE", "url": "Patient?identifier=http://sys|cd"}})],
    );
    let resp = run_ok(&s, &c, &b, "transaction-response");
    assert_eq!(entries(&resp)[0]["response"]["status"], "204 No Content");
    expect_error(get(&s, &c, &format!("Patient/{pid}")), StatusCode::GONE);
}

// ---------------------------------------------------------------------------------------------
// batch
// ---------------------------------------------------------------------------------------------

#[test]
fn batch_entries_are_independent() {
    let s = Server::start();
    let c = client();
    let mut bad = patient("Bad");
    bad["gender"] = json!("nope");
    let b = bundle(
        "batch",
        vec![
            json!({"resource": patient("Good"), "request": {"method": "POST", "url": "Patient"}}),
            json!({"resource": bad, "request": {"method": "POST", "url": "Patient"}}),
            json!({"request": {"method": "GET", "url": "Patient/does-not-exist"}}),
        ],
    );
    let resp = run_ok(&s, &c, &b, "batch-response");
    let es = entries(&resp);
    assert_eq!(es.len(), 3, "{resp}");
    assert_eq!(es[0]["response"]["status"], "201 Created", "{resp}");
    assert_eq!(es[1]["response"]["status"], "400 Bad Request", "{resp}");
    assert_eq!(es[2]["response"]["status"], "404 Not Found", "{resp}");
    assert!(es[0]["response"].get("outcome").is_none());
    let oo1 = assert_outcome(&es[1]["response"]["outcome"]).clone();
    assert_eq!(
        error_expressions(&oo1),
        vec!["Bundle.entry[1].resource.gender".to_string()],
        "{oo1}"
    );
    assert_outcome(&es[2]["response"]["outcome"]);
    let (t, id, v) = located(&s, &es[0]);
    assert_eq!((t.as_str(), v.as_str()), ("Patient", "1"));
    assert_eq!(
        get_json(&s, &c, &format!("Patient/{id}"))["name"][0]["family"],
        "Good"
    );
    assert_eq!(system_history_len(&s, &c), 1);
}

// ---------------------------------------------------------------------------------------------
// bundle-level errors and limits
// ---------------------------------------------------------------------------------------------

#[test]
fn collection_bundle_is_400() {
    let s = Server::start();
    let c = client();
    let b = bundle(
        "collection",
        vec![json!({"fullUrl": urn(), "resource": patient("Coll")})],
    );
    expect_error(post_bundle(&s, &c, &b), StatusCode::BAD_REQUEST);
    assert_eq!(system_history_len(&s, &c), 0);
    // not a Bundle at all
    expect_error(
        post_bundle(&s, &c, &patient("NotABundle")),
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(system_history_len(&s, &c), 0);
}

#[test]
fn too_many_entries_is_413() {
    let s = Server::start_with(&["--max-bundle-entries", "5"]);
    let c = client();
    let six: Vec<Value> = (0..6)
        .map(|i| post_entry(&urn(), patient(&format!("P{i}"))))
        .collect();
    expect_error(
        post_bundle(&s, &c, &bundle("transaction", six.clone())),
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    expect_error(
        post_bundle(&s, &c, &bundle("batch", six.clone())),
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    assert_eq!(system_history_len(&s, &c), 0);
    // five is allowed
    let five: Vec<Value> = six.into_iter().take(5).collect();
    let resp = run_ok(&s, &c, &bundle("transaction", five), "transaction-response");
    assert_eq!(entries(&resp).len(), 5);
    assert_eq!(system_history_len(&s, &c), 5);
}

// ---------------------------------------------------------------------------------------------
// PATCH in a transaction
// ---------------------------------------------------------------------------------------------

fn binary_patch(ops: &Value) -> Value {
    json!({
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64::engine::general_purpose::STANDARD.encode(ops.to_string())
    })
}

#[test]
fn patch_in_transaction_via_binary() {
    let s = Server::start();
    let c = client();
    let pid = create(&s, &c, &patient("Patchy"));
    let b = bundle(
        "transaction",
        vec![json!({
            "resource": binary_patch(&json!([{"op": "replace", "path": "/gender", "value": "male"}])),
            "request": {"method": "PATCH", "url": format!("Patient/{pid}")}
        })],
    );
    let resp = run_ok(&s, &c, &b, "transaction-response");
    let es = entries(&resp);
    assert_eq!(es[0]["response"]["status"], "200 OK", "{resp}");
    assert_eq!(es[0]["response"]["etag"], "W/\"2\"");
    let cur = get_json(&s, &c, &format!("Patient/{pid}"));
    assert_eq!(cur["gender"], "male");
    assert_eq!(cur["meta"]["versionId"], "2");
    assert_eq!(cur["name"][0]["family"], "Patchy");
}

#[test]
fn invalid_patch_in_transaction_rolls_back() {
    let s = Server::start();
    let c = client();
    let pid = create(&s, &c, &patient("Patchy"));
    let b = bundle(
        "transaction",
        vec![
            post_entry(&urn(), patient("Sibling")),
            json!({
                "resource": binary_patch(&json!([{"op": "replace", "path": "/gender", "value": "nope"}])),
                "request": {"method": "PATCH", "url": format!("Patient/{pid}")}
            }),
        ],
    );
    let oo = expect_error(post_bundle(&s, &c, &b), StatusCode::BAD_REQUEST);
    let x: BTreeSet<String> = error_expressions(&oo).into_iter().collect();
    assert!(x.iter().all(|e| e.starts_with("Bundle.entry[1]")), "{oo}");
    assert_eq!(system_history_len(&s, &c), 1);
    assert_eq!(
        get_json(&s, &c, &format!("Patient/{pid}"))["gender"],
        "female"
    );
}

#[test]
fn urn_oid_full_urls_are_rewritten() {
    let s = Server::start();
    let c = client();
    let pid = "urn:oid:2.16.840.1.113883.19.5.1";
    let b = bundle(
        "transaction",
        vec![
            post_entry(pid, patient("Oid")),
            post_entry("urn:oid:2.16.840.1.113883.19.5.2", heart_rate(pid)),
        ],
    );
    let resp = run_ok(&s, &c, &b, "transaction-response");
    let (_, patient_id, _) = located(&s, &entries(&resp)[0]);
    let (_, obs_id, _) = located(&s, &entries(&resp)[1]);
    let obs = get_json(&s, &c, &format!("Observation/{obs_id}"));
    assert_eq!(obs["subject"]["reference"], format!("Patient/{patient_id}"));
}

#[test]
fn urn_reference_to_a_disallowed_type_is_400() {
    let s = Server::start();
    let c = client();
    let enc = urn();
    let mut obs = heart_rate(&urn());
    obs["performer"] = json!([{"reference": enc}]);
    let pid = obs["subject"]["reference"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let b = bundle(
        "transaction",
        vec![
            post_entry(&pid, patient("Target")),
            post_entry(
                &enc,
                json!({"resourceType": "Encounter", "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}),
            ),
            post_entry(&urn(), obs),
        ],
    );
    let oo = expect_error(post_bundle(&s, &c, &b), StatusCode::BAD_REQUEST);
    assert_eq!(
        error_expressions(&oo),
        vec!["Bundle.entry[2].resource.performer[0].reference".to_string()]
    );
    assert_eq!(system_history_len(&s, &c), 0);
}

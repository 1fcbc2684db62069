//! SMART backend services through HTTP: the discovery document and the token endpoint, with the
//! OAuth errors of each refusal.

mod common;

use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn assertion(aud: &str, jti: &str) -> String {
    let key =
        EncodingKey::from_ec_pem(&std::fs::read("tests/data/auth/es384-private.pem").expect("key"))
            .expect("pem");
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some("es-1".into());
    h.typ = Some("JWT".into());
    let now = jsonwebtoken::get_current_timestamp();
    encode(
        &h,
        &json!({"iss": "payer-app", "sub": "payer-app", "aud": aud, "exp": now + 240, "jti": jti}),
        &key,
    )
    .expect("sign")
}

fn token(c: &reqwest::blocking::Client, url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let r = c.post(url).form(form).send().expect("token");
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

#[test]
fn discovery_and_token_endpoint_follow_smart_backend_services() {
    let s = Server::start_with(&["--auth-clients", "tests/data/auth/clients.json"]);
    let c = client();
    let r = c
        .get(s.url("/.well-known/smart-configuration"))
        .send()
        .expect("config");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    let cfg: Value = r.json().expect("json");
    let token_url = cfg["token_endpoint"]
        .as_str()
        .expect("token endpoint")
        .to_string();
    assert!(
        token_url.starts_with("http://") && token_url.ends_with("/auth/token"),
        "{token_url}"
    );
    assert_eq!(
        cfg["token_endpoint_auth_signing_alg_values_supported"],
        json!(["RS384", "ES384"])
    );
    assert!(cfg["capabilities"]
        .as_array()
        .expect("caps")
        .contains(&json!("client-confidential-asymmetric")));

    let jwt = assertion(&token_url, "first");
    let base_form = |a: &str, scope: &str| -> Vec<(String, String)> {
        vec![
            ("grant_type".into(), "client_credentials".into()),
            (
                "client_assertion_type".into(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ),
            ("client_assertion".into(), a.into()),
            ("scope".into(), scope.into()),
        ]
    };
    let as_refs = |f: &Vec<(String, String)>| {
        f.iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<Vec<_>>()
    };
    let send = |f: Vec<(String, String)>| {
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        token(&c, &token_url, &pairs)
    };
    let (st, body) = send(as_refs(&base_form(
        &jwt,
        "system/MeasureReport.rs system/Observation.rs",
    )));
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["token_type"], "bearer");
    assert_eq!(
        body["scope"], "system/MeasureReport.rs",
        "only the registered scope is granted"
    );
    assert!(body["expires_in"]
        .as_i64()
        .is_some_and(|e| e > 0 && e <= 300));
    assert!(body["access_token"]
        .as_str()
        .is_some_and(|t| t.split('.').count() == 3));
    assert!(body.get("refresh_token").is_none());

    // the same assertion again: replayed jti
    let (st, body) = send(as_refs(&base_form(&jwt, "system/MeasureReport.rs")));
    assert_eq!(
        (st, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    // an assertion for another audience
    let (st, body) = send(as_refs(&base_form(
        &assertion("https://elsewhere.example/token", "aud"),
        "system/MeasureReport.rs",
    )));
    assert_eq!(
        (st, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    // a scope the client may not have
    let (st, body) = send(as_refs(&base_form(
        &assertion(&token_url, "scope"),
        "system/Observation.cruds",
    )));
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_scope")),
        "{body}"
    );
    // wrong grant type, missing assertion type
    let mut f = base_form(&assertion(&token_url, "grant"), "system/MeasureReport.rs");
    f[0].1 = "authorization_code".into();
    let (st, body) = send(f);
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("unsupported_grant_type")),
        "{body}"
    );
    let mut f = base_form(&assertion(&token_url, "type"), "system/MeasureReport.rs");
    f.remove(1);
    let (st, body) = send(f);
    assert_eq!(
        (st, body["error"].as_str()),
        (400, Some("invalid_request")),
        "{body}"
    );
    // alg none
    let b64 = |v: Value| {
        base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            v.to_string(),
        )
    };
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(
            json!({"iss": "payer-app", "sub": "payer-app", "aud": token_url, "exp": jsonwebtoken::get_current_timestamp() + 60, "jti": "none"})
        )
    );
    let (st, body) = send(as_refs(&base_form(&none, "system/MeasureReport.rs")));
    assert_eq!(
        (st, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
}

// ---------------------------------------------------------------------------------------------
// Access control by scope and party, Provenance, and the audit trail, through HTTP.
// ---------------------------------------------------------------------------------------------

use reqwest::StatusCode;

const JANUVIA: &str = "januvia-aetna-1.0.0";
const ENTRESTO: &str = "entresto-harvard-pilgrim-1.1.0";

/// A server with auth on, the Januvia (Aetna/Merck) and Entresto (Harvard Pilgrim/Novartis)
/// contracts, and a private copy of the client registry.
fn auth_server() -> (Server, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let contracts = tmp.path().join("contracts");
    std::fs::create_dir_all(&contracts).expect("dir");
    for f in ["januvia-aetna.toml", "entresto-harvard-pilgrim.toml"] {
        std::fs::copy(format!("contracts/{f}"), contracts.join(f)).expect("copy contract");
    }
    let clients = tmp.path().join("clients.json");
    std::fs::copy("tests/data/auth/clients.json", &clients).expect("copy clients");
    let s = Server::start_with(&[
        "--auth-clients",
        clients.to_str().expect("path"),
        "--contracts-dir",
        contracts.to_str().expect("path"),
        "--report-schedule-secs",
        "0",
    ]);
    (s, tmp)
}

/// A fresh client assertion of `client_id` for the audience `aud`, signed with the ES384 test
/// key under the key id `kid`.
fn signed_assertion(client_id: &str, kid: &str, aud: &str) -> String {
    let key =
        EncodingKey::from_ec_pem(&std::fs::read("tests/data/auth/es384-private.pem").expect("key"))
            .expect("pem");
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some(kid.into());
    h.typ = Some("JWT".into());
    let now = jsonwebtoken::get_current_timestamp();
    encode(
        &h,
        &json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now + 240,
                "jti": uuid::Uuid::new_v4().to_string()}),
        &key,
    )
    .expect("sign")
}

/// Ask the token endpoint of `s` for `scope` with an assertion: (status, JSON body).
fn ask_token(s: &Server, jwt: &str, scope: &str) -> (u16, Value) {
    token(
        &client(),
        &s.url("/auth/token"),
        &[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", vbc_server::http::smart::JWT_BEARER),
            ("client_assertion", jwt),
            ("scope", scope),
        ],
    )
}

/// A bearer token for a registered client (key es-1).
fn bearer(s: &Server, client_id: &str, scope: &str) -> String {
    let jwt = signed_assertion(client_id, "es-1", &s.url("/auth/token"));
    let (st, body) = ask_token(s, &jwt, scope);
    assert_eq!(st, 200, "token for {client_id}: {body}");
    body["access_token"].as_str().expect("token").to_string()
}

fn as_get(s: &Server, t: &str, path: &str) -> reqwest::blocking::Response {
    client()
        .get(s.url(path))
        .bearer_auth(t)
        .send()
        .expect("GET")
}

fn send_as(
    method: reqwest::Method,
    s: &Server,
    t: &str,
    path: &str,
    body: &Value,
) -> reqwest::blocking::Response {
    client()
        .request(method, s.url(path))
        .bearer_auth(t)
        .header("Content-Type", "application/fhir+json")
        .json(body)
        .send()
        .expect("request")
}

fn as_post(s: &Server, t: &str, path: &str, body: &Value) -> reqwest::blocking::Response {
    send_as(reqwest::Method::POST, s, t, path, body)
}

fn as_put(s: &Server, t: &str, path: &str, body: &Value) -> reqwest::blocking::Response {
    send_as(reqwest::Method::PUT, s, t, path, body)
}

fn ids_of(bundle: &Value, rtype: &str) -> Vec<String> {
    entries(bundle)
        .iter()
        .filter(|e| e["resource"]["resourceType"] == rtype)
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_string))
        .collect()
}

fn member_bundle(pid: &str, payer: &str) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "id": format!("b-{pid}"), "entry": [
        {"fullUrl": format!("urn:uuid:{pid}-p"), "resource": {"resourceType": "Patient", "id": pid, "gender": "male", "birthDate": "1961-02-03"},
         "request": {"method": "PUT", "url": format!("Patient/{pid}")}},
        {"resource": {"resourceType": "Coverage", "status": "active",
                      "beneficiary": {"reference": format!("Patient/{pid}")},
                      "payor": [{"reference": payer}]},
         "request": {"method": "POST", "url": "Coverage"}},
        {"resource": {"resourceType": "Observation", "status": "final",
                      "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                      "subject": {"reference": format!("Patient/{pid}")},
                      "effectiveDateTime": "2024-03-01",
                      "valueQuantity": {"value": 7.2, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]})
}

/// Post a member's transaction Bundle (Patient, Coverage by `payer`, an Observation): 200.
fn submit_member(s: &Server, t: &str, pid: &str, payer: &str) {
    let r = as_post(s, t, "/", &member_bundle(pid, payer));
    assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
}

#[test]
fn every_party_sees_only_what_it_may() {
    let (s, _tmp) = auth_server();
    let c = client();

    // open endpoints, and everything else needs a token
    assert_eq!(get(&s, &c, "/health").status(), 200);
    let cs = get_json(&s, &c, "/metadata");
    let sec = &cs["rest"][0]["security"];
    assert_eq!(
        sec["service"][0]["coding"][0]["code"], "SMART-on-FHIR",
        "{sec}"
    );
    assert_eq!(
        sec["extension"][0]["extension"][0]["valueUri"],
        json!(s.url("/auth/token"))
    );
    let r = get(&s, &c, "/Patient");
    assert!(r
        .headers()
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("Bearer")));
    expect_error(r, StatusCode::UNAUTHORIZED);
    expect_error(
        as_get(&s, "not.a.token", "/Patient"),
        StatusCode::UNAUTHORIZED,
    );
    // a token of another issuer (signed with the client's own key, claiming to be ours)
    let forged = {
        let key = EncodingKey::from_ec_pem(
            &std::fs::read("tests/data/auth/es384-private.pem").expect("key"),
        )
        .expect("pem");
        let mut h = Header::new(Algorithm::ES384);
        h.kid = Some("es-1".into());
        let now = jsonwebtoken::get_current_timestamp();
        encode(
            &h,
            &json!({"iss": "https://idp.elsewhere.example", "sub": "admin-app", "aud": s.url(""),
                    "exp": now + 200, "iat": now, "jti": "x", "scope": "system/*.*",
                    "party": "Organization/org-vbc-operator", "role": "admin"}),
            &key,
        )
        .expect("sign")
    };
    expect_error(as_get(&s, &forged, "/Patient"), StatusCode::UNAUTHORIZED);

    // two submitters write: the lab's members of Aetna and of Harvard Pilgrim
    let lab = bearer(
        &s,
        "lab-app",
        "system/Observation.cruds system/Patient.cruds system/Coverage.cruds",
    );
    let ehr = bearer(&s, "ehr-app", "system/*.cruds");
    for (pid, payer) in [
        ("p-aetna", "Organization/org-aetna"),
        ("p-hp", "Organization/org-harvard-pilgrim-health-care"),
    ] {
        submit_member(&s, &lab, pid, payer);
    }
    submit_member(&s, &ehr, "p-ehr", "Organization/org-aetna");

    // a submitter reads what it wrote, and nothing of another submitter
    let mine = body_json(as_get(&s, &lab, "/Patient?_count=50"));
    let mut got = ids_of(&mine, "Patient");
    got.sort();
    assert_eq!(got, ["p-aetna", "p-hp"]);
    expect_error(as_get(&s, &ehr, "/Patient/p-aetna"), StatusCode::NOT_FOUND);
    let theirs = body_json(as_get(&s, &ehr, "/Observation?_summary=count"));
    assert_eq!(theirs["total"], 1, "{theirs}");
    // another submitter cannot overwrite it either (and learns nothing)
    let before = body_json(as_get(&s, &lab, "/Patient/p-aetna"));
    let mut changed = before.clone();
    changed["gender"] = json!("female");
    expect_error(
        as_put(&s, &ehr, "/Patient/p-aetna", &changed),
        StatusCode::NOT_FOUND,
    );
    assert_eq!(
        body_json(as_get(&s, &lab, "/Patient/p-aetna"))["meta"]["versionId"],
        before["meta"]["versionId"]
    );

    // searches that would look into others' data through chains or _has are refused
    expect_error(
        as_get(&s, &ehr, "/Patient?_has:Observation:subject:code=4548-4"),
        StatusCode::FORBIDDEN,
    );
    expect_error(
        as_get(&s, &ehr, "/Observation?subject.gender=male"),
        StatusCode::FORBIDDEN,
    );
    // a conditional reference resolves among the caller's own resources only
    let smuggle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"reference": "Patient?_id=p-aetna"}, "effectiveDateTime": "2024-05-01",
            "valueQuantity": {"value": 6.9, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}},
         "request": {"method": "POST", "url": "Observation"}}]});
    expect_error(
        as_post(&s, &ehr, "/", &smuggle),
        StatusCode::PRECONDITION_FAILED,
    );
    // written content must lie within a restricted scope
    let lab_only = bearer(
        &s,
        "lab-app",
        "system/Observation.cruds?category=laboratory",
    );
    let with_category = |cat: &str| {
        json!({"resourceType": "Observation", "status": "final",
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": cat}]}],
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"reference": "Patient/p-aetna"}, "effectiveDateTime": "2024-05-02",
            "valueQuantity": {"value": 6.8, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}})
    };
    expect_error(
        as_post(&s, &lab_only, "/Observation", &with_category("vital-signs")),
        StatusCode::FORBIDDEN,
    );
    assert_eq!(
        as_post(&s, &lab_only, "/Observation", &with_category("laboratory")).status(),
        201
    );
    let labs = body_json(as_get(&s, &lab_only, "/Observation?_summary=count"));
    assert_eq!(
        labs["total"], 1,
        "only the laboratory Observation is in scope: {labs}"
    );

    // Provenance of the lab's Bundle: who, when, which request
    let admin = bearer(&s, "admin-app", "system/*.*");
    let prov = body_json(as_get(
        &s,
        &admin,
        "/Provenance?agent=Organization/org-acme-lab",
    ));
    let provs: Vec<Value> = entries(&prov)
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect();
    assert_eq!(provs.len(), 2, "{prov}");
    let p0 = provs
        .iter()
        .find(|p| p["entity"][0]["what"]["display"] == "transaction Bundle b-p-aetna")
        .expect("provenance of b-p-aetna");
    assert_eq!(p0["target"].as_array().map(Vec::len), Some(3), "{p0}");
    assert!(p0["target"][0]["reference"]
        .as_str()
        .is_some_and(|r| r.contains("/_history/")));
    assert_eq!(p0["agent"][1]["who"]["identifier"]["value"], "lab-app");
    assert!(p0["entity"][0]["what"]["identifier"]["value"]
        .as_str()
        .is_some_and(|v| !v.is_empty()));

    // a payer reads its own members only; another payer's member is "not known"
    let aetna = bearer(&s, "payer-wide", "system/*.rs");
    let hp = bearer(&s, "payer-other", "system/*.rs");
    assert_eq!(as_get(&s, &aetna, "/Patient/p-aetna").status(), 200);
    expect_error(as_get(&s, &aetna, "/Patient/p-hp"), StatusCode::NOT_FOUND);
    expect_error(as_get(&s, &hp, "/Patient/p-aetna"), StatusCode::NOT_FOUND);
    expect_error(
        as_get(&s, &hp, "/Patient/p-aetna/$everything"),
        StatusCode::NOT_FOUND,
    );
    assert_eq!(
        as_get(&s, &aetna, "/Patient/p-aetna/$everything").status(),
        200
    );
    // a cancelled Coverage makes no member
    submit_member(&s, &ehr, "p-lapsed", "Organization/org-aetna");
    let cov = body_json(as_get(&s, &ehr, "/Coverage?beneficiary=Patient/p-lapsed"));
    let mut cov = entries(&cov)[0]["resource"].clone();
    cov["status"] = json!("cancelled");
    let id = cov["id"].as_str().expect("id").to_string();
    assert_eq!(
        as_put(&s, &ehr, &format!("/Coverage/{id}"), &cov).status(),
        200
    );
    expect_error(
        as_get(&s, &aetna, "/Patient/p-lapsed"),
        StatusCode::NOT_FOUND,
    );
    let obs = body_json(as_get(
        &s,
        &aetna,
        "/Observation?code=http://loinc.org|4548-4",
    ));
    let subjects: Vec<String> = entries(&obs)
        .iter()
        .filter_map(|e| {
            e["resource"]["subject"]["reference"]
                .as_str()
                .map(String::from)
        })
        .collect();
    // p-aetna's two (EHR and lab) and p-ehr's; not p-hp's (another payer) nor p-lapsed's
    assert_eq!(subjects.len(), 3, "{obs}");
    assert!(subjects
        .iter()
        .all(|s| s != "Patient/p-hp" && s != "Patient/p-lapsed"));
    // ... and cannot write
    expect_error(
        as_post(
            &s,
            &aetna,
            "/Observation",
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        ),
        StatusCode::FORBIDDEN,
    );
    // the contract definitions of its own contracts only
    assert_eq!(
        as_get(&s, &aetna, &format!("/Measure/{JANUVIA}")).status(),
        200
    );
    expect_error(
        as_get(&s, &aetna, &format!("/Measure/{ENTRESTO}")),
        StatusCode::NOT_FOUND,
    );
    let measures = body_json(as_get(&s, &aetna, "/Measure?_count=100"));
    assert!(ids_of(&measures, "Measure")
        .iter()
        .all(|m| m.starts_with(JANUVIA)));
    expect_error(
        as_get(&s, &hp, &format!("/Measure/{JANUVIA}/$outcomes")),
        StatusCode::NOT_FOUND,
    );

    // a narrower token: scopes are enforced per type, _include and _revinclude included
    let narrow = bearer(&s, "payer-app", "system/Patient.rs system/MeasureReport.rs");
    expect_error(as_get(&s, &narrow, "/Observation"), StatusCode::FORBIDDEN);
    expect_error(
        as_get(
            &s,
            &narrow,
            "/Patient?_id=p-aetna&_revinclude=Observation:subject",
        ),
        StatusCode::FORBIDDEN,
    );
    // an _include whose targets the scopes do not cover adds nothing
    let inc = body_json(as_get(
        &s,
        &aetna,
        "/Observation?subject=Patient/p-aetna&_include=Observation:subject",
    ));
    assert_eq!(ids_of(&inc, "Patient"), ["p-aetna"]);
    let obs_only = bearer(&s, "payer-wide", "system/Observation.rs");
    let inc = body_json(as_get(
        &s,
        &obs_only,
        "/Observation?subject=Patient/p-aetna&_include=Observation:subject",
    ));
    assert!(ids_of(&inc, "Patient").is_empty(), "{inc}");
    assert_eq!(ids_of(&inc, "Observation").len(), 2);

    // a manufacturer: its contracts' definitions and population reports, never a Patient
    let merck = bearer(&s, "pharma-app", "system/*.rs");
    expect_error(
        as_get(&s, &merck, "/Patient/p-aetna"),
        StatusCode::FORBIDDEN,
    );
    expect_error(as_get(&s, &merck, "/Patient"), StatusCode::FORBIDDEN);
    expect_error(as_get(&s, &merck, "/Observation"), StatusCode::FORBIDDEN);
    assert_eq!(
        as_get(&s, &merck, &format!("/Measure/{JANUVIA}")).status(),
        200
    );
    expect_error(
        as_get(&s, &merck, &format!("/Measure/{ENTRESTO}")),
        StatusCode::NOT_FOUND,
    );
    let pop = as_get(
        &s,
        &merck,
        &format!(
            "/Measure/{JANUVIA}/$evaluate-measure?periodStart=2024-01-01&periodEnd=2024-12-31"
        ),
    );
    assert_eq!(pop.status(), 200);
    for forbidden in [
        format!("/Measure/{JANUVIA}/$evaluate-measure?periodStart=2024-01-01&periodEnd=2024-12-31&reportType=subject&subject=Patient/p-aetna"),
        format!("/Measure/{JANUVIA}/$evaluate-measure?periodStart=2024-01-01&periodEnd=2024-12-31&reportType=subject-list"),
        format!("/Measure/{JANUVIA}/$outcomes"),
        format!("/Measure/{JANUVIA}/$care-gaps?periodStart=2024-01-01&periodEnd=2024-12-31&subject=Patient/p-aetna&status=open-gap"),
        format!("/Measure/{JANUVIA}/$collect-data?periodStart=2024-01-01&periodEnd=2024-12-31"),
    ] {
        expect_error(as_get(&s, &merck, &forbidden), StatusCode::FORBIDDEN);
    }
    // an individual report of its contract is not the manufacturer's to see
    let individual = json!({"resourceType": "MeasureReport", "id": "ind-1", "status": "complete",
        "type": "individual", "measure": format!("https://vbc-server.dev/fhir/Measure/{JANUVIA}"),
        "subject": {"reference": "Patient/p-aetna"},
        "period": {"start": "2024-01-01", "end": "2024-12-31"}});
    let r = as_put(&s, &admin, "/MeasureReport/ind-1", &individual);
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
    expect_error(
        as_get(&s, &merck, "/MeasureReport/ind-1"),
        StatusCode::NOT_FOUND,
    );
    let reports = body_json(as_get(&s, &merck, "/MeasureReport"));
    assert!(ids_of(&reports, "MeasureReport").is_empty(), "{reports}");
    assert_eq!(as_get(&s, &aetna, "/MeasureReport/ind-1").status(), 200);
    expect_error(
        as_get(&s, &hp, "/MeasureReport/ind-1"),
        StatusCode::NOT_FOUND,
    );
    // published reports: the manufacturer sees the summary ones of its contract
    let r = client()
        .post(s.url(&format!(
            "/Measure/{JANUVIA}/$publish-reports?periodStart=2024-01-01&periodEnd=2024-12-31"
        )))
        .bearer_auth(&aetna)
        .send()
        .expect("publish");
    // a payer may publish its contract's reports, but this token is read-only
    assert_eq!(r.status(), 403);
    let r = client()
        .post(s.url(&format!(
            "/Measure/{JANUVIA}/$publish-reports?periodStart=2024-01-01&periodEnd=2024-12-31"
        )))
        .bearer_auth(&admin)
        .send()
        .expect("publish");
    assert!(r.status().is_success(), "{}", r.text().unwrap_or_default());
    let seen = body_json(as_get(&s, &merck, "/MeasureReport?_count=100"));
    let kinds: Vec<String> = entries(&seen)
        .iter()
        .filter_map(|e| e["resource"]["type"].as_str().map(String::from))
        .collect();
    assert!(!kinds.is_empty(), "{seen}");
    assert!(kinds.iter().all(|k| k == "summary"), "{kinds:?}");
    let all = body_json(as_get(&s, &aetna, "/MeasureReport?_count=100"));
    assert!(
        entries(&all).len() > kinds.len(),
        "the payer also sees the subject-list and individual reports"
    );

    // only an administrator loads contracts and reads the audit trail with the auditor
    let r = client()
        .post(s.url("/$load-contract"))
        .bearer_auth(&aetna)
        .header("Content-Type", "application/toml")
        .body(std::fs::read_to_string("contracts/januvia-aetna.toml").expect("toml"))
        .send()
        .expect("load");
    assert_eq!(r.status(), 403);
    expect_error(as_get(&s, &aetna, "/AuditEvent"), StatusCode::FORBIDDEN);
    expect_error(
        as_post(
            &s,
            &admin,
            "/AuditEvent",
            &json!({"resourceType": "AuditEvent"}),
        ),
        StatusCode::FORBIDDEN,
    );
}

#[test]
fn scope_escalation_inside_a_transaction_writes_nothing() {
    let (s, _tmp) = auth_server();
    let lab = bearer(
        &s,
        "lab-app",
        "system/Observation.cruds system/Patient.cruds",
    );
    let count = |t: &str| body_json(as_get(&s, t, "/Observation?_summary=count"))["total"].clone();
    assert_eq!(count(&lab), 0);
    let obs = json!({"resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"reference": "Patient/p-x"}, "effectiveDateTime": "2024-03-01",
        "valueQuantity": {"value": 7.0, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}});
    // a Measure (contract content) smuggled into a submitter's transaction
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs, "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Measure", "status": "active"}, "request": {"method": "POST", "url": "Measure"}}
    ]});
    let oo = expect_error(as_post(&s, &lab, "/", &b), StatusCode::FORBIDDEN);
    assert!(oo.to_string().contains("Bundle.entry[1]"), "{oo}");
    // a type the token's scopes do not cover (granted read-only)
    let reader = bearer(&s, "lab-app", "system/Observation.rs");
    let b = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": obs, "request": {"method": "POST", "url": "Observation"}}
    ]});
    expect_error(as_post(&s, &reader, "/", &b), StatusCode::FORBIDDEN);
    // a type outside the registration in a batch: that entry alone is refused
    let b = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": obs, "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}, "request": {"method": "POST", "url": "Encounter"}}
    ]});
    let r = body_json(as_post(&s, &lab, "/", &b));
    assert!(
        r["entry"][0]["response"]["status"]
            .as_str()
            .is_some_and(|x| x.starts_with("201")),
        "{r}"
    );
    assert!(
        r["entry"][1]["response"]["status"]
            .as_str()
            .is_some_and(|x| x.starts_with("403")),
        "{r}"
    );
    // a summary MeasureReport posing as submitted data
    let fake = json!({"resourceType": "MeasureReport", "status": "complete", "type": "summary",
        "measure": format!("https://vbc-server.dev/fhir/Measure/{JANUVIA}"),
        "period": {"start": "2024-01-01", "end": "2024-12-31"}});
    let ehr = bearer(&s, "ehr-app", "system/*.cruds");
    expect_error(
        as_post(&s, &ehr, "/MeasureReport", &fake),
        StatusCode::FORBIDDEN,
    );
    // nothing but the batch's one Observation was written
    assert_eq!(count(&lab), 1);
    let admin = bearer(&s, "admin-app", "system/*.*");
    let tagged = "/Measure?_summary=count&_tag=https://vbc-server.dev/fhir/CodeSystem/contract-content|immutable";
    assert_eq!(
        body_json(as_get(&s, &admin, "/Measure?_summary=count"))["total"],
        body_json(as_get(&s, &admin, tagged))["total"],
        "no Measure beyond the contracts'"
    );
}

#[test]
fn clients_are_registered_by_administrators_only() {
    let (s, tmp) = auth_server();
    let admin = bearer(&s, "admin-app", "system/*.*");
    let aetna = bearer(&s, "payer-wide", "system/*.rs");
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/auth/jwks.json").expect("jwks"))
            .expect("json");
    let new_client = json!({"party": "Organization/org-new-lab", "role": "submitter",
        "scope": "system/Observation.cruds", "jwks": jwks});
    let put = |t: &str, body: &Value| {
        client()
            .put(s.url("/auth/clients/new-lab"))
            .bearer_auth(t)
            .json(body)
            .send()
            .expect("put")
    };
    assert_eq!(put(&aetna, &new_client).status(), 403);
    let r = put(
        &admin,
        &json!({"party": "nobody", "role": "submitter", "scope": "bogus"}),
    );
    assert_eq!(r.status(), 400);
    let r = put(&admin, &new_client);
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    // the new client gets a token at once, and the registry file keeps it
    let t = bearer(&s, "new-lab", "system/Observation.cruds");
    assert_eq!(as_get(&s, &t, "/Observation").status(), 200);
    let file = std::fs::read_to_string(tmp.path().join("clients.json")).expect("file");
    assert!(file.contains("new-lab"));
    let list = body_json(as_get(&s, &admin, "/auth/clients"));
    assert!(list["clients"]
        .as_array()
        .expect("list")
        .iter()
        .any(|c| c["client_id"] == "new-lab"));
    // removed: its token stops working
    let r = client()
        .delete(s.url("/auth/clients/new-lab"))
        .bearer_auth(&admin)
        .send()
        .expect("delete");
    assert_eq!(r.status(), 204);
    expect_error(as_get(&s, &t, "/Observation"), StatusCode::UNAUTHORIZED);
}

#[test]
fn keys_from_jwks_uri_and_tokens_of_an_external_issuer_are_accepted() {
    // a tiny key server: the client's JWKS and the external issuer's (the same test keys)
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let jwks_url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h2 = hits.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let body = std::fs::read_to_string("tests/data/auth/jwks.json").expect("jwks");
        for stream in listener.incoming() {
            let Ok(mut st) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = st.read(&mut buf);
            h2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _ = write!(
                st,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: max-age=600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let tmp = tempfile::tempdir().expect("tmp");
    let clients = tmp.path().join("clients.json");
    std::fs::write(
        &clients,
        json!({"clients": [
            {"client_id": "remote-keys", "party": "Organization/org-aetna", "role": "payer",
             "scope": "system/Patient.rs", "jwks_uri": jwks_url},
            {"client_id": "idp-client", "party": "Organization/org-aetna", "role": "payer",
             "scope": "system/Patient.rs"  , "jwks_uri": jwks_url}
        ]})
        .to_string(),
    )
    .expect("write");
    let s = Server::start_with(&[
        "--auth-clients",
        clients.to_str().expect("path"),
        "--auth-issuer",
        "https://idp.example",
        "--auth-jwks-url",
        &jwks_url,
    ]);
    // two tokens through the client's jwks_uri: the keys are fetched once (max-age=600)
    let t = bearer(&s, "remote-keys", "system/Patient.rs");
    assert_eq!(as_get(&s, &t, "/Patient").status(), 200);
    let _ = bearer(&s, "remote-keys", "system/Patient.rs");
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    // an access token the external issuer signed (RS384, kid rs-1)
    let key = EncodingKey::from_rsa_pem(
        &std::fs::read("tests/data/auth/rs384-private.pem").expect("key"),
    )
    .expect("pem");
    let mut h = Header::new(Algorithm::RS384);
    h.kid = Some("rs-1".into());
    let now = jsonwebtoken::get_current_timestamp();
    let ext = |claims: Value| encode(&h, &claims, &key).expect("sign");
    let good = ext(
        json!({"iss": "https://idp.example", "sub": "idp-client", "aud": s.url(""),
        "exp": now + 120, "scope": "system/Patient.rs system/Observation.rs"}),
    );
    let aud = s.url("");
    let aud = aud.trim_end_matches('/');
    let good_aud = ext(
        json!({"iss": "https://idp.example", "sub": "idp-client", "aud": aud,
        "exp": now + 120, "scope": "system/Patient.rs system/Observation.rs"}),
    );
    let ok = [good, good_aud]
        .iter()
        .any(|t| as_get(&s, t, "/Patient").status() == 200);
    assert!(ok, "the external issuer's token is accepted");
    let t = ext(
        json!({"iss": "https://idp.example", "sub": "idp-client", "aud": aud,
        "exp": now + 120, "scope": "system/Patient.rs system/Observation.rs"}),
    );
    // its scopes are narrowed to the registration: no Observation
    expect_error(as_get(&s, &t, "/Observation"), StatusCode::FORBIDDEN);
    // expired, wrong audience, unregistered subject
    for bad in [
        json!({"iss": "https://idp.example", "sub": "idp-client", "aud": aud, "exp": now - 100, "scope": "system/Patient.rs"}),
        json!({"iss": "https://idp.example", "sub": "idp-client", "aud": "https://other.example", "exp": now + 100, "scope": "system/Patient.rs"}),
        json!({"iss": "https://idp.example", "sub": "stranger", "aud": aud, "exp": now + 100, "scope": "system/Patient.rs"}),
    ] {
        expect_error(as_get(&s, &ext(bad), "/Patient"), StatusCode::UNAUTHORIZED);
    }
}

#[test]
fn the_audit_chain_records_every_access_and_detects_a_modified_event() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let clients = tmp.path().join("clients.json");
    std::fs::copy("tests/data/auth/clients.json", &clients).expect("copy");
    let mut s = Server::start_on(&data, &["--auth-clients", clients.to_str().expect("path")]);
    let c = client();
    expect_error(get(&s, &c, "/Patient"), StatusCode::UNAUTHORIZED);
    let ehr = bearer(&s, "ehr-app", "system/*.cruds");
    submit_member(&s, &ehr, "p-audit", "Organization/org-aetna");
    assert_eq!(as_get(&s, &ehr, "/Patient/p-audit").status(), 200);
    let auditor = bearer(&s, "auditor-app", "system/AuditEvent.rs");
    let v = body_json(as_get(&s, &auditor, "/AuditEvent/$verify-chain"));
    let param = |name: &str| {
        v["parameter"]
            .as_array()
            .and_then(|p| p.iter().find(|x| x["name"] == name))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(param("intact")["valueBoolean"], true, "{v}");
    assert!(
        param("events")["valueInteger"]
            .as_u64()
            .is_some_and(|n| n >= 3),
        "{v}"
    );
    // who, what, when, outcome: the refused request and the read are both there
    let events = body_json(as_get(&s, &auditor, "/AuditEvent?_count=100"));
    let all: Vec<Value> = entries(&events)
        .into_iter()
        .map(|e| e["resource"].clone())
        .collect();
    assert!(
        all.iter()
            .any(|e| e["outcome"] == "4" && e["entity"][0]["description"] == "GET /Patient"),
        "{events}"
    );
    let read = all
        .iter()
        .find(|e| {
            e["entity"][0]["what"]["reference"] == "Patient/p-audit"
                && e["subtype"][0]["code"] == "read"
        })
        .expect("the read is audited");
    assert_eq!(read["agent"][0]["altId"], "ehr-app");
    assert_eq!(read["outcome"], "0");
    assert_eq!(read["action"], "R");
    assert!(all.iter().any(|e| e["subtype"][0]["code"] == "transaction"));
    // the audit trail refuses the submitter
    expect_error(as_get(&s, &ehr, "/AuditEvent"), StatusCode::FORBIDDEN);
    assert!(s.terminate(), "clean stop");

    let verify = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_vbc-server"))
            .args(["audit-verify", "--data-dir"])
            .arg(&data)
            .output()
            .expect("audit-verify")
    };
    let out = verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // modify one stored event in place (same length, still readable): the chain breaks after it
    {
        // through the trail's own key-value layer: entry 2 is `e` + its sequence number
        let db = vbc_server::store::kv_store::open_kv(&data.join("audit-log"), 8 << 20)
            .expect("open audit");
        let mut key = vec![b'e'];
        key.extend_from_slice(&2u64.to_be_bytes());
        let v = db.get(&key).expect("get").expect("event 2 is stored");
        // its method (GET or POST) becomes another word of the same length
        let pos = v
            .windows(3)
            .position(|w| w == b"GET" || w == b"POS")
            .expect("the method is in the entry");
        let mut t = v.clone();
        t[pos] = b'X';
        let mut batch = vbc_server::store::kv::Batch::default();
        batch.insert(key, t);
        db.apply(batch, true).expect("tamper");
    }
    let out = verify();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("BROKEN at event 3") && text.contains("ae-000000000002"),
        "{text}"
    );
}

#[test]
fn the_audit_trail_is_searched_by_who_what_when_and_outcome() {
    let (s, _tmp) = auth_server();
    let ehr = bearer(&s, "ehr-app", "system/*.cruds");
    submit_member(&s, &ehr, "p-trail", "Organization/org-aetna");
    assert_eq!(as_get(&s, &ehr, "/Patient/p-trail").status(), 200);
    assert_eq!(as_get(&s, &ehr, "/Patient/p-none").status(), 404);
    let auditor = bearer(&s, "auditor-app", "system/AuditEvent.rs");
    // the events above are written once the trail has taken them
    let _ = as_get(&s, &auditor, "/AuditEvent/$verify-chain");
    let search = |q: &str| body_json(as_get(&s, &auditor, &format!("/AuditEvent?{q}")));
    let resources = |b: &Value| -> Vec<Value> {
        entries(b)
            .into_iter()
            .map(|e| e["resource"].clone())
            .collect()
    };
    let all = search("_count=1000");
    let everything = resources(&all);
    assert_eq!(
        all["total"].as_u64(),
        Some(everything.len() as u64),
        "{all}"
    );
    // who: the client's party and its client id
    let by_client = resources(&search("altid=ehr-app&_count=1000"));
    assert!(!by_client.is_empty());
    assert!(by_client
        .iter()
        .all(|e| e["agent"][0]["altId"] == "ehr-app"));
    let by_party = resources(&search("agent=Organization/org-auditor-none&_count=1000"));
    assert!(by_party.is_empty());
    // what: the resource read, and a patient's events
    let read = resources(&search("entity=Patient/p-trail&subtype=read"));
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0]["action"], "R");
    assert_eq!(read[0]["outcome"], "0");
    let missing = resources(&search("patient=p-none"));
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0]["outcome"], "4");
    let failed = search("outcome=4&_summary=count");
    assert!(failed["total"].as_u64().is_some_and(|n| n >= 1), "{failed}");
    assert!(failed.get("entry").is_none(), "{failed}");
    // when: by the recorded instant, at both ends
    let first = &everything[0];
    let last = &everything[everything.len() - 1];
    let recorded = |e: &Value| e["recorded"].as_str().expect("recorded").to_string();
    let from_last = resources(&search(&format!(
        "date=ge{}&_count=1000",
        recorded(last).replace('+', "%2B")
    )));
    assert!(from_last.iter().any(|e| e["id"] == last["id"]));
    assert!(from_last.iter().all(|e| recorded(e) >= recorded(last)));
    let before_first = search(&format!("date=lt{}", recorded(first)));
    assert_eq!(before_first["total"], 0, "{before_first}");
    // (every search above is audited too: the trail only grows)
    let years = search("date=ge2000-01-01&date=lt2999-01-01&_summary=count");
    assert!(
        years["total"]
            .as_u64()
            .is_some_and(|n| n > everything.len() as u64),
        "{years}"
    );
    let future = search("date=ge2999-01-01&_summary=count");
    assert_eq!(future["total"], 0, "{future}");
    // newest first, paged by the next link, and every event read on its own
    let page = search("_sort=-date&_count=2");
    let page_events = resources(&page);
    assert_eq!(page_events.len(), 2);
    assert!(page_events[0]["id"].as_str() > page_events[1]["id"].as_str());
    let next = page["link"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["relation"] == "next"))
        .and_then(|x| x["url"].as_str())
        .expect("a next page")
        .to_string();
    let path = next.strip_prefix(&s.base).expect("absolute next link");
    let second = resources(&body_json(as_get(&s, &auditor, path)));
    assert!(second[0]["id"].as_str() < page_events[1]["id"].as_str());
    let id = first["id"].as_str().expect("id");
    let one = body_json(as_get(&s, &auditor, &format!("/AuditEvent/{id}")));
    assert_eq!(&one, first);
    let vread = body_json(as_get(
        &s,
        &auditor,
        &format!("/AuditEvent/{id}/_history/1"),
    ));
    assert_eq!(&vread, first);
    assert_eq!(
        as_get(&s, &auditor, "/AuditEvent/ae-999999999999").status(),
        StatusCode::NOT_FOUND
    );
    // an unknown parameter is an error when the client asks for strict handling
    let strict = client()
        .get(s.url("/AuditEvent?focus=x"))
        .bearer_auth(&auditor)
        .header("Prefer", "handling=strict")
        .send()
        .expect("GET");
    assert_eq!(strict.status(), StatusCode::BAD_REQUEST);
    let bad = as_get(&s, &auditor, "/AuditEvent?date=yesterday");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

// ---------------------------------------------------------------------------------------------
// Issue 14: token binding, key fetching limits, the assertion audience, contract ownership,
// OAuth errors of the token endpoint, payer counts.
// ---------------------------------------------------------------------------------------------

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn a_removed_clients_tokens_stay_dead_when_its_id_is_registered_again() {
    let (s, _tmp) = auth_server();
    let admin = bearer(&s, "admin-app", "system/*.*");
    let jwks: Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/auth/jwks.json").expect("jwks"))
            .expect("json");
    let reg = json!({"party": "Organization/org-new-lab", "role": "submitter",
        "scope": "system/Observation.cruds system/Patient.cruds", "jwks": jwks});
    let put = |body: &Value| {
        let r = client()
            .put(s.url("/auth/clients/new-lab"))
            .bearer_auth(&admin)
            .json(body)
            .send()
            .expect("put");
        r.status().as_u16()
    };
    let obs = |t: &str| as_get(&s, t, "/Observation").status().as_u16();
    assert_eq!(put(&reg), 201);
    let old = bearer(&s, "new-lab", "system/Observation.cruds");
    assert_eq!(obs(&old), 200);
    // a changed scope keeps the registration: its tokens work on, narrowed at once
    let mut narrower = reg.clone();
    narrower["scope"] = json!("system/Observation.cruds");
    assert_eq!(put(&narrower), 200);
    assert_eq!(obs(&old), 200);
    // removed, then registered again under the same id: a new registration
    let r = client()
        .delete(s.url("/auth/clients/new-lab"))
        .bearer_auth(&admin)
        .send()
        .expect("delete");
    assert_eq!(r.status(), 204);
    assert_eq!(obs(&old), 401);
    assert_eq!(put(&reg), 201);
    expect_error(as_get(&s, &old, "/Observation"), StatusCode::UNAUTHORIZED);
    let new = bearer(&s, "new-lab", "system/Observation.cruds");
    assert_eq!(obs(&new), 200);
    // another party (or role, or keys) under the same id is a new registration too
    let mut moved = reg.clone();
    moved["party"] = json!("Organization/org-other-lab");
    assert_eq!(put(&moved), 200);
    expect_error(as_get(&s, &new, "/Observation"), StatusCode::UNAUTHORIZED);
    let moved_token = bearer(&s, "new-lab", "system/Observation.cruds");
    assert_eq!(obs(&moved_token), 200);
}

/// A tiny JWKS host on a free port. Every request is counted and answered after `delay`: with
/// the test keys and `Cache-Control: no-store`, or (`fail`) with HTTP 500.
fn key_host(fail: bool, delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let keys = std::fs::read_to_string("tests/data/auth/jwks.json").expect("jwks");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut st) = stream else { continue };
            let (counted, keys) = (counted.clone(), keys.clone());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut buf = [0u8; 4096];
                let _ = st.read(&mut buf);
                counted.fetch_add(1, SeqCst);
                std::thread::sleep(delay);
                let (status, body) = if fail {
                    ("500 Internal Server Error", "{}".to_string())
                } else {
                    ("200 OK", keys)
                };
                let _ = write!(
                    st,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncache-control: no-store\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (url, hits)
}

#[test]
fn a_client_id_cannot_make_the_server_fetch_its_keys_at_will() {
    let (open_url, open_hits) = key_host(false, Duration::ZERO);
    let (slow_url, slow_hits) = key_host(false, Duration::from_millis(400));
    let (down_url, down_hits) = key_host(true, Duration::from_millis(100));
    let tmp = tempfile::tempdir().expect("tmp");
    let clients = tmp.path().join("clients.json");
    let remote = |id: &str, url: &str| {
        json!({"client_id": id, "party": "Organization/org-aetna", "role": "payer",
               "scope": "system/Patient.rs", "jwks_uri": url})
    };
    std::fs::write(
        &clients,
        json!({"clients": [remote("keys-no-store", &open_url), remote("keys-slow", &slow_url),
                           remote("keys-down", &down_url)]})
        .to_string(),
    )
    .expect("write");
    let s = Server::start_with(&["--auth-clients", clients.to_str().expect("path")]);
    let aud = s.url("/auth/token");
    let scope = "system/Patient.rs";
    // at most one fetch per key URL in any few seconds (the server waits 5 s or more)
    let bound = |since: Instant| 2 + since.elapsed().as_secs() as usize / 5;

    // no-store keys: 50 requests, every fourth naming a key the set lacks (the early refetch)
    let started = Instant::now();
    for i in 0..50 {
        let kid = if i % 4 == 3 { "rotated-away" } else { "es-1" };
        let (st, body) = ask_token(&s, &signed_assertion("keys-no-store", kid, &aud), scope);
        let want = if kid == "es-1" { 200 } else { 401 };
        assert_eq!(st, want, "request {i} ({kid}): {body}");
    }
    let n = open_hits.load(SeqCst);
    assert!(
        n <= bound(started),
        "{n} fetches of a no-store key set for 50 requests in {:?}",
        started.elapsed()
    );

    // 8 concurrent requests wait on one fetch
    std::thread::scope(|sc| {
        let running: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(|| ask_token(&s, &signed_assertion("keys-slow", "es-1", &aud), scope).0)
            })
            .collect();
        for r in running {
            assert_eq!(r.join().expect("thread"), 200);
        }
    });
    assert_eq!(
        slow_hits.load(SeqCst),
        1,
        "8 concurrent requests, one fetch"
    );

    // a failing key host: 8 concurrent requests and 42 more, the failure remembered briefly
    let started = Instant::now();
    let refused = |(st, body): (u16, Value)| {
        assert_eq!(
            (st, body["error"].as_str()),
            (401, Some("invalid_client")),
            "{body}"
        );
    };
    std::thread::scope(|sc| {
        let running: Vec<_> = (0..8)
            .map(|_| {
                sc.spawn(|| ask_token(&s, &signed_assertion("keys-down", "es-1", &aud), scope))
            })
            .collect();
        for r in running {
            refused(r.join().expect("thread"));
        }
    });
    for _ in 0..42 {
        refused(ask_token(
            &s,
            &signed_assertion("keys-down", "es-1", &aud),
            scope,
        ));
    }
    let n = down_hits.load(SeqCst);
    assert!(
        n <= bound(started),
        "{n} fetches of a failing key URL for 50 requests in {:?}",
        started.elapsed()
    );
}

#[test]
fn assertions_are_for_the_configured_address_whatever_the_host_header() {
    let (s, _tmp) = auth_server();
    let post = |aud: &str| {
        let r = client()
            .post(s.url("/auth/token"))
            .header("Host", "evil.example")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", vbc_server::http::smart::JWT_BEARER),
                (
                    "client_assertion",
                    &signed_assertion("payer-wide", "es-1", aud),
                ),
                ("scope", "system/Patient.rs"),
            ])
            .send()
            .expect("token");
        let st = r.status().as_u16();
        (st, r.json::<Value>().unwrap_or(Value::Null))
    };
    // an assertion made for another server, replayed here under that server's Host
    let (st, body) = post("http://evil.example/auth/token");
    assert_eq!(
        (st, body["error"].as_str()),
        (401, Some("invalid_client")),
        "{body}"
    );
    // the configured address (here the listen address) is the audience, whatever Host says
    let (st, body) = post(&s.url("/auth/token"));
    assert_eq!(st, 200, "{body}");
    let cfg: Value = client()
        .get(s.url("/.well-known/smart-configuration"))
        .header("Host", "evil.example")
        .send()
        .expect("config")
        .json()
        .expect("json");
    assert_eq!(cfg["token_endpoint"], json!(s.url("/auth/token")), "{cfg}");
}

#[test]
fn auth_on_a_non_loopback_address_needs_a_base_url() {
    let tmp = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let start = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_vbc-server"))
            .args([
                "serve",
                "--listen",
                &format!("0.0.0.0:{port}"),
                "--data-dir",
            ])
            .arg(tmp.path().join("data"))
            .args(["--contracts-dir", "", "--auth-clients"])
            .arg("tests/data/auth/clients.json")
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let mut child = start(&[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let status = status.expect("the server must refuse to start, but it kept running");
    assert!(!status.success());
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(err.contains("--base-url"), "{err}");
    // with --base-url it starts
    let mut child = start(&["--base-url", "https://vbc.example"]);
    let ready = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        client()
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .is_ok_and(|r| r.status().is_success())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "the server starts with --base-url");
}

#[test]
fn another_partys_contract_is_as_unknown_as_a_missing_one() {
    let (s, _tmp) = auth_server();
    let merck = bearer(&s, "pharma-app", "system/*.rs");
    let narrow = bearer(&s, "payer-app", "system/Patient.rs");
    let ehr = bearer(&s, "ehr-app", "system/*.cruds");
    let period = "periodStart=2024-01-01&periodEnd=2024-12-31";
    let diagnostics = |oo: &Value, id: &str| {
        oo["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .replace(id, "[id]")
    };
    for (who, t) in [
        ("a manufacturer", &merck),
        ("a payer with a narrow token", &narrow),
        ("a submitter", &ehr),
    ] {
        for (op, query) in [
            ("$outcomes", ""),
            ("$evaluate-measure", period),
            ("$collect-data", period),
            ("$data-requirements", period),
        ] {
            // Entresto is Harvard Pilgrim's and Novartis's: none of these callers' contracts
            let other = expect_error(
                as_get(&s, t, &format!("/Measure/{ENTRESTO}/{op}?{query}")),
                StatusCode::NOT_FOUND,
            );
            let unknown = expect_error(
                as_get(&s, t, &format!("/Measure/no-such-contract/{op}?{query}")),
                StatusCode::NOT_FOUND,
            );
            assert_eq!(
                diagnostics(&other, ENTRESTO),
                diagnostics(&unknown, "no-such-contract"),
                "{who}, {op}"
            );
        }
    }
    // their own contract: the role and scope rules answer
    expect_error(
        as_get(&s, &merck, &format!("/Measure/{JANUVIA}/$outcomes")),
        StatusCode::FORBIDDEN,
    );
    expect_error(
        as_get(
            &s,
            &narrow,
            &format!("/Measure/{JANUVIA}/$evaluate-measure?{period}"),
        ),
        StatusCode::FORBIDDEN,
    );
}

#[test]
fn every_token_endpoint_error_is_oauth_json() {
    let s = Server::start_with(&["--auth-clients", "tests/data/auth/clients.json"]);
    let oauth = |r: reqwest::blocking::Response, status: u16| {
        assert_eq!(r.status().as_u16(), status);
        let ct = content_type(&r);
        let text = r.text().expect("body");
        assert!(ct.starts_with("application/json"), "{ct}: {text}");
        let v: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(v["error"], "invalid_request", "{v}");
        assert!(v["error_description"].is_string(), "{v}");
    };
    // a body over the limit
    let big = "a".repeat(3 * 1024 * 1024);
    let r = client()
        .post(s.url("/auth/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=client_credentials&scope={big}"))
        .send()
        .expect("post");
    oauth(r, 413);
    // a method the endpoint does not take
    oauth(client().get(s.url("/auth/token")).send().expect("get"), 405);
}

#[test]
fn a_payers_count_is_its_members_matches() {
    // VBC_AUTH_COUNT_PATIENTS=3500 gives 10,500 matches for the printed timing
    let n: usize = std::env::var("VBC_AUTH_COUNT_PATIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let (s, _tmp) = auth_server();
    let ehr = bearer(&s, "ehr-app", "system/*.cruds");
    let payer_of = |i: usize| match i % 3 {
        0 => Some("Organization/org-aetna"),
        1 => Some("Organization/org-harvard-pilgrim-health-care"),
        _ => None, // no coverage: nobody's member
    };
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(100) {
        let mut entry = Vec::new();
        for &i in chunk {
            let pid = format!("pc-{i}");
            entry.push(json!({"resource": {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1960-01-01"},
                "request": {"method": "PUT", "url": format!("Patient/{pid}")}}));
            if let Some(payer) = payer_of(i) {
                entry.push(json!({"resource": {"resourceType": "Coverage", "status": "active",
                    "beneficiary": {"reference": format!("Patient/{pid}")}, "payor": [{"reference": payer}]},
                    "request": {"method": "POST", "url": "Coverage"}}));
            }
            for day in 1..=3 {
                entry.push(json!({"resource": {"resourceType": "Observation", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                    "subject": {"reference": format!("Patient/{pid}")},
                    "effectiveDateTime": format!("2024-03-0{day}"),
                    "valueQuantity": {"value": 7.1, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}},
                    "request": {"method": "POST", "url": "Observation"}}));
            }
        }
        let r = as_post(
            &s,
            &ehr,
            "/",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entry}),
        );
        assert_eq!(r.status(), 200, "{}", r.text().unwrap_or_default());
    }
    let members = |payer: &str| 3 * (0..n).filter(|&i| payer_of(i) == Some(payer)).count();
    let query = "/Observation?code=http://loinc.org|4548-4&_summary=count";
    let count = |t: &str| {
        body_json(as_get(&s, t, query))["total"]
            .as_u64()
            .expect("total") as usize
    };
    let admin = bearer(&s, "admin-app", "system/*.*");
    let aetna = bearer(&s, "payer-wide", "system/*.rs");
    let hp = bearer(&s, "payer-other", "system/*.rs");
    assert_eq!(count(&admin), 3 * n);
    assert_eq!(count(&aetna), members("Organization/org-aetna"));
    assert_eq!(
        count(&hp),
        members("Organization/org-harvard-pilgrim-health-care")
    );
    assert_eq!(count(&ehr), 3 * n, "the submitter's own");
    assert_eq!(
        count(&bearer(&s, "lab-app", "system/Observation.rs")),
        0,
        "another submitter's"
    );
    // a restricted scope is judged too: none of these Observations has a category
    let labs_only = bearer(
        &s,
        "payer-wide",
        "system/Observation.rs?category=laboratory",
    );
    assert_eq!(count(&labs_only), 0);
    // the listing agrees with the count
    let listed = body_json(as_get(
        &s,
        &aetna,
        "/Observation?code=http://loinc.org|4548-4&_count=1000&_elements=subject",
    ));
    let subjects: Vec<String> = entries(&listed)
        .iter()
        .filter_map(|e| {
            e["resource"]["subject"]["reference"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(subjects.len(), members("Organization/org-aetna").min(1000));
    assert!(subjects.iter().all(|r| r
        .strip_prefix("Patient/pc-")
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i % 3 == 0)));
    // the cost of a count (printed, never asserted)
    let time = |t: &str| {
        let mut ms: Vec<f64> = (0..15)
            .map(|_| {
                let at = Instant::now();
                count(t);
                at.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        ms.sort_by(f64::total_cmp);
        ms[ms.len() / 2]
    };
    eprintln!(
        "Observation?code=...&_summary=count over {} matches: admin {:.1} ms, payer {:.1} ms (median of 15)",
        3 * n,
        time(&admin),
        time(&aetna)
    );
}

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

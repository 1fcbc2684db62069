//! Hostile input: malformed, truncated, deeply nested, huge, wrong-typed and binary bodies and
//! parameters against every endpoint. Each answer must be a 4xx OperationOutcome and the server
//! must stay up.

mod common;

use common::{assert_outcome, client, Server};

fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let deep_json_arrays = "[".repeat(10_000).into_bytes();
    let deep_json_objects = "{\"a\":".repeat(10_000).into_bytes();
    let deep_xml = format!(
        "<Patient xmlns=\"http://hl7.org/fhir\">{}",
        "<extension>".repeat(10_000)
    )
    .into_bytes();
    let deep_resource = {
        let mut s = String::from("{\"resourceType\":\"Patient\",\"extension\":");
        for _ in 0..10_000 {
            s.push_str("[{\"url\":\"http://x\",\"extension\":");
        }
        s.into_bytes()
    };
    let mut garbage = Vec::with_capacity(4096);
    let mut x: u32 = 12345;
    for _ in 0..4096 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        garbage.push((x >> 16) as u8);
    }
    vec![
        ("empty", Vec::new()),
        ("malformed", b"{\"resourceType\":".to_vec()),
        ("truncated", b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"Sm".to_vec()),
        ("deep-arrays", deep_json_arrays),
        ("deep-objects", deep_json_objects),
        ("deep-resource", deep_resource),
        ("deep-xml", deep_xml),
        ("array", b"[1,2,3]".to_vec()),
        ("number", b"42".to_vec()),
        ("string", b"\"Patient\"".to_vec()),
        ("null", b"null".to_vec()),
        ("resourceType-number", b"{\"resourceType\":42}".to_vec()),
        ("unknown-type", b"{\"resourceType\":\"Nonsense\"}".to_vec()),
        ("wrong-field-type", b"{\"resourceType\":\"Patient\",\"gender\":42,\"name\":\"x\"}".to_vec()),
        ("wrong-bundle", b"{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":{\"x\":1}}".to_vec()),
        ("bundle-bad-entries", b"{\"resourceType\":\"Bundle\",\"type\":\"transaction\",\"entry\":[1,\"a\",null,{\"request\":{\"method\":\"POST\",\"url\":\"Patient\"}}]}".to_vec()),
        ("binary", garbage),
        ("invalid-utf8", vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}']),
        ("xml-garbage", b"<Patient><<<>>>".to_vec()),
        ("xml-wrong-ns", b"<Patient xmlns=\"urn:nope\"><gender value=\"male\"/></Patient>".to_vec()),
        ("xxe", b"<?xml version=\"1.0\"?><!DOCTYPE p [<!ENTITY x SYSTEM \"file:///etc/passwd\">]><Patient xmlns=\"http://hl7.org/fhir\"><gender value=\"&x;\"/></Patient>".to_vec()),
    ]
}

const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", ""),
    ("POST", "Patient"),
    ("PUT", "Patient/x1"),
    ("PUT", "Patient?identifier=a|b"),
    ("PATCH", "Patient/x1"),
    ("POST", "Patient/$validate"),
    ("POST", "Patient/x1/$validate"),
    ("POST", "Observation"),
];

const CONTENT_TYPES: &[&str] = &[
    "application/fhir+json",
    "application/fhir+xml",
    "application/json-patch+json",
];

#[test]
fn hostile_bodies_get_4xx_operation_outcomes() {
    let server = Server::start_with(&["--max-body-bytes", "1048576"]);
    let c = client();
    let mut checked = 0;
    for (name, body) in bodies() {
        for (method, path) in ENDPOINTS {
            for ct in CONTENT_TYPES {
                let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
                let resp = c
                    .request(m, server.url(path))
                    .header("content-type", *ct)
                    .body(body.clone())
                    .send()
                    .unwrap_or_else(|e| panic!("{method} /{path} {name} {ct}: no answer: {e}"));
                let status = resp.status();
                // $validate reports a parseable but invalid resource as 200 + error issues
                let validate_ok = path.ends_with("$validate") && status == 200;
                assert!(
                    status.is_client_error() || validate_ok,
                    "{method} /{path} with {name} as {ct}: expected 4xx, got {status}"
                );
                let text = resp.text().expect("text");
                let v: serde_json::Value = serde_json::from_str(&text)
                    .unwrap_or_else(|_| panic!("{method} /{path} {name} {ct}: not JSON: {text}"));
                assert_outcome(&v);
                checked += 1;
            }
        }
    }
    // huge body over the limit, with and without Content-Length
    let huge = vec![b' '; 2 * 1024 * 1024];
    for (method, path) in ENDPOINTS {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let resp = c
            .request(m, server.url(path))
            .header("content-type", "application/fhir+json")
            .body(huge.clone())
            .send()
            .expect("answer");
        assert_eq!(resp.status(), 413, "{method} /{path}");
        assert_outcome(&serde_json::from_str(&resp.text().expect("text")).expect("json"));
    }
    assert_eq!(
        chunked_post_status(server.port, &huge),
        413,
        "chunked body over the limit"
    );
    assert!(checked > 400);
    let health = c.get(server.url("health")).send().expect("health");
    assert_eq!(health.status(), 200);
}

/// POST a body with `Transfer-Encoding: chunked` over a raw socket; returns the status code.
fn chunked_post_status(port: u16, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let head = format!(
        "POST /Patient HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/fhir+json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).expect("head");
    for chunk in body.chunks(64 * 1024) {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hostile_parameters_and_paths_get_4xx_operation_outcomes() {
    let server = Server::start();
    let c = client();
    let long_id = "a".repeat(65);
    let paths = [
        format!("Patient/{long_id}"),
        "Patient/..%2F..%2Fetc".to_string(),
        "Patient/%00".to_string(),
        "Patient/%C3%A9t%C3%A9".to_string(),
        "Patient/x/_history/notanumber".to_string(),
        "Patient/x/_history/1".to_string(),
        "_history?_since=garbage".to_string(),
        "_history?_count=-1".to_string(),
        "_history?_cursor=zz".to_string(),
        "Patient/_history?_since=2024-13-01".to_string(),
        "Patient?_count=-1".to_string(),
        "Patient?birthdate=notadate".to_string(),
        "Patient?birthdate=xx2020".to_string(),
        "Observation?value-quantity=abc|x|y".to_string(),
        "Patient?_sort=nonsense".to_string(),
        "Patient?_cursor=zz".to_string(),
        "Patient?_include=Nonsense:x".to_string(),
        "Patient?_has:Observation:bogus:code=1".to_string(),
        "Patient?general-practitioner:Nope.name=x".to_string(),
        "Patient/1/$everything?_since=garbage".to_string(),
        "Patient?gender:exact=x".to_string(),
        "Patient?_format=text/html".to_string(),
        "Nonsense/1".to_string(),
        "Nonsense".to_string(),
        "Patient/1/bogus".to_string(),
        "metadata/x".to_string(),
    ];
    for p in &paths {
        let resp = c.get(server.url(p)).send().expect("answer");
        let status = resp.status();
        assert!(
            status.is_client_error(),
            "GET /{p}: expected 4xx, got {status}"
        );
        let text = resp.text().expect("text");
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("GET /{p}: not JSON: {text}"));
        assert_outcome(&v);
    }
    for (m, p) in [
        ("DELETE", "Patient"),
        ("PUT", "Patient"),
        ("PATCH", "Patient"),
        ("DELETE", "metadata"),
        ("PUT", ""),
    ] {
        let resp = c
            .request(
                reqwest::Method::from_bytes(m.as_bytes()).expect("m"),
                server.url(p),
            )
            .header("content-type", "application/fhir+json")
            .body("{\"resourceType\":\"Patient\"}")
            .send()
            .expect("answer");
        assert!(
            resp.status().is_client_error(),
            "{m} /{p}: {}",
            resp.status()
        );
        assert_outcome(&serde_json::from_str(&resp.text().expect("t")).expect("json"));
    }
    for (name, value) in [("If-Match", "garbage"), ("If-None-Exist", "nonsense=x")] {
        let resp = c
            .post(server.url("Patient"))
            .header("content-type", "application/fhir+json")
            .header(name, value)
            .body("{\"resourceType\":\"Patient\"}")
            .send()
            .expect("answer");
        if name == "If-None-Exist" {
            assert_eq!(resp.status(), 400, "{name}");
            assert_outcome(&serde_json::from_str(&resp.text().expect("t")).expect("json"));
        }
    }
    assert_eq!(
        c.get(server.url("health")).send().expect("health").status(),
        200
    );
}

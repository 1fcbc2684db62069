//! Test harness: start the real `vbc-server` binary on a free port over a temporary data
//! directory, talk to it over HTTP, and kill or stop it.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running server process.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub port: u16,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

impl Server {
    /// Start on a fresh temporary data directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_on(&dir, &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Start with extra command-line flags.
    pub fn start_with(args: &[&str]) -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_on(&dir, args);
        s._tmp = Some(tmp);
        s
    }

    /// Start on a given data directory (kept by the caller).
    pub fn start_on(dir: &Path, args: &[&str]) -> Server {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_vbc-server"))
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir)
            .args(args)
            .args(if args.contains(&"--contracts-dir") {
                &[][..]
            } else {
                &["--contracts-dir", ""][..]
            })
            // auth is off unless the test configures it
            .args(if args.contains(&"--auth-clients") {
                &[][..]
            } else {
                &["--no-auth"][..]
            })
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn vbc-server");
        let s = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            port,
            data_dir: dir.to_path_buf(),
            _tmp: None,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = reqwest::blocking::Client::new();
        while Instant::now() < deadline {
            if client
                .get(format!("{}/health", self.base))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not become ready at {}", self.base);
    }

    /// URL of a path on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// True while the process is running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit; returns the exit status success.
    pub fn terminate(&mut self) -> bool {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill9();
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A blocking HTTP client.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// Parse a response body as JSON.
pub fn body_json(resp: reqwest::blocking::Response) -> serde_json::Value {
    let text = resp.text().expect("body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Assert an OperationOutcome with at least one error issue and return it.
pub fn assert_outcome(v: &serde_json::Value) -> &serde_json::Value {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    let issues = v["issue"].as_array().expect("issues");
    assert!(
        issues
            .iter()
            .any(|i| i["severity"] == "error" || i["severity"] == "fatal"),
        "{v}"
    );
    v
}

pub const FHIR_JSON: &str = "application/fhir+json";

/// The Content-Type of a response.
pub fn content_type(resp: &reqwest::blocking::Response) -> String {
    resp.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// GET a path.
pub fn get(s: &Server, c: &reqwest::blocking::Client, path: &str) -> reqwest::blocking::Response {
    c.get(s.url(path)).send().expect("GET")
}

/// GET a path, expect 200, return the JSON body.
pub fn get_json(s: &Server, c: &reqwest::blocking::Client, path: &str) -> serde_json::Value {
    let r = get(s, c, path);
    assert_eq!(r.status(), reqwest::StatusCode::OK, "GET {path}");
    body_json(r)
}

/// `total` of a search.
pub fn search_total(s: &Server, c: &reqwest::blocking::Client, rtype: &str, query: &str) -> u64 {
    let b = get_json(s, c, &format!("{rtype}?{query}"));
    assert_eq!(b["type"], "searchset", "{b}");
    b["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("no total: {b}"))
}

/// Assert an error response: exact status, FHIR JSON content type, an OperationOutcome with an
/// error issue. Returns the OperationOutcome.
pub fn expect_error(
    resp: reqwest::blocking::Response,
    status: reqwest::StatusCode,
) -> serde_json::Value {
    let got = resp.status();
    let ct = content_type(&resp);
    let text = resp.text().expect("body");
    assert_eq!(got, status, "body: {text}");
    assert!(
        ct.starts_with(FHIR_JSON),
        "content-type '{ct}' for {got}: {text}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_outcome(&v);
    v
}

/// FHIRPath expressions of the error issues of an OperationOutcome.
pub fn error_expressions(oo: &serde_json::Value) -> Vec<String> {
    oo["issue"]
        .as_array()
        .expect("issues")
        .iter()
        .filter(|i| i["severity"] == "error")
        .flat_map(|i| {
            i["expression"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|e| e.as_str().map(String::from))
        })
        .collect()
}

/// The entries of a Bundle.
pub fn entries(bundle: &serde_json::Value) -> Vec<serde_json::Value> {
    bundle["entry"].as_array().cloned().unwrap_or_default()
}

/// POST a transaction or batch Bundle to the base URL and expect 200.
pub fn post_bundle(s: &Server, c: &reqwest::blocking::Client, b: &serde_json::Value) {
    let resp = c
        .post(s.url("/"))
        .header("Content-Type", "application/fhir+json")
        .json(b)
        .send()
        .expect("post");
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    assert_eq!(status, 200, "{body}");
}

/// A bearer token from the token endpoint at `token_url` for a registered client of
/// `tests/data/auth/clients.json` (they share the test key `es-1`).
pub fn token_for(token_url: &str, client_id: &str, scope: &str) -> String {
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
    let key =
        EncodingKey::from_ec_pem(&std::fs::read("tests/data/auth/es384-private.pem").expect("key"))
            .expect("pem");
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some("es-1".into());
    h.typ = Some("JWT".into());
    let now = jsonwebtoken::get_current_timestamp();
    let jwt = encode(
        &h,
        &serde_json::json!({"iss": client_id, "sub": client_id, "aud": token_url,
            "exp": now + 240, "jti": uuid::Uuid::new_v4().to_string()}),
        &key,
    )
    .expect("sign");
    let r = client()
        .post(token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", vbc_server::http::smart::JWT_BEARER),
            ("client_assertion", &jwt),
            ("scope", scope),
        ])
        .send()
        .expect("token");
    let body: serde_json::Value = r.json().expect("token answer");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("token for {client_id}: {body}"))
        .to_string()
}

const VBC_EXT: &str = "https://vbc-server.dev/fhir/StructureDefinition";

/// The amount of an element holding a `valueMoney` (`Decimal::MIN` when there is none).
pub fn money(v: &serde_json::Value) -> rust_decimal::Decimal {
    <rust_decimal::Decimal as std::str::FromStr>::from_str(&v["valueMoney"]["value"].to_string())
        .unwrap_or(rust_decimal::Decimal::MIN)
}

/// (owed, at stake pending, at stake missing data) per stream of a performance report.
pub fn performance_money(
    r: &serde_json::Value,
) -> std::collections::BTreeMap<String, [rust_decimal::Decimal; 3]> {
    let mut out = std::collections::BTreeMap::new();
    for g in r["group"].as_array().into_iter().flatten() {
        let ext = |end: &str| {
            g["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["url"] == format!("{VBC_EXT}/{end}"))
                .map(money)
                .unwrap_or(rust_decimal::Decimal::MIN)
        };
        out.insert(
            g["id"].as_str().unwrap_or_default().to_string(),
            [
                money(&g["measureScore"]["extension"][0]),
                ext("at-stake-pending"),
                ext("at-stake-missing-data"),
            ],
        );
    }
    out
}

/// (stream, state) -> amount of an individual report's money lines.
pub fn individual_money(
    r: &serde_json::Value,
) -> std::collections::BTreeMap<(String, String), rust_decimal::Decimal> {
    let mut out = std::collections::BTreeMap::new();
    for l in r["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["url"] == format!("{VBC_EXT}/money-line"))
    {
        let sub = |k: &str| {
            l["extension"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["url"] == k)
                .cloned()
                .unwrap_or(serde_json::Value::Null)
        };
        let key = (
            sub("stream")["valueCode"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            sub("state")["valueCode"].as_str().unwrap_or("").to_string(),
        );
        *out.entry(key).or_insert(rust_decimal::Decimal::ZERO) += money(&sub("amount"));
    }
    out
}

/// A transaction entry that PUTs `resource` as `rtype/id`.
pub fn put_entry(rtype: &str, id: &str, resource: serde_json::Value) -> serde_json::Value {
    let mut r = resource;
    r["resourceType"] = serde_json::json!(rtype);
    r["id"] = serde_json::json!(id);
    serde_json::json!({"resource": r, "request": {"method": "PUT", "url": format!("{rtype}/{id}")}})
}

/// A transaction Bundle of the entries.
pub fn transaction_bundle(entries: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// `POST /$load-contract` with a contract's TOML text.
pub fn load_contract(
    s: &Server,
    c: &reqwest::blocking::Client,
    text: &str,
) -> reqwest::blocking::Response {
    c.post(s.url("/$load-contract"))
        .header("Content-Type", "application/toml")
        .body(text.to_string())
        .send()
        .expect("load")
}

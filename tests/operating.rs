//! Operating the server, through the real binary: the log (one access line per request, the
//! `--no-auth` reminder at most once a minute, a missing contracts directory warned about), the
//! Prometheus metrics and who may scrape them, `load-contract` on a running server's store, and
//! the help texts.
//!
//! `VBC_TEST_BIN=path/to/vbc-server` runs these tests against another build (to see them fail
//! on one without the fixes).

mod common;

use std::fs::File;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{body_json, client};
use serde_json::{json, Value};

/// The binary under test.
fn bin() -> String {
    std::env::var("VBC_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_vbc-server").to_string())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A server started by this file, with its stdout and stderr kept in files.
struct Logged {
    child: Child,
    port: u16,
    base: String,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Logged {
    /// Start `serve` on `data_dir` listening on `listen_ip`, with `RUST_LOG=rust_log`; its output
    /// goes to files in `out_dir`. `{port}` in an argument is replaced by the port.
    fn start(
        data_dir: &Path,
        out_dir: &Path,
        listen_ip: &str,
        rust_log: &str,
        args: &[&str],
    ) -> Logged {
        let port = free_port();
        let stdout = out_dir.join("stdout.log");
        let stderr = out_dir.join("stderr.log");
        let child = Command::new(bin())
            .arg("serve")
            .arg("--listen")
            .arg(format!("{listen_ip}:{port}"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--report-schedule-secs", "0"])
            .args(args.iter().map(|a| a.replace("{port}", &port.to_string())))
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::from(File::create(&stdout).expect("stdout file")))
            .stderr(Stdio::from(File::create(&stderr).expect("stderr file")))
            .spawn()
            .expect("spawn vbc-server");
        let s = Logged {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            stdout,
            stderr,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let c = client();
        while Instant::now() < deadline {
            if c.get(self.url("/health"))
                .send()
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "server did not become ready at {}: {}",
            self.base,
            self.stderr_text()
        );
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base, path.trim_start_matches('/'))
    }

    /// SIGTERM and wait for the exit (the log is complete afterwards).
    fn stop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").arg("-TERM").arg(&pid).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Everything the process wrote, stdout and stderr.
    fn output(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default() + &self.stderr_text()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with auth off and no contracts, at `rust_log`, in a fresh directory.
fn trial_server(rust_log: &str) -> (Logged, tempfile::TempDir) {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let s = Logged::start(
        &data,
        tmp.path(),
        "127.0.0.1",
        rust_log,
        &["--no-auth", "--contracts-dir", ""],
    );
    (s, tmp)
}

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family}], "gender": "female"})
}

fn post_patient(c: &reqwest::blocking::Client, s: &Logged, family: &str) -> (String, String) {
    let r = c
        .post(s.url("/Patient"))
        .header("Content-Type", "application/fhir+json")
        .json(&patient(family))
        .send()
        .expect("POST");
    assert_eq!(r.status(), 201);
    let request_id = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .expect("x-request-id")
        .to_string();
    let id = body_json(r)["id"].as_str().expect("id").to_string();
    (id, request_id)
}

#[test]
fn no_auth_is_reminded_at_most_once_a_minute_and_every_request_logs_one_access_line() {
    let (mut s, _tmp) = trial_server("info");
    let c = client();
    let (id, create_request_id) = post_patient(&c, &s, "Logged");
    const READS: usize = 25;
    for _ in 0..READS {
        let r = c.get(s.url(&format!("/Patient/{id}"))).send().expect("GET");
        assert_eq!(r.status(), 200);
    }
    let r = c
        .get(s.url("/Patient/no-such-patient"))
        .send()
        .expect("GET");
    assert_eq!(r.status(), 404);
    s.stop();
    let log = s.output();
    let lines: Vec<&str> = log.lines().collect();

    // the warning at start, and a reminder at most once a minute (not one per request)
    let warnings = lines
        .iter()
        .filter(|l| l.contains("AUTHENTICATION IS OFF"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} --no-auth warnings for {} requests:\n{log}",
        READS + 2
    );

    // one access line per request, by route template (never the raw path with its id)
    let reads: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("route=/{rtype}/{id}"))
        .collect();
    assert_eq!(reads.len(), READS + 1, "access lines:\n{log}");
    for l in &reads {
        for field in [
            " INFO ",
            "method=GET",
            "latency_ms=",
            "party=system",
            "client=",
            "request_id=",
        ] {
            assert!(l.contains(field), "no {field} in: {l}");
        }
        assert!(!l.contains(&id), "raw path in the access line: {l}");
    }
    assert_eq!(
        reads.iter().filter(|l| l.contains("status=200")).count(),
        READS
    );
    assert_eq!(reads.iter().filter(|l| l.contains("status=404")).count(), 1);
    let creates: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("route=/{rtype} ") && l.contains("method=POST"))
        .collect();
    assert_eq!(creates.len(), 1, "{log}");
    assert!(creates[0].contains("status=201"), "{}", creates[0]);
    assert!(
        creates[0].contains(&format!("request_id={create_request_id}")),
        "{}",
        creates[0]
    );
}

/// The value of a sample line `name{labels} value` (labels in any order; all of `labels` must
/// appear).
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            let (series, _) = l.rsplit_once(' ').unwrap_or((l, ""));
            let metric = series.split('{').next().unwrap_or("");
            metric == name && labels.iter().all(|x| series.contains(x))
        })
        .and_then(|l| l.rsplit_once(' '))
        .and_then(|(_, v)| v.parse().ok())
}

fn scrape(c: &reqwest::blocking::Client, s: &Logged) -> String {
    let r = c.get(s.url("/metrics")).send().expect("GET /metrics");
    assert_eq!(r.status(), 200);
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(ct.starts_with("text/plain"), "content type {ct}");
    r.text().expect("body")
}

#[test]
fn metrics_are_prometheus_text_and_count_requests_writes_commits_and_contracts() {
    let (s, _tmp) = trial_server("warn");
    let c = client();
    for i in 0..3 {
        post_patient(&c, &s, &format!("Metric{i}"));
    }
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:8f3b4a52-1c1e-4d43-9a55-0d1f2a7b1c01", "resource": patient("InBundle1"),
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": "urn:uuid:8f3b4a52-1c1e-4d43-9a55-0d1f2a7b1c02", "resource": patient("InBundle2"),
         "request": {"method": "POST", "url": "Patient"}}
    ]});
    let r = c
        .post(s.url("/"))
        .header("Content-Type", "application/fhir+json")
        .json(&bundle)
        .send()
        .expect("transaction");
    assert_eq!(r.status(), 200);
    let text = scrape(&c, &s);

    for name in [
        "vbc_http_requests_total",
        "vbc_http_request_duration_seconds_bucket",
        "vbc_store_resources_written_total",
        "vbc_store_commit_group_size_bucket",
        "vbc_store_fsync_seconds_bucket",
        "vbc_engine_update_lag_seconds_bucket",
        "vbc_store_size_bytes",
        "vbc_contracts_loaded",
        "vbc_audit_queue_depth",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "no {name} in:\n{text}"
        );
    }
    // 3 creates + a transaction of 2
    assert_eq!(
        sample(
            &text,
            "vbc_store_resources_written_total",
            &["store=\"main\""]
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "vbc_http_requests_total",
            &["route=\"/{rtype}\"", "method=\"POST\"", "status=\"201\""]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "vbc_http_requests_total",
            &["route=\"/\"", "method=\"POST\"", "status=\"200\""]
        ),
        Some(1.0),
        "{text}"
    );
    let groups = sample(
        &text,
        "vbc_store_commit_group_size_count",
        &["store=\"main\""],
    )
    .expect("commit groups");
    assert!(
        (1.0..=4.0).contains(&groups),
        "{groups} groups for 4 write jobs"
    );
    assert_eq!(
        sample(
            &text,
            "vbc_store_commit_group_size_sum",
            &["store=\"main\""]
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "vbc_store_fsync_seconds_count", &["store=\"main\""]),
        Some(groups)
    );
    assert_eq!(
        sample(&text, "vbc_engine_update_lag_seconds_count", &[]),
        Some(groups)
    );
    assert!(sample(&text, "vbc_store_size_bytes", &["store=\"main\""]).expect("size") > 0.0);
    assert_eq!(sample(&text, "vbc_contracts_loaded", &[]), Some(0.0));

    // a contract loaded over HTTP is counted at the next scrape
    let toml = std::fs::read_to_string("contracts/januvia-aetna.toml").expect("contract");
    let r = c
        .post(s.url("/$load-contract"))
        .header("Content-Type", "application/toml")
        .body(toml)
        .send()
        .expect("load");
    assert_eq!(r.status(), 201, "{}", r.text().unwrap_or_default());
    let text = scrape(&c, &s);
    assert_eq!(
        sample(&text, "vbc_contracts_loaded", &[]),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "vbc_store_resources_written_total",
            &["store=\"main\""]
        )
        .expect("written")
            > 5.0
    );
}

/// An address of this machine other than loopback, if it has one.
fn non_loopback_ip() -> Option<IpAddr> {
    let sock = UdpSocket::bind("0.0.0.0:0").ok()?;
    sock.connect("192.0.2.1:9").ok()?;
    let ip = sock.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

/// A bearer token for a registered client of tests/data/auth/clients.json.
fn bearer(s: &Logged, client_id: &str, scope: &str) -> String {
    common::token_for(&s.url("/auth/token"), client_id, scope)
}

#[test]
fn metrics_are_open_on_loopback_and_need_an_administrator_elsewhere() {
    let Some(ip) = non_loopback_ip() else {
        eprintln!("skipped: this machine has no address besides loopback");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let clients = tmp.path().join("clients.json");
    std::fs::copy("tests/data/auth/clients.json", &clients).expect("copy clients");
    let mut s = Logged::start(
        &tmp.path().join("data"),
        tmp.path(),
        "0.0.0.0",
        "info",
        &[
            "--auth-clients",
            clients.to_str().expect("path"),
            "--contracts-dir",
            "",
            "--base-url",
            "http://127.0.0.1:{port}",
        ],
    );
    let c = client();
    let remote = format!("http://{ip}:{}/metrics", s.port);
    // a loopback scraper needs no token
    assert_eq!(c.get(s.url("/metrics")).send().expect("GET").status(), 200);
    // off loopback: a token, of an administrator
    assert_eq!(c.get(&remote).send().expect("GET").status(), 401);
    let payer = bearer(&s, "payer-other", "system/*.rs");
    assert_eq!(
        c.get(&remote)
            .bearer_auth(&payer)
            .send()
            .expect("GET")
            .status(),
        403
    );
    let admin = bearer(&s, "admin-app", "system/*.*");
    let r = c.get(&remote).bearer_auth(&admin).send().expect("GET");
    assert_eq!(r.status(), 200);
    assert!(r.text().expect("body").contains("vbc_http_requests_total"));
    s.stop();
    // the access line names the caller's party and client
    let log = s.output();
    assert!(
        log.lines().any(|l| l.contains("route=/metrics")
            && l.contains("status=200")
            && l.contains("party=Organization/org-vbc-operator")
            && l.contains("client=admin-app")),
        "{log}"
    );
}

#[test]
fn load_contract_on_a_running_servers_store_says_in_use_before_any_ok() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("data");
    let s = Logged::start(
        &data,
        tmp.path(),
        "127.0.0.1",
        "warn",
        &["--no-auth", "--contracts-dir", ""],
    );
    let out = Command::new(bin())
        .arg("load-contract")
        .arg("--data-dir")
        .arg(&data)
        .arg("contracts/januvia-aetna.toml")
        .output()
        .expect("load-contract");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains("in use"), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!("pid {}", s.child.id())),
        "the holding process is not named: {stderr}"
    );
    assert!(!stdout.contains("ok"), "stdout: {stdout}");
    // the same command on a stopped server's store works
    drop(s);
    let out = Command::new(bin())
        .arg("load-contract")
        .arg("--data-dir")
        .arg(&data)
        .arg("contracts/januvia-aetna.toml")
        .output()
        .expect("load-contract");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_missing_contracts_directory_is_a_warning_naming_the_path_and_the_flag() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut s = Logged::start(
        &tmp.path().join("data"),
        tmp.path(),
        "127.0.0.1",
        "warn",
        &["--no-auth", "--contracts-dir", "/nonexistent/catalog"],
    );
    s.stop();
    let stderr = s.stderr_text();
    let line = stderr
        .lines()
        .find(|l| l.contains("/nonexistent/catalog"))
        .unwrap_or_else(|| panic!("no warning naming the path on stderr:\n{stderr}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("--contracts-dir"), "{line}");
}

/// The help text of one option in a `--help` output, whitespace normalised.
fn option_help(help: &str, option: &str) -> String {
    let flat = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let start = flat
        .find(&format!("{option} "))
        .unwrap_or_else(|| panic!("no {option} in:\n{help}"));
    let rest = &flat[start + option.len()..];
    let end = rest.find(" --").unwrap_or(rest.len());
    rest[..end].to_string()
}

fn help_of(command: &str) -> String {
    let out = Command::new(bin())
        .args([command, "--help"])
        .output()
        .expect("--help");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn help_texts_say_what_the_options_do() {
    let page = option_help(&help_of("serve"), "--default-page-size");
    assert!(page.contains("search"), "--default-page-size: {page}");
    assert!(page.contains("history"), "--default-page-size: {page}");
    let base = option_help(&help_of("audit-verify"), "--base-url");
    assert!(!base.contains("indexed"), "audit-verify --base-url: {base}");
    assert!(base.contains("audit"), "audit-verify --base-url: {base}");
}

//! Durability: concurrent transactions against the real binary, `kill -9` mid-stream, restart,
//! and check that every acknowledged write is readable with the right version and that no
//! transaction is half applied. Repeated several times on the same data directory.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{body_json, client, Server, FHIR_JSON};
use serde_json::{json, Value};

const TXN_SYSTEM: &str = "urn:vbc-test:txn";
const WRITERS: usize = 8;
const CYCLES: usize = 5;

/// One transaction: a Patient and three Observations that all carry the transaction's key.
fn txn_bundle(key: &str) -> Value {
    let pid = "urn:uuid:".to_string() + &uuid_like(key);
    let mut entries = vec![json!({
        "fullUrl": pid,
        "resource": {"resourceType": "Patient", "identifier": [{"system": TXN_SYSTEM, "value": key}]},
        "request": {"method": "POST", "url": "Patient"}
    })];
    for i in 0..3 {
        entries.push(json!({
            "resource": {
                "resourceType": "Observation", "status": "final",
                "identifier": [{"system": TXN_SYSTEM, "value": format!("{key}-{i}")}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": pid},
                "effectiveDateTime": "2025-01-01T10:00:00Z",
                "valueQuantity": {"value": 60 + i, "unit": "/min"}
            },
            "request": {"method": "POST", "url": "Observation"}
        }));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn uuid_like(key: &str) -> String {
    // deterministic, valid UUID text from a small key
    let mut h: u128 = 0xcbf29ce484222325;
    for b in key.bytes() {
        h = (h ^ b as u128).wrapping_mul(0x100000001b3);
    }
    let s = format!("{:032x}", h);
    format!(
        "{}-{}-4{}-8{}-{}",
        &s[0..8],
        &s[8..12],
        &s[13..16],
        &s[17..20],
        &s[20..32]
    )
}

#[derive(Debug, Clone)]
struct Acked {
    /// (type, id, version) of every entry.
    written: Vec<(String, String, u64)>,
}

fn count(c: &reqwest::blocking::Client, base: &str, rtype: &str, value: &str) -> u64 {
    let r = c
        .get(format!("{base}/{rtype}"))
        .query(&[("identifier", format!("{TXN_SYSTEM}|{value}"))])
        .send()
        .expect("search");
    assert_eq!(r.status(), 200);
    body_json(r)["total"].as_u64().expect("total")
}

/// Writers post transactions and updates while the server is killed with SIGKILL, cycle after
/// cycle.
#[test]
fn acknowledged_transactions_survive_kill_9() {
    let tmp = tempfile::tempdir().expect("tmp");
    let acked: Arc<Mutex<BTreeMap<String, Acked>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let mut sent_keys: Vec<String> = Vec::new();
    for cycle in 0..CYCLES {
        let mut server = Server::start_on(tmp.path(), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let sent: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for w in 0..WRITERS {
            let (stop, next, acked, sent) =
                (stop.clone(), next.clone(), acked.clone(), sent.clone());
            let base = server.base.clone();
            handles.push(std::thread::spawn(move || {
                let c = client();
                while !stop.load(Ordering::SeqCst) {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    let key = format!("c{cycle}-w{w}-n{n}");
                    sent.lock().expect("lock").push(key.clone());
                    let resp = c
                        .post(&base)
                        .header("content-type", FHIR_JSON)
                        .body(txn_bundle(&key).to_string())
                        .send();
                    let Ok(resp) = resp else { break };
                    if resp.status() != 200 {
                        continue;
                    }
                    let Ok(text) = resp.text() else { break };
                    let Ok(bundle) = serde_json::from_str::<Value>(&text) else {
                        break;
                    };
                    let written: Vec<(String, String, u64)> = bundle["entry"]
                        .as_array()
                        .expect("entries")
                        .iter()
                        .map(|e| {
                            let loc = e["response"]["location"].as_str().expect("location");
                            let parts: Vec<&str> = loc.rsplit('/').collect();
                            // .../Type/id/_history/v
                            (
                                parts[3].to_string(),
                                parts[2].to_string(),
                                parts[0].parse::<u64>().expect("v"),
                            )
                        })
                        .collect();
                    // an update that changes index entries (active, a second identifier)
                    let patient = written.iter().find(|(t, _, _)| t == "Patient").cloned();
                    acked.lock().expect("lock").insert(key.clone(), Acked { written });
                    if let Some((_, pid, _)) = patient {
                        let body = json!({"resourceType": "Patient", "id": pid, "active": true,
                            "identifier": [{"system": TXN_SYSTEM, "value": key}, {"system": "urn:upd", "value": key}]});
                        let Ok(r) = c
                            .put(format!("{base}/Patient/{pid}"))
                            .header("content-type", FHIR_JSON)
                            .body(body.to_string())
                            .send()
                        else {
                            break;
                        };
                        if r.status() == 200 {
                            let mut a = acked.lock().expect("lock");
                            if let Some(entry) = a.get_mut(&key) {
                                for w in entry.written.iter_mut().filter(|w| w.1 == pid) {
                                    w.2 = 2;
                                }
                            }
                        }
                    }
                }
            }));
        }
        // let the writers run, then kill -9 while they are mid-stream
        std::thread::sleep(Duration::from_millis(400 + 150 * cycle as u64));
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            let _ = h.join();
        }
        sent_keys.extend(sent.lock().expect("lock").iter().cloned());
        assert!(
            acked.lock().expect("lock").len() > cycle * 5,
            "too few transactions acknowledged to test anything"
        );
    }

    // restart and verify
    let server = Server::start_on(tmp.path(), &[]);
    let c = client();
    let acked = acked.lock().expect("lock").clone();
    for (key, a) in &acked {
        for (rtype, id, version) in &a.written {
            let r = c
                .get(server.url(&format!("{rtype}/{id}")))
                .send()
                .expect("read");
            assert_eq!(r.status(), 200, "acknowledged {rtype}/{id} of {key} lost");
            let etag = r
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            // an update sent but not acknowledged before the kill may have landed too
            let on_disk: u64 = etag
                .trim_start_matches("W/\"")
                .trim_end_matches('"')
                .parse()
                .unwrap_or(0);
            assert!(
                on_disk >= *version && on_disk <= 2,
                "{rtype}/{id} has version {on_disk}, acknowledged {version}"
            );
            let body = body_json(r);
            assert_eq!(body["id"], id.as_str());
        }
    }
    // all or nothing for every transaction sent, acknowledged or not
    let mut applied = 0;
    for key in &sent_keys {
        let mut present = count(&c, &server.base, "Patient", key);
        for i in 0..3 {
            present += count(&c, &server.base, "Observation", &format!("{key}-{i}"));
        }
        assert!(
            present == 0 || present == 4,
            "transaction {key} half applied: {present} of 4 resources"
        );
        if present == 4 {
            applied += 1;
        }
        if acked.contains_key(key) {
            assert_eq!(present, 4, "acknowledged transaction {key} incomplete");
        }
    }
    assert!(applied >= acked.len());
    // the index holds exactly what the resources give: no entry without its resource, none
    // missing, none stale after the updates
    let mut server = server;
    assert!(server.terminate(), "clean stop before the index check");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vbc-server"))
        .args(["check-index", "--data-dir"])
        .arg(tmp.path())
        .output()
        .expect("check-index");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "index inconsistent after crashes: {report} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("missing 0 orphaned 0"), "{report}");
    // and the audit trail's hash chain holds across the kills
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vbc-server"))
        .args(["audit-verify", "--data-dir"])
        .arg(tmp.path())
        .output()
        .expect("audit-verify");
    assert!(
        out.status.success(),
        "audit chain broken after crashes: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "crash test: {} cycles, {} transactions sent, {} acknowledged, {} applied",
        CYCLES,
        sent_keys.len(),
        acked.len(),
        applied
    );
}

/// SIGTERM while requests are in flight: every request that got an answer got a 2xx, the process
/// exits cleanly, and everything acknowledged is there after a restart.
#[test]
fn sigterm_finishes_in_flight_requests_and_flushes() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut server = Server::start_on(tmp.path(), &[]);
    let acked: Arc<Mutex<Vec<(String, String, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let mut handles = Vec::new();
    for w in 0..4 {
        let (acked, base) = (acked.clone(), server.base.clone());
        handles.push(std::thread::spawn(move || {
            let c = client();
            for n in 0..10_000 {
                let resp = c
                    .post(&base)
                    .header("content-type", FHIR_JSON)
                    .body(txn_bundle(&format!("term-w{w}-n{n}")).to_string())
                    .send();
                let Ok(resp) = resp else { break };
                let status = resp.status();
                // while shutting down the server may refuse new connections, never fail a request
                assert!(
                    status.is_success(),
                    "in-flight request failed during shutdown: {status}"
                );
                let Ok(bundle) = resp.json::<Value>() else {
                    break;
                };
                for e in bundle["entry"].as_array().expect("entries") {
                    let loc = e["response"]["location"].as_str().expect("location");
                    let parts: Vec<&str> = loc.rsplit('/').collect();
                    acked.lock().expect("lock").push((
                        parts[3].to_string(),
                        parts[2].to_string(),
                        parts[0].parse().expect("version"),
                    ));
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        server.terminate(),
        "vbc-server did not exit cleanly on SIGTERM"
    );
    for h in handles {
        h.join().expect("writer thread");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(!acked.is_empty());
    let server = Server::start_on(tmp.path(), &[]);
    let c = client();
    for (rtype, id, version) in &acked {
        let r = c
            .get(server.url(&format!("{rtype}/{id}")))
            .send()
            .expect("read");
        assert_eq!(r.status(), 200, "{rtype}/{id} lost after graceful shutdown");
        assert_eq!(
            r.headers().get("etag").and_then(|v| v.to_str().ok()),
            Some(format!("W/\"{version}\"").as_str())
        );
    }
}

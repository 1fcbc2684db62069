//! `vbc-server migrate`: a data directory as an earlier release left it (sled, no engine record;
//! `tests/data/migrate`, written by `scripts/make_migrate_fixture.py`) is copied onto fjall. The
//! copy gives every recorded read the answer that release gave (current and older versions,
//! deletes, histories, index searches), passes `check-index` and `audit-verify`, leaves the
//! original as it was, and goes on taking writes where the original's sequence stopped.

mod common;

use std::path::Path;
use std::process::Command;

use common::{client, Server, FHIR_JSON};
use serde_json::{json, Value};

const FIXTURE: &str = "tests/data/migrate";

fn vbc(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vbc-server"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run vbc-server");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn unpack(into: &Path) {
    let archive = Path::new(FIXTURE).join("sled-data.tar.gz");
    let ok = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(into)
        .status()
        .expect("run tar")
        .success();
    assert!(ok, "cannot unpack {}", archive.display());
}

/// A response body without what differs from run to run: Bundle ids, their `meta` (the time of
/// the answer) and links, and the server's base URL inside strings.
fn normalized(mut v: Value, base: &str) -> Value {
    fn walk(v: &mut Value, base: &str) {
        match v {
            Value::String(s) if s.contains(base) => *s = s.replace(base, "BASE"),
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, base)),
            Value::Object(o) => o.values_mut().for_each(|i| walk(i, base)),
            _ => {}
        }
    }
    if v["resourceType"] == "Bundle" {
        if let Some(o) = v.as_object_mut() {
            for k in ["id", "meta", "link"] {
                o.remove(k);
            }
        }
    }
    walk(&mut v, base);
    v
}

fn file_bytes(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("read dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).expect("inside").display().to_string();
                out.push((rel, std::fs::read(&p).expect("read file")));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_sled_directory_of_the_earlier_release_moves_to_fjall_with_every_version() {
    let tmp = tempfile::tempdir().expect("temp dir");
    unpack(tmp.path());
    let old = tmp.path().join("data");
    let new = tmp.path().join("migrated");
    let (old_s, new_s) = (old.display().to_string(), new.display().to_string());
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(FIXTURE).join("expected.json")).expect("expected"),
    )
    .expect("expected.json is JSON");

    let before = file_bytes(&old);
    // sled no longer serves: the server and the maintenance commands name the way over
    let (ok, text) = vbc(&[
        "serve",
        "--no-auth",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        &old_s,
    ]);
    assert!(!ok && text.contains("vbc-server migrate --from"), "{text}");
    let (ok, text) = vbc(&["check-index", "--data-dir", &old_s]);
    assert!(!ok && text.contains("vbc-server migrate --from"), "{text}");
    // the unconverted trail of the earlier release still verifies where it lies
    let (ok, text) = vbc(&["audit-verify", "--data-dir", &old_s]);
    assert!(ok && text.contains("audit chain intact"), "{text}");
    // refused: a target that is not empty
    let (ok, text) = vbc(&["migrate", "--from", &old_s, "--to", &old_s]);
    assert!(!ok && text.contains("is not empty"), "{text}");

    let (ok, text) = vbc(&["migrate", "--from", &old_s, "--to", &new_s]);
    assert!(ok, "migrate failed: {text}");
    assert!(text.contains("migrated sled to fjall"), "{text}");
    assert!(text.contains("missing 0 orphaned 0"), "{text}");
    assert_eq!(
        std::fs::read_to_string(new.join("store-engine"))
            .expect("engine record")
            .trim(),
        "fjall"
    );
    assert!(new.join("fjall").is_dir() && !new.join("db").exists());
    assert!(new.join("audit").join("fjall").is_dir());
    assert!(new.join("audit.head").is_file());
    // sled may rewrite its own files when opened; the server's files beside them are untouched
    let after = file_bytes(&old);
    let server_files = |files: &[(String, Vec<u8>)]| -> Vec<(String, Vec<u8>)> {
        files
            .iter()
            .filter(|(name, _)| name == "audit.head")
            .cloned()
            .collect()
    };
    assert_eq!(server_files(&before), server_files(&after));
    assert!(
        !old.join("store-engine").exists(),
        "the original gained an engine record"
    );

    let (ok, text) = vbc(&["check-index", "--data-dir", &new_s]);
    assert!(ok, "{text}");
    let (ok, text) = vbc(&["audit-verify", "--data-dir", &new_s]);
    assert!(ok && text.contains("audit chain intact"), "{text}");

    let mut server = Server::start_on(&new, &[]);
    let c = client();
    let reads = expected["reads"].as_array().expect("reads");
    assert!(reads.len() >= 10);
    let then_base = expected["base"].as_str().expect("base");
    for read in reads {
        let path = read["path"].as_str().expect("path");
        let resp = c
            .get(server.url(path))
            .header("Accept", FHIR_JSON)
            .send()
            .expect("GET");
        assert_eq!(
            u64::from(resp.status().as_u16()),
            read["status"].as_u64().expect("status"),
            "status of GET {path}"
        );
        let body: Value = resp.json().expect("JSON body");
        assert_eq!(
            normalized(body, &server.base),
            normalized(read["body"].clone(), then_base),
            "GET {path} answers differently after the migration"
        );
    }

    // the copy takes writes: the next version, and sequence numbers after the original's
    let v4 = c
        .put(server.url("Patient/mig-1"))
        .header("Content-Type", FHIR_JSON)
        .json(&json!({"resourceType": "Patient", "id": "mig-1",
            "identifier": [{"system": "urn:mig", "value": "A-3"}]}))
        .send()
        .expect("PUT");
    assert_eq!(v4.status().as_u16(), 200);
    let v4: Value = v4.json().expect("JSON");
    assert_eq!(v4["meta"]["versionId"], "4");
    let history: Value = c
        .get(server.url("_history?_count=1"))
        .header("Accept", FHIR_JSON)
        .send()
        .expect("GET")
        .json()
        .expect("JSON");
    assert_eq!(history["entry"][0]["resource"]["meta"]["versionId"], "4");
    assert_eq!(history["entry"][0]["resource"]["id"], "mig-1");
    let found: Value = c
        .get(server.url("Patient?identifier=urn:mig|A-3"))
        .header("Accept", FHIR_JSON)
        .send()
        .expect("GET")
        .json()
        .expect("JSON");
    assert_eq!(found["total"], 1);

    // the copy's audit trail was converted to the compact trail at start: the release's events
    // are served as they were written, and the chain goes on from them
    assert!(!new.join("audit").exists(), "the earlier trail is removed");
    assert!(new.join("audit-log").join("fjall").is_dir());
    let trail: Value = c
        .get(server.url("AuditEvent?_count=1000"))
        .header("Accept", FHIR_JSON)
        .send()
        .expect("GET")
        .json()
        .expect("JSON");
    let events = trail["entry"].as_array().expect("events");
    let first = &events[0]["resource"];
    assert_eq!(first["id"], "ae-000000000001", "{trail}");
    assert!(first["entity"][0]["description"].is_string(), "{first}");
    let released: u64 = std::fs::read_to_string(old.join("audit.head"))
        .expect("the release's head file")
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("the head names the last event");
    assert!(
        events.len() as u64 > released && released > 0,
        "{} events served, {released} written by the release",
        events.len()
    );
    let verified: Value = c
        .get(server.url("AuditEvent/$verify-chain"))
        .header("Accept", FHIR_JSON)
        .send()
        .expect("GET")
        .json()
        .expect("JSON");
    assert_eq!(verified["parameter"][1]["valueBoolean"], true, "{verified}");
    assert!(server.terminate(), "clean stop");
    let (ok, text) = vbc(&["audit-verify", "--data-dir", &new_s]);
    assert!(ok && text.contains("audit chain intact"), "{text}");
}

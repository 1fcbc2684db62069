//! The audit trail as kept before its compact form: full `AuditEvent` resources (ids
//! `ae-000000000001`...) in a resource store of their own (`DIR/audit`), each carrying its
//! sequence number and the SHA-256 of the previous event's canonical JSON.
//!
//! A server that finds such a trail converts it once into the compact trail ([`convert`]): every
//! event keeps its canonical JSON and so its hash, and the chain goes on from its last link. A
//! stopped server's unconverted trail can still be verified ([`verify`]).

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::audit_log::{
    hex, link_in_json, read_head, unhex, AuditLog, Body, ChainCheck, Entry, Verified,
};
use super::kv::{Engine, Kv};
use super::kv_store::{open_engine, visit_current};
use crate::error::{FhirError, Result};

/// Canonical JSON: object keys sorted, no whitespace; `meta` (set by the store) left out at the
/// top level.
fn canonical(v: &Value, top: bool, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().filter(|k| !(top && *k == "meta")).collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                canonical(&m[*k], false, out);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, false, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The canonical JSON of an event (what its hash is taken over).
pub fn canonical_json(event: &Value) -> String {
    let mut s = String::new();
    canonical(event, true, &mut s);
    s
}

/// The hex SHA-256 of an event's canonical JSON.
pub fn hash_hex(event: &Value) -> String {
    hex(&Sha256::digest(canonical_json(event).as_bytes()))
}

/// The chain link an event's JSON names (sequence, previous hash in hex).
type Link = Option<(u64, String)>;

/// Visit the events of a legacy trail in chain order as entries of the compact trail: (sequence
/// from the id, entry, the link its JSON names, why it cannot be trusted as stored when it
/// cannot).
fn entries(
    db: &dyn Kv,
    visit: &mut dyn FnMut(u64, Entry, Link, Option<String>) -> Result<bool>,
) -> Result<()> {
    let mut last_ms = i64::MIN;
    visit_current(db, "AuditEvent", None, &mut |rec| {
        let seq = rec
            .id
            .strip_prefix("ae-")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let event = crate::fhir::number_text::parse(rec.resource.as_deref().unwrap_or(&[]))
            .map_err(|e| FhirError::Storage(format!("corrupt audit event: {e}")))?;
        let link = link_in_json(&event);
        let previous = link
            .as_ref()
            .and_then(|(_, p)| unhex(p))
            .unwrap_or([0xff; 32]);
        let recorded = event["recorded"]
            .as_str()
            .and_then(crate::clock::parse_instant_ms)
            .unwrap_or(last_ms);
        last_ms = last_ms.max(recorded);
        let doubt = (rec.version != 1).then(|| {
            format!(
                "AuditEvent/{} was rewritten (version {})",
                rec.id, rec.version
            )
        });
        let entry = Entry {
            previous,
            recorded_ms: last_ms,
            body: Body::Legacy(canonical_json(&event)),
        };
        visit(seq, entry, link, doubt)
    })
}

/// Run the chain check over a legacy trail's entries, handing each on to `keep`.
fn check(db: &dyn Kv, keep: &mut dyn FnMut(u64, Entry) -> Result<()>) -> Result<ChainCheck> {
    let mut check = ChainCheck::new();
    let mut intact = true;
    entries(db, &mut |seq, entry, link, doubt| {
        if intact {
            let Body::Legacy(json) = &entry.body else {
                return Ok(false);
            };
            let hash: [u8; 32] = Sha256::digest(json.as_bytes()).into();
            intact = match doubt {
                Some(why) => {
                    check.fail(why);
                    false
                }
                None => check.next(seq, &entry, hash, link)?,
            };
        }
        keep(seq, entry)?;
        Ok(true)
    })?;
    Ok(check)
}

/// Open a legacy trail's engine to read it (on the engine it records; nothing is written to it).
fn open_legacy(dir: &Path) -> Result<std::sync::Arc<dyn Kv>> {
    open_engine(dir, Engine::for_dir(dir)?, 64 * 1024 * 1024)
}

/// Verify a stopped server's unconverted trail in `dir` against its head file.
pub fn verify(dir: &Path, head_file: &Path) -> Result<Verified> {
    let db = open_legacy(dir)?;
    let check = check(&*db, &mut |_, _| Ok(()))?;
    drop(db);
    Ok(check.finish(read_head(head_file)))
}

/// Convert the legacy trail in `legacy` (if there is one) into the compact trail at `target`,
/// then remove it; returns the number of events converted. The conversion is written beside the
/// target and renamed into place, so a crash in the middle starts it again.
pub fn convert(legacy: &Path, target: &Path, head_file: &Path) -> Result<Option<u64>> {
    if !Engine::holds_store(legacy) {
        return Ok(None);
    }
    let io = |e: std::io::Error, p: &Path| FhirError::Storage(format!("{}: {e}", p.display()));
    if target.exists() {
        // converted before a crash kept the old trail from being removed
        std::fs::remove_dir_all(legacy).map_err(|e| io(e, legacy))?;
        return Ok(None);
    }
    let tmp = target.with_extension("converting");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(e, &tmp))?;
    }
    let db = open_legacy(legacy)?;
    let log = AuditLog::open_read_only(&tmp, head_file.to_path_buf())?;
    let mut page: Vec<(u64, Entry)> = Vec::new();
    let mut n = 0u64;
    let check = check(&*db, &mut |seq, entry| {
        page.push((seq, entry));
        n += 1;
        if page.len() >= 1000 {
            log.append_converted(&page)?;
            page.clear();
        }
        Ok(())
    })?;
    if !page.is_empty() {
        log.append_converted(&page)?;
    }
    let verified = check.finish(read_head(head_file));
    if let Some((seq, why)) = &verified.broken {
        tracing::error!(seq, %why, "the audit trail being converted is broken; converted as found");
    }
    log.shutdown()?;
    drop(log);
    drop(db);
    std::fs::rename(&tmp, target).map_err(|e| io(e, &tmp))?;
    std::fs::remove_dir_all(legacy).map_err(|e| io(e, legacy))?;
    tracing::info!(events = n, "audit trail converted to the compact form");
    Ok(Some(n))
}

//! The tamper-evident audit trail: an `AuditEvent` (DICOM/FHIR audit codes) for every access
//! and for every evaluation, report publication, settlement and contract load, kept in a store
//! of its own and chained: each event carries its sequence number and the SHA-256 of the one
//! before it, and a head file holds the hash of the last. [`verify`] walks the chain and reports
//! the first broken link.
//!
//! Events are queued by the request path and written in batches by one writer task, so the
//! request path only builds a JSON value. Events still queued when the process is killed are
//! lost; the chain then simply ends earlier (it never breaks).

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::access::Access;
use super::provenance::CLIENT_ID_SYSTEM;
use crate::clock::{instant, now_ms};
use crate::error::Result;
use crate::interaction::write::create_in;
use crate::store::{self, SharedStore};

/// The extension with an event's place in the chain (`sequence`, `previous`).
pub const CHAIN_EXTENSION: &str = "https://vbc-server.dev/fhir/StructureDefinition/audit-chain";

/// The `previous` hash of the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const AUDIT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
const LOCAL_SUBTYPE: &str = "https://vbc-server.dev/fhir/CodeSystem/audit-subtype";
/// Events a batch writes at most.
const BATCH: usize = 1000;
/// The gauge of events queued and not yet taken by the writer.
const QUEUE_DEPTH: &str = "vbc_audit_queue_depth";

enum Msg {
    Event(Value),
    Flush(oneshot::Sender<()>),
}

/// Where events go: a handle to the writer task (or nowhere, for tools and tests).
#[derive(Clone, Default)]
pub struct Audit {
    tx: Option<mpsc::UnboundedSender<Msg>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Audit({})", if self.tx.is_some() { "on" } else { "off" })
    }
}

/// The last link of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Head {
    seq: u64,
    hash: String,
}

/// The id of the event with a sequence number (ids sort in chain order).
pub fn event_id(seq: u64) -> String {
    format!("ae-{seq:012}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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

/// The SHA-256 (hex) of an event's canonical JSON.
pub fn hash(event: &Value) -> String {
    let mut s = String::new();
    canonical(event, true, &mut s);
    hex(&Sha256::digest(s.as_bytes()))
}

/// An event's (sequence, previous hash), if it carries the chain extension.
fn link_of(event: &Value) -> Option<(u64, String)> {
    let ext = event["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"] == CHAIN_EXTENSION)?;
    let parts = ext["extension"].as_array()?;
    let seq = parts
        .iter()
        .find(|p| p["url"] == "sequence")?
        .get("valueInteger")?
        .as_u64()?;
    let prev = parts
        .iter()
        .find(|p| p["url"] == "previous")?
        .get("valueString")?
        .as_str()?
        .to_string();
    Some((seq, prev))
}

fn chain(event: &mut Value, seq: u64, previous: &str) {
    event["id"] = json!(event_id(seq));
    let link = json!({"url": CHAIN_EXTENSION, "extension": [
        {"url": "sequence", "valueInteger": seq},
        {"url": "previous", "valueString": previous}
    ]});
    match event.get_mut("extension").and_then(Value::as_array_mut) {
        Some(list) => list.insert(0, link),
        None => event["extension"] = json!([link]),
    }
}

fn read_head(path: &Path) -> Option<Head> {
    let text = std::fs::read_to_string(path).ok()?;
    let (seq, hash) = text.trim().split_once(' ')?;
    Some(Head {
        seq: seq.parse().ok()?,
        hash: hash.to_string(),
    })
}

fn write_head(path: &Path, head: &Head) {
    let tmp = path.with_extension("tmp");
    let ok = std::fs::write(&tmp, format!("{} {}\n", head.seq, head.hash))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = ok {
        tracing::error!(error = %e, "cannot write the audit head file");
    }
}

/// The last event in the store (ids sort in chain order).
fn last_event(store: &SharedStore) -> Result<Option<Value>> {
    let mut last: Option<String> = None;
    store.live_ids("AuditEvent", &mut |id| {
        last = Some(id.to_string());
        true
    })?;
    let Some(id) = last else {
        return Ok(None);
    };
    match store.current("AuditEvent", &id)? {
        Some(r) if !r.deleted() => Ok(Some(crate::interaction::read::resource_of(&r)?)),
        _ => Ok(None),
    }
}

impl Audit {
    /// No audit trail (command-line tools, unit tests).
    pub fn off() -> Audit {
        Audit { tx: None }
    }

    /// Start the writer over the audit store; `head_file` records the last link.
    pub fn start(store: SharedStore, head_file: PathBuf) -> Result<Audit> {
        let mut head = match read_head(&head_file) {
            Some(h) => h,
            // no head file (a new trail, or one kept elsewhere): find the end by the ids
            None => match last_event(&store)? {
                Some(ev) => Head {
                    seq: link_of(&ev).map(|(s, _)| s).unwrap_or(0),
                    hash: hash(&ev),
                },
                None => Head {
                    seq: 0,
                    hash: GENESIS.to_string(),
                },
            },
        };
        // the head file is written after its batch commits: a batch stored just before a
        // crash may lie beyond it
        while let Some(rec) = store
            .current("AuditEvent", &event_id(head.seq + 1))?
            .filter(|r| !r.deleted())
        {
            let ev = crate::interaction::read::resource_of(&rec)?;
            head = Head {
                seq: head.seq + 1,
                hash: hash(&ev),
            };
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut events = Vec::new();
                let mut flushes = Vec::new();
                let mut next = Some(first);
                while let Some(m) = next.take() {
                    match m {
                        Msg::Event(e) => events.push(e),
                        Msg::Flush(f) => flushes.push(f),
                    }
                    if events.len() < BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                metrics::gauge!(QUEUE_DEPTH).decrement(events.len() as f64);
                if !events.is_empty() {
                    let mut staged = Vec::with_capacity(events.len());
                    for mut ev in events {
                        let seq = head.seq + 1;
                        chain(&mut ev, seq, &head.hash);
                        head = Head {
                            seq,
                            hash: hash(&ev),
                        };
                        staged.push((event_id(seq), ev));
                    }
                    let written = store::write(store.as_ref(), move |txn| {
                        for (id, ev) in staged {
                            create_in(txn, "AuditEvent", ev, Some(id), None, None)?;
                        }
                        Ok(())
                    })
                    .await;
                    match written {
                        Ok(()) => write_head(&head_file, &head),
                        // the gap stays visible: the next event links to what was lost
                        Err(e) => tracing::error!(error = %e, "audit events were not stored"),
                    }
                }
                for f in flushes {
                    let _ = f.send(());
                }
            }
        });
        Ok(Audit { tx: Some(tx) })
    }

    /// Queue an event (its id and chain link are set when it is written).
    pub fn record(&self, event: Value) {
        if let Some(tx) = &self.tx {
            // counted before it is sent, so the writer never takes more than was counted
            metrics::gauge!(QUEUE_DEPTH).increment(1.0);
            if tx.send(Msg::Event(event)).is_err() {
                metrics::gauge!(QUEUE_DEPTH).decrement(1.0);
            }
        }
    }

    /// Wait until every event queued so far is stored.
    pub async fn flush(&self) {
        if let Some(tx) = &self.tx {
            let (done, wait) = oneshot::channel();
            if tx.send(Msg::Flush(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }
}

/// Who an event's agent is.
fn agent(access: &Access) -> Value {
    let (who, alt, requestor) = match access {
        Access::Client(p) => (
            json!({"reference": p.party, "display": format!("client {}", p.client_id)}),
            Some(p.client_id.clone()),
            true,
        ),
        Access::System => (
            json!({"display": "vbc-server (the server itself, or a request while auth is off)"}),
            None,
            false,
        ),
        Access::Anonymous => (json!({"display": "anonymous (no valid token)"}), None, true),
    };
    let mut a = json!({
        "type": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "IRCP", "display": "information recipient"
        }]},
        "who": who,
        "requestor": requestor
    });
    if let Some(alt) = alt {
        a["altId"] = json!(alt);
        a["who"]["identifier"] = json!({"system": CLIENT_ID_SYSTEM, "value": alt});
    }
    a
}

fn source() -> Value {
    json!({
        "observer": {"display": "vbc-server"},
        "type": [{
            "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
            "code": "4", "display": "Application Server"
        }]
    })
}

/// How a request went: 0 success, 4 minor failure (refused, not found, invalid), 8 serious
/// failure (a server error).
fn outcome(status: u16) -> &'static str {
    match status {
        0..=399 => "0",
        400..=499 => "4",
        _ => "8",
    }
}

/// What an HTTP request was, from its method and path: (restful-interaction code, action).
pub fn interaction(method: &str, path: &str) -> (&'static str, &'static str) {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs.iter().any(|s| s.starts_with('$')) {
        return ("operation", "E");
    }
    match (method, segs.as_slice()) {
        ("POST", []) => ("transaction", "E"),
        ("GET", []) => ("search-system", "E"),
        ("GET", ["_history"]) => ("history-system", "R"),
        ("GET", [_, "_history"]) => ("history-type", "R"),
        ("GET", [_, _, "_history"]) => ("history-instance", "R"),
        ("GET", [_, _, "_history", _]) => ("vread", "R"),
        ("GET", [_, _, _]) => ("search-type", "E"),
        ("GET", [_, _]) => ("read", "R"),
        ("GET", [_]) | ("POST", [_, "_search"]) => ("search-type", "E"),
        ("POST", [_]) => ("create", "C"),
        ("PUT", _) => ("update", "U"),
        ("PATCH", _) => ("patch", "U"),
        ("DELETE", _) => ("delete", "D"),
        _ => ("operation", "E"),
    }
}

/// The AuditEvent of one HTTP request: who, what (the resource or the query), when, outcome.
pub fn access_event(
    access: &Access,
    method: &str,
    path: &str,
    query: Option<&str>,
    status: u16,
    request_id: &str,
    peer: Option<&str>,
) -> Value {
    use base64::Engine as _;
    let (code, action) = interaction(method, path);
    let mut subtype = vec![json!({"system": RESTFUL, "code": code})];
    if let Some(op) = path.split('/').find(|s| s.starts_with('$')) {
        subtype.push(json!({"system": LOCAL_SUBTYPE, "code": op.trim_start_matches('$')}));
    }
    let mut agent = agent(access);
    if let Some(peer) = peer {
        agent["network"] = json!({"address": peer, "type": "2"});
    }
    let mut entity = json!({
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                 "code": "2", "display": "System Object"},
        "description": format!("{method} {path}"),
        "detail": [{"type": "request-id", "valueString": request_id}]
    });
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if let [t, id, ..] = segs.as_slice() {
        if !t.starts_with('$') && !id.starts_with('$') && !id.starts_with('_') {
            entity["what"] = json!({"reference": format!("{t}/{id}")});
        }
    }
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        entity["query"] = json!(base64::engine::general_purpose::STANDARD.encode(q));
    }
    json!({
        "resourceType": "AuditEvent",
        "type": {"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"},
        "subtype": subtype,
        "action": action,
        "recorded": instant(now_ms()),
        "outcome": outcome(status),
        "outcomeDesc": format!("HTTP {status}"),
        "agent": [agent],
        "source": source(),
        "entity": [entity]
    })
}

/// What the server did on its own account (or for a request): a contract load, a report
/// publication, a settlement or an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// A contract version was loaded (DICOM Import).
    ContractLoad,
    /// A report set was published (DICOM Export).
    Publication,
    /// A settlement (the money of a period) was computed and published.
    Settlement,
    /// Outcomes were evaluated for a caller (DICOM Query).
    Evaluation,
}

/// The AuditEvent of an activity on resources (`Type/id` references).
pub fn activity_event(
    access: &Access,
    activity: Activity,
    description: &str,
    resources: &[String],
) -> Value {
    let (code, display, action, sub) = match activity {
        Activity::ContractLoad => ("110107", "Import", "C", "contract-load"),
        Activity::Publication => ("110106", "Export", "C", "report-publication"),
        Activity::Settlement => ("110106", "Export", "C", "settlement"),
        Activity::Evaluation => ("110112", "Query", "E", "evaluation"),
    };
    let mut entities: Vec<Value> = resources
        .iter()
        .map(|r| {
            json!({
                "what": {"reference": r},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                         "code": "2", "display": "System Object"}
            })
        })
        .collect();
    if entities.is_empty() {
        entities.push(json!({"description": description}));
    } else if let Some(first) = entities.first_mut() {
        first["description"] = json!(description);
    }
    json!({
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": LOCAL_SUBTYPE, "code": sub}],
        "action": action,
        "recorded": instant(now_ms()),
        "outcome": "0",
        "agent": [agent(access)],
        "source": source(),
        "entity": entities
    })
}

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Events checked.
    pub events: u64,
    /// The first broken link, if any: (sequence of the event whose link fails, why).
    pub broken: Option<(u64, String)>,
}

/// Walk the chain in the audit store and check every link (and the head file when given).
pub fn verify(store: &SharedStore, head_file: Option<&Path>) -> Result<Verified> {
    let mut expected_seq = 1u64;
    let mut previous = GENESIS.to_string();
    let mut after: Option<String> = None;
    let mut count = 0u64;
    loop {
        let page = store.list("AuditEvent", after.as_deref(), 1000)?;
        let Some(last) = page.last() else {
            break;
        };
        after = Some(last.id.clone());
        for rec in &page {
            count += 1;
            let ev = crate::interaction::read::resource_of(rec)?;
            let broken = |why: String| {
                Ok(Verified {
                    events: count,
                    broken: Some((expected_seq, why)),
                })
            };
            let Some((seq, prev)) = link_of(&ev) else {
                return broken(format!("AuditEvent/{} carries no chain link", rec.id));
            };
            if seq != expected_seq || rec.id != event_id(seq) {
                return broken(format!(
                    "AuditEvent/{} has sequence {seq} where {expected_seq} was expected (an event was removed or inserted)",
                    rec.id
                ));
            }
            if prev != previous {
                return broken(format!(
                    "AuditEvent/{} names a previous hash that does not match AuditEvent/{}: that event was modified",
                    rec.id,
                    event_id(seq.saturating_sub(1))
                ));
            }
            if rec.version != 1 {
                return broken(format!(
                    "AuditEvent/{} was rewritten (version {})",
                    rec.id, rec.version
                ));
            }
            previous = hash(&ev);
            expected_seq += 1;
        }
    }
    if let Some(head) = head_file.and_then(read_head) {
        let last_seq = expected_seq - 1;
        if head.seq == last_seq && head.hash != previous {
            return Ok(Verified {
                events: count,
                broken: Some((
                    last_seq,
                    format!(
                        "AuditEvent/{} does not match the recorded head hash: it was modified",
                        event_id(last_seq)
                    ),
                )),
            });
        }
        if head.seq > last_seq {
            return Ok(Verified {
                events: count,
                broken: Some((
                    last_seq + 1,
                    format!(
                        "the head file records {} events but the chain ends at {last_seq}: events were removed",
                        head.seq
                    ),
                )),
            });
        }
    }
    Ok(Verified {
        events: count,
        broken: None,
    })
}

/// A Parameters answer of a verification.
pub fn verified_parameters(v: &Verified) -> Value {
    let mut p = vec![
        json!({"name": "events", "valueInteger": v.events}),
        json!({"name": "intact", "valueBoolean": v.broken.is_none()}),
    ];
    if let Some((seq, why)) = &v.broken {
        p.push(json!({"name": "brokenAt", "valueInteger": seq}));
        p.push(json!({"name": "reason", "valueString": why}));
    }
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("Parameters"));
    m.insert("parameter".into(), Value::Array(p));
    Value::Object(m)
}

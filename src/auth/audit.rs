//! The tamper-evident audit trail's events: an `AuditEvent` (DICOM/FHIR audit codes) for every
//! access and for every evaluation, report publication, settlement and contract load.
//!
//! The request path builds a compact [`Event`] (who, what, when, outcome) and queues it on the
//! trail ([`crate::store::audit_log`]), which chains and stores it; [`render`] turns a stored
//! entry back into the `AuditEvent` resource that reads, history and search answer with, its
//! place in the chain shown in an extension (`sequence`, `previous`).

use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::access::Access;
use super::provenance::CLIENT_ID_SYSTEM;
use crate::clock::{instant, now_ms};
use crate::error::{FhirError, Result};
use crate::store::audit_log::{hex, AuditLog, Body, Entry, Verified, CHAIN_EXTENSION};

const AUDIT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";
const RESTFUL: &str = "http://hl7.org/fhir/restful-interaction";
const LOCAL_SUBTYPE: &str = "https://vbc-server.dev/fhir/CodeSystem/audit-subtype";

/// Where events go: the trail (or nowhere, for tools and tests).
#[derive(Clone, Default)]
pub struct Audit {
    log: Option<Arc<AuditLog>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Audit({})",
            if self.log.is_some() { "on" } else { "off" }
        )
    }
}

impl Audit {
    /// No audit trail (command-line tools, unit tests).
    pub fn off() -> Audit {
        Audit { log: None }
    }

    /// Events go to `log`.
    pub fn on(log: Arc<AuditLog>) -> Audit {
        Audit { log: Some(log) }
    }

    /// The trail, when one is kept.
    pub fn log(&self) -> Option<&Arc<AuditLog>> {
        self.log.as_ref()
    }

    /// Queue an event (its id and chain link are set when it is written).
    pub fn record(&self, event: Event) {
        if let Some(log) = &self.log {
            match postcard::to_allocvec(&event) {
                Ok(bytes) => log.record(bytes),
                Err(e) => tracing::error!(error = %e, "an audit event could not be encoded"),
            }
        }
    }

    /// Wait until every event queued so far is stored.
    pub async fn flush(&self) {
        if let Some(log) = &self.log {
            log.flush().await;
        }
    }
}

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Agent {
    /// The server itself, or a request while auth is off.
    Server,
    /// A request without a valid token.
    Anonymous,
    /// An authenticated client of a party.
    Client {
        /// The party (`Organization/[id]`).
        party: String,
        /// The client id.
        client_id: String,
    },
}

impl Agent {
    /// The agent of an access.
    pub fn of(access: &Access) -> Agent {
        match access {
            Access::Client(p) => Agent::Client {
                party: p.party.clone(),
                client_id: p.client_id.clone(),
            },
            Access::System => Agent::Server,
            Access::Anonymous => Agent::Anonymous,
        }
    }
}

/// A request id: a UUID in 16 bytes, anything else as given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestId {
    /// A UUID (the server's own request ids).
    Uuid([u8; 16]),
    /// Another id a client sent.
    Text(String),
}

impl RequestId {
    fn of(s: &str) -> RequestId {
        match uuid::Uuid::parse_str(s) {
            Ok(u) if u.hyphenated().to_string() == s => RequestId::Uuid(*u.as_bytes()),
            _ => RequestId::Text(s.to_string()),
        }
    }

    fn text(&self) -> String {
        match self {
            RequestId::Uuid(b) => uuid::Uuid::from_bytes(*b).hyphenated().to_string(),
            RequestId::Text(s) => s.clone(),
        }
    }
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum What {
    /// An HTTP request.
    Request {
        /// The method.
        method: String,
        /// The path.
        path: String,
        /// The query string, when there was one.
        query: Option<String>,
        /// The response status.
        status: u16,
        /// The request id.
        request_id: RequestId,
        /// The peer's address.
        peer: Option<IpAddr>,
    },
    /// Something the server did on its own account or for a request.
    Activity {
        /// What kind.
        activity: Activity,
        /// In words.
        description: String,
        /// The resources concerned (`Type/id`).
        resources: Vec<String>,
    },
}

/// One audited event in its compact form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When it happened (ms since the epoch).
    pub at_ms: i64,
    /// Who.
    pub agent: Agent,
    /// What.
    pub what: What,
}

pub use crate::store::audit_log::event_id;

/// The sequence number an event id names.
pub fn seq_of_id(id: &str) -> Option<u64> {
    let n = id.strip_prefix("ae-")?;
    (n.len() == 12 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// Who an event's agent is.
fn agent(agent: &Agent) -> Value {
    let (who, alt, requestor) = match agent {
        Agent::Client { party, client_id } => (
            json!({"reference": party, "display": format!("client {client_id}")}),
            Some(client_id.clone()),
            true,
        ),
        Agent::Server => (
            json!({"display": "vbc-server (the server itself, or a request while auth is off)"}),
            None,
            false,
        ),
        Agent::Anonymous => (json!({"display": "anonymous (no valid token)"}), None, true),
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
pub fn outcome(status: u16) -> &'static str {
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

/// The event of one HTTP request: who, what (the resource or the query), when, outcome.
pub fn access_event(
    access: &Access,
    method: &str,
    path: &str,
    query: Option<&str>,
    status: u16,
    request_id: &str,
    peer: Option<IpAddr>,
) -> Event {
    Event {
        at_ms: now_ms(),
        agent: Agent::of(access),
        what: What::Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.filter(|q| !q.is_empty()).map(str::to_string),
            status,
            request_id: RequestId::of(request_id),
            peer,
        },
    }
}

/// What the server did on its own account (or for a request): a contract load, a report
/// publication, a settlement or an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// The event of an activity on resources (`Type/id` references).
pub fn activity_event(
    access: &Access,
    activity: Activity,
    description: &str,
    resources: &[String],
) -> Event {
    Event {
        at_ms: now_ms(),
        agent: Agent::of(access),
        what: What::Activity {
            activity,
            description: description.to_string(),
            resources: resources.to_vec(),
        },
    }
}

/// The AuditEvent fields of a request.
fn request_fields(
    agent_of: &Agent,
    method: &str,
    path: &str,
    query: Option<&str>,
    status: u16,
    request_id: &RequestId,
    peer: Option<IpAddr>,
) -> Map<String, Value> {
    use base64::Engine as _;
    let (code, action) = interaction(method, path);
    let mut subtype = vec![json!({"system": RESTFUL, "code": code})];
    if let Some(op) = path.split('/').find(|s| s.starts_with('$')) {
        subtype.push(json!({"system": LOCAL_SUBTYPE, "code": op.trim_start_matches('$')}));
    }
    let mut agent = agent(agent_of);
    if let Some(peer) = peer {
        agent["network"] = json!({"address": peer.to_string(), "type": "2"});
    }
    let mut entity = json!({
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                 "code": "2", "display": "System Object"},
        "description": format!("{method} {path}"),
        "detail": [{"type": "request-id", "valueString": request_id.text()}]
    });
    if let Some(what) = entity_reference(path) {
        entity["what"] = json!({ "reference": what });
    }
    if let Some(q) = query {
        entity["query"] = json!(base64::engine::general_purpose::STANDARD.encode(q));
    }
    let mut m = Map::new();
    m.insert(
        "type".into(),
        json!({"system": AUDIT_TYPE, "code": "rest", "display": "RESTful Operation"}),
    );
    m.insert("subtype".into(), Value::Array(subtype));
    m.insert("action".into(), json!(action));
    m.insert("outcome".into(), json!(outcome(status)));
    m.insert("outcomeDesc".into(), json!(format!("HTTP {status}")));
    m.insert("agent".into(), json!([agent]));
    m.insert("entity".into(), json!([entity]));
    m
}

/// The resource a request's path names (`Type/id`), if it names one.
pub fn entity_reference(path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        [t, id, ..] if !t.starts_with('$') && !id.starts_with('$') && !id.starts_with('_') => {
            Some(format!("{t}/{id}"))
        }
        _ => None,
    }
}

/// The DICOM event type, its display, the action and the local subtype of an activity.
pub fn activity_codes(
    activity: Activity,
) -> (&'static str, &'static str, &'static str, &'static str) {
    match activity {
        Activity::ContractLoad => ("110107", "Import", "C", "contract-load"),
        Activity::Publication => ("110106", "Export", "C", "report-publication"),
        Activity::Settlement => ("110106", "Export", "C", "settlement"),
        Activity::Evaluation => ("110112", "Query", "E", "evaluation"),
    }
}

/// The AuditEvent fields of an activity.
fn activity_fields(
    agent_of: &Agent,
    activity: Activity,
    description: &str,
    resources: &[String],
) -> Map<String, Value> {
    let (code, display, action, sub) = activity_codes(activity);
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
        entities.push(json!({ "description": description }));
    } else if let Some(first) = entities.first_mut() {
        first["description"] = json!(description);
    }
    let mut m = Map::new();
    m.insert(
        "type".into(),
        json!({"system": DCM, "code": code, "display": display}),
    );
    m.insert(
        "subtype".into(),
        json!([{"system": LOCAL_SUBTYPE, "code": sub}]),
    );
    m.insert("action".into(), json!(action));
    m.insert("outcome".into(), json!("0"));
    m.insert("agent".into(), json!([agent(agent_of)]));
    m.insert("entity".into(), Value::Array(entities));
    m
}

/// Decode a compact event.
pub fn decode_event(bytes: &[u8]) -> Result<Event> {
    postcard::from_bytes(bytes).map_err(|e| FhirError::Storage(format!("corrupt audit event: {e}")))
}

/// The `AuditEvent` resource of the entry at `seq`.
pub fn render(seq: u64, entry: &Entry) -> Result<Value> {
    let meta = json!({"versionId": "1", "lastUpdated": instant(entry.recorded_ms)});
    let event = match &entry.body {
        Body::Legacy(text) => {
            let mut v = crate::fhir::number_text::parse(text.as_bytes())
                .map_err(|e| FhirError::Storage(format!("corrupt audit event: {e}")))?;
            if let Some(m) = v.as_object_mut() {
                m.insert("meta".into(), meta);
            }
            return Ok(v);
        }
        Body::Compact(bytes) => decode_event(bytes)?,
    };
    let fields = match &event.what {
        What::Request {
            method,
            path,
            query,
            status,
            request_id,
            peer,
        } => request_fields(
            &event.agent,
            method,
            path,
            query.as_deref(),
            *status,
            request_id,
            *peer,
        ),
        What::Activity {
            activity,
            description,
            resources,
        } => activity_fields(&event.agent, *activity, description, resources),
    };
    let at = instant(event.at_ms);
    let mut m = Map::new();
    m.insert("resourceType".into(), json!("AuditEvent"));
    m.insert("id".into(), json!(event_id(seq)));
    m.insert("meta".into(), meta);
    m.insert(
        "extension".into(),
        json!([{"url": CHAIN_EXTENSION, "extension": [
            {"url": "sequence", "valueInteger": seq},
            {"url": "previous", "valueString": hex(&entry.previous)}
        ]}]),
    );
    let mut fields = fields;
    for k in ["type", "subtype", "action"] {
        if let Some(v) = fields.remove(k) {
            m.insert(k.into(), v);
        }
    }
    m.insert("period".into(), json!({"start": at, "end": at}));
    m.insert("recorded".into(), json!(instant(entry.recorded_ms)));
    for k in ["outcome", "outcomeDesc", "agent"] {
        if let Some(v) = fields.remove(k) {
            m.insert(k.into(), v);
        }
    }
    m.insert("source".into(), source());
    if let Some(v) = fields.remove("entity") {
        m.insert("entity".into(), v);
    }
    Ok(Value::Object(m))
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

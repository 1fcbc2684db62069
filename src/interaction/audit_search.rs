//! `GET AuditEvent?...`: search over the audit trail itself (not the resource index), in chain
//! order. A date range (`date`, `_lastUpdated`: when an event was recorded) is a range of
//! sequence numbers found by bisection, because the trail records in time order; the other
//! parameters are tested on each event of that range.
//!
//! Parameters: `date`, `_lastUpdated` (every prefix), `_id`, `agent` (the client's party),
//! `altid` (client id), `entity` (a resource the request or activity named), `patient` (a
//! Patient it named), `outcome`, `action`, `subtype`, `type`, `address` (the peer's IP,
//! starts-with), and `_count`, `_sort` (`date`, `-date`, `_lastUpdated`, `-_lastUpdated`),
//! `_summary=count`, `_total`. Other parameters are ignored and left out of the self link (an
//! error under `Prefer: handling=strict`).

use serde_json::{json, Value};

use super::{new_bundle, with_total, Services};
use crate::auth::access::Act;
use crate::auth::audit::{
    activity_codes, decode_event, entity_reference, event_id, interaction, outcome, render,
    seq_of_id, Agent, Event, What,
};
use crate::error::{FhirError, Result};
use crate::search::matcher::Prefix;
use crate::search::values::{parse_date_range, Range};
use crate::store::audit_log::{AuditLog, Body, Entry};

/// The search parameters of the trail (declared in the CapabilityStatement).
pub const PARAMS: &[(&str, &str)] = &[
    ("date", "date"),
    ("_lastUpdated", "date"),
    ("_id", "token"),
    ("agent", "reference"),
    ("altid", "token"),
    ("entity", "reference"),
    ("patient", "reference"),
    ("outcome", "token"),
    ("action", "token"),
    ("subtype", "token"),
    ("type", "token"),
    ("address", "string"),
];

/// What a search tests of one event.
#[derive(Debug, Default)]
struct Facts {
    party: Option<String>,
    client: Option<String>,
    entities: Vec<String>,
    outcome: String,
    action: String,
    subtypes: Vec<String>,
    event_type: String,
    address: Option<String>,
}

/// The facts of a compact event.
fn facts_of_event(e: &Event) -> Facts {
    let mut f = Facts::default();
    if let Agent::Client { party, client_id } = &e.agent {
        f.party = Some(party.clone());
        f.client = Some(client_id.clone());
    }
    match &e.what {
        What::Request {
            method,
            path,
            status,
            peer,
            ..
        } => {
            let (code, action) = interaction(method, path);
            f.entities.extend(entity_reference(path));
            f.outcome = outcome(*status).into();
            f.action = action.into();
            f.subtypes.push(code.into());
            if let Some(op) = path.split('/').find(|s| s.starts_with('$')) {
                f.subtypes.push(op.trim_start_matches('$').into());
            }
            f.event_type = "rest".into();
            f.address = peer.map(|p| p.to_string());
        }
        What::Activity {
            activity,
            resources,
            ..
        } => {
            let (code, _, action, sub) = activity_codes(*activity);
            f.entities = resources.clone();
            f.outcome = "0".into();
            f.action = action.into();
            f.subtypes.push(sub.into());
            f.event_type = code.into();
        }
    }
    f
}

/// The facts of a rendered `AuditEvent` (an event of the earlier trail).
fn facts_of_json(v: &Value) -> Facts {
    let s = |x: &Value| x.as_str().map(str::to_string);
    let agent = &v["agent"][0];
    let entities = v["entity"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| s(&e["what"]["reference"]))
                .collect()
        })
        .unwrap_or_default();
    let subtypes = v["subtype"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| s(&c["code"])).collect())
        .unwrap_or_default();
    Facts {
        party: s(&agent["who"]["reference"]),
        client: s(&agent["altId"]),
        entities,
        outcome: s(&v["outcome"]).unwrap_or_default(),
        action: s(&v["action"]).unwrap_or_default(),
        subtypes,
        event_type: s(&v["type"]["code"]).unwrap_or_default(),
        address: s(&agent["network"]["address"]),
    }
}

fn facts(seq: u64, entry: &Entry) -> Result<Facts> {
    Ok(match &entry.body {
        Body::Compact(b) => facts_of_event(&decode_event(b)?),
        Body::Legacy(_) => facts_of_json(&render(seq, entry)?),
    })
}

/// One parameter occurrence: its values (any may match).
enum Test {
    /// Recorded within one of these (prefix, range) tests.
    Date(Vec<(Prefix, Range)>),
    /// One of these sequence numbers.
    Ids(Vec<u64>),
    /// The party (a reference).
    Agent(Vec<String>),
    /// The client id.
    AltId(Vec<String>),
    /// A named resource (reference; `patient` only Patients).
    Entity(Vec<String>),
    /// The outcome code.
    Outcome(Vec<String>),
    /// The action code.
    Action(Vec<String>),
    /// A subtype code.
    Subtype(Vec<String>),
    /// The type code.
    Type(Vec<String>),
    /// The peer address starts with one of these.
    Address(Vec<String>),
}

fn date_holds(p: Prefix, s: Range, t: i64) -> bool {
    match p {
        Prefix::Eq | Prefix::Ap => s.low <= t && t < s.high,
        Prefix::Ne => !(s.low <= t && t < s.high),
        Prefix::Gt | Prefix::Sa => t >= s.high,
        Prefix::Ge => t >= s.low,
        Prefix::Lt | Prefix::Eb => t < s.low,
        Prefix::Le => t < s.high,
    }
}

/// The recorded-time bounds `[lo, hi)` every match of a date test lies in.
fn date_bounds(tests: &[(Prefix, Range)]) -> (i64, i64) {
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for (p, s) in tests {
        let (l, h) = match p {
            Prefix::Eq | Prefix::Ap => (s.low, s.high),
            Prefix::Gt | Prefix::Sa => (s.high, i64::MAX),
            Prefix::Ge => (s.low, i64::MAX),
            Prefix::Lt | Prefix::Eb => (i64::MIN, s.low),
            Prefix::Le => (i64::MIN, s.high),
            Prefix::Ne => (i64::MIN, i64::MAX),
        };
        lo = lo.min(l);
        hi = hi.max(h);
    }
    (lo, hi)
}

/// A token value's code (`system|code` or `code`).
fn code(v: &str) -> String {
    v.rsplit_once('|').map_or(v, |(_, c)| c).to_string()
}

/// A reference value as the trail keeps it (`Type/id`), relative to `base`.
fn reference(v: &str, base: &str, default_type: Option<&str>) -> String {
    let v = v
        .strip_prefix(base)
        .map(|r| r.trim_start_matches('/'))
        .unwrap_or(v);
    match default_type {
        Some(t) if !v.contains('/') => format!("{t}/{v}"),
        _ => v.to_string(),
    }
}

impl Test {
    fn holds(&self, seq: u64, recorded: i64, f: &Facts) -> bool {
        let any = |vals: &[String], x: &str| vals.iter().any(|v| v == x);
        match self {
            Test::Date(t) => t.iter().any(|(p, s)| date_holds(*p, *s, recorded)),
            Test::Ids(ids) => ids.contains(&seq),
            Test::Agent(v) => f.party.as_deref().is_some_and(|p| any(v, p)),
            Test::AltId(v) => f.client.as_deref().is_some_and(|c| any(v, c)),
            Test::Entity(v) => f.entities.iter().any(|e| any(v, e)),
            Test::Outcome(v) => any(v, &f.outcome),
            Test::Action(v) => any(v, &f.action),
            Test::Subtype(v) => f.subtypes.iter().any(|s| any(v, s)),
            Test::Type(v) => any(v, &f.event_type),
            Test::Address(v) => f
                .address
                .as_deref()
                .is_some_and(|a| v.iter().any(|x| a.starts_with(x.as_str()))),
        }
    }

    /// True when the test needs the event's facts (not only its place and time).
    fn needs_facts(&self) -> bool {
        !matches!(self, Test::Date(_) | Test::Ids(_))
    }
}

/// A parsed search.
struct Query {
    tests: Vec<Test>,
    /// The pairs used (for the self link).
    kept: Vec<(String, String)>,
    count: usize,
    descending: bool,
    count_only: bool,
    total: bool,
    cursor: Option<u64>,
}

fn parse(
    pairs: &[(String, String)],
    base: &str,
    default_count: usize,
    max_count: usize,
    strict: bool,
) -> Result<Query> {
    let mut q = Query {
        tests: Vec::new(),
        kept: Vec::new(),
        count: default_count,
        descending: false,
        count_only: false,
        total: true,
        cursor: None,
    };
    let mut problems = Vec::new();
    for (k, v) in pairs {
        let vals = || -> Vec<String> {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        };
        let codes = || -> Vec<String> { vals().iter().map(|x| code(x)).collect() };
        let test = match k.as_str() {
            "date" | "_lastUpdated" => {
                let mut t = Vec::new();
                for x in vals() {
                    let (p, rest) = Prefix::split(&x);
                    match parse_date_range(rest) {
                        Some(r) => t.push((p, r)),
                        None => problems.push(format!("{k}: '{x}' is not a valid date search value (prefix eq|ne|gt|lt|ge|le|sa|eb|ap, then YYYY[-MM[-DD[Thh:mm[:ss[.fff]][Z|±hh:mm]]]])")),
                    }
                }
                Some(Test::Date(t))
            }
            "_id" => {
                let mut ids = Vec::new();
                for x in vals() {
                    // an id that is no event's matches nothing
                    ids.push(seq_of_id(&x).unwrap_or(0));
                }
                Some(Test::Ids(ids))
            }
            "agent" => Some(Test::Agent(
                vals()
                    .iter()
                    .map(|x| reference(x, base, Some("Organization")))
                    .collect(),
            )),
            "altid" => Some(Test::AltId(codes())),
            "entity" => Some(Test::Entity(
                vals().iter().map(|x| reference(x, base, None)).collect(),
            )),
            "patient" => Some(Test::Entity(
                vals()
                    .iter()
                    .map(|x| reference(x, base, Some("Patient")))
                    .collect(),
            )),
            "outcome" => Some(Test::Outcome(codes())),
            "action" => Some(Test::Action(codes())),
            "subtype" => Some(Test::Subtype(codes())),
            "type" => Some(Test::Type(codes())),
            "address" => Some(Test::Address(vals())),
            "_count" => {
                match v.trim().parse::<usize>() {
                    Ok(n) => q.count = n.min(max_count),
                    Err(_) => problems.push(format!("_count: '{v}' is not a number")),
                }
                None
            }
            "_sort" => {
                match v.trim() {
                    "date" | "_lastUpdated" | "_id" => q.descending = false,
                    "-date" | "-_lastUpdated" | "-_id" => q.descending = true,
                    other => problems.push(format!(
                        "_sort: the audit trail sorts by date or -date, not '{other}'"
                    )),
                }
                None
            }
            "_summary" => {
                match v.trim() {
                    "count" => q.count_only = true,
                    "false" | "true" => {}
                    other => problems.push(format!(
                        "_summary: the audit trail answers count, true or false, not '{other}'"
                    )),
                }
                None
            }
            "_total" => {
                q.total = v.trim() != "none";
                None
            }
            "_cursor" => {
                match v.trim().parse::<u64>() {
                    Ok(c) => q.cursor = Some(c),
                    Err(_) => problems.push(format!("_cursor: '{v}' is no page position")),
                }
                continue;
            }
            "_format" | "_pretty" => continue,
            _ => {
                if strict {
                    problems.push(format!(
                        "'{k}' is not a search parameter of the audit trail (it has {})",
                        PARAMS
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                continue;
            }
        };
        if let Some(t) = test {
            q.tests.push(t);
        }
        q.kept.push((k.clone(), v.clone()));
    }
    if !problems.is_empty() {
        return Err(FhirError::BadRequest(problems.join("; ")));
    }
    Ok(q)
}

/// The sequence range `[from, to)` the date and id tests allow.
fn seq_range(log: &AuditLog, tests: &[Test]) -> Result<(u64, u64)> {
    let mut from = 1u64;
    let mut to = log.last_seq()? + 1;
    for t in tests {
        match t {
            Test::Date(d) if !d.is_empty() => {
                let (lo, hi) = date_bounds(d);
                if lo > i64::MIN {
                    from = from.max(log.first_recorded_at_or_after(lo)?);
                }
                if hi < i64::MAX {
                    to = to.min(log.first_recorded_at_or_after(hi)?);
                }
            }
            Test::Ids(ids) => {
                from = from.max(ids.iter().copied().min().unwrap_or(0));
                to = to.min(ids.iter().copied().max().unwrap_or(0).saturating_add(1));
            }
            _ => {}
        }
    }
    Ok((from, to))
}

impl Services {
    /// Search the audit trail; `base` is the server base URL for links.
    pub fn search_audit(
        &self,
        pairs: &[(String, String)],
        base: &str,
        strict: bool,
    ) -> Result<Value> {
        self.access.allow(Act::Search, "AuditEvent")?;
        let log = self
            .audit
            .log()
            .ok_or_else(|| FhirError::NotFound("this server keeps no audit trail".into()))?;
        let q = parse(
            pairs,
            base,
            self.limits.default_page_size,
            self.limits.max_page_size,
            strict,
        )?;
        let (mut from, mut to) = seq_range(log, &q.tests)?;
        // one date value without `ne` is exactly its sequence range; anything else is tested
        let filtered = q
            .tests
            .iter()
            .any(|t| !matches!(t, Test::Date(d) if d.len() == 1 && d[0].0 != Prefix::Ne));
        let needs_facts = q.tests.iter().any(Test::needs_facts);
        let matches = |seq: u64, entry: &Entry| -> Result<bool> {
            let f = if needs_facts {
                facts(seq, entry)?
            } else {
                Facts::default()
            };
            Ok(q.tests.iter().all(|t| t.holds(seq, entry.recorded_ms, &f)))
        };
        // the total: the length of the range, or a count of the matches in it
        let total = if !(q.total || q.count_only) {
            None
        } else if !filtered {
            Some(to.saturating_sub(from))
        } else {
            let mut n = 0u64;
            log.visit(from, to, false, &mut |seq, entry| {
                n += u64::from(matches(seq, &entry)?);
                Ok(true)
            })?;
            Some(n)
        };
        let mut page: Vec<(u64, Entry)> = Vec::new();
        let mut more = false;
        if !q.count_only && q.count > 0 {
            if let Some(c) = q.cursor {
                if q.descending {
                    to = to.min(c);
                } else {
                    from = from.max(c.saturating_add(1));
                }
            }
            log.visit(from, to, q.descending, &mut |seq, entry| {
                if !matches(seq, &entry)? {
                    return Ok(true);
                }
                if page.len() == q.count {
                    more = true;
                    return Ok(false);
                }
                page.push((seq, entry));
                Ok(true)
            })?;
        }
        let link = |cursor: Option<u64>| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            ser.extend_pairs(
                q.kept
                    .iter()
                    .filter(|(k, _)| k != "_count")
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            ser.append_pair("_count", &q.count.to_string());
            if let Some(c) = cursor {
                ser.append_pair("_cursor", &c.to_string());
            }
            format!("{base}/AuditEvent?{}", ser.finish())
        };
        let self_url = {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            ser.extend_pairs(q.kept.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if let Some(c) = q.cursor {
                ser.append_pair("_cursor", &c.to_string());
            }
            format!("{base}/AuditEvent?{}", ser.finish())
        };
        let mut links = vec![json!({"relation": "self", "url": self_url})];
        if !q.count_only {
            links.push(json!({"relation": "first", "url": link(None)}));
            if more {
                if let Some((last, _)) = page.last() {
                    links.push(json!({"relation": "next", "url": link(Some(*last))}));
                }
            }
        }
        let mut entries = Vec::with_capacity(page.len());
        for (seq, entry) in &page {
            entries.push(json!({
                "fullUrl": format!("{base}/AuditEvent/{}", event_id(*seq)),
                "resource": render(*seq, entry)?,
                "search": {"mode": "match"}
            }));
        }
        let bundle = new_bundle("searchset", links, entries);
        Ok(match total {
            Some(total) => with_total(bundle, total),
            None => bundle,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Range {
        parse_date_range(s).expect("date")
    }

    #[test]
    fn date_prefixes_on_a_recorded_instant() {
        let t = r("2026-12-03T10:00:00Z").low;
        assert!(date_holds(Prefix::Eq, r("2026-12-03"), t));
        assert!(!date_holds(Prefix::Eq, r("2026-12-04"), t));
        assert!(date_holds(Prefix::Ne, r("2026-12-04"), t));
        assert!(date_holds(Prefix::Ge, r("2026-12-03T10:00:00Z"), t));
        assert!(!date_holds(Prefix::Gt, r("2026-12-03T10:00:00Z"), t));
        assert!(date_holds(Prefix::Gt, r("2026-12-03T09:59:59Z"), t));
        assert!(date_holds(Prefix::Le, r("2026-12-03"), t));
        assert!(!date_holds(Prefix::Lt, r("2026-12-03"), t));
        assert!(date_holds(Prefix::Lt, r("2026-12-04"), t));
        assert_eq!(
            date_bounds(&[(Prefix::Ge, r("2026-12-03")), (Prefix::Lt, r("2026-12-01"))]),
            (i64::MIN, i64::MAX)
        );
        assert_eq!(
            date_bounds(&[(Prefix::Eq, r("2026-12-03"))]),
            (r("2026-12-03").low, r("2026-12-03").high)
        );
    }

    #[test]
    fn references_and_codes_are_taken_as_the_trail_keeps_them() {
        assert_eq!(
            reference("http://x/fhir/Patient/1", "http://x/fhir", None),
            "Patient/1"
        );
        assert_eq!(reference("1", "http://x", Some("Patient")), "Patient/1");
        assert_eq!(
            reference("org-a", "http://x", Some("Organization")),
            "Organization/org-a"
        );
        assert_eq!(
            code("http://terminology.hl7.org/CodeSystem/audit-event-outcome|4"),
            "4"
        );
    }
}

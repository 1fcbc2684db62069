//! history at instance, type and system level, as `history` Bundles with cursor paging.

use serde_json::{json, Value};

use super::{instant, new_bundle, read::resource_of, Services};
use crate::auth::access::{Access, Act};
use crate::error::{FhirError, Result};
use crate::store::{HistoryQuery, VersionRecord};

/// Which history is asked for.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// `GET /_history`
    System,
    /// `GET /[type]/_history`
    Type(&'a str),
    /// `GET /[type]/[id]/_history`
    Instance(&'a str, &'a str),
}

/// Parsed history parameters.
#[derive(Debug, Clone, Default)]
pub struct HistoryParams {
    /// `_since` (ms).
    pub since_ms: Option<i64>,
    /// `_at` upper bound (ms) — versions current at or before this instant.
    pub at_ms: Option<i64>,
    /// `_count`.
    pub count: Option<usize>,
    /// `_cursor` (sequence number of the last entry of the previous page).
    pub cursor: Option<u64>,
}

fn parse_time(name: &str, v: &str) -> Result<i64> {
    super::parse_instant_ms(v).ok_or_else(|| {
        FhirError::BadRequest(format!(
            "{name} must be an instant with time zone, got '{v}'"
        ))
    })
}

/// `_at` is a date(Time) in R4: versions current at some point during the period it denotes, so
/// the bound is the period's last millisecond (`2026-12-02` includes everything written that day).
fn parse_at(v: &str) -> Result<i64> {
    if let Some(ms) = super::parse_instant_ms(v) {
        return Ok(ms);
    }
    crate::search::values::parse_date_range(v)
        .filter(|_| v.len() <= 10 || v.ends_with('Z') || v.rfind(['+', '-']) > Some(10))
        .map(|r| r.high - 1)
        .ok_or_else(|| {
            FhirError::BadRequest(format!(
                "_at must be a date (YYYY, YYYY-MM, YYYY-MM-DD) or a dateTime with time zone, got '{v}'"
            ))
        })
}

impl HistoryParams {
    /// Parse from a query string; unknown parameters are rejected.
    pub fn parse(query: &str) -> Result<Self> {
        let mut p = HistoryParams::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "_since" => p.since_ms = Some(parse_time("_since", &v)?),
                "_at" => p.at_ms = Some(parse_at(&v)?),
                "_count" => {
                    p.count = Some(v.parse().map_err(|_| {
                        FhirError::BadRequest(format!(
                            "_count must be a non-negative integer, got '{v}'"
                        ))
                    })?)
                }
                "_cursor" => {
                    p.cursor = Some(
                        v.parse()
                            .map_err(|_| FhirError::BadRequest(format!("invalid _cursor '{v}'")))?,
                    )
                }
                "_format" | "_pretty" | "_summary" | "_elements" => {}
                other => {
                    return Err(FhirError::BadRequest(format!(
                        "unsupported history parameter '{other}'"
                    )))
                }
            }
        }
        Ok(p)
    }
}

fn entry(base: &str, r: &VersionRecord) -> Result<Value> {
    let url = format!("{}/{}", r.rtype, r.id);
    let (status, method_url) = match r.method {
        crate::store::Method::Create => ("201 Created", r.rtype.clone()),
        crate::store::Method::Delete => ("204 No Content", url.clone()),
        _ => ("200 OK", url.clone()),
    };
    let mut e = json!({
        "fullUrl": format!("{base}/{url}"),
        "request": {"method": r.method.http_verb(), "url": method_url},
        "response": {
            "status": status,
            "etag": format!("W/\"{}\"", r.version),
            "lastModified": instant(r.last_updated_ms),
        }
    });
    if !r.deleted() {
        e["resource"] = resource_of(r)?;
    }
    Ok(e)
}

impl Services {
    /// Build one page of a history Bundle. `self_url` is the request path and query without base.
    pub fn history(
        &self,
        scope: Scope<'_>,
        params: &HistoryParams,
        base: &str,
        path: &str,
    ) -> Result<Value> {
        let limit = params
            .count
            .unwrap_or(self.limits.default_page_size)
            .min(self.limits.max_page_size);
        let q = HistoryQuery {
            since_ms: params.since_ms,
            at_ms: params.at_ms,
            before_seq: params.cursor,
            limit: limit + 1,
        };
        let mut records = match scope {
            Scope::System => {
                if matches!(self.access, Access::Anonymous) {
                    self.access.allow(Act::Search, "Resource")?;
                }
                self.store.history(None, q)?
            }
            Scope::Type(t) => {
                self.access.allow(Act::Search, t)?;
                self.store.history(Some(t), q)?
            }
            Scope::Instance(t, id) => {
                crate::fhir::references::check_id(id)?;
                self.access.allow(Act::Read, t)?;
                // another party's resource has no history to show
                if self.access.filters(Act::Read, t) {
                    self.read(t, id)?;
                }
                let r = self.store.instance_history(t, id, q)?;
                if r.is_empty() && params.cursor.is_none() && self.store.current(t, id)?.is_none() {
                    return Err(FhirError::NotFound(format!("{t}/{id} is not known")));
                }
                r
            }
        };
        let more = records.len() > limit;
        records.truncate(limit);
        let filtering = match scope {
            Scope::Instance(t, _) => self.access.filters(Act::Read, t),
            _ => !matches!(self.access, Access::System),
        };
        let act = match scope {
            Scope::Instance(..) => Act::Read,
            _ => Act::Search,
        };
        let last_seq = records.last().map(|r| r.seq);
        let mut shown = Vec::with_capacity(records.len());
        for r in std::mem::take(&mut records) {
            // a page may come out shorter than _count: its next link still continues after it
            let keep = !filtering
                || (self.access.allow(act, &r.rtype).is_ok()
                    && !r.deleted()
                    && self.access.sees(act, &r.rtype, &resource_of(&r)?));
            if keep {
                shown.push(r);
            }
        }
        records = shown;
        let mut query_base = String::new();
        if let Some(s) = params.since_ms {
            query_base.push_str(&format!("_since={}&", instant(s)));
        }
        if let Some(a) = params.at_ms {
            query_base.push_str(&format!("_at={}&", instant(a)));
        }
        query_base.push_str(&format!("_count={limit}"));
        let mut links = vec![
            json!({"relation": "self", "url": format!("{base}/{path}?{query_base}{}", params.cursor.map(|c| format!("&_cursor={c}")).unwrap_or_default())}),
            json!({"relation": "first", "url": format!("{base}/{path}?{query_base}")}),
        ];
        if more {
            if let Some(last) = last_seq {
                links.push(json!({"relation": "next", "url": format!("{base}/{path}?{query_base}&_cursor={last}")}));
            }
        }
        let entries = records
            .iter()
            .map(|r| entry(base, r))
            .collect::<Result<Vec<_>>>()?;
        let complete = !more && params.cursor.is_none();
        let mut bundle = new_bundle("history", links, entries);
        if let (Scope::Instance(..), true) = (scope, complete) {
            bundle["total"] = json!(records.len());
        }
        Ok(bundle)
    }
}

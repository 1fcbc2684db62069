//! `POST /` with a `transaction` or `batch` Bundle.
//!
//! A transaction is planned and validated in full first (every problem of every entry reported
//! together), then runs as ONE write job: conditional creates, conditional updates and conditional
//! references are resolved, `urn:uuid:`/`urn:oid:` fullUrls get ids and every reference to them is
//! rewritten, and the entries are applied in the spec's order (DELETE, POST, PUT/PATCH, GET). The
//! job's writes commit together or not at all. A batch runs its entries independently.

use std::collections::HashMap;

use axum::http::StatusCode;
use base64::Engine as _;
use futures::future::join_all;
use serde_json::{json, Value};

use super::write::parse_criteria;
use super::write::{
    check_resource, conditional_delete_in, create_in, current_as_written, delete_in, extract_index,
    find, nothing_deleted, parse_patch, patch_in, update_in, Written,
};
use super::{instant, new_bundle, Services};
use crate::auth::access::Act;
use crate::auth::provenance;
use crate::error::{FhirError, Result};
use crate::fhir::outcome::{operation_outcome, Issue};
use crate::fhir::references::check_id;
use crate::fhir::references::{classify, for_each_reference_mut, RefKind};
use crate::fhir::resource_types::is_resource_type;
use crate::fhir::validate::Context;
use crate::search::Criterion;
use crate::store::{self, IndexEntry, WriteTxn};

/// HTTP verb of a Bundle entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    /// Processing order in a transaction.
    fn order(self) -> u8 {
        match self {
            Verb::Delete => 0,
            Verb::Post => 1,
            Verb::Put | Verb::Patch => 2,
            Verb::Get => 3,
        }
    }
}

/// One entry, checked and parsed.
#[derive(Debug, Clone)]
struct Planned {
    verb: Verb,
    rtype: String,
    id: Option<String>,
    vid: Option<String>,
    criteria: Option<Vec<Criterion>>,
    query: Option<String>,
    resource: Option<Value>,
    patch: Option<json_patch::Patch>,
    if_none_exist: Option<Vec<Criterion>>,
    if_match: Option<u64>,
    full_url: Option<String>,
    /// Index entries extracted before submission (see [`super::write::extract_index`]).
    index: Option<Vec<IndexEntry>>,
}

/// Parse `W/"3"` (or `3`) into a version number.
pub fn parse_etag(s: &str) -> Option<u64> {
    s.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

fn status_line(code: u16) -> String {
    let reason = StatusCode::from_u16(code)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    format!("{code} {reason}")
}

fn entry_issue(i: usize, e: FhirError, field: &str) -> Vec<Issue> {
    let prefix = format!("Bundle.entry[{i}]{field}");
    e.issues()
        .into_iter()
        .map(|issue| {
            let root = issue
                .expression
                .as_deref()
                .and_then(|x| x.split('.').next())
                .unwrap_or("")
                .to_string();
            if issue.expression.is_some() && field == ".resource" {
                issue.within(&prefix, &root)
            } else {
                issue.at(prefix.clone())
            }
        })
        .collect()
}

fn plan_entry(
    svc: &Services,
    base: &str,
    mut entry: Value,
    ctx: Context<'_>,
) -> std::result::Result<Planned, (FhirError, &'static str)> {
    let mut resource = entry.get_mut("resource").map(Value::take);
    let req = &entry["request"];
    let bad = |m: String| (FhirError::BadRequest(m), ".request");
    let verb = match req["method"].as_str() {
        Some("GET") | Some("HEAD") => Verb::Get,
        Some("POST") => Verb::Post,
        Some("PUT") => Verb::Put,
        Some("PATCH") => Verb::Patch,
        Some("DELETE") => Verb::Delete,
        Some(m) => return Err(bad(format!("unsupported request.method '{m}'"))),
        None => return Err(bad("request.method is required".into())),
    };
    let url = req["url"]
        .as_str()
        .ok_or_else(|| bad("request.url is required".into()))?;
    let local = url
        .strip_prefix(base)
        .unwrap_or(url)
        .trim_start_matches('/');
    let (path, query) = match local.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (local, None),
    };
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rtype = segs.first().copied().unwrap_or("");
    if !is_resource_type(rtype) {
        return Err((
            FhirError::NotFound(format!("unknown resource type in request.url '{url}'")),
            ".request.url",
        ));
    }
    let (id, vid) = match segs.as_slice() {
        [_] => (None, None),
        [_, id] => (Some(id.to_string()), None),
        [_, id, "_history", v] if verb == Verb::Get => (Some(id.to_string()), Some(v.to_string())),
        _ => return Err(bad(format!("unsupported request.url '{url}'"))),
    };
    if let Some(id) = &id {
        check_id(id).map_err(|e| (e, ".request.url"))?;
    }
    let act = match verb {
        Verb::Get if id.is_some() => Act::Read,
        Verb::Get => Act::Search,
        Verb::Post => Act::Create,
        Verb::Put | Verb::Patch => Act::Update,
        Verb::Delete => Act::Delete,
    };
    svc.access.allow(act, rtype).map_err(|e| (e, ".request"))?;
    let criteria = query
        .filter(|_| verb != Verb::Get)
        .map(|q| svc.caller_criteria(rtype, q))
        .or_else(|| query.map(|q| parse_criteria(rtype, q)))
        .transpose()
        .map_err(|e| (e, ".request.url"))?;
    let shape_ok = match verb {
        Verb::Post => id.is_none(),
        Verb::Put | Verb::Delete => id.is_some() != criteria.is_some(),
        Verb::Patch => id.is_some(),
        Verb::Get => id.is_some() || criteria.is_some(),
    };
    if !shape_ok {
        return Err(bad(format!(
            "request.url '{url}' does not fit method {:?}",
            verb
        )));
    }
    let if_none_exist = req["ifNoneExist"]
        .as_str()
        .map(|q| svc.caller_criteria(rtype, q.trim_start_matches('?')))
        .transpose()
        .map_err(|e| (e, ".request.ifNoneExist"))?;
    let if_match = match req["ifMatch"].as_str() {
        Some(s) => Some(parse_etag(s).ok_or_else(|| bad(format!("invalid ifMatch '{s}'")))?),
        None => None,
    };
    let mut patch = None;
    match verb {
        Verb::Post | Verb::Put => {
            let r = resource
                .as_mut()
                .ok_or_else(|| bad("this request needs a resource".into()))?;
            if verb == Verb::Put {
                if let Some(id) = &id {
                    match r["id"].as_str() {
                        Some(b) if b != id => {
                            return Err((
                                FhirError::BadRequest(format!(
                                    "resource id '{b}' does not match request.url id '{id}'"
                                )),
                                ".resource.id",
                            ))
                        }
                        Some(_) => {}
                        None => r["id"] = json!(id),
                    }
                }
            }
            svc.access.admit(rtype, r).map_err(|e| (e, ".resource"))?;
            svc.check_written(act, rtype, r)
                .map_err(|e| (e, ".resource"))?;
            check_resource(&svc.validator, rtype, r, ctx).map_err(|e| (e, ".resource"))?;
        }
        Verb::Patch => {
            let r = resource
                .take()
                .ok_or_else(|| bad("PATCH needs a Binary resource holding a JSON Patch".into()))?;
            patch = Some(binary_patch(&r).map_err(|e| (e, ".resource"))?);
        }
        _ => {}
    }
    Ok(Planned {
        verb,
        rtype: rtype.to_string(),
        id,
        vid,
        criteria,
        query: query.map(str::to_string),
        resource,
        patch,
        if_none_exist,
        if_match,
        full_url: entry["fullUrl"].as_str().map(String::from),
        index: None,
    })
}

/// A PATCH entry carries its JSON Patch as a Binary resource (base64 `data`).
fn binary_patch(r: &Value) -> Result<json_patch::Patch> {
    if r["resourceType"] != "Binary" {
        return Err(FhirError::BadRequest("PATCH entries need a Binary resource with contentType application/json-patch+json (FHIRPath Patch is not supported)".into()));
    }
    let ct = r["contentType"].as_str().unwrap_or("");
    if !ct.starts_with("application/json-patch+json") {
        return Err(FhirError::BadRequest(format!(
            "unsupported patch contentType '{ct}'"
        )));
    }
    let data = r["data"].as_str().unwrap_or("");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| FhirError::BadRequest(format!("Binary.data is not base64: {e}")))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| FhirError::BadRequest(format!("patch is not JSON: {e}")))?;
    parse_patch(v)
}

fn entries(mut bundle: Value, max: usize) -> Result<Vec<Value>> {
    let list = match bundle.get_mut("entry").map(Value::take) {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => Vec::new(),
        Some(_) => {
            return Err(FhirError::BadRequest(
                "Bundle.entry must be an array".into(),
            ))
        }
    };
    if list.len() > max {
        return Err(FhirError::TooCostly(format!(
            "the Bundle has {} entries; at most {max} are accepted",
            list.len()
        )));
    }
    Ok(list)
}

/// What a response entry carries.
#[derive(Clone, Copy)]
enum Shape {
    /// A write: fullUrl, response, and the resource when asked for.
    Write(bool),
    /// A read: the resource and response (no fullUrl, so that a read of a resource written in
    /// the same Bundle does not repeat its fullUrl; bdl-7).
    Read,
}

fn response_entry(base: &str, w: &Written, shape: Shape) -> Value {
    let mut resp = json!({"status": status_line(w.status)});
    if let Some(v) = w.version {
        if w.status != 204 {
            resp["location"] = json!(format!("{base}/{}/{}/_history/{v}", w.rtype, w.id));
        }
        resp["etag"] = json!(format!("W/\"{v}\""));
        resp["lastModified"] = json!(instant(w.last_updated_ms));
    }
    let mut e = json!({"response": resp});
    let with_resource = match shape {
        Shape::Write(with) => {
            if w.status != 204 && !w.id.is_empty() {
                e["fullUrl"] = json!(format!("{base}/{}/{}", w.rtype, w.id));
            }
            with
        }
        Shape::Read => true,
    };
    if with_resource {
        if let Some(r) = &w.resource {
            e["resource"] = r.clone();
        }
    }
    e
}

fn read_in(txn: &mut dyn WriteTxn, p: &Planned) -> Result<Written> {
    let id = p.id.clone().unwrap_or_default();
    let cur = match (&p.vid, txn.current(&p.rtype, &id)?) {
        (_, None) => {
            return Err(FhirError::NotFound(format!(
                "{}/{id} is not known",
                p.rtype
            )))
        }
        (None, Some(c)) if c.deleted => {
            return Err(FhirError::Gone(format!("{}/{id} was deleted", p.rtype)))
        }
        (Some(v), Some(c)) if v != &c.version.to_string() => {
            return Err(FhirError::BadRequest(
                "vread of older versions is not supported inside a transaction".into(),
            ))
        }
        (_, Some(c)) => c,
    };
    current_as_written(&p.rtype, &id, cur, 200)
}

/// Locate an error that happened while applying entry `i`, keeping its status.
fn at_entry(i: usize, e: FhirError) -> FhirError {
    let loc = format!("Bundle.entry[{i}]");
    match e {
        FhirError::Invalid(_) | FhirError::BadRequest(_) => {
            FhirError::Invalid(entry_issue(i, e, ""))
        }
        FhirError::PreconditionFailed(m) => FhirError::PreconditionFailed(format!("{m} ({loc})")),
        FhirError::NotFound(m) => FhirError::NotFound(format!("{m} ({loc})")),
        FhirError::Gone(m) => FhirError::Gone(format!("{m} ({loc})")),
        FhirError::Conflict(m) => FhirError::Conflict(format!("{m} ({loc})")),
        other => other,
    }
}

/// The ids the caller may see, of those a conditional reference matched.
fn visible_ids(
    txn: &mut dyn WriteTxn,
    svc: &Services,
    rtype: &str,
    ids: Vec<String>,
) -> Result<Vec<String>> {
    if !svc.access.filters(Act::Search, rtype) {
        return Ok(ids);
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let cur = txn.current(rtype, &id)?;
        let seen = super::write::live_doc(cur.as_ref())?
            .is_some_and(|r| svc.access.sees(Act::Search, rtype, &r));
        if seen {
            out.push(id);
        }
    }
    Ok(out)
}

/// Locate an access refusal at entry `i`, keeping its status (401 or 403).
fn at_entry_refusal(i: usize, e: FhirError) -> FhirError {
    match e {
        FhirError::Forbidden(m) => FhirError::Forbidden(format!("Bundle.entry[{i}]: {m}")),
        FhirError::Unauthorized(m) => FhirError::Unauthorized(format!("Bundle.entry[{i}]: {m}")),
        other => other,
    }
}

/// For each entry of a transaction, the id of the resource its conditional create matched.
type Matched = Vec<Option<String>>;

/// True when resolving a transaction's ids and references needs the store: a conditional create,
/// update or delete, or a conditional reference. Otherwise it is resolved before submission.
fn needs_store(plan: &mut [Planned]) -> bool {
    let mut conditional = false;
    for p in plan.iter_mut() {
        if p.if_none_exist.is_some() || (p.verb != Verb::Get && p.criteria.is_some()) {
            return true;
        }
        if let Some(r) = p.resource.as_mut() {
            for_each_reference_mut(r, &mut |r: &mut String| {
                conditional |= matches!(classify(r), RefKind::Conditional { .. });
            });
        }
    }
    conditional
}

/// The writer's view when resolution needs it (see [`needs_store`]).
fn store_view<'t>(txn: &'t mut Option<&mut dyn WriteTxn>) -> Result<&'t mut (dyn WriteTxn + 't)> {
    match txn {
        Some(t) => Ok(&mut **t),
        None => Err(FhirError::Storage(
            "a conditional entry was resolved without the store".into(),
        )),
    }
}

/// Decide the id every created or updated resource will have and rewrite references to
/// fullUrls, urn:uuid/urn:oid and conditional references. Returns the existing id each
/// conditional create matched. `txn` is None before submission (only when [`needs_store`] is
/// false).
fn resolve(
    mut txn: Option<&mut dyn WriteTxn>,
    svc: &Services,
    plan: &mut [Planned],
) -> Result<Matched> {
    let mut idmap: HashMap<String, String> = HashMap::new();
    let mut matched: Vec<Option<String>> = vec![None; plan.len()];
    // 1. decide the id every created or updated resource will have
    for (i, p) in plan.iter_mut().enumerate() {
        match p.verb {
            Verb::Post => {
                if let Some(c) = &p.if_none_exist {
                    let found =
                        find(store_view(&mut txn)?, &p.rtype, c).map_err(|e| at_entry(i, e))?;
                    match found.as_slice() {
                        [] => {}
                        [one] => matched[i] = Some(one.clone()),
                        many => {
                            return Err(at_entry(
                                i,
                                FhirError::PreconditionFailed(format!(
                                    "conditional create matched {} {} resources",
                                    many.len(),
                                    p.rtype
                                )),
                            ))
                        }
                    }
                }
                let id = matched[i]
                    .clone()
                    .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                p.id = Some(id);
            }
            Verb::Put if p.criteria.is_some() => {
                let found = find(
                    store_view(&mut txn)?,
                    &p.rtype,
                    p.criteria.as_deref().unwrap_or_default(),
                )
                .map_err(|e| at_entry(i, e))?;
                let body_id = p
                    .resource
                    .as_ref()
                    .and_then(|r| r["id"].as_str())
                    .map(String::from);
                let id = match found.as_slice() {
                    [] => body_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                    [one] => one.clone(),
                    many => {
                        return Err(at_entry(
                            i,
                            FhirError::PreconditionFailed(format!(
                                "conditional update matched {} {} resources",
                                many.len(),
                                p.rtype
                            )),
                        ))
                    }
                };
                if let Some(r) = p.resource.as_mut() {
                    r["id"] = json!(id);
                }
                p.id = Some(id);
            }
            Verb::Delete if p.criteria.is_some() => {
                let found = find(
                    store_view(&mut txn)?,
                    &p.rtype,
                    p.criteria.as_deref().unwrap_or_default(),
                )
                .map_err(|e| at_entry(i, e))?;
                match found.as_slice() {
                    [] => {}
                    [one] => p.id = Some(one.clone()),
                    many => {
                        return Err(at_entry(
                            i,
                            FhirError::PreconditionFailed(format!(
                                "conditional delete matched {} {} resources",
                                many.len(),
                                p.rtype
                            )),
                        ))
                    }
                }
            }
            _ => {}
        }
        if let (Some(full), Some(id), Verb::Post | Verb::Put) = (&p.full_url, &p.id, p.verb) {
            idmap.insert(full.clone(), format!("{}/{id}", p.rtype));
        }
    }
    // 2. rewrite references: fullUrls, urn:uuid/urn:oid, conditional references
    let mut conditional: HashMap<String, String> = HashMap::new();
    for (i, p) in plan.iter_mut().enumerate() {
        let Some(resource) = p.resource.as_mut() else {
            continue;
        };
        let mut failure: Option<FhirError> = None;
        for_each_reference_mut(resource, &mut |r: &mut String| {
            if failure.is_some() {
                return;
            }
            if let Some(target) = idmap.get(r.as_str()) {
                *r = target.clone();
                return;
            }
            match classify(r) {
                RefKind::Urn => {
                    failure = Some(FhirError::BadRequest(format!(
                        "reference '{r}' matches no fullUrl in the Bundle"
                    )))
                }
                RefKind::Conditional { rtype, query } => {
                    if let Some(t) = conditional.get(r.as_str()) {
                        *r = t.clone();
                        return;
                    }
                    // resolved as the caller: only what it may see can be matched
                    let resolved = svc
                        .access
                        .allow(Act::Search, rtype)
                        .and_then(|_| svc.caller_criteria(rtype, query))
                        .and_then(|c| {
                            let txn = store_view(&mut txn)?;
                            let ids = find(txn, rtype, &c)?;
                            visible_ids(txn, svc, rtype, ids)
                        });
                    match resolved.as_deref() {
                        Ok([one]) => {
                            let t = format!("{rtype}/{one}");
                            conditional.insert(r.clone(), t.clone());
                            *r = t;
                        }
                        Ok([]) => {
                            failure = Some(FhirError::PreconditionFailed(format!(
                                "conditional reference '{r}' matches no resource"
                            )))
                        }
                        Ok(many) => {
                            failure = Some(FhirError::PreconditionFailed(format!(
                                "conditional reference '{r}' matches {} resources",
                                many.len()
                            )))
                        }
                        Err(e) => {
                            failure = Some(FhirError::BadRequest(format!(
                                "conditional reference '{r}': {e}"
                            )))
                        }
                    }
                }
                _ => {}
            }
        });
        if let Some(e) = failure {
            return Err(at_entry(i, e));
        }
    }
    Ok(matched)
}

/// Extract the index entries of every resource the plan writes, before submission.
fn extract_plan(plan: &mut [Planned]) -> Result<()> {
    for p in plan.iter_mut() {
        if let (Verb::Post | Verb::Put, Some(r)) = (p.verb, p.resource.as_ref()) {
            p.index = Some(extract_index(&p.rtype, r)?);
        }
    }
    Ok(())
}

/// A batch entry's resource with its index entries, extracted on a blocking thread.
async fn with_index(rtype: &str, resource: Value) -> Result<(Value, Vec<IndexEntry>)> {
    let rtype = rtype.to_string();
    tokio::task::spawn_blocking(move || {
        let index = extract_index(&rtype, &resource)?;
        Ok((resource, index))
    })
    .await
    .map_err(|e| FhirError::Storage(format!("index extraction failed: {e}")))?
}

/// Apply a resolved plan's entries in the spec's order, inside one write job.
fn apply_plan(
    txn: &mut dyn WriteTxn,
    svc: &Services,
    mut plan: Vec<Planned>,
    matched: Matched,
) -> Result<Vec<Written>> {
    // 3. apply in the spec's order
    let mut order: Vec<usize> = (0..plan.len()).collect();
    order.sort_by_key(|&i| plan[i].verb.order());
    let mut results: Vec<Option<Written>> = vec![None; plan.len()];
    for i in order {
        let resource = plan[i].resource.take().unwrap_or_default();
        let index = plan[i].index.take();
        let p = &plan[i];
        let id = p.id.clone().unwrap_or_default();
        let w = match p.verb {
            Verb::Delete if p.id.is_none() => Ok(nothing_deleted(txn, &p.rtype, "")),
            Verb::Delete => delete_in(txn, &svc.access, &p.rtype, &id, p.if_match),
            Verb::Post => match &matched[i] {
                Some(existing) => read_in(
                    txn,
                    &Planned {
                        id: Some(existing.clone()),
                        vid: None,
                        ..p.clone()
                    },
                )
                .map(|mut w| {
                    w.status = 200;
                    w
                }),
                None => create_in(txn, &p.rtype, resource, Some(id), None, index),
            },
            Verb::Put => update_in(txn, &svc.access, &p.rtype, &id, resource, p.if_match, index),
            Verb::Patch => match &p.patch {
                Some(patch) => patch_in(
                    txn,
                    &svc.access,
                    &svc.validator,
                    &p.rtype,
                    &id,
                    patch,
                    p.if_match,
                ),
                None => Err(FhirError::BadRequest("missing patch".into())),
            },
            Verb::Get if p.id.is_some() => read_in(txn, p).and_then(|w| {
                let seen = w
                    .resource
                    .as_ref()
                    .is_none_or(|r| svc.access.sees(Act::Read, &p.rtype, r));
                if seen {
                    Ok(w)
                } else {
                    Err(FhirError::NotFound(format!(
                        "{}/{id} is not known",
                        p.rtype
                    )))
                }
            }),
            Verb::Get => Err(FhirError::BadRequest(
                "searches inside a transaction are not supported; use a batch".into(),
            )),
        }
        .map_err(|e| at_entry(i, e))?;
        results[i] = Some(w);
    }
    Ok(results.into_iter().flatten().collect())
}

impl Services {
    /// Process a transaction or batch Bundle and return the response Bundle.
    pub async fn bundle(&self, bundle: Value, base: &str, return_resources: bool) -> Result<Value> {
        if bundle["resourceType"] != "Bundle" {
            return Err(FhirError::BadRequest(
                "POST to the base URL takes a transaction or batch Bundle".into(),
            ));
        }
        match bundle["type"].as_str() {
            Some("transaction") => self.transaction(bundle, base, return_resources).await,
            Some("batch") => self.batch(bundle, base, return_resources).await,
            Some(t) => Err(FhirError::BadRequest(format!(
                "Bundle.type '{t}' cannot be processed; use transaction or batch"
            ))),
            None => Err(FhirError::Invalid(vec![Issue::error(
                "required",
                "Bundle.type is required",
            )
            .at("Bundle.type")])),
        }
    }

    /// Plan and validate every entry of a transaction (every problem reported together); when
    /// nothing in it needs the store to resolve, also assign ids, rewrite references and
    /// extract index entries, returning the matches of conditional creates (all None) as well.
    fn plan_transaction(
        &self,
        list: Vec<Value>,
        base: &str,
    ) -> Result<(Vec<Planned>, Option<Matched>)> {
        let mut refusals: Vec<FhirError> = Vec::new();
        // the type behind every fullUrl, so references to them are checked like literal ones
        let full_urls: HashMap<String, String> = list
            .iter()
            .filter_map(|e| {
                let full = e["fullUrl"].as_str()?;
                let rtype = e["resource"]["resourceType"].as_str()?;
                Some((full.to_string(), rtype.to_string()))
            })
            .collect();
        let ctx = Context {
            in_transaction: true,
            full_urls: Some(&full_urls),
        };
        let mut issues = Vec::new();
        let mut plan = Vec::with_capacity(list.len());
        let mut seen_full: HashMap<String, usize> = HashMap::new();
        let mut seen_ids: HashMap<String, usize> = HashMap::new();
        for (i, entry) in list.into_iter().enumerate() {
            if let Some(full) = entry["fullUrl"].as_str() {
                if let Some(first) = seen_full.insert(full.to_string(), i) {
                    issues.push(
                        Issue::error(
                            "duplicate",
                            format!("fullUrl '{full}' also used by entry {first}"),
                        )
                        .at(format!("Bundle.entry[{i}].fullUrl")),
                    );
                }
            }
            match plan_entry(self, base, entry, ctx) {
                Ok(p) => {
                    if let (Some(id), Verb::Put | Verb::Delete | Verb::Patch) = (&p.id, p.verb) {
                        let key = format!("{}/{id}", p.rtype);
                        if let Some(first) = seen_ids.insert(key.clone(), i) {
                            issues.push(
                                Issue::error(
                                    "duplicate",
                                    format!("{key} is also changed by entry {first}"),
                                )
                                .at(format!("Bundle.entry[{i}].request.url")),
                            );
                        }
                    }
                    plan.push(p)
                }
                Err((e @ (FhirError::Forbidden(_) | FhirError::Unauthorized(_)), _)) => {
                    refusals.push(at_entry_refusal(i, e))
                }
                Err((e, field)) => issues.extend(entry_issue(i, e, field)),
            }
        }
        if !refusals.is_empty() {
            // nothing of a transaction runs when any entry is beyond the caller's rights
            return Err(refusals.remove(0));
        }
        if !issues.is_empty() {
            return Err(FhirError::Invalid(issues));
        }
        if needs_store(&mut plan) {
            return Ok((plan, None));
        }
        let matched = resolve(None, self, &mut plan)?;
        extract_plan(&mut plan)?;
        Ok((plan, Some(matched)))
    }

    async fn transaction(
        &self,
        bundle: Value,
        base: &str,
        return_resources: bool,
    ) -> Result<Value> {
        let bundle_id = bundle["id"].as_str().map(String::from);
        let list = entries(bundle, self.limits.max_bundle_entries)?;
        // planning, validation, resolution and index extraction are CPU work: a blocking thread
        let planner = self.clone();
        let base_url = base.to_string();
        let (plan, resolved) =
            tokio::task::spawn_blocking(move || planner.plan_transaction(list, &base_url))
                .await
                .map_err(|e| FhirError::Storage(format!("transaction planning failed: {e}")))??;
        let svc = self.clone();
        let reads: Vec<bool> = plan.iter().map(|p| p.verb == Verb::Get).collect();
        let written_by: Vec<bool> = reads.iter().map(|r| !r).collect();
        let bundle_id = bundle_id.clone();
        let results = store::write(self.store.as_ref(), move |txn| {
            let mut plan = plan;
            let matched = match resolved {
                Some(m) => m,
                None => resolve(Some(&mut *txn), &svc, &mut plan)?,
            };
            let results = apply_plan(txn, &svc, plan, matched)?;
            // the Provenance commits with what it describes
            if let Some(p) = provenance::of_bundle(
                &svc.access,
                "transaction",
                bundle_id.as_deref(),
                results
                    .iter()
                    .zip(&written_by)
                    .filter(|(_, w)| **w)
                    .filter_map(|(r, _)| r.target()),
            ) {
                create_in(txn, "Provenance", p, None, None, None)?;
            }
            Ok(results)
        })
        .await?;
        let entries: Vec<Value> = results
            .iter()
            .zip(reads)
            .map(|(w, read)| {
                response_entry(
                    base,
                    w,
                    if read {
                        Shape::Read
                    } else {
                        Shape::Write(return_resources)
                    },
                )
            })
            .collect();
        Ok(new_bundle("transaction-response", Vec::new(), entries))
    }

    async fn batch(&self, bundle: Value, base: &str, return_resources: bool) -> Result<Value> {
        let bundle_id = bundle["id"].as_str().map(String::from);
        let list = entries(bundle, self.limits.max_bundle_entries)?;
        let written = std::sync::Mutex::new(Vec::new());
        let written = &written;
        let futures = list.into_iter().enumerate().map(|(i, entry)| async move {
            let outcome = match plan_entry(self, base, entry, Context::default()) {
                Err((e, field)) => Err((e, field)),
                Ok(p) => {
                    let read = p.verb == Verb::Get;
                    let outcome = self.batch_entry(p, base).await;
                    if let (Ok(w), false) = (&outcome, read) {
                        if let Ok(mut list) = written.lock() {
                            list.push(w.clone());
                        }
                    }
                    outcome.map(|w| (w, read)).map_err(|e| (e, ""))
                }
            };
            match outcome {
                Ok((w, read)) => response_entry(base, &w, if read { Shape::Read } else { Shape::Write(return_resources) }),
                Err((e, field)) => {
                    let status = e.status().as_u16();
                    let issues = entry_issue(i, e, field);
                    json!({"response": {"status": status_line(status), "outcome": operation_outcome(&issues)}})
                }
            }
        });
        let entries = join_all(futures).await;
        let written: Vec<Written> = written
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        if let Some(p) = provenance::of_bundle(
            &self.access,
            "batch",
            bundle_id.as_deref(),
            written.iter().filter_map(Written::target),
        ) {
            store::write(self.store.as_ref(), move |txn| {
                create_in(txn, "Provenance", p, None, None, None)
            })
            .await?;
        }
        Ok(new_bundle("batch-response", Vec::new(), entries))
    }

    async fn batch_entry(&self, p: Planned, base: &str) -> Result<Written> {
        let id = p.id.clone().unwrap_or_default();
        match p.verb {
            Verb::Get => {
                let found = match &p.vid {
                    Some(v) => self.vread(&p.rtype, &id, v)?,
                    None if p.id.is_some() => self.read(&p.rtype, &id)?,
                    None => {
                        let query = p.query.clone().unwrap_or_default();
                        let bundle = self.search(&p.rtype, &query, base)?;
                        return Ok(Written {
                            rtype: p.rtype,
                            id: String::new(),
                            version: None,
                            last_updated_ms: 0,
                            resource: Some(bundle),
                            status: 200,
                        });
                    }
                };
                Ok(Written {
                    rtype: p.rtype,
                    id,
                    version: Some(found.record.version),
                    last_updated_ms: found.record.last_updated_ms,
                    resource: Some(found.resource),
                    status: 200,
                })
            }
            Verb::Post => {
                let (resource, index) =
                    with_index(&p.rtype, p.resource.unwrap_or_default()).await?;
                let crit = p.if_none_exist;
                let rtype = p.rtype.clone();
                store::write(self.store.as_ref(), move |txn| {
                    create_in(txn, &rtype, resource, None, crit.as_deref(), Some(index))
                })
                .await
            }
            Verb::Put => {
                let (resource, index) =
                    with_index(&p.rtype, p.resource.unwrap_or_default()).await?;
                let rtype = p.rtype.clone();
                let crit = p.criteria;
                let if_match = p.if_match;
                let access = self.access.clone();
                store::write(self.store.as_ref(), move |txn| match crit {
                    Some(c) => super::write::conditional_update_in(
                        txn,
                        &access,
                        &rtype,
                        &c,
                        resource,
                        Some(index),
                    ),
                    None => update_in(txn, &access, &rtype, &id, resource, if_match, Some(index)),
                })
                .await
            }
            Verb::Delete => {
                let rtype = p.rtype.clone();
                let crit = p.criteria;
                let if_match = p.if_match;
                let access = self.access.clone();
                store::write(self.store.as_ref(), move |txn| match crit {
                    Some(c) => conditional_delete_in(txn, &access, &rtype, &c),
                    None => delete_in(txn, &access, &rtype, &id, if_match),
                })
                .await
            }
            Verb::Patch => {
                let validator = self.validator.clone();
                let rtype = p.rtype.clone();
                let patch = p
                    .patch
                    .ok_or_else(|| FhirError::BadRequest("missing patch".into()))?;
                let if_match = p.if_match;
                let access = self.access.clone();
                store::write(self.store.as_ref(), move |txn| {
                    patch_in(txn, &access, &validator, &rtype, &id, &patch, if_match)
                })
                .await
            }
        }
    }
}

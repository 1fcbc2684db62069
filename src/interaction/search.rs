//! Search results: matches from the engine, ordered by `_sort` (then id), paged by cursor (a
//! position in that order, so pages stay exact while writes happen), `_include`/`_revinclude`,
//! `_summary`/`_elements`, and the searchset Bundle with its links and total.

use std::collections::HashSet;

use base64::Engine as _;
use serde_json::{json, Value};

use super::read::resource_of;
use super::{new_bundle, with_total, Services};
use crate::auth::access::Act;
use crate::error::{FhirError, Result};
use crate::fhir::outcome::operation_outcome;
use crate::search::matcher::{quantity_sort_value, Matcher, Test};
use crate::search::params::ParamType;
use crate::search::query::{Criterion, Include, Search, SortKey, Summary, Total};
use crate::search::values::{clean, dec_i64, enc_i128};
use crate::search::{self, Executor, PageLimits};
use crate::store::IndexRead;

/// Most resources `_include`/`_revinclude` add to one page.
pub const MAX_INCLUDES: usize = 1000;

/// What to search: the types, the scope and how the request was written.
#[derive(Debug, Clone)]
pub struct SearchScope {
    /// The types searched (one for a type-level search).
    pub types: Vec<String>,
    /// Restrict to a Patient compartment (the patient id).
    pub compartment: Option<String>,
    /// Path after the base used in links (`Observation`, `Patient/1/Observation`, ``).
    pub path: String,
    /// `Prefer: handling=strict`.
    pub strict: bool,
}

/// One match or include on its way into the Bundle.
struct Item {
    /// Shared by every item of its type (no string per match).
    rtype: std::sync::Arc<str>,
    docno: u32,
    key: Vec<u8>,
}

const SUBSETTED: (&str, &str) = (
    "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "SUBSETTED",
);

fn min_max(values: impl Iterator<Item = Vec<u8>>, descending: bool) -> Option<Vec<u8>> {
    if descending {
        values.max()
    } else {
        values.min()
    }
}

/// The sort position of one resource: each key as presence byte + value (inverted when
/// descending; missing values last either way), then the resource's type (when several are
/// searched) and number: without `_sort`, matches come in the order they were first created.
fn sort_key(
    exec: &mut Executor,
    rtype: &str,
    docno: u32,
    keys: &[SortKey],
    multi_type: bool,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for k in keys {
        let value: Option<Vec<u8>> = if k.param == "_id" {
            let mut v = exec.id(rtype, docno)?.unwrap_or_default().into_bytes();
            v.push(0);
            Some(v)
        } else {
            let entries = exec.entries_at(rtype, docno)?.unwrap_or_default();
            match k.kind {
                Some(ParamType::Date) => {
                    // ascending by the earliest start, descending by the latest end
                    let at = if k.descending { 8 } else { 0 };
                    min_max(
                        entries
                            .iter()
                            .filter(|e| e.param == k.param)
                            .filter_map(|e| e.value.get(at..).and_then(dec_i64))
                            .map(|v| crate::search::values::enc_i64(v).to_vec()),
                        k.descending,
                    )
                }
                Some(ParamType::Number) | Some(ParamType::Quantity) => min_max(
                    entries
                        .iter()
                        .filter(|e| {
                            e.param == k.param
                                && !matches!(e.value.first(), Some(b'*') | Some(b'='))
                        })
                        .filter_map(|e| {
                            quantity_sort_value(&e.value).map(|v| enc_i128(v).to_vec())
                        }),
                    k.descending,
                ),
                _ => min_max(
                    entries.iter().filter(|e| e.param == k.param).map(|e| {
                        let mut v = e.value.clone();
                        v.push(0);
                        v
                    }),
                    k.descending,
                ),
            }
        };
        match value {
            Some(v) => {
                out.push(0);
                if k.descending {
                    out.extend(v.iter().map(|b| !b));
                } else {
                    out.extend(v);
                }
            }
            None => out.push(1),
        }
    }
    if multi_type {
        out.extend_from_slice(rtype.as_bytes());
        out.push(b'/');
    }
    out.extend_from_slice(&docno.to_be_bytes());
    Ok(out)
}

/// Whether criteria search other resources (chained parameters, `_has`).
pub fn joins(criteria: &[Criterion]) -> bool {
    criteria
        .iter()
        .any(|c| matches!(c, Criterion::Chain { .. } | Criterion::Has { .. }))
}

/// The refusal of chains and `_has` to callers who may not see everything they would search.
pub fn joins_refused() -> FhirError {
    FhirError::Forbidden(
        "chained parameters and _has search resources this client may not see; use direct parameters"
            .into(),
    )
}

/// Criterion restricting a type to one Patient's compartment.
fn compartment_criterion(rtype: &str, patient: &str) -> Result<Option<Criterion>> {
    let engine = search::engine()?;
    if rtype == "Patient" {
        return Ok(Some(Criterion::Ids(vec![patient.to_string()])));
    }
    let params = engine.registry.compartment_params(rtype);
    if params.is_empty() {
        return Ok(None);
    }
    let target = format!("Patient/{patient}");
    Ok(Some(Criterion::Any(
        params
            .iter()
            .map(|p| Matcher::new(p.clone(), Test::Exact(clean(&target))))
            .collect(),
    )))
}

fn subsetted(resource: &mut Value) {
    let tag = json!({"system": SUBSETTED.0, "code": SUBSETTED.1});
    let meta = resource
        .as_object_mut()
        .map(|o| o.entry("meta").or_insert_with(|| json!({})));
    if let Some(Value::Object(m)) = meta {
        let tags = m.entry("tag").or_insert_with(|| json!([]));
        if let Value::Array(a) = tags {
            a.push(tag);
        }
    }
}

/// The element name a JSON key stands for (`valueQuantity` → `value[x]` when that is a choice).
fn is_summary_key(reg: &search::Registry, rtype: &str, key: &str) -> bool {
    if reg.is_summary(rtype, &format!("{rtype}.{key}")) {
        return true;
    }
    // a choice element: the longest prefix followed by an upper-case type name
    key.char_indices()
        .filter(|(_, c)| c.is_ascii_uppercase())
        .any(|(i, _)| reg.is_summary(rtype, &format!("{rtype}.{}[x]", &key[..i])))
}

fn element_matches(key: &str, wanted: &str) -> bool {
    key == wanted
        || key
            .strip_prefix(wanted)
            .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_uppercase()))
}

/// Apply `_summary` / `_elements` to a resource.
fn shape(
    reg: &search::Registry,
    rtype: &str,
    mut r: Value,
    summary: Summary,
    elements: Option<&[String]>,
) -> Value {
    let keep_always = |k: &str| matches!(k, "resourceType" | "id" | "meta");
    let mandatory = reg.mandatory(rtype);
    let is_mandatory = |k: &str| mandatory.iter().any(|m| element_matches(k, m));
    let Value::Object(obj) = &mut r else { return r };
    let changed = match (elements, summary) {
        (Some(els), _) => {
            obj.retain(|k, _| {
                keep_always(k) || is_mandatory(k) || els.iter().any(|e| element_matches(k, e))
            });
            true
        }
        (None, Summary::True) => {
            obj.retain(|k, _| keep_always(k) || is_summary_key(reg, rtype, k));
            true
        }
        (None, Summary::Text) => {
            obj.retain(|k, _| keep_always(k) || k == "text" || is_mandatory(k));
            true
        }
        (None, Summary::Data) => {
            obj.remove("text");
            true
        }
        _ => false,
    };
    if changed {
        subsetted(&mut r);
    }
    r
}

fn encode_cursor(dir: char, key: &[u8]) -> String {
    format!(
        "{dir}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
    )
}

fn decode_cursor(c: &str) -> Result<(char, Vec<u8>)> {
    let bad = || {
        FhirError::BadRequest(format!(
            "invalid paging cursor '{c}' (follow the Bundle's links)"
        ))
    };
    let dir = c
        .chars()
        .next()
        .filter(|d| *d == 'a' || *d == 'b')
        .ok_or_else(bad)?;
    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&c[1..])
        .map_err(|_| bad())?;
    Ok((dir, key))
}

impl Services {
    /// Run a search given as name/value pairs; `base` is the server base URL for links.
    pub fn search_pairs(
        &self,
        scope: &SearchScope,
        pairs: &[(String, String)],
        base: &str,
    ) -> Result<Value> {
        let engine = search::engine()?;
        let limits = PageLimits {
            default: self.limits.default_page_size,
            max: self.limits.max_page_size,
        };
        // the types the caller may search (one refused type refuses a type-level search)
        let mut allowed_types = Vec::with_capacity(scope.types.len());
        for t in &scope.types {
            match self.access.allow(Act::Search, t) {
                Ok(()) => allowed_types.push(t.clone()),
                Err(e) if scope.types.len() == 1 => return Err(e),
                Err(_) => {}
            }
        }
        if allowed_types.is_empty() {
            return Err(FhirError::Forbidden(
                "none of the searched types may be searched by this client".into(),
            ));
        }
        let scope = &SearchScope {
            types: allowed_types,
            ..scope.clone()
        };
        let mut pairs = pairs.to_vec();
        pairs.extend(self.access.narrowing(&scope.types[0]));
        let base_stripped: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| {
                // absolute references to this server as given by the client
                let v = match v.strip_prefix(base) {
                    Some(rest) if rest.starts_with('/') => rest[1..].to_string(),
                    _ => v.clone(),
                };
                (k.clone(), v)
            })
            .collect();
        let parsed = search::parse(
            &engine.registry,
            &scope.types,
            &base_stripped,
            limits,
            scope.strict,
        )?;
        // chains and _has search other resources than those returned: only for callers who see
        // everything they could reach
        if joins(&parsed.criteria)
            && scope
                .types
                .iter()
                .any(|t| self.access.filters(Act::Search, t))
        {
            return Err(joins_refused());
        }
        // what _include and _revinclude name must be readable too
        for inc in &parsed.includes {
            if let Some(t) = &inc.target {
                self.access.allow(Act::Read, t)?;
            }
        }
        for inc in &parsed.revincludes {
            if inc.source != "*" {
                self.access.allow(Act::Read, &inc.source)?;
            }
        }
        let reader: &dyn IndexRead = self.store.as_ref();
        let mut exec = Executor::new(&engine.defs, reader);
        let multi = scope.types.len() > 1;
        // `_summary=count` needs only the number: no sort positions
        let counting = parsed.summary == Summary::Count;
        let mut count = 0usize;
        let mut items: Vec<Item> = Vec::new();
        for t in &scope.types {
            let mut criteria = parsed.criteria.clone();
            if let Some(p) = &scope.compartment {
                match compartment_criterion(t, p)? {
                    Some(c) => criteria.push(c),
                    None => continue,
                }
            }
            let filtered = self.access.filters(Act::Search, t);
            if counting && !filtered {
                count += exec.count(t, &criteria)?;
                continue;
            }
            let mut ids = exec.matching(t, &criteria)?;
            if filtered {
                let mut kept = Vec::with_capacity(ids.len());
                for n in ids {
                    if self.match_visible(&mut exec, t, n)? {
                        kept.push(n);
                    }
                }
                ids = kept;
            }
            count += ids.len();
            if counting {
                continue;
            }
            let shared: std::sync::Arc<str> = std::sync::Arc::from(t.as_str());
            items.reserve(ids.len());
            for docno in ids {
                let key = sort_key(&mut exec, t, docno, &parsed.sort, multi)?;
                items.push(Item {
                    rtype: shared.clone(),
                    docno,
                    key,
                });
            }
        }
        items.sort_by(|a, b| a.key.cmp(&b.key));
        self.assemble(&mut exec, scope, &parsed, items, count, base)
    }

    fn assemble(
        &self,
        exec: &mut Executor,
        scope: &SearchScope,
        s: &Search,
        items: Vec<Item>,
        total: usize,
        base: &str,
    ) -> Result<Value> {
        let engine = search::engine()?;
        let count = s.count;
        // the page: after or before the cursor position
        let (start, end) = match &s.cursor {
            None => (0, count.min(items.len())),
            Some(c) => {
                let (dir, key) = decode_cursor(c)?;
                let pos = items.partition_point(|i| i.key.as_slice() <= key.as_slice());
                if dir == 'a' {
                    (pos, (pos + count).min(items.len()))
                } else {
                    let before = items.partition_point(|i| i.key.as_slice() < key.as_slice());
                    (before.saturating_sub(count), before)
                }
            }
        };
        let page = &items[start..end];
        let mut links = Vec::new();
        let link = |extra: Option<String>| {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            ser.extend_pairs(
                s.kept
                    .iter()
                    .filter(|(k, _)| k != "_count")
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            );
            ser.append_pair("_count", &count.to_string());
            if let Some(c) = &extra {
                ser.append_pair("_cursor", c);
            }
            let q = ser.finish();
            let path = if scope.path.is_empty() {
                String::new()
            } else {
                format!("/{}", scope.path)
            };
            format!("{base}{path}?{q}")
        };
        let self_url = {
            let mut ser = form_urlencoded::Serializer::new(String::new());
            ser.extend_pairs(s.kept.iter().map(|(k, v)| (k.as_str(), v.as_str())));
            if let Some(c) = &s.cursor {
                ser.append_pair("_cursor", c);
            }
            let path = if scope.path.is_empty() {
                String::new()
            } else {
                format!("/{}", scope.path)
            };
            format!("{base}{path}?{}", ser.finish())
        };
        links.push(json!({"relation": "self", "url": self_url}));
        if s.summary != Summary::Count {
            links.push(json!({"relation": "first", "url": link(None)}));
            if end < items.len() && count > 0 {
                if let Some(last) = page.last() {
                    links.push(json!({"relation": "next", "url": link(Some(encode_cursor('a', &last.key)))}));
                }
            }
            if start > 0 {
                let cur = match page.first() {
                    Some(first) => encode_cursor('b', &first.key),
                    None => {
                        encode_cursor('b', &items[start.min(items.len().saturating_sub(1))].key)
                    }
                };
                links.push(json!({"relation": "previous", "url": link(Some(cur))}));
            }
        }
        let mut entries = Vec::new();
        if s.summary != Summary::Count {
            // the page's ids (the index names resources by number)
            let mut matches: Vec<(String, String)> = Vec::with_capacity(page.len());
            for i in page {
                if let Some(id) = exec.id(&i.rtype, i.docno)? {
                    matches.push((i.rtype.to_string(), id));
                }
            }
            let mut seen: HashSet<(String, String)> = matches.iter().cloned().collect();
            for (rtype, id) in &matches {
                if let Some(r) = self.live_resource(rtype, id)? {
                    let r = shape(&engine.registry, rtype, r, s.summary, s.elements.as_deref());
                    entries.push(json!({
                        "fullUrl": format!("{base}/{rtype}/{id}"),
                        "resource": r,
                        "search": {"mode": "match"}
                    }));
                }
            }
            for (t, id) in self.includes(exec, s, &matches, &mut seen)? {
                if self.access.allow(Act::Read, &t).is_err() {
                    continue;
                }
                if let Some(r) = self
                    .live_resource(&t, &id)?
                    .filter(|r| self.access.sees(Act::Read, &t, r))
                {
                    entries.push(json!({
                        "fullUrl": format!("{base}/{t}/{id}"),
                        "resource": r,
                        "search": {"mode": "include"}
                    }));
                }
            }
        }
        if !s.warnings.is_empty() {
            entries.push(json!({
                "resource": operation_outcome(&s.warnings),
                "search": {"mode": "outcome"}
            }));
        }
        let bundle = new_bundle("searchset", links, entries);
        if s.total != Total::None || s.summary == Summary::Count {
            return Ok(with_total(bundle, total as u64));
        }
        Ok(bundle)
    }

    /// Whether the caller may see a resource `_include`/`_revinclude` reaches (hidden ones
    /// neither appear nor lead further with `:iterate`).
    fn may_include(&self, rtype: &str, id: &str) -> Result<bool> {
        if self.access.allow(Act::Read, rtype).is_err() {
            return Ok(false);
        }
        if !self.access.filters(Act::Read, rtype) {
            return Ok(true);
        }
        Ok(self
            .live_resource(rtype, id)?
            .is_some_and(|r| self.access.sees(Act::Read, rtype, &r)))
    }

    /// Whether a match is the caller's to see: judged from its stored index entries where the
    /// access rules allow (so a count loads no resource), else from the resource.
    fn match_visible(&self, exec: &mut Executor, rtype: &str, docno: u32) -> Result<bool> {
        let Some(entries) = exec.entries_at(rtype, docno)? else {
            return Ok(false); // deleted meanwhile
        };
        let Some(id) = exec.id(rtype, docno)? else {
            return Ok(false);
        };
        if let Some(seen) = self.access.sees_indexed(Act::Search, rtype, &id, &entries) {
            return Ok(seen);
        }
        Ok(self
            .live_resource(rtype, &id)?
            .is_some_and(|r| self.access.sees(Act::Search, rtype, &r)))
    }

    fn live_resource(&self, rtype: &str, id: &str) -> Result<Option<Value>> {
        match self.store.current(rtype, id)? {
            Some(r) if !r.deleted() => Ok(Some(resource_of(&r)?)),
            _ => Ok(None),
        }
    }

    /// Resources `_include` and `_revinclude` add for `matches` (and, with `:iterate`, for what
    /// they add in turn), not already in `seen`.
    fn includes(
        &self,
        exec: &mut Executor,
        s: &Search,
        matches: &[(String, String)],
        seen: &mut HashSet<(String, String)>,
    ) -> Result<Vec<(String, String)>> {
        let engine = search::engine()?;
        let mut out: Vec<(String, String)> = Vec::new();
        let mut frontier: Vec<(String, String)> = matches.to_vec();
        let mut first_round = true;
        while !frontier.is_empty() && out.len() < MAX_INCLUDES {
            let mut next = Vec::new();
            let applicable = |inc: &&Include| first_round || inc.iterate;
            for inc in s.includes.iter().filter(applicable) {
                for (t, id) in &frontier {
                    if inc.source != "*" && &inc.source != t {
                        continue;
                    }
                    let params: Vec<String> = if inc.param == "*" {
                        engine
                            .registry
                            .params(t)
                            .filter(|p| p.kind == ParamType::Reference)
                            .map(|p| p.code.clone())
                            .collect()
                    } else {
                        vec![inc.param.clone()]
                    };
                    let entries = exec.entries(t, id)?.unwrap_or_default();
                    for e in entries.iter().filter(|e| params.contains(&e.param)) {
                        let Ok(v) = std::str::from_utf8(&e.value) else {
                            continue;
                        };
                        let targets: Vec<(String, String)> = if is_canonical(v) {
                            // a canonical with a version is indexed with and without it: follow
                            // the versioned form only
                            let versioned = !v.contains('|')
                                && entries.iter().any(|o| {
                                    o.param == e.param
                                        && o.value.len() > v.len()
                                        && o.value.starts_with(v.as_bytes())
                                        && o.value[v.len()] == b'|'
                                });
                            if versioned {
                                continue;
                            }
                            canonical_targets(exec, t, &e.param, v, inc.target.as_deref())?
                        } else {
                            let Some((tt, tid)) = v.split_once('/') else {
                                continue;
                            };
                            if tid.contains('/')
                                || !crate::fhir::resource_types::is_resource_type(tt)
                            {
                                continue;
                            }
                            vec![(tt.to_string(), tid.to_string())]
                        };
                        for (tt, tid) in targets {
                            if inc.target.as_deref().is_some_and(|want| want != tt) {
                                continue;
                            }
                            let k = (tt, tid);
                            if seen.insert(k.clone())
                                && exec.entries(&k.0, &k.1)?.is_some()
                                && self.may_include(&k.0, &k.1)?
                            {
                                out.push(k.clone());
                                next.push(k);
                            }
                        }
                    }
                }
            }
            for inc in s.revincludes.iter().filter(applicable) {
                let sources: Vec<String> = if inc.source == "*" {
                    crate::search::params::SEARCHABLE_TYPES
                        .iter()
                        .map(|t| t.to_string())
                        .collect()
                } else {
                    vec![inc.source.clone()]
                };
                for src in &sources {
                    let params: Vec<String> = if inc.param == "*" {
                        engine
                            .registry
                            .params(src)
                            .filter(|p| p.kind == ParamType::Reference)
                            .map(|p| p.code.clone())
                            .collect()
                    } else {
                        vec![inc.param.clone()]
                    };
                    for (t, id) in &frontier {
                        // references to the resource, and canonical ones to its url (with and
                        // without its version)
                        let urls: Vec<Vec<u8>> = exec
                            .entries(t, id)?
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|e| e.param == "url")
                            .map(|e| e.value)
                            .collect();
                        let mut targets = vec![clean(&format!("{t}/{id}"))];
                        targets.extend(urls.iter().cloned());
                        for p in &params {
                            let mut found = Vec::new();
                            for target in &targets {
                                let mut hi = target.clone();
                                hi.push(1);
                                let mut docnos = Vec::new();
                                exec.reader().scan_index(
                                    src,
                                    p,
                                    target,
                                    Some(&hi),
                                    &mut |_, n| {
                                        docnos.push(n);
                                        true
                                    },
                                )?;
                                let mut ids = Vec::with_capacity(docnos.len());
                                for n in docnos {
                                    ids.extend(exec.id(src, n)?);
                                }
                                // a bare url also indexes references that name another version
                                let bare = urls.contains(target) && !target.contains(&b'|');
                                for rid in ids {
                                    if bare && other_version(exec, src, &rid, p, target, &urls)? {
                                        continue;
                                    }
                                    found.push(rid);
                                }
                            }
                            for rid in found {
                                if !self.may_include(src, &rid)? {
                                    continue;
                                }
                                let k = (src.clone(), rid);
                                if seen.insert(k.clone()) {
                                    out.push(k.clone());
                                    next.push(k);
                                }
                            }
                        }
                    }
                }
            }
            frontier = next;
            first_round = false;
        }
        out.truncate(MAX_INCLUDES);
        Ok(out)
    }

    /// `GET [type]?query` (kept for callers with a raw query string).
    pub fn search(&self, rtype: &str, query: &str, base: &str) -> Result<Value> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let scope = SearchScope {
            types: vec![rtype.to_string()],
            compartment: None,
            path: rtype.to_string(),
            strict: false,
        };
        self.search_pairs(&scope, &pairs, base)
    }

    /// `GET [base]/Patient/[id]/$everything`: the patient and everything in its compartment,
    /// optionally only of `_type`s and changed since `_since`. Groups are left out: a cohort Group
    /// lists every member, and a patient-level answer must not name other patients.
    pub fn everything(
        &self,
        patient: &str,
        pairs: &[(String, String)],
        base: &str,
    ) -> Result<Value> {
        let engine = search::engine()?;
        // read as the caller: another party's patient is not known
        self.read("Patient", patient).map_err(|e| match e {
            FhirError::Gone(_) => FhirError::NotFound(format!("Patient/{patient} is not known")),
            e => e,
        })?;
        let mut types: Vec<String> = vec!["Patient".to_string()];
        types.extend(
            engine
                .registry
                .compartment_types()
                .into_iter()
                .filter(|t| !matches!(*t, "Patient" | "Group"))
                .map(str::to_string),
        );
        let mut rest = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "_type" => {
                    let wanted: Vec<&str> = v.split(',').map(str::trim).collect();
                    for w in &wanted {
                        if !crate::fhir::resource_types::is_resource_type(w) {
                            return Err(FhirError::BadRequest(format!(
                                "_type: '{w}' is not a resource type"
                            )));
                        }
                    }
                    types.retain(|t| wanted.contains(&t.as_str()));
                    if types.is_empty() {
                        return Err(FhirError::BadRequest(format!(
                            "_type: none of '{v}' is in $everything (the Patient compartment's types; Groups are left out, as they list other patients)"
                        )));
                    }
                }
                "_since" => {
                    if crate::search::values::parse_date_range(v).is_none() {
                        return Err(FhirError::BadRequest(format!(
                            "_since must be an instant, got '{v}'"
                        )));
                    }
                    rest.push(("_lastUpdated".to_string(), format!("ge{v}")));
                }
                "_count" | "_cursor" | "_format" | "_pretty" | "_lastUpdated" => {
                    rest.push((k.clone(), v.clone()))
                }
                _ => {}
            }
        }
        let scope = SearchScope {
            types,
            compartment: Some(patient.to_string()),
            path: format!("Patient/{patient}/$everything"),
            strict: false,
        };
        self.search_pairs(&scope, &rest, base)
    }
}

/// A canonical URL (or URN), as opposed to a `Type/id` reference.
fn is_canonical(v: &str) -> bool {
    v.contains("://") || v.starts_with("urn:")
}

/// The resources a canonical reference of `rtype`'s `param` resolves to: those of the
/// parameter's target types (every canonical resource type when it names none, or only
/// `wanted`) whose `url` (or `url|version`) is `canonical`.
fn canonical_targets(
    exec: &mut Executor,
    rtype: &str,
    param: &str,
    canonical: &str,
    wanted: Option<&str>,
) -> Result<Vec<(String, String)>> {
    let engine = search::engine()?;
    let mut types: Vec<String> = engine
        .registry
        .param(rtype, param)
        .map(|p| p.targets.clone())
        .unwrap_or_default();
    if types.is_empty() {
        types = crate::search::params::SEARCHABLE_TYPES
            .iter()
            .filter(|t| engine.registry.param(t, "url").is_some())
            .map(|t| t.to_string())
            .collect();
    }
    types.retain(|t| wanted.is_none_or(|w| w == t) && engine.registry.param(t, "url").is_some());
    let lo = clean(canonical);
    let mut hi = lo.clone();
    hi.push(1);
    let mut out = Vec::new();
    for t in types {
        let mut docnos = Vec::new();
        exec.reader()
            .scan_index(&t, "url", &lo, Some(&hi), &mut |_, n| {
                docnos.push(n);
                true
            })?;
        for n in docnos {
            if let Some(id) = exec.id(&t, n)? {
                out.push((t.clone(), id));
            }
        }
    }
    Ok(out)
}

/// Whether `rid`'s canonical references in `param` to `url` all name a version other than those
/// `urls` (the target's `url` and `url|version` index values) hold.
fn other_version(
    exec: &mut Executor,
    rtype: &str,
    rid: &str,
    param: &str,
    url: &[u8],
    urls: &[Vec<u8>],
) -> Result<bool> {
    let entries = exec.entries(rtype, rid)?.unwrap_or_default();
    let versioned: Vec<&Vec<u8>> = entries
        .iter()
        .filter(|e| e.param == param)
        .map(|e| &e.value)
        .filter(|v| v.len() > url.len() && v.starts_with(url) && v[url.len()] == b'|')
        .collect();
    // a reference without a version (only the bare value) matches every version
    let unversioned = entries
        .iter()
        .filter(|e| e.param == param && e.value.as_slice() == url)
        .count()
        > versioned.len();
    Ok(!versioned.is_empty() && !unversioned && !versioned.iter().any(|v| urls.contains(v)))
}

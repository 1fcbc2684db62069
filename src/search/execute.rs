//! Running criteria against the index.
//!
//! Plan: each positive criterion is probed with a bounded scan of its key ranges; the ones that
//! finish give exact id sets, which are intersected into the candidates (the smallest one drives
//! when all are large). Criteria that did not finish, negations and resolved chains are then
//! tested on each candidate's own index entries, with the same tests the scans use. Chains and
//! `_has` are resolved first by searching their targets. Writes not yet committed (inside a
//! transaction) are applied last from the reader's pending list.

use std::collections::{HashMap, HashSet};

use super::matcher::{Matcher, Test};
use super::query::Criterion;
use super::values::{clean, enc_token};
use crate::error::Result;
use crate::fhir::definitions::Definitions;
use crate::store::IndexEntry;

/// Read access to the search index.
pub trait IndexReader {
    /// Visit entries of (`rtype`, `param`) with values in `[lo, hi)` in key order; the visitor
    /// returns false to stop.
    fn scan(
        &mut self,
        rtype: &str,
        param: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &str) -> bool,
    ) -> Result<()>;
    /// The index entries of a live resource (None when it does not exist or is deleted).
    fn entries(&mut self, rtype: &str, id: &str) -> Result<Option<Vec<IndexEntry>>>;
    /// Visit the ids of all live resources of a type; the visitor returns false to stop.
    fn ids(&mut self, rtype: &str, visit: &mut dyn FnMut(&str) -> bool) -> Result<()>;
    /// Uncommitted writes of `rtype` this reader must see: (id, entries, or None when deleted).
    fn pending(&self, rtype: &str) -> Vec<(String, Option<Vec<IndexEntry>>)>;
    /// The current JSON of a live resource.
    fn resource(&mut self, rtype: &str, id: &str) -> Result<Option<serde_json::Value>>;

    /// Codes of a stored ValueSet (`url` or `url|version`), expanded from its compose (with
    /// whole CodeSystems looked up by url) or its expansion; None when no ValueSet has that url.
    fn valueset_codes(&mut self, url: &str) -> Result<Option<HashSet<(String, String)>>> {
        let (url, version) = match url.split_once('|') {
            Some((u, v)) => (u, Some(v)),
            None => (url, None),
        };
        for id in self.by_url("ValueSet", url)? {
            let Some(vs) = self.resource("ValueSet", &id)? else {
                continue;
            };
            if version.is_some_and(|v| vs["version"].as_str() != Some(v)) {
                continue;
            }
            let mut codesystem = |system: &str| -> Result<Option<serde_json::Value>> {
                match self.by_url("CodeSystem", system)?.first() {
                    Some(id) => self.resource("CodeSystem", id),
                    None => Ok(None),
                }
            };
            return Ok(Some(super::valueset::expand(&vs, &mut codesystem)?));
        }
        Ok(None)
    }

    /// Ids of live resources of `rtype` whose `url` is exactly `url`.
    fn by_url(&mut self, rtype: &str, url: &str) -> Result<Vec<String>> {
        let key = super::values::clean(url);
        let mut hi = key.clone();
        hi.push(1);
        let mut ids = Vec::new();
        self.scan(rtype, "url", &key, Some(&hi), &mut |_, id| {
            ids.push(id.to_string());
            true
        })?;
        Ok(ids)
    }
}

/// Most ids a probe collects before giving up on a criterion as a driver.
const PROBE_CAP: usize = 4096;
/// Most entries a probe visits.
const PROBE_VISITS: usize = 16_384;

/// A criterion in executable form (chains, `_has` and ValueSets resolved).
#[derive(Debug, Clone)]
enum Resolved {
    Any(Vec<Matcher>),
    NoneOf(Vec<Matcher>),
    Ids(HashSet<String>, bool),
}

fn passes(r: &Resolved, id: &str, entries: &[IndexEntry]) -> bool {
    let any = |ms: &[Matcher]| {
        entries
            .iter()
            .any(|e| ms.iter().any(|m| m.accepts(&e.param, &e.value)))
    };
    match r {
        Resolved::Any(ms) => any(ms),
        Resolved::NoneOf(ms) => !any(ms),
        Resolved::Ids(set, all) => *all || set.contains(id),
    }
}

/// Runs searches over one reader.
pub struct Executor<'a> {
    defs: &'a Definitions,
    reader: &'a mut dyn IndexReader,
    cache: HashMap<(String, String), Option<Vec<IndexEntry>>>,
}

enum Probe {
    Done(HashSet<String>),
    TooMany,
}

impl<'a> Executor<'a> {
    /// An executor over a reader.
    pub fn new(defs: &'a Definitions, reader: &'a mut dyn IndexReader) -> Self {
        Executor {
            defs,
            reader,
            cache: HashMap::new(),
        }
    }

    /// The reader (for includes and lookups by the caller).
    pub fn reader(&mut self) -> &mut dyn IndexReader {
        self.reader
    }

    /// A resource's entries, cached for this search.
    pub fn entries(&mut self, rtype: &str, id: &str) -> Result<Option<Vec<IndexEntry>>> {
        let k = (rtype.to_string(), id.to_string());
        if let Some(e) = self.cache.get(&k) {
            return Ok(e.clone());
        }
        let e = self.reader.entries(rtype, id)?;
        self.cache.insert(k, e.clone());
        Ok(e)
    }

    fn resolve(&mut self, rtype: &str, c: &Criterion) -> Result<Resolved> {
        Ok(match c {
            Criterion::Any(ms) => Resolved::Any(ms.clone()),
            Criterion::NoneOf(ms) => Resolved::NoneOf(ms.clone()),
            Criterion::Ids(ids) => Resolved::Ids(
                ids.iter().filter(|i| *i != "*").cloned().collect(),
                ids.iter().any(|i| i == "*"),
            ),
            Criterion::InValueSet { param, url, negate } => {
                let codes = match self.reader.valueset_codes(url)? {
                    Some(c) => c,
                    None => self.defs.valueset(url).cloned().unwrap_or_default(),
                };
                let ms: Vec<Matcher> = codes
                    .iter()
                    .map(|(s, c)| Matcher::new(param.clone(), Test::Exact(enc_token(s, c))))
                    .collect();
                if *negate {
                    Resolved::NoneOf(ms)
                } else {
                    Resolved::Any(ms)
                }
            }
            Criterion::Chain {
                param,
                types,
                inner,
            } => {
                let mut ms = Vec::new();
                for (t, crit) in types.iter().zip(inner) {
                    for id in self.matching(t, crit)? {
                        ms.push(Matcher::new(
                            param.clone(),
                            Test::Exact(clean(&format!("{t}/{id}"))),
                        ));
                    }
                }
                Resolved::Any(ms)
            }
            Criterion::Has {
                source,
                param,
                inner,
            } => {
                let prefix = format!("{rtype}/");
                let mut ids = HashSet::new();
                for sid in self.matching(source, inner)? {
                    for e in self.entries(source, &sid)?.unwrap_or_default() {
                        if &e.param == param {
                            if let Some(id) = std::str::from_utf8(&e.value)
                                .ok()
                                .and_then(|v| v.strip_prefix(&prefix))
                            {
                                ids.insert(id.to_string());
                            }
                        }
                    }
                }
                Resolved::Ids(ids, false)
            }
        })
    }

    fn probe(&mut self, rtype: &str, r: &Resolved, cap: Option<usize>) -> Result<Probe> {
        match r {
            Resolved::Ids(set, false) => {
                let mut live = HashSet::new();
                for id in set {
                    if self.entries(rtype, id)?.is_some() {
                        live.insert(id.clone());
                    }
                }
                Ok(Probe::Done(live))
            }
            Resolved::Any(ms) => {
                let mut ids = HashSet::new();
                let mut visits = 0usize;
                let mut too_many = false;
                for m in ms {
                    self.reader
                        .scan(rtype, &m.param, &m.lo, m.hi.as_deref(), &mut |v, id| {
                            visits += 1;
                            if m.test.accepts(v) {
                                ids.insert(id.to_string());
                            }
                            if let Some(c) = cap {
                                if ids.len() > c || visits > PROBE_VISITS.max(c * 4) {
                                    too_many = true;
                                    return false;
                                }
                            }
                            true
                        })?;
                    if too_many {
                        return Ok(Probe::TooMany);
                    }
                }
                Ok(Probe::Done(ids))
            }
            _ => Ok(Probe::TooMany),
        }
    }

    /// Ids of live `rtype` resources matching all criteria, sorted.
    pub fn matching(&mut self, rtype: &str, criteria: &[Criterion]) -> Result<Vec<String>> {
        let mut resolved = Vec::with_capacity(criteria.len());
        for c in criteria {
            resolved.push(self.resolve(rtype, c)?);
        }
        let mut exact: Option<HashSet<String>> = None;
        let mut filters: Vec<&Resolved> = Vec::new();
        let mut pending_positive: Vec<&Resolved> = Vec::new();
        for r in &resolved {
            let positive = matches!(r, Resolved::Any(_) | Resolved::Ids(_, false));
            if !positive {
                filters.push(r);
                continue;
            }
            let cap = exact.as_ref().map_or(PROBE_CAP, |s| s.len().max(64) * 4);
            match self.probe(rtype, r, Some(cap))? {
                Probe::Done(set) => {
                    exact = Some(match exact {
                        None => set,
                        Some(prev) => prev.intersection(&set).cloned().collect(),
                    });
                }
                Probe::TooMany => pending_positive.push(r),
            }
        }
        let candidates: HashSet<String> = match exact {
            Some(s) => s,
            None => match pending_positive.first() {
                Some(first) => {
                    let first = (*first).clone();
                    pending_positive.remove(0);
                    match self.probe(rtype, &first, None)? {
                        Probe::Done(s) => s,
                        Probe::TooMany => HashSet::new(),
                    }
                }
                None => {
                    let mut all = HashSet::new();
                    self.reader.ids(rtype, &mut |id| {
                        all.insert(id.to_string());
                        true
                    })?;
                    all
                }
            },
        };
        filters.extend(pending_positive);
        let mut out = Vec::with_capacity(candidates.len());
        if filters.is_empty() {
            out.extend(candidates);
        } else {
            for id in candidates {
                let Some(entries) = self.entries(rtype, &id)? else {
                    continue;
                };
                if filters.iter().all(|f| passes(f, &id, &entries)) {
                    out.push(id);
                }
            }
        }
        // uncommitted writes (inside a transaction) override what the index said
        let pending = self.reader.pending(rtype);
        if !pending.is_empty() {
            let touched: HashSet<&str> = pending.iter().map(|(id, _)| id.as_str()).collect();
            out.retain(|id| !touched.contains(id.as_str()));
            for (id, entries) in &pending {
                if let Some(e) = entries {
                    if resolved.iter().all(|r| passes(r, id, e)) {
                        out.push(id.clone());
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }
}

//! Running criteria against the index.
//!
//! Plan: each positive criterion is probed with a bounded scan of its key range: a value's posting
//! list (the numbers carrying it) is one key, so a criterion over few distinct values (a code, a
//! patient, a status) finishes at once however many resources it matches, and gives an exact set
//! that is intersected into the candidates. Criteria over many distinct values (a date range over
//! unique timestamps, a broad prefix) that did not finish, negations and resolved chains are then
//! tested on each candidate's own index entries, with the same tests the scans use. Chains and
//! `_has` are resolved first by searching their targets. Writes not yet committed (inside a
//! transaction) are applied last from the reader's pending list.
//!
//! The index names resources by number ([`crate::store::Store::id_of`]): sets of matches are
//! roaring bitmaps of numbers, and ids are looked up only for what a caller returns.

use std::collections::{HashMap, HashSet};

use roaring::RoaringBitmap;

use super::matcher::{Matcher, Test};
use super::query::Criterion;
use super::values::{clean, enc_token};
use crate::error::Result;
use crate::fhir::definitions::Definitions;
use crate::store::{IndexEntry, IndexRead};

/// A set of resource numbers.
type Set = RoaringBitmap;

/// Most posting lists (distinct values, by chunk) a probe reads before giving up on a criterion
/// as a driver.
const PROBE_LISTS: usize = 16_384;
/// Posting lists scanned per candidate before testing candidates one by one is cheaper (reading
/// one candidate's entries costs a random read and a decode; a scanned list, a step through a
/// sorted block and a small decode).
const SCAN_PER_CANDIDATE: usize = 4;
/// Lists at most this long are gathered as loose numbers and merged into a probe's set at once.
const LOOSE_LIST: u64 = 64;

/// A criterion in executable form (chains, `_has` and ValueSets resolved).
#[derive(Debug, Clone)]
enum Resolved {
    Any(Vec<Matcher>),
    NoneOf(Vec<Matcher>),
    Ids(Set, bool),
}

fn passes(r: &Resolved, docno: u32, entries: &[IndexEntry]) -> bool {
    let any = |ms: &[Matcher]| {
        entries
            .iter()
            .any(|e| ms.iter().any(|m| m.accepts(&e.param, &e.value)))
    };
    match r {
        Resolved::Any(ms) => any(ms),
        Resolved::NoneOf(ms) => !any(ms),
        Resolved::Ids(set, all) => *all || set.contains(docno),
    }
}

/// Runs searches over one reader.
pub struct Executor<'a> {
    defs: &'a Definitions,
    reader: &'a dyn IndexRead,
    cache: HashMap<(String, u32), Option<Vec<IndexEntry>>>,
}

enum Probe {
    Done(Set),
    TooMany,
}

impl<'a> Executor<'a> {
    /// An executor over a reader.
    pub fn new(defs: &'a Definitions, reader: &'a dyn IndexRead) -> Self {
        Executor {
            defs,
            reader,
            cache: HashMap::new(),
        }
    }

    /// The index (for includes and lookups by the caller).
    pub fn reader(&self) -> &'a dyn IndexRead {
        self.reader
    }

    /// The current JSON of a live resource.
    fn resource(&self, rtype: &str, id: &str) -> Result<Option<serde_json::Value>> {
        Ok(self
            .reader
            .live_json(rtype, id)?
            .and_then(|b| crate::fhir::number_text::parse(&b).ok()))
    }

    /// Codes of a stored ValueSet (`url` or `url|version`), expanded from its compose (with
    /// whole CodeSystems looked up by url) or its expansion; None when no ValueSet has that url.
    fn valueset_codes(&self, url: &str) -> Result<Option<HashSet<(String, String)>>> {
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
    fn by_url(&self, rtype: &str, url: &str) -> Result<Vec<String>> {
        let key = super::values::clean(url);
        let mut hi = key.clone();
        hi.push(1);
        let mut docnos = Set::new();
        self.reader
            .postings(rtype, "url", &key, Some(&hi), &mut |_, set| {
                docnos |= set;
                true
            })?;
        let mut ids = Vec::with_capacity(docnos.len() as usize);
        for n in docnos {
            ids.extend(self.reader.id_of(rtype, n)?);
        }
        Ok(ids)
    }

    /// A live resource's entries by id, cached for this search.
    pub fn entries(&mut self, rtype: &str, id: &str) -> Result<Option<Vec<IndexEntry>>> {
        match self.reader.docno_of(rtype, id)? {
            Some(n) => self.entries_at(rtype, n),
            None => Ok(None),
        }
    }

    /// A live resource's entries by number, cached for this search.
    pub fn entries_at(&mut self, rtype: &str, docno: u32) -> Result<Option<Vec<IndexEntry>>> {
        let k = (rtype.to_string(), docno);
        if let Some(e) = self.cache.get(&k) {
            return Ok(e.clone());
        }
        let e = self.reader.index_of(rtype, docno)?;
        self.cache.insert(k, e.clone());
        Ok(e)
    }

    /// The id of a resource number.
    pub fn id(&mut self, rtype: &str, docno: u32) -> Result<Option<String>> {
        self.reader.id_of(rtype, docno)
    }

    /// The numbers of resources by id (ids without one are left out).
    fn docnos_of<'i>(&mut self, rtype: &str, ids: impl Iterator<Item = &'i str>) -> Result<Set> {
        let mut set = Set::new();
        for id in ids {
            if let Some(n) = self.reader.docno_of(rtype, id)? {
                set.insert(n);
            }
        }
        Ok(set)
    }

    fn resolve(&mut self, rtype: &str, c: &Criterion) -> Result<Resolved> {
        Ok(match c {
            Criterion::Any(ms) => Resolved::Any(ms.clone()),
            Criterion::NoneOf(ms) => Resolved::NoneOf(ms.clone()),
            Criterion::Ids(ids) => Resolved::Ids(
                self.docnos_of(rtype, ids.iter().map(String::as_str).filter(|i| *i != "*"))?,
                ids.iter().any(|i| i == "*"),
            ),
            Criterion::InValueSet { param, url, negate } => {
                let codes = match self.valueset_codes(url)? {
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
                    for id in self.matching_ids(t, crit)? {
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
                let mut ids: HashSet<String> = HashSet::new();
                for sn in self.matching(source, inner)? {
                    for e in self.entries_at(source, sn)?.unwrap_or_default() {
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
                Resolved::Ids(
                    self.docnos_of(rtype, ids.iter().map(String::as_str))?,
                    false,
                )
            }
        })
    }

    /// Collect the numbers a positive criterion matches, kept only when in `within` (an earlier
    /// criterion's exact set). Gives up (`TooMany`) past `max_lists` posting lists read.
    fn probe(
        &mut self,
        rtype: &str,
        r: &Resolved,
        max_lists: Option<usize>,
        within: Option<&Set>,
    ) -> Result<Probe> {
        match r {
            Resolved::Ids(set, false) => {
                let mut live = Set::new();
                for n in set {
                    if within.is_none_or(|w| w.contains(n)) && self.entries_at(rtype, n)?.is_some()
                    {
                        live.insert(n);
                    }
                }
                Ok(Probe::Done(live))
            }
            Resolved::Any(ms) => {
                let mut ids = Set::new();
                // numbers of small lists, merged into `ids` once at the end: a union per list
                // would copy the growing set each time
                let mut loose: Vec<u32> = Vec::new();
                let mut lists = 0usize;
                let mut too_many = false;
                for m in ms {
                    self.reader.postings(
                        rtype,
                        &m.param,
                        &m.lo,
                        m.hi.as_deref(),
                        &mut |v, set| {
                            lists += 1;
                            if max_lists.is_some_and(|max| lists > max) {
                                too_many = true;
                                return false;
                            }
                            if m.test.accepts(v) {
                                if set.len() <= LOOSE_LIST {
                                    // only numbers that can stay (fewer to sort)
                                    loose.extend(
                                        set.iter()
                                            .filter(|n| within.is_none_or(|w| w.contains(*n))),
                                    );
                                } else {
                                    ids |= set;
                                }
                            }
                            true
                        },
                    )?;
                    if too_many {
                        return Ok(Probe::TooMany);
                    }
                }
                if !loose.is_empty() {
                    loose.sort_unstable();
                    loose.dedup();
                    ids |= Set::from_sorted_iter(loose).unwrap_or_default();
                }
                if let Some(w) = within {
                    ids &= w;
                }
                Ok(Probe::Done(ids))
            }
            _ => Ok(Probe::TooMany),
        }
    }

    /// How many live `rtype` resources match all criteria.
    pub fn count(&mut self, rtype: &str, criteria: &[Criterion]) -> Result<usize> {
        Ok(self.matching_set(rtype, criteria)?.len() as usize)
    }

    /// Ids of live `rtype` resources matching all criteria, sorted.
    pub fn matching_ids(&mut self, rtype: &str, criteria: &[Criterion]) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for n in self.matching(rtype, criteria)? {
            ids.extend(self.reader.id_of(rtype, n)?);
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Numbers of live `rtype` resources matching all criteria, in order.
    pub fn matching(&mut self, rtype: &str, criteria: &[Criterion]) -> Result<Vec<u32>> {
        Ok(self.matching_set(rtype, criteria)?.into_iter().collect())
    }

    /// The set of numbers of live `rtype` resources matching all criteria.
    fn matching_set(&mut self, rtype: &str, criteria: &[Criterion]) -> Result<Set> {
        let mut resolved = Vec::with_capacity(criteria.len());
        for c in criteria {
            resolved.push(self.resolve(rtype, c)?);
        }
        let mut exact: Option<Set> = None;
        let mut filters: Vec<&Resolved> = Vec::new();
        // positive criteria that gave up, with whether they were probed within an exact set
        // (then a second scan within the candidates would give up alike)
        let mut pending_positive: Vec<(&Resolved, bool)> = Vec::new();
        for r in &resolved {
            let positive = matches!(r, Resolved::Any(_) | Resolved::Ids(_, false));
            if !positive {
                filters.push(r);
                continue;
            }
            // before any exact set: a bounded look; after one: a scan while it stays cheaper
            // than testing the set's members one by one
            let limit = match &exact {
                None => PROBE_LISTS,
                Some(s) => (s.len() as usize).max(1) * SCAN_PER_CANDIDATE,
            };
            match self.probe(rtype, r, Some(limit), exact.as_ref())? {
                Probe::Done(set) => exact = Some(set),
                Probe::TooMany => pending_positive.push((r, exact.is_some())),
            }
        }
        let mut candidates: Set = match exact {
            Some(s) => s,
            None => match pending_positive.first() {
                Some((first, _)) => {
                    let first = (*first).clone();
                    pending_positive.remove(0);
                    match self.probe(rtype, &first, None, None)? {
                        Probe::Done(s) => s,
                        Probe::TooMany => Set::new(),
                    }
                }
                None => {
                    let mut all = Set::new();
                    self.reader.live_docnos(rtype, &mut |n| {
                        all.insert(n);
                        true
                    })?;
                    all
                }
            },
        };
        // a large criterion is cheaper to scan (and intersect) than to test on each candidate's
        // own entries while its entries are at most SCAN_PER_CANDIDATE times the candidates
        for (r, within_exact) in pending_positive {
            if within_exact {
                filters.push(r);
                continue;
            }
            let limit = (candidates.len() as usize).max(1) * SCAN_PER_CANDIDATE;
            match self.probe(rtype, r, Some(limit), Some(&candidates))? {
                Probe::Done(set) => candidates = set,
                Probe::TooMany => filters.push(r),
            }
        }
        // a negation over few values is the candidates less the resources that have one of
        // them (the same sets a positive criterion reads), not a test of each candidate
        let mut kept_filters = Vec::with_capacity(filters.len());
        for f in filters {
            if let Resolved::NoneOf(ms) = f {
                let any = Resolved::Any(ms.clone());
                if let Probe::Done(set) = self.probe(rtype, &any, Some(PROBE_LISTS), None)? {
                    candidates -= set;
                    continue;
                }
            }
            kept_filters.push(f);
        }
        let filters = kept_filters;
        let mut out = if filters.is_empty() {
            candidates
        } else {
            let mut kept = Set::new();
            for n in &candidates {
                let Some(entries) = self.entries_at(rtype, n)? else {
                    continue;
                };
                if filters.iter().all(|f| passes(f, n, &entries)) {
                    kept.insert(n);
                }
            }
            kept
        };
        // uncommitted writes (inside a transaction) override what the index said
        for p in self.reader.pending(rtype) {
            out.remove(p.docno);
            if let Some(e) = &p.entries {
                if resolved.iter().all(|r| passes(r, p.docno, e)) {
                    out.insert(p.docno);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use super::*;

    /// An index held in memory: (param, value, number) in key order, each number's entries,
    /// and each id's number (`r00007` is number 8).
    #[derive(Default)]
    struct MemIndex {
        keys: BTreeSet<(String, Vec<u8>, u32)>,
        by_docno: HashMap<u32, Vec<IndexEntry>>,
    }

    fn docno(id: &str) -> Option<u32> {
        id.strip_prefix('r')?.parse::<u32>().ok().map(|n| n + 1)
    }

    impl MemIndex {
        fn add(&mut self, id: &str, param: &str, value: &str) {
            let value = value.as_bytes().to_vec();
            let n = docno(id).expect("test id");
            self.keys.insert((param.to_string(), value.clone(), n));
            self.by_docno.entry(n).or_default().push(IndexEntry {
                param: param.to_string(),
                value,
            });
        }
    }

    impl IndexRead for MemIndex {
        fn postings(
            &self,
            _rtype: &str,
            param: &str,
            lo: &[u8],
            hi: Option<&[u8]>,
            visit: &mut dyn FnMut(&[u8], &Set) -> bool,
        ) -> Result<()> {
            // one list per value (in key order), keyed `value \0 chunk` as in the store
            let mut lists: Vec<(Vec<u8>, Set)> = Vec::new();
            for (p, v, n) in &self.keys {
                let mut k = v.clone();
                k.extend_from_slice(&[0, 0, 0]);
                if p != param || k.as_slice() < lo || hi.is_some_and(|h| k.as_slice() >= h) {
                    continue;
                }
                match lists.last_mut() {
                    Some((last, set)) if last == v => {
                        set.insert(*n);
                    }
                    _ => lists.push((v.clone(), std::iter::once(*n).collect())),
                }
            }
            for (v, set) in &lists {
                if !visit(v, set) {
                    break;
                }
            }
            Ok(())
        }
        fn index_of(&self, _rtype: &str, n: u32) -> Result<Option<Vec<IndexEntry>>> {
            Ok(self.by_docno.get(&n).cloned())
        }
        fn live_docnos(&self, _rtype: &str, visit: &mut dyn FnMut(u32) -> bool) -> Result<()> {
            for n in self.by_docno.keys() {
                if !visit(*n) {
                    break;
                }
            }
            Ok(())
        }
        fn docno_of(&self, _rtype: &str, id: &str) -> Result<Option<u32>> {
            Ok(docno(id).filter(|n| self.by_docno.contains_key(n)))
        }
        fn id_of(&self, _rtype: &str, n: u32) -> Result<Option<String>> {
            Ok(Some(format!("r{:05}", n - 1)))
        }
        fn live_json(&self, _rtype: &str, _id: &str) -> Result<Option<Vec<u8>>> {
            Ok(None)
        }
    }

    fn exact(param: &str, value: &str) -> Criterion {
        Criterion::Any(vec![Matcher::new(
            param,
            Test::Exact(value.as_bytes().to_vec()),
        )])
    }

    fn prefix(param: &str, value: &str) -> Criterion {
        Criterion::Any(vec![Matcher::new(
            param,
            Test::Prefix(value.as_bytes().to_vec()),
        )])
    }

    /// 20,000 resources: `code` c0..c2 (id mod 3), `month` m00..m11 (id mod 12, some with two
    /// months), `patient` p0..p999 (id mod 1000), every 7th without a patient.
    /// (n, code, patient, months) of each resource.
    type Truth = Vec<(usize, u32, Option<u32>, Vec<u32>)>;

    fn index() -> (MemIndex, Truth) {
        let mut idx = MemIndex::default();
        let mut truth = Vec::new();
        for n in 0..20_000usize {
            let id = format!("r{n:05}");
            let code = (n % 3) as u32;
            idx.add(&id, "code", &format!("c{code}"));
            let mut months = vec![(n % 12) as u32];
            if n % 5 == 0 {
                months.push(((n / 5) % 12) as u32);
            }
            for m in &months {
                idx.add(&id, "month", &format!("m{m:02}"));
            }
            let patient = (n % 7 != 0).then_some((n % 1000) as u32);
            if let Some(p) = patient {
                idx.add(&id, "patient", &format!("p{p}"));
            }
            truth.push((n, code, patient, months));
        }
        (idx, truth)
    }

    fn expect(truth: &Truth, keep: impl Fn(u32, Option<u32>, &[u32]) -> bool) -> Vec<String> {
        truth
            .iter()
            .filter(|(_, c, p, m)| keep(*c, *p, m))
            .map(|(n, ..)| format!("r{n:05}"))
            .collect()
    }

    #[test]
    fn large_and_small_criteria_intersect_exactly_whichever_plan_runs() {
        let defs = crate::search::engine().expect("definitions");
        let (idx, truth) = index();
        let mut exec = Executor::new(&defs.defs, &idx);
        // two large criteria (6,667 and ~3,000 matches): both beyond a probe's cap
        let got = exec
            .matching_ids("Observation", &[exact("code", "c1"), prefix("month", "m0")])
            .expect("runs");
        let want = expect(&truth, |c, _, m| c == 1 && m.iter().any(|m| *m < 10));
        assert_eq!(got.len(), want.len());
        assert_eq!(got, want);
        // the same, in the other order
        let got = exec
            .matching_ids("Observation", &[prefix("month", "m0"), exact("code", "c1")])
            .expect("runs");
        assert_eq!(got, want);
        // a small exact set first, then a large criterion, then a negation
        let got = exec
            .matching_ids(
                "Observation",
                &[
                    exact("patient", "p17"),
                    prefix("code", "c"),
                    Criterion::NoneOf(vec![Matcher::new("month", Test::Exact(b"m05".to_vec()))]),
                ],
            )
            .expect("runs");
        let want = expect(&truth, |_, p, m| p == Some(17) && !m.contains(&5));
        assert!(!want.is_empty() && want.len() < expect(&truth, |_, p, _| p == Some(17)).len());
        assert_eq!(got, want);
        // three large criteria, one matching nothing in the others' intersection
        let got = exec
            .matching_ids(
                "Observation",
                &[
                    exact("code", "c0"),
                    prefix("month", "m1"),
                    prefix("patient", "p9"),
                ],
            )
            .expect("runs");
        let want = expect(&truth, |c, p, m| {
            c == 0
                && m.iter().any(|m| *m >= 10)
                && p.is_some_and(|p| p.to_string().starts_with('9'))
        });
        assert_eq!(got, want);
        // a negation alone, and beside a large criterion: the live resources less those with
        // a matching entry
        let not_may =
            || Criterion::NoneOf(vec![Matcher::new("month", Test::Exact(b"m05".to_vec()))]);
        let got = exec
            .matching_ids("Observation", &[not_may()])
            .expect("runs");
        assert_eq!(got, expect(&truth, |_, _, m| !m.contains(&5)));
        let got = exec
            .matching_ids("Observation", &[exact("code", "c2"), not_may()])
            .expect("runs");
        assert_eq!(got, expect(&truth, |c, _, m| c == 2 && !m.contains(&5)));
        // a criterion alone: every match, sorted, and counted alike without collecting them
        let got = exec
            .matching_ids("Observation", &[exact("code", "c0")])
            .expect("runs");
        assert_eq!(got, expect(&truth, |c, _, _| c == 0));
        for criteria in [
            vec![exact("code", "c0")],
            vec![exact("month", "m03")],
            vec![exact("patient", "p17")],
            vec![exact("code", "c9")],
            vec![prefix("month", "m0")],
            vec![exact("code", "c1"), prefix("month", "m0")],
        ] {
            let ids = exec.matching_ids("Observation", &criteria).expect("runs");
            assert_eq!(
                exec.count("Observation", &criteria).expect("counts"),
                ids.len()
            );
        }
        assert_eq!(
            exec.count("Observation", &[exact("month", "m03")])
                .expect("counts"),
            expect(&truth, |_, _, m| m.contains(&3)).len()
        );
    }
}

//! A model-based test of the store: seeded random creates, updates (plain and if-match),
//! deletes, conditional creates, multi-write transactions that sometimes fail, and concurrent
//! jobs folded into one commit group, run against [`KvStore`] on the serving engine and mirrored in a
//! plain in-memory model. After every step (and after every close and reopen) the store's reads
//! agree with the model: current and every version, instance and type history, index entries and
//! index scans, live ids and listings. It proves that a job's writes are all kept or all dropped,
//! that a job sees its own and its group's earlier writes, that the search index follows every
//! version, and that all of it survives a restart. A failure names the engine, seed, step and
//! operation, so it can be replayed.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use super::kv::Engine;
use super::kv_store::KvStore;
use super::{write, HistoryQuery, IndexEntry, IndexRead, Method, StagedWrite, Store, WriteTxn};
use crate::error::{FhirError, Result};

const TYPES: [&str; 2] = ["Patient", "Observation"];
const IDS: usize = 12;
/// Every (type, id) the test writes.
const TARGETS: usize = TYPES.len() * IDS;
const SEEDS: [u64; 3] = [0x5eed_0001, 0x5eed_0002, 0x5eed_0003];
const STEPS: usize = 300;
const REOPEN_EVERY: usize = 50;

/// splitmix64: a deterministic generator, so a seed replays the same run.
struct Rng(u64);

impl Rng {
    fn bits(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.bits() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.bits() % 100 < percent
    }
}

#[derive(Debug, Clone)]
struct Target {
    rtype: &'static str,
    id: String,
}

/// A resource's content: its JSON carries the values its index entries are made of.
#[derive(Debug, Clone)]
struct Body {
    n: u64,
    ident: String,
    tag: Option<String>,
}

impl Body {
    fn json(&self, id: &str) -> Vec<u8> {
        let mut v = serde_json::json!({"id": id, "n": self.n, "ident": self.ident});
        if let Some(t) = &self.tag {
            v["tag"] = serde_json::Value::from(t.as_str());
        }
        serde_json::to_vec(&v).expect("a JSON value serializes")
    }

    /// Sorted and distinct ("identifier" < "tag"), as the store keeps them.
    fn entries(&self) -> Vec<IndexEntry> {
        let mut out = vec![entry("identifier", &self.ident)];
        out.extend(self.tag.as_deref().map(|t| entry("tag", t)));
        out
    }
}

fn entry(param: &str, value: &str) -> IndexEntry {
    IndexEntry {
        param: param.into(),
        value: value.as_bytes().to_vec(),
    }
}

/// The index entries of a stored resource, read back from its JSON (for `check_index`).
fn extract(_rtype: &str, json: &[u8]) -> Vec<IndexEntry> {
    let v: serde_json::Value = serde_json::from_slice(json).expect("test resources are JSON");
    let mut out = Vec::new();
    for (field, param) in [("ident", "identifier"), ("tag", "tag")] {
        if let Some(s) = v[field].as_str() {
            out.push(entry(param, s));
        }
    }
    out
}

fn has_ident(entries: &[IndexEntry], ident: &str) -> bool {
    entries
        .iter()
        .any(|e| e.param == "identifier" && e.value == ident.as_bytes())
}

#[derive(Debug, Clone)]
enum Op {
    Create(Target, Body),
    /// An update, with the version an if-match expects.
    Update(Target, Body, Option<u64>),
    Delete(Target),
    /// Create unless a live resource of the type has `identifier` = the body's.
    CondCreate(Target, Body),
    /// A step that fails, failing its whole job.
    Fail,
}

impl Op {
    fn target(&self) -> Option<&Target> {
        match self {
            Op::Create(t, _) | Op::Update(t, _, _) | Op::Delete(t) | Op::CondCreate(t, _) => {
                Some(t)
            }
            Op::Fail => None,
        }
    }
}

/// One version a job wrote: (type, id, version, method).
type Written = (String, String, u64, Method);

fn written(w: &StagedWrite) -> Written {
    (w.rtype.clone(), w.id.clone(), w.version, w.method)
}

/// A job's result: its writes, or the kind of error that failed it.
type Outcome = std::result::Result<Vec<Written>, String>;

fn kind(e: &FhirError) -> String {
    match e {
        FhirError::Conflict(_) => "conflict".into(),
        FhirError::PreconditionFailed(_) => "precondition".into(),
        FhirError::BadRequest(_) => "planned failure".into(),
        e => format!("unexpected error: {e}"),
    }
}

fn staged(t: &Target, version: u64, method: Method, body: Option<&Body>) -> StagedWrite {
    StagedWrite {
        rtype: t.rtype.to_string(),
        id: t.id.clone(),
        version,
        method,
        resource: body.map(|b| b.json(&t.id)),
        index: body.map(Body::entries).unwrap_or_default(),
    }
}

/// The rules of the test's "server", shared by the job and the model (what differs is where
/// they read `latest`, the target's (version, deleted), and `matched`, whether a live resource
/// meets a conditional create's condition): what `op` writes, if anything, or why it fails.
fn plan(op: &Op, latest: Option<(u64, bool)>, matched: bool) -> Result<Option<StagedWrite>> {
    let next = latest.map_or(1, |(v, _)| v + 1);
    let live = latest.is_some_and(|(_, deleted)| !deleted);
    match op {
        Op::Fail => Err(FhirError::BadRequest("planned failure".into())),
        Op::CondCreate(_, _) if matched => Ok(None),
        Op::Create(t, _) | Op::CondCreate(t, _) if live => {
            Err(FhirError::Conflict(format!("{}/{} exists", t.rtype, t.id)))
        }
        Op::Create(t, b) | Op::CondCreate(t, b) => {
            Ok(Some(staged(t, next, Method::Create, Some(b))))
        }
        Op::Update(t, _, Some(expected)) if latest != Some((*expected, false)) => {
            Err(FhirError::PreconditionFailed(format!(
                "{}/{} is not at version {expected}",
                t.rtype, t.id
            )))
        }
        Op::Update(t, b, _) => Ok(Some(staged(t, next, Method::Update, Some(b)))),
        Op::Delete(t) if live => Ok(Some(staged(t, next, Method::Delete, None))),
        Op::Delete(_) => Ok(None),
    }
}

/// Whether a live resource of `rtype` has identifier `ident`, as a job sees it: this group's
/// pending writes override the committed index for their ids.
fn txn_matches(txn: &mut dyn WriteTxn, rtype: &str, ident: &str) -> Result<bool> {
    let pending = txn.pending(rtype);
    if pending
        .iter()
        .any(|p| p.entries.as_deref().is_some_and(|e| has_ident(e, ident)))
    {
        return Ok(true);
    }
    let overridden: HashSet<u32> = pending.iter().map(|p| p.docno).collect();
    let value = ident.as_bytes();
    let hi = [value, &[1]].concat();
    let mut found = false;
    txn.scan_index(rtype, "identifier", value, Some(&hi), &mut |v, n| {
        found = v == value && !overridden.contains(&n);
        !found
    })?;
    Ok(found)
}

/// After a put, the job's own reads (current, index_of, pending) must show it.
fn check_own_write(txn: &mut dyn WriteTxn, w: &StagedWrite) -> Result<()> {
    let live = w.method != Method::Delete;
    let entries = live.then_some(w.index.as_slice());
    let current = txn.current(&w.rtype, &w.id)?;
    let index = match txn.docno_of(&w.rtype, &w.id)? {
        Some(n) => txn.index_of(&w.rtype, n)?,
        None => None,
    };
    let pending = txn.pending(&w.rtype).into_iter().find(|p| p.id == w.id);
    let seen = (
        current.map(|c| (c.version, c.deleted, c.resource)),
        index.as_deref(),
        pending.as_ref().map(|p| p.entries.as_deref()),
    );
    let want = (
        Some((w.version, !live, w.resource.clone())),
        entries,
        Some(entries),
    );
    if seen == want {
        return Ok(());
    }
    Err(FhirError::Storage(format!(
        "the job does not see its own write of {}/{} v{}: {seen:?}",
        w.rtype, w.id, w.version
    )))
}

/// The job run on the store's writer for one step's operations.
fn run_job(txn: &mut dyn WriteTxn, ops: &[Op]) -> Result<Vec<Written>> {
    let mut writes = Vec::new();
    for op in ops {
        let latest = match op.target() {
            Some(t) => txn.current(t.rtype, &t.id)?.map(|c| (c.version, c.deleted)),
            None => None,
        };
        let matched = match op {
            Op::CondCreate(t, b) => txn_matches(txn, t.rtype, &b.ident)?,
            _ => false,
        };
        if let Some(w) = plan(op, latest, matched)? {
            txn.put(w.clone())?;
            check_own_write(txn, &w)?;
            writes.push(written(&w));
        }
    }
    Ok(writes)
}

/// Every version of every resource, by (type, id), as it was staged.
#[derive(Debug, Clone, Default)]
struct Model {
    versions: BTreeMap<(String, String), Vec<StagedWrite>>,
}

impl Model {
    fn versions(&self, rtype: &str, id: &str) -> &[StagedWrite] {
        self.versions
            .get(&(rtype.to_string(), id.to_string()))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn latest(&self, rtype: &str, id: &str) -> Option<&StagedWrite> {
        self.versions(rtype, id).last()
    }

    /// Live resources of a type in id order, with their latest version.
    fn live_of<'a>(&'a self, rtype: &'a str) -> impl Iterator<Item = (&'a str, &'a StagedWrite)> {
        self.versions.iter().filter_map(move |((t, id), vs)| {
            let last = vs.last().filter(|v| v.method != Method::Delete)?;
            (t == rtype).then_some((id.as_str(), last))
        })
    }

    fn live_ids(&self, rtype: &str) -> Vec<String> {
        self.live_of(rtype).map(|(id, _)| id.to_string()).collect()
    }

    /// (value, id) of the live index entries of (`rtype`, `param`), in index key order.
    fn index_pairs(&self, rtype: &str, param: &str) -> Vec<(Vec<u8>, String)> {
        let mut out: Vec<(Vec<u8>, String)> = self
            .live_of(rtype)
            .flat_map(|(id, v)| {
                v.index
                    .iter()
                    .filter(move |e| e.param == param)
                    .map(move |e| (e.value.clone(), id.to_string()))
            })
            .collect();
        out.sort();
        out
    }

    /// (id, version) of every version of a type, sorted.
    fn all_versions(&self, rtype: &str) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = self
            .versions
            .iter()
            .filter(|((t, _), _)| t == rtype)
            .flat_map(|((_, id), vs)| vs.iter().map(move |v| (id.clone(), v.version)))
            .collect();
        out.sort();
        out
    }

    /// Apply a job's operations: all of them when none fails, else none.
    fn run(&mut self, ops: &[Op]) -> Outcome {
        let mut next = self.clone();
        let mut writes = Vec::new();
        for op in ops {
            let latest = op
                .target()
                .and_then(|t| next.latest(t.rtype, &t.id))
                .map(|v| (v.version, v.method == Method::Delete));
            let matched = match op {
                Op::CondCreate(t, b) => next
                    .live_of(t.rtype)
                    .any(|(_, v)| has_ident(&v.index, &b.ident)),
                _ => false,
            };
            let Some(w) = plan(op, latest, matched).map_err(|e| kind(&e))? else {
                continue;
            };
            writes.push(written(&w));
            let key = (w.rtype.clone(), w.id.clone());
            next.versions.entry(key).or_default().push(w);
        }
        *self = next;
        Ok(writes)
    }
}

fn id_of(i: usize) -> String {
    format!("r{i}")
}

/// The `k`th of the [`TARGETS`] resources.
fn target_at(k: usize) -> Target {
    Target {
        rtype: TYPES[k / IDS],
        id: id_of(k % IDS),
    }
}

/// Random operations for the steps of one seed.
struct Source {
    rng: Rng,
    n: u64,
}

impl Source {
    fn target(&mut self) -> Target {
        target_at(self.rng.below(TARGETS))
    }

    fn body(&mut self) -> Body {
        self.n += 1;
        let ident = format!("v{}", self.rng.below(5));
        let tag = self
            .rng
            .chance(50)
            .then(|| format!("t{}", self.rng.below(3)));
        Body {
            n: self.n,
            ident,
            tag,
        }
    }

    fn op(&mut self, model: &Model, t: Target) -> Op {
        match self.rng.below(5) {
            0 => Op::Create(t, self.body()),
            1 => Op::Update(t, self.body(), None),
            2 => {
                let right = model.latest(t.rtype, &t.id).map_or(1, |v| v.version);
                let expected = if self.rng.chance(60) {
                    right
                } else {
                    right + 1 + self.rng.below(2) as u64
                };
                Op::Update(t, self.body(), Some(expected))
            }
            3 => Op::Delete(t),
            _ => Op::CondCreate(t, self.body()),
        }
    }

    /// One step: a single operation, a transaction of 2-4 (on repeated targets often, and
    /// sometimes failing at its end), or 3-5 concurrent jobs on distinct resources.
    fn step(&mut self, model: &Model) -> Vec<Vec<Op>> {
        match self.rng.below(100) {
            0..=74 => {
                let t = self.target();
                vec![vec![self.op(model, t)]]
            }
            75..=89 => {
                let len = 2 + self.rng.below(3);
                let mut ops = Vec::with_capacity(len);
                let mut t = self.target();
                for _ in 0..len {
                    if self.rng.chance(50) {
                        t = self.target();
                    }
                    ops.push(self.op(model, t.clone()));
                }
                if self.rng.chance(30) {
                    ops.push(Op::Fail);
                }
                vec![ops]
            }
            _ => {
                let jobs = 3 + self.rng.below(3);
                let mut picked = Vec::with_capacity(jobs);
                while picked.len() < jobs {
                    let k = self.rng.below(TARGETS);
                    if !picked.contains(&k) {
                        picked.push(k);
                    }
                }
                let picked = picked.into_iter().map(target_at);
                picked.map(|t| vec![self.op(model, t)]).collect()
            }
        }
    }
}

/// Submit the jobs at once (so the writer may fold them into one commit group), in order.
async fn submit(store: &KvStore, jobs: &[Vec<Op>]) -> Vec<Outcome> {
    let futures = jobs.iter().map(|ops| {
        let ops = ops.clone();
        write(store, move |txn| run_job(txn, &ops))
    });
    futures::future::join_all(futures)
        .await
        .into_iter()
        .map(|r| r.map_err(|e| kind(&e)))
        .collect()
}

fn check_resource(store: &KvStore, model: &Model, rtype: &str, id: &str, ctx: &str) {
    let versions = model.versions(rtype, id);
    let latest = versions.last();
    let cur = store.current(rtype, id).expect("current reads");
    let got = cur.map(|r| (r.version, r.deleted(), r.resource));
    let want = latest.map(|v| (v.version, v.method == Method::Delete, v.resource.clone()));
    assert_eq!(got, want, "{ctx}: current {rtype}/{id}");
    for v in versions {
        let rec = store.version(rtype, id, v.version).expect("version reads");
        assert_eq!(
            rec.as_ref().map(|r| (r.method, r.resource.as_deref())),
            Some((v.method, v.resource.as_deref())),
            "{ctx}: {rtype}/{id} version {}",
            v.version
        );
    }
    let hist = store.instance_history(rtype, id, page(1000));
    let got: Vec<_> = hist
        .expect("history reads")
        .iter()
        .map(|r| (r.version, r.method))
        .collect();
    let want: Vec<_> = versions
        .iter()
        .rev()
        .map(|v| (v.version, v.method))
        .collect();
    assert_eq!(got, want, "{ctx}: instance history of {rtype}/{id}");
    let docno = store.docno_of(rtype, id).expect("docno_of reads");
    if let Some(n) = docno {
        let back = store.id_of(rtype, n).expect("id_of reads");
        assert_eq!(
            back.as_deref(),
            Some(id),
            "{ctx}: number {n} of {rtype}/{id}"
        );
    }
    let got = match docno {
        Some(n) => store.index_of(rtype, n).expect("index_of reads"),
        None => None,
    };
    let want = latest
        .filter(|v| v.method != Method::Delete)
        .map(|v| &v.index);
    assert_eq!(got.as_ref(), want, "{ctx}: index entries of {rtype}/{id}");
}

/// Compare everything the store can be asked with the model.
fn check(store: &KvStore, model: &Model, ctx: &str) {
    let mut total = 0;
    for rtype in TYPES {
        for i in 0..IDS {
            check_resource(store, model, rtype, &id_of(i), ctx);
        }
        let live = model.live_ids(rtype);
        let mut docnos = Vec::new();
        let visit = &mut |n: u32| {
            docnos.push(n);
            true
        };
        store.live_docnos(rtype, visit).expect("live numbers read");
        let mut ids: Vec<String> = docnos
            .iter()
            .map(|n| {
                store
                    .id_of(rtype, *n)
                    .expect("id_of reads")
                    .unwrap_or_default()
            })
            .collect();
        ids.sort();
        assert_eq!(ids, live, "{ctx}: live ids of {rtype}");
        let listed = store.list(rtype, None, 1000).expect("list reads");
        let listed: Vec<String> = listed.into_iter().map(|r| r.id).collect();
        assert_eq!(listed, live, "{ctx}: list of {rtype}");
        for param in ["identifier", "tag"] {
            let mut numbered = Vec::new();
            store
                .scan_index(rtype, param, b"", None, &mut |v, n| {
                    numbered.push((v.to_vec(), n));
                    true
                })
                .expect("index scans");
            let mut pairs: Vec<(Vec<u8>, String)> = numbered
                .into_iter()
                .map(|(v, n)| {
                    (
                        v,
                        store
                            .id_of(rtype, n)
                            .expect("id_of reads")
                            .unwrap_or_default(),
                    )
                })
                .collect();
            pairs.sort();
            let mut want = model.index_pairs(rtype, param);
            want.sort();
            assert_eq!(pairs, want, "{ctx}: index of {rtype}.{param}");
        }
        let hist = store.history(Some(rtype), page(100_000));
        let hist = hist.expect("type history reads");
        assert!(
            hist.windows(2).all(|w| w[0].seq > w[1].seq),
            "{ctx}: history of {rtype} is not newest first"
        );
        let mut got: Vec<(String, u64)> = hist.iter().map(|r| (r.id.clone(), r.version)).collect();
        got.sort();
        assert_eq!(got, model.all_versions(rtype), "{ctx}: history of {rtype}");
        total += hist.len();
    }
    let all = store.history(None, page(100_000));
    let all = all.expect("system history reads");
    assert_eq!(all.len(), total, "{ctx}: system history length");
}

fn page(limit: usize) -> HistoryQuery {
    HistoryQuery {
        limit,
        ..Default::default()
    }
}

fn reopen(store: KvStore, dir: &Path) -> KvStore {
    store.shutdown().expect("the store shuts down");
    drop(store);
    KvStore::open(dir).expect("the store reopens")
}

async fn run_seed(engine: Engine, seed: u64) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    engine.record(dir.path()).expect("the engine is recorded");
    let mut store = KvStore::open(dir.path()).expect("the store opens");
    let mut model = Model::default();
    let mut source = Source {
        rng: Rng(seed),
        n: 0,
    };
    for step in 1..=STEPS {
        let jobs = source.step(&model);
        let ctx = format!("{} seed {seed:#x} step {step} jobs {jobs:?}", engine.name());
        let results = submit(&store, &jobs).await;
        for (ops, got) in jobs.iter().zip(results) {
            let want = model.run(ops);
            assert_eq!(got, want, "{ctx}: the job {ops:?} differs from the model");
        }
        check(&store, &model, &ctx);
        if step % REOPEN_EVERY == 0 || step == STEPS {
            store = reopen(store, dir.path());
            check(&store, &model, &format!("{ctx} (after reopening)"));
        }
    }
    let report = store.check_index(&extract).expect("the index check runs");
    let live: usize = TYPES.iter().map(|t| model.live_ids(t).len()).sum();
    assert!(
        report.consistent() && report.resources == live,
        "{} seed {seed:#x}: index check {report:?}, {live} live resources",
        engine.name()
    );
    store.shutdown().expect("the store shuts down");
}

async fn store_agrees_with_the_model(engine: Engine) {
    for seed in SEEDS {
        run_seed(engine, seed).await;
    }
}

#[tokio::test]
async fn fjall_store_agrees_with_the_model() {
    store_agrees_with_the_model(Engine::Fjall).await;
}

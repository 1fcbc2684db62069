//! The embedded default engine: sled, one tree, one writer thread with group commit.
//!
//! Key layout (all in one tree so that a commit group is one atomic `apply_batch`):
//! - `c\0type\0id` -> latest version (u64 BE) + deleted flag
//! - `v\0type\0id\0<version u64 BE>` -> version record ([`super::record::encode`])
//! - `h<seq u64 BE>` -> `type\0id\0<version u64 BE>` (system history)
//! - `t\0type\0<seq u64 BE>` -> `id\0<version u64 BE>` (type history)
//! - `i\0type\0param\0value\0id` -> empty (search index)
//! - `x\0type\0id` -> the resource's index entries (to remove them on the next version)
//! - `m\0seq` -> last sequence number

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::record::{decode, encode, IndexEntry, Method, StagedWrite, VersionRecord};
use super::{Current, HistoryQuery, JobOutcome, Store, WriteJob, WriteTxn};
use crate::error::{FhirError, Result};

/// Most jobs folded into one commit group.
const MAX_GROUP: usize = 1024;
const SEP: u8 = 0;

/// sled-backed [`Store`].
pub struct SledStore {
    db: sled::Db,
    sender: Mutex<Option<Sender<WriteJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    open: Arc<AtomicBool>,
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(p);
    }
    k
}

fn clean(s: &str) -> Vec<u8> {
    s.bytes().map(|b| if b == SEP { b' ' } else { b }).collect()
}

fn current_key(rtype: &str, id: &str) -> Vec<u8> {
    key(&[b"c", rtype.as_bytes(), id.as_bytes()])
}

fn version_key(rtype: &str, id: &str, version: u64) -> Vec<u8> {
    key(&[
        b"v",
        rtype.as_bytes(),
        id.as_bytes(),
        &version.to_be_bytes(),
    ])
}

fn index_prefix(rtype: &str, param: &str, value: &str) -> Vec<u8> {
    let mut k = key(&[b"i", rtype.as_bytes(), &clean(param), &clean(value)]);
    k.push(SEP);
    k
}

fn reverse_index_key(rtype: &str, id: &str) -> Vec<u8> {
    key(&[b"x", rtype.as_bytes(), id.as_bytes()])
}

/// Committed ids with index entry `param` = `value`.
fn indexed_ids(db: &sled::Db, rtype: &str, param: &str, value: &str) -> Result<Vec<String>> {
    let prefix = index_prefix(rtype, param, value);
    let mut ids = Vec::new();
    for item in db.scan_prefix(&prefix) {
        let (k, _) = item?;
        ids.push(String::from_utf8_lossy(&k[prefix.len()..]).into_owned());
    }
    Ok(ids)
}

fn u64_from(bytes: &[u8]) -> Option<u64> {
    let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

fn encode_entries(entries: &[IndexEntry]) -> Vec<u8> {
    let list: Vec<[&str; 2]> = entries
        .iter()
        .map(|e| [e.param.as_str(), e.value.as_str()])
        .collect();
    serde_json::to_vec(&list).unwrap_or_default()
}

fn decode_entries(bytes: &[u8]) -> Vec<IndexEntry> {
    serde_json::from_slice::<Vec<[String; 2]>>(bytes)
        .unwrap_or_default()
        .into_iter()
        .map(|[param, value]| IndexEntry { param, value })
        .collect()
}

impl SledStore {
    /// Open (or create) the store in `dir` with sled's default cache and start its writer.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, 1024 * 1024 * 1024)
    }

    /// Open (or create) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open()?;
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        let open = Arc::new(AtomicBool::new(true));
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer_db, receiver))
            .map_err(|e| FhirError::Storage(format!("cannot start writer: {e}")))?;
        Ok(SledStore {
            db,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            open,
        })
    }

    fn read_version(&self, rtype: &str, id: &str, version: u64) -> Result<Option<VersionRecord>> {
        match self.db.get(version_key(rtype, id, version))? {
            Some(bytes) => Ok(Some(decode(rtype, id, &bytes)?)),
            None => Ok(None),
        }
    }
}

impl Store for SledStore {
    fn current(&self, rtype: &str, id: &str) -> Result<Option<VersionRecord>> {
        match self.db.get(current_key(rtype, id))? {
            Some(c) => match u64_from(&c) {
                Some(v) => self.read_version(rtype, id, v),
                None => Err(FhirError::Storage("corrupt current pointer".into())),
            },
            None => Ok(None),
        }
    }

    fn version(&self, rtype: &str, id: &str, version: u64) -> Result<Option<VersionRecord>> {
        self.read_version(rtype, id, version)
    }

    fn instance_history(
        &self,
        rtype: &str,
        id: &str,
        q: HistoryQuery,
    ) -> Result<Vec<VersionRecord>> {
        let mut prefix = key(&[b"v", rtype.as_bytes(), id.as_bytes()]);
        prefix.push(SEP);
        let mut out = Vec::new();
        for item in self.db.scan_prefix(&prefix).rev() {
            let (_, bytes) = item?;
            let rec = decode(rtype, id, &bytes)?;
            if !q.admit(rec, &mut out) {
                break;
            }
        }
        Ok(out)
    }

    fn history(&self, rtype: Option<&str>, q: HistoryQuery) -> Result<Vec<VersionRecord>> {
        let prefix = match rtype {
            Some(t) => {
                let mut p = key(&[b"t", t.as_bytes()]);
                p.push(SEP);
                p
            }
            None => b"h".to_vec(),
        };
        let mut end = prefix.clone();
        end.extend_from_slice(&q.before_seq.unwrap_or(u64::MAX).to_be_bytes());
        let mut out = Vec::new();
        for item in self.db.range(prefix.clone()..end).rev() {
            let (k, v) = item?;
            // value: [type\0]id\0<version>
            let (t, id, version) = match rtype {
                Some(t) => {
                    let split = v.len().saturating_sub(9);
                    (
                        t.to_string(),
                        String::from_utf8_lossy(&v[..split]).into_owned(),
                        u64_from(&v[split + 1..]),
                    )
                }
                None => {
                    let split = v.len().saturating_sub(9);
                    let head = &v[..split];
                    let pos = head.iter().position(|&b| b == SEP).unwrap_or(head.len());
                    (
                        String::from_utf8_lossy(&head[..pos]).into_owned(),
                        String::from_utf8_lossy(head.get(pos + 1..).unwrap_or(&[])).into_owned(),
                        u64_from(&v[split + 1..]),
                    )
                }
            };
            let Some(version) = version else {
                return Err(FhirError::Storage(format!("corrupt history key {k:?}")));
            };
            let Some(rec) = self.read_version(&t, &id, version)? else {
                continue;
            };
            if !q.admit(rec, &mut out) {
                break;
            }
        }
        Ok(out)
    }

    fn lookup(&self, rtype: &str, param: &str, value: &str) -> Result<Vec<String>> {
        indexed_ids(&self.db, rtype, param, value)
    }

    fn list(&self, rtype: &str, after: Option<&str>, limit: usize) -> Result<Vec<VersionRecord>> {
        let mut prefix = key(&[b"c", rtype.as_bytes()]);
        prefix.push(SEP);
        let start = match after {
            Some(a) => {
                let mut k = current_key(rtype, a);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        for item in self.db.range(start..) {
            let (k, c) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            if c.get(8) == Some(&1) {
                continue;
            }
            let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            if let Some(v) = u64_from(&c) {
                if let Some(rec) = self.read_version(rtype, &id, v)? {
                    out.push(rec);
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn submit(&self, job: WriteJob) -> Result<()> {
        let guard = self
            .sender
            .lock()
            .map_err(|_| FhirError::Storage("writer lock poisoned".into()))?;
        match guard.as_ref() {
            Some(s) => s
                .send(job)
                .map_err(|_| FhirError::Unavailable("the store is shutting down".into())),
            None => Err(FhirError::Unavailable("the store is shutting down".into())),
        }
    }

    fn shutdown(&self) -> Result<()> {
        self.open.store(false, Ordering::SeqCst);
        if let Ok(mut s) = self.sender.lock() {
            s.take();
        }
        let handle = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
        self.db.flush()?;
        Ok(())
    }

    fn ready(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }
}

/// Overlay of writes not yet on disk: a commit group's, or one job's within it.
#[derive(Default)]
struct Overlay {
    current: HashMap<(String, String), Current>,
    entries: HashMap<(String, String), Vec<IndexEntry>>,
}

impl Overlay {
    fn apply(&mut self, w: &StagedWrite, now_ms: i64) {
        let k = (w.rtype.clone(), w.id.clone());
        self.current.insert(
            k.clone(),
            Current {
                version: w.version,
                deleted: w.method == Method::Delete,
                resource: w.resource.clone(),
                last_updated_ms: now_ms,
            },
        );
        self.entries.insert(k, w.index.clone());
    }

    /// Adjust committed lookup results by this overlay.
    fn adjust(&self, ids: &mut Vec<String>, rtype: &str, param: &str, value: &str) {
        for ((t, id), entries) in &self.entries {
            if t != rtype {
                continue;
            }
            let matches = entries.iter().any(|e| e.param == param && e.value == value);
            let present = ids.iter().position(|x| x == id);
            match (matches, present) {
                (true, None) => ids.push(id.clone()),
                (false, Some(p)) => {
                    ids.swap_remove(p);
                }
                _ => {}
            }
        }
    }
}

struct Group<'a> {
    db: &'a sled::Db,
    overlay: Overlay,
    batch: sled::Batch,
    now_ms: i64,
    seq: u64,
}

impl Group<'_> {
    fn committed_current(&self, rtype: &str, id: &str) -> Result<Option<Current>> {
        let Some(c) = self.db.get(current_key(rtype, id))? else {
            return Ok(None);
        };
        let version =
            u64_from(&c).ok_or_else(|| FhirError::Storage("corrupt current pointer".into()))?;
        let rec = self
            .db
            .get(version_key(rtype, id, version))?
            .ok_or_else(|| FhirError::Storage("dangling current pointer".into()))?;
        let rec = decode(rtype, id, &rec)?;
        Ok(Some(Current {
            version,
            deleted: rec.deleted(),
            last_updated_ms: rec.last_updated_ms,
            resource: rec.resource,
        }))
    }

    fn current(&self, rtype: &str, id: &str) -> Result<Option<Current>> {
        if let Some(c) = self
            .overlay
            .current
            .get(&(rtype.to_string(), id.to_string()))
        {
            return Ok(Some(c.clone()));
        }
        self.committed_current(rtype, id)
    }

    fn lookup(&self, rtype: &str, param: &str, value: &str) -> Result<Vec<String>> {
        let mut ids = indexed_ids(self.db, rtype, param, value)?;
        self.overlay.adjust(&mut ids, rtype, param, value);
        Ok(ids)
    }

    /// Fold a finished job's write into the batch.
    fn commit_write(&mut self, w: StagedWrite) -> Result<()> {
        self.seq += 1;
        let seq = self.seq;
        let old_entries = match self.overlay.entries.get(&(w.rtype.clone(), w.id.clone())) {
            Some(e) => e.clone(),
            None => self
                .db
                .get(reverse_index_key(&w.rtype, &w.id))?
                .map(|b| decode_entries(&b))
                .unwrap_or_default(),
        };
        for e in &old_entries {
            let mut k = index_prefix(&w.rtype, &e.param, &e.value);
            k.extend_from_slice(w.id.as_bytes());
            self.batch.remove(k);
        }
        for e in &w.index {
            let mut k = index_prefix(&w.rtype, &e.param, &e.value);
            k.extend_from_slice(w.id.as_bytes());
            self.batch.insert(k, &[][..]);
        }
        self.batch
            .insert(reverse_index_key(&w.rtype, &w.id), encode_entries(&w.index));
        let deleted = w.method == Method::Delete;
        let mut cur = w.version.to_be_bytes().to_vec();
        cur.push(u8::from(deleted));
        self.batch.insert(current_key(&w.rtype, &w.id), cur);
        self.batch.insert(
            version_key(&w.rtype, &w.id, w.version),
            encode(w.method, w.version, self.now_ms, seq, w.resource.as_deref()),
        );
        let vbytes = w.version.to_be_bytes();
        let mut h = b"h".to_vec();
        h.extend_from_slice(&seq.to_be_bytes());
        self.batch
            .insert(h, key(&[w.rtype.as_bytes(), w.id.as_bytes(), &vbytes]));
        let mut t = key(&[b"t", w.rtype.as_bytes()]);
        t.push(SEP);
        t.extend_from_slice(&seq.to_be_bytes());
        self.batch.insert(t, key(&[w.id.as_bytes(), &vbytes]));
        self.overlay.apply(&w, self.now_ms);
        Ok(())
    }
}

struct JobTxn<'g, 'a> {
    group: &'g Group<'a>,
    overlay: Overlay,
    staged: Vec<StagedWrite>,
}

impl WriteTxn for JobTxn<'_, '_> {
    fn current(&mut self, rtype: &str, id: &str) -> Result<Option<Current>> {
        if let Some(c) = self
            .overlay
            .current
            .get(&(rtype.to_string(), id.to_string()))
        {
            return Ok(Some(c.clone()));
        }
        self.group.current(rtype, id)
    }

    fn lookup(&mut self, rtype: &str, param: &str, value: &str) -> Result<Vec<String>> {
        let mut ids = self.group.lookup(rtype, param, value)?;
        self.overlay.adjust(&mut ids, rtype, param, value);
        Ok(ids)
    }

    fn now_ms(&self) -> i64 {
        self.group.now_ms
    }

    fn put(&mut self, write: StagedWrite) -> Result<()> {
        self.overlay.apply(&write, self.group.now_ms);
        self.staged.push(write);
        Ok(())
    }
}

fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

fn last_seq(db: &sled::Db) -> u64 {
    db.get(b"m\0seq")
        .ok()
        .flatten()
        .and_then(|v| u64_from(&v))
        .unwrap_or(0)
}

fn writer_loop(db: sled::Db, rx: Receiver<WriteJob>) {
    let mut seq = last_seq(&db);
    let mut last_ms = i64::MIN;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let ts = now_ms().max(last_ms + 1);
        last_ms = ts;
        let mut group = Group {
            db: &db,
            overlay: Overlay::default(),
            batch: sled::Batch::default(),
            now_ms: ts,
            seq,
        };
        let mut deliveries = Vec::with_capacity(jobs.len());
        let mut failure: Option<String> = None;
        for job in jobs {
            let mut txn = JobTxn {
                group: &group,
                overlay: Overlay::default(),
                staged: Vec::new(),
            };
            // a panicking job must not take the writer down: it fails alone (its caller gets
            // "writer stopped" from the dropped reply channel) and its staged writes are dropped
            let outcome: Option<JobOutcome> =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job(&mut txn))).ok();
            let staged = std::mem::take(&mut txn.staged);
            drop(txn);
            let Some(outcome) = outcome else {
                tracing::error!("a write job panicked; its writes were discarded");
                continue;
            };
            if outcome.keep {
                for w in staged {
                    if let Err(e) = group.commit_write(w) {
                        failure = Some(e.to_string());
                    }
                }
            }
            deliveries.push(outcome.deliver);
        }
        let result = match failure {
            Some(e) => Err(e),
            None => {
                group
                    .batch
                    .insert(&b"m\0seq"[..], &group.seq.to_be_bytes()[..]);
                let Group {
                    batch,
                    seq: new_seq,
                    ..
                } = group;
                match db.apply_batch(batch).and_then(|_| db.flush().map(|_| ())) {
                    Ok(()) => {
                        seq = new_seq;
                        Ok(())
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        for d in deliveries {
            d(result.clone());
        }
    }
    let _ = db.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::write;

    fn staged(id: &str, version: u64, ident: &str) -> StagedWrite {
        StagedWrite {
            rtype: "Patient".into(),
            id: id.into(),
            version,
            method: if version == 1 {
                Method::Create
            } else {
                Method::Update
            },
            resource: Some(format!("{{\"id\":\"{id}\",\"v\":{version}}}").into_bytes()),
            index: vec![IndexEntry {
                param: "identifier".into(),
                value: ident.into(),
            }],
        }
    }

    #[tokio::test]
    async fn writes_are_versioned_indexed_and_reopenable() {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let store = SledStore::open(dir.path()).expect("open");
            write(&store, |t| t.put(staged("a", 1, "x")))
                .await
                .expect("w1");
            write(&store, |t| t.put(staged("a", 2, "y")))
                .await
                .expect("w2");
            assert_eq!(
                store.lookup("Patient", "identifier", "x").expect("l"),
                Vec::<String>::new()
            );
            assert_eq!(
                store.lookup("Patient", "identifier", "y").expect("l"),
                vec!["a".to_string()]
            );
            let cur = store.current("Patient", "a").expect("r").expect("exists");
            assert_eq!(cur.version, 2);
            let hist = store
                .history(
                    None,
                    HistoryQuery {
                        limit: 10,
                        ..Default::default()
                    },
                )
                .expect("h");
            assert_eq!(
                hist.iter().map(|r| r.version).collect::<Vec<_>>(),
                vec![2, 1]
            );
            assert!(hist[0].seq > hist[1].seq && hist[0].last_updated_ms > hist[1].last_updated_ms);
            store.shutdown().expect("shutdown");
        }
        let store = SledStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.current("Patient", "a").expect("r").map(|r| r.version),
            Some(2)
        );
        write(&store, |t| t.put(staged("b", 1, "y")))
            .await
            .expect("w3");
        let mut ids = store.lookup("Patient", "identifier", "y").expect("l");
        ids.sort();
        assert_eq!(ids, vec!["a".to_string(), "b".to_string()]);
        let hist = store
            .history(
                Some("Patient"),
                HistoryQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .expect("h");
        assert_eq!(hist.len(), 3);
        assert!(hist[0].seq > hist[1].seq);
    }

    #[tokio::test]
    async fn a_panicking_job_fails_alone_and_the_writer_goes_on() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SledStore::open(dir.path()).expect("open");
        let r: Result<()> = write(&store, |t| {
            t.put(staged("a", 1, "x"))?;
            panic!("bug in a job");
        })
        .await;
        assert!(matches!(r, Err(FhirError::Storage(_))));
        assert!(store.current("Patient", "a").expect("r").is_none());
        write(&store, |t| t.put(staged("b", 1, "y")))
            .await
            .expect("writer still works");
        assert!(store.current("Patient", "b").expect("r").is_some());
    }

    #[tokio::test]
    async fn failed_job_leaves_nothing_and_jobs_see_group_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = SledStore::open(dir.path()).expect("open");
        let r: Result<()> = write(&store, |t| {
            t.put(staged("a", 1, "x"))?;
            Err(FhirError::BadRequest("no".into()))
        })
        .await;
        assert!(r.is_err());
        assert!(store.current("Patient", "a").expect("r").is_none());
        assert!(store
            .lookup("Patient", "identifier", "x")
            .expect("l")
            .is_empty());
        let seen = write(&store, |t| {
            t.put(staged("a", 1, "x"))?;
            let c = t.current("Patient", "a")?.map(|c| c.version);
            let l = t.lookup("Patient", "identifier", "x")?;
            Ok((c, l))
        })
        .await
        .expect("ok");
        assert_eq!(seen, (Some(1), vec!["a".to_string()]));
    }
}

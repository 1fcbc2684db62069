//! The audit trail's storage: an append-only hash chain of compact entries in a key-value
//! engine of its own (`DIR/audit-log`, fjall).
//!
//! Each entry is kept under its sequence number (`e` + 8 bytes big-endian) as
//! `postcard(Stored { previous, recorded_ms, body })`: the SHA-256 of the entry before it, the
//! instant the writer recorded it (never earlier than the entry before, so a time range is a
//! sequence range found by bisection), and the event itself as opaque bytes (the layer that
//! builds events decides their form). An entry's hash is the SHA-256 of its sequence number and
//! its stored bytes, so changing, removing, inserting or reordering entries breaks a link; a head
//! file beside the store holds the last link, so removing the newest entries is seen too.
//!
//! Entries converted from the trail kept before this format (full `AuditEvent` resources in a
//! resource store) keep their canonical JSON and its hash, so their chain continues unbroken.
//!
//! One writer thread takes queued events in batches (up to [`BATCH`]), chains them and applies
//! each batch with a synced write; events still queued when the process is killed are lost, and
//! the chain then simply ends earlier (it never breaks).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::kv::{Batch, Engine, Kv};
use crate::error::{FhirError, Result};

/// The `previous` hash of the first entry.
pub const GENESIS: [u8; 32] = [0; 32];
/// Entries a batch writes at most.
const BATCH: usize = 1000;
/// The key prefix of entries.
const ENTRY: u8 = b'e';
/// The block cache of the trail's engine.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// The gauge of events queued and not yet taken by the writer.
const QUEUE_DEPTH: &str = "vbc_audit_queue_depth";

/// What an entry holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// An event in the compact form of the layer that records events.
    Compact(Vec<u8>),
    /// An `AuditEvent` of the earlier trail: its canonical JSON (object keys sorted, no `meta`),
    /// which carries its own chain link.
    Legacy(String),
}

/// One entry of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The hash of the entry before (GENESIS for the first).
    pub previous: [u8; 32],
    /// When the writer recorded it (ms since the epoch; never less than the entry before).
    pub recorded_ms: i64,
    /// The event.
    pub body: Body,
}

/// The hash of an entry at `seq` stored as `bytes`.
fn hash_of(seq: u64, entry: &Entry, bytes: &[u8]) -> [u8; 32] {
    match &entry.body {
        Body::Legacy(json) => Sha256::digest(json.as_bytes()).into(),
        Body::Compact(_) => {
            let mut h = Sha256::new();
            h.update(seq.to_be_bytes());
            h.update(bytes);
            h.finalize().into()
        }
    }
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// The id of the `AuditEvent` an entry is served as (ids sort in chain order).
pub fn event_id(seq: u64) -> String {
    format!("ae-{seq:012}")
}

fn key(seq: u64) -> [u8; 9] {
    let mut k = [ENTRY; 9];
    k[1..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn seq_of(key: &[u8]) -> Result<u64> {
    let b: [u8; 8] = key
        .get(1..9)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| FhirError::Storage("corrupt audit trail key".into()))?;
    Ok(u64::from_be_bytes(b))
}

fn decode(bytes: &[u8]) -> Result<Entry> {
    postcard::from_bytes(bytes)
        .map_err(|e| FhirError::Storage(format!("corrupt audit trail entry: {e}")))
}

fn encode(entry: &Entry) -> Result<Vec<u8>> {
    postcard::to_allocvec(entry).map_err(|e| FhirError::Storage(e.to_string()))
}

/// The last link of the chain: its sequence number and hash (0 and GENESIS when empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Sequence number of the last entry.
    pub seq: u64,
    /// Its hash.
    pub hash: [u8; 32],
}

/// A hash from its lower-case hex (None unless 64 hex digits).
pub fn unhex(h: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if h.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Read the head file (`seq hexhash`).
pub fn read_head(path: &Path) -> Option<Head> {
    let text = std::fs::read_to_string(path).ok()?;
    let (seq, h) = text.trim().split_once(' ')?;
    Some(Head {
        seq: seq.parse().ok()?,
        hash: unhex(h)?,
    })
}

fn write_head(path: &Path, head: &Head) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{} {}\n", head.seq, hex(&head.hash)))?;
    std::fs::rename(&tmp, path)
}

enum Msg {
    Event(Vec<u8>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The trail: reads from any thread, appends through one writer thread.
pub struct AuditLog {
    kv: Arc<dyn Kv>,
    /// The last entry's sequence number (moved by the writer after each batch).
    last: Arc<AtomicU64>,
    head_file: PathBuf,
    tx: Mutex<Option<mpsc::Sender<Msg>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.head_file.display())
    }
}

/// Open (or create) the trail's engine in `dir`.
fn open_kv(dir: &Path) -> Result<Arc<dyn Kv>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| FhirError::Storage(format!("cannot create {}: {e}", dir.display())))?;
    let kv = super::kv_store::open_engine(dir, Engine::Fjall, CACHE_BYTES)?;
    Engine::Fjall.record(dir)?;
    Ok(kv)
}

/// The last entry's link in `kv` and when it was recorded (i64::MIN when empty).
fn last_link(kv: &dyn Kv) -> Result<(Head, i64)> {
    let lo = [ENTRY];
    match kv.scan(&lo, Some(&[ENTRY + 1]), true).next() {
        None => Ok((
            Head {
                seq: 0,
                hash: GENESIS,
            },
            i64::MIN,
        )),
        Some(item) => {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            let entry = decode(&v)?;
            let head = Head {
                seq,
                hash: hash_of(seq, &entry, &v),
            };
            Ok((head, entry.recorded_ms))
        }
    }
}

impl AuditLog {
    /// Open the trail in `dir` for reading only (a stopped server's, for verification).
    pub fn open_read_only(dir: &Path, head_file: PathBuf) -> Result<AuditLog> {
        let kv = open_kv(dir)?;
        let (head, _) = last_link(kv.as_ref())?;
        Ok(AuditLog {
            kv,
            last: Arc::new(AtomicU64::new(head.seq)),
            head_file,
            tx: Mutex::new(None),
            writer: Mutex::new(None),
        })
    }

    /// Open (or create) the trail in `dir` and start its writer; `head_file` records the last
    /// link after every batch.
    pub fn open(dir: &Path, head_file: PathBuf) -> Result<Arc<AuditLog>> {
        let kv = open_kv(dir)?;
        let (mut head, mut last_ms) = last_link(kv.as_ref())?;
        let last = Arc::new(AtomicU64::new(head.seq));
        let (tx, rx) = mpsc::channel::<Msg>();
        let writer_kv = kv.clone();
        let writer_last = last.clone();
        let writer_head = head_file.clone();
        let writer = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
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
                        let start = head;
                        match append(writer_kv.as_ref(), &mut head, &mut last_ms, events) {
                            Ok(()) => {
                                writer_last.store(head.seq, Ordering::Release);
                                if let Err(e) = write_head(&writer_head, &head) {
                                    tracing::error!(error = %e, "cannot write the audit head file");
                                }
                            }
                            // nothing of the batch is kept: the chain goes on from before it
                            Err(e) => {
                                head = start;
                                tracing::error!(error = %e, "audit events were not stored")
                            }
                        }
                    }
                    for f in flushes {
                        let _ = f.send(());
                    }
                }
            })
            .map_err(|e| FhirError::Storage(format!("cannot start the audit writer: {e}")))?;
        Ok(Arc::new(AuditLog {
            kv,
            last,
            head_file,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        }))
    }

    /// Queue an event (its place in the chain is set when it is written).
    pub fn record(&self, event: Vec<u8>) {
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        if let Some(tx) = tx {
            // counted before it is sent, so the writer never takes more than was counted
            metrics::gauge!(QUEUE_DEPTH).increment(1.0);
            if tx.send(Msg::Event(event)).is_err() {
                metrics::gauge!(QUEUE_DEPTH).decrement(1.0);
            }
        }
    }

    /// Wait until every event queued so far is stored.
    pub async fn flush(&self) {
        let tx = self.tx.lock().ok().and_then(|t| t.clone());
        if let Some(tx) = tx {
            let (done, wait) = tokio::sync::oneshot::channel();
            if tx.send(Msg::Flush(done)).is_ok() {
                let _ = wait.await;
            }
        }
    }

    /// Stop the writer after the queued events and make everything durable.
    pub fn shutdown(&self) -> Result<()> {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let writer = self.writer.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = writer {
            let _ = w.join();
        }
        self.kv.flush()
    }

    /// The head file's path.
    pub fn head_file(&self) -> &Path {
        &self.head_file
    }

    /// The entry at `seq`.
    pub fn get(&self, seq: u64) -> Result<Option<Entry>> {
        self.kv.get(&key(seq))?.map(|v| decode(&v)).transpose()
    }

    /// The last entry's sequence number (0 when empty).
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self.last.load(Ordering::Acquire))
    }

    /// The first sequence number whose entry was recorded at or after `ms` (last + 1 when none).
    pub fn first_recorded_at_or_after(&self, ms: i64) -> Result<u64> {
        let (mut lo, mut hi) = (1u64, self.last_seq()? + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = self.get(mid)?.map(|e| e.recorded_ms).unwrap_or(i64::MAX);
            if at < ms {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Visit entries with sequence numbers in `[from, to)`, ascending (or descending with
    /// `reverse`); the visitor returns false to stop.
    pub fn visit(
        &self,
        from: u64,
        to: u64,
        reverse: bool,
        visit: &mut dyn FnMut(u64, Entry) -> Result<bool>,
    ) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        for item in self.kv.scan(&key(from), Some(&key(to)), reverse) {
            let (k, v) = item?;
            if !visit(seq_of(&k)?, decode(&v)?)? {
                break;
            }
        }
        Ok(())
    }

    /// Bytes the trail occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.kv.size_on_disk()
    }

    /// Walk the chain and check every link, and the head file.
    pub fn verify(&self) -> Result<Verified> {
        let mut check = ChainCheck::new();
        for item in self.kv.scan(&[ENTRY], Some(&[ENTRY + 1]), false) {
            let (k, v) = item?;
            let seq = seq_of(&k)?;
            let entry = decode(&v)?;
            let hash = hash_of(seq, &entry, &v);
            if !check.next(seq, &entry, hash, legacy_link(&entry))? {
                break;
            }
        }
        Ok(check.finish(read_head(&self.head_file)))
    }

    /// Append already-chained entries of the earlier trail (conversion; the writer must not
    /// run). Returns the new head.
    pub fn append_converted(&self, entries: &[(u64, Entry)]) -> Result<Head> {
        let mut batch = Batch::default();
        let mut head = last_link(self.kv.as_ref())?.0;
        for (seq, entry) in entries {
            let bytes = encode(entry)?;
            head = Head {
                seq: *seq,
                hash: hash_of(*seq, entry, &bytes),
            };
            batch.insert(key(*seq).to_vec(), bytes);
        }
        self.kv.apply(batch, true)?;
        self.last.store(head.seq, Ordering::Release);
        Ok(head)
    }
}

/// Chain, encode and write one batch of events; `head` and `last_ms` advance only on success.
fn append(kv: &dyn Kv, head: &mut Head, last_ms: &mut i64, events: Vec<Vec<u8>>) -> Result<()> {
    let now = crate::clock::now_ms().max(*last_ms);
    let mut next = *head;
    let mut batch = Batch::default();
    for body in events {
        let seq = next.seq + 1;
        let entry = Entry {
            previous: next.hash,
            recorded_ms: now,
            body: Body::Compact(body),
        };
        let bytes = encode(&entry)?;
        next = Head {
            seq,
            hash: hash_of(seq, &entry, &bytes),
        };
        batch.insert(key(seq).to_vec(), bytes);
    }
    kv.apply(batch, true)?;
    *head = next;
    *last_ms = now;
    Ok(())
}

/// The (sequence, previous hash) a legacy entry's JSON names, when it names one.
fn legacy_link(entry: &Entry) -> Option<(u64, String)> {
    let Body::Legacy(json) = &entry.body else {
        return None;
    };
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    link_in_json(&v)
}

/// The extension with a legacy event's place in the chain (`sequence`, `previous`).
pub const CHAIN_EXTENSION: &str = "https://vbc-server.dev/fhir/StructureDefinition/audit-chain";

/// An `AuditEvent`'s chain link (sequence, previous hash in hex), if it carries one.
pub fn link_in_json(event: &serde_json::Value) -> Option<(u64, String)> {
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

/// What verification found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Entries checked.
    pub events: u64,
    /// The first broken link, if any: (sequence of the entry whose link fails, why).
    pub broken: Option<(u64, String)>,
}

/// The running check of a chain walked in order.
pub struct ChainCheck {
    expected: u64,
    previous: [u8; 32],
    count: u64,
    broken: Option<(u64, String)>,
}

impl Default for ChainCheck {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainCheck {
    /// A check from the first entry.
    pub fn new() -> ChainCheck {
        ChainCheck {
            expected: 1,
            previous: GENESIS,
            count: 0,
            broken: None,
        }
    }

    /// Check the next entry (its `hash`, and the link its legacy JSON names); false once broken.
    pub fn next(
        &mut self,
        seq: u64,
        entry: &Entry,
        hash: [u8; 32],
        json_link: Option<(u64, String)>,
    ) -> Result<bool> {
        self.count += 1;
        let why = if seq != self.expected {
            Some(format!(
                "AuditEvent/{} stands where {} was expected (an event was removed or inserted)",
                event_id(seq),
                event_id(self.expected)
            ))
        } else if entry.previous != self.previous {
            Some(format!(
                "AuditEvent/{} names a previous hash that does not match AuditEvent/{}: that event was modified",
                event_id(seq),
                event_id(seq.saturating_sub(1))
            ))
        } else if matches!(entry.body, Body::Legacy(_))
            && json_link != Some((seq, hex(&self.previous)))
        {
            Some(format!(
                "AuditEvent/{} carries a chain link that does not match its place",
                event_id(seq)
            ))
        } else {
            None
        };
        if let Some(why) = why {
            self.broken = Some((self.expected, why));
            return Ok(false);
        }
        self.previous = hash;
        self.expected += 1;
        Ok(true)
    }

    /// Mark the chain broken at the current position (a check made outside the links).
    pub fn fail(&mut self, why: String) {
        self.count += 1;
        self.broken = Some((self.expected, why));
    }

    /// The result, checked against the head file's record when there is one.
    pub fn finish(self, head: Option<Head>) -> Verified {
        let last = self.expected - 1;
        let broken = self.broken.or_else(|| match head {
            Some(h) if h.seq == last && h.hash != self.previous => Some((
                last,
                format!(
                    "AuditEvent/{} does not match the recorded head hash: it was modified",
                    event_id(last)
                ),
            )),
            Some(h) if h.seq > last => Some((
                last + 1,
                format!(
                    "the head file records {} events but the chain ends at {last}: events were removed",
                    h.seq
                ),
            )),
            _ => None,
        });
        Verified {
            events: self.count,
            broken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_written(log: &AuditLog) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(log.flush());
    }

    #[test]
    fn a_chain_is_written_verified_found_by_time_and_broken_by_a_change() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("audit-log");
        let head = tmp.path().join("audit.head");
        let log = AuditLog::open(&dir, head.clone()).expect("open");
        for i in 0..2500u32 {
            log.record(i.to_be_bytes().to_vec());
            if i % 700 == 0 {
                wait_written(&log);
            }
        }
        wait_written(&log);
        assert_eq!(log.last_seq().expect("last"), 2500);
        let v = log.verify().expect("verify");
        assert_eq!((v.events, v.broken.clone()), (2500, None), "{v:?}");
        // recorded times never go back, and bisection finds the first at or after an instant
        let mut last = i64::MIN;
        let mut times = Vec::new();
        log.visit(1, 2501, false, &mut |seq, e| {
            assert!(
                e.recorded_ms >= last,
                "entry {seq} recorded before the one before it"
            );
            last = e.recorded_ms;
            times.push(e.recorded_ms);
            Ok(true)
        })
        .expect("visit");
        for probe in [times[0], times[1200], times[2499], times[2499] + 1] {
            let want = times
                .iter()
                .position(|t| *t >= probe)
                .map_or(2501, |p| p as u64 + 1);
            assert_eq!(log.first_recorded_at_or_after(probe).expect("bisect"), want);
        }
        // the chain goes on after a reopen
        log.shutdown().expect("shutdown");
        drop(log);
        let log = AuditLog::open(&dir, head.clone()).expect("reopen");
        log.record(b"after".to_vec());
        wait_written(&log);
        assert_eq!(log.verify().expect("verify").events, 2501);
        assert_eq!(read_head(&head).map(|h| h.seq), Some(2501));
        // one changed entry breaks the link of the next one
        let mut e = log.get(1000).expect("get").expect("entry");
        e.body = Body::Compact(b"changed".to_vec());
        let mut b = Batch::default();
        b.insert(key(1000).to_vec(), encode(&e).expect("encode"));
        log.kv.apply(b, true).expect("tamper");
        let v = log.verify().expect("verify");
        assert_eq!(v.broken.as_ref().map(|b| b.0), Some(1001), "{v:?}");
        // a removed last entry is seen through the head file
        log.shutdown().expect("shutdown");
        let mut b = Batch::default();
        b.remove(key(2501).to_vec());
        log.kv.apply(b, true).expect("remove");
        let v = log.verify().expect("verify");
        assert!(v.broken.is_some(), "{v:?}");
    }
}

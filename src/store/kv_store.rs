//! The store on an ordered key-value engine ([`Kv`]: fjall; sled directories are only read, to
//! migrate them), one writer thread with group commit.
//!
//! Key layout (all in one key space so that a commit group is one atomic batch; `T` is the
//! two-byte [`type_code`] of the resource type, `N` a resource number, u32 big-endian):
//! - `c\0type\0id` -> latest version (u64 BE) + deleted flag + resource number `N`
//! - `v\0type\0id\0<version u64 BE>` -> version record ([`super::record::encode`])
//! - `h<seq u64 BE>` -> `type\0id\0<version u64 BE>` (system history)
//! - `t\0type\0<seq u64 BE>` -> `id\0<version u64 BE>` (type history)
//! - `n T N` -> id (resource numbers are given once per (type, id), from 1, never reused)
//! - `p T <param hash u32> value \0 <chunk u16 BE>` -> the numbers of the resources with that
//!   value among those of the chunk (N >> 16) ([`posting`]: a plain list or a roaring bitmap)
//! - `l T <chunk u16 BE>` -> the numbers of the type's live resources in the chunk (a posting
//!   list, as `p` keys)
//! - `y T N` -> the live resource's index entries (to remove them on the next version)
//! - `m\0seq` -> last sequence number; `m\0format` -> [`FORMAT`]
//!
//! The search index names resources by number, not by id: its keys stay short whatever the ids,
//! and a search collects numbers into bitmaps; only the page it returns is turned into ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use roaring::RoaringBitmap;

use super::feed::{Change, Feed, FeedPosition};
use super::kv::{Batch, Engine, Kv};
use super::posting::{self, Deltas};
use super::record::{decode, encode, IndexEntry, Method, StagedWrite, VersionRecord};
use super::{
    CommitListener, Current, HistoryQuery, IndexRead, IndexReport, JobOutcome, Pending, Store,
    WriteJob, WriteTxn,
};
use crate::error::{FhirError, Result};

/// Most jobs folded into one commit group.
const MAX_GROUP: usize = 1024;
const SEP: u8 = 0;
/// The key layout this code writes. A store of an earlier layout (1: ids in index keys, types
/// numbered by their position in a list; 2: one key per index entry instead of posting lists; 3:
/// no list of live resources) is rebuilt once by [`Store::reindex`] before it serves
/// ([`Store::needs_reindex`]).
pub const FORMAT: u8 = 4;
const FORMAT_KEY: &[u8] = b"m\0format";

/// A visitor of `c` records: (type, id, record).
type RecordVisitor<'a> = dyn FnMut(&str, &str, &[u8]) -> Result<()> + 'a;

/// A written resource's number and index entries (None once deleted).
type Numbered = (u32, Option<Vec<IndexEntry>>);

/// A visitor of live resources: (type, id, number, resource JSON).
type LiveVisitor<'a> = dyn FnMut(&str, &str, u32, &[u8]) -> Result<()> + 'a;

/// The [`Store`] on a [`Kv`] engine.
pub struct KvStore {
    db: Arc<dyn Kv>,
    sender: Mutex<Option<Sender<WriteJob>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    open: Arc<AtomicBool>,
    feed: Arc<Feed>,
    dir: PathBuf,
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

/// 32-bit FNV-1a of a name.
fn fnv32(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    h
}

/// The two-byte code of a resource type in keys: its name's FNV-1a hash folded to 16 bits (no
/// two R4 types share one, checked by a test), so the code never depends on the position of a
/// type in a list that a later release might reorder.
pub fn type_code(rtype: &str) -> [u8; 2] {
    let h = fnv32(rtype);
    (((h >> 16) ^ (h & 0xffff)) as u16).to_be_bytes()
}

/// `tag T N`: a key of one resource number.
fn numbered_key(tag: u8, rtype: &str, docno: u32) -> Vec<u8> {
    let mut k = Vec::with_capacity(7);
    k.push(tag);
    k.extend_from_slice(&type_code(rtype));
    k.extend_from_slice(&docno.to_be_bytes());
    k
}

/// `tag T`: the start of a type's numbered keys.
fn numbered_prefix(tag: u8, rtype: &str) -> Vec<u8> {
    let mut k = vec![tag];
    k.extend_from_slice(&type_code(rtype));
    k
}

/// `p T param(4)`: the start of one parameter's posting lists. The parameter is a 32-bit FNV-1a
/// hash of its name: fixed-width codes keep the many keys short.
fn posting_prefix(rtype: &str, param: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    k.push(b'p');
    k.extend_from_slice(&type_code(rtype));
    k.extend_from_slice(&fnv32(param).to_be_bytes());
    k
}

/// The key of one chunk of an entry's posting list: `p T param value \0 chunk`.
fn posting_key(rtype: &str, e: &IndexEntry, docno: u32) -> Vec<u8> {
    let mut k = posting_prefix(rtype, &e.param);
    k.extend_from_slice(&e.value);
    k.push(SEP);
    k.extend_from_slice(&posting::chunk_of(docno).to_be_bytes());
    k
}

/// `l T chunk`: the chunk of a type's list of live resources that holds `docno`.
fn live_key(rtype: &str, docno: u32) -> Vec<u8> {
    let mut k = numbered_prefix(b'l', rtype);
    k.extend_from_slice(&posting::chunk_of(docno).to_be_bytes());
    k
}

fn reverse_index_key(rtype: &str, docno: u32) -> Vec<u8> {
    numbered_key(b'y', rtype, docno)
}

fn docno_key(rtype: &str, docno: u32) -> Vec<u8> {
    numbered_key(b'n', rtype, docno)
}

/// The resource number in a `c` record (None in a record of the earlier layout).
fn docno_in_current(c: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(c.get(9..13)?.try_into().ok()?))
}

/// A `c` record: version, deleted flag, resource number.
fn current_record(version: u64, deleted: bool, docno: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(13);
    c.extend_from_slice(&version.to_be_bytes());
    c.push(u8::from(deleted));
    c.extend_from_slice(&docno.to_be_bytes());
    c
}

/// The number of the last 4 bytes of a numbered key.
fn docno_suffix(k: &[u8]) -> Option<u32> {
    let at = k.len().checked_sub(4)?;
    Some(u32::from_be_bytes(k[at..].try_into().ok()?))
}

/// Visit committed posting lists of (`rtype`, `param`) with keys from `lo` to `hi`.
fn postings(
    db: &dyn Kv,
    rtype: &str,
    param: &str,
    lo: &[u8],
    hi: Option<&[u8]>,
    visit: &mut dyn FnMut(&[u8], &RoaringBitmap) -> bool,
) -> Result<()> {
    let prefix = posting_prefix(rtype, param);
    let mut start = prefix.clone();
    start.extend_from_slice(lo);
    let end = match hi {
        Some(h) => {
            let mut e = prefix.clone();
            e.extend_from_slice(h);
            e
        }
        None => match super::prefix_end(&prefix) {
            Some(e) => e,
            None => return Ok(()),
        },
    };
    if start >= end {
        return Ok(());
    }
    visit_lists(db, &start, &end, &mut |k, set| {
        let rest = &k[prefix.len()..];
        match rest.len().checked_sub(3).filter(|s| rest[*s] == SEP) {
            Some(split) => visit(&rest[..split], set),
            None => true,
        }
    })
}

/// Visit the posting lists with keys from `start` to `end` (exclusive), decoded, as (key, list);
/// the visitor returns false to stop. A list that does not decode stops the scan with its error.
fn visit_lists(
    db: &dyn Kv,
    start: &[u8],
    end: &[u8],
    visit: &mut dyn FnMut(&[u8], &RoaringBitmap) -> bool,
) -> Result<()> {
    let mut failed = None;
    db.visit(
        start,
        Some(end),
        &mut |k, v| match posting::decode_at(k, v) {
            Ok(set) => visit(k, &set),
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    )?;
    failed.map_or(Ok(()), Err)
}

/// Committed index entries of a live resource.
fn committed_entries(db: &dyn Kv, rtype: &str, docno: u32) -> Result<Option<Vec<IndexEntry>>> {
    Ok(db
        .get(&reverse_index_key(rtype, docno))?
        .map(|b| decode_entries(&b)))
}

/// Visit the numbers of committed live resources of a type, in order.
fn live_docnos(db: &dyn Kv, rtype: &str, visit: &mut dyn FnMut(u32) -> bool) -> Result<()> {
    let prefix = numbered_prefix(b'l', rtype);
    let Some(end) = super::prefix_end(&prefix) else {
        return Ok(());
    };
    visit_lists(db, &prefix, &end, &mut |k, set| {
        k.len() != prefix.len() + 2 || set.iter().all(&mut *visit)
    })
}

/// The number of a resource (live or deleted), None when it never existed.
fn committed_docno(db: &dyn Kv, rtype: &str, id: &str) -> Result<Option<u32>> {
    Ok(db
        .get(&current_key(rtype, id))?
        .and_then(|c| docno_in_current(&c)))
}

/// The id of a resource number.
fn committed_id(db: &dyn Kv, rtype: &str, docno: u32) -> Result<Option<String>> {
    Ok(db
        .get(&docno_key(rtype, docno))?
        .map(|b| String::from_utf8_lossy(&b).into_owned()))
}

/// The next free number of a type (1 for a type without resources).
fn next_docno(db: &dyn Kv, rtype: &str) -> Result<u32> {
    let prefix = numbered_prefix(b'n', rtype);
    match prefixed(db, &prefix, true).next().transpose()? {
        Some((k, _)) => Ok(docno_suffix(&k).unwrap_or(0).saturating_add(1)),
        None => Ok(1),
    }
}

/// Visit the current versions of live resources of a type in id order, from the first id after
/// `after`, straight on the engine (no writer, nothing written: migration and legacy reads use
/// it on stopped directories); the visitor returns false to stop.
pub fn visit_current(
    db: &dyn Kv,
    rtype: &str,
    after: Option<&str>,
    visit: &mut dyn FnMut(VersionRecord) -> Result<bool>,
) -> Result<()> {
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
    for item in db.scan(&start, super::prefix_end(&prefix).as_deref(), false) {
        let (k, c) = item?;
        if c.get(8) == Some(&1) {
            continue;
        }
        let id = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
        let Some(v) = u64_from(&c) else { continue };
        if let Some(bytes) = db.get(&version_key(rtype, &id, v))? {
            if !visit(decode(rtype, &id, &bytes)?)? {
                break;
            }
        }
    }
    Ok(())
}

/// Visit every `c` record, deleted ones included, as (type, id, record), in key order.
fn visit_current_records(db: &dyn Kv, visit: &mut RecordVisitor) -> Result<()> {
    for item in prefixed(db, b"c\0", false) {
        let (k, c) = item?;
        let parts: Vec<&[u8]> = k.splitn(3, |&b| b == SEP).collect();
        if let [_, t, id] = parts.as_slice() {
            visit(
                &String::from_utf8_lossy(t),
                &String::from_utf8_lossy(id),
                &c,
            )?;
        }
    }
    Ok(())
}

fn u64_from(bytes: &[u8]) -> Option<u64> {
    let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Entries as `(u16 param length, param, u16 value length, value)*`; a parameter name equal to
/// the previous one is written with length 0xFFFF and no bytes.
fn encode_entries(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 32);
    let mut prev: Option<&str> = None;
    for e in entries {
        if prev == Some(e.param.as_str()) {
            out.extend_from_slice(&u16::MAX.to_be_bytes());
        } else {
            let p = &e.param.as_bytes()[..e.param.len().min(u16::MAX as usize - 1)];
            out.extend_from_slice(&(p.len() as u16).to_be_bytes());
            out.extend_from_slice(p);
            prev = Some(e.param.as_str());
        }
        let v = &e.value[..e.value.len().min(u16::MAX as usize)];
        out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        out.extend_from_slice(v);
    }
    out
}

fn decode_entries(bytes: &[u8]) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut param = String::new();
    let read_len = |pos: &mut usize| -> Option<usize> {
        let b: [u8; 2] = bytes.get(*pos..*pos + 2)?.try_into().ok()?;
        *pos += 2;
        Some(u16::from_be_bytes(b) as usize)
    };
    while pos < bytes.len() {
        let Some(plen) = read_len(&mut pos) else {
            break;
        };
        if plen != u16::MAX as usize {
            let Some(p) = bytes.get(pos..pos + plen) else {
                break;
            };
            param = String::from_utf8_lossy(p).into_owned();
            pos += plen;
        }
        let Some(vlen) = read_len(&mut pos) else {
            break;
        };
        let Some(v) = bytes.get(pos..pos + vlen) else {
            break;
        };
        pos += vlen;
        out.push(IndexEntry {
            param: param.clone(),
            value: v.to_vec(),
        });
    }
    out
}

/// The pairs whose keys start with `prefix`.
fn prefixed<'a>(db: &'a dyn Kv, prefix: &[u8], reverse: bool) -> super::kv::Scan<'a> {
    db.scan(prefix, super::prefix_end(prefix).as_deref(), reverse)
}

/// Open the engine of a data directory (see [`Engine::for_dir`]) to serve it, with a cache of
/// `cache_bytes`, recording it in the directory when it is new. A directory on an engine that
/// no longer serves is refused with the command that migrates it.
pub fn open_kv(dir: &Path, cache_bytes: u64) -> Result<Arc<dyn Kv>> {
    let engine = Engine::for_dir(dir)?;
    engine.check_served(dir)?;
    let db = open_engine(dir, engine, cache_bytes)?;
    engine.record(dir)?;
    Ok(db)
}

/// Open (or create) `engine` in `dir`, recording nothing (migration and legacy reads, which
/// leave a directory as they found it).
pub fn open_engine(dir: &Path, engine: Engine, cache_bytes: u64) -> Result<Arc<dyn Kv>> {
    Ok(match engine {
        Engine::Sled => Arc::new(super::sled_kv::SledKv::open(dir, cache_bytes)?),
        Engine::Fjall => Arc::new(super::fjall_kv::FjallKv::open(dir, cache_bytes)?),
    })
}

impl KvStore {
    /// Open (or create) the store in `dir` with a 1 GiB cache and start its writer.
    pub fn open(dir: &Path) -> Result<Self> {
        Self::open_with_cache(dir, 1024 * 1024 * 1024)
    }

    /// Open (or create) the store in `dir` with a page cache of `cache_bytes`.
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self> {
        Self::open_named(dir, cache_bytes, "main")
    }

    /// Open (or create) the store in `dir` with a page cache of `cache_bytes`; its metrics carry
    /// the label `store="<name>"` (the server's data is `main`, the audit trail `audit`).
    /// A directory another process has open is refused as "in use", naming that process.
    pub fn open_named(dir: &Path, cache_bytes: u64, name: &'static str) -> Result<Self> {
        let db = open_kv(dir, cache_bytes)?;
        super::owner::record(dir);
        let empty = db.get(b"m\0seq")?.is_none() && prefixed(&*db, b"c\0", false).next().is_none();
        if empty && db.get(FORMAT_KEY)?.is_none() {
            let mut batch = Batch::default();
            batch.insert(FORMAT_KEY, vec![FORMAT]);
            db.apply(batch, true)?;
        }
        let (sender, receiver) = mpsc::channel::<WriteJob>();
        let open = Arc::new(AtomicBool::new(true));
        let writer_db = db.clone();
        let feed = Arc::new(
            Feed::start(last_seq(&*db))
                .map_err(|e| FhirError::Storage(format!("cannot start the commit feed: {e}")))?,
        );
        let writer_feed = feed.clone();
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(writer_db, receiver, &writer_feed, name))
            .map_err(|e| FhirError::Storage(format!("cannot start writer: {e}")))?;
        Ok(KvStore {
            db,
            sender: Mutex::new(Some(sender)),
            writer: Mutex::new(Some(writer)),
            open,
            feed,
            dir: dir.to_path_buf(),
        })
    }

    /// The engine the store runs on.
    pub fn engine(&self) -> Engine {
        self.db.engine()
    }

    /// Visit every live resource as (type, id, number, resource JSON), one at a time (the store
    /// may be larger than memory).
    fn for_each_live(&self, visit: &mut LiveVisitor) -> Result<()> {
        visit_current_records(&*self.db, &mut |t, id, c| {
            let (Some(v), false) = (u64_from(c), c.get(8) == Some(&1)) else {
                return Ok(());
            };
            let docno = docno_in_current(c).unwrap_or(0);
            if let Some(r) = self.read_version(t, id, v)?.and_then(|rec| rec.resource) {
                visit(t, id, docno, &r)?;
            }
            Ok(())
        })
    }

    fn read_version(&self, rtype: &str, id: &str, version: u64) -> Result<Option<VersionRecord>> {
        match self.db.get(&version_key(rtype, id, version))? {
            Some(bytes) => Ok(Some(decode(rtype, id, &bytes)?)),
            None => Ok(None),
        }
    }
}

impl IndexRead for KvStore {
    fn postings(
        &self,
        rtype: &str,
        param: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &RoaringBitmap) -> bool,
    ) -> Result<()> {
        postings(&*self.db, rtype, param, lo, hi, visit)
    }

    fn index_of(&self, rtype: &str, docno: u32) -> Result<Option<Vec<IndexEntry>>> {
        committed_entries(&*self.db, rtype, docno)
    }

    fn live_docnos(&self, rtype: &str, visit: &mut dyn FnMut(u32) -> bool) -> Result<()> {
        live_docnos(&*self.db, rtype, visit)
    }

    fn docno_of(&self, rtype: &str, id: &str) -> Result<Option<u32>> {
        committed_docno(&*self.db, rtype, id)
    }

    fn id_of(&self, rtype: &str, docno: u32) -> Result<Option<String>> {
        committed_id(&*self.db, rtype, docno)
    }

    fn live_json(&self, rtype: &str, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.current(rtype, id)?.and_then(|r| r.resource))
    }
}

impl Store for KvStore {
    fn current(&self, rtype: &str, id: &str) -> Result<Option<VersionRecord>> {
        match self.db.get(&current_key(rtype, id))? {
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
        for item in prefixed(&*self.db, &prefix, true) {
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
        for item in self.db.scan(&prefix, Some(&end), true) {
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

    fn needs_reindex(&self) -> bool {
        self.db.get(FORMAT_KEY).ok().flatten().as_deref() != Some(&[FORMAT][..])
    }

    fn list(&self, rtype: &str, after: Option<&str>, limit: usize) -> Result<Vec<VersionRecord>> {
        let mut out = Vec::new();
        visit_current(&*self.db, rtype, after, &mut |rec| {
            out.push(rec);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    fn reindex(&self, extract: &dyn Fn(&str, &[u8]) -> Vec<IndexEntry>) -> Result<usize> {
        // drop every index key and resource number (of this layout and the earlier ones: `i`,
        // `x\0` and `j` keys), number every resource again (per type, in id order), then write
        // the entries of each live resource; posting lists gather many resources' changes
        // before each write, so that a frequent value's list is rewritten once per flush
        let mut batch = Batch::default();
        let mut postings = Deltas::default();
        let mut pending = 0usize;
        let flush = |batch: &mut Batch,
                     postings: &mut Deltas,
                     pending: &mut usize,
                     force: bool|
         -> Result<()> {
            if force || *pending >= 500_000 {
                std::mem::take(postings).write(&*self.db, batch)?;
                self.db.apply(std::mem::take(batch), false)?;
                *pending = 0;
            }
            Ok(())
        };
        for prefix in [
            &b"i"[..],
            &b"x\0"[..],
            &b"j"[..],
            &b"p"[..],
            &b"l"[..],
            &b"y"[..],
            &b"n"[..],
        ] {
            for item in prefixed(&*self.db, prefix, false) {
                let (k, _) = item?;
                batch.remove(k);
                pending += 1;
                flush(&mut batch, &mut postings, &mut pending, false)?;
            }
        }
        flush(&mut batch, &mut postings, &mut pending, true)?;
        let mut next: HashMap<String, u32> = HashMap::new();
        let mut count = 0usize;
        visit_current_records(&*self.db, &mut |t, id, c| {
            let Some(version) = u64_from(c) else {
                return Ok(());
            };
            let deleted = c.get(8) == Some(&1);
            let n = next.entry(t.to_string()).or_insert(1);
            let docno = *n;
            *n += 1;
            batch.insert(current_key(t, id), current_record(version, deleted, docno));
            batch.insert(docno_key(t, docno), id.as_bytes().to_vec());
            pending += 2;
            if !deleted {
                if let Some(r) = self.read_version(t, id, version)?.and_then(|r| r.resource) {
                    let mut entries = extract(t, &r);
                    entries.sort();
                    entries.dedup();
                    for e in &entries {
                        postings.add(posting_key(t, e, docno), docno);
                    }
                    postings.add(live_key(t, docno), docno);
                    batch.insert(reverse_index_key(t, docno), encode_entries(&entries));
                    pending += entries.len() + 1;
                    count += 1;
                }
            }
            flush(&mut batch, &mut postings, &mut pending, false)
        })?;
        postings.write(&*self.db, &mut batch)?;
        batch.insert(FORMAT_KEY, vec![FORMAT]);
        self.db.apply(batch, false)?;
        self.db.flush()?;
        Ok(count)
    }

    fn check_index(&self, extract: &dyn Fn(&str, &[u8]) -> Vec<IndexEntry>) -> Result<IndexReport> {
        if self.needs_reindex() {
            return Err(FhirError::Storage(
                "the store's index has the layout of an earlier release: start the server once \
                 (or run `vbc-server reindex`) to rebuild it"
                    .into(),
            ));
        }
        let mut report = IndexReport::default();
        // what each posting list chunk must hold, from the resources themselves
        let mut expected: HashMap<Vec<u8>, RoaringBitmap> = HashMap::new();
        let mut numbered: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        self.for_each_live(&mut |rtype, id, docno, rec| {
            report.resources += 1;
            let mut entries = extract(rtype, rec);
            entries.sort();
            entries.dedup();
            let stored = committed_entries(&*self.db, rtype, docno)?.unwrap_or_default();
            if stored != entries || committed_id(&*self.db, rtype, docno)?.as_deref() != Some(id) {
                report.missing += 1;
            }
            for e in &entries {
                expected
                    .entry(posting_key(rtype, e, docno))
                    .or_default()
                    .insert(docno);
            }
            expected
                .entry(live_key(rtype, docno))
                .or_default()
                .insert(docno);
            numbered.insert(reverse_index_key(rtype, docno));
            Ok(())
        })?;
        // every listed number must be expected there, and every expected one listed (posting
        // lists, then the lists of live resources)
        let lists = prefixed(&*self.db, b"p", false).chain(prefixed(&*self.db, b"l", false));
        for item in lists {
            let (k, v) = item?;
            let listed = posting::decode_at(&k, &v)?;
            report.keys += listed.len() as usize;
            let want = expected.remove(&k).unwrap_or_default();
            report.orphaned += (&listed - &want).len() as usize;
            report.missing += (&want - &listed).len() as usize;
        }
        report.missing += expected.values().map(|w| w.len() as usize).sum::<usize>();
        for item in prefixed(&*self.db, b"y", false) {
            let (k, _) = item?;
            if !numbered.contains(&k) {
                report.orphaned += 1;
            }
        }
        Ok(report)
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.db.size_on_disk()
    }

    fn for_each_version(
        &self,
        rtype: &str,
        visit: &mut dyn FnMut(VersionRecord) -> Result<()>,
    ) -> Result<()> {
        let mut prefix = key(&[b"v", rtype.as_bytes()]);
        prefix.push(SEP);
        for item in prefixed(&*self.db, &prefix, false) {
            let (k, bytes) = item?;
            let rest = &k[prefix.len()..];
            if rest.len() < 10 || rest[rest.len() - 9] != SEP {
                continue;
            }
            let id = String::from_utf8_lossy(&rest[..rest.len() - 9]).into_owned();
            visit(decode(rtype, &id, &bytes)?)?;
        }
        Ok(())
    }

    fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        self.feed.set_listener(listener);
    }

    fn feed_position(&self) -> Option<Arc<FeedPosition>> {
        Some(self.feed.position())
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
        self.feed.close();
        self.db.flush()?;
        super::owner::clear(&self.dir);
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
    /// The number and index entries of each written resource (None once deleted).
    entries: HashMap<(String, String), Numbered>,
    /// The id of each written resource's number.
    ids: HashMap<(String, u32), String>,
}

impl Overlay {
    /// Record a committed-in-this-group write (moved in: no copies on the hot path).
    fn apply(&mut self, w: StagedWrite, now_ms: i64, docno: u32) {
        let k = (w.rtype, w.id);
        let live = w.method != Method::Delete;
        self.current.insert(
            k.clone(),
            Current {
                version: w.version,
                deleted: !live,
                resource: w.resource,
                last_updated_ms: now_ms,
            },
        );
        self.ids.insert((k.0.clone(), docno), k.1.clone());
        self.entries.insert(k, (docno, live.then_some(w.index)));
    }

    /// Pending writes of a type.
    fn pending(&self, rtype: &str, out: &mut HashMap<String, Numbered>) {
        for ((t, id), e) in &self.entries {
            if t == rtype {
                out.insert(id.clone(), e.clone());
            }
        }
    }
}

/// Resource numbers handed out by the writer: the next free one per type (kept across groups)
/// and those given in this group to resources that have no record yet.
#[derive(Default)]
struct Numbers {
    next: HashMap<String, u32>,
    given: HashMap<(String, String), u32>,
}

struct Group<'a> {
    db: &'a dyn Kv,
    overlay: Overlay,
    numbers: std::cell::RefCell<Numbers>,
    batch: Batch,
    /// Changes to posting lists, applied to the batch once the group's jobs have run.
    postings: Deltas,
    now_ms: i64,
    seq: u64,
}

impl Group<'_> {
    fn committed_current(&self, rtype: &str, id: &str) -> Result<Option<Current>> {
        let Some(c) = self.db.get(&current_key(rtype, id))? else {
            return Ok(None);
        };
        let version =
            u64_from(&c).ok_or_else(|| FhirError::Storage("corrupt current pointer".into()))?;
        let rec = self
            .db
            .get(&version_key(rtype, id, version))?
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

    /// The number of a resource this group knows (written or committed), None when it has none.
    fn known_docno(&self, rtype: &str, id: &str) -> Result<Option<u32>> {
        let k = (rtype.to_string(), id.to_string());
        if let Some((n, _)) = self.overlay.entries.get(&k) {
            return Ok(Some(*n));
        }
        if let Some(n) = self.numbers.borrow().given.get(&k) {
            return Ok(Some(*n));
        }
        committed_docno(self.db, rtype, id)
    }

    /// The number of a resource, given now when it has none.
    fn docno(&self, rtype: &str, id: &str) -> Result<u32> {
        if let Some(n) = self.known_docno(rtype, id)? {
            return Ok(n);
        }
        let mut numbers = self.numbers.borrow_mut();
        let next = match numbers.next.get(rtype) {
            Some(n) => *n,
            None => next_docno(self.db, rtype)?,
        };
        if next == u32::MAX {
            return Err(FhirError::Storage(format!(
                "no resource numbers left for {rtype}"
            )));
        }
        numbers.next.insert(rtype.to_string(), next + 1);
        numbers
            .given
            .insert((rtype.to_string(), id.to_string()), next);
        Ok(next)
    }

    /// The id of a resource number this group knows.
    fn id_of(&self, rtype: &str, docno: u32) -> Result<Option<String>> {
        if let Some(id) = self.overlay.ids.get(&(rtype.to_string(), docno)) {
            return Ok(Some(id.clone()));
        }
        committed_id(self.db, rtype, docno)
    }

    /// The index entries of a resource whose number the caller knows: this group's write,
    /// else the committed ones.
    fn entries(&self, rtype: &str, id: &str, docno: u32) -> Result<Option<Vec<IndexEntry>>> {
        match self
            .overlay
            .entries
            .get(&(rtype.to_string(), id.to_string()))
        {
            Some((_, e)) => Ok(e.clone()),
            None => committed_entries(self.db, rtype, docno),
        }
    }

    /// Fold a finished job's write into the batch.
    fn commit_write(&mut self, mut w: StagedWrite) -> Result<()> {
        self.seq += 1;
        let seq = self.seq;
        let deleted = w.method == Method::Delete;
        let docno = self.docno(&w.rtype, &w.id)?;
        let known = self
            .overlay
            .entries
            .contains_key(&(w.rtype.clone(), w.id.clone()));
        // a first version has no earlier entries to remove (unless written earlier in this group)
        let old_entries = if w.version == 1 && !known {
            Vec::new()
        } else {
            self.entries(&w.rtype, &w.id, docno)?.unwrap_or_default()
        };
        if deleted {
            w.index.clear();
        }
        w.index.sort();
        w.index.dedup();
        let new_entries: &[IndexEntry] = &w.index;
        for e in &old_entries {
            if new_entries.binary_search(e).is_err() {
                self.postings.remove(posting_key(&w.rtype, e, docno), docno);
            }
        }
        for e in new_entries {
            if old_entries.binary_search(e).is_err() {
                self.postings.add(posting_key(&w.rtype, e, docno), docno);
            }
        }
        if deleted {
            self.postings.remove(live_key(&w.rtype, docno), docno);
        } else {
            self.postings.add(live_key(&w.rtype, docno), docno);
        }
        if deleted {
            self.batch.remove(reverse_index_key(&w.rtype, docno));
        } else {
            self.batch.insert(
                reverse_index_key(&w.rtype, docno),
                encode_entries(new_entries),
            );
        }
        if w.version == 1 {
            self.batch
                .insert(docno_key(&w.rtype, docno), w.id.as_bytes().to_vec());
        }
        self.batch.insert(
            current_key(&w.rtype, &w.id),
            current_record(w.version, deleted, docno),
        );
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
        self.overlay.apply(w, self.now_ms, docno);
        Ok(())
    }
}

/// One job's view: its own staged writes (latest per resource by position) over the group's.
struct JobTxn<'g, 'a> {
    group: &'g Group<'a>,
    staged: Vec<StagedWrite>,
    /// The position of each resource's latest staged write, and its number.
    latest: HashMap<(String, String), (usize, u32)>,
    /// The id of each staged resource's number.
    ids: HashMap<(String, u32), String>,
}

impl JobTxn<'_, '_> {
    fn own(&self, rtype: &str, id: &str) -> Option<&StagedWrite> {
        self.latest
            .get(&(rtype.to_string(), id.to_string()))
            .and_then(|(i, _)| self.staged.get(*i))
    }
}

impl WriteTxn for JobTxn<'_, '_> {
    fn current(&self, rtype: &str, id: &str) -> Result<Option<Current>> {
        if let Some(w) = self.own(rtype, id) {
            return Ok(Some(Current {
                version: w.version,
                deleted: w.method == Method::Delete,
                resource: w.resource.clone(),
                last_updated_ms: self.group.now_ms,
            }));
        }
        self.group.current(rtype, id)
    }

    fn now_ms(&self) -> i64 {
        self.group.now_ms
    }

    fn put(&mut self, write: StagedWrite) -> Result<()> {
        let docno = self.group.docno(&write.rtype, &write.id)?;
        self.ids
            .insert((write.rtype.clone(), docno), write.id.clone());
        self.latest.insert(
            (write.rtype.clone(), write.id.clone()),
            (self.staged.len(), docno),
        );
        self.staged.push(write);
        Ok(())
    }
}

impl IndexRead for JobTxn<'_, '_> {
    fn postings(
        &self,
        rtype: &str,
        param: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &RoaringBitmap) -> bool,
    ) -> Result<()> {
        postings(self.group.db, rtype, param, lo, hi, visit)
    }

    fn index_of(&self, rtype: &str, docno: u32) -> Result<Option<Vec<IndexEntry>>> {
        let id = match self.ids.get(&(rtype.to_string(), docno)) {
            Some(id) => id.clone(),
            None => match self.group.id_of(rtype, docno)? {
                Some(id) => id,
                None => return Ok(None),
            },
        };
        match self.own(rtype, &id) {
            Some(w) => Ok((w.method != Method::Delete).then(|| w.index.clone())),
            None => self.group.entries(rtype, &id, docno),
        }
    }

    fn live_docnos(&self, rtype: &str, visit: &mut dyn FnMut(u32) -> bool) -> Result<()> {
        live_docnos(self.group.db, rtype, visit)
    }

    fn docno_of(&self, rtype: &str, id: &str) -> Result<Option<u32>> {
        if let Some((_, n)) = self.latest.get(&(rtype.to_string(), id.to_string())) {
            return Ok(Some(*n));
        }
        self.group.known_docno(rtype, id)
    }

    fn id_of(&self, rtype: &str, docno: u32) -> Result<Option<String>> {
        if let Some(id) = self.ids.get(&(rtype.to_string(), docno)) {
            return Ok(Some(id.clone()));
        }
        self.group.id_of(rtype, docno)
    }

    fn pending(&self, rtype: &str) -> Vec<Pending> {
        let mut all = HashMap::new();
        self.group.overlay.pending(rtype, &mut all);
        for ((t, id), (i, docno)) in &self.latest {
            if t == rtype {
                if let Some(w) = self.staged.get(*i) {
                    all.insert(
                        id.clone(),
                        (
                            *docno,
                            (w.method != Method::Delete).then(|| w.index.clone()),
                        ),
                    );
                }
            }
        }
        all.into_iter()
            .map(|(id, (docno, entries))| Pending { id, docno, entries })
            .collect()
    }

    fn live_json(&self, rtype: &str, id: &str) -> Result<Option<Vec<u8>>> {
        Ok(WriteTxn::current(self, rtype, id)?
            .filter(|c| !c.deleted)
            .and_then(|c| c.resource))
    }
}

fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

fn last_seq(db: &dyn Kv) -> u64 {
    db.get(b"m\0seq")
        .ok()
        .flatten()
        .and_then(|v| u64_from(&v))
        .unwrap_or(0)
}

/// The latest version of each resource a durable group wrote, moved onto the feed.
fn changes(overlay: Overlay) -> Vec<Change> {
    overlay
        .current
        .into_iter()
        .map(|((rtype, id), c)| Change {
            rtype,
            id,
            version: c.version,
            resource: c.resource,
            last_updated_ms: c.last_updated_ms,
        })
        .collect()
}

fn writer_loop(db: Arc<dyn Kv>, rx: Receiver<WriteJob>, feed: &Feed, name: &'static str) {
    let mut seq = last_seq(&*db);
    let mut last_ms = i64::MIN;
    let mut next_numbers: HashMap<String, u32> = HashMap::new();
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
            db: &*db,
            overlay: Overlay::default(),
            numbers: std::cell::RefCell::new(Numbers {
                next: std::mem::take(&mut next_numbers),
                given: HashMap::new(),
            }),
            batch: Batch::default(),
            postings: Deltas::default(),
            now_ms: ts,
            seq,
        };
        let group_size = jobs.len();
        let mut written = 0u64;
        let mut deliveries = Vec::with_capacity(jobs.len());
        let mut failure: Option<String> = None;
        for job in jobs {
            let mut txn = JobTxn {
                group: &group,
                staged: Vec::new(),
                latest: HashMap::new(),
                ids: HashMap::new(),
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
                    written += 1;
                }
            }
            deliveries.push(outcome.deliver);
        }
        if failure.is_none() {
            let postings = std::mem::take(&mut group.postings);
            if let Err(e) = postings.write(&*db, &mut group.batch) {
                failure = Some(e.to_string());
            }
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
                    overlay,
                    numbers,
                    ..
                } = group;
                next_numbers = numbers.into_inner().next;
                let fsync = Instant::now();
                let durable = db.apply(batch, true);
                metrics::histogram!("vbc_store_fsync_seconds", "store" => name)
                    .record(fsync.elapsed().as_secs_f64());
                match durable {
                    Ok(()) => {
                        seq = new_seq;
                        metrics::histogram!("vbc_store_commit_group_size", "store" => name)
                            .record(group_size as f64);
                        metrics::counter!("vbc_store_resources_written_total", "store" => name)
                            .increment(written);
                        // the engine applies the group on the feed's thread; readers of derived
                        // state wait for it (the group is durable before anyone is answered)
                        feed.publish(seq, changes(overlay));
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
                value: ident.as_bytes().to_vec(),
            }],
        }
    }

    /// The store in `dir` on `engine` (recorded before the first open, as a new data directory
    /// created with `VBC_STORE_ENGINE` is).
    fn open_as(dir: &std::path::Path, engine: Engine) -> Result<KvStore> {
        engine.record(dir)?;
        KvStore::open(dir)
    }

    fn lookup(store: &KvStore, value: &str) -> Vec<String> {
        let mut ids = Vec::new();
        store
            .scan_index(
                "Patient",
                "identifier",
                value.as_bytes(),
                Some(&[value.as_bytes(), &[1]].concat()),
                &mut |_, n| {
                    ids.push(n);
                    true
                },
            )
            .expect("scan");
        ids.into_iter()
            .map(|n| store.id_of("Patient", n).expect("id").expect("numbered"))
            .collect()
    }

    async fn writes_are_versioned_indexed_and_reopenable(engine: Engine) {
        let dir = tempfile::tempdir().expect("tmp");
        {
            let store = open_as(dir.path(), engine).expect("open");
            write(&store, |t| t.put(staged("a", 1, "x")))
                .await
                .expect("w1");
            write(&store, |t| t.put(staged("a", 2, "y")))
                .await
                .expect("w2");
            assert_eq!(lookup(&store, "x"), Vec::<String>::new());
            assert_eq!(lookup(&store, "y"), vec!["a".to_string()]);
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
        let store = open_as(dir.path(), engine).expect("reopen");
        assert_eq!(
            store.current("Patient", "a").expect("r").map(|r| r.version),
            Some(2)
        );
        write(&store, |t| t.put(staged("b", 1, "y")))
            .await
            .expect("w3");
        let mut ids = lookup(&store, "y");
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

    async fn a_panicking_job_fails_alone_and_the_writer_goes_on(engine: Engine) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_as(dir.path(), engine).expect("open");
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

    async fn failed_job_leaves_nothing_and_jobs_see_group_writes(engine: Engine) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_as(dir.path(), engine).expect("open");
        let r: Result<()> = write(&store, |t| {
            t.put(staged("a", 1, "x"))?;
            Err(FhirError::BadRequest("no".into()))
        })
        .await;
        assert!(r.is_err());
        assert!(store.current("Patient", "a").expect("r").is_none());
        assert!(lookup(&store, "x").is_empty());
        let seen = write(&store, |t| {
            t.put(staged("a", 1, "x"))?;
            let c = t.current("Patient", "a")?.map(|c| c.version);
            let l: Vec<String> = t
                .pending("Patient")
                .into_iter()
                .filter(|p| {
                    p.entries
                        .as_ref()
                        .is_some_and(|e| e.iter().any(|x| x.value == b"x"))
                })
                .map(|p| p.id)
                .collect();
            Ok((c, l))
        })
        .await
        .expect("ok");
        assert_eq!(seen, (Some(1), vec!["a".to_string()]));
    }

    async fn index_check_finds_orphans_and_gaps_and_reindex_repairs_them(engine: Engine) {
        let dir = tempfile::tempdir().expect("tmp");
        let store = open_as(dir.path(), engine).expect("open");
        write(&store, |t| t.put(staged("a", 1, "x")))
            .await
            .expect("w");
        write(&store, |t| t.put(staged("b", 1, "y")))
            .await
            .expect("w");
        let extract = |_: &str, b: &[u8]| {
            let v: serde_json::Value = serde_json::from_slice(b).expect("json");
            let ident = if v["id"] == "a" { "x" } else { "y" };
            vec![IndexEntry {
                param: "identifier".into(),
                value: ident.as_bytes().to_vec(),
            }]
        };
        assert!(store.check_index(&extract).expect("check").consistent());
        // a list no resource belongs in, a missing list, and a list with one number too many
        // (besides them, the list of live resources holds both)
        let entry = |v: &[u8]| IndexEntry {
            param: "identifier".into(),
            value: v.to_vec(),
        };
        let number = |id: &str| {
            store
                .docno_of("Patient", id)
                .expect("read")
                .expect("numbered")
        };
        let (a, b) = (number("a"), number("b"));
        let list = |ns: &[u32]| posting::encode(ns.iter().copied().collect());
        store
            .db
            .apply(
                Batch {
                    ops: vec![
                        (posting_key("Patient", &entry(b"z"), 99), Some(list(&[99]))),
                        (posting_key("Patient", &entry(b"y"), b), None),
                        (
                            posting_key("Patient", &entry(b"x"), a),
                            Some(list(&[a, 77])),
                        ),
                    ],
                },
                true,
            )
            .expect("damage");
        let r = store.check_index(&extract).expect("check");
        assert_eq!((r.missing, r.orphaned, r.keys), (1, 2, 5), "{r:?}");
        assert_eq!(store.reindex(&extract).expect("reindex"), 2);
        assert!(store.check_index(&extract).expect("check").consistent());
        assert_eq!(lookup(&store, "y"), vec!["b".to_string()]);
    }

    #[test]
    fn no_two_resource_types_share_a_key_code() {
        let mut codes = std::collections::HashMap::new();
        for t in crate::fhir::resource_types::RESOURCE_TYPES {
            if let Some(other) = codes.insert(type_code(t), *t) {
                panic!("{t} and {other} share the key code {:?}", type_code(t));
            }
        }
        assert!(codes.len() > 140);
    }

    /// Each store test once per serving engine.
    macro_rules! on_every_engine {
        ($($test:ident),* $(,)?) => {
            mod fjall {
                $(#[tokio::test]
                async fn $test() {
                    super::$test(super::Engine::Fjall).await
                })*
            }
        };
    }

    on_every_engine!(
        writes_are_versioned_indexed_and_reopenable,
        a_panicking_job_fails_alone_and_the_writer_goes_on,
        failed_job_leaves_nothing_and_jobs_see_group_writes,
        index_check_finds_orphans_and_gaps_and_reindex_repairs_them,
    );
}

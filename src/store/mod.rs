//! Storage: the trait the server writes and reads through, the records it keeps, and its one
//! implementation ([`kv_store`]) on an ordered key-value engine ([`kv`]: [`fjall_kv`]; sled
//! directories of earlier releases are read by [`sled_kv`] to migrate them).
//!
//! The search index names resources by number (a `u32` per type, given once per id and never
//! reused): index reads visit numbers, which a search gathers into bitmaps, and only the page a
//! search returns is turned into ids ([`Store::id_of`]).
//!
//! Writes go through [`write`]: a closure runs against a [`WriteTxn`] on the engine's single
//! writer, sees earlier writes of its commit group, and its result is returned only once the whole
//! group is durably on disk (group commit: concurrent writers share one fsync). A closure that
//! returns an error leaves nothing behind.

pub mod audit_legacy;
pub mod audit_log;
pub mod feed;
pub mod fjall_kv;
pub mod kv;
pub mod kv_store;
pub mod migrate;
pub mod owner;
pub mod posting;
pub mod record;
pub mod sled_kv;

#[cfg(test)]
mod model_test;

use std::sync::Arc;

use roaring::RoaringBitmap;

pub use record::{IndexEntry, Method, StagedWrite, VersionRecord};

use crate::error::{FhirError, Result};

/// The latest state of one resource as a writer sees it.
#[derive(Debug, Clone)]
pub struct Current {
    /// Latest version number (the tombstone's, when deleted).
    pub version: u64,
    /// True when the latest version is a delete.
    pub deleted: bool,
    /// The resource JSON of the latest version (None when deleted).
    pub resource: Option<Vec<u8>>,
    /// When the latest version was written (ms since the epoch).
    pub last_updated_ms: i64,
}

/// A write of a commit group not yet on disk, as a search inside the group sees it.
#[derive(Debug, Clone)]
pub struct Pending {
    /// Logical id.
    pub id: String,
    /// Resource number.
    pub docno: u32,
    /// Index entries of the written version (None for a delete).
    pub entries: Option<Vec<IndexEntry>>,
}

/// Reads of the search index, one trait for every view of it: the committed store
/// ([`Store`]) and a write job inside its commit group ([`WriteTxn`], which also sees the
/// group's writes not yet on disk through [`IndexRead::pending`]). Search runs on it alone.
pub trait IndexRead {
    /// Visit the posting lists of (`rtype`, `param`) whose keys lie from `lo` (inclusive) to `hi`
    /// (exclusive; None for the end of the parameter), in key order, as (value, numbers of the
    /// resources carrying it); a value's list may come in several parts (chunks of 65,536
    /// numbers), in order. The visitor returns false to stop. Keys are `value \0 chunk`, so a
    /// bound is compared with that. Only committed entries: a job's and its group's are in
    /// `pending`.
    fn postings(
        &self,
        rtype: &str,
        param: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &RoaringBitmap) -> bool,
    ) -> Result<()>;
    /// Visit index entries of (`rtype`, `param`) with keys from `lo` to `hi` one by one, as
    /// (value, resource number), in key order ([`IndexRead::postings`] number by number).
    fn scan_index(
        &self,
        rtype: &str,
        param: &str,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], u32) -> bool,
    ) -> Result<()> {
        let mut go = true;
        self.postings(rtype, param, lo, hi, &mut |v, set| {
            for n in set {
                if !visit(v, n) {
                    go = false;
                    break;
                }
            }
            go
        })
    }
    /// The index entries of a live resource (None when absent or deleted).
    fn index_of(&self, rtype: &str, docno: u32) -> Result<Option<Vec<IndexEntry>>>;
    /// Visit the numbers of committed live resources of a type in order; the visitor returns
    /// false to stop.
    fn live_docnos(&self, rtype: &str, visit: &mut dyn FnMut(u32) -> bool) -> Result<()>;
    /// The number of a resource (live or deleted; None when it has none).
    fn docno_of(&self, rtype: &str, id: &str) -> Result<Option<u32>>;
    /// The id of a resource number.
    fn id_of(&self, rtype: &str, docno: u32) -> Result<Option<String>>;
    /// Writes of `rtype` not yet on disk that this view must see (none for the store).
    fn pending(&self, _rtype: &str) -> Vec<Pending> {
        Vec::new()
    }
    /// The JSON of a live resource (None when absent or deleted).
    fn live_json(&self, rtype: &str, id: &str) -> Result<Option<Vec<u8>>>;
}

/// What a write closure can see and do. Reads include earlier writes of the same commit group.
pub trait WriteTxn: IndexRead {
    /// Latest state of a resource, or None if it never existed.
    fn current(&self, rtype: &str, id: &str) -> Result<Option<Current>>;
    /// The commit group's timestamp (milliseconds since the epoch; strictly increasing per group).
    fn now_ms(&self) -> i64;
    /// Stage a new version. It becomes visible to later reads in this group at once and durable
    /// when the group commits.
    fn put(&mut self, write: StagedWrite) -> Result<()>;
}

/// A closure run on the writer: it returns whether it succeeded (its writes are kept only then)
/// and a continuation told whether the commit reached the disk.
pub type WriteJob = Box<dyn FnOnce(&mut dyn WriteTxn) -> JobOutcome + Send>;

/// The result of running a [`WriteJob`].
pub struct JobOutcome {
    /// Keep the job's staged writes.
    pub keep: bool,
    /// Called after the group commit with its result.
    pub deliver: Box<dyn FnOnce(std::result::Result<(), String>) + Send>,
}

/// Paging position in a history listing.
#[derive(Debug, Clone, Copy, Default)]
pub struct HistoryQuery {
    /// Only versions updated at or after this instant (ms since epoch).
    pub since_ms: Option<i64>,
    /// Only versions updated at or before this instant (ms since epoch).
    pub at_ms: Option<i64>,
    /// Continue below this sequence number (exclusive): the cursor of the previous page.
    pub before_seq: Option<u64>,
    /// Page size.
    pub limit: usize,
}

impl HistoryQuery {
    /// Offer the next version (newest first) to a page: keeps it if it is in range, and returns
    /// false once the page is full or the versions are older than `_since`.
    pub fn admit(&self, rec: VersionRecord, page: &mut Vec<VersionRecord>) -> bool {
        if self.since_ms.is_some_and(|s| rec.last_updated_ms < s) {
            return false;
        }
        let excluded = self.before_seq.is_some_and(|b| rec.seq >= b)
            || self.at_ms.is_some_and(|a| rec.last_updated_ms > a);
        if !excluded {
            page.push(rec);
        }
        page.len() < self.limit
    }
}

/// One resource version of a commit group that reached the disk.
#[derive(Debug, Clone, Copy)]
pub struct Committed<'a> {
    /// Resource type.
    pub rtype: &'a str,
    /// Logical id.
    pub id: &'a str,
    /// Version number.
    pub version: u64,
    /// The resource JSON (None for a delete).
    pub resource: Option<&'a [u8]>,
    /// When the version was written (ms since the epoch).
    pub last_updated_ms: i64,
}

/// Told about every commit group once it is durable, in commit order, on the commit feed's
/// thread ([`feed`]); readers of derived state wait for the feed ([`Store::feed_position`]) so
/// that they see every acknowledged write.
pub trait CommitListener: Send + Sync {
    /// The latest version of each resource the group wrote.
    fn committed(&self, writes: &[Committed<'_>]);
}

/// A storage engine.
pub trait Store: IndexRead + Send + Sync + 'static {
    /// Latest version of a resource (including tombstones).
    fn current(&self, rtype: &str, id: &str) -> Result<Option<VersionRecord>>;
    /// One specific version.
    fn version(&self, rtype: &str, id: &str, version: u64) -> Result<Option<VersionRecord>>;
    /// Versions of one resource, newest first.
    fn instance_history(
        &self,
        rtype: &str,
        id: &str,
        q: HistoryQuery,
    ) -> Result<Vec<VersionRecord>>;
    /// Versions of all resources (of one type when `rtype` is given), newest first.
    fn history(&self, rtype: Option<&str>, q: HistoryQuery) -> Result<Vec<VersionRecord>>;
    /// True when the index must be rebuilt ([`Store::reindex`]) before the store serves: it was
    /// written in an earlier key layout.
    fn needs_reindex(&self) -> bool {
        false
    }
    /// Rebuild every index entry and resource number from the stored resources with `extract`
    /// (offline; the writer must be idle). Returns the number of resources indexed.
    fn reindex(&self, extract: &dyn Fn(&str, &[u8]) -> Vec<IndexEntry>) -> Result<usize>;
    /// Compare the stored index with what `extract` gives for every live resource, and look for
    /// index keys without a live resource.
    fn check_index(&self, extract: &dyn Fn(&str, &[u8]) -> Vec<IndexEntry>) -> Result<IndexReport>;
    /// Bytes the store occupies on disk.
    fn size_on_disk(&self) -> Result<u64>;
    /// Live resources of a type in id order, after `after` (exclusive), at most `limit`.
    fn list(&self, rtype: &str, after: Option<&str>, limit: usize) -> Result<Vec<VersionRecord>>;
    /// Visit every stored version of every resource of `rtype`, in (id, version) order.
    fn for_each_version(
        &self,
        rtype: &str,
        visit: &mut dyn FnMut(VersionRecord) -> Result<()>,
    ) -> Result<()>;
    /// Install the listener told about each durable commit group.
    fn set_listener(&self, listener: Arc<dyn CommitListener>);
    /// How far the commit feed has come (None: this store has no feed).
    fn feed_position(&self) -> Option<Arc<feed::FeedPosition>> {
        None
    }
    /// Queue a write job for the writer.
    fn submit(&self, job: WriteJob) -> Result<()>;
    /// Stop accepting writes, finish queued ones and flush everything to disk.
    fn shutdown(&self) -> Result<()>;
    /// True while the store accepts reads and writes.
    fn ready(&self) -> bool;
}

/// The result of [`Store::check_index`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexReport {
    /// Live resources checked.
    pub resources: usize,
    /// Index entries checked (resource numbers in posting lists).
    pub keys: usize,
    /// Entries a resource should have but the index lacks (or whose entry list differs).
    pub missing: usize,
    /// Numbers in posting lists with no live resource or not in its entry list.
    pub orphaned: usize,
}

impl IndexReport {
    /// True when the index is exactly what the resources give.
    pub fn consistent(&self) -> bool {
        self.missing == 0 && self.orphaned == 0
    }
}

/// Shared handle to the engine in use.
pub type SharedStore = Arc<dyn Store>;

/// Run `f` on the store's writer and return its result once its commit group is on disk.
pub async fn write<T, F>(store: &dyn Store, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn WriteTxn) -> Result<T> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel::<Result<T>>();
    let job: WriteJob = Box::new(move |txn| {
        let result = f(txn);
        let keep = result.is_ok();
        JobOutcome {
            keep,
            deliver: Box::new(move |commit| {
                let _ = tx.send(match commit {
                    Ok(()) => result,
                    Err(e) => Err(FhirError::Storage(e)),
                });
            }),
        }
    });
    store.submit(job)?;
    rx.await.map_err(|_| {
        FhirError::Storage("the write was not applied: the store writer failed it".into())
    })?
}

/// The smallest byte string greater than every string starting with `p`.
pub fn prefix_end(p: &[u8]) -> Option<Vec<u8>> {
    let mut v = p.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xff {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

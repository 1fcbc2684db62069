//! Storage: the trait every engine implements, and the records it keeps.
//!
//! Writes go through [`write`]: a closure runs against a [`WriteTxn`] on the engine's single
//! writer, sees earlier writes of its commit group, and its result is returned only once the whole
//! group is durably on disk (group commit: concurrent writers share one fsync). A closure that
//! returns an error leaves nothing behind.

pub mod record;
pub mod sled_store;

use std::sync::Arc;

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

/// What a write closure can see and do. Reads include earlier writes of the same commit group.
pub trait WriteTxn {
    /// Latest state of a resource, or None if it never existed.
    fn current(&mut self, rtype: &str, id: &str) -> Result<Option<Current>>;
    /// Ids of live resources of `rtype` with index entry `param` = `value`.
    fn lookup(&mut self, rtype: &str, param: &str, value: &str) -> Result<Vec<String>>;
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

/// A storage engine.
pub trait Store: Send + Sync + 'static {
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
    /// Ids of live resources with an index entry (committed data only).
    fn lookup(&self, rtype: &str, param: &str, value: &str) -> Result<Vec<String>>;
    /// Live resources of a type in id order, after `after` (exclusive), at most `limit`.
    fn list(&self, rtype: &str, after: Option<&str>, limit: usize) -> Result<Vec<VersionRecord>>;
    /// Queue a write job for the writer.
    fn submit(&self, job: WriteJob) -> Result<()>;
    /// Stop accepting writes, finish queued ones and flush everything to disk.
    fn shutdown(&self) -> Result<()>;
    /// True while the store accepts reads and writes.
    fn ready(&self) -> bool;
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

//! The audit trail seen as a store of `AuditEvent` resources, for read, vread and history:
//! every entry is rendered ([`super::audit::render`]) as version 1 of `AuditEvent/ae-<seq>`,
//! last updated when it was recorded. Nothing can be written through it (the server alone
//! appends to the trail), and search goes through the trail's own search, not the index methods.

use std::sync::Arc;

use super::audit::{event_id, render, seq_of_id};
use crate::error::{FhirError, Result};
use crate::store::audit_log::{AuditLog, Entry};
use crate::store::{
    CommitListener, HistoryQuery, IndexEntry, IndexRead, IndexReport, Method, Store, VersionRecord,
    WriteJob,
};

/// The trail behind [`Store`].
#[derive(Debug)]
pub struct AuditStore {
    log: Arc<AuditLog>,
}

impl AuditStore {
    /// The store over `log`.
    pub fn new(log: Arc<AuditLog>) -> AuditStore {
        AuditStore { log }
    }

    fn record(&self, seq: u64) -> Result<Option<VersionRecord>> {
        self.log
            .get(seq)?
            .map(|entry| version_record(seq, &entry))
            .transpose()
    }
}

/// The entry at `seq` as version 1 of its `AuditEvent`.
fn version_record(seq: u64, entry: &Entry) -> Result<VersionRecord> {
    let json = render(seq, entry)?;
    Ok(VersionRecord {
        rtype: "AuditEvent".into(),
        id: event_id(seq),
        version: 1,
        method: Method::Create,
        last_updated_ms: entry.recorded_ms,
        seq,
        resource: Some(serde_json::to_vec(&json).map_err(|e| FhirError::Storage(e.to_string()))?),
    })
}

fn unsupported(what: &str) -> FhirError {
    FhirError::NotImplemented(format!("the audit trail does not support {what}"))
}

impl IndexRead for AuditStore {
    fn postings(
        &self,
        _rtype: &str,
        _param: &str,
        _lo: &[u8],
        _hi: Option<&[u8]>,
        _visit: &mut dyn FnMut(&[u8], &roaring::RoaringBitmap) -> bool,
    ) -> Result<()> {
        Err(unsupported(
            "index scans (AuditEvent search runs on the trail)",
        ))
    }

    fn index_of(&self, _rtype: &str, _docno: u32) -> Result<Option<Vec<IndexEntry>>> {
        Err(unsupported("index reads"))
    }

    fn live_docnos(&self, _rtype: &str, _visit: &mut dyn FnMut(u32) -> bool) -> Result<()> {
        Err(unsupported("listing resources"))
    }

    fn docno_of(&self, _rtype: &str, _id: &str) -> Result<Option<u32>> {
        Err(unsupported("index reads"))
    }

    fn id_of(&self, _rtype: &str, _docno: u32) -> Result<Option<String>> {
        Err(unsupported("index reads"))
    }

    fn live_json(&self, _rtype: &str, _id: &str) -> Result<Option<Vec<u8>>> {
        Err(unsupported("index reads"))
    }
}

impl Store for AuditStore {
    fn current(&self, rtype: &str, id: &str) -> Result<Option<VersionRecord>> {
        match (rtype, seq_of_id(id)) {
            ("AuditEvent", Some(seq)) => self.record(seq),
            _ => Ok(None),
        }
    }

    fn version(&self, rtype: &str, id: &str, version: u64) -> Result<Option<VersionRecord>> {
        if version != 1 {
            return Ok(None);
        }
        self.current(rtype, id)
    }

    fn instance_history(
        &self,
        rtype: &str,
        id: &str,
        q: HistoryQuery,
    ) -> Result<Vec<VersionRecord>> {
        let mut page = Vec::new();
        if let Some(r) = self.current(rtype, id)? {
            q.admit(r, &mut page);
        }
        Ok(page)
    }

    fn history(&self, rtype: Option<&str>, q: HistoryQuery) -> Result<Vec<VersionRecord>> {
        let mut page = Vec::new();
        if rtype.is_some_and(|t| t != "AuditEvent") || q.limit == 0 {
            return Ok(page);
        }
        let mut to = self.log.last_seq()? + 1;
        if let Some(b) = q.before_seq {
            to = to.min(b);
        }
        if let Some(at) = q.at_ms {
            to = to.min(self.log.first_recorded_at_or_after(at.saturating_add(1))?);
        }
        let from = match q.since_ms {
            Some(s) => self.log.first_recorded_at_or_after(s)?,
            None => 1,
        };
        self.log.visit(from, to, true, &mut |seq, entry| {
            Ok(q.admit(version_record(seq, &entry)?, &mut page))
        })?;
        Ok(page)
    }

    fn reindex(&self, _extract: &dyn Fn(&str, &[u8]) -> Vec<IndexEntry>) -> Result<usize> {
        Ok(0)
    }

    fn check_index(
        &self,
        _extract: &dyn Fn(&str, &[u8]) -> Vec<IndexEntry>,
    ) -> Result<IndexReport> {
        Ok(IndexReport::default())
    }

    fn size_on_disk(&self) -> Result<u64> {
        self.log.size_on_disk()
    }

    fn list(
        &self,
        _rtype: &str,
        _after: Option<&str>,
        _limit: usize,
    ) -> Result<Vec<VersionRecord>> {
        Err(unsupported("listing"))
    }

    fn for_each_version(
        &self,
        _rtype: &str,
        _visit: &mut dyn FnMut(VersionRecord) -> Result<()>,
    ) -> Result<()> {
        Err(unsupported("listing"))
    }

    fn set_listener(&self, _listener: Arc<dyn CommitListener>) {}

    fn submit(&self, _job: WriteJob) -> Result<()> {
        Err(FhirError::Forbidden(
            "the audit trail is written by the server alone".into(),
        ))
    }

    fn shutdown(&self) -> Result<()> {
        self.log.shutdown()
    }

    fn ready(&self) -> bool {
        true
    }
}

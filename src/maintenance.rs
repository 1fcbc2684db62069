//! Offline maintenance commands on a data directory: `reindex` (rebuild every search index entry
//! from the stored resources, after a change to the search parameter definitions) and
//! `check-index` (compare the index with what the resources give; exit status 1 when they differ)
//! and `audit-verify` (walk the audit trail's hash chain).

use std::path::PathBuf;

use crate::error::Result;
use crate::store::audit_log::{AuditLog, Verified};
use crate::store::kv_store::KvStore;
use crate::store::{IndexReport, Store};

/// Options of the maintenance commands.
#[derive(Debug, Clone, clap::Args)]
pub struct MaintenanceConfig {
    /// Data directory of a stopped server.
    #[arg(long, env = "VBC_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The server's base URL, if it runs with one (absolute references to it are indexed as
    /// relative ones).
    #[arg(long, env = "VBC_BASE_URL")]
    pub base_url: Option<String>,
}

/// Options of `audit-verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuditVerifyConfig {
    /// Data directory of a stopped server (its audit trail store `audit/` and `audit.head` are
    /// verified).
    #[arg(long, env = "VBC_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Ignored: the audit chain's hashes do not depend on the server's base URL (accepted so
    /// that the flags and environment of the other maintenance commands work here too).
    #[arg(long, env = "VBC_BASE_URL")]
    pub base_url: Option<String>,
}

fn open(cfg: &MaintenanceConfig) -> Result<KvStore> {
    crate::search::init(cfg.base_url.as_deref())?;
    KvStore::open(&cfg.data_dir)
}

/// Rebuild the index; returns the number of resources indexed.
pub fn reindex(cfg: &MaintenanceConfig) -> Result<usize> {
    let store = open(cfg)?;
    let engine = crate::search::engine()?;
    let n = store.reindex(&|t, b| engine.index_entries_of_bytes(t, b))?;
    store.shutdown()?;
    Ok(n)
}

/// Check the index against the resources.
pub fn check_index(cfg: &MaintenanceConfig) -> Result<IndexReport> {
    let store = open(cfg)?;
    let engine = crate::search::engine()?;
    engine.upgrade_index(&store)?;
    let report = store.check_index(&|t, b| engine.index_entries_of_bytes(t, b))?;
    store.shutdown()?;
    Ok(report)
}

/// Verify the audit trail's hash chain of a stopped server's data directory.
/// The compact trail (`audit-log`) is verified when there is one, else a trail kept in the earlier
/// form (`audit`) that no server has converted yet.
pub fn audit_verify(cfg: &AuditVerifyConfig) -> Result<Verified> {
    let head = cfg.data_dir.join(crate::server::AUDIT_HEAD);
    let legacy = cfg.data_dir.join(crate::server::AUDIT_DIR);
    let log_dir = cfg.data_dir.join(crate::server::AUDIT_LOG_DIR);
    if !log_dir.exists() && crate::store::kv::Engine::holds_store(&legacy) {
        return crate::store::audit_legacy::verify(&legacy, &head);
    }
    let log = AuditLog::open_read_only(&log_dir, head)?;
    let verified = log.verify()?;
    log.shutdown()?;
    Ok(verified)
}

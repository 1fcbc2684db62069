//! `vbc-server migrate --from OLD --to NEW`: copy a stopped server's data directory onto fjall,
//! the engine that serves (from a directory that sled holds, which this release no longer
//! serves, or from fjall itself): the resources with every version and both histories, the
//! search index, the audit trail, and the server's other files (the audit chain's head, keys).
//! The copy is then checked as `check-index` and `audit-verify` check a data directory; the
//! original is left as it was.

use std::path::{Path, PathBuf};

use crate::error::{FhirError, Result};
use crate::server::AUDIT_DIR;
use crate::store::kv::{Engine, ENGINE_FILE};
use crate::store::migrate::{copy_store, Copied};
use crate::store::owner::PID_FILE;
use crate::store::IndexReport;

/// Options of `migrate`.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateConfig {
    /// Data directory of a stopped server (on sled or fjall).
    #[arg(long)]
    pub from: PathBuf,
    /// The new data directory on fjall (must not exist, or be empty).
    #[arg(long)]
    pub to: PathBuf,
    /// The server's base URL, if it runs with one (for the index check).
    #[arg(long, env = "VBC_BASE_URL")]
    pub base_url: Option<String>,
}

/// What a migration did and found.
#[derive(Debug, Clone)]
pub struct Migrated {
    /// The resources' store.
    pub data: Copied,
    /// The audit trail's store (None when the directory kept none).
    pub audit: Option<Copied>,
    /// Other files copied (the audit chain's head, keys, ...).
    pub files: usize,
    /// The index check of the copy.
    pub index: IndexReport,
    /// Audit events whose chain was verified in the copy.
    pub audit_events: u64,
}

/// Copy the directory, then check the copy; an error leaves the new directory for inspection.
pub fn migrate(cfg: &MigrateConfig) -> Result<Migrated> {
    let engine = Engine::Fjall;
    if let Ok(mut entries) = std::fs::read_dir(&cfg.to) {
        if entries.next().is_some() {
            return Err(FhirError::BadRequest(format!(
                "{} is not empty: migrate writes a new data directory",
                cfg.to.display()
            )));
        }
    }
    let data = copy_store(&cfg.from, &cfg.to, engine, &mut progress("resources"))?;
    let audit_from = cfg.from.join(AUDIT_DIR);
    let audit = if Engine::holds_store(&audit_from) {
        Some(copy_store(
            &audit_from,
            &cfg.to.join(AUDIT_DIR),
            engine,
            &mut progress("audit trail"),
        )?)
    } else {
        None
    };
    let files = copy_other_files(&cfg.from, &cfg.to, data.from)?;
    let index = crate::maintenance::check_index(&crate::maintenance::MaintenanceConfig {
        data_dir: cfg.to.clone(),
        base_url: cfg.base_url.clone(),
    })?;
    let audit_events = if audit.is_some() {
        let verified = crate::maintenance::audit_verify(&crate::maintenance::AuditVerifyConfig {
            data_dir: cfg.to.clone(),
            base_url: None,
        })?;
        if let Some((seq, why)) = verified.broken {
            return Err(FhirError::Storage(format!(
                "the copied audit chain is broken at event {seq}: {why}"
            )));
        }
        verified.events
    } else {
        0
    };
    Ok(Migrated {
        data,
        audit,
        files,
        index,
        audit_events,
    })
}

/// Progress on stderr: a line per half million pairs copied.
fn progress(what: &'static str) -> impl FnMut(u64) {
    let mut shown = 0u64;
    move |n| {
        if n / 500_000 > shown / 500_000 || shown == 0 {
            eprintln!("migrate: {what}: {n} key-value pairs copied");
            shown = n.max(1);
        }
    }
}

/// Copy what the server keeps beside its store (everything but the store's own files, its
/// engine record, its holder's pid file and the audit store); returns the number of files.
fn copy_other_files(from: &Path, to: &Path, engine: Engine) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(from).map_err(|e| io(e, from))? {
        let entry = entry.map_err(|e| io(e, from))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if engine.owns(&name) || matches!(name.as_str(), ENGINE_FILE | PID_FILE | AUDIT_DIR) {
            continue;
        }
        n += copy_tree(&entry.path(), &to.join(&name))?;
    }
    Ok(n)
}

/// A file-system error on `p`.
fn io(e: std::io::Error, p: &Path) -> FhirError {
    FhirError::Storage(format!("{}: {e}", p.display()))
}

/// Copy a file, or a directory with everything in it; returns the number of files.
fn copy_tree(from: &Path, to: &Path) -> Result<usize> {
    if from.is_dir() {
        std::fs::create_dir_all(to).map_err(|e| io(e, to))?;
        let mut n = 0;
        for entry in std::fs::read_dir(from).map_err(|e| io(e, from))? {
            let entry = entry.map_err(|e| io(e, from))?;
            n += copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(n)
    } else {
        std::fs::copy(from, to).map_err(|e| io(e, from))?;
        Ok(1)
    }
}

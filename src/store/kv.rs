//! The key-value layer under the store: ordered byte keys, reads, range scans and atomic batches
//! that are durable when applied with `sync`. The store's key layout and write path
//! ([`super::kv_store`]) sit on this trait alone, so the embedded engine is recorded in the data
//! directory when it is created. fjall serves; sled, the engine of directories written before
//! fjall was chosen (by measurement, README "Storage engine"), is only read, by `vbc-server
//! migrate`, which copies such a directory onto fjall.

use std::path::Path;

use crate::error::{FhirError, Result};

/// One key-value pair read from a scan.
pub type Pair = (Vec<u8>, Vec<u8>);

/// A scan's pairs in key order (or reverse key order), each read error in place.
pub type Scan<'a> = Box<dyn Iterator<Item = Result<Pair>> + 'a>;

/// Puts and deletes applied together or not at all.
#[derive(Debug, Default)]
pub struct Batch {
    /// (key, Some(value)) puts, (key, None) deletes, applied in order.
    pub ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Put `value` at `key`.
    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), Some(value.into())));
    }

    /// Delete `key`.
    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.ops.push((key.into(), None));
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// An ordered key-value engine.
pub trait Kv: Send + Sync + 'static {
    /// The value at `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Pairs with keys from `lo` (inclusive) to `hi` (exclusive; None: to the end), in key order
    /// or, with `reverse`, from the last.
    fn scan(&self, lo: &[u8], hi: Option<&[u8]>, reverse: bool) -> Scan<'_>;
    /// Visit pairs with keys from `lo` to `hi` (exclusive; None: to the end) in key order,
    /// borrowing each key and value (no copy); the visitor returns false to stop.
    fn visit(
        &self,
        lo: &[u8],
        hi: Option<&[u8]>,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<()> {
        for item in self.scan(lo, hi, false) {
            let (k, v) = item?;
            if !visit(&k, &v) {
                break;
            }
        }
        Ok(())
    }
    /// Apply a batch atomically; with `sync` it is on disk (a crash keeps it) when this returns.
    fn apply(&self, batch: Batch, sync: bool) -> Result<()>;
    /// Make everything applied so far durable.
    fn flush(&self) -> Result<()>;
    /// Bytes the engine occupies on disk.
    fn size_on_disk(&self) -> Result<u64>;
    /// The engine's name as recorded in the data directory.
    fn engine(&self) -> Engine;
}

/// The embedded engines a data directory can be created with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// sled 0.34: a B-tree of pages, the engine of every directory created before fjall. Read
    /// only, to migrate such a directory ([`Engine::check_served`]).
    Sled,
    /// fjall 3: a log-structured merge tree with LZ4-compressed blocks (the default).
    Fjall,
}

/// True when a directory has sled's files (a store created before engines were recorded).
fn has_sled_files(dir: &Path) -> bool {
    dir.join("conf").exists() && dir.join("db").exists()
}

/// The file in a data directory naming its engine.
pub const ENGINE_FILE: &str = "store-engine";

impl Engine {
    /// The name written to [`ENGINE_FILE`] and taken by `VBC_STORE_ENGINE`.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Sled => "sled",
            Engine::Fjall => "fjall",
        }
    }

    /// The engine of a name.
    pub fn of(name: &str) -> Option<Engine> {
        match name.trim() {
            "sled" => Some(Engine::Sled),
            "fjall" => Some(Engine::Fjall),
            _ => None,
        }
    }

    /// The engine for a directory: the one it records, else sled's when sled files are there
    /// (directories created before the choice existed), else the one `VBC_STORE_ENGINE` names
    /// (fjall when unset; no other engine serves a new directory). A name that is no engine is
    /// refused.
    pub fn for_dir(dir: &Path) -> Result<Engine> {
        if let Ok(text) = std::fs::read_to_string(dir.join(ENGINE_FILE)) {
            return Engine::of(&text).ok_or_else(|| {
                FhirError::Storage(format!(
                    "{} names an unknown store engine '{}'",
                    dir.join(ENGINE_FILE).display(),
                    text.trim()
                ))
            });
        }
        if has_sled_files(dir) {
            return Ok(Engine::Sled);
        }
        match std::env::var("VBC_STORE_ENGINE") {
            Ok(name) if !name.trim().is_empty() => match Engine::of(&name) {
                Some(Engine::Fjall) => Ok(Engine::Fjall),
                _ => Err(FhirError::BadRequest(format!(
                    "VBC_STORE_ENGINE='{name}': new data directories are created on fjall only"
                ))),
            },
            _ => Ok(Engine::Fjall),
        }
    }

    /// Refuse to serve a directory on an engine that is only read to migrate (sled), naming the
    /// command that copies it onto the serving engine.
    pub fn check_served(self, dir: &Path) -> Result<()> {
        match self {
            Engine::Fjall => Ok(()),
            Engine::Sled => Err(FhirError::Storage(format!(
                "{dir} was written on sled, which this release no longer serves (fjall is faster \
                 and smaller on disk): copy it, with every version, onto fjall with \
                 `vbc-server migrate --from {dir} --to NEW_DIR`, then use NEW_DIR (the original \
                 is left as it was)",
                dir = dir.display()
            ))),
        }
    }

    /// True when a directory entry of that name is one of this engine's own files (sled: `conf`,
    /// `db`, `blobs`, `snap.*`; fjall: `fjall`), as opposed to the server's files beside them.
    pub fn owns(self, name: &str) -> bool {
        match self {
            Engine::Sled => matches!(name, "conf" | "db" | "blobs") || name.starts_with("snap."),
            Engine::Fjall => name == "fjall",
        }
    }

    /// True when a directory holds a store (it records its engine, or has sled's files).
    pub fn holds_store(dir: &Path) -> bool {
        dir.join(ENGINE_FILE).exists() || has_sled_files(dir)
    }

    /// Record the engine in a directory (once, when it is created).
    pub fn record(self, dir: &Path) -> Result<()> {
        let path = dir.join(ENGINE_FILE);
        if path.exists() {
            return Ok(());
        }
        std::fs::write(&path, format!("{}\n", self.name()))
            .map_err(|e| FhirError::Storage(format!("cannot write {}: {e}", path.display())))
    }
}

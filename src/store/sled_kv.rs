//! [`Kv`] on sled 0.34: one tree; a batch is one `apply_batch`, made durable by a flush.

use std::path::Path;

use super::kv::{Batch, Engine, Kv, Scan};
use crate::error::Result;

/// sled behind [`Kv`].
pub struct SledKv {
    db: sled::Db,
}

impl SledKv {
    /// Open (or create) sled in `dir` with a page cache of `cache_bytes`.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<SledKv> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .mode(sled::Mode::HighThroughput)
            .flush_every_ms(None)
            .open()
            .map_err(|e| super::owner::open_error(dir, e))?;
        Ok(SledKv { db })
    }
}

impl Kv for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, lo: &[u8], hi: Option<&[u8]>, reverse: bool) -> Scan<'_> {
        let iter = match hi {
            Some(h) if h <= lo => return Box::new(std::iter::empty()),
            Some(h) => self.db.range(lo.to_vec()..h.to_vec()),
            None => self.db.range(lo.to_vec()..),
        };
        let pairs = |item: sled::Result<(sled::IVec, sled::IVec)>| {
            item.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(Into::into)
        };
        if reverse {
            Box::new(iter.rev().map(pairs))
        } else {
            Box::new(iter.map(pairs))
        }
    }

    fn apply(&self, batch: Batch, sync: bool) -> Result<()> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.db.apply_batch(b)?;
        if sync {
            self.db.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }

    fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }

    fn engine(&self) -> Engine {
        Engine::Sled
    }
}

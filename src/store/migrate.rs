//! Copy a store directory onto another engine: every key and value as they are (current
//! versions, every older version, both history orders, the search index and the sequence
//! number), so the copy serves exactly what the original did.

use std::path::Path;

use super::kv::{Batch, Engine, Kv};
use super::kv_store::open_engine;
use crate::error::{FhirError, Result};

/// Pairs per batch written to the new store (batches are not synced; the last one is).
const BATCH_PAIRS: usize = 20_000;

/// What a copy moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// The engine of the original.
    pub from: Engine,
    /// The engine of the copy.
    pub to: Engine,
    /// Key-value pairs copied.
    pub pairs: u64,
    /// Bytes of keys and values copied.
    pub bytes: u64,
}

/// Copy the store in `from` (a stopped server's, on the engine it records) into `to` (absent
/// or empty) on `engine`. `progress` is told the pairs copied so far every batch. The copy is
/// checked pair by pair against the original before it is reported done.
pub fn copy_store(
    from: &Path,
    to: &Path,
    engine: Engine,
    progress: &mut dyn FnMut(u64),
) -> Result<Copied> {
    if !Engine::holds_store(from) {
        return Err(FhirError::BadRequest(format!(
            "{} holds no store",
            from.display()
        )));
    }
    let from_engine = Engine::for_dir(from)?;
    std::fs::create_dir_all(to)
        .map_err(|e| FhirError::Storage(format!("cannot create {}: {e}", to.display())))?;
    let src = open_engine(from, from_engine, 64 * 1024 * 1024)?;
    engine.record(to)?;
    let dst = open_engine(to, engine, 64 * 1024 * 1024)?;
    let mut batch = Batch::default();
    let (mut pairs, mut bytes) = (0u64, 0u64);
    for item in src.scan(b"", None, false) {
        let (k, v) = item?;
        bytes += (k.len() + v.len()) as u64;
        batch.insert(k, v);
        pairs += 1;
        if batch.len() >= BATCH_PAIRS {
            dst.apply(std::mem::take(&mut batch), false)?;
            progress(pairs);
        }
    }
    dst.apply(batch, true)?;
    dst.flush()?;
    progress(pairs);
    verify(&*src, &*dst, pairs)?;
    Ok(Copied {
        from: from_engine,
        to: engine,
        pairs,
        bytes,
    })
}

/// Walk both stores side by side: the same pairs in the same order, and as many as copied.
fn verify(src: &dyn Kv, dst: &dyn Kv, copied: u64) -> Result<()> {
    let mut a = src.scan(b"", None, false);
    let mut b = dst.scan(b"", None, false);
    let mut n = 0u64;
    loop {
        match (a.next().transpose()?, b.next().transpose()?) {
            (None, None) => break,
            (Some(x), Some(y)) if x == y => n += 1,
            (x, y) => {
                let key = |p: &Option<(Vec<u8>, Vec<u8>)>| {
                    p.as_ref()
                        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
                };
                return Err(FhirError::Storage(format!(
                    "the copy differs from the original after {n} pairs (original key {:?}, copy key {:?})",
                    key(&x),
                    key(&y)
                )));
            }
        }
    }
    if n != copied {
        return Err(FhirError::Storage(format!(
            "copied {copied} pairs but the copy holds {n}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::kv_store::KvStore;
    use crate::store::{write, HistoryQuery, IndexEntry, IndexRead, Method, StagedWrite, Store};

    fn put(id: &str, version: u64, method: Method) -> StagedWrite {
        StagedWrite {
            rtype: "Patient".into(),
            id: id.into(),
            version,
            method,
            resource: (method != Method::Delete)
                .then(|| format!("{{\"id\":\"{id}\",\"v\":{version}}}").into_bytes()),
            index: if method == Method::Delete {
                Vec::new()
            } else {
                vec![IndexEntry {
                    param: "identifier".into(),
                    value: format!("{id}-{version}").into_bytes(),
                }]
            },
        }
    }

    #[tokio::test]
    async fn a_sled_store_copied_to_fjall_keeps_every_version_and_its_index() {
        // written on fjall, then laid onto sled pair by pair as a directory of an earlier
        // release holds it (sled no longer serves)
        let staging = tempfile::tempdir().expect("temp dir");
        let store = KvStore::open(staging.path()).expect("open");
        for w in [
            put("a", 1, Method::Create),
            put("a", 2, Method::Update),
            put("b", 1, Method::Create),
            put("b", 2, Method::Delete),
            put("a", 3, Method::Update),
        ] {
            write(&store, move |txn| txn.put(w)).await.expect("write");
        }
        store.shutdown().expect("close");
        drop(store);
        let old = tempfile::tempdir().expect("temp dir");
        {
            let written = open_engine(staging.path(), Engine::Fjall, 1 << 20).expect("fjall");
            let sled = open_engine(old.path(), Engine::Sled, 1 << 20).expect("sled");
            let mut batch = Batch::default();
            for pair in written.scan(b"", None, false) {
                let (k, v) = pair.expect("pair");
                batch.insert(k, v);
            }
            sled.apply(batch, true).expect("laid onto sled");
        }
        Engine::Sled.record(old.path()).expect("record");
        let refused = KvStore::open(old.path()).err().expect("sled is not served");
        assert!(
            refused.to_string().contains("vbc-server migrate --from"),
            "{refused}"
        );
        let new = tempfile::tempdir().expect("temp dir");
        let to = new.path().join("copy");
        let mut seen = Vec::new();
        let copied =
            copy_store(old.path(), &to, Engine::Fjall, &mut |n| seen.push(n)).expect("copies");
        assert_eq!((copied.from, copied.to), (Engine::Sled, Engine::Fjall));
        assert_eq!(seen.last(), Some(&copied.pairs));
        assert_eq!(Engine::for_dir(&to).expect("engine"), Engine::Fjall);
        let store = KvStore::open(&to).expect("open copy");
        let a = store.current("Patient", "a").expect("read").expect("a");
        assert_eq!(
            (a.version, a.resource.as_deref()),
            (3, Some(&b"{\"id\":\"a\",\"v\":3}"[..]))
        );
        assert!(store
            .current("Patient", "b")
            .expect("read")
            .expect("b")
            .deleted());
        let versions: Vec<u64> = store
            .instance_history(
                "Patient",
                "a",
                HistoryQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .expect("history")
            .iter()
            .map(|r| r.version)
            .collect();
        assert_eq!(versions, vec![3, 2, 1]);
        let all = store
            .history(
                None,
                HistoryQuery {
                    limit: 10,
                    ..Default::default()
                },
            )
            .expect("history");
        assert_eq!(all.len(), 5);
        let mut found = Vec::new();
        store
            .scan_index("Patient", "identifier", b"", None, &mut |v, n| {
                found.push((String::from_utf8_lossy(v).into_owned(), n));
                true
            })
            .expect("scan");
        let found: Vec<(String, String)> = found
            .into_iter()
            .map(|(v, n)| (v, store.id_of("Patient", n).expect("id").expect("numbered")))
            .collect();
        assert_eq!(found, vec![("a-3".to_string(), "a".to_string())]);
        // the sequence goes on where the original stopped
        write(&store, move |txn| txn.put(put("c", 1, Method::Create)))
            .await
            .expect("write");
        let c = store.current("Patient", "c").expect("read").expect("c");
        assert_eq!(c.seq, 6);
        store.shutdown().expect("close");
    }

    #[test]
    fn a_directory_without_a_store_is_refused() {
        let empty = tempfile::tempdir().expect("temp dir");
        let to = empty.path().join("copy");
        let e = copy_store(empty.path(), &to, Engine::Fjall, &mut |_| {}).expect_err("refused");
        assert!(e.to_string().contains("holds no store"), "{e}");
        assert!(!to.exists());
    }
}

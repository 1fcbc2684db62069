//! Posting lists: the resource numbers that carry one index value.
//!
//! A list is kept in chunks of 65,536 numbers (one roaring container's range), one key per chunk
//! (the key ends in the chunk; [`super::kv_store`] lays it out), so a write touches only the chunk
//! of its number and new resources, numbered upwards, touch the last one. A chunk with few
//! numbers is a plain list of their low 16 bits; a larger one is a serialized roaring bitmap
//! (roaring crate, run-optimized). Writes gather changes per key ([`Deltas`]) and apply them with
//! one read and one write per key.

use std::collections::HashMap;

use roaring::RoaringBitmap;

use super::kv::{Batch, Kv};
use crate::error::{FhirError, Result};

/// Most numbers a chunk keeps as a plain list (2 bytes each) before it becomes a bitmap.
const PLAIN_MAX: u64 = 32;
/// Tag of a plain list.
const PLAIN: u8 = 0;
/// Tag of a serialized roaring bitmap.
const ROARING: u8 = 1;

/// The chunk of a resource number.
pub fn chunk_of(n: u32) -> u16 {
    (n >> 16) as u16
}

/// Encode a chunk's numbers (all of them in one chunk).
pub fn encode(mut set: RoaringBitmap) -> Vec<u8> {
    if set.len() <= PLAIN_MAX {
        let mut out = Vec::with_capacity(1 + 2 * set.len() as usize);
        out.push(PLAIN);
        for n in &set {
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        return out;
    }
    set.optimize();
    let mut out = Vec::with_capacity(1 + set.serialized_size());
    out.push(ROARING);
    // writing into a Vec cannot fail
    let _ = set.serialize_into(&mut out);
    out
}

/// Decode the numbers of chunk `chunk`.
pub fn decode(chunk: u16, bytes: &[u8]) -> Result<RoaringBitmap> {
    let corrupt = || FhirError::Storage("corrupt posting list".into());
    match bytes.split_first() {
        Some((&PLAIN, rest)) if rest.len() % 2 == 0 => {
            let high = u32::from(chunk) << 16;
            RoaringBitmap::from_sorted_iter(
                rest.chunks_exact(2)
                    .map(|b| high | u32::from(u16::from_be_bytes([b[0], b[1]]))),
            )
            .map_err(|_| corrupt())
        }
        Some((&ROARING, rest)) => RoaringBitmap::deserialize_from(rest).map_err(|_| corrupt()),
        _ => Err(corrupt()),
    }
}

/// Decode the list stored at `key`, whose last two bytes are its chunk (as every posting-list
/// key ends).
pub fn decode_at(key: &[u8], bytes: &[u8]) -> Result<RoaringBitmap> {
    let chunk = match key.len().checked_sub(2) {
        Some(at) => u16::from_be_bytes([key[at], key[at + 1]]),
        None => return Err(FhirError::Storage("corrupt posting list key".into())),
    };
    decode(chunk, bytes)
}

/// Changes to posting lists gathered over many writes: per key, the numbers added and removed,
/// in order.
#[derive(Default)]
pub struct Deltas {
    ops: HashMap<Vec<u8>, Ops>,
}

/// Numbers added (true) or removed (false), in order.
type Ops = Vec<(u32, bool)>;

impl Deltas {
    /// Add number `n` to the list chunk at `key` (a key ending in `n`'s chunk).
    pub fn add(&mut self, key: Vec<u8>, n: u32) {
        self.ops.entry(key).or_default().push((n, true));
    }

    /// Remove number `n` from the list chunk at `key`.
    pub fn remove(&mut self, key: Vec<u8>, n: u32) {
        self.ops.entry(key).or_default().push((n, false));
    }

    /// Keys with changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Read each changed chunk once (in key order), apply its changes and stage the result
    /// (or the chunk's removal once empty) in `batch`.
    pub fn write(self, db: &dyn Kv, batch: &mut Batch) -> Result<()> {
        let mut keys: Vec<(Vec<u8>, Ops)> = self.ops.into_iter().collect();
        keys.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, ops) in keys {
            let mut set = match db.get(&key)? {
                Some(bytes) => decode_at(&key, &bytes)?,
                None => RoaringBitmap::new(),
            };
            let mut changed = false;
            for (n, add) in ops {
                changed |= if add { set.insert(n) } else { set.remove(n) };
            }
            if !changed {
                continue;
            }
            if set.is_empty() {
                batch.remove(key);
            } else {
                batch.insert(key, encode(set));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_round_trip_plain_and_as_bitmaps() {
        for (chunk, numbers) in [
            (0u16, vec![1u32, 7, 65_535]),
            (
                3,
                (0..PLAIN_MAX as u32)
                    .map(|i| (3 << 16) | (i * 97))
                    .collect(),
            ),
            (
                3,
                (0..=PLAIN_MAX as u32)
                    .map(|i| (3 << 16) | (i * 97))
                    .collect(),
            ),
            (9, (0..40_000).map(|i| (9 << 16) | i).collect()),
            (9, (0..20_000).map(|i| (9 << 16) | (i * 3)).collect()),
        ] {
            let set: RoaringBitmap = numbers.iter().copied().collect();
            let bytes = encode(set.clone());
            assert_eq!(bytes[0] == PLAIN, numbers.len() as u64 <= PLAIN_MAX);
            assert_eq!(decode(chunk, &bytes).expect("decodes"), set);
        }
        // a run of 40,000 numbers is stored as a run, not as 80 kB of values
        let run: RoaringBitmap = (0..40_000u32).collect();
        assert!(encode(run).len() < 64);
        assert!(decode(0, &[]).is_err());
        assert!(decode(0, &[PLAIN, 1]).is_err());
        assert!(decode(0, &[7, 1, 2]).is_err());
    }
}

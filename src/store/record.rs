//! The records the store keeps and their compact binary encoding.

use crate::error::{FhirError, Result};

/// The interaction that produced a version (shown in history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// POST (create).
    Create,
    /// PUT (update or update-as-create).
    Update,
    /// PATCH.
    Patch,
    /// DELETE (a tombstone).
    Delete,
}

impl Method {
    fn to_byte(self) -> u8 {
        match self {
            Method::Create => 1,
            Method::Update => 2,
            Method::Patch => 3,
            Method::Delete => 4,
        }
    }

    fn from_byte(b: u8) -> Result<Self> {
        Ok(match b {
            1 => Method::Create,
            2 => Method::Update,
            3 => Method::Patch,
            4 => Method::Delete,
            _ => return Err(FhirError::Storage(format!("corrupt record method {b}"))),
        })
    }

    /// HTTP verb used in history `request.method`.
    pub fn http_verb(self) -> &'static str {
        match self {
            Method::Create => "POST",
            Method::Update => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// One search-index entry of a resource (written in the same commit as the resource).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexEntry {
    /// Search parameter name.
    pub param: String,
    /// Encoded value (see `search::values`: order-preserving bytes).
    pub value: Vec<u8>,
}

/// A new version handed to the writer.
#[derive(Debug, Clone)]
pub struct StagedWrite {
    /// Resource type.
    pub rtype: String,
    /// Logical id.
    pub id: String,
    /// Version number (previous + 1).
    pub version: u64,
    /// Interaction that produced it.
    pub method: Method,
    /// Resource JSON with meta stamped (None for a delete).
    pub resource: Option<Vec<u8>>,
    /// Index entries of this version (empty for a delete).
    pub index: Vec<IndexEntry>,
}

/// A stored version as read back.
#[derive(Debug, Clone)]
pub struct VersionRecord {
    /// Resource type.
    pub rtype: String,
    /// Logical id.
    pub id: String,
    /// Version number, from 1.
    pub version: u64,
    /// Interaction that produced it.
    pub method: Method,
    /// When it was written (ms since epoch).
    pub last_updated_ms: i64,
    /// Global write sequence number.
    pub seq: u64,
    /// Resource JSON (None for a delete).
    pub resource: Option<Vec<u8>>,
}

impl VersionRecord {
    /// True for a tombstone.
    pub fn deleted(&self) -> bool {
        self.method == Method::Delete
    }
}

const RECORD_FORMAT: u8 = 1;
const HEADER_LEN: usize = 1 + 1 + 8 + 8 + 8;

/// Encode the value part of a version record: format, method, version, timestamp, seq, JSON.
pub fn encode(
    method: Method,
    version: u64,
    last_updated_ms: i64,
    seq: u64,
    json: Option<&[u8]>,
) -> Vec<u8> {
    let body = json.unwrap_or(&[]);
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.push(RECORD_FORMAT);
    out.push(method.to_byte());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&last_updated_ms.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Decode a record written by [`encode`].
pub fn decode(rtype: &str, id: &str, bytes: &[u8]) -> Result<VersionRecord> {
    if bytes.len() < HEADER_LEN || bytes[0] != RECORD_FORMAT {
        return Err(FhirError::Storage("corrupt version record".into()));
    }
    let method = Method::from_byte(bytes[1])?;
    let u64_at = |i: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i..i + 8]);
        b
    };
    let version = u64::from_be_bytes(u64_at(2));
    let last_updated_ms = i64::from_be_bytes(u64_at(10));
    let seq = u64::from_be_bytes(u64_at(18));
    let resource = if method == Method::Delete {
        None
    } else {
        Some(bytes[HEADER_LEN..].to_vec())
    };
    Ok(VersionRecord {
        rtype: rtype.to_string(),
        id: id.to_string(),
        version,
        method,
        last_updated_ms,
        seq,
        resource,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let bytes = encode(Method::Update, 7, 1_700_000_000_123, 42, Some(b"{\"a\":1}"));
        let r = decode("Patient", "p1", &bytes).expect("decodes");
        assert_eq!(
            (r.version, r.last_updated_ms, r.seq),
            (7, 1_700_000_000_123, 42)
        );
        assert_eq!(r.method, Method::Update);
        assert_eq!(r.resource.as_deref(), Some(&b"{\"a\":1}"[..]));
        let del =
            decode("Patient", "p1", &encode(Method::Delete, 8, 1, 43, None)).expect("decodes");
        assert!(del.deleted() && del.resource.is_none());
        assert!(decode("Patient", "p1", b"xx").is_err());
    }
}

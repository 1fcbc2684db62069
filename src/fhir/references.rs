//! Reference strings: classifying them, and visiting every `Reference.reference` in a resource.

use serde_json::Value;

use crate::error::{FhirError, Result};
use crate::fhir::resource_types::is_resource_type;

/// What a `Reference.reference` string points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefKind<'a> {
    /// `Type/id` or `Type/id/_history/vid` (relative, on this server).
    Relative {
        /// Resource type.
        rtype: &'a str,
        /// Logical id.
        id: &'a str,
    },
    /// `#id` inside the same resource.
    Contained,
    /// `urn:uuid:...` or `urn:oid:...` (only meaningful inside a Bundle).
    Urn,
    /// `Type?search` (only meaningful inside a transaction).
    Conditional {
        /// Resource type.
        rtype: &'a str,
        /// The query string.
        query: &'a str,
    },
    /// An absolute URL.
    Absolute,
    /// Anything else.
    Invalid(&'static str),
}

/// True if `id` is a valid FHIR logical id.
/// Ids made only of dots (`.`, `..`) are refused: URL dot-segment rules would rewrite them.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && !id.bytes().all(|b| b == b'.')
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn valid_urn(s: &str) -> bool {
    if let Some(u) = s.strip_prefix("urn:uuid:") {
        return uuid::Uuid::parse_str(u).is_ok() && u.len() == 36;
    }
    if let Some(o) = s.strip_prefix("urn:oid:") {
        return !o.is_empty()
            && o.split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            && matches!(o.as_bytes()[0], b'0'..=b'2');
    }
    false
}

/// Classify a reference string.
pub fn classify(reference: &str) -> RefKind<'_> {
    if reference.starts_with('#') {
        return RefKind::Contained;
    }
    if reference.starts_with("urn:") {
        return if valid_urn(reference) {
            RefKind::Urn
        } else {
            RefKind::Invalid("malformed urn:uuid or urn:oid reference")
        };
    }
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return RefKind::Absolute;
    }
    if let Some((rtype, query)) = reference.split_once('?') {
        return if is_resource_type(rtype) && !query.is_empty() {
            RefKind::Conditional { rtype, query }
        } else {
            RefKind::Invalid("conditional reference must be Type?parameters with a known type")
        };
    }
    let parts: Vec<&str> = reference.split('/').collect();
    match parts.as_slice() {
        [rtype, id] | [rtype, id, "_history", _] if is_resource_type(rtype) && valid_id(id) => {
            RefKind::Relative { rtype, id }
        }
        [rtype, ..] if !is_resource_type(rtype) => {
            RefKind::Invalid("unknown resource type in reference")
        }
        _ => RefKind::Invalid("reference must be Type/id, an absolute URL, #contained or urn:uuid"),
    }
}

/// Call `f` with every `reference` string inside `value` (Reference elements at any depth,
/// including contained resources), letting it rewrite them in place.
pub fn for_each_reference_mut(value: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if k == "reference" {
                    if let Value::String(s) = v {
                        f(s);
                        continue;
                    }
                }
                for_each_reference_mut(v, f);
            }
        }
        Value::Array(items) => {
            for v in items {
                for_each_reference_mut(v, f);
            }
        }
        _ => {}
    }
}

/// Check an id from a URL.
pub fn check_id(id: &str) -> Result<()> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::BadRequest(format!(
            "'{id}' is not a valid id (1-64 characters of A-Z, a-z, 0-9, '-' and '.')"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_reference_forms() {
        assert_eq!(
            classify("Patient/p1"),
            RefKind::Relative {
                rtype: "Patient",
                id: "p1"
            }
        );
        assert_eq!(
            classify("Patient/p1/_history/2"),
            RefKind::Relative {
                rtype: "Patient",
                id: "p1"
            }
        );
        assert_eq!(classify("#c1"), RefKind::Contained);
        assert_eq!(
            classify("urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"),
            RefKind::Urn
        );
        assert_eq!(classify("urn:oid:1.2.3"), RefKind::Urn);
        assert!(matches!(classify("urn:uuid:nope"), RefKind::Invalid(_)));
        assert_eq!(
            classify("Patient?identifier=a|b"),
            RefKind::Conditional {
                rtype: "Patient",
                query: "identifier=a|b"
            }
        );
        assert_eq!(classify("https://x.org/fhir/Patient/1"), RefKind::Absolute);
        assert!(matches!(classify("Patient/"), RefKind::Invalid(_)));
        assert!(matches!(classify("Bogus/1"), RefKind::Invalid(_)));
        assert!(matches!(classify("Patient/a b"), RefKind::Invalid(_)));
    }

    #[test]
    fn rewrites_nested_references() {
        let mut v = json!({"subject": {"reference": "a"}, "x": [{"y": {"reference": "b"}}], "reference": 3});
        let mut seen = vec![];
        for_each_reference_mut(&mut v, &mut |s| {
            seen.push(s.clone());
            s.push('!');
        });
        assert_eq!(seen, vec!["a", "b"]);
        assert_eq!(v["x"][0]["y"]["reference"], "b!");
    }
}

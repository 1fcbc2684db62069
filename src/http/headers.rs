//! Request and response headers: ETag, Last-Modified, If-Match, If-None-Match,
//! If-Modified-Since, If-None-Exist and Prefer.

use axum::http::{header, HeaderMap, HeaderValue};

use crate::error::{FhirError, Result};
use crate::interaction::bundle::parse_etag;

/// `Prefer: return=...`
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    /// Empty body.
    Minimal,
    /// The resource (default).
    Representation,
    /// An OperationOutcome.
    OperationOutcome,
}

fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The `Prefer` return preference.
pub fn prefer_return(headers: &HeaderMap) -> Return {
    let prefer = get(headers, "prefer").unwrap_or("");
    for part in prefer.split([',', ';']) {
        match part.trim().replace(' ', "").as_str() {
            "return=minimal" => return Return::Minimal,
            "return=OperationOutcome" => return Return::OperationOutcome,
            "return=representation" => return Return::Representation,
            _ => {}
        }
    }
    Return::Representation
}

/// `If-Match` as a version number (400 when unparseable).
pub fn if_match(headers: &HeaderMap) -> Result<Option<u64>> {
    match get(headers, "if-match") {
        None => Ok(None),
        Some(v) => parse_etag(v).map(Some).ok_or_else(|| {
            FhirError::BadRequest(format!("If-Match '{v}' is not a version ETag like W/\"1\""))
        }),
    }
}

/// `If-None-Match` as a version number.
pub fn if_none_match(headers: &HeaderMap) -> Option<u64> {
    get(headers, "if-none-match").and_then(parse_etag)
}

/// `If-Modified-Since` as ms since the epoch.
pub fn if_modified_since(headers: &HeaderMap) -> Option<i64> {
    let v = get(headers, "if-modified-since")?;
    let t = httpdate::parse_http_date(v).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(d.as_millis() as i64)
}

/// `If-None-Exist` query (leading `?` and `Type?` tolerated).
pub fn if_none_exist(headers: &HeaderMap) -> Option<String> {
    get(headers, "if-none-exist").map(|v| match v.split_once('?') {
        Some((_, q)) => q.to_string(),
        None => v.to_string(),
    })
}

/// Set ETag and Last-Modified for a version.
pub fn set_version_headers(headers: &mut HeaderMap, version: u64, last_updated_ms: i64) {
    if let Ok(v) = HeaderValue::from_str(&format!("W/\"{version}\"")) {
        headers.insert(header::ETAG, v);
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(last_updated_ms.max(0) as u64);
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(t)) {
        headers.insert(header::LAST_MODIFIED, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_and_etags() {
        let mut h = HeaderMap::new();
        assert_eq!(prefer_return(&h), Return::Representation);
        h.insert("prefer", HeaderValue::from_static("return=minimal"));
        assert_eq!(prefer_return(&h), Return::Minimal);
        h.insert(
            "prefer",
            HeaderValue::from_static("handling=strict, return=OperationOutcome"),
        );
        assert_eq!(prefer_return(&h), Return::OperationOutcome);
        h.insert("if-match", HeaderValue::from_static("W/\"12\""));
        assert_eq!(if_match(&h).ok().flatten(), Some(12));
        h.insert("if-match", HeaderValue::from_static("nope"));
        assert!(if_match(&h).is_err());
        h.insert(
            "if-none-exist",
            HeaderValue::from_static("Patient?identifier=a|b"),
        );
        assert_eq!(if_none_exist(&h).as_deref(), Some("identifier=a|b"));
    }
}

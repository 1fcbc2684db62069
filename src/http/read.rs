//! `GET [type]/[id]` (read, with If-None-Match / If-Modified-Since) and
//! `GET [type]/[id]/_history/[vid]` (vread).

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::guard::Caller;
use super::headers::{if_modified_since, if_none_match, set_version_headers};
use super::{check_type, response};
use crate::error::Result;
use crate::store::VersionRecord;

fn found(record: VersionRecord) -> Response {
    let mut resp = response::bytes(StatusCode::OK, record.resource.unwrap_or_default());
    set_version_headers(resp.headers_mut(), record.version, record.last_updated_ms);
    resp
}

/// read
pub async fn read(
    Caller(s): Caller,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    check_type(&rtype)?;
    let f = s.services.read(&rtype, &id)?;
    let not_modified = if_none_match(&headers).is_some_and(|v| v == f.record.version)
        || if_modified_since(&headers)
            .is_some_and(|since| f.record.last_updated_ms / 1000 <= since / 1000);
    if not_modified {
        let mut resp = Response::new(axum::body::Body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        set_version_headers(
            resp.headers_mut(),
            f.record.version,
            f.record.last_updated_ms,
        );
        return Ok(resp);
    }
    Ok(found(f.record))
}

/// vread
pub async fn vread(
    Caller(s): Caller,
    Path((rtype, id, vid)): Path<(String, String, String)>,
) -> Result<Response> {
    check_type(&rtype)?;
    Ok(found(s.services.vread(&rtype, &id, &vid)?.record))
}

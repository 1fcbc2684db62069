//! `PATCH [type]/[id]` with `application/json-patch+json`.

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;

use super::guard::Caller;
use super::headers::{if_match, prefer_return};
use super::negotiate::FhirBody;
use super::{check_type, response};
use crate::error::{FhirError, Result};

/// patch
pub async fn patch(
    Caller(s): Caller,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: FhirBody,
) -> Result<Response> {
    check_type(&rtype)?;
    if !body.json_patch {
        return Err(FhirError::UnsupportedMediaType(
            "PATCH takes application/json-patch+json (FHIRPath Patch is not supported)".into(),
        ));
    }
    let w = s
        .services
        .patch(&rtype, &id, body.json()?, if_match(&headers)?)
        .await?;
    Ok(response::written(
        &s.base(&headers),
        &w,
        prefer_return(&headers),
        &[],
    ))
}

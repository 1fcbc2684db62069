//! `DELETE [type]/[id]` and conditional `DELETE [type]?criteria`.

use axum::extract::{Path, RawQuery};
use axum::http::HeaderMap;
use axum::response::Response;

use super::guard::Caller;
use super::headers::{if_match, Return};
use super::{check_type, response};
use crate::error::{FhirError, Result};

/// delete
pub async fn delete(
    Caller(s): Caller,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response> {
    check_type(&rtype)?;
    let w = s.services.delete(&rtype, &id, if_match(&headers)?).await?;
    Ok(response::written(
        &s.base(&headers),
        &w,
        Return::Minimal,
        &[],
    ))
}

/// conditional delete
pub async fn conditional_delete(
    Caller(s): Caller,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    check_type(&rtype)?;
    let query = query.filter(|q| !q.is_empty()).ok_or_else(|| {
        FhirError::BadRequest("DELETE on a type needs search criteria (conditional delete)".into())
    })?;
    let w = s.services.conditional_delete(&rtype, &query).await?;
    Ok(response::written(
        &s.base(&headers),
        &w,
        Return::Minimal,
        &[],
    ))
}

//! `PUT [type]/[id]` (update, update-as-create, If-Match) and `PUT [type]?criteria`.

use axum::extract::{Path, RawQuery};
use axum::http::HeaderMap;
use axum::response::Response;

use super::guard::Caller;
use super::headers::{if_match, prefer_return};
use super::negotiate::FhirBody;
use super::{check_type, response};
use crate::error::{FhirError, Result};

/// update
pub async fn update(
    Caller(s): Caller,
    Path((rtype, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: FhirBody,
) -> Result<Response> {
    check_type(&rtype)?;
    let resource = body.resource()?;
    let w = s
        .services
        .update(&rtype, &id, resource, if_match(&headers)?)
        .await?;
    Ok(response::written(
        &s.base(&headers),
        &w,
        prefer_return(&headers),
        &[],
    ))
}

/// conditional update
pub async fn conditional_update(
    Caller(s): Caller,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: FhirBody,
) -> Result<Response> {
    check_type(&rtype)?;
    let query = query.filter(|q| !q.is_empty()).ok_or_else(|| {
        FhirError::BadRequest("PUT on a type needs search criteria (conditional update)".into())
    })?;
    let resource = body.resource()?;
    let w = s
        .services
        .conditional_update(&rtype, &query, resource)
        .await?;
    Ok(response::written(
        &s.base(&headers),
        &w,
        prefer_return(&headers),
        &[],
    ))
}

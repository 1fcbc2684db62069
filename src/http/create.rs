//! `POST [type]`: create, and conditional create with `If-None-Exist`.

use axum::extract::Path;
use axum::http::HeaderMap;
use axum::response::Response;

use super::guard::Caller;
use super::headers::{if_none_exist, prefer_return};
use super::negotiate::FhirBody;
use super::{check_type, response};
use crate::error::Result;

/// create
pub async fn create(
    Caller(s): Caller,
    Path(rtype): Path<String>,
    headers: HeaderMap,
    body: FhirBody,
) -> Result<Response> {
    check_type(&rtype)?;
    let resource = body.resource()?;
    let w = s
        .services
        .create(&rtype, resource, if_none_exist(&headers).as_deref())
        .await?;
    Ok(response::written(
        &s.base(&headers),
        &w,
        prefer_return(&headers),
        &[],
    ))
}

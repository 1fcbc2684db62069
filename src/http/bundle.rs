//! `POST /` with a transaction or batch Bundle.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::guard::Caller;
use super::headers::{prefer_return, Return};
use super::negotiate::FhirBody;
use super::response;
use crate::error::Result;

/// transaction / batch
pub async fn process(Caller(s): Caller, headers: HeaderMap, body: FhirBody) -> Result<Response> {
    let bundle = body.resource()?;
    let with_resources =
        prefer_return(&headers) == Return::Representation && headers.contains_key("prefer");
    let out = s
        .services
        .bundle(bundle, &s.base(&headers), with_resources)
        .await?;
    Ok(response::json(StatusCode::OK, &out))
}

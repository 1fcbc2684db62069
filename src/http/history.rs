//! `GET /_history`, `GET [type]/_history`, `GET [type]/[id]/_history`.

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::guard::Caller;
use super::{check_type, response, AppState};
use crate::error::Result;
use crate::interaction::history::{HistoryParams, Scope};

fn page(
    s: &AppState,
    scope: Scope<'_>,
    query: Option<String>,
    headers: &HeaderMap,
    path: &str,
) -> Result<Response> {
    let params = HistoryParams::parse(query.as_deref().unwrap_or(""))?;
    let bundle = s.services.history(scope, &params, &s.base(headers), path)?;
    Ok(response::json(StatusCode::OK, &bundle))
}

/// system history
pub async fn system(
    Caller(s): Caller,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    page(&s, Scope::System, q, &headers, "_history")
}

/// type history
pub async fn type_level(
    Caller(s): Caller,
    Path(rtype): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    check_type(&rtype)?;
    page(
        &s,
        Scope::Type(&rtype),
        q,
        &headers,
        &format!("{rtype}/_history"),
    )
}

/// instance history
pub async fn instance(
    Caller(s): Caller,
    Path((rtype, id)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    check_type(&rtype)?;
    page(
        &s,
        Scope::Instance(&rtype, &id),
        q,
        &headers,
        &format!("{rtype}/{id}/_history"),
    )
}

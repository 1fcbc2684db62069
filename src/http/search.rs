//! `GET [type]?...` and `POST [type]/_search` (form body): identical results.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::{check_type, response, AppState};
use crate::error::{FhirError, Result};

/// search on a type
pub async fn search_type(
    State(s): State<AppState>,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    check_type(&rtype)?;
    let bundle = s
        .services
        .search(&rtype, query.as_deref().unwrap_or(""), &s.base(&headers))?;
    Ok(response::json(StatusCode::OK, &bundle))
}

/// `POST [type]/_search` with `application/x-www-form-urlencoded` parameters (URL query too).
pub async fn search_post(
    State(s): State<AppState>,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response> {
    check_type(&rtype)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() && !ctype.starts_with("application/x-www-form-urlencoded") {
        return Err(FhirError::UnsupportedMediaType(format!(
            "_search takes application/x-www-form-urlencoded, not '{ctype}'"
        )));
    }
    let form = std::str::from_utf8(&body)
        .map_err(|_| FhirError::BadRequest("form body is not UTF-8".into()))?;
    let combined = [query.unwrap_or_default(), form.to_string()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("&");
    let bundle = s.services.search(&rtype, &combined, &s.base(&headers))?;
    Ok(response::json(StatusCode::OK, &bundle))
}

//! Search over HTTP: `GET [type]?...` and `POST [type]/_search` (form body; identical results),
//! system search `GET [base]?_type=...`, compartment search `GET Patient/[id]/[type]?...` and
//! `GET Patient/[id]/$everything`. Searches run on the blocking pool.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::guard::Caller;
use super::{check_type, response};
use crate::error::{FhirError, Result};
use crate::interaction::search::SearchScope;
use crate::interaction::Services;

pub(crate) fn pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect()
}

/// `Prefer: handling=strict`.
fn strict(headers: &HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=strict"))
}

/// Run a search on the blocking pool and answer with its Bundle.
pub(crate) async fn blocking<F>(f: F) -> Result<Response>
where
    F: FnOnce() -> Result<serde_json::Value> + Send + 'static,
{
    let bundle = tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FhirError::Storage(format!("search task failed: {e}")))??;
    Ok(response::json(StatusCode::OK, &bundle))
}

async fn run(
    services: Services,
    scope: SearchScope,
    pairs: Vec<(String, String)>,
    base: String,
) -> Result<Response> {
    // the audit trail is searched in place, not through the resource index
    if scope.types == ["AuditEvent"] && scope.compartment.is_none() {
        return blocking(move || services.search_audit(&pairs, &base, scope.strict)).await;
    }
    blocking(move || services.search_pairs(&scope, &pairs, &base)).await
}

fn type_scope(rtype: &str, headers: &HeaderMap) -> SearchScope {
    SearchScope {
        types: vec![rtype.to_string()],
        compartment: None,
        path: rtype.to_string(),
        strict: strict(headers),
    }
}

/// `GET [type]?...`
pub async fn search_type(
    Caller(s): Caller,
    Path(rtype): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    check_type(&rtype)?;
    let scope = type_scope(&rtype, &headers);
    run(
        s.services.clone(),
        scope,
        pairs(query.as_deref().unwrap_or("")),
        s.base(&headers),
    )
    .await
}

/// `POST [type]/_search` with `application/x-www-form-urlencoded` parameters (URL query too).
pub async fn search_post(
    Caller(s): Caller,
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
    let mut all = pairs(query.as_deref().unwrap_or(""));
    all.extend(pairs(form));
    let scope = type_scope(&rtype, &headers);
    run(s.services.clone(), scope, all, s.base(&headers)).await
}

/// `GET [base]?_type=A,B&...`: system-level search over the common parameters.
pub async fn search_system(
    Caller(s): Caller,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let all = pairs(query.as_deref().unwrap_or(""));
    let types: Vec<String> = match all.iter().find(|(k, _)| k == "_type") {
        Some((_, v)) => {
            let mut t = Vec::new();
            for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                check_type(name).map_err(|_| {
                    FhirError::BadRequest(format!("_type: '{name}' is not a resource type"))
                })?;
                t.push(name.to_string());
            }
            t
        }
        None => crate::fhir::resource_types::RESOURCE_TYPES
            .iter()
            .map(|t| t.to_string())
            .collect(),
    };
    let scope = SearchScope {
        types,
        compartment: None,
        path: String::new(),
        strict: strict(&headers),
    };
    run(s.services.clone(), scope, all, s.base(&headers)).await
}

/// `GET Patient/[id]/[type]?...` and `GET Patient/[id]/$everything`.
pub async fn compartment(
    Caller(s): Caller,
    Path((ctype, id, rtype)): Path<(String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    if ctype != "Patient" {
        return Err(FhirError::NotFound(format!(
            "only the Patient compartment is supported, not '{ctype}'"
        )));
    }
    crate::fhir::references::check_id(&id)?;
    let all = pairs(query.as_deref().unwrap_or(""));
    let base = s.base(&headers);
    if rtype == "$everything" {
        let services = s.services.clone();
        return blocking(move || services.everything(&id, &all, &base)).await;
    }
    let types = if rtype == "*" {
        let engine = crate::search::engine()?;
        engine
            .registry
            .compartment_types()
            .into_iter()
            .map(str::to_string)
            .collect()
    } else {
        check_type(&rtype)?;
        vec![rtype.clone()]
    };
    let scope = SearchScope {
        types,
        compartment: Some(id.clone()),
        path: format!("Patient/{id}/{rtype}"),
        strict: strict(&headers),
    };
    run(s.services.clone(), scope, all, base).await
}

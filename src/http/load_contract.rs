//! `POST [base]/$load-contract`: compile a contract definition (the TOML authoring form in the
//! body), validate it completely and store it. 201 with the contract Measure when the version is
//! new, 200 when the same content was already loaded, 400 with an OperationOutcome naming every
//! mistake, 409 when the version is loaded with different content.

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;

use super::guard::Caller;
use super::response;
use crate::error::{FhirError, Result};
use crate::interaction::load_contract::{self, Loaded};

/// Load a contract definition.
pub async fn load(Caller(s): Caller, headers: HeaderMap, body: Bytes) -> Result<Response> {
    s.services
        .access
        .operation(crate::auth::access::Op::LoadContract, None)?;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/toml");
    let mime = ct.split(';').next().unwrap_or("").trim();
    if !matches!(
        mime,
        "application/toml" | "text/toml" | "text/x-toml" | "text/plain" | ""
    ) {
        return Err(FhirError::UnsupportedMediaType(format!(
            "{mime}: send the contract definition as application/toml"
        )));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| FhirError::BadRequest("the contract definition is not UTF-8 text".into()))?;
    let base = s.base(&headers);
    let (loaded, compiled) = load_contract::load(&s.services, text, &base).await?;
    let ids = crate::contracts::fhir::Ids::of(&compiled.rules);
    let measure = compiled
        .resources
        .iter()
        .find(|r| r["resourceType"] == "Measure" && r["id"] == ids.contract())
        .cloned()
        .unwrap_or_default();
    let status = match loaded {
        Loaded::Created => StatusCode::CREATED,
        Loaded::Unchanged => StatusCode::OK,
    };
    let mut resp = response::json(status, &measure);
    if let Ok(v) = HeaderValue::from_str(&format!("{base}/Measure/{}", ids.contract())) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

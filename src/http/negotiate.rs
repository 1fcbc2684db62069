//! Content negotiation: the request body extractor (Content-Type, size limit) and the response
//! middleware that renders every FHIR body in the format the client asked for (`_format`,
//! `Accept`, `_pretty`). Handlers always produce compact JSON.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::Value;

use super::AppState;
use crate::error::FhirError;
use crate::fhir::format::{parse_resource, serialize, Format};
use crate::search::query_param;

/// The requested response format and whether to pretty-print.
#[derive(Debug, Clone, Copy)]
pub struct Wanted {
    /// JSON or XML.
    pub format: Format,
    /// `_pretty=true`.
    pub pretty: bool,
}

/// Work out what the client wants; an unusable `_format` is a 406.
pub fn wanted(query: &str, headers: &HeaderMap) -> Result<Wanted, FhirError> {
    let pretty = query_param(query, "_pretty").is_some_and(|v| v == "true");
    let format = match query_param(query, "_format") {
        Some(f) => Format::from_mime(&f).ok_or_else(|| {
            FhirError::NotAcceptable(format!("_format '{f}' is not supported (json or xml)"))
        })?,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map(Format::from_accept)
            .unwrap_or(Format::Json),
    };
    Ok(Wanted { format, pretty })
}

/// Middleware: convert JSON FHIR bodies into the wanted format.
pub async fn render(req: Request, next: Next) -> Response {
    let want = match wanted(req.uri().query().unwrap_or(""), req.headers()) {
        Ok(w) => w,
        Err(e) => return e.into_response(),
    };
    let resp = ensure_outcome(next.run(req).await).await;
    let is_fhir_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/fhir+json"));
    if !is_fhir_json || (want.format == Format::Json && !want.pretty) {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return FhirError::Storage("could not buffer the response".into()).into_response();
    };
    if bytes.is_empty() {
        return Response::from_parts(parts, Body::empty());
    }
    let converted = crate::fhir::number_text::parse(&bytes)
        .map_err(|e| FhirError::Storage(e.to_string()))
        .and_then(|v| serialize(&v, want.format, want.pretty));
    match converted {
        Ok(out) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(want.format.content_type()),
            );
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(out))
        }
        Err(e) => e.into_response(),
    }
}

/// Most bytes read and discarded from an oversized body so that the client gets to read the 413.
const DRAIN_CAP: usize = 256 * 1024 * 1024;

/// Read and discard the rest of a body (up to [`DRAIN_CAP`]).
pub async fn drain(mut body: Body) {
    let mut seen = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen > DRAIN_CAP {
                break;
            }
        }
    }
}

/// Error responses produced outside the handlers (extractor rejections, timeouts) become
/// OperationOutcomes too.
async fn ensure_outcome(resp: Response) -> Response {
    let status = resp.status();
    let is_fhir = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        // OAuth errors of the token endpoint are plain JSON by design
        .is_some_and(|v| v.starts_with("application/fhir+") || v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_fhir {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        message
    };
    let issue = crate::fhir::outcome::Issue::error(
        if status.is_server_error() {
            "exception"
        } else {
            "invalid"
        },
        message,
    );
    let mut out =
        crate::http::response::json(status, &crate::fhir::outcome::operation_outcome(&[issue]));
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            out.headers_mut().insert(k.clone(), v.clone());
        }
    }
    out
}

/// A request body: its bytes and the format its Content-Type names.
pub struct FhirBody {
    /// Raw bytes.
    pub bytes: Bytes,
    /// Declared (or sniffed) format.
    pub format: Format,
    /// True for `application/json-patch+json`.
    pub json_patch: bool,
}

impl FhirBody {
    /// Parse the body as a resource.
    pub fn resource(&self) -> Result<Value, FhirError> {
        parse_resource(&self.bytes, self.format)
    }

    /// Parse the body as plain JSON (JSON Patch documents).
    pub fn json(&self) -> Result<Value, FhirError> {
        serde_json::from_slice(&self.bytes)
            .map_err(|e| FhirError::BadRequest(format!("malformed JSON: {e}")))
    }
}

impl FromRequest<AppState> for FhirBody {
    type Rejection = FhirError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.services.limits.max_body_bytes;
        let ctype = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let declared_len = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared_len.is_some_and(|n| n > limit) {
            drain(req.into_body()).await;
            return Err(FhirError::PayloadTooLarge(limit));
        }
        let mut json_patch = false;
        let format = match ctype.as_deref() {
            Some(ct) if ct.trim_start().starts_with("application/json-patch+json") => {
                json_patch = true;
                Format::Json
            }
            Some(ct) => Format::from_mime(ct)
                .ok_or_else(|| FhirError::UnsupportedMediaType(ct.to_string()))?,
            None => Format::Json,
        };
        let bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|e| {
                let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
                while let Some(s) = src {
                    if s.is::<http_body_util::LengthLimitError>() {
                        return FhirError::PayloadTooLarge(limit);
                    }
                    src = s.source();
                }
                FhirError::BadRequest(format!("could not read the request body: {e}"))
            })?;
        let format =
            if ctype.is_none() && bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<') {
                Format::Xml
            } else {
                format
            };
        Ok(FhirBody {
            bytes,
            format,
            json_patch,
        })
    }
}

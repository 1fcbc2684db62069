//! The access log and the request metrics: one `info` line per request with the method, the
//! matched route template (never the raw path, which holds ids), the status, the latency, the
//! caller's party and client, and the request id; and the request counter and latency histogram
//! by route and status.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::auth::access::Access;

/// The route label of requests no route matched (their paths are not labels: unbounded).
const UNMATCHED: &str = "(unmatched)";

/// The caller's (party, client) as the request path saw them.
fn caller(resp: &Response) -> (String, String) {
    match resp.extensions().get::<Access>() {
        Some(Access::Client(p)) => (p.party.clone(), p.client_id.clone()),
        Some(Access::System) => ("system".into(), "-".into()),
        _ => ("-".into(), "-".into()),
    }
}

/// The middleware (the outermost layer, so that latency and status are the client's).
pub async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| UNMATCHED.to_string());
    let asked_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let resp = next.run(req).await;
    let elapsed = started.elapsed();
    let status = resp.status().as_u16();
    // the id is set inside this layer and propagated to the response
    let request_id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or(asked_id)
        .unwrap_or_else(|| "-".into());
    let (party, client) = caller(&resp);
    tracing::info!(
        %method,
        %route,
        status,
        latency_ms = format_args!("{:.3}", elapsed.as_secs_f64() * 1000.0),
        %party,
        %client,
        %request_id,
        "request"
    );
    metrics::counter!(
        "vbc_http_requests_total",
        "method" => method.clone(),
        "route" => route.clone(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "vbc_http_request_duration_seconds",
        "method" => method,
        "route" => route
    )
    .record(elapsed.as_secs_f64());
    resp
}

//! `GET /metrics`: the server's metrics in the Prometheus text exposition format.
//!
//! Instruments record through the `metrics` facade wherever the thing measured happens (the
//! store's commit path, the audit queue, the request path); `metrics-exporter-prometheus` keeps
//! them and renders the exposition. Gauges of state (store size, contracts loaded) are sampled
//! at each scrape. Open to loopback peers without a token (a local scraper or sidecar);
//! otherwise an administrator's token is required.

use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;
use crate::auth::access::Access;
use crate::auth::clients::Role;
use crate::error::{FhirError, Result};

/// The path of the scrape endpoint.
pub const METRICS_PATH: &str = "/metrics";

/// Upper bounds of the latency histograms' buckets, in seconds.
const SECONDS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the commit group size histogram's buckets (jobs per group).
const GROUP_SIZES: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0,
];
/// How often recorded histogram samples are folded in when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the process-wide recorder (once; later calls do nothing) and its upkeep task. Must
/// run inside the Tokio runtime.
pub fn install() -> Result<()> {
    if HANDLE.get().is_some() {
        return Ok(());
    }
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("vbc_store_commit_group_size".into()),
                GROUP_SIZES,
            )
        })
        .and_then(|b| b.install_recorder())
        .map_err(|e| FhirError::Storage(format!("cannot install the metrics recorder: {e}")))?;
    describe();
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let _ = HANDLE.set(handle);
    Ok(())
}

/// The HELP text of every metric (the README's Metrics section lists the same).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "vbc_http_requests_total",
        "HTTP requests answered, by method, route template and status"
    );
    describe_histogram!(
        "vbc_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by method and route template"
    );
    describe_counter!(
        "vbc_store_resources_written_total",
        "Resource versions (creates, updates, deletes) durably written, by store"
    );
    describe_histogram!(
        "vbc_store_commit_group_size",
        "Write jobs folded into one durable commit group, by store"
    );
    describe_histogram!(
        "vbc_store_fsync_seconds",
        Unit::Seconds,
        "Time to flush a commit group to disk, by store"
    );
    describe_histogram!(
        "vbc_engine_update_lag_seconds",
        Unit::Seconds,
        "Time from a durable commit to the outcome engine having applied it"
    );
    describe_gauge!(
        "vbc_store_size_bytes",
        Unit::Bytes,
        "Bytes the store takes on disk, by store (sampled at scrape)"
    );
    describe_gauge!(
        "vbc_contracts_loaded",
        "Contracts the outcome engine has loaded (sampled at scrape)"
    );
    describe_gauge!(
        "vbc_audit_queue_depth",
        "Audit events queued and not yet taken by the audit writer"
    );
}

/// True if the peer address is a loopback one (IPv4-mapped IPv6 included).
fn loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Whether a request from `peer` may scrape without a token.
pub fn open_to(peer: Option<SocketAddr>) -> bool {
    peer.is_some_and(|p| loopback(p.ip()))
}

fn may_scrape(peer: Option<SocketAddr>, access: Option<&Access>) -> Result<()> {
    if open_to(peer) {
        return Ok(());
    }
    match access {
        Some(Access::System) => Ok(()),
        Some(Access::Client(p)) if p.role == Role::Admin => Ok(()),
        Some(Access::Client(_)) => Err(FhirError::Forbidden(
            "the metrics are for administrators (or scrapers on a loopback address)".into(),
        )),
        _ => Err(FhirError::Unauthorized(
            "the metrics need an administrator's bearer token off a loopback address".into(),
        )),
    }
}

/// Set the gauges that are sampled rather than recorded as things happen.
fn sample(s: &AppState) {
    if let Ok(bytes) = s.services.store.size_on_disk() {
        metrics::gauge!("vbc_store_size_bytes", "store" => "main").set(bytes as f64);
    }
    if let Some(audit) = &s.audit_store {
        if let Ok(bytes) = audit.size_on_disk() {
            metrics::gauge!("vbc_store_size_bytes", "store" => "audit").set(bytes as f64);
        }
    }
    metrics::gauge!("vbc_contracts_loaded").set(s.engine.contract_ids().len() as f64);
}

/// The handler.
pub async fn scrape(State(s): State<AppState>, req: Request) -> Result<Response> {
    let peer = req
        .extensions()
        .get::<ConnectInfo<super::listener::Peer>>()
        .map(|c| c.0 .0);
    may_scrape(peer, req.extensions().get::<Access>())?;
    let Some(handle) = HANDLE.get().cloned() else {
        return Err(FhirError::Unavailable(
            "metrics are not recorded in this process".into(),
        ));
    };
    let text = tokio::task::spawn_blocking(move || {
        sample(&s);
        handle.run_upkeep();
        handle.render()
    })
    .await
    .map_err(|e| FhirError::Storage(e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_peers_scrape_without_a_token_others_need_an_administrator() {
        let local: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:9".parse().expect("addr");
        let remote: SocketAddr = "192.0.2.7:9".parse().expect("addr");
        assert!(may_scrape(Some(local), None).is_ok());
        assert!(may_scrape(Some(mapped), None).is_ok());
        assert!(matches!(
            may_scrape(Some(remote), Some(&Access::Anonymous)),
            Err(FhirError::Unauthorized(_))
        ));
        assert!(may_scrape(None, None).is_err());
    }
}

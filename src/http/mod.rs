//! The HTTP API (axum): one file per interaction or operation, a router, and the middleware stack
//! (request ids, tracing, format negotiation, panic safety net).

pub mod access_log;
pub mod audit_ops;
pub mod bundle;
pub mod capabilities;
pub mod clients;
pub mod cors;
pub mod create;
pub mod data_ops;
pub mod delete;
pub mod evaluate_measure;
pub mod guard;
pub mod headers;
pub mod health;
pub mod history;
pub mod listener;
pub mod load_contract;
pub mod manufacturer_view;
pub mod measure_params;
pub mod metrics;
pub mod negotiate;
pub mod outcomes;
pub mod patch;
pub mod publish_reports;
pub mod read;
pub mod response;
pub mod search;
pub mod smart;
pub mod unknown_operation;
pub mod update;
pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::error::{FhirError, Result};
use crate::fhir::resource_types::is_resource_type;
use crate::interaction::Services;

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    /// The interactions.
    pub services: Services,
    /// Configured public base URL (None: derived from the Host header).
    pub base_url: Option<Arc<str>>,
    /// The CapabilityStatement served at /metadata (JSON bytes).
    pub capability: Arc<Vec<u8>>,
    /// The outcome engine.
    pub engine: Arc<crate::engine::Engine>,
    /// SMART backend services (None: auth is off, `--no-auth`).
    pub auth: Option<Arc<smart::Auth>>,
    /// The audit trail seen as a store of AuditEvents, for reads and history (None: not kept,
    /// as in tools).
    pub audit_store: Option<crate::store::SharedStore>,
    /// Small-cell suppression threshold for manufacturers' aggregates (0: off).
    pub small_cell_threshold: u64,
    /// Origins allowed to call the API from a browser (`*`: any).
    pub cors_origins: Vec<String>,
}

impl AppState {
    /// The base URL for this request.
    pub fn base(&self, headers: &HeaderMap) -> String {
        if let Some(b) = &self.base_url {
            return b.trim_end_matches('/').to_string();
        }
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or("localhost");
        format!("http://{host}")
    }
}

/// 404 unless `rtype` is a resource type the server serves.
pub fn check_type(rtype: &str) -> Result<()> {
    if is_resource_type(rtype) {
        Ok(())
    } else {
        Err(FhirError::NotFound(format!(
            "unknown resource type '{rtype}'"
        )))
    }
}

async fn not_found(req: Request) -> Response {
    if let Some(op) = req.uri().path().split('/').find(|s| s.starts_with('$')) {
        return unknown_operation::error(op).into_response();
    }
    FhirError::NotFound(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

async fn method_not_allowed() -> Response {
    FhirError::MethodNotAllowed.into_response()
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    FhirError::Storage("internal error (panic caught); the request was not applied".into())
        .into_response()
}

/// Build the router with all routes and middleware.
pub fn router(state: AppState) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let cors = cors::layer(&state.cors_origins);
    Router::new()
        .route("/metadata", get(capabilities::metadata))
        .route("/health", get(health::live))
        .route("/.well-known/smart-configuration", get(smart::configuration))
        .route(
            smart::TOKEN_PATH,
            post(smart::token).fallback(smart::token_method_not_allowed),
        )
        .route(smart::CLIENTS_PATH, get(clients::list))
        .route(
            "/auth/clients/{id}",
            axum::routing::put(clients::put).delete(clients::delete),
        )
        .route("/AuditEvent/$verify-chain", get(audit_ops::verify_chain))
        .route("/ready", get(health::ready))
        .route(metrics::METRICS_PATH, get(metrics::scrape))
        .route("/", post(bundle::process).get(search::search_system))
        .route("/$load-contract", post(load_contract::load))
        .route(
            "/Measure/$evaluate-measure",
            get(evaluate_measure::type_get).post(evaluate_measure::type_post),
        )
        .route(
            "/Measure/$data-requirements",
            get(data_ops::data_requirements_type).post(data_ops::data_requirements_type),
        )
        .route(
            "/Measure/{id}/$data-requirements",
            get(data_ops::data_requirements_instance).post(data_ops::data_requirements_instance),
        )
        .route(
            "/Measure/$collect-data",
            get(data_ops::collect_data_type),
        )
        .route(
            "/Measure/{id}/$collect-data",
            get(data_ops::collect_data_get).post(data_ops::collect_data_post),
        )
        .route("/Measure/$submit-data", post(data_ops::submit_data))
        .route("/Measure/{id}/$submit-data", post(data_ops::submit_data))
        .route(
            "/Measure/$care-gaps",
            get(data_ops::care_gaps_get).post(data_ops::care_gaps_post),
        )
        .route("/Measure/{id}/$care-gaps", get(data_ops::care_gaps_instance))
        .route(
            "/Measure/{id}/$publish-reports",
            post(publish_reports::publish_reports),
        )
        .route("/Measure/{id}/$outcomes", get(outcomes::outcomes))
        .route(
            "/Measure/{id}/$evaluate-measure",
            get(evaluate_measure::instance_get).post(evaluate_measure::instance_post),
        )
        .route("/_history", get(history::system))
        .route(
            "/{rtype}",
            get(search::search_type)
                .post(create::create)
                .put(update::conditional_update)
                .delete(delete::conditional_delete),
        )
        .route("/{rtype}/_history", get(history::type_level))
        .route("/{rtype}/_search", post(search::search_post))
        .route("/{rtype}/$validate", post(validate::type_level))
        .route(
            "/{rtype}/{id}",
            get(read::read)
                .put(update::update)
                .delete(delete::delete)
                .patch(patch::patch),
        )
        .route("/{rtype}/{id}/$validate", post(validate::instance_level))
        .route("/{rtype}/{id}/_history", get(history::instance))
        .route("/{rtype}/{id}/{compartment_type}", get(search::compartment))
        .route("/{rtype}/{id}/_history/{vid}", get(read::vread))
        .route_layer(axum::middleware::from_fn(unknown_operation::check))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            manufacturer_view::mask,
        ))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard::guard))
        .with_state(state)
        .layer(axum::middleware::from_fn(negotiate::render))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(
            TraceLayer::new_for_http().make_span_with(|req: &Request| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
            }),
        )
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, Duration::from_secs(300)))
        .layer(axum::middleware::from_fn(access_log::observe))
        .layer(cors)
}

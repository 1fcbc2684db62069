//! Starting and stopping the server: logging, the store, the router, graceful shutdown.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::auth::audit::Audit;
use crate::auth::audit_store::AuditStore;
use crate::config::{LogFormat, ServeConfig};

/// The audit trail as kept before its compact form (converted at start), inside the data
/// directory.
pub const AUDIT_DIR: &str = "audit";
/// The audit trail, inside the data directory.
pub const AUDIT_LOG_DIR: &str = "audit-log";
/// The file with the audit chain's last link, inside the data directory.
pub const AUDIT_HEAD: &str = "audit.head";
use crate::error::{FhirError, Result};
use crate::fhir::validate::Validator;
use crate::http::{self, AppState};
use crate::interaction::Services;
use crate::store::audit_log::AuditLog;
use crate::store::kv_store::KvStore;
use crate::store::SharedStore;

/// Install the tracing subscriber (RUST_LOG filters; default `info`). Logs go to stderr (stdout
/// carries the one "listening on" line), with colours only when stderr is a terminal.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Build the application state over an open store (and the audit trail's store, when kept).
pub fn state(
    store: SharedStore,
    audit: Option<Arc<AuditLog>>,
    cfg: &ServeConfig,
) -> Result<AppState> {
    // absolute references to this server are indexed as relative ones: the configured base,
    // or the listen address when none is configured
    let own_base = cfg.own_base();
    crate::search::init(Some(&own_base))?;
    let auth = match &cfg.auth_clients {
        Some(path) => Some(http::smart::Auth::new(
            crate::auth::clients::Registry::load(path)?,
            Some(path.clone()),
            &own_base,
            match (&cfg.auth_issuer, &cfg.auth_jwks_url) {
                (Some(issuer), Some(jwks_url)) => Some(http::smart::External {
                    issuer: issuer.clone(),
                    audience: cfg
                        .auth_audience
                        .clone()
                        .unwrap_or_else(|| own_base.clone()),
                    jwks_url: jwks_url.clone(),
                }),
                _ => None,
            },
        )),
        None => None,
    };
    let token_url = auth
        .as_ref()
        .map(|_| format!("{own_base}{}", http::smart::TOKEN_PATH));
    let capability = http::capabilities::build(cfg.base_url.as_deref(), token_url.as_deref())?;
    let (audit_store, audit): (Option<SharedStore>, Audit) = match audit {
        Some(log) => (Some(Arc::new(AuditStore::new(log.clone()))), Audit::on(log)),
        None => (None, Audit::off()),
    };
    let engine = crate::engine::Engine::open(&store, cfg.link_identifier_systems.clone())?;
    Ok(AppState {
        services: Services {
            store,
            validator: Arc::new(Validator::new()?),
            limits: cfg.limits(),
            access: crate::auth::access::Access::System,
            audit,
        },
        base_url: cfg.base_url.as_deref().map(Arc::from),
        capability: Arc::new(
            serde_json::to_vec(&capability).map_err(|e| FhirError::Storage(e.to_string()))?,
        ),
        engine,
        auth,
        audit_store,
        small_cell_threshold: cfg.small_cell_threshold,
        cors_origins: cfg.cors_origins.clone(),
    })
}

/// Load the contract definitions of the configured directory (each file once; a loaded version
/// is immutable, so reloading at every start changes nothing).
pub async fn load_contracts(state: &AppState, cfg: &ServeConfig) {
    if cfg.contracts_dir.is_empty() {
        return;
    }
    let dir = std::path::Path::new(&cfg.contracts_dir);
    if !dir.is_dir() {
        // a relative default resolves against the working directory: say where that was
        let looked_for = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
        tracing::warn!(
            looked_for = %looked_for.display(),
            "NO CONTRACTS LOADED: the contracts directory {} does not exist; point the server at \
             the catalog with --contracts-dir PATH (or VBC_CONTRACTS_DIR), e.g. the checkout's \
             contracts/ directory, or pass --contracts-dir \"\" to run without contracts",
            looked_for.display()
        );
        return;
    }
    let base = cfg.own_base();
    for (file, result) in
        crate::interaction::load_contract::load_dir(&state.services, dir, &base).await
    {
        match result {
            Ok(l) => tracing::info!(%file, outcome = ?l, "contract loaded"),
            Err(e) => {
                let issues: Vec<String> = e
                    .issues()
                    .iter()
                    .map(|i| {
                        format!(
                            "{} ({})",
                            i.diagnostics,
                            i.expression.as_deref().unwrap_or("")
                        )
                    })
                    .collect();
                tracing::error!(%file, error = %e, issues = ?issues, "contract rejected");
            }
        }
    }
}

/// Store the shipped OperationDefinitions (those absent, or changed since they were stored), so
/// that they can be read and searched like any resource.
pub async fn store_operation_definitions(state: &AppState, base: &str) -> Result<()> {
    let mut entries = Vec::new();
    for def in crate::fhir::operation_definitions::all()? {
        let id = def["id"].as_str().unwrap_or_default().to_string();
        let store = state.services.store.clone();
        let key = id.clone();
        let current =
            tokio::task::spawn_blocking(move || store.current("OperationDefinition", &key))
                .await
                .map_err(|e| FhirError::Storage(e.to_string()))??
                .filter(|r| !r.deleted())
                .and_then(|r| {
                    serde_json::from_slice::<serde_json::Value>(r.resource.as_deref()?).ok()
                });
        let same = current.is_some_and(|mut c| {
            c.as_object_mut().map(|o| o.remove("meta"));
            c == def
        });
        if !same {
            entries.push(serde_json::json!({
                "fullUrl": format!("{base}/OperationDefinition/{id}"),
                "resource": def,
                "request": {"method": "PUT", "url": format!("OperationDefinition/{id}")}
            }));
        }
    }
    if !entries.is_empty() {
        let n = entries.len();
        let bundle =
            serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        state.services.bundle(bundle, base, false).await?;
        tracing::info!(stored = n, "OperationDefinitions stored");
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// Run the server until SIGTERM/SIGINT, then finish in-flight requests and flush the store.
pub async fn serve(cfg: ServeConfig) -> Result<()> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
        FhirError::Storage(format!("cannot create {}: {e}", cfg.data_dir.display()))
    })?;
    let main = KvStore::open_with_cache(&cfg.data_dir, cfg.cache_mb.saturating_mul(1024 * 1024))?;
    crate::search::init(Some(&cfg.own_base()))?.upgrade_index(&main)?;
    // a trail in the earlier form becomes the compact trail (once)
    let head_file = cfg.data_dir.join(AUDIT_HEAD);
    let audit_dir = cfg.data_dir.join(AUDIT_LOG_DIR);
    crate::store::audit_legacy::convert(&cfg.data_dir.join(AUDIT_DIR), &audit_dir, &head_file)?;
    let store: SharedStore = Arc::new(main);
    cfg.check_auth().map_err(FhirError::BadRequest)?;
    http::metrics::install()?;
    if cfg.no_auth {
        tracing::warn!(listen = %cfg.listen, "AUTHENTICATION IS OFF (--no-auth): every request acts with full rights; never expose this server");
    }
    let audit_log = AuditLog::open(&audit_dir, head_file)?;
    let app_state = state(store.clone(), Some(audit_log.clone()), &cfg)?;
    let audit = app_state.services.audit.clone();
    // the catalog (contracts and the OperationDefinitions) comes with a contracts directory; an
    // empty --contracts-dir runs a bare FHIR store
    if !cfg.contracts_dir.is_empty() {
        store_operation_definitions(&app_state, &cfg.own_base()).await?;
    }
    load_contracts(&app_state, &cfg).await;
    tokio::spawn(crate::interaction::cohort_groups::maintain(
        app_state.engine.clone(),
        app_state.services.clone(),
    ));
    if cfg.report_schedule_secs > 0 {
        let base = cfg.own_base();
        tokio::spawn(crate::reports::schedule::maintain(
            app_state.engine.clone(),
            app_state.services.clone(),
            base,
            std::time::Duration::from_secs(cfg.report_schedule_secs),
        ));
    }
    let app = http::router(app_state);
    let listener = TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| FhirError::Storage(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| FhirError::Storage(e.to_string()))?;
    tracing::info!(%addr, data_dir = %cfg.data_dir.display(), "vbc-server listening");
    println!("vbc-server listening on http://{addr}");
    let result = axum::serve(
        http::listener::Listener(listener),
        app.into_make_service_with_connect_info::<http::listener::Peer>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| FhirError::Storage(e.to_string()));
    audit.flush().await;
    let closed = tokio::task::spawn_blocking(move || {
        let audit_closed = audit_log.shutdown();
        store.shutdown().and(audit_closed)
    })
    .await
    .map_err(|e| FhirError::Storage(e.to_string()))?;
    tracing::info!("store flushed; bye");
    result.and(closed)
}

//! `vbc-server load-contract`: check contract definitions, or load them into the data directory
//! of a stopped server (a running server takes them at `POST [base]/$load-contract`).

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Limits;
use crate::error::{FhirError, Result};
use crate::fhir::validate::Validator;
use crate::interaction::Services;
use crate::store::kv_store::KvStore;
use crate::store::Store;

/// Options of `load-contract`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadContractConfig {
    /// Contract definition files (`*.toml`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Only compile and validate; print every mistake; store nothing.
    #[arg(long)]
    pub check: bool,
    /// Data directory of a stopped server.
    #[arg(long, env = "VBC_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The server's base URL, if it runs with one.
    #[arg(long, env = "VBC_BASE_URL")]
    pub base_url: Option<String>,
}

fn report(file: &str, e: &FhirError) {
    eprintln!("{file}: rejected: {e}");
    for i in e.issues() {
        eprintln!(
            "  {}: {}",
            i.expression.as_deref().unwrap_or("-"),
            i.diagnostics
        );
    }
}

/// Run the command; fails when any file is rejected.
pub async fn run(cfg: &LoadContractConfig) -> Result<()> {
    // the store first: a data directory a running server holds is refused before any file is
    // reported "ok" (nothing would be stored)
    let store: Option<Arc<dyn Store>> = if cfg.check {
        None
    } else {
        let opened = KvStore::open(&cfg.data_dir).map_err(|e| match e {
            FhirError::Unavailable(m) => FhirError::Unavailable(format!(
                "{m} (a running server loads contracts at POST [base]/$load-contract)"
            )),
            e => e,
        })?;
        crate::search::engine()?.upgrade_index(&opened)?;
        Some(Arc::new(opened))
    };
    let mut failed = 0usize;
    let mut texts = Vec::new();
    for f in &cfg.files {
        let name = f.display().to_string();
        match std::fs::read_to_string(f) {
            Ok(t) => match crate::contracts::compile(&t) {
                Ok(c) => {
                    println!(
                        "{name}: ok ({} {}, {} outcomes, {} resources)",
                        c.rules.contract.id,
                        c.rules.contract.version,
                        c.rules.outcomes.len(),
                        c.resources.len()
                    );
                    texts.push((name, t));
                }
                Err(e) => {
                    report(&name, &e);
                    failed += 1;
                }
            },
            Err(e) => {
                eprintln!("{name}: cannot read: {e}");
                failed += 1;
            }
        }
    }
    if let Some(store) = store.as_ref().filter(|_| failed == 0) {
        crate::search::init(cfg.base_url.as_deref())?;
        let services = Services {
            store: store.clone(),
            validator: Arc::new(Validator::new()?),
            limits: Limits::default(),
            access: crate::auth::access::Access::System,
            audit: crate::auth::audit::Audit::off(),
        };
        let base = cfg
            .base_url
            .clone()
            .unwrap_or_else(|| "http://localhost".into());
        for (name, text) in &texts {
            match crate::interaction::load_contract::load(&services, text, &base).await {
                Ok((l, _)) => println!("{name}: {l:?}"),
                Err(e) => {
                    report(name, &e);
                    failed += 1;
                }
            }
        }
    }
    if let Some(store) = store {
        store.shutdown()?;
    }
    if failed > 0 {
        return Err(FhirError::BadRequest(format!(
            "{failed} contract file(s) rejected"
        )));
    }
    Ok(())
}

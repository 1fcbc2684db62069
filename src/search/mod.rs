//! FHIR search: parameter definitions (`params`), the FHIRPath subset their expressions use
//! (`path`), index extraction on write (`extract`, with `values` encodings and `units`), query
//! parsing (`query`), value matching (`matcher`) and planning/execution over the index
//! (`execute`). The interaction layer (`interaction::search`) adds paging, sorting, includes
//! and the Bundle.

pub mod execute;
pub mod extract;
pub mod matcher;
pub mod params;
pub mod path;
pub mod query;
pub mod units;
pub mod values;
pub mod valueset;

use std::sync::Arc;

use serde_json::Value;

use crate::error::Result;
use crate::fhir::definitions::Definitions;
use crate::store::{IndexEntry, IndexRead, Store, WriteTxn};
pub use execute::Executor;
pub use params::Registry;
pub use query::{parse, Criterion, PageLimits, Search};

/// The search engine's shared state: the parameter registry and the R4 definitions.
pub struct Engine {
    /// Search parameters.
    pub registry: Registry,
    /// Element definitions (types of paths, bindings, shipped ValueSets).
    pub defs: Arc<Definitions>,
}

impl Engine {
    /// Load the registry for a server whose base URL is `base_url`.
    pub fn new(defs: Arc<Definitions>, base_url: &str) -> Result<Self> {
        Ok(Engine {
            registry: Registry::load(base_url)?,
            defs,
        })
    }

    /// Index entries of a resource (committed atomically with it).
    pub fn index_entries(&self, rtype: &str, resource: &Value) -> Vec<IndexEntry> {
        extract::index_entries(&self.registry, &self.defs, rtype, resource)
    }

    /// Index entries of some parameters of a resource (unsorted).
    pub fn entries_of_params(
        &self,
        rtype: &str,
        resource: &Value,
        params: &[String],
    ) -> Vec<IndexEntry> {
        extract::entries_of_params(&self.registry, &self.defs, rtype, resource, params)
    }

    /// Index entries from stored resource bytes (for reindex and checks).
    pub fn index_entries_of_bytes(&self, rtype: &str, bytes: &[u8]) -> Vec<IndexEntry> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => self.index_entries(rtype, &v),
            Err(_) => Vec::new(),
        }
    }

    /// Rebuild the store's index when it has the key layout of an earlier release (once, before
    /// the store serves or is written); logs what it did.
    pub fn upgrade_index(&self, store: &dyn Store) -> Result<()> {
        if !store.needs_reindex() {
            return Ok(());
        }
        tracing::warn!(
            "the store's search index has the layout of an earlier release: rebuilding it (once)"
        );
        let started = std::time::Instant::now();
        let n = store.reindex(&|t, b| self.index_entries_of_bytes(t, b))?;
        tracing::info!(
            resources = n,
            seconds = started.elapsed().as_secs_f64(),
            "search index rebuilt"
        );
        Ok(())
    }

    /// Parse a query for one type, strictly (unknown parameters are errors): for conditional
    /// interactions, where ignoring a criterion would change what is written.
    pub fn parse_conditional(&self, rtype: &str, query: &str) -> Result<Search> {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(query.trim_start_matches('?').as_bytes())
                .into_owned()
                .collect();
        let s = parse(
            &self.registry,
            &[rtype.to_string()],
            &pairs,
            PageLimits {
                default: 50,
                max: 1000,
            },
            true,
        )?;
        if s.criteria.is_empty() {
            return Err(crate::error::FhirError::BadRequest(
                "conditional criteria are empty".into(),
            ));
        }
        Ok(s)
    }

    /// Ids of live resources matching `criteria`, as a write job sees them (its own and its
    /// commit group's writes included).
    pub fn find_in_txn(
        &self,
        txn: &mut dyn WriteTxn,
        rtype: &str,
        criteria: &[Criterion],
    ) -> Result<Vec<String>> {
        let reader: &dyn IndexRead = txn;
        Executor::new(&self.defs, reader).matching_ids(rtype, criteria)
    }
}

/// The first value of a query-string parameter, decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

static ENGINE: once_cell::sync::OnceCell<Engine> = once_cell::sync::OnceCell::new();

/// Set up the process's search engine with the server's configured base URL (absolute references
/// to it are indexed as `Type/id`). Later calls keep the first engine.
pub fn init(base_url: Option<&str>) -> Result<&'static Engine> {
    ENGINE.get_or_try_init(|| Engine::new(Definitions::shared()?, base_url.unwrap_or("")))
}

/// The process's search engine (set up with no base URL if [`init`] was not called).
pub fn engine() -> Result<&'static Engine> {
    init(None)
}

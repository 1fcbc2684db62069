//! The background task that keeps each contract's cohort `Group` in the store current: it
//! compares the engine's membership with what it last wrote and rewrites a Group that changed.
//! The lag is bounded by the task's period (two seconds) plus one write.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::Services;
use crate::engine::cohort_group::group;
use crate::engine::{Engine, Members};

/// How often membership is compared with the stored Groups.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Keep every contract's Group current (runs until the process ends).
pub async fn maintain(engine: Arc<Engine>, services: Services) {
    let mut written: HashMap<String, Members> = HashMap::new();
    loop {
        for contract in engine.contract_ids() {
            let e = engine.clone();
            let c = contract.clone();
            let Ok(Some((id, g, members))) =
                tokio::task::spawn_blocking(move || group(&e, &c)).await
            else {
                continue;
            };
            if written.get(&contract) == Some(&members) {
                continue;
            }
            match services.update("Group", &id, g, None).await {
                Ok(_) => {
                    written.insert(contract, members);
                }
                Err(e) => tracing::warn!(group = %id, error = %e, "cannot write the cohort Group"),
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
}

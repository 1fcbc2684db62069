//! Scheduled publication: every contract's report set for each period its `reporting`
//! schedule has completed (calendar months or quarters within the term, and the whole term at
//! close-out), published once and re-checked on every round (a changed period is published as a
//! correction). Periods without anyone indexed in them are skipped.

use std::sync::Arc;
use std::time::Duration;

use super::common::{in_period, Period};
use super::publish::{due_periods, publish};
use crate::days;
use crate::engine::Engine;
use crate::interaction::Services;

/// Publish what is due for every loaded contract once.
pub async fn run_once(engine: &Arc<Engine>, services: &Services, base: &str) -> usize {
    let mut stored = 0;
    let today = days::today();
    for contract in engine.contract_ids() {
        let Some((plan, _)) = engine.plan_for_measure(&contract) else {
            continue;
        };
        let c = &plan.rules.contract;
        let (Some(start), Some(end)) = (days::parse_full(&c.start), days::parse_full(&c.end))
        else {
            continue;
        };
        let due = due_periods(&c.reporting, (start, end), today);
        if due.is_empty() || c.reporting == "none" {
            continue;
        }
        let e = engine.clone();
        let id = contract.clone();
        let Ok(Ok(results)) = tokio::task::spawn_blocking(move || e.current(&id)).await else {
            continue;
        };
        let results = Arc::new(results);
        let occupied: Vec<Period> = due
            .into_iter()
            .filter(|p| !in_period(&results, p).is_empty())
            .collect();
        for p in occupied {
            match publish(services, &plan, results.clone(), p, base).await {
                Ok(done) => stored += done.stored,
                Err(e) => {
                    tracing::warn!(%contract, error = %e, "scheduled report publication failed")
                }
            }
        }
    }
    stored
}

/// Publish on schedule until the process ends, checking every `every`.
pub async fn maintain(engine: Arc<Engine>, services: Services, base: String, every: Duration) {
    loop {
        let n = run_once(&engine, &services, &base).await;
        if n > 0 {
            tracing::info!(reports = n, "scheduled reports published");
        }
        tokio::time::sleep(every).await;
    }
}

//! A contract's report set for a period, built from its members' results: one quality report
//! per reported outcome, the subject-list report and the settlement. The performance report is
//! built last, from the settlement and the references the quality reports get where they are
//! stored (see [`super::publish`]).

use serde_json::Value;

use super::common::Period;
use super::{quality, subject_list};
use crate::days::Day;
use crate::engine::plan::Plan;
use crate::engine::result::PersonResult;
use crate::settlement::{self, Settlement};

/// The reports of a period but the performance report.
pub struct ReportSet {
    /// (outcome id, quality report) per reported outcome, in the contract's order.
    pub quality: Vec<(String, Value)>,
    /// The subject-list report over the reported outcomes.
    pub subject_list: Value,
    /// The money.
    pub settlement: Settlement,
}

impl ReportSet {
    /// Build the set from the results of the members indexed in `period`.
    pub fn build(plan: &Plan, chosen: &[&PersonResult], period: &Period, today: Day) -> ReportSet {
        let ids = plan.rules.reported_ids();
        ReportSet {
            quality: ids
                .iter()
                .map(|id| {
                    (
                        id.to_string(),
                        quality::report(plan, id, chosen, period, today),
                    )
                })
                .collect(),
            subject_list: subject_list::report(
                plan,
                &plan.ids.contract(),
                &ids,
                chosen,
                period,
                today,
            ),
            settlement: settlement::settle(&plan.rules, chosen, today),
        }
    }
}

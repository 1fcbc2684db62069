//! Per-patient results: one status per outcome with its evidence and the rule that decided it.

use std::sync::Arc;

use rust_decimal::Decimal;

use crate::days::Day;

/// A patient's status for one outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// The outcome was achieved.
    Met,
    /// The outcome was missed.
    NotMet,
    /// The window is still open.
    Pending,
    /// The window closed without a usable measurement (where refunds go unclaimed).
    MissingData,
    /// Excluded (death, exclusion diagnosis, switch).
    Excluded,
}

impl Status {
    /// The code used in results and reports.
    pub fn code(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::NotMet => "not-met",
            Status::Pending => "pending",
            Status::MissingData => "missing-data",
            Status::Excluded => "excluded",
        }
    }

    /// Parse a code.
    pub fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "met" => Status::Met,
            "not-met" => Status::NotMet,
            "pending" => Status::Pending,
            "missing-data" => Status::MissingData,
            "excluded" => Status::Excluded,
            _ => return None,
        })
    }
}

/// A resource version that took part in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// Resource type.
    pub rtype: &'static str,
    /// Id.
    pub id: Arc<str>,
    /// Version.
    pub version: u64,
    /// What it was used as (index, baseline, value, event, duplicate, unusable, ...).
    pub role: &'static str,
    /// A note (the value as compared, why it was unusable).
    pub note: String,
}

/// Where a patient stands in the cohort.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Had prior exposure within the washout: not a new user (not in the initial population).
    NotNewUser,
    /// In the initial population but failed an eligibility criterion.
    Ineligible,
    /// In the cohort.
    Member,
}

impl Membership {
    /// Code.
    pub fn code(self) -> &'static str {
        match self {
            Membership::NotNewUser => "not-new-user",
            Membership::Ineligible => "ineligible",
            Membership::Member => "member",
        }
    }
}

/// One outcome's result.
#[derive(Debug, Clone, PartialEq)]
pub struct OutcomeResult {
    /// Outcome id.
    pub id: Arc<str>,
    /// Status.
    pub status: Status,
    /// Why, in words an auditor can check.
    pub reason: String,
    /// The decisive value (lab value, change, event count, PDC, longest gap).
    pub value: Option<Decimal>,
    /// Unit of the value.
    pub unit: String,
    /// The window as calendar days.
    pub window: (Day, Day),
    /// The rule as written.
    pub rule: Arc<str>,
    /// The day the status was decided on (the decisive measurement or event, or the window end).
    pub decided_on: Option<Day>,
    /// The resources that decided it.
    pub evidence: Vec<Evidence>,
}

/// A counting exposure to the contracted drug from the index date on (what the drug cost is
/// computed from).
#[derive(Debug, Clone, PartialEq)]
pub struct DrugUse {
    /// Day of the exposure.
    pub day: Day,
    /// Dispensed quantity (an administration is one unit; None when not given).
    pub quantity: Option<Decimal>,
    /// The resource version it came from.
    pub evidence: Evidence,
}

/// A person's result for one contract.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonResult {
    /// The person (smallest linked Patient id).
    pub person: Arc<str>,
    /// Every linked Patient id.
    pub patients: Vec<Arc<str>>,
    /// Index date.
    pub index: Day,
    /// Cohort membership.
    pub membership: Membership,
    /// Why not a member (empty for members).
    pub reason: String,
    /// Cohort evidence (the index exposure, eligibility data).
    pub evidence: Vec<Evidence>,
    /// Outcome results (members only), in the contract's order.
    pub outcomes: Vec<OutcomeResult>,
    /// Administrative gender (from the first linked record that has one).
    pub sex: Option<Box<str>>,
    /// Birth date (from the first linked record that has one).
    pub birth: Option<Day>,
    /// Who dispensed, administered, ordered or performed the index exposure.
    pub performer: Option<Box<str>>,
    /// Counting exposures to the contracted drug from the index date to the evaluation day
    /// (members only).
    pub drug: Vec<DrugUse>,
}

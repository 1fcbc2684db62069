//! The compiled rule format `vbc-rules/1`: what a contract's `Library` carries and what the
//! outcome engine runs. It is the authoring form with every name resolved, every unit converted
//! to its lab's unit and every default filled in, so the engine needs nothing else.
//!
//! Serialized as JSON with decimals as strings and dates as `YYYY-MM-DD` (exact, and independent
//! of any JSON number handling). Enums are externally tagged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The format identifier.
pub const FORMAT: &str = "vbc-rules/1";
/// The Library content type of a rule set.
pub const CONTENT_TYPE: &str = "application/vnd.vbc.rules+json;version=1";
/// Canonical base of the definitions the server compiles.
pub const CANONICAL_BASE: &str = "https://vbc-server.dev/fhir";

/// A compiled contract.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RuleSet {
    /// Always [`FORMAT`].
    pub format: String,
    /// Contract metadata, parties and prices.
    pub contract: ContractInfo,
    /// Value sets by name.
    pub valuesets: BTreeMap<String, ValueSetDef>,
    /// Numeric labs by name.
    pub labs: BTreeMap<String, LabDef>,
    /// Who enters the cohort.
    pub cohort: CohortRule,
    /// Who is excluded.
    pub exclusions: ExclusionRules,
    /// Outcomes in definition order (components before the combinations that use them).
    pub outcomes: Vec<OutcomeDef>,
    /// Payment terms.
    pub payments: Vec<PaymentTerm>,
}

/// Contract metadata.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContractInfo {
    /// Stable contract id.
    pub id: String,
    /// Version.
    pub version: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: Option<String>,
    /// draft | active | retired.
    pub status: String,
    /// Contract term start (YYYY-MM-DD).
    pub start: String,
    /// Contract term end.
    pub end: String,
    /// Line of business.
    pub lob: Option<String>,
    /// HCP-LAN APM category.
    pub hcplan: Option<String>,
    /// ISO 4217 currency of every amount.
    pub currency: String,
    /// Where the terms come from.
    pub source: Option<String>,
    /// The payer.
    pub payer: Party,
    /// The manufacturer.
    pub manufacturer: Party,
    /// The contracted drug's value set name.
    pub drug: String,
    /// Price per dispensed unit.
    pub unit_price: Option<String>,
    /// Price per dispense or administration.
    pub pack_price: Option<String>,
    /// The size of one priced unit as (decimal text, UCUM unit), e.g. ("100", "mg"): a record's
    /// dose or quantity in a commensurable unit is priced as that many units, rounded up (a vial
    /// opened is a vial paid). Absent: a dispense's quantity, an administration one unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_size: Option<(String, String)>,
    /// A stopped administration that states a dose is priced (the drug was used); it never
    /// counts as an exposure otherwise. Absent: stopped administrations are not priced.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub price_stopped: bool,
    /// Records of the contracted drug from different sources dated within this many days of each
    /// other are one exposure (a dispense then its administration, an administration and its
    /// Procedure): counted once, for the index date and the cost. Absent: every record counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_exposure_days: Option<u32>,
    /// Which source's record stands for a matched exposure, first first (absent:
    /// MedicationAdministration, Procedure, MedicationDispense, MedicationRequest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_order: Vec<String>,
    /// When report sets are published: monthly, quarterly (the default), close-out or none.
    #[serde(default = "quarterly")]
    pub reporting: String,
}

fn quarterly() -> String {
    "quarterly".into()
}

/// A party to the contract.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Party {
    /// Name.
    pub name: String,
    /// Identifier system.
    pub identifier_system: Option<String>,
    /// Identifier value.
    pub identifier_value: Option<String>,
}

/// A code in a value set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CodeDef {
    /// Code system URI.
    pub system: String,
    /// Code.
    pub code: String,
    /// Display.
    pub display: Option<String>,
}

/// A value set: an enumerated list of codes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ValueSetDef {
    /// Title.
    pub title: String,
    /// Codes.
    pub codes: Vec<CodeDef>,
}

/// A numeric lab.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabDef {
    /// Value set of its codes.
    pub valueset: String,
    /// The UCUM unit results are compared in.
    pub unit: String,
}

/// A comparison with a threshold in the unit of what it compares.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Comparison {
    /// `<`, `<=`, `>`, `>=` or `=`.
    pub op: String,
    /// Threshold (decimal string) in `unit`.
    pub value: String,
    /// Unit of the threshold (the lab's unit; `%` for relative changes; empty for none).
    pub unit: String,
    /// The comparison as the author wrote it.
    pub text: String,
}

/// Days relative to the index date, both inclusive.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct DayWindow {
    /// First day.
    pub from: i32,
    /// Last day.
    pub to: i32,
}

/// Who enters the cohort.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CohortRule {
    /// Value set of the contracted therapy.
    pub exposure: String,
    /// Resource types that count as exposure.
    pub sources: Vec<String>,
    /// Intake period start (YYYY-MM-DD).
    pub intake_start: String,
    /// Intake period end.
    pub intake_end: String,
    /// New-start washout in days.
    pub washout_days: Option<u32>,
    /// Resource types whose exposures in the washout make a prior user (absent: every source,
    /// an order too, as rule sets stored before the option were evaluated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub washout_sources: Option<Vec<String>>,
    /// Minimum age at index.
    pub age_min: Option<u32>,
    /// Maximum age at index.
    pub age_max: Option<u32>,
    /// Administrative gender.
    pub sex: Option<String>,
    /// Required diagnoses (value set names).
    pub diagnoses: Vec<String>,
    /// Baseline labs.
    pub labs: Vec<LabCriterion>,
    /// Coded findings.
    pub findings: Vec<FindingCriterion>,
    /// Background therapies.
    pub therapies: Vec<TherapyCriterion>,
    /// Coverage by the payer at index.
    pub coverage: bool,
}

/// A baseline lab criterion: the latest value within `within_days` before index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LabCriterion {
    /// Lab name.
    pub lab: String,
    /// Look-back in days.
    pub within_days: u32,
    /// The comparison the value must satisfy.
    pub value: Comparison,
}

/// A coded finding before index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FindingCriterion {
    /// Value set of the observation codes.
    pub observation: String,
    /// Value set its value must be in.
    pub value_in: String,
    /// Look-back in days.
    pub within_days: u32,
}

/// Background therapy: an exposure within `within_days` before index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TherapyCriterion {
    /// Value set of the therapy.
    pub valueset: String,
    /// Look-back in days.
    pub within_days: u32,
    /// A fill dated before the look-back whose days' supply reaches into it counts too (absent
    /// in rule sets stored before the option: only fills dated in the look-back count).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supply_counts: bool,
}

/// Exclusions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExclusionRules {
    /// Death before the outcome can be measured excludes (except survival outcomes).
    pub death: bool,
    /// Exclusion diagnoses (value set names).
    pub diagnoses: Vec<String>,
    /// Switch-away therapies (value set names).
    pub switches: Vec<String>,
}

/// One outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutcomeDef {
    /// Id within the contract.
    pub id: String,
    /// Title.
    pub title: String,
    /// proportion | continuous-variable.
    pub scoring: String,
    /// increase | decrease.
    pub improvement: String,
    /// Weight in the contract (decimal string).
    pub weight: String,
    /// contractual | reporting-only.
    pub status: String,
    /// False for components used only inside `all`/`any`.
    pub report: bool,
    /// The rule.
    pub rule: Rule,
    /// What a closed window without a usable measurement comes to (absent in rule sets stored
    /// before the option existed: at stake, as they were evaluated).
    #[serde(default, skip_serializing_if = "MissingDataPolicy::is_at_stake")]
    pub missing_data: MissingDataPolicy,
    /// What a death before the outcome is measured means (with `[exclusions] death = true`).
    #[serde(default, skip_serializing_if = "OnDeath::is_excluded")]
    pub on_death: OnDeath,
}

/// What a `missing-data` outcome comes to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MissingDataPolicy {
    /// It stays missing data: its money is at stake until the measurement arrives.
    #[default]
    AtStake,
    /// Without a usable measurement this many days after the window closed, it is not met.
    NotMetAfterDays(u32),
    /// Without a usable measurement this many days after the window closed, it is met.
    MetAfterDays(u32),
}

impl MissingDataPolicy {
    /// True for the default (kept out of stored rule sets, which stay as they were).
    pub fn is_at_stake(&self) -> bool {
        *self == MissingDataPolicy::AtStake
    }

    /// The status missing data turns into and the days of grace after the window, if any.
    pub fn decides(self) -> Option<(bool, u32)> {
        match self {
            MissingDataPolicy::AtStake => None,
            MissingDataPolicy::NotMetAfterDays(n) => Some((false, n)),
            MissingDataPolicy::MetAfterDays(n) => Some((true, n)),
        }
    }

    /// The contract text of the policy.
    pub fn text(self) -> String {
        match self {
            MissingDataPolicy::AtStake => "at-stake".into(),
            MissingDataPolicy::NotMetAfterDays(n) => format!("not-met-after-days {n}"),
            MissingDataPolicy::MetAfterDays(n) => format!("met-after-days {n}"),
        }
    }
}

/// What a death before an outcome could be measured means.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnDeath {
    /// The patient is excluded from the outcome (nothing owed either way).
    #[default]
    Excluded,
    /// The outcome is not met (early death is the worst non-response).
    NotMet,
    /// The window ends at death: the events up to the death decide (event outcomes only).
    UntilDeath,
}

impl OnDeath {
    /// True for the default (kept out of stored rule sets, which stay as they were).
    pub fn is_excluded(&self) -> bool {
        *self == OnDeath::Excluded
    }

    /// The contract text.
    pub fn text(self) -> &'static str {
        match self {
            OnDeath::Excluded => "excluded",
            OnDeath::NotMet => "not-met",
            OnDeath::UntilDeath => "until-death",
        }
    }
}

/// Which value of several in a window decides.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Pick {
    /// The last one.
    Latest,
    /// The first one.
    First,
    /// The lowest.
    Lowest,
    /// The highest.
    Highest,
    /// The mean.
    Mean,
    /// Any that meets the target (coded responses).
    Any,
}

/// Absolute or relative change.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Change {
    /// follow-up - baseline.
    Absolute,
    /// (follow-up - baseline) / baseline, in percent.
    Relative,
}

/// What an event is recorded as.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EventSource {
    /// An Encounter with a diagnosis or reason in the value set.
    Encounter,
    /// A Condition in the value set with onset in the window.
    Condition,
    /// A Procedure with a code in the value set performed in the window (a fracture repair, a
    /// revascularisation).
    Procedure,
}

/// An outcome rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A lab value in a window meets a target.
    LabTarget {
        /// Lab name.
        lab: String,
        /// Window.
        window: DayWindow,
        /// Which value.
        pick: Pick,
        /// Target in the lab's unit.
        target: Comparison,
    },
    /// Change of a lab from its baseline.
    ChangeFromBaseline {
        /// Lab name.
        lab: String,
        /// Baseline window (latest value in it).
        baseline: DayWindow,
        /// Follow-up window.
        window: DayWindow,
        /// Which follow-up value.
        pick: Pick,
        /// Absolute or relative.
        change: Change,
        /// Target on the change.
        target: Comparison,
    },
    /// At most `max_events` events in a window.
    Event {
        /// Encounter or Condition.
        source: EventSource,
        /// Value set of diagnoses.
        diagnosis: String,
        /// Encounter classes (v3 ActCode codes); empty for any.
        encounter_class: Vec<String>,
        /// Window.
        window: DayWindow,
        /// Only events while on therapy (supply plus this grace).
        on_therapy_grace_days: Option<u32>,
        /// Events allowed.
        max_events: u32,
    },
    /// A coded Observation value in a value set.
    CodedResponse {
        /// Value set of observation codes.
        observation: String,
        /// Value set of responding values.
        response: String,
        /// Window.
        window: DayWindow,
        /// Which value (any, first, latest).
        pick: Pick,
    },
    /// Proportion of days covered.
    Adherence {
        /// Window.
        window: DayWindow,
        /// Minimum PDC (decimal string, 0..1).
        min_pdc: String,
        /// Therapy value set.
        valueset: String,
    },
    /// No supply gap longer than `max_gap_days`.
    Persistence {
        /// Window.
        window: DayWindow,
        /// Longest allowed gap.
        max_gap_days: u32,
        /// Therapy value set.
        valueset: String,
    },
    /// Alive on day `day`.
    Survival {
        /// Day after index.
        day: i32,
    },
    /// All of the named outcomes are met.
    All {
        /// Outcome ids.
        of: Vec<String>,
    },
    /// Any of the named outcomes is met.
    Any {
        /// Outcome ids.
        of: Vec<String>,
    },
}

impl RuleSet {
    /// The outcomes published as Measures and reported on (components of `all`/`any` marked
    /// `report = false` are not).
    pub fn reported(&self) -> impl Iterator<Item = &OutcomeDef> {
        self.outcomes.iter().filter(|o| o.report)
    }

    /// The ids of the reported outcomes.
    pub fn reported_ids(&self) -> Vec<&str> {
        self.reported().map(|o| o.id.as_str()).collect()
    }
}

impl Rule {
    /// The kind as written in the authoring form.
    pub fn kind(&self) -> &'static str {
        match self {
            Rule::LabTarget { .. } => "lab-target",
            Rule::ChangeFromBaseline { .. } => "change-from-baseline",
            Rule::Event { .. } => "event",
            Rule::CodedResponse { .. } => "coded-response",
            Rule::Adherence { .. } => "adherence",
            Rule::Persistence { .. } => "persistence",
            Rule::Survival { .. } => "survival",
            Rule::All { .. } => "all",
            Rule::Any { .. } => "any",
        }
    }

    /// The day after which the outcome can no longer change (None for combinations).
    pub fn closes(&self) -> Option<i32> {
        match self {
            Rule::LabTarget { window, .. }
            | Rule::ChangeFromBaseline { window, .. }
            | Rule::Event { window, .. }
            | Rule::CodedResponse { window, .. }
            | Rule::Adherence { window, .. }
            | Rule::Persistence { window, .. } => Some(window.to),
            Rule::Survival { day } => Some(*day),
            Rule::All { .. } | Rule::Any { .. } => None,
        }
    }
}

/// A payment term (settled by the settlement engine).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct PaymentTerm {
    /// Payment stream code.
    pub stream: String,
    /// Kind (see FORMAT.md).
    pub kind: String,
    /// Outcomes it depends on.
    pub outcomes: Vec<String>,
    /// Fixed amount (decimal string, in the contract currency).
    pub amount: Option<String>,
    /// Share of the patient's drug cost (percent, decimal string).
    pub share_of_drug_cost: Option<String>,
    /// Refund only the cost up to the failure date.
    pub cost_until_failure: bool,
    /// Rebate share (percent).
    pub share: Option<String>,
    /// Event rate above which an event-rate rebate applies.
    pub rate_above: Option<String>,
    /// Tiers: (minimum responder rate, share in percent).
    pub tiers: Vec<(String, String)>,
    /// Cap as a share of the price (percent).
    pub cap_share_of_price: Option<String>,
    /// Floor amount.
    pub floor: Option<String>,
    /// The days after the index date whose exposures the term's drug cost covers (absent: from
    /// the index date to the evaluation day, as rule sets stored before the option were settled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_days: Option<DayWindow>,
    /// Streams whose owed lines already pay an exposure back: this term's drug cost leaves those
    /// exposures out (a fill supplied as free drug earns no rebate).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost_excludes: Vec<String>,
}

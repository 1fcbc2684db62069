//! Deciding one person's results for one contract: index date, eligibility, exclusions and one
//! status per outcome, each with the evidence that decided it.
//!
//! The evaluation is a pure function of the person's visible facts, the contract and the
//! evaluation day: the same inputs give the same result, in the same order.

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;

use super::codes::{any_in, Code};
use super::facts::*;
use super::plan::Plan;
use super::result::*;
use super::supply::{self, Fill};
use crate::contracts::rules::*;
use crate::days::{self, Day};
use crate::search::units;

/// A fact with the resource version it came from.
#[derive(Debug, Clone)]
pub struct Item<'a, T> {
    /// The fact.
    pub fact: &'a T,
    /// Resource type.
    pub rtype: &'static str,
    /// Resource id.
    pub id: Arc<str>,
    /// Version.
    pub version: u64,
    /// When this version was recorded (ms since the epoch).
    pub recorded_ms: i64,
}

impl<T> Item<'_, T> {
    fn evidence(&self, role: &'static str, note: impl Into<String>) -> Evidence {
        Evidence {
            rtype: self.rtype,
            id: self.id.clone(),
            version: self.version,
            role,
            note: note.into(),
        }
    }
}

/// Everything visible about one person.
#[derive(Default)]
pub struct View<'a> {
    /// The person.
    pub person: Arc<str>,
    /// Linked Patient ids.
    pub patients: Vec<Arc<str>>,
    /// Patient records.
    pub demographics: Vec<Item<'a, PatientFact>>,
    /// Exposures with their resolved medication codes.
    pub exposures: Vec<(Item<'a, ExposureFact>, &'a [Code])>,
    /// Observations.
    pub observations: Vec<Item<'a, ObservationFact>>,
    /// Conditions.
    pub conditions: Vec<Item<'a, ConditionFact>>,
    /// Encounters.
    pub encounters: Vec<Item<'a, EncounterFact>>,
    /// Coverages.
    pub coverages: Vec<Item<'a, CoverageFact>>,
}

fn compare(op: &str, left: Decimal, right: Decimal) -> bool {
    match op {
        "<" => left < right,
        "<=" => left <= right,
        ">" => left > right,
        ">=" => left >= right,
        _ => left == right,
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_default()
}

/// A usable lab value in the lab's unit.
struct LabValue<'v, 'a> {
    day: Day,
    instant: i64,
    value: Decimal,
    item: &'v Item<'a, ObservationFact>,
}

/// The usable values of a lab, deduplicated, in time order; unusable and duplicate results go
/// to `notes` as evidence.
fn lab_values<'v, 'a>(
    plan: &Plan,
    view: &'v View<'a>,
    lab: &str,
    notes: &mut Vec<Evidence>,
) -> Vec<LabValue<'v, 'a>> {
    let Some(def) = plan.rules.labs.get(lab) else {
        return Vec::new();
    };
    let set = plan.set(&def.valueset);
    let candidates: Vec<&Item<ObservationFact>> = view
        .observations
        .iter()
        .filter(|o| any_in(&o.fact.codes, set))
        .collect();
    let mut out: Vec<LabValue> = Vec::new();
    for o in &candidates {
        // a later record with a shared identifier (an amendment sent as a new resource, or its
        // retraction) replaces this one
        let replaced = candidates.iter().find(|other| {
            !Arc::ptr_eq(&other.id, &o.id)
                && (other.recorded_ms, &other.id) > (o.recorded_ms, &o.id)
                && other
                    .fact
                    .identifiers
                    .iter()
                    .any(|i| o.fact.identifiers.contains(i))
        });
        if let Some(r) = replaced {
            notes.push(o.evidence("replaced", format!("replaced by Observation/{}", r.id)));
            continue;
        }
        if !o.fact.counts {
            continue;
        }
        let (value, unit) = match &o.fact.value {
            ObsValue::Quantity { value, unit } => (value, unit),
            ObsValue::None(reason) => {
                // a measurement attempted without a result: evidence for a missing-data decision
                notes.push(o.evidence(
                    "no-result",
                    format!(
                        "{lab} on {} has no result (dataAbsentReason: {})",
                        days::format(o.fact.day),
                        reason.as_deref().unwrap_or("none given")
                    ),
                ));
                continue;
            }
            ObsValue::Coded(_) => continue,
        };
        let analyte = o
            .fact
            .loinc
            .as_deref()
            .and_then(units::analyte)
            .or(plan.analyte(lab));
        match units::convert(analyte, unit, *value, &def.unit) {
            Some(v) => out.push(LabValue {
                day: o.fact.day,
                instant: o.fact.instant,
                value: v.round_dp(6),
                item: o,
            }),
            None => notes.push(o.evidence(
                "unusable",
                format!("{value} {unit} cannot be converted to {}", def.unit),
            )),
        }
    }
    out.sort_by(|a, b| {
        (a.day, a.instant, a.value, &a.item.id).cmp(&(b.day, b.instant, b.value, &b.item.id))
    });
    let mut deduped: Vec<LabValue> = Vec::with_capacity(out.len());
    for v in out {
        match deduped.last() {
            Some(last) if last.instant == v.instant && last.value == v.value => {
                notes.push(v.item.evidence(
                    "duplicate",
                    format!("same value and time as Observation/{}", last.item.id),
                ));
            }
            _ => deduped.push(v),
        }
    }
    deduped
}

fn pick<'x, 'v, 'a>(
    values: &'x [LabValue<'v, 'a>],
    how: Pick,
) -> Option<(Decimal, Vec<&'x LabValue<'v, 'a>>)> {
    let last = values.last()?;
    Some(match how {
        Pick::Latest | Pick::Any => (last.value, vec![last]),
        Pick::First => (values[0].value, vec![&values[0]]),
        Pick::Lowest => {
            let v = values.iter().min_by_key(|v| v.value)?;
            (v.value, vec![v])
        }
        Pick::Highest => {
            let v = values.iter().max_by_key(|v| v.value)?;
            (v.value, vec![v])
        }
        Pick::Mean => {
            let sum: Decimal = values.iter().map(|v| v.value).sum();
            (
                (sum / Decimal::from(values.len() as u64)).round_dp(6),
                values.iter().collect(),
            )
        }
    })
}

/// The exposures of a value set that count, in time order.
fn exposures_in<'v, 'a>(
    view: &'v View<'a>,
    plan: &Plan,
    valueset: &str,
    sources: Option<&[Source]>,
) -> Vec<&'v Item<'a, ExposureFact>> {
    let set = plan.set(valueset);
    view.exposures
        .iter()
        .filter(|(e, codes)| {
            e.fact.counts
                && sources.is_none_or(|s| s.contains(&e.fact.source))
                && any_in(codes, set)
        })
        .map(|(e, _)| e)
        .collect()
}

/// The records of one exposure counted once (`[drug] same_exposure_days`): records from
/// different sources dated within that many days of a record already grouped are one exposure,
/// and the record of the first source in the plan's source order (the earliest among equals)
/// stands for it, with its day and its amount. Without the option every record counts.
fn one_per_exposure<'v, 'a>(
    plan: &Plan,
    list: Vec<&'v Item<'a, ExposureFact>>,
) -> Vec<&'v Item<'a, ExposureFact>> {
    let Some(n) = plan.rules.contract.same_exposure_days else {
        return list;
    };
    let n = n as Day;
    let mut groups: Vec<Vec<&'v Item<'a, ExposureFact>>> = Vec::new();
    for e in list {
        let joins = groups.iter_mut().find(|g| {
            g.iter().all(|x| x.fact.source != e.fact.source)
                && g.iter().any(|x| (x.fact.day - e.fact.day).abs() <= n)
        });
        match joins {
            Some(g) => g.push(e),
            None => groups.push(vec![e]),
        }
    }
    let rank = |e: &Item<'_, ExposureFact>| {
        plan.source_order
            .iter()
            .position(|s| *s == e.fact.source)
            .unwrap_or(usize::MAX)
    };
    let mut out: Vec<&'v Item<'a, ExposureFact>> = groups
        .into_iter()
        .filter_map(|g| {
            g.into_iter()
                .min_by_key(|e| (rank(e), e.fact.day, e.fact.instant))
        })
        .collect();
    out.sort_by_key(|e| (e.fact.day, e.fact.instant));
    out
}

/// True when `e` is another source's record of the exposure `of` stands for (dated within
/// `[drug] same_exposure_days` of it): it is not an earlier exposure.
fn same_exposure(plan: &Plan, e: &Item<'_, ExposureFact>, of: &Item<'_, ExposureFact>) -> bool {
    plan.rules.contract.same_exposure_days.is_some_and(|n| {
        e.fact.source != of.fact.source && (of.fact.day - e.fact.day).abs() <= n as Day
    })
}

/// The units a record is priced as: with `[drug] unit` the stated dose or quantity converted to
/// the unit and divided by its size, rounded up (a dispense's quantity without a convertible unit
/// is a count of units; an administration without a dose is not priced); without it a
/// dispense's quantity, an administration one unit.
fn priced_units(plan: &Plan, e: &ExposureFact) -> Option<Decimal> {
    let Some((size, unit)) = &plan.rules.contract.unit_size else {
        return e.quantity;
    };
    let size = Decimal::from_str(size).ok()?;
    let converted = e
        .amount
        .as_ref()
        .and_then(|(v, u)| units::convert(None, u, *v, unit));
    match (converted, e.source) {
        (Some(x), _) => x.checked_div(size).map(|u| u.ceil()),
        (None, Source::MedicationDispense) => e.quantity,
        (None, _) => None,
    }
}

/// The days the person died on (None: alive; Some(None): deceased, date unknown).
fn death<'v, 'a>(view: &'v View<'a>) -> Option<(Option<Day>, &'v Item<'a, PatientFact>)> {
    let mut unknown = None;
    let mut best: Option<(Day, &Item<PatientFact>)> = None;
    for p in &view.demographics {
        match p.fact.deceased {
            Deceased::On(d) if best.is_none_or(|(b, _)| d < b) => best = Some((d, p)),
            Deceased::Unknown if unknown.is_none() => unknown = Some(p),
            _ => {}
        }
    }
    match (best, unknown) {
        (Some((d, p)), _) => Some((Some(d), p)),
        (None, Some(p)) => Some((None, p)),
        _ => None,
    }
}

/// Evaluate one person against one contract on `today`. None when the person has no qualifying
/// exposure in the intake period (not in the initial population).
pub fn evaluate(plan: &Plan, view: &View<'_>, today: Day) -> Option<PersonResult> {
    let rules = &plan.rules;
    let cohort = &rules.cohort;
    let drug = one_per_exposure(
        plan,
        exposures_in(view, plan, &cohort.exposure, Some(&plan.sources)),
    );
    let index_exp = drug.iter().find(|e| {
        e.fact.day >= plan.intake.0 && e.fact.day <= plan.intake.1 && e.fact.day <= today
    })?;
    let index = index_exp.fact.day;
    let mut result = PersonResult {
        person: view.person.clone(),
        patients: view.patients.clone(),
        index,
        membership: Membership::Member,
        reason: String::new(),
        evidence: vec![index_exp.evidence(
            "index",
            format!(
                "first {} on {}",
                index_exp.fact.source.name(),
                days::format(index)
            ),
        )],
        outcomes: Vec::new(),
        sex: view.demographics.iter().find_map(|p| p.fact.gender.clone()),
        birth: view.demographics.iter().find_map(|p| p.fact.birth),
        performer: index_exp.fact.performer.clone(),
        drug: Vec::new(),
    };
    if let Some(w) = cohort.washout_days {
        // a counting exposure to the drug from the washout sources (default: any source) makes a
        // prior user
        let earlier = exposures_in(
            view,
            plan,
            &cohort.exposure,
            plan.washout_sources.as_deref(),
        )
        .into_iter()
        .find(|e| {
            e.fact.day < index
                && e.fact.day >= index - w as i32
                && !same_exposure(plan, e, index_exp)
        });
        if let Some(e) = earlier {
            result.membership = Membership::NotNewUser;
            result.reason = format!(
                "exposure on {} within the {w}-day washout before the index date",
                days::format(e.fact.day)
            );
            result
                .evidence
                .push(e.evidence("washout", "prior exposure"));
            return Some(result);
        }
    }
    let mut failures: Vec<String> = Vec::new();
    eligibility(plan, view, index, &mut failures, &mut result.evidence);
    if !failures.is_empty() {
        result.membership = Membership::Ineligible;
        result.reason = failures.join("; ");
        return Some(result);
    }
    let mut records = exposures_in(view, plan, &rules.contract.drug, Some(&plan.sources));
    if rules.contract.price_stopped {
        // stopped administrations that state a dose: the drug was used, so it is paid for (once:
        // they are matched with the other records of their exposure like any record)
        let set = plan.set(&rules.contract.drug);
        records.extend(
            view.exposures
                .iter()
                .filter(|(e, codes)| {
                    e.fact.stopped
                        && e.fact.source == Source::MedicationAdministration
                        && plan.sources.contains(&e.fact.source)
                        && e.fact.amount.is_some()
                        && any_in(codes, set)
                })
                .map(|(e, _)| e),
        );
        records.sort_by_key(|e| (e.fact.day, e.fact.instant));
    }
    result.drug = one_per_exposure(plan, records)
        .into_iter()
        .filter(|e| e.fact.day >= index && e.fact.day <= today)
        .map(|e| DrugUse {
            day: e.fact.day,
            quantity: priced_units(plan, e.fact),
            evidence: e.evidence("drug", ""),
        })
        .collect();
    let died = death(view);
    let mut done: Vec<OutcomeResult> = Vec::new();
    for (position, o) in rules.outcomes.iter().enumerate() {
        let mut r = outcome(plan, view, o, index, today, died, &done);
        missing_data_policy(&mut r, o, today);
        (r.id, r.rule) = plan.outcome_names(position);
        done.push(r);
    }
    result.outcomes = done;
    Some(result)
}

fn eligibility(
    plan: &Plan,
    view: &View<'_>,
    index: Day,
    failures: &mut Vec<String>,
    evidence: &mut Vec<Evidence>,
) {
    let c = &plan.rules.cohort;
    if c.age_min.is_some() || c.age_max.is_some() {
        match view
            .demographics
            .iter()
            .find_map(|p| p.fact.birth.map(|b| (b, p)))
        {
            None => failures.push("no birth date to check the age at index".into()),
            Some((birth, p)) => {
                let age = days::age_on(birth, index).unwrap_or(-1);
                evidence.push(p.evidence("eligibility", format!("age {age} at index")));
                if c.age_min.is_some_and(|m| age < m as i32)
                    || c.age_max.is_some_and(|m| age > m as i32)
                {
                    failures.push(format!(
                        "age {age} at index is outside the contract's range"
                    ));
                }
            }
        }
    }
    if let Some(sex) = &c.sex {
        if !view
            .demographics
            .iter()
            .any(|p| p.fact.gender.as_deref() == Some(sex.as_str()))
        {
            failures.push(format!("sex is not {sex}"));
        }
    }
    for d in &c.diagnoses {
        let set = plan.set(d);
        let found = view.conditions.iter().find(|x| {
            x.fact.counts
                && x.fact.active
                && any_in(&x.fact.codes, set)
                && x.fact.onset.is_none_or(|o| o <= index)
        });
        match found {
            Some(x) => evidence.push(x.evidence("eligibility", format!("diagnosis in {d}"))),
            None => failures.push(format!(
                "no active diagnosis in {d} with onset on or before the index date"
            )),
        }
    }
    for l in &c.labs {
        let mut notes = Vec::new();
        let values = lab_values(plan, view, &l.lab, &mut notes);
        let latest = values
            .iter()
            .rev()
            .find(|v| v.day <= index && v.day >= index - l.within_days as i32);
        match latest {
            Some(v) => {
                evidence.push(v.item.evidence(
                    "baseline",
                    format!("{} {} {}", l.lab, v.value, l.value.unit),
                ));
                if !compare(&l.value.op, v.value, dec(&l.value.value)) {
                    failures.push(format!(
                        "baseline {} {} {} does not satisfy {}",
                        l.lab, v.value, l.value.unit, l.value.text
                    ));
                }
            }
            None => failures.push(format!(
                "no {} within {} days before the index date",
                l.lab, l.within_days
            )),
        }
        evidence.extend(notes);
    }
    for f in &c.findings {
        let (obs, vals) = (plan.set(&f.observation), plan.set(&f.value_in));
        let found = view.observations.iter().find(|o| {
            o.fact.counts
                && any_in(&o.fact.codes, obs)
                && o.fact.day <= index
                && o.fact.day >= index - f.within_days as i32
                && matches!(&o.fact.value, ObsValue::Coded(cs) if any_in(cs, vals))
        });
        match found {
            Some(o) => {
                evidence.push(o.evidence("eligibility", format!("finding in {}", f.value_in)))
            }
            None => failures.push(format!(
                "no {} finding in {} within {} days before the index date",
                f.observation, f.value_in, f.within_days
            )),
        }
    }
    for t in &c.therapies {
        // dated in the look-back, or (supply_counts) supplied into it
        let from = index - t.within_days as i32;
        let found = exposures_in(view, plan, &t.valueset, None)
            .into_iter()
            .rev()
            .find(|e| {
                let supplied_to = e
                    .fact
                    .day
                    .saturating_add(e.fact.days_supply.clamp(1, 36_600) as i32 - 1);
                e.fact.day <= index
                    && (e.fact.day >= from || (t.supply_counts && supplied_to >= from))
            });
        match found {
            Some(e) => evidence
                .push(e.evidence("eligibility", format!("background therapy {}", t.valueset))),
            None => failures.push(format!(
                "no {} therapy within {} days before the index date",
                t.valueset, t.within_days
            )),
        }
    }
    if c.coverage {
        let found = view.coverages.iter().find(|cv| {
            cv.fact.active
                && cv
                    .fact
                    .payors
                    .iter()
                    .any(|p| plan.payer_refs.iter().any(|r| r.as_str() == p.as_ref()))
                && cv.fact.start.is_none_or(|s| s <= index)
                && cv.fact.end.is_none_or(|e| e >= index)
        });
        match found {
            Some(cv) => evidence.push(cv.evidence("eligibility", "coverage by the payer at index")),
            None => failures.push(format!(
                "no coverage by {} active at the index date",
                plan.rules.contract.payer.name
            )),
        }
    }
}

/// What decides one outcome before its rule runs.
struct Frame {
    window: (Day, Day),
    /// Last day data can count (window end, or the death day).
    last: Day,
    /// True once no more data can change the result.
    closed: bool,
    /// Death within or before the window that excludes (date, evidence).
    death: Option<(Option<Day>, Evidence)>,
}

fn decided(status: Status, reason: String) -> OutcomeResult {
    OutcomeResult {
        id: Arc::default(),
        status,
        reason,
        value: None,
        unit: String::new(),
        window: (0, 0),
        rule: Arc::default(),
        decided_on: None,
        evidence: Vec::new(),
    }
}

#[allow(clippy::too_many_arguments)]
fn outcome(
    plan: &Plan,
    view: &View<'_>,
    o: &OutcomeDef,
    index: Day,
    today: Day,
    died: Option<(Option<Day>, &Item<'_, PatientFact>)>,
    done: &[OutcomeResult],
) -> OutcomeResult {
    match &o.rule {
        Rule::All { of } | Rule::Any { of } => combine(&o.rule, of, done),
        rule => {
            let w = match rule {
                Rule::Survival { day } => (index, index + day),
                _ => {
                    let close = rule.closes().unwrap_or(0);
                    let from = match rule {
                        Rule::LabTarget { window, .. }
                        | Rule::ChangeFromBaseline { window, .. }
                        | Rule::Event { window, .. }
                        | Rule::CodedResponse { window, .. }
                        | Rule::Adherence { window, .. }
                        | Rule::Persistence { window, .. } => window.from,
                        _ => 0,
                    };
                    (index + from, index + close)
                }
            };
            let death = if plan.rules.exclusions.death && !matches!(rule, Rule::Survival { .. }) {
                died.and_then(|(d, p)| match d {
                    Some(d) if d <= w.1 => Some((
                        Some(d),
                        p.evidence("death", format!("died on {}", days::format(d))),
                    )),
                    None => Some((
                        None,
                        p.evidence("death", "recorded as deceased without a date"),
                    )),
                    _ => None,
                })
            } else {
                None
            };
            let last = match &death {
                Some((Some(d), _)) => w.1.min(*d),
                _ => w.1,
            };
            let frame = Frame {
                window: w,
                last,
                closed: today > w.1
                    || death
                        .as_ref()
                        .is_some_and(|(d, _)| d.is_some_and(|d| d <= today)),
                death,
            };
            match exclusion(plan, view, index, &frame) {
                Some(x) => x,
                None => {
                    let mut r = run(plan, view, o, rule, index, today, &frame);
                    if let Some((d, ev)) = &frame.death {
                        died_before_measured(&mut r, o, rule, *d, ev);
                    }
                    r
                }
            }
            .with_window(w)
        }
    }
}

/// Death decides only what the data before it could not: a pending or missing-data outcome, or a
/// `met` that only the whole window could confirm (events, adherence, persistence). The outcome
/// says what such a death means: excluded (the default), not met, or (events) the window ends at
/// the death, so the events before it decide.
fn died_before_measured(
    r: &mut OutcomeResult,
    o: &OutcomeDef,
    rule: &Rule,
    d: Option<Day>,
    ev: &Evidence,
) {
    let undecided = matches!(r.status, Status::MissingData | Status::Pending)
        || (r.status == Status::Met
            && matches!(
                rule,
                Rule::Event { .. } | Rule::Adherence { .. } | Rule::Persistence { .. }
            ));
    if !undecided {
        return;
    }
    let (status, words) = match o.on_death {
        OnDeath::Excluded => (Status::Excluded, "before the outcome could be measured"),
        OnDeath::NotMet => (
            Status::NotMet,
            "before the outcome could be measured: not met (on_death = not-met)",
        ),
        // with a date, the window ended at the death and the events before it decided
        OnDeath::UntilDeath if d.is_some() && r.status == Status::Met => {
            r.reason = format!(
                "{}; the window ended at the death (on_death = until-death)",
                r.reason
            );
            r.evidence.push(ev.clone());
            return;
        }
        OnDeath::UntilDeath => (Status::Excluded, "before the outcome could be measured"),
    };
    r.status = status;
    r.reason = format!("{} {words}", ev.note);
    r.decided_on = d;
    r.evidence.push(ev.clone());
}

/// A `missing-data` outcome under a `missing_data` policy: once the grace days after the window
/// have passed without a usable measurement it is decided (not met, or met), on the window's last
/// day (the day a measurement would have decided it); until then it stays missing data and its
/// reason names the deadline. A measurement that arrives later still decides, as late data do.
fn missing_data_policy(r: &mut OutcomeResult, o: &OutcomeDef, today: Day) {
    let Some((met, grace)) = o.missing_data.decides() else {
        return;
    };
    if r.status != Status::MissingData {
        return;
    }
    let deadline = r.window.1 + grace as Day;
    let status = if met { Status::Met } else { Status::NotMet };
    if today > deadline {
        r.status = status;
        r.reason = format!(
            "{}; no usable measurement by {}: {} (missing_data = {})",
            r.reason,
            days::format(deadline),
            status.code(),
            o.missing_data.text()
        );
        r.decided_on = Some(r.window.1);
    } else {
        r.reason = format!(
            "{}; counted as {} without a usable measurement by {}",
            r.reason,
            status.code(),
            days::format(deadline)
        );
    }
}

impl OutcomeResult {
    fn with_window(mut self, w: (Day, Day)) -> Self {
        self.window = w;
        self
    }
}

fn exclusion(plan: &Plan, view: &View<'_>, index: Day, f: &Frame) -> Option<OutcomeResult> {
    let ex = &plan.rules.exclusions;
    for d in &ex.diagnoses {
        let set = plan.set(d);
        if let Some(c) = view.conditions.iter().find(|c| {
            c.fact.counts
                && any_in(&c.fact.codes, set)
                && c.fact.onset.is_none_or(|o| o <= f.window.1)
        }) {
            let mut r = decided(Status::Excluded, format!("exclusion diagnosis in {d}"));
            r.decided_on = c.fact.onset;
            r.evidence
                .push(c.evidence("exclusion", format!("diagnosis in {d}")));
            return Some(r);
        }
    }
    if !ex.switches.is_empty() {
        let drug = exposures_in(view, plan, &plan.rules.cohort.exposure, None);
        for s in &ex.switches {
            let switched = exposures_in(view, plan, s, None).into_iter().find(|e| {
                e.fact.day > index
                    && e.fact.day <= f.window.1
                    && !drug.iter().any(|d| d.fact.day >= e.fact.day)
            });
            if let Some(e) = switched {
                let mut r = decided(
                    Status::Excluded,
                    format!("switched to {s} on {}", days::format(e.fact.day)),
                );
                r.decided_on = Some(e.fact.day);
                r.evidence
                    .push(e.evidence("switch", format!("therapy in {s}")));
                return Some(r);
            }
        }
    }
    None
}

fn combine(rule: &Rule, of: &[String], done: &[OutcomeResult]) -> OutcomeResult {
    let parts: Vec<&OutcomeResult> = of
        .iter()
        .filter_map(|id| done.iter().find(|d| *d.id == **id))
        .collect();
    let has = |s: Status| parts.iter().any(|p| p.status == s);
    let status = if matches!(rule, Rule::All { .. }) {
        if has(Status::NotMet) {
            Status::NotMet
        } else if has(Status::Excluded) {
            Status::Excluded
        } else if has(Status::MissingData) {
            Status::MissingData
        } else if has(Status::Pending) {
            Status::Pending
        } else {
            Status::Met
        }
    } else if has(Status::Met) {
        Status::Met
    } else if has(Status::Pending) {
        Status::Pending
    } else if has(Status::MissingData) {
        Status::MissingData
    } else if has(Status::NotMet) {
        Status::NotMet
    } else {
        Status::Excluded
    };
    let reason = parts
        .iter()
        .map(|p| format!("{}: {}", p.id, p.status.code()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut r = decided(status, reason);
    r.window = (
        parts.iter().map(|p| p.window.0).min().unwrap_or(0),
        parts.iter().map(|p| p.window.1).max().unwrap_or(0),
    );
    r.decided_on = parts.iter().filter_map(|p| p.decided_on).max();
    r.evidence = parts
        .iter()
        .flat_map(|p| p.evidence.iter().cloned())
        .collect();
    r
}

fn run(
    plan: &Plan,
    view: &View<'_>,
    o: &OutcomeDef,
    rule: &Rule,
    index: Day,
    today: Day,
    f: &Frame,
) -> OutcomeResult {
    let in_window = |d: Day| d >= f.window.0 && d <= f.last && d <= today;
    let open_reason = || format!("window open until {}", days::format(f.window.1));
    match rule {
        Rule::LabTarget {
            lab,
            pick: how,
            target,
            ..
        } => {
            let mut notes = Vec::new();
            let values: Vec<LabValue> = lab_values(plan, view, lab, &mut notes)
                .into_iter()
                .filter(|v| in_window(v.day))
                .collect();
            let mut r = lab_decision(&values, *how, f, lab, &open_reason, |v| {
                (
                    compare(&target.op, v, dec(&target.value)),
                    format!(
                        "{lab} {v} {} {} target {}",
                        target.unit,
                        if compare(&target.op, v, dec(&target.value)) {
                            "meets"
                        } else {
                            "misses"
                        },
                        target.text
                    ),
                )
            });
            r.unit = target.unit.clone();
            r.evidence.extend(notes);
            r
        }
        Rule::ChangeFromBaseline {
            lab,
            baseline,
            pick: how,
            change,
            target,
            ..
        } => {
            let mut notes = Vec::new();
            let all = lab_values(plan, view, lab, &mut notes);
            let base = all
                .iter()
                .rev()
                .find(|v| v.day >= index + baseline.from && v.day <= index + baseline.to);
            let Some(base) = base else {
                let mut r = if f.closed {
                    decided(
                        Status::MissingData,
                        format!(
                            "no baseline {lab} in days {}..{}",
                            baseline.from, baseline.to
                        ),
                    )
                } else {
                    decided(
                        Status::Pending,
                        format!("{}; no baseline {lab} yet", open_reason()),
                    )
                };
                r.evidence.extend(notes);
                return r;
            };
            let (b, base_item) = (base.value, base.item);
            let values: Vec<LabValue> = all.into_iter().filter(|v| in_window(v.day)).collect();
            let unit = if *change == Change::Relative {
                "%".to_string()
            } else {
                plan.rules
                    .labs
                    .get(lab)
                    .map(|l| l.unit.clone())
                    .unwrap_or_default()
            };
            let delta_of = |v: Decimal| match change {
                Change::Absolute => v - b,
                Change::Relative if b.is_zero() => Decimal::ZERO,
                Change::Relative => ((v - b) * Decimal::from(100) / b).round_dp(4),
            };
            let mut r = lab_decision(&values, *how, f, lab, &open_reason, |v| {
                let delta = delta_of(v);
                let ok = compare(&target.op, delta, dec(&target.value));
                (
                    ok,
                    format!(
                        "{lab} {v} vs baseline {b}: change {delta} {unit} {} target {}",
                        if ok { "meets" } else { "misses" },
                        target.text
                    ),
                )
            });
            r.value = r.value.map(delta_of);
            r.unit = unit;
            r.evidence
                .insert(0, base_item.evidence("baseline", format!("{lab} {b}")));
            r.evidence.extend(notes);
            r
        }
        Rule::Event {
            source,
            diagnosis,
            window: _,
            on_therapy_grace_days,
            max_events,
            ..
        } => {
            let set = plan.set(diagnosis);
            let classes = plan.classes(&o.id);
            let mut events: Vec<(Day, Evidence)> = Vec::new();
            match source {
                EventSource::Encounter => {
                    for e in &view.encounters {
                        if !e.fact.counts || !in_window(e.fact.day) {
                            continue;
                        }
                        if !classes.is_empty()
                            && !e.fact.class.is_some_and(|c| classes.contains(&c))
                        {
                            continue;
                        }
                        let coded = any_in(&e.fact.codes, set)
                            || e.fact.conditions.iter().any(|cid| {
                                view.conditions.iter().any(|c| {
                                    &*c.id == cid.as_ref()
                                        && c.fact.counts
                                        && any_in(&c.fact.codes, set)
                                })
                            });
                        if coded {
                            events.push((
                                e.fact.day,
                                e.evidence(
                                    "event",
                                    format!("encounter on {}", days::format(e.fact.day)),
                                ),
                            ));
                        }
                    }
                }
                EventSource::Procedure => {
                    for (e, codes) in &view.exposures {
                        if e.fact.source == Source::Procedure
                            && e.fact.counts
                            && any_in(codes, set)
                            && in_window(e.fact.day)
                        {
                            events.push((
                                e.fact.day,
                                e.evidence(
                                    "event",
                                    format!("procedure on {}", days::format(e.fact.day)),
                                ),
                            ));
                        }
                    }
                }
                EventSource::Condition => {
                    for c in &view.conditions {
                        if let Some(d) = c.fact.onset {
                            if c.fact.counts && any_in(&c.fact.codes, set) && in_window(d) {
                                events.push((
                                    d,
                                    c.evidence("event", format!("onset on {}", days::format(d))),
                                ));
                            }
                        }
                    }
                }
            }
            if let Some(grace) = on_therapy_grace_days {
                let fills: Vec<Fill> = exposures_in(view, plan, &plan.rules.cohort.exposure, None)
                    .iter()
                    .map(|e| Fill {
                        day: e.fact.day,
                        supply: e.fact.days_supply.max(1),
                    })
                    .collect();
                // on therapy: within a (shifted) supply or the grace days after it ends
                let iv: Vec<(Day, Day)> = supply::covered(&fills)
                    .into_iter()
                    .map(|(s, e)| (s, e.saturating_add(*grace as i32)))
                    .collect();
                events.retain(|(d, _)| supply::days_covered(&iv, *d, *d) > 0);
            }
            events.sort_by_key(|(d, e)| (*d, e.id.clone()));
            let count = events.len() as u32;
            let mut r = if count > *max_events {
                let mut r = decided(
                    Status::NotMet,
                    format!("{count} event(s) in the window, at most {max_events} allowed"),
                );
                r.decided_on = events.get(*max_events as usize).map(|e| e.0);
                r
            } else if !f.closed {
                decided(
                    Status::Pending,
                    format!("{}; {count} event(s) so far", open_reason()),
                )
            } else {
                let mut r = decided(
                    Status::Met,
                    format!("{count} event(s) in the window, at most {max_events} allowed"),
                );
                r.decided_on = Some(f.window.1);
                r
            };
            r.value = Some(Decimal::from(count));
            r.unit = "{events}".into();
            r.evidence = events.into_iter().map(|e| e.1).collect();
            r
        }
        Rule::CodedResponse {
            observation,
            response,
            pick: how,
            ..
        } => {
            let (oset, rset) = (plan.set(observation), plan.set(response));
            let mut obs: Vec<&Item<ObservationFact>> = view
                .observations
                .iter()
                .filter(|x| {
                    x.fact.counts
                        && any_in(&x.fact.codes, oset)
                        && in_window(x.fact.day)
                        && matches!(x.fact.value, ObsValue::Coded(_))
                })
                .collect();
            obs.sort_by(|a, b| {
                (a.fact.day, a.fact.instant, &a.id).cmp(&(b.fact.day, b.fact.instant, &b.id))
            });
            let responds = |x: &Item<ObservationFact>| matches!(&x.fact.value, ObsValue::Coded(cs) if any_in(cs, rset));
            let chosen: Option<&Item<ObservationFact>> = match how {
                Pick::Any => obs.iter().copied().find(|x| responds(x)).or(if f.closed {
                    obs.last().copied()
                } else {
                    None
                }),
                Pick::First => obs.first().copied(),
                _ => {
                    if f.closed {
                        obs.last().copied()
                    } else {
                        None
                    }
                }
            };
            match chosen {
                Some(x) => {
                    let ok = responds(x);
                    let mut r = decided(
                        if ok { Status::Met } else { Status::NotMet },
                        format!(
                            "{} on {} {} in {response}",
                            observation,
                            days::format(x.fact.day),
                            if ok { "is" } else { "is not" }
                        ),
                    );
                    r.decided_on = Some(x.fact.day);
                    r.evidence.push(x.evidence("value", "decisive assessment"));
                    r
                }
                None if !f.closed => decided(
                    Status::Pending,
                    format!("{}; {} assessment(s) so far", open_reason(), obs.len()),
                ),
                None => decided(
                    Status::MissingData,
                    format!("no {observation} assessment in the window"),
                ),
            }
        }
        Rule::Adherence {
            min_pdc, valueset, ..
        } => {
            let (fills_ev, iv) = coverage(view, plan, valueset);
            let len = (f.window.1 - f.window.0 + 1) as u32;
            let covered = supply::days_covered(&iv, f.window.0, f.window.1);
            let pdc = (Decimal::from(covered) / Decimal::from(len)).round_dp(4);
            let min = dec(min_pdc);
            let needed = (min * Decimal::from(len)).ceil();
            let mut r = if Decimal::from(covered) >= needed {
                decided(
                    Status::Met,
                    format!("{covered} of {len} days covered (PDC {pdc} >= {min_pdc})"),
                )
            } else if f.closed {
                decided(
                    Status::NotMet,
                    format!("{covered} of {len} days covered (PDC {pdc} < {min_pdc})"),
                )
            } else {
                let remaining = (f.window.1 - today.max(f.window.0 - 1)).max(0) as u32;
                let covered_past = supply::days_covered(&iv, f.window.0, today.min(f.window.1));
                if Decimal::from(covered_past + remaining) < needed {
                    decided(
                        Status::NotMet,
                        format!(
                            "at most {} of {len} days can still be covered (PDC below {min_pdc})",
                            covered_past + remaining
                        ),
                    )
                } else {
                    decided(
                        Status::Pending,
                        format!("{}; {covered} of {len} days covered so far", open_reason()),
                    )
                }
            };
            r.value = Some(pdc);
            r.unit = "1".into();
            r.evidence = fill_evidence(&fills_ev, f.window.1);
            r
        }
        Rule::Persistence {
            max_gap_days,
            valueset,
            ..
        } => {
            let (fills_ev, iv) = coverage(view, plan, valueset);
            let upto = f.window.1.min(today - 1);
            let (gap, start) = supply::longest_gap(&iv, f.window.0, upto);
            let mut r = if gap > *max_gap_days {
                let mut r = decided(
                    Status::NotMet,
                    format!("{gap}-day gap in supply from {}", days::format(start)),
                );
                r.decided_on = Some(start + *max_gap_days as i32);
                r
            } else if !f.closed {
                decided(
                    Status::Pending,
                    format!("{}; longest gap so far {gap} days", open_reason()),
                )
            } else {
                decided(
                    Status::Met,
                    format!("longest gap {gap} days (at most {max_gap_days})"),
                )
            };
            r.value = Some(Decimal::from(gap));
            r.unit = "d".into();
            r.evidence = fill_evidence(&fills_ev, f.window.1);
            r
        }
        Rule::Survival { day } => {
            let target = index + day;
            match death(view) {
                Some((Some(d), p)) if d <= target => {
                    let mut r = decided(
                        Status::NotMet,
                        format!("died on {} before day {day}", days::format(d)),
                    );
                    r.decided_on = Some(d);
                    r.evidence
                        .push(p.evidence("death", format!("died on {}", days::format(d))));
                    r
                }
                Some((None, p)) => {
                    let mut r = decided(
                        Status::MissingData,
                        "recorded as deceased without a date".into(),
                    );
                    r.evidence
                        .push(p.evidence("death", "deceased, date unknown"));
                    r
                }
                _ if today > target => {
                    let mut r = decided(
                        Status::Met,
                        format!("alive on day {day} ({})", days::format(target)),
                    );
                    r.decided_on = Some(target);
                    r.evidence = view
                        .demographics
                        .iter()
                        .map(|p| p.evidence("alive", "not recorded as deceased"))
                        .collect();
                    r
                }
                _ => decided(
                    Status::Pending,
                    format!("day {day} is {}", days::format(target)),
                ),
            }
        }
        Rule::All { .. } | Rule::Any { .. } => decided(Status::Pending, String::new()),
    }
}

/// The counting fills of a therapy and the days they cover (early fills shifted forward).
fn coverage<'v, 'a>(
    view: &'v View<'a>,
    plan: &Plan,
    valueset: &str,
) -> (Vec<&'v Item<'a, ExposureFact>>, Vec<(Day, Day)>) {
    let fills_ev = exposures_in(view, plan, valueset, None);
    let fills: Vec<Fill> = fills_ev
        .iter()
        .map(|e| Fill {
            day: e.fact.day,
            supply: e.fact.days_supply,
        })
        .collect();
    let iv = supply::covered(&fills);
    (fills_ev, iv)
}

/// The fills up to the end of a window as evidence.
fn fill_evidence(fills: &[&Item<'_, ExposureFact>], last: Day) -> Vec<Evidence> {
    fills
        .iter()
        .filter(|e| e.fact.day <= last)
        .map(|e| {
            e.evidence(
                "fill",
                format!(
                    "{} days' supply on {}",
                    e.fact.days_supply,
                    days::format(e.fact.day)
                ),
            )
        })
        .collect()
}

/// The decision on lab values in a window.
fn lab_decision(
    values: &[LabValue<'_, '_>],
    how: Pick,
    f: &Frame,
    lab: &str,
    open_reason: &dyn Fn() -> String,
    judge: impl Fn(Decimal) -> (bool, String),
) -> OutcomeResult {
    if values.is_empty() {
        return if f.closed {
            decided(
                Status::MissingData,
                format!("no usable {lab} result in the window"),
            )
        } else {
            decided(
                Status::Pending,
                format!("{}; no {lab} result yet", open_reason()),
            )
        };
    }
    if !f.closed && how != Pick::First {
        let mut r = decided(
            Status::Pending,
            format!("{}; {} {lab} result(s) so far", open_reason(), values.len()),
        );
        r.evidence = values
            .iter()
            .map(|v| v.item.evidence("value", format!("{lab} {}", v.value)))
            .collect();
        return r;
    }
    let Some((v, used)) = pick(values, how) else {
        return decided(
            Status::MissingData,
            format!("no usable {lab} result in the window"),
        );
    };
    let (ok, reason) = judge(v);
    let mut r = decided(if ok { Status::Met } else { Status::NotMet }, reason);
    r.value = Some(v);
    r.decided_on = used.iter().map(|u| u.day).max();
    r.evidence = used
        .iter()
        .map(|u| {
            u.item.evidence(
                "value",
                format!("{lab} {} on {}", u.value, days::format(u.day)),
            )
        })
        .collect();
    r
}

//! The generator's own judge: the "Evaluation semantics" of `contracts/FORMAT.md` applied to a
//! person's [`Model`], written from the specification alone (it shares no code with the engine).
//!
//! Where the specification leaves a case open, the judge does not guess: it answers
//! `Err(reason)` and the scenario is drawn again. Those cases are: a timestamp whose local date
//! is on or before the evaluation day while its UTC date is after it; a Condition that would be an
//! event of an encounter-sourced outcome (or the reverse); two results at the same instant with
//! different values; a death without a date when windowed data exist; an adherence or persistence
//! result that depends on how supply after the evaluation day or after a death is counted; an
//! on-therapy event whose coverage depends on whether early fills are shifted.

use std::collections::{BTreeMap, HashMap};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::model::{self, Deceased, Model};
use super::{dec, Code, Ctx};
use crate::contracts::rules::{
    Change, Comparison, DayWindow, EventSource, OnDeath, OutcomeDef, Pick, Rule,
};
use crate::days::{self, Day};
use crate::search::units;

/// An outcome status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Achieved.
    Met,
    /// Missed.
    NotMet,
    /// Window open.
    Pending,
    /// Window closed without a usable measurement.
    MissingData,
    /// Excluded.
    Excluded,
}

impl Status {
    /// The result code.
    pub fn code(self) -> &'static str {
        match self {
            Status::Met => "met",
            Status::NotMet => "not-met",
            Status::Pending => "pending",
            Status::MissingData => "missing-data",
            Status::Excluded => "excluded",
        }
    }
}

/// Cohort membership of a person in the initial population.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    NotNewUser,
    Ineligible,
    Member,
}

impl Membership {
    pub fn code(self) -> &'static str {
        match self {
            Membership::NotNewUser => "not-new-user",
            Membership::Ineligible => "ineligible",
            Membership::Member => "member",
        }
    }
}

/// The judgement of a person.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// None: not in the initial population.
    pub membership: Option<Membership>,
    pub index: Option<Day>,
    pub outcomes: BTreeMap<String, Status>,
}

type R<T> = Result<T, String>;

/// A usable numeric value: instant, local day, value in the lab's unit.
#[derive(Debug, Clone, Copy)]
pub struct Val {
    pub instant: i64,
    pub day: Day,
    pub value: Decimal,
}

/// The default order in which a source's record stands for an exposure several sources recorded,
/// after the contract's own `source_order`.
pub fn source_order(names: &[String]) -> Vec<model::Src> {
    let mut out: Vec<model::Src> = names.iter().filter_map(|s| model::Src::of(s)).collect();
    for s in [
        model::Src::Administration,
        model::Src::Procedure,
        model::Src::Dispense,
        model::Src::Request,
    ] {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// FORMAT.md `same_exposure_days`: taken in date order, a record joins the first exposure that
/// has no record of its source and a record within N days of it; the record of the first source
/// in the source order (then the earliest) stands for each exposure. Without the option every
/// record is its own exposure.
fn once_per_exposure<'m>(
    ctx: &Ctx,
    mut records: Vec<&'m model::Exposure>,
) -> Vec<&'m model::Exposure> {
    let Some(n) = ctx.rules.contract.same_exposure_days else {
        return records;
    };
    let n = n as Day;
    records.sort_by_key(|e| (e.day, model::instant(e.day, e.tz)));
    let mut groups: Vec<Vec<&model::Exposure>> = Vec::new();
    for e in records {
        let home = groups.iter().position(|g| {
            !g.iter().any(|x| x.src == e.src) && g.iter().any(|x| (x.day - e.day).abs() <= n)
        });
        match home {
            Some(i) => groups[i].push(e),
            None => groups.push(vec![e]),
        }
    }
    let order = source_order(&ctx.rules.contract.source_order);
    let rank = |e: &model::Exposure| order.iter().position(|s| *s == e.src).unwrap_or(usize::MAX);
    groups
        .into_iter()
        .filter_map(|g| {
            g.into_iter()
                .min_by_key(|e| (rank(e), e.day, model::instant(e.day, e.tz)))
        })
        .collect()
}

/// Judge a person on the evaluation day `ctx.today`.
pub fn judge(ctx: &Ctx, m: &Model) -> R<Verdict> {
    let today = ctx.today;
    check_dates(m, today)?;
    let j = Judge::new(ctx, m)?;
    let c = &ctx.rules.cohort;
    let sources: Vec<model::Src> = c.sources.iter().filter_map(|s| model::Src::of(s)).collect();
    let (is, ie) = ctx.intake;
    let records: Vec<&model::Exposure> = m
        .exposures
        .iter()
        .filter(|e| e.counts() && sources.contains(&e.src) && ctx.in_set(&c.exposure, &e.code))
        .collect();
    let first = once_per_exposure(ctx, records)
        .into_iter()
        .filter(|e| e.day >= is && e.day <= ie && e.day <= today)
        .min_by_key(|e| (e.day, model::instant(e.day, e.tz)));
    let Some(first) = first else {
        return Ok(Verdict {
            membership: None,
            index: None,
            outcomes: BTreeMap::new(),
        });
    };
    let index = first.day;
    // under same_exposure_days another source's record near the index record is that exposure
    let of_index = |e: &model::Exposure| {
        ctx.rules
            .contract
            .same_exposure_days
            .is_some_and(|n| e.src != first.src && (e.day - index).abs() <= n as Day)
    };
    if let Some(w) = c.washout_days {
        let w = w as Day;
        let breaks: Option<Vec<model::Src>> = c
            .washout_sources
            .as_ref()
            .map(|l| l.iter().filter_map(|s| model::Src::of(s)).collect());
        if m.exposures.iter().any(|e| {
            e.counts()
                && breaks.as_ref().is_none_or(|b| b.contains(&e.src))
                && ctx.in_set(&c.exposure, &e.code)
                && e.day >= index - w
                && e.day < index
                && !of_index(e)
        }) {
            return Ok(Verdict {
                membership: Some(Membership::NotNewUser),
                index: Some(index),
                outcomes: BTreeMap::new(),
            });
        }
    }
    if !j.eligible(index)? {
        return Ok(Verdict {
            membership: Some(Membership::Ineligible),
            index: Some(index),
            outcomes: BTreeMap::new(),
        });
    }
    let mut outcomes = BTreeMap::new();
    for o in &ctx.rules.outcomes {
        let s = j.outcome(o, index, &outcomes)?;
        outcomes.insert(o.id.clone(), s);
    }
    Ok(Verdict {
        membership: Some(Membership::Member),
        index: Some(index),
        outcomes,
    })
}

/// Every item is dated on or before the evaluation day, in local and in UTC terms.
fn check_dates(m: &Model, today: Day) -> R<()> {
    let mut stamps: Vec<(Day, model::Tz)> = Vec::new();
    stamps.extend(m.exposures.iter().map(|x| (x.day, x.tz)));
    stamps.extend(m.labs.iter().map(|x| (x.day, x.tz)));
    stamps.extend(m.coded.iter().map(|x| (x.day, x.tz)));
    stamps.extend(m.encs.iter().map(|x| (x.day, x.tz)));
    stamps.extend(
        m.conds
            .iter()
            .filter_map(|x| x.onset)
            .map(|d| (d, model::Tz::Date)),
    );
    stamps.extend(m.covs.iter().map(|x| (x.start, model::Tz::Date)));
    for p in &m.patients {
        if let Deceased::On(d) = p.deceased {
            stamps.push((d, model::Tz::Date));
        }
        if let Some(b) = p.birth {
            stamps.push((b, model::Tz::Date));
        }
    }
    for (d, tz) in stamps {
        if d > today {
            return Err(format!(
                "an item is dated {} after the evaluation day",
                days::format(d)
            ));
        }
        if model::utc_day(d, tz) > today {
            return Err(format!(
                "an item on {} is after the evaluation day in UTC",
                days::format(d)
            ));
        }
    }
    Ok(())
}

fn holds(c: &Comparison, v: Decimal) -> bool {
    let t = dec(&c.value);
    match c.op.as_str() {
        "<" => v < t,
        "<=" => v <= t,
        ">" => v > t,
        ">=" => v >= t,
        _ => v == t,
    }
}

/// Covered days (relative to nothing: absolute days) of fills shifted forward (PQA): each fill
/// starts on the later of its day and the day after the previous supply ends.
pub fn coverage(fills: &[(Day, u32)], shift: bool, min_one: bool, grace: u32) -> Vec<(Day, Day)> {
    let mut fs: Vec<(Day, u32)> = fills.to_vec();
    fs.sort();
    let mut out: Vec<(Day, Day)> = Vec::new();
    let mut next_free: Option<Day> = None;
    for (d, s) in fs {
        let s = if min_one { s.max(1) } else { s };
        if s == 0 {
            continue;
        }
        let start = match next_free {
            Some(n) if shift && n > d => n,
            _ => d,
        };
        let end = start + s as Day - 1;
        next_free = Some(next_free.map_or(end + 1, |n| n.max(end + 1)));
        out.push((start, end + grace as Day));
    }
    out
}

fn covered(iv: &[(Day, Day)], day: Day) -> bool {
    iv.iter().any(|(a, b)| *a <= day && day <= *b)
}

fn count_covered(iv: &[(Day, Day)], from: Day, to: Day) -> i64 {
    if to < from {
        return 0;
    }
    (from..=to).filter(|d| covered(iv, *d)).count() as i64
}

fn longest_gap(iv: &[(Day, Day)], from: Day, to: Day) -> i64 {
    let (mut best, mut run) = (0i64, 0i64);
    for d in from..=to {
        if covered(iv, d) {
            run = 0;
        } else {
            run += 1;
            best = best.max(run);
        }
    }
    best
}

struct Judge<'a> {
    ctx: &'a Ctx,
    m: &'a Model,
    birth: Option<Day>,
    gender: Option<&'static str>,
    death: Deceased,
    /// Usable values per lab, sorted by instant.
    labs: HashMap<String, Vec<Val>>,
}

impl<'a> Judge<'a> {
    fn new(ctx: &'a Ctx, m: &'a Model) -> R<Judge<'a>> {
        let births: Vec<Day> = m.patients.iter().filter_map(|p| p.birth).collect();
        if births.windows(2).any(|w| w[0] != w[1]) {
            return Err("linked records disagree on the birth date".into());
        }
        let genders: Vec<&str> = m.patients.iter().filter_map(|p| p.gender).collect();
        if genders.windows(2).any(|w| w[0] != w[1]) {
            return Err("linked records disagree on the gender".into());
        }
        let deaths: Vec<Deceased> = m
            .patients
            .iter()
            .map(|p| p.deceased)
            .filter(|d| *d != Deceased::No)
            .collect();
        if deaths.windows(2).any(|w| w[0] != w[1]) {
            return Err("linked records disagree on the death".into());
        }
        let mut labs = HashMap::new();
        for name in ctx.rules.labs.keys() {
            labs.insert(name.clone(), Self::lab_values(ctx, m, name)?);
        }
        Ok(Judge {
            ctx,
            m,
            birth: births.first().copied(),
            gender: m.patients.iter().find_map(|p| p.gender),
            death: deaths.first().copied().unwrap_or(Deceased::No),
            labs,
        })
    }

    /// Usable results of a lab: counting status, convertible unit, not replaced by a later
    /// result with the same identifier, the same instant and value once.
    fn lab_values(ctx: &Ctx, m: &Model, lab: &str) -> R<Vec<Val>> {
        let Some(info) = ctx.labs.get(lab) else {
            return Ok(Vec::new());
        };
        let set = &ctx.rules.labs[lab].valueset;
        let mut out: Vec<Val> = Vec::new();
        for (i, l) in m.labs.iter().enumerate() {
            if !ctx.in_set(set, &l.code) {
                continue;
            }
            if let Some(idf) = &l.identifier {
                let replaced = m.labs.iter().enumerate().any(|(k, o)| {
                    k != i && o.identifier.as_ref() == Some(idf) && (o.bundle, k) > (l.bundle, i)
                });
                if replaced {
                    continue;
                }
            }
            if !matches!(l.status, "final" | "amended" | "corrected") {
                continue;
            }
            let analyte = if l.code.0 == "http://loinc.org" {
                units::analyte(&l.code.1)
            } else {
                None
            };
            let Some(v) = units::convert(analyte, &l.unit, l.value, &info.unit) else {
                continue;
            };
            let inst = model::instant(l.day, l.tz);
            if let Some(o) = out.iter().find(|o| o.instant == inst) {
                if o.value == v {
                    continue;
                }
                return Err("two results at the same instant with different values".into());
            }
            out.push(Val {
                instant: inst,
                day: l.day,
                value: v,
            });
        }
        out.sort_by_key(|v| v.instant);
        Ok(out)
    }

    fn eligible(&self, index: Day) -> R<bool> {
        let ctx = self.ctx;
        let c = &ctx.rules.cohort;
        let m = self.m;
        if c.age_min.is_some() || c.age_max.is_some() {
            let Some(b) = self.birth else {
                return Err("no birth date".into());
            };
            let age = days::age_on(b, index).unwrap_or(-1);
            if c.age_min.is_some_and(|a| age < a as i32)
                || c.age_max.is_some_and(|a| age > a as i32)
            {
                return Ok(false);
            }
        }
        if let Some(s) = &c.sex {
            if self.gender != Some(s.as_str()) {
                return Ok(false);
            }
        }
        for dx in &c.diagnoses {
            let ok = m.conds.iter().any(|k| {
                k.counts() && ctx.in_set(dx, &k.code) && k.onset.is_some_and(|o| o <= index)
            });
            if !ok {
                return Ok(false);
            }
        }
        for l in &c.labs {
            let lo = index - l.within_days as Day;
            let latest = self.labs[&l.lab]
                .iter()
                .rfind(|v| v.day >= lo && v.day <= index);
            if !latest.is_some_and(|v| holds(&l.value, v.value)) {
                return Ok(false);
            }
        }
        for f in &c.findings {
            let lo = index - f.within_days as Day;
            let ok = m.coded.iter().any(|o| {
                counts_obs(o.status)
                    && ctx.in_set(&f.observation, &o.code)
                    && o.day >= lo
                    && o.day <= index
                    && ctx.in_set(&f.value_in, &o.value)
            });
            if !ok {
                return Ok(false);
            }
        }
        for t in &c.therapies {
            let lo = index - t.within_days as Day;
            // the days a record supplies: its days' supply (dispenses and orders), at least one
            let supplied = |e: &model::Exposure| {
                let days = match e.src {
                    model::Src::Dispense | model::Src::Request => e.supply,
                    _ => 0,
                };
                e.day + days.max(1) as Day - 1
            };
            let ok = m.exposures.iter().any(|e| {
                e.counts()
                    && ctx.in_set(&t.valueset, &e.code)
                    && e.day <= index
                    && (e.day >= lo || (t.supply_counts && supplied(e) >= lo))
            });
            if !ok {
                return Ok(false);
            }
        }
        if c.coverage {
            let ok = m.covs.iter().any(|v| {
                v.status == "active"
                    && v.payor == ctx.payer_ref
                    && v.start <= index
                    && v.end.is_none_or(|e| e >= index)
            });
            if !ok {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Death day for windows: Some(day), or None when alive; Unknown counts as before anything.
    fn death_day(&self) -> Option<Day> {
        match self.death {
            Deceased::No => None,
            Deceased::On(d) => Some(d),
            Deceased::Unknown => Some(Day::MIN / 2),
        }
    }

    fn outcome(&self, o: &OutcomeDef, index: Day, done: &BTreeMap<String, Status>) -> R<Status> {
        let ctx = self.ctx;
        let today = ctx.today;
        match &o.rule {
            Rule::All { of } | Rule::Any { of } => {
                let parts: Vec<Status> = of
                    .iter()
                    .map(|id| {
                        done.get(id)
                            .copied()
                            .ok_or_else(|| format!("component {id} unknown"))
                    })
                    .collect::<R<_>>()?;
                let has = |s: Status| parts.contains(&s);
                return Ok(if matches!(o.rule, Rule::All { .. }) {
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
                });
            }
            _ => {}
        }
        let (w_start, w_end) = match &o.rule {
            Rule::Survival { day } => (index, index + day),
            other => {
                let w = window_of(other);
                (index + w.from, index + w.to)
            }
        };
        // (1) exclusion diagnosis
        for dx in &ctx.rules.exclusions.diagnoses {
            if self.m.conds.iter().any(|k| {
                k.counts() && ctx.in_set(dx, &k.code) && k.onset.is_none_or(|d| d <= w_end)
            }) {
                return Ok(Status::Excluded);
            }
        }
        // (2) switch away
        for sw in &ctx.rules.exclusions.switches {
            let switched = self.m.exposures.iter().filter(|e| {
                e.counts() && ctx.in_set(sw, &e.code) && e.day > index && e.day <= w_end
            });
            for s in switched {
                let back = self.m.exposures.iter().any(|e| {
                    e.counts() && ctx.in_set(&ctx.rules.cohort.exposure, &e.code) && e.day >= s.day
                });
                if !back {
                    return Ok(Status::Excluded);
                }
            }
        }
        if let Rule::Survival { .. } = o.rule {
            return Ok(match self.death {
                Deceased::On(d) if d <= w_end => Status::NotMet,
                Deceased::Unknown => Status::MissingData,
                _ if today > w_end => Status::Met,
                _ => Status::Pending,
            });
        }
        let death = self.death_day();
        let died_in = death.is_some_and(|d| d <= w_end);
        if self.death == Deceased::Unknown && self.has_window_data(&o.rule, index) {
            return Err("a death without a date and data in the window".into());
        }
        let end = death.map_or(w_end, |d| d.min(w_end)).min(today);
        let closed = today > w_end || died_in;
        // (3) the rule; `by_value`: a met decided by a value
        let (status, by_value) = match &o.rule {
            Rule::LabTarget {
                lab, pick, target, ..
            } => {
                let vals: Vec<Val> = self.in_window(lab, w_start, end);
                match decide_values(&vals, *pick, closed) {
                    Decided::Value(v) => (
                        if holds(target, v) {
                            Status::Met
                        } else {
                            Status::NotMet
                        },
                        true,
                    ),
                    Decided::Pending => (Status::Pending, false),
                    Decided::Missing => (Status::MissingData, false),
                }
            }
            Rule::ChangeFromBaseline {
                lab,
                baseline,
                pick,
                change,
                target,
                ..
            } => {
                let (bs, be) = (index + baseline.from, index + baseline.to);
                let base = self
                    .in_window(lab, bs, be.min(today))
                    .last()
                    .map(|v| v.value);
                match base {
                    None => (
                        if closed {
                            Status::MissingData
                        } else {
                            Status::Pending
                        },
                        false,
                    ),
                    Some(b) => {
                        let vals = self.in_window(lab, w_start, end);
                        match decide_values(&vals, *pick, closed) {
                            Decided::Value(f) => {
                                let ch = match change {
                                    Change::Absolute => f - b,
                                    Change::Relative => {
                                        if b.is_zero() {
                                            return Err(
                                                "relative change from a zero baseline".into()
                                            );
                                        }
                                        ((f - b) / b * Decimal::from(100)).round_dp(4)
                                    }
                                };
                                (
                                    if holds(target, ch) {
                                        Status::Met
                                    } else {
                                        Status::NotMet
                                    },
                                    true,
                                )
                            }
                            Decided::Pending => (Status::Pending, false),
                            Decided::Missing => (Status::MissingData, false),
                        }
                    }
                }
            }
            Rule::Event {
                source,
                diagnosis,
                encounter_class,
                on_therapy_grace_days,
                max_events,
                ..
            } => {
                let n = self.events(
                    *source,
                    diagnosis,
                    encounter_class,
                    *on_therapy_grace_days,
                    w_start,
                    w_end,
                    end,
                )?;
                if n > *max_events as usize {
                    (Status::NotMet, false)
                } else if closed {
                    (Status::Met, false)
                } else {
                    (Status::Pending, false)
                }
            }
            Rule::CodedResponse {
                observation,
                response,
                pick,
                ..
            } => {
                let mut obs: Vec<(i64, bool)> = self
                    .m
                    .coded
                    .iter()
                    .filter(|c| {
                        counts_obs(c.status)
                            && ctx.in_set(observation, &c.code)
                            && c.day >= w_start
                            && c.day <= end
                    })
                    .map(|c| (model::instant(c.day, c.tz), ctx.in_set(response, &c.value)))
                    .collect();
                obs.sort_by_key(|o| o.0);
                if obs.windows(2).any(|w| w[0].0 == w[1].0 && w[0].1 != w[1].1) {
                    return Err("two assessments at the same instant".into());
                }
                let yes = |r: bool| if r { Status::Met } else { Status::NotMet };
                match pick {
                    Pick::Any => {
                        if obs.iter().any(|o| o.1) {
                            (Status::Met, true)
                        } else if !closed {
                            (Status::Pending, false)
                        } else if obs.is_empty() {
                            (Status::MissingData, false)
                        } else {
                            (Status::NotMet, true)
                        }
                    }
                    Pick::First => match obs.first() {
                        Some(o) => (yes(o.1), true),
                        None if closed => (Status::MissingData, false),
                        None => (Status::Pending, false),
                    },
                    _ => {
                        if !closed {
                            (Status::Pending, false)
                        } else {
                            match obs.last() {
                                Some(o) => (yes(o.1), true),
                                None => (Status::MissingData, false),
                            }
                        }
                    }
                }
            }
            Rule::Adherence {
                window,
                min_pdc,
                valueset,
            } => self.adherence(index, window, min_pdc, valueset, died_in, death)?,
            Rule::Persistence {
                window,
                max_gap_days,
                valueset,
            } => self.persistence(index, window, *max_gap_days, valueset, died_in, death)?,
            Rule::Survival { .. } | Rule::All { .. } | Rule::Any { .. } => {
                unreachable!("handled above")
            }
        };
        // (4) death: what data before it could not decide, the outcome's on_death decides
        let mut status = status;
        if ctx.rules.exclusions.death && died_in {
            let event_like = matches!(
                o.rule,
                Rule::Event { .. } | Rule::Adherence { .. } | Rule::Persistence { .. }
            );
            let undecided = match status {
                Status::Pending | Status::MissingData => true,
                Status::Met => event_like || !by_value,
                _ => false,
            };
            if undecided {
                status = match (o.on_death, status, self.death) {
                    (OnDeath::NotMet, _, _) => Status::NotMet,
                    // the window ended at the dated death: no event before it is a met
                    (OnDeath::UntilDeath, Status::Met, Deceased::On(_)) => Status::Met,
                    _ => Status::Excluded,
                };
            }
        }
        // (5) the missing-data policy, once its grace days after the window have passed
        if status == Status::MissingData {
            if let Some((met, grace)) = o.missing_data.decides() {
                if today > w_end + grace as Day {
                    status = if met { Status::Met } else { Status::NotMet };
                }
            }
        }
        Ok(status)
    }

    fn in_window(&self, lab: &str, from: Day, to: Day) -> Vec<Val> {
        self.labs
            .get(lab)
            .map(|vs| {
                vs.iter()
                    .filter(|v| v.day >= from && v.day <= to)
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn has_window_data(&self, rule: &Rule, index: Day) -> bool {
        let w = window_of(rule);
        let (a, b) = (index + w.from, index + w.to);
        let inw = |d: Day| d >= a && d <= b;
        match rule {
            Rule::LabTarget { lab, .. } | Rule::ChangeFromBaseline { lab, .. } => self
                .labs
                .get(lab)
                .is_some_and(|vs| vs.iter().any(|v| inw(v.day))),
            Rule::CodedResponse { observation, .. } => self
                .m
                .coded
                .iter()
                .any(|c| self.ctx.in_set(observation, &c.code) && inw(c.day)),
            Rule::Event { .. } => {
                self.m.encs.iter().any(|e| inw(e.day))
                    || self.m.conds.iter().any(|c| c.onset.is_some_and(inw))
            }
            _ => true,
        }
    }

    /// Fills (day, supply) of a set, counting, dated on or before `until`.
    fn fills(&self, set: &str, until: Day) -> Vec<(Day, u32)> {
        self.m
            .exposures
            .iter()
            .filter(|e| e.counts() && self.ctx.in_set(set, &e.code) && e.day <= until)
            .map(|e| (e.day, e.supply))
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn events(
        &self,
        source: EventSource,
        set: &str,
        classes: &[String],
        grace: Option<u32>,
        w_start: Day,
        w_end: Day,
        end: Day,
    ) -> R<usize> {
        let ctx = self.ctx;
        let m = self.m;
        let cond_in_set = |id: &str| {
            m.conds
                .iter()
                .any(|k| k.id == id && k.counts() && ctx.in_set(set, &k.code))
        };
        let enc_days: Vec<Day> = m
            .encs
            .iter()
            .filter(|e| {
                !matches!(e.status, "cancelled" | "planned" | "entered-in-error")
                    && (classes.is_empty() || classes.contains(&e.class))
                    && (e.reason.as_ref().is_some_and(|r| ctx.in_set(set, r))
                        || e.cond.as_deref().is_some_and(cond_in_set))
            })
            .map(|e| e.day)
            .collect();
        let cond_days: Vec<Day> = m
            .conds
            .iter()
            .filter(|k| k.counts() && !k.recorded && ctx.in_set(set, &k.code))
            .filter_map(|k| k.onset)
            .collect();
        let proc_days: Vec<Day> = m
            .exposures
            .iter()
            .filter(|e| e.src == model::Src::Procedure && e.counts() && ctx.in_set(set, &e.code))
            .map(|e| e.day)
            .collect();
        let inw = |d: &Day| *d >= w_start && *d <= w_end;
        let odd_conds = m.conds.iter().any(|k| {
            ctx.in_set(set, &k.code)
                && (!k.counts() || k.recorded)
                && k.onset.is_some_and(|d| inw(&d))
        });
        if odd_conds {
            return Err(
                "a non-counting or recorded-only condition of the event set in the window".into(),
            );
        }
        let (mut days, other): (Vec<Day>, Vec<Day>) = match source {
            EventSource::Encounter => (enc_days, [cond_days, proc_days].concat()),
            EventSource::Condition => (cond_days, [enc_days, proc_days].concat()),
            EventSource::Procedure => (proc_days, [enc_days, cond_days].concat()),
        };
        if other.iter().any(inw) {
            return Err("an event of the other source in the window".into());
        }
        days.retain(|d| *d >= w_start && *d <= end);
        if let Some(g) = grace {
            let fills = self.fills(&ctx.rules.cohort.exposure, end);
            let shifted = coverage(&fills, true, true, g);
            let plain = coverage(&fills, false, true, g);
            let a = days.iter().filter(|d| covered(&shifted, **d)).count();
            let b = days.iter().filter(|d| covered(&plain, **d)).count();
            if a != b {
                return Err("on-therapy events depend on shifting early fills".into());
            }
            days.retain(|d| covered(&shifted, *d));
        }
        Ok(days.len())
    }

    fn adherence(
        &self,
        index: Day,
        window: &DayWindow,
        min_pdc: &str,
        set: &str,
        died_in: bool,
        death: Option<Day>,
    ) -> R<(Status, bool)> {
        let today = self.ctx.today;
        let (a, b) = (index + window.from, index + window.to);
        let len = i64::from(window.to - window.from + 1);
        let need = (dec(min_pdc) * Decimal::from(len))
            .ceil()
            .to_i64()
            .unwrap_or(len);
        let slack = len - need;
        let until = death.map_or(today, |d| d.min(today));
        let iv = coverage(&self.fills(set, until), true, false, 0);
        if died_in {
            let d = death.unwrap_or(a);
            // decided before the death whatever happens to the days after it
            if count_covered(&iv, a, (d - 1).min(b)) >= need {
                return Ok((Status::Met, false));
            }
            let uncovered =
                i64::from((d - 1).min(b) - a + 1).max(0) - count_covered(&iv, a, (d - 1).min(b));
            if uncovered > slack {
                return Ok((Status::NotMet, false));
            }
            return Err("adherence with a death in the window".into());
        }
        if today > b {
            return Ok((
                if count_covered(&iv, a, b) >= need {
                    Status::Met
                } else {
                    Status::NotMet
                },
                false,
            ));
        }
        // open window: unambiguous whether or not supply beyond today, or today itself, counts
        let past_end = (today - 1).min(b);
        let covered_past = count_covered(&iv, a, past_end);
        let uncovered_past = i64::from(past_end - a + 1).max(0) - covered_past;
        let thru_today = today.min(b);
        let uncovered_thru_today =
            i64::from(thru_today - a + 1).max(0) - count_covered(&iv, a, thru_today);
        let covered_all = count_covered(&iv, a, b);
        if covered_past >= need {
            return Ok((Status::Met, false));
        }
        if uncovered_past > slack {
            return Ok((Status::NotMet, false));
        }
        if covered_all < need && uncovered_thru_today <= slack {
            return Ok((Status::Pending, false));
        }
        Err("adherence in an open window depends on supply after the evaluation day".into())
    }

    fn persistence(
        &self,
        index: Day,
        window: &DayWindow,
        max_gap: u32,
        set: &str,
        died_in: bool,
        death: Option<Day>,
    ) -> R<(Status, bool)> {
        let today = self.ctx.today;
        let (a, b) = (index + window.from, index + window.to);
        let until = death.map_or(today, |d| d.min(today));
        let iv = coverage(&self.fills(set, until), true, false, 0);
        let max_gap = i64::from(max_gap);
        if died_in {
            let d = death.unwrap_or(a);
            let to = b.min(today - 1).min(d);
            if longest_gap(&iv, a, to) > max_gap {
                return Ok((Status::NotMet, false));
            }
            if longest_gap(&iv, a, b) <= max_gap && longest_gap(&iv, a, b.min(today - 1)) <= max_gap
            {
                return Ok((Status::Met, false));
            }
            return Err("persistence with a death in the window".into());
        }
        let to = b.min(today - 1);
        if longest_gap(&iv, a, to) > max_gap {
            Ok((Status::NotMet, false))
        } else if today > b {
            Ok((Status::Met, false))
        } else {
            Ok((Status::Pending, false))
        }
    }
}

fn counts_obs(status: &str) -> bool {
    matches!(status, "final" | "amended" | "corrected")
}

/// The window of a windowed rule.
pub fn window_of(rule: &Rule) -> DayWindow {
    match rule {
        Rule::LabTarget { window, .. }
        | Rule::ChangeFromBaseline { window, .. }
        | Rule::Event { window, .. }
        | Rule::CodedResponse { window, .. }
        | Rule::Adherence { window, .. }
        | Rule::Persistence { window, .. } => *window,
        Rule::Survival { day } => DayWindow { from: 0, to: *day },
        Rule::All { .. } | Rule::Any { .. } => DayWindow { from: 0, to: 0 },
    }
}

enum Decided {
    Value(Decimal),
    Pending,
    Missing,
}

/// The value that decides a numeric rule, or why none does.
fn decide_values(vals: &[Val], pick: Pick, closed: bool) -> Decided {
    if pick == Pick::First {
        return match vals.first() {
            Some(v) => Decided::Value(v.value),
            None if closed => Decided::Missing,
            None => Decided::Pending,
        };
    }
    if !closed {
        return Decided::Pending;
    }
    if vals.is_empty() {
        return Decided::Missing;
    }
    let v = match pick {
        Pick::Lowest => vals.iter().map(|v| v.value).min().unwrap_or_default(),
        Pick::Highest => vals.iter().map(|v| v.value).max().unwrap_or_default(),
        Pick::Mean => {
            let s: Decimal = vals.iter().map(|v| v.value).sum();
            (s / Decimal::from(vals.len() as i64)).round_dp(6)
        }
        _ => vals.last().map(|v| v.value).unwrap_or_default(),
    };
    Decided::Value(v)
}

/// The code a value set does not contain, for a non-responding value.
pub fn unused(code: &Code) -> Code {
    (code.0.clone(), format!("{}-not", code.1))
}

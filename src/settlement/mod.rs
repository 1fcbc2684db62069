//! Settlement: per-patient outcomes turned into money by the contract's payment terms, with the
//! semantics written out in `contracts/FORMAT.md` ("Settlement semantics").
//!
//! Every amount is an exact decimal in the contract currency; each patient line is rounded to the
//! currency's minor unit (half to even) and a stream's total is the sum of its rounded lines.

pub mod money;

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;

use crate::contracts::rules::{PaymentTerm, RuleSet};
use crate::days::{self, Day};
use crate::engine::result::{Evidence, Membership, OutcomeResult, PersonResult, Status};

/// Who owes a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The manufacturer owes the payer (refunds, rebates, free drug).
    ToPayer,
    /// The payer owes the manufacturer (instalments).
    ToManufacturer,
}

impl Direction {
    /// Code used in reports.
    pub fn code(self) -> &'static str {
        match self {
            Direction::ToPayer => "manufacturer-to-payer",
            Direction::ToManufacturer => "payer-to-manufacturer",
        }
    }
}

/// Where a patient's line stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineState {
    /// The amount is owed.
    Owed,
    /// The amount is owed if the outcome fails (window still open).
    AtStakePending,
    /// The amount is owed if the missing data arrive and show failure (window closed without a
    /// usable measurement): money left unclaimed unless someone acts.
    AtStakeMissingData,
    /// Nothing is owed.
    None,
}

impl LineState {
    /// Code used in reports.
    pub fn code(self) -> &'static str {
        match self {
            LineState::Owed => "owed",
            LineState::AtStakePending => "at-stake-pending",
            LineState::AtStakeMissingData => "at-stake-missing-data",
            LineState::None => "none",
        }
    }
}

/// One patient's money for one payment term.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The person.
    pub person: Arc<str>,
    /// Index of the term in the contract's payments.
    pub term: usize,
    /// Its stream.
    pub stream: String,
    /// State.
    pub state: LineState,
    /// Amount (rounded), owed or at stake as the state says.
    pub amount: Decimal,
    /// How it was computed, in words an auditor can check.
    pub basis: String,
    /// The outcome(s) that decided it.
    pub outcomes: Vec<Arc<str>>,
    /// The exposures priced.
    pub priced: Vec<Evidence>,
}

/// A stream's totals.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamTotal {
    /// Stream code.
    pub stream: String,
    /// Direction.
    pub direction: Direction,
    /// Owed.
    pub owed: Decimal,
    /// At stake while windows are open.
    pub at_stake_pending: Decimal,
    /// At stake for missing data.
    pub at_stake_missing_data: Decimal,
    /// Patients with an owed line.
    pub patients_owed: u64,
    /// Patients with a missing-data line.
    pub patients_missing_data: u64,
    /// Patients with an at-stake line while their windows are open.
    pub patients_pending: u64,
}

/// The settlement of a contract over a set of members.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    /// Currency.
    pub currency: String,
    /// Every non-zero line, by person then term.
    pub lines: Vec<Line>,
    /// One total per stream, in the order streams first appear in the contract.
    pub streams: Vec<StreamTotal>,
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap_or_default()
}

fn pct(s: &str) -> Decimal {
    dec(s) / Decimal::from(100)
}

/// A term's drug cost of a patient over `[from, to]`, narrowed to the term's `cost_days` and
/// leaving out the exposures in `paid` (priced by the owed lines of the streams the term's
/// `cost_excludes` names).
fn term_cost(
    rules: &RuleSet,
    term: &PaymentTerm,
    r: &PersonResult,
    (from, to): (Day, Day),
    paid: &[Evidence],
) -> (Decimal, Vec<Evidence>, u32) {
    let (from, to) = match term.cost_days {
        Some(w) => (from.max(r.index + w.from), to.min(r.index + w.to)),
        None => (from, to),
    };
    priced_cost(rules, r, (from, to), paid)
}

fn priced_cost(
    rules: &RuleSet,
    r: &PersonResult,
    (from, to): (Day, Day),
    paid: &[Evidence],
) -> (Decimal, Vec<Evidence>, u32) {
    let c = &rules.contract;
    let (mut cost, mut priced, mut unpriced) = (Decimal::ZERO, Vec::new(), 0u32);
    let is_paid = |e: &Evidence| {
        paid.iter()
            .any(|p| p.rtype == e.rtype && p.id == e.id && p.version == e.version)
    };
    for u in r
        .drug
        .iter()
        .filter(|u| u.day >= from && u.day <= to && !is_paid(&u.evidence))
    {
        let price = match (&c.unit_price, &c.pack_price) {
            (Some(unit), _) => u.quantity.map(|q| dec(unit) * q),
            (None, Some(pack)) => Some(dec(pack)),
            (None, None) => None,
        };
        match price {
            Some(p) => {
                cost += p;
                priced.push(u.evidence.clone());
            }
            None => unpriced += 1,
        }
    }
    (cost, priced, unpriced)
}

fn outcome<'r>(r: &'r PersonResult, id: &str) -> Option<&'r OutcomeResult> {
    r.outcomes.iter().find(|o| &*o.id == id)
}

/// The cohort rate a term needs (met / decided for tiered rebates, not-met / decided for
/// event-rate rebates), None when no member is decided.
fn cohort_rate(term: &PaymentTerm, members: &[&PersonResult]) -> Option<Decimal> {
    let id = term.outcomes.first()?;
    let (mut met, mut not_met) = (0u64, 0u64);
    for r in members {
        match outcome(r, id).map(|o| o.status) {
            Some(Status::Met) => met += 1,
            Some(Status::NotMet) => not_met += 1,
            _ => {}
        }
    }
    let decided = met + not_met;
    if decided == 0 {
        return None;
    }
    let num = if term.kind == "tiered-rebate" {
        met
    } else {
        not_met
    };
    Some(Decimal::from(num) / Decimal::from(decided))
}

/// Settle a contract's payment terms over its members (the results of other memberships are
/// ignored). `today` is the evaluation day.
pub fn settle(rules: &RuleSet, results: &[&PersonResult], today: Day) -> Settlement {
    settle_part(rules, results, results, today)
}

/// Settle the lines of `part` (one patient, a practitioner's or a Group's patients) as they are
/// in the settlement of `period` (every result indexed in the report period): cohort rates are
/// taken over the period's members, so a patient's line is the same in every report that shows
/// it, and the lines of a partition of the period add up to the period's totals.
pub fn settle_part(
    rules: &RuleSet,
    period: &[&PersonResult],
    part: &[&PersonResult],
    today: Day,
) -> Settlement {
    let currency = rules.contract.currency.clone();
    let rates: Vec<Option<Decimal>> = {
        let members: Vec<&PersonResult> = period
            .iter()
            .copied()
            .filter(|r| r.membership == Membership::Member)
            .collect();
        rules
            .payments
            .iter()
            .map(|t| cohort_rate(t, &members))
            .collect()
    };
    let members: Vec<&PersonResult> = part
        .iter()
        .copied()
        .filter(|r| r.membership == Membership::Member)
        .collect();
    let mut lines = Vec::new();
    for r in &members {
        // terms that leave out what other streams pay back come after those streams' lines
        let mut mine: Vec<Line> = Vec::new();
        for pass in [false, true] {
            for (i, term) in rules.payments.iter().enumerate() {
                if term.cost_excludes.is_empty() == pass {
                    continue;
                }
                let paid: Vec<Evidence> = mine
                    .iter()
                    .filter(|l| {
                        l.state == LineState::Owed && term.cost_excludes.contains(&l.stream)
                    })
                    .flat_map(|l| l.priced.iter().cloned())
                    .collect();
                mine.extend(term_lines(rules, term, i, r, rates[i], today, &paid));
            }
        }
        mine.sort_by_key(|l| l.term);
        lines.extend(mine);
    }
    let mut streams: Vec<StreamTotal> = Vec::new();
    for term in &rules.payments {
        if !streams.iter().any(|s| s.stream == term.stream) {
            streams.push(StreamTotal {
                stream: term.stream.clone(),
                direction: direction(term),
                owed: Decimal::ZERO,
                at_stake_pending: Decimal::ZERO,
                at_stake_missing_data: Decimal::ZERO,
                patients_owed: 0,
                patients_missing_data: 0,
                patients_pending: 0,
            });
        }
    }
    for s in streams.iter_mut() {
        let mut owed_people: Vec<&str> = Vec::new();
        let mut missing_people: Vec<&str> = Vec::new();
        let mut pending_people: Vec<&str> = Vec::new();
        for l in lines.iter().filter(|l| l.stream == s.stream) {
            match l.state {
                LineState::Owed => {
                    s.owed += l.amount;
                    owed_people.push(&l.person);
                }
                LineState::AtStakePending => {
                    s.at_stake_pending += l.amount;
                    pending_people.push(&l.person);
                }
                LineState::AtStakeMissingData => {
                    s.at_stake_missing_data += l.amount;
                    missing_people.push(&l.person);
                }
                LineState::None => {}
            }
        }
        owed_people.dedup();
        missing_people.dedup();
        pending_people.dedup();
        s.patients_pending = pending_people.len() as u64;
        s.patients_owed = owed_people.len() as u64;
        s.patients_missing_data = missing_people.len() as u64;
    }
    Settlement {
        currency,
        lines,
        streams,
    }
}

fn direction(term: &PaymentTerm) -> Direction {
    if term.kind == "instalments" {
        Direction::ToManufacturer
    } else {
        Direction::ToPayer
    }
}

/// Apply the term's cap and floor to an unrounded amount, then round.
fn bounded(
    rules: &RuleSet,
    term: &PaymentTerm,
    amount: Decimal,
    cost: Decimal,
) -> (Decimal, String) {
    let mut a = amount;
    let mut note = String::new();
    if let Some(cap) = &term.cap_share_of_price {
        let price = rules
            .contract
            .pack_price
            .as_deref()
            .map(dec)
            .unwrap_or(cost);
        let limit = pct(cap) * price;
        if a > limit {
            a = limit;
            note = format!("; capped at {cap} % of {price} = {}", limit.normalize());
        }
    }
    if let Some(floor) = &term.floor {
        let f = dec(floor);
        if a > Decimal::ZERO && a < f {
            a = f;
            note = format!("; raised to the floor {f}");
        }
    }
    (money::round(a, &rules.contract.currency), note)
}

fn line(
    (r, i, term): (&PersonResult, usize, &PaymentTerm),
    state: LineState,
    amount: Decimal,
    basis: String,
    outcomes: Vec<Arc<str>>,
    priced: Vec<Evidence>,
) -> Option<Line> {
    (amount > Decimal::ZERO || state != LineState::None).then(|| Line {
        person: r.person.clone(),
        term: i,
        stream: term.stream.clone(),
        state,
        amount,
        basis,
        outcomes,
        priced,
    })
}

/// What a line says of the exposures it could not price (nothing when every one was priced).
fn unpriced_words(unpriced: u32) -> String {
    if unpriced > 0 {
        format!(" ({unpriced} exposure(s) without a quantity not priced)")
    } else {
        String::new()
    }
}

/// The base amount of a line (fixed amount, or a share of the drug cost) and its words.
fn base(rules: &RuleSet, term: &PaymentTerm, cost: Decimal, unpriced: u32) -> (Decimal, String) {
    let cur = &rules.contract.currency;
    let missing = unpriced_words(unpriced);
    match (&term.amount, &term.share_of_drug_cost) {
        (Some(a), _) => (dec(a), format!("{a} {cur}")),
        (None, Some(s)) => (
            pct(s) * cost,
            format!("{s} % of drug cost {} {cur}{missing}", cost.normalize()),
        ),
        _ => (Decimal::ZERO, "no amount".into()),
    }
}

fn term_lines(
    rules: &RuleSet,
    term: &PaymentTerm,
    i: usize,
    r: &PersonResult,
    rate: Option<Decimal>,
    today: Day,
    paid: &[Evidence],
) -> Vec<Line> {
    let mut out = Vec::new();
    if term.kind == "upfront-rebate" {
        // owed for every member, whatever the outcomes
        let share = term.share.as_deref().map(pct).unwrap_or_default();
        let (cost, priced, unpriced) = term_cost(rules, term, r, (r.index, today), paid);
        let (a, note) = bounded(rules, term, share * cost, cost);
        let extra = unpriced_words(unpriced);
        out.extend(line(
            (r, i, term),
            if a.is_zero() {
                LineState::None
            } else {
                LineState::Owed
            },
            a,
            format!(
                "up-front rebate: share {} of drug cost {} {}{extra}{note}",
                (share * Decimal::from(100)).normalize(),
                cost.normalize(),
                rules.contract.currency
            ),
            Vec::new(),
            priced,
        ));
        return out;
    }
    if term.kind == "instalments" {
        let amount = term.amount.as_deref().map(dec).unwrap_or_default();
        let cur = &rules.contract.currency;
        for (k, id) in term.outcomes.iter().enumerate() {
            let Some(o) = outcome(r, id) else { break };
            let (state, stop) = match o.status {
                Status::Met => (LineState::Owed, false),
                Status::Pending => (LineState::AtStakePending, true),
                Status::MissingData => (LineState::AtStakeMissingData, true),
                Status::NotMet | Status::Excluded => break,
            };
            let (a, note) = bounded(rules, term, amount, Decimal::ZERO);
            out.extend(line(
                (r, i, term),
                state,
                a,
                format!(
                    "instalment {} of {}: {amount} {cur} ({id} {}){note}",
                    k + 1,
                    term.outcomes.len(),
                    o.status.code()
                ),
                vec![o.id.clone()],
                Vec::new(),
            ));
            if stop {
                break;
            }
        }
        return out;
    }
    let Some(id) = term.outcomes.first() else {
        return out;
    };
    let Some(o) = outcome(r, id) else {
        return out;
    };
    let cur = rules.contract.currency.clone();
    let index = r.index;
    match term.kind.as_str() {
        "refund-per-non-responder" | "refund-per-event" => {
            let state = match o.status {
                Status::NotMet => LineState::Owed,
                Status::Pending => LineState::AtStakePending,
                Status::MissingData => LineState::AtStakeMissingData,
                Status::Met | Status::Excluded => return out,
            };
            let until = match (term.cost_until_failure, o.status, o.decided_on) {
                (true, Status::NotMet, Some(d)) => d,
                _ => today,
            };
            let (cost, priced, unpriced) = term_cost(rules, term, r, (index, until), paid);
            let (mut amount, mut words) = base(rules, term, cost, unpriced);
            if term.kind == "refund-per-event"
                && term.amount.is_some()
                && o.status == Status::NotMet
            {
                let events = o.value.unwrap_or(Decimal::ONE).max(Decimal::ONE);
                amount *= events;
                words = format!("{words} x {} event(s)", events.normalize());
            }
            if term.cost_until_failure && o.status == Status::NotMet {
                words = format!(
                    "{words} (cost up to the failure on {})",
                    days::format(until)
                );
            }
            let (a, note) = bounded(rules, term, amount, cost);
            out.extend(line(
                (r, i, term),
                state,
                a,
                format!("{id} {}: {words}{note}", o.status.code()),
                vec![o.id.clone()],
                priced,
            ));
        }
        "free-continuation" => {
            let (from, state) = match (o.status, o.decided_on) {
                (Status::NotMet, Some(d)) => (d + 1, LineState::Owed),
                (Status::MissingData, _) => (o.window.1 + 1, LineState::AtStakeMissingData),
                _ => return out,
            };
            let (cost, priced, unpriced) = term_cost(rules, term, r, (from, today), paid);
            let (a, note) = bounded(rules, term, cost, cost);
            let extra = unpriced_words(unpriced);
            out.extend(line(
                (r, i, term),
                state,
                a,
                format!(
                    "{id} {}: drug from {} free, cost {} {cur}{extra}{note}",
                    o.status.code(),
                    days::format(from),
                    cost.normalize()
                ),
                vec![o.id.clone()],
                priced,
            ));
        }
        "tiered-rebate" | "event-rate-rebate" => {
            let state = match o.status {
                Status::Met | Status::NotMet => LineState::Owed,
                Status::Pending => LineState::AtStakePending,
                Status::MissingData => LineState::AtStakeMissingData,
                Status::Excluded => return out,
            };
            let state = if rate.is_none() {
                LineState::AtStakePending
            } else {
                state
            };
            // no decided member yet: the line is at stake for the most the rate could make it
            let share = match (term.kind.as_str(), rate) {
                ("tiered-rebate", Some(r)) => {
                    let mut tiers: Vec<(Decimal, Decimal)> =
                        term.tiers.iter().map(|(m, s)| (dec(m), pct(s))).collect();
                    tiers.sort();
                    tiers
                        .iter()
                        .rev()
                        .find(|(m, _)| *m <= r)
                        .map(|t| t.1)
                        .unwrap_or_default()
                }
                ("tiered-rebate", None) => term
                    .tiers
                    .iter()
                    .map(|(_, s)| pct(s))
                    .max()
                    .unwrap_or_default(),
                (_, r) => {
                    let above = term.rate_above.as_deref().map(dec).unwrap_or_default();
                    if r.is_none_or(|r| r > above) {
                        term.share.as_deref().map(pct).unwrap_or_default()
                    } else {
                        Decimal::ZERO
                    }
                }
            };
            let (cost, priced, _) = term_cost(rules, term, r, (index, today), paid);
            let (a, note) = bounded(rules, term, share * cost, cost);
            let rate_words = rate.map_or(
                "no decided member in the period yet (at stake at the largest share)".to_string(),
                |r| format!("cohort rate {}", r.round_dp(4).normalize()),
            );
            out.extend(line(
                (r, i, term),
                if a.is_zero() { LineState::None } else { state },
                a,
                format!(
                    "{id} {}: {rate_words}, share {} of drug cost {} {cur}{note}",
                    o.status.code(),
                    (share * Decimal::from(100)).normalize(),
                    cost.normalize()
                ),
                vec![o.id.clone()],
                priced,
            ));
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests;

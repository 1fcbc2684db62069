//! Settlement against hand-computed amounts.

use std::str::FromStr;
use std::sync::Arc;

use rust_decimal::Decimal;

use super::*;
use crate::contracts::source;
use crate::engine::result::{DrugUse, Evidence, Membership, OutcomeResult, PersonResult, Status};

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).expect("decimal")
}

fn rules(file: &str) -> RuleSet {
    let text = std::fs::read_to_string(format!("{}/contracts/{file}", env!("CARGO_MANIFEST_DIR")))
        .expect("contract");
    source::compile(&text).expect("compiles")
}

fn fill(day: Day, qty: Option<&str>) -> DrugUse {
    DrugUse {
        day,
        quantity: qty.map(d),
        evidence: Evidence {
            rtype: "MedicationDispense",
            id: Arc::from(format!("md-{day}")),
            version: 1,
            role: "drug",
            note: String::new(),
        },
    }
}

fn outcome(
    id: &str,
    status: Status,
    decided_on: Option<Day>,
    value: Option<&str>,
) -> OutcomeResult {
    OutcomeResult {
        id: Arc::from(id),
        status,
        reason: String::new(),
        value: value.map(d),
        unit: String::new(),
        window: (100, 200),
        rule: Arc::from(""),
        decided_on,
        evidence: Vec::new(),
    }
}

fn person(id: &str, outcomes: Vec<OutcomeResult>, drug: Vec<DrugUse>) -> PersonResult {
    PersonResult {
        person: Arc::from(id),
        patients: vec![Arc::from(id)],
        index: 10,
        membership: Membership::Member,
        reason: String::new(),
        evidence: Vec::new(),
        outcomes,
        sex: None,
        birth: None,
        performer: None,
        drug,
    }
}

#[test]
fn januvia_refunds_a_quarter_of_a_non_responders_drug_cost() {
    let r = rules("januvia-aetna.toml");
    // 30 + 30 + 45 tablets at 17.50 USD = 1837.50; 25 % = 459.375 -> 459.38 (half even: 459.38)
    let drug = vec![
        fill(10, Some("30")),
        fill(40, Some("30")),
        fill(70, Some("45")),
        fill(400, Some("30")),
    ];
    let a = person(
        "a",
        vec![outcome(
            "hba1c-control",
            Status::NotMet,
            Some(150),
            Some("8.1"),
        )],
        drug.clone(),
    );
    let b = person(
        "b",
        vec![outcome(
            "hba1c-control",
            Status::Met,
            Some(150),
            Some("6.5"),
        )],
        drug.clone(),
    );
    let c = person(
        "c",
        vec![outcome("hba1c-control", Status::MissingData, None, None)],
        drug.clone(),
    );
    let e = person(
        "e",
        vec![outcome("hba1c-control", Status::Pending, None, None)],
        vec![fill(10, Some("30"))],
    );
    let mut x = person(
        "x",
        vec![outcome("hba1c-control", Status::NotMet, Some(150), None)],
        drug.clone(),
    );
    x.membership = Membership::Ineligible;
    let s = settle(&r, &[&a, &b, &c, &e, &x], 300);
    assert_eq!(s.currency, "USD");
    let stream = &s.streams[0];
    assert_eq!(stream.stream, "refund");
    assert_eq!(stream.direction, Direction::ToPayer);
    assert_eq!(stream.owed, d("459.38"));
    assert_eq!(stream.at_stake_missing_data, d("459.38"));
    // 30 x 17.50 x 25 % = 131.25
    assert_eq!(stream.at_stake_pending, d("131.25"));
    assert_eq!(stream.patients_owed, 1);
    assert_eq!(stream.patients_missing_data, 1);
    let owed: Vec<&Line> = s
        .lines
        .iter()
        .filter(|l| l.state == LineState::Owed)
        .collect();
    assert_eq!(owed.len(), 1);
    assert_eq!(&*owed[0].person, "a");
    assert_eq!(
        owed[0].priced.len(),
        3,
        "the fill after the evaluation day is not priced"
    );
}

#[test]
fn zolgensma_instalments_stop_at_the_first_failed_year() {
    let r = rules("zolgensma-novartis.toml");
    let years = |st: [Status; 5]| {
        st.iter()
            .enumerate()
            .map(|(i, s)| outcome(&format!("year-{}", i + 1), *s, None, None))
            .collect::<Vec<_>>()
    };
    use Status::*;
    let all = person("all", years([Met, Met, Met, Met, Met]), vec![]);
    let two = person("two", years([Met, Met, NotMet, Met, Pending]), vec![]);
    let wait = person(
        "wait",
        years([Met, Pending, Pending, Pending, Pending]),
        vec![],
    );
    let gap = person("gap", years([MissingData, Met, Met, Met, Met]), vec![]);
    let s = settle(&r, &[&all, &two, &wait, &gap], 5000);
    let t = &s.streams[0];
    assert_eq!(t.direction, Direction::ToManufacturer);
    // 5 + 2 + 1 instalments of 425,000
    assert_eq!(t.owed, d("3400000.00"));
    assert_eq!(t.at_stake_pending, d("425000.00"));
    assert_eq!(t.at_stake_missing_data, d("425000.00"));
}

#[test]
fn dapagliflozin_upfront_rebate_and_free_continuation() {
    let r = rules("dapagliflozin-uk.toml");
    // price 1.31 GBP per tablet
    let a = person(
        "a",
        vec![outcome("hba1c-response", Status::NotMet, Some(100), None)],
        vec![
            fill(10, Some("28")),
            fill(100, Some("28")),
            fill(101, Some("28")),
            fill(130, Some("56")),
        ],
    );
    let b = person(
        "b",
        vec![outcome("hba1c-response", Status::Met, Some(100), None)],
        vec![fill(10, Some("28"))],
    );
    let s = settle(&r, &[&a, &b], 300);
    let rebate = s
        .streams
        .iter()
        .find(|t| t.stream == "rebate")
        .expect("rebate");
    // a's fills on days 101 and 130 are free drug (decided on day 100): 10 % of the fills on
    // days 10 and 100 (56 x 1.31 = 73.36) = 7.336 -> 7.34; b: 10 % of 36.68 = 3.668 -> 3.67
    assert_eq!(rebate.owed, d("11.01"));
    let free = s
        .streams
        .iter()
        .find(|t| t.stream == "free-drug")
        .expect("free");
    // fills after day 100: 28 + 56 = 84 tablets = 110.04
    assert_eq!(free.owed, d("110.04"));
}

#[test]
fn entresto_event_rate_rebate_applies_only_above_the_rate() {
    let r = rules("entresto-harvard-pilgrim.toml");
    let p = |id: &str, st: Status| {
        person(
            id,
            vec![outcome("hf-hospitalisation", st, Some(50), None)],
            vec![fill(10, Some("60"))],
        )
    };
    // 1 of 4 decided not met = 0.25: not above 0.25, no rebate
    let (a, b, c, e) = (
        p("a", Status::NotMet),
        p("b", Status::Met),
        p("c", Status::Met),
        p("e", Status::Met),
    );
    let s = settle(&r, &[&a, &b, &c, &e], 300);
    assert_eq!(s.streams[0].owed, Decimal::ZERO);
    // 2 of 4 = 0.5 > 0.25: 5 % of 60 x 10.80 = 32.40 for each of the four
    let b2 = p("b", Status::NotMet);
    let s = settle(&r, &[&a, &b2, &c, &e], 300);
    assert_eq!(s.streams[0].owed, d("129.60"));
}

#[test]
fn an_event_rate_rebate_without_a_decided_member_is_all_at_stake() {
    let r = rules("entresto-harvard-pilgrim.toml");
    // the only member's window is open: no rate yet, so 5 % of 60 x 10.80 = 32.40 is at stake
    let open = person(
        "open",
        vec![outcome("hf-hospitalisation", Status::Pending, None, None)],
        vec![fill(10, Some("60"))],
    );
    let s = settle(&r, &[&open], 300);
    assert_eq!(s.streams[0].owed, Decimal::ZERO);
    assert_eq!(s.streams[0].at_stake_pending, d("32.40"));
    assert_eq!(s.streams[0].patients_pending, 1);
    // once a member is decided met (rate 0, not above 0.25) nothing is at stake any more
    let met = person(
        "met",
        vec![outcome("hf-hospitalisation", Status::Met, Some(50), None)],
        vec![fill(10, Some("60"))],
    );
    let s = settle(&r, &[&open, &met], 300);
    assert_eq!(s.streams[0].at_stake_pending, Decimal::ZERO);
}

#[test]
fn a_tiered_rebate_without_a_decided_member_is_at_stake_at_its_largest_share() {
    let mut r = rules("dapagliflozin-uk.toml");
    r.payments[0].kind = "tiered-rebate".into();
    r.payments[0].outcomes = vec!["hba1c-response".into()];
    r.payments[0].cost_excludes.clear();
    r.payments[0].tiers = vec![("0".into(), "5".into()), ("0.5".into(), "20".into())];
    let open = person(
        "open",
        vec![outcome("hba1c-response", Status::Pending, None, None)],
        vec![fill(10, Some("100"))],
    );
    // 100 x 1.31 = 131.00; at stake at 20 % = 26.20 (the rate could reach the upper tier)
    let s = settle(&r, &[&open], 300);
    assert_eq!(s.streams[0].at_stake_pending, d("26.20"));
}

#[test]
fn a_part_of_the_period_is_settled_under_the_period_rate() {
    let r = rules("entresto-harvard-pilgrim.toml");
    let p = |id: &str, st: Status| {
        person(
            id,
            vec![outcome("hf-hospitalisation", st, Some(50), None)],
            vec![fill(10, Some("60"))],
        )
    };
    // period: 2 of 4 decided not met = 0.5 > 0.25; each line 32.40
    let (a, b, c, e) = (
        p("a", Status::NotMet),
        p("b", Status::NotMet),
        p("c", Status::Met),
        p("e", Status::Met),
    );
    let all = [&a, &b, &c, &e];
    // alone, c's rate would be 0 (no rebate); under the period's rate its line is 32.40
    assert_eq!(settle(&r, &[&c], 300).streams[0].owed, Decimal::ZERO);
    let one = settle_part(&r, &all, &[&c], 300);
    assert_eq!(one.streams[0].owed, d("32.40"));
    assert_eq!(one.lines.len(), 1);
    assert!(
        one.lines[0].basis.contains("cohort rate 0.5"),
        "{}",
        one.lines[0].basis
    );
    // the parts add up to the whole
    let whole = settle(&r, &all, 300).streams[0].owed;
    let parts: Decimal = all
        .iter()
        .map(|x| settle_part(&r, &all, &[x], 300).streams[0].owed)
        .sum();
    assert_eq!(parts, whole);
    assert_eq!(whole, d("129.60"));
}

#[test]
fn luxturna_refund_is_capped_at_a_share_of_the_price() {
    let r = rules("luxturna-spark.toml");
    // one treatment at 850,000; refund 100 % capped at 23.1 % = 196,350.00
    let a = person(
        "a",
        vec![outcome(
            "durable-improvement",
            Status::NotMet,
            Some(100),
            None,
        )],
        vec![fill(10, None)],
    );
    let s = settle(&r, &[&a], 300);
    assert_eq!(s.streams[0].owed, d("196350.00"));
    assert!(s.lines[0].basis.contains("capped"), "{}", s.lines[0].basis);
}

#[test]
fn repatha_refunds_drug_cost_once_per_patient_with_events() {
    let r = rules("repatha-harvard-pilgrim.toml");
    // 2 pens x 243.75 = 487.50 refunded in full, however many events
    let a = person(
        "a",
        vec![
            outcome("no-mi-stroke", Status::NotMet, Some(60), Some("2")),
            outcome("ldl-reduction", Status::Met, Some(60), None),
        ],
        vec![fill(10, Some("2"))],
    );
    let b = person(
        "b",
        vec![
            outcome("no-mi-stroke", Status::Met, Some(60), Some("0")),
            outcome("ldl-reduction", Status::NotMet, Some(60), None),
        ],
        vec![fill(10, Some("2"))],
    );
    let s = settle(&r, &[&a, &b], 300);
    let refund = s
        .streams
        .iter()
        .find(|t| t.stream == "refund")
        .expect("refund");
    assert_eq!(refund.owed, d("487.50"));
    let rebate = s
        .streams
        .iter()
        .find(|t| t.stream == "rebate")
        .expect("rebate");
    assert_eq!(rebate.owed, d("1000.00"));
}

/// The dapagliflozin contract with its up-front rebate as `upfront-rebate` that leaves out the
/// fills paid back as free drug, and free drug for the first year after index only.
fn dapagliflozin_upfront() -> RuleSet {
    let text = std::fs::read_to_string(format!(
        "{}/contracts/dapagliflozin-uk.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("contract");
    let text = text.replace(
        "kind = \"free-continuation\"\noutcome = \"hba1c-response\"",
        "kind = \"free-continuation\"\noutcome = \"hba1c-response\"\ncost_days = \"0..364\"",
    );
    assert!(text.contains("upfront-rebate") && text.contains("cost_days"));
    source::compile(&text).expect("compiles")
}

#[test]
fn no_fill_is_paid_twice_and_cost_stays_in_the_terms_days() {
    let r = dapagliflozin_upfront();
    // index day 10; not met, decided on day 100; fills of 28 tablets (1.31 each = 36.68) on
    // days 10, 120 and 400 (beyond index + 364 = 374)
    let a = person(
        "a",
        vec![outcome("hba1c-response", Status::NotMet, Some(100), None)],
        vec![
            fill(10, Some("28")),
            fill(120, Some("28")),
            fill(400, Some("28")),
        ],
    );
    // undecided: the up-front rebate is owed all the same
    let b = person(
        "b",
        vec![outcome("hba1c-response", Status::Pending, None, None)],
        vec![fill(10, Some("28"))],
    );
    let s = settle(&r, &[&a, &b], 500);
    let stream = |name: &str| {
        s.streams
            .iter()
            .find(|t| t.stream == name)
            .cloned()
            .expect("stream")
    };
    // free drug: the fill on day 120 only (day 400 is outside the term's days) = 36.68
    assert_eq!(stream("free-drug").owed, d("36.68"));
    // up-front: a's day-10 fill (the day-120 one is free drug; day 400 is not free drug, so it
    // earns the rebate: 2 x 36.68 = 73.36 -> 7.336 -> 7.34) and b's day-10 fill (3.668 -> 3.67)
    assert_eq!(stream("rebate").owed, d("11.01"));
    assert_eq!(stream("rebate").at_stake_pending, Decimal::ZERO);
    assert_eq!(stream("rebate").patients_owed, 2);
    // the stored rule set of a contract without the options is as before (no new keys)
    let plain = serde_json::to_value(rules("januvia-aetna.toml")).expect("json");
    let text = plain.to_string();
    for key in [
        "cost_days",
        "cost_excludes",
        "missing_data",
        "on_death",
        "washout_sources",
        "supply_counts",
        "unit_size",
        "price_stopped",
        "same_exposure_days",
        "source_order",
    ] {
        assert!(!text.contains(key), "{key} in {text}");
    }
}

#[test]
fn a_stream_left_out_must_exist_and_settle_first() {
    let base = std::fs::read_to_string(format!(
        "{}/contracts/dapagliflozin-uk.toml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("contract");
    for (extra, at) in [
        ("cost_excludes = [\"nowhere\"]", "payment[0].cost_excludes"),
        ("cost_excludes = [\"rebate\"]", "payment[0].cost_excludes"),
        (
            "cost_excludes = [\"free-drug\"]\ncost_days = \"30..10\"",
            "payment[0].cost_days",
        ),
    ] {
        let text = base.replace("cost_excludes = [\"free-drug\"]", extra);
        assert_ne!(text, base);
        let issues = source::compile(&text).expect_err("refused");
        assert!(
            issues.iter().any(|i| i.expression.as_deref() == Some(at)),
            "{extra}: {issues:?}"
        );
    }
}

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
fn dapagliflozin_rebate_tier_and_free_continuation() {
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
    // 10 % of (140 x 1.31 = 183.40) + 10 % of (28 x 1.31 = 36.68) = 18.34 + 3.668 -> 18.34 + 3.67
    assert_eq!(rebate.owed, d("22.01"));
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

use std::collections::{BTreeMap, BTreeSet};

use super::*;

const TODAY: &str = "2026-11-22";

fn rules(name: &str) -> RuleSet {
    let path = format!("{}/contracts/{name}.toml", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("contract");
    crate::contracts::source::compile(&text).expect("compiles")
}

fn today() -> Day {
    days::parse_full(TODAY).expect("day")
}

fn catalog() -> Vec<String> {
    let dir = format!("{}/contracts", env!("CARGO_MANIFEST_DIR"));
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".toml"))
                .map(String::from)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn same_seed_same_output() {
    let r = rules("januvia-aetna");
    let a: Vec<String> = generate(&r, 80, 7, today())
        .map(|(b, e)| {
            format!(
                "{}\n{}",
                serde_json::to_string(&b).unwrap_or_default(),
                e.to_json()
            )
        })
        .collect();
    let b: Vec<String> = generate(&r, 80, 7, today())
        .map(|(b, e)| {
            format!(
                "{}\n{}",
                serde_json::to_string(&b).unwrap_or_default(),
                e.to_json()
            )
        })
        .collect();
    assert_eq!(a, b);
    let c: Vec<String> = generate(&r, 80, 8, today())
        .map(|(b, e)| {
            format!(
                "{}\n{}",
                serde_json::to_string(&b).unwrap_or_default(),
                e.to_json()
            )
        })
        .collect();
    assert_ne!(a, c, "another seed gives another population");
}

#[test]
fn bundles_are_transactions_with_unique_valid_ids() {
    let r = rules("vivitrol-upmc");
    let mut ids = BTreeSet::new();
    for (i, (bundles, exp)) in generate(&r, 300, 3, today()).enumerate() {
        assert!(!bundles.is_empty());
        let mut person_ids = BTreeSet::new();
        for b in &bundles {
            let text = serde_json::to_string(b).expect("json");
            let back: Value = serde_json::from_str(&text).expect("parses");
            assert_eq!(back["resourceType"], "Bundle");
            assert_eq!(back["type"], "transaction");
            for e in back["entry"].as_array().expect("entries") {
                let r = &e["resource"];
                let t = r["resourceType"].as_str().expect("type");
                let id = r["id"].as_str().expect("id");
                assert!(
                    id.len() <= 64
                        && id
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.'),
                    "{id}"
                );
                assert_eq!(e["request"]["method"], "PUT");
                assert_eq!(e["request"]["url"], format!("{t}/{id}"));
                if t == "Organization" {
                    assert_eq!(i, 0, "the payer goes in the first Bundle only");
                    continue;
                }
                person_ids.insert(format!("{t}/{id}"));
            }
        }
        for k in person_ids {
            assert!(ids.insert(k.clone()), "{k} used by two persons");
        }
        assert!(exp.person.starts_with("vivitrol-3-"));
    }
}

#[test]
fn januvia_500_has_every_status() {
    let r = rules("januvia-aetna");
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (_, e) in generate(&r, 500, 1, today()) {
        *seen
            .entry(e.membership.clone().unwrap_or_else(|| "none".into()))
            .or_default() += 1;
        for s in e.outcomes.values() {
            *seen.entry(s.clone()).or_default() += 1;
        }
    }
    for k in [
        "none",
        "not-new-user",
        "ineligible",
        "member",
        "met",
        "not-met",
        "pending",
        "missing-data",
        "excluded",
    ] {
        assert!(
            seen.get(k).copied().unwrap_or(0) > 0,
            "{k} missing: {seen:?}"
        );
    }
}

/// Every kind appears in 200 persons of every contract, and what the builder meant is what the
/// oracle judged (a disagreement is a generator bug).
#[test]
fn every_contract_every_kind_and_intent_holds() {
    let mut report = Vec::new();
    for name in catalog() {
        let r = rules(&name);
        let ctx = Ctx::new(r.clone(), 1, today());
        let mut kinds: BTreeSet<String> = BTreeSet::new();
        let (mut checked, mut wrong) = (0, 0);
        for n in 0..400 {
            let (_, e, intent) = scenario::person_with_intent(&ctx, n);
            if n < 200 {
                kinds.insert(e.membership.clone().unwrap_or_else(|| "none".into()));
            }
            if let Some(m) = intent.membership {
                checked += 1;
                if m.map(|m| m.code().to_string()) != e.membership {
                    wrong += 1;
                    report.push(format!(
                        "{name} {}: membership meant {:?} got {:?} ({})",
                        e.person, m, e.membership, e.case
                    ));
                    continue;
                }
            }
            for (o, s) in &intent.outcomes {
                checked += 1;
                if e.outcomes.get(o).map(String::as_str) != Some(s.code()) {
                    wrong += 1;
                    report.push(format!(
                        "{name} {}: {o} meant {} got {:?} ({})",
                        e.person,
                        s.code(),
                        e.outcomes.get(o),
                        e.case
                    ));
                }
            }
        }
        let mut want = vec!["none", "ineligible", "member"];
        if r.cohort.washout_days.is_some() {
            want.push("not-new-user");
        }
        for k in want {
            assert!(kinds.contains(k), "{name}: no {k} in 200 persons");
        }
        eprintln!("{name}: {checked} intents, {wrong} not realised");
    }
    for l in report.iter().take(40) {
        eprintln!("{l}");
    }
    assert!(report.is_empty(), "{} intents not realised", report.len());
}

//! The engine against the generator's expected results, for every catalog contract, and
//! incremental evaluation against full evaluation under random interleavings of inserts, updates,
//! corrections and deletes. In process (the engine's commit path without HTTP); the HTTP path is
//! covered by `tests/outcomes.rs`.

use std::collections::HashMap;

use serde_json::Value;
use vbc_server::engine::result::PersonResult;
use vbc_server::engine::{days, AsOf, Engine, Ingested};

/// One write: type, id, resource JSON (None for a delete).
type Write = (String, String, Option<Vec<u8>>);

/// A small deterministic generator for the interleavings (splitmix64).
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn contracts() -> Vec<(String, String)> {
    let mut files: Vec<_> = std::fs::read_dir("contracts")
        .expect("contracts dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            (
                f.display().to_string(),
                std::fs::read_to_string(&f).expect("read"),
            )
        })
        .collect()
}

/// Writes of one patient's bundles, in order, with version numbers.
fn writes_of(bundles: &[Value], versions: &mut HashMap<(String, String), u64>) -> Vec<Write> {
    let mut out = Vec::new();
    for b in bundles {
        for e in b["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            let method = e["request"]["method"].as_str().unwrap_or("PUT");
            let url = e["request"]["url"].as_str().unwrap_or("");
            if method == "DELETE" {
                if let Some((t, id)) = url.split_once('/') {
                    out.push((t.to_string(), id.to_string(), None));
                }
                continue;
            }
            let (Some(t), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
                continue;
            };
            versions.entry((t.to_string(), id.to_string())).or_insert(0);
            out.push((t.to_string(), id.to_string(), serde_json::to_vec(r).ok()));
        }
    }
    out
}

fn engine_with(text: &str) -> (Engine2, String) {
    let compiled = vbc_server::contracts::compile(text).expect("compiles");
    let engine = Engine::in_memory(vec![vbc_server::config::DEFAULT_LINK_SYSTEM.to_string()]);
    let ids = vbc_server::contracts::fhir::Ids::of(&compiled.rules);
    let library = compiled
        .resources
        .iter()
        .find(|r| r["resourceType"] == "Library")
        .cloned()
        .expect("library");
    engine.ingest(&[(
        "Library".into(),
        ids.library(),
        1,
        1,
        serde_json::to_vec(&library).ok(),
    )]);
    (
        Engine2 {
            engine,
            rules: compiled.rules,
            clock: 10,
            versions: HashMap::new(),
        },
        ids.contract(),
    )
}

struct Engine2 {
    engine: std::sync::Arc<Engine>,
    rules: vbc_server::contracts::rules::RuleSet,
    clock: i64,
    versions: HashMap<(String, String), u64>,
}

impl Engine2 {
    fn apply(&mut self, w: &Write) {
        self.clock += 1;
        let v = self.versions.entry((w.0.clone(), w.1.clone())).or_insert(0);
        *v += 1;
        let write: Ingested = (w.0.clone(), w.1.clone(), *v, self.clock, w.2.clone());
        self.engine.ingest(&[write]);
    }
}

fn by_person(results: Vec<PersonResult>) -> HashMap<String, PersonResult> {
    results
        .into_iter()
        .map(|r| (r.person.to_string(), r))
        .collect()
}

#[test]
fn every_catalog_contract_matches_the_generators_expected_results() {
    let today = days::today();
    let mut report = Vec::new();
    for (file, text) in contracts() {
        let (mut e, contract) = engine_with(&text);
        let population: Vec<_> =
            vbc_server::synth::generate(&e.rules.clone(), 400, 11, today).collect();
        let mut versions = HashMap::new();
        for (bundles, _) in &population {
            for w in writes_of(bundles, &mut versions) {
                e.apply(&w);
            }
        }
        let results = by_person(e.engine.current(&contract).expect("results"));
        let mut mismatches = Vec::new();
        for (_, exp) in &population {
            let got = results.get(&exp.person);
            let got_membership = got.map(|r| r.membership.code().to_string());
            if got_membership != exp.membership {
                mismatches.push(format!(
                    "{} ({}): membership {:?} expected {:?}",
                    exp.person, exp.case, got_membership, exp.membership
                ));
                continue;
            }
            let Some(r) = got else { continue };
            if exp.membership.as_deref() != Some("member") {
                continue;
            }
            for (id, status) in &exp.outcomes {
                let g = r
                    .outcomes
                    .iter()
                    .find(|o| *o.id == **id)
                    .map(|o| o.status.code());
                if g != Some(status.as_str()) {
                    mismatches.push(format!(
                        "{} ({}): {id} {:?} expected {status}",
                        exp.person, exp.case, g
                    ));
                }
            }
        }
        if !mismatches.is_empty() {
            report.push(format!(
                "{file}: {} mismatches, e.g. {:?}",
                mismatches.len(),
                &mismatches[..mismatches.len().min(5)]
            ));
        }
    }
    assert!(report.is_empty(), "{}", report.join("\n"));
}

#[test]
fn incremental_equals_full_under_random_interleavings_updates_and_deletes() {
    let today = days::today();
    for (i, (file, text)) in contracts().into_iter().enumerate() {
        let (mut e, contract) = engine_with(&text);
        let population: Vec<_> =
            vbc_server::synth::generate(&e.rules.clone(), 150, 5 + i as u64, today).collect();
        let mut versions = HashMap::new();
        let mut queues: Vec<Vec<Write>> = population
            .iter()
            .map(|(b, _)| writes_of(b, &mut versions))
            .collect();
        for q in &mut queues {
            q.reverse();
        }
        let mut mix = Mix(0xC0FFEE + i as u64);
        let mut written: Vec<Write> = Vec::new();
        // interleave patients' writes (each patient's own order kept), and now and then delete
        // or re-send something already written, or flip a result to entered-in-error
        while queues.iter().any(|q| !q.is_empty()) {
            let k = mix.below(queues.len());
            if let Some(w) = queues[k].pop() {
                e.apply(&w);
                written.push(w);
            }
            match mix.below(40) {
                0 if !written.is_empty() => {
                    let w = written[mix.below(written.len())].clone();
                    e.apply(&(w.0, w.1, None));
                }
                1 if !written.is_empty() => {
                    let w = written[mix.below(written.len())].clone();
                    e.apply(&w);
                }
                2 if !written.is_empty() => {
                    let w = written[mix.below(written.len())].clone();
                    if let Some(mut v) =
                        w.2.as_deref()
                            .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                    {
                        if v.get("status").is_some() {
                            v["status"] = "entered-in-error".into();
                            e.apply(&(w.0, w.1, serde_json::to_vec(&v).ok()));
                        }
                    }
                }
                _ => {}
            }
        }
        let incremental = e.engine.current(&contract).expect("incremental");
        let full = e
            .engine
            .evaluate(
                &contract,
                AsOf {
                    instant_ms: None,
                    today,
                },
            )
            .expect("full");
        assert_eq!(incremental.len(), full.len(), "{file}");
        for (a, b) in incremental.iter().zip(full.iter()) {
            assert_eq!(a, b, "{file}: incremental and full differ for {}", a.person);
        }
        // as of the end equals now; as of the start is empty
        let at_end = e
            .engine
            .evaluate(
                &contract,
                AsOf {
                    instant_ms: Some(e.clock),
                    today,
                },
            )
            .expect("as of");
        assert_eq!(at_end, full, "{file}: as of the last write");
        let at_start = e
            .engine
            .evaluate(
                &contract,
                AsOf {
                    instant_ms: Some(1),
                    today,
                },
            )
            .expect("as of start");
        assert!(at_start.is_empty(), "{file}");
    }
}

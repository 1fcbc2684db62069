//! `vbc-server bench-outcomes`: full evaluation throughput and incremental update latency of the
//! outcome engine, on a generated population held in memory (no HTTP, no disk: what is measured
//! is the evaluation itself). Prints figures; asserts nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::json;

use crate::engine::{days, AsOf, Engine};
use crate::error::{FhirError, Result};

/// Options of `bench-outcomes`.
#[derive(Debug, Clone, clap::Args)]
pub struct OutcomeBenchConfig {
    /// Contract definitions to evaluate (default: every `contracts/*.toml`).
    #[arg(long)]
    pub contract: Vec<PathBuf>,
    /// Patients generated per contract.
    #[arg(long, default_value_t = 100_000)]
    pub patients: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Full evaluations timed per contract (the best and the median are printed).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Single writes timed for the incremental update.
    #[arg(long, default_value_t = 2000)]
    pub writes: usize,
}

fn contract_files(cfg: &OutcomeBenchConfig) -> Vec<PathBuf> {
    if !cfg.contract.is_empty() {
        return cfg.contract.clone();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir("contracts")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// A generated population loaded into an in-memory engine with its contract registered.
pub struct Population {
    /// The engine.
    pub engine: std::sync::Arc<Engine>,
    /// Resource versions loaded.
    pub resources: usize,
    /// Cohort members (expected).
    pub members: Vec<String>,
    /// The recording time of the first version (ms).
    pub t0: i64,
    /// The contract Measure id.
    pub contract: String,
    /// How long registering the contract (its first full evaluation) took.
    pub register: std::time::Duration,
}

/// Generate `patients` for a contract and load them into an in-memory engine (no contract
/// registered while loading), then register the contract.
pub fn populate(
    compiled: &crate::contracts::Compiled,
    patients: usize,
    seed: u64,
    today: days::Day,
) -> Population {
    let rules = compiled.rules.clone();
    let engine = Engine::in_memory(vec![crate::config::DEFAULT_LINK_SYSTEM.to_string()]);
    let mut versions: HashMap<(String, String), u64> = HashMap::new();
    let mut resources = 0usize;
    let mut members: Vec<String> = Vec::new();
    let t0 = crate::clock::now_ms() - 86_400_000;
    let mut batch = Vec::with_capacity(4096);
    for (bundles, expected) in crate::synth::generate(&rules, patients, seed, today) {
        if expected.membership.as_deref() == Some("member") {
            members.push(expected.person.clone());
        }
        for b in bundles {
            for e in b["entry"].as_array().into_iter().flatten() {
                let r = &e["resource"];
                let (Some(t), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
                    continue;
                };
                let v = versions.entry((t.to_string(), id.to_string())).or_insert(0);
                *v += 1;
                resources += 1;
                batch.push((
                    t.to_string(),
                    id.to_string(),
                    *v,
                    t0 + resources as i64,
                    serde_json::to_vec(r).ok(),
                ));
            }
        }
        if batch.len() >= 4000 {
            engine.ingest(&batch);
            batch.clear();
        }
    }
    engine.ingest(&batch);
    let contract = crate::contracts::fhir::Ids::of(&rules).contract();
    let library = compiled
        .resources
        .iter()
        .find(|r| r["resourceType"] == "Library")
        .cloned()
        .unwrap_or_default();
    let start = Instant::now();
    engine.ingest(&[(
        "Library".into(),
        format!("{contract}-rules"),
        1,
        t0 + resources as i64 + 1,
        serde_json::to_vec(&library).ok(),
    )]);
    Population {
        engine,
        resources,
        members,
        t0,
        contract,
        register: start.elapsed(),
    }
}

/// Run the benchmark.
pub fn run(cfg: &OutcomeBenchConfig) -> Result<()> {
    let today = days::today();
    println!(
        "outcome engine benchmark: {} patients per contract, evaluation day {}",
        cfg.patients,
        days::format(today)
    );
    println!("| contract | resources | persons in IP | full evaluation (best / median) | patients/s | incremental p50 / p99 |");
    println!("|---|---:|---:|---:|---:|---:|");
    for file in contract_files(cfg) {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| FhirError::BadRequest(format!("{}: {e}", file.display())))?;
        let compiled = crate::contracts::compile(&text)?;
        let rules = compiled.rules.clone();
        let Population {
            engine,
            resources,
            members,
            t0,
            contract,
            register,
        } = populate(&compiled, cfg.patients, cfg.seed, today);
        let mut times = Vec::new();
        let mut persons = 0;
        for _ in 0..cfg.rounds.max(1) {
            let s = Instant::now();
            let r = engine.evaluate(
                &contract,
                AsOf {
                    instant_ms: None,
                    today,
                },
            )?;
            times.push(s.elapsed());
            persons = r.len();
        }
        times.sort();
        let best = times[0];
        let median = times[times.len() / 2];
        let rate = cfg.patients as f64 / best.as_secs_f64();
        // incremental: one new lab result for a cohort member, then that person's results current
        let mut hist = Histogram::<u64>::new(3).map_err(|e| FhirError::Storage(e.to_string()))?;
        let lab_code = rules
            .labs
            .values()
            .next()
            .and_then(|l| rules.valuesets.get(&l.valueset))
            .and_then(|vs| vs.codes.first())
            .map(|c| (c.system.clone(), c.code.clone()))
            .unwrap_or_else(|| ("http://loinc.org".into(), "4548-4".into()));
        for i in 0..cfg.writes.min(members.len().max(1) * 10) {
            let Some(p) = members.get(i % members.len().max(1)) else {
                break;
            };
            let obs = json!({"resourceType": "Observation", "id": format!("bench-obs-{i}"), "status": "final",
                "code": {"coding": [{"system": lab_code.0, "code": lab_code.1}]},
                "subject": {"reference": format!("Patient/{p}")}, "effectiveDateTime": days::format(today - 1),
                "valueQuantity": {"value": 6.5, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}});
            let bytes = serde_json::to_vec(&obs).ok();
            let s = Instant::now();
            engine.ingest(&[(
                "Observation".into(),
                format!("bench-obs-{i}"),
                1,
                t0 + resources as i64 + 10 + i as i64,
                bytes,
            )]);
            let _ = hist.record(s.elapsed().as_micros() as u64);
        }
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        println!(
            "| {name} | {resources} | {persons} | {:.1} ms / {:.1} ms (first, with registration: {:.1} ms) | {:.0} | {} / {} µs |",
            best.as_secs_f64() * 1000.0,
            median.as_secs_f64() * 1000.0,
            register.as_secs_f64() * 1000.0,
            rate,
            hist.value_at_quantile(0.5),
            hist.value_at_quantile(0.99)
        );
    }
    if let Some(rss) = super::peak_rss_mib(std::process::id()) {
        println!("peak RSS of the benchmark process: {rss:.0} MiB");
    }
    Ok(())
}

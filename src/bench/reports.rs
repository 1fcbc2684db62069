//! `vbc-server bench-reports`: (1) the time to produce a contract's full report set
//! (performance with its settlement, one quality report per reported outcome, the subject-list
//! report, serialized) over a generated population held in memory; (2) the p50/p99 latency of a
//! payer's MeasureReport search with `_include=MeasureReport:evaluated-resource` over HTTP
//! against a spawned server holding published report sets. Prints figures; asserts nothing.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::outcomes::{populate, Population};
use crate::days;
use crate::error::{FhirError, Result};
use crate::reports::common::{in_period, Period};
use crate::reports::performance;
use crate::reports::set::ReportSet;

/// Options of `bench-reports`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportBenchConfig {
    /// Contract definition whose report set is timed.
    #[arg(long, default_value = "contracts/januvia-aetna.toml")]
    pub contract: PathBuf,
    /// Patients generated for the report set.
    #[arg(long, default_value_t = 100_000)]
    pub patients: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Report sets timed (best and median printed).
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    /// Patients posted per contract for the search benchmark.
    #[arg(long, default_value_t = 200)]
    pub search_patients: usize,
    /// Quarterly report sets published per contract for the search benchmark.
    #[arg(long, default_value_t = 8)]
    pub quarters: usize,
    /// Searches timed.
    #[arg(long, default_value_t = 2000)]
    pub searches: usize,
}

use super::err;

/// Run both parts.
pub async fn run(cfg: ReportBenchConfig) -> Result<()> {
    report_set(&cfg)?;
    search(&cfg).await
}

fn report_set(cfg: &ReportBenchConfig) -> Result<()> {
    let today = days::today();
    let text = std::fs::read_to_string(&cfg.contract)
        .map_err(|e| FhirError::BadRequest(format!("{}: {e}", cfg.contract.display())))?;
    let compiled = crate::contracts::compile(&text)?;
    println!(
        "report set benchmark: {} ({} patients), evaluation day {}",
        cfg.contract.display(),
        cfg.patients,
        days::format(today)
    );
    let Population {
        engine, contract, ..
    } = populate(&compiled, cfg.patients, cfg.seed, today);
    let (plan, _) = engine
        .plan_for_measure(&contract)
        .ok_or_else(|| err("contract not registered"))?;
    let period = Period {
        start: days::parse_full("1900-01-01").unwrap_or(0),
        end: days::parse_full("2100-12-31").unwrap_or(0),
    };
    let mut times = Vec::new();
    let mut bytes = 0usize;
    let mut members = 0usize;
    for _ in 0..cfg.rounds.max(1) {
        let t = Instant::now();
        let results = engine.current(&contract)?;
        let chosen = in_period(&results, &period);
        members = chosen.len();
        let set = ReportSet::build(&plan, &chosen, &period, today);
        let mut out = Vec::new();
        let mut quality_refs = Vec::new();
        for (outcome, q) in &set.quality {
            out.push(serde_json::to_vec(q).map_err(err)?);
            quality_refs.push((format!("MeasureReport/q-{outcome}"), outcome.clone()));
        }
        out.push(serde_json::to_vec(&set.subject_list).map_err(err)?);
        let perf = performance::report(&plan, &set.settlement, &period, today, &quality_refs);
        out.push(serde_json::to_vec(&perf).map_err(err)?);
        times.push(t.elapsed());
        bytes = out.iter().map(Vec::len).sum();
    }
    times.sort();
    println!(
        "| contract | persons in the period | report set (best / median) | reports | serialized |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| {contract} | {members} | {:.1} ms / {:.1} ms | {} | {:.1} MiB |",
        times[0].as_secs_f64() * 1000.0,
        times[times.len() / 2].as_secs_f64() * 1000.0,
        plan.rules.reported().count() + 2,
        bytes as f64 / 1_048_576.0
    );
    Ok(())
}

async fn search(cfg: &ReportBenchConfig) -> Result<()> {
    let (_guard, base) = super::spawn(None, &["--report-schedule-secs", "0"])?;
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .map_err(err)?;
    super::wait_ready(&c, &base).await?;
    let today = days::today();
    let mut files: Vec<PathBuf> = std::fs::read_dir("contracts")
        .map_err(err)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut contracts = Vec::new();
    let mut published = 0usize;
    for f in &files {
        let rules = crate::contracts::source::compile(&std::fs::read_to_string(f).map_err(err)?)
            .map_err(|_| err(format!("{} does not compile", f.display())))?;
        for (bundles, _) in crate::synth::generate(&rules, cfg.search_patients, cfg.seed, today) {
            for b in bundles {
                c.post(&base)
                    .header("content-type", "application/fhir+json")
                    .json(&b)
                    .send()
                    .await
                    .map_err(err)?;
            }
        }
        let contract = crate::contracts::fhir::Ids::of(&rules).contract();
        // the quarters before today
        let mut end = today;
        for _ in 0..cfg.quarters {
            let start = end - 90;
            let r = c
                .post(format!(
                    "{base}/Measure/{contract}/$publish-reports?periodStart={}&periodEnd={}",
                    days::format(start),
                    days::format(end - 1)
                ))
                .send()
                .await
                .map_err(err)?;
            if r.status().is_success() {
                published += 1;
            }
            end = start;
        }
        contracts.push(contract);
    }
    let total: u64 = c
        .get(format!("{base}/MeasureReport?_summary=count"))
        .send()
        .await
        .map_err(err)?
        .json::<serde_json::Value>()
        .await
        .map_err(err)?["total"]
        .as_u64()
        .unwrap_or(0);
    let mut hist = Histogram::<u64>::new(3).map_err(err)?;
    for i in 0..cfg.searches {
        let contract = &contracts[i % contracts.len().max(1)];
        let url = format!(
            "{base}/MeasureReport?measure=https://vbc-server.dev/fhir/Measure/{contract}&category=vbp&_include=MeasureReport:evaluated-resource"
        );
        let t = Instant::now();
        let r = c.get(&url).send().await.map_err(err)?;
        let _ = r.bytes().await.map_err(err)?;
        hist.record(t.elapsed().as_micros().max(1) as u64)
            .map_err(err)?;
    }
    println!();
    println!(
        "payer search: {published} report sets published, {total} MeasureReports stored; {} searches `MeasureReport?measure=..&category=vbp&_include=MeasureReport:evaluated-resource` over HTTP",
        cfg.searches
    );
    println!(
        "| p50 | p99 | max |\n|---:|---:|---:|\n| {:.2} ms | {:.2} ms | {:.2} ms |",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0
    );
    Ok(())
}

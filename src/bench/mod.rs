//! `vbc-server bench`: load realistic per-patient transaction Bundles with concurrent clients
//! against a release server (spawned from this binary over a fresh data directory, or an existing
//! URL) and print throughput, latency percentiles and the server's peak memory.

pub mod auth;
pub mod generator;
pub mod outcomes;
pub mod reports;
pub mod search;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::error::{FhirError, Result};
use generator::{patient_bundle, Rng};

/// Options of `vbc-server bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchConfig {
    /// Patients (one transaction Bundle each).
    #[arg(long, default_value_t = 2000)]
    pub patients: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Single-resource creates and reads to time.
    #[arg(long, default_value_t = 1000)]
    pub singles: usize,
    /// Data generator seed.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Benchmark an already running server instead of spawning one.
    #[arg(long)]
    pub url: Option<String>,
    /// Data directory for the spawned server (default: a fresh temporary directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Skip loading (search an existing data directory loaded by an earlier run with the same
    /// `--patients` and `--seed`).
    #[arg(long)]
    pub skip_load: bool,
    /// Requests per search query kind and concurrency level (0 skips the search benchmark).
    #[arg(long, default_value_t = 0)]
    pub search_requests: usize,
}

/// A server process started by a bench command (killed, and its temporary data removed, on drop).
pub(crate) struct Spawned {
    child: Child,
    dir: PathBuf,
    remove_dir: bool,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub(crate) fn err(e: impl std::fmt::Display) -> FhirError {
    FhirError::Storage(e.to_string())
}

fn spawn_server(cfg: &BenchConfig) -> Result<(Spawned, String)> {
    spawn(cfg.data_dir.as_ref(), &[])
}

/// Start `vbc-server serve` on a free loopback port with `extra` flags, on `data_dir` or a fresh
/// temporary directory; returns the process guard and the base URL.
pub(crate) fn spawn(data_dir: Option<&PathBuf>, extra: &[&str]) -> Result<(Spawned, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(err)?
        .port();
    let (dir, remove_dir) = match data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("vbc-bench-{}", uuid::Uuid::new_v4())),
            true,
        ),
    };
    let exe = std::env::current_exe().map_err(err)?;
    let child = Command::new(exe)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&dir)
        .args(extra)
        // the benchmarks measure the data path; bench-auth passes its own auth flags
        .args(if extra.contains(&"--auth-clients") {
            &[][..]
        } else {
            &["--no-auth"][..]
        })
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(err)?;
    Ok((
        Spawned {
            child,
            dir,
            remove_dir,
        },
        format!("http://127.0.0.1:{port}"),
    ))
}

pub(crate) async fn wait_ready(client: &reqwest::Client, base: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(err(format!("server at {base} did not become ready")))
}

/// Peak resident set size (VmHWM) of a process, in MiB.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Bytes a directory occupies on disk (allocated blocks, as `du` counts them, not file lengths:
/// fjall's journals are sparse files of 64 MiB), leaving out the subdirectories named in `skip`.
fn dir_size(p: &std::path::Path, skip: &[&str]) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .filter(|e| !skip.iter().any(|s| e.file_name() == *s))
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_size(&e.path(), &[]),
                    Ok(m) => m.blocks() * 512,
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// The audit trail's size on disk and its number of events (from the chain's head file).
fn audit_size(dir: &std::path::Path) -> (u64, u64) {
    let bytes = dir_size(&dir.join(crate::server::AUDIT_LOG_DIR), &[]);
    let events = std::fs::read_to_string(dir.join(crate::server::AUDIT_HEAD))
        .ok()
        .and_then(|t| t.split(' ').next().and_then(|n| n.parse().ok()))
        .unwrap_or(0);
    (bytes, events)
}

pub(crate) fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

pub(crate) fn hist() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(err)
}

async fn search_only(
    cfg: &BenchConfig,
    client: &reqwest::Client,
    base: &str,
    spawned: Option<Spawned>,
) -> Result<()> {
    let report = search::run(client, base, cfg.patients, cfg.search_requests.max(100)).await?;
    let rss = spawned.as_ref().and_then(|s| peak_rss_mib(s.child.id()));
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"search": report, "server_peak_rss_mib": rss}))
            .map_err(err)?
    );
    Ok(())
}

/// Run the benchmark and print the figures.
pub async fn run(cfg: BenchConfig) -> Result<()> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.clients * 2)
        .build()
        .map_err(err)?;
    let (spawned, base) = match &cfg.url {
        Some(u) => (None, u.trim_end_matches('/').to_string()),
        None => {
            let (s, b) = spawn_server(&cfg)?;
            (Some(s), b)
        }
    };
    wait_ready(&client, &base).await?;

    if cfg.skip_load {
        return search_only(&cfg, &client, &base, spawned).await;
    }
    println!(
        "generating {} patient bundles (seed {})...",
        cfg.patients, cfg.seed
    );
    let mut rng = Rng::new(cfg.seed);
    let bundles: Vec<(usize, bytes::Bytes)> = (0..cfg.patients)
        .map(|n| {
            let b = patient_bundle(&mut rng, n);
            let count = b["entry"].as_array().map_or(0, |a| a.len());
            (
                count,
                bytes::Bytes::from(serde_json::to_vec(&b).unwrap_or_default()),
            )
        })
        .collect();
    let total_resources: usize = bundles.iter().map(|(c, _)| c).sum();
    let bundles = Arc::new(bundles);

    println!("loading with {} concurrent clients...", cfg.clients);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..cfg.clients {
        let (client, base, bundles, next) =
            (client.clone(), base.clone(), bundles.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = hist()?;
            let mut failures = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((_, body)) = bundles.get(i) else {
                    break;
                };
                let t = Instant::now();
                let resp = client
                    .post(&base)
                    .header("content-type", "application/fhir+json")
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(err)?;
                let ok = resp.status().is_success();
                let _ = resp.bytes().await;
                h.record(t.elapsed().as_micros().max(1) as u64)
                    .map_err(err)?;
                if !ok {
                    failures += 1;
                }
            }
            Ok::<_, FhirError>((h, failures))
        }));
    }
    let mut all = hist()?;
    let mut failures = 0;
    for t in tasks {
        let (h, f) = t.await.map_err(err)??;
        all.add(&h).map_err(err)?;
        failures += f;
    }
    let secs = started.elapsed().as_secs_f64();

    // single-resource latencies, sequential
    let mut create_h = hist()?;
    let mut ids = Vec::with_capacity(cfg.singles);
    for i in 0..cfg.singles {
        let obs = json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"reference": "Patient/bench"},
            "effectiveDateTime": "2025-03-01T10:00:00Z",
            "valueQuantity": {"value": 7.2, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
            "identifier": [{"system": "urn:bench", "value": i.to_string()}]
        });
        let t = Instant::now();
        let resp = client
            .post(format!("{base}/Observation"))
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=minimal")
            .body(obs.to_string())
            .send()
            .await
            .map_err(err)?;
        create_h
            .record(t.elapsed().as_micros().max(1) as u64)
            .map_err(err)?;
        if let Some(loc) = resp.headers().get("location").and_then(|v| v.to_str().ok()) {
            if let Some(id) = loc.split('/').rev().nth(2) {
                ids.push(id.to_string());
            }
        }
    }
    let mut read_h = hist()?;
    for id in &ids {
        let t = Instant::now();
        let resp = client
            .get(format!("{base}/Observation/{id}"))
            .send()
            .await
            .map_err(err)?;
        let _ = resp.bytes().await;
        read_h
            .record(t.elapsed().as_micros().max(1) as u64)
            .map_err(err)?;
    }

    let search_report = if cfg.search_requests > 0 {
        Some(search::run(&client, &base, cfg.patients, cfg.search_requests).await?)
    } else {
        None
    };
    let rss = spawned.as_ref().and_then(|s| peak_rss_mib(s.child.id()));
    let disk = spawned
        .as_ref()
        .map(|s| dir_size(&s.dir, &[crate::server::AUDIT_LOG_DIR]) as f64 / 1_048_576.0);
    let audit = spawned.as_ref().map(|s| audit_size(&s.dir));
    let report: Value = json!({
        "patients": cfg.patients,
        "clients": cfg.clients,
        "resources": total_resources,
        "failed_bundles": failures,
        "seconds": (secs * 100.0).round() / 100.0,
        "resources_per_s": (total_resources as f64 / secs).round(),
        "bundles_per_s": ((cfg.patients as f64 / secs) * 10.0).round() / 10.0,
        "bundle_latency_ms": {"p50": ms(&all, 0.5), "p99": ms(&all, 0.99), "max": all.max() as f64 / 1000.0},
        "single_create_ms": {"p50": ms(&create_h, 0.5), "p99": ms(&create_h, 0.99)},
        "single_read_ms": {"p50": ms(&read_h, 0.5), "p99": ms(&read_h, 0.99)},
        "server_peak_rss_mib": rss.map(|r| (r * 10.0).round() / 10.0),
        "data_dir_mib": disk.map(|d| (d * 10.0).round() / 10.0),
        "durability": "fsync before every acknowledgement (group commit)",
        "data_dir_bytes_per_resource": disk.map(|d| (d * 1_048_576.0 / (total_resources + cfg.singles) as f64).round()),
        "audit_trail": audit.map(|(bytes, events)| json!({
            "events": events,
            "bytes": bytes,
            "bytes_per_event": (bytes as f64 / events.max(1) as f64).round(),
        })),
        "search": search_report,
    });
    println!("{}", serde_json::to_string_pretty(&report).map_err(err)?);
    println!(
        "ingest: {:.0} resources/s ({} resources in {:.1}s, {} clients); bundle p50 {:.1} ms p99 {:.1} ms; create p50 {:.2} ms p99 {:.2} ms; read p50 {:.2} ms p99 {:.2} ms; peak RSS {}",
        total_resources as f64 / secs,
        total_resources,
        secs,
        cfg.clients,
        ms(&all, 0.5),
        ms(&all, 0.99),
        ms(&create_h, 0.5),
        ms(&create_h, 0.99),
        ms(&read_h, 0.5),
        ms(&read_h, 0.99),
        rss.map_or("n/a".to_string(), |r| format!("{r:.0} MiB")),
    );
    if let (Some(d), Some((bytes, events))) = (disk, audit) {
        println!(
            "on disk: {:.0} bytes per resource (store, allocated blocks); audit trail {bytes} bytes for {events} events ({:.0} bytes per audited request)",
            d * 1_048_576.0 / (total_resources + cfg.singles).max(1) as f64,
            bytes as f64 / events.max(1) as f64
        );
    }
    drop(spawned);
    if failures > 0 {
        return Err(err(format!("{failures} bundles failed")));
    }
    Ok(())
}

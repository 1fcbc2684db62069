//! Search benchmark: after the load, time the searches payers, dashboards and the contract engine
//! run (first page, default total), at 1, 8 and 32 concurrent clients, and print p50/p99 and
//! throughput per query kind.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use super::generator::{Rng, MEASURES};
use super::{err, hist, ms};
use crate::error::{FhirError, Result};

/// The query kinds timed.
pub const KINDS: &[&str] = &[
    "token patient+code",
    "date range patient",
    "MeasureReport measure+period",
    "_include",
    "_revinclude",
    "chained patient.identifier",
    "_summary=count patient",
    "_summary=count code (all patients)",
    "broad date+code (all patients)",
    "Patient?identifier",
    "MedicationDispense?patient",
];

fn query(kind: usize, pid: &str, n: u64, rng: &mut Rng) -> String {
    let measure = MEASURES[(n % MEASURES.len() as u64) as usize];
    match kind {
        0 => format!("Observation?patient={pid}&code=http://loinc.org|4548-4"),
        1 => format!("Observation?patient={pid}&date=ge2023-06-01&date=lt2024-06-01"),
        2 => format!("MeasureReport?measure={measure}&period=2024"),
        3 => format!("Observation?patient={pid}&code=http://loinc.org|4548-4&_include=Observation:patient"),
        4 => format!("Patient?_id={pid}&_revinclude=Observation:patient"),
        5 => format!(
            "Observation?patient.identifier=urn:oid:2.16.840.1.113883.4.3.25|MBR{n:09}&code=http://loinc.org|13457-7"
        ),
        6 => format!("Observation?patient={pid}&_summary=count"),
        7 => {
            let _ = rng.next_u64();
            "Observation?code=http://loinc.org|4548-4&_summary=count".to_string()
        }
        8 => "Observation?date=ge2024-01-01&code=http://loinc.org|4548-4".to_string(),
        9 => format!("Patient?identifier=urn:oid:2.16.840.1.113883.4.3.25|MBR{n:09}"),
        _ => format!("MedicationDispense?patient={pid}"),
    }
}

/// Resolve the ids of a sample of loaded patients (not timed).
async fn sample_patients(
    client: &reqwest::Client,
    base: &str,
    patients: u64,
    sample: usize,
) -> Result<Vec<(u64, String)>> {
    let mut rng = Rng::new(7);
    let mut out = Vec::new();
    for _ in 0..sample {
        let n = rng.range(0, patients.saturating_sub(1));
        let b: Value = client
            .get(format!(
                "{base}/Patient?identifier=urn:oid:2.16.840.1.113883.4.3.25|MBR{n:09}&_elements=id"
            ))
            .send()
            .await
            .map_err(err)?
            .json()
            .await
            .map_err(err)?;
        if let Some(id) = b["entry"][0]["resource"]["id"].as_str() {
            out.push((n, id.to_string()));
        }
    }
    if out.is_empty() {
        return Err(err("no loaded patient found by identifier"));
    }
    Ok(out)
}

/// Time every query kind at each concurrency; returns the report.
pub async fn run(
    client: &reqwest::Client,
    base: &str,
    patients: u64,
    requests: usize,
) -> Result<Value> {
    let sample = Arc::new(sample_patients(client, base, patients, 200).await?);
    let mut rows = Vec::new();
    for &clients in &[1usize, 8, 32] {
        for (kind, name) in KINDS.iter().enumerate() {
            let per_client = (requests / clients).max(1);
            let started = Instant::now();
            let mut tasks = Vec::new();
            for c in 0..clients {
                let (client, base, sample) = (client.clone(), base.to_string(), sample.clone());
                tasks.push(tokio::spawn(async move {
                    let mut h = hist()?;
                    let mut rng = Rng::new(1000 + c as u64);
                    let mut failures = 0usize;
                    let mut entries = 0usize;
                    for _ in 0..per_client {
                        let (n, pid) = &sample[rng.range(0, sample.len() as u64 - 1) as usize];
                        let q = query(kind, pid, *n, &mut rng);
                        let t = Instant::now();
                        let resp = client
                            .get(format!("{base}/{q}"))
                            .send()
                            .await
                            .map_err(err)?;
                        let ok = resp.status().is_success();
                        let body = resp.bytes().await.map_err(err)?;
                        h.record(t.elapsed().as_micros().max(1) as u64)
                            .map_err(err)?;
                        if !ok {
                            failures += 1;
                        } else {
                            entries += body.windows(11).filter(|w| w == b"\"fullUrl\":\"").count();
                        }
                    }
                    Ok::<_, FhirError>((h, failures, entries))
                }));
            }
            let mut all = hist()?;
            let (mut failures, mut entries) = (0, 0);
            for t in tasks {
                let (h, f, e) = t.await.map_err(err)??;
                all.add(&h).map_err(err)?;
                failures += f;
                entries += e;
            }
            let secs = started.elapsed().as_secs_f64();
            let total = per_client * clients;
            println!(
                "search {name:<36} clients {clients:>2}: p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  {:>7.0} req/s  ({} requests, {:.1} entries/response, {failures} failed)",
                ms(&all, 0.5),
                ms(&all, 0.99),
                all.max() as f64 / 1000.0,
                total as f64 / secs,
                total,
                entries as f64 / total as f64
            );
            rows.push(json!({
                "query": name, "clients": clients, "requests": total,
                "p50_ms": ms(&all, 0.5), "p99_ms": ms(&all, 0.99), "max_ms": all.max() as f64 / 1000.0,
                "req_per_s": (total as f64 / secs).round(), "failed": failures
            }));
            if failures > 0 {
                return Err(err(format!("{failures} searches of '{name}' failed")));
            }
        }
    }
    Ok(Value::Array(rows))
}

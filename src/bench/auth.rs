//! `vbc-server bench-auth`: the cost of authentication and access rules on the request path.
//! Two servers hold the same data, one with `--no-auth` and one with auth on; the same reads
//! and searches are timed against both (sequentially, one client), as an administrator (scope
//! checks only) and as a payer (scopes plus the membership rule on every resource returned).
//! Prints p50/p99 per case and the difference to no auth.

use std::path::PathBuf;
use std::time::Instant;

use hdrhistogram::Histogram;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::{err, hist, spawn, wait_ready};
use crate::error::Result;

/// Options of `vbc-server bench-auth`.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthBenchConfig {
    /// Patients loaded (each with a Coverage by the payer and three Observations).
    #[arg(long, default_value_t = 200)]
    pub patients: usize,
    /// Requests per case.
    #[arg(long, default_value_t = 3000)]
    pub requests: usize,
    /// The client registry (its clients `admin-app` and `payer-wide` are used).
    #[arg(long, default_value = "tests/data/auth/clients.json")]
    pub clients: PathBuf,
    /// The clients' ES384 private key (kid `es-1`).
    #[arg(long, default_value = "tests/data/auth/es384-private.pem")]
    pub key: PathBuf,
}

const PAYER: &str = "Organization/org-aetna";

fn assertion(key: &EncodingKey, client: &str, aud: &str) -> Result<String> {
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some("es-1".into());
    h.typ = Some("JWT".into());
    let now = jsonwebtoken::get_current_timestamp();
    encode(
        &h,
        &json!({"iss": client, "sub": client, "aud": aud, "exp": now + 240,
                "jti": uuid::Uuid::new_v4().to_string()}),
        key,
    )
    .map_err(err)
}

async fn token(
    http: &reqwest::Client,
    base: &str,
    key: &EncodingKey,
    client: &str,
    scope: &str,
) -> Result<String> {
    let url = format!("{base}/auth/token");
    let a = assertion(key, client, &url)?;
    let r: Value = http
        .post(&url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_assertion_type", crate::http::smart::JWT_BEARER),
            ("client_assertion", &a),
            ("scope", scope),
        ])
        .send()
        .await
        .map_err(err)?
        .json()
        .await
        .map_err(err)?;
    r["access_token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| err(format!("no token for {client}: {r}")))
}

fn patient_bundle(i: usize) -> Value {
    let pid = format!("bench-auth-{i}");
    let mut entries = vec![
        json!({"resource": {"resourceType": "Patient", "id": pid, "gender": "female",
               "birthDate": "1960-01-01"},
               "request": {"method": "PUT", "url": format!("Patient/{pid}")}}),
        json!({"resource": {"resourceType": "Coverage", "id": format!("{pid}-cov"), "status": "active",
               "beneficiary": {"reference": format!("Patient/{pid}")},
               "payor": [{"reference": PAYER}]},
               "request": {"method": "PUT", "url": format!("Coverage/{pid}-cov")}}),
    ];
    for k in 0..3 {
        entries.push(json!({"resource": {"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"reference": format!("Patient/{pid}")},
            "effectiveDateTime": format!("2024-0{}-15", k + 1),
            "valueQuantity": {"value": 7.1, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}},
            "request": {"method": "POST", "url": "Observation"}}));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

async fn load(http: &reqwest::Client, base: &str, bearer: Option<&str>, n: usize) -> Result<()> {
    for i in 0..n {
        let mut req = http
            .post(base)
            .header("content-type", "application/fhir+json")
            .body(patient_bundle(i).to_string());
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.map_err(err)?;
        if !r.status().is_success() {
            return Err(err(format!("load failed: {}", r.status())));
        }
    }
    Ok(())
}

async fn time_one(
    http: &reqwest::Client,
    base: &str,
    bearer: Option<&str>,
    patient: usize,
    search: bool,
) -> Result<u64> {
    let pid = format!("bench-auth-{patient}");
    let url = if search {
        format!("{base}/Observation?patient={pid}&code=http://loinc.org|4548-4")
    } else {
        format!("{base}/Patient/{pid}")
    };
    let mut req = http.get(&url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let start = Instant::now();
    let r = req.send().await.map_err(err)?;
    let status = r.status();
    let body = r.bytes().await.map_err(err)?;
    let us = start.elapsed().as_micros() as u64;
    if !status.is_success() || (search && body.len() < 200) {
        return Err(err(format!("{url}: {status}")));
    }
    Ok(us)
}

/// Run the benchmark and print the figures.
pub async fn run(cfg: AuthBenchConfig) -> Result<()> {
    let clients = cfg.clients.to_string_lossy().to_string();
    let (_open_guard, open) = spawn(None, &["--contracts-dir", ""])?;
    let (_auth_guard, authed) = spawn(None, &["--contracts-dir", "", "--auth-clients", &clients])?;
    let http = reqwest::Client::new();
    wait_ready(&http, &open).await?;
    wait_ready(&http, &authed).await?;
    let pem = std::fs::read(&cfg.key).map_err(err)?;
    let key = EncodingKey::from_ec_pem(&pem).map_err(err)?;
    let admin = token(&http, &authed, &key, "admin-app", "system/*.*").await?;
    let payer = token(&http, &authed, &key, "payer-wide", "system/*.rs").await?;
    println!("loading {} patients into both servers...", cfg.patients);
    load(&http, &open, None, cfg.patients).await?;
    load(&http, &authed, Some(&admin), cfg.patients).await?;
    let mut rows = Vec::new();
    println!(
        "{:<36} {:<12} {:>8} {:>8} {:>12} {:>12}",
        "request", "caller", "p50 µs", "p99 µs", "+p50 µs", "+p99 µs"
    );
    for (what, search) in [
        ("read Patient/[id]", false),
        ("search Observation?patient&code", true),
    ] {
        // the three callers take turns, request by request, so machine noise hits them alike
        let (mut none, mut adm, mut pay) = (hist()?, hist()?, hist()?);
        for round in 0..cfg.requests + cfg.requests / 10 {
            let warm = round < cfg.requests / 10;
            for (base, bearer, h) in [
                (&open, None, &mut none),
                (&authed, Some(admin.as_str()), &mut adm),
                (&authed, Some(payer.as_str()), &mut pay),
            ] {
                let us = time_one(&http, base, bearer, round % cfg.patients, search).await?;
                if !warm {
                    h.record(us.max(1)).map_err(err)?;
                }
            }
        }
        let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q);
        for (who, h) in [
            ("no auth", &none),
            ("admin token", &adm),
            ("payer token", &pay),
        ] {
            rows.push(json!({
                "request": what, "caller": who,
                "p50_us": p(h, 0.5), "p99_us": p(h, 0.99),
                "added_p50_us": p(h, 0.5) as i64 - p(&none, 0.5) as i64,
                "added_p99_us": p(h, 0.99) as i64 - p(&none, 0.99) as i64,
            }));
            println!(
                "{what:<36} {who:<12} {:>8} {:>8} {:>12} {:>12}",
                p(h, 0.5),
                p(h, 0.99),
                p(h, 0.5) as i64 - p(&none, 0.5) as i64,
                p(h, 0.99) as i64 - p(&none, 0.99) as i64
            );
        }
    }
    println!(
        "{:<36} {:<12} {:>8} {:>8} {:>12} {:>12}",
        "request", "caller", "p50 µs", "p99 µs", "+p50 µs", "+p99 µs"
    );
    for r in &rows {
        println!(
            "{:<36} {:<12} {:>8} {:>8} {:>12} {:>12}",
            r["request"].as_str().unwrap_or_default(),
            r["caller"].as_str().unwrap_or_default(),
            r["p50_us"],
            r["p99_us"],
            r["added_p50_us"],
            r["added_p99_us"]
        );
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({"auth": rows})).map_err(err)?
    );
    Ok(())
}

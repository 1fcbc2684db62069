//! A deterministic synthetic population generator for a contract, with the expected result of
//! every patient: `vbc-server synth`.
//!
//! The generator is the independent oracle the outcome engine is tested against. It never calls
//! the engine: for each patient it first decides a scenario (not in the initial population, not a
//! new user, ineligible for one reason, or a member with a target status per outcome), builds a
//! small data model that realises it ([`model`]), judges that model with its own reading of the
//! "Evaluation semantics" of `contracts/FORMAT.md` ([`oracle`]), and only then writes the model
//! as FHIR transaction Bundles. Scenarios whose result the specification leaves open (a time zone
//! that moves a result past the evaluation day, a death in the middle of an adherence window, ...)
//! are detected by the oracle and drawn again, so every expected status is unambiguous.
//!
//! Everything is a pure function of (contract, seed, patient number, evaluation day): the same
//! arguments give byte-identical output, and every resource has a deterministic id (PUT), so
//! posting a population twice is idempotent. Ids carry a contract tag and the seed, so the
//! populations of several contracts can be loaded into one server.

mod model;
mod oracle;
mod scenario;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use serde_json::{json, Value};

use crate::contracts::fhir::org_id;
use crate::contracts::rules::{Rule, RuleSet};
use crate::days::{self, Day};
use crate::error::{FhirError, Result};
use crate::search::units::{self, Analyte};

pub use oracle::Status;

/// The expected result of one person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The canonical patient id: the smallest Patient id (string order) of the person.
    pub person: String,
    /// None: not in the initial population; else `not-new-user`, `ineligible` or `member`.
    pub membership: Option<String>,
    /// The index date (YYYY-MM-DD) when in the initial population.
    pub index: Option<String>,
    /// Outcome id -> `met`, `not-met`, `pending`, `missing-data` or `excluded`; members only,
    /// every outcome of the rule set (report = false ones too).
    pub outcomes: BTreeMap<String, String>,
    /// A short label of the scenario.
    pub case: String,
}

impl Expected {
    /// As one JSON object (a line of `expected.ndjson`).
    pub fn to_json(&self) -> Value {
        json!({
            "person": self.person,
            "membership": self.membership,
            "index": self.index,
            "outcomes": self.outcomes,
            "case": self.case,
        })
    }
}

/// Output layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SynthFormat {
    /// `bundles.ndjson`: one transaction Bundle per line, in posting order.
    Bundles,
    /// `<Type>.ndjson`: one resource per line per type, in posting order (a later line with the
    /// same id is a later version of the resource).
    Ndjson,
}

/// `vbc-server synth`.
#[derive(Debug, Clone, clap::Args)]
pub struct SynthConfig {
    /// The contract (vbc-contract/1 TOML).
    #[arg(long)]
    pub contract: PathBuf,
    /// Number of patients (persons).
    #[arg(long, default_value_t = 100)]
    pub patients: usize,
    /// Seed: the same seed gives the same population.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Evaluation day the expected results hold for (YYYY-MM-DD; default today UTC). No
    /// generated date is after it.
    #[arg(long)]
    pub today: Option<String>,
    /// Output directory (created when missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Output layout.
    #[arg(long, value_enum, default_value_t = SynthFormat::Bundles)]
    pub format: SynthFormat,
}

/// Write the population and `expected.ndjson` (streamed: memory does not grow with N).
pub fn run(cfg: &SynthConfig) -> Result<()> {
    let text = std::fs::read_to_string(&cfg.contract).map_err(|e| {
        FhirError::BadRequest(format!("cannot read {}: {e}", cfg.contract.display()))
    })?;
    let rules = crate::contracts::source::compile(&text).map_err(FhirError::Invalid)?;
    let today = match &cfg.today {
        Some(s) => days::parse_full(s).ok_or_else(|| {
            FhirError::BadRequest(format!("--today '{s}' is not a date YYYY-MM-DD"))
        })?,
        None => days::today(),
    };
    let io = |e: std::io::Error| FhirError::Storage(format!("{}: {e}", cfg.out.display()));
    std::fs::create_dir_all(&cfg.out).map_err(io)?;
    let mut expected = BufWriter::new(File::create(cfg.out.join("expected.ndjson")).map_err(io)?);
    let mut bundles = match cfg.format {
        SynthFormat::Bundles => Some(BufWriter::new(
            File::create(cfg.out.join("bundles.ndjson")).map_err(io)?,
        )),
        SynthFormat::Ndjson => None,
    };
    let mut by_type: HashMap<String, BufWriter<File>> = HashMap::new();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (bs, exp) in generate(&rules, cfg.patients, cfg.seed, today) {
        for b in &bs {
            if let Some(w) = bundles.as_mut() {
                serde_json::to_writer(&mut *w, b).map_err(|e| FhirError::Storage(e.to_string()))?;
                w.write_all(b"\n").map_err(io)?;
                continue;
            }
            for e in b["entry"].as_array().into_iter().flatten() {
                let r = &e["resource"];
                let t = r["resourceType"].as_str().unwrap_or("Basic").to_string();
                if !by_type.contains_key(&t) {
                    let f = File::create(cfg.out.join(format!("{t}.ndjson"))).map_err(io)?;
                    by_type.insert(t.clone(), BufWriter::new(f));
                }
                if let Some(w) = by_type.get_mut(&t) {
                    serde_json::to_writer(&mut *w, r)
                        .map_err(|e| FhirError::Storage(e.to_string()))?;
                    w.write_all(b"\n").map_err(io)?;
                }
            }
        }
        let key = exp
            .membership
            .clone()
            .unwrap_or_else(|| "not-in-initial-population".into());
        *counts.entry(key).or_default() += 1;
        for (o, s) in &exp.outcomes {
            *counts.entry(format!("{o}={s}")).or_default() += 1;
        }
        serde_json::to_writer(&mut expected, &exp.to_json())
            .map_err(|e| FhirError::Storage(e.to_string()))?;
        expected.write_all(b"\n").map_err(io)?;
    }
    if let Some(mut w) = bundles {
        w.flush().map_err(io)?;
    }
    for (_, mut w) in by_type {
        w.flush().map_err(io)?;
    }
    expected.flush().map_err(io)?;
    println!(
        "{} patients of {} (seed {}, today {}) written to {}",
        cfg.patients,
        rules.contract.id,
        cfg.seed,
        days::format(today),
        cfg.out.display()
    );
    for (k, n) in counts {
        println!("  {k}: {n}");
    }
    Ok(())
}

/// The population: per patient the Bundles to post (in order) and the expected result.
pub fn generate(
    rules: &RuleSet,
    n: usize,
    seed: u64,
    today: Day,
) -> impl Iterator<Item = (Vec<Value>, Expected)> {
    let ctx = Ctx::new(rules.clone(), seed, today);
    (0..n).map(move |i| {
        let (m, exp) = scenario::person(&ctx, i);
        (model::bundles(&ctx, &m, i == 0), exp)
    })
}

/// A small deterministic PRNG (splitmix64).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator for one stream of a seed.
    pub(crate) fn new(seed: u64, stream: u64, attempt: u64) -> Rng {
        let mut r = Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B);
        let a = r.next_u64();
        let mut r = Rng(a ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = r.next_u64();
        Rng(b ^ attempt.wrapping_mul(0xBF58_476D_1CE4_E5B9))
    }

    /// Next raw value.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi` (lo when hi < lo).
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        lo + (self.next_u64() % ((hi - lo) as u64 + 1)) as i64
    }

    /// True with probability `pct` percent.
    pub(crate) fn pct(&mut self, pct: u64) -> bool {
        self.next_u64() % 100 < pct
    }

    /// One element (None when empty).
    pub(crate) fn pick<'a, T>(&mut self, xs: &'a [T]) -> Option<&'a T> {
        if xs.is_empty() {
            return None;
        }
        xs.get((self.next_u64() % xs.len() as u64) as usize)
    }
}

/// A code: (system, code).
pub(crate) type Code = (String, String);

/// A lab as the generator uses it.
#[derive(Debug, Clone)]
pub(crate) struct LabInfo {
    /// The unit results are compared in.
    pub unit: String,
    /// Codes of the lab's value set.
    pub codes: Vec<Code>,
    /// Codes whose LOINC has unit equations (for results sent in the other unit).
    pub analyte_codes: Vec<Code>,
    /// The analyte, when the lab has one.
    pub analyte: Option<Analyte>,
    /// Decimals of generated values.
    pub dp: u32,
}

/// Everything about a contract the generator needs, worked out once.
pub(crate) struct Ctx {
    pub rules: RuleSet,
    pub seed: u64,
    pub today: Day,
    /// Id prefix of the contract: its id's first 8 characters.
    pub tag: String,
    pub intake: (Day, Day),
    pub sets: HashMap<String, HashSet<Code>>,
    pub all_codes: HashSet<Code>,
    pub labs: HashMap<String, LabInfo>,
    /// The payer Organization as the contract publishes it.
    pub payer_org: Value,
    pub payer_ref: String,
}

impl Ctx {
    fn new(rules: RuleSet, seed: u64, today: Day) -> Ctx {
        let mut sets = HashMap::new();
        let mut all_codes = HashSet::new();
        for (name, vs) in &rules.valuesets {
            let s: HashSet<Code> = vs
                .codes
                .iter()
                .map(|c| (c.system.clone(), c.code.clone()))
                .collect();
            all_codes.extend(s.iter().cloned());
            sets.insert(name.clone(), s);
        }
        let mut labs = HashMap::new();
        for (name, l) in &rules.labs {
            let codes: Vec<Code> = rules
                .valuesets
                .get(&l.valueset)
                .map(|vs| {
                    vs.codes
                        .iter()
                        .map(|c| (c.system.clone(), c.code.clone()))
                        .collect()
                })
                .unwrap_or_default();
            let analyte_codes: Vec<Code> = codes
                .iter()
                .filter(|c| c.0 == "http://loinc.org" && units::analyte(&c.1).is_some())
                .cloned()
                .collect();
            let analyte = analyte_codes.first().and_then(|c| units::analyte(&c.1));
            let mut big = false;
            for o in &rules.outcomes {
                if let Rule::LabTarget { lab, target, .. } = &o.rule {
                    if lab == name && dec(&target.value).abs() >= rust_decimal::Decimal::from(30) {
                        big = true;
                    }
                }
            }
            for c in &rules.cohort.labs {
                if &c.lab == name && dec(&c.value.value).abs() >= rust_decimal::Decimal::from(30) {
                    big = true;
                }
            }
            if l.unit == "mg/dL" {
                big = true;
            }
            let dp = if l.unit == "{score}" || big { 0 } else { 1 };
            labs.insert(
                name.clone(),
                LabInfo {
                    unit: l.unit.clone(),
                    codes,
                    analyte_codes,
                    analyte,
                    dp,
                },
            );
        }
        let payer = &rules.contract.payer;
        let mut payer_org = json!({
            "resourceType": "Organization",
            "id": org_id(&payer.name),
            "active": true,
            "name": payer.name,
        });
        if let (Some(s), Some(v)) = (&payer.identifier_system, &payer.identifier_value) {
            payer_org["identifier"] = json!([{"system": s, "value": v}]);
        }
        let tag: String = rules.contract.id.chars().take(8).collect();
        let tag = tag.trim_end_matches('-').to_string();
        let intake = (
            days::parse_full(&rules.cohort.intake_start).unwrap_or(0),
            days::parse_full(&rules.cohort.intake_end).unwrap_or(0),
        );
        Ctx {
            payer_ref: format!("Organization/{}", org_id(&payer.name)),
            payer_org,
            rules,
            seed,
            today,
            tag,
            intake,
            sets,
            all_codes,
            labs,
        }
    }

    /// True when a code is in a named value set.
    pub(crate) fn in_set(&self, set: &str, code: &Code) -> bool {
        self.sets.get(set).is_some_and(|s| s.contains(code))
    }

    /// The codes of a value set in definition order.
    pub(crate) fn codes(&self, set: &str) -> Vec<Code> {
        self.rules
            .valuesets
            .get(set)
            .map(|vs| {
                vs.codes
                    .iter()
                    .map(|c| (c.system.clone(), c.code.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A decimal from the rule set's decimal strings (0 when malformed, which compile rules out).
pub(crate) fn dec(s: &str) -> rust_decimal::Decimal {
    s.parse().unwrap_or_default()
}

#[cfg(test)]
mod tests;

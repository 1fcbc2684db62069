//! End to end through the HTTP API: every catalog contract loaded at start, a generated
//! population per contract posted as transaction Bundles, and the `$outcomes` answer compared
//! person by person with the generator's expected results.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::Value;
use vbc_server::engine::days;

fn part<'a>(v: &'a Value, name: &str) -> Vec<&'a Value> {
    v["part"]
        .as_array()
        .map(|ps| ps.iter().filter(|p| p["name"] == name).collect())
        .unwrap_or_default()
}

/// (membership, outcome id -> status) per person from a `$outcomes` Parameters.
fn answer(v: &Value) -> HashMap<String, (String, HashMap<String, String>)> {
    let mut out = HashMap::new();
    for r in v["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "result")
    {
        let subject = part(r, "subject")[0]["valueReference"]["reference"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("Patient/")
            .to_string();
        let membership = part(r, "membership")[0]["valueCode"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let outcomes = part(r, "outcome")
            .into_iter()
            .map(|o| {
                (
                    part(o, "id")[0]["valueString"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    part(o, "status")[0]["valueCode"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                )
            })
            .collect();
        out.insert(subject, (membership, outcomes));
    }
    out
}

#[test]
fn every_catalog_contract_is_evaluated_correctly_through_http_on_generated_data() {
    let s = Server::start_with(&["--contracts-dir", "contracts"]);
    let c = client();
    let today = days::today();
    let mut files: Vec<_> = std::fs::read_dir("contracts")
        .expect("contracts")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert_eq!(
        files.len(),
        13,
        "one definition per catalog row except Jardiance"
    );
    let mut failures = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        let rules = vbc_server::contracts::source::compile(&text).expect("compiles");
        let contract = vbc_server::contracts::fhir::Ids::of(&rules).contract();
        let population: Vec<_> = vbc_server::synth::generate(&rules, 60, 3, today).collect();
        for (bundles, _) in &population {
            for b in bundles {
                post_bundle(&s, &c, b);
            }
        }
        let got = answer(&get_json(
            &s,
            &c,
            &format!("/Measure/{contract}/$outcomes?_count=1000"),
        ));
        for (_, exp) in &population {
            match (got.get(&exp.person), &exp.membership) {
                (None, None) => {}
                (Some((m, outcomes)), Some(em)) if m == em => {
                    if em == "member" {
                        for (id, st) in &exp.outcomes {
                            if outcomes.get(id) != Some(st) {
                                failures.push(format!(
                                    "{contract} {} ({}): {id} {:?} expected {st}",
                                    exp.person,
                                    exp.case,
                                    outcomes.get(id)
                                ));
                            }
                        }
                    }
                }
                (g, e) => failures.push(format!(
                    "{contract} {} ({}): membership {:?} expected {e:?}",
                    exp.person,
                    exp.case,
                    g.map(|x| &x.0)
                )),
            }
        }
        let expected: Vec<&vbc_server::synth::Expected> =
            population.iter().map(|(_, e)| e).collect();
        failures.extend(check_reports(&s, &c, &rules, &contract, &expected));
        failures.extend(check_individual_sums(&s, &c, &contract, &expected));
        failures.extend(check_drug_cost_money(
            &s,
            &c,
            &rules,
            &contract,
            &population,
            today,
        ));
        let expected_persons = population
            .iter()
            .filter(|(_, e)| e.membership.is_some())
            .count();
        if got.len() != expected_persons {
            failures.push(format!(
                "{contract}: {} persons answered, {expected_persons} expected",
                got.len()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn population_count(group: &Value, code: &str) -> i64 {
    group["population"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["code"]["coding"][0]["code"] == code)
        .and_then(|p| p["count"].as_i64())
        .unwrap_or(-1)
}

fn ext<'a>(v: &'a Value, url_end: &str) -> Option<&'a Value> {
    v["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(url_end)))
}

/// `$evaluate-measure` over the whole time line: the quality report counts of every reported
/// outcome and the performance report's money, against values computed here from the
/// generator's expected per-patient results (fixed amounts exactly; drug-cost refunds by the
/// number of patients owed).
fn check_reports(
    s: &Server,
    c: &reqwest::blocking::Client,
    rules: &vbc_server::contracts::rules::RuleSet,
    contract: &str,
    expected: &[&vbc_server::synth::Expected],
) -> Vec<String> {
    use rust_decimal::Decimal;
    use std::str::FromStr;
    let mut failures = Vec::new();
    let period = "periodStart=1900-01-01&periodEnd=2100-12-31";
    let status_count = |outcome: &str, st: &str| {
        expected
            .iter()
            .filter(|e| e.membership.as_deref() == Some("member"))
            .filter(|e| e.outcomes.get(outcome).map(String::as_str) == Some(st))
            .count() as i64
    };
    let initial = expected
        .iter()
        .filter(|e| matches!(e.membership.as_deref(), Some("member" | "ineligible")))
        .count() as i64;
    let members = expected
        .iter()
        .filter(|e| e.membership.as_deref() == Some("member"))
        .count() as i64;
    for o in rules.outcomes.iter().filter(|o| o.report) {
        let r = get_json(
            s,
            c,
            &format!("/Measure/{contract}-{}/$evaluate-measure?{period}", o.id),
        );
        let g = &r["group"][0];
        let want_thresholds: usize = rules
            .payments
            .iter()
            .filter(|t| t.outcomes.first() == Some(&o.id))
            .map(|t| match t.kind.as_str() {
                "tiered-rebate" => t.tiers.len(),
                "event-rate-rebate" => 1,
                _ => 0,
            })
            .sum();
        let got_thresholds = r["extension"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["url"] == "http://hl7.org/fhir/us/davinci-vbpr/StructureDefinition/threshold"
            })
            .count();
        if got_thresholds != want_thresholds {
            failures.push(format!(
                "{contract} {}: {got_thresholds} thresholds, expected {want_thresholds}",
                o.id
            ));
        }
        let want = [
            ("initial-population", initial),
            ("denominator", members),
            ("denominator-exclusion", status_count(&o.id, "excluded")),
            ("numerator", status_count(&o.id, "met")),
            ("numerator-exclusion", status_count(&o.id, "missing-data")),
            (
                "calculated-denominator",
                status_count(&o.id, "met") + status_count(&o.id, "not-met"),
            ),
        ];
        for (code, n) in want {
            let got = population_count(g, code);
            if got != n {
                failures.push(format!(
                    "{contract} {} quality {code}: {got}, expected {n}",
                    o.id
                ));
            }
        }
        let decided = status_count(&o.id, "met") + status_count(&o.id, "not-met");
        if o.scoring == "proportion" && decided > 0 {
            let want = status_count(&o.id, "met") as f64 / decided as f64;
            let got = g["measureScore"]["value"].as_f64().unwrap_or(-1.0);
            if (got - want).abs() > 0.00005 {
                failures.push(format!("{contract} {} score {got}, expected {want}", o.id));
            }
        }
    }
    let perf = get_json(
        s,
        c,
        &format!("/Measure/{contract}/$evaluate-measure?{period}"),
    );
    for term in &rules.payments {
        let Some(g) = perf["group"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["id"] == term.stream.as_str())
        else {
            failures.push(format!("{contract}: no group for stream {}", term.stream));
            continue;
        };
        let owed = Decimal::from_str(
            &g["measureScore"]["extension"][0]["valueMoney"]["value"].to_string(),
        )
        .unwrap_or(Decimal::MIN);
        let patients_owed = ext(g, "/patients-owed")
            .and_then(|e| e["valueUnsignedInt"].as_i64())
            .unwrap_or(-1);
        let same_stream = rules
            .payments
            .iter()
            .filter(|t| t.stream == term.stream)
            .count();
        let outcome = term.outcomes.first().map(String::as_str).unwrap_or("");
        match term.kind.as_str() {
            "instalments" => {
                let amount =
                    Decimal::from_str(term.amount.as_deref().unwrap_or("0")).unwrap_or_default();
                let mut n = 0i64;
                for e in expected
                    .iter()
                    .filter(|e| e.membership.as_deref() == Some("member"))
                {
                    for id in &term.outcomes {
                        if e.outcomes.get(id).map(String::as_str) == Some("met") {
                            n += 1;
                        } else {
                            break;
                        }
                    }
                }
                if owed != amount * Decimal::from(n) {
                    failures.push(format!(
                        "{contract} instalments owed {owed}, expected {n} x {amount}"
                    ));
                }
            }
            "refund-per-non-responder" if same_stream == 1 => {
                let not_met = status_count(outcome, "not-met");
                if patients_owed != not_met {
                    failures.push(format!(
                        "{contract} {}: {patients_owed} patients owed, expected {not_met}",
                        term.stream
                    ));
                }
                if let Some(a) = &term.amount {
                    let want = Decimal::from_str(a).unwrap_or_default() * Decimal::from(not_met);
                    if owed != want {
                        failures.push(format!(
                            "{contract} {} owed {owed}, expected {want}",
                            term.stream
                        ));
                    }
                }
                let missing = status_count(outcome, "missing-data");
                let got_missing = ext(g, "/patients-missing-data")
                    .and_then(|e| e["valueUnsignedInt"].as_i64())
                    .unwrap_or(-1);
                if got_missing != missing {
                    failures.push(format!(
                        "{contract} {}: {got_missing} missing-data patients, expected {missing}",
                        term.stream
                    ));
                }
            }
            "refund-per-non-responder" => {
                // several terms share the stream (Vivitrol): fixed amounts add up
                let want: Decimal = rules
                    .payments
                    .iter()
                    .filter(|t| t.stream == term.stream)
                    .map(|t| {
                        Decimal::from_str(t.amount.as_deref().unwrap_or("0")).unwrap_or_default()
                            * Decimal::from(status_count(
                                t.outcomes.first().map(String::as_str).unwrap_or(""),
                                "not-met",
                            ))
                    })
                    .sum();
                if rules
                    .payments
                    .iter()
                    .filter(|t| t.stream == term.stream)
                    .all(|t| t.amount.is_some())
                    && owed != want
                {
                    failures.push(format!(
                        "{contract} {} owed {owed}, expected {want}",
                        term.stream
                    ));
                }
            }
            _ => {}
        }
    }
    failures
}

/// The individual reports of a period's members add up to its performance report, per stream
/// and state (owed, at stake pending, at stake for missing data): each patient's lines are taken
/// under the period's cohort rates. Checked over the whole time line and over each year a
/// member was indexed in.
fn check_individual_sums(
    s: &Server,
    c: &reqwest::blocking::Client,
    contract: &str,
    expected: &[&vbc_server::synth::Expected],
) -> Vec<String> {
    use rust_decimal::Decimal;
    let members: Vec<&vbc_server::synth::Expected> = expected
        .iter()
        .copied()
        .filter(|e| e.membership.as_deref() == Some("member"))
        .collect();
    let mut periods = vec![("1900-01-01".to_string(), "2100-12-31".to_string())];
    let mut years: Vec<&str> = members
        .iter()
        .filter_map(|e| e.index.as_deref().map(|i| &i[..4]))
        .collect();
    years.sort_unstable();
    years.dedup();
    periods.extend(
        years
            .iter()
            .map(|y| (format!("{y}-01-01"), format!("{y}-12-31"))),
    );
    let mut failures = Vec::new();
    for (start, end) in periods {
        let period = format!("periodStart={start}&periodEnd={end}");
        let perf = performance_money(&get_json(
            s,
            c,
            &format!("/Measure/{contract}/$evaluate-measure?{period}"),
        ));
        let mut sum: std::collections::BTreeMap<(String, String), Decimal> = Default::default();
        for e in members.iter().filter(|e| {
            e.index
                .as_deref()
                .is_some_and(|i| *i >= *start && *i <= *end)
        }) {
            let r = get_json(
                s,
                c,
                &format!(
                    "/Measure/{contract}/$evaluate-measure?{period}&subject=Patient/{}",
                    e.person
                ),
            );
            for (k, v) in individual_money(&r) {
                *sum.entry(k).or_default() += v;
            }
        }
        for (stream, totals) in &perf {
            let got = ["owed", "at-stake-pending", "at-stake-missing-data"].map(|st| {
                sum.get(&(stream.clone(), st.to_string()))
                    .copied()
                    .unwrap_or_default()
            });
            if got != *totals {
                failures.push(format!(
                    "{contract} {start}..{end} {stream}: individual reports add up to {got:?}, the performance report says {totals:?}"
                ));
            }
        }
    }
    failures
}

/// The latest version of every resource in a person's bundles (PUT entries in posting order).
fn latest_resources(bundles: &[Value]) -> HashMap<(String, String), Value> {
    let mut out = HashMap::new();
    for b in bundles {
        for e in b["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            if let (Some(t), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) {
                out.insert((t.to_string(), id.to_string()), r.clone());
            }
            if e["request"]["method"] == "DELETE" {
                if let Some((t, id)) = e["request"]["url"].as_str().and_then(|u| u.split_once('/'))
                {
                    out.remove(&(t.to_string(), id.to_string()));
                }
            }
        }
    }
    out
}

/// The drug cost of one person under one term, computed here from the posted resources and the
/// contract's prices (FORMAT.md "Settlement semantics" and `[drug]`): exposures of the drug's
/// codes from the cohort's sources (a stopped administration stating a dose too under
/// `price_stopped`), records of different sources within `same_exposure_days` counted once
/// (the first source of the order stands), dated (local date) from the index date to today and
/// within the term's `cost_days`; unit price x units (a dispense's quantity, an administration
/// one unit, or under `[drug] unit` the dose over the unit size rounded up), or the pack price
/// per exposure.
fn drug_cost(
    rules: &vbc_server::contracts::rules::RuleSet,
    term: &vbc_server::contracts::rules::PaymentTerm,
    bundles: &[Value],
    index: &str,
    today: &str,
) -> rust_decimal::Decimal {
    use rust_decimal::Decimal;
    use std::str::FromStr;
    let drug = &rules.contract;
    let resources = latest_resources(bundles);
    let codes: Vec<(String, String)> = rules.valuesets[&drug.drug]
        .codes
        .iter()
        .map(|c| (c.system.clone(), c.code.clone()))
        .collect();
    let in_set = |concept: &Value| {
        concept["coding"].as_array().into_iter().flatten().any(|c| {
            codes
                .iter()
                .any(|(s, k)| c["system"] == s.as_str() && c["code"] == k.as_str())
        })
    };
    let price = |p: &Option<String>| {
        p.as_deref()
            .map(|p| Decimal::from_str(p).unwrap_or_default())
    };
    let (unit, pack) = (price(&drug.unit_price), price(&drug.pack_price));
    let dec = |v: &Value| Decimal::from_str(&v.to_string()).ok();
    // (source, timestamp, units priced)
    let mut records: Vec<(String, String, Option<Decimal>)> = Vec::new();
    for ((t, _), r) in &resources {
        if !rules.cohort.sources.contains(t) {
            continue;
        }
        let status = r["status"].as_str().unwrap_or("");
        let void: &[&str] = match t.as_str() {
            "MedicationDispense" => &["entered-in-error", "cancelled", "declined", "stopped"],
            "MedicationAdministration" => &["entered-in-error", "not-done", "stopped"],
            "MedicationRequest" => &["entered-in-error", "cancelled", "stopped", "draft"],
            _ => &["entered-in-error", "not-done", "stopped", "preparation"],
        };
        let dose = &r["dosage"]["dose"];
        let used = drug.price_stopped
            && t == "MedicationAdministration"
            && status == "stopped"
            && dose.is_object();
        if void.contains(&status) && !used {
            continue;
        }
        let concept = if t == "Procedure" {
            r["code"].clone()
        } else if let Some(c) = r.get("medicationCodeableConcept") {
            c.clone()
        } else {
            let reference = r["medicationReference"]["reference"].as_str().unwrap_or("");
            if reference == "#med" {
                r["contained"][0]["code"].clone()
            } else {
                let id = reference.trim_start_matches("Medication/").to_string();
                resources
                    .get(&("Medication".to_string(), id))
                    .map(|m| m["code"].clone())
                    .unwrap_or_default()
            }
        };
        if !in_set(&concept) {
            continue;
        }
        let when = [
            "whenHandedOver",
            "effectiveDateTime",
            "authoredOn",
            "performedDateTime",
        ]
        .iter()
        .find_map(|k| r[*k].as_str())
        .unwrap_or("")
        .to_string();
        let units = match (&drug.unit_size, t.as_str()) {
            (Some((size, u)), "MedicationAdministration") => {
                // the generator states doses in the unit's own unit or, for mg, in grams
                let factor = match (dose["code"].as_str(), u.as_str()) {
                    (Some(a), b) if a == b => Some(Decimal::ONE),
                    (Some("g"), "mg") => Some(Decimal::from(1000)),
                    _ => None,
                };
                dec(&dose["value"])
                    .zip(factor)
                    .map(|(v, f)| (v * f / Decimal::from_str(size).unwrap_or(Decimal::ONE)).ceil())
            }
            (_, "MedicationDispense") => dec(&r["quantity"]["value"]),
            (None, "MedicationAdministration") => Some(Decimal::ONE),
            _ => None,
        };
        records.push((t.clone(), when, units));
    }
    if let Some(n) = drug.same_exposure_days {
        let order: Vec<String> = drug
            .source_order
            .iter()
            .cloned()
            .chain(
                [
                    "MedicationAdministration",
                    "Procedure",
                    "MedicationDispense",
                    "MedicationRequest",
                ]
                .map(String::from),
            )
            .collect();
        let day = |w: &str| days::parse_full(w.get(..10).unwrap_or("")).unwrap_or(0);
        records.sort_by(|a, b| a.1.cmp(&b.1));
        let mut groups: Vec<Vec<(String, String, Option<Decimal>)>> = Vec::new();
        for r in records {
            let at = groups.iter().position(|g| {
                g.iter().all(|x| x.0 != r.0)
                    && g.iter().any(|x| (day(&x.1) - day(&r.1)).abs() <= n as i32)
            });
            match at {
                Some(i) => groups[i].push(r),
                None => groups.push(vec![r]),
            }
        }
        records = groups
            .into_iter()
            .filter_map(|g| {
                g.into_iter().min_by_key(|x| {
                    (
                        order.iter().position(|s| *s == x.0).unwrap_or(usize::MAX),
                        x.1.clone(),
                    )
                })
            })
            .collect();
    }
    let start = days::parse_full(index).unwrap_or(0);
    let (from, to) = match &term.cost_days {
        Some(w) => (
            days::format(start + w.from).max(index.to_string()),
            days::format(start + w.to).min(today.to_string()),
        ),
        None => (index.to_string(), today.to_string()),
    };
    let mut cost = Decimal::ZERO;
    for (_, when, units) in records {
        let day = when.get(..10).unwrap_or("");
        if day < from.as_str() || day > to.as_str() {
            continue;
        }
        cost += match (unit, pack) {
            (Some(u), _) => units.map_or(Decimal::ZERO, |q| u * q),
            (None, Some(p)) => p,
            _ => Decimal::ZERO,
        };
    }
    cost
}

/// Money of the drug-cost terms, computed here per patient from the posted data and the
/// generator's expected statuses, against the performance report.
fn check_drug_cost_money(
    s: &Server,
    c: &reqwest::blocking::Client,
    rules: &vbc_server::contracts::rules::RuleSet,
    contract: &str,
    population: &[(Vec<Value>, vbc_server::synth::Expected)],
    today: days::Day,
) -> Vec<String> {
    use rust_decimal::{Decimal, RoundingStrategy};
    use std::str::FromStr;
    let mut failures = Vec::new();
    let today_s = days::format(today);
    let round = |d: Decimal| d.round_dp_with_strategy(2, RoundingStrategy::MidpointNearestEven);
    let pct = |s: &str| Decimal::from_str(s).unwrap_or_default() / Decimal::from(100);
    let perf = get_json(
        s,
        c,
        &format!(
            "/Measure/{contract}/$evaluate-measure?periodStart=1900-01-01&periodEnd=2100-12-31"
        ),
    );
    let members: Vec<&(Vec<Value>, vbc_server::synth::Expected)> = population
        .iter()
        .filter(|(_, e)| e.membership.as_deref() == Some("member"))
        .collect();
    let mut want: HashMap<String, Decimal> = HashMap::new();
    let mut checked: Vec<String> = Vec::new();
    for term in &rules.payments {
        let Some(share) = term
            .share_of_drug_cost
            .as_deref()
            .map(pct)
            .or_else(|| term.share.as_deref().map(pct))
        else {
            continue;
        };
        let outcome = term.outcomes.first().map(String::as_str).unwrap_or("");
        let status =
            |e: &vbc_server::synth::Expected| e.outcomes.get(outcome).cloned().unwrap_or_default();
        let decided: Vec<_> = members
            .iter()
            .filter(|(_, e)| matches!(status(e).as_str(), "met" | "not-met"))
            .collect();
        let not_met = decided
            .iter()
            .filter(|(_, e)| status(e) == "not-met")
            .count();
        let applies: Box<dyn Fn(&str) -> bool> = match term.kind.as_str() {
            "refund-per-non-responder" | "refund-per-event"
                if term.amount.is_none() && !term.cost_until_failure =>
            {
                Box::new(|st: &str| st == "not-met")
            }
            "tiered-rebate" if !decided.is_empty() => {
                let rate = Decimal::from(decided.len() - not_met) / Decimal::from(decided.len());
                let mut tiers: Vec<(Decimal, Decimal)> = term
                    .tiers
                    .iter()
                    .map(|(m, s)| (Decimal::from_str(m).unwrap_or_default(), pct(s)))
                    .collect();
                tiers.sort();
                let tier = tiers
                    .iter()
                    .rev()
                    .find(|(m, _)| *m <= rate)
                    .map(|t| t.1)
                    .unwrap_or_default();
                if tier != share {
                    continue; // only the single-tier case is recomputed here
                }
                Box::new(|st: &str| matches!(st, "met" | "not-met"))
            }
            "event-rate-rebate" if !decided.is_empty() => {
                let rate = Decimal::from(not_met) / Decimal::from(decided.len());
                let above = Decimal::from_str(term.rate_above.as_deref().unwrap_or("0"))
                    .unwrap_or_default();
                if rate > above {
                    Box::new(|st: &str| matches!(st, "met" | "not-met"))
                } else {
                    Box::new(|_: &str| false)
                }
            }
            "upfront-rebate" => Box::new(|_: &str| true),
            _ => continue,
        };
        let mut total = Decimal::ZERO;
        for (bundles, e) in &members {
            if !applies(&status(e)) {
                continue;
            }
            let mut cost = drug_cost(
                rules,
                term,
                bundles,
                e.index.as_deref().unwrap_or(""),
                &today_s,
            );
            if !term.cost_excludes.is_empty() {
                // the exposures an owed line of a listed stream pays back (free drug at 100 %
                // of its cost) are not in this term's cost: no fill paid twice
                let lines = individual_money(&get_json(
                    s,
                    c,
                    &format!(
                        "/Measure/{contract}/$evaluate-measure?periodStart=1900-01-01&periodEnd=2100-12-31&subject=Patient/{}",
                        e.person
                    ),
                ));
                for stream in &term.cost_excludes {
                    cost -= lines
                        .get(&(stream.clone(), "owed".to_string()))
                        .copied()
                        .unwrap_or_default();
                }
            }
            let mut amount = share * cost;
            if let Some(cap) = &term.cap_share_of_price {
                let price = rules
                    .contract
                    .pack_price
                    .as_deref()
                    .map(|p| Decimal::from_str(p).unwrap_or_default())
                    .unwrap_or(cost);
                amount = amount.min(pct(cap) * price);
            }
            total += round(amount);
        }
        *want.entry(term.stream.clone()).or_default() += total;
        checked.push(term.stream.clone());
    }
    for stream in checked {
        if rules.payments.iter().filter(|t| t.stream == stream).count() > 1 {
            continue;
        }
        let got = perf["group"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|g| g["id"] == stream.as_str())
            .and_then(|g| {
                Decimal::from_str(
                    &g["measureScore"]["extension"][0]["valueMoney"]["value"].to_string(),
                )
                .ok()
            })
            .unwrap_or(Decimal::MIN);
        let w = want[&stream];
        if got != w {
            failures.push(format!(
                "{contract} {stream}: owed {got}, computed from the data {w}"
            ));
        }
    }
    failures
}

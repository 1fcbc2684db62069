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
                let resp = c
                    .post(s.url("/"))
                    .header("Content-Type", "application/fhir+json")
                    .json(b)
                    .send()
                    .expect("post");
                let status = resp.status();
                assert_eq!(
                    status,
                    200,
                    "{}: {}",
                    f.display(),
                    resp.text().unwrap_or_default()
                );
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

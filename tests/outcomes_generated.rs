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

//! Small-cell suppression of the aggregates a manufacturer receives (the CMS cell-size rule): no
//! count of 1 to `threshold` patients is shown, nor anything it could be worked out from.
//!
//! The rule, applied to every MeasureReport a manufacturer receives (an `$evaluate-measure`
//! answer, a published report read or searched, a report in a Bundle):
//! 1. **Primary**: every population count from 1 to the threshold is masked (zero is shown: it
//!    identifies nobody). A masked count loses its value and carries the `data-absent-reason`
//!    extension with code `masked` on `_count`.
//! 2. **Complementary**: counts related by arithmetic are masked together, so a masked count
//!    cannot be recovered by subtraction. The relations, taken at their worst case (hidden
//!    populations such as pending or non-members assumed empty): `numerator` =
//!    `calculated-numerator`; `calculated-denominator` = `numerator` + not met; `denominator` =
//!    `calculated-denominator` + `denominator-exclusion` + `numerator-exclusion` (+ pending);
//!    `initial-population` = `denominator` (+ non-members); and a report's count = the sum of its
//!    strata's counts, per stratifier. Whenever exactly one count of a relation is masked, the
//!    smallest other non-zero count of that relation is masked too, until no relation has exactly
//!    one.
//! 3. **Scores and money**: a group's or stratum's `measureScore` is masked when a count it is
//!    computed from (numerator, denominator, calculated numerator or denominator) is. In a performance report, a payment stream's patient count (`patients-owed`,
//!    `patients-missing-data`, `patients-pending`) from 1 to the threshold is masked together with
//!    the money it yields (the amount owed, at stake for missing data, at stake while pending).

use std::collections::HashSet;

use serde_json::{json, Value};

use super::common::EXT;

/// The data-absent-reason extension saying a value was masked.
fn masked() -> Value {
    json!({"extension": [{
        "url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
        "valueCode": "masked"
    }]})
}

/// Relations between the populations of one cell (a group or a stratum), by population code.
const CELL_RELATIONS: &[&[&str]] = &[
    &["numerator", "calculated-numerator"],
    &["calculated-denominator", "numerator"],
    &[
        "denominator",
        "calculated-denominator",
        "denominator-exclusion",
        "numerator-exclusion",
    ],
    &["initial-population", "denominator"],
];

/// The populations a score is computed from: a cell's score is masked with any of them.
const SCORED_FROM: &[&str] = &[
    "numerator",
    "calculated-numerator",
    "calculated-denominator",
    "denominator",
];

/// One population count of a report.
struct Count {
    /// JSON pointer to the population object.
    pointer: String,
    /// Which cell (group or stratum) it belongs to.
    cell: usize,
    /// Its population code.
    code: String,
    /// Its value.
    value: u64,
}

/// Apply the rule to every MeasureReport in `doc` (a MeasureReport, or a Bundle holding some);
/// true when anything was masked. A threshold of 0 masks nothing.
pub fn suppress(doc: &mut Value, threshold: u64) -> bool {
    if threshold == 0 {
        return false;
    }
    match doc["resourceType"].as_str() {
        Some("MeasureReport") => suppress_report(doc, threshold),
        Some("Bundle") => {
            let mut any = false;
            for e in doc
                .get_mut("entry")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(r) = e.get_mut("resource") {
                    any |= suppress(r, threshold);
                }
            }
            any
        }
        _ => false,
    }
}

fn code_of(population: &Value) -> String {
    population["code"]["coding"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn collect(pops: &Value, pointer: &str, cell: usize, out: &mut Vec<Count>) {
    for (i, p) in pops.as_array().into_iter().flatten().enumerate() {
        if let Some(n) = p["count"].as_u64() {
            out.push(Count {
                pointer: format!("{pointer}/{i}"),
                cell,
                code: code_of(p),
                value: n,
            });
        }
    }
}

/// Mask one report in place.
fn suppress_report(report: &mut Value, threshold: u64) -> bool {
    let mut counts: Vec<Count> = Vec::new();
    // the JSON pointer of each cell (group or stratum) object
    let mut cells: Vec<String> = Vec::new();
    let mut relations: Vec<Vec<usize>> = Vec::new();
    let groups = report["group"].as_array().cloned().unwrap_or_default();
    for (g, group) in groups.iter().enumerate() {
        let gp = format!("/group/{g}");
        let gcell = cells.len();
        cells.push(gp.clone());
        collect(
            &group["population"],
            &format!("{gp}/population"),
            gcell,
            &mut counts,
        );
        for (s, strat) in group["stratifier"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let mut stratum_cells = Vec::new();
            for (k, stratum) in strat["stratum"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let sp = format!("{gp}/stratifier/{s}/stratum/{k}");
                stratum_cells.push(cells.len());
                let cell = cells.len();
                cells.push(sp.clone());
                collect(
                    &stratum["population"],
                    &format!("{sp}/population"),
                    cell,
                    &mut counts,
                );
            }
            // the report's count is the sum of its strata's, per population code
            let codes: HashSet<&str> = counts
                .iter()
                .filter(|c| c.cell == gcell)
                .map(|c| c.code.as_str())
                .collect();
            for code in codes {
                let rel: Vec<usize> = counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| {
                        c.code == code && (c.cell == gcell || stratum_cells.contains(&c.cell))
                    })
                    .map(|(i, _)| i)
                    .collect();
                relations.push(rel);
            }
        }
    }
    for cell in 0..cells.len() {
        for rel in CELL_RELATIONS {
            let members: Vec<usize> = counts
                .iter()
                .enumerate()
                .filter(|(_, c)| c.cell == cell && rel.contains(&c.code.as_str()))
                .map(|(i, _)| i)
                .collect();
            if members.len() > 1 {
                relations.push(members);
            }
        }
    }
    let mut hidden: HashSet<usize> = counts
        .iter()
        .enumerate()
        .filter(|(_, c)| (1..=threshold).contains(&c.value))
        .map(|(i, _)| i)
        .collect();
    loop {
        let mut changed = false;
        for rel in &relations {
            if rel.iter().filter(|i| hidden.contains(i)).count() != 1 {
                continue;
            }
            let complement = rel
                .iter()
                .filter(|i| !hidden.contains(i) && counts[**i].value > 0)
                .min_by_key(|i| (counts[**i].value, **i));
            if let Some(&i) = complement {
                hidden.insert(i);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut masked_cells: HashSet<usize> = HashSet::new();
    for &i in &hidden {
        let c = &counts[i];
        if SCORED_FROM.contains(&c.code.as_str()) {
            masked_cells.insert(c.cell);
        }
        if let Some(p) = report
            .pointer_mut(&c.pointer)
            .and_then(Value::as_object_mut)
        {
            p.remove("count");
            p.insert("_count".into(), masked());
        }
    }
    for cell in &masked_cells {
        if let Some(obj) = report
            .pointer_mut(&cells[*cell])
            .and_then(Value::as_object_mut)
        {
            if obj.contains_key("measureScore") {
                obj.insert("measureScore".into(), masked());
            }
        }
    }
    let streams = suppress_streams(report, threshold);
    !hidden.is_empty() || streams
}

/// A performance report's payment streams: each patient count with the money it yields.
fn suppress_streams(report: &mut Value, threshold: u64) -> bool {
    const PAIRS: &[(&str, &str)] = &[
        ("patients-owed", ""),
        ("patients-missing-data", "at-stake-missing-data"),
        ("patients-pending", "at-stake-pending"),
    ];
    let mut any = false;
    for group in report
        .get_mut("group")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for (count_ext, money_ext) in PAIRS {
            let url = format!("{EXT}/{count_ext}");
            let Some(exts) = group.get_mut("extension").and_then(Value::as_array_mut) else {
                continue;
            };
            let Some(e) = exts.iter_mut().find(|e| e["url"].as_str() == Some(&url)) else {
                continue;
            };
            let n = e["valueUnsignedInt"].as_u64().unwrap_or(0);
            if !(1..=threshold).contains(&n) {
                continue;
            }
            any = true;
            *e = json!({"url": url, "extension": masked()["extension"].clone()});
            if money_ext.is_empty() {
                // the amount owed is the stream's alternate measure score
                for s in group
                    .get_mut("measureScore")
                    .and_then(|m| m.get_mut("extension"))
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if s.get("valueMoney").is_some() {
                        s["valueMoney"] = masked();
                    }
                }
            } else {
                let murl = format!("{EXT}/{money_ext}");
                for m in group
                    .get_mut("extension")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                {
                    if m["url"].as_str() == Some(&murl) {
                        m["valueMoney"] = masked();
                    }
                }
            }
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pops(counts: &[(&str, u64)]) -> Value {
        Value::Array(
            counts
                .iter()
                .map(|(c, n)| json!({"code": {"coding": [{"code": c}]}, "count": n}))
                .collect(),
        )
    }

    fn count(r: &Value, pointer: &str) -> Option<u64> {
        r.pointer(pointer).and_then(|p| p["count"].as_u64())
    }

    fn is_masked(r: &Value, pointer: &str) -> bool {
        r.pointer(pointer).is_some_and(|p| {
            p.get("count").is_none() && p["_count"]["extension"][0]["valueCode"] == "masked"
        })
    }

    /// A quality report: totals 40 in the denominator, 3 excluded, strata by sex 35 / 5.
    fn report() -> Value {
        json!({
            "resourceType": "MeasureReport",
            "group": [{
                "population": pops(&[
                    ("initial-population", 50), ("denominator", 40),
                    ("denominator-exclusion", 3), ("numerator", 20),
                    ("numerator-exclusion", 12), ("calculated-numerator", 20),
                    ("calculated-denominator", 25)]),
                "measureScore": {"value": 0.8},
                "stratifier": [{"stratum": [
                    {"value": {"text": "female"}, "population": pops(&[
                        ("initial-population", 45), ("denominator", 35), ("numerator", 18)]),
                     "measureScore": {"value": 0.7}},
                    {"value": {"text": "male"}, "population": pops(&[
                        ("initial-population", 5), ("denominator", 5), ("numerator", 2)]),
                     "measureScore": {"value": 0.9}},
                ]}]
            }]
        })
    }

    #[test]
    fn small_counts_and_what_recovers_them_are_masked() {
        let mut r = report();
        assert!(suppress(&mut r, 10));
        // primary: the 3 exclusions; complementary within the totals: the smallest other count
        // of the denominator relation (numerator-exclusion 12)
        assert!(is_masked(&r, "/group/0/population/2"));
        assert!(is_masked(&r, "/group/0/population/4"));
        assert_eq!(count(&r, "/group/0/population/1"), Some(40));
        // the score rests on counts still shown (20 / 25): it stays
        assert_eq!(r["group"][0]["measureScore"]["value"], 0.8);
        // the male stratum is all small; the female stratum is masked in complement, since the
        // totals (not masked) minus it would give the male counts
        for k in 0..3 {
            assert!(is_masked(
                &r,
                &format!("/group/0/stratifier/0/stratum/1/population/{k}")
            ));
            assert!(is_masked(
                &r,
                &format!("/group/0/stratifier/0/stratum/0/population/{k}")
            ));
        }
        assert_eq!(count(&r, "/group/0/population/0"), Some(50));
        assert_eq!(
            r["group"][0]["stratifier"][0]["stratum"][1]["measureScore"]["extension"][0]
                ["valueCode"],
            "masked"
        );
    }

    #[test]
    fn nothing_small_nothing_masked_and_zero_is_shown() {
        let mut r = json!({"resourceType": "MeasureReport", "group": [{
            "population": pops(&[("initial-population", 30), ("denominator", 30),
                ("denominator-exclusion", 0), ("numerator", 15), ("calculated-numerator", 15),
                ("calculated-denominator", 30), ("numerator-exclusion", 0)]),
            "measureScore": {"value": 0.5}}]});
        let before = r.clone();
        assert!(!suppress(&mut r, 10));
        assert_eq!(r, before);
        // a threshold of 0 turns the rule off
        let mut r = report();
        assert!(!suppress(&mut r, 0));
        assert_eq!(r, report());
    }

    #[test]
    fn every_masked_count_is_unrecoverable() {
        // brute force: for random reports, every relation has 0 or at least 2 masked counts
        let mut seed = 7u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..500 {
            let strata: Vec<(u64, u64)> =
                (0..(1 + next(4))).map(|_| (next(30), next(30))).collect();
            let (den, num): (u64, u64) = strata
                .iter()
                .fold((0, 0), |a, s| (a.0 + s.0 + s.1, a.1 + s.1));
            let mut r = json!({"resourceType": "MeasureReport", "group": [{
                "population": pops(&[("denominator", den), ("numerator", num),
                    ("calculated-numerator", num)]),
                "stratifier": [{"stratum": strata.iter().map(|(a, b)| json!({
                    "population": pops(&[("denominator", a + b), ("numerator", *b),
                        ("calculated-numerator", *b)])})).collect::<Vec<_>>()}]}]});
            suppress(&mut r, 10);
            let g = &r["group"][0];
            let shown = |p: &Value, k: usize| p["population"][k]["count"].as_u64();
            for k in 0..3 {
                let mut hidden = usize::from(shown(g, k).is_none());
                for st in g["stratifier"][0]["stratum"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    let v = shown(st, k);
                    assert!(v.is_none_or(|v| v == 0 || v > 10), "a small count is shown");
                    hidden += usize::from(v.is_none());
                }
                assert_ne!(
                    hidden, 1,
                    "one masked count in a sum could be recovered: {r}"
                );
            }
        }
    }

    #[test]
    fn payment_streams_mask_counts_with_their_money() {
        let mut r = json!({"resourceType": "MeasureReport", "group": [{
            "extension": [
                {"url": format!("{EXT}/patients-owed"), "valueUnsignedInt": 4},
                {"url": format!("{EXT}/patients-missing-data"), "valueUnsignedInt": 25},
                {"url": format!("{EXT}/at-stake-missing-data"), "valueMoney": {"value": 2500, "currency": "USD"}},
                {"url": format!("{EXT}/patients-pending"), "valueUnsignedInt": 0},
                {"url": format!("{EXT}/at-stake-pending"), "valueMoney": {"value": 0, "currency": "USD"}},
            ],
            "measureScore": {"extension": [{"url": "alt", "valueMoney": {"value": 400, "currency": "USD"}}]}
        }]});
        assert!(suppress(&mut r, 10));
        let g = &r["group"][0];
        assert_eq!(g["extension"][0]["extension"][0]["valueCode"], "masked");
        assert!(g["extension"][0].get("valueUnsignedInt").is_none());
        assert_eq!(
            g["measureScore"]["extension"][0]["valueMoney"]["extension"][0]["valueCode"],
            "masked"
        );
        assert_eq!(g["extension"][1]["valueUnsignedInt"], 25);
        assert_eq!(g["extension"][2]["valueMoney"]["value"], 2500);
        assert_eq!(g["extension"][3]["valueUnsignedInt"], 0);
    }
}

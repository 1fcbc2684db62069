//! Index extraction: each search parameter's expression evaluated on a resource, its values
//! turned into index entries. The same encodings are what queries match against, so a value is
//! found by a scan of the index and by a test of a candidate's entries alike.
//!
//! Entry parameter names: the parameter's code for its main values; `code:text` (folded display
//! text of tokens), `code:exact` (raw strings), `code:of-type` (identifier type + value),
//! `code:identifier` (Reference.identifier), `code:hi` (date ranges ordered by their end).

use rust_decimal::Decimal;
use serde_json::Value;

use super::params::{ParamDef, ParamType, Registry};
use super::path::{Evaluator, Node};
use super::units::{self, Analyte, UCUM};
use super::values::{
    self, enc_quantity, enc_range_high, enc_range_low, enc_token, fold, parse_date_range, Range,
    MAX_MS, MIN_MS,
};
use crate::fhir::definitions::Definitions;
use crate::store::IndexEntry;

/// Suffix of the folded-text entries of token parameters.
pub const TEXT: &str = ":text";
/// Suffix of the raw-string entries of string parameters.
pub const EXACT: &str = ":exact";
/// Suffix of identifier-type entries.
pub const OF_TYPE: &str = ":of-type";
/// Suffix of Reference.identifier entries.
pub const IDENTIFIER: &str = ":identifier";
/// Suffix of the by-end date entries (only for ranges wider than [`DAY_MS`]).
pub const HI: &str = ":hi";
/// Widest date range indexed by its start alone.
pub const DAY_MS: i64 = 86_400_000;

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_string)
}

/// Sink for the entries of one resource.
struct Out<'r> {
    entries: Vec<IndexEntry>,
    reg: &'r Registry,
    /// The resource's `version` (canonical resources), for `url|version`.
    version: Option<String>,
    /// The analyte an Observation measures (for clinical unit conversions).
    analyte: Option<Analyte>,
}

impl Out<'_> {
    /// Add an entry of parameter `code` + `suffix`.
    fn push(&mut self, code: &str, suffix: &str, value: Vec<u8>) {
        let mut param = String::with_capacity(code.len() + suffix.len());
        param.push_str(code);
        param.push_str(suffix);
        self.entries.push(IndexEntry { param, value });
    }
}

/// The range a date-typed node denotes.
pub fn date_range(node: &Node) -> Option<Range> {
    match node.value {
        Value::String(s) => parse_date_range(s),
        Value::Object(o) => {
            if o.contains_key("start") || o.contains_key("end") {
                let low = match o.get("start").and_then(Value::as_str) {
                    Some(s) => parse_date_range(s)?.low,
                    None => MIN_MS,
                };
                let high = match o.get("end").and_then(Value::as_str) {
                    Some(s) => parse_date_range(s)?.high,
                    None => MAX_MS,
                };
                return Some(Range { low, high });
            }
            // Timing: from the first event to the end of the last, or its bounds
            let mut low = i64::MAX;
            let mut high = i64::MIN;
            for e in o
                .get("event")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(r) = e.as_str().and_then(parse_date_range) {
                    low = low.min(r.low);
                    high = high.max(r.high);
                }
            }
            if let Some(b) = o.get("repeat").and_then(|r| r.get("boundsPeriod")) {
                let bn = Node {
                    value: b,
                    ..node.clone()
                };
                if let Some(r) = date_range(&bn) {
                    low = low.min(r.low);
                    high = high.max(r.high);
                }
            }
            (low <= high).then_some(Range { low, high })
        }
        _ => None,
    }
}

/// What a token node holds.
pub type TokenValues = (
    Vec<(String, String)>,
    Vec<String>,
    Vec<(String, String, String)>,
);

/// Token values of a node: (system, code) pairs, display texts, and identifier types
/// (type system, type code, value).
pub fn token_values(node: &Node, defs: &Definitions, binding: Option<&str>) -> TokenValues {
    let mut codes = Vec::new();
    let mut texts = Vec::new();
    let mut of_type = Vec::new();
    let coding = |c: &Value, codes: &mut Vec<(String, String)>, texts: &mut Vec<String>| {
        if let Some(code) = s(c, "code") {
            codes.push((s(c, "system").unwrap_or_default(), code));
        }
        if let Some(d) = s(c, "display") {
            texts.push(d);
        }
    };
    if let Some(b) = node.computed {
        codes.push((String::new(), b.to_string()));
        return (codes, texts, of_type);
    }
    match node.value {
        Value::Bool(b) => codes.push((String::new(), b.to_string())),
        Value::String(code) => {
            let system = binding
                .and_then(|vs| defs.valueset(vs))
                .and_then(|set| set.iter().find(|(_, c)| c == code).map(|(s, _)| s.clone()))
                .unwrap_or_default();
            codes.push((system, code.clone()));
        }
        Value::Object(o) => {
            if let Some(cs) = o.get("coding").and_then(Value::as_array) {
                for c in cs {
                    coding(c, &mut codes, &mut texts);
                }
                if let Some(t) = s(node.value, "text") {
                    texts.push(t);
                }
            } else if node.fhir_type.as_deref() == Some("Identifier")
                || (o.contains_key("value")
                    && !o.contains_key("code")
                    && node.fhir_type.as_deref() != Some("ContactPoint"))
            {
                if let Some(v) = s(node.value, "value") {
                    codes.push((s(node.value, "system").unwrap_or_default(), v.clone()));
                    for tc in o
                        .get("type")
                        .and_then(|t| t.get("coding"))
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(tcode) = s(tc, "code") {
                            of_type.push((s(tc, "system").unwrap_or_default(), tcode, v.clone()));
                        }
                    }
                }
                if let Some(t) = o
                    .get("type")
                    .and_then(|t| t.get("text"))
                    .and_then(Value::as_str)
                {
                    texts.push(t.to_string());
                }
            } else if node.fhir_type.as_deref() == Some("CodeableConcept") || o.contains_key("text")
            {
                // a CodeableConcept with text only
                if let Some(t) = s(node.value, "text") {
                    texts.push(t);
                }
            } else if node.fhir_type.as_deref() == Some("ContactPoint") {
                if let Some(v) = s(node.value, "value") {
                    codes.push((String::new(), v.clone()));
                    if let Some(sys) = s(node.value, "system") {
                        codes.push((sys, v));
                    }
                }
            } else {
                coding(node.value, &mut codes, &mut texts);
            }
        }
        _ => {}
    }
    (codes, texts, of_type)
}

/// String parts of a node (HumanName and Address parts, or the string itself).
pub fn string_values(node: &Node) -> Vec<String> {
    let mut out = Vec::new();
    match node.value {
        Value::String(s) => out.push(s.clone()),
        Value::Object(o) => {
            for k in [
                "family",
                "given",
                "prefix",
                "suffix",
                "text",
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
            ] {
                match o.get(k) {
                    Some(Value::String(s)) => out.push(s.clone()),
                    Some(Value::Array(a)) => {
                        out.extend(a.iter().filter_map(|v| v.as_str().map(str::to_string)))
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    out
}

/// Reference values of a node, normalised: `Type/id` for relative references and absolute ones
/// to this server, the URL otherwise; canonicals with and without `|version`.
pub fn reference_values(node: &Node, base: &str) -> Vec<String> {
    let mut out = Vec::new();
    let raw = match node.value {
        Value::String(s) => {
            // canonical
            out.push(s.clone());
            if let Some((url, _)) = s.split_once('|') {
                out.push(url.to_string());
            }
            return out;
        }
        Value::Object(o) => match o.get("reference").and_then(Value::as_str) {
            Some(r) => r,
            None => return out,
        },
        _ => return out,
    };
    out.push(normalise_reference(raw, base));
    out
}

/// `Type/id` for a relative reference or an absolute one to this server (version dropped).
pub fn normalise_reference(raw: &str, base: &str) -> String {
    let local = raw
        .strip_prefix(base)
        .and_then(|r| r.strip_prefix('/'))
        .unwrap_or(raw);
    let local = match local.find("/_history/") {
        Some(p) => &local[..p],
        None => local,
    };
    local.to_string()
}

/// Quantity entries (unit key, value) of a node.
pub fn quantity_values(node: &Node, analyte: Option<Analyte>) -> Vec<(String, Decimal)> {
    let mut out = Vec::new();
    let Value::Object(o) = node.value else {
        return out;
    };
    if node
        .fhir_type
        .as_deref()
        .is_some_and(|t| t == "SampledData" || t == "Range")
    {
        return out;
    }
    let Some(value) = o.get("value").and_then(values::json_decimal) else {
        return out;
    };
    let system = o.get("system").and_then(Value::as_str).unwrap_or("");
    let code = o.get("code").and_then(Value::as_str);
    let unit = o.get("unit").and_then(Value::as_str);
    let converted = match (analyte, code) {
        (Some(a), Some(c)) if system == UCUM => units::analyte_values(a, c, value),
        _ => None,
    };
    // the value as written: under `system|code`, and `|unit` when the unit text differs
    match code {
        Some(c) => out.push((format!("{system}|{c}"), value)),
        None => out.push((format!("|{}", unit.unwrap_or("")), value)),
    }
    if let (Some(u), Some(c)) = (unit, code) {
        if u != c {
            out.push((format!("|{u}"), value));
        }
    }
    // the same result in the analyte's other units (clinical equations), marked as converted
    let pairs: Vec<(String, Decimal, bool)> = match (&converted, code) {
        (Some(list), _) => list
            .iter()
            .map(|(c, v)| (c.to_string(), *v, Some(*c) != code))
            .collect(),
        (None, Some(c)) => vec![(c.to_string(), value, false)],
        (None, None) => vec![],
    };
    for (c, v, was_converted) in &pairs {
        if *was_converted {
            out.push((format!("{CONVERTED}{system}|{c}"), *v));
        }
        // canonical forms of the value as written only (a converted value is found in its unit)
        if system == UCUM && !*was_converted && !(converted.is_some() && units::is_dimensionless(c))
        {
            if let Some((k, cv)) = units::canonical(c, *v) {
                out.push((k, cv));
            }
        }
    }
    out
}

/// Unit-key prefix of values converted by an analyte equation (not the value as written).
pub const CONVERTED: &str = "=";

/// The analyte an Observation (or component) measures, from its LOINC codes.
fn analyte_of(resource: &Value) -> Option<Analyte> {
    resource
        .get("code")?
        .get("coding")?
        .as_array()?
        .iter()
        .filter(|c| c.get("system").and_then(Value::as_str) == Some("http://loinc.org"))
        .find_map(|c| {
            c.get("code")
                .and_then(Value::as_str)
                .and_then(units::analyte)
        })
}

impl Out<'_> {
    fn extract(
        &mut self,
        ev: &Evaluator,
        defs: &Definitions,
        rtype: &str,
        resource: &Value,
        p: &ParamDef,
    ) {
        let nodes = ev.eval(&p.expr, rtype, resource);
        let code = p.code.as_str();
        for n in &nodes {
            match p.kind {
                ParamType::Composite => self.composite(ev, defs, rtype, n, p),
                _ => {
                    for (suffix, value) in self.simple(defs, n, p.kind, code, false) {
                        self.push(code, suffix, value);
                    }
                }
            }
        }
    }

    /// Entries of one node for a non-composite parameter, as (suffix of the parameter code:
    /// empty for its main values, [`TEXT`], [`EXACT`], ...; value). `main_only` leaves the
    /// suffixed ones out (a composite's components use only main values).
    fn simple(
        &self,
        defs: &Definitions,
        n: &Node,
        kind: ParamType,
        code: &str,
        main_only: bool,
    ) -> Vec<(&'static str, Vec<u8>)> {
        let mut out = Vec::new();
        match kind {
            ParamType::Token => {
                let (codes, texts, of_type) = token_values(n, defs, n.binding);
                for (sys, c) in codes {
                    out.push(("", enc_token(&sys, &c)));
                }
                if !main_only {
                    for t in texts {
                        out.push((TEXT, fold(&t).into_bytes()));
                    }
                    for (ts, tc, v) in of_type {
                        out.push((OF_TYPE, enc_token(&format!("{ts}|{tc}"), &v)));
                    }
                }
            }
            ParamType::String => {
                for v in string_values(n) {
                    out.push(("", values::clean(&fold(&v))));
                    if !main_only {
                        out.push((EXACT, values::clean(&v)));
                    }
                }
            }
            ParamType::Date => {
                if let Some(r) = date_range(n) {
                    out.push(("", enc_range_low(r)));
                    // ranges up to a day are found by the by-start entry alone (queries scan
                    // it from a day before); wider ones also get a by-end entry
                    if r.high.saturating_sub(r.low) > DAY_MS && !main_only {
                        out.push((HI, enc_range_high(r)));
                    }
                }
            }
            ParamType::Number => {
                if let Some(v) = values::json_decimal(n.value) {
                    out.push(("", enc_quantity("", v)));
                }
            }
            ParamType::Quantity => {
                for (k, v) in quantity_values(n, self.analyte) {
                    out.push(("", enc_quantity(&k, v)));
                }
            }
            ParamType::Reference => {
                for v in reference_values(n, &self.reg.base_url) {
                    out.push(("", values::clean(&v)));
                }
                if let (Some(ident), false) = (n.value.get("identifier"), main_only) {
                    let inode = Node {
                        value: ident,
                        fhir_type: Some("Identifier".into()),
                        ..n.clone()
                    };
                    let (codes, _, _) = token_values(&inode, defs, None);
                    for (sys, c) in codes {
                        out.push((IDENTIFIER, enc_token(&sys, &c)));
                    }
                }
            }
            ParamType::Uri => {
                if let Value::String(u) = n.value {
                    out.push(("", values::clean(u)));
                    // a canonical resource's url is also found as `url|version`
                    if code == "url" {
                        if let Some(v) = self.version.as_deref() {
                            out.push(("", values::clean(&format!("{u}|{v}"))));
                        }
                    }
                }
            }
            ParamType::Composite => {}
        }
        out
    }

    fn composite(
        &mut self,
        ev: &Evaluator,
        defs: &Definitions,
        rtype: &str,
        n: &Node,
        p: &ParamDef,
    ) {
        let [c1, c2] = match p.components.as_slice() {
            [a, b] => [a, b],
            _ => return,
        };
        let part = |c: &super::params::Component| -> Vec<Vec<u8>> {
            ev.eval_from(&c.expr, rtype, n)
                .iter()
                .flat_map(|cn| self.simple(defs, cn, c.kind, "", true))
                .filter(|(suffix, _)| suffix.is_empty())
                .map(|(_, v)| v)
                .collect()
        };
        let firsts = part(c1);
        let seconds = part(c2);
        for a in &firsts {
            for b in &seconds {
                let mut v = a.clone();
                v.push(0);
                v.extend_from_slice(b);
                self.push(&p.code, "", v);
            }
        }
    }
}

/// The index entries of some parameters of a resource (unsorted; for access decisions, which
/// need a few parameters, not all).
pub fn entries_of_params(
    reg: &Registry,
    defs: &Definitions,
    rtype: &str,
    resource: &Value,
    params: &[String],
) -> Vec<IndexEntry> {
    let ev = Evaluator::new(defs);
    let mut out = Out {
        entries: Vec::new(),
        reg,
        version: None,
        analyte: None,
    };
    for p in reg.params(rtype).filter(|p| params.contains(&p.code)) {
        out.extract(&ev, defs, rtype, resource, p);
    }
    out.entries
}

/// All index entries of a resource, sorted and without duplicates.
pub fn index_entries(
    reg: &Registry,
    defs: &Definitions,
    rtype: &str,
    resource: &Value,
) -> Vec<IndexEntry> {
    let ev = Evaluator::new(defs);
    let mut out = Out {
        entries: Vec::new(),
        reg,
        version: resource
            .get("version")
            .and_then(Value::as_str)
            .map(str::to_string),
        analyte: if rtype == "Observation" {
            analyte_of(resource)
        } else {
            None
        },
    };
    for p in reg.params(rtype) {
        out.extract(&ev, defs, rtype, resource, p);
    }
    let mut entries = out.entries;
    entries.sort();
    entries.dedup();
    // `combo-X` values that `X` already holds are not stored twice: a `combo-X` query also
    // looks at `X` (see [`combo_base`])
    let base_values: std::collections::HashSet<(&str, &[u8])> = entries
        .iter()
        .filter(|e| !e.param.starts_with(COMBO))
        .map(|e| (e.param.as_str(), e.value.as_slice()))
        .collect();
    let redundant: Vec<bool> = entries
        .iter()
        .map(|e| {
            combo_base(&e.param).is_some_and(|b| base_values.contains(&(b, e.value.as_slice())))
        })
        .collect();
    let mut i = 0;
    entries.retain(|_| {
        let keep = !redundant[i];
        i += 1;
        keep
    });
    entries
}

const COMBO: &str = "combo-";

/// The parameter whose entries a `combo-` parameter shares (`combo-code:text` → `code:text`).
pub fn combo_base(param: &str) -> Option<&str> {
    param.strip_prefix(COMBO)
}

#[cfg(test)]
mod tests {
    /// The index stays lean: every generated resource gets its core entries, and no more than a
    /// budget (index keys dominate ingest cost and store size).
    #[test]
    fn generated_resources_get_their_core_entries_within_budget() {
        let engine = crate::search::engine().expect("engine");
        let mut rng = crate::bench::generator::Rng::new(1);
        let b = crate::bench::generator::patient_bundle(&mut rng, 1);
        for e in b["entry"].as_array().expect("entries") {
            let r = &e["resource"];
            let t = r["resourceType"].as_str().expect("t");
            let entries = engine.index_entries(t, r);
            let has = |p: &str| entries.iter().any(|e| e.param == p);
            let (core, budget): (&[&str], usize) = match t {
                "Observation" => (
                    &[
                        "code",
                        "date",
                        "value-quantity",
                        "subject",
                        "status",
                        "category",
                    ],
                    14,
                ),
                "MedicationDispense" => (&["code", "subject", "status", "whenhandedover"], 6),
                "Encounter" => (&["class", "date", "status", "subject"], 6),
                "MeasureReport" => (&["measure", "period", "status", "subject"], 7),
                "Condition" => (&["code", "subject", "onset-date", "clinical-status"], 7),
                "Patient" => (
                    &["identifier", "family", "given", "birthdate", "gender"],
                    24,
                ),
                _ => (&[], 30),
            };
            for p in core {
                assert!(has(p), "{t} lacks {p}: {entries:?}");
            }
            assert!(
                entries.len() <= budget,
                "{t} has {} entries (budget {budget})",
                entries.len()
            );
            // combo-code values equal to code values are not stored twice
            assert!(!has("combo-code"), "{t}: {entries:?}");
        }
    }
}

//! The authoring form (`vbc-contract/1`, TOML; see `contracts/FORMAT.md`) and its compilation
//! into the rule format. Compilation checks everything and reports every mistake at once, each
//! located by its path in the file (`outcome[2].window`).

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use toml::{Table, Value};

use super::rules::*;
use crate::days;
use crate::fhir::outcome::Issue;
use crate::search::units;

/// The authoring format identifier.
pub const SOURCE_FORMAT: &str = "vbc-contract/1";

/// Code system aliases of the authoring form.
pub fn system_alias(s: &str) -> &str {
    match s {
        "rxnorm" => "http://www.nlm.nih.gov/research/umls/rxnorm",
        "loinc" => "http://loinc.org",
        "snomed" => "http://snomed.info/sct",
        "icd10cm" => "http://hl7.org/fhir/sid/icd-10-cm",
        "icd10" => "http://hl7.org/fhir/sid/icd-10",
        "icd10gm" => "http://fhir.de/CodeSystem/bfarm/icd-10-gm",
        "ndc" => "http://hl7.org/fhir/sid/ndc",
        "cpt" => "http://www.ama-assn.org/go/cpt",
        "hcpcs" => "https://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets",
        "ucum" => "http://unitsofmeasure.org",
        "actcode" => "http://terminology.hl7.org/CodeSystem/v3-ActCode",
        other => other,
    }
}

/// Collects problems while reading.
struct Cx {
    issues: Vec<Issue>,
}

impl Cx {
    fn err(&mut self, at: &str, msg: impl Into<String>) {
        self.issues
            .push(Issue::error("invalid", msg.into()).at(at.to_string()));
    }

    fn missing(&mut self, at: &str, what: &str) {
        self.issues
            .push(Issue::error("required", format!("{what} is required")).at(at.to_string()));
    }

    /// A key that is not there: an issue when it is required.
    fn absent<T>(&mut self, at: &str, key: &str, required: bool) -> Option<T> {
        if required {
            self.missing(&join(at, key), &format!("'{key}'"));
        }
        None
    }

    fn check_keys(&mut self, t: &Table, allowed: &[&str], at: &str) {
        for k in t.keys() {
            if !allowed.contains(&k.as_str()) {
                self.err(
                    &join(at, k),
                    format!(
                        "unknown key '{k}' (expected one of: {})",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }

    fn table<'a>(
        &mut self,
        t: &'a Table,
        key: &str,
        at: &str,
        required: bool,
    ) -> Option<&'a Table> {
        match t.get(key) {
            Some(Value::Table(x)) => Some(x),
            Some(_) => {
                self.err(&join(at, key), "must be a table");
                None
            }
            None => self.absent(at, key, required),
        }
    }

    fn tables<'a>(&mut self, t: &'a Table, key: &str, at: &str) -> Vec<(String, &'a Table)> {
        match t.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, v)| {
                    let here = format!("{}[{i}]", join(at, key));
                    match v {
                        Value::Table(x) => Some((here, x)),
                        _ => {
                            self.err(&here, "must be a table");
                            None
                        }
                    }
                })
                .collect(),
            Some(_) => {
                self.err(&join(at, key), "must be an array of tables ([[...]])");
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    fn string(&mut self, t: &Table, key: &str, at: &str, required: bool) -> Option<String> {
        match t.get(key) {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Some(Value::String(_)) => {
                self.err(&join(at, key), "must not be empty");
                None
            }
            Some(_) => {
                self.err(&join(at, key), "must be a string");
                None
            }
            None => self.absent(at, key, required),
        }
    }

    fn strings(&mut self, t: &Table, key: &str, at: &str) -> Vec<String> {
        match t.get(key) {
            Some(Value::Array(a)) => a
                .iter()
                .enumerate()
                .filter_map(|(i, v)| match v {
                    Value::String(s) => Some(s.trim().to_string()),
                    _ => {
                        self.err(&format!("{}[{i}]", join(at, key)), "must be a string");
                        None
                    }
                })
                .collect(),
            Some(_) => {
                self.err(&join(at, key), "must be an array of strings");
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    fn uint(&mut self, t: &Table, key: &str, at: &str, required: bool) -> Option<u32> {
        match t.get(key) {
            Some(Value::Integer(i)) => match u32::try_from(*i) {
                Ok(v) => Some(v),
                Err(_) => {
                    self.err(&join(at, key), "must be a whole number from 0");
                    None
                }
            },
            Some(_) => {
                self.err(&join(at, key), "must be a whole number");
                None
            }
            None => self.absent(at, key, required),
        }
    }

    fn boolean(&mut self, t: &Table, key: &str, at: &str, default: bool) -> bool {
        match t.get(key) {
            Some(Value::Boolean(b)) => *b,
            Some(_) => {
                self.err(&join(at, key), "must be true or false");
                default
            }
            None => default,
        }
    }

    fn decimal_text(&mut self, t: &Table, key: &str, at: &str) -> Option<Decimal> {
        let raw = match t.get(key)? {
            Value::String(s) => s.trim().to_string(),
            Value::Integer(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            _ => {
                self.err(&join(at, key), "must be a number");
                return None;
            }
        };
        match raw.parse::<Decimal>() {
            Ok(d) => Some(d),
            Err(_) => {
                self.err(&join(at, key), format!("'{raw}' is not a number"));
                None
            }
        }
    }
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_string()
    } else {
        format!("{at}.{key}")
    }
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
}

/// Parse `"A..B"` into its two parts (either may be empty when `open` allows).
fn split_range(s: &str) -> Option<(&str, &str)> {
    let (a, b) = s.split_once("..")?;
    Some((a.trim(), b.trim()))
}

/// Parse a period `"YYYY-MM-DD..YYYY-MM-DD"`.
fn period(cx: &mut Cx, s: &str, at: &str) -> Option<(String, String)> {
    let Some((a, b)) = split_range(s) else {
        cx.err(at, format!("'{s}' is not a period START..END"));
        return None;
    };
    let (Some(da), Some(db)) = (days::parse_full(a), days::parse_full(b)) else {
        cx.err(at, format!("'{s}': both ends must be dates YYYY-MM-DD"));
        return None;
    };
    if db < da {
        cx.err(at, format!("the period '{s}' ends before it starts"));
        return None;
    }
    Some((a.to_string(), b.to_string()))
}

/// Parse a day window `"A..B"`.
fn window(cx: &mut Cx, s: &str, at: &str) -> Option<DayWindow> {
    let parsed =
        split_range(s).and_then(|(a, b)| Some((a.parse::<i32>().ok()?, b.parse::<i32>().ok()?)));
    let Some((from, to)) = parsed else {
        cx.err(
            at,
            format!("'{s}' is not a day window A..B (days relative to the index date)"),
        );
        return None;
    };
    if to < from {
        cx.err(at, format!("the window '{s}' ends before it starts"));
        return None;
    }
    if from.abs() > 36_600 || to.abs() > 36_600 {
        cx.err(at, format!("the window '{s}' is longer than 100 years"));
        return None;
    }
    Some(DayWindow { from, to })
}

fn window_field(cx: &mut Cx, t: &Table, key: &str, at: &str) -> Option<DayWindow> {
    let s = cx.string(t, key, at, true)?;
    window(cx, &s, &join(at, key))
}

/// Parse `"OP NUMBER [UNIT]"` and convert the threshold to `target_unit`.
fn comparison(
    cx: &mut Cx,
    s: &str,
    target_unit: &str,
    analyte: Option<units::Analyte>,
    at: &str,
) -> Option<Comparison> {
    let s = s.trim();
    let op = ["<=", ">=", "<", ">", "="]
        .into_iter()
        .find(|op| s.starts_with(op));
    let Some(op) = op else {
        cx.err(at, format!("'{s}' must start with <, <=, >, >= or ="));
        return None;
    };
    let rest = s[op.len()..].trim();
    let (num, unit) = match rest.split_once(char::is_whitespace) {
        Some((n, u)) => (n, u.trim()),
        None => (rest, ""),
    };
    let Ok(value) = num.parse::<Decimal>() else {
        cx.err(at, format!("'{num}' in '{s}' is not a number"));
        return None;
    };
    let unit = if unit.is_empty() { target_unit } else { unit };
    let Some(converted) = units::convert(analyte, unit, value, target_unit) else {
        cx.err(
            at,
            format!("the unit '{unit}' of '{s}' cannot be converted to '{target_unit}'"),
        );
        return None;
    };
    Some(Comparison {
        op: op.to_string(),
        value: converted.normalize().to_string(),
        unit: target_unit.to_string(),
        text: s.to_string(),
    })
}

fn code(cx: &mut Cx, s: &str, at: &str) -> Option<CodeDef> {
    let mut parts = s.splitn(3, '|');
    let (system, code, display) = (parts.next(), parts.next(), parts.next());
    match (system.map(str::trim), code.map(str::trim)) {
        (Some(sys), Some(c)) if !sys.is_empty() && !c.is_empty() => {
            let system = system_alias(sys);
            if !system.contains(':') {
                cx.err(
                    at,
                    format!("'{sys}' is neither a URI nor a known system alias"),
                );
                return None;
            }
            Some(CodeDef {
                system: system.to_string(),
                code: c.to_string(),
                display: display
                    .map(|d| d.trim().to_string())
                    .filter(|d| !d.is_empty()),
            })
        }
        _ => {
            cx.err(at, format!("'{s}' is not a code SYSTEM|CODE[|Display]"));
            None
        }
    }
}

/// Parse `"NUMBER CURRENCY"`, which must be in the contract currency.
fn amount(cx: &mut Cx, s: &str, currency: &str, at: &str) -> Option<String> {
    let parsed = s
        .trim()
        .split_once(char::is_whitespace)
        .and_then(|(n, c)| Some((n.parse::<Decimal>().ok()?, c.trim())));
    match parsed {
        Some((v, c)) if c == currency && v >= Decimal::ZERO => Some(v.to_string()),
        Some((_, c)) if c != currency => {
            cx.err(
                at,
                format!("'{s}' is in {c}, the contract is in {currency}"),
            );
            None
        }
        _ => {
            cx.err(
                at,
                format!("'{s}' is not an amount like '100.00 {currency}'"),
            );
            None
        }
    }
}

/// Parse `"NUMBER %"`.
fn share(cx: &mut Cx, s: &str, at: &str) -> Option<String> {
    match s
        .trim()
        .strip_suffix('%')
        .map(str::trim)
        .and_then(|n| n.parse::<Decimal>().ok())
    {
        Some(v) if v >= Decimal::ZERO && v <= Decimal::from(100) => Some(v.to_string()),
        _ => {
            cx.err(at, format!("'{s}' is not a share from 0 % to 100 %"));
            None
        }
    }
}

fn pick(cx: &mut Cx, t: &Table, at: &str, allowed: &[&str], default: Pick) -> Pick {
    match cx.string(t, "pick", at, false) {
        None => default,
        Some(p) if allowed.contains(&p.as_str()) => match p.as_str() {
            "latest" => Pick::Latest,
            "first" => Pick::First,
            "lowest" => Pick::Lowest,
            "highest" => Pick::Highest,
            "mean" => Pick::Mean,
            _ => Pick::Any,
        },
        Some(p) => {
            cx.err(
                &join(at, "pick"),
                format!("'{p}' is not one of {}", allowed.join(", ")),
            );
            default
        }
    }
}

/// What outcome and cohort readers need to resolve names.
struct Names<'a> {
    valuesets: &'a BTreeMap<String, ValueSetDef>,
    labs: &'a BTreeMap<String, LabDef>,
}

impl Names<'_> {
    fn valueset(&self, cx: &mut Cx, t: &Table, key: &str, at: &str) -> Option<String> {
        let name = cx.string(t, key, at, true)?;
        if self.valuesets.contains_key(&name) {
            Some(name)
        } else {
            cx.issues.push(
                Issue::error(
                    "not-found",
                    format!("unknown value set '{name}' (define [valuesets.{name}])"),
                )
                .at(join(at, key)),
            );
            None
        }
    }

    fn lab(
        &self,
        cx: &mut Cx,
        t: &Table,
        at: &str,
    ) -> Option<(String, String, Option<units::Analyte>)> {
        let name = cx.string(t, "lab", at, true)?;
        match self.labs.get(&name) {
            Some(l) => Some((name.clone(), l.unit.clone(), self.analyte(&l.valueset))),
            None => {
                cx.issues.push(
                    Issue::error(
                        "not-found",
                        format!("unknown lab '{name}' (define [labs.{name}])"),
                    )
                    .at(join(at, "lab")),
                );
                None
            }
        }
    }

    fn analyte(&self, valueset: &str) -> Option<units::Analyte> {
        self.valuesets.get(valueset).and_then(|vs| {
            units::analyte_of_codes(
                vs.codes
                    .iter()
                    .filter(|c| c.system == "http://loinc.org")
                    .map(|c| c.code.as_str()),
            )
        })
    }
}

/// Compile an authoring file into a rule set, or every problem found.
pub fn compile(text: &str) -> Result<RuleSet, Vec<Issue>> {
    let doc: Table = match text.parse::<Table>() {
        Ok(t) => t,
        Err(e) => {
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}")
                })
                .unwrap_or_default();
            return Err(vec![Issue::error(
                "structure",
                format!("not valid TOML: {}", e.message()),
            )
            .at(at)]);
        }
    };
    let mut cx = Cx { issues: Vec::new() };
    cx.check_keys(
        &doc,
        &[
            "format",
            "contract",
            "parties",
            "drug",
            "valuesets",
            "labs",
            "cohort",
            "exclusions",
            "outcome",
            "payment",
        ],
        "",
    );
    match cx.string(&doc, "format", "", true) {
        Some(f) if f == SOURCE_FORMAT => {}
        Some(f) => cx.err(
            "format",
            format!("'{f}' is not supported (expected '{SOURCE_FORMAT}')"),
        ),
        None => {}
    }
    let info = contract_info(&mut cx, &doc);
    let currency = info
        .as_ref()
        .map(|i| i.currency.clone())
        .unwrap_or_default();

    // value sets
    let mut valuesets = BTreeMap::new();
    if let Some(vss) = cx.table(&doc, "valuesets", "", true) {
        for (name, v) in vss {
            let at = format!("valuesets.{name}");
            if !valid_name(name, 40) {
                cx.err(
                    &at,
                    format!("'{name}' must be lowercase letters, digits and '-'"),
                );
            }
            let Value::Table(t) = v else {
                cx.err(&at, "must be a table");
                continue;
            };
            cx.check_keys(t, &["title", "codes"], &at);
            let title = cx
                .string(t, "title", &at, false)
                .unwrap_or_else(|| name.clone());
            let mut codes = Vec::new();
            for (i, c) in cx.strings(t, "codes", &at).iter().enumerate() {
                if let Some(c) = code(&mut cx, c, &format!("{at}.codes[{i}]")) {
                    codes.push(c);
                }
            }
            if codes.is_empty() {
                cx.missing(&join(&at, "codes"), "at least one code");
            }
            valuesets.insert(name.clone(), ValueSetDef { title, codes });
        }
    }
    // labs
    let mut labs = BTreeMap::new();
    if let Some(ls) = cx.table(&doc, "labs", "", false) {
        for (name, v) in ls {
            let at = format!("labs.{name}");
            let Value::Table(t) = v else {
                cx.err(&at, "must be a table");
                continue;
            };
            cx.check_keys(t, &["valueset", "unit"], &at);
            let vs = cx.string(t, "valueset", &at, true);
            if let Some(vs) = &vs {
                if !valuesets.contains_key(vs) {
                    cx.issues.push(
                        Issue::error("not-found", format!("unknown value set '{vs}'"))
                            .at(join(&at, "valueset")),
                    );
                }
            }
            let unit = cx.string(t, "unit", &at, true);
            if let (Some(valueset), Some(unit)) = (vs, unit) {
                labs.insert(name.clone(), LabDef { valueset, unit });
            }
        }
    }
    let names = Names {
        valuesets: &valuesets,
        labs: &labs,
    };
    let drug = doc
        .get("drug")
        .and_then(Value::as_table)
        .and_then(|d| d.get("valueset"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let cohort = cohort(&mut cx, &doc, &names, drug.as_deref());
    let exclusions = exclusions(&mut cx, &doc, &names);
    let exposure = cohort
        .as_ref()
        .map(|c| c.exposure.clone())
        .unwrap_or_default();
    let outcomes = outcomes(&mut cx, &doc, &names, &exposure);
    let payments = payments(&mut cx, &doc, &outcomes, &currency);
    match (info, cohort, cx.issues.iter().any(Issue::is_error)) {
        (Some(contract), Some(cohort), false) => Ok(RuleSet {
            format: FORMAT.to_string(),
            contract,
            valuesets,
            labs,
            cohort,
            exclusions,
            outcomes,
            payments,
        }),
        _ => {
            if cx.issues.is_empty() {
                cx.err("", "the contract is incomplete");
            }
            Err(cx.issues)
        }
    }
}

fn party(cx: &mut Cx, t: &Table, key: &str) -> Option<Party> {
    let at = format!("parties.{key}");
    let p = cx.table(t, key, "parties", true)?;
    cx.check_keys(p, &["name", "identifier"], &at);
    let name = cx.string(p, "name", &at, true)?;
    let (mut system, mut value) = (None, None);
    if let Some(id) = cx.string(p, "identifier", &at, false) {
        match id.split_once('|') {
            Some((s, v)) if s.contains(':') && !v.is_empty() => {
                system = Some(s.to_string());
                value = Some(v.to_string());
            }
            _ => cx.err(
                &join(&at, "identifier"),
                format!("'{id}' is not SYSTEM|VALUE with a URI system"),
            ),
        }
    }
    Some(Party {
        name,
        identifier_system: system,
        identifier_value: value,
    })
}

fn contract_info(cx: &mut Cx, doc: &Table) -> Option<ContractInfo> {
    let c = cx.table(doc, "contract", "", true)?;
    cx.check_keys(
        c,
        &[
            "id",
            "version",
            "title",
            "description",
            "status",
            "period",
            "lob",
            "hcplan",
            "currency",
            "source",
            "reporting",
        ],
        "contract",
    );
    let id = cx.string(c, "id", "contract", true);
    if let Some(id) = &id {
        if !valid_name(id, 40) {
            cx.err(
                "contract.id",
                format!("'{id}' must be 1-40 lowercase letters, digits and '-'"),
            );
        }
    }
    let version = cx.string(c, "version", "contract", true);
    if let Some(v) = &version {
        if v.len() > 16
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            cx.err(
                "contract.version",
                format!("'{v}' must be 1-16 letters, digits, '.' and '-'"),
            );
        }
    }
    let title = cx.string(c, "title", "contract", true);
    let status = cx
        .string(c, "status", "contract", false)
        .unwrap_or_else(|| "active".into());
    if !matches!(status.as_str(), "draft" | "active" | "retired") {
        cx.err(
            "contract.status",
            format!("'{status}' is not draft, active or retired"),
        );
    }
    let term = cx
        .string(c, "period", "contract", true)
        .and_then(|p| period(cx, &p, "contract.period"));
    let lob = cx.string(c, "lob", "contract", false);
    if let Some(l) = &lob {
        if lob_code(l).is_none() {
            cx.err(
                "contract.lob",
                format!("'{l}' is not commercial, medicare or medicaid"),
            );
        }
    }
    let hcplan = cx.string(c, "hcplan", "contract", false);
    if let Some(h) = &hcplan {
        if !["2A", "2B", "2C", "3A", "3B", "3N", "4A", "4B", "4C", "4N"].contains(&h.as_str()) {
            cx.err(
                "contract.hcplan",
                format!("'{h}' is not an HCP-LAN APM category (2A..4N)"),
            );
        }
    }
    let currency = cx.string(c, "currency", "contract", true);
    if let Some(cur) = &currency {
        if cur.len() != 3 || !cur.bytes().all(|b| b.is_ascii_uppercase()) {
            cx.err(
                "contract.currency",
                format!("'{cur}' is not an ISO 4217 code"),
            );
        }
    }
    let payer = party(
        cx,
        doc.get("parties")
            .and_then(Value::as_table)
            .unwrap_or(&Table::new()),
        "payer",
    );
    let manufacturer = party(
        cx,
        doc.get("parties")
            .and_then(Value::as_table)
            .unwrap_or(&Table::new()),
        "manufacturer",
    );
    let cur = currency.clone().unwrap_or_default();
    let mut drug_vs = None;
    let (mut unit_price, mut pack_price) = (None, None);
    let (mut unit_size, mut price_stopped, mut same_exposure_days, mut source_order) =
        (None, false, None, Vec::new());
    if let Some(d) = cx.table(doc, "drug", "", true) {
        cx.check_keys(
            d,
            &[
                "valueset",
                "unit_price",
                "pack_price",
                "unit",
                "price_stopped",
                "same_exposure_days",
                "source_order",
            ],
            "drug",
        );
        if let Some(u) = cx.string(d, "unit", "drug", false) {
            unit_size = drug_unit(cx, &u);
        }
        price_stopped = cx.boolean(d, "price_stopped", "drug", false);
        same_exposure_days = cx.uint(d, "same_exposure_days", "drug", false);
        source_order = cx.strings(d, "source_order", "drug");
        for (i, s) in source_order.iter().enumerate() {
            if crate::contracts::exposure_source::Source::of(s).is_none() {
                cx.err(
                    &format!("drug.source_order[{i}]"),
                    format!("'{s}' is not MedicationDispense, MedicationAdministration, MedicationRequest or Procedure"),
                );
            }
        }
        drug_vs = cx.string(d, "valueset", "drug", true);
        if let Some(p) = cx.string(d, "unit_price", "drug", false) {
            unit_price = amount(cx, &p, &cur, "drug.unit_price");
        }
        if let Some(p) = cx.string(d, "pack_price", "drug", false) {
            pack_price = amount(cx, &p, &cur, "drug.pack_price");
        }
        let vss = doc.get("valuesets").and_then(Value::as_table);
        if let Some(vs) = &drug_vs {
            if !vss.is_some_and(|v| v.contains_key(vs)) {
                cx.issues.push(
                    Issue::error("not-found", format!("unknown value set '{vs}'"))
                        .at("drug.valueset"),
                );
            }
        }
    }
    let reporting = cx
        .string(c, "reporting", "contract", false)
        .unwrap_or_else(|| "quarterly".into());
    if !matches!(
        reporting.as_str(),
        "monthly" | "quarterly" | "close-out" | "none"
    ) {
        cx.err(
            "contract.reporting",
            format!("'{reporting}' is not monthly, quarterly, close-out or none"),
        );
    }
    let (start, end) = term?;
    Some(ContractInfo {
        reporting,
        id: id?,
        version: version?,
        title: title?,
        description: cx.string(c, "description", "contract", false),
        status,
        start,
        end,
        lob,
        hcplan,
        currency: currency?,
        source: cx.string(c, "source", "contract", false),
        payer: payer?,
        manufacturer: manufacturer?,
        drug: drug_vs?,
        unit_price,
        pack_price,
        unit_size,
        price_stopped,
        same_exposure_days,
        source_order,
    })
}

/// `[drug] unit = "100 mg"`: a positive amount and a UCUM unit.
fn drug_unit(cx: &mut Cx, s: &str) -> Option<(String, String)> {
    let parsed = s
        .trim()
        .split_once(' ')
        .and_then(|(n, u)| Some((Decimal::from_str_exact(n.trim()).ok()?, u.trim())))
        .filter(|(n, u)| *n > Decimal::ZERO && !u.is_empty() && ucum::validate(u).is_ok());
    match parsed {
        Some((n, u)) => Some((n.normalize().to_string(), u.to_string())),
        None => {
            cx.err(
                "drug.unit",
                format!("'{s}' is not an amount and a UCUM unit, such as \"100 mg\""),
            );
            None
        }
    }
}

/// The NAHDO source-of-payment code of a line of business.
pub fn lob_code(lob: &str) -> Option<(&'static str, &'static str)> {
    match lob {
        "medicare" => Some(("1", "MEDICARE")),
        "medicaid" => Some(("2", "MEDICAID")),
        "commercial" => Some(("5", "PRIVATE HEALTH INSURANCE")),
        _ => None,
    }
}

fn cohort(cx: &mut Cx, doc: &Table, names: &Names<'_>, drug: Option<&str>) -> Option<CohortRule> {
    let at = "cohort";
    let c = cx.table(doc, "cohort", "", true)?;
    cx.check_keys(
        c,
        &[
            "exposure",
            "sources",
            "intake",
            "washout_days",
            "washout_sources",
            "age",
            "sex",
            "diagnosis",
            "lab",
            "finding",
            "therapy",
            "coverage",
        ],
        at,
    );
    let exposure = if c.contains_key("exposure") {
        names.valueset(cx, c, "exposure", at)
    } else {
        drug.map(str::to_string)
    };
    let mut sources = cx.strings(c, "sources", at);
    if sources.is_empty() {
        sources = vec![
            "MedicationDispense".into(),
            "MedicationAdministration".into(),
        ];
    }
    let washout_sources = c
        .contains_key("washout_sources")
        .then(|| cx.strings(c, "washout_sources", at));
    let listed = sources.iter().map(|s| ("sources", s)).enumerate().chain(
        washout_sources
            .iter()
            .flatten()
            .map(|s| ("washout_sources", s))
            .enumerate(),
    );
    for (i, (key, s)) in listed {
        if crate::contracts::exposure_source::Source::of(s).is_none() {
            cx.err(
                &format!("cohort.{key}[{i}]"),
                format!("'{s}' is not MedicationDispense, MedicationAdministration, MedicationRequest or Procedure"),
            );
        }
    }
    if washout_sources.as_ref().is_some_and(Vec::is_empty) {
        cx.err("cohort.washout_sources", "at least one source");
    }
    let intake = cx
        .string(c, "intake", at, true)
        .and_then(|p| period(cx, &p, "cohort.intake"));
    let washout_days = cx.uint(c, "washout_days", at, false);
    let (mut age_min, mut age_max) = (None, None);
    if let Some(a) = cx.string(c, "age", at, false) {
        let parsed = split_range(&a).and_then(|(lo, hi)| {
            let lo = if lo.is_empty() {
                None
            } else {
                Some(lo.parse::<u32>().ok()?)
            };
            let hi = if hi.is_empty() {
                None
            } else {
                Some(hi.parse::<u32>().ok()?)
            };
            Some((lo, hi))
        });
        match parsed {
            Some((lo, hi)) if lo.is_some() || hi.is_some() => {
                if let (Some(l), Some(h)) = (lo, hi) {
                    if h < l {
                        cx.err(
                            "cohort.age",
                            format!("the age range '{a}' ends before it starts"),
                        );
                    }
                }
                age_min = lo;
                age_max = hi;
            }
            _ => cx.err(
                "cohort.age",
                format!("'{a}' is not an age range like 18.., ..17 or 18..75"),
            ),
        }
    }
    let sex = cx.string(c, "sex", at, false);
    if let Some(s) = &sex {
        if !matches!(s.as_str(), "male" | "female" | "other" | "unknown") {
            cx.err(
                "cohort.sex",
                format!("'{s}' is not male, female, other or unknown"),
            );
        }
    }
    let mut diagnoses = Vec::new();
    for (here, t) in cx.tables(c, "diagnosis", at) {
        cx.check_keys(t, &["valueset"], &here);
        diagnoses.extend(names.valueset(cx, t, "valueset", &here));
    }
    let mut labs = Vec::new();
    for (here, t) in cx.tables(c, "lab", at) {
        cx.check_keys(t, &["lab", "within_days", "value"], &here);
        let lab = names.lab(cx, t, &here);
        let within = cx.uint(t, "within_days", &here, true);
        let value = cx.string(t, "value", &here, true);
        if let (Some((lab, unit, analyte)), Some(within_days), Some(v)) = (lab, within, value) {
            if let Some(value) = comparison(cx, &v, &unit, analyte, &join(&here, "value")) {
                labs.push(LabCriterion {
                    lab,
                    within_days,
                    value,
                });
            }
        }
    }
    let mut findings = Vec::new();
    for (here, t) in cx.tables(c, "finding", at) {
        cx.check_keys(t, &["observation", "value_in", "within_days"], &here);
        let o = names.valueset(cx, t, "observation", &here);
        let v = names.valueset(cx, t, "value_in", &here);
        let w = cx.uint(t, "within_days", &here, true);
        if let (Some(observation), Some(value_in), Some(within_days)) = (o, v, w) {
            findings.push(FindingCriterion {
                observation,
                value_in,
                within_days,
            });
        }
    }
    let mut therapies = Vec::new();
    for (here, t) in cx.tables(c, "therapy", at) {
        cx.check_keys(t, &["valueset", "within_days", "supply_counts"], &here);
        let v = names.valueset(cx, t, "valueset", &here);
        let w = cx.uint(t, "within_days", &here, true);
        let supply_counts = cx.boolean(t, "supply_counts", &here, false);
        if let (Some(valueset), Some(within_days)) = (v, w) {
            therapies.push(TherapyCriterion {
                valueset,
                within_days,
                supply_counts,
            });
        }
    }
    let coverage = match cx.table(c, "coverage", at, false) {
        Some(t) => {
            cx.check_keys(t, &["required"], "cohort.coverage");
            cx.boolean(t, "required", "cohort.coverage", true)
        }
        None => false,
    };
    let (intake_start, intake_end) = intake?;
    Some(CohortRule {
        exposure: exposure?,
        sources,
        intake_start,
        intake_end,
        washout_days,
        washout_sources,
        age_min,
        age_max,
        sex,
        diagnoses,
        labs,
        findings,
        therapies,
        coverage,
    })
}

fn exclusions(cx: &mut Cx, doc: &Table, names: &Names<'_>) -> ExclusionRules {
    let mut out = ExclusionRules {
        death: true,
        diagnoses: Vec::new(),
        switches: Vec::new(),
    };
    if let Some(e) = cx.table(doc, "exclusions", "", false) {
        cx.check_keys(e, &["death", "diagnosis", "switch"], "exclusions");
        out.death = cx.boolean(e, "death", "exclusions", true);
        for (here, t) in cx.tables(e, "diagnosis", "exclusions") {
            cx.check_keys(t, &["valueset"], &here);
            out.diagnoses
                .extend(names.valueset(cx, t, "valueset", &here));
        }
        for (here, t) in cx.tables(e, "switch", "exclusions") {
            cx.check_keys(t, &["valueset"], &here);
            out.switches
                .extend(names.valueset(cx, t, "valueset", &here));
        }
    }
    out
}

const OUTCOME_KEYS: &[&str] = &[
    "id",
    "title",
    "kind",
    "scoring",
    "improvement",
    "weight",
    "status",
    "report",
    "repeat",
    "missing_data",
    "on_death",
    "lab",
    "window",
    "pick",
    "target",
    "baseline",
    "change",
    "source",
    "diagnosis",
    "encounter_class",
    "on_therapy_grace_days",
    "max_events",
    "observation",
    "response",
    "min_pdc",
    "valueset",
    "max_gap_days",
    "day",
    "of",
];

fn rule(
    cx: &mut Cx,
    t: &Table,
    at: &str,
    kind: &str,
    names: &Names<'_>,
    exposure: &str,
) -> Option<Rule> {
    let therapy = |cx: &mut Cx| -> Option<String> {
        if t.contains_key("valueset") {
            names.valueset(cx, t, "valueset", at)
        } else {
            Some(exposure.to_string())
        }
    };
    match kind {
        "lab-target" => {
            let lab = names.lab(cx, t, at);
            let window = window_field(cx, t, "window", at);
            let pick = pick(
                cx,
                t,
                at,
                &["latest", "first", "lowest", "highest", "mean"],
                Pick::Latest,
            );
            let target_text = cx.string(t, "target", at, true);
            let (lab, unit, analyte) = lab?;
            let target = comparison(cx, &target_text?, &unit, analyte, &join(at, "target"))?;
            Some(Rule::LabTarget {
                lab,
                window: window?,
                pick,
                target,
            })
        }
        "change-from-baseline" => {
            let lab = names.lab(cx, t, at);
            let baseline = window_field(cx, t, "baseline", at);
            let window = window_field(cx, t, "window", at);
            let pick = pick(
                cx,
                t,
                at,
                &["latest", "first", "lowest", "highest", "mean"],
                Pick::Latest,
            );
            let change = match cx.string(t, "change", at, true).as_deref() {
                Some("absolute") => Some(Change::Absolute),
                Some("relative") => Some(Change::Relative),
                Some(other) => {
                    cx.err(
                        &join(at, "change"),
                        format!("'{other}' is not absolute or relative"),
                    );
                    None
                }
                None => None,
            };
            let target_text = cx.string(t, "target", at, true);
            if let (Some(b), Some(w)) = (baseline, window) {
                if b.to >= w.from {
                    cx.err(
                        &join(at, "baseline"),
                        "the baseline window must end before the follow-up window starts",
                    );
                }
            }
            let (lab, unit, analyte) = lab?;
            let change = change?;
            let target = match change {
                Change::Absolute => {
                    comparison(cx, &target_text?, &unit, analyte, &join(at, "target"))?
                }
                Change::Relative => comparison(cx, &target_text?, "%", None, &join(at, "target"))?,
            };
            Some(Rule::ChangeFromBaseline {
                lab,
                baseline: baseline?,
                window: window?,
                pick,
                change,
                target,
            })
        }
        "event" => {
            let source = match cx.string(t, "source", at, false).as_deref() {
                None | Some("encounter") => Some(EventSource::Encounter),
                Some("condition") => Some(EventSource::Condition),
                Some("procedure") => Some(EventSource::Procedure),
                Some(other) => {
                    cx.err(
                        &join(at, "source"),
                        format!("'{other}' is not encounter, condition or procedure"),
                    );
                    None
                }
            };
            let diagnosis = names.valueset(cx, t, "diagnosis", at);
            let encounter_class = cx.strings(t, "encounter_class", at);
            if source.is_some_and(|s| s != EventSource::Encounter) && !encounter_class.is_empty() {
                cx.err(
                    &join(at, "encounter_class"),
                    "applies to encounter events only",
                );
            }
            let window = window_field(cx, t, "window", at);
            let on_therapy_grace_days = cx.uint(t, "on_therapy_grace_days", at, false);
            let max_events = cx.uint(t, "max_events", at, false).unwrap_or(0);
            Some(Rule::Event {
                source: source?,
                diagnosis: diagnosis?,
                encounter_class,
                window: window?,
                on_therapy_grace_days,
                max_events,
            })
        }
        "coded-response" => {
            let observation = names.valueset(cx, t, "observation", at);
            let response = names.valueset(cx, t, "response", at);
            let window = window_field(cx, t, "window", at);
            let pick = pick(cx, t, at, &["any", "first", "latest"], Pick::Any);
            Some(Rule::CodedResponse {
                observation: observation?,
                response: response?,
                window: window?,
                pick,
            })
        }
        "adherence" => {
            let window = window_field(cx, t, "window", at);
            let min = cx.decimal_text(t, "min_pdc", at);
            if !t.contains_key("min_pdc") {
                cx.missing(&join(at, "min_pdc"), "'min_pdc'");
            }
            let min = match min {
                Some(m) if m > Decimal::ZERO && m <= Decimal::ONE => Some(m),
                Some(m) => {
                    cx.err(
                        &join(at, "min_pdc"),
                        format!("{m} is not a proportion above 0 and at most 1"),
                    );
                    None
                }
                None => None,
            };
            let valueset = therapy(cx);
            Some(Rule::Adherence {
                window: window?,
                min_pdc: min?.to_string(),
                valueset: valueset?,
            })
        }
        "persistence" => {
            let window = window_field(cx, t, "window", at);
            let gap = cx.uint(t, "max_gap_days", at, true);
            let valueset = therapy(cx);
            Some(Rule::Persistence {
                window: window?,
                max_gap_days: gap?,
                valueset: valueset?,
            })
        }
        "survival" => {
            let day = cx.uint(t, "day", at, true)?;
            Some(Rule::Survival {
                day: i32::try_from(day).ok()?,
            })
        }
        "all" | "any" => {
            let of = cx.strings(t, "of", at);
            if of.is_empty() {
                cx.missing(&join(at, "of"), "at least one outcome id");
                return None;
            }
            Some(if kind == "all" {
                Rule::All { of }
            } else {
                Rule::Any { of }
            })
        }
        other => {
            cx.err(
                &join(at, "kind"),
                format!("'{other}' is not a rule kind (lab-target, change-from-baseline, event, coded-response, adherence, persistence, survival, all, any)"),
            );
            None
        }
    }
}

/// Shift a rule's days by `by` (for repeated outcomes) and rename its components.
fn shifted(rule: &Rule, by: i32, n: u32, repeated: &BTreeSet<String>) -> Rule {
    let sw = |w: &DayWindow| DayWindow {
        from: w.from + by,
        to: w.to + by,
    };
    let rename = |of: &[String]| -> Vec<String> {
        of.iter()
            .map(|o| {
                if repeated.contains(o) {
                    format!("{o}-{n}")
                } else {
                    o.clone()
                }
            })
            .collect()
    };
    match rule {
        Rule::LabTarget {
            lab,
            window,
            pick,
            target,
        } => Rule::LabTarget {
            lab: lab.clone(),
            window: sw(window),
            pick: *pick,
            target: target.clone(),
        },
        Rule::ChangeFromBaseline {
            lab,
            baseline,
            window,
            pick,
            change,
            target,
        } => Rule::ChangeFromBaseline {
            lab: lab.clone(),
            baseline: *baseline,
            window: sw(window),
            pick: *pick,
            change: *change,
            target: target.clone(),
        },
        Rule::Event {
            source,
            diagnosis,
            encounter_class,
            window,
            on_therapy_grace_days,
            max_events,
        } => Rule::Event {
            source: *source,
            diagnosis: diagnosis.clone(),
            encounter_class: encounter_class.clone(),
            window: sw(window),
            on_therapy_grace_days: *on_therapy_grace_days,
            max_events: *max_events,
        },
        Rule::CodedResponse {
            observation,
            response,
            window,
            pick,
        } => Rule::CodedResponse {
            observation: observation.clone(),
            response: response.clone(),
            window: sw(window),
            pick: *pick,
        },
        Rule::Adherence {
            window,
            min_pdc,
            valueset,
        } => Rule::Adherence {
            window: sw(window),
            min_pdc: min_pdc.clone(),
            valueset: valueset.clone(),
        },
        Rule::Persistence {
            window,
            max_gap_days,
            valueset,
        } => Rule::Persistence {
            window: sw(window),
            max_gap_days: *max_gap_days,
            valueset: valueset.clone(),
        },
        Rule::Survival { day } => Rule::Survival { day: day + by },
        Rule::All { of } => Rule::All { of: rename(of) },
        Rule::Any { of } => Rule::Any { of: rename(of) },
    }
}

/// `missing_data = "at-stake" | "not-met-after-days N" | "met-after-days N"` (N from 0 to 3650).
fn missing_data_policy(cx: &mut Cx, t: &Table, here: &str) -> MissingDataPolicy {
    let Some(text) = cx.string(t, "missing_data", here, false) else {
        return MissingDataPolicy::AtStake;
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    let days = |w: Option<&&str>| w.and_then(|n| n.parse::<u32>().ok()).filter(|n| *n <= 3650);
    match (words.first().copied(), days(words.get(1)), words.len()) {
        (Some("at-stake"), _, 1) => MissingDataPolicy::AtStake,
        (Some("not-met-after-days"), Some(n), 2) => MissingDataPolicy::NotMetAfterDays(n),
        (Some("met-after-days"), Some(n), 2) => MissingDataPolicy::MetAfterDays(n),
        _ => {
            cx.err(
                &join(here, "missing_data"),
                format!("'{text}' is not at-stake, not-met-after-days N or met-after-days N (N from 0 to 3650)"),
            );
            MissingDataPolicy::AtStake
        }
    }
}

/// `on_death = "excluded" | "not-met" | "until-death"` (the last for event outcomes only).
fn on_death(cx: &mut Cx, t: &Table, here: &str, kind: Option<&str>) -> OnDeath {
    let at = join(here, "on_death");
    match cx.string(t, "on_death", here, false).as_deref() {
        None | Some("excluded") => OnDeath::Excluded,
        Some("not-met") => OnDeath::NotMet,
        Some("until-death") if kind == Some("event") => OnDeath::UntilDeath,
        Some("until-death") => {
            cx.err(&at, "'until-death' applies to event outcomes only");
            OnDeath::Excluded
        }
        Some(other) => {
            cx.err(
                &at,
                format!("'{other}' is not excluded, not-met or until-death"),
            );
            OnDeath::Excluded
        }
    }
}

fn outcomes(cx: &mut Cx, doc: &Table, names: &Names<'_>, exposure: &str) -> Vec<OutcomeDef> {
    let mut out: Vec<OutcomeDef> = Vec::new();
    let mut repeated = BTreeSet::new();
    let list = cx.tables(doc, "outcome", "");
    if list.is_empty() && !doc.contains_key("outcome") {
        cx.missing("outcome", "at least one [[outcome]]");
    }
    for (here, t) in list {
        cx.check_keys(t, OUTCOME_KEYS, &here);
        let id = cx.string(t, "id", &here, true);
        if let Some(id) = &id {
            if !valid_name(id, 40) {
                cx.err(
                    &join(&here, "id"),
                    format!("'{id}' must be lowercase letters, digits and '-'"),
                );
            }
        }
        let title = cx.string(t, "title", &here, true);
        let kind = cx.string(t, "kind", &here, true);
        let scoring = cx
            .string(t, "scoring", &here, false)
            .unwrap_or_else(|| "proportion".into());
        if !matches!(scoring.as_str(), "proportion" | "continuous-variable") {
            cx.err(
                &join(&here, "scoring"),
                format!("'{scoring}' is not proportion or continuous-variable"),
            );
        }
        let improvement = cx
            .string(t, "improvement", &here, false)
            .unwrap_or_else(|| "increase".into());
        if !matches!(improvement.as_str(), "increase" | "decrease") {
            cx.err(
                &join(&here, "improvement"),
                format!("'{improvement}' is not increase or decrease"),
            );
        }
        let weight = cx.decimal_text(t, "weight", &here).unwrap_or(Decimal::ONE);
        let status = cx
            .string(t, "status", &here, false)
            .unwrap_or_else(|| "contractual".into());
        if !matches!(
            status.as_str(),
            "contractual" | "contractual-alternate" | "reporting-only"
        ) {
            cx.err(
                &join(&here, "status"),
                format!("'{status}' is not contractual, contractual-alternate or reporting-only"),
            );
        }
        let report = cx.boolean(t, "report", &here, true);
        let repeat = match cx.table(t, "repeat", &here, false) {
            Some(r) => {
                let at = join(&here, "repeat");
                cx.check_keys(r, &["every_days", "times"], &at);
                let every = cx.uint(r, "every_days", &at, true);
                let times = cx.uint(r, "times", &at, true);
                match (every, times) {
                    (Some(e), Some(n)) if e > 0 && (1..=50).contains(&n) => Some((e as i32, n)),
                    (Some(_), Some(_)) => {
                        cx.err(&at, "every_days must be above 0 and times from 1 to 50");
                        None
                    }
                    _ => None,
                }
            }
            None => None,
        };
        let missing_data = missing_data_policy(cx, t, &here);
        let on_death = on_death(cx, t, &here, kind.as_deref());
        // a survival outcome is decided by the death itself, a combination by its parts
        if matches!(kind.as_deref(), Some("survival" | "all" | "any")) {
            for key in ["missing_data", "on_death"] {
                if t.contains_key(key) {
                    let why = if kind.as_deref() == Some("survival") {
                        "does not apply to survival outcomes (the death decides them)"
                    } else {
                        "does not apply to all/any outcomes (set it on their parts)"
                    };
                    cx.err(&join(&here, key), why);
                }
            }
        }
        let Some(kind) = kind else { continue };
        let Some(rule) = rule(cx, t, &here, &kind, names, exposure) else {
            continue;
        };
        let (Some(id), Some(title)) = (id, title) else {
            continue;
        };
        let defs: Vec<OutcomeDef> = match repeat {
            None => vec![OutcomeDef {
                id: id.clone(),
                title,
                scoring,
                improvement,
                weight: weight.to_string(),
                status,
                report,
                rule,
                missing_data,
                on_death,
            }],
            Some((every, times)) => {
                repeated.insert(id.clone());
                (1..=times)
                    .map(|n| OutcomeDef {
                        id: format!("{id}-{n}"),
                        title: format!("{title} (period {n})"),
                        scoring: scoring.clone(),
                        improvement: improvement.clone(),
                        weight: weight.to_string(),
                        status: status.clone(),
                        report,
                        rule: shifted(&rule, every * (n as i32 - 1), n, &repeated),
                        missing_data,
                        on_death,
                    })
                    .collect()
            }
        };
        for d in defs {
            if out.iter().any(|o| o.id == d.id) {
                cx.err(
                    &join(&here, "id"),
                    format!("the outcome id '{}' is used twice", d.id),
                );
                continue;
            }
            if let Rule::All { of } | Rule::Any { of } = &d.rule {
                for o in of {
                    if !out.iter().any(|x| &x.id == o) {
                        cx.issues.push(
                            Issue::error(
                                "not-found",
                                format!("'{o}' is not an outcome defined before '{}'", d.id),
                            )
                            .at(join(&here, "of")),
                        );
                    }
                }
            }
            out.push(d);
        }
    }
    if !out.is_empty() && !out.iter().any(|o| o.report) {
        cx.err(
            "outcome",
            "at least one outcome must be reported (report = true)",
        );
    }
    out
}

fn payments(cx: &mut Cx, doc: &Table, outcomes: &[OutcomeDef], currency: &str) -> Vec<PaymentTerm> {
    let mut out = Vec::new();
    for (here, t) in cx.tables(doc, "payment", "") {
        cx.check_keys(
            t,
            &[
                "stream",
                "kind",
                "outcome",
                "outcomes",
                "amount",
                "share_of_drug_cost",
                "cost_until_failure",
                "share",
                "rate_above",
                "tiers",
                "cap",
                "floor",
                "cost_days",
                "cost_excludes",
            ],
            &here,
        );
        let mut term = PaymentTerm {
            stream: cx
                .string(t, "stream", &here, false)
                .unwrap_or_else(|| "refund".into()),
            ..PaymentTerm::default()
        };
        let kind = cx.string(t, "kind", &here, true).unwrap_or_default();
        let known = [
            "refund-per-non-responder",
            "tiered-rebate",
            "event-rate-rebate",
            "refund-per-event",
            "free-continuation",
            "instalments",
            "upfront-rebate",
        ];
        if !kind.is_empty() && !known.contains(&kind.as_str()) {
            cx.err(
                &join(&here, "kind"),
                format!("'{kind}' is not one of {}", known.join(", ")),
            );
        }
        term.kind = kind.clone();
        if let Some(o) = cx.string(t, "outcome", &here, false) {
            term.outcomes.push(o);
        }
        term.outcomes.extend(cx.strings(t, "outcomes", &here));
        if term.outcomes.is_empty() && kind != "upfront-rebate" {
            cx.missing(&join(&here, "outcome"), "the outcome the term depends on");
        }
        for o in &term.outcomes {
            if !outcomes.iter().any(|x| &x.id == o) {
                cx.issues.push(
                    Issue::error("not-found", format!("unknown outcome '{o}'"))
                        .at(join(&here, "outcome")),
                );
            }
        }
        if let Some(a) = cx.string(t, "amount", &here, false) {
            term.amount = amount(cx, &a, currency, &join(&here, "amount"));
        }
        if let Some(s) = cx.string(t, "share_of_drug_cost", &here, false) {
            term.share_of_drug_cost = share(cx, &s, &join(&here, "share_of_drug_cost"));
        }
        term.cost_until_failure = cx.boolean(t, "cost_until_failure", &here, false);
        if let Some(s) = cx.string(t, "share", &here, false) {
            term.share = share(cx, &s, &join(&here, "share"));
        }
        if let Some(r) = cx.decimal_text(t, "rate_above", &here) {
            term.rate_above = Some(r.to_string());
        }
        for (i, tier) in cx.tables(t, "tiers", &here).into_iter().enumerate() {
            let at = format!("{here}.tiers[{i}]");
            let min = cx.decimal_text(tier.1, "min_rate", &at);
            let s = cx
                .string(tier.1, "share", &at, true)
                .and_then(|s| share(cx, &s, &join(&at, "share")));
            match (min, s) {
                (Some(m), Some(s)) => term.tiers.push((m.to_string(), s)),
                (None, _) => cx.missing(&join(&at, "min_rate"), "'min_rate'"),
                _ => {}
            }
        }
        if let Some(cap) = cx.table(t, "cap", &here, false) {
            let at = join(&here, "cap");
            if let Some(s) = cx.string(cap, "share_of_price", &at, true) {
                term.cap_share_of_price = share(cx, &s, &join(&at, "share_of_price"));
            }
        }
        if let Some(f) = cx.table(t, "floor", &here, false) {
            let at = join(&here, "floor");
            if let Some(a) = cx.string(f, "amount", &at, true) {
                term.floor = amount(cx, &a, currency, &join(&at, "amount"));
            }
        }
        let needs_money = matches!(
            kind.as_str(),
            "refund-per-non-responder" | "refund-per-event" | "instalments"
        );
        if needs_money && term.amount.is_none() && term.share_of_drug_cost.is_none() {
            cx.missing(&here, "'amount' or 'share_of_drug_cost'");
        }
        if kind == "tiered-rebate" && term.tiers.is_empty() {
            cx.missing(&join(&here, "tiers"), "at least one tier");
        }
        if kind == "event-rate-rebate" && (term.rate_above.is_none() || term.share.is_none()) {
            cx.missing(&here, "'rate_above' and 'share'");
        }
        if kind == "upfront-rebate" && term.share.is_none() {
            cx.missing(&here, "'share'");
        }
        if t.contains_key("cost_days") {
            term.cost_days = window_field(cx, t, "cost_days", &here);
        }
        term.cost_excludes = cx.strings(t, "cost_excludes", &here);
        if !term.cost_excludes.is_empty() && kind == "instalments" {
            cx.err(
                &join(&here, "cost_excludes"),
                "instalments have no drug cost to leave exposures out of",
            );
        }
        out.push((here, term));
    }
    // the streams a term leaves out must exist, be another stream, and not leave out others
    // themselves (their lines are settled first)
    for (here, term) in &out {
        for s in &term.cost_excludes {
            let listed: Vec<&PaymentTerm> = out
                .iter()
                .map(|(_, t)| t)
                .filter(|t| &t.stream == s)
                .collect();
            let problem = if s == &term.stream {
                Some(format!("'{s}' is the term's own stream"))
            } else if listed.is_empty() {
                Some(format!("no payment term is in the stream '{s}'"))
            } else if listed.iter().any(|t| !t.cost_excludes.is_empty()) {
                Some(format!(
                    "the stream '{s}' leaves out exposures itself (one level only)"
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                cx.err(&join(here, "cost_excludes"), p);
            }
        }
    }
    out.into_iter().map(|(_, t)| t).collect()
}

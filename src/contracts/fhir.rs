//! The FHIR resources a compiled contract is published as: the VBPR contract Measure, one
//! outcome Measure per reported outcome, its ValueSets, the Library of rules, and the parties'
//! Organizations.

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::rules::*;
use super::source::lob_code;

/// The `meta.tag` system marking resources of a loaded contract version.
pub const CONTRACT_CONTENT_SYSTEM: &str = "https://vbc-server.dev/fhir/CodeSystem/contract-content";

const VBPR: &str = "http://hl7.org/fhir/us/davinci-vbpr";
const POPULATION: &str = "http://terminology.hl7.org/CodeSystem/measure-population";
/// Local payment streams (VBPR's code system has no refund or rebate codes).
pub const LOCAL_STREAMS: &str = "https://vbc-server.dev/fhir/CodeSystem/payment-stream";
const VBPR_STREAMS: &[&str] = &[
    "ccf",
    "ccf-with-risk",
    "eoc",
    "pcpcp",
    "ssq",
    "ssl",
    "ssp",
    "tcoc",
    "qip",
];

/// The code system of a payment stream code: VBPR's when it defines the code, else the local one.
pub fn stream_system(code: &str) -> String {
    if VBPR_STREAMS.contains(&code) {
        format!("{VBPR}/CodeSystem/payment-stream")
    } else {
        LOCAL_STREAMS.to_string()
    }
}

/// Resource ids of a compiled contract.
#[derive(Debug, Clone)]
pub struct Ids {
    /// `{contract}-{version}`: the contract Measure's id and every other id's prefix.
    pub base: String,
}

impl Ids {
    /// Ids of a rule set.
    pub fn of(rules: &RuleSet) -> Ids {
        Ids {
            base: format!("{}-{}", rules.contract.id, rules.contract.version),
        }
    }
    /// The contract Measure id.
    pub fn contract(&self) -> String {
        self.base.clone()
    }
    /// An outcome Measure id.
    pub fn outcome(&self, outcome: &str) -> String {
        format!("{}-{outcome}", self.base)
    }
    /// The Library id.
    pub fn library(&self) -> String {
        format!("{}-rules", self.base)
    }
    /// A ValueSet id.
    pub fn valueset(&self, name: &str) -> String {
        format!("{}-{name}", self.base)
    }
    /// The cohort Group id.
    pub fn group(&self) -> String {
        format!("{}-cohort", self.base)
    }
}

/// Canonical URL of a resource the server defines.
pub fn canonical(rtype: &str, id: &str) -> String {
    format!("{CANONICAL_BASE}/{rtype}/{id}")
}

/// The id of an Organization for a party name.
pub fn org_id(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while s.contains("--") {
        s = s.replace("--", "-");
    }
    let s = s.trim_matches('-');
    format!("org-{}", &s[..s.len().min(56)])
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    for part in s.split(|c: char| !c.is_ascii_alphanumeric()) {
        let mut ch = part.chars();
        if let Some(f) = ch.next() {
            out.push(f.to_ascii_uppercase());
            out.extend(ch);
        }
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, 'C');
    }
    out
}

/// A CodeableConcept with one coding.
pub fn cc(system: &str, code: &str, display: Option<&str>) -> Value {
    let mut coding = json!({"system": system, "code": code});
    if let Some(d) = display {
        coding["display"] = json!(d);
    }
    json!({"coding": [coding]})
}

/// Every resource that publishes a rule set (Organizations first).
pub fn resources(rules: &RuleSet, source_text: &str) -> serde_json::Result<Vec<Value>> {
    let ids = Ids::of(rules);
    let c = &rules.contract;
    let mut out = vec![organization(&c.payer), organization(&c.manufacturer)];
    for (name, vs) in &rules.valuesets {
        out.push(valueset(rules, &ids, name, vs));
    }
    out.push(library(rules, &ids, source_text)?);
    for o in rules.reported() {
        out.push(outcome_measure(rules, &ids, o));
    }
    out.push(contract_measure(rules, &ids));
    for r in out
        .iter_mut()
        .filter(|r| r["resourceType"] != "Organization")
    {
        let meta = r
            .as_object_mut()
            .map(|m| m.entry("meta").or_insert_with(|| json!({})));
        if let Some(meta) = meta {
            meta["tag"] = json!([{
                "system": CONTRACT_CONTENT_SYSTEM,
                "code": "immutable",
                "display": "Part of a loaded contract version, which never changes"
            }]);
        }
    }
    Ok(out)
}

fn organization(p: &Party) -> Value {
    let mut o = json!({
        "resourceType": "Organization",
        "id": org_id(&p.name),
        "active": true,
        "name": p.name,
    });
    if let (Some(s), Some(v)) = (&p.identifier_system, &p.identifier_value) {
        o["identifier"] = json!([{"system": s, "value": v}]);
    }
    o
}

fn common(rules: &RuleSet, rtype: &str, id: &str, title: &str) -> Map<String, Value> {
    let c = &rules.contract;
    let mut m = Map::new();
    m.insert("resourceType".into(), json!(rtype));
    m.insert("id".into(), json!(id));
    m.insert("url".into(), json!(canonical(rtype, id)));
    m.insert("version".into(), json!(c.version));
    m.insert("name".into(), json!(camel(id)));
    m.insert("title".into(), json!(title));
    m.insert("status".into(), json!(c.status));
    m.insert("experimental".into(), json!(false));
    m.insert("publisher".into(), json!(c.payer.name));
    m
}

fn valueset(rules: &RuleSet, ids: &Ids, name: &str, vs: &ValueSetDef) -> Value {
    let mut m = common(rules, "ValueSet", &ids.valueset(name), &vs.title);
    let mut includes: Vec<(String, Vec<Value>)> = Vec::new();
    for code in &vs.codes {
        let mut concept = json!({"code": code.code});
        if let Some(d) = &code.display {
            concept["display"] = json!(d);
        }
        match includes.iter_mut().find(|(s, _)| *s == code.system) {
            Some((_, cs)) => cs.push(concept),
            None => includes.push((code.system.clone(), vec![concept])),
        }
    }
    m.insert(
        "compose".into(),
        json!({"include": includes.into_iter().map(|(s, cs)| json!({"system": s, "concept": cs})).collect::<Vec<_>>()}),
    );
    Value::Object(m)
}

fn library(rules: &RuleSet, ids: &Ids, source_text: &str) -> serde_json::Result<Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let rules_json = serde_json::to_vec(rules)?;
    let mut m = common(
        rules,
        "Library",
        &ids.library(),
        &format!("{} - rules", rules.contract.title),
    );
    m.insert(
        "type".into(),
        cc(
            "http://terminology.hl7.org/CodeSystem/library-type",
            "logic-library",
            Some("Logic Library"),
        ),
    );
    m.insert(
        "description".into(),
        json!(format!(
            "Executable rules ({FORMAT}) of the contract {} version {}, compiled from its definition, which is attached as the second content.",
            rules.contract.id, rules.contract.version
        )),
    );
    m.insert(
        "relatedArtifact".into(),
        Value::Array(
            rules
                .valuesets
                .keys()
                .map(|n| json!({"type": "depends-on", "resource": format!("{}|{}", canonical("ValueSet", &ids.valueset(n)), rules.contract.version)}))
                .collect(),
        ),
    );
    m.insert(
        "content".into(),
        json!([
            {"contentType": CONTENT_TYPE, "title": FORMAT, "data": b64.encode(rules_json)},
            {"contentType": "application/toml", "title": "vbc-contract/1 definition", "data": b64.encode(source_text.as_bytes())}
        ]),
    );
    Ok(Value::Object(m))
}

fn population(code: &str, expression: String, description: &str) -> Value {
    json!({
        "code": cc(POPULATION, code, None),
        "description": description,
        "criteria": {"language": CONTENT_TYPE.split(';').next().unwrap_or(CONTENT_TYPE), "expression": expression}
    })
}

fn outcome_measure(rules: &RuleSet, ids: &Ids, o: &OutcomeDef) -> Value {
    let c = &rules.contract;
    let mut m = common(rules, "Measure", &ids.outcome(&o.id), &o.title);
    m.insert(
        "description".into(),
        json!(format!(
            "Outcome '{}' of {} ({}), rule kind {}.",
            o.id,
            c.title,
            c.version,
            o.rule.kind()
        )),
    );
    m.insert(
        "effectivePeriod".into(),
        json!({"start": c.start, "end": c.end}),
    );
    m.insert(
        "library".into(),
        json!([format!(
            "{}|{}",
            canonical("Library", &ids.library()),
            c.version
        )]),
    );
    m.insert(
        "scoring".into(),
        cc(
            "http://terminology.hl7.org/CodeSystem/measure-scoring",
            &o.scoring,
            None,
        ),
    );
    m.insert(
        "improvementNotation".into(),
        cc(
            "http://terminology.hl7.org/CodeSystem/measure-improvement-notation",
            &o.improvement,
            None,
        ),
    );
    let e = |s: &str| format!("outcome('{}').{s}", o.id);
    let pops = if o.scoring == "continuous-variable" {
        vec![
            population(
                "initial-population",
                "cohort.initial-population".into(),
                "New users with an index date in the intake period",
            ),
            population(
                "measure-population",
                "cohort.eligible".into(),
                "Eligible at index",
            ),
            population(
                "measure-population-exclusion",
                e("excluded"),
                "Excluded (death, exclusion diagnosis, switch)",
            ),
            population(
                "measure-observation",
                e("value"),
                "The patient's value (event count)",
            ),
        ]
    } else {
        vec![
            population(
                "initial-population",
                "cohort.initial-population".into(),
                "New users with an index date in the intake period",
            ),
            population("denominator", "cohort.eligible".into(), "Eligible at index"),
            population(
                "denominator-exclusion",
                e("excluded"),
                "Excluded (death, exclusion diagnosis, switch)",
            ),
            population("numerator", e("met"), "Outcome met"),
            population(
                "numerator-exclusion",
                e("missing-data"),
                "Window closed without a usable measurement",
            ),
        ]
    };
    m.insert("group".into(), json!([{"id": o.id, "population": pops}]));
    Value::Object(m)
}

fn contract_measure(rules: &RuleSet, ids: &Ids) -> Value {
    let c = &rules.contract;
    let mut m = common(rules, "Measure", &ids.contract(), &c.title);
    m.insert(
        "meta".into(),
        json!({"profile": [format!("{VBPR}/StructureDefinition/vbp-measure")]}),
    );
    let mut ext = Vec::new();
    if let Some((code, display)) = c.lob.as_deref().and_then(lob_code) {
        ext.push(json!({"url": format!("{VBPR}/StructureDefinition/lob"), "valueCodeableConcept": cc("https://nahdo.org/sopt", code, Some(display))}));
    }
    if let Some(h) = &c.hcplan {
        ext.push(json!({"url": format!("{VBPR}/StructureDefinition/program-model"), "extension": [
            {"url": "hcplan", "valueCodeableConcept": cc("http://terminology.hl7.org/CodeSystem/hcp-lan-apm-framework", h, Some(&format!("Category {h}")))}
        ]}));
    }
    let mut streams: Vec<&str> = Vec::new();
    for p in &rules.payments {
        if !streams.contains(&p.stream.as_str()) {
            streams.push(&p.stream);
        }
    }
    for s in streams {
        let system = stream_system(s);
        ext.push(
            json!({"url": format!("{VBPR}/StructureDefinition/payment-stream"), "extension": [
                {"url": "type", "valueCodeableConcept": cc(&system, s, None)}
            ]}),
        );
    }
    if !ext.is_empty() {
        m.insert("extension".into(), Value::Array(ext));
    }
    m.insert(
        "identifier".into(),
        json!([{"use": "official", "system": format!("{CANONICAL_BASE}/contract-id"), "value": c.id}]),
    );
    let mut desc = c.description.clone().unwrap_or_else(|| c.title.clone());
    if let Some(s) = &c.source {
        desc.push_str(&format!(" Source: {s}."));
    }
    m.insert("description".into(), json!(desc));
    m.insert(
        "author".into(),
        json!([{"name": c.manufacturer.name}, {"name": c.payer.name}]),
    );
    m.insert(
        "effectivePeriod".into(),
        json!({"start": c.start, "end": c.end}),
    );
    let mut usage = format!(
        "Parties: payer {}, manufacturer {}. Currency {}.",
        c.payer.name, c.manufacturer.name, c.currency
    );
    if let Some(p) = &c.unit_price {
        usage.push_str(&format!(" Unit price {p} {}.", c.currency));
    }
    if let Some(p) = &c.pack_price {
        usage.push_str(&format!(
            " Price per dispense or administration {p} {}.",
            c.currency
        ));
    }
    for p in &rules.payments {
        let on = if p.outcomes.is_empty() {
            "every member".to_string()
        } else {
            p.outcomes.join(", ")
        };
        usage.push_str(&format!(" Payment term {} ({}) on {on}.", p.kind, p.stream));
    }
    m.insert("usage".into(), json!(usage));
    m.insert(
        "library".into(),
        json!([format!(
            "{}|{}",
            canonical("Library", &ids.library()),
            c.version
        )]),
    );
    m.insert(
        "relatedArtifact".into(),
        Value::Array(
            rules
                .reported()
                .map(|o| {
                    json!({
                        "extension": [
                            {"url": format!("{VBPR}/StructureDefinition/weight"), "valueDecimal": o.weight.parse::<serde_json::Number>().unwrap_or_else(|_| serde_json::Number::from(1))},
                            {"url": format!("{VBPR}/StructureDefinition/contractual-status"), "valueCodeableConcept": cc(&format!("{VBPR}/CodeSystem/measure-contractual-status"), &o.status, None)}
                        ],
                        "type": "composed-of",
                        "display": o.title,
                        "resource": format!("{}|{}", canonical("Measure", &ids.outcome(&o.id)), c.version)
                    })
                })
                .collect(),
        ),
    );
    Value::Object(m)
}

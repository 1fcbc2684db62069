//! The search parameter registry: the R4 SearchParameter definitions (and the Da Vinci VBPR ones)
//! shipped in `profiles/search-parameters.json`, compiled once, per resource type; the Patient
//! compartment; and the summary elements `_summary=true` keeps.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::path::{compile, Expr};
use crate::error::{FhirError, Result};
use crate::fhir::resource_types::RESOURCE_TYPES;

const PARAMS_JSON: &str = include_str!("../../profiles/search-parameters.json");
const SUMMARY_JSON: &str = include_str!("../../profiles/r4-summary-elements.json");
const COMPARTMENT_JSON: &str = include_str!("../../profiles/compartment-patient.json");

/// The resource types with their own search parameters (beyond the common ones).
pub const SEARCHABLE_TYPES: &[&str] = &[
    "Patient",
    "Observation",
    "MedicationDispense",
    "MedicationRequest",
    "MedicationAdministration",
    "Medication",
    "Encounter",
    "Condition",
    "Procedure",
    "Coverage",
    "Organization",
    "Practitioner",
    "Group",
    "List",
    "Measure",
    "MeasureReport",
    "Library",
    "ValueSet",
    "CodeSystem",
    "AuditEvent",
    "Provenance",
    "OperationDefinition",
];

/// A search parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    /// token
    Token,
    /// string
    String,
    /// date
    Date,
    /// number
    Number,
    /// quantity
    Quantity,
    /// reference
    Reference,
    /// uri
    Uri,
    /// composite
    Composite,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "token" => ParamType::Token,
            "string" => ParamType::String,
            "date" => ParamType::Date,
            "number" => ParamType::Number,
            "quantity" => ParamType::Quantity,
            "reference" => ParamType::Reference,
            "uri" => ParamType::Uri,
            "composite" => ParamType::Composite,
            _ => return None,
        })
    }

    /// The FHIR code of the type.
    pub fn code(self) -> &'static str {
        match self {
            ParamType::Token => "token",
            ParamType::String => "string",
            ParamType::Date => "date",
            ParamType::Number => "number",
            ParamType::Quantity => "quantity",
            ParamType::Reference => "reference",
            ParamType::Uri => "uri",
            ParamType::Composite => "composite",
        }
    }
}

/// One component of a composite parameter.
#[derive(Debug, Clone)]
pub struct Component {
    /// The component's type.
    pub kind: ParamType,
    /// Its expression, relative to the composite's nodes.
    pub expr: Expr,
}

/// A compiled search parameter.
#[derive(Debug, Clone)]
pub struct ParamDef {
    /// The name used in queries.
    pub code: String,
    /// Canonical URL of the definition.
    pub url: String,
    /// Its type.
    pub kind: ParamType,
    /// The compiled expression.
    pub expr: Expr,
    /// Allowed reference target types.
    pub targets: Vec<String>,
    /// Composite components.
    pub components: Vec<Component>,
    /// The definition's description (first line), for the CapabilityStatement.
    pub description: String,
}

/// All parameters, per resource type.
pub struct Registry {
    by_type: HashMap<String, BTreeMap<String, Arc<ParamDef>>>,
    aliases: HashMap<(String, String), String>,
    compartment: HashMap<String, Vec<String>>,
    summary: HashMap<String, HashSet<String>>,
    mandatory: HashMap<String, Vec<String>>,
    /// The server's base URL (absolute references to it are indexed as `Type/id`).
    pub base_url: String,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Registry {
    /// Load and compile the shipped definitions. `base_url` is this server's base.
    pub fn load(base_url: &str) -> Result<Self> {
        let bad = |what: &str, e: String| FhirError::Storage(format!("{what}: {e}"));
        let doc: Value = serde_json::from_str(PARAMS_JSON)
            .map_err(|e| bad("search-parameters.json", e.to_string()))?;
        let mut by_type: HashMap<String, BTreeMap<String, Arc<ParamDef>>> = HashMap::new();
        let mut aliases = HashMap::new();
        let mut common: Vec<Arc<ParamDef>> = Vec::new();
        let params = doc["parameters"].as_array().cloned().unwrap_or_default();
        let by_url: HashMap<String, &Value> = params
            .iter()
            .filter_map(|p| Some((p["url"].as_str()?.to_string(), p)))
            .collect();
        for p in &params {
            let (Some(code), Some(kind), Some(expr_text)) = (
                p["code"].as_str(),
                p["type"].as_str().and_then(ParamType::parse),
                p["expression"].as_str(),
            ) else {
                continue;
            };
            if code == "phonetic" {
                // phonetic matching is not implemented; indexing plain names under it would
                // pretend otherwise
                continue;
            }
            let Some(expr) = compile(expr_text) else {
                tracing::warn!(
                    param = code,
                    expression = expr_text,
                    "search parameter not supported: expression outside the FHIRPath subset"
                );
                continue;
            };
            let mut components = Vec::new();
            let mut ok = true;
            for c in p["component"].as_array().into_iter().flatten() {
                let ckind = c["type"]
                    .as_str()
                    .or_else(|| {
                        by_url.get(c["definition"].as_str().unwrap_or(""))?["type"].as_str()
                    })
                    .and_then(ParamType::parse);
                match (ckind, c["expression"].as_str().and_then(compile)) {
                    (Some(k), Some(e)) => components.push(Component { kind: k, expr: e }),
                    _ => ok = false,
                }
            }
            if !ok || (kind == ParamType::Composite && components.len() != 2) {
                continue;
            }
            let description = p["description"]
                .as_str()
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            let def = Arc::new(ParamDef {
                code: code.to_string(),
                url: p["url"].as_str().unwrap_or("").to_string(),
                kind,
                expr,
                targets: strings(&p["target"]),
                components,
                description,
            });
            for base in strings(&p["base"]) {
                if base == "Resource" || base == "DomainResource" {
                    common.push(def.clone());
                    continue;
                }
                by_type
                    .entry(base.clone())
                    .or_default()
                    .insert(code.to_string(), def.clone());
                for alias in strings(&p["aliases"]) {
                    aliases.insert((base.clone(), alias), code.to_string());
                }
            }
        }
        for t in RESOURCE_TYPES {
            let m = by_type.entry(t.to_string()).or_default();
            for c in &common {
                if c.code.starts_with('_') {
                    m.entry(c.code.clone()).or_insert_with(|| c.clone());
                }
            }
        }
        let summary_doc: Value = serde_json::from_str(SUMMARY_JSON)
            .map_err(|e| bad("r4-summary-elements.json", e.to_string()))?;
        let summary = summary_doc["types"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), strings(v).into_iter().collect()))
                    .collect()
            })
            .unwrap_or_default();
        // element names (`status`, `value`), so subsetting does not re-derive them per resource
        let mandatory = summary_doc["mandatory"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(t, v)| {
                        let names = strings(v)
                            .iter()
                            .filter_map(|p| p.strip_prefix(&format!("{t}.")))
                            .map(|n| n.trim_end_matches("[x]").to_string())
                            .collect();
                        (t.clone(), names)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let comp_doc: Value = serde_json::from_str(COMPARTMENT_JSON)
            .map_err(|e| bad("compartment-patient.json", e.to_string()))?;
        let compartment = comp_doc["resources"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), strings(v))).collect())
            .unwrap_or_default();
        Ok(Registry {
            by_type,
            aliases,
            compartment,
            summary,
            mandatory,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// A parameter of a type by name (or VBPR alias).
    pub fn param(&self, rtype: &str, code: &str) -> Option<&Arc<ParamDef>> {
        let m = self.by_type.get(rtype)?;
        m.get(code).or_else(|| {
            let real = self.aliases.get(&(rtype.to_string(), code.to_string()))?;
            m.get(real)
        })
    }

    /// All parameters of a type, by name.
    pub fn params(&self, rtype: &str) -> impl Iterator<Item = &Arc<ParamDef>> {
        self.by_type.get(rtype).into_iter().flat_map(|m| m.values())
    }

    /// Aliases of a type's parameters: (alias, real name).
    pub fn aliases(&self, rtype: &str) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .aliases
            .iter()
            .filter(|((t, _), _)| t == rtype)
            .map(|((_, a), r)| (a.clone(), r.clone()))
            .collect();
        v.sort();
        v
    }

    /// The Patient-compartment parameters of a type (empty when not in the compartment).
    pub fn compartment_params(&self, rtype: &str) -> &[String] {
        self.compartment
            .get(rtype)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Types in the Patient compartment.
    pub fn compartment_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.compartment.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// Whether an element path (`Observation.code`, `Observation.value[x]`) is a summary element.
    pub fn is_summary(&self, rtype: &str, path: &str) -> bool {
        self.summary.get(rtype).is_some_and(|s| s.contains(path))
    }

    /// Names of the top-level elements a resource must have (kept by `_elements`), without
    /// `[x]`.
    pub fn mandatory(&self, rtype: &str) -> &[String] {
        self.mandatory.get(rtype).map(Vec::as_slice).unwrap_or(&[])
    }
}

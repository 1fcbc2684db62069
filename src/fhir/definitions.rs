//! The definitions the validator works from, shipped in `profiles/` and `valuesets/` and compiled
//! into the binary: the R4 element table (cardinality, types, required bindings, primitive
//! formats), the required-binding ValueSets, the project's ValueSets and its profiles.

use std::collections::{HashMap, HashSet};

use regex::Regex;
use serde_json::Value;

use crate::error::{FhirError, Result};

const ELEMENTS: &str = include_str!("../../profiles/r4-elements.json");
const REQUIRED_VALUESETS: &str = include_str!("../../valuesets/r4-required-valuesets.json");
const PROJECT_VALUESETS: &[&str] = &[include_str!(
    "../../valuesets/ValueSet-vbc-outcome-labs.json"
)];
const PROJECT_PROFILES: &[&str] = &[
    include_str!("../../profiles/StructureDefinition-vbc-outcome-observation.json"),
    include_str!("../../profiles/StructureDefinition-vbc-medication-dispense.json"),
    include_str!("../../profiles/StructureDefinition-vbp-performance-measurereport.json"),
    include_str!("../../profiles/StructureDefinition-vbp-quality-measurereport.json"),
];

/// URL of the ValueSet whose codes make an Observation outcome-relevant.
pub const OUTCOME_LABS_VS: &str = "http://vbc-server.example.org/fhir/ValueSet/vbc-outcome-labs";
/// URL of the outcome Observation profile.
pub const OUTCOME_OBSERVATION_PROFILE: &str =
    "http://vbc-server.example.org/fhir/StructureDefinition/vbc-outcome-observation";

/// Kind of a FHIR type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A resource.
    Resource,
    /// A complex datatype (Quantity, Reference, ...).
    Complex,
    /// A primitive datatype (string, date, ...).
    Primitive,
}

/// One element definition from a snapshot.
#[derive(Debug, Clone)]
pub struct ElementDef {
    /// Full path, e.g. `Observation.value[x]`.
    pub path: String,
    /// JSON property name without `[x]`.
    pub name: String,
    /// True for choice elements (`value[x]`).
    pub choice: bool,
    /// Minimum cardinality.
    pub min: u32,
    /// Maximum cardinality (None for `*`).
    pub max: Option<u32>,
    /// Allowed type codes.
    pub types: Vec<String>,
    /// Required ValueSet binding.
    pub binding: Option<String>,
    /// Allowed reference targets (resource type names).
    pub targets: Vec<String>,
    /// `contentReference` target path.
    pub content_ref: Option<String>,
}

/// A type with its elements grouped by parent path.
#[derive(Debug)]
pub struct TypeDef {
    /// Resource, complex or primitive.
    pub kind: Kind,
    /// Abstract types cannot be instantiated.
    pub is_abstract: bool,
    /// Anchored value regex for primitives.
    pub regex: Option<Regex>,
    /// Children of each parent path.
    pub children: HashMap<String, Vec<ElementDef>>,
}

/// A cardinality constraint of a profile.
#[derive(Debug, Clone)]
pub struct ProfileRule {
    /// Element path (may end in `[x]`).
    pub path: String,
    /// Minimum cardinality (per parent instance).
    pub min: Option<u32>,
    /// Maximum cardinality (None when unconstrained, Some(0) forbids).
    pub max: Option<u32>,
    /// Allowed reference targets.
    pub targets: Vec<String>,
    /// Constraints of the form `a.exists() or b.exists()`: each names the child elements of which
    /// at least one must be present, with the constraint's key and human text.
    pub one_of: Vec<OneOf>,
}

/// An element constraint requiring at least one of several child elements.
#[derive(Debug, Clone)]
pub struct OneOf {
    /// Constraint key (e.g. `vbc-obs-1`).
    pub key: String,
    /// What the constraint requires, in words.
    pub human: String,
    /// Child element names (choice elements without `[x]`).
    pub children: Vec<String>,
}

/// Read a constraint expression of the form `a.exists() or b.exists() ...` (the only FHIRPath
/// form the shipped profiles use); None for any other expression.
fn one_of(c: &Value) -> Option<OneOf> {
    let expr = c["expression"].as_str()?;
    let children: Option<Vec<String>> = expr
        .split(" or ")
        .map(|part| {
            let name = part.trim().strip_suffix(".exists()")?;
            name.chars()
                .all(|ch| ch.is_ascii_alphanumeric())
                .then(|| name.to_string())
        })
        .collect();
    Some(OneOf {
        key: c["key"].as_str()?.to_string(),
        human: c["human"].as_str().unwrap_or(expr).to_string(),
        children: children?,
    })
}

/// A constraint profile shipped in `profiles/`.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Canonical URL.
    pub url: String,
    /// Resource type it constrains.
    pub rtype: String,
    /// Its differential rules.
    pub rules: Vec<ProfileRule>,
}

/// Everything the validator needs, loaded once.
pub struct Definitions {
    types: HashMap<String, TypeDef>,
    valuesets: HashMap<String, HashSet<(String, String)>>,
    profiles: HashMap<String, Profile>,
}

fn parse_max(v: &Value) -> Option<u32> {
    match v.as_str() {
        Some("*") | None => None,
        Some(s) => s.parse().ok(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The resource type a target profile constrains: its last segment when that is a resource
/// type, else the type a US Core profile is named after (`us-core-organization` ->
/// `Organization`).
fn profile_type(url: &str) -> String {
    let last = last_segment(url);
    if crate::fhir::resource_types::is_resource_type(&last) {
        return last;
    }
    let bare = last
        .strip_prefix("us-core-")
        .unwrap_or(&last)
        .replace('-', "");
    crate::fhir::resource_types::RESOURCE_TYPES
        .iter()
        .find(|t| t.eq_ignore_ascii_case(&bare))
        .map_or(last, |t| t.to_string())
}

fn last_segment(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_string()
}

fn load_types(doc: &Value) -> Result<HashMap<String, TypeDef>> {
    let types = doc["types"]
        .as_object()
        .ok_or_else(|| FhirError::Storage("element table has no types".into()))?;
    let mut out = HashMap::new();
    for (name, t) in types {
        let kind = match t["kind"].as_str() {
            Some("resource") => Kind::Resource,
            Some("primitive-type") => Kind::Primitive,
            _ => Kind::Complex,
        };
        let regex = t["regex"]
            .as_str()
            .and_then(|r| Regex::new(&format!("^(?:{r})$")).ok());
        let mut children: HashMap<String, Vec<ElementDef>> = HashMap::new();
        if let Some(elements) = t["elements"].as_object() {
            for (path, e) in elements {
                let Some((parent, last)) = path.rsplit_once('.') else {
                    continue;
                };
                let choice = last.ends_with("[x]");
                let def = ElementDef {
                    path: path.clone(),
                    name: last.trim_end_matches("[x]").to_string(),
                    choice,
                    min: e["min"].as_u64().unwrap_or(0) as u32,
                    max: parse_max(&e["max"]),
                    types: strings(&e["types"]),
                    binding: e["binding"].as_str().map(String::from),
                    targets: strings(&e["targets"]),
                    content_ref: e["contentReference"]
                        .as_str()
                        .map(|s| s.trim_start_matches('#').to_string()),
                };
                children.entry(parent.to_string()).or_default().push(def);
            }
        }
        out.insert(
            name.clone(),
            TypeDef {
                kind,
                is_abstract: t["abstract"].as_bool().unwrap_or(false),
                regex,
                children,
            },
        );
    }
    Ok(out)
}

fn add_valueset(map: &mut HashMap<String, HashSet<(String, String)>>, vs: &Value) {
    let Some(url) = vs["url"].as_str() else {
        return;
    };
    let mut codes = HashSet::new();
    if let Some(contains) = vs["expansion"]["contains"].as_array() {
        for c in contains {
            if let (Some(s), Some(code)) = (c["system"].as_str(), c["code"].as_str()) {
                codes.insert((s.to_string(), code.to_string()));
            }
        }
    }
    if let Some(includes) = vs["compose"]["include"].as_array() {
        for inc in includes {
            let system = inc["system"].as_str().unwrap_or_default();
            for c in inc["concept"].as_array().into_iter().flatten() {
                if let Some(code) = c["code"].as_str() {
                    codes.insert((system.to_string(), code.to_string()));
                }
            }
        }
    }
    map.insert(url.to_string(), codes);
}

fn load_profile(sd: &Value) -> Option<Profile> {
    let rules = sd["differential"]["element"]
        .as_array()?
        .iter()
        // slices (`extension:name`) are left to a slicing-aware validator: their cardinality
        // is not the cardinality of the element they slice
        .filter(|e| !e["id"].as_str().unwrap_or("").contains(':'))
        .filter_map(|e| {
            let path = e["path"].as_str()?.to_string();
            let targets = e["type"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|t| strings(&t["targetProfile"]))
                .map(|u| profile_type(&u))
                .collect();
            let one_of = e["constraint"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(one_of)
                .collect();
            Some(ProfileRule {
                min: e["min"].as_u64().map(|m| m as u32),
                max: e.get("max").and_then(parse_max),
                path,
                targets,
                one_of,
            })
        })
        .collect();
    Some(Profile {
        url: sd["url"].as_str()?.to_string(),
        rtype: sd["type"].as_str()?.to_string(),
        rules,
    })
}

impl Definitions {
    /// The definitions, loaded once per process and shared (validator and search engine).
    pub fn shared() -> Result<std::sync::Arc<Self>> {
        static SHARED: once_cell::sync::OnceCell<std::sync::Arc<Definitions>> =
            once_cell::sync::OnceCell::new();
        SHARED
            .get_or_try_init(|| Definitions::load().map(std::sync::Arc::new))
            .cloned()
    }

    /// Load the definitions compiled into the binary.
    pub fn load() -> Result<Self> {
        let parse = |s: &str| -> Result<Value> {
            serde_json::from_str(s)
                .map_err(|e| FhirError::Storage(format!("bad shipped definition: {e}")))
        };
        let types = load_types(&parse(ELEMENTS)?)?;
        let mut valuesets = HashMap::new();
        let bundle = parse(REQUIRED_VALUESETS)?;
        for entry in bundle["entry"].as_array().into_iter().flatten() {
            add_valueset(&mut valuesets, &entry["resource"]);
        }
        for vs in PROJECT_VALUESETS {
            add_valueset(&mut valuesets, &parse(vs)?);
        }
        let mut profiles = HashMap::new();
        for sd in PROJECT_PROFILES {
            if let Some(p) = load_profile(&parse(sd)?) {
                profiles.insert(p.url.clone(), p);
            }
        }
        Ok(Definitions {
            types,
            valuesets,
            profiles,
        })
    }

    /// A type by name.
    pub fn get_type(&self, name: &str) -> Option<&TypeDef> {
        self.types.get(name)
    }

    /// Codes of a ValueSet, if the server can enumerate it.
    pub fn valueset(&self, url: &str) -> Option<&HashSet<(String, String)>> {
        self.valuesets.get(url.split('|').next().unwrap_or(url))
    }

    /// A shipped profile by canonical URL (a `|version` suffix is ignored).
    pub fn profile(&self, url: &str) -> Option<&Profile> {
        self.profiles.get(url.split('|').next().unwrap_or(url))
    }

    /// All shipped profiles.
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_definitions_load() {
        let d = Definitions::load().expect("loads");
        let obs = d.get_type("Observation").expect("Observation");
        let status = obs.children["Observation"]
            .iter()
            .find(|e| e.name == "status")
            .expect("status");
        assert_eq!((status.min, status.max), (1, Some(1)));
        let vs = d
            .valueset(status.binding.as_deref().expect("bound"))
            .expect("enumerable");
        assert!(vs.contains(&(
            "http://hl7.org/fhir/observation-status".into(),
            "amended".into()
        )));
        assert!(d
            .valueset(OUTCOME_LABS_VS)
            .expect("labs")
            .contains(&("http://loinc.org".into(), "4548-4".into())));
        assert!(d.profile(OUTCOME_OBSERVATION_PROFILE).is_some());
        assert!(d
            .get_type("date")
            .and_then(|t| t.regex.as_ref())
            .is_some_and(|r| !r.is_match("2024-13-01")));
    }
}

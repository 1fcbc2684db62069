//! Validation beyond fhirbolt's structure checks: unknown elements, cardinality, types, primitive
//! formats, required bindings, reference syntax and targets, and the project's profiles. Every
//! problem is reported, each with its FHIRPath location.

use serde_json::{Map, Value};

use crate::fhir::definitions::{
    Definitions, ElementDef, Kind, TypeDef, OUTCOME_LABS_VS, OUTCOME_OBSERVATION_PROFILE,
};
use crate::fhir::outcome::Issue;
use crate::fhir::references::{classify, valid_id, RefKind};
use crate::fhir::resource_types::is_resource_type;

/// Where a resource is being validated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// Inside a transaction: conditional references (`Type?query`) are allowed.
    pub in_transaction: bool,
    /// Inside a Bundle: the resource type behind each entry's fullUrl, so that references to
    /// `urn:uuid:`/`urn:oid:` fullUrls are checked against the allowed target types too.
    pub full_urls: Option<&'a std::collections::HashMap<String, String>>,
}

/// The validator, over the shipped definitions.
pub struct Validator {
    defs: std::sync::Arc<Definitions>,
}

const SYSTEM_TYPE_PREFIX: &str = "http://hl7.org/fhirpath/System.";

fn is_array_expected(def: &ElementDef) -> bool {
    def.max.is_none_or(|m| m > 1)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Calendar check beyond the regex (the regex allows 2023-02-31).
fn valid_calendar_day(s: &str) -> bool {
    let parts: Vec<&str> = s.get(..10.min(s.len())).unwrap_or("").split('-').collect();
    if let [y, m, d] = parts.as_slice() {
        if let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i32>(), m.parse::<u32>(), d.parse::<u32>()) {
            return d >= 1 && d <= days_in_month(y, m);
        }
    }
    true
}

impl Validator {
    /// Build a validator over the definitions compiled into the binary.
    pub fn new() -> crate::error::Result<Self> {
        Ok(Validator {
            defs: Definitions::shared()?,
        })
    }

    /// The definitions in use.
    pub fn definitions(&self) -> &Definitions {
        &self.defs
    }

    /// Validate one resource; returns all issues (errors and warnings).
    pub fn validate(&self, resource: &Value, ctx: Context<'_>) -> Vec<Issue> {
        let mut issues = Vec::new();
        let rt = resource["resourceType"]
            .as_str()
            .unwrap_or("Resource")
            .to_string();
        self.resource(resource, &rt, ctx, &mut issues);
        crate::fhir::invariants::check(resource, &rt, &mut issues);
        if issues.iter().all(|i| !i.is_error()) {
            if let Some(e) = crate::fhir::format::structure_error(resource) {
                issues.push(
                    Issue::error("structure", format!("invalid {rt} structure: {e}")).at(&rt),
                );
            }
        }
        if issues.iter().all(|i| !i.is_error()) {
            self.profiles(resource, &rt, &mut issues);
        }
        issues
    }

    fn resource(&self, v: &Value, expr: &str, ctx: Context<'_>, issues: &mut Vec<Issue>) {
        let Some(obj) = v.as_object() else {
            issues.push(Issue::error("structure", "a resource must be a JSON object").at(expr));
            return;
        };
        let rt = match obj.get("resourceType").and_then(Value::as_str) {
            Some(rt) if is_resource_type(rt) => rt,
            Some(rt) => {
                issues.push(
                    Issue::error("structure", format!("unknown resourceType '{rt}'")).at(expr),
                );
                return;
            }
            None => {
                issues.push(Issue::error("required", "resourceType is missing").at(expr));
                return;
            }
        };
        let Some(tdef) = self.defs.get_type(rt) else {
            issues.push(Issue::error("not-supported", format!("no definition for {rt}")).at(expr));
            return;
        };
        if let Some(id) = obj.get("id") {
            if !id.as_str().is_some_and(valid_id) {
                issues.push(
                    Issue::error(
                        "value",
                        "id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'",
                    )
                    .at(format!("{expr}.id")),
                );
            }
        }
        self.object(obj, tdef, rt, expr, true, ctx, issues);
    }

    #[allow(clippy::too_many_arguments)]
    fn object(
        &self,
        obj: &Map<String, Value>,
        tdef: &TypeDef,
        prefix: &str,
        expr: &str,
        is_root: bool,
        ctx: Context<'_>,
        issues: &mut Vec<Issue>,
    ) {
        let empty = Vec::new();
        let children = tdef.children.get(prefix).unwrap_or(&empty);
        if obj.is_empty() {
            issues.push(
                Issue::error("structure", "an element must have a value or children").at(expr),
            );
        }
        // keys that match no element
        // one pass over the keys: which element each belongs to
        let mut slots: Vec<Slot> = vec![Slot::default(); children.len()];
        for (key, val) in obj {
            if is_root && key == "resourceType" {
                continue;
            }
            let (name, companion) = match key.strip_prefix('_') {
                Some(n) => (n, true),
                None => (key.as_str(), false),
            };
            let Some((idx, ty)) = resolve(children, name) else {
                issues.push(
                    Issue::error("structure", format!("unknown element '{key}'"))
                        .at(format!("{expr}.{key}")),
                );
                continue;
            };
            let slot = &mut slots[idx];
            if companion {
                slot.ext = Some(val);
                slot.ty.get_or_insert(ty);
            } else {
                if slot.value.is_some() {
                    slot.several = true;
                }
                slot.value = Some(val);
                slot.ty = Some(ty);
            }
        }
        for (def, slot) in children.iter().zip(slots) {
            let here = || format!("{expr}.{}", def.name);
            let Some(ty) = slot.ty else {
                if def.min > 0 {
                    issues.push(
                        Issue::error(
                            "required",
                            format!("{} is required (minimum cardinality {})", def.path, def.min),
                        )
                        .at(here()),
                    );
                }
                continue;
            };
            if slot.several {
                issues.push(
                    Issue::error(
                        "structure",
                        format!("{} has more than one type present", def.path),
                    )
                    .at(here()),
                );
            }
            let val = slot.value.unwrap_or(&Value::Null);
            let count = match (val, slot.ext) {
                (Value::Array(a), _) => a.len(),
                (Value::Null, Some(Value::Array(a))) => a.len(),
                _ => 1,
            };
            if (count as u32) < def.min {
                issues.push(
                    Issue::error(
                        "required",
                        format!("{} is required (minimum cardinality {})", def.path, def.min),
                    )
                    .at(here()),
                );
            }
            let is_array =
                val.is_array() || (val.is_null() && slot.ext.is_some_and(Value::is_array));
            if is_array != is_array_expected(def) {
                let msg = if is_array_expected(def) {
                    format!("{} must be a JSON array", def.path)
                } else {
                    format!("{} must not be an array (maximum cardinality 1)", def.path)
                };
                issues.push(Issue::error("structure", msg).at(here()));
                continue;
            }
            if def.max.is_some_and(|max| count as u32 > max) {
                issues.push(
                    Issue::error(
                        "structure",
                        format!(
                            "{} allows at most {} values",
                            def.path,
                            def.max.unwrap_or(0)
                        ),
                    )
                    .at(here()),
                );
            }
            let at = |index: Option<usize>| At {
                base: expr,
                name: &def.name,
                choice: def.choice.then_some(ty),
                index,
            };
            match val {
                Value::Array(items) if items.is_empty() => {
                    issues.push(
                        Issue::error(
                            "structure",
                            format!(
                                "{} is an empty array; leave the element out instead",
                                def.path
                            ),
                        )
                        .at(here()),
                    );
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if !item.is_null() {
                            self.value(item, ty, def, tdef, &at(Some(i)), ctx, issues);
                        }
                    }
                }
                Value::Null => {}
                item => self.value(item, ty, def, tdef, &at(None), ctx, issues),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn value(
        &self,
        v: &Value,
        ty: &str,
        def: &ElementDef,
        owner: &TypeDef,
        at: &At,
        ctx: Context<'_>,
        issues: &mut Vec<Issue>,
    ) {
        if let Some(target) = &def.content_ref {
            let expr = &at.render();
            match v.as_object() {
                Some(o) => self.object(o, owner, target, expr, false, ctx, issues),
                None => issues.push(Issue::error("structure", "expected an object").at(expr)),
            }
            return;
        }
        if ty == "Resource" {
            self.resource(v, &at.render(), ctx, issues);
            return;
        }
        if ty == "BackboneElement" || (ty == "Element" && owner.children.contains_key(&def.path)) {
            let expr = &at.render();
            match v.as_object() {
                Some(o) => self.object(o, owner, &def.path, expr, false, ctx, issues),
                None => issues.push(
                    Issue::error("structure", format!("{} must be an object", def.path)).at(expr),
                ),
            }
            return;
        }
        if let Some(system) = ty.strip_prefix(SYSTEM_TYPE_PREFIX) {
            if !(v.is_string()
                || (system == "Boolean" && v.is_boolean())
                || (matches!(system, "Integer" | "Decimal") && v.is_number()))
            {
                issues.push(
                    Issue::error("structure", format!("{} must be a {system}", def.path))
                        .at(at.render()),
                );
            }
            return;
        }
        let Some(tdef) = self.defs.get_type(ty) else {
            return;
        };
        match tdef.kind {
            Kind::Primitive => self.primitive(v, ty, tdef, def, at, issues),
            _ => {
                let expr = &at.render();
                let Some(o) = v.as_object() else {
                    issues.push(
                        Issue::error(
                            "structure",
                            format!("{} must be an object ({ty})", def.path),
                        )
                        .at(expr),
                    );
                    return;
                };
                self.object(o, tdef, ty, expr, false, ctx, issues);
                match ty {
                    "Reference" => self.reference(o, def, expr, ctx, issues),
                    "Coding" | "CodeableConcept" => self.coded(o, ty, def, expr, issues),
                    _ => {}
                }
            }
        }
    }

    fn primitive(
        &self,
        v: &Value,
        ty: &str,
        tdef: &TypeDef,
        def: &ElementDef,
        at: &At,
        issues: &mut Vec<Issue>,
    ) {
        let text = match (ty, v) {
            ("boolean", Value::Bool(b)) => b.to_string(),
            ("integer" | "positiveInt" | "unsignedInt" | "decimal", Value::Number(n)) => {
                n.to_string()
            }
            ("boolean" | "integer" | "positiveInt" | "unsignedInt" | "decimal", _) => {
                issues.push(
                    Issue::error(
                        "structure",
                        format!(
                            "{} must be a JSON {}",
                            def.path,
                            if ty == "boolean" { "boolean" } else { "number" }
                        ),
                    )
                    .at(at.render()),
                );
                return;
            }
            (_, Value::String(s)) => s.clone(),
            _ => {
                issues.push(
                    Issue::error(
                        "structure",
                        format!("{} ({ty}) must be a JSON string", def.path),
                    )
                    .at(at.render()),
                );
                return;
            }
        };
        if text
            .chars()
            .any(|c| (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r'))
        {
            issues.push(
                Issue::error(
                    "value",
                    format!(
                        "{} contains control characters, which FHIR strings may not",
                        def.path
                    ),
                )
                .at(at.render()),
            );
            return;
        }
        let ok = tdef.regex.as_ref().is_none_or(|re| re.is_match(&text))
            && match ty {
                "date" | "dateTime" | "instant" => valid_calendar_day(&text),
                "integer" => text.parse::<i32>().is_ok(),
                "positiveInt" | "unsignedInt" => {
                    text.parse::<u32>().is_ok()
                        && text.parse::<i64>().is_ok_and(|n| n <= i32::MAX as i64)
                }
                _ => true,
            };
        if !ok {
            issues.push(
                Issue::error(
                    "value",
                    format!("'{}' is not a valid {ty}", truncate(&text)),
                )
                .at(at.render()),
            );
            return;
        }
        if ty == "code" {
            if let Some(vs) = def.binding.as_deref().and_then(|u| self.defs.valueset(u)) {
                if !vs.iter().any(|(_, c)| c == &text) {
                    issues.push(
                        Issue::error(
                            "code-invalid",
                            format!(
                                "'{}' is not in the required value set {}",
                                truncate(&text),
                                def.binding.as_deref().unwrap_or("")
                            ),
                        )
                        .at(at.render()),
                    );
                }
            }
        }
    }

    fn coded(
        &self,
        o: &Map<String, Value>,
        ty: &str,
        def: &ElementDef,
        expr: &str,
        issues: &mut Vec<Issue>,
    ) {
        let Some(url) = def.binding.as_deref() else {
            return;
        };
        let Some(vs) = self.defs.valueset(url) else {
            return;
        };
        let codings: Vec<&Value> = if ty == "Coding" {
            vec![]
        } else {
            o.get("coding")
                .and_then(Value::as_array)
                .map(|a| a.iter().collect())
                .unwrap_or_default()
        };
        let in_vs = |c: &Map<String, Value>| {
            let s = c.get("system").and_then(Value::as_str).unwrap_or_default();
            let code = c.get("code").and_then(Value::as_str).unwrap_or_default();
            vs.contains(&(s.to_string(), code.to_string()))
        };
        let ok = if ty == "Coding" {
            in_vs(o)
        } else {
            codings.iter().filter_map(|c| c.as_object()).any(in_vs)
        };
        if !ok {
            issues.push(
                Issue::error(
                    "code-invalid",
                    format!(
                        "{} needs a coding from the required value set {url}",
                        def.path
                    ),
                )
                .at(expr),
            );
        }
    }

    fn reference(
        &self,
        o: &Map<String, Value>,
        def: &ElementDef,
        expr: &str,
        ctx: Context<'_>,
        issues: &mut Vec<Issue>,
    ) {
        let Some(r) = o.get("reference").and_then(Value::as_str) else {
            return;
        };
        let at = format!("{expr}.reference");
        let rtype = match classify(r) {
            _ if ctx.full_urls.is_some_and(|m| m.contains_key(r)) => {
                ctx.full_urls.and_then(|m| m.get(r)).map(String::as_str)
            }
            RefKind::Relative { rtype, .. } => Some(rtype),
            RefKind::Conditional { rtype, .. } if ctx.in_transaction => Some(rtype),
            RefKind::Conditional { .. } => {
                issues.push(
                    Issue::error(
                        "value",
                        "conditional references are only allowed inside a transaction",
                    )
                    .at(at),
                );
                return;
            }
            RefKind::Invalid(why) => {
                issues.push(
                    Issue::error(
                        "value",
                        format!("invalid reference '{}': {why}", truncate(r)),
                    )
                    .at(at),
                );
                return;
            }
            _ => None,
        };
        if let Some(rt) = rtype {
            if !def.targets.is_empty() && !def.targets.iter().any(|t| t == rt || t == "Resource") {
                issues.push(
                    Issue::error(
                        "value",
                        format!(
                            "{} may not refer to {rt} (allowed: {})",
                            def.path,
                            def.targets.join(", ")
                        ),
                    )
                    .at(at),
                );
            }
        }
    }

    /// Apply shipped profiles: those the resource claims, plus the outcome-Observation profile for
    /// Observations coded with an outcome lab.
    fn profiles(&self, resource: &Value, rt: &str, issues: &mut Vec<Issue>) {
        let mut urls: Vec<String> = Vec::new();
        for p in resource["meta"]["profile"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if self.defs.profile(p).is_some() {
                urls.push(p.to_string());
            } else {
                issues.push(
                    Issue::warning("not-supported", format!("profile {p} is not known to this server; validated against the base definition")).at(format!("{rt}.meta.profile")),
                );
            }
        }
        if rt == "Observation"
            && self.is_outcome_lab(resource)
            && !urls
                .iter()
                .any(|u| u.starts_with(OUTCOME_OBSERVATION_PROFILE))
        {
            urls.push(OUTCOME_OBSERVATION_PROFILE.to_string());
        }
        for url in urls {
            let Some(profile) = self.defs.profile(&url) else {
                continue;
            };
            if profile.rtype != rt {
                issues.push(
                    Issue::error(
                        "invalid",
                        format!("profile {url} constrains {}, not {rt}", profile.rtype),
                    )
                    .at(format!("{rt}.meta.profile")),
                );
                continue;
            }
            for rule in &profile.rules {
                check_rule(resource, rule, &url, issues);
            }
        }
    }

    fn is_outcome_lab(&self, obs: &Value) -> bool {
        if matches!(
            obs["status"].as_str(),
            Some("cancelled" | "entered-in-error")
        ) {
            return false;
        }
        let Some(vs) = self.defs.valueset(OUTCOME_LABS_VS) else {
            return false;
        };
        obs["code"]["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                vs.contains(&(
                    c["system"].as_str().unwrap_or_default().to_string(),
                    c["code"].as_str().unwrap_or_default().to_string(),
                ))
            })
    }
}

/// Find the element (and the chosen type) a JSON property name belongs to.
fn resolve<'d>(children: &'d [ElementDef], key: &str) -> Option<(usize, &'d str)> {
    for (i, def) in children.iter().enumerate() {
        if def.choice {
            if let Some(suffix) = key.strip_prefix(def.name.as_str()) {
                if let Some(t) = def.types.iter().find(|t| type_suffix_matches(t, suffix)) {
                    return Some((i, t.as_str()));
                }
            }
        } else if def.name == key {
            return Some((i, def.types.first().map(String::as_str).unwrap_or("")));
        }
    }
    None
}

/// True when `suffix` is `ty` with its first letter capitalised (`Quantity`, `DateTime`).
fn type_suffix_matches(ty: &str, suffix: &str) -> bool {
    let mut a = ty.chars();
    let mut b = suffix.chars();
    match (a.next(), b.next()) {
        (Some(x), Some(y)) => x.to_ascii_uppercase() == y && a.as_str() == b.as_str(),
        _ => false,
    }
}

/// Which element an issue is about, rendered into a FHIRPath expression only when needed.
struct At<'a> {
    base: &'a str,
    name: &'a str,
    choice: Option<&'a str>,
    index: Option<usize>,
}

impl At<'_> {
    fn render(&self) -> String {
        let field = match self.choice {
            Some(ty) => format!("{}{}", self.name, capitalize(ty)),
            None => self.name.to_string(),
        };
        match self.index {
            Some(i) => format!("{}.{field}[{i}]", self.base),
            None => format!("{}.{field}", self.base),
        }
    }
}

/// The values found in an object for one element.
#[derive(Clone, Copy, Default)]
struct Slot<'v> {
    ty: Option<&'v str>,
    value: Option<&'v Value>,
    ext: Option<&'v Value>,
    several: bool,
}

/// Values of a (non-choice or choice) child element of an object.
fn child_values<'v>(obj: &'v Value, name: &str) -> Vec<(String, &'v Value)> {
    let Some(map) = obj.as_object() else {
        return vec![];
    };
    let mut out = Vec::new();
    if let Some(base) = name.strip_suffix("[x]") {
        for (k, v) in map {
            if k.starts_with(base) && k[base.len()..].starts_with(|c: char| c.is_ascii_uppercase())
            {
                out.push((k.clone(), v));
            }
        }
    } else if let Some(v) = map.get(name) {
        out.push((name.to_string(), v));
    }
    out
}

fn flatten(expr: String, v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| (format!("{expr}[{i}]"), x))
            .collect(),
        other => vec![(expr, other)],
    }
}

fn check_rule(
    resource: &Value,
    rule: &crate::fhir::definitions::ProfileRule,
    url: &str,
    issues: &mut Vec<Issue>,
) {
    let segments: Vec<&str> = rule.path.split('.').collect();
    if !rule.one_of.is_empty() {
        check_one_of(resource, &segments, rule, url, issues);
    }
    let Some((last, parents)) = segments[1..].split_last() else {
        return;
    };
    for (expr, node) in nodes_at(resource, &segments[..=parents.len()]) {
        let values: Vec<(String, &Value)> = child_values(node, last)
            .into_iter()
            .flat_map(|(k, c)| flatten(format!("{expr}.{k}"), c))
            .collect();
        let here = format!("{expr}.{}", last.trim_end_matches("[x]"));
        if let Some(min) = rule.min {
            if (values.len() as u32) < min {
                issues.push(
                    Issue::error(
                        "required",
                        format!("{} is required by profile {url}", rule.path),
                    )
                    .at(&here),
                );
            }
        }
        if let Some(max) = rule.max {
            if values.len() as u32 > max {
                issues.push(
                    Issue::error(
                        "structure",
                        format!("{} allows at most {max} by profile {url}", rule.path),
                    )
                    .at(&here),
                );
            }
        }
        if !rule.targets.is_empty() {
            for (e, v) in &values {
                if let Some(r) = v["reference"].as_str() {
                    if let RefKind::Relative { rtype, .. } = classify(r) {
                        if !rule.targets.iter().any(|t| t == rtype) {
                            issues.push(
                                Issue::error(
                                    "value",
                                    format!(
                                        "{} must refer to {} (profile {url})",
                                        rule.path,
                                        rule.targets.join(", ")
                                    ),
                                )
                                .at(format!("{e}.reference")),
                            );
                        }
                    }
                }
            }
        }
    }
}

/// The nodes an element path reaches, with their FHIRPath locations.
fn nodes_at<'v>(resource: &'v Value, segments: &[&str]) -> Vec<(String, &'v Value)> {
    let mut nodes: Vec<(String, &Value)> = vec![(segments[0].to_string(), resource)];
    for seg in &segments[1..] {
        nodes = nodes
            .into_iter()
            .flat_map(|(e, v)| {
                child_values(v, seg)
                    .into_iter()
                    .flat_map(move |(k, c)| flatten(format!("{e}.{k}"), c))
            })
            .collect();
    }
    nodes
}

/// Constraints requiring one of several children (`value.exists() or dataAbsentReason.exists()`).
fn check_one_of(
    resource: &Value,
    segments: &[&str],
    rule: &crate::fhir::definitions::ProfileRule,
    url: &str,
    issues: &mut Vec<Issue>,
) {
    for (expr, node) in nodes_at(resource, segments) {
        for c in &rule.one_of {
            let present = c.children.iter().any(|name| {
                !child_values(node, name).is_empty()
                    || !child_values(node, &format!("{name}[x]")).is_empty()
            });
            if !present {
                issues.push(
                    Issue::error(
                        "required",
                        format!("{}: {} (profile {url})", c.key, c.human),
                    )
                    .at(&expr),
                );
            }
        }
    }
}

fn truncate(s: &str) -> String {
    if s.len() <= 80 {
        s.to_string()
    } else {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(v: Value) -> Vec<Issue> {
        let val = Validator::new().expect("defs");
        val.validate(&v, Context::default())
            .into_iter()
            .filter(Issue::is_error)
            .collect()
    }

    fn exprs(issues: &[Issue]) -> Vec<String> {
        issues.iter().filter_map(|i| i.expression.clone()).collect()
    }

    #[test]
    fn valid_observation_passes() {
        let e = errors(json!({
            "resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2024-02-29T10:00:00+01:00",
            "valueQuantity": {"value": 7.2, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}
        }));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn reports_every_problem_with_location() {
        let e = errors(json!({
            "resourceType": "Observation",
            "status": "done",
            "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
            "subject": {"reference": "Nope/1"},
            "effectiveDateTime": "2024-02-30",
            "performer": {"reference": "Practitioner/x"},
            "bogus": true
        }));
        let x = exprs(&e);
        for want in [
            "Observation.status",
            "Observation.subject.reference",
            "Observation.effectiveDateTime",
            "Observation.performer",
            "Observation.bogus",
        ] {
            assert!(x.iter().any(|s| s == want), "missing {want} in {x:?}");
        }
    }

    #[test]
    fn missing_required_and_bad_targets() {
        let e = errors(
            json!({"resourceType": "Observation", "code": {"text": "x"}, "subject": {"reference": "Medication/m"}}),
        );
        let x = exprs(&e);
        assert!(x.contains(&"Observation.status".to_string()), "{x:?}");
        assert!(
            x.contains(&"Observation.subject.reference".to_string()),
            "{x:?}"
        );
    }

    #[test]
    fn outcome_lab_profile_applies_by_code() {
        let e = errors(json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}
        }));
        let x = exprs(&e);
        // value[x] or dataAbsentReason (vbc-obs-1) is reported on the Observation itself
        for want in [
            "Observation.subject",
            "Observation.effective",
            "Observation",
        ] {
            assert!(x.iter().any(|s| s == want), "missing {want} in {x:?}");
        }
        // entered-in-error lab results are not held to the profile
        let e = errors(json!({
            "resourceType": "Observation", "status": "entered-in-error",
            "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]}
        }));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn primitives_and_bindings_in_nested_types() {
        let e = errors(json!({
            "resourceType": "Patient", "id": "bad id!",
            "gender": "m",
            "birthDate": "1990-1-1",
            "active": "yes",
            "name": {"family": "x"},
            "contained": [{"resourceType": "Observation", "status": "final"}],
            "multipleBirthInteger": 1.5
        }));
        let x = exprs(&e);
        for want in [
            "Patient.id",
            "Patient.gender",
            "Patient.birthDate",
            "Patient.active",
            "Patient.name",
            "Patient.contained[0].code",
            "Patient.multipleBirthInteger",
        ] {
            assert!(x.iter().any(|s| s == want), "missing {want} in {x:?}");
        }
    }

    #[test]
    fn conditional_references_only_in_transactions() {
        let v = Validator::new().expect("defs");
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": "Patient?identifier=http://h|1"}});
        assert!(v
            .validate(&obs, Context::default())
            .iter()
            .any(Issue::is_error));
        assert!(!v
            .validate(
                &obs,
                Context {
                    in_transaction: true,
                    full_urls: None,
                }
            )
            .iter()
            .any(Issue::is_error));
    }

    #[test]
    fn empty_arrays_are_errors_not_panics() {
        let e =
            errors(json!({"resourceType": "Patient", "name": [], "identifier": [{"value": "1"}]}));
        assert_eq!(exprs(&e), vec!["Patient.name".to_string()]);
    }

    #[test]
    fn bundle_urn_references_are_checked_against_targets() {
        let v = Validator::new().expect("defs");
        let urn = "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0";
        let obs = json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
            "subject": {"reference": urn}, "performer": [{"reference": urn}]});
        let mut map = std::collections::HashMap::new();
        map.insert(urn.to_string(), "Encounter".to_string());
        let ctx = Context {
            in_transaction: true,
            full_urls: Some(&map),
        };
        let e: Vec<String> = v
            .validate(&obs, ctx)
            .into_iter()
            .filter(Issue::is_error)
            .filter_map(|i| i.expression)
            .collect();
        assert_eq!(
            e,
            vec![
                "Observation.subject.reference".to_string(),
                "Observation.performer[0].reference".to_string()
            ]
        );
        map.insert(urn.to_string(), "Patient".to_string());
        let ctx = Context {
            in_transaction: true,
            full_urls: Some(&map),
        };
        assert!(!v.validate(&obs, ctx).iter().any(Issue::is_error));
    }

    #[test]
    fn primitive_extension_only_counts_as_present() {
        let e = errors(
            json!({"resourceType": "Observation", "_status": {"extension": [{"url": "http://x", "valueString": "y"}]}, "code": {"text": "x"}}),
        );
        assert!(
            !exprs(&e).contains(&"Observation.status".to_string()),
            "{e:?}"
        );
    }
}

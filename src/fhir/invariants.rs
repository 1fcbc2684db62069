//! Hand-written checks of the R4 core invariants that matter for the data this server takes in
//! (the generic walker covers cardinality, types and bindings; these cover FHIRPath constraints):
//! ext-1, dom-2, dom-4, dom-5, txt-1, txt-2, obs-6, obs-7, pat-1.

use serde_json::Value;

use crate::fhir::outcome::Issue;

/// Check the invariants of `resource` (at FHIRPath `expr`) and of resources nested in it.
pub fn check(resource: &Value, expr: &str, issues: &mut Vec<Issue>) {
    extensions(resource, expr, issues);
    domain_resource(resource, expr, issues);
    match resource["resourceType"].as_str() {
        Some("Observation") => observation(resource, expr, issues),
        Some("Patient") => patient(resource, expr, issues),
        _ => {}
    }
}

fn error(key: &str, msg: &str, at: String) -> Issue {
    Issue::error("invariant", format!("{key}: {msg}")).at(at)
}

/// ext-1: an extension has either nested extensions or a value, not both and not neither.
fn extensions(v: &Value, expr: &str, issues: &mut Vec<Issue>) {
    let mut path = Vec::new();
    walk_extensions(v, expr, &mut path, issues);
}

/// A step from the resource root; rendered into FHIRPath only when an issue needs it.
enum Step<'a> {
    Field(&'a str),
    Index(usize),
}

fn render(expr: &str, path: &[Step<'_>]) -> String {
    let mut out = expr.to_string();
    for step in path {
        match step {
            Step::Field(f) => {
                out.push('.');
                out.push_str(f);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

fn walk_extensions<'v>(
    v: &'v Value,
    expr: &str,
    path: &mut Vec<Step<'v>>,
    issues: &mut Vec<Issue>,
) {
    let Value::Object(map) = v else { return };
    for (k, child) in map {
        if k == "contained" || (k == "resource" && child.get("resourceType").is_some()) {
            continue; // checked with their own resource
        }
        let is_extension = matches!(k.as_str(), "extension" | "modifierExtension");
        path.push(Step::Field(k));
        match child {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    path.push(Step::Index(i));
                    if is_extension {
                        check_extension(item, expr, path, issues);
                    }
                    walk_extensions(item, expr, path, issues);
                    path.pop();
                }
            }
            Value::Object(_) => {
                if is_extension {
                    check_extension(child, expr, path, issues);
                }
                walk_extensions(child, expr, path, issues);
            }
            _ => {}
        }
        path.pop();
    }
}

fn check_extension(ext: &Value, expr: &str, path: &[Step<'_>], issues: &mut Vec<Issue>) {
    let Some(ext) = ext.as_object() else { return };
    let has_value = ext.keys().any(|k| k.starts_with("value"));
    let has_nested = ext
        .get("extension")
        .is_some_and(|e| e.as_array().is_some_and(|a| !a.is_empty()));
    if has_value == has_nested {
        issues.push(error(
            "ext-1",
            "an extension must have either extensions or a value[x], not both",
            render(expr, path),
        ));
    }
}

/// dom-2, dom-4, dom-5 on contained resources; txt-1, txt-2 on the narrative.
fn domain_resource(r: &Value, expr: &str, issues: &mut Vec<Issue>) {
    if let Some(contained) = r["contained"].as_array() {
        for (i, c) in contained.iter().enumerate() {
            let at = format!("{expr}.contained[{i}]");
            if c.get("contained").is_some() {
                issues.push(error(
                    "dom-2",
                    "a contained resource cannot contain resources",
                    at.clone(),
                ));
            }
            if c["meta"].get("versionId").is_some() || c["meta"].get("lastUpdated").is_some() {
                issues.push(error(
                    "dom-4",
                    "a contained resource cannot have meta.versionId or meta.lastUpdated",
                    at.clone(),
                ));
            }
            if c["meta"].get("security").is_some() {
                issues.push(error(
                    "dom-5",
                    "a contained resource cannot have security labels",
                    at.clone(),
                ));
            }
            check(c, &at, issues);
        }
    }
    if let Some(div) = r["text"]["div"].as_str() {
        narrative(div, &format!("{expr}.text.div"), issues);
    }
}

const FORBIDDEN_TAGS: &[&str] = &[
    "<script", "<form", "<input", "<iframe", "<object", "<embed", "<applet", "<base", "<link",
    "<style", "<meta", "<frame",
];

/// txt-1 (only basic, safe XHTML) and txt-2 (non-whitespace content) on a narrative div.
fn narrative(div: &str, at: &str, issues: &mut Vec<Issue>) {
    let trimmed = div.trim_start();
    if !trimmed.starts_with("<div")
        || !trimmed.contains("http://www.w3.org/1999/xhtml")
        || !div.trim_end().ends_with("</div>")
    {
        issues.push(error(
            "txt-1",
            "the narrative must be an XHTML <div xmlns=\"http://www.w3.org/1999/xhtml\"> element",
            at.to_string(),
        ));
        return;
    }
    let lower = div.to_ascii_lowercase();
    if FORBIDDEN_TAGS.iter().any(|t| lower.contains(t)) {
        issues.push(error(
            "txt-1",
            "the narrative contains elements that are not basic XHTML (script, form, style...)",
            at.to_string(),
        ));
    }
    let has_event_attr = lower.match_indices(" on").any(|(i, _)| {
        let rest = &lower[i + 3..];
        let name_len = rest.bytes().take_while(|b| b.is_ascii_alphabetic()).count();
        name_len > 0
            && rest[name_len..].trim_start().starts_with('=')
            && lower[..i].rfind('<') > lower[..i].rfind('>')
    });
    if has_event_attr || lower.contains("javascript:") {
        issues.push(error(
            "txt-1",
            "the narrative contains scripting (event attributes or javascript: URLs)",
            at.to_string(),
        ));
    }
    let mut text = String::new();
    let mut in_tag = false;
    for c in div.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => text.push(c),
            _ => {}
        }
    }
    if text.trim().is_empty() && !lower.contains("<img") {
        issues.push(error(
            "txt-2",
            "the narrative must have some non-whitespace content",
            at.to_string(),
        ));
    }
}

/// obs-6: dataAbsentReason only when there is no value; obs-7: component codes differ from code.
fn observation(r: &Value, expr: &str, issues: &mut Vec<Issue>) {
    let has_value = r
        .as_object()
        .is_some_and(|m| m.keys().any(|k| k.starts_with("value")));
    if has_value && r.get("dataAbsentReason").is_some() {
        issues.push(error(
            "obs-6",
            "dataAbsentReason SHALL only be present if value[x] is not present",
            format!("{expr}.dataAbsentReason"),
        ));
    }
    let codes = |cc: &Value| -> Vec<(String, String)> {
        cc["coding"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                (
                    c["system"].as_str().unwrap_or("").to_string(),
                    c["code"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let main = codes(&r["code"]);
    if r.get("value").is_none() && has_value {
        if let Some(components) = r["component"].as_array() {
            for (i, c) in components.iter().enumerate() {
                if codes(&c["code"]).iter().any(|x| main.contains(x)) {
                    issues.push(error("obs-7", "if code is the same as a component code then the value in the component must not be at the Observation level", format!("{expr}.component[{i}].code")));
                }
            }
        }
    }
}

/// pat-1: a contact has a name, telecom, address or organization.
fn patient(r: &Value, expr: &str, issues: &mut Vec<Issue>) {
    for (i, c) in r["contact"].as_array().into_iter().flatten().enumerate() {
        if !["name", "telecom", "address", "organization"]
            .iter()
            .any(|k| c.get(*k).is_some())
        {
            issues.push(error(
                "pat-1",
                "a contact SHALL have a name, telecom, address or organization",
                format!("{expr}.contact[{i}]"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(v: Value) -> Vec<String> {
        let mut issues = Vec::new();
        let rt = v["resourceType"].as_str().unwrap_or("").to_string();
        check(&v, &rt, &mut issues);
        issues
            .into_iter()
            .map(|i| {
                format!(
                    "{} @ {}",
                    &i.diagnostics[..5],
                    i.expression.unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn invariants_are_checked_with_locations() {
        let got = run(json!({
            "resourceType": "Patient",
            "extension": [{"url": "http://x"}, {"url": "http://y", "valueString": "ok"}],
            "contact": [{"gender": "male"}],
            "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><script>x</script></div>"},
            "contained": [{"resourceType": "Observation", "meta": {"versionId": "1"}, "status": "final", "code": {"text": "x"},
                "valueString": "a", "dataAbsentReason": {"text": "n"}}]
        }));
        for want in [
            "ext-1 @ Patient.extension[0]",
            "pat-1 @ Patient.contact[0]",
            "txt-1 @ Patient.text.div",
            "dom-4 @ Patient.contained[0]",
            "obs-6 @ Patient.contained[0].dataAbsentReason",
        ] {
            assert!(got.iter().any(|g| g == want), "missing {want} in {got:?}");
        }
        assert_eq!(got.len(), 5, "{got:?}");
    }

    #[test]
    fn valid_narrative_passes() {
        assert!(run(json!({"resourceType": "Patient", "text": {"status": "generated",
            "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Peter <b>Chalmers</b> (once=1)</p></div>"}})).is_empty());
    }
}

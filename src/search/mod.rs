//! Search support available today: index entries written with each resource (the hook the full
//! search engine builds on) and the criteria that conditional interactions and `GET [type]?...`
//! accept: `_id` and `identifier` (token forms `value`, `system|value`, `|value`), ANDed.

use serde_json::Value;

use crate::error::{FhirError, Result};
use crate::store::IndexEntry;

/// Search parameters supported on every resource type.
pub const SUPPORTED_PARAMS: &[(&str, &str, &str)] = &[
    ("_id", "token", "Logical id of the resource"),
    (
        "identifier",
        "token",
        "Business identifier (system|value, value, or |value)",
    ),
];

/// Index entries of a resource (committed atomically with it).
pub fn index_entries(resource: &Value) -> Vec<IndexEntry> {
    let mut out = Vec::new();
    let idents = match &resource["identifier"] {
        Value::Array(a) => a.iter().collect(),
        Value::Object(_) => vec![&resource["identifier"]],
        _ => vec![],
    };
    for ident in idents {
        let Some(value) = ident["value"].as_str() else {
            continue;
        };
        let system = ident["system"].as_str().unwrap_or("");
        out.push(IndexEntry {
            param: "identifier".into(),
            value: format!("{system}|{value}"),
        });
        out.push(IndexEntry {
            param: "identifier".into(),
            value: format!("*|{value}"),
        });
        if !system.is_empty() {
            out.push(IndexEntry {
                param: "identifier".into(),
                value: format!("{system}|"),
            });
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The first value of a query-string parameter, decoded.
pub fn query_param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// One parsed criterion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    /// `_id=x` (several values ORed).
    Id(Vec<String>),
    /// `identifier=...` as index values (several ORed).
    Identifier(Vec<String>),
}

/// Parameters that control results rather than filter them (ignored by criteria matching).
fn is_result_param(name: &str) -> bool {
    matches!(
        name,
        "_count"
            | "_cursor"
            | "_format"
            | "_pretty"
            | "_summary"
            | "_elements"
            | "_total"
            | "_sort"
            | "_include"
            | "_revinclude"
    )
}

/// Parse a query string into criteria; unsupported parameters are a 400 naming them.
pub fn parse_criteria(query: &str) -> Result<Vec<Criterion>> {
    let mut out = Vec::new();
    let mut unsupported = Vec::new();
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let values: Vec<String> = value.split(',').map(str::to_string).collect();
        match name.as_ref() {
            "_id" => out.push(Criterion::Id(values)),
            "identifier" => out.push(Criterion::Identifier(
                values
                    .iter()
                    .map(|v| match v.split_once('|') {
                        Some(("", code)) => format!("|{code}"),
                        Some((sys, code)) => format!("{sys}|{code}"),
                        None => format!("*|{v}"),
                    })
                    .collect(),
            )),
            n if is_result_param(n) => {}
            n => unsupported.push(n.to_string()),
        }
    }
    if !unsupported.is_empty() {
        return Err(FhirError::BadRequest(format!(
            "unsupported search parameter(s): {} (supported: _id, identifier)",
            unsupported.join(", ")
        )));
    }
    if out.is_empty() {
        return Err(FhirError::BadRequest("search criteria are empty".into()));
    }
    Ok(out)
}

/// Ids matching all criteria, given an index lookup and a liveness check.
pub fn matching_ids(
    criteria: &[Criterion],
    lookup: &mut dyn FnMut(&str, &str) -> Result<Vec<String>>,
    live: &mut dyn FnMut(&str) -> Result<bool>,
) -> Result<Vec<String>> {
    let mut result: Option<Vec<String>> = None;
    for c in criteria {
        let mut ids: Vec<String> = match c {
            Criterion::Id(ids) => {
                let mut v = Vec::new();
                for id in ids {
                    if live(id)? {
                        v.push(id.clone());
                    }
                }
                v
            }
            Criterion::Identifier(values) => {
                let mut v = Vec::new();
                for value in values {
                    v.extend(lookup("identifier", value)?);
                }
                v
            }
        };
        ids.sort();
        ids.dedup();
        result = Some(match result {
            None => ids,
            Some(prev) => prev.into_iter().filter(|x| ids.contains(x)).collect(),
        });
    }
    Ok(result.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identifier_entries_and_criteria_agree() {
        let e = index_entries(
            &json!({"identifier": [{"system": "http://h", "value": "1"}, {"value": "2"}]}),
        );
        let vals: Vec<&str> = e.iter().map(|x| x.value.as_str()).collect();
        assert_eq!(vals, vec!["*|1", "*|2", "http://h|", "http://h|1", "|2"]);
        let c = parse_criteria("identifier=http://h|1&_count=5").expect("ok");
        assert_eq!(c, vec![Criterion::Identifier(vec!["http://h|1".into()])]);
        let c = parse_criteria("identifier=2,|2").expect("ok");
        assert_eq!(
            c,
            vec![Criterion::Identifier(vec!["*|2".into(), "|2".into()])]
        );
        assert!(parse_criteria("name=x").is_err());
        assert!(parse_criteria("").is_err());
    }

    #[test]
    fn criteria_are_anded() {
        let c = parse_criteria("identifier=a&_id=x").expect("ok");
        let ids = matching_ids(
            &c,
            &mut |_, _| Ok(vec!["x".into(), "y".into()]),
            &mut |id| Ok(id == "x"),
        )
        .expect("ok");
        assert_eq!(ids, vec!["x".to_string()]);
    }
}

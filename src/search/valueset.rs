//! ValueSet expansion for `:in` / `:not-in`: enumerated concepts of `compose.include`, whole
//! code systems included by system (from a stored CodeSystem), `compose.exclude`, and an
//! existing `expansion.contains`. Filters (`is-a` and the like) are not evaluated; a ValueSet
//! that uses them expands to its enumerated part only.

use std::collections::HashSet;

use serde_json::Value;

use crate::error::Result;

fn concepts(system: &str, list: &Value, out: &mut HashSet<(String, String)>) {
    for c in list.as_array().into_iter().flatten() {
        if let Some(code) = c["code"].as_str() {
            out.insert((system.to_string(), code.to_string()));
        }
        concepts(system, &c["concept"], out);
    }
}

fn contains(list: &Value, out: &mut HashSet<(String, String)>) {
    for c in list.as_array().into_iter().flatten() {
        if let (Some(s), Some(code)) = (c["system"].as_str(), c["code"].as_str()) {
            out.insert((s.to_string(), code.to_string()));
        }
        contains(&c["contains"], out);
    }
}

fn part(
    include: &Value,
    codesystem: &mut dyn FnMut(&str) -> Result<Option<Value>>,
) -> Result<HashSet<(String, String)>> {
    let mut out = HashSet::new();
    for inc in include.as_array().into_iter().flatten() {
        let Some(system) = inc["system"].as_str() else {
            continue;
        };
        if inc["concept"].is_array() {
            concepts(system, &inc["concept"], &mut out);
        } else if inc["filter"].is_null() {
            if let Some(cs) = codesystem(system)? {
                concepts(system, &cs["concept"], &mut out);
            }
        }
    }
    Ok(out)
}

/// The (system, code) pairs of a ValueSet.
pub fn expand(
    vs: &Value,
    codesystem: &mut dyn FnMut(&str) -> Result<Option<Value>>,
) -> Result<HashSet<(String, String)>> {
    let mut out = part(&vs["compose"]["include"], codesystem)?;
    for x in part(&vs["compose"]["exclude"], codesystem)? {
        out.remove(&x);
    }
    contains(&vs["expansion"]["contains"], &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn includes_excludes_and_whole_systems() {
        let vs = json!({"compose": {
            "include": [{"system": "a", "concept": [{"code": "1"}, {"code": "2"}]}, {"system": "cs"}],
            "exclude": [{"system": "a", "concept": [{"code": "2"}]}]}});
        let got =
            expand(&vs, &mut |s| {
                Ok((s == "cs")
                    .then(|| json!({"concept": [{"code": "x", "concept": [{"code": "y"}]}]})))
            })
            .expect("expand");
        let mut v: Vec<_> = got.into_iter().collect();
        v.sort();
        assert_eq!(
            v,
            vec![
                ("a".into(), "1".into()),
                ("cs".into(), "x".into()),
                ("cs".into(), "y".into())
            ]
        );
    }
}

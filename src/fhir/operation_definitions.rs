//! The OperationDefinitions of every operation the server serves, shipped as data in
//! `capability/operations/` (the standard ones adapted to what the server supports, each with
//! the standard definition as its `base`). The server stores them at start, so that
//! `GET OperationDefinition/[id]` and `OperationDefinition?url=` answer, and the
//! CapabilityStatement names them by their canonical URLs.

use serde_json::Value;

use crate::error::{FhirError, Result};

/// The shipped definitions' JSON text.
const FILES: &[&str] = &[
    include_str!("../../capability/operations/OperationDefinition-Resource-validate.json"),
    include_str!("../../capability/operations/OperationDefinition-Patient-everything.json"),
    include_str!("../../capability/operations/OperationDefinition-Measure-evaluate-measure.json"),
    include_str!("../../capability/operations/OperationDefinition-Measure-data-requirements.json"),
    include_str!("../../capability/operations/OperationDefinition-Measure-collect-data.json"),
    include_str!("../../capability/operations/OperationDefinition-Measure-submit-data.json"),
    include_str!("../../capability/operations/OperationDefinition-Measure-care-gaps.json"),
    include_str!("../../capability/operations/OperationDefinition-Measure-outcomes.json"),
    include_str!("../../capability/operations/OperationDefinition-Measure-publish-reports.json"),
    include_str!("../../capability/operations/OperationDefinition-load-contract.json"),
    include_str!("../../capability/operations/OperationDefinition-AuditEvent-verify-chain.json"),
];

/// Every shipped OperationDefinition.
pub fn all() -> Result<Vec<Value>> {
    FILES
        .iter()
        .map(|t| {
            serde_json::from_str(t)
                .map_err(|e| FhirError::Storage(format!("bad shipped OperationDefinition: {e}")))
        })
        .collect()
}

/// The definitions of operations on `rtype` (`Resource` ones apply to every type), or the
/// system-level ones for None: (code, canonical URL, description).
pub fn for_type(defs: &[Value], rtype: Option<&str>) -> Vec<(String, String, String)> {
    defs.iter()
        .filter(|d| match rtype {
            None => d["system"].as_bool() == Some(true),
            Some(t) => d["resource"].as_array().is_some_and(|rs| {
                rs.iter()
                    .any(|r| r.as_str() == Some(t) || r.as_str() == Some("Resource"))
            }),
        })
        .map(|d| {
            let text = |k: &str| d[k].as_str().unwrap_or_default().to_string();
            (text("code"), text("url"), text("description"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_definition_parses_with_its_own_url() {
        let defs = all().expect("parse");
        assert_eq!(defs.len(), FILES.len());
        for d in &defs {
            let id = d["id"].as_str().expect("id");
            assert_eq!(
                d["url"].as_str(),
                Some(format!("https://vbc-server.dev/fhir/OperationDefinition/{id}").as_str())
            );
        }
        let measure: Vec<String> = for_type(&defs, Some("Measure"))
            .into_iter()
            .map(|(c, _, _)| c)
            .collect();
        for op in [
            "evaluate-measure",
            "data-requirements",
            "collect-data",
            "submit-data",
            "care-gaps",
            "outcomes",
            "publish-reports",
            "validate",
        ] {
            assert!(measure.iter().any(|c| c == op), "{op} missing");
        }
        assert_eq!(for_type(&defs, None).len(), 1);
    }
}

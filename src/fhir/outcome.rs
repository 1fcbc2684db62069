//! OperationOutcome: the issue type the whole server reports problems with, and its FHIR JSON form.

use serde_json::{json, Value};

/// Severity of an issue (`OperationOutcome.issue.severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The request failed because of it.
    Error,
    /// Worth knowing; the request went ahead.
    Warning,
    /// Informational only.
    Information,
}

impl Severity {
    fn code(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Information => "information",
        }
    }
}

/// One problem, with its FHIR issue-type code and the FHIRPath location it concerns.
#[derive(Debug, Clone, PartialEq)]
pub struct Issue {
    /// How bad it is.
    pub severity: Severity,
    /// Code from http://hl7.org/fhir/issue-type (e.g. `structure`, `required`, `value`).
    pub code: &'static str,
    /// Human-readable explanation.
    pub diagnostics: String,
    /// FHIRPath expression of the element concerned, if any.
    pub expression: Option<String>,
}

impl Issue {
    /// An error issue.
    pub fn error(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Error,
            code,
            diagnostics: diagnostics.into(),
            expression: None,
        }
    }

    /// A warning issue.
    pub fn warning(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Warning,
            ..Issue::error(code, diagnostics)
        }
    }

    /// An informational issue.
    pub fn information(code: &'static str, diagnostics: impl Into<String>) -> Self {
        Issue {
            severity: Severity::Information,
            ..Issue::error(code, diagnostics)
        }
    }

    /// Attach the FHIRPath location.
    pub fn at(mut self, expression: impl Into<String>) -> Self {
        self.expression = Some(expression.into());
        self
    }

    /// Prefix the location (used when a resource sits inside a Bundle entry).
    pub fn within(mut self, prefix: &str, root_type: &str) -> Self {
        self.expression = Some(match self.expression.take() {
            Some(e) => match e.strip_prefix(root_type) {
                Some(rest) => format!("{prefix}{rest}"),
                None => format!("{prefix}.{e}"),
            },
            None => prefix.to_string(),
        });
        self
    }

    /// True for severity error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Build an OperationOutcome resource from issues (an empty list gives one "All OK" information issue).
pub fn operation_outcome(issues: &[Issue]) -> Value {
    let list: Vec<Value> = if issues.is_empty() {
        vec![json!({"severity": "information", "code": "informational", "diagnostics": "All OK"})]
    } else {
        issues.iter().map(issue_json).collect()
    };
    json!({"resourceType": "OperationOutcome", "issue": list})
}

/// Escape control characters so that echoed client input cannot make the outcome invalid.
fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') || c == '\u{7f}' {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

fn issue_json(issue: &Issue) -> Value {
    let mut v = json!({
        "severity": issue.severity.code(),
        "code": issue.code,
        "diagnostics": printable(&issue.diagnostics),
    });
    if let Some(expr) = &issue.expression {
        v["expression"] = json!([printable(expr)]);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_lists_every_issue_with_location() {
        let oo = operation_outcome(&[
            Issue::error("required", "missing").at("Observation.status"),
            Issue::warning("value", "odd"),
        ]);
        assert_eq!(oo["issue"].as_array().map(|a| a.len()), Some(2));
        assert_eq!(oo["issue"][0]["expression"][0], "Observation.status");
        assert_eq!(oo["issue"][1]["severity"], "warning");
        assert!(oo["issue"][1].get("expression").is_none());
    }

    #[test]
    fn within_rebases_expression_into_bundle_entry() {
        let i = Issue::error("required", "x")
            .at("Observation.status")
            .within("Bundle.entry[2].resource", "Observation");
        assert_eq!(
            i.expression.as_deref(),
            Some("Bundle.entry[2].resource.status")
        );
        let j = Issue::error("required", "x").within("Bundle.entry[0]", "Patient");
        assert_eq!(j.expression.as_deref(), Some("Bundle.entry[0]"));
    }

    #[test]
    fn control_characters_are_escaped() {
        let oo = operation_outcome(&[Issue::error("invalid", "bad id a\u{0}b")]);
        assert_eq!(oo["issue"][0]["diagnostics"], "bad id a\\u{0000}b");
    }

    #[test]
    fn empty_outcome_is_all_ok() {
        let oo = operation_outcome(&[]);
        assert_eq!(oo["issue"][0]["severity"], "information");
    }
}

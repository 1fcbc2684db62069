//! Parameters shared by the measure operations (`$evaluate-measure`, `$collect-data`,
//! `$care-gaps`, `$data-requirements`): query and `Parameters` body, the reporting period, the
//! Measure named by a parameter, and the `subject`.

use serde_json::Value;

use super::negotiate::FhirBody;
use super::search::pairs;
use crate::days::{self, Day};
use crate::error::{FhirError, Result};
use crate::fhir::outcome::Issue;
use crate::reports::common::Period;

/// A date or dateTime parameter: its calendar date (a year or year-month is widened to its first
/// or last day). A dateTime must be valid as a whole (time of day and zone too), not only its
/// date part.
pub fn date_param(v: &str, end: bool) -> Option<Day> {
    if let Some(d) = days::parse_full(v.get(..10).unwrap_or("")) {
        let whole = v.len() == 10
            || (v.as_bytes().get(10) == Some(&b'T')
                && crate::search::values::parse_date_range(v).is_some());
        return whole.then_some(d);
    }
    let (y, m) = match v.len() {
        4 => (v.parse::<i32>().ok()?, None),
        7 => (
            v.get(..4)?.parse::<i32>().ok()?,
            Some(v.get(5..7)?.parse::<u32>().ok()?),
        ),
        _ => return None,
    };
    if !end {
        return days::parse_full(&format!("{y:04}-{:02}-01", m.unwrap_or(1)));
    }
    let next = match m {
        Some(m) if m < 12 => days::parse_full(&format!("{y:04}-{:02}-01", m + 1))?,
        _ => days::parse_full(&format!("{:04}-01-01", y + 1))?,
    };
    Some(next - 1)
}

/// The parameters of a POST body (a Parameters resource; an empty body means none).
pub fn body_params(body: &FhirBody) -> Result<Vec<(String, String)>> {
    if body.bytes.is_empty() {
        return Ok(Vec::new());
    }
    let v = body.resource()?;
    if v["resourceType"] != "Parameters" {
        return Err(FhirError::BadRequest(
            "the body of $evaluate-measure must be a Parameters resource".into(),
        ));
    }
    let mut out = Vec::new();
    for p in v["parameter"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_string();
        let value = p
            .as_object()
            .and_then(|o| o.iter().find(|(k, _)| k.starts_with("value")))
            .map(|(_, v)| match v {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("reference")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                other => other.to_string(),
            })
            .unwrap_or_default();
        out.push((name, value));
    }
    Ok(out)
}

/// The query's parameters followed by those of a `Parameters` body.
pub fn params_of(query: Option<String>, body: Option<&FhirBody>) -> Result<Vec<(String, String)>> {
    let mut p = pairs(query.as_deref().unwrap_or(""));
    if let Some(b) = body {
        p.extend(body_params(b)?);
    }
    Ok(p)
}

/// The Measure id named by a `measure` parameter (id, `Measure/id` or canonical `url[|version]`).
pub fn measure_id(m: &str) -> String {
    let m = m.split('|').next().unwrap_or(m);
    m.rsplit('/').next().unwrap_or(m).to_string()
}

/// `periodStart` and `periodEnd` (both required, the end not before the start); every problem
/// goes to `issues`.
pub fn period_in(p: &[(String, String)], issues: &mut Vec<Issue>) -> Option<Period> {
    let (mut start, mut end) = (None, None);
    for (k, v) in p {
        let (slot, is_end) = match k.as_str() {
            "periodStart" => (&mut start, false),
            "periodEnd" => (&mut end, true),
            _ => continue,
        };
        match date_param(v, is_end) {
            Some(d) => *slot = Some(d),
            None => {
                issues.push(Issue::error("value", format!("{k} '{v}' is not a date")).at(k.clone()))
            }
        }
    }
    for (name, v) in [("periodStart", start), ("periodEnd", end)] {
        if v.is_none() && !issues.iter().any(|i| i.expression.as_deref() == Some(name)) {
            issues.push(Issue::error("required", format!("{name} is required")).at(name));
        }
    }
    match (start, end) {
        (Some(a), Some(b)) if b < a => {
            issues.push(Issue::error("value", "periodEnd is before periodStart").at("periodEnd"));
            None
        }
        (Some(start), Some(end)) => Some(Period { start, end }),
        _ => None,
    }
}

/// Report every parameter not in `allowed` (an entry ending in `*` allows a prefix).
pub fn unknown_in(p: &[(String, String)], allowed: &[&str], issues: &mut Vec<Issue>) {
    for (k, _) in p {
        let known = allowed.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => k.starts_with(prefix),
            None => a == k,
        });
        if !known {
            issues.push(
                Issue::error("not-supported", format!("unknown parameter '{k}'")).at(k.clone()),
            );
        }
    }
}

/// A resolved `subject`.
pub enum Subject {
    /// A Patient id.
    Patient(String),
    /// The Patient ids of a Group's members.
    Group(Vec<String>),
}

/// Resolve `Patient/[id]`, `Group/[id]` or a bare Patient id, read as the caller: 404 when it
/// is not known or not the caller's to see.
pub fn resolve_subject(services: &crate::interaction::Services, sub: &str) -> Result<Subject> {
    let (rtype, id) = match sub.split_once('/') {
        Some((t, i)) => (t, i),
        None => ("Patient", sub),
    };
    let found = match rtype {
        "Patient" | "Group" => match services.read(rtype, id) {
            Ok(f) => Some(f),
            Err(FhirError::NotFound(_) | FhirError::Gone(_)) => None,
            Err(e) => return Err(e),
        },
        _ => {
            return Err(FhirError::Invalid(vec![Issue::error(
                "value",
                format!("subject '{sub}' is not a Patient or Group"),
            )
            .at("subject")]))
        }
    };
    let Some(found) = found else {
        return Err(FhirError::NotFound(format!("{rtype}/{id} is not known")));
    };
    if rtype == "Patient" {
        return Ok(Subject::Patient(id.to_string()));
    }
    let group: Value = found.resource;
    let members = group["member"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["entity"]["reference"].as_str())
        .filter_map(|r| r.strip_prefix("Patient/"))
        .map(str::to_string)
        .collect();
    Ok(Subject::Group(members))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_dates_widen_to_their_first_or_last_day() {
        let d = |s: &str| days::parse_full(s).expect("date");
        assert_eq!(date_param("2024", false), Some(d("2024-01-01")));
        assert_eq!(date_param("2024", true), Some(d("2024-12-31")));
        assert_eq!(date_param("2024-02", true), Some(d("2024-02-29")));
        assert_eq!(date_param("2024-12", true), Some(d("2024-12-31")));
        assert_eq!(
            date_param("2024-03-05T10:00:00Z", false),
            Some(d("2024-03-05"))
        );
        assert_eq!(date_param("2024-13-45", false), None);
        assert_eq!(date_param("2024-03-05x", false), None);
        assert_eq!(date_param("2024-01-01T25:61:61+99:99", false), None);
        assert_eq!(date_param("2024-01-01T10:00:00+15:00", false), None);
        assert_eq!(date_param("2024-01-01T", false), None);
    }
}

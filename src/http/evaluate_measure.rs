//! `Measure/$evaluate-measure` and `Measure/[id]/$evaluate-measure` (GET and POST), with the R4
//! parameters `periodStart`, `periodEnd`, `measure`, `reportType` (subject | subject-list |
//! population; `individual` and `summary` are accepted as their DEQM names), `subject`
//! (Patient or Group), `practitioner` (index performer) and `lastReceivedOn` (accepted; the
//! engine always uses every received resource).
//!
//! An outcome Measure yields a VBPR quality report (population), a DEQM individual report
//! (subject) or a subject-list report; the contract Measure yields the VBPR performance report
//! (population) with its money, an individual report with the patient's money lines, or a
//! subject-list report over its reported outcomes. A report covers the cohort members whose
//! index date lies in the period, evaluated on the current data.

use axum::extract::{Path, RawQuery, State};
use axum::response::Response;
use serde_json::Value;

use super::negotiate::FhirBody;
use super::search::{blocking, pairs};
use super::AppState;
use crate::engine::days::{self, Day};
use crate::engine::plan::Plan;
use crate::engine::result::PersonResult;
use crate::error::{FhirError, Result};
use crate::fhir::outcome::Issue;
use crate::reports::common::{in_period, Period};
use crate::reports::{individual, performance, quality, subject_list};
use crate::settlement;

/// What was asked.
#[derive(Debug, Default)]
struct Ask {
    measure: Option<String>,
    start: Option<Day>,
    end: Option<Day>,
    report_type: Option<String>,
    subject: Option<String>,
    practitioner: Option<String>,
}

/// A date or dateTime parameter: its calendar date (a year or year-month is widened to its first
/// or last day).
pub(crate) fn date_param(v: &str, end: bool) -> Option<Day> {
    if let Some(d) = days::parse_full(v.get(..10).unwrap_or("")) {
        return (v.len() == 10 || v.as_bytes().get(10) == Some(&b'T')).then_some(d);
    }
    let (y, m) = match v.len() {
        4 => (v.parse::<i32>().ok()?, None),
        7 => (
            v.get(..4)?.parse::<i32>().ok()?,
            Some(v.get(5..7)?.parse::<u32>().ok()?),
        ),
        _ => return None,
    };
    let first = days::parse_full(&format!("{y:04}-{:02}-01", m.unwrap_or(1)))?;
    if !end {
        return Some(first);
    }
    let next = match m {
        None => days::parse_full(&format!("{:04}-01-01", y + 1))?,
        Some(12) => days::parse_full(&format!("{:04}-01-01", y + 1))?,
        Some(m) => days::parse_full(&format!("{y:04}-{:02}-01", m + 1))?,
    };
    let _ = first;
    Some(next - 1)
}

fn parse(params: Vec<(String, String)>) -> Result<Ask> {
    let mut a = Ask::default();
    let mut issues = Vec::new();
    for (k, v) in params {
        match k.as_str() {
            "measure" => a.measure = Some(v),
            "periodStart" => match date_param(&v, false) {
                Some(d) => a.start = Some(d),
                None => issues.push(
                    Issue::error("value", format!("periodStart '{v}' is not a date"))
                        .at("periodStart"),
                ),
            },
            "periodEnd" => match date_param(&v, true) {
                Some(d) => a.end = Some(d),
                None => issues.push(
                    Issue::error("value", format!("periodEnd '{v}' is not a date")).at("periodEnd"),
                ),
            },
            "reportType" => match v.as_str() {
                "subject" | "individual" => a.report_type = Some("subject".into()),
                "subject-list" => a.report_type = Some("subject-list".into()),
                "population" | "summary" => a.report_type = Some("population".into()),
                _ => issues.push(
                    Issue::error(
                        "value",
                        format!("reportType '{v}' is not subject, subject-list or population"),
                    )
                    .at("reportType"),
                ),
            },
            "subject" => a.subject = Some(v),
            "practitioner" => a.practitioner = Some(v),
            "lastReceivedOn" => {
                if date_param(&v, false).is_none() {
                    issues.push(
                        Issue::error("value", format!("lastReceivedOn '{v}' is not a date"))
                            .at("lastReceivedOn"),
                    );
                }
            }
            "_format" | "_pretty" => {}
            other => issues.push(
                Issue::error("not-supported", format!("unknown parameter '{other}'"))
                    .at(other.to_string()),
            ),
        }
    }
    if a.start.is_none()
        && !issues
            .iter()
            .any(|i| i.expression.as_deref() == Some("periodStart"))
    {
        issues.push(Issue::error("required", "periodStart is required").at("periodStart"));
    }
    if a.end.is_none()
        && !issues
            .iter()
            .any(|i| i.expression.as_deref() == Some("periodEnd"))
    {
        issues.push(Issue::error("required", "periodEnd is required").at("periodEnd"));
    }
    if let (Some(s), Some(e)) = (a.start, a.end) {
        if e < s {
            issues.push(Issue::error("value", "periodEnd is before periodStart").at("periodEnd"));
        }
    }
    if a.report_type.as_deref() == Some("subject") && a.subject.is_none() {
        issues.push(Issue::error("required", "reportType subject needs a subject").at("subject"));
    }
    if !issues.is_empty() {
        return Err(FhirError::Invalid(issues));
    }
    Ok(a)
}

/// The parameters of a POST body (a Parameters resource; an empty body means none).
pub(crate) fn body_params(body: &FhirBody) -> Result<Vec<(String, String)>> {
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

/// The Measure id named by a `measure` parameter (id, `Measure/id` or canonical `url[|version]`).
pub(crate) fn measure_id(m: &str) -> String {
    let m = m.split('|').next().unwrap_or(m);
    m.rsplit('/').next().unwrap_or(m).to_string()
}

/// `GET /Measure/$evaluate-measure`.
pub async fn type_get(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<Response> {
    run(s, None, pairs(q.as_deref().unwrap_or(""))).await
}

/// `POST /Measure/$evaluate-measure`.
pub async fn type_post(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    body: FhirBody,
) -> Result<Response> {
    let mut p = pairs(q.as_deref().unwrap_or(""));
    p.extend(body_params(&body)?);
    run(s, None, p).await
}

/// `GET /Measure/{id}/$evaluate-measure`.
pub async fn instance_get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    run(s, Some(id), pairs(q.as_deref().unwrap_or(""))).await
}

/// `POST /Measure/{id}/$evaluate-measure`.
pub async fn instance_post(
    State(s): State<AppState>,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: FhirBody,
) -> Result<Response> {
    let mut p = pairs(q.as_deref().unwrap_or(""));
    p.extend(body_params(&body)?);
    run(s, Some(id), p).await
}

async fn run(s: AppState, id: Option<String>, params: Vec<(String, String)>) -> Result<Response> {
    let ask = parse(params)?;
    let id = match (id, &ask.measure) {
        (Some(id), _) => id,
        (None, Some(m)) => measure_id(m),
        (None, None) => {
            return Err(FhirError::Invalid(vec![Issue::error(
                "required",
                "name the Measure: measure=[id or canonical]",
            )
            .at("measure")]))
        }
    };
    let (plan, outcome) = s.engine.plan_for_measure(&id).ok_or_else(|| {
        FhirError::NotFound(format!(
            "Measure/{id} is not a loaded contract or outcome Measure"
        ))
    })?;
    let store = s.services.store.clone();
    let engine = s.engine.clone();
    blocking(move || {
        let subject = match ask.subject.as_deref() {
            None => None,
            Some(sub) => Some(resolve_subject(store.as_ref(), sub)?),
        };
        let results = engine.current(&plan.ids.contract())?;
        let today = days::today();
        let period = Period {
            start: ask.start.unwrap_or(0),
            end: ask.end.unwrap_or(0),
        };
        let mut chosen = in_period(&results, &period);
        if let Some(p) = &ask.practitioner {
            chosen.retain(|r| r.performer.as_deref() == Some(p.as_str()));
        }
        if let Some(Subject::Group(members)) = &subject {
            chosen.retain(|r| {
                r.patients
                    .iter()
                    .any(|p| members.iter().any(|m| **m == **p))
            });
        }
        let report_type = ask.report_type.clone().unwrap_or_else(|| match subject {
            Some(Subject::Patient(_)) => "subject".into(),
            _ => "population".into(),
        });
        Ok(build(
            &plan,
            outcome.as_deref(),
            &report_type,
            subject.as_ref(),
            &chosen,
            &period,
            today,
        ))
    })
    .await
}

/// A resolved `subject`.
pub(crate) enum Subject {
    /// A Patient id.
    Patient(String),
    /// The Patient ids of a Group's members.
    Group(Vec<String>),
}

pub(crate) fn resolve_subject(store: &dyn crate::store::Store, sub: &str) -> Result<Subject> {
    let (rtype, id) = match sub.split_once('/') {
        Some((t, i)) => (t, i),
        None => ("Patient", sub),
    };
    let rec = match rtype {
        "Patient" | "Group" => store.current(rtype, id)?.filter(|r| !r.deleted()),
        _ => {
            return Err(FhirError::Invalid(vec![Issue::error(
                "value",
                format!("subject '{sub}' is not a Patient or Group"),
            )
            .at("subject")]))
        }
    };
    let Some(rec) = rec else {
        return Err(FhirError::NotFound(format!("{rtype}/{id} is not known")));
    };
    if rtype == "Patient" {
        return Ok(Subject::Patient(id.to_string()));
    }
    let group: Value = rec
        .resource
        .as_deref()
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or_default();
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

fn build(
    plan: &Plan,
    outcome: Option<&str>,
    report_type: &str,
    subject: Option<&Subject>,
    chosen: &[&PersonResult],
    period: &Period,
    today: Day,
) -> Value {
    let reported: Vec<&str> = plan
        .rules
        .outcomes
        .iter()
        .filter(|o| o.report)
        .map(|o| o.id.as_str())
        .collect();
    let (measure_id, outcomes): (String, Vec<&str>) = match outcome {
        Some(o) => (plan.ids.outcome(o), vec![o]),
        None => (plan.ids.contract(), reported),
    };
    match (report_type, subject) {
        ("subject", Some(Subject::Patient(p))) => {
            let person = chosen
                .iter()
                .copied()
                .find(|r| r.patients.iter().any(|x| **x == **p));
            let settled = outcome.is_none().then(|| {
                settlement::settle(&plan.rules, &person.into_iter().collect::<Vec<_>>(), today)
            });
            individual::report(
                plan,
                &measure_id,
                &outcomes,
                p,
                person,
                settled.as_ref(),
                (period, today),
            )
        }
        ("subject-list", _) => {
            subject_list::report(plan, &measure_id, &outcomes, chosen, period, today)
        }
        _ => match outcome {
            Some(o) => quality::report(plan, o, chosen, period, today),
            None => {
                let settled = settlement::settle(&plan.rules, chosen, today);
                performance::report(plan, &settled, period, today, &[])
            }
        },
    }
}

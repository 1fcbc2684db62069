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

use axum::extract::{Path, RawQuery};
use axum::response::Response;
use serde_json::Value;

use super::guard::Caller;
use super::measure_params::{
    date_param, measure_id, params_of, period_in, resolve_subject, Subject,
};
use super::negotiate::FhirBody;
use super::search::blocking;
use super::AppState;
use crate::auth::access::{unknown_contract, Op};
use crate::auth::audit::{activity_event, Activity};
use crate::days::{self, Day};
use crate::engine::parties::parties_of;
use crate::engine::plan::Plan;
use crate::engine::result::PersonResult;
use crate::error::{FhirError, Result};
use crate::fhir::outcome::Issue;
use crate::reports::common::{in_period, Period};
use crate::reports::{individual, performance, quality, subject_list};
use crate::settlement;

/// What was asked.
#[derive(Default)]
struct Ask {
    measure: Option<String>,
    period: Option<Period>,
    report_type: Option<String>,
    subject: Option<String>,
    practitioner: Option<String>,
}

fn parse(params: Vec<(String, String)>) -> Result<Ask> {
    let mut issues = Vec::new();
    let mut a = Ask {
        period: period_in(&params, &mut issues),
        ..Ask::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "periodStart" | "periodEnd" | "_format" | "_pretty" => {}
            "measure" => a.measure = Some(v),
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
            other => issues.push(
                Issue::error("not-supported", format!("unknown parameter '{other}'"))
                    .at(other.to_string()),
            ),
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

/// `GET /Measure/$evaluate-measure`.
pub async fn type_get(Caller(s): Caller, RawQuery(q): RawQuery) -> Result<Response> {
    run(s, None, params_of(q, None)?).await
}

/// `POST /Measure/$evaluate-measure`.
pub async fn type_post(
    Caller(s): Caller,
    RawQuery(q): RawQuery,
    body: FhirBody,
) -> Result<Response> {
    run(s, None, params_of(q, Some(&body))?).await
}

/// `GET /Measure/{id}/$evaluate-measure`.
pub async fn instance_get(
    Caller(s): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    run(s, Some(id), params_of(q, None)?).await
}

/// `POST /Measure/{id}/$evaluate-measure`.
pub async fn instance_post(
    Caller(s): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: FhirBody,
) -> Result<Response> {
    run(s, Some(id), params_of(q, Some(&body))?).await
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
    let (plan, outcome) = s
        .engine
        .plan_for_measure(&id)
        .ok_or_else(|| unknown_contract(&id))?;
    let access = &s.services.access;
    access.operation(Op::EvaluateMeasure, Some((&id, &parties_of(&plan))))?;
    let population_only = ask.subject.is_none()
        && ask.practitioner.is_none()
        && matches!(ask.report_type.as_deref(), None | Some("population"));
    if access.is_manufacturer() && !population_only {
        return Err(FhirError::Forbidden(
            "a manufacturer sees population reports only (reportType=population, no subject or practitioner)"
                .into(),
        ));
    }
    s.services.audit.record(activity_event(
        access,
        Activity::Evaluation,
        &format!(
            "$evaluate-measure of Measure/{id} ({})",
            ask.report_type.as_deref().unwrap_or("default report type")
        ),
        &[format!("Measure/{id}")],
    ));
    let services = s.services.clone();
    let engine = s.engine.clone();
    blocking(move || {
        let subject = match ask.subject.as_deref() {
            None => None,
            Some(sub) => Some(resolve_subject(&services, sub)?),
        };
        let results = engine.current(&plan.ids.contract())?;
        let today = days::today();
        let period = ask.period.unwrap_or(Period { start: 0, end: 0 });
        let all = in_period(&results, &period);
        let mut chosen = all.clone();
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
            (&all, &chosen),
            &period,
            today,
        ))
    })
    .await
}

fn build(
    plan: &Plan,
    outcome: Option<&str>,
    report_type: &str,
    subject: Option<&Subject>,
    (all, chosen): (&[&PersonResult], &[&PersonResult]),
    period: &Period,
    today: Day,
) -> Value {
    let reported = plan.rules.reported_ids();
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
                let one: Vec<&PersonResult> = person.into_iter().collect();
                settlement::settle_part(&plan.rules, all, &one, today)
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
                let settled = settlement::settle_part(&plan.rules, all, chosen, today);
                performance::report(plan, &settled, period, today, &[])
            }
        },
    }
}

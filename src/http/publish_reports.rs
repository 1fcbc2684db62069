//! `POST [base]/Measure/[contract id]/$publish-reports?periodStart=&periodEnd=`: publish the
//! contract's report set for a period (performance, quality per reported outcome, subject-list)
//! as complete, immutable MeasureReports. Answers `Parameters` naming the reports: 201 when new
//! reports were stored (a changed period yields corrections that name what they replace), 200
//! when the period's published reports already say the same.

use std::sync::Arc;

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::guard::Caller;
use super::response;
use super::search::pairs;
use crate::days;
use crate::error::{FhirError, Result};
use crate::fhir::outcome::Issue;
use crate::reports::common::Period;
use crate::reports::publish::publish;

/// The handler.
pub async fn publish_reports(
    Caller(s): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let (plan, outcome) = s
        .engine
        .plan_for_measure(&id)
        .ok_or_else(|| crate::auth::access::unknown_contract(&id))?;
    s.services.access.operation(
        crate::auth::access::Op::PublishReports,
        Some((&id, &crate::engine::parties::parties_of(&plan))),
    )?;
    if outcome.is_some() {
        return Err(FhirError::BadRequest(format!(
            "Measure/{id} is an outcome Measure; publish the set through its contract Measure {}",
            plan.ids.contract()
        )));
    }
    let mut issues = Vec::new();
    let (mut start, mut end) = (None, None);
    for (k, v) in pairs(q.as_deref().unwrap_or("")) {
        match k.as_str() {
            "periodStart" => start = days::parse_full(&v),
            "periodEnd" => end = days::parse_full(&v),
            "_format" => continue,
            other => {
                issues.push(
                    Issue::error("not-supported", format!("unknown parameter '{other}'"))
                        .at(other.to_string()),
                );
                continue;
            }
        }
        if days::parse_full(&v).is_none() {
            issues.push(
                Issue::error("value", format!("'{v}' is not a date YYYY-MM-DD")).at(k.clone()),
            );
        }
    }
    match (start, end) {
        (Some(a), Some(b)) if b < a => {
            issues.push(Issue::error("value", "periodEnd is before periodStart").at("periodEnd"))
        }
        (None, _)
            if !issues
                .iter()
                .any(|i| i.expression.as_deref() == Some("periodStart")) =>
        {
            issues.push(Issue::error("required", "periodStart is required").at("periodStart"))
        }
        (_, None)
            if !issues
                .iter()
                .any(|i| i.expression.as_deref() == Some("periodEnd")) =>
        {
            issues.push(Issue::error("required", "periodEnd is required").at("periodEnd"))
        }
        _ => {}
    }
    if !issues.is_empty() {
        return Err(FhirError::Invalid(issues));
    }
    let period = Period {
        start: start.unwrap_or(0),
        end: end.unwrap_or(0),
    };
    let (engine, contract) = (s.engine.clone(), plan.ids.contract());
    let results = tokio::task::spawn_blocking(move || engine.current(&contract))
        .await
        .map_err(|e| FhirError::Storage(e.to_string()))??;
    let done = publish(
        &s.services,
        &plan,
        Arc::new(results),
        period,
        &s.base(&headers),
    )
    .await?;
    let mut params = vec![
        json!({"name": "stored", "valueInteger": done.stored}),
        json!({"name": "corrections", "valueInteger": done.corrections}),
    ];
    params.extend(
        done.reports
            .iter()
            .map(|r| json!({"name": "report", "valueReference": {"reference": r}})),
    );
    let status = if done.stored > 0 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(response::json(
        status,
        &json!({"resourceType": "Parameters", "parameter": params}),
    ))
}

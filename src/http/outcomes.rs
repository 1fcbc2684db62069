//! `GET [base]/Measure/[id]/$outcomes`: the per-patient results of a contract (its contract
//! Measure id) or of one outcome (an outcome Measure id), as a `Parameters` resource.
//!
//! Parameters: `subject` (Patient/id or id, any linked record), `outcome`, `status` (met,
//! not-met, pending, missing-data, excluded), `membership` (member, ineligible, not-new-user),
//! `date` (evaluation day, YYYY-MM-DD), `asOf` (an instant: the data as recorded then, from the
//! version history), `mode=full` (evaluate from scratch instead of reading the incrementally
//! maintained results), `_summary=count` (counts only), `_count` (default 100, at most the
//! configured page size) and `_offset`.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::search::{blocking, pairs};
use super::AppState;
use crate::auth::access::Op;
use crate::engine::result::Status;
use crate::engine::{days, AsOf};
use crate::error::{FhirError, Result};
use crate::fhir::outcome::Issue;
use crate::reports::patient_results::{self, Filter};

/// The handler (reached through the `/{type}/{id}/{name}` route).
pub async fn outcomes(s: AppState, measure_id: String, query: String) -> Result<Response> {
    let (plan, only_outcome) = s.engine.plan_for_measure(&measure_id).ok_or_else(|| {
        FhirError::NotFound(format!(
            "Measure/{measure_id} is not a loaded contract or outcome"
        ))
    })?;
    s.services.access.operation(
        Op::Outcomes,
        Some(&crate::engine::parties::parties_of(&plan)),
    )?;
    s.services.audit.record(crate::auth::audit::activity_event(
        &s.services.access,
        crate::auth::audit::Activity::Evaluation,
        &format!("$outcomes of Measure/{measure_id}: {query}"),
        &[format!("Measure/{measure_id}")],
    ));
    let mut filter = Filter {
        outcome: only_outcome,
        ..Filter::default()
    };
    let mut issues = Vec::new();
    let (mut date, mut as_of, mut full, mut summary) = (None, None, false, false);
    let (mut count, mut offset) = (100usize, 0usize);
    for (k, v) in pairs(&query) {
        match k.as_str() {
            "subject" | "patient" => {
                filter.patient = Some(v.strip_prefix("Patient/").unwrap_or(&v).to_string())
            }
            "outcome" => {
                if plan.rules.outcomes.iter().any(|o| o.id == v) {
                    filter.outcome = Some(v);
                } else {
                    issues.push(
                        Issue::error("value", format!("'{v}' is not an outcome of this contract"))
                            .at("outcome"),
                    );
                }
            }
            "status" => match Status::parse(&v) {
                Some(st) => filter.status = Some(st),
                None => issues.push(
                    Issue::error(
                        "value",
                        format!("'{v}' is not met, not-met, pending, missing-data or excluded"),
                    )
                    .at("status"),
                ),
            },
            "membership" => {
                if matches!(v.as_str(), "member" | "ineligible" | "not-new-user") {
                    filter.membership = Some(v);
                } else {
                    issues.push(
                        Issue::error(
                            "value",
                            format!("'{v}' is not member, ineligible or not-new-user"),
                        )
                        .at("membership"),
                    );
                }
            }
            "date" => match days::parse_full(&v) {
                Some(d) => date = Some(d),
                None => issues.push(
                    Issue::error("value", format!("'{v}' is not a date YYYY-MM-DD")).at("date"),
                ),
            },
            "asOf" => match crate::interaction::parse_instant_ms(&v) {
                Some(t) => as_of = Some(t),
                None => issues.push(
                    Issue::error("value", format!("'{v}' is not an instant with a time zone"))
                        .at("asOf"),
                ),
            },
            "mode" => match v.as_str() {
                "full" => full = true,
                "incremental" => full = false,
                _ => issues.push(
                    Issue::error("value", format!("'{v}' is not full or incremental")).at("mode"),
                ),
            },
            "_summary" if v == "count" => summary = true,
            "_count" => match v.parse::<usize>() {
                Ok(n) => count = n.min(s.services.limits.max_page_size),
                Err(_) => {
                    issues.push(Issue::error("value", format!("'{v}' is not a count")).at("_count"))
                }
            },
            "_offset" => match v.parse::<usize>() {
                Ok(n) => offset = n,
                Err(_) => issues
                    .push(Issue::error("value", format!("'{v}' is not an offset")).at("_offset")),
            },
            "_format" => {}
            other => issues.push(
                Issue::error("not-supported", format!("unknown parameter '{other}'"))
                    .at(other.to_string()),
            ),
        }
    }
    if !issues.is_empty() {
        return Err(FhirError::Invalid(issues));
    }
    let engine = s.engine.clone();
    let contract = plan.ids.contract();
    let ids = plan.ids.clone();
    let today = date.unwrap_or_else(|| as_of.map(days::day_of_ms).unwrap_or_else(days::today));
    let at = AsOf {
        instant_ms: as_of,
        today,
    };
    let full = full || date.is_some() || as_of.is_some();
    blocking(move || {
        let results = if full { engine.evaluate(&contract, at)? } else { engine.current(&contract)? };
        let kept: Vec<_> = results.into_iter().filter(|r| filter.keeps(r)).collect();
        let mut params = vec![
            json!({"name": "contract", "valueReference": {"reference": format!("Measure/{contract}")}}),
            json!({"name": "evaluationDate", "valueDate": days::format(today)}),
            json!({"name": "mode", "valueCode": if full { "full" } else { "incremental" }}),
            json!({"name": "total", "valueInteger": kept.len()}),
        ];
        if let Some(t) = as_of {
            params.push(json!({"name": "asOf", "valueInstant": crate::interaction::instant(t)}));
        }
        params.extend(patient_results::counts(&kept));
        if !summary {
            params.extend(kept.iter().skip(offset).take(count).map(|r| patient_results::person(&ids, r, &filter)));
        }
        Ok(json!({"resourceType": "Parameters", "parameter": params}))
    })
    .await
    .map(|mut r| {
        *r.status_mut() = StatusCode::OK;
        r
    })
}

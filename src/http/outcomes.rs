//! `GET [base]/Measure/[id]/$outcomes`: the per-patient results of a contract (its contract
//! Measure id) or of one outcome (an outcome Measure id), as a `Parameters` resource.
//!
//! Parameters: `subject` (Patient/id or id, any linked record), `outcome`, `status` (met,
//! not-met, pending, missing-data, excluded), `membership` (member, ineligible, not-new-user),
//! `date` (evaluation day, YYYY-MM-DD), `asOf` (an instant: the data as recorded then, from the
//! version history), `mode=full` (evaluate from scratch instead of reading the incrementally
//! maintained results), `_summary=count` (counts only), `_count` (default 100, at most the
//! configured page size) and `_offset`: a page holds `_count` results from `_offset`, with `link`
//! parameters (relation `self`, `previous`, `next`, as in a search Bundle) to walk the list.
//!
//! Counts: `total` is the number of persons the list holds (every filter applied: `subject`,
//! `status`, `membership`), so it is the same on every page; `initialPopulation` (persons with a
//! qualifying index exposure who are new users: members and ineligible), `members` (eligible
//! members) and `count` (per outcome, members by status) describe the contract's population
//! narrowed only by `subject`, before `status` and `membership` narrow the list. An unknown
//! `subject` is a 404, as in `$evaluate-measure`; a known patient outside the cohort has no
//! results.

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::guard::Caller;
use super::search::{blocking, pairs};
use crate::auth::access::{unknown_contract, Op};
use crate::engine::result::Status;
use crate::engine::{days, AsOf};
use crate::error::{FhirError, Result};
use crate::fhir::outcome::Issue;
use crate::reports::patient_results::{self, Filter};

/// A `link` parameter (relation and URL, as `Bundle.link`).
fn link(relation: &str, url: String) -> Value {
    json!({"name": "link", "part": [
        {"name": "relation", "valueString": relation},
        {"name": "url", "valueUri": url}
    ]})
}

/// `GET /Measure/{id}/$outcomes`.
pub async fn outcomes(
    Caller(s): Caller,
    Path(measure_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let query = query.unwrap_or_default();
    let base = s.base(&headers);
    let (plan, only_outcome) = s
        .engine
        .plan_for_measure(&measure_id)
        .ok_or_else(|| unknown_contract(&measure_id))?;
    s.services.access.operation(
        Op::Outcomes,
        Some((&measure_id, &crate::engine::parties::parties_of(&plan))),
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
    if let Some(p) = &filter.patient {
        // read as the caller: an unknown (or another party's) patient is not known
        s.services.read("Patient", p).map_err(|e| match e {
            FhirError::Gone(_) => FhirError::NotFound(format!("Patient/{p} is not known")),
            e => e,
        })?;
    }
    // the page links repeat the request's parameters with their own _count and _offset
    let kept_query: Vec<(String, String)> = pairs(&query)
        .into_iter()
        .filter(|(k, _)| k != "_count" && k != "_offset")
        .collect();
    let page_url = move |off: usize| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &kept_query {
            q.append_pair(k, v);
        }
        q.append_pair("_count", &count.to_string());
        q.append_pair("_offset", &off.to_string());
        format!("{base}/Measure/{measure_id}/$outcomes?{}", q.finish())
    };
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
        let scope = Filter {
            patient: filter.patient.clone(),
            outcome: filter.outcome.clone(),
            ..Filter::default()
        };
        let in_scope: Vec<_> = results.into_iter().filter(|r| scope.keeps(r)).collect();
        let kept: Vec<_> = in_scope.iter().filter(|r| filter.keeps(r)).collect();
        let mut params = vec![
            json!({"name": "contract", "valueReference": {"reference": format!("Measure/{contract}")}}),
            json!({"name": "evaluationDate", "valueDate": days::format(today)}),
            json!({"name": "mode", "valueCode": if full { "full" } else { "incremental" }}),
            json!({"name": "total", "valueInteger": kept.len()}),
        ];
        if let Some(t) = as_of {
            params.push(json!({"name": "asOf", "valueInstant": crate::interaction::instant(t)}));
        }
        params.extend(patient_results::counts(&in_scope));
        if !summary {
            params.push(link("self", page_url(offset)));
            if offset > 0 {
                params.push(link("previous", page_url(offset.saturating_sub(count.max(1)))));
            }
            if count > 0 && offset.saturating_add(count) < kept.len() {
                params.push(link("next", page_url(offset + count)));
            }
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

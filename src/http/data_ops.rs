//! The measure data operations:
//! - `Measure/[id]/$data-requirements` (and type level with `measureId`): a `module-definition`
//!   Library listing the resource types and ValueSets the contract reads.
//! - `Measure/[id]/$collect-data` (and type level): a data-collection MeasureReport whose
//!   `evaluatedResource` lists the versioned resources that decided the results of the members
//!   indexed in the period, and those resources, as `Parameters` (`measureReport`, `resource`).
//! - `Measure/$submit-data`: exactly one data-collection MeasureReport plus resources (R4
//!   `measureReport` + `resource` parameters, or DEQM `bundle` parameters); everything is stored
//!   in one transaction (a resource with an id is updated, one without is created); otherwise 400.
//! - `Measure/$care-gaps`: for each member whose outcome window is open without the needed
//!   measurement (`prospective-gap`) or closed without it (`open-gap`: money unclaimed until the
//!   data arrive), what is missing, by when, and the amount at stake; `closed-gap` lists decided
//!   outcomes. `status` is required; `subject` (Patient/[id] or Group/[id]) cannot be combined
//!   with `practitioner` or `organization`, which select the members whose index exposure they
//!   prescribed, dispensed or administered; `program` is accepted and ignored.

use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::guard::Caller;
use super::measure_params::{
    measure_id, params_of, period_in, resolve_subject, unknown_in, Subject,
};
use super::negotiate::FhirBody;
use super::search::blocking;
use super::{response, AppState};
use crate::auth::access::{unknown_contract, Op};
use crate::contracts::rules::Rule;
use crate::days;
use crate::engine::parties::parties_of;
use crate::engine::plan::Plan;
use crate::engine::result::{PersonResult, Status};
use crate::error::{FhirError, Result};
use crate::fhir::outcome::Issue;
use crate::reports::common::{in_period, measure_canonical, payer_ref, Period};
use crate::reports::data_requirements;
use crate::settlement::{self, LineState};

/// Most resources `$collect-data` returns in one answer.
pub const MAX_COLLECTED: usize = 10_000;

/// The measure (by path id or `measureId` / `measureUrl` / `measure`) and its plan.
fn plan_of(
    s: &AppState,
    op: Op,
    id: Option<String>,
    p: &[(String, String)],
) -> Result<(std::sync::Arc<Plan>, Option<String>, String)> {
    let id = match id {
        Some(id) => id,
        None => p
            .iter()
            .find(|(k, _)| matches!(k.as_str(), "measureId" | "measureUrl" | "measure"))
            .map(|(_, v)| measure_id(v))
            .ok_or_else(|| {
                FhirError::Invalid(vec![Issue::error(
                    "required",
                    "name the Measure: measureId, measureUrl or measure",
                )
                .at("measureId")])
            })?,
    };
    let (plan, outcome) = s
        .engine
        .plan_for_measure(&id)
        .ok_or_else(|| unknown_contract(&id))?;
    s.services
        .access
        .operation(op, Some((&id, &parties_of(&plan))))?;
    Ok((plan, outcome, id))
}

/// periodStart and periodEnd, both required, and no parameter outside `allowed` (nor `_*`).
fn period_of(p: &[(String, String)], allowed: &[&str]) -> Result<Period> {
    let mut issues = Vec::new();
    let period = period_in(p, &mut issues);
    let allowed: Vec<&str> = allowed
        .iter()
        .copied()
        .chain(["periodStart", "periodEnd", "_*"])
        .collect();
    unknown_in(p, &allowed, &mut issues);
    match period {
        Some(period) if issues.is_empty() => Ok(period),
        _ => Err(FhirError::Invalid(issues)),
    }
}

/// `GET|POST /Measure/[id]/$data-requirements`.
pub async fn data_requirements_instance(
    Caller(s): Caller,
    Path(id): Path<String>,
) -> Result<Response> {
    let (plan, _, id) = plan_of(&s, Op::DataRequirements, Some(id), &[])?;
    Ok(response::json(
        StatusCode::OK,
        &data_requirements::library(&plan, &id),
    ))
}

/// `GET /Measure/$data-requirements?measureId=`.
pub async fn data_requirements_type(Caller(s): Caller, RawQuery(q): RawQuery) -> Result<Response> {
    let p = params_of(q, None)?;
    let (plan, _, id) = plan_of(&s, Op::DataRequirements, None, &p)?;
    Ok(response::json(
        StatusCode::OK,
        &data_requirements::library(&plan, &id),
    ))
}

/// `GET /Measure/[id]/$collect-data`.
pub async fn collect_data_get(
    Caller(s): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    collect(s, Some(id), params_of(q, None)?).await
}

/// `POST /Measure/[id]/$collect-data`.
pub async fn collect_data_post(
    Caller(s): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
    body: FhirBody,
) -> Result<Response> {
    collect(s, Some(id), params_of(q, Some(&body))?).await
}

/// `GET /Measure/$collect-data?measureId=`.
pub async fn collect_data_type(Caller(s): Caller, RawQuery(q): RawQuery) -> Result<Response> {
    collect(s, None, params_of(q, None)?).await
}

fn subject_filter(
    services: &crate::interaction::Services,
    p: &[(String, String)],
    chosen: &mut Vec<&PersonResult>,
) -> Result<Option<String>> {
    let Some((_, sub)) = p.iter().find(|(k, _)| k == "subject") else {
        return Ok(None);
    };
    match resolve_subject(services, sub)? {
        Subject::Patient(id) => {
            chosen.retain(|r| r.patients.iter().any(|x| **x == *id));
            Ok(Some(format!("Patient/{id}")))
        }
        Subject::Group(members) => {
            chosen.retain(|r| {
                r.patients
                    .iter()
                    .any(|x| members.iter().any(|m| **m == **x))
            });
            Ok(Some(sub.to_string()))
        }
    }
}

async fn collect(s: AppState, id: Option<String>, p: Vec<(String, String)>) -> Result<Response> {
    let allowed = [
        "measureId",
        "measureUrl",
        "measure",
        "subject",
        "practitioner",
        "lastReceivedOn",
        "measureIdentifier",
    ];
    let period = period_of(&p, &allowed)?;
    let (plan, _, measure) = plan_of(&s, Op::CollectData, id, &p)?;
    let (engine, services) = (s.engine.clone(), s.services.clone());
    blocking(move || {
        let results = engine.current(&plan.ids.contract())?;
        let mut chosen = in_period(&results, &period);
        let subject = subject_filter(&services, &p, &mut chosen)?;
        let mut refs: Vec<(&'static str, String, u64)> = Vec::new();
        for r in &chosen {
            let ev = r
                .evidence
                .iter()
                .chain(r.outcomes.iter().flat_map(|o| o.evidence.iter()))
                .chain(r.drug.iter().map(|d| &d.evidence));
            for e in ev {
                let key = (e.rtype, e.id.to_string(), e.version);
                if !refs.contains(&key) {
                    refs.push(key);
                }
            }
        }
        if refs.len() > MAX_COLLECTED {
            return Err(FhirError::Invalid(vec![Issue::error(
                "too-costly",
                format!("{} resources match; narrow the period or name a subject (at most {MAX_COLLECTED})", refs.len()),
            )]));
        }
        let mut report = json!({
            "resourceType": "MeasureReport",
            "status": "complete",
            "type": "data-collection",
            "measure": measure_canonical(&plan, &measure),
            "date": days::format(days::today()),
            "reporter": payer_ref(&plan),
            "period": period.fhir(),
        });
        if let Some(sub) = &subject {
            report["subject"] = json!({"reference": sub});
        }
        if !refs.is_empty() {
            report["evaluatedResource"] = json!(refs
                .iter()
                .map(|(t, i, v)| json!({"reference": format!("{t}/{i}/_history/{v}")}))
                .collect::<Vec<_>>());
        }
        let mut params = vec![json!({"name": "measureReport", "resource": report})];
        for (t, i, v) in &refs {
            if let Ok(found) = services.vread(t, i, &v.to_string()) {
                params.push(json!({"name": "resource", "resource": found.resource}));
            }
        }
        Ok(json!({"resourceType": "Parameters", "parameter": params}))
    })
    .await
}

/// `POST /Measure/$submit-data` and `POST /Measure/[id]/$submit-data`.
pub async fn submit_data(
    Caller(s): Caller,
    headers: HeaderMap,
    body: FhirBody,
) -> Result<Response> {
    s.services.access.operation(Op::SubmitData, None)?;
    let v = body.resource()?;
    if v["resourceType"] != "Parameters" {
        return Err(FhirError::BadRequest(
            "the body of $submit-data must be a Parameters resource".into(),
        ));
    }
    let mut resources: Vec<Value> = Vec::new();
    for (i, p) in v["parameter"].as_array().into_iter().flatten().enumerate() {
        match (p["name"].as_str(), p.get("resource")) {
            (Some("measureReport" | "resource"), Some(r)) => resources.push(r.clone()),
            (Some("bundle"), Some(b)) if b["resourceType"] == "Bundle" => resources.extend(
                b["entry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e.get("resource").cloned()),
            ),
            _ => {
                return Err(FhirError::Invalid(vec![Issue::error(
                    "structure",
                    "expected measureReport, resource or bundle parameters carrying a resource",
                )
                .at(format!("Parameters.parameter[{i}]"))]))
            }
        }
    }
    let reports: Vec<&Value> = resources
        .iter()
        .filter(|r| r["resourceType"] == "MeasureReport")
        .collect();
    let data_reports = reports
        .iter()
        .filter(|r| r["type"] == "data-collection")
        .count();
    if reports.len() != 1 || data_reports != 1 {
        return Err(FhirError::Invalid(vec![Issue::error(
            "invariant",
            format!(
                "$submit-data takes exactly one data-collection MeasureReport; got {} MeasureReport(s), {data_reports} of type data-collection",
                reports.len()
            ),
        )
        .at("Parameters.parameter")]));
    }
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let rtype = r["resourceType"].as_str().unwrap_or_default().to_string();
            match r["id"].as_str().map(str::to_string) {
                Some(id) => json!({"resource": r, "request": {"method": "PUT", "url": format!("{rtype}/{id}")}}),
                None => json!({"fullUrl": format!("urn:uuid:{}", uuid::Uuid::new_v4()), "resource": r, "request": {"method": "POST", "url": rtype}}),
            }
        })
        .collect();
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let answer = s.services.bundle(bundle, &s.base(&headers), false).await?;
    Ok(response::json(StatusCode::OK, &answer))
}

/// `GET|POST /Measure/$care-gaps` (and instance level).
pub async fn care_gaps_get(Caller(s): Caller, RawQuery(q): RawQuery) -> Result<Response> {
    care_gaps(s, None, params_of(q, None)?).await
}

/// `POST /Measure/$care-gaps`.
pub async fn care_gaps_post(
    Caller(s): Caller,
    RawQuery(q): RawQuery,
    body: FhirBody,
) -> Result<Response> {
    care_gaps(s, None, params_of(q, Some(&body))?).await
}

/// `GET /Measure/[id]/$care-gaps`.
pub async fn care_gaps_instance(
    Caller(s): Caller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response> {
    care_gaps(s, Some(id), params_of(q, None)?).await
}

/// Whether an outcome needs a measurement that can be missing.
fn measured(rule: &Rule) -> bool {
    matches!(
        rule,
        Rule::LabTarget { .. } | Rule::ChangeFromBaseline { .. } | Rule::CodedResponse { .. }
    )
}

async fn care_gaps(s: AppState, id: Option<String>, p: Vec<(String, String)>) -> Result<Response> {
    s.services.access.operation(Op::CareGaps, None)?;
    let allowed = [
        "measureId",
        "measureUrl",
        "measure",
        "subject",
        "status",
        "topic",
        "practitioner",
        "organization",
        "measureIdentifier",
        "program",
    ];
    let period = period_of(&p, &allowed)?;
    let statuses: Vec<String> = p
        .iter()
        .filter(|(k, _)| k == "status")
        .flat_map(|(_, v)| v.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    let mut issues = Vec::new();
    let has = |k: &str| p.iter().any(|(x, _)| x == k);
    if has("subject") && (has("organization") || has("practitioner")) {
        issues.push(
            Issue::error(
                "invalid",
                "subject cannot be combined with organization or practitioner",
            )
            .at("subject"),
        );
    }
    if let Some((_, sub)) = p.iter().find(|(k, _)| k == "subject") {
        if !(sub.starts_with("Patient/") || sub.starts_with("Group/")) {
            issues.push(
                Issue::error(
                    "value",
                    format!("subject '{sub}' is not Patient/[id] or Group/[id]"),
                )
                .at("subject"),
            );
        }
    }
    if statuses.is_empty() {
        issues.push(
            Issue::error(
                "required",
                "status is required (open-gap, closed-gap, prospective-gap)",
            )
            .at("status"),
        );
    }
    for st in &statuses {
        if !matches!(st.as_str(), "open-gap" | "closed-gap" | "prospective-gap") {
            issues.push(
                Issue::error(
                    "value",
                    format!("status '{st}' is not open-gap, closed-gap or prospective-gap"),
                )
                .at("status"),
            );
        }
    }
    if !issues.is_empty() {
        return Err(FhirError::Invalid(issues));
    }
    // every loaded contract, or the one named
    let plans: Vec<(std::sync::Arc<Plan>, Option<String>)> = if id.is_some()
        || p.iter()
            .any(|(k, _)| matches!(k.as_str(), "measureId" | "measureUrl" | "measure"))
    {
        let (plan, outcome, _) = plan_of(&s, Op::CareGaps, id, &p)?;
        vec![(plan, outcome)]
    } else {
        s.engine
            .contract_ids()
            .into_iter()
            .filter_map(|c| s.engine.plan_for_measure(&c))
            // the caller's contracts only
            .filter(|(plan, _)| {
                s.services
                    .access
                    .operation(
                        Op::CareGaps,
                        Some((&plan.ids.contract(), &parties_of(plan))),
                    )
                    .is_ok()
            })
            .collect()
    };
    let (engine, services) = (s.engine.clone(), s.services.clone());
    blocking(move || {
        let today = days::today();
        let mut out = Vec::new();
        for (plan, only) in plans {
            let results = engine.current(&plan.ids.contract())?;
            let all = in_period(&results, &period);
            let mut chosen = all.clone();
            subject_filter(&services, &p, &mut chosen)?;
            // practitioner / organization: members whose index exposure they prescribed,
            // dispensed or administered
            for (_, who) in p.iter().filter(|(k, _)| k == "practitioner" || k == "organization") {
                chosen.retain(|r| r.performer.as_deref() == Some(who.as_str()));
            }
            let settled = settlement::settle_part(&plan.rules, &all, &chosen, today);
            for r in chosen {
                let mut issues = Vec::new();
                for o in &r.outcomes {
                    let Some(def) = plan.rules.outcomes.iter().find(|d| *d.id == *o.id) else { continue };
                    if only.as_deref().is_some_and(|x| x != &*o.id) || !measured(&def.rule) {
                        continue;
                    }
                    let (gap, needed) = match o.status {
                        Status::MissingData => ("open-gap", true),
                        Status::Pending if o.value.is_none() => ("prospective-gap", true),
                        Status::Met | Status::NotMet => ("closed-gap", false),
                        _ => continue,
                    };
                    if !statuses.iter().any(|s| s == gap) {
                        continue;
                    }
                    let at_stake: Vec<String> = settled
                        .lines
                        .iter()
                        .filter(|l| l.person == r.person && l.outcomes.contains(&o.id))
                        .filter(|l| matches!(l.state, LineState::AtStakeMissingData | LineState::AtStakePending))
                        .map(|l| format!("{} {} ({})", l.amount, settled.currency, l.stream))
                        .collect();
                    // a missing-data policy gives the data until its deadline
                    let needed_by = match (o.status, def.missing_data.decides()) {
                        (Status::MissingData, Some((_, grace))) => o.window.1 + grace as days::Day,
                        _ => o.window.1,
                    };
                    let detail = if needed {
                        format!(
                            "{}: {}; needed by {}{}",
                            def.title,
                            o.reason,
                            days::format(needed_by),
                            if at_stake.is_empty() { String::new() } else { format!("; at stake {}", at_stake.join(", ")) }
                        )
                    } else {
                        format!("{}: {} ({})", def.title, o.status.code(), o.reason)
                    };
                    let mut extension = vec![json!({"url": "https://vbc-server.dev/fhir/StructureDefinition/gap-status", "valueCode": gap})];
                    if needed {
                        extension.push(json!({"url": "https://vbc-server.dev/fhir/StructureDefinition/needed-by", "valueDate": days::format(needed_by)}));
                    }
                    issues.push(json!({
                        "resourceType": "DetectedIssue",
                        "id": format!("{}-{}", r.person, o.id),
                        "extension": extension,
                        "status": "final",
                        "code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CAREGAP", "display": "Care Gaps"}]},
                        "patient": {"reference": format!("Patient/{}", r.person)},
                        "identifiedDateTime": days::format(today),
                        "detail": detail,
                        "evidence": [{"detail": [{"reference": format!("Measure/{}", plan.ids.outcome(&o.id)), "display": def.title}]}],
                    }));
                }
                if issues.is_empty() {
                    continue;
                }
                let entries: Vec<Value> = issues.into_iter().map(|i| json!({"resource": i})).collect();
                out.push(json!({"name": "return", "resource": {
                    "resourceType": "Bundle",
                    "type": "collection",
                    "timestamp": crate::interaction::instant(crate::interaction::now_ms()),
                    "entry": entries
                }}));
            }
        }
        Ok(json!({"resourceType": "Parameters", "parameter": out}))
    })
    .await
}

//! Publishing a contract's report set for a period: one VBPR quality report per reported
//! outcome, a subject-list report, and the VBPR performance report that points to the quality
//! reports, stored together in one transaction as `complete` MeasureReports.
//!
//! A published report never changes (update, patch and delete are refused with 409). Publishing
//! the same period again stores nothing when the content is the same; otherwise the new reports
//! carry a `replaces` extension naming the report each one corrects. Each report has an
//! identifier `{type}:{measure id}:{start}:{end}` (system [`REPORT_IDENTIFIER`]) so the latest
//! one of a period is found by search.

use std::sync::Arc;

use serde_json::{json, Value};

use super::common::{in_period, Period, EXT};
use super::performance;
use super::set::ReportSet;
use crate::auth::audit::{activity_event, Activity};
use crate::contracts::fhir::CONTRACT_CONTENT_SYSTEM;
use crate::days::{self, Day};
use crate::engine::plan::Plan;
use crate::engine::result::PersonResult;
use crate::error::{FhirError, Result};
use crate::interaction::Services;

/// Identifier system of published reports.
pub const REPORT_IDENTIFIER: &str = "https://vbc-server.dev/fhir/sid/measurereport";

/// What publishing did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// References of the reports of the period (new or unchanged), performance report first.
    pub reports: Vec<String>,
    /// How many were newly stored.
    pub stored: usize,
    /// How many corrected an earlier report.
    pub corrections: usize,
}

fn identifier_value(kind: &str, measure_id: &str, period: &Period) -> String {
    format!(
        "{kind}:{measure_id}:{}:{}",
        days::format(period.start),
        days::format(period.end)
    )
}

/// The latest stored report with an identifier value, if any.
fn latest(services: &Services, value: &str, base: &str) -> Result<Option<Value>> {
    let q = format!(
        "identifier={}&_sort=-_lastUpdated&_count=1",
        url_escape(&format!("{REPORT_IDENTIFIER}|{value}"))
    );
    let bundle = services.search("MeasureReport", &q, base)?;
    Ok(bundle["entry"]
        .as_array()
        .and_then(|e| e.first())
        .map(|e| e["resource"].clone()))
}

fn url_escape(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Mark a report as published: identifier, immutability tag.
fn seal(report: &mut Value, value: &str) {
    report["identifier"] = json!([{"system": REPORT_IDENTIFIER, "value": value}]);
    let meta = &mut report["meta"];
    meta["tag"] = json!([{
        "system": CONTRACT_CONTENT_SYSTEM,
        "code": "immutable",
        "display": "A published report, which never changes"
    }]);
}

/// Publish the report set of a contract for a period from `results` (the contract's current
/// results, evaluated on `today`'s data).
pub async fn publish(
    services: &Services,
    plan: &Arc<Plan>,
    results: Arc<Vec<PersonResult>>,
    period: Period,
    base: &str,
) -> Result<Published> {
    let today = days::today();
    let (svc, pl, base_owned) = (services.clone(), plan.clone(), base.to_string());
    let staged = tokio::task::spawn_blocking(move || {
        stage_set(
            &svc,
            &pl,
            &in_period(&results, &period),
            &period,
            today,
            &base_owned,
        )
    })
    .await
    .map_err(|e| FhirError::Storage(e.to_string()))??;
    let Staged {
        entries,
        mut reports,
        corrections,
    } = staged;
    let stored = entries.len();
    if stored > 0 {
        // the new ids (the answer's entries are in request order) replace the placeholders
        let full_urls: Vec<String> = entries
            .iter()
            .map(|e| e["fullUrl"].as_str().unwrap_or_default().to_string())
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        let answer = services.bundle(bundle, base, false).await?;
        let locations: Vec<String> = answer["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                let l = e["response"]["location"].as_str().unwrap_or_default();
                let l = l.split("/_history/").next().unwrap_or(l);
                let l = l.strip_prefix(base).unwrap_or(l);
                l.trim_start_matches('/').to_string()
            })
            .collect();
        for r in reports.iter_mut() {
            if let Some(l) = full_urls
                .iter()
                .position(|u| u == r)
                .and_then(|i| locations.get(i))
            {
                *r = l.clone();
            }
        }
        tracing::info!(contract = %plan.ids.contract(), stored, corrections, "published reports");
        let period_text = format!(
            "{}..{}",
            days::format(period.start),
            days::format(period.end)
        );
        services.audit.record(activity_event(
            &services.access,
            Activity::Publication,
            &format!(
                "report set of {} for {period_text}: {stored} stored, {corrections} corrections",
                plan.ids.contract()
            ),
            &reports,
        ));
        // the performance report (first) carries the money of the period
        services.audit.record(activity_event(
            &services.access,
            Activity::Settlement,
            &format!("settlement of {} for {period_text}", plan.ids.contract()),
            &reports[..reports.len().min(1)],
        ));
    }
    Ok(Published {
        reports,
        stored,
        corrections,
    })
}

/// The transaction entries of the new or corrected reports, the references of the whole set
/// (performance first; `urn:uuid:` for the new ones) and how many are corrections.
struct Staged {
    entries: Vec<Value>,
    reports: Vec<String>,
    corrections: usize,
}

fn stage_set(
    services: &Services,
    plan: &Plan,
    chosen: &[&PersonResult],
    period: &Period,
    today: Day,
    base: &str,
) -> Result<Staged> {
    let set = ReportSet::build(plan, chosen, period, today);
    let mut entries = Vec::new();
    let mut corrections = 0;
    // stage one report: unchanged -> its reference; changed or new -> a new entry
    let mut stage = |mut report: Value, kind: &str, measure_id: &str| -> Result<String> {
        let value = identifier_value(kind, measure_id, period);
        let prior = latest(services, &value, base)?;
        if let Some(p) = &prior {
            if p["group"] == report["group"] && p["contained"] == report["contained"] {
                let id = p["id"].as_str().unwrap_or_default();
                return Ok(format!("MeasureReport/{id}"));
            }
        }
        seal(&mut report, &value);
        if let Some(p) = prior {
            let id = p["id"].as_str().unwrap_or_default();
            let replaces = json!({"url": format!("{EXT}/replaces"), "valueReference": {"reference": format!("MeasureReport/{id}")}});
            match report["extension"].as_array_mut() {
                Some(ext) => ext.push(replaces),
                None => report["extension"] = json!([replaces]),
            }
            corrections += 1;
        }
        let full_url = format!("urn:uuid:{}", uuid::Uuid::new_v4());
        entries.push(json!({
            "fullUrl": full_url,
            "resource": report,
            "request": {"method": "POST", "url": "MeasureReport"}
        }));
        Ok(full_url)
    };
    let mut quality_refs = Vec::new();
    for (outcome, report) in set.quality {
        let r = stage(report, "quality", &plan.ids.outcome(&outcome))?;
        quality_refs.push((r, outcome));
    }
    let list_ref = stage(set.subject_list, "subject-list", &plan.ids.contract())?;
    let perf = performance::report(plan, &set.settlement, period, today, &quality_refs);
    let perf_ref = stage(perf, "performance", &plan.ids.contract())?;
    let mut reports = vec![perf_ref];
    reports.extend(quality_refs.into_iter().map(|(r, _)| r));
    reports.push(list_ref);
    Ok(Staged {
        entries,
        reports,
        corrections,
    })
}

/// The periods a schedule produces within the contract term that have ended before `today`.
pub fn due_periods(schedule: &str, term: (Day, Day), today: Day) -> Vec<Period> {
    let mut out = Vec::new();
    let (start, end) = term;
    if schedule == "close-out" {
        if today > end {
            out.push(Period { start, end });
        }
        return out;
    }
    let months = if schedule == "monthly" { 1 } else { 3 };
    let Some((mut y, mut m)) = days::format(start).get(..7).and_then(|s| {
        Some((
            s.get(..4)?.parse::<i32>().ok()?,
            s.get(5..7)?.parse::<u32>().ok()?,
        ))
    }) else {
        return out;
    };
    // align to the calendar month or quarter
    if months == 3 {
        m = (m - 1) / 3 * 3 + 1;
    }
    while let Some(first) = days::parse_full(&format!("{y:04}-{m:02}-01")) {
        let (ny, nm) = if m + months > 12 {
            (y + 1, m + months - 12)
        } else {
            (y, m + months)
        };
        let Some(next) = days::parse_full(&format!("{ny:04}-{nm:02}-01")) else {
            break;
        };
        let p = Period {
            start: first.max(start),
            end: (next - 1).min(end),
        };
        if p.end >= today || first > end {
            break;
        }
        out.push(p);
        (y, m) = (ny, nm);
    }
    if today > end {
        out.push(Period { start, end });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Day {
        days::parse_full(s).expect("date")
    }

    fn fmt(p: &[Period]) -> Vec<String> {
        p.iter()
            .map(|p| format!("{}..{}", days::format(p.start), days::format(p.end)))
            .collect()
    }

    #[test]
    fn quarters_are_calendar_quarters_clipped_to_the_term_and_only_when_ended() {
        let due = due_periods(
            "quarterly",
            (d("2024-02-15"), d("2028-12-31")),
            d("2024-10-01"),
        );
        assert_eq!(
            fmt(&due),
            [
                "2024-02-15..2024-03-31",
                "2024-04-01..2024-06-30",
                "2024-07-01..2024-09-30"
            ]
        );
        // the quarter ending the day before today is due; the one ending today is not
        let due = due_periods(
            "quarterly",
            (d("2024-01-01"), d("2028-12-31")),
            d("2024-03-31"),
        );
        assert!(due.is_empty());
    }

    #[test]
    fn months_and_close_out() {
        let due = due_periods(
            "monthly",
            (d("2024-01-01"), d("2024-03-15")),
            d("2024-06-01"),
        );
        assert_eq!(
            fmt(&due),
            [
                "2024-01-01..2024-01-31",
                "2024-02-01..2024-02-29",
                "2024-03-01..2024-03-15",
                "2024-01-01..2024-03-15"
            ]
        );
        assert!(due_periods(
            "close-out",
            (d("2024-01-01"), d("2024-12-31")),
            d("2024-12-31")
        )
        .is_empty());
        assert_eq!(
            fmt(&due_periods(
                "close-out",
                (d("2024-01-01"), d("2024-12-31")),
                d("2025-01-01")
            )),
            ["2024-01-01..2024-12-31"]
        );
    }
}

//! An outcome rule in words, as `$outcomes` and the evidence name it.

use crate::contracts::rules::Rule;

/// The rule of an outcome in words (computed once per contract by the plan).
pub fn rule_text(rule: &Rule) -> String {
    match rule {
        Rule::LabTarget { lab, window, pick, target } => {
            format!("lab-target: {pick:?} {lab} in days {}..{} {}", window.from, window.to, target.text).to_lowercase()
        }
        Rule::ChangeFromBaseline { lab, baseline, window, pick, change, target } => format!(
            "change-from-baseline: {change:?} change of {pick:?} {lab} in days {}..{} from the latest in days {}..{} {}",
            window.from, window.to, baseline.from, baseline.to, target.text
        )
        .to_lowercase(),
        Rule::Event { source, diagnosis, encounter_class, window, on_therapy_grace_days, max_events } => format!(
            "event: at most {max_events} {source:?} events with {diagnosis}{} in days {}..{}{}",
            if encounter_class.is_empty() { String::new() } else { format!(" (class {})", encounter_class.join("|")) },
            window.from,
            window.to,
            on_therapy_grace_days.map(|g| format!(" while on therapy (grace {g} days)")).unwrap_or_default()
        )
        .to_lowercase(),
        Rule::CodedResponse { observation, response, window, pick } => {
            format!("coded-response: {pick:?} {observation} in days {}..{} with a value in {response}", window.from, window.to).to_lowercase()
        }
        Rule::Adherence { window, min_pdc, valueset } => {
            format!("adherence: proportion of days covered by {valueset} in days {}..{} >= {min_pdc}", window.from, window.to)
        }
        Rule::Persistence { window, max_gap_days, valueset } => {
            format!("persistence: no gap in {valueset} supply longer than {max_gap_days} days in days {}..{}", window.from, window.to)
        }
        Rule::Survival { day } => format!("survival: alive on day {day}"),
        Rule::All { of } => format!("all of {}", of.join(", ")),
        Rule::Any { of } => format!("any of {}", of.join(", ")),
    }
}

//! A contract ready to evaluate: its rule set with value sets compiled to code sets and dates
//! to days.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::codes::{self, CodeSet};
use super::facts::Source;
use crate::contracts::fhir::{org_id, Ids};
use crate::contracts::rules::{Rule, RuleSet};
use crate::days::{self, Day};
use crate::search::units::{self, Analyte};

/// Encounter class system.
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// A compiled contract.
pub struct Plan {
    /// The rules.
    pub rules: RuleSet,
    /// Its resource ids.
    pub ids: Ids,
    sets: FxHashMap<String, CodeSet>,
    classes: FxHashMap<String, CodeSet>,
    analytes: FxHashMap<String, Option<Analyte>>,
    rule_texts: Vec<(Arc<str>, Arc<str>)>,
    /// Intake period.
    pub intake: (Day, Day),
    /// Exposure sources.
    pub sources: Vec<Source>,
    /// The sources whose exposures break the washout (None: every source).
    pub washout_sources: Option<Vec<Source>>,
    /// Which source stands for records of one exposure, first first.
    pub source_order: Vec<Source>,
    /// The payer as Coverage.payor keys (`Organization/id`, `identifier:system|value`).
    pub payer_refs: Vec<String>,
    empty: CodeSet,
}

impl Plan {
    /// Compile a rule set.
    pub fn new(rules: RuleSet) -> Plan {
        let mut sets = FxHashMap::default();
        for (name, vs) in &rules.valuesets {
            let set: CodeSet = vs
                .codes
                .iter()
                .map(|c| codes::intern(&c.system, &c.code))
                .collect();
            sets.insert(name.clone(), set);
        }
        let mut classes = FxHashMap::default();
        for o in &rules.outcomes {
            if let Rule::Event {
                encounter_class, ..
            } = &o.rule
            {
                classes.insert(
                    o.id.clone(),
                    encounter_class
                        .iter()
                        .map(|c| codes::intern(ACT_CODE, c))
                        .collect(),
                );
            }
        }
        let analytes = rules
            .labs
            .iter()
            .map(|(name, lab)| {
                let a = rules.valuesets.get(&lab.valueset).and_then(|vs| {
                    units::analyte_of_codes(
                        vs.codes
                            .iter()
                            .filter(|c| c.system == "http://loinc.org")
                            .map(|c| c.code.as_str()),
                    )
                });
                (name.clone(), a)
            })
            .collect();
        let c = &rules.cohort;
        let intake = (
            days::parse_full(&c.intake_start).unwrap_or(Day::MIN),
            days::parse_full(&c.intake_end).unwrap_or(Day::MAX),
        );
        let sources = c.sources.iter().filter_map(|s| Source::of(s)).collect();
        let washout_sources = c
            .washout_sources
            .as_ref()
            .map(|w| w.iter().filter_map(|s| Source::of(s)).collect());
        let mut source_order: Vec<Source> = rules
            .contract
            .source_order
            .iter()
            .filter_map(|s| Source::of(s))
            .collect();
        for s in [
            Source::MedicationAdministration,
            Source::Procedure,
            Source::MedicationDispense,
            Source::MedicationRequest,
        ] {
            if !source_order.contains(&s) {
                source_order.push(s);
            }
        }
        let payer = &rules.contract.payer;
        let mut payer_refs = vec![format!("Organization/{}", org_id(&payer.name))];
        if let (Some(s), Some(v)) = (&payer.identifier_system, &payer.identifier_value) {
            payer_refs.push(format!("identifier:{s}|{v}"));
        }
        let rule_texts = rules
            .outcomes
            .iter()
            .map(|o| {
                let text = super::rule_text::rule_text(&o.rule);
                (Arc::from(o.id.as_str()), Arc::from(text))
            })
            .collect();
        Plan {
            rule_texts,
            ids: Ids::of(&rules),
            rules,
            sets,
            classes,
            analytes,
            intake,
            sources,
            washout_sources,
            source_order,
            payer_refs,
            empty: CodeSet::default(),
        }
    }

    /// A value set's codes (empty for an unknown name, which compilation rules out).
    pub fn set(&self, name: &str) -> &CodeSet {
        self.sets.get(name).unwrap_or(&self.empty)
    }

    /// The encounter classes of an event outcome.
    pub fn classes(&self, outcome: &str) -> &CodeSet {
        self.classes.get(outcome).unwrap_or(&self.empty)
    }

    /// The id and the rule in words of the outcome at `position` in the contract, shared by
    /// every result.
    pub fn outcome_names(&self, position: usize) -> (Arc<str>, Arc<str>) {
        self.rule_texts.get(position).cloned().unwrap_or_default()
    }

    /// The analyte of a lab (for HbA1c and LDL unit equations).
    pub fn analyte(&self, lab: &str) -> Option<Analyte> {
        self.analytes.get(lab).copied().flatten()
    }
}

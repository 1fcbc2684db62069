//! Facts: the few elements of a resource the outcome rules read, extracted once per version so
//! that evaluation never parses JSON.

use rust_decimal::Decimal;
use serde_json::Value;

use super::codes::{self, Code};
use crate::days::{self, Day};
use crate::search::values::json_decimal;

pub use crate::contracts::exposure_source::Source;

/// What is known of a patient's death.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deceased {
    /// Not recorded as deceased.
    No,
    /// Died on this day.
    On(Day),
    /// Recorded as deceased without a date.
    Unknown,
}

/// The demographic facts of a Patient.
#[derive(Debug, Clone)]
pub struct PatientFact {
    /// Birth date.
    pub birth: Option<Day>,
    /// Administrative gender.
    pub gender: Option<Box<str>>,
    /// Death.
    pub deceased: Deceased,
    /// Identifiers as `system|value`.
    pub identifiers: Vec<Box<str>>,
    /// Ids of Patients this one is linked to (`Patient.link.other`).
    pub links: Vec<Box<str>>,
}

/// A therapy exposure (fill, administration, order or procedure).
#[derive(Debug, Clone)]
pub struct ExposureFact {
    /// Patient id.
    pub patient: Box<str>,
    /// Resource type it came from.
    pub source: Source,
    /// Local day of the exposure.
    pub day: Day,
    /// Instant (for ordering within a day).
    pub instant: i64,
    /// Days' supply (0 when not given).
    pub days_supply: u32,
    /// Medication or procedure codes given inline or by a contained Medication (code and
    /// ingredients).
    pub codes: Vec<Code>,
    /// Id of a referenced Medication, resolved at evaluation time.
    pub medication: Option<Box<str>>,
    /// False when the status says it did not happen (entered-in-error, cancelled, ...).
    pub counts: bool,
    /// Dispensed quantity (for drug cost).
    pub quantity: Option<Decimal>,
    /// The amount the record states with its unit (UCUM code, else the human unit): an
    /// administration's `dosage.dose`, a dispense's `quantity` when it has a unit. Priced
    /// against the contract's unit size when the contract gives one.
    pub amount: Option<(Decimal, Box<str>)>,
    /// The status is `stopped` (an administration begun and stopped: the drug may be used up).
    pub stopped: bool,
    /// Who dispensed, administered, ordered or performed it (a reference such as
    /// `Organization/pharmacy-1`), for stratifying reports.
    pub performer: Option<Box<str>>,
}

/// A Medication's codes (its code and its ingredients').
#[derive(Debug, Clone)]
pub struct MedicationFact {
    /// Codes.
    pub codes: Vec<Code>,
}

/// An Observation's value.
#[derive(Debug, Clone, PartialEq)]
pub enum ObsValue {
    /// No value; the dataAbsentReason code when one was sent (a measurement attempted without a
    /// result, such as an unsatisfactory specimen).
    None(Option<Box<str>>),
    /// A quantity and its unit (UCUM code, or the human unit when no code is given).
    Quantity {
        /// The value as sent.
        value: Decimal,
        /// The unit.
        unit: Box<str>,
    },
    /// A coded value.
    Coded(Vec<Code>),
}

/// An Observation (lab, assessment, response).
#[derive(Debug, Clone)]
pub struct ObservationFact {
    /// Patient id.
    pub patient: Box<str>,
    /// Observation codes.
    pub codes: Vec<Code>,
    /// The LOINC code, when there is one (picks the analyte's unit equations).
    pub loinc: Option<Box<str>>,
    /// Local day of the observation.
    pub day: Day,
    /// Instant.
    pub instant: i64,
    /// Value.
    pub value: ObsValue,
    /// True for final, amended and corrected results.
    pub counts: bool,
    /// Identifiers as `system|value` (a later resource with the same identifier replaces it).
    pub identifiers: Vec<Box<str>>,
}

/// A Condition (diagnosis).
#[derive(Debug, Clone)]
pub struct ConditionFact {
    /// Patient id.
    pub patient: Box<str>,
    /// Codes.
    pub codes: Vec<Code>,
    /// Onset day (onset, else recorded date).
    pub onset: Option<Day>,
    /// Instant of the onset.
    pub instant: i64,
    /// Clinical status active, recurrence or relapse (or none given).
    pub active: bool,
    /// False when refuted or entered in error.
    pub counts: bool,
}

/// An Encounter (hospital stay, emergency visit).
#[derive(Debug, Clone)]
pub struct EncounterFact {
    /// Patient id.
    pub patient: Box<str>,
    /// `class` as a code.
    pub class: Option<Code>,
    /// Reason codes.
    pub codes: Vec<Code>,
    /// Ids of Conditions named as diagnoses or reasons.
    pub conditions: Vec<Box<str>>,
    /// Local day the encounter started.
    pub day: Day,
    /// Instant it started.
    pub instant: i64,
    /// False when cancelled, planned or entered in error.
    pub counts: bool,
}

/// A Coverage.
#[derive(Debug, Clone)]
pub struct CoverageFact {
    /// Beneficiary patient id.
    pub patient: Box<str>,
    /// Payors as `Organization/id` or `identifier:system|value`.
    pub payors: Vec<Box<str>>,
    /// First covered day.
    pub start: Option<Day>,
    /// Last covered day.
    pub end: Option<Day>,
    /// Status active.
    pub active: bool,
}

/// The facts of one resource version.
#[derive(Debug, Clone)]
pub enum Fact {
    /// Patient.
    Patient(PatientFact),
    /// Medication.
    Medication(MedicationFact),
    /// Therapy exposure.
    Exposure(ExposureFact),
    /// Observation.
    Observation(ObservationFact),
    /// Condition.
    Condition(ConditionFact),
    /// Encounter.
    Encounter(EncounterFact),
    /// Coverage.
    Coverage(CoverageFact),
}

impl Fact {
    /// The patient a fact is about (None for Medication).
    pub fn patient(&self) -> Option<&str> {
        match self {
            Fact::Patient(_) | Fact::Medication(_) => None,
            Fact::Exposure(f) => Some(&f.patient),
            Fact::Observation(f) => Some(&f.patient),
            Fact::Condition(f) => Some(&f.patient),
            Fact::Encounter(f) => Some(&f.patient),
            Fact::Coverage(f) => Some(&f.patient),
        }
    }
}

/// Resource types the engine reads.
pub const TYPES: &[&str] = &[
    "Patient",
    "Medication",
    "MedicationDispense",
    "MedicationAdministration",
    "MedicationRequest",
    "Procedure",
    "Observation",
    "Condition",
    "Encounter",
    "Coverage",
];

/// True when the engine reads resources of this type.
pub fn relevant(rtype: &str) -> bool {
    TYPES.contains(&rtype)
}

/// The id a reference points at when it is a reference to `rtype` (relative or absolute).
pub fn ref_id<'a>(reference: &'a Value, rtype: &str) -> Option<&'a str> {
    let r = reference.get("reference")?.as_str()?;
    let r = r.split("/_history/").next()?;
    let (t, id) = r.rsplit_once('/')?;
    let t = t.rsplit('/').next()?;
    (t == rtype && !id.is_empty()).then_some(id)
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn concept_codes(v: Option<&Value>) -> Vec<Code> {
    let mut out = Vec::new();
    if let Some(c) = v {
        codes::of_concept(c, &mut out);
    }
    out
}

fn identifiers(v: &Value) -> Vec<Box<str>> {
    v.get("identifier")
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(|i| {
                    let (s, val) = (str_of(i, "system")?, str_of(i, "value")?);
                    Some(format!("{s}|{val}").into_boxed_str())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Day and instant of the first present date among `keys` (a dateTime, or a Period's start).
fn when(v: &Value, keys: &[&str]) -> Option<(Day, i64)> {
    for k in keys {
        let s = match v.get(*k) {
            Some(Value::String(s)) => s.as_str(),
            Some(p @ Value::Object(_)) => match str_of(p, "start") {
                Some(s) => s,
                None => continue,
            },
            _ => continue,
        };
        if let (Some(d), Some(i)) = (days::parse(s), days::instant_ms(s)) {
            return Some((d, i));
        }
    }
    None
}

fn medication_codes(m: &Value) -> Vec<Code> {
    let mut out = concept_codes(m.get("code"));
    if let Some(ings) = m.get("ingredient").and_then(Value::as_array) {
        for i in ings {
            if let Some(c) = i.get("itemCodeableConcept") {
                codes::of_concept(c, &mut out);
            }
        }
    }
    out
}

/// The facts of a resource, or None when the engine does not read it (or it lacks what a fact
/// needs: a subject, a date).
pub fn extract(rtype: &str, r: &Value) -> Option<Fact> {
    match rtype {
        "Patient" => Some(Fact::Patient(patient(r))),
        "Medication" => Some(Fact::Medication(MedicationFact {
            codes: medication_codes(r),
        })),
        "Observation" => observation(r).map(Fact::Observation),
        "Condition" => condition(r).map(Fact::Condition),
        "Encounter" => encounter(r).map(Fact::Encounter),
        "Coverage" => coverage(r).map(Fact::Coverage),
        _ => exposure(rtype, r).map(Fact::Exposure),
    }
}

fn patient(r: &Value) -> PatientFact {
    let deceased = match (r.get("deceasedDateTime"), r.get("deceasedBoolean")) {
        (Some(Value::String(s)), _) => days::parse(s).map_or(Deceased::Unknown, Deceased::On),
        (_, Some(Value::Bool(true))) => Deceased::Unknown,
        _ => Deceased::No,
    };
    let links = r
        .get("link")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .filter_map(|l| ref_id(l.get("other")?, "Patient"))
                .map(Box::from)
                .collect()
        })
        .unwrap_or_default();
    PatientFact {
        birth: str_of(r, "birthDate").and_then(days::parse),
        gender: str_of(r, "gender").map(Box::from),
        deceased,
        identifiers: identifiers(r),
        links,
    }
}

fn subject(r: &Value, key: &str) -> Option<Box<str>> {
    ref_id(r.get(key)?, "Patient").map(Box::from)
}

fn exposure(rtype: &str, r: &Value) -> Option<ExposureFact> {
    let source = Source::of(rtype)?;
    let status = str_of(r, "status").unwrap_or("");
    let counts = !match source {
        Source::MedicationDispense => {
            matches!(
                status,
                "entered-in-error" | "cancelled" | "declined" | "stopped"
            )
        }
        Source::MedicationAdministration => {
            matches!(status, "entered-in-error" | "not-done" | "stopped")
        }
        Source::MedicationRequest => {
            matches!(
                status,
                "entered-in-error" | "cancelled" | "stopped" | "draft"
            )
        }
        Source::Procedure => {
            matches!(
                status,
                "entered-in-error" | "not-done" | "stopped" | "preparation"
            )
        }
    };
    let (day, instant) = match source {
        Source::MedicationDispense => when(r, &["whenHandedOver", "whenPrepared"])?,
        Source::MedicationAdministration => when(r, &["effectiveDateTime", "effectivePeriod"])?,
        Source::MedicationRequest => when(r, &["authoredOn"])?,
        Source::Procedure => when(r, &["performedDateTime", "performedPeriod"])?,
    };
    let mut codes = Vec::new();
    let mut medication = None;
    if source == Source::Procedure {
        codes = concept_codes(r.get("code"));
    } else if let Some(c) = r.get("medicationCodeableConcept") {
        codes::of_concept(c, &mut codes);
    } else if let Some(reference) = r
        .get("medicationReference")
        .and_then(|m| str_of(m, "reference"))
    {
        if let Some(local) = reference.strip_prefix('#') {
            if let Some(m) = r.get("contained").and_then(Value::as_array).and_then(|cs| {
                cs.iter().find(|c| {
                    str_of(c, "resourceType") == Some("Medication")
                        && str_of(c, "id") == Some(local)
                })
            }) {
                codes = medication_codes(m);
            }
        } else {
            medication = r
                .get("medicationReference")
                .and_then(|m| ref_id(m, "Medication"))
                .map(Box::from);
        }
    }
    let supply_days = |q: Option<&Value>| -> u32 {
        let Some(q) = q else { return 0 };
        let v = q.get("value").and_then(json_decimal).unwrap_or_default();
        let unit = str_of(q, "code")
            .or_else(|| str_of(q, "unit"))
            .unwrap_or("d");
        let factor = match unit {
            "d" | "day" | "days" => Decimal::ONE,
            "wk" | "week" | "weeks" => Decimal::from(7),
            "mo" | "month" | "months" => Decimal::from(30),
            _ => Decimal::ONE,
        };
        u32::try_from((v * factor).round().mantissa().max(0)).unwrap_or(0)
    };
    let days_supply = match source {
        Source::MedicationDispense => supply_days(r.get("daysSupply")),
        Source::MedicationRequest => supply_days(
            r.get("dispenseRequest")
                .and_then(|d| d.get("expectedSupplyDuration")),
        ),
        _ => 0,
    };
    let quantity = match source {
        Source::MedicationDispense => r
            .get("quantity")
            .and_then(|q| q.get("value"))
            .and_then(json_decimal),
        Source::MedicationAdministration => Some(Decimal::ONE),
        _ => None,
    };
    let stated = |q: Option<&Value>| -> Option<(Decimal, Box<str>)> {
        let q = q?;
        let v = q.get("value").and_then(json_decimal)?;
        let u = str_of(q, "code").or_else(|| str_of(q, "unit"))?;
        Some((v, Box::from(u)))
    };
    let amount = match source {
        Source::MedicationDispense => stated(r.get("quantity")),
        Source::MedicationAdministration => stated(r.get("dosage").and_then(|d| d.get("dose"))),
        _ => None,
    };
    let actor = |v: Option<&Value>| {
        v.and_then(|p| p.get("actor"))
            .and_then(|a| str_of(a, "reference"))
            .map(Box::from)
    };
    let first = |k: &str| r.get(k).and_then(Value::as_array).and_then(|a| a.first());
    let performer = match source {
        Source::MedicationDispense => actor(first("performer")),
        Source::MedicationAdministration => actor(first("performer")),
        Source::Procedure => actor(first("performer")),
        Source::MedicationRequest => r
            .get("requester")
            .and_then(|a| str_of(a, "reference"))
            .map(Box::from),
    };
    Some(ExposureFact {
        amount,
        stopped: status == "stopped",
        performer,
        patient: subject(r, "subject")?,
        source,
        day,
        instant,
        days_supply,
        codes,
        medication,
        counts,
        quantity,
    })
}

/// The first code of an Observation's dataAbsentReason.
fn absent_reason(r: &Value) -> Option<Box<str>> {
    let c = r.get("dataAbsentReason")?;
    c.get("coding")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find_map(|x| str_of(x, "code")))
        .or_else(|| str_of(c, "text"))
        .map(Box::from)
}

fn observation(r: &Value) -> Option<ObservationFact> {
    let (day, instant) = when(
        r,
        &[
            "effectiveDateTime",
            "effectivePeriod",
            "effectiveInstant",
            "issued",
        ],
    )?;
    let loinc = r
        .get("code")
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .and_then(|cs| {
            cs.iter()
                .find(|c| str_of(c, "system") == Some("http://loinc.org"))
                .and_then(|c| str_of(c, "code"))
        })
        .map(Box::from);
    let value = if let Some(q) = r.get("valueQuantity") {
        match (
            q.get("value").and_then(json_decimal),
            str_of(q, "code").or_else(|| str_of(q, "unit")),
        ) {
            (Some(value), Some(unit)) => ObsValue::Quantity {
                value,
                unit: unit.into(),
            },
            (Some(value), None) => ObsValue::Quantity {
                value,
                unit: "".into(),
            },
            _ => ObsValue::None(absent_reason(r)),
        }
    } else if let Some(c) = r.get("valueCodeableConcept") {
        ObsValue::Coded(concept_codes(Some(c)))
    } else {
        ObsValue::None(absent_reason(r))
    };
    Some(ObservationFact {
        patient: subject(r, "subject")?,
        codes: concept_codes(r.get("code")),
        loinc,
        day,
        instant,
        value,
        counts: matches!(str_of(r, "status"), Some("final" | "amended" | "corrected")),
        identifiers: identifiers(r),
    })
}

fn status_code(r: &Value, key: &str) -> Option<String> {
    r.get(key)?
        .get("coding")?
        .as_array()?
        .iter()
        .find_map(|c| str_of(c, "code").map(str::to_string))
}

fn condition(r: &Value) -> Option<ConditionFact> {
    let onset = when(r, &["onsetDateTime", "onsetPeriod", "recordedDate"]);
    let clinical = status_code(r, "clinicalStatus");
    let verification = status_code(r, "verificationStatus");
    Some(ConditionFact {
        patient: subject(r, "subject")?,
        codes: concept_codes(r.get("code")),
        onset: onset.map(|o| o.0),
        instant: onset.map_or(0, |o| o.1),
        active: clinical
            .as_deref()
            .is_none_or(|c| matches!(c, "active" | "recurrence" | "relapse")),
        counts: !matches!(
            verification.as_deref(),
            Some("refuted" | "entered-in-error")
        ),
    })
}

fn encounter(r: &Value) -> Option<EncounterFact> {
    let (day, instant) = when(r, &["period"])?;
    let mut class = Vec::new();
    if let Some(c) = r.get("class") {
        codes::of_coding(c, &mut class);
    }
    let mut codes = Vec::new();
    if let Some(rc) = r.get("reasonCode").and_then(Value::as_array) {
        for c in rc {
            codes::of_concept(c, &mut codes);
        }
    }
    let mut conditions: Vec<Box<str>> = Vec::new();
    if let Some(ds) = r.get("diagnosis").and_then(Value::as_array) {
        conditions.extend(
            ds.iter()
                .filter_map(|d| ref_id(d.get("condition")?, "Condition"))
                .map(Box::from),
        );
    }
    if let Some(rs) = r.get("reasonReference").and_then(Value::as_array) {
        conditions.extend(
            rs.iter()
                .filter_map(|x| ref_id(x, "Condition"))
                .map(Box::from),
        );
    }
    Some(EncounterFact {
        patient: subject(r, "subject")?,
        class: class.first().copied(),
        codes,
        conditions,
        day,
        instant,
        counts: !matches!(
            str_of(r, "status"),
            Some("cancelled" | "planned" | "entered-in-error")
        ),
    })
}

fn coverage(r: &Value) -> Option<CoverageFact> {
    let payors = r
        .get("payor")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| {
                    if let Some(id) = ref_id(p, "Organization") {
                        return Some(format!("Organization/{id}").into_boxed_str());
                    }
                    let i = p.get("identifier")?;
                    Some(
                        format!(
                            "identifier:{}|{}",
                            str_of(i, "system")?,
                            str_of(i, "value")?
                        )
                        .into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let period = r.get("period");
    Some(CoverageFact {
        patient: subject(r, "beneficiary")?,
        payors,
        start: period
            .and_then(|p| str_of(p, "start"))
            .and_then(days::parse),
        end: period.and_then(|p| str_of(p, "end")).and_then(days::parse),
        active: str_of(r, "status") == Some("active"),
    })
}

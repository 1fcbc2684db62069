//! Synthetic, realistic per-patient transaction Bundles for benchmarks and load tests: a Patient
//! with Conditions, Encounters, lab Observations (HbA1c, LDL, eGFR) and MedicationDispenses
//! (metformin, sitagliptin, evolocumab, sacubitril/valsartan), all linked by `urn:uuid` references.

use serde_json::{json, Value};

/// Small deterministic PRNG (xorshift64*), so the same seed gives the same data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// Next raw value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// A random UUID-shaped string.
    pub fn uuid(&mut self) -> String {
        let a = self.next_u64();
        let b = self.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            b >> 52,
            b & 0xffff_ffff_ffff
        )
    }
}

const DRUGS: &[(&str, &str)] = &[
    ("860975", "metformin hydrochloride 500 MG Oral Tablet"),
    ("665033", "sitagliptin 100 MG Oral Tablet"),
    ("1665684", "evolocumab"),
    ("1656340", "sacubitril 24 MG / valsartan 26 MG Oral Tablet"),
];

/// Canonical URLs of the outcome Measures individual MeasureReports are generated for.
pub const MEASURES: &[&str] = &[
    "http://vbc-server.example.org/fhir/Measure/hba1c-control",
    "http://vbc-server.example.org/fhir/Measure/ldl-response",
    "http://vbc-server.example.org/fhir/Measure/hf-readmission",
];

fn date(days_since_2023: u64) -> String {
    let d = time::Date::from_calendar_date(2023, time::Month::January, 1)
        .map(|d| d + time::Duration::days(days_since_2023 as i64))
        .unwrap_or(time::Date::MIN);
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

fn entry(full_url: &str, resource: Value) -> Value {
    let rtype = resource["resourceType"]
        .as_str()
        .unwrap_or("Basic")
        .to_string();
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": rtype}})
}

/// One patient's transaction Bundle; `n` makes identifiers unique.
pub fn patient_bundle(rng: &mut Rng, n: u64) -> Value {
    let pid = format!("urn:uuid:{}", rng.uuid());
    let mut entries = Vec::new();
    let gender = if rng.range(0, 1) == 0 {
        "female"
    } else {
        "male"
    };
    entries.push(entry(
        &pid,
        json!({
            "resourceType": "Patient",
            "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.3.25", "value": format!("MBR{n:09}")}],
            "name": [{"family": format!("Test{n}"), "given": ["Pat"]}],
            "gender": gender,
            "birthDate": format!("{}-{:02}-{:02}", rng.range(1940, 1990), rng.range(1, 12), rng.range(1, 28)),
            "address": [{"city": "Springfield", "state": "MA", "postalCode": "01101"}]
        }),
    ));
    entries.push(entry(
        &format!("urn:uuid:{}", rng.uuid()),
        json!({
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]},
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006", "display": "Diabetes mellitus type 2"}]},
            "subject": {"reference": pid},
            "onsetDateTime": date(rng.range(0, 60))
        }),
    ));
    let mut encounters = Vec::new();
    for _ in 0..rng.range(2, 4) {
        let eid = format!("urn:uuid:{}", rng.uuid());
        let start = rng.range(60, 700);
        entries.push(entry(
            &eid,
            json!({
                "resourceType": "Encounter",
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": pid},
                "period": {"start": format!("{}T09:00:00Z", date(start)), "end": format!("{}T09:30:00Z", date(start))},
                "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}]
            }),
        ));
        encounters.push((eid, start));
    }
    for i in 0..rng.range(10, 18) {
        let (eid, day) = &encounters[(i as usize) % encounters.len()];
        let (code, display, value, unit) = match i % 3 {
            0 => (
                "4548-4",
                "Hemoglobin A1c/Hemoglobin.total in Blood",
                format!("{}.{}", rng.range(5, 10), rng.range(0, 9)),
                "%",
            ),
            1 => (
                "13457-7",
                "Cholesterol in LDL [Mass/volume] in Serum or Plasma by calculation",
                format!("{}", rng.range(50, 190)),
                "mg/dL",
            ),
            _ => (
                "33914-3",
                "Glomerular filtration rate/1.73 sq M.predicted",
                format!("{}", rng.range(30, 110)),
                "mL/min/{1.73_m2}",
            ),
        };
        entries.push(entry(
            &format!("urn:uuid:{}", rng.uuid()),
            json!({
                "resourceType": "Observation",
                "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
                "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}]},
                "subject": {"reference": pid},
                "encounter": {"reference": eid},
                "effectiveDateTime": format!("{}T09:10:00Z", date(*day)),
                "valueQuantity": {"value": serde_json::from_str::<Value>(&value).unwrap_or(Value::Null), "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
            }),
        ));
    }
    for _ in 0..rng.range(4, 8) {
        let (rxcui, display) = DRUGS[rng.range(0, DRUGS.len() as u64 - 1) as usize];
        entries.push(entry(
            &format!("urn:uuid:{}", rng.uuid()),
            json!({
                "resourceType": "MedicationDispense",
                "status": "completed",
                "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": rxcui, "display": display}]},
                "subject": {"reference": pid},
                "quantity": {"value": 30, "unit": "tablet"},
                "daysSupply": {"value": 30, "unit": "days", "system": "http://unitsofmeasure.org", "code": "d"},
                "whenHandedOver": format!("{}T12:00:00Z", date(rng.range(60, 700)))
            }),
        ));
    }
    // one DEQM individual report per patient for the 2024 period
    let measure = MEASURES[(n % MEASURES.len() as u64) as usize];
    entries.push(entry(
        &format!("urn:uuid:{}", rng.uuid()),
        json!({
            "resourceType": "MeasureReport",
            "status": "complete",
            "type": "individual",
            "measure": measure,
            "subject": {"reference": pid},
            "date": "2025-01-15T00:00:00Z",
            "period": {"start": "2024-01-01", "end": "2024-12-31"},
            "group": [{"population": [{"code": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/measure-population", "code": "initial-population"}]}, "count": 1}]}]
        }),
    ));
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

//! The data of one synthetic person, one step above FHIR: what the scenario builds, what the
//! oracle judges, and what is written out as transaction Bundles.

use rust_decimal::Decimal;
use serde_json::{json, Map, Value};

use super::{Code, Ctx};
use crate::days::{self, Day};

const MEMBER_ID: &str = "https://vbc-server.dev/fhir/sid/member-id";
const UCUM: &str = "http://unitsofmeasure.org";
const CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const VERIFICATION: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

/// How a clinical timestamp is written. Its local date is always the item's day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tz {
    /// `dayTHH:00:00Z`.
    Z(u8),
    /// `dayT23:30:00-05:00` (UTC: the next day).
    Late,
    /// `dayT00:30:00+14:00` (UTC: the day before).
    Early,
    /// A date without a time.
    Date,
}

/// The dateTime of a day written with `tz`.
pub fn datetime(day: Day, tz: Tz) -> String {
    let d = days::format(day);
    match tz {
        Tz::Z(h) => format!("{d}T{h:02}:00:00Z"),
        Tz::Late => format!("{d}T23:30:00-05:00"),
        Tz::Early => format!("{d}T00:30:00+14:00"),
        Tz::Date => d,
    }
}

/// Milliseconds since the epoch of a day written with `tz`.
pub fn instant(day: Day, tz: Tz) -> i64 {
    let base = i64::from(day) * 86_400_000;
    let min = 60_000i64;
    base + match tz {
        Tz::Z(h) => i64::from(h) * 60 * min,
        Tz::Late => (23 * 60 + 30 + 5 * 60) * min,
        Tz::Early => (30 - 14 * 60) * min,
        Tz::Date => 0,
    }
}

/// The UTC day of a day written with `tz`.
pub fn utc_day(day: Day, tz: Tz) -> Day {
    instant(day, tz).div_euclid(86_400_000) as Day
}

/// Death as recorded on a Patient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deceased {
    No,
    On(Day),
    Unknown,
}

/// One Patient record of the person.
#[derive(Debug, Clone)]
pub struct PatientRec {
    pub id: String,
    pub birth: Option<Day>,
    pub gender: Option<&'static str>,
    pub deceased: Deceased,
    /// Member-id identifier value (shared by the person's records), when carried.
    pub member_id: Option<String>,
    /// A Patient this one links to (`Patient.link.other`).
    pub link: Option<String>,
    pub bundle: usize,
}

/// Where an exposure is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    Dispense,
    Administration,
    Request,
    Procedure,
}

impl Src {
    pub fn name(self) -> &'static str {
        match self {
            Src::Dispense => "MedicationDispense",
            Src::Administration => "MedicationAdministration",
            Src::Request => "MedicationRequest",
            Src::Procedure => "Procedure",
        }
    }

    pub fn of(name: &str) -> Option<Src> {
        Some(match name {
            "MedicationDispense" => Src::Dispense,
            "MedicationAdministration" => Src::Administration,
            "MedicationRequest" => Src::Request,
            "Procedure" => Src::Procedure,
            _ => return None,
        })
    }

    fn id_part(self) -> &'static str {
        match self {
            Src::Dispense => "disp",
            Src::Administration => "adm",
            Src::Request => "req",
            Src::Procedure => "proc",
        }
    }
}

/// How a medication is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MedRepr {
    /// `medicationCodeableConcept`.
    Concept,
    /// `medicationReference` to a Medication in the same Bundle.
    Reference,
    /// `medicationReference` to a contained Medication `#med`.
    Contained,
}

/// A therapy exposure.
#[derive(Debug, Clone)]
pub struct Exposure {
    pub id: String,
    pub patient: usize,
    pub src: Src,
    pub day: Day,
    pub tz: Tz,
    pub supply: u32,
    pub code: Code,
    pub repr: MedRepr,
    pub status: &'static str,
    pub bundle: usize,
    /// An administration's stated dose (value, UCUM unit), written as `dosage.dose`.
    pub dose: Option<(Decimal, String)>,
}

impl Exposure {
    /// False when the status says it did not happen.
    pub fn counts(&self) -> bool {
        !match self.src {
            Src::Dispense => matches!(
                self.status,
                "entered-in-error" | "cancelled" | "declined" | "stopped"
            ),
            Src::Administration => {
                matches!(self.status, "entered-in-error" | "not-done" | "stopped")
            }
            Src::Request => matches!(
                self.status,
                "entered-in-error" | "cancelled" | "stopped" | "draft"
            ),
            Src::Procedure => matches!(
                self.status,
                "entered-in-error" | "not-done" | "stopped" | "preparation"
            ),
        }
    }
}

/// A numeric result.
#[derive(Debug, Clone)]
pub struct Lab {
    pub id: String,
    pub patient: usize,
    pub code: Code,
    pub day: Day,
    pub tz: Tz,
    pub value: Decimal,
    pub unit: String,
    pub status: &'static str,
    pub identifier: Option<String>,
    pub bundle: usize,
    /// The first version (value, unit), status final, sent in Bundle 0 before this version.
    pub prior: Option<(Decimal, String)>,
}

/// A coded result (assessment, response, finding).
#[derive(Debug, Clone)]
pub struct Coded {
    pub id: String,
    pub patient: usize,
    pub code: Code,
    pub day: Day,
    pub tz: Tz,
    pub value: Code,
    pub status: &'static str,
    pub bundle: usize,
    /// The first version's value, status final, sent in Bundle 0 before this version.
    pub prior: Option<Code>,
}

/// A Condition.
#[derive(Debug, Clone)]
pub struct Cond {
    pub id: String,
    pub patient: usize,
    pub code: Code,
    pub onset: Option<Day>,
    /// The date is sent as `recordedDate` instead of `onsetDateTime`.
    pub recorded: bool,
    pub clinical: Option<&'static str>,
    pub verification: &'static str,
    pub bundle: usize,
}

impl Cond {
    /// Active (or no clinical status) and not refuted / entered in error.
    pub fn counts(&self) -> bool {
        self.clinical
            .is_none_or(|c| matches!(c, "active" | "recurrence" | "relapse"))
            && !matches!(self.verification, "refuted" | "entered-in-error")
    }
}

/// An Encounter.
#[derive(Debug, Clone)]
pub struct Enc {
    pub id: String,
    pub patient: usize,
    pub class: String,
    pub day: Day,
    pub tz: Tz,
    /// Days to the end of the stay.
    pub los: i32,
    pub reason: Option<Code>,
    /// A Condition (by id) named as `diagnosis.condition`.
    pub cond: Option<String>,
    pub status: &'static str,
    pub bundle: usize,
}

/// A Coverage.
#[derive(Debug, Clone)]
pub struct Cov {
    pub id: String,
    pub patient: usize,
    pub payor: String,
    pub start: Day,
    pub end: Option<Day>,
    pub status: &'static str,
    pub bundle: usize,
}

/// One person's data.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub patients: Vec<PatientRec>,
    pub exposures: Vec<Exposure>,
    pub labs: Vec<Lab>,
    pub coded: Vec<Coded>,
    pub conds: Vec<Cond>,
    pub encs: Vec<Enc>,
    pub covs: Vec<Cov>,
}

impl Model {
    /// The person id: the smallest Patient id.
    pub fn person(&self) -> String {
        self.patients
            .iter()
            .map(|p| p.id.clone())
            .min()
            .unwrap_or_default()
    }
}

fn num(d: Decimal) -> Value {
    let s = d.normalize().to_string();
    if let Ok(i) = s.parse::<i64>() {
        return json!(i);
    }
    s.parse::<f64>().map(|f| json!(f)).unwrap_or(Value::Null)
}

fn coding(c: &Code) -> Value {
    json!({"system": c.0, "code": c.1})
}

fn concept(c: &Code) -> Value {
    json!({"coding": [coding(c)]})
}

fn subject(m: &Model, p: usize) -> Value {
    json!({"reference": format!("Patient/{}", m.patients[p].id)})
}

/// A deterministic UUID for a resource id (fullUrl).
fn uuid_of(rtype: &str, id: &str) -> String {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    let mut h2: u64 = 0x8422_2325_CBF2_9CE4;
    for b in rtype.bytes().chain(std::iter::once(b'/')).chain(id.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01B3);
        h2 = (h2 ^ u64::from(b))
            .wrapping_mul(0x0000_0100_0000_01B3)
            .rotate_left(7);
    }
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h >> 32,
        (h >> 16) & 0xffff,
        h & 0xfff,
        h2 >> 52,
        h2 & 0xffff_ffff_ffff
    )
}

fn put(resource: Value) -> Value {
    let rtype = resource["resourceType"]
        .as_str()
        .unwrap_or("Basic")
        .to_string();
    let id = resource["id"].as_str().unwrap_or("").to_string();
    json!({
        "fullUrl": format!("urn:uuid:{}", uuid_of(&rtype, &id)),
        "resource": resource,
        "request": {"method": "PUT", "url": format!("{rtype}/{id}")}
    })
}

fn patient(p: &PatientRec) -> Value {
    let mut r = Map::new();
    r.insert("resourceType".into(), json!("Patient"));
    r.insert("id".into(), json!(p.id));
    if let Some(m) = &p.member_id {
        r.insert(
            "identifier".into(),
            json!([{"system": MEMBER_ID, "value": m}]),
        );
    }
    r.insert("active".into(), json!(true));
    r.insert(
        "name".into(),
        json!([{"family": format!("Synth-{}", p.id), "given": ["Pat"]}]),
    );
    if let Some(g) = p.gender {
        r.insert("gender".into(), json!(g));
    }
    if let Some(b) = p.birth {
        r.insert("birthDate".into(), json!(days::format(b)));
    }
    match p.deceased {
        Deceased::No => {}
        Deceased::On(d) => {
            r.insert("deceasedDateTime".into(), json!(days::format(d)));
        }
        Deceased::Unknown => {
            r.insert("deceasedBoolean".into(), json!(true));
        }
    }
    if let Some(l) = &p.link {
        r.insert(
            "link".into(),
            json!([{"other": {"reference": format!("Patient/{l}")}, "type": "seealso"}]),
        );
    }
    Value::Object(r)
}

fn exposure(m: &Model, e: &Exposure, out: &mut Vec<Value>) {
    let mut r = Map::new();
    r.insert("resourceType".into(), json!(e.src.name()));
    r.insert("id".into(), json!(e.id));
    if e.src == Src::Procedure {
        r.insert("status".into(), json!(e.status));
        r.insert("code".into(), concept(&e.code));
        r.insert("subject".into(), subject(m, e.patient));
        r.insert("performedDateTime".into(), json!(datetime(e.day, e.tz)));
        out.push(put(Value::Object(r)));
        return;
    }
    let mut medication = None;
    match e.repr {
        MedRepr::Concept => {
            r.insert("medicationCodeableConcept".into(), concept(&e.code));
        }
        MedRepr::Contained => {
            r.insert(
                "contained".into(),
                json!([{"resourceType": "Medication", "id": "med", "code": concept(&e.code)}]),
            );
            r.insert("medicationReference".into(), json!({"reference": "#med"}));
        }
        MedRepr::Reference => {
            let mid = format!("{}-med", e.id);
            r.insert(
                "medicationReference".into(),
                json!({"reference": format!("Medication/{mid}")}),
            );
            medication =
                Some(json!({"resourceType": "Medication", "id": mid, "code": concept(&e.code)}));
        }
    }
    // `contained` must come before the elements that refer to it only in XML; JSON order is free
    r.insert("status".into(), json!(e.status));
    r.insert("subject".into(), subject(m, e.patient));
    match e.src {
        Src::Dispense => {
            r.insert("quantity".into(), json!({"value": 30}));
            r.insert(
                "daysSupply".into(),
                json!({"value": e.supply, "unit": "days", "system": UCUM, "code": "d"}),
            );
            r.insert("whenHandedOver".into(), json!(datetime(e.day, e.tz)));
        }
        Src::Administration => {
            r.insert("effectiveDateTime".into(), json!(datetime(e.day, e.tz)));
            if let Some((v, u)) = &e.dose {
                r.insert(
                    "dosage".into(),
                    json!({"dose": {"value": num(*v), "unit": u, "system": UCUM, "code": u}}),
                );
            }
        }
        Src::Request => {
            r.insert("intent".into(), json!("order"));
            r.insert("authoredOn".into(), json!(datetime(e.day, e.tz)));
            if e.supply > 0 {
                r.insert(
                    "dispenseRequest".into(),
                    json!({"expectedSupplyDuration": {"value": e.supply, "unit": "days", "system": UCUM, "code": "d"}}),
                );
            }
        }
        Src::Procedure => {}
    }
    if let Some(med) = medication {
        out.push(put(med));
    }
    out.push(put(Value::Object(r)));
}

fn lab(m: &Model, l: &Lab, value: Decimal, unit: &str, status: &str) -> Value {
    let mut r = json!({
        "resourceType": "Observation",
        "id": l.id,
        "status": status,
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}]}],
        "code": concept(&l.code),
        "subject": subject(m, l.patient),
        "effectiveDateTime": datetime(l.day, l.tz),
        "valueQuantity": {"value": num(value), "unit": unit, "system": UCUM, "code": unit},
    });
    if let Some(i) = &l.identifier {
        r["identifier"] =
            json!([{"system": "https://vbc-server.dev/fhir/sid/lab-result", "value": i}]);
    }
    r
}

fn coded(m: &Model, c: &Coded, value: &Code, status: &str) -> Value {
    json!({
        "resourceType": "Observation",
        "id": c.id,
        "status": status,
        "code": concept(&c.code),
        "subject": subject(m, c.patient),
        "effectiveDateTime": datetime(c.day, c.tz),
        "valueCodeableConcept": concept(value),
    })
}

fn condition(m: &Model, c: &Cond) -> Value {
    let mut r = Map::new();
    r.insert("resourceType".into(), json!("Condition"));
    r.insert("id".into(), json!(c.id));
    if let Some(cs) = c.clinical {
        r.insert(
            "clinicalStatus".into(),
            json!({"coding": [{"system": CLINICAL, "code": cs}]}),
        );
    }
    r.insert(
        "verificationStatus".into(),
        json!({"coding": [{"system": VERIFICATION, "code": c.verification}]}),
    );
    r.insert("code".into(), concept(&c.code));
    r.insert("subject".into(), subject(m, c.patient));
    if let Some(d) = c.onset {
        let key = if c.recorded {
            "recordedDate"
        } else {
            "onsetDateTime"
        };
        r.insert(key.into(), json!(days::format(d)));
    }
    Value::Object(r)
}

fn encounter(ctx: &Ctx, m: &Model, e: &Enc) -> Value {
    let start = datetime(e.day, e.tz);
    let end_day = (e.day + e.los).min(ctx.today);
    let end = if end_day > e.day {
        format!("{}T12:00:00Z", days::format(end_day))
    } else {
        start.clone()
    };
    let mut r = json!({
        "resourceType": "Encounter",
        "id": e.id,
        "status": e.status,
        "class": {"system": ACT_CODE, "code": e.class},
        "subject": subject(m, e.patient),
        "period": {"start": start, "end": end},
    });
    if let Some(c) = &e.reason {
        r["reasonCode"] = json!([concept(c)]);
    }
    if let Some(c) = &e.cond {
        r["diagnosis"] = json!([{"condition": {"reference": format!("Condition/{c}")}, "rank": 1}]);
    }
    r
}

fn coverage(m: &Model, c: &Cov) -> Value {
    let mut period = json!({"start": days::format(c.start)});
    if let Some(e) = c.end {
        period["end"] = json!(days::format(e));
    }
    json!({
        "resourceType": "Coverage",
        "id": c.id,
        "status": c.status,
        "beneficiary": subject(m, c.patient),
        "payor": [{"reference": c.payor}],
        "period": period,
    })
}

/// The transaction Bundles of a person, in posting order. `with_org`: the payer Organization
/// goes in the first Bundle (once per population).
pub fn bundles(ctx: &Ctx, m: &Model, with_org: bool) -> Vec<Value> {
    let last = m
        .patients
        .iter()
        .map(|p| p.bundle)
        .chain(m.exposures.iter().map(|x| x.bundle))
        .chain(m.labs.iter().map(|x| x.bundle))
        .chain(m.coded.iter().map(|x| x.bundle))
        .chain(m.conds.iter().map(|x| x.bundle))
        .chain(m.encs.iter().map(|x| x.bundle))
        .chain(m.covs.iter().map(|x| x.bundle))
        .max()
        .unwrap_or(0);
    let mut out = Vec::new();
    for b in 0..=last {
        let mut entries = Vec::new();
        if b == 0 && with_org {
            entries.push(put(ctx.payer_org.clone()));
        }
        for p in m.patients.iter().filter(|p| p.bundle == b) {
            entries.push(put(patient(p)));
        }
        for c in m.conds.iter().filter(|c| c.bundle == b) {
            entries.push(put(condition(m, c)));
        }
        for c in m.covs.iter().filter(|c| c.bundle == b) {
            entries.push(put(coverage(m, c)));
        }
        for e in m.exposures.iter().filter(|e| e.bundle == b) {
            exposure(m, e, &mut entries);
        }
        for l in &m.labs {
            if b == 0 && l.bundle > 0 {
                if let Some((v, u)) = &l.prior {
                    entries.push(put(lab(m, l, *v, u, "final")));
                }
            }
            if l.bundle == b {
                entries.push(put(lab(m, l, l.value, &l.unit, l.status)));
            }
        }
        for c in &m.coded {
            if b == 0 && c.bundle > 0 {
                if let Some(v) = &c.prior {
                    entries.push(put(coded(m, c, v, "final")));
                }
            }
            if c.bundle == b {
                entries.push(put(coded(m, c, &c.value, c.status)));
            }
        }
        for e in m.encs.iter().filter(|e| e.bundle == b) {
            entries.push(put(encounter(ctx, m, e)));
        }
        if !entries.is_empty() {
            out.push(json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}));
        }
    }
    out
}

/// Ids of the resources of a person: `{prefix}-{kind}-{n}`.
#[derive(Debug, Clone)]
pub struct Ids {
    pub prefix: String,
    n: u32,
}

impl Ids {
    pub fn new(prefix: String) -> Ids {
        Ids { prefix, n: 0 }
    }

    pub fn next(&mut self, kind: &str) -> String {
        self.n += 1;
        format!("{}-{kind}-{}", self.prefix, self.n)
    }

    pub fn exposure(&mut self, src: Src) -> String {
        self.next(src.id_part())
    }
}

//! Scenarios: what happens to each synthetic person, decided first, then realised as data.
//!
//! A person's kind is set by their number (so that every kind appears in any 200 persons):
//! not in the initial population, not a new user, ineligible for exactly one reason, or a member
//! (with now and then a death, an exclusion diagnosis, a switch, or two Patient records). For a
//! member each outcome gets a target status among those its window allows on the evaluation day,
//! and data that produce it, with the awkward cases the engine must get right: values on the
//! window's first and last days, a value one day outside, time zones that move the UTC date across
//! the window's edge, results in the other unit, entered-in-error and unconvertible results,
//! amendments and corrections sent later, duplicates from a second source, early refills.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::model::{
    self, Coded, Cond, Cov, Deceased, Enc, Exposure, Ids, Lab, MedRepr, Model, PatientRec, Src, Tz,
};
use super::oracle::{self, source_order, Membership, Status};
use super::{dec, Code, Ctx, Expected, Rng};
use crate::contracts::rules::{Change, Comparison, OnDeath, OutcomeDef, Pick, Rule};
use crate::days::{self, Day};
use crate::search::units::{self, Analyte};

const OTHER_PAYER: &str = "Organization/org-other-health-plan";
const NOISE_DRUGS: &[(&str, &str)] = &[
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "29046"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "17767"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "83367"),
];
const NOISE_LABS: &[(&str, &str, &str)] = &[
    ("http://loinc.org", "2345-7", "mg/dL"),
    ("http://loinc.org", "2160-0", "mg/dL"),
    ("http://loinc.org", "718-7", "g/dL"),
];
const NOISE_REASONS: &[(&str, &str)] = &[
    ("http://snomed.info/sct", "38341003"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "J06.9"),
];

#[derive(Debug, Clone, Copy)]
enum NotIp {
    PreIntake,
    UnrelatedOnly,
    Cancelled,
    WrongSource,
    PostIntake,
}

#[derive(Debug, Clone, Copy)]
enum Nnu {
    BeforeIntake,
    Boundary,
    OtherSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Break {
    AgeYoung,
    AgeOld,
    Sex,
    DxNone(usize),
    DxAfter(usize),
    DxRefuted(usize),
    DxResolved(usize),
    LabOut(usize),
    LabLatestOut(usize),
    LabOld(usize),
    LabUnusable(usize),
    FindingNone(usize),
    FindingWrong(usize),
    FindingOld(usize),
    TherapyNone(usize),
    TherapyOld(usize),
    CovNone,
    CovOther,
    CovEnded,
    CovCancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    None,
    Death,
    DeathUnknown,
    ExclusionDx,
    Switch,
    Split,
    Link,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    NotIp(NotIp),
    NotNewUser(Nnu),
    Ineligible(Break),
    Member(Special),
}

/// What the builder meant (checked against the oracle in tests).
#[derive(Debug, Clone, Default)]
pub struct Intent {
    pub membership: Option<Option<Membership>>,
    pub outcomes: Vec<(String, Status)>,
}

/// One person: the model, the expected result and the intent.
pub fn person_with_intent(ctx: &Ctx, n: usize) -> (Model, Expected, Intent) {
    let prefix = format!("{}-{}-{:06}", ctx.tag, ctx.seed, n);
    let slot = ((n as u64).wrapping_add(ctx.seed)) % 20;
    let round = n / 20;
    for attempt in 0..48u64 {
        let mut rng = Rng::new(ctx.seed, n as u64, attempt);
        let kind = choose(ctx, slot, round, attempt, &mut rng);
        let mut b = Builder::new(ctx, prefix.clone(), rng);
        b.build(kind);
        if let Ok(v) = oracle::judge(ctx, &b.m) {
            if attempt > 0 {
                b.case.push(format!("redrawn-{attempt}"));
            }
            let exp = Expected {
                person: b.m.person(),
                membership: v.membership.map(|m| m.code().to_string()),
                index: v.index.map(days::format),
                outcomes: v
                    .outcomes
                    .iter()
                    .map(|(k, s)| (k.clone(), s.code().to_string()))
                    .collect(),
                case: b.case.join(";"),
            };
            return (b.m, exp, b.intent);
        }
    }
    // every attempt was ambiguous (cannot happen for the catalog): a person with no exposure
    let mut b = Builder::new(ctx, prefix, Rng::new(ctx.seed, n as u64, 999));
    b.base_patient(ctx.today, None);
    b.case.push("fallback:no-exposure".into());
    let exp = Expected {
        person: b.m.person(),
        membership: None,
        index: None,
        outcomes: Default::default(),
        case: b.case.join(";"),
    };
    let intent = Intent {
        membership: Some(None),
        outcomes: Vec::new(),
    };
    (b.m, exp, intent)
}

/// One person: the model and the expected result.
pub fn person(ctx: &Ctx, n: usize) -> (Model, Expected) {
    let (m, e, _) = person_with_intent(ctx, n);
    (m, e)
}

fn breaks(ctx: &Ctx) -> Vec<Break> {
    let c = &ctx.rules.cohort;
    let mut v = Vec::new();
    if c.age_min.is_some_and(|a| a >= 1) {
        v.push(Break::AgeYoung);
    }
    if c.age_max.is_some() {
        v.push(Break::AgeOld);
    }
    if c.sex.is_some() {
        v.push(Break::Sex);
    }
    for i in 0..c.diagnoses.len() {
        v.extend([
            Break::DxNone(i),
            Break::DxAfter(i),
            Break::DxRefuted(i),
            Break::DxResolved(i),
        ]);
    }
    for i in 0..c.labs.len() {
        v.extend([
            Break::LabOut(i),
            Break::LabLatestOut(i),
            Break::LabOld(i),
            Break::LabUnusable(i),
        ]);
    }
    for i in 0..c.findings.len() {
        v.extend([
            Break::FindingNone(i),
            Break::FindingWrong(i),
            Break::FindingOld(i),
        ]);
    }
    for i in 0..c.therapies.len() {
        v.extend([Break::TherapyNone(i), Break::TherapyOld(i)]);
    }
    if c.coverage {
        v.extend([
            Break::CovNone,
            Break::CovOther,
            Break::CovEnded,
            Break::CovCancelled,
        ]);
    }
    v
}

fn has_survival(ctx: &Ctx) -> bool {
    ctx.rules
        .outcomes
        .iter()
        .any(|o| matches!(o.rule, Rule::Survival { .. }))
}

fn choose(ctx: &Ctx, slot: u64, round: usize, attempt: u64, rng: &mut Rng) -> Kind {
    let (is, ie) = ctx.intake;
    let hi = ie.min(ctx.today);
    let r = round + attempt as usize;
    let not_ip = [
        NotIp::PreIntake,
        NotIp::UnrelatedOnly,
        NotIp::Cancelled,
        NotIp::WrongSource,
        NotIp::PostIntake,
    ];
    if hi < is {
        return Kind::NotIp(if rng.pct(50) {
            NotIp::PreIntake
        } else {
            NotIp::UnrelatedOnly
        });
    }
    let late = attempt >= 32;
    match slot {
        0 | 1 => Kind::NotIp(not_ip[(r * 2 + slot as usize) % not_ip.len()]),
        2 if ctx.rules.cohort.washout_days.is_some() => {
            let v = [Nnu::BeforeIntake, Nnu::Boundary, Nnu::OtherSource];
            Kind::NotNewUser(v[r % v.len()])
        }
        3..=5 => {
            let bs = breaks(ctx);
            match bs.get((r * 3 + slot as usize - 3) % bs.len().max(1)) {
                Some(b) => Kind::Ineligible(*b),
                None => Kind::Member(Special::None),
            }
        }
        _ if late => Kind::Member(Special::None),
        6 | 11 | 16 => Kind::Member(Special::Death),
        7 => Kind::Member(Special::Split),
        8 if !ctx.rules.exclusions.diagnoses.is_empty() => Kind::Member(Special::ExclusionDx),
        9 if !ctx.rules.exclusions.switches.is_empty() => Kind::Member(Special::Switch),
        9 | 13 if has_survival(ctx) && round.is_multiple_of(2) => {
            Kind::Member(Special::DeathUnknown)
        }
        10 => Kind::Member(Special::Link),
        _ => Kind::Member(Special::None),
    }
}

/// A day `y` years before `day` (29 February -> 28 February).
fn years_before(day: Day, y: i32) -> Day {
    let Some(d) = days::to_date(day) else {
        return day - 365 * y;
    };
    let year = d.year() - y;
    let dd = time::Date::from_calendar_date(year, d.month(), d.day())
        .or_else(|_| time::Date::from_calendar_date(year, d.month(), d.day() - 1));
    dd.map(days::from_date).unwrap_or(day - 365 * y)
}

fn step(dp: u32) -> Decimal {
    Decimal::new(1, dp)
}

struct Builder<'a> {
    ctx: &'a Ctx,
    rng: Rng,
    m: Model,
    ids: Ids,
    case: Vec<String>,
    intent: Intent,
    member_id: String,
    index: Day,
    /// The last day any data may carry: the evaluation day, or the death.
    cap: Day,
    death: Option<Day>,
    /// An exclusion diagnosis: its onset (None: without one).
    excluded_from: Option<Option<Day>>,
    /// Labs whose baseline window was left empty on purpose: (lab, first day, last day).
    no_baseline: Vec<(String, Day, Day)>,
}

impl<'a> Builder<'a> {
    fn new(ctx: &'a Ctx, prefix: String, rng: Rng) -> Builder<'a> {
        Builder {
            ctx,
            rng,
            m: Model::default(),
            member_id: format!("mbr-{prefix}"),
            ids: Ids::new(prefix),
            case: Vec::new(),
            intent: Intent::default(),
            index: ctx.today,
            cap: ctx.today,
            death: None,
            excluded_from: None,
            no_baseline: Vec::new(),
        }
    }

    fn build(&mut self, kind: Kind) {
        match kind {
            Kind::NotIp(v) => self.not_ip(v),
            Kind::NotNewUser(v) => self.not_new_user(v),
            Kind::Ineligible(b) => self.ineligible(b),
            Kind::Member(s) => self.member(s),
        }
        if self.rng.pct(40) {
            self.noise();
        }
    }

    // ---------------------------------------------------------------------------------------
    // people
    // ---------------------------------------------------------------------------------------

    /// The Patient; `age_at`: the day the age is meant for; `force_age`: an age in years.
    fn base_patient(&mut self, age_at: Day, force_age: Option<(i32, bool)>) {
        let ctx = self.ctx;
        let c = &ctx.rules.cohort;
        let (lo, hi) = match (c.age_min, c.age_max) {
            (Some(a), Some(b)) => (a as i32, b as i32),
            (Some(a), None) => (a as i32, (a as i32 + 45).min(90)),
            (None, Some(b)) => (0, b as i32),
            (None, None) => (5, 80),
        };
        let birth = match force_age {
            // (age, true): the birthday is the day after `age_at`
            Some((age, true)) => years_before(age_at, age + 1) + 1,
            Some((age, false)) => years_before(age_at, age),
            None => {
                let y = self.rng.range(i64::from(lo), i64::from(hi)) as i32;
                let top = years_before(age_at, y);
                let bottom = years_before(age_at, y + 1) + 1;
                let b = self.rng.range(i64::from(bottom), i64::from(top)) as Day;
                if days::age_on(b, age_at) == Some(y) {
                    b
                } else {
                    top
                }
            }
        };
        let gender = match &c.sex {
            Some(s) if s == "female" => "female",
            Some(s) if s == "male" => "male",
            Some(_) => "other",
            None => {
                if self.rng.pct(50) {
                    "female"
                } else {
                    "male"
                }
            }
        };
        self.m.patients.push(PatientRec {
            id: self.ids.prefix.clone(),
            birth: Some(birth.min(self.ctx.today)),
            gender: Some(gender),
            deceased: Deceased::No,
            member_id: Some(self.member_id.clone()),
            link: None,
            bundle: 0,
        });
    }

    fn sources(&self) -> Vec<Src> {
        self.ctx
            .rules
            .cohort
            .sources
            .iter()
            .filter_map(|s| Src::of(s))
            .collect()
    }

    /// A source type that is not a cohort source.
    fn other_source(&self) -> Option<Src> {
        let s = self.sources();
        [
            Src::Request,
            Src::Administration,
            Src::Dispense,
            Src::Procedure,
        ]
        .into_iter()
        .find(|x| !s.contains(x))
    }

    fn drug_code(&mut self, set: &str) -> Code {
        let codes = self.ctx.codes(set);
        if self.rng.pct(80) {
            codes[0].clone()
        } else {
            self.rng
                .pick(&codes)
                .cloned()
                .unwrap_or_else(|| codes[0].clone())
        }
    }

    fn add_exposure(
        &mut self,
        src: Src,
        day: Day,
        code: Code,
        supply: u32,
        status: &'static str,
    ) -> usize {
        let repr = if src == Src::Procedure {
            MedRepr::Concept
        } else {
            match self.rng.range(0, 99) {
                0..=69 => MedRepr::Concept,
                70..=84 => MedRepr::Reference,
                _ => MedRepr::Contained,
            }
        };
        let supply = match src {
            Src::Dispense | Src::Request => supply,
            _ => 0,
        };
        let id = self.ids.exposure(src);
        let hour = self.rng.range(8, 17) as u8;
        let dose = match &self.ctx.rules.contract.unit_size {
            Some((size, unit)) if src == Src::Administration => self.dose(size, unit),
            _ => None,
        };
        self.m.exposures.push(Exposure {
            id,
            patient: 0,
            src,
            day,
            tz: Tz::Z(hour),
            supply,
            code,
            repr,
            status,
            bundle: 0,
            dose,
        });
        self.m.exposures.len() - 1
    }

    /// The dose an administration states under `[drug] unit`: 0.3 to 6 unit sizes in tenths (so
    /// part-used vials are common), now and then in grams, and one in ten states none.
    fn dose(&mut self, size: &str, unit: &str) -> Option<(Decimal, String)> {
        if self.rng.pct(10) {
            return None;
        }
        let size = dec(size);
        let v = size * Decimal::from(self.rng.range(3, 60)) / Decimal::from(10);
        if unit == "mg" && self.rng.pct(20) {
            return Some(((v / Decimal::from(1000)).normalize(), "g".into()));
        }
        Some((v.normalize(), unit.to_string()))
    }

    /// What the contract's drug options act on, after the index exposure of someone in the
    /// initial population: under `same_exposure_days`, another source's record of the index
    /// exposure (a dispense before the infusion, its Procedure) that must not move the index date
    /// or count twice; under `[drug] unit`, further cycles (priced by their doses, some beyond a
    /// term's `cost_days`); under `price_stopped`, a stopped infusion that used the drug.
    fn exposure_options(&mut self, index: Day) {
        let ctx = self.ctx;
        let drug = &ctx.rules.contract;
        let exposure = ctx.rules.cohort.exposure.clone();
        let srcs = self.sources();
        if let Some(n) = drug.same_exposure_days {
            let order = source_order(&drug.source_order);
            let at = self
                .m
                .exposures
                .iter()
                .rposition(|e| e.day == index && e.counts() && ctx.in_set(&exposure, &e.code));
            if let Some(at) = at.filter(|_| self.rng.pct(35)) {
                let first = self.m.exposures[at].src;
                let rank = |s: Src| order.iter().position(|x| *x == s).unwrap_or(usize::MAX);
                let later: Vec<Src> = srcs
                    .iter()
                    .copied()
                    .filter(|s| rank(*s) > rank(first))
                    .collect();
                if let Some(&src) = self.rng.pick(&later) {
                    let day = index - self.rng.range(0, i64::from(n)) as Day;
                    let day = day.max(self.m.patients[0].birth.unwrap_or(day));
                    let code = self.m.exposures[at].code.clone();
                    self.add_exposure(src, day, code, 30, Self::done_status(src));
                    self.case.push(format!("same-exposure-from-{}", src.name()));
                }
            }
        }
        let infused = srcs.contains(&Src::Administration);
        if drug.unit_size.is_some() && infused && !self.fill_based() {
            let cycles = self.rng.range(0, 5);
            for j in 1..=cycles {
                let day = index + 21 * j as Day;
                if day <= self.cap {
                    let code = self.drug_code(&exposure);
                    self.add_exposure(Src::Administration, day, code, 0, "completed");
                }
            }
            if cycles > 0 {
                self.case.push(format!("{cycles}-more-cycles"));
            }
        }
        if drug.price_stopped && infused && self.rng.pct(25) {
            let day = index + self.rng.range(1, 40) as Day;
            if day <= self.cap {
                let code = self.drug_code(&exposure);
                self.add_exposure(Src::Administration, day, code, 0, "stopped");
                self.case.push("stopped-infusion".into());
            }
        }
    }

    fn done_status(src: Src) -> &'static str {
        match src {
            Src::Request => "active",
            _ => "completed",
        }
    }

    /// The index exposure (and refills for pharmacy drugs).
    fn index_exposure(&mut self, day: Day) {
        let srcs = self.sources();
        let exposure = self.ctx.rules.cohort.exposure.clone();
        if self.fill_based() {
            self.fills(day);
            return;
        }
        let src = if self.rng.pct(80) || srcs.len() < 2 {
            srcs[0]
        } else {
            *self.rng.pick(&srcs).unwrap_or(&srcs[0])
        };
        let code = self.drug_code(&exposure);
        self.add_exposure(src, day, code.clone(), 30, Self::done_status(src));
        if src != srcs[0] {
            self.case.push(format!("index-by-{}", src.name()));
        }
        if srcs[0] == Src::Dispense && src == Src::Dispense {
            let refills = self.rng.range(0, 4);
            for j in 1..=refills {
                let d = day + 30 * j as Day;
                if d <= self.cap {
                    self.add_exposure(Src::Dispense, d, code.clone(), 30, "completed");
                }
            }
        }
    }

    fn fill_based(&self) -> bool {
        self.ctx.rules.outcomes.iter().any(|o| match &o.rule {
            Rule::Adherence { .. } | Rule::Persistence { .. } => true,
            Rule::Event {
                on_therapy_grace_days,
                ..
            } => on_therapy_grace_days.is_some(),
            _ => false,
        })
    }

    /// Fills of the contracted drug from the index day, after a pattern.
    fn fills(&mut self, index: Day) {
        let exposure = self.ctx.rules.cohort.exposure.clone();
        let mut horizon = 0;
        let mut max_gap = 30;
        let mut adherence = false;
        // (window start, length, covered days needed) of the first adherence outcome
        let mut pdc: Option<(Day, Day, Day)> = None;
        for o in &self.ctx.rules.outcomes {
            match &o.rule {
                Rule::Adherence {
                    window, min_pdc, ..
                } => {
                    horizon = horizon.max(window.to);
                    adherence = true;
                    let len = window.to - window.from + 1;
                    let need = (dec(min_pdc) * Decimal::from(len))
                        .ceil()
                        .to_i32()
                        .unwrap_or(len);
                    pdc.get_or_insert((window.from, len, need));
                }
                Rule::Persistence {
                    window,
                    max_gap_days,
                    ..
                } => {
                    horizon = horizon.max(window.to);
                    max_gap = *max_gap_days as Day;
                    adherence = true;
                }
                Rule::Event { window, .. } => horizon = horizon.max(window.to),
                _ => {}
            }
        }
        let mut supplies: Vec<u32> = Vec::new();
        let rel: Vec<Day> = if adherence {
            let p = self.rng.range(0, 8);
            let (label, v): (&str, Vec<Day>) = match p {
                0 | 1 => (
                    "regular",
                    (0..)
                        .map(|j| 30 * j)
                        .take_while(|d| *d <= horizon)
                        .collect(),
                ),
                2 => ("early-refills-5", (0..5).map(|j| 20 * j).collect()),
                3 => ("early-refills-4", (0..4).map(|j| 20 * j).collect()),
                4 | 5 => {
                    let g = if p == 4 { max_gap } else { max_gap + 1 };
                    let mut v = vec![0, 30, 60];
                    let mut d = 90 + g;
                    while d <= horizon {
                        v.push(d);
                        d += 30;
                    }
                    (if p == 4 { "gap-at-max" } else { "gap-over-max" }, v)
                }
                6 | 7 if pdc.is_some_and(|(from, _, need)| from == 0 && need > 31) => {
                    // 30-day fills from the index, then one short fill that ends on the
                    // window's last day: exactly the covered days needed (or one fewer)
                    let (_, len, need) = pdc.unwrap_or((0, 0, 0));
                    let short = if p == 6 { 0 } else { 1 };
                    let full = (need - 1) / 30;
                    let last = need - 30 * full - short;
                    let mut v: Vec<Day> = (0..full).map(|j| 30 * j).collect();
                    supplies = vec![30; v.len()];
                    v.push(len - last);
                    supplies.push(last as u32);
                    (
                        if p == 6 {
                            "pdc-exactly-minimum"
                        } else {
                            "pdc-one-day-short"
                        },
                        v,
                    )
                }
                _ => ("lapse", vec![0, 30]),
            };
            self.case.push(format!("fills:{label}"));
            // adherence known by construction when its window has closed with no death
            let adherence_met = match label {
                "regular" | "pdc-exactly-minimum" => Some(true),
                "lapse" | "pdc-one-day-short" => Some(false),
                _ => None,
            };
            let member = self.intent.membership == Some(Some(Membership::Member));
            if let (Some(met), None, true) = (adherence_met, self.death, member) {
                for o in &self.ctx.rules.outcomes {
                    if let Rule::Adherence { window, .. } = &o.rule {
                        if window.from == 0 && self.ctx.today > index + window.to {
                            let st = if met { Status::Met } else { Status::NotMet };
                            self.intent.outcomes.push((o.id.clone(), st));
                        }
                    }
                }
            }
            v
        } else {
            let k = self.rng.range(1, i64::from(horizon / 30 + 2));
            self.case.push(format!("fills:{k}"));
            (0..k as Day).map(|j| 30 * j).collect()
        };
        let code = self.drug_code(&exposure);
        for (i, d) in rel.into_iter().enumerate() {
            if index + d <= self.cap {
                let supply = supplies.get(i).copied().unwrap_or(30);
                self.add_exposure(Src::Dispense, index + d, code.clone(), supply, "completed");
            }
        }
    }

    fn noise(&mut self) {
        let lo = self.index - 300;
        let hi = self.cap;
        if lo > hi {
            return;
        }
        let drug = NOISE_DRUGS
            .iter()
            .map(|(s, c)| (s.to_string(), c.to_string()))
            .find(|c| !self.ctx.all_codes.contains(c));
        if let Some(code) = drug {
            let d = self.rng.range(i64::from(lo), i64::from(hi)) as Day;
            self.add_exposure(Src::Dispense, d, code, 30, "completed");
        }
        if let Some((s, c, u)) = NOISE_LABS
            .iter()
            .find(|(s, c, _)| !self.ctx.all_codes.contains(&(s.to_string(), c.to_string())))
        {
            let d = self.rng.range(i64::from(lo), i64::from(hi)) as Day;
            let v = Decimal::from(self.rng.range(70, 160));
            let id = self.ids.next("obs");
            self.m.labs.push(Lab {
                id,
                patient: 0,
                code: (s.to_string(), c.to_string()),
                day: d,
                tz: Tz::Z(9),
                value: v,
                unit: u.to_string(),
                status: "final",
                identifier: None,
                bundle: 0,
                prior: None,
            });
        }
        if let Some((s, c)) = NOISE_REASONS
            .iter()
            .find(|(s, c)| !self.ctx.all_codes.contains(&(s.to_string(), c.to_string())))
        {
            let d = self.rng.range(i64::from(lo), i64::from(hi)) as Day;
            let id = self.ids.next("enc");
            self.m.encs.push(Enc {
                id,
                patient: 0,
                class: "AMB".into(),
                day: d,
                tz: Tz::Z(10),
                los: 0,
                reason: Some((s.to_string(), c.to_string())),
                cond: None,
                status: "finished",
                bundle: 0,
            });
        }
    }

    fn random_in_ip(&mut self) -> Day {
        let (is, ie) = self.ctx.intake;
        let hi = ie.min(self.ctx.today);
        self.rng.range(i64::from(is), i64::from(hi)) as Day
    }

    fn not_ip(&mut self, v: NotIp) {
        let (is, ie) = self.ctx.intake;
        let today = self.ctx.today;
        let exposure = self.ctx.rules.cohort.exposure.clone();
        let srcs = self.sources();
        self.intent.membership = Some(None);
        let mut v = v;
        if matches!(v, NotIp::PostIntake) && ie >= today {
            v = NotIp::PreIntake;
        }
        if matches!(v, NotIp::WrongSource) && self.other_source().is_none() {
            v = NotIp::Cancelled;
        }
        if matches!(v, NotIp::Cancelled | NotIp::WrongSource) && ie.min(today) < is {
            v = NotIp::PreIntake;
        }
        let nominal = match v {
            NotIp::PreIntake => {
                let hi = (is - 1).min(today);
                self.rng.range(i64::from(hi - 400), i64::from(hi)) as Day
            }
            NotIp::PostIntake => self.rng.range(i64::from(ie + 1), i64::from(today)) as Day,
            _ => {
                if ie.min(today) >= is {
                    self.random_in_ip()
                } else {
                    today
                }
            }
        };
        self.index = nominal;
        self.base_patient(nominal, None);
        self.eligibility(nominal, None);
        let code = self.drug_code(&exposure);
        match v {
            NotIp::PreIntake => {
                let k = self.rng.range(1, 3);
                let hi = (is - 1).min(today);
                for j in 0..k {
                    let d = (nominal - 30 * j as Day).min(hi);
                    self.add_exposure(srcs[0], d, code.clone(), 30, Self::done_status(srcs[0]));
                }
                self.case.push("not-in-ip:exposure-before-intake".into());
            }
            NotIp::PostIntake => {
                self.add_exposure(srcs[0], nominal, code, 30, Self::done_status(srcs[0]));
                self.case.push("not-in-ip:exposure-after-intake".into());
            }
            NotIp::UnrelatedOnly => {
                self.case.push("not-in-ip:unrelated-drug-only".into());
                self.noise();
            }
            NotIp::Cancelled => {
                let src = srcs[0];
                let status = match src {
                    Src::Dispense => {
                        if self.rng.pct(50) {
                            "cancelled"
                        } else {
                            "entered-in-error"
                        }
                    }
                    Src::Administration | Src::Procedure => "not-done",
                    Src::Request => "cancelled",
                };
                self.add_exposure(src, nominal, code, 30, status);
                self.case.push(format!("not-in-ip:exposure-{status}"));
            }
            NotIp::WrongSource => {
                let src = self.other_source().unwrap_or(Src::Request);
                self.add_exposure(src, nominal, code, 30, Self::done_status(src));
                self.case
                    .push(format!("not-in-ip:exposure-from-{}", src.name()));
            }
        }
    }

    fn not_new_user(&mut self, v: Nnu) {
        let (is, ie) = self.ctx.intake;
        let hi = ie.min(self.ctx.today);
        let w = self.ctx.rules.cohort.washout_days.unwrap_or(0) as Day;
        let exposure = self.ctx.rules.cohort.exposure.clone();
        let v = match v {
            Nnu::OtherSource if self.other_source().is_none() => Nnu::BeforeIntake,
            x => x,
        };
        let index = match v {
            Nnu::OtherSource => self.random_in_ip(),
            _ => self.rng.range(i64::from(is), i64::from(hi.min(is + w - 1))) as Day,
        };
        self.index = index;
        self.intent.membership = Some(Some(Membership::NotNewUser));
        self.base_patient(index, None);
        self.eligibility(index, None);
        self.index_exposure(index);
        let code = self.drug_code(&exposure);
        let srcs = self.sources();
        match v {
            Nnu::BeforeIntake => {
                let d = self.rng.range(i64::from(index - w), i64::from(is - 1)) as Day;
                self.add_exposure(srcs[0], d, code, 30, Self::done_status(srcs[0]));
                self.case.push("not-new-user:exposure-in-washout".into());
            }
            Nnu::Boundary => {
                self.add_exposure(srcs[0], index - w, code, 30, Self::done_status(srcs[0]));
                self.case
                    .push("not-new-user:exposure-on-first-washout-day".into());
            }
            Nnu::OtherSource => {
                let src = self.other_source().unwrap_or(Src::Request);
                let d = index - self.rng.range(1, i64::from(w)) as Day;
                self.add_exposure(src, d, code, 30, Self::done_status(src));
                self.case
                    .push(format!("not-new-user:washout-exposure-from-{}", src.name()));
            }
        }
    }

    fn ineligible(&mut self, brk: Break) {
        let index = self.random_in_ip();
        self.index = index;
        self.intent.membership = Some(Some(Membership::Ineligible));
        let ctx = self.ctx;
        let c = &ctx.rules.cohort;
        let force = match brk {
            Break::AgeYoung => c.age_min.map(|a| (a as i32 - 1, true)),
            Break::AgeOld => c
                .age_max
                .map(|a| (a as i32 + 1 + self.rng.range(0, 1) as i32, false)),
            _ => None,
        };
        self.base_patient(index, force);
        if brk == Break::Sex {
            let g = if c.sex.as_deref() == Some("female") {
                "male"
            } else {
                "female"
            };
            self.m.patients[0].gender = Some(g);
        }
        self.index_exposure(index);
        self.eligibility(index, Some(brk));
        self.case
            .push(format!("ineligible:{}", self.break_label(brk)));
    }

    fn break_label(&self, b: Break) -> String {
        let c = &self.ctx.rules.cohort;
        match b {
            Break::AgeYoung => "too-young".into(),
            Break::AgeOld => "too-old".into(),
            Break::Sex => "sex".into(),
            Break::DxNone(i) => format!("no-diagnosis({})", c.diagnoses[i]),
            Break::DxAfter(i) => format!("diagnosis-after-index({})", c.diagnoses[i]),
            Break::DxRefuted(i) => format!("diagnosis-refuted({})", c.diagnoses[i]),
            Break::DxResolved(i) => format!("diagnosis-resolved({})", c.diagnoses[i]),
            Break::LabOut(i) => format!("lab-out-of-range({})", c.labs[i].lab),
            Break::LabLatestOut(i) => format!("latest-lab-out-of-range({})", c.labs[i].lab),
            Break::LabOld(i) => format!("lab-before-look-back({})", c.labs[i].lab),
            Break::LabUnusable(i) => format!("lab-unconvertible-unit({})", c.labs[i].lab),
            Break::FindingNone(i) => format!("no-finding({})", c.findings[i].observation),
            Break::FindingWrong(i) => {
                format!("finding-value-not-in-set({})", c.findings[i].observation)
            }
            Break::FindingOld(i) => {
                format!("finding-before-look-back({})", c.findings[i].observation)
            }
            Break::TherapyNone(i) => format!("no-therapy({})", c.therapies[i].valueset),
            Break::TherapyOld(i) => {
                format!("therapy-before-look-back({})", c.therapies[i].valueset)
            }
            Break::CovNone => "no-coverage".into(),
            Break::CovOther => "coverage-other-payer".into(),
            Break::CovEnded => "coverage-ended-before-index".into(),
            Break::CovCancelled => "coverage-cancelled".into(),
        }
    }

    /// Cohort criteria data around `index`, all met except `brk`.
    fn eligibility(&mut self, index: Day, brk: Option<Break>) {
        let ctx = self.ctx;
        let c = &ctx.rules.cohort;
        let avoid: Vec<String> = ctx
            .rules
            .outcomes
            .iter()
            .filter_map(|o| match &o.rule {
                Rule::Event { diagnosis, .. } => Some(diagnosis.clone()),
                _ => None,
            })
            .chain(ctx.rules.exclusions.diagnoses.iter().cloned())
            .collect();
        for (i, dx) in c.diagnoses.iter().enumerate() {
            if brk == Some(Break::DxNone(i)) {
                continue;
            }
            let codes = ctx.codes(dx);
            let clean: Vec<Code> = codes
                .iter()
                .filter(|k| !avoid.iter().any(|a| ctx.in_set(a, k)))
                .cloned()
                .collect();
            let code = self
                .rng
                .pick(&clean)
                .or(codes.first())
                .cloned()
                .unwrap_or_default();
            let mut onset = if !clean.is_empty() && self.rng.pct(10) {
                index
            } else {
                index - self.rng.range(1, 900) as Day
            };
            if brk == Some(Break::DxAfter(i)) {
                onset = (index + self.rng.range(1, 60) as Day).min(self.cap);
                if onset <= index {
                    // no day after the index yet: no diagnosis at all
                    continue;
                }
            }
            let clinical = if brk == Some(Break::DxResolved(i)) {
                Some("resolved")
            } else if self.rng.pct(10) {
                None
            } else {
                Some("active")
            };
            let verification = if brk == Some(Break::DxRefuted(i)) {
                "refuted"
            } else {
                "confirmed"
            };
            let recorded = !clean.is_empty() && self.rng.pct(10);
            let id = self.ids.next("cond");
            self.m.conds.push(Cond {
                id,
                patient: 0,
                code,
                onset: Some(onset),
                recorded,
                clinical,
                verification,
                bundle: 0,
            });
        }
        for (i, l) in c.labs.iter().enumerate() {
            let within = l.within_days as Day;
            let lab = l.lab.clone();
            let cmp = l.value.clone();
            let lo = index - within;
            let day = if self.rng.pct(15) {
                index
            } else if self.rng.pct(10) {
                lo
            } else {
                self.rng.range(i64::from(lo), i64::from(index)) as Day
            };
            match brk {
                Some(Break::LabOut(j)) if j == i => {
                    let v = self.failing(&lab, &cmp, true);
                    self.add_lab(&lab, day, Tz::Z(9), v, "final", true);
                }
                Some(Break::LabLatestOut(j)) if j == i => {
                    let d2 = (day.max(lo + 1)).min(index);
                    let d1 = self.rng.range(i64::from(lo), i64::from(d2 - 1)) as Day;
                    let v1 = self.meeting(&lab, &cmp, false);
                    self.add_lab(&lab, d1, Tz::Z(9), v1, "final", true);
                    let v2 = self.failing(&lab, &cmp, false);
                    self.add_lab(&lab, d2, Tz::Z(10), v2, "final", true);
                }
                Some(Break::LabOld(j)) if j == i => {
                    let v = self.meeting(&lab, &cmp, false);
                    let d = lo - 1 - self.rng.range(0, 30) as Day;
                    self.add_lab(&lab, d, Tz::Z(9), v, "final", true);
                }
                Some(Break::LabUnusable(j)) if j == i => {
                    let v = self.meeting(&lab, &cmp, false);
                    let k = self.add_lab(&lab, day, Tz::Z(9), v, "final", false);
                    self.m.labs[k].unit = "mg".into();
                }
                _ => {
                    if self.rng.pct(30) && day > lo {
                        let d0 = self.rng.range(i64::from(lo), i64::from(day - 1)) as Day;
                        let v0 = self.failing(&lab, &cmp, false);
                        self.add_lab(&lab, d0, Tz::Z(8), v0, "final", true);
                    }
                    let v = self.meeting(&lab, &cmp, true);
                    self.add_lab(&lab, day, Tz::Z(11), v, "final", true);
                    if self.rng.pct(20) {
                        let d = lo - 1 - self.rng.range(0, 60) as Day;
                        let v = self.failing(&lab, &cmp, false);
                        self.add_lab(&lab, d, Tz::Z(9), v, "final", true);
                    }
                }
            }
        }
        for (i, f) in c.findings.iter().enumerate() {
            if brk == Some(Break::FindingNone(i)) {
                continue;
            }
            let within = f.within_days as Day;
            let code = ctx.codes(&f.observation)[0].clone();
            let yes = self
                .rng
                .pick(&ctx.codes(&f.value_in))
                .cloned()
                .unwrap_or_default();
            let value = if brk == Some(Break::FindingWrong(i)) {
                oracle::unused(&yes)
            } else {
                yes
            };
            let day = if brk == Some(Break::FindingOld(i)) {
                index - within - 1 - self.rng.range(0, 60) as Day
            } else {
                index
                    - if self.rng.pct(12) {
                        within
                    } else {
                        self.rng.range(0, i64::from(within)) as Day
                    }
            };
            let id = self.ids.next("obs");
            self.m.coded.push(Coded {
                id,
                patient: 0,
                code,
                day,
                tz: Tz::Z(10),
                value,
                status: "final",
                bundle: 0,
                prior: None,
            });
        }
        for (i, t) in c.therapies.iter().enumerate() {
            if brk == Some(Break::TherapyNone(i)) {
                continue;
            }
            let within = t.within_days as Day;
            let code = ctx.codes(&t.valueset)[0].clone();
            let day = if brk == Some(Break::TherapyOld(i)) {
                // with supply_counts the 90 days' supply must end before the look-back too
                let supplied = if t.supply_counts { 89 } else { 0 };
                index - within - 1 - supplied - self.rng.range(0, 60) as Day
            } else if t.supply_counts && self.rng.pct(25) {
                // dated before the look-back, supplied into it
                self.case.push("therapy-supplied-into-look-back".into());
                index - within - self.rng.range(1, 89) as Day
            } else {
                index
                    - if self.rng.pct(12) {
                        within
                    } else {
                        self.rng.range(0, i64::from(within)) as Day
                    }
            };
            self.add_exposure(Src::Dispense, day, code.clone(), 90, "completed");
            if self.rng.pct(40) {
                self.add_exposure(Src::Dispense, day - within - 30, code, 90, "completed");
            }
        }
        let want_cov = c.coverage || self.rng.pct(30);
        if want_cov && brk != Some(Break::CovNone) {
            let mut start = if self.rng.pct(10) {
                index
            } else {
                index - self.rng.range(1, 700) as Day
            };
            let mut end = if self.rng.pct(50) {
                None
            } else {
                Some(
                    index
                        + if self.rng.pct(8) {
                            0
                        } else {
                            self.rng.range(30, 900) as Day
                        },
                )
            };
            let mut payor = ctx.payer_ref.clone();
            let mut status = "active";
            match brk {
                Some(Break::CovOther) => payor = OTHER_PAYER.into(),
                Some(Break::CovEnded) => {
                    let e = index - 1 - self.rng.range(0, 60) as Day;
                    end = Some(e);
                    start = e - self.rng.range(30, 700) as Day;
                }
                Some(Break::CovCancelled) => status = "cancelled",
                _ => {}
            }
            let id = self.ids.next("cov");
            self.m.covs.push(Cov {
                id,
                patient: 0,
                payor,
                start,
                end,
                status,
                bundle: 0,
            });
        }
    }

    // ---------------------------------------------------------------------------------------
    // members
    // ---------------------------------------------------------------------------------------

    fn leaves(&self) -> Vec<&'a OutcomeDef> {
        let ctx: &'a Ctx = self.ctx;
        ctx.rules
            .outcomes
            .iter()
            .filter(|o| !matches!(o.rule, Rule::All { .. } | Rule::Any { .. }))
            .collect()
    }

    /// End of an outcome's window relative to the index day.
    fn rel_end(o: &OutcomeDef) -> Day {
        match &o.rule {
            Rule::Survival { day } => *day,
            r => oracle::window_of(r).to,
        }
    }

    fn member_index(&mut self) -> Day {
        let (is, ie) = self.ctx.intake;
        let today = self.ctx.today;
        let hi = ie.min(today);
        if self.rng.pct(4) {
            self.case.push("index-on-intake-start".into());
            return is;
        }
        let leaves = self.leaves();
        let to = self
            .rng
            .pick(&leaves)
            .map(|o| Self::rel_end(o))
            .unwrap_or(0);
        let r = self.rng.range(0, 99);
        let (lo2, hi2) = if r < 35 {
            (is, hi.min(today - to - 1))
        } else if r < 60 {
            (is.max(today - to), hi)
        } else {
            (is, hi)
        };
        if lo2 <= hi2 {
            self.rng.range(i64::from(lo2), i64::from(hi2)) as Day
        } else {
            self.rng.range(i64::from(is), i64::from(hi)) as Day
        }
    }

    fn member(&mut self, special: Special) {
        let ctx = self.ctx;
        let today = ctx.today;
        let index = self.member_index();
        self.index = index;
        self.intent.membership = Some(Some(Membership::Member));
        self.case.push("member".into());
        // death first: no data after it
        let leaves = self.leaves();
        match special {
            Special::Death => {
                let o = *self.rng.pick(&leaves).unwrap_or(&leaves[0]);
                let end = index + Self::rel_end(o);
                let max_end = leaves
                    .iter()
                    .map(|o| index + Self::rel_end(o))
                    .max()
                    .unwrap_or(index);
                let dd = if self.rng.pct(20) && max_end < today {
                    self.case.push("died-after-every-window".into());
                    self.rng.range(i64::from(max_end + 1), i64::from(today)) as Day
                } else {
                    self.case.push(format!("died-by-end-of({})", o.id));
                    self.rng
                        .range(i64::from(index + 1), i64::from(end.min(today)))
                        as Day
                };
                if dd > index && dd <= today {
                    self.death = Some(dd);
                    self.cap = dd;
                }
            }
            Special::DeathUnknown => self.case.push("deceased-without-date".into()),
            _ => {}
        }
        let c = &ctx.rules.cohort;
        let force = if c.age_min.is_some() && self.rng.pct(5) {
            self.case.push("age-reached-on-index-day".into());
            c.age_min.map(|a| (a as i32, false))
        } else {
            None
        };
        self.base_patient(index, force);
        match special {
            Special::DeathUnknown => self.m.patients[0].deceased = Deceased::Unknown,
            _ => {
                if let Some(d) = self.death {
                    self.m.patients[0].deceased = Deceased::On(d);
                }
            }
        }
        self.index_exposure(index);
        self.exposure_options(index);
        self.eligibility(index, None);
        self.washout_variant(index);
        if special == Special::ExclusionDx {
            self.exclusion_dx(index);
            let onset = self.excluded_from.flatten();
            let ctx = self.ctx;
            for (id, st) in self.intent.outcomes.iter_mut() {
                let end = ctx
                    .rules
                    .outcomes
                    .iter()
                    .find(|o| &o.id == id)
                    .map(|o| index + Self::rel_end(o));
                if end.is_some_and(|e| onset.is_none_or(|d| d <= e)) {
                    *st = Status::Excluded;
                }
            }
        }
        if special == Special::Switch {
            self.switch(index);
            self.intent.outcomes.clear();
        }
        for o in leaves {
            if special == Special::DeathUnknown {
                // no data in any window
                continue;
            }
            self.outcome(o);
        }
        if matches!(special, Special::Split | Special::Link) {
            self.split(special == Special::Link);
        }
    }

    fn washout_variant(&mut self, index: Day) {
        let Some(w) = self.ctx.rules.cohort.washout_days else {
            return;
        };
        let w = w as Day;
        let (is, _) = self.ctx.intake;
        let exposure = self.ctx.rules.cohort.exposure.clone();
        let src = self.sources()[0];
        let r = self.rng.range(0, 99);
        if r < 6 && index - w - 1 < is {
            let code = self.drug_code(&exposure);
            self.add_exposure(src, index - w - 1, code, 30, Self::done_status(src));
            self.case.push("exposure-day-before-washout".into());
        } else if r < 12 {
            let code = self.drug_code(&exposure);
            let status = match src {
                Src::Dispense => "cancelled",
                Src::Request => "entered-in-error",
                _ => "not-done",
            };
            let d = index - self.rng.range(1, i64::from(w)) as Day;
            self.add_exposure(src, d, code, 30, status);
            self.case.push(format!("{status}-exposure-in-washout"));
        }
    }

    fn exclusion_dx(&mut self, index: Day) {
        let ctx = self.ctx;
        let set = &ctx.rules.exclusions.diagnoses[0];
        let code = ctx.codes(set)[0].clone();
        let ends: Vec<Day> = self
            .leaves()
            .iter()
            .map(|o| index + Self::rel_end(o))
            .collect();
        let first_end = ends.iter().copied().min().unwrap_or(index);
        let last_end = ends.iter().copied().max().unwrap_or(index);
        let r = self.rng.range(0, 3);
        let (onset, label) = match r {
            0 => (Some(index - self.rng.range(1, 300) as Day), "before-index"),
            1 if index < first_end.min(self.cap) => (
                Some(
                    self.rng
                        .range(i64::from(index + 1), i64::from(first_end.min(self.cap)))
                        as Day,
                ),
                "in-follow-up",
            ),
            2 if last_end < self.cap => (
                Some(self.rng.range(i64::from(last_end + 1), i64::from(self.cap)) as Day),
                "after-every-window",
            ),
            _ => (None, "without-onset"),
        };
        let id = self.ids.next("cond");
        self.m.conds.push(Cond {
            id,
            patient: 0,
            code,
            onset,
            recorded: false,
            clinical: Some("active"),
            verification: "confirmed",
            bundle: 0,
        });
        self.excluded_from = Some(onset);
        self.case.push(format!("exclusion-diagnosis-{label}"));
    }

    fn switch(&mut self, index: Day) {
        let ctx = self.ctx;
        if index + 1 > self.cap {
            return;
        }
        let set = &ctx.rules.exclusions.switches[0];
        let code = ctx.codes(set)[0].clone();
        let s = self
            .rng
            .range(i64::from(index + 1), i64::from((index + 60).min(self.cap)))
            as Day;
        let exposure = ctx.rules.cohort.exposure.clone();
        self.m
            .exposures
            .retain(|e| !(e.day >= s && ctx.in_set(&exposure, &e.code)));
        self.add_exposure(Src::Dispense, s, code, 30, "completed");
        if self.rng.pct(30) && s + 10 <= self.cap {
            let c = self.drug_code(&exposure);
            self.add_exposure(Src::Dispense, s + 10, c, 30, "completed");
            self.case.push("switched-and-back".into());
        } else {
            self.case.push("switched".into());
        }
    }

    /// Two Patient records for the person: some data moves to the second one.
    fn split(&mut self, by_link: bool) {
        let prefix = self.ids.prefix.clone();
        // "-10" sorts before "-9": the person is named by the second record
        self.m.patients[0].id = format!("{prefix}-9");
        let later = self.rng.pct(50);
        let bundle = usize::from(later);
        let mut b = self.m.patients[0].clone();
        b.id = format!("{prefix}-10");
        b.bundle = bundle;
        if by_link {
            b.member_id = None;
            b.link = Some(format!("{prefix}-9"));
        }
        self.m.patients.push(b);
        self.case.push(format!(
            "two-patient-records-{}{}",
            if by_link { "linked" } else { "same-member-id" },
            if later { "-second-later" } else { "" }
        ));
        // when the second record comes later, what was already sent later (amendments,
        // corrections) moves one Bundle further, so that it still follows what it replaces
        macro_rules! mv {
            ($v:expr) => {
                for x in $v.iter_mut() {
                    if later && x.bundle >= 1 {
                        x.bundle += 1;
                    }
                    if self.rng.pct(35) {
                        x.patient = 1;
                        x.bundle = x.bundle.max(bundle);
                    }
                }
            };
        }
        mv!(self.m.exposures);
        mv!(self.m.labs);
        mv!(self.m.coded);
        mv!(self.m.conds);
        mv!(self.m.encs);
        mv!(self.m.covs);
        // an encounter's diagnosis must travel with it
        let moved_conds: Vec<(String, usize, usize)> = self
            .m
            .encs
            .iter()
            .filter_map(|e| e.cond.clone().map(|c| (c, e.patient, e.bundle)))
            .collect();
        for (cid, p, bd) in moved_conds {
            if let Some(k) = self.m.conds.iter_mut().find(|k| k.id == cid) {
                k.patient = p;
                k.bundle = k.bundle.max(bd);
            }
        }
    }

    // ---------------------------------------------------------------------------------------
    // values
    // ---------------------------------------------------------------------------------------

    fn lab_dp(&self, lab: &str) -> u32 {
        self.ctx.labs.get(lab).map_or(1, |l| l.dp)
    }

    fn delta(&mut self, t: Decimal, dp: u32) -> Decimal {
        let scale = t.abs().max(Decimal::ONE);
        let frac = Decimal::new(self.rng.range(4, 25), 2);
        (scale * frac).round_dp(dp).max(step(dp))
    }

    /// A value in the comparison's unit that satisfies it (`boundary`: sometimes exactly on it).
    fn satisfying(&mut self, cmp: &Comparison, dp: u32, boundary: bool) -> Decimal {
        let t = dec(&cmp.value);
        let d = self.delta(t, dp);
        let on = boundary && self.rng.pct(25);
        match cmp.op.as_str() {
            "<" => t - d,
            "<=" if on => t,
            "<=" => t - d,
            ">" => t + d,
            ">=" if on => t,
            ">=" => t + d,
            _ => t,
        }
    }

    /// A value that does not satisfy the comparison.
    fn violating(&mut self, cmp: &Comparison, dp: u32, boundary: bool) -> Decimal {
        let t = dec(&cmp.value);
        let d = self.delta(t, dp);
        let on = boundary && self.rng.pct(25);
        match cmp.op.as_str() {
            "<" if on => t,
            "<" => t + d,
            "<=" => t + d,
            ">" if on => t,
            ">" => t - d,
            ">=" => t - d,
            _ => t + d,
        }
    }

    fn positive(&self, lab: &str, v: Decimal) -> Decimal {
        let s = step(self.lab_dp(lab));
        if v <= Decimal::ZERO {
            s
        } else {
            v
        }
    }

    fn meeting(&mut self, lab: &str, cmp: &Comparison, boundary: bool) -> Decimal {
        let dp = self.lab_dp(lab);
        let v = self.satisfying(cmp, dp, boundary);
        self.positive(lab, v)
    }

    fn failing(&mut self, lab: &str, cmp: &Comparison, boundary: bool) -> Decimal {
        let dp = self.lab_dp(lab);
        let v = self.violating(cmp, dp, boundary);
        self.positive(lab, v)
    }

    /// A plausible value of a lab (baselines, values that do not decide).
    fn typical(&mut self, lab: &str) -> Decimal {
        let ctx = self.ctx;
        if let Some(c) = ctx.rules.cohort.labs.iter().find(|c| c.lab == lab) {
            let cmp = c.value.clone();
            return self.meeting(lab, &cmp, false);
        }
        let unit = ctx
            .labs
            .get(lab)
            .map(|l| l.unit.clone())
            .unwrap_or_default();
        match unit.as_str() {
            "%" => Decimal::new(self.rng.range(70, 100), 1),
            "mg/dL" => Decimal::from(self.rng.range(100, 190)),
            "{score}" => Decimal::from(self.rng.range(1, 4)),
            _ => Decimal::from(self.rng.range(40, 120)),
        }
    }

    /// A result of `lab` with `value` in the lab's unit; `alt`: may be sent in the analyte's
    /// other unit (HbA1c mmol/mol, LDL mmol/L) when that keeps it clearly on the same side.
    fn add_lab(
        &mut self,
        lab: &str,
        day: Day,
        tz: Tz,
        value: Decimal,
        status: &'static str,
        alt: bool,
    ) -> usize {
        let info = self.ctx.labs[lab].clone();
        let mut code = self.rng.pick(&info.codes).cloned().unwrap_or_default();
        let mut sent = (value, info.unit.clone());
        if alt && self.rng.pct(20) {
            let other = match (info.analyte, info.unit.as_str()) {
                (Some(Analyte::HbA1c), "%") => {
                    let ifcc =
                        ((value - Decimal::new(2152, 3)) / Decimal::new(9148, 5)).round_dp(1);
                    Some((ifcc, "mmol/mol"))
                }
                (Some(Analyte::Ldl), "mg/dL") => {
                    Some(((value / Decimal::new(3867, 2)).round_dp(2), "mmol/L"))
                }
                _ => None,
            };
            if let (Some((v, u)), Some(ac)) = (other, self.rng.pick(&info.analyte_codes).cloned()) {
                let back = units::convert(info.analyte, u, v, &info.unit);
                // clearly the same: within a tenth of the lab's smallest generated step
                let tol = step(info.dp) / Decimal::from(5);
                if back.is_some_and(|b| (b - value).abs() < tol) && v > Decimal::ZERO {
                    sent = (v, u.to_string());
                    code = ac;
                }
            }
        }
        let id = self.ids.next("obs");
        self.m.labs.push(Lab {
            id,
            patient: 0,
            code,
            day,
            tz,
            value: sent.0,
            unit: sent.1,
            status,
            identifier: None,
            bundle: 0,
            prior: None,
        });
        self.m.labs.len() - 1
    }

    /// The latest usable value of a lab in [from, to] as the data stand now.
    fn latest_value(&self, lab: &str, from: Day, to: Day) -> Option<Decimal> {
        let info = self.ctx.labs.get(lab)?;
        let set = &self.ctx.rules.labs[lab].valueset;
        self.m
            .labs
            .iter()
            .filter(|l| self.ctx.in_set(set, &l.code) && l.day >= from && l.day <= to)
            .filter(|l| {
                matches!(l.status, "final" | "amended" | "corrected") && l.identifier.is_none()
            })
            .filter_map(|l| {
                let a = if l.code.0 == "http://loinc.org" {
                    units::analyte(&l.code.1)
                } else {
                    None
                };
                units::convert(a, &l.unit, l.value, &info.unit)
                    .map(|v| (model::instant(l.day, l.tz), v))
            })
            .max_by_key(|x| x.0)
            .map(|x| x.1)
    }

    /// A day after the death, in the window ending `b` and not after the evaluation day: data
    /// there must not count.
    fn after_death(&mut self, a: Day, b: Day) -> Option<Day> {
        let lo = (self.death? + 1).max(a);
        let hi = b.min(self.ctx.today);
        (lo <= hi && self.rng.pct(30)).then(|| self.rng.range(i64::from(lo), i64::from(hi)) as Day)
    }

    fn hour(&mut self) -> Tz {
        Tz::Z(self.rng.range(8, 17) as u8)
    }

    /// Distinct days in [a, e], sorted.
    fn days_in(&mut self, a: Day, e: Day, k: usize) -> Vec<Day> {
        let span = (e - a + 1).max(0) as usize;
        let k = k.min(span);
        let mut out: Vec<Day> = Vec::new();
        while out.len() < k {
            let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
            if !out.contains(&d) {
                out.push(d);
            }
        }
        out.sort();
        out
    }

    // ---------------------------------------------------------------------------------------
    // outcomes
    // ---------------------------------------------------------------------------------------

    fn outcome(&mut self, o: &OutcomeDef) {
        let n = self.intent.outcomes.len();
        self.outcome_data(o);
        // an exclusion diagnosis by the window's end wins over the data
        let b = self.index + oracle::window_of(&o.rule).to;
        if let Some(onset) = self.excluded_from {
            if onset.is_none_or(|d| d <= b) {
                for x in self.intent.outcomes.iter_mut().skip(n) {
                    x.1 = Status::Excluded;
                }
                return;
            }
        }
        // what the contract says a death before the outcome was measured, and missing data
        // past the grace days, come to (the data were built for the plain status)
        let died_in = self.death.is_some_and(|d| d <= b);
        let today = self.ctx.today;
        let is_event = matches!(o.rule, Rule::Event { .. });
        for x in self.intent.outcomes.iter_mut().skip(n) {
            x.1 = match (x.1, o.on_death) {
                (Status::Excluded, OnDeath::NotMet) if died_in => Status::NotMet,
                (Status::Excluded, OnDeath::UntilDeath) if died_in && is_event => Status::Met,
                (s, _) => s,
            };
            if let (Status::MissingData, Some((met, grace))) = (x.1, o.missing_data.decides()) {
                if today > b + grace as Day {
                    x.1 = if met { Status::Met } else { Status::NotMet };
                }
            }
        }
    }

    fn outcome_data(&mut self, o: &OutcomeDef) {
        let today = self.ctx.today;
        let index = self.index;
        let w = oracle::window_of(&o.rule);
        let (a, b) = (index + w.from, index + w.to);
        let died_in = self.death.is_some_and(|d| d <= b);
        let closed = today > b || died_in;
        let e = b.min(self.cap);
        let has_days = e >= a;
        let mut reach: Vec<Status> = Vec::new();
        let none_status = if died_in {
            Status::Excluded
        } else if closed {
            Status::MissingData
        } else {
            Status::Pending
        };
        match &o.rule {
            Rule::LabTarget { pick, .. } | Rule::ChangeFromBaseline { pick, .. } => {
                if has_days && (closed || *pick == Pick::First) {
                    reach.extend([Status::Met, Status::NotMet]);
                }
                reach.push(none_status);
            }
            Rule::CodedResponse { pick, .. } => {
                if has_days && (closed || matches!(pick, Pick::First | Pick::Any)) {
                    reach.push(Status::Met);
                }
                if has_days && (closed || *pick == Pick::First) {
                    reach.push(Status::NotMet);
                }
                reach.push(none_status);
            }
            Rule::Event { .. } => {
                if has_days {
                    reach.push(Status::NotMet);
                }
                reach.push(if died_in {
                    Status::Excluded
                } else if closed {
                    Status::Met
                } else {
                    Status::Pending
                });
            }
            _ => return,
        }
        let target = *self.rng.pick(&reach).unwrap_or(&none_status);
        let label = match &o.rule {
            Rule::LabTarget {
                lab,
                pick,
                target: cmp,
                ..
            } => {
                let (lab, pick, cmp) = (lab.clone(), *pick, cmp.clone());
                let t = dec(&cmp.value);
                self.lab_outcome(&lab, a, b, pick, target, |me, met| {
                    let v = if met {
                        me.meeting(&lab, &cmp, true)
                    } else {
                        me.failing(&lab, &cmp, true)
                    };
                    (v, v != t)
                })
            }
            Rule::ChangeFromBaseline {
                lab,
                baseline,
                pick,
                change,
                target: cmp,
                ..
            } => {
                let (lab, pick, change, cmp) = (lab.clone(), *pick, *change, cmp.clone());
                let (bs, be) = (index + baseline.from, (index + baseline.to).min(self.cap));
                let existing = self.latest_value(&lab, bs, be);
                let mut parts = Vec::new();
                let left_empty = self
                    .no_baseline
                    .iter()
                    .any(|(l, x, y)| *l == lab && *x <= be && bs <= *y);
                let need_base = !left_empty
                    && (matches!(target, Status::Met | Status::NotMet) || self.rng.pct(70));
                let base = match existing {
                    Some(v) => Some(v),
                    None if need_base && be >= bs => {
                        let d = if self.rng.pct(20) {
                            be
                        } else {
                            self.rng.range(i64::from(bs), i64::from(be)) as Day
                        };
                        if self.rng.pct(30) && d > bs {
                            // an older baseline value: the latest decides
                            let d0 = self.rng.range(i64::from(bs), i64::from(d - 1)) as Day;
                            let v = self.typical(&lab);
                            self.add_lab(&lab, d0, Tz::Z(8), v, "final", true);
                            parts.push("two-baselines");
                        }
                        let v = self.typical(&lab);
                        let v = if change == Change::Relative && self.rng.pct(50) {
                            v.round_dp(0).max(Decimal::ONE)
                        } else {
                            v
                        };
                        let tz = self.hour();
                        self.add_lab(&lab, d, tz, v, "final", false);
                        Some(v)
                    }
                    None => {
                        parts.push("no-baseline");
                        self.no_baseline.push((lab.clone(), bs, be));
                        None
                    }
                };
                match base {
                    None => {
                        // no baseline: closed -> missing-data, open -> pending (death -> excluded)
                        let t = if died_in {
                            Status::Excluded
                        } else if closed {
                            Status::MissingData
                        } else {
                            Status::Pending
                        };
                        self.intent.outcomes.push((o.id.clone(), t));
                        if has_days && self.rng.pct(50) {
                            let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
                            let v = self.typical(&lab);
                            let tz = self.hour();
                            self.add_lab(&lab, d, tz, v, "final", true);
                            parts.push("follow-up-only");
                            // a later outcome on this lab must not add a baseline either
                        }
                        self.case
                            .push(format!("{}={}/{}", o.id, t.code(), parts.join("+")));
                        return;
                    }
                    Some(b0) => {
                        let dp = self.lab_dp(&lab);
                        let cdp = if change == Change::Relative { 0 } else { dp };
                        let exact = b0.scale() <= 2;
                        let t = dec(&cmp.value);
                        let l = self.lab_outcome(&lab, a, b, pick, target, move |me, met| {
                            let c = if met {
                                me.satisfying(&cmp, cdp, exact)
                            } else {
                                me.violating(&cmp, cdp, exact)
                            };
                            let f = match change {
                                Change::Absolute => b0 + c,
                                Change::Relative => (b0 * (Decimal::from(100) + c)
                                    / Decimal::from(100))
                                .round_dp(dp + 2),
                            };
                            if f <= Decimal::ZERO {
                                (step(dp), false)
                            } else {
                                (f, c != t)
                            }
                        });
                        if parts.is_empty() {
                            l
                        } else {
                            format!("{}+{l}", parts.join("+"))
                        }
                    }
                }
            }
            Rule::Event {
                source,
                diagnosis,
                encounter_class,
                on_therapy_grace_days,
                max_events,
                ..
            } => self.event_outcome(
                *source,
                diagnosis,
                encounter_class,
                *on_therapy_grace_days,
                *max_events,
                a,
                b,
                target,
            ),
            Rule::CodedResponse {
                observation,
                response,
                pick,
                ..
            } => self.coded_outcome(observation, response, *pick, a, b, target),
            _ => return,
        };
        self.intent.outcomes.push((o.id.clone(), target));
        self.case
            .push(format!("{}={}/{label}", o.id, target.code()));
    }

    /// Values of a numeric outcome in [a, b] for `target`; `value(me, met)` makes a follow-up
    /// value in the lab's unit that meets (or misses) the target.
    fn lab_outcome(
        &mut self,
        lab: &str,
        a: Day,
        b: Day,
        pick: Pick,
        target: Status,
        value: impl Fn(&mut Self, bool) -> (Decimal, bool),
    ) -> String {
        let today = self.ctx.today;
        let e = b.min(self.cap);
        let died_in = self.death.is_some_and(|d| d <= b);
        let mut parts: Vec<String> = Vec::new();
        match target {
            Status::Met | Status::NotMet => {
                let met = target == Status::Met;
                let span = (e - a + 1).max(1) as usize;
                let k = match self.rng.range(0, 99) {
                    0..=54 => 1,
                    55..=79 => 2,
                    _ => 3,
                }
                .min(span);
                let k = if pick == Pick::Mean && k == 2 {
                    3.min(span)
                } else {
                    k
                };
                let mut ds = self.days_in(a, e, k);
                // boundary days
                let boundary = self.rng.range(0, 99);
                let decisive_at_end = matches!(
                    pick,
                    Pick::Latest | Pick::Lowest | Pick::Highest | Pick::Mean
                );
                let mut tz_last = None;
                if boundary < 15 {
                    if decisive_at_end && e == b {
                        if let Some(x) = ds.last_mut() {
                            *x = b;
                        }
                        parts.push("on-last-day".into());
                        if self.rng.pct(50) && b < today && !died_in {
                            tz_last = Some(Tz::Late);
                            parts.push("tz-late-utc-next-day".into());
                        }
                    } else if !decisive_at_end {
                        if let Some(x) = ds.first_mut() {
                            *x = a;
                        }
                        parts.push("on-first-day".into());
                    }
                } else if boundary < 25 && pick != Pick::First && ds.len() == 1 {
                    ds[0] = a;
                    parts.push("on-first-day".into());
                }
                ds.sort();
                ds.dedup();
                let (decisive, decisive_alt) = value(self, met);
                let n = ds.len();
                let pos = match pick {
                    Pick::First => 0,
                    Pick::Latest | Pick::Any => n - 1,
                    _ => self.rng.range(0, n as i64 - 1) as usize,
                };
                let mut decisive_item = 0;
                let mut others: Vec<Decimal> = Vec::new();
                for i in 0..n {
                    if i == pos {
                        continue;
                    }
                    let v = match pick {
                        Pick::Lowest => {
                            decisive + step(self.lab_dp(lab)) * Decimal::from(self.rng.range(1, 20))
                        }
                        Pick::Highest => {
                            let v = decisive
                                - step(self.lab_dp(lab)) * Decimal::from(self.rng.range(1, 20));
                            self.positive(lab, v).min(decisive)
                        }
                        Pick::Mean => decisive,
                        _ => value(self, !met).0,
                    };
                    others.push(v);
                }
                if pick == Pick::Mean && others.len() == 2 {
                    let d = step(self.lab_dp(lab)) * Decimal::from(self.rng.range(1, 5));
                    if decisive - d > Decimal::ZERO {
                        others = vec![decisive - d, decisive + d];
                    }
                }
                let mut oi = others.into_iter();
                let exact_boundary = !parts.is_empty();
                for (i, d) in ds.iter().enumerate() {
                    let tz = if i == n - 1 && tz_last.is_some() {
                        Tz::Late
                    } else {
                        self.hour()
                    };
                    if i == pos {
                        decisive_item = self.add_lab(
                            lab,
                            *d,
                            tz,
                            decisive,
                            "final",
                            decisive_alt && !exact_boundary,
                        );
                    } else if let Some(v) = oi.next() {
                        // a mean must not move through unit rounding
                        self.add_lab(lab, *d, tz, v, "final", pick != Pick::Mean);
                    }
                }
                if n > 1 {
                    parts.push(format!("{n}-values"));
                }
                if self.m.labs[decisive_item].unit != self.ctx.labs[lab].unit {
                    parts.push(format!("in-{}", self.m.labs[decisive_item].unit));
                }
                // what happened to the decisive value
                let r = self.rng.range(0, 99);
                if r < 10 {
                    let v0 = value(self, !met).0;
                    let unit = self.ctx.labs[lab].unit.clone();
                    let it = &mut self.m.labs[decisive_item];
                    it.prior = Some((v0, unit));
                    it.status = "amended";
                    it.bundle = 1;
                    parts.push("amended-later".into());
                } else if r < 16 {
                    let v0 = value(self, !met).0;
                    let idf = format!("{}-acc", self.m.labs[decisive_item].id);
                    let mut first = self.m.labs[decisive_item].clone();
                    first.id = self.ids.next("obs");
                    first.value = v0;
                    first.unit = self.ctx.labs[lab].unit.clone();
                    first.identifier = Some(idf.clone());
                    let it = &mut self.m.labs[decisive_item];
                    it.identifier = Some(idf);
                    it.status = "corrected";
                    it.bundle = 1;
                    self.m.labs.push(first);
                    parts.push("corrected-by-identifier-later".into());
                } else if r < 28 {
                    let mut dup = self.m.labs[decisive_item].clone();
                    dup.id = self.ids.next("obs");
                    dup.bundle = usize::from(self.rng.pct(50));
                    self.m.labs.push(dup);
                    parts.push("duplicate-from-second-source".into());
                }
                self.lab_distractors(lab, a, b, &value, met, &mut parts);
            }
            Status::MissingData | Status::Excluded => {
                let r = self.rng.range(0, 6);
                match r {
                    0 => parts.push("nothing".into()),
                    1 if e >= a => {
                        let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
                        let v = value(self, true).0;
                        let tz = self.hour();
                        self.add_lab(lab, d, tz, v, "entered-in-error", false);
                        parts.push("only-entered-in-error".into());
                    }
                    2 if e >= a => {
                        let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
                        let v = value(self, true).0;
                        let tz = self.hour();
                        let k = self.add_lab(lab, d, tz, v, "final", false);
                        self.m.labs[k].unit = "mg".into();
                        parts.push("only-unconvertible-unit".into());
                    }
                    3 if e >= a => {
                        let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
                        let v = value(self, true).0;
                        let tz = self.hour();
                        let k = self.add_lab(lab, d, tz, v, "final", false);
                        let idf = format!("{}-acc", self.m.labs[k].id);
                        self.m.labs[k].identifier = Some(idf.clone());
                        let mut retract = self.m.labs[k].clone();
                        retract.id = self.ids.next("obs");
                        retract.status = "entered-in-error";
                        retract.bundle = 1;
                        self.m.labs.push(retract);
                        parts.push("retracted-by-identifier-later".into());
                    }
                    _ => {
                        let v = value(self, true).0;
                        self.lab_outside(lab, a, b, v, &mut parts);
                        if parts.is_empty() {
                            parts.push("nothing".into());
                        }
                    }
                }
                if let Some(d) = self.after_death(a, b) {
                    let v = value(self, true).0;
                    let tz = self.hour();
                    self.add_lab(lab, d, tz, v, "final", true);
                    parts.push("value-after-death".into());
                }
            }
            Status::Pending => {
                let hi = e.min(today);
                if pick != Pick::First && hi >= a && self.rng.pct(60) {
                    let k = self.rng.range(1, 2) as usize;
                    for d in self.days_in(a, hi, k) {
                        let met = self.rng.pct(50);
                        let v = value(self, met).0;
                        let tz = self.hour();
                        self.add_lab(lab, d, tz, v, "final", true);
                    }
                    parts.push("values-so-far".into());
                } else {
                    parts.push("no-value-yet".into());
                }
            }
        }
        parts.join("+")
    }

    /// Values just outside [a, b] (on a - 1 and b + 1), which must not count.
    fn lab_outside(&mut self, lab: &str, a: Day, b: Day, v: Decimal, parts: &mut Vec<String>) {
        let today = self.ctx.today;
        if a - 1 > self.index && a - 1 <= self.cap && self.rng.pct(60) {
            let tz = self.hour();
            self.add_lab(lab, a - 1, tz, v, "final", true);
            parts.push("day-before-window".into());
        }
        if b < self.cap && b < today {
            if self.rng.pct(50) {
                self.add_lab(lab, b + 1, Tz::Early, v, "final", false);
                parts.push("day-after-window-tz-plus14-utc-last-day".into());
            } else {
                let tz = self.hour();
                self.add_lab(lab, b + 1, tz, v, "final", true);
                parts.push("day-after-window".into());
            }
        }
    }

    fn lab_distractors(
        &mut self,
        lab: &str,
        a: Day,
        b: Day,
        value: &impl Fn(&mut Self, bool) -> (Decimal, bool),
        met: bool,
        parts: &mut Vec<String>,
    ) {
        let e = b.min(self.cap);
        if self.rng.pct(25) {
            let v = value(self, !met).0;
            self.lab_outside(lab, a, b, v, parts);
        }
        if self.rng.pct(12) && e >= a {
            let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
            let v = value(self, !met).0;
            let tz = self.hour();
            self.add_lab(lab, d, tz, v, "entered-in-error", false);
            parts.push("entered-in-error-in-window".into());
        }
        if self.rng.pct(10) && e >= a {
            let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
            let v = value(self, !met).0;
            let tz = self.hour();
            let k = self.add_lab(lab, d, tz, v, "final", false);
            self.m.labs[k].unit = "mg".into();
            parts.push("unconvertible-in-window".into());
        }
    }

    fn event_code(&mut self, set: &str) -> Code {
        let codes = self.ctx.codes(set);
        self.rng.pick(&codes).cloned().unwrap_or_default()
    }

    #[allow(clippy::too_many_arguments)]
    fn add_event(
        &mut self,
        source: crate::contracts::rules::EventSource,
        set: &str,
        classes: &[String],
        day: Day,
        tz: Tz,
        class: Option<&str>,
        status: &'static str,
    ) {
        use crate::contracts::rules::EventSource;
        let code = self.event_code(set);
        match source {
            EventSource::Procedure => {
                let status = if status == "finished" {
                    "completed"
                } else {
                    "entered-in-error"
                };
                self.add_exposure(Src::Procedure, day, code, 0, status);
            }
            EventSource::Condition => {
                let id = self.ids.next("cond");
                self.m.conds.push(Cond {
                    id,
                    patient: 0,
                    code,
                    onset: Some(day),
                    recorded: false,
                    clinical: Some("active"),
                    verification: "confirmed",
                    bundle: 0,
                });
            }
            EventSource::Encounter => {
                let class = class
                    .map(str::to_string)
                    .or_else(|| self.rng.pick(classes).cloned())
                    .unwrap_or_else(|| "IMP".into());
                let id = self.ids.next("enc");
                let los = self.rng.range(0, 6) as i32;
                let (reason, cond) = if self.rng.pct(70) {
                    (Some(code), None)
                } else {
                    // the diagnosis as a Condition recorded before the index day
                    let cid = self.ids.next("cond");
                    let onset = self.index - self.rng.range(1, 400) as Day;
                    self.m.conds.push(Cond {
                        id: cid.clone(),
                        patient: 0,
                        code,
                        onset: Some(onset),
                        recorded: false,
                        clinical: Some("active"),
                        verification: "confirmed",
                        bundle: 0,
                    });
                    (None, Some(cid))
                };
                self.m.encs.push(Enc {
                    id,
                    patient: 0,
                    class,
                    day,
                    tz,
                    los,
                    reason,
                    cond,
                    status,
                    bundle: 0,
                });
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event_outcome(
        &mut self,
        source: crate::contracts::rules::EventSource,
        set: &str,
        classes: &[String],
        grace: Option<u32>,
        max: u32,
        a: Day,
        b: Day,
        target: Status,
    ) -> String {
        use crate::contracts::rules::EventSource;
        let today = self.ctx.today;
        let e = b.min(self.cap);
        let died_in = self.death.is_some_and(|d| d <= b);
        let mut parts: Vec<String> = Vec::new();
        let exposure = self.ctx.rules.cohort.exposure.clone();
        let iv = grace.map(|g| {
            let fills: Vec<(Day, u32)> = self
                .m
                .exposures
                .iter()
                .filter(|x| x.counts() && self.ctx.in_set(&exposure, &x.code))
                .map(|x| (x.day, x.supply))
                .collect();
            oracle::coverage(&fills, true, true, g)
        });
        let on = |d: Day| {
            iv.as_ref()
                .is_none_or(|iv| iv.iter().any(|(x, y)| *x <= d && d <= *y))
        };
        let candidates: Vec<Day> = (a..=e).filter(|d| on(*d)).collect();
        let counting = if target == Status::NotMet {
            (max + 1 + u32::from(self.rng.pct(30))) as usize
        } else {
            self.rng.range(0, i64::from(max)) as usize
        };
        let counting = counting.min(candidates.len());
        let mut chosen: Vec<Day> = Vec::new();
        // on therapy: sometimes the last day of the grace period
        if let (Some(iv), true) = (iv.as_ref(), counting > 0 && self.rng.pct(20)) {
            if let Some((_, y)) = iv.iter().rfind(|(_, y)| *y >= a && *y <= e) {
                chosen.push(*y);
                parts.push("on-last-grace-day".into());
            }
        }
        if counting > 0 && chosen.is_empty() && self.rng.pct(15) {
            let edge = if self.rng.pct(50) || e < b { a } else { e };
            if candidates.contains(&edge) {
                chosen.push(edge);
                parts.push("on-window-edge".into());
            }
        }
        while chosen.len() < counting {
            let d = *self.rng.pick(&candidates).unwrap_or(&a);
            if !chosen.contains(&d) {
                chosen.push(d);
            }
        }
        for d in &chosen {
            let tz = if *d == b
                && b < today
                && !died_in
                && source == EventSource::Encounter
                && self.rng.pct(40)
            {
                parts.push("tz-late-on-last-day".into());
                Tz::Late
            } else {
                Tz::Z(self.rng.range(0, 20) as u8)
            };
            self.add_event(source, set, classes, *d, tz, None, "finished");
        }
        parts.push(format!("{}-events", chosen.len()));
        if target == Status::Excluded {
            // events after the death do not count
            let k = max as usize + 1;
            let mut after: Vec<Day> = Vec::new();
            for _ in 0..k {
                if let Some(d) = self.after_death(a, b) {
                    if on(d) && !after.contains(&d) {
                        after.push(d);
                    }
                }
            }
            if after.len() == k {
                for d in after {
                    self.add_event(source, set, classes, d, Tz::Z(12), None, "finished");
                }
                parts.push("events-after-death".into());
            }
        }
        // events that must not count
        if self.rng.pct(25) && a - 1 <= self.cap {
            self.add_event(source, set, classes, a - 1, Tz::Z(12), None, "finished");
            parts.push("event-day-before-window".into());
        }
        if self.rng.pct(25) && b < self.cap && b < today {
            self.add_event(source, set, classes, b + 1, Tz::Z(12), None, "finished");
            parts.push("event-day-after-window".into());
        }
        if source == EventSource::Encounter && e >= a {
            if !classes.is_empty() && self.rng.pct(20) {
                let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
                let other = ["AMB", "HH", "VR"]
                    .into_iter()
                    .find(|c| !classes.iter().any(|x| x == c))
                    .unwrap_or("AMB");
                self.add_event(source, set, classes, d, Tz::Z(9), Some(other), "finished");
                parts.push(format!("{other}-encounter-not-counted"));
            }
            if self.rng.pct(15) {
                let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
                self.add_event(source, set, classes, d, Tz::Z(9), None, "cancelled");
                parts.push("cancelled-encounter".into());
            }
            if let Some(iv) = iv.as_ref() {
                let off: Vec<Day> = (a..=e)
                    .filter(|d| !iv.iter().any(|(x, y)| x <= d && d <= y))
                    .collect();
                if !off.is_empty() && self.rng.pct(50) {
                    let y_last = iv.iter().map(|(_, y)| *y).max().unwrap_or(a);
                    let d = if off.contains(&(y_last + 1)) && self.rng.pct(40) {
                        parts.push("event-day-after-grace".into());
                        y_last + 1
                    } else {
                        parts.push("event-off-therapy".into());
                        *self.rng.pick(&off).unwrap_or(&off[0])
                    };
                    self.add_event(source, set, classes, d, Tz::Z(9), None, "finished");
                }
            }
        }
        parts.join("+")
    }

    fn coded_outcome(
        &mut self,
        obs: &str,
        resp: &str,
        pick: Pick,
        a: Day,
        b: Day,
        target: Status,
    ) -> String {
        let ctx = self.ctx;
        let today = self.ctx.today;
        let e = b.min(self.cap);
        let code = ctx.codes(obs)[0].clone();
        let yes_codes = ctx.codes(resp);
        let no = oracle::unused(&yes_codes[0]);
        let mut parts: Vec<String> = Vec::new();
        let add = |me: &mut Self, day: Day, responder: bool, status: &'static str| -> usize {
            let value = if responder {
                me.rng.pick(&yes_codes).cloned().unwrap_or_default()
            } else {
                no.clone()
            };
            let id = me.ids.next("obs");
            let tz = me.hour();
            me.m.coded.push(Coded {
                id,
                patient: 0,
                code: code.clone(),
                day,
                tz,
                value,
                status,
                bundle: 0,
                prior: None,
            });
            me.m.coded.len() - 1
        };
        match target {
            Status::Met | Status::NotMet => {
                let met = target == Status::Met;
                let k = self.rng.range(1, 3) as usize;
                let ds = self.days_in(a, e, k);
                let n = ds.len();
                let pos = match pick {
                    Pick::First => 0,
                    Pick::Any => self.rng.range(0, n as i64 - 1) as usize,
                    _ => n - 1,
                };
                let mut decisive = 0;
                for (i, d) in ds.iter().enumerate() {
                    let r = if i == pos {
                        met
                    } else if pick == Pick::Any {
                        false
                    } else {
                        !met
                    };
                    let k = add(self, *d, r, "final");
                    if i == pos {
                        decisive = k;
                    }
                }
                if n > 1 {
                    parts.push(format!("{n}-assessments"));
                }
                if self.rng.pct(12) {
                    let prior = if met {
                        no.clone()
                    } else {
                        yes_codes[0].clone()
                    };
                    let it = &mut self.m.coded[decisive];
                    it.prior = Some(prior);
                    it.status = "amended";
                    it.bundle = 1;
                    parts.push("amended-later".into());
                }
                // an entered-in-error assessment where it would change the result if it counted
                if self.rng.pct(15) {
                    let (lo, hi) = match pick {
                        Pick::First => (a, ds[0] - 1),
                        Pick::Any => (a, e),
                        _ => (ds[n - 1] + 1, e),
                    };
                    if hi >= lo {
                        let dd = self.rng.range(i64::from(lo), i64::from(hi)) as Day;
                        if !ds.contains(&dd) {
                            add(self, dd, !met, "entered-in-error");
                            parts.push("entered-in-error-assessment".into());
                        }
                    }
                }
            }
            Status::Pending => {
                let hi = e.min(today);
                if hi >= a && pick != Pick::First && self.rng.pct(50) {
                    let d = self.rng.range(i64::from(a), i64::from(hi)) as Day;
                    // `any`: only non-responses so far; `latest`: anything
                    let r = pick != Pick::Any && self.rng.pct(50);
                    add(self, d, r, "final");
                    parts.push("assessment-so-far".into());
                } else {
                    parts.push("no-assessment-yet".into());
                }
            }
            Status::MissingData | Status::Excluded => {
                parts.push("no-assessment".into());
                if let Some(d) = self.after_death(a, b) {
                    add(self, d, true, "final");
                    parts.push("assessment-after-death".into());
                }
                if self.rng.pct(25) && e >= a {
                    let d = self.rng.range(i64::from(a), i64::from(e)) as Day;
                    add(self, d, true, "entered-in-error");
                    parts.push("entered-in-error-assessment".into());
                }
            }
        }
        // assessments just outside the window
        if self.rng.pct(20) && a - 1 > self.index && a - 1 <= self.cap {
            add(self, a - 1, true, "final");
            parts.push("day-before-window".into());
        }
        if self.rng.pct(20) && b < self.cap && b < today {
            let k = add(self, b + 1, true, "final");
            if self.rng.pct(50) {
                self.m.coded[k].tz = Tz::Early;
                parts.push("day-after-window-tz-plus14".into());
            } else {
                parts.push("day-after-window".into());
            }
        }
        parts.join("+")
    }
}

//! The outcome engine: cohorts, per-patient outcome results, and keeping them current.
//!
//! Every version of every clinical resource is kept as facts in a [`timeline::Timeline`].
//! After each durable commit the engine records the new versions and re-evaluates the persons
//! they touch for every loaded contract, before the writer is answered: results are current when
//! a write is acknowledged. A full evaluation of a contract (from scratch, or "as of" a past
//! instant from the version history) runs the same per-person evaluation over every candidate.

pub mod codes;
pub mod cohort_group;
pub use crate::days;
pub mod evaluate;
pub mod facts;
pub mod identity;
pub mod parties;
pub mod plan;
pub mod result;
pub mod rule_text;
pub mod supply;
pub mod timeline;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use rayon::prelude::*;
use serde_json::Value;

use crate::contracts::rules::{RuleSet, CONTENT_TYPE, FORMAT};
use crate::error::{FhirError, Result};
use crate::store::{CommitListener, Committed, Store};
use days::Day;
use evaluate::{Item, View};
use facts::Fact;
use identity::Identity;
use plan::Plan;
use result::PersonResult;
use timeline::{type_index, Timeline};

/// A cohort's members as (person, index day), in person order.
pub type Members = Vec<(Arc<str>, Day)>;

/// A resource version handed to [`Engine::ingest`]: type, id, version, ms, resource JSON (None
/// for a delete).
pub type Ingested = (String, String, u64, i64, Option<Vec<u8>>);

/// What one committed write means to the engine: its facts, or for a Library its rules (None
/// when it carries none).
type Parsed<'w, 'a> = (&'w Committed<'a>, Option<Fact>, Option<Option<RuleSet>>);

/// One contract's current results.
pub struct ContractState {
    /// The compiled contract.
    pub plan: Arc<Plan>,
    /// Results by person, for everyone in the initial population.
    pub results: BTreeMap<Arc<str>, PersonResult>,
    /// The day the results were evaluated for (windows close as days pass).
    pub evaluated_on: Day,
}

struct State {
    timeline: Timeline,
    identity: Identity,
    contracts: BTreeMap<String, ContractState>,
}

/// The outcome engine.
pub struct Engine {
    state: RwLock<State>,
    /// The store's commit feed position: reads wait until every acknowledged write is applied.
    feed: Option<Arc<crate::store::feed::FeedPosition>>,
}

/// When to evaluate: the data as recorded at an instant, and the day windows are judged on.
#[derive(Debug, Clone, Copy)]
pub struct AsOf {
    /// Data as it stood at this instant (ms since the epoch); None for the current data.
    pub instant_ms: Option<i64>,
    /// The evaluation day (windows open after it are pending).
    pub today: Day,
}

/// The rule set a Library carries, if it is a contract's rules.
pub fn rules_of_library(library: &Value) -> Option<RuleSet> {
    let content = library.get("content")?.as_array()?;
    let data = content
        .iter()
        .find(|c| c.get("contentType").and_then(Value::as_str) == Some(CONTENT_TYPE))?
        .get("data")?
        .as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .ok()?;
    let rules: RuleSet = serde_json::from_slice(&bytes).ok()?;
    (rules.format == FORMAT).then_some(rules)
}

fn read_lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write_lock<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// Build the engine from everything in the store (every version, for "as of") and register
    /// as the store's commit listener.
    pub fn open(store: &Arc<dyn Store>, link_systems: Vec<String>) -> Result<Arc<Engine>> {
        let mut timeline = Timeline::default();
        for rtype in facts::TYPES {
            store.for_each_version(rtype, &mut |rec| {
                let fact = match &rec.resource {
                    Some(bytes) => serde_json::from_slice::<Value>(bytes)
                        .ok()
                        .and_then(|v| facts::extract(rtype, &v)),
                    None => None,
                };
                timeline.record(rtype, &rec.id, rec.version, rec.last_updated_ms, fact);
                Ok(())
            })?;
        }
        let mut identity = Identity::new(link_systems);
        let patients: Vec<(Arc<str>, Option<Arc<Fact>>)> = timeline
            .patients()
            .map(|(k, vs)| {
                let current = vs
                    .last()
                    .filter(|v| v.to_ms == i64::MAX)
                    .and_then(|v| v.fact.clone());
                (k.1.clone(), current)
            })
            .collect();
        for (p, f) in patients {
            let pf = match f.as_deref() {
                Some(Fact::Patient(pf)) => Some(pf),
                _ => None,
            };
            identity.set(&p, pf);
        }
        let engine = Arc::new(Engine {
            state: RwLock::new(State {
                timeline,
                identity,
                contracts: BTreeMap::new(),
            }),
            feed: store.feed_position(),
        });
        let mut libraries = Vec::new();
        store.for_each_version("Library", &mut |rec| {
            libraries.push(rec);
            Ok(())
        })?;
        // the latest version of each Library only
        let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for rec in libraries {
            latest.insert(rec.id.clone(), rec.resource);
        }
        for bytes in latest.into_values().flatten() {
            if let Some(rules) = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .as_ref()
                .and_then(rules_of_library)
            {
                engine.install(rules);
            }
        }
        store.set_listener(engine.clone());
        Ok(engine)
    }

    /// An engine over no store (benchmarks and tests feed it with [`Engine::ingest`]).
    pub fn in_memory(link_systems: Vec<String>) -> Arc<Engine> {
        Arc::new(Engine {
            state: RwLock::new(State {
                timeline: Timeline::default(),
                identity: Identity::new(link_systems),
                contracts: BTreeMap::new(),
            }),
            feed: None,
        })
    }

    /// The state to read, once every write acknowledged so far has been applied.
    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        if let Some(f) = &self.feed {
            f.settle();
        }
        read_lock(&self.state)
    }

    /// Take resource versions as if the store had just committed them (the same path as
    /// [`CommitListener::committed`]): (type, id, version, ms, resource JSON or None).
    pub fn ingest(&self, writes: &[Ingested]) {
        let committed: Vec<Committed<'_>> = writes
            .iter()
            .map(|(t, id, v, ms, r)| Committed {
                rtype: t,
                id,
                version: *v,
                resource: r.as_deref(),
                last_updated_ms: *ms,
            })
            .collect();
        self.apply(&committed);
    }

    /// Register (or replace) a contract and evaluate it in full.
    pub fn register(&self, rules: RuleSet) {
        if let Some(f) = &self.feed {
            f.settle();
        }
        self.install(rules);
    }

    /// Register a contract over the state as it stands (the feed's own thread, and start-up).
    fn install(&self, rules: RuleSet) {
        let plan = Arc::new(Plan::new(rules));
        let today = days::today();
        let results = {
            let st = read_lock(&self.state);
            full(
                &st,
                &plan,
                AsOf {
                    instant_ms: None,
                    today,
                },
            )
        };
        let mut st = write_lock(&self.state);
        st.contracts.insert(
            plan.ids.contract(),
            ContractState {
                plan,
                results: results.into_iter().map(|r| (r.person.clone(), r)).collect(),
                evaluated_on: today,
            },
        );
    }

    /// The ids (contract Measure ids) of the loaded contracts.
    pub fn contract_ids(&self) -> Vec<String> {
        self.read().contracts.keys().cloned().collect()
    }

    /// The compiled contract whose contract Measure or outcome Measure has this id.
    pub fn plan_for_measure(&self, measure_id: &str) -> Option<(Arc<Plan>, Option<String>)> {
        let st = self.read();
        for c in st.contracts.values() {
            if c.plan.ids.contract() == measure_id {
                return Some((c.plan.clone(), None));
            }
            if let Some(o) = c
                .plan
                .rules
                .outcomes
                .iter()
                .find(|o| c.plan.ids.outcome(&o.id) == measure_id)
            {
                return Some((c.plan.clone(), Some(o.id.clone())));
            }
        }
        None
    }

    /// The current results of a contract (re-evaluated first when a day has passed since).
    pub fn current(&self, contract: &str) -> Result<Vec<PersonResult>> {
        let today = days::today();
        let stale = {
            let st = self.read();
            let c = st
                .contracts
                .get(contract)
                .ok_or_else(|| FhirError::NotFound(format!("no contract {contract} is loaded")))?;
            if c.evaluated_on == today {
                return Ok(c.results.values().cloned().collect());
            }
            c.plan.clone()
        };
        let fresh = {
            let st = read_lock(&self.state);
            full(
                &st,
                &stale,
                AsOf {
                    instant_ms: None,
                    today,
                },
            )
        };
        let mut st = write_lock(&self.state);
        if let Some(c) = st.contracts.get_mut(contract) {
            c.results = fresh
                .iter()
                .map(|r| (r.person.clone(), r.clone()))
                .collect();
            c.evaluated_on = today;
        }
        Ok(fresh)
    }

    /// Evaluate a contract from scratch (for the current data, or as of a past instant).
    pub fn evaluate(&self, contract: &str, at: AsOf) -> Result<Vec<PersonResult>> {
        let st = self.read();
        let plan = st
            .contracts
            .get(contract)
            .map(|c| c.plan.clone())
            .ok_or_else(|| FhirError::NotFound(format!("no contract {contract} is loaded")))?;
        Ok(full(&st, &plan, at))
    }

    /// The cohort members of a contract as (person, index day), in person order.
    pub fn members(&self, contract: &str) -> Option<(Arc<Plan>, Members)> {
        let st = self.read();
        let c = st.contracts.get(contract)?;
        let members = c
            .results
            .values()
            .filter(|r| r.membership == result::Membership::Member)
            .map(|r| (r.person.clone(), r.index))
            .collect();
        Some((c.plan.clone(), members))
    }

    fn apply(&self, writes: &[Committed<'_>]) {
        // parse outside the lock
        let mut parsed: Vec<Parsed<'_, '_>> = Vec::new();
        for w in writes {
            let json = w
                .resource
                .and_then(|b| serde_json::from_slice::<Value>(b).ok());
            if w.rtype == "Library" {
                let rules = json.as_ref().and_then(rules_of_library);
                parsed.push((w, None, Some(rules)));
            } else if facts::relevant(w.rtype) {
                let fact = json.as_ref().and_then(|v| facts::extract(w.rtype, v));
                parsed.push((w, fact, None));
            }
        }
        if parsed.is_empty() {
            return;
        }
        let mut new_contracts = Vec::new();
        let mut touched: Vec<Arc<str>> = Vec::new();
        {
            let mut st = write_lock(&self.state);
            for (w, fact, library) in parsed {
                if let Some(rules) = library {
                    match rules {
                        Some(r) => new_contracts.push(r),
                        None => {
                            // a deleted or replaced rules Library unloads its contract
                            let gone = w.id.strip_suffix("-rules").map(str::to_string);
                            if let Some(g) = gone {
                                if w.resource.is_none() {
                                    st.contracts.remove(&g);
                                }
                            }
                        }
                    }
                    continue;
                }
                if w.rtype == "Patient" {
                    let p: Arc<str> = Arc::from(w.id);
                    let pf = match &fact {
                        Some(Fact::Patient(pf)) => Some(pf.clone()),
                        _ => None,
                    };
                    touched.extend(st.identity.set(&p, pf.as_ref()));
                }
                touched.extend(st.timeline.record(
                    w.rtype,
                    w.id,
                    w.version,
                    w.last_updated_ms,
                    fact,
                ));
            }
            touched.sort();
            touched.dedup();
            let today = days::today();
            let st = &mut *st;
            let mut persons: Vec<(Arc<str>, Arc<str>)> = touched
                .iter()
                .map(|p| (p.clone(), st.identity.person(p)))
                .collect();
            persons.sort();
            persons.dedup();
            if !st.contracts.is_empty() {
                for (p, person) in &persons {
                    if p != person {
                        for c in st.contracts.values_mut() {
                            c.results.remove(p);
                        }
                    }
                }
                let mut unique: Vec<&Arc<str>> = persons.iter().map(|(_, person)| person).collect();
                unique.sort();
                unique.dedup();
                for person in unique {
                    // one view per person, evaluated for every contract
                    let members = st.identity.component(person);
                    let v = view(&st.timeline, person.clone(), members, None);
                    for c in st.contracts.values_mut() {
                        match evaluate::evaluate(&c.plan, &v, today) {
                            Some(r) => {
                                c.results.insert(person.clone(), r);
                            }
                            None => {
                                c.results.remove(person);
                            }
                        }
                    }
                }
            }
        }
        for rules in new_contracts {
            self.install(rules);
        }
    }
}

impl CommitListener for Engine {
    fn committed(&self, writes: &[Committed<'_>]) {
        self.apply(writes);
    }
}

/// The identity map as it stood at an instant (None: use the current one).
fn identity_at(st: &State, systems: &[String], as_of: Option<i64>) -> Option<Identity> {
    let t = as_of?;
    let mut identity = Identity::new(systems.to_vec());
    let mut patients: Vec<_> = st.timeline.patients().collect();
    patients.sort_by(|a, b| a.0 .1.cmp(&b.0 .1));
    for (k, vs) in patients {
        if vs.first().is_some_and(|v| v.from_ms > t) {
            continue;
        }
        let v = vs.iter().rev().find(|v| v.from_ms <= t && t < v.to_ms);
        let pf = match v.and_then(|v| v.fact.as_deref()) {
            Some(Fact::Patient(pf)) => Some(pf),
            _ => None,
        };
        identity.set(&k.1, pf);
    }
    Some(identity)
}

/// Evaluate every candidate of a contract.
fn full(st: &State, plan: &Plan, at: AsOf) -> Vec<PersonResult> {
    let historic = identity_at(st, st.identity.systems(), at.instant_ms);
    let identity = historic.as_ref().unwrap_or(&st.identity);
    let mut persons: Vec<Arc<str>> = st.timeline.exposed().map(|p| identity.person(p)).collect();
    persons.sort();
    persons.dedup();
    let mut out: Vec<PersonResult> = persons
        .par_iter()
        .filter_map(|person| {
            let members = identity.component(person);
            let v = view(&st.timeline, person.clone(), members, at.instant_ms);
            evaluate::evaluate(plan, &v, at.today)
        })
        .collect();
    out.sort_by(|a, b| a.person.cmp(&b.person));
    out
}

/// Gather what is visible about a person.
fn view<'a>(
    tl: &'a Timeline,
    person: Arc<str>,
    members: Vec<Arc<str>>,
    as_of: Option<i64>,
) -> View<'a> {
    let mut v = View {
        person,
        ..View::default()
    };
    let patient_type = type_index("Patient").unwrap_or(0);
    for p in &members {
        if let Some(ver) = tl.visible(&(patient_type, p.clone()), as_of) {
            if let Some(Fact::Patient(f)) = ver.fact.as_deref() {
                v.demographics.push(Item {
                    fact: f,
                    rtype: "Patient",
                    id: p.clone(),
                    version: ver.version,
                    recorded_ms: ver.from_ms,
                });
            }
        }
        for slot in tl.of_patient(p) {
            let Some(ver) = tl.visible_slot(slot, as_of) else {
                continue;
            };
            let Some(key) = tl.key(slot) else {
                continue;
            };
            let Some(fact) = ver.fact.as_deref() else {
                continue;
            };
            if fact.patient() != Some(p.as_ref()) {
                continue;
            }
            let rtype = timeline::type_name(key.0);
            let id = key.1.clone();
            let (version, recorded_ms) = (ver.version, ver.from_ms);
            match fact {
                Fact::Exposure(e) => {
                    let codes = match &e.medication {
                        Some(m) => match tl.fact("Medication", m, as_of) {
                            Some((_, Fact::Medication(mf))) => mf.codes.as_slice(),
                            _ => &[],
                        },
                        None => e.codes.as_slice(),
                    };
                    v.exposures.push((
                        Item {
                            fact: e,
                            rtype,
                            id,
                            version,
                            recorded_ms,
                        },
                        codes,
                    ));
                }
                Fact::Observation(o) => v.observations.push(Item {
                    fact: o,
                    rtype,
                    id,
                    version,
                    recorded_ms,
                }),
                Fact::Condition(c) => v.conditions.push(Item {
                    fact: c,
                    rtype,
                    id,
                    version,
                    recorded_ms,
                }),
                Fact::Encounter(e) => v.encounters.push(Item {
                    fact: e,
                    rtype,
                    id,
                    version,
                    recorded_ms,
                }),
                Fact::Coverage(c) => v.coverages.push(Item {
                    fact: c,
                    rtype,
                    id,
                    version,
                    recorded_ms,
                }),
                Fact::Patient(_) | Fact::Medication(_) => {}
            }
        }
    }
    v.patients = members;
    v.exposures.sort_by(|a, b| {
        (a.0.fact.day, a.0.fact.instant, &a.0.id).cmp(&(b.0.fact.day, b.0.fact.instant, &b.0.id))
    });
    v.observations.sort_by(|a, b| {
        (a.fact.day, a.fact.instant, &a.id).cmp(&(b.fact.day, b.fact.instant, &b.id))
    });
    v.conditions
        .sort_by(|a, b| (a.fact.onset, &a.id).cmp(&(b.fact.onset, &b.id)));
    v.encounters.sort_by(|a, b| {
        (a.fact.day, a.fact.instant, &a.id).cmp(&(b.fact.day, b.fact.instant, &b.id))
    });
    v.coverages.sort_by(|a, b| a.id.cmp(&b.id));
    v.demographics.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

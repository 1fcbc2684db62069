//! The timeline: every version of every resource the engine reads, as facts with the interval
//! during which each version was the current one. The current state and any past state ("as of"
//! an instant) are read from the same structure.

use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::facts::{self, Fact};

/// One version of a resource as facts.
#[derive(Debug, Clone)]
pub struct Version {
    /// Version number.
    pub version: u64,
    /// When it became current (ms since the epoch).
    pub from_ms: i64,
    /// When a later version replaced it (`i64::MAX` while current).
    pub to_ms: i64,
    /// Its facts (None for a delete, or a version lacking what a fact needs).
    pub fact: Option<Arc<Fact>>,
}

/// A resource key: type index in [`facts::TYPES`] and id.
pub type Key = (u8, Arc<str>);

/// The type index of a resource type the engine reads.
pub fn type_index(rtype: &str) -> Option<u8> {
    facts::TYPES
        .iter()
        .position(|t| *t == rtype)
        .map(|i| i as u8)
}

/// The resource type of a type index.
pub fn type_name(i: u8) -> &'static str {
    facts::TYPES.get(i as usize).copied().unwrap_or("")
}

/// Every version of every resource the engine reads.
#[derive(Default)]
pub struct Timeline {
    /// Every resource's key and versions; the index of an entry is its slot.
    slots: Vec<(Key, Vec<Version>)>,
    slot_of: FxHashMap<Key, u32>,
    by_patient: FxHashMap<Arc<str>, FxHashSet<u32>>,
    medication_users: FxHashMap<Arc<str>, FxHashSet<u32>>,
    exposed: FxHashSet<Arc<str>>,
    ids: FxHashSet<Arc<str>>,
}

impl Timeline {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.ids.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.ids.insert(a.clone());
        a
    }

    /// Record a new version. Returns the patients whose facts it touches (before and after) and,
    /// for a Medication, the patients whose exposures name it.
    pub fn record(
        &mut self,
        rtype: &str,
        id: &str,
        version: u64,
        at_ms: i64,
        fact: Option<Fact>,
    ) -> Vec<Arc<str>> {
        let Some(t) = type_index(rtype) else {
            return Vec::new();
        };
        let key: Key = (t, self.intern(id));
        let slot = match self.slot_of.get(&key) {
            Some(s) => *s,
            None => {
                let s = self.slots.len() as u32;
                self.slots.push((key.clone(), Vec::new()));
                self.slot_of.insert(key.clone(), s);
                s
            }
        };
        let mut touched: Vec<Arc<str>> = Vec::new();
        let fact = fact.map(Arc::new);
        if let Some(f) = &fact {
            if let Some(p) = f.patient() {
                let p = self.intern(p);
                self.by_patient.entry(p.clone()).or_default().insert(slot);
                if let Fact::Exposure(e) = f.as_ref() {
                    self.exposed.insert(p.clone());
                    if let Some(m) = &e.medication {
                        let m = self.intern(m);
                        self.medication_users.entry(m).or_default().insert(slot);
                    }
                }
                touched.push(p);
            }
        }
        if rtype == "Patient" {
            let p = key.1.clone();
            self.by_patient.entry(p.clone()).or_default();
            touched.push(p);
        }
        let versions = &mut self.slots[slot as usize].1;
        if let Some(last) = versions.last_mut() {
            if last.to_ms == i64::MAX {
                last.to_ms = at_ms;
            }
            if let Some(p) = last.fact.as_ref().and_then(|f| f.patient()) {
                touched.push(Arc::from(p));
            }
        }
        versions.push(Version {
            version,
            from_ms: at_ms,
            to_ms: i64::MAX,
            fact,
        });
        if rtype == "Medication" {
            if let Some(users) = self.medication_users.get(&key.1) {
                for u in users {
                    if let Some(p) = self
                        .visible_slot(*u, None)
                        .and_then(|v| v.fact.as_ref())
                        .and_then(|f| f.patient())
                    {
                        touched.push(Arc::from(p));
                    }
                }
            }
        }
        touched.sort();
        touched.dedup();
        touched
    }

    /// The version of a resource visible at `as_of` (None: the current one), if it is live.
    pub fn visible(&self, key: &Key, as_of: Option<i64>) -> Option<&Version> {
        self.visible_slot(*self.slot_of.get(key)?, as_of)
    }

    /// The version of the resource in a slot visible at `as_of`, if it is live.
    pub fn visible_slot(&self, slot: u32, as_of: Option<i64>) -> Option<&Version> {
        let versions = &self.slots.get(slot as usize)?.1;
        let v = match as_of {
            None => versions.last().filter(|v| v.to_ms == i64::MAX),
            Some(t) => versions
                .iter()
                .rev()
                .find(|v| v.from_ms <= t && t < v.to_ms),
        }?;
        v.fact.as_ref().map(|_| v)
    }

    /// The live fact of a resource by type and id at `as_of`.
    pub fn fact(&self, rtype: &str, id: &str, as_of: Option<i64>) -> Option<(&Version, &Fact)> {
        let t = type_index(rtype)?;
        let key: Key = (t, self.ids.get(id)?.clone());
        let v = self.visible(&key, as_of)?;
        Some((v, v.fact.as_deref()?))
    }

    /// The slots of the resources that mention a patient (in any version).
    pub fn of_patient(&self, patient: &str) -> impl Iterator<Item = u32> + '_ {
        self.by_patient.get(patient).into_iter().flatten().copied()
    }

    /// The key of a slot.
    pub fn key(&self, slot: u32) -> Option<&Key> {
        self.slots.get(slot as usize).map(|(k, _)| k)
    }

    /// Patients with any exposure (in any version): the candidates of every cohort.
    pub fn exposed(&self) -> impl Iterator<Item = &Arc<str>> {
        self.exposed.iter()
    }

    /// Every Patient resource key.
    pub fn patients(&self) -> impl Iterator<Item = (&Key, &Vec<Version>)> {
        let t = type_index("Patient").unwrap_or(0);
        self.slots
            .iter()
            .filter(move |(k, _)| k.0 == t)
            .map(|(k, v)| (k, v))
    }
}

//! Patient identity: Patient records of one person arriving from different systems are linked
//! through shared identifiers (of the configured systems, such as a payer member id) and through
//! `Patient.link`, and evaluated as one person. A person is named by the smallest Patient id in
//! its linked group, so the name is deterministic.

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use super::facts::PatientFact;

/// The linked groups of patients.
#[derive(Default, Clone)]
pub struct Identity {
    systems: Vec<String>,
    by_key: FxHashMap<Box<str>, FxHashSet<Arc<str>>>,
    keys_of: FxHashMap<Arc<str>, Vec<Box<str>>>,
    person_of: FxHashMap<Arc<str>, Arc<str>>,
}

impl Identity {
    /// An empty identity map that links through identifiers of `systems`.
    pub fn new(systems: Vec<String>) -> Self {
        Identity {
            systems,
            ..Default::default()
        }
    }

    fn keys(&self, patient: &str, fact: Option<&PatientFact>) -> Vec<Box<str>> {
        let mut keys: Vec<Box<str>> = vec![format!("l:{patient}").into()];
        if let Some(f) = fact {
            for i in &f.identifiers {
                if let Some((sys, _)) = i.split_once('|') {
                    if self.systems.iter().any(|s| s == sys) {
                        keys.push(format!("i:{i}").into());
                    }
                }
            }
            for l in &f.links {
                keys.push(format!("l:{l}").into());
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// The identifier systems that link records.
    pub fn systems(&self) -> &[String] {
        &self.systems
    }

    /// Every patient linked to `patient` (itself included), sorted.
    pub fn component(&self, patient: &Arc<str>) -> Vec<Arc<str>> {
        // the common case: a record that shares no key with another
        if let Some(keys) = self.keys_of.get(patient) {
            if keys
                .iter()
                .all(|k| self.by_key.get(k).is_none_or(|s| s.len() <= 1))
            {
                return vec![patient.clone()];
            }
        }
        let mut seen: FxHashSet<Arc<str>> = FxHashSet::default();
        let mut queue = VecDeque::from([patient.clone()]);
        seen.insert(patient.clone());
        while let Some(p) = queue.pop_front() {
            let own: Box<str> = format!("l:{p}").into();
            let keys = self
                .keys_of
                .get(&p)
                .map(|k| k.as_slice())
                .unwrap_or(std::slice::from_ref(&own));
            for k in keys {
                for q in self.by_key.get(k).into_iter().flatten() {
                    if seen.insert(q.clone()) {
                        queue.push_back(q.clone());
                    }
                }
            }
        }
        let mut out: Vec<Arc<str>> = seen.into_iter().collect();
        out.sort();
        out
    }

    /// Set a patient's identity facts (None when deleted). Returns the persons before and after
    /// the change whose membership may have changed.
    pub fn set(&mut self, patient: &Arc<str>, fact: Option<&PatientFact>) -> Vec<Arc<str>> {
        let before = self.component(patient);
        let mut affected: Vec<Arc<str>> = before.iter().map(|p| self.person(p)).collect();
        if let Some(old) = self.keys_of.remove(patient) {
            for k in old {
                if let Some(set) = self.by_key.get_mut(&k) {
                    set.remove(patient);
                    if set.is_empty() {
                        self.by_key.remove(&k);
                    }
                }
            }
        }
        let keys = self.keys(patient, fact);
        // a linked record not seen yet answers to its own key, so links are symmetric
        for k in &keys {
            if let Some(other) = k.strip_prefix("l:") {
                if other != patient.as_ref() && !self.keys_of.contains_key(other) {
                    let o: Arc<str> = Arc::from(other);
                    self.by_key.entry(k.clone()).or_default().insert(o.clone());
                    self.keys_of.insert(o, vec![k.clone()]);
                }
            }
        }
        for k in &keys {
            self.by_key
                .entry(k.clone())
                .or_default()
                .insert(patient.clone());
        }
        self.keys_of.insert(patient.clone(), keys);
        // the old group may have split; the new one may have merged others
        let mut members: Vec<Arc<str>> = before;
        members.extend(self.component(patient));
        members.sort();
        members.dedup();
        let mut done: FxHashSet<Arc<str>> = FxHashSet::default();
        for m in &members {
            if done.contains(m) {
                continue;
            }
            let comp = self.component(m);
            let person = comp[0].clone();
            for c in comp {
                done.insert(c.clone());
                affected.push(self.person(&c));
                if c == person {
                    self.person_of.remove(&c);
                } else {
                    self.person_of.insert(c.clone(), person.clone());
                }
                affected.push(person.clone());
            }
        }
        affected.sort();
        affected.dedup();
        affected
    }

    /// The person a patient belongs to.
    pub fn person(&self, patient: &Arc<str>) -> Arc<str> {
        self.person_of
            .get(patient)
            .cloned()
            .unwrap_or_else(|| patient.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::facts::Deceased;

    fn pf(ids: &[&str], links: &[&str]) -> PatientFact {
        PatientFact {
            birth: None,
            gender: None,
            deceased: Deceased::No,
            identifiers: ids.iter().map(|s| Box::from(*s)).collect(),
            links: links.iter().map(|s| Box::from(*s)).collect(),
        }
    }

    #[test]
    fn links_through_identifiers_and_links_and_splits_again() {
        let mut id = Identity::new(vec!["urn:member".into()]);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        id.set(&b, Some(&pf(&["urn:member|1", "urn:mrn|x"], &[])));
        id.set(&c, Some(&pf(&["urn:mrn|x"], &[])));
        assert_eq!(id.person(&c), c, "mrn is not a linking system");
        id.set(&a, Some(&pf(&["urn:member|1"], &[])));
        assert_eq!(id.person(&b), a);
        id.set(&c, Some(&pf(&[], &["b"])));
        assert_eq!(id.person(&c), a);
        assert_eq!(id.component(&c).len(), 3);
        let affected = id.set(&a, Some(&pf(&["urn:member|2"], &[])));
        assert!(affected.contains(&a) && affected.contains(&b));
        assert_eq!(id.person(&c), b);
        assert_eq!(id.person(&a), a);
    }
}

//! Interned codes: every `system|code` the engine meets becomes a small integer, so value-set
//! membership during evaluation is an integer set lookup instead of string hashing.

use std::sync::RwLock;

use once_cell::sync::Lazy;
use rustc_hash::{FxHashMap, FxHashSet};
use serde_json::Value;

/// An interned `system|code`.
pub type Code = u32;

/// A set of interned codes (a compiled value set).
pub type CodeSet = FxHashSet<Code>;

#[derive(Default)]
struct Interner {
    ids: FxHashMap<Box<str>, Code>,
    names: Vec<Box<str>>,
}

static INTERNER: Lazy<RwLock<Interner>> = Lazy::new(|| RwLock::new(Interner::default()));

fn key(system: &str, code: &str) -> String {
    let mut k = String::with_capacity(system.len() + code.len() + 1);
    k.push_str(system);
    k.push('|');
    k.push_str(code);
    k
}

/// The id of `system|code`, interning it on first sight.
pub fn intern(system: &str, code: &str) -> Code {
    let k = key(system, code);
    if let Ok(i) = INTERNER.read() {
        if let Some(id) = i.ids.get(k.as_str()) {
            return *id;
        }
    }
    let mut i = match INTERNER.write() {
        Ok(i) => i,
        Err(p) => p.into_inner(),
    };
    if let Some(id) = i.ids.get(k.as_str()) {
        return *id;
    }
    let id = i.names.len() as Code;
    let boxed: Box<str> = k.into_boxed_str();
    i.names.push(boxed.clone());
    i.ids.insert(boxed, id);
    id
}

/// `system|code` of an interned code.
pub fn name(code: Code) -> String {
    INTERNER
        .read()
        .ok()
        .and_then(|i| i.names.get(code as usize).map(|n| n.to_string()))
        .unwrap_or_default()
}

/// The codes of a CodeableConcept (each coding with both a system and a code).
pub fn of_concept(concept: &Value, out: &mut Vec<Code>) {
    if let Some(codings) = concept.get("coding").and_then(Value::as_array) {
        for c in codings {
            of_coding(c, out);
        }
    }
}

/// The code of a Coding, when it has a system and a code.
pub fn of_coding(coding: &Value, out: &mut Vec<Code>) {
    if let (Some(s), Some(c)) = (
        coding.get("system").and_then(Value::as_str),
        coding.get("code").and_then(Value::as_str),
    ) {
        out.push(intern(s, c));
    }
}

/// True when any of `codes` is in `set`.
pub fn any_in(codes: &[Code], set: &CodeSet) -> bool {
    codes.iter().any(|c| set.contains(c))
}

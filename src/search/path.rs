//! The FHIRPath subset that the R4 SearchParameter expressions use, compiled once and evaluated
//! on resource JSON with the element types from the R4 definitions.
//!
//! Supported: paths, `|` unions, `(x as T)`, `.as(T)`, `.ofType(T)`, `.where(resolve() is T)`,
//! `.where(field='literal')`, `.extension('url')`, and the one boolean form the definitions use,
//! `X.exists() and X != false`. Anything else fails to compile, and the parameter is then not
//! offered (the registry logs it), rather than indexed wrongly. A general FHIRPath engine would
//! evaluate these too, but slower, on every write; the compiled subset costs a few map lookups.

use std::borrow::Cow;

use serde_json::Value;

use crate::fhir::definitions::{Definitions, ElementDef};

/// One navigation step.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// `.name` (choice elements by their name without `[x]`).
    Child(String),
    /// `as T`, `.as(T)`, `.ofType(T)`: keep nodes of type T.
    As(String),
    /// `.where(resolve() is T)`: keep references to T.
    ResolveIs(String),
    /// `.where(field='literal')`.
    FieldEquals(String, String),
    /// `.extension('url')`.
    Extension(String),
}

/// A path from the resource root (when `root` is a type) or relative to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathExpr {
    root: Option<String>,
    steps: Vec<Step>,
}

/// A compiled expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// The union of paths.
    Union(Vec<PathExpr>),
    /// `X.exists() and X != false`: a computed boolean.
    ExistsNotFalse(PathExpr),
}

/// A value found by an expression, with its FHIR type when the definitions know it. Names are
/// borrowed from the definitions wherever they can be (evaluation runs on every write).
#[derive(Debug, Clone)]
pub struct Node<'a> {
    /// The JSON value.
    pub value: &'a Value,
    /// Its FHIR type (`Quantity`, `dateTime`, `CodeableConcept`, ...).
    pub fhir_type: Option<Cow<'a, str>>,
    /// The element-table key for its children: (type, parent path).
    pub(crate) table: Option<(Cow<'a, str>, Cow<'a, str>)>,
    /// Computed boolean result (for `ExistsNotFalse`).
    pub computed: Option<bool>,
    /// The element's required ValueSet binding (gives codes their system).
    pub binding: Option<&'a str>,
}

fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, false, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '\'' => quote = !quote,
            '(' if !quote => depth += 1,
            ')' if !quote => depth -= 1,
            c if c == sep && !quote && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn ident(s: &str) -> Option<String> {
    let ok = !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit());
    ok.then(|| s.to_string())
}

fn quoted(s: &str) -> Option<String> {
    let s = s.trim();
    s.strip_prefix('\'')?.strip_suffix('\'').map(str::to_string)
}

fn call<'a>(seg: &'a str, name: &str) -> Option<&'a str> {
    seg.strip_prefix(name)?.strip_prefix('(')?.strip_suffix(')')
}

fn parse_step(seg: &str) -> Option<Step> {
    let seg = seg.trim();
    if let Some(t) = call(seg, "as").or_else(|| call(seg, "ofType")) {
        return ident(t.trim()).map(Step::As);
    }
    if let Some(u) = call(seg, "extension") {
        return quoted(u).map(Step::Extension);
    }
    if let Some(cond) = call(seg, "where") {
        let cond = cond.trim();
        if let Some(t) = cond.strip_prefix("resolve() is ") {
            return ident(t.trim()).map(Step::ResolveIs);
        }
        let (field, lit) = cond.split_once('=')?;
        return Some(Step::FieldEquals(ident(field.trim())?, quoted(lit)?));
    }
    ident(seg).map(Step::Child)
}

fn is_type_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase())
}

fn parse_path(s: &str) -> Option<PathExpr> {
    let s = s.trim();
    // `(inner as T).rest` or `(inner)`
    if s.starts_with('(') {
        let mut depth = 0;
        let mut close = None;
        for (i, c) in s.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        close = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let close = close?;
        let inner = &s[1..close];
        let mut p = match inner.rsplit_once(" as ") {
            Some((path, ty)) => {
                let mut p = parse_path(path)?;
                p.steps.push(Step::As(ident(ty.trim())?));
                p
            }
            None => parse_path(inner)?,
        };
        let rest = s[close + 1..].trim();
        if !rest.is_empty() {
            let rest = rest.strip_prefix('.')?;
            for seg in split_top(rest, '.') {
                p.steps.push(parse_step(seg)?);
            }
        }
        return Some(p);
    }
    if let Some((path, ty)) = s.rsplit_once(" as ") {
        let mut p = parse_path(path)?;
        p.steps.push(Step::As(ident(ty.trim())?));
        return Some(p);
    }
    let segs = split_top(s, '.');
    let (root, rest) = match segs.first() {
        Some(first) if is_type_name(first.trim()) => (Some(ident(first.trim())?), &segs[1..]),
        _ => (None, &segs[..]),
    };
    let steps = rest
        .iter()
        .map(|seg| parse_step(seg))
        .collect::<Option<Vec<_>>>()?;
    Some(PathExpr { root, steps })
}

/// Compile an expression; None when it uses FHIRPath beyond the supported subset.
pub fn compile(expr: &str) -> Option<Expr> {
    let e = expr.trim();
    if let Some((a, b)) = e.split_once(".exists() and ") {
        let b = b.trim().strip_suffix("!= false")?.trim();
        if a.trim() != b {
            return None;
        }
        return Some(Expr::ExistsNotFalse(parse_path(a)?));
    }
    let paths = split_top(e, '|')
        .into_iter()
        .map(parse_path)
        .collect::<Option<Vec<_>>>()?;
    Some(Expr::Union(paths))
}

/// True when `suffix` is the type name `t` with its first letter capitalized (`valueQuantity`
/// holds a `Quantity`, `valueString` a `string`).
fn is_capitalized(suffix: &str, t: &str) -> bool {
    let (mut a, mut b) = (suffix.chars(), t.chars());
    match (a.next(), b.next()) {
        (Some(x), Some(y)) => x == y.to_ascii_uppercase() && a.as_str() == b.as_str(),
        _ => false,
    }
}

fn type_of_reference(reference: &str) -> Option<&str> {
    let no_hist = match reference.find("/_history/") {
        Some(p) => &reference[..p],
        None => reference,
    };
    let mut parts = no_hist.rsplit('/');
    let _id = parts.next()?;
    parts.next().filter(|t| is_type_name(t))
}

/// The evaluation context: the definitions, for element types.
pub struct Evaluator<'d> {
    defs: &'d Definitions,
}

impl<'d> Evaluator<'d> {
    /// An evaluator over the R4 definitions.
    pub fn new(defs: &'d Definitions) -> Self {
        Evaluator { defs }
    }

    /// The root node of a resource.
    pub fn root<'a>(&self, rtype: &'a str, resource: &'a Value) -> Node<'a> {
        Node {
            value: resource,
            fhir_type: Some(Cow::Borrowed(rtype)),
            table: Some((Cow::Borrowed(rtype), Cow::Borrowed(rtype))),
            computed: None,
            binding: None,
        }
    }

    /// Evaluate `expr` from the resource root (absolute paths whose root type is not `rtype`,
    /// `Resource` or `DomainResource` contribute nothing).
    pub fn eval<'a>(&self, expr: &Expr, rtype: &'a str, resource: &'a Value) -> Vec<Node<'a>>
    where
        'd: 'a,
    {
        let root = self.root(rtype, resource);
        self.eval_from(expr, rtype, &root)
    }

    /// Evaluate `expr` from a node (relative paths start at the node).
    pub fn eval_from<'a>(&self, expr: &Expr, rtype: &str, node: &Node<'a>) -> Vec<Node<'a>>
    where
        'd: 'a,
    {
        match expr {
            Expr::Union(paths) => {
                let mut out = Vec::new();
                for p in paths {
                    out.extend(self.eval_path(p, rtype, node));
                }
                out
            }
            Expr::ExistsNotFalse(p) => {
                let found = self.eval_path(p, rtype, node);
                let value =
                    !found.is_empty() && !found.iter().all(|n| n.value == &Value::Bool(false));
                vec![Node {
                    value: node.value,
                    fhir_type: Some(Cow::Borrowed("boolean")),
                    table: None,
                    computed: Some(value),
                    binding: None,
                }]
            }
        }
    }

    fn eval_path<'a>(&self, p: &PathExpr, rtype: &str, start: &Node<'a>) -> Vec<Node<'a>>
    where
        'd: 'a,
    {
        if let Some(root) = &p.root {
            if root != rtype && root != "Resource" && root != "DomainResource" {
                return Vec::new();
            }
        }
        let mut nodes = vec![start.clone()];
        for step in &p.steps {
            let mut next = Vec::new();
            for n in &nodes {
                self.apply(step, n, &mut next);
            }
            nodes = next;
            if nodes.is_empty() {
                break;
            }
        }
        nodes
    }

    fn element(&self, table: &(Cow<'_, str>, Cow<'_, str>), name: &str) -> Option<&'d ElementDef> {
        self.defs
            .get_type(&table.0)?
            .children
            .get(&*table.1)?
            .iter()
            .find(|e| e.name == name)
    }

    fn child_node<'a>(
        &self,
        def: Option<&'d ElementDef>,
        ty: Option<Cow<'a, str>>,
        table: &(Cow<'a, str>, Cow<'a, str>),
        v: &'a Value,
    ) -> Node<'a>
    where
        'd: 'a,
    {
        let Some(def) = def else {
            return Node {
                value: v,
                table: ty.clone().map(|t| (t.clone(), t)),
                fhir_type: ty,
                computed: None,
                binding: None,
            };
        };
        if let Some(target) = &def.content_ref {
            let path = target.trim_start_matches('#');
            return Node {
                value: v,
                fhir_type: Some(Cow::Borrowed("BackboneElement")),
                table: Some((table.0.clone(), Cow::Borrowed(path))),
                computed: None,
                binding: None,
            };
        }
        let t: Option<Cow<'a, str>> =
            ty.or_else(|| def.types.first().map(|t| Cow::Borrowed(t.as_str())));
        match t.as_deref() {
            Some("BackboneElement") | Some("Element") if def.types.len() == 1 => Node {
                value: v,
                fhir_type: t.clone(),
                table: Some((
                    table.0.clone(),
                    Cow::Borrowed(def.path.trim_end_matches("[x]")),
                )),
                computed: None,
                binding: None,
            },
            _ => Node {
                value: v,
                table: t.clone().map(|t| (t.clone(), t)),
                fhir_type: t,
                computed: None,
                binding: def.binding.as_deref(),
            },
        }
    }

    fn push_values<'a>(
        &self,
        v: &'a Value,
        def: Option<&'d ElementDef>,
        ty: Option<Cow<'a, str>>,
        table: &(Cow<'a, str>, Cow<'a, str>),
        out: &mut Vec<Node<'a>>,
    ) where
        'd: 'a,
    {
        match v {
            Value::Array(items) => {
                for item in items {
                    out.push(self.child_node(def, ty.clone(), table, item));
                }
            }
            Value::Null => {}
            _ => out.push(self.child_node(def, ty, table, v)),
        }
    }

    fn apply<'a>(&self, step: &Step, n: &Node<'a>, out: &mut Vec<Node<'a>>)
    where
        'd: 'a,
    {
        let Value::Object(obj) = n.value else {
            // primitives have no children; `as` still applies
            if let Step::As(t) = step {
                if n.fhir_type
                    .as_deref()
                    .is_some_and(|ft| ft.eq_ignore_ascii_case(t))
                {
                    out.push(n.clone());
                }
            }
            return;
        };
        let fallback = (Cow::Borrowed(""), Cow::Borrowed(""));
        let table = n.table.as_ref().unwrap_or(&fallback);
        match step {
            Step::Child(name) => {
                let def = n.table.as_ref().and_then(|t| self.element(t, name));
                match def {
                    Some(d) if d.choice => {
                        // the element's keys (`valueQuantity`, ...) in the order of its types
                        for t in &d.types {
                            let found = obj.iter().find(|(k, _)| {
                                k.strip_prefix(name.as_str())
                                    .is_some_and(|suffix| is_capitalized(suffix, t))
                            });
                            if let Some((_, v)) = found {
                                self.push_values(
                                    v,
                                    Some(d),
                                    Some(Cow::Borrowed(t.as_str())),
                                    table,
                                    out,
                                );
                            }
                        }
                    }
                    Some(d) => {
                        if let Some(v) = obj.get(name) {
                            self.push_values(v, Some(d), None, table, out);
                        }
                    }
                    None => {
                        if let Some(v) = obj.get(name) {
                            self.push_values(v, None, None, table, out);
                        } else {
                            // unknown context: a choice element by its prefix
                            for (k, v) in obj {
                                if let Some(suffix) = k.strip_prefix(name.as_str()) {
                                    if suffix.starts_with(|c: char| c.is_ascii_uppercase()) {
                                        let t = if self.defs.get_type(suffix).is_some() {
                                            Cow::Borrowed(suffix)
                                        } else {
                                            Cow::Owned(lower_first(suffix))
                                        };
                                        self.push_values(v, None, Some(t), table, out);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            Step::As(t) => {
                if n.fhir_type
                    .as_deref()
                    .is_some_and(|ft| ft.eq_ignore_ascii_case(t))
                {
                    out.push(n.clone());
                }
            }
            Step::ResolveIs(t) => {
                let r = obj
                    .get("reference")
                    .and_then(Value::as_str)
                    .and_then(type_of_reference);
                if r == Some(t.as_str()) {
                    out.push(n.clone());
                }
            }
            Step::FieldEquals(f, lit) => {
                if obj.get(f).and_then(Value::as_str) == Some(lit.as_str()) {
                    out.push(n.clone());
                }
            }
            Step::Extension(url) => {
                if let Some(Value::Array(exts)) = obj.get("extension") {
                    for e in exts {
                        if e.get("url").and_then(Value::as_str) == Some(url.as_str()) {
                            out.push(Node {
                                value: e,
                                fhir_type: Some(Cow::Borrowed("Extension")),
                                table: Some((
                                    Cow::Borrowed("Extension"),
                                    Cow::Borrowed("Extension"),
                                )),
                                computed: None,
                                binding: None,
                            });
                        }
                    }
                }
            }
        }
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_lowercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn defs() -> &'static Definitions {
        static D: once_cell::sync::Lazy<Definitions> =
            once_cell::sync::Lazy::new(|| Definitions::load().expect("defs"));
        &D
    }

    fn types(expr: &str, rtype: &str, r: &Value) -> Vec<(String, Value)> {
        let e = compile(expr).unwrap_or_else(|| panic!("compiles: {expr}"));
        Evaluator::new(defs())
            .eval(&e, rtype, r)
            .into_iter()
            .map(|n| {
                (
                    n.fhir_type.unwrap_or_default().into_owned(),
                    n.value.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn choice_types_unions_and_casts() {
        let obs = json!({"resourceType": "Observation", "effectiveDateTime": "2020-01-01",
            "valueQuantity": {"value": 7.2}, "component": [{"code": {"text": "a"}, "valuePeriod": {"start": "2020"}}]});
        assert_eq!(
            types("Observation.effective", "Observation", &obs),
            vec![("dateTime".into(), json!("2020-01-01"))]
        );
        assert_eq!(
            types(
                "(Observation.value as Quantity) | (Observation.component.value as Quantity)",
                "Observation",
                &obs
            ),
            vec![("Quantity".into(), json!({"value": 7.2}))]
        );
        assert_eq!(
            types(
                "Observation.component.value.as(Period)",
                "Observation",
                &obs
            )
            .len(),
            1
        );
        assert!(types("Patient.name | Person.name", "Observation", &obs).is_empty());
    }

    #[test]
    fn where_resolve_extension_and_boolean_forms() {
        let p = json!({"resourceType": "Observation", "subject": {"reference": "Patient/1"},
            "extension": [{"url": "u", "valueCodeableConcept": {"text": "x"}}]});
        assert_eq!(
            types(
                "Observation.subject.where(resolve() is Patient)",
                "Observation",
                &p
            )
            .len(),
            1
        );
        assert!(types(
            "Observation.subject.where(resolve() is Group)",
            "Observation",
            &p
        )
        .is_empty());
        assert_eq!(
            types("Observation.extension('u').value", "Observation", &p),
            vec![("CodeableConcept".into(), json!({"text": "x"}))]
        );
        let e = compile("Patient.deceased.exists() and Patient.deceased != false").expect("c");
        let ev = Evaluator::new(defs());
        let r = json!({"resourceType": "Patient", "deceasedDateTime": "2020"});
        assert_eq!(ev.eval(&e, "Patient", &r)[0].computed, Some(true));
        let r = json!({"resourceType": "Patient", "deceasedBoolean": false});
        assert_eq!(ev.eval(&e, "Patient", &r)[0].computed, Some(false));
        assert!(compile("Patient.name.select(given)").is_none());
        assert!(compile("Library.relatedArtifact.where(type='composed-of').resource").is_some());
    }
}

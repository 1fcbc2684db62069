//! Parsing a search query (name/value pairs) into criteria and result controls, reporting every
//! malformed value at once. Unknown parameters are collected as warnings (lenient handling) or
//! reported as errors (`Prefer: handling=strict`).

use std::sync::Arc;

use super::extract::{CONVERTED, DAY_MS, EXACT, HI, IDENTIFIER, OF_TYPE, TEXT};
use super::matcher::{Matcher, Prefix, Test, UnitSel};
use super::params::{ParamDef, ParamType, Registry};
use super::units::{self, UCUM};
use super::values::{self, clean, enc_token, fold, parse_date_range, parse_number, scaled, Range};
use crate::error::{FhirError, Result};
use crate::fhir::outcome::Issue;
use crate::fhir::resource_types::is_resource_type;

/// A filter on resources of one type.
#[derive(Debug, Clone)]
pub enum Criterion {
    /// At least one entry passes one of the matchers.
    Any(Vec<Matcher>),
    /// No entry passes any of the matchers (`:not`, `:not-in`, `:missing=true`).
    NoneOf(Vec<Matcher>),
    /// The logical id is one of these.
    Ids(Vec<String>),
    /// A token in (or, negated, not in) the codes of a ValueSet.
    InValueSet {
        /// Entry parameter.
        param: String,
        /// ValueSet canonical URL.
        url: String,
        /// `:not-in`.
        negate: bool,
    },
    /// A chained parameter: references (through `param`) to resources of `types` matching `inner`.
    Chain {
        /// Reference parameter on this type.
        param: String,
        /// Target types searched.
        types: Vec<String>,
        /// Criteria on the targets (per type, in the order of `types`).
        inner: Vec<Vec<Criterion>>,
    },
    /// Reverse chain: resources of `source` whose `param` refers to this one and match `inner`.
    Has {
        /// Referring type.
        source: String,
        /// Its reference parameter.
        param: String,
        /// Criteria on the referring resources.
        inner: Vec<Criterion>,
    },
}

/// `_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    /// No total.
    None,
    /// An estimate is enough.
    Estimate,
    /// The exact count.
    Accurate,
}

/// `_summary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Full resources.
    False,
    /// Summary elements only.
    True,
    /// Only the count.
    Count,
    /// Everything but the narrative.
    Data,
    /// Narrative, id, meta and mandatory elements.
    Text,
}

/// An `_include` or `_revinclude`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// The type holding the reference.
    pub source: String,
    /// Its reference parameter, or `*`.
    pub param: String,
    /// Only targets of this type.
    pub target: Option<String>,
    /// `:iterate` (or the R4 `:recurse`).
    pub iterate: bool,
}

/// One `_sort` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// Parameter (`_id` and `_lastUpdated` included).
    pub param: String,
    /// `-param`.
    pub descending: bool,
    /// Its type.
    pub kind: Option<ParamType>,
}

/// A parsed search.
#[derive(Debug, Clone)]
pub struct Search {
    /// Filters (ANDed).
    pub criteria: Vec<Criterion>,
    /// Page size.
    pub count: usize,
    /// Sort keys.
    pub sort: Vec<SortKey>,
    /// `_total`.
    pub total: Total,
    /// `_summary`.
    pub summary: Summary,
    /// `_elements`.
    pub elements: Option<Vec<String>>,
    /// `_include`s.
    pub includes: Vec<Include>,
    /// `_revinclude`s.
    pub revincludes: Vec<Include>,
    /// Paging cursor.
    pub cursor: Option<String>,
    /// Ignored parameters (lenient handling), as warnings.
    pub warnings: Vec<Issue>,
    /// The filter and control parameters as given (for links), without paging ones.
    pub kept: Vec<(String, String)>,
}

/// Page-size limits.
#[derive(Debug, Clone, Copy)]
pub struct PageLimits {
    /// `_count` when not given.
    pub default: usize,
    /// Largest `_count` honoured.
    pub max: usize,
}

/// Split on `sep` where it is not escaped with `\`, and unescape `\sep`.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some(&n) if n == sep => {
                    if let Some(l) = out.last_mut() {
                        l.push(n);
                    }
                    chars.next();
                }
                Some(&n) => {
                    if let Some(l) = out.last_mut() {
                        l.push('\\');
                        l.push(n);
                    }
                    chars.next();
                }
                None => {
                    if let Some(l) = out.last_mut() {
                        l.push('\\');
                    }
                }
            }
        } else if c == sep {
            out.push(String::new());
        } else if let Some(l) = out.last_mut() {
            l.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parameters that control results rather than filter them.
const CONTROL: &[&str] = &[
    "_count",
    "_sort",
    "_total",
    "_summary",
    "_elements",
    "_include",
    "_revinclude",
    "_cursor",
    "_format",
    "_pretty",
    "_type",
];

struct Parser<'r> {
    reg: &'r Registry,
    errors: Vec<Issue>,
    unknown: Vec<Issue>,
}

fn bad(errors: &mut Vec<Issue>, name: &str, msg: String) {
    errors.push(Issue::error("value", msg).at(name.to_string()));
}

impl Parser<'_> {
    /// Criteria for one `name=value` on `rtype`; None when the name is unknown.
    fn criterion(&mut self, rtype: &str, name: &str, raw: &str) -> Option<Criterion> {
        if let Some(rest) = name.strip_prefix("_has:") {
            return self.has(rtype, name, rest, raw);
        }
        // chain: the first '.' before any further ':' belongs to the chained parameter
        if let Some((left, right)) = name.split_once('.') {
            return self.chain(rtype, name, left, right, raw);
        }
        let (code, modifier) = match name.split_once(':') {
            Some((c, m)) => (c, Some(m)),
            None => (name, None),
        };
        if code == "_id" {
            return self.id_criterion(name, modifier, raw);
        }
        let def = self.reg.param(rtype, code)?.clone();
        let values: Vec<String> = split_escaped(raw, ',');
        if values.iter().all(|v| v.is_empty()) {
            bad(
                &mut self.errors,
                name,
                format!("parameter '{name}' has no value"),
            );
            return Some(Criterion::Any(vec![]));
        }
        if modifier == Some("missing") {
            let missing = match raw {
                "true" => true,
                "false" => false,
                _ => {
                    bad(
                        &mut self.errors,
                        name,
                        format!("':missing' takes true or false, got '{raw}'"),
                    );
                    return Some(Criterion::Any(vec![]));
                }
            };
            let mut any = vec![Matcher::new(def.code.clone(), Test::Any)];
            if def.kind == ParamType::Token {
                any.push(Matcher::new(format!("{}{TEXT}", def.code), Test::Any));
            }
            let any = with_combo_base(any);
            return Some(if missing {
                Criterion::NoneOf(any)
            } else {
                Criterion::Any(any)
            });
        }
        self.typed(name, &def, modifier, values)
    }

    fn id_criterion(&mut self, name: &str, modifier: Option<&str>, raw: &str) -> Option<Criterion> {
        let ids: Vec<String> = split_escaped(raw, ',')
            .into_iter()
            .filter(|v| !v.is_empty())
            .collect();
        match modifier {
            None | Some("exact") => Some(Criterion::Ids(ids)),
            Some("missing") => Some(Criterion::Ids(if raw == "false" {
                vec!["*".into()]
            } else {
                vec![]
            })),
            Some(m) => {
                bad(
                    &mut self.errors,
                    name,
                    format!("modifier ':{m}' is not supported on _id"),
                );
                Some(Criterion::Ids(vec![]))
            }
        }
    }

    fn typed(
        &mut self,
        name: &str,
        def: &Arc<ParamDef>,
        modifier: Option<&str>,
        values: Vec<String>,
    ) -> Option<Criterion> {
        let code = def.code.as_str();
        let mut matchers = Vec::new();
        let mut negate = false;
        let unsupported = |this: &mut Self, m: &str| {
            bad(
                &mut this.errors,
                name,
                format!(
                    "modifier ':{m}' is not supported on {} parameter '{code}'",
                    def.kind.code()
                ),
            );
        };
        match def.kind {
            ParamType::Token => {
                match modifier {
                    None => matchers.extend(
                        values
                            .iter()
                            .map(|v| Matcher::token(code, &unescape_pipe(v))),
                    ),
                    Some("not") => {
                        negate = true;
                        matchers.extend(
                            values
                                .iter()
                                .map(|v| Matcher::token(code, &unescape_pipe(v))),
                        );
                    }
                    Some("text") => matchers.extend(values.iter().map(|v| {
                        Matcher::new(format!("{code}{TEXT}"), Test::Prefix(clean(&fold(v))))
                    })),
                    Some("of-type") => {
                        for v in &values {
                            let parts = split_escaped(v, '|');
                            if parts.len() != 3 || parts[1].is_empty() || parts[2].is_empty() {
                                bad(
                                    &mut self.errors,
                                    name,
                                    format!("':of-type' needs system|code|value, got '{v}'"),
                                );
                                continue;
                            }
                            let ty = format!("{}|{}", parts[0], parts[1]);
                            matchers.push(Matcher::new(
                                format!("{code}{OF_TYPE}"),
                                Test::Exact(enc_token(&ty, &parts[2])),
                            ));
                        }
                    }
                    Some(m @ ("in" | "not-in")) => {
                        if values.len() != 1 {
                            bad(
                                &mut self.errors,
                                name,
                                format!("':{m}' takes one ValueSet URL"),
                            );
                        }
                        return Some(Criterion::InValueSet {
                            param: code.to_string(),
                            url: values[0].clone(),
                            negate: m == "not-in",
                        });
                    }
                    Some(m) => unsupported(self, m),
                }
            }
            ParamType::String => {
                for v in &values {
                    let v = unescape(v);
                    matchers.push(match modifier {
                        None => Matcher::new(code, Test::Prefix(clean(&fold(&v)))),
                        Some("exact") => {
                            Matcher::new(format!("{code}{EXACT}"), Test::Exact(clean(&v)))
                        }
                        Some("contains") => Matcher::new(code, Test::Contains(clean(&fold(&v)))),
                        Some(m) => {
                            unsupported(self, m);
                            continue;
                        }
                    });
                }
            }
            ParamType::Date => {
                if let Some(m) = modifier {
                    unsupported(self, m);
                }
                for v in &values {
                    matchers.extend(self.date_matchers(name, code, v));
                }
            }
            ParamType::Number | ParamType::Quantity => {
                if let Some(m) = modifier {
                    unsupported(self, m);
                }
                for v in &values {
                    matchers.extend(self.quantity_matchers(
                        name,
                        code,
                        v,
                        def.kind == ParamType::Number,
                    ));
                }
            }
            ParamType::Reference => match modifier {
                Some("identifier") => matchers.extend(
                    values
                        .iter()
                        .map(|v| Matcher::token(&format!("{code}{IDENTIFIER}"), &unescape_pipe(v))),
                ),
                Some(m) if is_resource_type(m) => {
                    for v in &values {
                        let id = v.rsplit('/').next().unwrap_or(v);
                        matchers.push(Matcher::new(code, Test::Exact(clean(&format!("{m}/{id}")))));
                    }
                }
                Some(m) => unsupported(self, m),
                None => {
                    for v in &values {
                        matchers.extend(self.reference_matchers(def, v));
                    }
                }
            },
            ParamType::Uri => {
                for v in &values {
                    let v = unescape(v);
                    matchers.push(match modifier {
                        None => Matcher::new(code, Test::Exact(clean(&v))),
                        Some("below") => Matcher::new(code, Test::Prefix(clean(&v))),
                        Some("above") => Matcher::new(code, Test::PrefixOf(clean(&v))),
                        Some(m) => {
                            unsupported(self, m);
                            continue;
                        }
                    });
                }
            }
            ParamType::Composite => {
                if let Some(m) = modifier {
                    unsupported(self, m);
                }
                for v in &values {
                    if let Some(m) = self.composite_matcher(name, def, v) {
                        matchers.push(m);
                    }
                }
            }
        }
        let matchers = with_combo_base(matchers);
        Some(if negate {
            Criterion::NoneOf(matchers)
        } else {
            Criterion::Any(matchers)
        })
    }

    fn date_matcher(&mut self, name: &str, code: &str, v: &str) -> Option<Matcher> {
        let (p, rest) = Prefix::split(v);
        let Some(mut s) = parse_date_range(rest) else {
            bad(&mut self.errors, name, format!("'{v}' is not a valid date search value (prefix eq|ne|gt|lt|ge|le|sa|eb|ap, then YYYY[-MM[-DD[Thh:mm[:ss[.fff]][Z|±hh:mm]]]])"));
            return None;
        };
        if p == Prefix::Ap {
            // approximately: widen by 10% of the distance from now (at least the value's own range)
            let now = crate::clock::now_ms();
            let gap = ((now - s.low).abs() / 10).max(0);
            s = Range {
                low: s.low.saturating_sub(gap),
                high: s.high.saturating_add(gap),
            };
        }
        Some(match p {
            Prefix::Gt | Prefix::Ge | Prefix::Eb => {
                Matcher::new(format!("{code}{HI}"), Test::DateHigh(p, s))
            }
            _ => Matcher::new(code, Test::DateLow(p, s)),
        })
    }

    /// Matchers of a date value: prefixes that look at the end of the target range need the
    /// by-end entries of wide ranges plus a by-start scan, from a day earlier, for the narrow
    /// ranges that have only a by-start entry.
    fn date_matchers(&mut self, name: &str, code: &str, v: &str) -> Vec<Matcher> {
        let Some(m) = self.date_matcher(name, code, v) else {
            return vec![];
        };
        let e = |x: i64| values::enc_i64(x).to_vec();
        let narrow = match &m.test {
            Test::DateHigh(p @ (Prefix::Gt | Prefix::Ge), s) => {
                let from = if *p == Prefix::Gt { s.high } else { s.low };
                Some(Matcher::with_range(
                    code,
                    Test::DateLow(*p, *s),
                    e(from.saturating_sub(DAY_MS)),
                    None,
                ))
            }
            Test::DateHigh(Prefix::Eb, s) => Some(Matcher::with_range(
                code,
                Test::DateLow(Prefix::Eb, *s),
                Vec::new(),
                Some(e(s.low)),
            )),
            _ => None,
        };
        let mut out = vec![m];
        out.extend(narrow);
        out
    }

    fn quantity_matchers(&mut self, name: &str, code: &str, v: &str, number: bool) -> Vec<Matcher> {
        let parts = split_escaped(v, '|');
        let (p, num) = Prefix::split(&parts[0]);
        let Some(n) = parse_number(num) else {
            bad(
                &mut self.errors,
                name,
                format!(
                    "'{v}' is not a valid {} search value ([prefix]number{})",
                    if number { "number" } else { "quantity" },
                    if number { "" } else { "[|system|code]" }
                ),
            );
            return vec![];
        };
        if parts.len() != 1 && (number || parts.len() != 3) {
            bad(
                &mut self.errors,
                name,
                format!("'{v}' is not a valid quantity search value (number|system|code)"),
            );
            return vec![];
        }
        let mut half = n.half_width;
        if p == Prefix::Ap {
            half = half.max(n.value.abs() * rust_decimal::Decimal::new(1, 1));
        }
        let make = |unit: UnitSel, value: rust_decimal::Decimal, half: rust_decimal::Decimal| {
            Matcher::new(
                code,
                Test::Number {
                    unit,
                    prefix: p,
                    value: scaled(value),
                    lo: scaled(value - half),
                    hi: scaled(value + half),
                },
            )
        };
        if number {
            return vec![make(UnitSel::Exact(Vec::new()), n.value, half)];
        }
        match parts.as_slice() {
            [_] => vec![make(UnitSel::Raw, n.value, half)],
            [_, sys, ucode] if sys.is_empty() => {
                vec![make(UnitSel::CodeOrUnit(clean(ucode)), n.value, half)]
            }
            [_, sys, ucode] => {
                let mut out = vec![
                    make(
                        UnitSel::Exact(clean(&format!("{sys}|{ucode}"))),
                        n.value,
                        half,
                    ),
                    make(
                        UnitSel::Exact(clean(&format!("{CONVERTED}{sys}|{ucode}"))),
                        n.value,
                        half,
                    ),
                ];
                if sys == UCUM {
                    if let (Some((k, cv)), Some((_, ch))) = (
                        units::canonical(ucode, n.value),
                        units::canonical(ucode, half),
                    ) {
                        out.push(make(UnitSel::Exact(clean(&k)), cv, ch));
                    }
                }
                out
            }
            _ => vec![],
        }
    }

    fn reference_matchers(&mut self, def: &ParamDef, v: &str) -> Vec<Matcher> {
        let code = def.code.as_str();
        let local = super::extract::normalise_reference(v, &self.reg.base_url);
        if local.contains('/') || local.contains(':') {
            // Type/id, a foreign URL or a canonical (with or without |version)
            return vec![Matcher::new(code, Test::Exact(clean(&local)))];
        }
        // a bare id: any allowed target type
        let targets: Vec<String> = if def.targets.is_empty() {
            crate::fhir::resource_types::RESOURCE_TYPES
                .iter()
                .map(|t| t.to_string())
                .collect()
        } else {
            def.targets.clone()
        };
        targets
            .iter()
            .map(|t| Matcher::new(code, Test::Exact(clean(&format!("{t}/{local}")))))
            .collect()
    }

    fn composite_matcher(&mut self, name: &str, def: &ParamDef, v: &str) -> Option<Matcher> {
        let parts = split_escaped(v, '$');
        let [first, second] = parts.as_slice() else {
            bad(
                &mut self.errors,
                name,
                format!("composite value '{v}' must have two parts joined by '$'"),
            );
            return None;
        };
        let [c1, c2] = def.components.as_slice() else {
            return None;
        };
        let t1 = self.component_test(name, c1.kind, first)?;
        let t2 = self.component_test(name, c2.kind, second)?;
        Some(Matcher::new(
            def.code.clone(),
            Test::Composite(Box::new(t1), Box::new(t2)),
        ))
    }

    fn component_test(&mut self, name: &str, kind: ParamType, v: &str) -> Option<Test> {
        match kind {
            ParamType::Token => Some(Matcher::token("", &unescape_pipe(v)).test),
            ParamType::String => Some(Test::Prefix(clean(&fold(v)))),
            ParamType::Date => self.date_matcher(name, "", v).map(|m| match m.test {
                // composites store the by-start layout only
                Test::DateHigh(p, s) => Test::DateLow(p, s),
                t => t,
            }),
            ParamType::Quantity | ParamType::Number => {
                let ms = self.quantity_matchers(name, "", v, kind == ParamType::Number);
                if ms.is_empty() {
                    return None;
                }
                Some(Test::AnyOf(ms.into_iter().map(|m| m.test).collect()))
            }
            _ => {
                bad(
                    &mut self.errors,
                    name,
                    "unsupported composite component type".into(),
                );
                None
            }
        }
    }

    fn chain(
        &mut self,
        rtype: &str,
        name: &str,
        left: &str,
        right: &str,
        raw: &str,
    ) -> Option<Criterion> {
        let (code, type_mod) = match left.split_once(':') {
            Some((c, t)) => (c, Some(t)),
            None => (left, None),
        };
        let def = self.reg.param(rtype, code)?.clone();
        if def.kind != ParamType::Reference {
            bad(
                &mut self.errors,
                name,
                format!("'{code}' is not a reference parameter and cannot be chained"),
            );
            return Some(Criterion::Any(vec![]));
        }
        let types: Vec<String> = match type_mod {
            Some(t) if is_resource_type(t) => vec![t.to_string()],
            Some(t) => {
                bad(
                    &mut self.errors,
                    name,
                    format!("'{t}' is not a resource type"),
                );
                return Some(Criterion::Any(vec![]));
            }
            None => def.targets.clone(),
        };
        let inner_name = right.split([':', '.']).next().unwrap_or(right);
        let candidates: Vec<String> = types
            .into_iter()
            .filter(|t| {
                inner_name == "_id"
                    || inner_name == "_has"
                    || self.reg.param(t, inner_name).is_some()
            })
            .collect();
        if candidates.is_empty() {
            bad(
                &mut self.errors,
                name,
                format!("no target type of '{code}' has a search parameter '{inner_name}'"),
            );
            return Some(Criterion::Any(vec![]));
        }
        // a chain without a type is searched on every target type that has the parameter
        let mut inner = Vec::new();
        for t in &candidates {
            let c = self.criterion(t, right, raw);
            inner.push(c.into_iter().collect());
        }
        Some(Criterion::Chain {
            param: def.code.clone(),
            types: candidates,
            inner,
        })
    }

    fn has(&mut self, rtype: &str, name: &str, rest: &str, raw: &str) -> Option<Criterion> {
        let mut it = rest.splitn(3, ':');
        let (Some(source), Some(param), Some(inner_name)) = (it.next(), it.next(), it.next())
        else {
            bad(
                &mut self.errors,
                name,
                "_has needs the form _has:Type:reference-param:search-param".into(),
            );
            return Some(Criterion::Any(vec![]));
        };
        if !is_resource_type(source) {
            bad(
                &mut self.errors,
                name,
                format!("'{source}' is not a resource type"),
            );
            return Some(Criterion::Any(vec![]));
        }
        match self.reg.param(source, param) {
            Some(d)
                if d.kind == ParamType::Reference
                    && (d.targets.is_empty() || d.targets.iter().any(|t| t == rtype)) => {}
            _ => {
                bad(&mut self.errors, name, format!("'{param}' is not a reference parameter of {source} that can refer to {rtype}"));
                return Some(Criterion::Any(vec![]));
            }
        }
        let Some(inner) = self.criterion(source, inner_name, raw) else {
            bad(
                &mut self.errors,
                name,
                format!("unknown search parameter '{inner_name}' on {source}"),
            );
            return Some(Criterion::Any(vec![]));
        };
        Some(Criterion::Has {
            source: source.to_string(),
            param: param.to_string(),
            inner: vec![inner],
        })
    }
}

/// `combo-X` entries that `X` holds are stored only under `X`: look there too.
fn with_combo_base(matchers: Vec<Matcher>) -> Vec<Matcher> {
    let mut out = Vec::with_capacity(matchers.len() * 2);
    for m in matchers {
        if let Some(base) = super::extract::combo_base(&m.param) {
            let mut b = m.clone();
            b.param = base.to_string();
            out.push(b);
        }
        out.push(m);
    }
    out
}

/// Token values keep `\|` escapes until split; turn them into the literal.
fn unescape_pipe(v: &str) -> String {
    let parts = split_escaped(v, '|');
    match parts.as_slice() {
        [code] => code.clone(),
        [sys, code] => format!("{sys}|{code}"),
        _ => parts.join("|"),
    }
}

fn control_values(errors: &mut Vec<Issue>, name: &str, v: &str) -> Vec<String> {
    let out: Vec<String> = v
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if out.is_empty() {
        bad(errors, name, format!("'{name}' has no value"));
    }
    out
}

fn parse_include(reg: &Registry, errors: &mut Vec<Issue>, name: &str, v: &str) -> Option<Include> {
    let iterate = name.ends_with(":iterate") || name.ends_with(":recurse");
    if v == "*" {
        return Some(Include {
            source: "*".into(),
            param: "*".into(),
            target: None,
            iterate,
        });
    }
    let parts: Vec<&str> = v.split(':').collect();
    let (source, param, target) = match parts.as_slice() {
        [s, p] => (*s, *p, None),
        [s, p, t] => (*s, *p, Some(t.to_string())),
        _ => {
            bad(
                errors,
                name,
                format!("'{v}' is not Type:parameter[:targetType]"),
            );
            return None;
        }
    };
    if !is_resource_type(source) {
        bad(errors, name, format!("'{source}' is not a resource type"));
        return None;
    }
    if param != "*"
        && reg
            .param(source, param)
            .is_none_or(|d| d.kind != ParamType::Reference)
    {
        bad(
            errors,
            name,
            format!("'{param}' is not a reference search parameter of {source}"),
        );
        return None;
    }
    if let Some(t) = &target {
        if !is_resource_type(t) {
            bad(errors, name, format!("'{t}' is not a resource type"));
            return None;
        }
    }
    Some(Include {
        source: source.to_string(),
        param: param.to_string(),
        target,
        iterate,
    })
}

/// Parse a search on `rtypes` (one type, or several for system search, where only the common
/// parameters apply). `strict` turns unknown parameters into errors.
pub fn parse(
    reg: &Registry,
    rtypes: &[String],
    pairs: &[(String, String)],
    limits: PageLimits,
    strict: bool,
) -> Result<Search> {
    let mut p = Parser {
        reg,
        errors: Vec::new(),
        unknown: Vec::new(),
    };
    let mut s = Search {
        criteria: Vec::new(),
        count: limits.default,
        sort: Vec::new(),
        total: Total::Accurate,
        summary: Summary::False,
        elements: None,
        includes: Vec::new(),
        revincludes: Vec::new(),
        cursor: None,
        warnings: Vec::new(),
        kept: Vec::new(),
    };
    let single = (rtypes.len() == 1).then(|| rtypes[0].clone());
    for (name, value) in pairs {
        let name = name.as_str();
        let base = name.split(':').next().unwrap_or(name);
        if CONTROL.contains(&base) {
            if !matches!(base, "_cursor" | "_format" | "_pretty") {
                s.kept.push((name.to_string(), value.clone()));
            }
            match base {
                "_count" => match value.trim().parse::<usize>() {
                    Ok(c) => s.count = c.min(limits.max),
                    Err(_) => bad(
                        &mut p.errors,
                        name,
                        format!("_count must be a non-negative integer, got '{value}'"),
                    ),
                },
                "_cursor" => s.cursor = Some(value.clone()),
                "_total" => match value.as_str() {
                    "none" => s.total = Total::None,
                    "estimate" => s.total = Total::Estimate,
                    "accurate" => s.total = Total::Accurate,
                    _ => bad(
                        &mut p.errors,
                        name,
                        format!("_total must be none, estimate or accurate, got '{value}'"),
                    ),
                },
                "_summary" => match value.as_str() {
                    "true" => s.summary = Summary::True,
                    "false" => s.summary = Summary::False,
                    "count" => s.summary = Summary::Count,
                    "data" => s.summary = Summary::Data,
                    "text" => s.summary = Summary::Text,
                    _ => bad(
                        &mut p.errors,
                        name,
                        format!("_summary must be true, false, count, data or text, got '{value}'"),
                    ),
                },
                "_elements" => s.elements = Some(control_values(&mut p.errors, name, value)),
                "_sort" => {
                    for key in control_values(&mut p.errors, name, value) {
                        let (desc, param) = match key.strip_prefix('-') {
                            Some(k) => (true, k.to_string()),
                            None => (false, key.clone()),
                        };
                        let kind = match param.as_str() {
                            "_id" => None,
                            _ => match single.as_deref().and_then(|t| reg.param(t, &param)) {
                                Some(d) if d.kind != ParamType::Composite => Some(d.kind),
                                _ if param == "_lastUpdated" => Some(ParamType::Date),
                                _ => {
                                    bad(&mut p.errors, name, format!("cannot sort by '{param}': not a search parameter of this type"));
                                    continue;
                                }
                            },
                        };
                        let real = match single.as_deref().and_then(|t| reg.param(t, &param)) {
                            Some(d) => d.code.clone(),
                            None => param,
                        };
                        s.sort.push(SortKey {
                            param: real,
                            descending: desc,
                            kind,
                        });
                    }
                }
                "_include" => {
                    if let Some(i) = parse_include(reg, &mut p.errors, name, value) {
                        s.includes.push(i);
                    }
                }
                "_revinclude" => {
                    if let Some(i) = parse_include(reg, &mut p.errors, name, value) {
                        s.revincludes.push(i);
                    }
                }
                _ => {}
            }
            continue;
        }
        if value.is_empty() {
            // an empty parameter is ignored (R4 search: "empty parameters are not an error")
            continue;
        }
        let found = match &single {
            Some(t) => p.criterion(t, name, value),
            None => {
                // system search: common parameters only
                let common = name.starts_with('_') && !name.starts_with("_has");
                if common {
                    p.criterion(
                        rtypes.first().map(String::as_str).unwrap_or("Patient"),
                        name,
                        value,
                    )
                } else {
                    None
                }
            }
        };
        match found {
            Some(c) => {
                s.kept.push((name.to_string(), value.clone()));
                s.criteria.push(c)
            }
            None => {
                let msg = format!(
                    "unknown or unsupported search parameter '{name}'{}",
                    single
                        .as_ref()
                        .map(|t| format!(" on {t}"))
                        .unwrap_or_default()
                );
                if strict {
                    p.errors
                        .push(Issue::error("not-supported", msg).at(name.to_string()));
                } else {
                    p.unknown.push(
                        Issue::warning("not-supported", format!("{msg}; it was ignored"))
                            .at(name.to_string()),
                    );
                }
            }
        }
    }
    if !p.errors.is_empty() {
        return Err(FhirError::Invalid(p.errors));
    }
    s.warnings = p.unknown;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> &'static Registry {
        static R: once_cell::sync::Lazy<Registry> =
            once_cell::sync::Lazy::new(|| Registry::load("http://localhost:8080").expect("reg"));
        &R
    }

    fn q(t: &str, query: &str) -> Result<Search> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        parse(
            reg(),
            &[t.to_string()],
            &pairs,
            PageLimits {
                default: 50,
                max: 1000,
            },
            false,
        )
    }

    #[test]
    fn every_malformed_value_is_reported() {
        let Err(FhirError::Invalid(issues)) = q(
            "Observation",
            "date=gt20x&value-quantity=abc&_count=-1&code:bogus=1",
        ) else {
            panic!("expected errors");
        };
        let at: Vec<_> = issues.iter().filter_map(|i| i.expression.clone()).collect();
        assert_eq!(at, vec!["date", "value-quantity", "_count", "code:bogus"]);
    }

    #[test]
    fn unknown_parameters_warn_or_fail() {
        let s = q("Observation", "nonsense=1&code=x").expect("lenient");
        assert_eq!(s.warnings.len(), 1);
        assert_eq!(s.criteria.len(), 1);
        let pairs = vec![("nonsense".to_string(), "1".to_string())];
        assert!(parse(
            reg(),
            &["Observation".into()],
            &pairs,
            PageLimits {
                default: 50,
                max: 1000
            },
            true
        )
        .is_err());
    }

    #[test]
    fn chains_has_and_aliases_parse() {
        let s = q(
            "Observation",
            "subject:Patient.identifier=a|b&patient.birthdate=ge2000",
        )
        .expect("ok");
        assert!(
            matches!(&s.criteria[0], Criterion::Chain { types, .. } if types == &vec!["Patient".to_string()])
        );
        let s = q("Patient", "_has:Observation:patient:code=4548-4").expect("ok");
        assert!(matches!(&s.criteria[0], Criterion::Has { source, .. } if source == "Observation"));
        let s = q(
            "MeasureReport",
            "measurereport-category=vbp&subject-organization=Organization/1",
        )
        .expect("ok");
        assert_eq!(s.criteria.len(), 2);
        assert!(q("Patient", "_has:Observation:nope:code=1").is_err());
    }

    #[test]
    fn escaped_commas_and_pipes_stay_literal() {
        assert_eq!(
            split_escaped(r"a\,b,c", ','),
            vec!["a,b".to_string(), "c".into()]
        );
        assert_eq!(unescape_pipe(r"sys|a\|b"), "sys|a|b".to_string());
    }
}

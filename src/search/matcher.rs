//! What one search value matches: the index entries it accepts (`Test`) and the key range that
//! holds all of them (`Matcher::lo`/`hi`), so that a value is tested the same way whether it is
//! found by scanning the index or by checking a candidate's entries.

use super::values::{dec_i64, dec_quantity, dec_token, Range, TOKEN_SEP};
use crate::store::prefix_end;

/// A search prefix (`eq`, `gt`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// eq
    Eq,
    /// ne
    Ne,
    /// gt
    Gt,
    /// lt
    Lt,
    /// ge
    Ge,
    /// le
    Le,
    /// sa
    Sa,
    /// eb
    Eb,
    /// ap
    Ap,
}

impl Prefix {
    /// Split a prefix off a value (`ge2020` → (Ge, "2020")); values without one are `eq`.
    pub fn split(v: &str) -> (Prefix, &str) {
        let p = match v.get(..2) {
            Some("eq") => Prefix::Eq,
            Some("ne") => Prefix::Ne,
            Some("gt") => Prefix::Gt,
            Some("lt") => Prefix::Lt,
            Some("ge") => Prefix::Ge,
            Some("le") => Prefix::Le,
            Some("sa") => Prefix::Sa,
            Some("eb") => Prefix::Eb,
            Some("ap") => Prefix::Ap,
            _ => return (Prefix::Eq, v),
        };
        (p, &v[2..])
    }
}

/// Which quantity entries a number search looks at.
#[derive(Debug, Clone)]
pub enum UnitSel {
    /// Exactly this unit key (`system|code`, a canonical `*dim`, a converted `=system|code`).
    Exact(Vec<u8>),
    /// Values as written, in any unit (`value` alone).
    Raw,
    /// Values as written whose code or unit is this (`value||unit`): keys ending in `|unit`.
    CodeOrUnit(Vec<u8>),
}

/// How entries of one index parameter are tested.
#[derive(Debug, Clone)]
pub enum Test {
    /// Any entry.
    Any,
    /// The value equals these bytes.
    Exact(Vec<u8>),
    /// The value starts with these bytes.
    Prefix(Vec<u8>),
    /// The value contains these bytes.
    Contains(Vec<u8>),
    /// The target starts the given bytes (uri `:above`).
    PrefixOf(Vec<u8>),
    /// A token with this system (any code).
    TokenSystem(Vec<u8>),
    /// A date range (by-start layout) compared by a prefix with a search range.
    DateLow(Prefix, Range),
    /// A date range in the by-end layout, compared by a prefix.
    DateHigh(Prefix, Range),
    /// A number under a unit key compared with the search value (scaled) and its
    /// implicit-precision range `[lo, hi)`.
    Number {
        /// Which unit keys count.
        unit: UnitSel,
        /// Comparison.
        prefix: Prefix,
        /// The search value (scaled).
        value: i128,
        /// Lower bound of the precision range (scaled, inclusive).
        lo: i128,
        /// Upper bound of the precision range (scaled, exclusive).
        hi: i128,
    },
    /// Composite: the first component's encoding, then the second's.
    Composite(Box<Test>, Box<Test>),
    /// Any of these.
    AnyOf(Vec<Test>),
}

/// Date comparison of a target range `t` with a search range `s` under a prefix (R4 search,
/// "prefixes" on ranges).
pub fn date_matches(p: Prefix, t: Range, s: Range) -> bool {
    let eq = s.low <= t.low && t.high <= s.high;
    match p {
        Prefix::Eq => eq,
        Prefix::Ne => !eq,
        Prefix::Gt => t.high > s.high,
        Prefix::Lt => t.low < s.low,
        Prefix::Ge => t.high > s.high || eq,
        Prefix::Le => t.low < s.low || eq,
        Prefix::Sa => t.low >= s.high,
        Prefix::Eb => t.high <= s.low,
        Prefix::Ap => t.low < s.high && t.high > s.low,
    }
}

fn number_matches(p: Prefix, t: i128, value: i128, lo: i128, hi: i128) -> bool {
    match p {
        Prefix::Eq => lo <= t && t < hi,
        Prefix::Ne => !(lo <= t && t < hi),
        Prefix::Gt | Prefix::Sa => t > value,
        Prefix::Lt | Prefix::Eb => t < value,
        Prefix::Ge => t >= value,
        Prefix::Le => t <= value,
        Prefix::Ap => lo <= t && t < hi,
    }
}

impl Test {
    /// Whether an entry value passes.
    pub fn accepts(&self, v: &[u8]) -> bool {
        match self {
            Test::Any => true,
            Test::Exact(x) => v == x.as_slice(),
            Test::Prefix(x) => v.starts_with(x),
            Test::Contains(x) => x.is_empty() || v.windows(x.len()).any(|w| w == x.as_slice()),
            Test::PrefixOf(x) => !v.is_empty() && x.starts_with(v),
            Test::TokenSystem(sys) => dec_token(v).0 == sys.as_slice(),
            Test::DateLow(p, s) => match (dec_i64(v), v.get(8..).and_then(dec_i64)) {
                (Some(low), Some(high)) => date_matches(*p, Range { low, high }, *s),
                _ => false,
            },
            Test::DateHigh(p, s) => match (dec_i64(v), v.get(8..).and_then(dec_i64)) {
                (Some(high), Some(low)) => date_matches(*p, Range { low, high }, *s),
                _ => false,
            },
            Test::Number {
                unit,
                prefix,
                value,
                lo,
                hi,
            } => match dec_quantity(v) {
                Some((u, t)) => {
                    let raw = !matches!(u.first(), Some(b'*') | Some(b'='));
                    let unit_ok = match unit {
                        UnitSel::Exact(want) => u == want.as_slice(),
                        UnitSel::Raw => raw,
                        UnitSel::CodeOrUnit(x) => {
                            raw && u.len() > x.len()
                                && u.ends_with(x)
                                && u[u.len() - x.len() - 1] == b'|'
                        }
                    };
                    unit_ok && number_matches(*prefix, t, *value, *lo, *hi)
                }
                None => false,
            },
            Test::AnyOf(tests) => tests.iter().any(|t| t.accepts(v)),
            Test::Composite(a, b) => match v.iter().position(|&x| x == 0) {
                Some(p) => a.accepts(&v[..p]) && b.accepts(&v[p + 1..]),
                None => false,
            },
        }
    }
}

/// One alternative of a criterion: entries of `param` within `[lo, hi)` that pass `test`.
#[derive(Debug, Clone)]
pub struct Matcher {
    /// The index parameter name (e.g. `code`, `code:text`, `date:hi`).
    pub param: String,
    /// Lowest value that can pass (inclusive).
    pub lo: Vec<u8>,
    /// First value above all that can pass (exclusive), None for the end of the parameter.
    pub hi: Option<Vec<u8>>,
    /// The exact test.
    pub test: Test,
}

impl Matcher {
    /// Entries of `param` passing `test`, scanning only the range that can hold them.
    pub fn new(param: impl Into<String>, test: Test) -> Self {
        let (lo, hi) = match &test {
            Test::Exact(x) => {
                // keys are `value \0 id`: every key of this value sorts below `value \x01`
                let mut hi = x.clone();
                hi.push(1);
                (x.clone(), Some(hi))
            }
            Test::Prefix(x) => (x.clone(), prefix_end(x)),
            Test::Composite(a, _) => match a.as_ref() {
                Test::Exact(x) => {
                    let mut lo = x.clone();
                    lo.push(0);
                    let hi = prefix_end(&lo);
                    (lo, hi)
                }
                Test::Prefix(x) => (x.clone(), prefix_end(x)),
                _ => (Vec::new(), None),
            },
            Test::Number {
                unit: UnitSel::Exact(u),
                prefix,
                value,
                lo,
                hi,
            } => {
                let mut start = u.clone();
                start.push(0);
                let end = prefix_end(&start);
                let bound = |x: i128| {
                    let mut k = start.clone();
                    k.extend(super::values::enc_i128(x));
                    k
                };
                match prefix {
                    Prefix::Eq | Prefix::Ap => (bound(*lo), Some(bound(*hi))),
                    Prefix::Gt | Prefix::Sa | Prefix::Ge => (bound(*value), end),
                    Prefix::Lt | Prefix::Eb | Prefix::Le => {
                        (start.clone(), Some(bound(value.saturating_add(1))))
                    }
                    Prefix::Ne => (start.clone(), end),
                }
            }
            Test::DateLow(p, s) => {
                let e = |x: i64| super::values::enc_i64(x).to_vec();
                match p {
                    Prefix::Eq => (e(s.low), Some(e(s.high))),
                    Prefix::Lt => (Vec::new(), Some(e(s.low))),
                    Prefix::Sa => (e(s.high), None),
                    Prefix::Ap | Prefix::Le => (Vec::new(), Some(e(s.high))),
                    _ => (Vec::new(), None),
                }
            }
            Test::DateHigh(p, s) => {
                let e = |x: i64| super::values::enc_i64(x).to_vec();
                match p {
                    Prefix::Gt => (e(s.high.saturating_add(1)), None),
                    Prefix::Eb => (Vec::new(), Some(e(s.low.saturating_add(1)))),
                    Prefix::Ge => (e(s.low.saturating_add(1)), None),
                    _ => (Vec::new(), None),
                }
            }
            _ => (Vec::new(), None),
        };
        Matcher {
            param: param.into(),
            lo,
            hi,
            test,
        }
    }

    /// Token matcher for `system|code`, `|code`, `code` or `system|`.
    pub fn token(param: &str, value: &str) -> Matcher {
        match value.split_once('|') {
            Some((sys, "")) => Matcher::new(param, Test::TokenSystem(super::values::clean(sys))),
            Some((sys, code)) => {
                Matcher::new(param, Test::Exact(super::values::enc_token(sys, code)))
            }
            None => {
                let mut p = super::values::clean(value);
                p.push(TOKEN_SEP);
                Matcher::new(param, Test::Prefix(p))
            }
        }
    }

    /// A matcher with an explicit scan range (a superset of what `test` accepts).
    pub fn with_range(
        param: impl Into<String>,
        test: Test,
        lo: Vec<u8>,
        hi: Option<Vec<u8>>,
    ) -> Self {
        Matcher {
            param: param.into(),
            lo,
            hi,
            test,
        }
    }

    /// Whether an entry (param, value) passes.
    pub fn accepts(&self, param: &str, value: &[u8]) -> bool {
        param == self.param && self.test.accepts(value)
    }
}

/// Decode a scaled quantity value (for sorting).
pub fn quantity_sort_value(v: &[u8]) -> Option<i128> {
    dec_quantity(v).map(|(_, x)| x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::values::{
        enc_quantity, enc_range_high, enc_range_low, parse_date_range, parse_number, scaled,
    };

    fn r(s: &str) -> Range {
        parse_date_range(s).expect("date")
    }

    #[test]
    fn date_prefixes_follow_the_range_rules() {
        let day = r("2020-06-15");
        let inside = r("2020-06-15T10:00:00Z");
        let before = r("2020-06-14T23:59:59Z");
        let after = r("2020-06-16T00:00:00Z");
        let spanning = Range {
            low: before.low,
            high: after.high,
        };
        assert!(date_matches(Prefix::Eq, inside, day));
        assert!(!date_matches(Prefix::Eq, spanning, day));
        assert!(date_matches(Prefix::Ne, spanning, day));
        assert!(date_matches(Prefix::Gt, after, day) && !date_matches(Prefix::Gt, inside, day));
        assert!(
            date_matches(Prefix::Gt, spanning, day),
            "a period reaching past the day is gt"
        );
        assert!(date_matches(Prefix::Lt, before, day) && !date_matches(Prefix::Lt, inside, day));
        assert!(date_matches(Prefix::Ge, inside, day) && date_matches(Prefix::Ge, after, day));
        assert!(!date_matches(Prefix::Ge, before, day));
        assert!(date_matches(Prefix::Le, inside, day) && !date_matches(Prefix::Le, after, day));
        assert!(date_matches(Prefix::Sa, after, day) && !date_matches(Prefix::Sa, spanning, day));
        assert!(date_matches(Prefix::Eb, before, day) && !date_matches(Prefix::Eb, spanning, day));
        assert!(date_matches(Prefix::Ap, spanning, day));
    }

    #[test]
    fn scan_ranges_hold_every_accepted_value() {
        let s = r("2020-06-15");
        let targets = [
            r("2019"),
            r("2020-06-14"),
            r("2020-06-15T12:00:00Z"),
            r("2020-06-16"),
            r("2021-01-01"),
        ];
        for p in [
            Prefix::Eq,
            Prefix::Lt,
            Prefix::Sa,
            Prefix::Ap,
            Prefix::Gt,
            Prefix::Eb,
        ] {
            for (layout, m) in [
                ("lo", Matcher::new("d", Test::DateLow(p, s))),
                ("hi", Matcher::new("d:hi", Test::DateHigh(p, s))),
            ] {
                for t in targets {
                    let v = if layout == "lo" {
                        enc_range_low(t)
                    } else {
                        enc_range_high(t)
                    };
                    if m.test.accepts(&v) {
                        assert!(
                            v >= m.lo && m.hi.as_ref().is_none_or(|h| &v < h),
                            "{p:?} {layout} {t:?}"
                        );
                    }
                }
            }
        }
        let n = parse_number("5.4").expect("n");
        let test = |p| Test::Number {
            unit: UnitSel::Exact(b"|mg".to_vec()),
            prefix: p,
            value: scaled(n.value),
            lo: scaled(n.value - n.half_width),
            hi: scaled(n.value + n.half_width),
        };
        for p in [Prefix::Eq, Prefix::Gt, Prefix::Lt, Prefix::Ge, Prefix::Le] {
            let m = Matcher::new("q", test(p));
            for t in ["5.3", "5.35", "5.4", "5.449", "5.45", "6"] {
                let v = enc_quantity("|mg", parse_number(t).expect("n").value);
                if m.test.accepts(&v) {
                    assert!(
                        v >= m.lo && m.hi.as_ref().is_none_or(|h| &v < h),
                        "{p:?} {t}"
                    );
                }
            }
        }
        let eq = test(Prefix::Eq);
        let yes: Vec<bool> = ["5.3", "5.35", "5.449", "5.45"]
            .iter()
            .map(|t| eq.accepts(&enc_quantity("|mg", parse_number(t).expect("n").value)))
            .collect();
        assert_eq!(yes, vec![false, true, true, false]);
    }
}

//! Unit normalisation for quantity search and the outcome engine: UCUM conversion between
//! commensurable units (exact factors from a table of the units clinical data and the contracts
//! use; any other UCUM expression through the `ucum-units` crate), and the analyte-specific
//! conversions that UCUM cannot express (HbA1c NGSP % ↔ IFCC mmol/mol, LDL cholesterol
//! mg/dL ↔ mmol/L).
//!
//! UCUM treats `%` and `mmol/mol` as the same dimension (1 % = 10 mmol/mol), which is true of the
//! units but false of HbA1c, where the two scales are related by the NGSP/IFCC master equation.
//! Quantities of a known analyte are therefore indexed in each of the analyte's units by its own
//! equation and never under the dimensionless canonical key.

use rust_decimal::Decimal;

/// The UCUM system URI.
pub const UCUM: &str = "http://unitsofmeasure.org";

/// A canonical form: the dimension key and the factor that converts a value to it.
fn ucum_factor(code: &str) -> Option<(&'static str, Decimal)> {
    let d = |m: i64, s: u32| Decimal::new(m, s);
    Some(match code {
        "g" => ("g", d(1, 0)),
        "mg" => ("g", d(1, 3)),
        "ug" => ("g", d(1, 6)),
        "ng" => ("g", d(1, 9)),
        "kg" => ("g", d(1000, 0)),
        "[lb_av]" => ("g", d(45_359_237, 5)),
        "[oz_av]" => ("g", d(28_349_523_125, 9)),
        "m" => ("m", d(1, 0)),
        "cm" => ("m", d(1, 2)),
        "mm" => ("m", d(1, 3)),
        "km" => ("m", d(1000, 0)),
        "[in_i]" => ("m", d(254, 4)),
        "[ft_i]" => ("m", d(3048, 4)),
        "L" | "l" => ("L", d(1, 0)),
        "dL" => ("L", d(1, 1)),
        "mL" => ("L", d(1, 3)),
        "uL" => ("L", d(1, 6)),
        "g/L" => ("g/L", d(1, 0)),
        "g/dL" => ("g/L", d(10, 0)),
        "mg/dL" => ("g/L", d(1, 2)),
        "mg/L" => ("g/L", d(1, 3)),
        "mg/mL" => ("g/L", d(1, 0)),
        "ug/mL" => ("g/L", d(1, 3)),
        "ug/dL" => ("g/L", d(1, 5)),
        "ug/L" | "ng/mL" => ("g/L", d(1, 6)),
        "ng/L" | "pg/mL" => ("g/L", d(1, 9)),
        "mol/L" => ("mol/L", d(1, 0)),
        "mmol/L" => ("mol/L", d(1, 3)),
        "umol/L" => ("mol/L", d(1, 6)),
        "nmol/L" => ("mol/L", d(1, 9)),
        "pmol/L" => ("mol/L", d(1, 12)),
        "1" => ("1", d(1, 0)),
        "%" => ("1", d(1, 2)),
        "mmol/mol" => ("1", d(1, 3)),
        "s" => ("s", d(1, 0)),
        "min" => ("s", d(60, 0)),
        "h" => ("s", d(3600, 0)),
        "d" => ("s", d(86_400, 0)),
        "wk" => ("s", d(604_800, 0)),
        "mo" => ("s", d(2_629_800, 0)),
        "a" => ("s", d(31_557_600, 0)),
        _ => return None,
    })
}

/// The canonical index key and value of a UCUM quantity, when its unit is in the table.
pub fn canonical(code: &str, value: Decimal) -> Option<(String, Decimal)> {
    let (dim, factor) = ucum_factor(code)?;
    Some((format!("*{dim}"), value.checked_mul(factor)?))
}

/// An analyte whose units are related by a clinical equation rather than by UCUM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analyte {
    /// Haemoglobin A1c (NGSP % and IFCC mmol/mol).
    HbA1c,
    /// LDL cholesterol (mg/dL and mmol/L).
    Ldl,
}

/// The analyte a LOINC code measures, if it is one with clinical unit equations.
pub fn analyte(loinc: &str) -> Option<Analyte> {
    match loinc {
        "4548-4" | "17856-6" | "4549-2" | "59261-8" | "41995-2" => Some(Analyte::HbA1c),
        "13457-7" | "18262-6" | "2089-1" | "22748-8" | "39469-2" | "69419-0" => Some(Analyte::Ldl),
        _ => None,
    }
}

/// The value of an analyte result in each of the analyte's units (including the given one), or
/// None when the unit is not one of the analyte's.
pub fn analyte_values(
    a: Analyte,
    code: &str,
    value: Decimal,
) -> Option<Vec<(&'static str, Decimal)>> {
    match a {
        Analyte::HbA1c => {
            // NGSP % = 0.09148 × IFCC mmol/mol + 2.152
            let slope = Decimal::new(9148, 5);
            let intercept = Decimal::new(2152, 3);
            match code {
                "%" => Some(vec![
                    ("%", value),
                    (
                        "mmol/mol",
                        value
                            .checked_sub(intercept)?
                            .checked_div(slope)?
                            .round_dp(6),
                    ),
                ]),
                "mmol/mol" => Some(vec![
                    ("mmol/mol", value),
                    (
                        "%",
                        value
                            .checked_mul(slope)?
                            .checked_add(intercept)?
                            .round_dp(6),
                    ),
                ]),
                _ => None,
            }
        }
        Analyte::Ldl => {
            let factor = Decimal::new(3867, 2);
            match code {
                "mg/dL" => Some(vec![
                    ("mg/dL", value),
                    ("mmol/L", value.checked_div(factor)?.round_dp(6)),
                ]),
                "mmol/L" => Some(vec![
                    ("mmol/L", value),
                    ("mg/dL", value.checked_mul(factor)?),
                ]),
                _ => None,
            }
        }
    }
}

/// Convert `value` from unit `from` to unit `to`: identical units as they are, an analyte's
/// units by its clinical equation (a unit commensurable with one of the analyte's units is first
/// brought to it by UCUM, e.g. LDL in `umol/L` to `mmol/L`), other units by UCUM factors when they
/// are commensurable. None when the units cannot be converted (which must be reported, never
/// guessed).
pub fn convert(analyte: Option<Analyte>, from: &str, value: Decimal, to: &str) -> Option<Decimal> {
    if from == to {
        return Some(value);
    }
    let Some(a) = analyte else {
        return plain(from, value, to);
    };
    let units = analyte_units(a);
    // the analyte's own unit the value is in (by UCUM when it is in another unit of that kind);
    // dimensionless units (HbA1c %) never take the UCUM path: 1 % is not 10 mmol/mol of HbA1c
    let (own, v) = if units.contains(&from) {
        (from, value)
    } else {
        units
            .iter()
            .filter(|u| !is_dimensionless(u))
            .find_map(|u| plain(from, value, u).map(|v| (*u, v)))?
    };
    let values = analyte_values(a, own, v)?;
    if let Some((_, x)) = values.iter().find(|(u, _)| *u == to) {
        return Some(*x);
    }
    values
        .iter()
        .filter(|(u, _)| !is_dimensionless(u))
        .find_map(|(u, x)| plain(u, *x, to))
}

/// The units an analyte's clinical equation relates.
fn analyte_units(a: Analyte) -> [&'static str; 2] {
    match a {
        Analyte::HbA1c => ["%", "mmol/mol"],
        Analyte::Ldl => ["mg/dL", "mmol/L"],
    }
}

/// Decimal places kept of a value converted with a factor from the UCUM tables.
const UCUM_DP: u32 = 9;

/// Convert between commensurable units without an analyte: exactly by the table above when it
/// has both units, otherwise by the UCUM definitions (the `ucum-units` crate, which parses any
/// UCUM expression). UCUM gives `{annotations}` no dimension, but `mL/min/{1.73_m2}` (per body
/// surface) is not the same measure as `mL/min`: the annotations of both units must be the same.
/// Substance amounts (`mol`, `eq`) convert only to substance amounts (UCUM counts a mole as a
/// number, which would make `mmol/L` commensurable with a cell count per litre). Special units
/// (temperatures, logarithms) and arbitrary units (`[IU]`) are not converted.
fn plain(from: &str, value: Decimal, to: &str) -> Option<Decimal> {
    if from == to {
        return Some(value);
    }
    if let (Some((df, ff)), Some((dt, ft))) = (ucum_factor(from), ucum_factor(to)) {
        if df != dt {
            return None;
        }
        return value.checked_mul(ff)?.checked_div(ft);
    }
    if annotations(from) != annotations(to) || substance(from) != substance(to) {
        return None;
    }
    let (a, b) = (ucum::analyze(from).ok()?, ucum::analyze(to).ok()?);
    if a.is_special || b.is_special || a.dimension != b.dimension || b.factor == 0.0 {
        return None;
    }
    // the factors are binary floats: 15 significant digits make 60.000000000000014 the 60 it is
    let ratio = Decimal::from_scientific(&format!("{:.14e}", a.factor / b.factor)).ok()?;
    Some(value.checked_mul(ratio)?.round_dp(UCUM_DP).normalize())
}

/// The `{annotations}` of a UCUM code, sorted.
fn annotations(code: &str) -> Vec<&str> {
    let mut out: Vec<&str> = code
        .split('{')
        .skip(1)
        .filter_map(|s| s.split_once('}').map(|(a, _)| a))
        .collect();
    out.sort_unstable();
    out
}

/// True when a UCUM code counts a substance amount (moles or equivalents).
fn substance(code: &str) -> bool {
    let bare: String = code
        .split('{')
        .enumerate()
        .map(|(i, s)| {
            if i == 0 {
                s
            } else {
                s.split_once('}').map_or("", |x| x.1)
            }
        })
        .collect();
    bare.contains("mol") || bare.contains("eq")
}

/// The analyte of a lab whose codes include one with clinical unit equations.
pub fn analyte_of_codes<'a>(loinc_codes: impl IntoIterator<Item = &'a str>) -> Option<Analyte> {
    loinc_codes.into_iter().find_map(analyte)
}

/// True when a unit's canonical form is the dimensionless one (ambiguous for analytes).
pub fn is_dimensionless(code: &str) -> bool {
    ucum_factor(code).is_some_and(|(d, _)| d == "1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ucum_conversions_are_exact() {
        let (k1, v1) = canonical("mg/dL", Decimal::from(100)).expect("c");
        let (k2, v2) = canonical("g/L", Decimal::ONE).expect("c");
        assert_eq!((k1.as_str(), v1), (k2.as_str(), v2));
        assert!(canonical("mm[Hg]", Decimal::ONE).is_none());
        assert_ne!(
            canonical("mg/dL", Decimal::ONE).map(|c| c.0),
            canonical("mmol/L", Decimal::ONE).map(|c| c.0)
        );
    }

    #[test]
    fn hba1c_and_ldl_use_clinical_equations() {
        let v = analyte_values(Analyte::HbA1c, "mmol/mol", Decimal::from(53)).expect("v");
        assert_eq!(v[1], ("%", Decimal::new(700_044, 5)));
        let v = analyte_values(Analyte::HbA1c, "%", Decimal::new(70, 1)).expect("v");
        assert_eq!(v[1].1.round_dp(1), Decimal::new(530, 1));
        let v = analyte_values(Analyte::Ldl, "mmol/L", Decimal::new(26, 1)).expect("v");
        assert_eq!(v[1], ("mg/dL", Decimal::new(100_542, 3)));
        assert!(analyte_values(Analyte::Ldl, "%", Decimal::ONE).is_none());
        assert_eq!(analyte("4548-4"), Some(Analyte::HbA1c));
    }

    fn d(s: &str) -> Decimal {
        s.parse().expect("decimal")
    }

    #[test]
    fn any_commensurable_ucum_unit_converts_and_annotations_must_match() {
        let egfr = "mL/min/{1.73_m2}";
        // 1.10 mL/s = 66 mL/min, per 1.73 m2 on both sides
        assert_eq!(
            convert(None, "mL/s/{1.73_m2}", d("1.10"), egfr),
            Some(d("66"))
        );
        assert_eq!(
            convert(None, "L/min/{1.73_m2}", d("0.066"), egfr),
            Some(d("66"))
        );
        assert_eq!(convert(None, egfr, d("60"), "mL/s/{1.73_m2}"), Some(d("1")));
        // an annotation must not vanish: a clearance not normalised to body surface is another
        // measure
        assert_eq!(convert(None, "mL/min", d("66"), egfr), None);
        assert_eq!(convert(None, "mL/s/{1.73_m2}", d("1"), "mL/s"), None);
        assert_eq!(convert(None, "mL/s/{1.73_m2}", d("1"), "mL/s/{BSA}"), None);
        // outside the table: mass concentration in kg/m3 and mg/mL
        assert_eq!(convert(None, "kg/m3", d("1.5"), "mg/dL"), Some(d("150")));
        // different dimensions, unknown units, substance against count, temperature
        assert_eq!(convert(None, "mg", d("1"), egfr), None);
        assert_eq!(convert(None, "nonsense", d("1"), "mg"), None);
        assert_eq!(convert(None, "mmol/L", d("1"), "10*9/L"), None);
        assert_eq!(convert(None, "Cel", d("37"), "[degF]"), None);
        assert_eq!(convert(None, "[IU]/L", d("1"), "[IU]/mL"), None);
        // molar units among themselves
        assert_eq!(
            convert(None, "umol/L", d("88.4"), "mmol/L"),
            Some(d("0.0884"))
        );
        assert_eq!(convert(None, "mmol/m3", d("5"), "umol/L"), Some(d("5")));
    }

    #[test]
    fn an_analyte_in_another_unit_of_its_kind_goes_through_its_equation() {
        // LDL 2.6 mmol/L = 2600 umol/L -> 100.542 mg/dL; 1 g/L = 100 mg/dL -> 2.585984 mmol/L
        assert_eq!(
            convert(Some(Analyte::Ldl), "umol/L", d("2600"), "mg/dL"),
            Some(d("100.542"))
        );
        assert_eq!(
            convert(Some(Analyte::Ldl), "g/L", d("1"), "mmol/L").map(|v| v.round_dp(6)),
            Some(d("2.585984"))
        );
        assert_eq!(
            convert(Some(Analyte::Ldl), "mmol/L", d("2.6"), "g/L"),
            Some(d("1.00542"))
        );
        // HbA1c: % and mmol/mol by the master equation only, never as UCUM dimensionless
        assert_eq!(
            convert(Some(Analyte::HbA1c), "1", d("0.07"), "%"),
            None,
            "a fraction is not a unit of the NGSP scale"
        );
        assert_eq!(
            convert(Some(Analyte::HbA1c), "mmol/mol", d("53"), "%"),
            Some(d("7.00044"))
        );
    }
}

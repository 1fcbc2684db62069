//! JSON numbers exactly as written. serde_json (with `arbitrary_precision`) keeps a number's
//! digits but writes its exponent in one form (`1E5` and `1e5` become `1e+5`), and hands numbers
//! between 2^64 and 2^128 to a deserializer as 128-bit integers, which fhirbolt's decimal does not
//! take. A FHIR decimal is its text: [`parse`] restores every number's text from the body, and
//! [`for_fhirbolt`] gives fhirbolt's structural check a copy it can read.

use serde_json::{Number, Value};

/// The number tokens of a JSON text, in document order (the text is known to be valid JSON).
fn number_tokens(text: &[u8]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                {
                    i += 1;
                }
                out.push(std::str::from_utf8(&text[start..i]).unwrap_or_default());
            }
            _ => i += 1,
        }
    }
    out
}

/// Put the written text back into every number of `value` parsed from `text`, in document order
/// (objects keep their key order, and duplicate keys are refused before this runs).
fn restore(value: &mut Value, tokens: &mut std::slice::Iter<'_, &str>) {
    match value {
        Value::Number(n) => {
            if let Some(t) = tokens.next() {
                if n.as_str() != *t {
                    *n = Number::from_string_unchecked((*t).to_string());
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| restore(v, tokens)),
        Value::Object(map) => map.values_mut().for_each(|v| restore(v, tokens)),
        _ => {}
    }
}

/// Parse JSON keeping every number's text as written.
pub fn parse(text: &[u8]) -> serde_json::Result<Value> {
    let mut value: Value = serde_json::from_slice(text)?;
    // only an exponent is rewritten by the parser
    if text.iter().any(|b| matches!(b, b'e' | b'E')) {
        let tokens = number_tokens(text);
        if tokens.iter().any(|t| t.contains(['e', 'E'])) {
            restore(&mut value, &mut tokens.iter());
        }
    }
    Ok(value)
}

/// The form serde_json's parser gives a number's text (`1E5` -> `1e+5`).
fn normalised(text: &str) -> String {
    let lower = text.replace('E', "e");
    match lower.split_once('e') {
        Some((m, exp)) if exp.starts_with(|c: char| c.is_ascii_digit()) => format!("{m}e+{exp}"),
        _ => lower,
    }
}

/// Numbers of `value` written with an exponent, as (the parser's form, the text as written):
/// for putting the written text back into output made by a parser (fhirbolt's XML).
pub fn exponent_forms(value: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Number(n) if n.as_str().contains(['e', 'E']) => {
                let norm = normalised(n.as_str());
                if norm != n.as_str() && !out.iter().any(|(a, _)| *a == norm) {
                    out.push((norm, n.as_str().to_string()));
                }
            }
            Value::Array(items) => items.iter().for_each(|x| walk(x, out)),
            Value::Object(map) => map.values().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut out);
    out
}

/// A copy of `value` whose integers beyond 64 bits are written as decimals (`…0.0`), which
/// fhirbolt reads as the decimals they are (an integer element still refuses them).
pub fn for_fhirbolt(value: &Value) -> Value {
    fn wide(v: &mut Value) {
        match v {
            Value::Number(n)
                if !n.is_u64() && !n.is_i64() && !n.as_str().contains(['.', 'e', 'E']) =>
            {
                *n = Number::from_string_unchecked(format!("{}.0", n.as_str()));
            }
            Value::Array(items) => items.iter_mut().for_each(wide),
            Value::Object(map) => map.values_mut().for_each(wide),
            _ => {}
        }
    }
    let mut copy = value.clone();
    wide(&mut copy);
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_come_back_as_written() {
        let text =
            br#"{"a":1e400,"b":[1E-7,"x\"1e5",2.50e+3],"c":{"d":-0.0E0,"e":18446744073709551616}}"#;
        let v = parse(text).expect("parse");
        assert_eq!(
            serde_json::to_string(&v).expect("ser"),
            std::str::from_utf8(text).expect("utf8")
        );
    }

    #[test]
    fn exponent_forms_map_the_parsers_text_back() {
        let v = parse(br#"{"a":1E5,"b":[2e-3,3e+4,7]}"#).expect("parse");
        assert_eq!(
            exponent_forms(&v),
            vec![
                ("1e+5".to_string(), "1E5".to_string()),
                ("2e-3".to_string(), "2e-3".to_string())
            ]
            .into_iter()
            .filter(|(a, b)| a != b)
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn wide_integers_are_decimals_for_fhirbolt() {
        let v = parse(br#"{"a":18446744073709551616,"b":-170141183460469231731687303715884105728,"c":5,"d":1.5}"#)
            .expect("parse");
        let c = for_fhirbolt(&v);
        assert_eq!(c["a"].to_string(), "18446744073709551616.0");
        assert_eq!(
            c["b"].to_string(),
            "-170141183460469231731687303715884105728.0"
        );
        assert_eq!(c["c"].to_string(), "5");
        assert_eq!(c["d"].to_string(), "1.5");
    }
}

//! Reading and writing FHIR resources as JSON and XML through fhirbolt.
//!
//! The server's working form is a `serde_json::Value` (with `arbitrary_precision`, so decimals keep
//! their exact text). fhirbolt checks the structure of incoming JSON and converts XML in both
//! directions.

use fhirbolt::model::r4::Resource;
use fhirbolt::serde::{DeserializationConfig, DeserializationMode, SerializationConfig};
use serde_json::Value;

use crate::error::{FhirError, Result};
use crate::fhir::narrative;
use crate::fhir::outcome::Issue;
use crate::fhir::resource_types::is_resource_type;

/// Deepest element nesting accepted in XML input (JSON is bounded by serde_json's limit of 128).
pub const MAX_XML_DEPTH: usize = 120;

/// Wire format of a request or response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/fhir+json`
    Json,
    /// `application/fhir+xml`
    Xml,
}

impl Format {
    /// The Content-Type header value for this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/fhir+json; charset=utf-8",
            Format::Xml => "application/fhir+xml; charset=utf-8",
        }
    }

    /// Interpret a `_format` parameter or a media type; `None` when it names neither format.
    pub fn from_mime(value: &str) -> Option<Format> {
        let mime = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "json"
            | "application/fhir+json"
            | "application/json"
            | "application/json+fhir"
            | "text/json" => Some(Format::Json),
            "xml"
            | "application/fhir+xml"
            | "application/xml"
            | "application/xml+fhir"
            | "text/xml" => Some(Format::Xml),
            _ => None,
        }
    }

    /// Pick the response format from an Accept header (first acceptable type wins; JSON by default).
    pub fn from_accept(accept: &str) -> Format {
        for part in accept.split(',') {
            if let Some(f) = Format::from_mime(part) {
                return f;
            }
        }
        Format::Json
    }
}

fn strict() -> Option<DeserializationConfig> {
    Some(DeserializationConfig {
        mode: DeserializationMode::Strict,
    })
}

/// Parse a request body into a JSON value holding one resource, checking its structure with
/// fhirbolt. `format` comes from the Content-Type header.
pub fn parse_resource(body: &[u8], format: Format) -> Result<Value> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(FhirError::BadRequest("request body is empty".into()));
    }
    match format {
        Format::Json => parse_json(body),
        Format::Xml => parse_xml(body),
    }
}

fn parse_json(body: &[u8]) -> Result<Value> {
    let value: Value = crate::fhir::number_text::parse(body)
        .map_err(|e| FhirError::BadRequest(format!("malformed JSON: {e}")))?;
    reject_duplicate_keys(body)?;
    check_resource_type(&value)?;
    Ok(value)
}

/// JSON objects with a repeated key are ambiguous (parsers keep either value): reject them.
fn reject_duplicate_keys(body: &[u8]) -> Result<()> {
    use serde::de::{Deserializer as _, MapAccess, SeqAccess, Visitor};
    struct Check;
    impl<'de> serde::de::DeserializeSeed<'de> for Check {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(
            self,
            d: D,
        ) -> std::result::Result<(), D::Error> {
            d.deserialize_any(Check)
        }
    }
    impl<'de> Visitor<'de> for Check {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
            let mut keys = std::collections::HashSet::new();
            while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                if !keys.insert(k.clone()) {
                    return Err(serde::de::Error::custom(format!("duplicate key '{k}'")));
                }
                map.next_value_seed(Check)?;
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
            while seq.next_element_seed(Check)?.is_some() {}
            Ok(())
        }
        fn visit_bool<E>(self, _: bool) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_i64<E>(self, _: i64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_u64<E>(self, _: u64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_f64<E>(self, _: f64) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_str<E>(self, _: &str) -> std::result::Result<(), E> {
            Ok(())
        }
        fn visit_unit<E>(self) -> std::result::Result<(), E> {
            Ok(())
        }
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    de.deserialize_any(Check)
        .map_err(|e| FhirError::BadRequest(format!("malformed JSON: {e}")))
}

/// fhirbolt's strict structural check of a resource held as JSON; `Some(message)` when it fails.
pub fn structure_error(value: &Value) -> Option<String> {
    let copy = crate::fhir::number_text::for_fhirbolt(value);
    guarded(|| fhirbolt::json::from_json_value::<Resource>(copy, strict()).map(|_| ())).err()
}

/// Run a fhirbolt call, turning its errors and any panic inside it into a message.
fn guarded<T, E: std::fmt::Display>(
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the FHIR parser could not process this content".to_string()),
    }
}

fn check_resource_type(value: &Value) -> Result<()> {
    let obj = value.as_object().ok_or_else(|| {
        FhirError::BadRequest("body must be a JSON object holding a resource".into())
    })?;
    match obj.get("resourceType") {
        Some(Value::String(rt)) if is_resource_type(rt) => Ok(()),
        Some(Value::String(rt)) => Err(FhirError::Invalid(vec![Issue::error(
            "not-supported",
            format!("unknown resourceType '{rt}'"),
        )
        .at("resourceType")])),
        _ => Err(FhirError::Invalid(vec![Issue::error(
            "required",
            "resourceType is missing or not a string",
        )
        .at("resourceType")])),
    }
}

fn parse_xml(body: &[u8]) -> Result<Value> {
    check_xml_depth(body)?;
    let text = std::str::from_utf8(body)
        .map_err(|e| FhirError::BadRequest(format!("XML is not UTF-8: {e}")))?;
    let (safe, protected) = narrative::protect_xml(text);
    let resource: Resource = guarded(|| fhirbolt::xml::from_slice(safe.as_bytes(), strict()))
        .map_err(|e| {
            FhirError::Invalid(vec![Issue::error(
                "structure",
                format!("malformed or invalid FHIR XML: {e}"),
            )
            .at(root_element(text))])
        })?;
    let json = guarded(|| {
        fhirbolt::json::to_vec(&resource, Some(SerializationConfig { always_sort: true }))
    })
    .map_err(|e| FhirError::BadRequest(format!("cannot convert XML resource: {e}")))?;
    let mut value: Value = crate::fhir::number_text::parse(&json)
        .map_err(|e| FhirError::BadRequest(format!("cannot convert XML resource: {e}")))?;
    narrative::restore_json(&mut value, &protected);
    check_resource_type(&value)?;
    Ok(value)
}

/// Name of the root element of an XML document (the resource type), for error locations.
fn root_element(xml: &str) -> String {
    let mut rest = xml;
    while let Some(p) = rest.find('<') {
        rest = &rest[p + 1..];
        if rest.starts_with('?') || rest.starts_with('!') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect();
        if !name.is_empty() {
            return name;
        }
    }
    "Resource".to_string()
}

/// Scan XML before any recursive parser sees it: reject nesting deeper than [`MAX_XML_DEPTH`]
/// and documents whose elements are not all closed (a body cut short at an element boundary).
fn check_xml_depth(body: &[u8]) -> Result<()> {
    let find = |from: usize, pat: &[u8]| -> Option<usize> {
        body.get(from..)?
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|p| from + p)
    };
    let mut depth: usize = 0;
    let mut seen_root = false;
    let mut i = 0;
    while i < body.len() {
        if body[i] != b'<' {
            i += 1;
            continue;
        }
        let rest = &body[i..];
        let skip_to = if rest.starts_with(b"<!--") {
            find(i + 4, b"-->").map(|p| p + 3)
        } else if rest.starts_with(b"<![CDATA[") {
            find(i + 9, b"]]>").map(|p| p + 3)
        } else if rest.starts_with(b"<?") {
            find(i + 2, b"?>").map(|p| p + 2)
        } else if rest.starts_with(b"<!") {
            find(i + 2, b">").map(|p| p + 1)
        } else {
            // an element tag: find its real end, skipping quoted attribute values
            let mut j = i + 1;
            let mut quote: Option<u8> = None;
            while j < body.len() {
                match (quote, body[j]) {
                    (None, b'"' | b'\'') => quote = Some(body[j]),
                    (Some(q), c) if c == q => quote = None,
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            if j >= body.len() {
                return Err(FhirError::BadRequest("XML ends inside a tag".into()));
            }
            if body.get(i + 1) == Some(&b'/') {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    FhirError::BadRequest("XML has an end tag without a start tag".into())
                })?;
            } else if body[j - 1] != b'/' {
                depth += 1;
                seen_root = true;
                if depth > MAX_XML_DEPTH {
                    return Err(FhirError::BadRequest(format!(
                        "XML nested deeper than {MAX_XML_DEPTH} levels"
                    )));
                }
            } else {
                seen_root = true;
            }
            Some(j + 1)
        };
        match skip_to {
            Some(n) => i = n,
            None => {
                return Err(FhirError::BadRequest(
                    "XML ends inside a comment or declaration".into(),
                ))
            }
        }
    }
    if depth != 0 || !seen_root {
        return Err(FhirError::BadRequest(format!(
            "XML document is incomplete: {depth} element(s) not closed"
        )));
    }
    Ok(())
}

/// Serialize a resource held as JSON into the requested format.
pub fn serialize(value: &Value, format: Format, pretty: bool) -> Result<Vec<u8>> {
    match format {
        Format::Json if pretty => serde_json::to_vec_pretty(value),
        Format::Json => serde_json::to_vec(value),
        Format::Xml => return to_xml(value),
    }
    .map_err(|e| FhirError::Storage(format!("serialization failed: {e}")))
}

fn to_xml(value: &Value) -> Result<Vec<u8>> {
    let mut value = value.clone();
    let protected = narrative::protect_json(&mut value);
    let bytes = serde_json::to_vec(&value)
        .map_err(|e| FhirError::Storage(format!("serialization failed: {e}")))?;
    let lax = Some(DeserializationConfig {
        mode: DeserializationMode::Lax,
    });
    let resource: Resource = guarded(|| fhirbolt::json::from_slice(&bytes, lax))
        .map_err(|e| FhirError::Storage(format!("XML conversion failed: {e}")))?;
    let mut xml = guarded(|| fhirbolt::xml::to_string(&resource, None))
        .map_err(|e| FhirError::Storage(format!("XML conversion failed: {e}")))?;
    // decimals keep the text they were written with
    for (parsed, written) in crate::fhir::number_text::exponent_forms(&value) {
        xml = xml.replace(
            &format!("value=\"{parsed}\""),
            &format!("value=\"{written}\""),
        );
    }
    Ok(narrative::restore_xml(&xml, &protected).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBS: &str = r#"{"resourceType":"Observation","status":"final","code":{"text":"HbA1c"},"valueQuantity":{"value":7.20,"unit":"%"}}"#;

    #[test]
    fn json_keeps_decimal_text() {
        let v = parse_resource(OBS.as_bytes(), Format::Json).expect("parses");
        let out =
            String::from_utf8(serialize(&v, Format::Json, false).expect("ser")).expect("utf8");
        assert!(out.contains("\"value\":7.20"), "{out}");
    }

    #[test]
    fn xml_round_trip_keeps_decimal_text() {
        let v = parse_resource(OBS.as_bytes(), Format::Json).expect("parses");
        let xml = serialize(&v, Format::Xml, false).expect("xml");
        let xml_s = String::from_utf8(xml.clone()).expect("utf8");
        assert!(xml_s.contains("value=\"7.20\""), "{xml_s}");
        let back = parse_resource(&xml, Format::Xml).expect("parses xml");
        assert_eq!(back["valueQuantity"]["value"].to_string(), "7.20");
        assert_eq!(back["status"], "final");
    }

    #[test]
    fn rejects_unknown_elements_and_types() {
        let bad = br#"{"resourceType":"Observation","status":"final","code":{},"bogus":1}"#;
        let v = parse_resource(bad, Format::Json).expect("well-formed JSON");
        assert!(structure_error(&v).is_some());
        let good = parse_resource(OBS.as_bytes(), Format::Json).expect("parses");
        assert_eq!(structure_error(&good), None);
        let unknown = br#"{"resourceType":"Foo"}"#;
        assert!(matches!(
            parse_resource(unknown, Format::Json),
            Err(FhirError::Invalid(_))
        ));
        assert!(matches!(
            parse_resource(b"[1,2]", Format::Json),
            Err(FhirError::BadRequest(_))
        ));
        assert!(matches!(
            parse_resource(b"{", Format::Json),
            Err(FhirError::BadRequest(_))
        ));
    }

    #[test]
    fn rejects_deep_nesting() {
        let deep_json = "[".repeat(10_000);
        assert!(parse_resource(deep_json.as_bytes(), Format::Json).is_err());
        let cut = br#"<Patient xmlns="http://hl7.org/fhir"><gender value="female"/>"#;
        assert!(matches!(
            parse_resource(cut, Format::Xml),
            Err(FhirError::BadRequest(_))
        ));
        let ok = br#"<?xml version="1.0"?><!-- a > b --><Patient xmlns="http://hl7.org/fhir"><gender value="fe>male"/></Patient>"#;
        assert!(check_xml_depth(ok).is_ok());
        let deep_xml = "<a>".repeat(10_000);
        assert!(matches!(
            parse_resource(deep_xml.as_bytes(), Format::Xml),
            Err(FhirError::BadRequest(_))
        ));
    }

    #[test]
    fn narrative_whitespace_survives_xml_both_ways() {
        let div = r#"<div xmlns=\"http://www.w3.org/1999/xhtml\"><p>Peter James <b>Chalmers</b> (Jim)</p></div>"#;
        let json = format!(
            r#"{{"resourceType":"Patient","text":{{"status":"generated","div":"{div}"}}}}"#
        );
        let v = parse_resource(json.as_bytes(), Format::Json).expect("json");
        let xml = serialize(&v, Format::Xml, false).expect("xml");
        let xml_s = String::from_utf8(xml.clone()).expect("utf8");
        assert!(
            xml_s.contains("Peter James <b>Chalmers</b> (Jim)"),
            "{xml_s}"
        );
        let back = parse_resource(&xml, Format::Xml).expect("back");
        assert_eq!(back["text"]["div"], v["text"]["div"]);
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let dup =
            br#"{"resourceType":"Patient","active":true,"name":[{"family":"a","family":"b"}]}"#;
        assert!(matches!(
            parse_resource(dup, Format::Json),
            Err(FhirError::BadRequest(_))
        ));
        assert!(reject_duplicate_keys(OBS.as_bytes()).is_ok());
    }

    #[test]
    fn negotiation() {
        assert_eq!(
            Format::from_mime("application/fhir+xml;q=0.9"),
            Some(Format::Xml)
        );
        assert_eq!(Format::from_mime("json"), Some(Format::Json));
        assert_eq!(Format::from_mime("text/html"), None);
        assert_eq!(
            Format::from_accept("text/html, application/xml"),
            Format::Xml
        );
        assert_eq!(Format::from_accept("*/*"), Format::Json);
    }
}

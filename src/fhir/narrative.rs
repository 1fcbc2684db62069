//! Keeping narrative XHTML byte-exact through fhirbolt's XML reader and writer, which trim the
//! whitespace of text nodes ("Peter <b>Chalmers</b>" would lose its spaces). Each XHTML `div` is
//! swapped for a placeholder before fhirbolt runs and put back verbatim afterwards.

use serde_json::Value;

const XHTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// Placeholders and the original divs they stand for.
pub struct Protected {
    token: String,
    divs: Vec<String>,
}

impl Protected {
    fn new() -> Self {
        Protected {
            token: format!("vbcdiv{}", uuid::Uuid::new_v4().simple()),
            divs: Vec::new(),
        }
    }

    fn placeholder(&mut self, original: String) -> String {
        let marker = format!("{}x{}", self.token, self.divs.len());
        self.divs.push(original);
        format!("<div xmlns=\"{XHTML_NS}\">{marker}</div>")
    }

    fn original_for(&self, text: &str) -> Option<&String> {
        let at = text.find(&self.token)?;
        let rest = &text[at + self.token.len() + 1..];
        let n: usize = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()?;
        self.divs.get(n)
    }
}

fn find_from(hay: &str, from: usize, pat: &str) -> Option<usize> {
    hay.get(from..)?.find(pat).map(|p| p + from)
}

/// Replace every XHTML div in raw XML with a placeholder; returns the new XML and the originals.
pub fn protect_xml(xml: &str) -> (String, Protected) {
    let mut p = Protected::new();
    let mut out = String::with_capacity(xml.len());
    let mut i = 0;
    while let Some(start) = find_from(xml, i, "<div") {
        let Some(tag_end) = find_from(xml, start, ">") else {
            break;
        };
        let tag = &xml[start..tag_end];
        let next_char = xml[start + 4..].chars().next();
        if !tag.contains(XHTML_NS)
            || !matches!(next_char, Some(' ' | '\t' | '\r' | '\n' | '>' | '/'))
        {
            out.push_str(&xml[i..tag_end]);
            i = tag_end;
            continue;
        }
        // find the matching end tag, counting nested divs
        let mut depth = if tag.ends_with('/') { 0 } else { 1 };
        let mut j = tag_end + 1;
        while depth > 0 {
            let open = find_from(xml, j, "<div");
            let close = find_from(xml, j, "</div");
            match (open, close) {
                (Some(o), Some(c)) if o < c => {
                    let e = find_from(xml, o, ">").unwrap_or(xml.len());
                    if !xml[o..e].ends_with('/') {
                        depth += 1;
                    }
                    j = e + 1;
                }
                (_, Some(c)) => {
                    depth -= 1;
                    j = find_from(xml, c, ">").map_or(xml.len(), |e| e + 1);
                }
                _ => {
                    depth = 0;
                    j = xml.len();
                }
            }
        }
        let end = j.min(xml.len());
        out.push_str(&xml[i..start]);
        out.push_str(&p.placeholder(xml[start..end].to_string()));
        i = end;
    }
    out.push_str(&xml[i..]);
    (out, p)
}

/// Put original divs back into JSON produced from protected XML.
pub fn restore_json(v: &mut Value, p: &Protected) {
    if p.divs.is_empty() {
        return;
    }
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "div" {
                    if let Value::String(s) = child {
                        if let Some(orig) = p.original_for(s) {
                            *s = orig.clone();
                            continue;
                        }
                    }
                }
                restore_json(child, p);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| restore_json(x, p)),
        _ => {}
    }
}

/// Replace every narrative div string in JSON with a placeholder (before writing XML).
pub fn protect_json(v: &mut Value) -> Protected {
    let mut p = Protected::new();
    protect_json_in(v, &mut p);
    p
}

fn protect_json_in(v: &mut Value, p: &mut Protected) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "div" {
                    if let Value::String(s) = child {
                        if s.trim_start().starts_with("<div") {
                            *s = p.placeholder(std::mem::take(s));
                            continue;
                        }
                    }
                }
                protect_json_in(child, p);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| protect_json_in(x, p)),
        _ => {}
    }
}

/// Put original divs back into XML written from protected JSON.
pub fn restore_xml(xml: &str, p: &Protected) -> String {
    if p.divs.is_empty() {
        return xml.to_string();
    }
    let mut out = String::with_capacity(xml.len() + p.divs.iter().map(String::len).sum::<usize>());
    let mut i = 0;
    while let Some(at) = find_from(xml, i, &p.token) {
        let Some(start) = xml[..at].rfind("<div") else {
            break;
        };
        let Some(close) = find_from(xml, at, "</div>") else {
            break;
        };
        let orig = p.original_for(&xml[at..close]).cloned().unwrap_or_default();
        out.push_str(&xml[i..start]);
        out.push_str(&orig);
        i = close + "</div>".len();
    }
    out.push_str(&xml[i..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_divs_are_swapped_and_restored() {
        let xml = r#"<Patient xmlns="http://hl7.org/fhir"><text><status value="generated"/><div xmlns="http://www.w3.org/1999/xhtml"><p>Peter James <b>Chalmers</b> (Jim)</p><div>inner</div></div></text><gender value="male"/></Patient>"#;
        let (safe, p) = protect_xml(xml);
        assert!(
            !safe.contains("Chalmers") && safe.contains("<gender value=\"male\"/>"),
            "{safe}"
        );
        let mut v =
            json!({"text": {"div": format!("<div xmlns=\"{XHTML_NS}\">{}x0</div>", p.token)}});
        restore_json(&mut v, &p);
        assert_eq!(
            v["text"]["div"],
            r#"<div xmlns="http://www.w3.org/1999/xhtml"><p>Peter James <b>Chalmers</b> (Jim)</p><div>inner</div></div>"#
        );
    }

    #[test]
    fn json_divs_are_swapped_and_restored() {
        let div = r#"<div xmlns="http://www.w3.org/1999/xhtml">a <b>b</b> c</div>"#;
        let mut v = json!({"text": {"div": div}, "contained": [{"text": {"div": div}}]});
        let p = protect_json(&mut v);
        let fake_xml = format!(
            "<x>{}</x><y>{}</y>",
            v["text"]["div"].as_str().unwrap_or(""),
            v["contained"][0]["text"]["div"].as_str().unwrap_or("")
        );
        assert_eq!(
            restore_xml(&fake_xml, &p),
            format!("<x>{div}</x><y>{div}</y>")
        );
    }
}

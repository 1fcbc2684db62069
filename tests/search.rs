//! Search through HTTP against the real binary: every parameter type and modifier with results
//! that must match and results that must not, computed by hand from the R4 search page; result
//! control (paging under concurrent writes, sort, total, summary, elements, includes); GET equals
//! POST; compartments and $everything; errors.

mod common;

use std::collections::BTreeSet;

use common::{body_json, client, entries, expect_error, Server, FHIR_JSON};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn put(s: &Server, c: &Client, r: Value) {
    let path = format!(
        "{}/{}",
        r["resourceType"].as_str().expect("type"),
        r["id"].as_str().expect("id")
    );
    let resp = c
        .put(s.url(&path))
        .header("content-type", FHIR_JSON)
        .body(r.to_string())
        .send()
        .expect("put");
    assert!(
        resp.status().is_success(),
        "PUT {path}: {} {}",
        resp.status(),
        resp.text().unwrap_or_default()
    );
}

fn bundle(s: &Server, c: &Client, q: &str) -> Value {
    let r = c.get(s.url(q)).send().expect("search");
    assert_eq!(r.status(), StatusCode::OK, "GET {q}");
    let b = body_json(r);
    assert_eq!(b["resourceType"], "Bundle", "{b}");
    b
}

/// Ids of the `match` entries, sorted.
fn ids(s: &Server, c: &Client, q: &str) -> Vec<String> {
    let b = bundle(s, c, q);
    let mut v: Vec<String> = entries(&b)
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["id"].as_str().expect("id").to_string())
        .collect();
    v.sort();
    if let Some(t) = b["total"].as_u64() {
        assert_eq!(
            t as usize,
            v.len(),
            "total of {q} (results fit one page here)"
        );
    }
    v
}

fn expect(s: &Server, c: &Client, q: &str, want: &[&str]) {
    let mut w: Vec<String> = want.iter().map(|x| x.to_string()).collect();
    w.sort();
    assert_eq!(ids(s, c, q), w, "{q}");
}

fn obs(id: &str, code: Value, extra: Value) -> Value {
    let mut o = json!({"resourceType": "Observation", "id": id, "status": "final", "code": code,
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-01-01"});
    if let (Value::Object(m), Value::Object(x)) = (&mut o, extra) {
        for (k, v) in x {
            if v.is_null() {
                m.remove(&k);
            } else {
                m.insert(k, v);
            }
        }
    }
    o
}

fn loinc(code: &str, display: &str) -> Value {
    json!({"coding": [{"system": "http://loinc.org", "code": code, "display": display}]})
}

fn patient(s: &Server, c: &Client, id: &str, extra: Value) {
    let mut p = json!({"resourceType": "Patient", "id": id});
    if let (Value::Object(m), Value::Object(x)) = (&mut p, extra) {
        m.extend(x);
    }
    put(s, c, p);
}

#[test]
fn tokens_system_code_forms_and_modifiers() {
    let s = Server::start();
    let c = client();
    patient(&s, &c, "p1", json!({"active": true, "gender": "female"}));
    patient(&s, &c, "p2", json!({"active": false}));
    put(
        &s,
        &c,
        obs(
            "o1",
            loinc("4548-4", "Hemoglobin A1c"),
            json!({"valueQuantity": {"value": 7, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
        "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "FILL"}]}, "system": "http://lab", "value": "A-1"}]}),
        ),
    );
    put(
        &s,
        &c,
        obs(
            "o2",
            json!({"coding": [{"system": "http://loinc.org", "code": "2089-1"}, {"system": "http://lab", "code": "LDL"}]}),
            json!({"valueQuantity": {"value": 100, "unit": "mg/dL", "system": "http://unitsofmeasure.org", "code": "mg/dL"}, "status": "amended"}),
        ),
    );
    put(
        &s,
        &c,
        obs(
            "o3",
            json!({"coding": [{"code": "x"}], "text": "Local thing"}),
            json!({}),
        ),
    );
    expect(&s, &c, "Observation?code=4548-4", &["o1"]);
    expect(&s, &c, "Observation?code=http://loinc.org|4548-4", &["o1"]);
    expect(&s, &c, "Observation?code=http://lab|4548-4", &[]);
    expect(&s, &c, "Observation?code=http://loinc.org|", &["o1", "o2"]);
    expect(&s, &c, "Observation?code=|x", &["o3"]);
    expect(&s, &c, "Observation?code=|4548-4", &[]);
    expect(&s, &c, "Observation?code=x", &["o3"]);
    put(
        &s,
        &c,
        obs(
            "bp",
            loinc("85354-9", "Blood pressure panel"),
            json!({"component": [
        {"code": loinc("8480-6", "Systolic"), "valueQuantity": {"value": 120, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}]}),
        ),
    );
    expect(&s, &c, "Observation?combo-code=8480-6", &["bp"]);
    expect(&s, &c, "Observation?combo-code=85354-9", &["bp"]);
    expect(&s, &c, "Observation?component-code=8480-6", &["bp"]);
    expect(&s, &c, "Observation?code=8480-6", &[]);
    expect(
        &s,
        &c,
        "Observation?combo-code-value-quantity=8480-6$120",
        &["bp"],
    );
    expect(
        &s,
        &c,
        "Observation?component-code-value-quantity=8480-6$gt119",
        &["bp"],
    );
    assert!(c
        .delete(s.url("Observation/bp"))
        .send()
        .expect("del")
        .status()
        .is_success());
    expect(&s, &c, "Observation?code=4548-4,LDL", &["o1", "o2"]);
    expect(
        &s,
        &c,
        "Observation?code=4548-4,LDL&status=amended",
        &["o2"],
    );
    expect(&s, &c, "Observation?code:not=4548-4", &["o2", "o3"]);
    expect(&s, &c, "Observation?code:text=hemoglobin", &["o1"]);
    expect(&s, &c, "Observation?code:text=LOCAL", &["o3"]);
    expect(&s, &c, "Observation?code:text=a1c", &[]);
    put(
        &s,
        &c,
        obs("o4", json!({"text": "Hémoglobine glyquée"}), json!({})),
    );
    expect(&s, &c, "Observation?code:text=hemoglobine gly", &["o4"]);
    expect(&s, &c, "Observation?code:text=hemoglobin", &["o1", "o4"]);
    assert!(c
        .delete(s.url("Observation/o4"))
        .send()
        .expect("del")
        .status()
        .is_success());
    // shipped ValueSet, and one stored by a client
    expect(
        &s,
        &c,
        "Observation?code:in=http://vbc-server.example.org/fhir/ValueSet/vbc-outcome-labs",
        &["o1", "o2"],
    );
    expect(
        &s,
        &c,
        "Observation?code:not-in=http://vbc-server.example.org/fhir/ValueSet/vbc-outcome-labs",
        &["o3"],
    );
    put(
        &s,
        &c,
        json!({"resourceType": "ValueSet", "id": "vs1", "url": "http://example.org/vs/local", "status": "active",
        "compose": {"include": [{"system": "http://lab", "concept": [{"code": "LDL"}]}]}}),
    );
    expect(
        &s,
        &c,
        "Observation?code:in=http://example.org/vs/local",
        &["o2"],
    );
    expect(&s, &c, "Observation?identifier=http://lab|A-1", &["o1"]);
    expect(
        &s,
        &c,
        "Observation?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|FILL|A-1",
        &["o1"],
    );
    expect(
        &s,
        &c,
        "Observation?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|MR|A-1",
        &[],
    );
    expect(&s, &c, "Patient?active=true", &["p1"]);
    expect(&s, &c, "Patient?active=false", &["p2"]);
    expect(
        &s,
        &c,
        "Patient?gender=http://hl7.org/fhir/administrative-gender|female",
        &["p1"],
    );
    expect(&s, &c, "Patient?gender:missing=true", &["p2"]);
    expect(&s, &c, "Patient?gender:missing=false", &["p1"]);
    expect(&s, &c, "Observation?value-quantity:missing=true", &["o3"]);
}

#[test]
fn strings_fold_case_and_accents_and_match_name_and_address_parts() {
    let s = Server::start();
    let c = client();
    patient(
        &s,
        &c,
        "a",
        json!({"name": [{"family": "Müller", "given": ["Anna", "Maria"]}],
        "address": [{"line": ["12 Main St"], "city": "Boston", "postalCode": "02115"}]}),
    );
    patient(
        &s,
        &c,
        "b",
        json!({"name": [{"family": "Smith", "given": ["John"]}]}),
    );
    patient(
        &s,
        &c,
        "c",
        json!({"name": [{"family": "Smithson", "given": ["Jo"]}]}),
    );
    expect(&s, &c, "Patient?family=muller", &["a"]);
    expect(&s, &c, "Patient?family=MÜL", &["a"]);
    expect(&s, &c, "Patient?family=smith", &["b", "c"]);
    expect(&s, &c, "Patient?family:exact=Smith", &["b"]);
    expect(&s, &c, "Patient?family:exact=smith", &[]);
    expect(&s, &c, "Patient?family:contains=THS", &["c"]);
    expect(&s, &c, "Patient?given=maria", &["a"]);
    expect(&s, &c, "Patient?name=jo", &["b", "c"]);
    expect(&s, &c, "Patient?name=ith", &[]);
    expect(&s, &c, "Patient?address=bost", &["a"]);
    expect(&s, &c, "Patient?address=main", &[]);
    expect(&s, &c, "Patient?address:contains=main", &["a"]);
    expect(&s, &c, "Patient?address-city=boston", &["a"]);
    expect(&s, &c, "Patient?address-postalcode=021", &["a"]);
    expect(&s, &c, "Patient?family=smith&given=jo", &["b", "c"]);
    expect(&s, &c, "Patient?family=smith&given=joh", &["b"]);
}

#[test]
fn date_prefixes_on_ranges_with_precision_and_time_zones() {
    let s = Server::start();
    let c = client();
    let code = loinc("8867-4", "Heart rate");
    let with = |id: &str, eff: Value| {
        let mut o = obs(id, code.clone(), json!({"effectiveDateTime": null}));
        if let Value::Object(m) = &mut o {
            if let Value::Object(e) = eff {
                m.extend(e);
            }
        }
        o
    };
    // d1: the whole day 2020-06-15 (UTC); d2: 2020-06-15 23:30 at -05:00 = 2020-06-16 04:30Z;
    // d3: 10th to 20th; d4: from the 1st, ongoing; d5: 2020-06-14 10:00Z
    put(
        &s,
        &c,
        with("d1", json!({"effectiveDateTime": "2020-06-15"})),
    );
    put(
        &s,
        &c,
        with(
            "d2",
            json!({"effectiveDateTime": "2020-06-15T23:30:00-05:00"}),
        ),
    );
    put(
        &s,
        &c,
        with(
            "d3",
            json!({"effectivePeriod": {"start": "2020-06-10", "end": "2020-06-20"}}),
        ),
    );
    put(
        &s,
        &c,
        with("d4", json!({"effectivePeriod": {"start": "2020-06-01"}})),
    );
    put(
        &s,
        &c,
        with("d5", json!({"effectiveDateTime": "2020-06-14T10:00:00Z"})),
    );
    expect(&s, &c, "Observation?date=2020-06-15", &["d1"]);
    expect(&s, &c, "Observation?date=eq2020-06-15", &["d1"]);
    expect(
        &s,
        &c,
        "Observation?date=ne2020-06-15",
        &["d2", "d3", "d4", "d5"],
    );
    expect(&s, &c, "Observation?date=gt2020-06-15", &["d2", "d3", "d4"]);
    expect(&s, &c, "Observation?date=lt2020-06-15", &["d3", "d4", "d5"]);
    expect(
        &s,
        &c,
        "Observation?date=ge2020-06-15",
        &["d1", "d2", "d3", "d4"],
    );
    expect(
        &s,
        &c,
        "Observation?date=le2020-06-15",
        &["d1", "d3", "d4", "d5"],
    );
    expect(&s, &c, "Observation?date=sa2020-06-15", &["d2"]);
    expect(&s, &c, "Observation?date=eb2020-06-15", &["d5"]);
    expect(
        &s,
        &c,
        "Observation?date=2020-06",
        &["d1", "d2", "d3", "d5"],
    );
    expect(&s, &c, "Observation?date=2020", &["d1", "d2", "d3", "d5"]);
    expect(&s, &c, "Observation?date=2020-06-16", &["d2"]);
    // 23:00 at -05:00 is 04:00Z on the 16th, a one-second range
    expect(
        &s,
        &c,
        "Observation?date=gt2020-06-15T23:00:00-05:00",
        &["d2", "d3", "d4"],
    );
    expect(
        &s,
        &c,
        "Observation?date=lt2020-06-15T23:00:00-05:00",
        &["d1", "d3", "d4", "d5"],
    );
    // ranges: both ends as AND
    expect(
        &s,
        &c,
        "Observation?date=ge2020-06-14&date=lt2020-06-16",
        &["d1", "d3", "d4", "d5"],
    );
    expect(
        &s,
        &c,
        "Observation?date=ap2020-06-15",
        &["d1", "d2", "d3", "d4", "d5"],
    );
    // birthDate precision
    patient(&s, &c, "y", json!({"birthDate": "1970"}));
    patient(&s, &c, "d", json!({"birthDate": "1970-05-03"}));
    expect(&s, &c, "Patient?birthdate=1970", &["d", "y"]);
    expect(&s, &c, "Patient?birthdate=1970-05", &["d"]);
    expect(&s, &c, "Patient?birthdate=lt1970-05-03", &["y"]);
    expect(&s, &c, "Patient?birthdate=ge1970-05-04", &["y"]);
    expect(&s, &c, "Patient?birthdate=gt1970", &[]);
}

#[test]
fn numbers_and_quantities_use_implicit_precision_and_units() {
    let s = Server::start();
    let c = client();
    let ucum = |v: &str, code: &str| -> Value {
        json!({"valueQuantity": {"value": v.parse::<serde_json::Number>().expect("n"), "unit": code, "system": "http://unitsofmeasure.org", "code": code}})
    };
    let glucose = loinc("15074-8", "Glucose");
    for (id, v) in [
        ("q530", "5.3"),
        ("q535", "5.35"),
        ("q5449", "5.449"),
        ("q545", "5.45"),
    ] {
        put(&s, &c, obs(id, glucose.clone(), ucum(v, "mmol/L")));
    }
    put(
        &s,
        &c,
        obs("mgl", loinc("2345-7", "Glucose mass"), ucum("54", "mg/L")),
    );
    let all_glucose = "code=15074-8&";
    expect(
        &s,
        &c,
        &format!("Observation?{all_glucose}value-quantity=5.4"),
        &["q535", "q5449"],
    );
    expect(
        &s,
        &c,
        &format!("Observation?{all_glucose}value-quantity=5.40"),
        &[],
    );
    expect(
        &s,
        &c,
        &format!("Observation?{all_glucose}value-quantity=gt5.4"),
        &["q5449", "q545"],
    );
    expect(
        &s,
        &c,
        &format!("Observation?{all_glucose}value-quantity=lt5.4"),
        &["q530", "q535"],
    );
    expect(
        &s,
        &c,
        &format!("Observation?{all_glucose}value-quantity=ge5.45"),
        &["q545"],
    );
    expect(
        &s,
        &c,
        &format!("Observation?{all_glucose}value-quantity=le5.3"),
        &["q530"],
    );
    expect(
        &s,
        &c,
        &format!("Observation?{all_glucose}value-quantity=ne5.4"),
        &["q530", "q545"],
    );
    expect(
        &s,
        &c,
        "Observation?value-quantity=5.4|http://unitsofmeasure.org|mmol/L",
        &["q535", "q5449"],
    );
    expect(
        &s,
        &c,
        "Observation?value-quantity=5.4||mmol/L",
        &["q535", "q5449"],
    );
    // UCUM: 5.4e3 umol/L = [5350, 5450) umol/L = [5.35, 5.45) mmol/L
    expect(
        &s,
        &c,
        "Observation?value-quantity=5.4e3|http://unitsofmeasure.org|umol/L",
        &["q535", "q5449"],
    );
    // 5.4 mg/dL = [53.5, 54.5) mg/L
    expect(
        &s,
        &c,
        "Observation?value-quantity=5.4|http://unitsofmeasure.org|mg/dL",
        &["mgl"],
    );
    expect(
        &s,
        &c,
        "Observation?value-quantity=5.4|http://unitsofmeasure.org|mg/L",
        &[],
    );
    // HbA1c: NGSP % = 0.09148 x IFCC mmol/mol + 2.152 (53 mmol/mol = 7.00044 %; 6.5 % = 47.53 mmol/mol)
    let a1c = loinc("4548-4", "HbA1c");
    put(&s, &c, obs("h53", a1c.clone(), ucum("53", "mmol/mol")));
    put(&s, &c, obs("h65", a1c.clone(), ucum("6.5", "%")));
    expect(
        &s,
        &c,
        "Observation?value-quantity=ge7|http://unitsofmeasure.org|%",
        &["h53"],
    );
    expect(
        &s,
        &c,
        "Observation?value-quantity=lt48|http://unitsofmeasure.org|mmol/mol",
        &["h65"],
    );
    expect(
        &s,
        &c,
        "Observation?value-quantity=7.0|http://unitsofmeasure.org|%",
        &["h53"],
    );
    // a value alone compares the numbers as written, never converted ones
    expect(
        &s,
        &c,
        "Observation?code=4548-4&value-quantity=gt7",
        &["h53"],
    );
    expect(
        &s,
        &c,
        "Observation?code=4548-4&value-quantity=lt48",
        &["h65"],
    );
    expect(
        &s,
        &c,
        "Observation?code=4548-4&value-quantity=lt7",
        &["h65"],
    );
    // LDL: mg/dL = mmol/L x 38.67
    let ldl = loinc("13457-7", "LDL");
    put(&s, &c, obs("l26", ldl.clone(), ucum("2.6", "mmol/L")));
    put(&s, &c, obs("l70", ldl, ucum("70", "mg/dL")));
    expect(
        &s,
        &c,
        "Observation?code=13457-7&value-quantity=ge100|http://unitsofmeasure.org|mg/dL",
        &["l26"],
    );
    expect(
        &s,
        &c,
        "Observation?code=13457-7&value-quantity=lt2|http://unitsofmeasure.org|mmol/L",
        &["l70"],
    );
    // composites
    expect(
        &s,
        &c,
        "Observation?code-value-quantity=http://loinc.org|4548-4$gt7|http://unitsofmeasure.org|%",
        &["h53"],
    );
    expect(
        &s,
        &c,
        "Observation?code-value-quantity=http://loinc.org|4548-4$lt7|http://unitsofmeasure.org|%",
        &["h65"],
    );
    expect(
        &s,
        &c,
        "Observation?code-value-quantity=4548-4$6.5",
        &["h65"],
    );
    expect(
        &s,
        &c,
        "Observation?combo-code-value-quantity=15074-8$5.3",
        &["q530"],
    );
}

#[test]
fn references_chains_and_reverse_chains() {
    let s = Server::start();
    let c = client();
    patient(
        &s,
        &c,
        "p1",
        json!({"birthDate": "1970-01-01", "identifier": [{"system": "http://h", "value": "MRN1"}]}),
    );
    patient(&s, &c, "p2", json!({"birthDate": "1990-01-01"}));
    put(
        &s,
        &c,
        json!({"resourceType": "Group", "id": "g1", "type": "person", "actual": true}),
    );
    let hr = loinc("8867-4", "HR");
    put(&s, &c, obs("a", hr.clone(), json!({})));
    put(
        &s,
        &c,
        obs(
            "b",
            hr.clone(),
            json!({"subject": {"reference": "Patient/p2"}}),
        ),
    );
    put(
        &s,
        &c,
        obs(
            "g",
            hr.clone(),
            json!({"subject": {"reference": "Group/g1"}}),
        ),
    );
    put(
        &s,
        &c,
        obs(
            "i",
            hr,
            json!({"subject": {"identifier": {"system": "http://h", "value": "MRN9"}}}),
        ),
    );
    let base = s.base.clone();
    // an absolute reference to this server is the same as a relative one
    put(
        &s,
        &c,
        obs(
            "abs",
            loinc("8867-4", "HR"),
            json!({"subject": {"reference": format!("{base}/Patient/p1")}}),
        ),
    );
    expect(&s, &c, "Observation?patient=Patient/p1&_id=abs", &["abs"]);
    expect(&s, &c, "Observation?patient=p1&_id=abs", &["abs"]);
    expect(
        &s,
        &c,
        &format!("Observation?patient={base}/Patient/p1&_id=abs"),
        &["abs"],
    );
    assert!(c
        .delete(s.url("Observation/abs"))
        .send()
        .expect("del")
        .status()
        .is_success());
    expect(&s, &c, "Observation?patient=p1", &["a"]);
    expect(&s, &c, "Observation?patient=Patient/p1", &["a"]);
    expect(
        &s,
        &c,
        &format!("Observation?patient={base}/Patient/p1"),
        &["a"],
    );
    expect(&s, &c, "Observation?subject=g1", &["g"]);
    expect(&s, &c, "Observation?subject:Patient=p2", &["b"]);
    expect(&s, &c, "Observation?subject:Group=p2", &[]);
    expect(
        &s,
        &c,
        "Observation?subject:identifier=http://h|MRN9",
        &["i"],
    );
    expect(&s, &c, "Observation?subject=p1,p2", &["a", "b"]);
    expect(
        &s,
        &c,
        "Observation?subject:Patient.identifier=http://h|MRN1",
        &["a"],
    );
    expect(&s, &c, "Observation?patient.birthdate=lt1980", &["a"]);
    expect(&s, &c, "Observation?patient.birthdate=ge1980", &["b"]);
    expect(
        &s,
        &c,
        "Patient?_has:Observation:patient:code=8867-4",
        &["p1", "p2"],
    );
    expect(&s, &c, "Patient?_has:Observation:patient:_id=b", &["p2"]);
    expect(&s, &c, "Patient?_has:Observation:subject:_id=zzz", &[]);
}

#[test]
fn uris_canonicals_and_common_parameters() {
    let s = Server::start();
    let c = client();
    for (id, url, version) in [
        ("m1", "http://example.org/Measure/a1c", "1.0"),
        ("m2", "http://example.org/Measure/a1c", "2.0"),
        ("m3", "http://other.org/Measure/x", "1.0"),
    ] {
        put(
            &s,
            &c,
            json!({"resourceType": "Measure", "id": id, "url": url, "version": version, "status": "active",
            "meta": {"tag": [{"system": "http://t", "code": id}], "profile": ["http://example.org/p"]}}),
        );
    }
    expect(
        &s,
        &c,
        "Measure?url=http://example.org/Measure/a1c",
        &["m1", "m2"],
    );
    expect(&s, &c, "Measure?url=http://example.org/Measure", &[]);
    expect(
        &s,
        &c,
        "Measure?url:below=http://example.org/Measure",
        &["m1", "m2"],
    );
    expect(
        &s,
        &c,
        "Measure?url:above=http://example.org/Measure/a1c/extra",
        &["m1", "m2"],
    );
    expect(
        &s,
        &c,
        "Measure?url=http://example.org/Measure/a1c&version=2.0",
        &["m2"],
    );
    expect(
        &s,
        &c,
        "Measure?url=http://example.org/Measure/a1c|2.0",
        &["m2"],
    );
    expect(
        &s,
        &c,
        "Measure?url=http://example.org/Measure/a1c&status=",
        &["m1", "m2"],
    );
    put(
        &s,
        &c,
        json!({"resourceType": "MeasureReport", "id": "r1", "status": "complete", "type": "summary",
        "measure": "http://example.org/Measure/a1c|2.0", "period": {"start": "2024-01-01", "end": "2024-12-31"},
        "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/measurereport-category", "valueCodeableConcept": {"coding": [{"system": "http://hl7.org/fhir/us/davinci-vbpr/CodeSystem/measurereport-category", "code": "vbp"}]}}],
        "subject": {"reference": "Group/contract-cohort", "extension": [{"url": "http://hl7.org/fhir/us/davinci-vbpr/StructureDefinition/organization-subject", "valueReference": {"reference": "Organization/payer"}}]}}),
    );
    expect(
        &s,
        &c,
        "MeasureReport?measure=http://example.org/Measure/a1c",
        &["r1"],
    );
    expect(
        &s,
        &c,
        "MeasureReport?measure=http://example.org/Measure/a1c|2.0",
        &["r1"],
    );
    expect(
        &s,
        &c,
        "MeasureReport?measure=http://example.org/Measure/a1c|1.0",
        &[],
    );
    expect(&s, &c, "MeasureReport?category=vbp", &["r1"]);
    expect(&s, &c, "MeasureReport?measurereport-category=vbp", &["r1"]);
    expect(
        &s,
        &c,
        "MeasureReport?subject-organization=Organization/payer",
        &["r1"],
    );
    expect(
        &s,
        &c,
        "MeasureReport?measurereport-subject-organization=payer",
        &["r1"],
    );
    expect(
        &s,
        &c,
        "MeasureReport?period=2024-06&measure=http://example.org/Measure/a1c",
        &[],
    );
    expect(
        &s,
        &c,
        "MeasureReport?period=ge2024-06&measure=http://example.org/Measure/a1c",
        &["r1"],
    );
    expect(&s, &c, "Measure?_tag=http://t|m1", &["m1"]);
    expect(
        &s,
        &c,
        "Measure?_profile=http://example.org/p",
        &["m1", "m2", "m3"],
    );
    expect(&s, &c, "Measure?_id=m1,m3", &["m1", "m3"]);
    expect(
        &s,
        &c,
        "Measure?_lastUpdated=gt2000-01-01",
        &["m1", "m2", "m3"],
    );
    expect(&s, &c, "Measure?_lastUpdated=lt2000-01-01", &[]);
    // system level with _type
    let b = bundle(&s, &c, "?_type=Measure,MeasureReport&_tag=http://t|m2");
    assert_eq!(b["total"], 1, "{b}");
    let b = bundle(&s, &c, "?_type=Measure,MeasureReport");
    assert_eq!(b["total"], 4, "{b}");
}

#[test]
fn paging_visits_every_match_once_while_writes_happen() {
    let s = Server::start();
    let c = client();
    let tag = "http://paging|run";
    let make = |i: usize| {
        json!({"resourceType": "Observation", "id": format!("pg{i:03}"), "status": "final",
        "meta": {"tag": [{"system": "http://paging", "code": "run"}]},
        "code": {"text": "x"}, "effectiveDateTime": format!("2024-01-{:02}", 1 + i % 28)})
    };
    for i in 0..40 {
        put(&s, &c, make(i));
    }
    let original: BTreeSet<String> = (0..40).map(|i| format!("pg{i:03}")).collect();
    for sort in ["", "&_sort=date", "&_sort=-date,_id"] {
        let mut url = s.url(&format!("Observation?_tag={tag}&_count=7{sort}"));
        let mut seen: Vec<String> = Vec::new();
        let mut pages = 0;
        let mut extra = 100 + sort.len() * 100;
        loop {
            // concurrent inserts of new matches between page fetches
            put(&s, &c, make(extra));
            extra += 1;
            let b = body_json(c.get(&url).send().expect("page"));
            pages += 1;
            let page: Vec<String> = entries(&b)
                .iter()
                .map(|e| e["resource"]["id"].as_str().expect("id").to_string())
                .collect();
            assert!(page.len() <= 7);
            seen.extend(page);
            let next = b["link"]
                .as_array()
                .expect("links")
                .iter()
                .find(|l| l["relation"] == "next")
                .map(|l| l["url"].as_str().expect("url").to_string());
            match next {
                Some(n) => url = n,
                None => break,
            }
            assert!(pages < 50, "paging does not end");
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "a match was returned twice ({sort})"
        );
        assert!(original.is_subset(&unique), "a match was skipped ({sort})");
    }
    // previous goes back to the same page
    let first = bundle(
        &s,
        &c,
        &format!("Observation?_tag={tag}&_count=5&_sort=_id"),
    );
    let next = first["link"]
        .as_array()
        .expect("l")
        .iter()
        .find(|l| l["relation"] == "next")
        .expect("next")["url"]
        .as_str()
        .expect("u")
        .to_string();
    let second = body_json(c.get(&next).send().expect("p2"));
    let prev = second["link"]
        .as_array()
        .expect("l")
        .iter()
        .find(|l| l["relation"] == "previous")
        .expect("previous")["url"]
        .as_str()
        .expect("u")
        .to_string();
    let back = body_json(c.get(&prev).send().expect("p1"));
    let page_ids = |b: &Value| {
        entries(b)
            .iter()
            .map(|e| e["resource"]["id"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(page_ids(&back), page_ids(&first));
    assert!(first["link"]
        .as_array()
        .expect("l")
        .iter()
        .any(|l| l["relation"] == "first"));
}

#[test]
fn sort_total_summary_elements_and_includes() {
    let s = Server::start();
    let c = client();
    patient(
        &s,
        &c,
        "p1",
        json!({"name": [{"family": "Zed"}], "gender": "male", "generalPractitioner": [{"reference": "Practitioner/dr"}],
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">Zed</div>"}}),
    );
    patient(&s, &c, "p2", json!({"name": [{"family": "Adams"}]}));
    put(
        &s,
        &c,
        json!({"resourceType": "Practitioner", "id": "dr", "name": [{"family": "Who"}]}),
    );
    let hr = loinc("8867-4", "HR");
    put(
        &s,
        &c,
        obs(
            "o1",
            hr.clone(),
            json!({"effectiveDateTime": "2024-03-01", "valueQuantity": {"value": 80}}),
        ),
    );
    put(
        &s,
        &c,
        obs(
            "o2",
            hr.clone(),
            json!({"effectiveDateTime": "2024-01-01", "valueQuantity": {"value": 60}}),
        ),
    );
    put(
        &s,
        &c,
        obs(
            "o3",
            hr,
            json!({"effectiveDateTime": "2024-02-01", "subject": {"reference": "Patient/p2"}, "valueQuantity": {"value": 70}}),
        ),
    );
    let order = |q: &str| -> Vec<String> {
        entries(&bundle(&s, &c, q))
            .iter()
            .filter(|e| e["search"]["mode"] == "match")
            .map(|e| e["resource"]["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(order("Observation?_sort=date"), vec!["o2", "o3", "o1"]);
    assert_eq!(order("Observation?_sort=-date"), vec!["o1", "o3", "o2"]);
    assert_eq!(
        order("Observation?_sort=value-quantity"),
        vec!["o2", "o3", "o1"]
    );
    assert_eq!(
        order("Observation?_sort=patient,-date"),
        vec!["o1", "o2", "o3"]
    );
    assert_eq!(order("Patient?_sort=family"), vec!["p2", "p1"]);
    assert_eq!(order("Patient?_sort=-_id"), vec!["p2", "p1"]);
    let b = bundle(&s, &c, "Observation?_total=none");
    assert!(b.get("total").is_none());
    let b = bundle(&s, &c, "Observation?_summary=count");
    assert_eq!(b["total"], 3);
    assert!(b.get("entry").is_none());
    let b = bundle(&s, &c, "Patient?_id=p1&_summary=true");
    let p = &entries(&b)[0]["resource"];
    assert!(p.get("text").is_none() && p.get("name").is_some(), "{p}");
    assert!(p["meta"]["tag"]
        .as_array()
        .expect("tags")
        .iter()
        .any(|t| t["code"] == "SUBSETTED"));
    let b = bundle(&s, &c, "Patient?_id=p1&_summary=data");
    assert!(entries(&b)[0]["resource"].get("text").is_none());
    let b = bundle(&s, &c, "Patient?_id=p1&_summary=text");
    let p = &entries(&b)[0]["resource"];
    assert!(p.get("text").is_some() && p.get("name").is_none(), "{p}");
    let b = bundle(&s, &c, "Observation?_id=o1&_elements=status,value");
    let o = &entries(&b)[0]["resource"];
    assert!(
        o.get("valueQuantity").is_some() && o.get("effectiveDateTime").is_none(),
        "{o}"
    );
    assert!(o.get("code").is_some(), "mandatory elements stay");
    // includes
    let b = bundle(&s, &c, "Observation?_id=o1,o3&_include=Observation:patient");
    let inc: BTreeSet<String> = entries(&b)
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(inc, ["p1", "p2"].iter().map(|x| x.to_string()).collect());
    assert_eq!(b["total"], 2, "includes do not count");
    let b = bundle(&s, &c, "Observation?_id=o1&_include=Observation:patient&_include:iterate=Patient:general-practitioner");
    let inc: BTreeSet<String> = entries(&b)
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(inc, ["dr", "p1"].iter().map(|x| x.to_string()).collect());
    let b = bundle(
        &s,
        &c,
        "Observation?_id=o1&_include=Observation:patient&_include=Patient:general-practitioner",
    );
    assert_eq!(
        entries(&b).len(),
        2,
        "without :iterate the second include applies to matches only"
    );
    let b = bundle(&s, &c, "Patient?_id=p1&_revinclude=Observation:patient");
    let inc: BTreeSet<String> = entries(&b)
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .map(|e| e["resource"]["id"].as_str().expect("id").to_string())
        .collect();
    assert_eq!(inc, ["o1", "o2"].iter().map(|x| x.to_string()).collect());
    let b = bundle(&s, &c, "Observation?_id=o3&_include=*");
    assert_eq!(entries(&b).len(), 2);
}

#[test]
fn get_equals_post_and_errors_carry_outcomes() {
    let s = Server::start();
    let c = client();
    patient(
        &s,
        &c,
        "p1",
        json!({"gender": "female", "birthDate": "1980-02-02"}),
    );
    patient(&s, &c, "p2", json!({"gender": "male"}));
    let q = "gender=female,male&birthdate=ge1900&_sort=_id";
    let get = bundle(&s, &c, &format!("Patient?{q}"));
    let post = body_json(
        c.post(s.url("Patient/_search"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(q)
            .send()
            .expect("post"),
    );
    let strip = |b: &Value| {
        (
            b["total"].clone(),
            entries(b)
                .iter()
                .map(|e| e["resource"]["id"].clone())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(strip(&get), strip(&post));
    assert_eq!(get["total"], 1);
    // unknown parameter: ignored with a warning, or 400 when strict
    let b = bundle(&s, &c, "Patient?nonsense=1");
    assert_eq!(b["total"], 2);
    let outcome = entries(&b)
        .into_iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("outcome entry");
    let self_link = b["link"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["relation"] == "self")
        .expect("self")["url"]
        .to_string();
    assert!(
        !self_link.contains("nonsense"),
        "the self link names only the parameters used: {self_link}"
    );
    assert_eq!(outcome["resource"]["resourceType"], "OperationOutcome");
    let r = c
        .get(s.url("Patient?nonsense=1"))
        .header("prefer", "handling=strict")
        .send()
        .expect("strict");
    let oo = expect_error(r, StatusCode::BAD_REQUEST);
    assert!(oo.to_string().contains("nonsense"));
    for bad in [
        "Patient?birthdate=1980-13",
        "Patient?birthdate=zz1980",
        "Observation?value-quantity=x",
        "Observation?value-quantity=1|a",
        "Patient?_count=x",
        "Patient?_sort=bogus",
        "Patient?_include=Patient:name",
        "Patient?gender:bogus=x",
        "Observation?code-value-quantity=1",
        "Patient?_summary=maybe",
        "Patient?_total=lots",
    ] {
        let r = c.get(s.url(bad)).send().expect("bad");
        expect_error(r, StatusCode::BAD_REQUEST);
    }
    // several problems are all reported
    let oo = expect_error(
        c.get(s.url("Patient?birthdate=x&_count=y"))
            .send()
            .expect("bad"),
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(oo["issue"].as_array().expect("issues").len(), 2, "{oo}");
}

#[test]
fn compartments_and_everything() {
    let s = Server::start();
    let c = client();
    patient(&s, &c, "p1", json!({}));
    patient(&s, &c, "p2", json!({}));
    let hr = loinc("8867-4", "HR");
    put(&s, &c, obs("o1", hr.clone(), json!({})));
    put(
        &s,
        &c,
        obs("o2", hr, json!({"subject": {"reference": "Patient/p2"}})),
    );
    put(
        &s,
        &c,
        json!({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p1"}, "code": {"text": "x"}}),
    );
    put(
        &s,
        &c,
        json!({"resourceType": "Encounter", "id": "e1", "status": "finished", "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}, "subject": {"reference": "Patient/p1"}}),
    );
    expect(&s, &c, "Patient/p1/Observation", &["o1"]);
    expect(&s, &c, "Patient/p1/Observation?code=8867-4", &["o1"]);
    expect(&s, &c, "Patient/p2/Observation", &["o2"]);
    expect(&s, &c, "Patient/p1/Condition", &["c1"]);
    let b = bundle(&s, &c, "Patient/p1/$everything");
    let got: BTreeSet<String> = entries(&b)
        .iter()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().expect("t"),
                e["resource"]["id"].as_str().expect("id")
            )
        })
        .collect();
    let want: BTreeSet<String> = [
        "Patient/p1",
        "Observation/o1",
        "Condition/c1",
        "Encounter/e1",
    ]
    .iter()
    .map(|x| x.to_string())
    .collect();
    assert_eq!(got, want);
    let b = bundle(&s, &c, "Patient/p1/$everything?_type=Observation,Patient");
    assert_eq!(b["total"], 2);
    let b = bundle(&s, &c, "Patient/p1/$everything?_since=2999-01-01T00:00:00Z");
    assert_eq!(b["total"], 0);
    let b = bundle(&s, &c, "Patient/p1/$everything?_count=1");
    assert_eq!(entries(&b).len(), 1);
    assert!(b["link"]
        .as_array()
        .expect("l")
        .iter()
        .any(|l| l["relation"] == "next"));
    expect_error(
        c.get(s.url("Patient/nobody/$everything"))
            .send()
            .expect("404"),
        StatusCode::NOT_FOUND,
    );
}

#[test]
fn search_reflects_updates_and_deletes() {
    let s = Server::start();
    let c = client();
    patient(&s, &c, "p1", json!({"gender": "female"}));
    expect(&s, &c, "Patient?gender=female", &["p1"]);
    patient(&s, &c, "p1", json!({"gender": "male"}));
    expect(&s, &c, "Patient?gender=female", &[]);
    expect(&s, &c, "Patient?gender=male", &["p1"]);
    assert!(c
        .delete(s.url("Patient/p1"))
        .send()
        .expect("del")
        .status()
        .is_success());
    expect(&s, &c, "Patient?gender=male", &[]);
    expect(&s, &c, "Patient?gender:missing=true", &[]);
    // conditional create sees the full search semantics
    let body = json!({"resourceType": "Patient", "gender": "other", "birthDate": "2001-01-01"})
        .to_string();
    let r1 = c
        .post(s.url("Patient"))
        .header("content-type", FHIR_JSON)
        .header("if-none-exist", "birthdate=2001&gender=other")
        .body(body.clone())
        .send()
        .expect("c1");
    assert_eq!(r1.status(), StatusCode::CREATED);
    let r2 = c
        .post(s.url("Patient"))
        .header("content-type", FHIR_JSON)
        .header("if-none-exist", "birthdate=2001&gender=other")
        .body(body)
        .send()
        .expect("c2");
    assert_eq!(
        r2.status(),
        StatusCode::OK,
        "the second conditional create matches the first"
    );
}

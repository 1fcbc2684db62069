//! Reports through the HTTP API: `$evaluate-measure` errors and report kinds, publication of a
//! contract's report set (stored, immutable, corrected by a new report that names the one it
//! replaces), and the payer's MeasureReport searches with `_include`.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use vbc_server::engine::days;

const CONTRACT: &str = "vivitrol-upmc-1.0.0";

fn post_population(
    s: &Server,
    c: &reqwest::blocking::Client,
    file: &str,
    n: usize,
    seed: u64,
) -> Vec<vbc_server::synth::Expected> {
    let text = std::fs::read_to_string(file).expect("contract");
    let rules = vbc_server::contracts::source::compile(&text).expect("compiles");
    let mut expected = Vec::new();
    for (bundles, e) in vbc_server::synth::generate(&rules, n, seed, days::today()) {
        for b in &bundles {
            post_bundle(s, c, b);
        }
        expected.push(e);
    }
    expected
}

fn publish(s: &Server, c: &reqwest::blocking::Client, period: &str) -> (StatusCode, Value) {
    let r = c
        .post(s.url(&format!("/Measure/{CONTRACT}/$publish-reports?{period}")))
        .send()
        .expect("publish");
    let st = r.status();
    (st, body_json(r))
}

fn param<'a>(p: &'a Value, name: &str) -> Vec<&'a Value> {
    p["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["name"] == name)
        .collect()
}

fn ext_value<'a>(v: &'a Value, url_end: &str) -> Option<&'a Value> {
    v["extension"]
        .as_array()?
        .iter()
        .find(|e| e["url"].as_str().is_some_and(|u| u.ends_with(url_end)))
}

#[test]
fn evaluate_measure_rejects_bad_requests_as_the_deqm_kit_expects() {
    let s = Server::start_with(&[
        "--contracts-dir",
        "contracts",
        "--report-schedule-secs",
        "0",
    ]);
    let c = client();
    let ok = "periodStart=2024-01-01&periodEnd=2024-12-31";
    let cases: Vec<(String, StatusCode)> = vec![
        (
            format!("/Measure/no-such-measure/$evaluate-measure?{ok}"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/Measure/{CONTRACT}/$evaluate-measure?{ok}&subject=Patient/nobody"),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/Measure/{CONTRACT}/$evaluate-measure?periodEnd=2024-12-31"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/Measure/{CONTRACT}/$evaluate-measure?periodStart=2024-01-01"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                "/Measure/{CONTRACT}/$evaluate-measure?periodStart=2024-13-45&periodEnd=2024-12-31"
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!(
                "/Measure/{CONTRACT}/$evaluate-measure?periodStart=2024-12-31&periodEnd=2024-01-01"
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/Measure/{CONTRACT}/$evaluate-measure?{ok}&reportType=foo"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/Measure/{CONTRACT}/$evaluate-measure?{ok}&reportType=subject"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/Measure/$evaluate-measure?{ok}"),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (path, status) in cases {
        let oo = expect_error(get(&s, &c, &path), status);
        assert!(
            oo["issue"]
                .as_array()
                .expect("issues")
                .iter()
                .any(|i| i["severity"] == "error"),
            "{path}: {oo}"
        );
    }
    // POST with a Parameters body gives the same answers
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "periodStart", "valueDate": "2024-01-01"},
        {"name": "reportType", "valueCode": "population"}
    ]});
    let r = c
        .post(s.url(&format!("/Measure/{CONTRACT}/$evaluate-measure")))
        .header("Content-Type", "application/fhir+json")
        .json(&body)
        .send()
        .expect("post");
    let oo = expect_error(r, StatusCode::BAD_REQUEST);
    assert!(
        error_expressions(&oo).contains(&"periodEnd".to_string()),
        "{oo}"
    );
    // a measure named by canonical at type level
    let r = c
        .post(s.url("/Measure/$evaluate-measure"))
        .header("Content-Type", "application/fhir+json")
        .json(&json!({"resourceType": "Parameters", "parameter": [
            {"name": "measure", "valueString": format!("https://vbc-server.dev/fhir/Measure/{CONTRACT}|1.0.0")},
            {"name": "periodStart", "valueDate": "2024-01-01"},
            {"name": "periodEnd", "valueDate": "2024-12-31"}
        ]}))
        .send()
        .expect("post");
    assert_eq!(r.status(), 200);
    let report = body_json(r);
    assert_eq!(report["type"], "summary");
    assert_eq!(
        report["meta"]["profile"][0],
        "http://hl7.org/fhir/us/davinci-vbpr/StructureDefinition/vbp-performance-measurereport"
    );
}

#[test]
fn a_published_report_set_is_stored_immutable_searchable_and_corrected_by_a_new_report() {
    let s = Server::start_with(&[
        "--contracts-dir",
        "contracts",
        "--report-schedule-secs",
        "0",
    ]);
    let c = client();
    let expected = post_population(&s, &c, "contracts/vivitrol-upmc.toml", 40, 11);
    let period = "periodStart=1900-01-01&periodEnd=2100-12-31";

    // individual and subject-list reports on demand
    let member = expected
        .iter()
        .find(|e| e.membership.as_deref() == Some("member"))
        .expect("a member");
    let ind = get_json(
        &s,
        &c,
        &format!(
            "/Measure/{CONTRACT}/$evaluate-measure?{period}&subject=Patient/{}",
            member.person
        ),
    );
    assert_eq!(ind["type"], "individual");
    assert_eq!(
        ind["subject"]["reference"],
        format!("Patient/{}", member.person)
    );
    for g in ind["group"].as_array().expect("groups") {
        let id = g["id"].as_str().expect("id");
        let status = ext_value(g, "/outcome-status").expect("status")["valueCode"].clone();
        assert_eq!(status, json!(member.outcomes[id]), "{id}");
    }
    assert!(
        ind["evaluatedResource"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "the evidence is listed: {ind}"
    );
    let list = get_json(
        &s,
        &c,
        &format!("/Measure/{CONTRACT}/$evaluate-measure?{period}&reportType=subject-list"),
    );
    assert_eq!(list["type"], "subject-list");
    let adherence = list["group"]
        .as_array()
        .expect("groups")
        .iter()
        .find(|g| g["id"] == "adherence")
        .expect("adherence group");
    let numerator = adherence["population"]
        .as_array()
        .expect("pops")
        .iter()
        .find(|p| p["code"]["coding"][0]["code"] == "numerator")
        .expect("numerator");
    let list_id = numerator["subjectResults"]["reference"]
        .as_str()
        .expect("ref")
        .trim_start_matches('#');
    let contained = list["contained"]
        .as_array()
        .expect("contained")
        .iter()
        .find(|l| l["id"] == list_id)
        .expect("list");
    let listed = contained["entry"].as_array().map_or(0, Vec::len);
    let met = expected
        .iter()
        .filter(|e| {
            e.membership.as_deref() == Some("member")
                && e.outcomes.get("adherence").map(String::as_str) == Some("met")
        })
        .count();
    assert_eq!(listed, met);
    assert_eq!(numerator["count"], met);

    // publish: performance + one quality report per reported outcome + subject-list
    let rules = vbc_server::contracts::source::compile(
        &std::fs::read_to_string("contracts/vivitrol-upmc.toml").expect("read"),
    )
    .expect("compiles");
    let reported = rules.outcomes.iter().filter(|o| o.report).count();
    let (st, p) = publish(&s, &c, period);
    assert_eq!(st, StatusCode::CREATED, "{p}");
    assert_eq!(param(&p, "stored")[0]["valueInteger"], reported + 2);
    let refs: Vec<String> = param(&p, "report")
        .iter()
        .map(|r| {
            r["valueReference"]["reference"]
                .as_str()
                .expect("ref")
                .to_string()
        })
        .collect();
    assert_eq!(refs.len(), reported + 2);
    let perf_ref = refs[0].clone();
    let perf = get_json(&s, &c, &format!("/{perf_ref}"));
    assert_eq!(perf["status"], "complete");
    let evaluated: Vec<String> = perf["evaluatedResource"]
        .as_array()
        .expect("evaluated")
        .iter()
        .map(|e| e["reference"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(evaluated, refs[1..=reported]);

    // the same period again: nothing new
    let (st, p2) = publish(&s, &c, period);
    assert_eq!(st, StatusCode::OK);
    assert_eq!(param(&p2, "stored")[0]["valueInteger"], 0);

    // immutable: a change is refused; the same content sent back changes nothing
    let r = c
        .put(s.url(&format!("/{perf_ref}")))
        .header("Content-Type", "application/fhir+json")
        .json(&perf)
        .send()
        .expect("put");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        get_json(&s, &c, &format!("/{perf_ref}"))["meta"]["versionId"],
        perf["meta"]["versionId"]
    );
    let mut changed = perf.clone();
    changed["status"] = json!("pending");
    let r = c
        .put(s.url(&format!("/{perf_ref}")))
        .header("Content-Type", "application/fhir+json")
        .json(&changed)
        .send()
        .expect("put");
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(
        c.delete(s.url(&format!("/{perf_ref}")))
            .send()
            .expect("delete")
            .status(),
        StatusCode::CONFLICT
    );

    // payer queries, as the VBPR reference client makes them
    let measure = format!("https://vbc-server.dev/fhir/Measure/{CONTRACT}");
    let b = get_json(
        &s,
        &c,
        &format!("/MeasureReport?measure={measure}&_include=MeasureReport:evaluated-resource"),
    );
    let matched: Vec<&Value> = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .collect();
    let included = b["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .count();
    assert_eq!(
        matched.len(),
        2,
        "performance and subject-list of the contract Measure"
    );
    assert_eq!(included, reported);
    let org = "Organization/org-alkermes";
    for q in [
        format!("subject-organization={org}"),
        "category=vbp".to_string(),
        "status=complete".to_string(),
        "period=ge1900-01-01".to_string(),
        format!("date={}", days::format(days::today())),
        "reporter=Organization/org-upmc-health-plan".to_string(),
        "_profile=http://hl7.org/fhir/us/davinci-vbpr/StructureDefinition/vbp-performance-measurereport".to_string(),
    ] {
        let got = get_json(&s, &c, &format!("/MeasureReport?{q}"));
        let ids: Vec<&str> = got["entry"].as_array().into_iter().flatten().filter_map(|e| e["resource"]["id"].as_str()).collect();
        let perf_id = perf_ref.trim_start_matches("MeasureReport/");
        assert!(ids.contains(&perf_id), "{q}: {ids:?}");
    }

    // late data change the period: a correction that names what it replaces
    post_population(&s, &c, "contracts/vivitrol-upmc.toml", 10, 12);
    let (st, p3) = publish(&s, &c, period);
    assert_eq!(st, StatusCode::CREATED, "{p3}");
    assert!(
        param(&p3, "corrections")[0]["valueInteger"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );
    let new_perf_ref = param(&p3, "report")[0]["valueReference"]["reference"]
        .as_str()
        .expect("ref")
        .to_string();
    assert_ne!(new_perf_ref, perf_ref);
    let new_perf = get_json(&s, &c, &format!("/{new_perf_ref}"));
    assert_eq!(
        ext_value(&new_perf, "/replaces").expect("replaces")["valueReference"]["reference"],
        perf_ref.as_str()
    );
    // the corrected report is still there, unchanged
    assert_eq!(
        get_json(&s, &c, &format!("/{perf_ref}"))["meta"]["versionId"],
        perf["meta"]["versionId"]
    );
}

#[test]
fn data_operations_answer_what_a_measure_needs_collects_accepts_and_misses() {
    let s = Server::start_with(&[
        "--contracts-dir",
        "contracts",
        "--report-schedule-secs",
        "0",
    ]);
    let c = client();
    let januvia = "januvia-aetna-1.0.0";
    let expected = post_population(&s, &c, "contracts/januvia-aetna.toml", 60, 5);
    let period = "periodStart=1900-01-01&periodEnd=2100-12-31";

    // $data-requirements: the drug's dispenses and the HbA1c Observations, by ValueSet
    let lib = get_json(&s, &c, &format!("/Measure/{januvia}/$data-requirements"));
    assert_eq!(lib["type"]["coding"][0]["code"], "module-definition");
    let reqs = lib["dataRequirement"].as_array().expect("requirements");
    let has = |t: &str| {
        reqs.iter()
            .any(|r| r["type"] == t && r["codeFilter"][0]["valueSet"].is_string())
    };
    assert!(has("MedicationDispense") && has("Observation"), "{lib}");
    expect_error(
        get(&s, &c, "/Measure/nope/$data-requirements"),
        StatusCode::NOT_FOUND,
    );

    // $collect-data: the data-collection report lists exactly the resources returned
    let member = expected
        .iter()
        .find(|e| e.membership.as_deref() == Some("member"))
        .expect("member");
    let p = get_json(
        &s,
        &c,
        &format!(
            "/Measure/{januvia}/$collect-data?{period}&subject=Patient/{}",
            member.person
        ),
    );
    let report = &param(&p, "measureReport")[0]["resource"];
    assert_eq!(report["type"], "data-collection");
    let listed = report["evaluatedResource"].as_array().map_or(0, Vec::len);
    assert!(listed > 0, "{p}");
    assert_eq!(param(&p, "resource").len(), listed);
    expect_error(
        get(
            &s,
            &c,
            &format!("/Measure/{januvia}/$collect-data?periodStart=2024-01-01"),
        ),
        StatusCode::BAD_REQUEST,
    );

    // $submit-data: exactly one data-collection MeasureReport, then the data are findable
    let mr = json!({"resourceType": "MeasureReport", "status": "complete", "type": "data-collection",
        "measure": format!("https://vbc-server.dev/fhir/Measure/{januvia}|1.0.0"),
        "period": {"start": "2025-01-01", "end": "2025-12-31"}});
    let obs = json!({"resourceType": "Observation", "status": "final",
        "identifier": [{"system": "urn:lab:results", "value": "submit-1"}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"reference": format!("Patient/{}", member.person)},
        "effectiveDateTime": "2025-03-01",
        "valueQuantity": {"value": 6.8, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"}});
    let submit = |params: Vec<Value>| {
        c.post(s.url("/Measure/$submit-data"))
            .header("Content-Type", "application/fhir+json")
            .json(&json!({"resourceType": "Parameters", "parameter": params}))
            .send()
            .expect("submit")
    };
    expect_error(
        submit(vec![json!({"name": "resource", "resource": obs})]),
        StatusCode::BAD_REQUEST,
    );
    expect_error(
        submit(vec![
            json!({"name": "measureReport", "resource": mr}),
            json!({"name": "measureReport", "resource": mr}),
            json!({"name": "resource", "resource": obs}),
        ]),
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(
        search_total(&s, &c, "Observation", "identifier=urn:lab:results|submit-1"),
        0,
        "a refused submission writes nothing"
    );
    let r = submit(vec![
        json!({"name": "measureReport", "resource": mr}),
        json!({"name": "resource", "resource": obs}),
    ]);
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "{}",
        r.text().unwrap_or_default()
    );
    assert_eq!(
        search_total(&s, &c, "Observation", "identifier=urn:lab:results|submit-1"),
        1
    );

    // $care-gaps: every member whose HbA1c window closed without a usable result is an open gap
    expect_error(
        get(&s, &c, &format!("/Measure/{januvia}/$care-gaps?{period}")),
        StatusCode::BAD_REQUEST,
    );
    // as the DEQM kit: subject with organization, and a subject that is no reference, are 400
    let who = format!("Patient/{}", member.person);
    expect_error(
        get(&s, &c, &format!("/Measure/{januvia}/$care-gaps?{period}&status=open-gap&subject={who}&organization=Organization/x")),
        StatusCode::BAD_REQUEST,
    );
    expect_error(
        get(
            &s,
            &c,
            &format!(
                "/Measure/{januvia}/$care-gaps?{period}&status=open-gap&subject=INVALID_SUBJECT_ID"
            ),
        ),
        StatusCode::BAD_REQUEST,
    );
    let none = get_json(&s, &c, &format!("/Measure/{januvia}/$care-gaps?{period}&status=open-gap&organization=Organization/nobody"));
    // DEQM's program parameter is accepted (the server runs one program per contract)
    get_json(
        &s,
        &c,
        &format!("/Measure/{januvia}/$care-gaps?{period}&status=open-gap&program=vbc"),
    );
    assert!(
        param(&none, "return").is_empty(),
        "an organization that performed nothing has no gaps"
    );
    let gaps = get_json(
        &s,
        &c,
        &format!("/Measure/{januvia}/$care-gaps?{period}&status=open-gap"),
    );
    let mut gap_patients: Vec<String> = param(&gaps, "return")
        .iter()
        .flat_map(|b| {
            b["resource"]["entry"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|e| {
            e["resource"]["patient"]["reference"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches("Patient/")
                .to_string()
        })
        .collect();
    gap_patients.sort();
    // the submitted result may close a gap of that member; compare after the re-evaluation
    let outcomes = get_json(
        &s,
        &c,
        &format!("/Measure/{januvia}/$outcomes?status=missing-data&_count=1000"),
    );
    let mut missing: Vec<String> = outcomes["parameter"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["name"] == "result")
        .filter_map(|p| {
            p["part"]
                .as_array()?
                .iter()
                .find(|x| x["name"] == "subject")
        })
        .map(|x| {
            x["valueReference"]["reference"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches("Patient/")
                .to_string()
        })
        .collect();
    missing.sort();
    let generated_missing = expected
        .iter()
        .filter(|e| {
            e.membership.as_deref() == Some("member")
                && e.outcomes.get("hba1c-control").map(String::as_str) == Some("missing-data")
        })
        .count();
    assert!(generated_missing > 0, "the population has missing data");
    assert_eq!(gap_patients, missing);
    let first = &param(&gaps, "return")[0]["resource"]["entry"][0]["resource"];
    assert!(
        first["detail"]
            .as_str()
            .is_some_and(|d| d.contains("needed by") && d.contains("at stake")),
        "{first}"
    );
}

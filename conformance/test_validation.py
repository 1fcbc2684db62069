"""Validation: invalid resources are refused with 400 and an OperationOutcome
whose every issue says where (expression); $validate answers with an
OperationOutcome (200 whether or not the resource is valid, R4 $validate)."""
from __future__ import annotations

import json

import pytest

from fhirtest import FHIR_JSON, FHIR_XML, expect_outcome, fhir_json, unique

pytestmark = pytest.mark.area("validation")

OBS = {"resourceType": "Observation", "status": "final", "code": {"text": "v"}}

# (name, resource, an expression that must be reported (substring, or None))
INVALID = [
    ("unknown-element", {"resourceType": "Patient", "foo": 1}, "Patient.foo"),
    ("unknown-nested-element", {"resourceType": "Patient", "name": [{"family": "x", "bar": "y"}]}, "Patient.name[0].bar"),
    ("bad-code", {"resourceType": "Patient", "gender": "bogus"}, "Patient.gender"),
    ("bad-date", {"resourceType": "Patient", "birthDate": "2020-13-45"}, "Patient.birthDate"),
    ("bad-date-format", {"resourceType": "Patient", "birthDate": "12/25/1974"}, "Patient.birthDate"),
    ("bad-datetime-no-tz", dict(OBS, effectiveDateTime="2020-01-01T10:00:00"), "Observation.effective"),
    ("bad-instant", dict(OBS, issued="2020-01-01"), "Observation.issued"),
    ("string-for-boolean", {"resourceType": "Patient", "active": "true"}, "Patient.active"),
    ("number-for-string", {"resourceType": "Patient", "name": [{"family": 42}]}, "Patient.name[0].family"),
    ("string-for-decimal", dict(OBS, valueQuantity={"value": "1.5"}), "Observation.valueQuantity.value"),
    ("object-for-array", {"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
    ("array-for-single", {"resourceType": "Patient", "gender": ["male"]}, "Patient.gender"),
    ("missing-required", {"resourceType": "Observation", "code": {"text": "x"}}, "Observation.status"),
    ("missing-required-nested", dict(OBS, component=[{"valueString": "x"}]), "Observation.component[0].code"),
    ("two-choice-types", dict(OBS, valueString="a", valueInteger=1), "Observation.value"),
    ("bad-choice-type", dict(OBS, valueFoo="a"), "Observation.valueFoo"),
    ("empty-object", {"resourceType": "Patient", "name": [{}]}, "Patient.name[0]"),
    ("empty-string", {"resourceType": "Patient", "name": [{"family": ""}]}, "Patient.name[0].family"),
    ("empty-array", {"resourceType": "Patient", "name": []}, "Patient.name"),
    ("null-value", {"resourceType": "Patient", "active": None}, "Patient.active"),
    ("extension-without-url", {"resourceType": "Patient", "extension": [{"valueString": "x"}]}, "Patient.extension[0]"),
    ("extension-without-value-or-children", {"resourceType": "Patient", "extension": [{"url": "http://x.org/e"}]},
     "Patient.extension[0]"),
    ("integer-with-fraction", {"resourceType": "Patient", "multipleBirthInteger": 1.5}, "Patient.multipleBirth"),
    ("unsignedInt-negative", {"resourceType": "Patient", "photo": [{"size": -1}]}, "Patient.photo[0].size"),
    ("reference-to-wrong-type", dict(OBS, subject={"reference": "Medication/x"}), "Observation.subject"),
    ("control-character", {"resourceType": "Patient", "name": [{"family": "a\u0001b"}]}, "Patient.name[0].family"),
    ("bad-uri-with-space", {"resourceType": "Patient", "identifier": [{"system": "urn:a b", "value": "x"}]},
     "Patient.identifier[0].system"),
    ("invariant-pat-1", {"resourceType": "Patient", "contact": [{"gender": "male"}]}, "Patient.contact[0]"),
    ("invariant-obs-6", dict(OBS, valueString="x", dataAbsentReason={"text": "n/a"}), "Observation"),
    ("contained-with-meta-versionId", dict(OBS, contained=[{"resourceType": "Patient", "id": "p",
                                                           "meta": {"versionId": "1"}}], subject={"reference": "#p"}),
     "Observation.contained[0]"),
    ("bad-resourceType-in-contained", dict(OBS, contained=[{"resourceType": "NotAType", "id": "x"}]),
     "Observation.contained[0]"),
    ("xhtml-script", {"resourceType": "Patient", "text": {"status": "generated",
                      "div": '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>'}},
     "Patient.text.div"),
    ("xhtml-not-div", {"resourceType": "Patient", "text": {"status": "generated", "div": "<p>hi</p>"}},
     "Patient.text.div"),
]


def _post(client, res):
    return client.post(f"/{res['resourceType']}", content=json.dumps(res), headers={"Content-Type": FHIR_JSON})


def assert_every_issue_has_expression(oo):
    for i in oo["issue"]:
        if i["severity"] in ("error", "fatal"):
            assert i.get("expression"), f"issue without expression: {i}"


@pytest.mark.parametrize("name,res,where", INVALID, ids=[c[0] for c in INVALID])
def test_invalid_create_is_400_with_located_issues(client, name, res, where):
    r = _post(client, res)
    oo = expect_outcome(r, statuses=(400, 422))
    assert_every_issue_has_expression(oo)
    if where:
        exprs = [x for i in oo["issue"] for x in i.get("expression", [])]
        assert any(x.startswith(where) or where.startswith(x) for x in exprs), \
            f"expected an issue at {where}, got {exprs}"


@pytest.mark.parametrize("name,res,where", INVALID[:12], ids=[c[0] for c in INVALID[:12]])
def test_invalid_update_is_400_with_located_issues(client, name, res, where):
    rid = unique("inv")
    body = dict(res, id=rid)
    r = client.put(f"/{res['resourceType']}/{rid}", content=json.dumps(body), headers={"Content-Type": FHIR_JSON})
    oo = expect_outcome(r, statuses=(400, 422))
    assert_every_issue_has_expression(oo)
    expect_outcome(client.get(f"/{res['resourceType']}/{rid}"), statuses=(404,))


def test_several_problems_are_all_reported(client):
    res = {"resourceType": "Patient", "gender": "bogus", "birthDate": "1999-02-30", "foo": 1}
    oo = expect_outcome(_post(client, res), statuses=(400, 422))
    exprs = {x for i in oo["issue"] for x in i.get("expression", [])}
    for want in ("Patient.gender", "Patient.birthDate", "Patient.foo"):
        assert want in exprs, f"{want} not reported: {exprs}"


def test_duplicate_json_keys_are_rejected(client):
    body = '{"resourceType":"Patient","active":true,"active":false}'
    expect_outcome(client.post("/Patient", content=body, headers={"Content-Type": FHIR_JSON}), statuses=(400, 422))


def test_invalid_xml_resource_is_400(client):
    xml = '<Patient xmlns="http://hl7.org/fhir"><gender value="bogus"/><foo value="1"/></Patient>'
    oo = expect_outcome(client.post("/Patient", content=xml, headers={"Content-Type": FHIR_XML}), statuses=(400, 422))
    assert_every_issue_has_expression(oo)


def test_valid_edge_cases_are_accepted(client):
    res = {"resourceType": "Patient", "birthDate": "1974", "deceasedDateTime": "2020-02-29T23:59:59+14:00",
           "multipleBirthInteger": -0, "name": [{"family": "O'Brien  ", "given": ["  Ann"]}],
           "_gender": {"extension": [{"url": "http://x.org/e", "valueString": "unknown"}]},
           "extension": [{"url": "http://x.org/nested", "extension": [{"url": "a", "valueBoolean": False}]}]}
    a = fhir_json(_post(client, res), 201, what="edge-cases")
    assert a["birthDate"] == "1974" and a["_gender"] == res["_gender"]


# ---------------------------------------------------------------------------
# $validate
# ---------------------------------------------------------------------------

def test_validate_valid_resource(client):
    r = client.post("/Patient/$validate", json={"resourceType": "Patient", "gender": "male"},
                    headers={"Content-Type": FHIR_JSON})
    oo = fhir_json(r, 200, what="validate-ok")
    assert oo["resourceType"] == "OperationOutcome"
    assert not [i for i in oo.get("issue", []) if i["severity"] in ("error", "fatal")], oo


@pytest.mark.parametrize("name,res,where", INVALID[:10], ids=[c[0] for c in INVALID[:10]])
def test_validate_invalid_resource_returns_outcome(client, name, res, where):
    r = client.post(f"/{res['resourceType']}/$validate", content=json.dumps(res), headers={"Content-Type": FHIR_JSON})
    oo = fhir_json(r, 200, what="validate-errors")
    assert oo["resourceType"] == "OperationOutcome"
    errs = [i for i in oo.get("issue", []) if i["severity"] in ("error", "fatal")]
    assert errs, f"$validate found nothing wrong with {name}: {oo}"
    assert_every_issue_has_expression(oo)
    exprs = [x for i in errs for x in i.get("expression", [])]
    assert any(x.startswith(where) or where.startswith(x) for x in exprs), f"expected {where}, got {exprs}"


def test_validate_with_parameters_wrapper(client):
    params = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": {"resourceType": "Patient", "gender": "bogus"}}]}
    oo = fhir_json(client.post("/Patient/$validate", json=params, headers={"Content-Type": FHIR_JSON}), 200,
                   what="validate-params")
    assert any(i["severity"] == "error" and "Patient.gender" in i.get("expression", []) for i in oo["issue"]), oo


def test_validate_does_not_store(client):
    ident = {"system": "urn:conformance:val", "value": unique("v")}
    fhir_json(client.post("/Patient/$validate", json={"resourceType": "Patient", "identifier": [ident]},
                          headers={"Content-Type": FHIR_JSON}), 200)
    b = fhir_json(client.get("/Patient", params={"identifier": f"{ident['system']}|{ident['value']}"}), 200)
    assert not b.get("entry")


def test_validate_xml_input(client):
    xml = '<Patient xmlns="http://hl7.org/fhir"><gender value="bogus"/></Patient>'
    oo = fhir_json(client.post("/Patient/$validate", content=xml, headers={"Content-Type": FHIR_XML}), 200,
                   what="validate-xml")
    assert any(i["severity"] == "error" for i in oo["issue"]), oo


def test_validate_wrong_type_for_endpoint(client):
    r = client.post("/Patient/$validate", json=OBS, headers={"Content-Type": FHIR_JSON})
    if r.status_code == 200:
        oo = fhir_json(r, 200)
        assert any(i["severity"] in ("error", "fatal") for i in oo["issue"]), oo
    else:
        expect_outcome(r, statuses=(400, 422))

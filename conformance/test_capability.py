"""Capability: the CapabilityStatement is valid, and what it declares is true."""
from __future__ import annotations

import email.utils
import json
import time

import httpx
import pytest

import fhirgen
from fhirtest import (BASE_URL, FHIR_JSON, FHIR_XML, JSON_PATCH, create, describe, expect_outcome,
                      fhir_json, fhir_xml, unique)

pytestmark = pytest.mark.area("capability")

EXT_URL = "http://example.org/fhir/StructureDefinition/conformance"
TRUTH_TYPES = ["Patient", "Observation", "MedicationDispense", "Encounter"]
INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                "search-type"]


def strip_meta(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in ("meta", "id")}


def rest(cap: dict) -> dict:
    return next(r for r in cap["rest"] if r["mode"] == "server")


def resource_entry(cap: dict, rtype: str) -> dict | None:
    return next((r for r in rest(cap).get("resource", []) if r["type"] == rtype), None)


def interactions_of(entry: dict) -> set[str]:
    return {i["code"] for i in entry.get("interaction", [])}


# ---------------------------------------------------------------------------
# The statement itself
# ---------------------------------------------------------------------------

def test_metadata_without_auth_is_valid_capability_statement():
    # a brand-new client: no Authorization header, no cookies
    with httpx.Client(base_url=BASE_URL, timeout=60, headers={"Accept": FHIR_JSON}) as c:
        r = c.get("/metadata")
    cap = fhir_json(r, 200, what="CapabilityStatement")
    assert cap["resourceType"] == "CapabilityStatement"
    assert cap.get("fhirVersion") == "4.0.1", cap.get("fhirVersion")
    assert cap.get("kind") in ("instance", "capability"), cap.get("kind")
    fmts = set(cap.get("format", []))
    assert fmts & {"json", "application/fhir+json", "application/json"}, f"format lacks JSON: {fmts}"
    assert fmts & {"xml", "application/fhir+xml", "application/xml"}, f"format lacks XML: {fmts}"
    assert any(r["mode"] == "server" for r in cap.get("rest", [])), "no rest.mode=server"


def test_metadata_in_xml():
    with httpx.Client(base_url=BASE_URL, timeout=60) as c:
        r1 = c.get("/metadata", params={"_format": "xml"})
        r2 = c.get("/metadata", headers={"Accept": FHIR_XML})
    for r in (r1, r2):
        xml = fhir_xml(r, 200, what="CapabilityStatement-xml")
        assert b"<CapabilityStatement" in xml and b'<fhirVersion value="4.0.1"' in xml, describe(r)


def test_listed_types_are_r4_resource_types(capability):
    known = set(fhirgen.resource_types())
    listed = [r["type"] for r in rest(capability).get("resource", [])]
    assert listed, "no resource types listed"
    unknown = sorted(set(listed) - known)
    assert not unknown, f"not R4 resource types: {unknown}"
    dup = sorted({t for t in listed if listed.count(t) > 1})
    assert not dup, f"listed twice: {dup}"


@pytest.mark.parametrize("rtype", fhirgen.resource_types())
def test_listed_type_supports_create_and_read(client, capability, rtype):
    entry = resource_entry(capability, rtype)
    if entry is None:
        pytest.skip(f"{rtype} is not listed in the CapabilityStatement")
    declared = interactions_of(entry)
    res = fhirgen.minimal_resource(rtype)
    if "create" not in declared:
        # a read-only type (the server alone writes the audit trail): readable, and a create
        # is refused with an OperationOutcome
        assert "read" in declared, f"{rtype} declares {sorted(declared)}"
        r = client.post(f"/{rtype}", json=res, headers={"Content-Type": "application/fhir+json"})
        assert 400 <= r.status_code < 500, f"{rtype} create was not refused: {r.status_code}"
        assert r.json().get("resourceType") == "OperationOutcome", r.text
        return
    assert {"create", "read"} <= declared, f"{rtype} declares {sorted(declared)}"
    created = create(client, res, what=f"created-{rtype}")
    assert created["resourceType"] == rtype
    r = client.get(f"/{rtype}/{created['id']}")
    got = fhir_json(r, 200, what=f"read-{rtype}")
    assert got["id"] == created["id"]
    assert strip_meta(got) == strip_meta(res), f"read back differs:\nsent {res}\ngot  {got}"


# ---------------------------------------------------------------------------
# Truthfulness for a few central types: every declared interaction works.
# ---------------------------------------------------------------------------

def sample(rtype: str, ident: dict) -> dict:
    if rtype == "Patient":
        return {"resourceType": "Patient", "identifier": [ident], "name": [{"family": "Truth"}]}
    if rtype == "Observation":
        return {"resourceType": "Observation", "identifier": [ident], "status": "final", "code": {"text": "truth"}}
    if rtype == "MedicationDispense":
        return {"resourceType": "MedicationDispense", "identifier": [ident], "status": "completed",
                "medicationCodeableConcept": {"text": "truth"}}
    if rtype == "Encounter":
        return {"resourceType": "Encounter", "identifier": [ident], "status": "planned",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}}
    raise KeyError(rtype)


def new_ident() -> dict:
    return {"system": "urn:conformance:truth", "value": unique("t")}


def ident_query(ident: dict) -> str:
    return f"identifier={ident['system']}|{ident['value']}"


def with_ext(res: dict, value: str) -> dict:
    out = json.loads(json.dumps(res))
    out["extension"] = [{"url": EXT_URL, "valueString": value}]
    return out


def require_declared(capability, rtype, code):
    entry = resource_entry(capability, rtype)
    if entry is None:
        pytest.skip(f"{rtype} not listed")
    if code not in interactions_of(entry):
        pytest.skip(f"{rtype} does not declare {code}")
    return entry


@pytest.mark.parametrize("rtype", TRUTH_TYPES)
@pytest.mark.parametrize("interaction", INTERACTIONS)
def test_declared_interaction_works(client, capability, rtype, interaction):
    require_declared(capability, rtype, interaction)
    ident = new_ident()
    res = sample(rtype, ident)
    if interaction == "create":
        r = client.post(f"/{rtype}", json=res, headers={"Content-Type": FHIR_JSON})
        created = fhir_json(r, 201, what=f"create-{rtype}")
        assert created["meta"]["versionId"], created
        loc = r.headers.get("location", "")
        assert f"/{rtype}/{created['id']}" in loc, f"Location {loc!r}"
        return
    created = create(client, res)
    rid = created["id"]
    if interaction == "read":
        got = fhir_json(client.get(f"/{rtype}/{rid}"), 200, what=f"read-{rtype}")
        assert strip_meta(got) == strip_meta(res)
    elif interaction == "vread":
        client.put(f"/{rtype}/{rid}", json=with_ext(created, "v2"), headers={"Content-Type": FHIR_JSON})
        v1 = created["meta"]["versionId"]
        got = fhir_json(client.get(f"/{rtype}/{rid}/_history/{v1}"), 200, what=f"vread-{rtype}")
        assert got["meta"]["versionId"] == v1 and "extension" not in got
    elif interaction == "update":
        upd = with_ext(created, "v2")
        got = fhir_json(client.put(f"/{rtype}/{rid}", json=upd, headers={"Content-Type": FHIR_JSON}), 200,
                        what=f"update-{rtype}")
        assert got["meta"]["versionId"] != created["meta"]["versionId"]
        assert got["extension"][0]["valueString"] == "v2"
        again = fhir_json(client.get(f"/{rtype}/{rid}"), 200)
        assert strip_meta(again) == strip_meta(upd)
    elif interaction == "patch":
        patch = [{"op": "add", "path": "/extension", "value": [{"url": EXT_URL, "valueString": "p"}]}]
        got = fhir_json(client.patch(f"/{rtype}/{rid}", content=json.dumps(patch),
                                     headers={"Content-Type": JSON_PATCH}), 200, what=f"patch-{rtype}")
        assert got["extension"] == [{"url": EXT_URL, "valueString": "p"}]
        assert got["meta"]["versionId"] != created["meta"]["versionId"]
    elif interaction == "delete":
        r = client.delete(f"/{rtype}/{rid}")
        assert r.status_code in (200, 204), describe(r)
        if r.status_code == 200 and r.content:
            fhir_json(r, 200, what=f"delete-{rtype}")
        expect_outcome(client.get(f"/{rtype}/{rid}"), statuses=(410,))
    elif interaction == "history-instance":
        client.put(f"/{rtype}/{rid}", json=with_ext(created, "v2"), headers={"Content-Type": FHIR_JSON})
        b = fhir_json(client.get(f"/{rtype}/{rid}/_history"), 200, what=f"history-{rtype}")
        assert b["type"] == "history"
        assert len(b.get("entry", [])) == 2, b
    elif interaction == "history-type":
        since = created["meta"]["lastUpdated"]
        url = f"/{rtype}/_history"
        found = False
        params = {"_since": since, "_count": "100"}
        for _ in range(200):
            b = fhir_json(client.get(url, params=params), 200, what=f"type-history-{rtype}")
            params = None
            assert b["type"] == "history"
            if any(e.get("resource", {}).get("id") == rid for e in b.get("entry", [])):
                found = True
                break
            nxt = [l["url"] for l in b.get("link", []) if l["relation"] == "next"]
            if not nxt:
                break
            url = nxt[0]
        assert found, f"{rtype}/{rid} not in type history since {since}"
    elif interaction == "search-type":
        b = fhir_json(client.get(f"/{rtype}", params={"_id": rid}), 200, what=f"search-{rtype}")
        assert b["type"] == "searchset"
        assert [e["resource"]["id"] for e in b.get("entry", [])] == [rid]


FEATURES = ["conditionalCreate", "conditionalUpdate", "conditionalDelete", "conditionalRead", "updateCreate",
            "versioning", "readHistory"]


@pytest.mark.parametrize("rtype", TRUTH_TYPES)
@pytest.mark.parametrize("feature", FEATURES)
def test_declared_feature_works(client, capability, rtype, feature):
    entry = resource_entry(capability, rtype)
    if entry is None:
        pytest.skip(f"{rtype} not listed")
    value = entry.get(feature)
    if value in (None, False, "not-supported", "no-version"):
        pytest.skip(f"{rtype} declares {feature}={value!r}")
    ident = new_ident()
    res = sample(rtype, ident)
    h = {"Content-Type": FHIR_JSON}
    if feature == "conditionalCreate":
        hh = dict(h, **{"If-None-Exist": ident_query(ident)})
        a = fhir_json(client.post(f"/{rtype}", json=res, headers=hh), 201)
        r = client.post(f"/{rtype}", json=res, headers=hh)
        assert r.status_code == 200, describe(r)
        if r.content:
            b = fhir_json(r, 200)
            assert b["id"] == a["id"]
        s = fhir_json(client.get(f"/{rtype}", params={"identifier": f"{ident['system']}|{ident['value']}"}), 200)
        assert len(s.get("entry", [])) == 1, s
    elif feature == "conditionalUpdate":
        r = client.put(f"/{rtype}?{ident_query(ident)}", json=res, headers=h)
        first = fhir_json(r, 201, what="conditional-update-create")
        r = client.put(f"/{rtype}?{ident_query(ident)}", json=with_ext(res, "v2"), headers=h)
        second = fhir_json(r, 200, what="conditional-update")
        assert second["id"] == first["id"] and second["extension"][0]["valueString"] == "v2"
    elif feature == "conditionalDelete":
        a = create(client, res)
        r = client.delete(f"/{rtype}?{ident_query(ident)}")
        assert r.status_code in (200, 204), describe(r)
        expect_outcome(client.get(f"/{rtype}/{a['id']}"), statuses=(410,))
        if value == "single":
            create(client, res)
            create(client, res)
            expect_outcome(client.delete(f"/{rtype}?{ident_query(ident)}"), statuses=(412,))
        elif value == "multiple":
            create(client, res)
            create(client, res)
            r = client.delete(f"/{rtype}?{ident_query(ident)}")
            assert r.status_code in (200, 204), describe(r)
    elif feature == "conditionalRead":
        a = create(client, res)
        r = client.get(f"/{rtype}/{a['id']}")
        etag, lm = r.headers.get("etag"), r.headers.get("last-modified")
        if value in ("modified-since", "full-support"):
            assert lm, describe(r)
            r2 = client.get(f"/{rtype}/{a['id']}", headers={"If-Modified-Since": lm})
            assert r2.status_code == 304, describe(r2)
            old = email.utils.formatdate(time.time() - 86400 * 365, usegmt=True)
            fhir_json(client.get(f"/{rtype}/{a['id']}", headers={"If-Modified-Since": old}), 200)
        if value in ("not-match", "full-support"):
            assert etag, describe(r)
            r2 = client.get(f"/{rtype}/{a['id']}", headers={"If-None-Match": etag})
            assert r2.status_code == 304, describe(r2)
    elif feature == "updateCreate":
        rid = unique("uc")
        body = dict(res, id=rid)
        got = fhir_json(client.put(f"/{rtype}/{rid}", json=body, headers=h), 201, what="update-create")
        assert got["id"] == rid
    elif feature == "versioning":
        a = create(client, res)
        v = a["meta"]["versionId"]
        if value == "versioned-update":
            bad = client.put(f"/{rtype}/{a['id']}", json=with_ext(a, "x"), headers=dict(h, **{"If-Match": 'W/"999"'}))
            expect_outcome(bad, statuses=(409, 412))
            ok = client.put(f"/{rtype}/{a['id']}", json=with_ext(a, "y"), headers=dict(h, **{"If-Match": f'W/"{v}"'}))
            fhir_json(ok, 200)
        got = fhir_json(client.get(f"/{rtype}/{a['id']}/_history/{v}"), 200)
        assert got["meta"]["versionId"] == v
    elif feature == "readHistory":
        a = create(client, res)
        client.put(f"/{rtype}/{a['id']}", json=with_ext(a, "v2"), headers=h)
        got = fhir_json(client.get(f"/{rtype}/{a['id']}/_history/{a['meta']['versionId']}"), 200)
        assert "extension" not in got


@pytest.mark.parametrize("rtype", TRUTH_TYPES)
@pytest.mark.parametrize("param", ["_id", "identifier"])
def test_declared_search_param_works(client, capability, rtype, param):
    entry = resource_entry(capability, rtype)
    if entry is None:
        pytest.skip(f"{rtype} not listed")
    names = {p["name"] for p in entry.get("searchParam", [])}
    if param not in names:
        pytest.skip(f"{rtype} does not declare search parameter {param}")
    ident = new_ident()
    a = create(client, sample(rtype, ident))
    create(client, sample(rtype, new_ident()))  # a non-matching neighbour
    value = a["id"] if param == "_id" else f"{ident['system']}|{ident['value']}"
    b = fhir_json(client.get(f"/{rtype}", params={param: value}), 200, what=f"search-{rtype}-{param}")
    assert b["type"] == "searchset"
    assert [e["resource"]["id"] for e in b.get("entry", [])] == [a["id"]], b


@pytest.mark.parametrize("rtype", TRUTH_TYPES)
def test_declared_validate_operation_works(client, capability, rtype):
    entry = resource_entry(capability, rtype)
    if entry is None or "validate" not in {o["name"] for o in entry.get("operation", [])}:
        pytest.skip("$validate not declared")
    r = client.post(f"/{rtype}/$validate", json=sample(rtype, new_ident()), headers={"Content-Type": FHIR_JSON})
    oo = fhir_json(r, 200, what="validate-outcome")
    assert oo["resourceType"] == "OperationOutcome"
    assert not [i for i in oo.get("issue", []) if i["severity"] in ("error", "fatal")], oo


@pytest.mark.parametrize("interaction", ["transaction", "batch", "history-system"])
def test_declared_system_interaction_works(client, capability, interaction):
    codes = {i["code"] for i in rest(capability).get("interaction", [])}
    if interaction not in codes:
        pytest.skip(f"{interaction} not declared")
    if interaction == "history-system":
        b = fhir_json(client.get("/_history", params={"_count": "5"}), 200, what="system-history")
        assert b["type"] == "history"
        return
    ident = new_ident()
    bundle = {"resourceType": "Bundle", "type": interaction, "entry": [
        {"fullUrl": "urn:uuid:0b0c6f5e-3f1b-4a43-9d7e-2f5e0c1a9b11", "resource": sample("Patient", ident),
         "request": {"method": "POST", "url": "Patient"}}]}
    b = fhir_json(client.post("/", json=bundle, headers={"Content-Type": FHIR_JSON}), 200,
                  what=f"{interaction}-response")
    assert b["type"] == f"{interaction}-response"
    assert b["entry"][0]["response"]["status"].startswith("201"), b

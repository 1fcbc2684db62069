"""Read/write: create, read, vread, update, patch, delete (in the spirit of the
R4 TestScripts testscript-example-read, -update and -history)."""
from __future__ import annotations

import json
import re

import pytest

from fhirtest import (FHIR_JSON, FHIR_XML, JSON_PATCH, create, describe, expect_outcome, fhir_json,
                      fhir_xml, unique)

pytestmark = pytest.mark.area("read/write")

ETAG_RE = re.compile(r'^W/"([^"]+)"$')


def patient(**kw) -> dict:
    p = {"resourceType": "Patient", "identifier": [{"system": "urn:conformance:rw", "value": unique("rw")}],
         "name": [{"family": "Chalmers", "given": ["Peter", "James"]}], "gender": "male",
         "birthDate": "1974-12-25"}
    p.update(kw)
    return p


def strip(r):
    return {k: v for k, v in r.items() if k not in ("meta", "id")}


def etag_version(resp) -> str:
    et = resp.headers.get("etag", "")
    m = ETAG_RE.match(et)
    assert m, f"ETag must be a weak ETag W/\"<versionId>\": {et!r}"
    return m.group(1)


def test_create_returns_201_location_etag_and_resource(client):
    res = patient()
    r = client.post("/Patient", json=res, headers={"Content-Type": FHIR_JSON})
    body = fhir_json(r, 201, what="created-Patient")
    rid, vid = body["id"], body["meta"]["versionId"]
    assert body["meta"].get("lastUpdated"), body
    assert etag_version(r) == vid
    loc = r.headers.get("location", "")
    assert re.search(rf"/Patient/{re.escape(rid)}/_history/{re.escape(vid)}$", loc), f"Location {loc!r}"
    assert loc.startswith(("http://", "https://")), f"Location should be absolute: {loc!r}"
    assert r.headers.get("last-modified"), describe(r)
    assert strip(body) == strip(res)


def test_create_ignores_client_id(client):
    res = patient(id="client-chosen-id")
    body = create(client, res)
    # "the server SHALL ignore" the id of a create and assign its own
    assert body["id"] != "client-chosen-id", body


def test_read_returns_resource_with_etag_and_content_type(client):
    a = create(client, patient())
    r = client.get(f"/Patient/{a['id']}")
    got = fhir_json(r, 200, what="read-Patient")
    assert got == a, f"read differs from create answer:\n{a}\n{got}"
    assert etag_version(r) == a["meta"]["versionId"]
    assert r.headers.get("last-modified")


def test_read_json_with_format_parameter(client):
    a = create(client, patient())
    for fmt in ("json", "application/fhir+json", "application/json"):
        got = fhir_json(client.get(f"/Patient/{a['id']}", params={"_format": fmt}), 200)
        assert got["id"] == a["id"]


def test_read_xml(client):
    a = create(client, patient())
    for r in (client.get(f"/Patient/{a['id']}", params={"_format": "xml"}),
              client.get(f"/Patient/{a['id']}", headers={"Accept": FHIR_XML})):
        xml = fhir_xml(r, 200, what="read-Patient-xml")
        assert f'<id value="{a["id"]}"/>'.encode() in xml


def test_create_from_xml_reads_back_in_json(client):
    xml = ('<Patient xmlns="http://hl7.org/fhir"><identifier><system value="urn:conformance:rw"/>'
           f'<value value="{unique("x")}"/></identifier><active value="true"/>'
           '<name><family value="Xml"/><given value="Ann"/></name><gender value="female"/>'
           '<birthDate value="1980-02-29"/></Patient>')
    r = client.post("/Patient", content=xml, headers={"Content-Type": FHIR_XML})
    body = fhir_json(r, 201, what="created-from-xml")
    assert body["active"] is True and body["name"] == [{"family": "Xml", "given": ["Ann"]}]
    assert body["birthDate"] == "1980-02-29" and body["gender"] == "female"


def test_xml_narrative_whitespace_is_preserved(client):
    """Whitespace in XHTML text is content ("Peter James <b>Chalmers</b>" is not
    "Peter James<b>Chalmers</b>"); it must survive XML in and out."""
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Peter James <b>Chalmers</b> (Jim)</p></div>'
    xml = ('<Patient xmlns="http://hl7.org/fhir"><text><status value="generated"/>' + div +
           '</text><active value="true"/></Patient>')
    body = fhir_json(client.post("/Patient", content=xml, headers={"Content-Type": FHIR_XML}), 201)
    assert body["text"]["div"] == div, f"XML input changed the narrative: {body['text']['div']!r}"


def test_xml_output_preserves_narrative_whitespace(client):
    div = '<div xmlns="http://www.w3.org/1999/xhtml"><p>Peter James <b>Chalmers</b> (Jim)</p></div>'
    a = create(client, patient(text={"status": "generated", "div": div}))
    xml = fhir_xml(client.get(f"/Patient/{a['id']}", params={"_format": "xml"}), 200)
    assert b"Peter James <b>Chalmers</b> (Jim)" in xml, f"XML output changed the narrative:\n{xml.decode()[:800]}"


def test_update_increments_version(client):
    a = create(client, patient())
    upd = dict(a, active=True)
    r = client.put(f"/Patient/{a['id']}", json=upd, headers={"Content-Type": FHIR_JSON})
    b = fhir_json(r, 200, what="updated-Patient")
    assert b["id"] == a["id"] and b["active"] is True
    assert b["meta"]["versionId"] != a["meta"]["versionId"]
    assert etag_version(r) == b["meta"]["versionId"]
    assert b["meta"]["lastUpdated"] >= a["meta"]["lastUpdated"]
    got = fhir_json(client.get(f"/Patient/{a['id']}"), 200)
    assert got == b


def test_update_can_create_with_client_id(client):
    rid = unique("put")
    res = dict(patient(), id=rid)
    r = client.put(f"/Patient/{rid}", json=res, headers={"Content-Type": FHIR_JSON})
    b = fhir_json(r, 201, what="update-as-create")
    assert b["id"] == rid and strip(b) == strip(res)
    assert f"/Patient/{rid}/_history/" in r.headers.get("location", "")


def test_update_with_stale_if_match_is_rejected(client):
    a = create(client, patient())
    fhir_json(client.put(f"/Patient/{a['id']}", json=dict(a, active=True), headers={"Content-Type": FHIR_JSON}), 200)
    r = client.put(f"/Patient/{a['id']}", json=dict(a, active=False),
                   headers={"Content-Type": FHIR_JSON, "If-Match": f'W/"{a["meta"]["versionId"]}"'})
    expect_outcome(r, statuses=(409, 412))
    assert fhir_json(client.get(f"/Patient/{a['id']}"), 200)["active"] is True


def test_update_id_mismatch_is_rejected(client):
    a = create(client, patient())
    r = client.put(f"/Patient/{a['id']}", json=dict(a, id="someone-else"), headers={"Content-Type": FHIR_JSON})
    expect_outcome(r, statuses=(400,))


def test_update_without_id_in_body_is_rejected(client):
    a = create(client, patient())
    body = {k: v for k, v in a.items() if k != "id"}
    expect_outcome(client.put(f"/Patient/{a['id']}", json=body, headers={"Content-Type": FHIR_JSON}), statuses=(400,))


def test_update_resource_type_mismatch_is_rejected(client):
    a = create(client, patient())
    obs = {"resourceType": "Observation", "id": a["id"], "status": "final", "code": {"text": "x"}}
    expect_outcome(client.put(f"/Patient/{a['id']}", json=obs, headers={"Content-Type": FHIR_JSON}), statuses=(400,))


def test_patch_json_patch(client):
    a = create(client, patient())
    ops = [{"op": "replace", "path": "/gender", "value": "female"},
           {"op": "add", "path": "/name/0/given/-", "value": "Jim"},
           {"op": "remove", "path": "/birthDate"}]
    r = client.patch(f"/Patient/{a['id']}", content=json.dumps(ops), headers={"Content-Type": JSON_PATCH})
    b = fhir_json(r, 200, what="patched-Patient")
    assert b["gender"] == "female" and b["name"][0]["given"] == ["Peter", "James", "Jim"] and "birthDate" not in b
    assert b["meta"]["versionId"] != a["meta"]["versionId"]
    assert etag_version(r) == b["meta"]["versionId"]


def test_patch_failing_test_op_changes_nothing(client):
    a = create(client, patient())
    ops = [{"op": "test", "path": "/gender", "value": "female"}, {"op": "replace", "path": "/gender", "value": "other"}]
    r = client.patch(f"/Patient/{a['id']}", content=json.dumps(ops), headers={"Content-Type": JSON_PATCH})
    expect_outcome(r, statuses=(400, 409, 412, 422))
    assert fhir_json(client.get(f"/Patient/{a['id']}"), 200) == a


def test_patch_producing_invalid_resource_is_rejected(client):
    a = create(client, patient())
    ops = [{"op": "replace", "path": "/gender", "value": "bogus"}]
    r = client.patch(f"/Patient/{a['id']}", content=json.dumps(ops), headers={"Content-Type": JSON_PATCH})
    expect_outcome(r, statuses=(400, 422))
    assert fhir_json(client.get(f"/Patient/{a['id']}"), 200) == a


def test_patch_cannot_change_id(client):
    a = create(client, patient())
    ops = [{"op": "replace", "path": "/id", "value": unique("other")}]
    r = client.patch(f"/Patient/{a['id']}", content=json.dumps(ops), headers={"Content-Type": JSON_PATCH})
    expect_outcome(r, statuses=(400, 422))


def test_patch_with_stale_if_match_is_rejected(client):
    a = create(client, patient())
    fhir_json(client.put(f"/Patient/{a['id']}", json=dict(a, active=True), headers={"Content-Type": FHIR_JSON}), 200)
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    r = client.patch(f"/Patient/{a['id']}", content=json.dumps(ops),
                     headers={"Content-Type": JSON_PATCH, "If-Match": f'W/"{a["meta"]["versionId"]}"'})
    expect_outcome(r, statuses=(409, 412))


def test_patch_unknown_resource_is_404(client):
    ops = [{"op": "replace", "path": "/gender", "value": "female"}]
    r = client.patch(f"/Patient/{unique('nope')}", content=json.dumps(ops), headers={"Content-Type": JSON_PATCH})
    expect_outcome(r, statuses=(404,))


def test_read_unknown_is_404_with_outcome(client):
    expect_outcome(client.get(f"/Patient/{unique('nope')}"), statuses=(404,))


def test_read_unknown_type_is_4xx_with_outcome(client):
    expect_outcome(client.get("/NotAResourceType/1"), statuses=(400, 404))


def test_delete_then_read_is_410_and_vread_still_works(client):
    a = create(client, patient())
    r = client.delete(f"/Patient/{a['id']}")
    assert r.status_code in (200, 204), describe(r)
    if r.status_code == 200 and r.content:
        fhir_json(r, 200, what="delete-answer")
    expect_outcome(client.get(f"/Patient/{a['id']}"), statuses=(410,))
    old = fhir_json(client.get(f"/Patient/{a['id']}/_history/{a['meta']['versionId']}"), 200, what="vread-deleted")
    assert old == a


def test_delete_unknown_is_ok_or_404(client):
    r = client.delete(f"/Patient/{unique('nope')}")
    if r.status_code == 404:
        expect_outcome(r, statuses=(404,))
    else:
        assert r.status_code in (200, 204), describe(r)


def test_delete_twice_is_idempotent(client):
    a = create(client, patient())
    assert client.delete(f"/Patient/{a['id']}").status_code in (200, 204)
    r = client.delete(f"/Patient/{a['id']}")
    assert r.status_code in (200, 204, 404, 410), describe(r)
    if r.status_code >= 400:
        expect_outcome(r)


def test_recreate_after_delete_with_put(client):
    a = create(client, patient())
    assert client.delete(f"/Patient/{a['id']}").status_code in (200, 204)
    r = client.put(f"/Patient/{a['id']}", json=dict(a, active=True), headers={"Content-Type": FHIR_JSON})
    b = fhir_json(r, 200, 201, what="recreated")
    assert b["active"] is True and b["id"] == a["id"]
    assert int(b["meta"]["versionId"]) > int(a["meta"]["versionId"]) if b["meta"]["versionId"].isdigit() else True
    fhir_json(client.get(f"/Patient/{a['id']}"), 200)


def test_vread_each_version(client):
    a = create(client, patient())
    versions = [a]
    for i in range(3):
        cur = versions[-1]
        versions.append(fhir_json(client.put(f"/Patient/{a['id']}", json=dict(cur, birthDate=f"197{i}-01-01"),
                                             headers={"Content-Type": FHIR_JSON}), 200))
    for v in versions:
        r = client.get(f"/Patient/{a['id']}/_history/{v['meta']['versionId']}")
        got = fhir_json(r, 200, what="vread")
        assert got == v
        assert etag_version(r) == v["meta"]["versionId"]


def test_vread_unknown_version_is_404(client):
    a = create(client, patient())
    expect_outcome(client.get(f"/Patient/{a['id']}/_history/987654"), statuses=(404,))


def test_decimal_precision_is_preserved(client):
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "precision"},
           "valueQuantity": {"value": 1.50, "unit": "mg"}}
    raw = json.dumps(obs).replace('"value": 1.5', '"value": 1.50')
    r = client.post("/Observation", content=raw, headers={"Content-Type": FHIR_JSON})
    fhir_json(r, 201, what="decimal")
    assert b'1.50' in r.content, f"decimal 1.50 lost its precision: {r.text}"
    got = client.get(f"/Observation/{r.json()['id']}")
    assert b'1.50' in got.content, f"decimal 1.50 lost its precision on read: {got.text}"


def test_unicode_round_trip(client):
    res = patient(name=[{"family": "Ωμέγα 张无忌 🩺", "given": ["Zoë"]}])
    a = create(client, res)
    got = fhir_json(client.get(f"/Patient/{a['id']}"), 200)
    assert got["name"] == res["name"]


def test_primitive_extensions_round_trip(client):
    res = patient(birthDate="1970-03-30", _birthDate={"extension": [
        {"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1970-03-30T14:35:45-05:00"}]})
    a = create(client, res)
    got = fhir_json(client.get(f"/Patient/{a['id']}"), 200)
    assert got.get("_birthDate") == res["_birthDate"], got


def test_contained_resources_round_trip(client):
    res = {"resourceType": "Observation", "status": "final", "code": {"text": "contained"},
           "contained": [{"resourceType": "Patient", "id": "p1", "name": [{"family": "Inner"}]}],
           "subject": {"reference": "#p1"}}
    a = create(client, res)
    got = fhir_json(client.get(f"/Observation/{a['id']}"), 200)
    assert strip(got) == res

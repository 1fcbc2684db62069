"""Search: searchset Bundles for the declared parameters (_id, identifier),
token forms, paging and the GET/POST equivalence of R4."""
from __future__ import annotations

import urllib.parse

import pytest

from fhirtest import FHIR_JSON, create, expect_outcome, fhir_json, fhir_xml, unique

pytestmark = pytest.mark.area("search")

SYS = "urn:conformance:search"


@pytest.fixture(scope="module")
def data(client):
    """Five Observations with identifiers in two systems, one without system."""
    tag = unique("s")
    made = []
    for k in range(5):
        ids = [{"system": SYS, "value": f"{tag}-{k}"}]
        if k == 0:
            ids.append({"system": SYS + ":other", "value": f"{tag}-0"})
        if k == 1:
            ids = [{"value": f"{tag}-nosys"}]
        made.append(create(client, {"resourceType": "Observation", "identifier": ids, "status": "final",
                                    "code": {"text": tag}}))
    return {"tag": tag, "obs": made}


def ids_of(bundle) -> list[str]:
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") != "outcome")


def search(client, rtype, params, what="searchset"):
    b = fhir_json(client.get(f"/{rtype}", params=params), 200, what=what)
    assert b["resourceType"] == "Bundle" and b["type"] == "searchset", b.get("type")
    for e in b.get("entry", []):
        assert e.get("fullUrl") and e.get("resource"), e
        assert e["fullUrl"].endswith(f"/{e['resource']['resourceType']}/{e['resource']['id']}"), e["fullUrl"]
        assert e.get("search", {}).get("mode") in ("match", "include", "outcome"), e
    return b


def test_search_by_id(client, data):
    a = data["obs"][2]
    b = search(client, "Observation", {"_id": a["id"]})
    assert ids_of(b) == [a["id"]]
    assert b.get("total", 1) == 1
    assert b["entry"][0]["resource"] == a


def test_search_by_id_list_is_or(client, data):
    a, c = data["obs"][2], data["obs"][3]
    b = search(client, "Observation", {"_id": f"{a['id']},{c['id']}"})
    assert ids_of(b) == sorted([a["id"], c["id"]])


def test_search_by_unknown_id_is_empty(client):
    b = search(client, "Observation", {"_id": unique("none")})
    assert ids_of(b) == [] and b.get("total", 0) == 0


def test_identifier_system_and_value(client, data):
    b = search(client, "Observation", {"identifier": f"{SYS}|{data['tag']}-3"})
    assert ids_of(b) == [data["obs"][3]["id"]]


def test_identifier_value_only_matches_any_system(client, data):
    b = search(client, "Observation", {"identifier": f"{data['tag']}-0"})
    assert ids_of(b) == [data["obs"][0]["id"]]
    b = search(client, "Observation", {"identifier": f"{data['tag']}-nosys"})
    assert ids_of(b) == [data["obs"][1]["id"]]


def test_identifier_empty_system_matches_only_without_system(client, data):
    b = search(client, "Observation", {"identifier": f"|{data['tag']}-nosys"})
    assert ids_of(b) == [data["obs"][1]["id"]]
    b = search(client, "Observation", {"identifier": f"|{data['tag']}-3"})
    assert ids_of(b) == []


def test_identifier_system_only_matches_any_value(client, data):
    """token search `[system]|` matches every identifier in that system."""
    b = search(client, "Observation", {"identifier": f"{SYS}:other|"})
    assert data["obs"][0]["id"] in ids_of(b), f"{SYS}:other| should match {data['obs'][0]['id']}: {ids_of(b)}"


def test_identifier_list_is_or(client, data):
    b = search(client, "Observation", {"identifier": f"{SYS}|{data['tag']}-2,{SYS}|{data['tag']}-4"})
    assert ids_of(b) == sorted([data["obs"][2]["id"], data["obs"][4]["id"]])


def test_two_parameters_are_and(client, data):
    a = data["obs"][3]
    b = search(client, "Observation", {"_id": a["id"], "identifier": f"{SYS}|{data['tag']}-3"})
    assert ids_of(b) == [a["id"]]
    b = search(client, "Observation", {"_id": a["id"], "identifier": f"{SYS}|{data['tag']}-2"})
    assert ids_of(b) == []


def test_search_excludes_deleted(client):
    i = {"system": SYS, "value": unique("del")}
    a = create(client, {"resourceType": "Patient", "identifier": [i]})
    assert client.delete(f"/Patient/{a['id']}").status_code in (200, 204)
    assert ids_of(search(client, "Patient", {"identifier": f"{SYS}|{i['value']}"})) == []
    assert ids_of(search(client, "Patient", {"_id": a["id"]})) == []


def test_search_sees_updates(client):
    i = {"system": SYS, "value": unique("up")}
    j = {"system": SYS, "value": unique("up2")}
    a = create(client, {"resourceType": "Patient", "identifier": [i]})
    fhir_json(client.put(f"/Patient/{a['id']}", json=dict(a, identifier=[j]), headers={"Content-Type": FHIR_JSON}), 200)
    assert ids_of(search(client, "Patient", {"identifier": f"{SYS}|{i['value']}"})) == []
    assert ids_of(search(client, "Patient", {"identifier": f"{SYS}|{j['value']}"})) == [a["id"]]


def test_paging_with_count(client, data):
    seen = []
    url = "/Observation"
    params = {"identifier": ",".join(f"{SYS}|{data['tag']}-{k}" for k in (0, 2, 3, 4)), "_count": "1"}
    pages = 0
    for _ in range(20):
        b = fhir_json(client.get(url, params=params), 200, what="searchset-page")
        params = None
        pages += 1
        assert len(b.get("entry", [])) <= 1
        seen += ids_of(b)
        nxt = [l["url"] for l in b.get("link", []) if l["relation"] == "next"]
        if not nxt:
            break
        url = nxt[0]
    assert pages >= 4, pages
    assert sorted(seen) == sorted(data["obs"][k]["id"] for k in (0, 2, 3, 4)), seen


def test_count_zero_returns_no_entries(client, data):
    b = search(client, "Observation", {"identifier": f"{SYS}|{data['tag']}-3", "_count": "0"})
    assert not b.get("entry")


def test_self_link(client, data):
    b = search(client, "Observation", {"_id": data["obs"][0]["id"]})
    selfs = [l["url"] for l in b.get("link", []) if l["relation"] == "self"]
    assert len(selfs) == 1 and urllib.parse.urlsplit(selfs[0]).scheme in ("http", "https"), b.get("link")
    assert data["obs"][0]["id"] in urllib.parse.unquote(selfs[0])


def test_search_via_post(client, data):
    """R4 http.html#search: servers supporting search SHALL support both GET and POST."""
    a = data["obs"][4]
    r = client.post("/Observation/_search", content=urllib.parse.urlencode({"_id": a["id"]}),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    b = fhir_json(r, 200, what="search-post")
    assert b["type"] == "searchset" and ids_of(b) == [a["id"]]


def test_search_in_xml(client, data):
    xml = fhir_xml(client.get("/Observation", params={"_id": data["obs"][0]["id"], "_format": "xml"}), 200,
                   what="searchset-xml")
    assert b'<type value="searchset"/>' in xml


def test_unknown_parameter_is_rejected_or_ignored(client, data):
    r = client.get("/Observation", params={"_id": data["obs"][0]["id"], "no-such-param": "x"})
    if r.status_code == 200:
        b = fhir_json(r, 200)
        selfs = [l["url"] for l in b.get("link", []) if l["relation"] == "self"]
        assert not any("no-such-param" in s for s in selfs), "an ignored parameter must not be in the self link"
    else:
        expect_outcome(r, statuses=(400,))


@pytest.mark.parametrize("count", ["-1", "abc", "1e3"])
def test_bad_count_is_400(client, count):
    expect_outcome(client.get("/Patient", params={"_count": count}), statuses=(400,))


def test_search_unknown_type_is_4xx(client):
    expect_outcome(client.get("/NotAType", params={"_id": "x"}), statuses=(400, 404))

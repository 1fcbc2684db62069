"""Transactions and batches (in the style of the Crucible transaction tests)."""
from __future__ import annotations

import uuid

import pytest

from fhirtest import FHIR_JSON, FHIR_XML, create, expect_outcome, fhir_json, fhir_xml, unique

pytestmark = pytest.mark.area("transactions")


def urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def ident(prefix="tx") -> dict:
    return {"system": "urn:conformance:tx", "value": unique(prefix)}


def q(i: dict) -> str:
    return f"identifier={i['system']}|{i['value']}"


def post_bundle(client, bundle, what):
    return client.post("/", json=bundle, headers={"Content-Type": FHIR_JSON})


def search_ids(client, rtype, i) -> list[str]:
    b = fhir_json(client.get(f"/{rtype}", params={"identifier": f"{i['system']}|{i['value']}"}), 200)
    return [e["resource"]["id"] for e in b.get("entry", [])]


def ref_id(ref: str, rtype: str) -> str:
    assert ref.startswith(f"{rtype}/") or f"/{rtype}/" in ref, ref
    return ref.split(f"{rtype}/", 1)[1].split("/")[0]


def test_transaction_rewrites_urn_uuid_references(client):
    p_urn, o_urn, e_urn = urn(), urn(), urn()
    pi, oi = ident("p"), ident("o")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": o_urn, "resource": {
            "resourceType": "Observation", "identifier": [oi], "status": "final", "code": {"text": "tx"},
            "subject": {"reference": p_urn}, "encounter": {"reference": e_urn},
            "extension": [{"url": "http://example.org/fhir/StructureDefinition/conformance",
                           "valueReference": {"reference": p_urn}}]},
         "request": {"method": "POST", "url": "Observation"}},
        {"fullUrl": p_urn, "resource": {"resourceType": "Patient", "identifier": [pi]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": e_urn, "resource": {"resourceType": "Encounter", "status": "finished", "subject": {"reference": p_urn},
                                        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                                  "code": "AMB"}},
         "request": {"method": "POST", "url": "Encounter"}},
    ]}
    r = post_bundle(client, bundle, "tx")
    b = fhir_json(r, 200, what="transaction-response")
    assert b["type"] == "transaction-response"
    assert len(b["entry"]) == 3
    for e in b["entry"]:
        assert e["response"]["status"].startswith("201"), e
        assert e["response"].get("location"), e
    obs_id = ref_id(b["entry"][0]["response"]["location"], "Observation")
    pat_id = ref_id(b["entry"][1]["response"]["location"], "Patient")
    enc_id = ref_id(b["entry"][2]["response"]["location"], "Encounter")
    obs = fhir_json(client.get(f"/Observation/{obs_id}"), 200, what="tx-observation")
    assert obs["subject"]["reference"] == f"Patient/{pat_id}", obs["subject"]
    assert obs["encounter"]["reference"] == f"Encounter/{enc_id}", obs["encounter"]
    assert obs["extension"][0]["valueReference"]["reference"] == f"Patient/{pat_id}"
    enc = fhir_json(client.get(f"/Encounter/{enc_id}"), 200)
    assert enc["subject"]["reference"] == f"Patient/{pat_id}"
    assert "urn:uuid" not in str(obs) + str(enc)
    assert search_ids(client, "Patient", pi) == [pat_id]


def test_transaction_put_entry_may_reference_post_entry(client):
    """A PUT entry may refer to a POST entry by urn:uuid."""
    p_urn = urn()
    rid = unique("txput")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": p_urn, "resource": {"resourceType": "Patient", "identifier": [ident()]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {"resourceType": "Observation", "id": rid, "status": "final", "code": {"text": "put"},
                      "subject": {"reference": p_urn}},
         "request": {"method": "PUT", "url": f"Observation/{rid}"}},
    ]}
    b = fhir_json(post_bundle(client, bundle, "tx"), 200, what="transaction-response")
    pat_id = ref_id(b["entry"][0]["response"]["location"], "Patient")
    assert b["entry"][1]["response"]["status"].startswith("201"), b["entry"][1]
    obs = fhir_json(client.get(f"/Observation/{rid}"), 200)
    assert obs["subject"]["reference"] == f"Patient/{pat_id}"


def conditional_tx(i: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn(), "resource": {"resourceType": "Patient", "identifier": [i], "name": [{"family": "Cond"}]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": q(i)}}]}


def test_conditional_create_in_transaction_creates_once(client):
    i = ident("cc")
    first = fhir_json(post_bundle(client, conditional_tx(i), "tx"), 200, what="transaction-response")
    assert first["entry"][0]["response"]["status"].startswith("201"), first
    second = fhir_json(post_bundle(client, conditional_tx(i), "tx"), 200, what="transaction-response")
    assert second["entry"][0]["response"]["status"].startswith("200"), second
    ids = search_ids(client, "Patient", i)
    assert len(ids) == 1, ids
    loc1, loc2 = first["entry"][0]["response"]["location"], second["entry"][0]["response"]["location"]
    assert ref_id(loc1, "Patient") == ref_id(loc2, "Patient") == ids[0]


def test_conditional_create_reference_resolves_to_existing(client):
    """When ifNoneExist matches, references to the entry's fullUrl point at the existing resource."""
    i = ident("ccref")
    existing = create(client, {"resourceType": "Patient", "identifier": [i]})
    p_urn = urn()
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": p_urn, "resource": {"resourceType": "Patient", "identifier": [i]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": q(i)}},
        {"fullUrl": urn(), "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "r"},
                                        "subject": {"reference": p_urn}},
         "request": {"method": "POST", "url": "Observation"}}]}
    b = fhir_json(post_bundle(client, bundle, "tx"), 200, what="transaction-response")
    obs_id = ref_id(b["entry"][1]["response"]["location"], "Observation")
    obs = fhir_json(client.get(f"/Observation/{obs_id}"), 200)
    assert obs["subject"]["reference"] == f"Patient/{existing['id']}"


def test_conditional_create_matching_several_fails_412(client):
    i = ident("multi")
    create(client, {"resourceType": "Patient", "identifier": [i]})
    create(client, {"resourceType": "Patient", "identifier": [i]})
    r = client.post("/Patient", json={"resourceType": "Patient", "identifier": [i]},
                    headers={"Content-Type": FHIR_JSON, "If-None-Exist": q(i)})
    expect_outcome(r, statuses=(412,))
    assert len(search_ids(client, "Patient", i)) == 2


def test_conditional_create_matching_several_fails_whole_transaction(client):
    i = ident("multitx")
    create(client, {"resourceType": "Patient", "identifier": [i]})
    create(client, {"resourceType": "Patient", "identifier": [i]})
    other = ident("bystander")
    bundle = conditional_tx(i)
    bundle["entry"].insert(0, {"fullUrl": urn(), "resource": {"resourceType": "Patient", "identifier": [other]},
                               "request": {"method": "POST", "url": "Patient"}})
    expect_outcome(post_bundle(client, bundle, "tx"), statuses=(412,))
    assert search_ids(client, "Patient", other) == [], "a failed transaction must not commit any entry"
    assert len(search_ids(client, "Patient", i)) == 2


def test_transaction_is_atomic_on_invalid_entry(client):
    good = ident("good")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn(), "resource": {"resourceType": "Patient", "identifier": [good]},
         "request": {"method": "POST", "url": "Patient"}},
        {"fullUrl": urn(), "resource": {"resourceType": "Patient", "gender": "not-a-gender"},
         "request": {"method": "POST", "url": "Patient"}}]}
    oo = expect_outcome(post_bundle(client, bundle, "tx"), statuses=(400, 422))
    assert search_ids(client, "Patient", good) == []
    assert any("entry[1]" in x for i in oo["issue"] for x in i.get("expression", [])), oo


def test_transaction_is_atomic_on_failing_read(client):
    good = ident("good2")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn(), "resource": {"resourceType": "Patient", "identifier": [good]},
         "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient/{unique('nope')}"}}]}
    expect_outcome(post_bundle(client, bundle, "tx"))  # any 4xx: the failing entry's error
    assert search_ids(client, "Patient", good) == []


def test_transaction_mixed_methods(client):
    keep = create(client, {"resourceType": "Patient", "identifier": [ident("keep")]})
    gone = create(client, {"resourceType": "Patient", "identifier": [ident("gone")]})
    new_i = ident("new")
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn(), "resource": {"resourceType": "Patient", "identifier": [new_i]},
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": dict(keep, active=True), "request": {"method": "PUT", "url": f"Patient/{keep['id']}"}},
        {"request": {"method": "DELETE", "url": f"Patient/{gone['id']}"}},
        {"request": {"method": "GET", "url": f"Patient/{keep['id']}"}},
    ]}
    b = fhir_json(post_bundle(client, bundle, "tx"), 200, what="transaction-response")
    st = [e["response"]["status"].split()[0] for e in b["entry"]]
    assert st[0] == "201" and st[1] == "200" and st[2] in ("200", "204") and st[3] == "200", st
    assert fhir_json(client.get(f"/Patient/{keep['id']}"), 200)["active"] is True
    expect_outcome(client.get(f"/Patient/{gone['id']}"), statuses=(410,))
    assert len(search_ids(client, "Patient", new_i)) == 1
    # the GET entry returns the resource (R4: GETs are processed after the writes)
    assert b["entry"][3].get("resource", {}).get("id") == keep["id"], b["entry"][3]


def test_transaction_with_same_resource_twice_fails(client):
    """R4 http.html#trules: if resource identities overlap the transaction SHALL fail."""
    a = create(client, {"resourceType": "Patient", "identifier": [ident("dup")]})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": dict(a, active=True), "request": {"method": "PUT", "url": f"Patient/{a['id']}"}},
        {"resource": dict(a, active=False), "request": {"method": "PUT", "url": f"Patient/{a['id']}"}}]}
    expect_outcome(post_bundle(client, bundle, "tx"), statuses=(400, 409, 422))
    assert fhir_json(client.get(f"/Patient/{a['id']}"), 200) == a


def test_batch_with_mixed_success(client):
    existing = create(client, {"resourceType": "Patient", "identifier": [ident("b")]})
    new_i = ident("bnew")
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [new_i]}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient/{unique('missing')}"}},
        {"resource": {"resourceType": "Patient", "gender": "bogus"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": f"Patient/{existing['id']}"}},
        {"resource": dict(existing, active=True), "request": {"method": "PUT", "url": f"Patient/{existing['id']}"}},
    ]}
    b = fhir_json(post_bundle(client, bundle, "batch"), 200, what="batch-response")
    assert b["type"] == "batch-response"
    assert len(b["entry"]) == 5
    st = [e["response"]["status"].split()[0] for e in b["entry"]]
    assert st[0] == "201", st
    assert st[1] == "404", st
    assert st[2] in ("400", "422"), st
    assert st[3] == "200", st
    assert st[4] == "200", st
    for k in (1, 2):
        oo = b["entry"][k]["response"].get("outcome")
        assert oo and oo["resourceType"] == "OperationOutcome", b["entry"][k]
    assert len(search_ids(client, "Patient", new_i)) == 1, "the good entries of a batch must commit"
    assert fhir_json(client.get(f"/Patient/{existing['id']}"), 200)["active"] is True
    # a GET entry answers with the resource read
    assert b["entry"][3].get("resource", {}).get("id") == existing["id"], b["entry"][3]


def test_batch_search_entry(client):
    i = ident("bs")
    a = create(client, {"resourceType": "Patient", "identifier": [i]})
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": f"Patient?{q(i)}"}}]}
    b = fhir_json(post_bundle(client, bundle, "batch"), 200, what="batch-response")
    e = b["entry"][0]
    assert e["response"]["status"].startswith("200"), e
    assert e["resource"]["resourceType"] == "Bundle" and e["resource"]["type"] == "searchset", e
    assert [x["resource"]["id"] for x in e["resource"].get("entry", [])] == [a["id"]]


def test_batch_conditional_create_matching_several_fails_entry_only(client):
    i = ident("bm")
    create(client, {"resourceType": "Patient", "identifier": [i]})
    create(client, {"resourceType": "Patient", "identifier": [i]})
    other = ident("bok")
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [
        {"resource": {"resourceType": "Patient", "identifier": [i]},
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": q(i)}},
        {"resource": {"resourceType": "Patient", "identifier": [other]}, "request": {"method": "POST", "url": "Patient"}}]}
    b = fhir_json(post_bundle(client, bundle, "batch"), 200, what="batch-response")
    assert b["entry"][0]["response"]["status"].startswith("412"), b["entry"][0]
    assert b["entry"][1]["response"]["status"].startswith("201"), b["entry"][1]


def test_transaction_response_in_xml(client):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn(), "resource": {"resourceType": "Patient", "identifier": [ident("xml")]},
         "request": {"method": "POST", "url": "Patient"}}]}
    r = client.post("/", json=bundle, headers={"Content-Type": FHIR_JSON, "Accept": FHIR_XML})
    xml = fhir_xml(r, 200, what="transaction-response-xml")
    assert b'<type value="transaction-response"/>' in xml


def test_transaction_posted_as_xml(client):
    i = ident("xmlin")
    xml = ('<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/><entry>'
           f'<fullUrl value="{urn()}"/><resource><Patient><identifier><system value="{i["system"]}"/>'
           f'<value value="{i["value"]}"/></identifier></Patient></resource>'
           '<request><method value="POST"/><url value="Patient"/></request></entry></Bundle>')
    b = fhir_json(client.post("/", content=xml, headers={"Content-Type": FHIR_XML}), 200, what="transaction-response")
    assert b["entry"][0]["response"]["status"].startswith("201")
    assert len(search_ids(client, "Patient", i)) == 1


@pytest.mark.parametrize("btype", ["collection", "document", "searchset", "history", "message"])
def test_non_transaction_bundle_posted_to_base_is_rejected(client, btype):
    bundle = {"resourceType": "Bundle", "type": btype, "entry": []}
    expect_outcome(post_bundle(client, bundle, "bad"), statuses=(400, 405, 422))


def test_non_bundle_posted_to_base_is_rejected(client):
    expect_outcome(client.post("/", json={"resourceType": "Patient"}, headers={"Content-Type": FHIR_JSON}),
                   statuses=(400, 405, 422))


def test_transaction_entry_without_request_is_rejected(client):
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn(), "resource": {"resourceType": "Patient"}}]}
    expect_outcome(post_bundle(client, bundle, "bad"), statuses=(400, 422))


def test_empty_transaction(client):
    b = fhir_json(post_bundle(client, {"resourceType": "Bundle", "type": "transaction"}, "tx"), 200,
                  what="transaction-response")
    assert b["type"] == "transaction-response" and not b.get("entry")

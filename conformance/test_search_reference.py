"""Search: reference parameters (id, Type/id, absolute URL, :Type, :identifier), chains,
reverse chains (_has), system search with _type, compartment search and
Patient/[id]/$everything (R4 search.html#reference, #chaining, #has, #compartments,
http.html#search, patient-operation-everything.html)."""
from __future__ import annotations

import time

import pytest

from fhirtest import expect_outcome
from searchkit import LOINC, Tag, absolute, assert_exact, cc, ref, search

pytestmark = pytest.mark.area("search")


@pytest.fixture(scope="module")
def refs(client):
    t = Tag(client, "ref")
    ident_sys = f"urn:conformance:ref:{t.code}"
    p1 = t.make({"resourceType": "Patient", "identifier": [{"system": ident_sys, "value": "p1"}],
                 "birthDate": "1970-01-01", "name": [{"family": "Chainer"}]}, "P1")
    p2 = t.make({"resourceType": "Patient", "identifier": [{"system": ident_sys, "value": "p2"}],
                 "birthDate": "1980-06-01", "name": [{"family": "Other"}]}, "P2")
    p3 = t.make({"resourceType": "Patient", "name": [{"family": "Absolute"}]}, "P3")
    grp = t.make({"resourceType": "Group", "type": "person", "actual": True}, "G")
    org = t.make({"resourceType": "Organization", "name": "Ref Org"}, "ORG")
    enc1 = t.make({"resourceType": "Encounter", "status": "finished",
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                   "subject": ref(p1), "serviceProvider": ref(org)}, "E1")

    def obs(key, code, subject, **kw):
        return t.make(dict({"resourceType": "Observation", "status": "final", "code": cc(LOINC, code),
                            "subject": subject}, **kw), key)

    o = {
        "o1": obs("o1", "4548-4", ref(p1), encounter=ref(enc1), effectiveDateTime="2024-06-01",
                  valueQuantity={"value": 7.1, "system": "http://unitsofmeasure.org", "code": "%", "unit": "%"}),
        "o2": obs("o2", "2345-7", ref(p2)),
        "og": obs("og", "718-7", ref(grp)),
        "ologic": obs("ologic", "718-7", {"identifier": {"system": ident_sys, "value": "p1"}, "display": "logical"}),
        "oabs": obs("oabs", "718-7", {"reference": absolute(p3)}),
    }
    md1 = t.make({"resourceType": "MedicationDispense", "status": "completed",
                  "medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "860975"),
                  "subject": ref(p1)}, "MD1")
    cond1 = t.make({"resourceType": "Condition", "subject": ref(p1), "code": cc("http://snomed.info/sct", "44054006")},
                   "C1")
    cond2 = t.make({"resourceType": "Condition", "subject": ref(p2), "code": cc("http://snomed.info/sct", "44054006")},
                   "C2")
    return {"t": t, "p1": p1, "p2": p2, "p3": p3, "grp": grp, "org": org, "enc1": enc1, "o": o, "md1": md1,
            "cond1": cond1, "cond2": cond2, "ident_sys": ident_sys}


def oids(refs, *names):
    return [refs["o"][n]["id"] for n in names]


@pytest.mark.parametrize("form", ["id", "Type/id", "absolute"])
def test_patient_reference_forms(client, refs, form):
    """patient=x, patient=Patient/x and patient=[base]/Patient/x are the same search."""
    t, p1 = refs["t"], refs["p1"]
    value = {"id": p1["id"], "Type/id": f"Patient/{p1['id']}", "absolute": absolute(p1)}[form]
    assert_exact(search(client, "Observation", [("_tag", t.token), ("patient", value)]), t, oids(refs, "o1"))
    assert_exact(search(client, "Observation", [("_tag", t.token), ("subject", value)]), t, oids(refs, "o1"))


@pytest.mark.parametrize("form", ["id", "Type/id", "absolute"])
def test_stored_absolute_reference_to_own_base(client, refs, form):
    """A reference stored as an absolute URL on this server's base ([base]/Patient/x)
    refers to the same resource as Patient/x (R4 references.html: absolute URLs on the
    server's own base are local references), so every search form finds it."""
    t, p3 = refs["t"], refs["p3"]
    value = {"id": p3["id"], "Type/id": f"Patient/{p3['id']}", "absolute": absolute(p3)}[form]
    assert_exact(search(client, "Observation", [("_tag", t.token), ("patient", value)]), t, oids(refs, "oabs"))


def test_subject_type_modifier(client, refs):
    t = refs["t"]
    assert_exact(search(client, "Observation", [("_tag", t.token), ("subject:Patient", refs["p1"]["id"])]), t,
                 oids(refs, "o1"))
    assert_exact(search(client, "Observation", [("_tag", t.token), ("subject:Group", refs["grp"]["id"])]), t,
                 oids(refs, "og"))
    assert_exact(search(client, "Observation", [("_tag", t.token), ("subject:Group", refs["p1"]["id"])]), t, [])
    assert_exact(search(client, "Observation", [("_tag", t.token), ("subject", f"Group/{refs['grp']['id']}")]), t,
                 oids(refs, "og"))
    # patient has targets Patient|Group in R4, but Observation.patient is subject.where(resolve() is Patient)
    assert_exact(search(client, "Observation", [("_tag", t.token), ("patient", f"Group/{refs['grp']['id']}")]), t, [])


def test_reference_or_list(client, refs):
    t = refs["t"]
    v = f"Patient/{refs['p2']['id']},Group/{refs['grp']['id']}"
    assert_exact(search(client, "Observation", [("_tag", t.token), ("subject", v)]), t, oids(refs, "o2", "og"))


def test_reference_identifier_modifier(client, refs):
    """:identifier matches Reference.identifier (a logical reference), not the target's identifier."""
    t = refs["t"]
    assert_exact(search(client, "Observation", [("_tag", t.token), ("subject:identifier", f"{refs['ident_sys']}|p1")]),
                 t, oids(refs, "ologic"))
    assert_exact(search(client, "Observation", [("_tag", t.token), ("subject:identifier", f"{refs['ident_sys']}|p2")]),
                 t, [])


def test_reference_missing(client, refs):
    t = refs["t"]
    assert_exact(search(client, "Observation", [("_tag", t.token), ("encounter:missing", "false")]), t, oids(refs, "o1"))
    assert_exact(search(client, "Observation", [("_tag", t.token), ("encounter:missing", "true")]), t,
                 oids(refs, "o2", "og", "ologic", "oabs"))


@pytest.mark.parametrize("param,value,expected", [
    ("subject:Patient.identifier", "{sys}|p1", ["o1"]),
    ("patient.identifier", "{sys}|p2", ["o2"]),
    ("patient.birthdate", "1970-01-01", ["o1"]),
    ("patient.birthdate", "lt1975", ["o1"]),
    ("patient.birthdate", "ge1975", ["o2"]),
    ("subject:Patient.name", "chainer", ["o1"]),
    ("encounter.service-provider", "{org}", ["o1"]),
    ("encounter.service-provider.name", "ref org", ["o1"]),
])
def test_chained_search(client, refs, param, value, expected):
    """R4 search.html#chaining."""
    t = refs["t"]
    value = value.format(sys=refs["ident_sys"], org=f"Organization/{refs['org']['id']}")
    assert_exact(search(client, "Observation", [("_tag", t.token), (param, value)]), t, oids(refs, *expected))


def test_reverse_chain_has(client, refs):
    """R4 search.html#has: Patient?_has:Observation:patient:code=..."""
    t = refs["t"]
    res = search(client, "Patient", [("_tag", t.token), ("_has:Observation:patient:code", f"{LOINC}|4548-4")])
    assert_exact(res, t, [refs["p1"]["id"]])
    res = search(client, "Patient", [("_tag", t.token), ("_has:Observation:patient:code", f"{LOINC}|2345-7")])
    assert_exact(res, t, [refs["p2"]["id"]])
    res = search(client, "Patient", [("_tag", t.token), ("_has:Condition:subject:code", "44054006")])
    assert_exact(res, t, [refs["p1"]["id"], refs["p2"]["id"]])
    res = search(client, "Patient", [("_tag", t.token), ("_has:MedicationDispense:patient:status", "completed")])
    assert_exact(res, t, [refs["p1"]["id"]])


def test_system_search_with_type(client, refs):
    """GET [base]?_type=A,B with common parameters; without _type, all types."""
    t = refs["t"]
    res = search(client, "/", [("_type", "Patient,Group"), ("_tag", t.token)])
    assert sorted(res.refs) == sorted([f"Patient/{refs[k]['id']}" for k in ("p1", "p2", "p3")]
                                      + [f"Group/{refs['grp']['id']}"]), res.refs
    res = search(client, "/", [("_type", "Observation"), ("_tag", t.token)])
    assert sorted(res.ids) == sorted(m["id"] for m in refs["o"].values()), res.url
    res = search(client, "/", [("_tag", t.token), ("_count", "100")])
    every = [refs[k] for k in ("p1", "p2", "p3", "grp", "org", "enc1", "md1", "cond1", "cond2")] + list(refs["o"].values())
    assert sorted(res.refs) == sorted(f"{r['resourceType']}/{r['id']}" for r in every), res.url
    assert res.total in (None, len(every)), res.total


def test_compartment_search(client, refs):
    """GET [base]/Patient/[id]/Observation: only that patient's compartment."""
    t, p1 = refs["t"], refs["p1"]
    res = search(client, f"/Patient/{p1['id']}/Observation", [("_tag", t.token)])
    assert_exact(res, t, oids(refs, "o1"))
    res = search(client, f"/Patient/{p1['id']}/Observation", [("_tag", t.token), ("code", f"{LOINC}|4548-4")])
    assert_exact(res, t, oids(refs, "o1"))
    res = search(client, f"/Patient/{p1['id']}/Condition", [("_tag", t.token)])
    assert_exact(res, t, [refs["cond1"]["id"]])
    res = search(client, f"/Patient/{refs['p2']['id']}/MedicationDispense", [("_tag", t.token)])
    assert_exact(res, t, [])


def test_everything(client, refs):
    """Patient/[id]/$everything: the patient and its compartment, not other patients' data."""
    p1 = refs["p1"]
    res = search(client, f"/Patient/{p1['id']}/$everything", {"_count": "1000"}, what="everything")
    got = set(res.refs) | res.includes
    must = {f"Patient/{p1['id']}", f"Observation/{refs['o']['o1']['id']}",
            f"Encounter/{refs['enc1']['id']}", f"MedicationDispense/{refs['md1']['id']}",
            f"Condition/{refs['cond1']['id']}"}
    must_not = {f"Patient/{refs['p2']['id']}", f"Observation/{refs['o']['o2']['id']}",
                f"Observation/{refs['o']['og']['id']}", f"Condition/{refs['cond2']['id']}",
                f"Observation/{refs['o']['oabs']['id']}", f"Patient/{refs['p3']['id']}"}
    assert must <= got, f"{res.url}: missing {sorted(must - got)}"
    assert not (must_not & got), f"{res.url}: other patients' data {sorted(must_not & got)}"


def test_everything_type_and_since(client, refs):
    p1 = refs["p1"]
    res = search(client, f"/Patient/{p1['id']}/$everything", {"_type": "Observation", "_count": "1000"},
                 what="everything-type")
    got = set(res.refs) | res.includes
    assert {r.split("/")[0] for r in got} <= {"Observation", "Patient"}, got
    assert f"Observation/{refs['o']['o1']['id']}" in got, got
    other = Tag(client, "since")  # not refs' tag: the other tests' expectations stay as they are
    time.sleep(1.1)
    marker = other.make({"resourceType": "Patient", "name": [{"family": "Marker"}]})
    since = marker["meta"]["lastUpdated"]
    time.sleep(1.1)
    late = other.make({"resourceType": "Observation", "status": "final", "code": cc(LOINC, "8867-4"),
                       "subject": ref(p1)}, "late")
    res = search(client, f"/Patient/{p1['id']}/$everything", {"_since": since, "_count": "1000"},
                 what="everything-since")
    got = set(res.refs) | res.includes
    assert f"Observation/{late['id']}" in got, f"{res.url}: {got}"
    assert f"Observation/{refs['o']['o1']['id']}" not in got, f"{res.url}: o1 was not updated since: {got}"


def test_everything_unknown_patient_is_404(client):
    expect_outcome(client.get("/Patient/no-such-patient-x9/$everything"), statuses=(404,))

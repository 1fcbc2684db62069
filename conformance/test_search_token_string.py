"""Search: token, string and uri parameters, OR/AND, and GET = POST _search (R4 search.html
#token, #string, #uri, #combining, #modifiers; http.html#search)."""
from __future__ import annotations

import pytest

from fhirtest import create
from searchkit import LOINC, SNOMED, Tag, assert_exact, cc, lab_extras, search, unique

pytestmark = pytest.mark.area("search")

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"


@pytest.fixture(scope="module")
def tok(client):
    """Observations t1..t6 with codes in several systems, Patients with booleans, identifier types."""
    t = Tag(client, "tok")
    vs_url = f"http://example.org/fhir/ValueSet/{t.code}"
    o = {}
    subject = create(client, {"resourceType": "Patient"})  # untagged: only a reference target

    def obs(key, code, **kw):
        o[key] = t.make(dict({"resourceType": "Observation", "status": "final", "code": code}, **kw), key)

    obs("t1", {"coding": [{"system": LOINC, "code": "4548-4", "display": "Hemoglobin A1c/Hemoglobin.total in Blood"}],
               "text": "HbA1c"},
        category=[cc(OBS_CAT, "laboratory")], **lab_extras(subject))
    obs("t2", {"coding": [{"system": LOINC, "code": "2345-7", "display": "Glucose [Mass/volume] in Serum or Plasma"}]},
        status="amended")
    obs("t3", cc(SNOMED, "4548-4"))
    obs("t4", {"coding": [{"code": "4548-4"}]})
    obs("t5", {"text": "Hémoglobine glyquée"})
    obs("t6", {"coding": [{"system": LOINC, "code": "17856-6"}, {"system": SNOMED, "code": "43396009"}]},
        **lab_extras(subject))
    vs = t.make({"resourceType": "ValueSet", "url": vs_url, "status": "active",
                 "compose": {"include": [{"system": LOINC, "concept": [{"code": "4548-4"}, {"code": "2345-7"}]}]}})
    p = {}
    ident_sys = f"urn:conformance:mrn:{t.code}"
    p["active"] = t.make({"resourceType": "Patient", "active": True,
                          "identifier": [{"type": cc(V2_0203, "MR", text="Medical record number"),
                                          "system": ident_sys, "value": "12345"}]}, "active")
    p["inactive"] = t.make({"resourceType": "Patient", "active": False,
                            "identifier": [{"type": cc(V2_0203, "SS"), "system": ident_sys, "value": "12345"}]},
                           "inactive")
    p["unset"] = t.make({"resourceType": "Patient", "identifier": [{"system": ident_sys, "value": "67890"}]}, "unset")
    return {"t": t, "o": o, "p": p, "vs": vs, "vs_url": vs_url, "ident_sys": ident_sys}


def ids(d, *names):
    return [d["o"][n]["id"] if n in d["o"] else d["p"][n]["id"] for n in names]


TOKEN_CASES = [
    ("code", f"{LOINC}|4548-4", ["t1"]),
    ("code", "4548-4", ["t1", "t3", "t4"]),
    ("code", "|4548-4", ["t4"]),
    ("code", f"{LOINC}|", ["t1", "t2", "t6"]),
    ("code", f"{LOINC}|4548-4,{LOINC}|2345-7", ["t1", "t2"]),
    ("code", f"{LOINC}|17856-6", ["t6"]),
    ("code", f"{SNOMED}|43396009", ["t6"]),
    ("code:not", f"{LOINC}|4548-4", ["t2", "t3", "t4", "t5", "t6"]),
    ("code:text", "hemoglobin", ["t1", "t5"]),
    ("code:text", "HBA1", ["t1"]),
    ("code:text", "glucose", ["t2"]),
    ("code:text", "hémoglobine gly", ["t5"]),  # a CodeableConcept with text only
    ("status", "final", ["t1", "t3", "t4", "t5", "t6"]),
    ("status", "amended", ["t2"]),
    ("status", "http://hl7.org/fhir/observation-status|amended", ["t2"]),
    ("status:not", "final", ["t2"]),
    ("category", f"{OBS_CAT}|laboratory", ["t1"]),
    ("category", "laboratory", ["t1"]),
    ("category:missing", "true", ["t2", "t3", "t4", "t5", "t6"]),
    ("category:missing", "false", ["t1"]),
]


@pytest.mark.parametrize("param,value,expected", TOKEN_CASES, ids=[f"{p}={v}" for p, v, _ in TOKEN_CASES])
def test_token_forms(client, tok, param, value, expected):
    """R4 search.html#token: [code], [system]|[code], |[code], [system]|; :not, :text, :missing."""
    res = search(client, "Observation", [("_tag", tok["t"].token), (param, value)])
    assert_exact(res, tok["t"], ids(tok, *expected))


def test_token_repeated_parameter_is_and(client, tok):
    """R4 search.html#combining: repeating a parameter is AND, a comma list is OR."""
    t = tok["t"]
    res = search(client, "Observation", [("_tag", t.token), ("code", f"{LOINC}|17856-6"), ("code", f"{SNOMED}|43396009")])
    assert_exact(res, t, ids(tok, "t6"))
    res = search(client, "Observation", [("_tag", t.token), ("code", f"{LOINC}|17856-6"), ("code", f"{LOINC}|4548-4")])
    assert_exact(res, t, [])
    res = search(client, "Observation", [("_tag", t.token), ("code", "4548-4"), ("status", "final"),
                                         ("code", f"{LOINC}|4548-4,{SNOMED}|4548-4")])
    assert_exact(res, t, ids(tok, "t1", "t3"))


def test_token_in_value_set(client, tok):
    """:in / :not-in with the canonical url of a stored ValueSet (compose.include.concept)."""
    t = tok["t"]
    assert_exact(search(client, "Observation", [("_tag", t.token), ("code:in", tok["vs_url"])]), t, ids(tok, "t1", "t2"))
    assert_exact(search(client, "Observation", [("_tag", t.token), ("code:not-in", tok["vs_url"])]), t,
                 ids(tok, "t3", "t4", "t5", "t6"))


@pytest.mark.parametrize("value,expected", [("true", ["active"]), ("false", ["inactive"])])
def test_boolean_token(client, tok, value, expected):
    t = tok["t"]
    assert_exact(search(client, "Patient", [("_tag", t.token), ("active", value)]), t, ids(tok, *expected))


def test_boolean_missing(client, tok):
    t = tok["t"]
    assert_exact(search(client, "Patient", [("_tag", t.token), ("active:missing", "true")]), t, ids(tok, "unset"))
    assert_exact(search(client, "Patient", [("_tag", t.token), ("active:missing", "false")]), t,
                 ids(tok, "active", "inactive"))


def test_identifier_of_type(client, tok):
    """R4 search.html#token :of-type: [type system]|[type code]|[identifier value]."""
    t = tok["t"]
    assert_exact(search(client, "Patient", [("_tag", t.token), ("identifier:of-type", f"{V2_0203}|MR|12345")]), t,
                 ids(tok, "active"))
    assert_exact(search(client, "Patient", [("_tag", t.token), ("identifier:of-type", f"{V2_0203}|SS|12345")]), t,
                 ids(tok, "inactive"))
    assert_exact(search(client, "Patient", [("_tag", t.token), ("identifier:of-type", f"{V2_0203}|MR|67890")]), t, [])
    assert_exact(search(client, "Patient", [("_tag", t.token), ("identifier", f"{tok['ident_sys']}|12345")]), t,
                 ids(tok, "active", "inactive"))


def test_identifier_text_modifier(client, tok):
    """:text on an identifier searches Identifier.type.text."""
    t = tok["t"]
    assert_exact(search(client, "Patient", [("_tag", t.token), ("identifier:text", "medical record")]), t,
                 ids(tok, "active"))


# ---------------------------------------------------------------------------
# string
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def names(client):
    t = Tag(client, "str")
    p = {}

    def pat(key, **kw):
        p[key] = t.make(dict({"resourceType": "Patient"}, **kw), key)

    pat("mueller", name=[{"family": "Müller", "given": ["Jürgen", "Hans"]}],
        address=[{"line": ["12 Rue de l'Église"], "city": "Zürich", "state": "ZH", "postalCode": "8001",
                  "country": "Switzerland", "use": "home"}])
    pat("muller", name=[{"family": "Muller", "given": ["Anna"]}],
        address=[{"city": "Bern", "postalCode": "3001", "country": "Switzerland", "use": "work"}])
    pat("mullerson", name=[{"family": "Mullerson", "given": ["Zoe"], "prefix": ["Dr."]}],
        address=[{"city": "Boston", "state": "MA", "postalCode": "02101", "country": "USA"}])
    pat("schmidt", name=[{"family": "Schmidt-Müller", "given": ["Eva"], "text": "Eva Schmidt-Müller"}],
        address=[{"city": "Mülheim", "country": "Germany"}])
    pat("noname", gender="unknown")
    return {"t": t, "p": p}


STRING_CASES = [
    ("family", "muller", ["mueller", "muller", "mullerson"]),
    ("family", "MÜLLER", ["mueller", "muller", "mullerson"]),
    ("family", "Mul", ["mueller", "muller", "mullerson"]),
    ("family", "müllers", ["mullerson"]),
    ("family", "schmidt", ["schmidt"]),
    ("family", "müller,schmidt", ["mueller", "muller", "mullerson", "schmidt"]),
    ("family:exact", "Müller", ["mueller"]),
    ("family:exact", "Muller", ["muller"]),
    ("family:exact", "müller", []),
    ("family:exact", "Mull", []),
    ("family:contains", "LLER", ["mueller", "muller", "mullerson", "schmidt"]),
    ("family:contains", "ers", ["mullerson"]),
    ("family:contains", "midt-mü", ["schmidt"]),
    ("given", "jurgen", ["mueller"]),
    ("given", "hans", ["mueller"]),
    ("given", "ann", ["muller"]),
    ("name", "zoe", ["mullerson"]),
    ("name", "mullers", ["mullerson"]),
    ("name", "eva", ["schmidt"]),
    ("family:missing", "true", ["noname"]),
    ("address-city", "zurich", ["mueller"]),
    ("address-city", "mu", ["schmidt"]),
    ("address-city", "b", ["muller", "mullerson"]),
    ("address-state", "ma", ["mullerson"]),
    ("address-postalcode", "800", ["mueller"]),
    ("address-country", "switz", ["mueller", "muller"]),
    ("address", "bern", ["muller"]),
    ("address", "12 rue de l'eglise", ["mueller"]),
    ("address", "usa", ["mullerson"]),
    ("address:contains", "eglise", ["mueller"]),
    ("address-use", "home", ["mueller"]),
    ("address-use", "work", ["muller"]),
]


@pytest.mark.parametrize("param,value,expected", STRING_CASES, ids=[f"{p}={v}" for p, v, _ in STRING_CASES])
def test_string_search(client, names, param, value, expected):
    """R4 search.html#string: case- and accent-insensitive starts-with by default (on any
    part, e.g. each given name); :exact is the whole string, case and accents included;
    :contains anywhere; address matches any of its parts."""
    t = names["t"]
    res = search(client, "Patient", [("_tag", t.token), (param, value)])
    assert_exact(res, t, [names["p"][n]["id"] for n in expected])


# ---------------------------------------------------------------------------
# uri and canonical
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def uris(client):
    t = Tag(client, "uri")
    root = f"http://example.org/fhir/Measure/{t.code}"
    m = {}
    for name, url, version in [("m1", root, "1.0"), ("m5", root, "2.0"), ("m2", root + "/sub", "1.0"),
                               ("m3", root + "/sub/deep", "1.0"), ("other", f"http://example.com/{t.code}", "1.0")]:
        m[name] = t.make({"resourceType": "Measure", "status": "active", "url": url, "version": version,
                          "name": "M" + name}, name)
    return {"t": t, "m": m, "root": root}


def test_uri_exact(client, uris):
    t = uris["t"]
    ids = lambda *n: [uris["m"][x]["id"] for x in n]  # noqa: E731
    assert_exact(search(client, "Measure", [("_tag", t.token), ("url", uris["root"])]), t, ids("m1", "m5"))
    assert_exact(search(client, "Measure", [("_tag", t.token), ("url", uris["root"] + "/sub")]), t, ids("m2"))
    assert_exact(search(client, "Measure", [("_tag", t.token), ("url", uris["root"] + "/su")]), t, [])


def test_uri_below(client, uris):
    t = uris["t"]
    ids = lambda *n: [uris["m"][x]["id"] for x in n]  # noqa: E731
    assert_exact(search(client, "Measure", [("_tag", t.token), ("url:below", uris["root"])]), t,
                 ids("m1", "m5", "m2", "m3"))
    assert_exact(search(client, "Measure", [("_tag", t.token), ("url:below", uris["root"] + "/sub")]), t,
                 ids("m2", "m3"))


def test_uri_above(client, uris):
    t = uris["t"]
    ids = lambda *n: [uris["m"][x]["id"] for x in n]  # noqa: E731
    assert_exact(search(client, "Measure", [("_tag", t.token), ("url:above", uris["root"] + "/sub/deep/x")]), t,
                 ids("m1", "m5", "m2", "m3"))
    assert_exact(search(client, "Measure", [("_tag", t.token), ("url:above", uris["root"] + "/sub")]), t,
                 ids("m1", "m5", "m2"))


def test_canonical_url_with_version(client, uris):
    """R4 references to canonical resources may carry a version: url|version."""
    t = uris["t"]
    assert_exact(search(client, "Measure", [("_tag", t.token), ("url", uris["root"] + "|2.0")]), t,
                 [uris["m"]["m5"]["id"]])
    assert_exact(search(client, "Measure", [("_tag", t.token), ("url", uris["root"] + "|1.0")]), t,
                 [uris["m"]["m1"]["id"]])
    assert_exact(search(client, "Measure", [("_tag", t.token), ("version", "2.0")]), t, [uris["m"]["m5"]["id"]])


def test_canonical_reference_search(client, uris):
    """A reference parameter on a canonical element (MeasureReport.measure) matches by url."""
    t = uris["t"]
    mr = {}
    for name, measure in [("r1", uris["root"]), ("r2", uris["root"] + "/sub")]:
        mr[name] = t.make({"resourceType": "MeasureReport", "status": "complete", "type": "summary",
                           "measure": measure, "period": {"start": "2024-01-01", "end": "2024-12-31"}}, name)
    assert_exact(search(client, "MeasureReport", [("_tag", t.token), ("measure", uris["root"])]), t, [mr["r1"]["id"]])
    assert_exact(search(client, "MeasureReport", [("_tag", t.token), ("measure", uris["root"] + "/sub")]), t,
                 [mr["r2"]["id"]])


# ---------------------------------------------------------------------------
# GET = POST
# ---------------------------------------------------------------------------

def test_get_equals_post_search(client, tok, names):
    """R4 http.html#search: GET [type]?params and POST [type]/_search with the same
    parameters as an application/x-www-form-urlencoded body give the same result."""
    queries = [
        ("Observation", [("_tag", tok["t"].token), ("code", "4548-4")]),
        ("Observation", [("_tag", tok["t"].token), ("code:not", f"{LOINC}|4548-4"), ("_count", "2")]),
        ("Observation", [("_tag", tok["t"].token), ("code", f"{LOINC}|17856-6"), ("code", f"{SNOMED}|43396009")]),
        ("Patient", [("_tag", names["t"].token), ("family", "müller")]),
        ("Patient", [("_tag", names["t"].token), ("address-city", "b"), ("_sort", "family")]),
        ("Patient", [("_tag", names["t"].token), ("name:contains", "ü")]),
    ]
    for rtype, params in queries:
        g = search(client, rtype, params)
        p = search(client, rtype, params, post=True, what="searchset-post")
        assert g.ids == p.ids, f"GET {g.url} -> {g.ids}\nPOST {p.url} -> {p.ids}"
        assert g.total == p.total, f"GET {g.url} total {g.total}, POST total {p.total}"
        assert bool(g.link("next")) == bool(p.link("next"))


def test_post_search_combines_query_and_body(client, tok):
    """POST [type]/_search?a=... with body b=...: both sets of parameters apply."""
    t = tok["t"]
    r = client.post("/Observation/_search", params={"_tag": t.token},
                    content="code=4548-4", headers={"Content-Type": "application/x-www-form-urlencoded"})
    from fhirtest import fhir_json
    from searchkit import Result, check_searchset
    b = fhir_json(r, 200, what="searchset-post-mixed")
    check_searchset(b, str(r.request.url))
    assert_exact(Result(b, str(r.request.url) + " [form code=4548-4]"), t, ids(tok, "t1", "t3", "t4"))


def test_unique_tag_isolates(client):
    """Sanity of the suite's own method: an unused tag finds nothing."""
    from searchkit import TAG_SYSTEM
    res = search(client, "Observation", {"_tag": f"{TAG_SYSTEM}|{unique('none')}"})
    assert res.ids == [] and res.total in (None, 0)

"""Search result control (R4 search.html#count, #sort, #total, #summary, #elements,
#include, #revinclude, #errors; bundle.html#searchset): paging through next links
(also while matching resources are being added), previous links, sorting, totals,
subsetting, includes and search.mode, unknown and malformed parameters."""
from __future__ import annotations

import threading

import pytest

from fhirtest import FHIR_JSON, check, describe, new_client
from searchkit import (LOINC, SUBSETTED, Tag, assert_exact, cc, date_range, follow, outcome_names, ref, search,
                       search_error)

pytestmark = pytest.mark.area("search")


def instant(s: str):
    return date_range(s)[0]


def walk(client, first, limit=200):
    """Follow next links from a first Result; the list of pages."""
    pages = [first]
    seen_urls = set()
    while pages[-1].link("next"):
        nxt = pages[-1].link("next")
        assert nxt not in seen_urls, f"next link repeats: {nxt}"
        seen_urls.add(nxt)
        pages.append(follow(client, nxt))
        assert len(pages) <= limit, "too many pages"
    return pages


# ---------------------------------------------------------------------------
# paging
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pool(client):
    t = Tag(client, "page")
    made = [t.make({"resourceType": "Observation", "status": "final", "code": cc(LOINC, "8867-4"),
                    "effectiveDateTime": f"2024-01-{k + 1:02d}T08:00:00Z",
                    "valueQuantity": {"value": k, "system": "http://unitsofmeasure.org", "code": "/min"}}, f"n{k}")
            for k in range(13)]
    return {"t": t, "made": made}


def test_paging_every_match_once(client, pool):
    t = pool["t"]
    first = search(client, "Observation", [("_tag", t.token), ("_count", "4")])
    assert first.total == 13, f"{first.url}: total {first.total}"
    pages = walk(client, first)
    # R4 search.html#count: never more than _count a page (fewer is allowed)
    assert all(len(p.ids) <= 4 for p in pages) and len(pages) >= 4, [len(p.ids) for p in pages]
    seen = [i for p in pages for i in p.ids]
    assert sorted(seen) == sorted(m["id"] for m in pool["made"]), "every match exactly once"
    for p in pages:
        assert p.total in (None, 13)
        assert p.link("self"), f"{p.url}: no self link"
    assert not pages[0].link("previous"), "the first page has no previous link"


def test_paging_previous_link_leads_back(client, pool):
    t = pool["t"]
    first = search(client, "Observation", [("_tag", t.token), ("_count", "5"), ("_sort", "date")])
    pages = walk(client, first)
    assert len(pages) >= 3, [p.ids for p in pages]
    assert not first.link("previous"), "the first page has no previous link"
    for k in range(1, len(pages)):
        prev = pages[k].link("previous")
        assert prev, f"{pages[k].url}: page {k + 1} has no previous link: {pages[k].bundle.get('link')}"
        back = follow(client, prev)
        assert back.ids == pages[k - 1].ids, f"previous of page {k + 1} is {back.ids}, not page {k}: {pages[k - 1].ids}"
    if first.link("first"):
        assert follow(client, first.link("first")).ids == first.ids


def test_paging_stable_while_inserting(client):
    """Walking the pages while another client adds matching resources: no match
    is returned twice and every match that existed before the walk is returned."""
    t = Tag(client, "pins")
    before = [t.make({"resourceType": "Observation", "status": "final", "code": {"text": f"ins {k}"}}, f"b{k}")
              for k in range(15)]
    added = []
    bodies = []
    stop = threading.Event()
    errors = []

    def writer():
        with new_client() as c2:
            while not stop.is_set() and len(added) < 25:
                r = c2.post("/Observation", json=t.tagged({"resourceType": "Observation", "status": "final",
                                                          "code": {"text": "inserted"}}),
                            headers={"Content-Type": FHIR_JSON})
                if r.status_code != 201:
                    errors.append(describe(r))
                    return
                bodies.append(r.json())
                added.append(bodies[-1]["id"])

    th = threading.Thread(target=writer)
    first = search(client, "Observation", [("_tag", t.token), ("_count", "3")])
    th.start()
    try:
        pages = walk(client, first)
    finally:
        stop.set()
        th.join(60)
    assert not errors, errors
    for b in bodies:
        check(b, "created Observation")
    seen = [i for p in pages for i in p.ids]
    dup = sorted({i for i in seen if seen.count(i) > 1})
    assert not dup, f"returned twice while inserting: {dup}"
    missing = sorted({m["id"] for m in before} - set(seen))
    assert not missing, f"matches that existed before the walk were skipped: {missing}"
    assert set(seen) <= {m["id"] for m in before} | set(added)
    # after the inserts: a fresh walk sees each exactly once
    pages = walk(client, search(client, "Observation", [("_tag", t.token), ("_count", "7")]))
    seen = [i for p in pages for i in p.ids]
    assert sorted(seen) == sorted([m["id"] for m in before] + added)
    assert pages[0].total == len(before) + len(added)


def test_count_zero_gives_total_only(client, pool):
    res = search(client, "Observation", [("_tag", pool["t"].token), ("_count", "0")])
    assert not res.ids and res.total == 13, (res.total, res.ids)


def test_count_above_maximum_is_clamped_not_an_error(client, pool):
    res = search(client, "Observation", [("_tag", pool["t"].token), ("_count", "100000")])
    assert len(res.ids) == 13


# ---------------------------------------------------------------------------
# sorting
# ---------------------------------------------------------------------------

def test_sort_by_date(client, pool):
    t = pool["t"]
    asc = [m["id"] for m in pool["made"]]
    pages = walk(client, search(client, "Observation", [("_tag", t.token), ("_sort", "date"), ("_count", "5")]))
    assert [i for p in pages for i in p.ids] == asc, "_sort=date ascending across pages"
    pages = walk(client, search(client, "Observation", [("_tag", t.token), ("_sort", "-date"), ("_count", "5")]))
    assert [i for p in pages for i in p.ids] == asc[::-1], "_sort=-date descending across pages"


def test_sort_by_quantity_and_lastupdated(client, pool):
    t = pool["t"]
    asc = [m["id"] for m in pool["made"]]
    res = search(client, "Observation", [("_tag", t.token), ("_sort", "-value-quantity")])
    assert res.ids == asc[::-1]
    for key, desc in (("_lastUpdated", False), ("-_lastUpdated", True)):
        res = search(client, "Observation", [("_tag", t.token), ("_sort", key)])
        stamps = [instant(e["resource"]["meta"]["lastUpdated"]) for e in res.match_entries]
        assert len(stamps) == 13 and stamps == sorted(stamps, reverse=desc), f"{res.url}: {stamps}"


def test_sort_multiple_keys(client):
    t = Tag(client, "sort")
    spec = [("b_old", "Bravo", "1970-01-01"), ("a_old", "Alpha", "1960-01-01"), ("b_new", "Bravo", "1990-01-01"),
            ("c", "Charlie", "1980-01-01"), ("a_new", "Alpha", "1995-05-05")]
    made = {n: t.make({"resourceType": "Patient", "name": [{"family": f}], "birthDate": b}, n) for n, f, b in spec}
    res = search(client, "Patient", [("_tag", t.token), ("_sort", "family,-birthdate")])
    assert_exact(res, t, [made[n]["id"] for n in ["a_new", "a_old", "b_new", "b_old", "c"]], ordered=True)
    res = search(client, "Patient", [("_tag", t.token), ("_sort", "-family,birthdate")])
    assert_exact(res, t, [made[n]["id"] for n in ["c", "b_old", "b_new", "a_old", "a_new"]], ordered=True)
    res = search(client, "Patient", [("_tag", t.token), ("_sort", "birthdate")])
    assert_exact(res, t, [made[n]["id"] for n in ["a_old", "b_old", "c", "b_new", "a_new"]], ordered=True)


# ---------------------------------------------------------------------------
# totals and subsetting
# ---------------------------------------------------------------------------

def test_total_none_and_accurate(client, pool):
    t = pool["t"]
    res = search(client, "Observation", [("_tag", t.token), ("_total", "none"), ("_count", "5")])
    assert "total" not in res.bundle, f"{res.url}: _total=none but total {res.total}"
    assert 0 < len(res.ids) <= 5
    res = search(client, "Observation", [("_tag", t.token), ("_total", "accurate"), ("_count", "5")])
    assert res.total == 13


def test_summary_count(client, pool):
    res = search(client, "Observation", [("_tag", pool["t"].token), ("_summary", "count")])
    assert res.total == 13 and not res.ids, f"{res.url}: total {res.total}, {len(res.ids)} entries"


def has_subsetted(resource) -> bool:
    return any((c.get("system"), c.get("code")) == SUBSETTED for c in (resource.get("meta") or {}).get("tag", []))


@pytest.fixture(scope="module")
def subset(client):
    t = Tag(client, "sub")
    p = t.make({"resourceType": "Patient",
                "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Subset Person</div>'},
                "name": [{"family": "Subset"}], "gender": "female", "birthDate": "1977-07-07",
                "maritalStatus": cc("http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "M"),
                "communication": [{"language": cc("urn:ietf:bcp:47", "en")}]}, "P")
    return {"t": t, "p": p}


def only_match(res):
    assert len(res.match_entries) == 1, res.url
    return res.match_entries[0]["resource"]


def test_summary_true(client, subset):
    res = search(client, "Patient", [("_tag", subset["t"].token), ("_summary", "true")])
    r = only_match(res)
    assert has_subsetted(r), f"{res.url}: _summary=true result lacks the SUBSETTED tag: {r.get('meta')}"
    assert r.get("name") and r.get("gender") and r.get("birthDate"), r
    assert "maritalStatus" not in r and "communication" not in r and "text" not in r, r


def test_summary_data_text_false(client, subset):
    t = subset["t"]
    r = only_match(search(client, "Patient", [("_tag", t.token), ("_summary", "data")]))
    assert has_subsetted(r) and "text" not in r and r.get("maritalStatus"), r
    r = only_match(search(client, "Patient", [("_tag", t.token), ("_summary", "text")]))
    assert has_subsetted(r) and r.get("text") and "name" not in r and "maritalStatus" not in r, r
    r = only_match(search(client, "Patient", [("_tag", t.token), ("_summary", "false")]))
    assert not has_subsetted(r) and r.get("maritalStatus") and r.get("text"), r


def test_elements(client, subset):
    res = search(client, "Patient", [("_tag", subset["t"].token), ("_elements", "gender,birthDate")])
    r = only_match(res)
    assert has_subsetted(r), f"{res.url}: _elements result lacks the SUBSETTED tag"
    assert r.get("gender") == "female" and r.get("birthDate") == "1977-07-07", r
    extra = set(r) - {"resourceType", "id", "meta", "gender", "birthDate"}
    assert not extra, f"{res.url}: elements not asked for: {sorted(extra)}"


# ---------------------------------------------------------------------------
# _include / _revinclude
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def inc(client):
    t = Tag(client, "inc")
    p1 = t.make({"resourceType": "Patient", "name": [{"family": "Inc1"}]}, "P1")
    p2 = t.make({"resourceType": "Patient", "name": [{"family": "Inc2"}]}, "P2")
    px = t.make({"resourceType": "Patient", "name": [{"family": "IncX"}]}, "PX")
    o1 = t.make({"resourceType": "Observation", "status": "final", "code": cc(LOINC, "8867-4"), "subject": ref(p1)},
                "o1")
    o2 = t.make({"resourceType": "Observation", "status": "final", "code": cc(LOINC, "8867-4"), "subject": ref(p2)},
                "o2")
    # has-member chain c <- b <- a
    c = t.make({"resourceType": "Observation", "status": "final", "code": {"text": "leaf"}}, "c")
    b = t.make({"resourceType": "Observation", "status": "final", "code": {"text": "mid"}, "hasMember": [ref(c)]}, "b")
    a = t.make({"resourceType": "Observation", "status": "final", "code": {"text": "top"}, "hasMember": [ref(b)]}, "a")
    mreq = t.make({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
                   "medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "860975"),
                   "subject": ref(px)}, "MR")
    md = t.make({"resourceType": "MedicationDispense", "status": "completed",
                 "medicationCodeableConcept": cc("http://www.nlm.nih.gov/research/umls/rxnorm", "860975"),
                 "authorizingPrescription": [ref(mreq)]}, "MD")
    return {"t": t, "p1": p1, "p2": p2, "px": px, "o1": o1, "o2": o2, "a": a, "b": b, "c": c, "mreq": mreq, "md": md}


def rr(x):
    return f"{x['resourceType']}/{x['id']}"


def test_include(client, inc):
    t = inc["t"]
    res = search(client, "Observation", [("_tag", t.token), ("code", f"{LOINC}|8867-4"),
                                         ("_include", "Observation:patient")])
    assert sorted(res.ids) == sorted([inc["o1"]["id"], inc["o2"]["id"]]), res.url
    assert res.includes == {rr(inc["p1"]), rr(inc["p2"])}, f"{res.url}: includes {res.includes}"
    assert res.total in (None, 2), "total counts matches only, not includes"
    res = search(client, "Observation", [("_tag", t.token), ("_id", inc["o1"]["id"]),
                                         ("_include", "Observation:subject:Patient")])
    assert res.includes == {rr(inc["p1"])}, res.url
    res = search(client, "Observation", [("_tag", t.token), ("_id", inc["o1"]["id"]),
                                         ("_include", "Observation:subject:Group")])
    assert res.includes == set(), res.url


def test_revinclude(client, inc):
    t = inc["t"]
    res = search(client, "Patient", [("_tag", t.token), ("_id", inc["p1"]["id"]), ("_revinclude", "Observation:patient")])
    assert res.ids == [inc["p1"]["id"]]
    assert res.includes == {rr(inc["o1"])}, f"{res.url}: {res.includes}"
    assert res.total in (None, 1)


def test_include_iterate(client, inc):
    t = inc["t"]
    res = search(client, "Observation", [("_tag", t.token), ("_id", inc["a"]["id"]),
                                         ("_include", "Observation:has-member")])
    assert res.ids == [inc["a"]["id"]] and res.includes == {rr(inc["b"])}, f"{res.url}: {res.includes}"
    res = search(client, "Observation", [("_tag", t.token), ("_id", inc["a"]["id"]),
                                         ("_include:iterate", "Observation:has-member")])
    assert res.includes == {rr(inc["b"]), rr(inc["c"])}, f"{res.url}: {res.includes}"
    res = search(client, "MedicationDispense", [("_tag", t.token), ("_id", inc["md"]["id"]),
                                                ("_include", "MedicationDispense:prescription"),
                                                ("_include:iterate", "MedicationRequest:subject")])
    assert res.includes == {rr(inc["mreq"]), rr(inc["px"])}, f"{res.url}: {res.includes}"
    res = search(client, "MedicationDispense", [("_tag", t.token), ("_id", inc["md"]["id"]),
                                                ("_include", "MedicationDispense:prescription"),
                                                ("_include", "MedicationRequest:subject")])
    assert res.includes == {rr(inc["mreq"])}, f"{res.url}: without :iterate only the matches' references: {res.includes}"


def test_revinclude_iterate(client, inc):
    t = inc["t"]
    res = search(client, "Observation", [("_tag", t.token), ("_id", inc["c"]["id"]),
                                         ("_revinclude:iterate", "Observation:has-member")])
    assert res.includes == {rr(inc["b"]), rr(inc["a"])}, f"{res.url}: {res.includes}"


def test_include_with_paging_and_search_modes(client, inc):
    t = inc["t"]
    first = search(client, "Observation", [("_tag", t.token), ("code", f"{LOINC}|8867-4"),
                                           ("_count", "1"), ("_include", "Observation:patient")])
    pages = walk(client, first)
    assert sorted(i for p in pages for i in p.ids) == sorted([inc["o1"]["id"], inc["o2"]["id"]])
    for p in pages:
        assert len(p.match_entries) == 1, p.url
        subject = p.match_entries[0]["resource"]["subject"]["reference"]
        assert p.includes == {subject}, f"{p.url}: the page includes {p.includes}, its match refers to {subject}"
        for e in p.bundle.get("entry", []):
            want = "match" if e["resource"]["resourceType"] == "Observation" else "include"
            assert e["search"]["mode"] == want, e


# ---------------------------------------------------------------------------
# unknown and malformed parameters
# ---------------------------------------------------------------------------

def test_unknown_parameter_gives_outcome_entry(client, inc):
    """Lenient handling (R4 search.html#errors): the unknown parameter is ignored, and the
    server says so in an OperationOutcome entry (search.mode outcome)."""
    t = inc["t"]
    res = search(client, "Observation", [("_tag", t.token), ("code", f"{LOINC}|8867-4"), ("not-a-param", "1")])
    assert sorted(res.ids) == sorted([inc["o1"]["id"], inc["o2"]["id"]])
    assert res.outcomes, f"{res.url}: no outcome entry for the ignored parameter"
    assert outcome_names(res, "not-a-param"), f"{res.url}: the outcome does not name the parameter: {res.outcomes}"
    assert all(i["severity"] in ("warning", "information") for oo in res.outcomes for i in oo["issue"]), res.outcomes


def test_self_link_shows_only_parameters_used(client, inc):
    """R4 search.html#conformance: the server SHALL return the parameters actually used to
    process the search (the self link); an ignored parameter is not among them."""
    t = inc["t"]
    res = search(client, "Observation", [("_tag", t.token), ("code", f"{LOINC}|8867-4"), ("not-a-param", "1")])
    selfs = res.link("self") or ""
    assert selfs, f"{res.url}: no self link"
    assert "not-a-param" not in selfs, f"the self link must show only the parameters used: {selfs}"


def test_unknown_parameter_strict_is_400(client, inc):
    oo = search_error(client, "/Observation", [("_tag", inc["t"].token), ("not-a-param", "1")],
                      headers={"Prefer": "handling=strict"})
    assert "not-a-param" in str(oo), oo


def test_strict_handling_with_known_parameters_is_fine(client, inc):
    res = search(client, "Observation", [("_tag", inc["t"].token), ("code", f"{LOINC}|8867-4")],
                 headers={"Prefer": "handling=strict"})
    assert len(res.ids) == 2 and not res.outcomes


@pytest.mark.parametrize("params", [
    {"_sort": "no-such-param"},
    {"_include": "Observation:no-such-param"},
    {"_include": "NotAType:patient"},
    {"_revinclude": "Observation:no-such-param"},
    {"date": "2023-02-31"},
    {"value-quantity": "five"},
    {"_lastUpdated": "yesterday"},
    {"_summary": "sometimes"},
    {"_total": "maybe"},
], ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
def test_malformed_control_parameter_is_400(client, params):
    search_error(client, "/Observation", params)


def test_unsupported_type_in_system_search_is_400(client):
    search_error(client, "/", {"_type": "NotAType"}, statuses=(400, 404))


@pytest.mark.parametrize("rtype,param", [("Patient", "family:foo"), ("Observation", "code:exact"),
                                         ("Observation", "date:contains"), ("Patient", "birthdate:text"),
                                         ("Observation", "subject:foo"), ("Observation", "value-quantity:below")])
def test_unsupported_modifier_is_rejected(client, rtype, param):
    """R4 search.html#modifiers: a server SHALL reject a search with a modifier it does not
    support for that parameter."""
    search_error(client, f"/{rtype}", {param: "x"})


def test_empty_parameter_is_ignored(client, subset):
    """R4 search.html#errors: empty parameters are not an error - they are just ignored."""
    t = subset["t"]
    res = search(client, "Patient", [("_tag", t.token), ("family", "")])
    assert res.ids == [subset["p"]["id"]], res.url


def test_lenient_handling_ignores_unknown_parameter(client, subset):
    t = subset["t"]
    res = search(client, "Patient", [("_tag", t.token), ("not-a-param", "1")], headers={"Prefer": "handling=lenient"})
    assert res.ids == [subset["p"]["id"]], res.url

"""Search: date parameters with every prefix (R4 search.html#date, #prefix).

Targets are Observations with effectiveDateTime at year/month/day/second precision
(UTC and +02:00), an effectiveInstant, and effectivePeriods (closed, open-ended,
open-started); Patients with birthDate at year/month/day precision. The expected
subsets come from searchkit.date_expect (the R4 prefix table over precision ranges)
and are cross-checked by hand-written literal subsets below."""
from __future__ import annotations

import pytest

from searchkit import Tag, assert_bounds, assert_exact, date_expect, date_range, period_range, search, search_error

pytestmark = pytest.mark.area("search")

# name -> effective[x]
OBS_EFFECTIVE = {
    "d1": {"effectiveDateTime": "2023-03-15"},
    "d2": {"effectiveDateTime": "2023-03-15T10:30:00Z"},
    "d3": {"effectiveDateTime": "2023-03-15T23:30:00+02:00"},  # 21:30Z
    "d4": {"effectiveDateTime": "2023-03-16T01:30:00+02:00"},  # 2023-03-15T23:30Z
    "d5": {"effectiveDateTime": "2023-03-14T23:59:59Z"},
    "d6": {"effectiveDateTime": "2023-03-16T00:00:00Z"},
    "m1": {"effectiveDateTime": "2023-03"},
    "y1": {"effectiveDateTime": "2023"},
    "i1": {"effectiveInstant": "2023-03-15T12:00:00.000Z"},
    "p1": {"effectivePeriod": {"start": "2023-03-10", "end": "2023-03-20"}},
    "p2": {"effectivePeriod": {"start": "2023-03-15T08:00:00Z", "end": "2023-03-15T09:00:00Z"}},
    "p3": {"effectivePeriod": {"start": "2023-03-17T00:00:00Z"}},  # ongoing
    "p4": {"effectivePeriod": {"end": "2023-03-12T12:00:00Z"}},
    "far": {"effectiveDateTime": "2019-06-01"},
}

SEARCH_VALUES = ["2023-03-15", "2023-03", "2023", "2023-03-16", "2023-03-15T22:00:00Z",
                 "2023-03-16T00:30:00+02:00", "2023-03-15T10:30:00Z"]
PREFIXES = ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]


def target_range(eff: dict):
    if "effectivePeriod" in eff:
        p = eff["effectivePeriod"]
        return period_range(p.get("start"), p.get("end"))
    return date_range(next(iter(eff.values())))


@pytest.fixture(scope="module")
def dates(client):
    t = Tag(client, "date")
    made = {}
    for name, eff in OBS_EFFECTIVE.items():
        made[name] = t.make(dict({"resourceType": "Observation", "status": "final", "code": {"text": f"date {name}"}},
                                 **eff), name)
    made["none"] = t.make({"resourceType": "Observation", "status": "final", "code": {"text": "no date"}}, "none")
    return {"t": t, "made": made, "ranges": {n: target_range(e) for n, e in OBS_EFFECTIVE.items()}}


@pytest.mark.parametrize("value", SEARCH_VALUES)
@pytest.mark.parametrize("prefix", PREFIXES)
def test_observation_date_prefix(client, dates, prefix, value):
    t = dates["t"]
    res = search(client, "Observation", [("_tag", t.token), ("date", prefix + value)])
    must, must_not = date_expect(prefix, value, dates["ranges"])
    if prefix != "ne":
        must_not = must_not | {"none"}  # no value: matches no comparison (ne left open)
    to_id = lambda names: {dates["made"][n]["id"] for n in names}  # noqa: E731
    assert_bounds(res, t, to_id(must), to_id(must_not))


def test_date_without_prefix_is_eq(client, dates):
    t = dates["t"]
    a = search(client, "Observation", [("_tag", t.token), ("date", "2023-03-15")])
    b = search(client, "Observation", [("_tag", t.token), ("date", "eq2023-03-15")])
    assert sorted(a.ids) == sorted(b.ids)


LITERAL = [
    # hand-computed from the R4 prefix table; guards the oracle above
    ("eq2023-03-15", ["d1", "d2", "d3", "d4", "i1", "p2"]),
    ("eq2023-03-16", ["d6"]),
    ("eq2023-03", ["d1", "d2", "d3", "d4", "d5", "d6", "m1", "i1", "p1", "p2"]),
    ("eq2023", ["d1", "d2", "d3", "d4", "d5", "d6", "m1", "y1", "i1", "p1", "p2"]),
    ("lt2023-03-15T22:00:00Z", ["d1", "d2", "d3", "d5", "m1", "y1", "i1", "p1", "p2", "p4", "far"]),
    ("gt2023-03-15T22:00:00Z", ["d1", "d4", "d6", "m1", "y1", "p1", "p3"]),
    ("sa2023-03-15", ["d6", "p3"]),
    ("eb2023-03-15", ["d5", "p4", "far"]),
    ("gt2023-03-15", ["d6", "m1", "y1", "p1", "p3"]),
    ("lt2023-03-15", ["d5", "m1", "y1", "p1", "p4", "far"]),
    ("ge2023-03-16T00:30:00+02:00", ["d1", "d4", "d6", "m1", "y1", "p1", "p3"]),
    ("le2023-03-15T10:30:00Z", ["d1", "d2", "d5", "m1", "y1", "p1", "p2", "p4", "far"]),
]


@pytest.mark.parametrize("query,expected", LITERAL, ids=[q for q, _ in LITERAL])
def test_observation_date_literal(client, dates, query, expected):
    t = dates["t"]
    # the literal table and the oracle must agree (a test-suite self check)
    prefix, value = query[:2], query[2:]
    must, _ = date_expect(prefix, value, dates["ranges"])
    assert must == set(expected), f"suite oracle disagrees with the literal table for {query}: {sorted(must)}"
    res = search(client, "Observation", [("_tag", t.token), ("date", query)])
    assert_exact(res, t, [dates["made"][n]["id"] for n in expected])


def test_period_open_end_is_ongoing(client, dates):
    """A Period without end is ongoing: later than any date after its start."""
    t = dates["t"]
    res = search(client, "Observation", [("_tag", t.token), ("date", "gt2099-01-01")])
    assert_exact(res, t, [dates["made"]["p3"]["id"]])
    res = search(client, "Observation", [("_tag", t.token), ("date", "lt1900-01-01")])
    assert_exact(res, t, [dates["made"]["p4"]["id"]])


def test_date_range_by_two_parameters(client, dates):
    """ge X & lt Y (AND) selects an interval."""
    t = dates["t"]
    res = search(client, "Observation", [("_tag", t.token), ("date", "ge2023-03-15T09:00:00Z"),
                                         ("date", "le2023-03-15T22:00:00Z")])
    must_a, _ = date_expect("ge", "2023-03-15T09:00:00Z", dates["ranges"])
    must_b, _ = date_expect("le", "2023-03-15T22:00:00Z", dates["ranges"])
    assert_exact(res, t, [dates["made"][n]["id"] for n in sorted(must_a & must_b)])


def test_date_missing(client, dates):
    t = dates["t"]
    assert_exact(search(client, "Observation", [("_tag", t.token), ("date:missing", "true")]), t,
                 [dates["made"]["none"]["id"]])
    res = search(client, "Observation", [("_tag", t.token), ("date:missing", "false")])
    assert_exact(res, t, [m["id"] for n, m in dates["made"].items() if n != "none"])


# ---------------------------------------------------------------------------
# birthdate (date type, year/month/day precision)
# ---------------------------------------------------------------------------

BIRTH = {"b_y": "1980", "b_m": "1980-05", "b_d17": "1980-05-17", "b_d18": "1980-05-18", "b_next": "1981-01-01",
         "b_prev": "1979-12-31"}
BIRTH_QUERIES = [
    ("1980", ["b_y", "b_m", "b_d17", "b_d18"]),
    ("1980-05", ["b_m", "b_d17", "b_d18"]),
    ("1980-05-17", ["b_d17"]),
    ("eq1980-05-18", ["b_d18"]),
    ("ne1980-05-17", ["b_y", "b_m", "b_d18", "b_next", "b_prev"]),
    ("lt1980-05-18", ["b_y", "b_m", "b_d17", "b_prev"]),
    ("le1980-05-18", ["b_y", "b_m", "b_d17", "b_d18", "b_prev"]),
    ("gt1980-05-17", ["b_y", "b_m", "b_d18", "b_next"]),
    ("ge1980-05", ["b_y", "b_m", "b_d17", "b_d18", "b_next"]),
    ("gt1980", ["b_next"]),
    ("lt1980", ["b_prev"]),
    ("sa1980-05", ["b_next"]),
    ("eb1980-05", ["b_prev"]),
    ("eb1980", ["b_prev"]),
    ("sa1979", ["b_y", "b_m", "b_d17", "b_d18", "b_next"]),
]


@pytest.fixture(scope="module")
def births(client):
    t = Tag(client, "birth")
    made = {n: t.make({"resourceType": "Patient", "birthDate": d}, n) for n, d in BIRTH.items()}
    return {"t": t, "made": made, "ranges": {n: date_range(d) for n, d in BIRTH.items()}}


@pytest.mark.parametrize("query,expected", BIRTH_QUERIES, ids=[q for q, _ in BIRTH_QUERIES])
def test_birthdate_precision(client, births, query, expected):
    t = births["t"]
    prefix, value = (query[:2], query[2:]) if query[:2].isalpha() else ("eq", query)
    must, _ = date_expect(prefix, value, births["ranges"])
    assert must == set(expected), f"suite oracle disagrees with the literal table for {query}: {sorted(must)}"
    res = search(client, "Patient", [("_tag", t.token), ("birthdate", query)])
    assert_exact(res, t, [births["made"][n]["id"] for n in expected])


# ---------------------------------------------------------------------------
# malformed dates
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["2023-13-01", "2023-02-30", "15-03-2023", "xx2023-03-15", "2023-03-15T25:00:00Z",
                                   "gt", "today", "2023-03-15T10:30:00+25:00"])
def test_malformed_date_is_400(client, value):
    """Malformed date or prefix: 400 with an OperationOutcome."""
    search_error(client, "/Observation", {"date": value})

"""Helpers shared by the search modules (test_search*.py, all in the "search" area).

* Every test run tags what it creates with meta.tag `urn:conformance:search-run|<uuid>`
  and filters every search with `_tag=` that token, so expected results are exact
  even on a server that already holds data.
* Every Bundle a search returns goes through fhirtest.fhir_json (fhir.resources now,
  fhir.js + @medplum/core at the end of the session), like every other answer.
* The date oracle (`date_range`, `date_expect`) encodes the R4 search page's
  prefix table (search.html#prefix): search value and target value are ranges
  given by their precision, half-open here ([start, end)); a Period is the range
  from its start's start to its end's end, a missing bound being infinite.
"""
from __future__ import annotations

import copy
import json
import re
import urllib.parse
from datetime import datetime, timedelta, timezone

from fhirtest import BASE_URL, create, expect_outcome, fhir_json, unique

TAG_SYSTEM = "urn:conformance:search-run"
SUBSETTED = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED")
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"


class Tag:
    """One unique meta.tag; `make` creates resources carrying it."""

    def __init__(self, client, label: str = "s"):
        self.client = client
        self.code = unique(label)
        self.token = f"{TAG_SYSTEM}|{self.code}"
        self.names: dict[str, str] = {}  # "Type/id" -> test name

    def tagged(self, resource: dict) -> dict:
        r = copy.deepcopy(resource)
        r.setdefault("meta", {}).setdefault("tag", []).append({"system": TAG_SYSTEM, "code": self.code})
        return r

    def make(self, resource: dict, name: str | None = None) -> dict:
        made = create(self.client, self.tagged(resource), what=f"created {resource['resourceType']}")
        if name:
            self.names[f"{made['resourceType']}/{made['id']}"] = name
            self.names[made["id"]] = name
        return made

    def name(self, rid: str) -> str:
        return self.names.get(rid, rid)


class Result:
    """A validated searchset Bundle and the request that produced it."""

    def __init__(self, bundle: dict, url: str, status: int = 200):
        self.bundle = bundle
        self.url = url
        self.status = status
        entries = bundle.get("entry", []) or []
        self.match_entries = [e for e in entries if (e.get("search") or {}).get("mode") == "match"]
        self.ids = [e["resource"]["id"] for e in self.match_entries]
        self.refs = [f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in self.match_entries]
        self.includes = {f"{e['resource']['resourceType']}/{e['resource']['id']}"
                         for e in entries if (e.get("search") or {}).get("mode") == "include"}
        self.outcomes = [e["resource"] for e in entries if (e.get("search") or {}).get("mode") == "outcome"]
        self.total = bundle.get("total")

    def links(self, rel: str) -> list[str]:
        return [l["url"] for l in self.bundle.get("link", []) if l.get("relation") == rel]

    def link(self, rel: str) -> str | None:
        got = self.links(rel)
        assert len(got) <= 1, f"more than one {rel!r} link: {self.bundle.get('link')}"
        return got[0] if got else None


def check_searchset(b: dict, url: str) -> None:
    assert b.get("resourceType") == "Bundle" and b.get("type") == "searchset", \
        f"{url}: not a searchset Bundle: {json.dumps(b)[:600]}"
    for e in b.get("entry", []) or []:
        mode = (e.get("search") or {}).get("mode")
        assert mode in ("match", "include", "outcome"), f"{url}: entry without a valid search.mode: {json.dumps(e)[:400]}"
        res = e.get("resource")
        assert isinstance(res, dict), f"{url}: entry without resource: {e}"
        if mode == "outcome":
            assert res.get("resourceType") == "OperationOutcome", f"{url}: outcome entry is not an OperationOutcome"
            continue
        full = e.get("fullUrl") or ""
        assert full.endswith(f"/{res['resourceType']}/{res['id']}"), f"{url}: fullUrl {full!r} vs {res['resourceType']}/{res['id']}"
    if "total" in b:
        assert isinstance(b["total"], int) and b["total"] >= 0, b["total"]


def _url_of(resp) -> str:
    return urllib.parse.unquote(str(resp.request.url))


def search(client, path: str, params=None, *, post: bool = False, headers: dict | None = None,
           what: str = "searchset") -> Result:
    """GET path?params (or POST path/_search with a form body); 200 searchset, validated."""
    if not path.startswith("/") and not path.startswith("http"):
        path = "/" + path
    if post:
        h = {"Content-Type": "application/x-www-form-urlencoded"}
        h.update(headers or {})
        r = client.post(path.rstrip("/") + "/_search", content=urllib.parse.urlencode(params or [], doseq=True), headers=h)
    else:
        r = client.get(path, params=params, headers=headers)
    url = _url_of(r) + (f" [form {urllib.parse.urlencode(params or [], doseq=True)}]" if post else "")
    b = fhir_json(r, 200, what=what)
    check_searchset(b, url)
    return Result(b, url, r.status_code)


def follow(client, url: str, what: str = "searchset-page") -> Result:
    r = client.get(url)
    b = fhir_json(r, 200, what=what)
    check_searchset(b, url)
    return Result(b, _url_of(r))


def search_error(client, path: str, params, *, headers: dict | None = None, statuses=(400,)) -> dict:
    """The search must fail with one of statuses and an OperationOutcome (validated)."""
    r = client.get(path if path.startswith("/") else "/" + path, params=params, headers=headers)
    return expect_outcome(r, statuses=statuses, what="search-error")


def assert_exact(res: Result, tag: Tag, expected_ids, *, ordered: bool = False) -> None:
    """The match entries are exactly expected_ids (a set, or a list when ordered)."""
    got = list(res.ids)
    if ordered:
        ok = got == list(expected_ids)
    else:
        ok = sorted(got) == sorted(expected_ids) and len(set(got)) == len(got)
    if not ok:
        exp = [tag.name(i) for i in expected_ids]
        gotn = [tag.name(i) for i in got]
        missing = sorted(set(exp) - set(gotn))
        extra = sorted(set(gotn) - set(exp))
        raise AssertionError(f"GET {res.url}\n  expected {exp if ordered else sorted(exp)}\n  got      "
                             f"{gotn if ordered else sorted(gotn)}\n  missing {missing}  extra {extra}")
    if res.total is not None and not res.link("next"):
        assert res.total == len(got), f"GET {res.url}: total {res.total} but {len(got)} matches on the only page"


def assert_bounds(res: Result, tag: Tag, must, must_not) -> None:
    got = set(res.ids)
    missing = sorted(tag.name(i) for i in set(must) - got)
    extra = sorted(tag.name(i) for i in got & set(must_not))
    assert not missing and not extra, (f"GET {res.url}\n  missing {missing}\n  must not match {extra}\n"
                                       f"  got {sorted(tag.name(i) for i in got)}")


def outcome_names(res: Result, param: str) -> bool:
    """Does some outcome entry name the parameter (diagnostics, details.text or expression)?"""
    for oo in res.outcomes:
        for i in oo.get("issue", []):
            blob = json.dumps([i.get("diagnostics"), (i.get("details") or {}).get("text"), i.get("expression"),
                               i.get("location")])
            if param in blob:
                return True
    return False


def ref(resource: dict) -> dict:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}


def cc(system: str | None, code: str | None, display: str | None = None, text: str | None = None) -> dict:
    coding = {}
    if system:
        coding["system"] = system
    if code:
        coding["code"] = code
    if display:
        coding["display"] = display
    out = {"coding": [coding]} if coding else {}
    if text:
        out["text"] = text
    return out


# The server applies its vbc-outcome-observation profile (subject, effective[x], value[x]
# required) to every Observation coded with one of these LOINC outcome labs (HbA1c, LDL).
OUTCOME_LABS = {"4548-4", "17856-6", "59261-8", "13457-7", "18262-6", "2089-1"}


def lab_extras(patient: dict, value: dict | None = None) -> dict:
    """What an outcome-lab Observation needs besides its code: subject, effective, value."""
    out = {"subject": ref(patient), "effectiveDateTime": "2024-06-01"}
    out["valueQuantity"] = value or {"value": 7.1, "system": UCUM, "code": "%", "unit": "%"}
    return out


def absolute(resource: dict) -> str:
    return f"{BASE_URL}/{resource['resourceType']}/{resource['id']}"


# ---------------------------------------------------------------------------
# Date ranges (R4 search.html#date and #prefix)
# ---------------------------------------------------------------------------

UTC = timezone.utc
MIN = datetime(1, 1, 1, tzinfo=UTC)
MAX = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
_DATE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,6}))?)?"
                   r"(Z|[+-]\d{2}:\d{2})?)?)?)?$")


def date_range(s: str) -> tuple[datetime, datetime]:
    """[start, end) of a FHIR date/dateTime/instant at its precision; no zone = UTC
    (the contract of the server under test: values without a zone are taken as UTC)."""
    m = _DATE.match(s)
    assert m, f"bad test date {s!r}"
    y, mo, d, hh, mi, ss, frac, tz = m.groups()
    y = int(y)
    if mo is None:
        return datetime(y, 1, 1, tzinfo=UTC), datetime(y + 1, 1, 1, tzinfo=UTC)
    mo = int(mo)
    if d is None:
        end = datetime(y + 1, 1, 1, tzinfo=UTC) if mo == 12 else datetime(y, mo + 1, 1, tzinfo=UTC)
        return datetime(y, mo, 1, tzinfo=UTC), end
    d = int(d)
    if hh is None:
        start = datetime(y, mo, d, tzinfo=UTC)
        return start, start + timedelta(days=1)
    if tz in (None, "Z"):
        zone = UTC
    else:
        sign = 1 if tz[0] == "+" else -1
        zone = timezone(sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6])))
    start = datetime(y, mo, d, int(hh), int(mi), int(ss or 0), tzinfo=zone)
    if ss is None:
        width = timedelta(minutes=1)
    elif frac:
        start += timedelta(microseconds=int(frac.ljust(6, "0")))
        width = timedelta(microseconds=10 ** (6 - len(frac)))
    else:
        width = timedelta(seconds=1)
    return start.astimezone(UTC), (start + width).astimezone(UTC)


def period_range(start: str | None, end: str | None) -> tuple[datetime, datetime]:
    return (date_range(start)[0] if start else MIN), (date_range(end)[1] if end else MAX)


def date_expect(prefix: str, value: str, targets: dict[str, tuple[datetime, datetime]],
                now: datetime | None = None) -> tuple[set[str], set[str]]:
    """(must match, must not match) names for `prefix value` against target ranges.

    R4 search.html#prefix, with S = the search range and T = the target range:
    eq S contains T; ne not eq; gt the range above S intersects T (T ends after S);
    lt the range below S intersects T (T starts before S); ge = gt or eq; le = lt or eq;
    sa T starts at or after the end of S; eb T ends at or before the start of S;
    ap is "approximately" (10% of the gap between now and the date): every target
    overlapping S must match, none that misses S widened by 10% of the largest gap."""
    ss, se = date_range(value)
    must, must_not = set(), set()
    for name, (ts, te) in targets.items():
        eq = ss <= ts and te <= se
        gt = te > se
        lt = ts < ss
        if prefix == "ap":
            now = now or datetime.now(UTC)
            w = 0.1 * max(abs(now - ss), abs(now - se))
            if ts < se and te > ss:
                must.add(name)
            elif not (ts < se + w and te > ss - w):
                must_not.add(name)
            continue
        hit = {"eq": eq, "ne": not eq, "gt": gt, "lt": lt, "ge": gt or eq, "le": lt or eq,
               "sa": ts >= se, "eb": te <= ss}[prefix]
        (must if hit else must_not).add(name)
    return must, must_not

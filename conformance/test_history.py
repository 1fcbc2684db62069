"""History: instance, type and system history Bundles, paging via next links."""
from __future__ import annotations

import time
import urllib.parse

import pytest

from fhirtest import FHIR_JSON, create, describe, expect_outcome, fhir_json, fhir_xml, unique

pytestmark = pytest.mark.area("history")

MAX_PAGES = 500


def patient(tag: str) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": "urn:conformance:hist", "value": tag}],
            "name": [{"family": "History"}]}


def put(client, res, **changes):
    body = dict(res, **changes)
    return fhir_json(client.put(f"/{res['resourceType']}/{res['id']}", json=body,
                                headers={"Content-Type": FHIR_JSON}), 200)


@pytest.fixture(scope="module")
def lifecycle(client):
    """A Patient created, updated twice and deleted: four versions."""
    a = create(client, patient(unique("h")))
    b = put(client, a, active=True)
    c = put(client, b, active=False)
    r = client.delete(f"/Patient/{a['id']}")
    assert r.status_code in (200, 204), describe(r)
    return {"id": a["id"], "versions": [a, b, c], "since": a["meta"]["lastUpdated"]}


def pages(client, url, params=None, what="history-page"):
    """Follow next links; yields every page (validated)."""
    seen_urls = set()
    for _ in range(MAX_PAGES):
        b = fhir_json(client.get(url, params=params), 200, what=what)
        params = None
        assert b["resourceType"] == "Bundle" and b["type"] == "history", b.get("type")
        yield b
        nxt = [l["url"] for l in b.get("link", []) if l.get("relation") == "next"]
        if not nxt:
            return
        assert nxt[0] not in seen_urls, f"next link loops: {nxt[0]}"
        seen_urls.add(nxt[0])
        url = nxt[0]
    pytest.fail(f"more than {MAX_PAGES} pages", pytrace=False)


def check_history_entry(e):
    assert e.get("request", {}).get("method") in ("POST", "PUT", "PATCH", "DELETE"), e
    assert e.get("request", {}).get("url"), e
    assert e.get("response", {}).get("status"), e
    if e["request"]["method"] == "DELETE":
        assert "resource" not in e, e
    else:
        assert e["resource"]["meta"]["versionId"], e


def test_instance_history_lists_all_versions_newest_first(client, lifecycle):
    b = fhir_json(client.get(f"/Patient/{lifecycle['id']}/_history"), 200, what="instance-history")
    assert b["type"] == "history"
    entries = b.get("entry", [])
    assert len(entries) == 4, [e.get("request") for e in entries]
    if "total" in b:
        assert b["total"] == 4
    for e in entries:
        check_history_entry(e)
    assert entries[0]["request"]["method"] == "DELETE"
    vids = [e["resource"]["meta"]["versionId"] for e in entries[1:]]
    assert vids == [v["meta"]["versionId"] for v in reversed(lifecycle["versions"])]
    for e, v in zip(entries[1:], reversed(lifecycle["versions"])):
        assert e["resource"] == v
    assert entries[-1]["request"]["method"] in ("POST", "PUT")
    for e in entries:
        assert e["fullUrl"].endswith(f"/Patient/{lifecycle['id']}"), e["fullUrl"]


def test_instance_history_paging(client, lifecycle):
    got = []
    n = 0
    for page in pages(client, f"/Patient/{lifecycle['id']}/_history", {"_count": "1"}):
        n += 1
        assert len(page.get("entry", [])) <= 1
        got += page.get("entry", [])
    assert n >= 4 and len(got) == 4, f"{n} pages, {len(got)} entries"
    full = fhir_json(client.get(f"/Patient/{lifecycle['id']}/_history"), 200)
    assert got == full["entry"]


def test_instance_history_in_xml(client, lifecycle):
    xml = fhir_xml(client.get(f"/Patient/{lifecycle['id']}/_history", params={"_format": "xml"}), 200,
                   what="instance-history-xml")
    assert xml.count(b"<entry>") == 4


def test_instance_history_since(client):
    a = create(client, patient(unique("s")))
    time.sleep(1.1)
    b = put(client, a, active=True)
    since = b["meta"]["lastUpdated"]
    h = fhir_json(client.get(f"/Patient/{a['id']}/_history", params={"_since": since}), 200, what="history-since")
    vids = [e["resource"]["meta"]["versionId"] for e in h.get("entry", [])]
    assert vids == [b["meta"]["versionId"]], vids


def test_instance_history_of_unknown_resource_is_404(client):
    expect_outcome(client.get(f"/Patient/{unique('nope')}/_history"), statuses=(404,))


def test_type_history_contains_all_versions_since(client, lifecycle):
    found = []
    for page in pages(client, "/Patient/_history", {"_since": lifecycle["since"], "_count": "50"},
                      what="type-history"):
        for e in page.get("entry", []):
            check_history_entry(e)
            assert "/Patient/" in e["fullUrl"], e["fullUrl"]
            if e["fullUrl"].endswith(f"/Patient/{lifecycle['id']}"):
                found.append(e["request"]["method"])
    assert len(found) == 4, found


def test_type_history_only_has_that_type(client):
    create(client, {"resourceType": "Observation", "status": "final", "code": {"text": "h"}})
    b = fhir_json(client.get("/Observation/_history", params={"_count": "20"}), 200, what="type-history-obs")
    for e in b.get("entry", []):
        assert "/Observation/" in e["fullUrl"] and e.get("resource", {"resourceType": "Observation"})[
            "resourceType"] == "Observation", e


def test_system_history_paging_via_next_links(client):
    t0 = None
    made = []
    for i in range(5):
        a = create(client, patient(unique("sys")))
        t0 = t0 or a["meta"]["lastUpdated"]
        made.append(a["id"])
    count = 0
    keys = []
    for page in pages(client, "/_history", {"_since": t0, "_count": "2"}, what="system-history"):
        count += 1
        es = page.get("entry", [])
        assert len(es) <= 2, f"page larger than _count=2: {len(es)}"
        for e in es:
            check_history_entry(e)
            vid = e.get("resource", {}).get("meta", {}).get("versionId") or e["response"].get("etag")
            keys.append((e["fullUrl"], vid, e["request"]["method"]))
    assert count >= 3, f"only {count} page(s) for >= 5 entries with _count=2"
    assert len(keys) == len(set(keys)), "an entry appears on two pages"
    ids = {k[0].rsplit("/", 1)[1] for k in keys}
    assert set(made) <= ids, f"missing from system history: {set(made) - ids}"


def test_system_history_is_newest_first(client):
    create(client, patient(unique("o")))
    b = fhir_json(client.get("/_history", params={"_count": "20"}), 200, what="system-history")
    stamps = [e.get("resource", {}).get("meta", {}).get("lastUpdated") or e["response"].get("lastModified")
              for e in b.get("entry", [])]
    stamps = [s for s in stamps if s]
    assert stamps == sorted(stamps, reverse=True), stamps


def test_history_next_links_are_absolute_and_reusable(client, lifecycle):
    b = fhir_json(client.get(f"/Patient/{lifecycle['id']}/_history", params={"_count": "2"}), 200)
    nxt = [l["url"] for l in b.get("link", []) if l["relation"] == "next"]
    assert nxt, b.get("link")
    u = urllib.parse.urlsplit(nxt[0])
    assert u.scheme in ("http", "https") and u.netloc, nxt[0]
    p1 = fhir_json(client.get(nxt[0]), 200)
    p2 = fhir_json(client.get(nxt[0]), 200)
    assert p1.get("entry") == p2.get("entry")


@pytest.mark.parametrize("since", ["garbage", "2024-13-01T00:00:00Z", "2024-01-01T25:00:00Z"])
def test_history_bad_since_is_400(client, since):
    expect_outcome(client.get("/_history", params={"_since": since}), statuses=(400,))


@pytest.mark.parametrize("count", ["-1", "abc", "1.5"])
def test_history_bad_count_is_400(client, count):
    expect_outcome(client.get("/Patient/_history", params={"_count": count}), statuses=(400,))


def test_history_count_zero(client, lifecycle):
    r = client.get(f"/Patient/{lifecycle['id']}/_history", params={"_count": "0"})
    b = fhir_json(r, 200, what="history-count-0")
    assert not b.get("entry"), "_count=0 must return no entries"

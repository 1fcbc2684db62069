"""Robustness: hostile input against every endpoint. Every answer must be a
4xx with a (valid) OperationOutcome, and the server must stay up."""
from __future__ import annotations

import json
import random

import httpx
import pytest

from fhirtest import (FHIR_JSON, FHIR_XML, HEALTH_URL, JSON_PATCH, assert_outcome_shape, describe, expect_outcome,
                      fhir_json, raw)

pytestmark = pytest.mark.area("robustness")

TARGET_ID = "x"  # PUT/PATCH target, created by the `target` fixture

BODY_ENDPOINTS = [
    ("POST", "/"),
    ("POST", "/Patient"),
    ("PUT", f"/Patient/{TARGET_ID}"),
    ("PATCH", f"/Patient/{TARGET_ID}"),
    ("POST", "/Patient/$validate"),
]

DEPTH = 10_000
VALID = {"resourceType": "Patient", "id": TARGET_ID, "name": [{"family": "Robust", "given": ["Ann"]}],
         "birthDate": "1970-01-01"}
VALID_JSON = json.dumps(VALID)
_rng = random.Random(20241122)
GARBAGE = bytes([0x00, 0xFF, 0xFE]) + _rng.randbytes(8189)
BIG = 40 * 1024 * 1024


def nested_arrays_json() -> bytes:
    return ('{"resourceType":"Patient","id":"x","extension":' + "[" * DEPTH + "]" * DEPTH + "}").encode()


def nested_objects_json() -> bytes:
    return ('{"resourceType":"Patient","id":"x","name":' + '{"a":' * DEPTH + "1" + "}" * DEPTH + "}").encode()


def nested_extensions_json() -> bytes:
    ext = '{"url":"http://example.org/e","extension":['
    return ('{"resourceType":"Patient","id":"x","extension":[' + ext * DEPTH + ']}' * DEPTH + "]}").encode()


def nested_xml() -> bytes:
    return ('<Patient xmlns="http://hl7.org/fhir"><id value="x"/>' + '<extension url="http://example.org/e">' * DEPTH
            + "</extension>" * DEPTH + "</Patient>").encode()


def nested_xhtml_xml() -> bytes:
    return ('<Patient xmlns="http://hl7.org/fhir"><id value="x"/><text><status value="generated"/>'
            '<div xmlns="http://www.w3.org/1999/xhtml">' + "<div>" * DEPTH + "</div>" * DEPTH +
            "</div></text></Patient>").encode()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">]>
<Patient xmlns="http://hl7.org/fhir"><id value="x"/><name><family value="&lol9;"/></name></Patient>"""

XXE = b"""<?xml version="1.0"?>
<!DOCTYPE Patient [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<Patient xmlns="http://hl7.org/fhir"><id value="x"/><name><family value="&xxe;"/></name></Patient>"""


def big_json() -> bytes:
    head = b'{"resourceType":"Patient","id":"x","name":[{"family":"'
    tail = b'"}]}'
    return head + b"a" * (BIG - len(head) - len(tail)) + tail


# name -> (content type or None, body factory). "JSON" means the endpoint's own
# JSON media type (application/json-patch+json for PATCH, FHIR JSON otherwise).
BODIES = {
    "malformed-json": ("JSON", lambda: b'{"resourceType": "Patient", name: [}'),
    "truncated-json": ("JSON", lambda: VALID_JSON[: len(VALID_JSON) // 2].encode()),
    "nested-arrays-json-10000": ("JSON", nested_arrays_json),
    "nested-objects-json-10000": ("JSON", nested_objects_json),
    "nested-extensions-json-10000": ("JSON", nested_extensions_json),
    "nested-xml-10000": (FHIR_XML, nested_xml),
    "nested-xhtml-10000": (FHIR_XML, nested_xhtml_xml),
    "xml-billion-laughs": (FHIR_XML, lambda: BILLION_LAUGHS),
    "xml-external-entity": (FHIR_XML, lambda: XXE),
    "body-40MB": ("JSON", big_json),
    "json-array": ("JSON", lambda: b'[{"resourceType":"Patient"}]'),
    "json-number": ("JSON", lambda: b"42"),
    "json-string": ("JSON", lambda: b'"Patient"'),
    "json-null": ("JSON", lambda: b"null"),
    "json-true": ("JSON", lambda: b"true"),
    "empty-body": ("JSON", lambda: b""),
    "binary-garbage": ("JSON", lambda: GARBAGE),
    "binary-garbage-as-xml": (FHIR_XML, lambda: GARBAGE),
    "invalid-utf8": ("JSON", lambda: b'{"resourceType":"Patient","id":"x","name":[{"family":"\xff\xfe\xc3"}]}'),
    "json-with-trailing-garbage": ("JSON", lambda: (VALID_JSON + "}}garbage").encode()),
    "json-sent-as-xml": (FHIR_XML, lambda: VALID_JSON.encode()),
    "xml-sent-as-json": ("JSON", lambda: b'<Patient xmlns="http://hl7.org/fhir"><id value="x"/></Patient>'),
    "content-type-text-plain": ("text/plain", lambda: VALID_JSON.encode()),
    "content-type-form": ("application/x-www-form-urlencoded", lambda: b"resourceType=Patient&id=x"),
    "content-type-multipart": ("multipart/form-data; boundary=zz",
                               lambda: b'--zz\r\nContent-Disposition: form-data; name="a"\r\n\r\n' + VALID_JSON.encode()
                               + b"\r\n--zz--\r\n"),
    "content-type-image": ("image/png", lambda: b"\x89PNG\r\n\x1a\n" + GARBAGE[:64]),
    "content-type-garbage": ("??;;==/", lambda: VALID_JSON.encode()),
}


def json_type_for(method: str) -> str:
    return JSON_PATCH if method == "PATCH" else FHIR_JSON


@pytest.fixture(scope="module")
def target(client):
    r = client.put(f"/Patient/{TARGET_ID}", json=VALID, headers={"Content-Type": FHIR_JSON})
    assert r.status_code in (200, 201), describe(r)
    return r.json()


def send(client: httpx.Client, method: str, path: str, ctype: str | None, body: bytes) -> httpx.Response:
    headers = {"Accept": FHIR_JSON}
    if ctype is not None:
        headers["Content-Type"] = ctype
    req = client.build_request(method, path, content=body, headers=headers)
    if ctype is None:
        req.headers.pop("Content-Type", None)
    return client.send(req)


def _is_validate_outcome(resp) -> bool:
    """$validate may answer 200 with an OperationOutcome listing the errors
    (R4 Resource-validate: '200 OK whether or not the resource is valid')."""
    if resp.status_code != 200 or not resp.headers.get("content-type", "").startswith(FHIR_JSON):
        return False
    oo = fhir_json(resp, 200, what="validate-outcome")
    assert_outcome_shape(oo)
    return True


@pytest.mark.parametrize("body_name", list(BODIES))
@pytest.mark.parametrize("method,path", BODY_ENDPOINTS, ids=[f"{m} {p}" for m, p in BODY_ENDPOINTS])
def test_hostile_body(client, target, method, path, body_name):
    ctype, factory = BODIES[body_name]
    if ctype == "JSON":
        ctype = json_type_for(method)
    body = factory()
    try:
        r = send(client, method, path, ctype, body)
    except httpx.TransportError as e:
        pytest.fail(f"{method} {path} with {body_name}: no HTTP answer ({e!r})", pytrace=False)
    assert r.status_code < 500, f"server error: {describe(r)}"
    if path.endswith("$validate") and _is_validate_outcome(r):
        return
    oo = expect_outcome(r, what=f"outcome-{body_name}")
    if body_name == "xml-external-entity":
        assert b"root:" not in r.content, "the external entity was resolved!"


@pytest.mark.parametrize("method,path", [("POST", "/Patient"), ("PUT", f"/Patient/{TARGET_ID}")])
def test_missing_content_type(client, target, method, path):
    """HTTP (RFC 9110 8.3) lets a recipient sniff a body without Content-Type, so
    both a 415/400 OperationOutcome and treating it as FHIR JSON are acceptable;
    a 5xx or a non-FHIR error is not."""
    r = send(client, method, path, None, VALID_JSON.encode())
    if r.status_code in (200, 201):
        fhir_json(r, 200, 201, what="no-content-type")
    else:
        expect_outcome(r, statuses=(400, 415), what="outcome-no-content-type")


def test_body_40mb_is_refused_before_it_is_stored(client, target):
    got = fhir_json(client.get(f"/Patient/{TARGET_ID}"), 200)
    assert len(json.dumps(got)) < 1024 * 1024, "a 40 MB body was stored"


HOSTILE_IDS = {
    "long-5000": "a" * 5000,
    "long-70000": "b" * 70000,
    "id-65-chars": "c" * 65,
    "dot-dot-slash-encoded": "..%2F..%2Fetc%2Fpasswd",
    "dot-dot": "..",
    "dot-dot-encoded": "%2e%2e",
    "nul": "a%00b",
    "unicode": "%C3%A9t%C3%A9",
    "emoji": "%F0%9F%A9%BA",
    "invalid-utf8": "%FF%FE",
    "bad-percent": "%zz",
    "space": "a%20b",
    "semicolon": "a;b",
    "quote": "a%22%3Cscript%3E",
    "backslash": "..%5C..%5Cwin",
}

ID_REQUESTS = [
    ("GET", "/Patient/{id}"),
    ("PUT", "/Patient/{id}"),
    ("PATCH", "/Patient/{id}"),
    ("DELETE", "/Patient/{id}"),
    ("GET", "/Patient/{id}/_history"),
    ("GET", "/Patient/{id}/_history/1"),
    ("GET", f"/Patient/{TARGET_ID}/_history/{{id}}"),
]


@pytest.mark.parametrize("id_name", list(HOSTILE_IDS))
@pytest.mark.parametrize("method,template", ID_REQUESTS, ids=[f"{m} {t}" for m, t in ID_REQUESTS])
def test_hostile_id(target, method, template, id_name):
    hostile = HOSTILE_IDS[id_name]
    path = template.replace("{id}", hostile)
    body, headers = None, {}
    if method == "PUT":
        body, headers = json.dumps(dict(VALID, id=hostile)).encode(), {"Content-Type": FHIR_JSON}
    elif method == "PATCH":
        body = b'[{"op":"replace","path":"/active","value":true}]'
        headers = {"Content-Type": JSON_PATCH}
    r = raw(method, path, body, headers)
    assert r.status_code < 500, f"server error: {describe(r)}"
    expect_outcome(r, what=f"outcome-id-{id_name}")


RAW_PATHS = [
    ("GET", "/Patient/../Patient/nonexistent-zz"),
    ("GET", "/Patient/./nonexistent-zz"),
    ("GET", "/Patient//nonexistent-zz"),
    ("GET", "/Patient/nonexistent-zz/../../_history"),
    ("DELETE", "/Patient/../../etc/passwd"),
    ("PUT", "/Patient/../Patient/nonexistent-zz"),
]


@pytest.mark.parametrize("method,path", RAW_PATHS, ids=[f"{m} {p}" for m, p in RAW_PATHS])
def test_dot_segments_in_raw_path(target, method, path):
    body, headers = None, {}
    if method == "PUT":
        body, headers = json.dumps(dict(VALID, id="nonexistent-zz")).encode(), {"Content-Type": FHIR_JSON}
    r = raw(method, path, body, headers)
    if method == "PUT" and r.status_code in (200, 201):
        pytest.fail(f"a PUT through '..' was applied: {describe(r)}", pytrace=False)
    if r.status_code == 200 and method == "GET" and path.endswith("/_history"):
        # normalised to /_history by the server: acceptable only as a valid Bundle
        fhir_json(r, 200)
        return
    expect_outcome(r, what="outcome-dot-segments")


HOSTILE_QUERIES = [
    ("/_history", "_since=garbage", (400,)),
    ("/_history", "_since=%00", (400,)),
    ("/_history", "_since=2024-01-01T00:00:00Z%00", (400,)),
    ("/_history", "_since=%C3%A9", (400,)),
    ("/_history", "_count=-1", (400,)),
    ("/_history", "_count=%00", (400,)),
    ("/Patient", "_count=-1", (400,)),
    ("/Patient", "_count=..%2F", (400,)),
    ("/Patient", "_count=99999999999999999999999999", (200, 400)),
    ("/Patient", "_id=" + "a" * 5000, (200, 400)),
    ("/Patient", "_id=..%2F..%2Fetc", (200, 400)),
    ("/Patient", "_id=a%00b", (200, 400)),
    ("/Patient", "identifier=%00%7C%00", (200, 400)),
    ("/Patient", "identifier=%F0%9F%A9%BA%7C%C3%A9", (200, 400)),
    ("/Patient", "identifier=%FF%FE", (200, 400)),
    ("/Patient", "_id=%zz", (200, 400)),
    ("/Patient", "%00=1", (200, 400)),
    ("/Patient", "_format=%00", (200, 400, 406, 415)),
    ("/Patient/_history", "_since=1999-99-99", (400,)),
    ("/metadata", "_format=garbage", (200, 400, 406, 415)),
]


@pytest.mark.parametrize("path,query,statuses", HOSTILE_QUERIES, ids=[f"{p}?{q[:40]}" for p, q, _ in HOSTILE_QUERIES])
def test_hostile_query(target, path, query, statuses):
    r = raw("GET", f"{path}?{query}")
    assert r.status_code in statuses, f"expected {statuses}: {describe(r)}"
    if r.status_code == 200:
        got = fhir_json(r, 200, what="hostile-query-answer")
        assert got["resourceType"] in ("Bundle", "CapabilityStatement"), got["resourceType"]
    else:
        expect_outcome(r, what="outcome-hostile-query")


WRONG_METHODS = [
    ("DELETE", "/"),
    ("PUT", "/"),
    ("PATCH", "/"),
    ("POST", f"/Patient/{TARGET_ID}"),
    ("PUT", "/metadata"),
    ("DELETE", "/metadata"),
    ("POST", "/_history"),
    ("DELETE", f"/Patient/{TARGET_ID}/_history/1"),
    ("GET", "/Patient/x/_history/1/extra"),
    ("GET", "/no/such/route/at/all"),
    ("GET", "/Patient/$no-such-operation"),
]


@pytest.mark.parametrize("method,path", WRONG_METHODS, ids=[f"{m} {p}" for m, p in WRONG_METHODS])
def test_wrong_method_or_route(target, method, path):
    body = VALID_JSON.encode() if method in ("POST", "PUT", "PATCH") else None
    headers = {"Content-Type": JSON_PATCH if method == "PATCH" else FHIR_JSON} if body else {}
    r = raw(method, path, body, headers)
    expect_outcome(r, what="outcome-wrong-method")


def test_bad_if_match_header(client, target):
    for v in ("garbage", 'W/"', 'W/"abc"', '"1"x'):
        r = client.put(f"/Patient/{TARGET_ID}", json=VALID, headers={"Content-Type": FHIR_JSON, "If-Match": v})
        expect_outcome(r, statuses=(400, 409, 412), what="outcome-if-match")


def test_unsupported_accept_is_not_a_crash(client, target):
    r = client.get(f"/Patient/{TARGET_ID}", headers={"Accept": "application/x-garbage"})
    assert r.status_code in (200, 406), describe(r)
    if r.status_code == 200:
        fhir_json(r, 200)
    else:
        expect_outcome(r, statuses=(406,))


def test_server_still_healthy_after_all_of_it(client):
    with httpx.Client(timeout=30) as c:
        r = c.get(HEALTH_URL)
    assert r.status_code == 200, describe(r)
    cap = fhir_json(client.get("/metadata"), 200)
    assert cap["resourceType"] == "CapabilityStatement"
    got = fhir_json(client.get(f"/Patient/{TARGET_ID}"), 200)
    assert got["name"][0]["family"] == "Robust"

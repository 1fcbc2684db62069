"""Shared helpers of the black-box conformance suite.

Everything here talks to the server over HTTP only; the server's source tree
is never read. The base URL comes from the environment variable FHIR_BASE_URL.
"""
from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import tempfile
import threading
import urllib.parse
from pathlib import Path

import httpx
import pytest

BASE_URL = os.environ.get("FHIR_BASE_URL", "http://127.0.0.1:8080").rstrip("/")
HEALTH_URL = os.environ.get("FHIR_HEALTH_URL", BASE_URL + "/health")
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
JSON_PATCH = "application/json-patch+json"

HERE = Path(__file__).resolve().parent
VALIDATE_JS = HERE / "validate.js"

AREAS = [
    "capability",
    "read/write",
    "history",
    "transactions",
    "search",
    "validation",
    "robustness",
    "r4-examples",
    "synthea",
    "reports",
    "smart",
]

# Modules that may skip as a whole at import (pytest.skip(allow_module_level=True)):
# such a skip has no test item to carry an area marker, so it is counted here.
MODULE_AREAS = {"test_smart.py": "smart"}

# Where every resource the server returned is stored for the independent
# (Node) validators run by test_zz_independent_validation.py.
ARTIFACTS = Path(os.environ.get("CONFORMANCE_ARTIFACTS") or tempfile.mkdtemp(prefix="fhir-conformance-"))
ARTIFACTS.mkdir(parents=True, exist_ok=True)

# One record per stored file: {"file", "nodeid", "area", "what"}
COLLECTED: list[dict] = []
_seq = itertools.count(1)
_lock = threading.Lock()

# Set by an autouse fixture in conftest.py: the test now running.
CURRENT = {"nodeid": "<no test>", "area": "unknown"}


# ---------------------------------------------------------------------------
# Validation with fhir.resources (pydantic R4 models)
# ---------------------------------------------------------------------------

def _pydantic_whitelisted(err: dict, resource) -> str | None:
    """Return why a fhir.resources error is a validator limitation, or None.

    Only documented limitations of fhir.resources 6.4.0 are listed here.
    """
    # fhir.resources models the FHIR `url` type as pydantic AnyUrl, which
    # demands a scheme. FHIR R4 allows relative URLs there (the `url` regex is
    # \\S*, and Attachment.url is explicitly "interpreted in the same way as a
    # resource reference" when relative, e.g. the official examples use
    # "Binary/f006" and "library-example-content.cql").
    if err.get("type") == "value_error.url.scheme":
        return "fhir.resources requires a URL scheme; FHIR R4 url values may be relative"
    return None


def pydantic_errors(resource) -> tuple[list[str], list[str]]:
    """Validate a JSON resource with fhir.resources; (errors, ignored)."""
    from fhir.resources import get_fhir_model_class
    from pydantic import ValidationError

    if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
        return ["not a FHIR resource (no resourceType)"], []
    try:
        model = get_fhir_model_class(resource["resourceType"])
    except Exception as e:  # unknown type
        return [f"unknown resourceType {resource['resourceType']!r}: {e}"], []
    try:
        model.parse_obj(resource)
    except ValidationError as e:
        errors, ignored = [], []
        for err in e.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()))
            text = f"{loc}: {err.get('msg')} ({err.get('type')})"
            why = _pydantic_whitelisted(err, resource)
            (ignored if why else errors).append(text if not why else f"{text} [ignored: {why}]")
        return errors, ignored
    return [], []


def pydantic_errors_xml(xml: bytes | str) -> list[str]:
    from fhir.resources import get_fhir_model_class
    from pydantic import ValidationError
    from lxml import etree

    data = xml.encode() if isinstance(xml, str) else xml
    try:
        root = etree.fromstring(data, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except Exception as e:
        return [f"not well-formed XML: {e}"]
    tag = etree.QName(root).localname
    if etree.QName(root).namespace != "http://hl7.org/fhir":
        return [f"root element {root.tag} is not in the FHIR namespace"]
    try:
        model = get_fhir_model_class(tag)
    except Exception as e:
        return [f"unknown resource element {tag!r}: {e}"]
    try:
        model.parse_raw(data, content_type="text/xml")
    except ValidationError as e:
        errors = []
        for err in e.errors():
            if _pydantic_whitelisted(err, None):
                continue
            loc = ".".join(str(x) for x in err.get("loc", ()))
            errors.append(f"{loc}: {err.get('msg')} ({err.get('type')})")
        return errors
    except Exception as e:
        return [f"fhir.resources could not read the XML: {e!r}"]
    return []


def _store(content: bytes, ext: str, what: str) -> Path:
    with _lock:
        n = next(_seq)
    safe = re.sub(r"[^A-Za-z0-9]+", "-", f"{CURRENT['nodeid'].split('::')[-1]}-{what}")[:90].strip("-")
    path = ARTIFACTS / f"{n:05d}-{safe}.{ext}"
    path.write_bytes(content)
    COLLECTED.append({"file": str(path), "nodeid": CURRENT["nodeid"], "area": CURRENT["area"], "what": what})
    return path


def check(resource, what: str = "") -> dict:
    """Validate a server-returned JSON resource now (fhir.resources) and keep it
    for the Node validators (fhir.js + @medplum/core) run at session end.

    Fails the current test naming the stored file and every message."""
    label = what or (resource.get("resourceType", "?") if isinstance(resource, dict) else "?")
    path = _store(json.dumps(resource, ensure_ascii=False, indent=1).encode("utf-8"), "json", label)
    errors, _ignored = pydantic_errors(resource)
    if errors:
        pytest.fail(f"fhir.resources rejects the server's {label} ({path}):\n  " + "\n  ".join(errors), pytrace=False)
    return resource


validated = check


def check_xml(xml: bytes | str, what: str = "") -> bytes:
    """Same as check() for an XML resource returned by the server."""
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    path = _store(data, "xml", what or "xml")
    errors = pydantic_errors_xml(data)
    if errors:
        pytest.fail(f"fhir.resources rejects the server's XML {what} ({path}):\n  " + "\n  ".join(errors), pytrace=False)
    return data


# ---------------------------------------------------------------------------
# HTTP helpers
# ---------------------------------------------------------------------------

def new_client(**kw) -> httpx.Client:
    headers = {"Accept": FHIR_JSON}
    headers.update(kw.pop("headers", {}))
    return httpx.Client(base_url=BASE_URL, headers=headers, timeout=httpx.Timeout(180.0), **kw)


def describe(resp: httpx.Response) -> str:
    body = resp.content[:1500].decode("utf-8", "replace")
    return f"{resp.request.method} {resp.request.url} -> {resp.status_code} {resp.headers.get('content-type', '')}\n{body}"


def media_type(resp: httpx.Response) -> str:
    return resp.headers.get("content-type", "").split(";")[0].strip().lower()


def fhir_json(resp: httpx.Response, *statuses: int, what: str = "") -> dict:
    """Assert one of the statuses and a FHIR JSON body; validate and return it."""
    if statuses:
        assert resp.status_code in statuses, f"expected {statuses}: {describe(resp)}"
    assert media_type(resp) == FHIR_JSON, f"expected Content-Type {FHIR_JSON}: {describe(resp)}"
    try:
        body = resp.json()
    except Exception as e:
        pytest.fail(f"body is not JSON ({e}): {describe(resp)}", pytrace=False)
    return check(body, what)


def fhir_xml(resp: httpx.Response, *statuses: int, what: str = "") -> bytes:
    if statuses:
        assert resp.status_code in statuses, f"expected {statuses}: {describe(resp)}"
    assert media_type(resp) == FHIR_XML, f"expected Content-Type {FHIR_XML}: {describe(resp)}"
    return check_xml(resp.content, what)


ISSUE_TYPES = {
    "invalid", "structure", "required", "value", "invariant", "security", "login", "unknown", "expired",
    "forbidden", "suppressed", "processing", "not-supported", "duplicate", "multiple-matches", "not-found",
    "deleted", "too-long", "code-invalid", "extension", "too-costly", "business-rule", "conflict",
    "transient", "lock-error", "no-store", "exception", "timeout", "incomplete", "throttled", "informational",
}


def assert_outcome_shape(oo: dict, need_error: bool = True) -> None:
    assert oo.get("resourceType") == "OperationOutcome", f"not an OperationOutcome: {json.dumps(oo)[:800]}"
    issues = oo.get("issue") or []
    assert issues, f"OperationOutcome without issues: {oo}"
    for i in issues:
        assert i.get("severity") in ("fatal", "error", "warning", "information"), i
        assert i.get("code") in ISSUE_TYPES, f"issue code not in IssueType: {i}"
    if need_error:
        assert any(i["severity"] in ("fatal", "error") for i in issues), f"no error issue in {oo}"


def expect_outcome(resp: httpx.Response, statuses=None, what: str = "OperationOutcome") -> dict:
    """Assert a 4xx (or one of statuses) answer whose body is an OperationOutcome
    with at least one error; validates it and returns it (as JSON)."""
    if statuses is None:
        assert 400 <= resp.status_code < 500, f"expected a 4xx answer: {describe(resp)}"
    else:
        assert resp.status_code in statuses, f"expected {statuses}: {describe(resp)}"
    mt = media_type(resp)
    if mt == FHIR_XML:
        check_xml(resp.content, what)
        assert b"<OperationOutcome" in resp.content, describe(resp)
        return {"resourceType": "OperationOutcome", "xml": True}
    assert mt == FHIR_JSON, f"an error answer must be a FHIR OperationOutcome (got {mt!r}): {describe(resp)}"
    try:
        oo = resp.json()
    except Exception:
        pytest.fail(f"error body is not JSON: {describe(resp)}", pytrace=False)
    check(oo, what)
    assert_outcome_shape(oo)
    return oo


def raw_request(method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 120.0) -> tuple[int, dict, bytes]:
    """Send a request without any client-side URL normalisation (for '..',
    '%00' and friends). path is appended verbatim to the base URL's path."""
    u = urllib.parse.urlsplit(BASE_URL)
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(u.hostname, u.port or (443 if u.scheme == "https" else 80), timeout=timeout)
    try:
        conn.putrequest(method, u.path + path, skip_accept_encoding=True)
        hdrs = {"Accept": FHIR_JSON}
        hdrs.update(headers or {})
        if body is not None:
            hdrs["Content-Length"] = str(len(body))
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders()
        if body:
            conn.send(body)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


class RawResponse:
    """Wrap a raw_request answer in the small subset of httpx.Response used here."""

    def __init__(self, method, path, status, headers, content):
        self.status_code = status
        self.headers = headers
        self.content = content
        self.request = type("Req", (), {"method": method, "url": BASE_URL + path})()

    def json(self):
        return json.loads(self.content)


def raw(method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> RawResponse:
    s, h, c = raw_request(method, path, body, headers)
    return RawResponse(method, path, s, h, c)


def create(client: httpx.Client, resource: dict, what: str = "") -> dict:
    r = client.post(f"/{resource['resourceType']}", content=json.dumps(resource),
                    headers={"Content-Type": FHIR_JSON})
    return fhir_json(r, 201, what=what or f"created {resource['resourceType']}")


def unique(prefix: str = "c") -> str:
    import uuid
    return f"{prefix}-{uuid.uuid4().hex[:16]}"

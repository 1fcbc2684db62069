"""Round trip of the official FHIR R4 JSON examples, in JSON and in XML.

Examples come from $FHIR_EXAMPLES_DIR (default: ../shared/reference/fhir-r4/examples
relative to the repository root). Examples that are genuinely invalid are listed
in KNOWN_REJECTIONS.md: the server must reject those (4xx + OperationOutcome);
every other example must be accepted and read back unchanged apart from
meta.versionId / meta.lastUpdated / meta.source.
"""
from __future__ import annotations

import decimal
import json
import os
import re
from pathlib import Path

import pytest

from fhirtest import FHIR_JSON, FHIR_XML, HERE, describe, expect_outcome, fhir_json, fhir_xml

pytestmark = pytest.mark.area("r4-examples")

EXAMPLES_DIR = Path(os.environ.get("FHIR_EXAMPLES_DIR") or (HERE.parent.parent / "shared" / "reference" / "fhir-r4" /
                                                              "examples"))
EXAMPLES = sorted(p.name for p in EXAMPLES_DIR.glob("*.json")) if EXAMPLES_DIR.is_dir() else []


def known_rejections() -> dict[str, str]:
    """File name -> reason, from the table rows of KNOWN_REJECTIONS.md."""
    out = {}
    path = HERE / "KNOWN_REJECTIONS.md"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"^\|\s*`?([A-Za-z0-9_.\-]+\.json)`?\s*\|(.*)\|\s*$", line)
            if m:
                out[m.group(1)] = m.group(2).strip()
    return out


KNOWN = known_rejections()
IGNORED_META = ("versionId", "lastUpdated", "source")


class Num:
    """A JSON number compared with its precision: 1.50 != 1.5 (FHIR decimals keep
    their significant digits), while 1E-22 == 1e-22 (same digits and exponent)."""
    __slots__ = ("lit", "key")

    def __init__(self, lit):
        self.lit = lit
        self.key = decimal.Decimal(lit).as_tuple()

    def __eq__(self, other):
        return isinstance(other, Num) and self.key == other.key

    def __repr__(self):
        return self.lit


def load_exact(text: str):
    return json.loads(text, parse_float=Num, parse_int=Num)


def comparable(res: dict) -> dict:
    out = {k: v for k, v in res.items() if k not in ("id", "meta")}
    meta = {k: v for k, v in (res.get("meta") or {}).items() if k not in IGNORED_META}
    if meta:
        out["meta"] = meta
    return out


def diff(a, b, path="") -> list[str]:
    if type(a) is not type(b):
        return [f"{path or '/'}: {a!r:.120} != {b!r:.120}"]
    if isinstance(a, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{path}.{k}: dropped by the server")
            elif k not in a:
                out.append(f"{path}.{k}: added by the server: {b[k]!r:.120}")
            else:
                out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items became {len(b)}"]
        out = []
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, f"{path}[{i}]")
        return out
    return [] if a == b else [f"{path}: {a!r:.160} became {b!r:.160}"]


def example(name: str) -> tuple[dict, str]:
    text = (EXAMPLES_DIR / name).read_text(encoding="utf-8")
    return json.loads(text), text


def test_examples_are_available():
    if not EXAMPLES:
        pytest.skip(f"no R4 examples in {EXAMPLES_DIR} (set FHIR_EXAMPLES_DIR)")
    assert not set(KNOWN) - set(EXAMPLES), f"KNOWN_REJECTIONS.md lists unknown files: {set(KNOWN) - set(EXAMPLES)}"


@pytest.fixture(scope="module")
def accepted_types(capability):
    return {r["type"] for rest in capability.get("rest", []) for r in rest.get("resource", [])
            if {"create", "update"} & {i["code"] for i in r.get("interaction", [])}}


def put_example(client, res, text):
    rt = res["resourceType"]
    if res.get("id"):
        return client.put(f"/{rt}/{res['id']}", content=text.encode("utf-8"), headers={"Content-Type": FHIR_JSON})
    return client.post(f"/{rt}", content=text.encode("utf-8"), headers={"Content-Type": FHIR_JSON})


@pytest.mark.parametrize("name", EXAMPLES)
def test_json_round_trip(client, accepted_types, name):
    res, text = example(name)
    if res["resourceType"] not in accepted_types:
        pytest.skip(f"{res['resourceType']} is not accepted by the server (CapabilityStatement)")
    r = put_example(client, res, text)
    if name in KNOWN:
        assert r.status_code >= 400, f"{name} is genuinely invalid ({KNOWN[name]}) but was accepted: {describe(r)}"
        expect_outcome(r, what=f"rejection-{name}")
        return
    assert r.status_code in (200, 201), f"{name} rejected: {describe(r)}"
    created = fhir_json(r, 200, 201, what=f"stored-{name}")
    rid = created["id"]
    if res.get("id"):
        assert rid == res["id"]
    got_resp = client.get(f"/{res['resourceType']}/{rid}")
    got = fhir_json(got_resp, 200, what=f"read-{name}")
    d = diff(comparable(load_exact(text)), comparable(load_exact(got_resp.text)))
    assert not d, f"{name}: the server changed the example:\n  " + "\n  ".join(d[:40])


@pytest.mark.parametrize("name", EXAMPLES)
def test_xml_round_trip(client, accepted_types, name):
    res, text = example(name)
    if res["resourceType"] not in accepted_types:
        pytest.skip(f"{res['resourceType']} is not accepted by the server")
    if name in KNOWN:
        pytest.skip(f"known invalid example: {KNOWN[name]}")
    rt = res["resourceType"]
    r = put_example(client, res, text)
    assert r.status_code in (200, 201), f"{name} rejected: {describe(r)}"
    rid = r.json()["id"]
    xr = client.get(f"/{rt}/{rid}", params={"_format": "xml"})
    xml = fhir_xml(xr, 200, what=f"xml-{name}")
    pr = client.post(f"/{rt}", content=xml, headers={"Content-Type": FHIR_XML, "Accept": FHIR_JSON})
    assert pr.status_code == 201, f"{name}: the server's own XML was not accepted back: {describe(pr)}"
    new = fhir_json(pr, 201, what=f"stored-from-xml-{name}")
    back = client.get(f"/{rt}/{new['id']}")
    fhir_json(back, 200, what=f"read-after-xml-{name}")
    d = diff(comparable(load_exact(text)), comparable(load_exact(back.text)))
    assert not d, f"{name}: JSON -> server XML -> server JSON changed the example:\n  " + "\n  ".join(d[:40])

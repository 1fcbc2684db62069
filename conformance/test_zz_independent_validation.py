"""Runs last: validates every resource the server returned during the session
with two independent Node validators (fhir.js 4.12.0 and @medplum/core 4.5.2,
see validate.js). One test per area, so a server answer that fails the
independent validators counts as a failure of the area that received it."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

import fhirtest

_results: dict | None = None


def run_validators() -> dict:
    """Run validate.js once over all collected files; {file: result}."""
    global _results
    if _results is not None:
        return _results
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not on PATH: the independent validators cannot run", pytrace=False)
    if not (fhirtest.HERE / "node_modules" / "fhir").is_dir():
        pytest.fail("conformance/node_modules is missing: run `npm ci` in conformance/", pytrace=False)
    files = [c["file"] for c in fhirtest.COLLECTED]
    _results = {}
    if not files:
        return _results
    # validate.js takes paths on argv; pass the artifacts directory (all files)
    proc = subprocess.run([node, str(fhirtest.VALIDATE_JS), str(fhirtest.ARTIFACTS)],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode not in (0, 1):
        pytest.fail(f"validate.js failed ({proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line:
            r = json.loads(line)
            _results[r["file"]] = r
    return _results


def fmt(msgs: list) -> str:
    return "; ".join(f"{m.get('location', '')}: {m.get('message', '')}" for m in msgs)


@pytest.mark.parametrize("area", [pytest.param(a, marks=pytest.mark.area(a)) for a in fhirtest.AREAS])
def test_independent_validation(area):
    results = run_validators()
    mine = [c for c in fhirtest.COLLECTED if c["area"] == area]
    if not mine:
        pytest.skip(f"no server responses were collected for {area}")
    problems = []
    missing = []
    for c in mine:
        r = results.get(c["file"])
        if r is None:
            missing.append(c["file"])
            continue
        if r["fhir"] or r["medplum"]:
            lines = [f"{c['file']} (from {c['nodeid']}, {c['what']}):"]
            if r["fhir"]:
                lines.append(f"    fhir.js: {fmt(r['fhir'])}")
            if r["medplum"]:
                lines.append(f"    @medplum/core: {fmt(r['medplum'])}")
            problems.append("\n".join(lines))
    assert not missing, f"validate.js produced no result for: {missing[:20]}"
    assert not problems, (f"{len(problems)} of {len(mine)} server responses in area {area!r} fail the "
                          f"independent validators:\n" + "\n".join(problems[:200]))

"""pytest wiring of the black-box FHIR R4 conformance suite.

* base URL: env FHIR_BASE_URL (default http://127.0.0.1:8080)
* fixture `client`: one httpx.Client for the session
* every resource the server returns goes through fhirtest.check() (fhir.resources
  now, fhir.js + @medplum/core at the end in test_zz_independent_validation.py)
* a per-area passed/failed table is printed at the end of the run
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fhirtest  # noqa: E402
from fhirtest import check, check_xml, validated  # noqa: E402,F401  (helpers for the test modules)

AREA_BY_NODEID: dict[str, str] = {}


def pytest_sessionstart(session):
    """Fail fast, with one clear message, when the server is not reachable."""
    if session.config.option.collectonly:
        return
    import httpx
    try:
        with httpx.Client(timeout=15) as c:
            c.get(fhirtest.BASE_URL + "/metadata")
    except httpx.TransportError as e:
        pytest.exit(f"cannot reach the FHIR server at {fhirtest.BASE_URL} ({e!r}); set FHIR_BASE_URL", returncode=3)


def pytest_configure(config):
    config.addinivalue_line("markers", "area(name): the conformance area a test belongs to")


def pytest_report_header(config):
    return [f"FHIR base URL: {fhirtest.BASE_URL}", f"artifacts: {fhirtest.ARTIFACTS}"]


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        m = item.get_closest_marker("area")
        area = m.args[0] if m else "unknown"
        AREA_BY_NODEID[item.nodeid] = area
        item.user_properties.append(("area", area))
    # the independent validation of everything collected must run last
    items.sort(key=lambda it: 1 if "test_zz_independent_validation" in it.nodeid else 0)


def pytest_collectreport(report):
    # a module skipped as a whole has no items to carry an area marker
    if report.skipped and report.nodeid in fhirtest.MODULE_AREAS:
        AREA_BY_NODEID[report.nodeid] = fhirtest.MODULE_AREAS[report.nodeid]


@pytest.fixture(autouse=True)
def _current_test(request):
    fhirtest.CURRENT["nodeid"] = request.node.nodeid
    fhirtest.CURRENT["area"] = AREA_BY_NODEID.get(request.node.nodeid, "unknown")
    yield
    fhirtest.CURRENT["nodeid"] = "<no test>"


@pytest.fixture(scope="session")
def client():
    with fhirtest.new_client() as c:
        yield c


@pytest.fixture(scope="session")
def capability(client):
    r = client.get("/metadata")
    assert r.status_code == 200, fhirtest.describe(r)
    return r.json()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    counts = defaultdict(lambda: {"passed": 0, "failed": 0, "skipped": 0})
    seen = set()
    for key in ("passed", "failed", "error", "skipped", "xfailed", "xpassed"):
        for rep in terminalreporter.stats.get(key, []):
            nodeid = getattr(rep, "nodeid", None)
            if nodeid is None:
                continue
            area = AREA_BY_NODEID.get(nodeid, "unknown")
            # a test counts once: a failure in setup/call/teardown makes it failed
            if key in ("failed", "error"):
                if (nodeid, "failed") in seen:
                    continue
                if (nodeid, "passed") in seen:
                    counts[area]["passed"] -= 1
                seen.add((nodeid, "failed"))
                counts[area]["failed"] += 1
            elif key in ("passed", "xfailed", "xpassed"):
                if getattr(rep, "when", "call") != "call" or (nodeid, "failed") in seen:
                    continue
                seen.add((nodeid, "passed"))
                counts[area]["passed"] += 1
            elif key == "skipped":
                seen.add((nodeid, "skipped"))
                counts[area]["skipped"] += 1
    tr = terminalreporter
    tr.write_sep("=", "conformance areas")
    tr.write_line(f"{'area':<14}{'passed':>8}{'failed':>8}{'skipped':>9}")
    tot = {"passed": 0, "failed": 0, "skipped": 0}
    for area in fhirtest.AREAS + sorted(set(counts) - set(fhirtest.AREAS)):
        c = counts.get(area, {"passed": 0, "failed": 0, "skipped": 0})
        for k in tot:
            tot[k] += c[k]
        tr.write_line(f"{area:<14}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>9}")
    tr.write_line(f"{'total':<14}{tot['passed']:>8}{tot['failed']:>8}{tot['skipped']:>9}")
    tr.write_line(f"server responses kept for the independent validators: {fhirtest.ARTIFACTS}")

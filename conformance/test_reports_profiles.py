"""Reports area: the Da Vinci VBPR / DEQM MeasureReport profiles.

Each VBPR example MeasureReport (copied from the VBPR reference examples into
data/vbpr-examples/) is PUT to the server, read back, and the read-back
resource is validated by @medplum/core 4.5.2 (validate.js --profiles) against
the base R4 definitions and the profile its meta.profile claims, loaded from
the StructureDefinitions in ../profiles/ (or $VBC_PROFILES_DIR). Any
error-level issue fails the test. One negative check per profile: a copy with
an element the profile requires removed must be reported invalid by the same
validation.

The DEQM Individual and Subject-list profiles are loaded (and their snapshots
built) but have no example in the VBPR IG, so they get no instance check.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import fhirtest
from fhirtest import FHIR_JSON, describe

pytestmark = pytest.mark.area("reports")

PROFILES_DIR = Path(os.environ.get("VBC_PROFILES_DIR") or (fhirtest.HERE.parent / "profiles"))
EXAMPLES_DIR = fhirtest.HERE / "data" / "vbpr-examples"
KNOWN = fhirtest.HERE / "KNOWN_REJECTIONS.md"

VBPR = "http://hl7.org/fhir/us/davinci-vbpr/StructureDefinition/"
DEQM = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/"
PERF = VBPR + "vbp-performance-measurereport"
QUAL = VBPR + "vbp-quality-measurereport"
SUMMARY = DEQM + "summary-measurereport-deqm"

EXAMPLES = sorted(EXAMPLES_DIR.glob("MeasureReport-*.json"))


def known_rejections() -> dict[str, str]:
    """`| vbpr:FILE | reason |` rows of KNOWN_REJECTIONS.md."""
    out = {}
    if KNOWN.is_file():
        for m in re.finditer(r"^\|\s*vbpr:([^|\s]+)\s*\|\s*(.+?)\s*\|\s*$", KNOWN.read_text(), re.M):
            out[m.group(1)] = m.group(2)
    return out


def need_profiles():
    if not PROFILES_DIR.is_dir():
        pytest.skip(f"profiles directory {PROFILES_DIR} is missing (set VBC_PROFILES_DIR)")
    names = {p.name for p in PROFILES_DIR.iterdir()}
    want = ["StructureDefinition-vbp-performance-measurereport.json",
            "StructureDefinition-vbp-quality-measurereport.json",
            "StructureDefinition-summary-measurereport-deqm.xml"]
    missing = [n for n in want if n not in names]
    if missing:
        pytest.skip(f"{PROFILES_DIR} lacks {missing}")


def medplum_validate(resource: dict, tmp_path: Path) -> dict:
    """validate.js --profiles over one resource; its result line."""
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not on PATH", pytrace=False)
    f = tmp_path / f"{resource.get('id', 'r')}.json"
    f.write_text(json.dumps(resource))
    proc = subprocess.run([node, str(fhirtest.VALIDATE_JS), "--profiles", str(PROFILES_DIR), str(f)],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode not in (0, 1):
        pytest.fail(f"validate.js failed ({proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt(msgs) -> str:
    return "\n  ".join(f"{m.get('location', '')}: {m.get('message', '')}" for m in msgs)


def put_and_read(client, res: dict, what: str) -> dict:
    r = client.put(f"/MeasureReport/{res['id']}", content=json.dumps(res), headers={"Content-Type": FHIR_JSON})
    if r.status_code not in (200, 201):
        body = r.text[:3000]
        pytest.fail(f"server rejected {what}: {r.status_code}\nOperationOutcome: {body}", pytrace=False)
    g = client.get(f"/MeasureReport/{res['id']}")
    return fhirtest.fhir_json(g, 200, what=f"{what} read back")


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_roundtrip_valid(client, path, tmp_path):
    need_profiles()
    known = known_rejections()
    if path.name in known:
        pytest.xfail(f"known rejection: {known[path.name]}")
    res = json.loads(path.read_text())
    profiles = res.get("meta", {}).get("profile", [])
    assert profiles, f"{path.name} claims no profile"
    back = put_and_read(client, res, path.name)
    assert back.get("meta", {}).get("profile") == profiles, \
        f"meta.profile changed on read-back: {back.get('meta')}"
    r = medplum_validate(back, tmp_path)
    assert not r["medplum"], (f"@medplum/core rejects the read-back {path.name} against {profiles} + R4:\n  "
                              + fmt(r["medplum"]))


def _example(name: str) -> dict:
    return json.loads((EXAMPLES_DIR / name).read_text())


def _drop_date(res):
    del res["date"]


def _drop_org_subject(res):
    res["subject"]["extension"] = [e for e in res["subject"].get("extension", [])
                                   if not e["url"].endswith("/organization-subject")]
    if not res["subject"]["extension"]:
        del res["subject"]["extension"]


def _drop_period_start(res):
    del res["period"]["start"]


# (profile, example it starts from, what is removed, mutation). Each removed
# element is optional in base R4 and required only by the profile, so the
# failure must come from the profile.
NEGATIVE = [
    (PERF, "MeasureReport-vbp-measurereport101.json", "date (1..1 in vbp-performance-measurereport)", _drop_date),
    (PERF, "MeasureReport-vbp-measurereport102.json",
     "subject.extension (1..1 organization-subject in vbp-performance-measurereport)", _drop_org_subject),
    (QUAL, "MeasureReport-quality-measurereport03.json", "date (1..1, from DEQM Summary)", _drop_date),
    (SUMMARY, "MeasureReport-quality-measurereport04.json", "period.start (1..1 in DEQM Summary)", _drop_period_start),
]


def test_summary_profile_accepts_quality_example(client, tmp_path):
    """The DEQM Summary profile (base of vbp-quality) on its own: a VBPR quality
    example, claiming only the Summary profile, passes it after a round trip."""
    need_profiles()
    res = _example("MeasureReport-quality-measurereport04.json")
    res["id"] = "deqm-summary-04"
    res["meta"]["profile"] = [SUMMARY]
    back = put_and_read(client, res, "quality-measurereport04 as DEQM Summary")
    r = medplum_validate(back, tmp_path)
    assert not r["medplum"], "@medplum/core rejects it against DEQM Summary:\n  " + fmt(r["medplum"])


@pytest.mark.parametrize("profile,name,removed,mutate", NEGATIVE,
                         ids=[f"{p.rsplit('/', 1)[1]}-{n.split('-', 1)[1][:-5]}" for p, n, _, _ in NEGATIVE])
def test_profile_rejects_missing_required(profile, name, removed, mutate, tmp_path):
    need_profiles()
    res = _example(name)
    res["meta"]["profile"] = [profile]
    ok = medplum_validate(res, tmp_path)
    assert not ok["medplum"], f"the unmodified {name} must pass {profile} first:\n  " + fmt(ok["medplum"])
    bad = copy.deepcopy(res)
    mutate(bad)
    r = medplum_validate(bad, tmp_path)
    assert r["medplum"], f"{name} without {removed} passes {profile}: the profile is not enforced"
    # the same copy without the profile claim is valid R4: the failure is the profile's
    bad["meta"]["profile"] = []
    plain = medplum_validate(bad, tmp_path)
    assert not plain["medplum"], f"{name} without {removed} also fails base R4:\n  " + fmt(plain["medplum"])

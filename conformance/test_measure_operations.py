"""Reports area: the `$evaluate-measure` operation (Da Vinci DEQM test kit checks, ported).

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
        elif name == "reportType":
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


def _seed_member(client, payer: str, hba1c: float) -> str:
    """A januvia-aetna cohort member: adult, type 2 diabetes, Aetna coverage, first sitagliptin
    dispense (30 tablets) on 2025-03-03, HbA1c on day 180 (2025-08-30)."""
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
    return {"met": met, "not_met": not_met, "group": gid}


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

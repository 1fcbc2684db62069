"""Search: the CapabilityStatement tells the truth about search parameters.

For Patient, Observation, MedicationDispense, Encounter, Condition and MeasureReport:
* every declared searchParam (name + type as in the R4 definitions, or the Da Vinci
  VBPR MeasureReport parameters) really filters: a resource carrying an example value
  is found, a neighbour without it is not (example values come from the hand-written
  table below; parameters without an example skip, saying so);
* every R4 parameter of the type that is NOT declared is reported as unknown (an
  outcome entry naming it, or a 400) rather than silently filtering;
* a few real R4 parameters of other types (Immunization?vaccine-code, ...) are
  reported as unknown unless declared.
"""
from __future__ import annotations

import time

import pytest

import fhirgen
from fhirtest import expect_outcome, fhir_json
from searchkit import LOINC, SNOMED, UCUM, Tag, assert_exact, cc, check_searchset, outcome_names, Result

pytestmark = pytest.mark.area("search")

TYPES = ["Patient", "Observation", "MedicationDispense", "Encounter", "Condition", "MeasureReport"]

# R4 4.0.1 search parameters (search-parameters.json) of each type: name -> type
R4 = {
    "Patient": {
        "active": "token", "address": "string", "address-city": "string", "address-country": "string",
        "address-postalcode": "string", "address-state": "string", "address-use": "token", "age": "number",
        "birthOrderBoolean": "token", "birthdate": "date", "death-date": "date", "deceased": "token",
        "email": "token", "family": "string", "gender": "token", "general-practitioner": "reference",
        "given": "string", "identifier": "token", "language": "token", "link": "reference",
        "mothersMaidenName": "string", "name": "string", "organization": "reference", "part-agree": "reference",
        "phone": "token", "phonetic": "string", "telecom": "token",
    },
    "Observation": {
        "amino-acid-change": "string", "based-on": "reference", "category": "token", "code": "token",
        "code-value-concept": "composite", "code-value-date": "composite", "code-value-quantity": "composite",
        "code-value-string": "composite", "combo-code": "token", "combo-code-value-concept": "composite",
        "combo-code-value-quantity": "composite", "combo-data-absent-reason": "token",
        "combo-value-concept": "token", "combo-value-quantity": "quantity", "component-code": "token",
        "component-code-value-concept": "composite", "component-code-value-quantity": "composite",
        "component-data-absent-reason": "token", "component-value-concept": "token",
        "component-value-quantity": "quantity", "data-absent-reason": "token", "date": "date",
        "derived-from": "reference", "device": "reference", "dna-variant": "string", "encounter": "reference",
        "focus": "reference", "gene-amino-acid-change": "string", "gene-dnavariant": "string",
        "gene-identifier": "token", "has-member": "reference", "identifier": "token", "method": "token",
        "part-of": "reference", "patient": "reference", "performer": "reference", "specimen": "reference",
        "status": "token", "subject": "reference", "value-concept": "token", "value-date": "date",
        "value-quantity": "quantity", "value-string": "string",
    },
    "MedicationDispense": {
        "code": "token", "context": "reference", "destination": "reference", "identifier": "token",
        "medication": "reference", "patient": "reference", "performer": "reference",
        "prescription": "reference", "receiver": "reference", "responsibleparty": "reference",
        "status": "token", "subject": "reference", "type": "token", "whenhandedover": "date",
        "whenprepared": "date",
    },
    "Encounter": {
        "account": "reference", "appointment": "reference", "based-on": "reference", "class": "token",
        "date": "date", "diagnosis": "reference", "episode-of-care": "reference", "identifier": "token",
        "length": "quantity", "location": "reference", "location-period": "date", "part-of": "reference",
        "participant": "reference", "participant-type": "token", "patient": "reference",
        "practitioner": "reference", "reason-code": "token", "reason-reference": "reference",
        "service-provider": "reference", "special-arrangement": "token", "status": "token",
        "subject": "reference", "type": "token",
    },
    "Condition": {
        "abatement-age": "quantity", "abatement-date": "date", "abatement-string": "string",
        "asserter": "reference", "body-site": "token", "category": "token", "clinical-status": "token",
        "code": "token", "encounter": "reference", "evidence": "token", "evidence-detail": "reference",
        "identifier": "token", "onset-age": "quantity", "onset-date": "date", "onset-info": "string",
        "patient": "reference", "recorded-date": "date", "severity": "token", "stage": "token",
        "subject": "reference", "verification-status": "token",
    },
    "MeasureReport": {
        "date": "date", "evaluated-resource": "reference", "identifier": "token", "measure": "reference",
        "patient": "reference", "period": "date", "reporter": "reference", "status": "token",
        "subject": "reference",
        # Da Vinci VBPR (and DEQM) MeasureReport parameters, by code and by SearchParameter id
        "category": "token", "measurereport-category": "token",
        "subject-organization": "reference", "measurereport-subject-organization": "reference",
    },
}
COMMON = {"_id": "token", "_lastUpdated": "date", "_tag": "token", "_profile": "uri", "_security": "token",
          "_source": "uri", "_text": "string", "_content": "string", "_list": "special", "_has": "special",
          "_query": "token", "_filter": "special", "_type": "token"}

NO_EXAMPLE = {
    "age": "R4 Patient.age has no expression", "birthOrderBoolean": "R4 Patient.birthOrderBoolean has no expression",
    "part-agree": "R4 part-agree is an example on DocumentReference's extension",
    "mothersMaidenName": "its R4 expression names an extension url that does not exist",
    "amino-acid-change": "genetics extension", "dna-variant": "genetics extension",
    "gene-amino-acid-change": "genetics extension", "gene-dnavariant": "genetics extension",
    "gene-identifier": "genetics extension",
    "_text": "narrative search is not exact", "_content": "full-text search is not exact",
    "_list": "needs a List", "_has": "covered by test_search_reference.py::test_reverse_chain_has",
    "_query": "named queries", "_filter": "no _filter example", "_type": "system level only",
}

OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
DAR = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CLIN = "http://terminology.hl7.org/CodeSystem/condition-clinical"
VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
CONDCAT = "http://terminology.hl7.org/CodeSystem/condition-category"
PARTTYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
VBPR_ORG = "http://hl7.org/fhir/us/davinci-vbpr/StructureDefinition/organization-subject"
MR_CAT = "http://hl7.org/fhir/StructureDefinition/measurereport-category"


def q(v, unit):
    return {"value": v, "system": UCUM, "code": unit, "unit": unit}


class Targets:
    """Reference targets, created once (minimal valid instances) and reused."""

    def __init__(self, client):
        self.client = client
        self.made = {}

    def __call__(self, rtype: str, key: str = "") -> dict:
        k = (rtype, key)
        if k not in self.made:
            res = fhirgen.minimal_resource(rtype)
            r = self.client.post(f"/{rtype}", json=res, headers={"Content-Type": "application/fhir+json"})
            self.made[k] = fhir_json(r, 201, what=f"target {rtype}")
        return self.made[k]

    def ref(self, rtype: str, key: str = "") -> tuple[dict, str]:
        t = self(rtype, key)
        return {"reference": f"{rtype}/{t['id']}"}, f"{rtype}/{t['id']}"


def base(rtype: str, tg: Targets) -> dict:
    return {
        "Patient": {"resourceType": "Patient", "name": [{"family": "Basefamily", "given": ["Basegiven"]}]},
        "Observation": {"resourceType": "Observation", "status": "final", "code": cc("urn:conformance:truth", "base")},
        "MedicationDispense": {"resourceType": "MedicationDispense", "status": "completed",
                               "medicationCodeableConcept": cc(RXNORM, "000000")},
        "Encounter": {"resourceType": "Encounter", "status": "finished", "class": {"system": ACT, "code": "AMB"}},
        "Condition": {"resourceType": "Condition", "subject": tg.ref("Patient", "base")[0],
                      "code": cc("urn:conformance:truth", "base")},
        "MeasureReport": {"resourceType": "MeasureReport", "status": "complete", "type": "summary",
                          "measure": "http://example.org/fhir/Measure/truth-base",
                          "period": {"start": "2010-01-01", "end": "2010-12-31"}},
    }[rtype]


def reference_example(field_builder, rtype):
    """(patch, value) for a reference to a new target of rtype."""
    def make(tg, u):
        r, v = tg.ref(rtype, "a")
        return field_builder(r), v
    return make


def simple(patch, value):
    return lambda tg, u: (patch, value)


def examples() -> dict:
    """type -> param -> (targets, unique) -> (patch for the resource, search value).
    A value may be a callable of the created resource (for _id and _lastUpdated)."""
    ex = {t: {} for t in TYPES}
    # common to every type
    for t in TYPES:
        ex[t]["_id"] = lambda tg, u: ({}, lambda made: made["id"])
        ex[t]["_lastUpdated"] = lambda tg, u: ({}, lambda made: "ge" + made["meta"]["lastUpdated"])
        ex[t]["_tag"] = lambda tg, u: ({"meta": {"tag": [{"system": "urn:conformance:truth-tag", "code": u}]}},
                                        f"urn:conformance:truth-tag|{u}")
        ex[t]["_security"] = simple({"meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                                           "code": "R"}]}},
                                    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R")
        ex[t]["_profile"] = simple({"meta": {"profile": [f"http://hl7.org/fhir/StructureDefinition/{t}"]}},
                                   f"http://hl7.org/fhir/StructureDefinition/{t}")
        ex[t]["_source"] = lambda tg, u: ({"meta": {"source": f"urn:conformance:source:{u}"}}, f"urn:conformance:source:{u}")
        ex[t]["identifier"] = lambda tg, u: ({"identifier": [{"system": "urn:conformance:truth", "value": u}]},
                                             f"urn:conformance:truth|{u}")
    P = ex["Patient"]
    P.update({
        "active": simple({"active": True}, "true"),
        "address": simple({"address": [{"line": ["1 Truth Street"], "city": "Veritas"}]}, "veritas"),
        "address-city": simple({"address": [{"city": "Veritas"}]}, "veritas"),
        "address-country": simple({"address": [{"country": "Freedonia"}]}, "freedonia"),
        "address-postalcode": simple({"address": [{"postalCode": "99999"}]}, "99999"),
        "address-state": simple({"address": [{"state": "Utopia"}]}, "utopia"),
        "address-use": simple({"address": [{"use": "old", "city": "Oldtown"}]}, "old"),
        "birthdate": simple({"birthDate": "1911-11-11"}, "1911-11-11"),
        "death-date": simple({"deceasedDateTime": "2011-11-11"}, "2011-11-11"),
        "deceased": simple({"deceasedBoolean": True}, "true"),
        "email": simple({"telecom": [{"system": "email", "value": "truth@example.org"}]}, "truth@example.org"),
        "family": simple({"name": [{"family": "Truthful"}]}, "truthful"),
        "gender": simple({"gender": "female"}, "female"),
        "general-practitioner": reference_example(lambda r: {"generalPractitioner": [r]}, "Practitioner"),
        "given": simple({"name": [{"given": ["Veracity"]}]}, "veracity"),
        "language": simple({"communication": [{"language": cc("urn:ietf:bcp:47", "fr")}]}, "urn:ietf:bcp:47|fr"),
        "link": reference_example(lambda r: {"link": [{"other": r, "type": "seealso"}]}, "Patient"),
        "name": simple({"name": [{"family": "Nomen"}]}, "nomen"),
        "organization": reference_example(lambda r: {"managingOrganization": r}, "Organization"),
        "phone": simple({"telecom": [{"system": "phone", "value": "555-0100"}]}, "555-0100"),
        "phonetic": simple({"name": [{"family": "Smyth"}]}, "Smyth"),
        "telecom": simple({"telecom": [{"system": "phone", "value": "555-0199"}]}, "555-0199"),
    })
    O = ex["Observation"]
    O.update({
        "based-on": reference_example(lambda r: {"basedOn": [r]}, "ServiceRequest"),
        "category": simple({"category": [cc(OBS_CAT, "vital-signs")]}, f"{OBS_CAT}|vital-signs"),
        "code": simple({"code": cc(LOINC, "8867-4")}, f"{LOINC}|8867-4"),
        "code-value-concept": simple({"code": cc(LOINC, "883-9"), "valueCodeableConcept": cc(SNOMED, "278149003")},
                                     f"{LOINC}|883-9${SNOMED}|278149003"),
        "code-value-date": simple({"code": cc(LOINC, "21112-8"), "valueDateTime": "2001-01-01"},
                                  f"{LOINC}|21112-8$2001-01-01"),
        "code-value-quantity": simple({"code": cc(LOINC, "8867-4"), "valueQuantity": q(72, "/min")},
                                      f"{LOINC}|8867-4$72"),
        "code-value-string": simple({"code": cc(LOINC, "8251-1"), "valueString": "Veritas note"},
                                    f"{LOINC}|8251-1$veritas"),
        "combo-code": simple({"component": [{"code": cc(LOINC, "8480-6"), "valueQuantity": q(120, "mm[Hg]")}]},
                             f"{LOINC}|8480-6"),
        "combo-code-value-concept": simple(
            {"component": [{"code": cc(LOINC, "883-9"), "valueCodeableConcept": cc(SNOMED, "278149003")}]},
            f"{LOINC}|883-9${SNOMED}|278149003"),
        "combo-code-value-quantity": simple(
            {"component": [{"code": cc(LOINC, "8480-6"), "valueQuantity": q(120, "mm[Hg]")}]}, f"{LOINC}|8480-6$120"),
        "combo-data-absent-reason": simple({"dataAbsentReason": cc(DAR, "asked-unknown")}, f"{DAR}|asked-unknown"),
        "combo-value-concept": simple({"valueCodeableConcept": cc(SNOMED, "260385009")}, f"{SNOMED}|260385009"),
        "combo-value-quantity": simple({"valueQuantity": q(72, "/min")}, "72"),
        "component-code": simple({"component": [{"code": cc(LOINC, "8480-6"), "valueQuantity": q(120, "mm[Hg]")}]},
                                 f"{LOINC}|8480-6"),
        "component-code-value-concept": simple(
            {"component": [{"code": cc(LOINC, "883-9"), "valueCodeableConcept": cc(SNOMED, "278149003")}]},
            f"{LOINC}|883-9${SNOMED}|278149003"),
        "component-code-value-quantity": simple(
            {"component": [{"code": cc(LOINC, "8480-6"), "valueQuantity": q(120, "mm[Hg]")}]}, f"{LOINC}|8480-6$120"),
        "component-data-absent-reason": simple(
            {"component": [{"code": cc(LOINC, "8480-6"), "dataAbsentReason": cc(DAR, "asked-unknown")}]},
            f"{DAR}|asked-unknown"),
        "component-value-concept": simple(
            {"component": [{"code": cc(LOINC, "883-9"), "valueCodeableConcept": cc(SNOMED, "278149003")}]},
            f"{SNOMED}|278149003"),
        "component-value-quantity": simple(
            {"component": [{"code": cc(LOINC, "8480-6"), "valueQuantity": q(120, "mm[Hg]")}]}, "120"),
        "data-absent-reason": simple({"dataAbsentReason": cc(DAR, "asked-unknown")}, f"{DAR}|asked-unknown"),
        "date": simple({"effectiveDateTime": "2002-02-02"}, "2002-02-02"),
        "derived-from": reference_example(lambda r: {"derivedFrom": [r]}, "Observation"),
        "device": reference_example(lambda r: {"device": r}, "Device"),
        "encounter": reference_example(lambda r: {"encounter": r}, "Encounter"),
        "focus": reference_example(lambda r: {"focus": [r]}, "Patient"),
        "has-member": reference_example(lambda r: {"hasMember": [r]}, "Observation"),
        "method": simple({"method": cc(SNOMED, "272391002")}, f"{SNOMED}|272391002"),
        "part-of": reference_example(lambda r: {"partOf": [r]}, "Procedure"),
        "patient": reference_example(lambda r: {"subject": r}, "Patient"),
        "performer": reference_example(lambda r: {"performer": [r]}, "Practitioner"),
        "specimen": reference_example(lambda r: {"specimen": r}, "Specimen"),
        "status": simple({"status": "amended"}, "amended"),
        "subject": reference_example(lambda r: {"subject": r}, "Patient"),
        "value-concept": simple({"valueCodeableConcept": cc(SNOMED, "260385009")}, f"{SNOMED}|260385009"),
        "value-date": simple({"valueDateTime": "2003-03-03"}, "2003-03-03"),
        "value-quantity": simple({"valueQuantity": q(72, "/min")}, f"72|{UCUM}|/min"),
        "value-string": simple({"valueString": "Veritas"}, "veritas"),
    })
    M = ex["MedicationDispense"]
    M.update({
        "code": simple({"medicationCodeableConcept": cc(RXNORM, "860975")}, f"{RXNORM}|860975"),
        "context": reference_example(lambda r: {"context": r}, "Encounter"),
        "destination": reference_example(lambda r: {"destination": r}, "Location"),
        "medication": reference_example(lambda r: {"medicationCodeableConcept": None, "medicationReference": r},
                                        "Medication"),
        "patient": reference_example(lambda r: {"subject": r}, "Patient"),
        "performer": reference_example(lambda r: {"performer": [{"actor": r}]}, "Practitioner"),
        "prescription": reference_example(lambda r: {"authorizingPrescription": [r]}, "MedicationRequest"),
        "receiver": reference_example(lambda r: {"receiver": [r]}, "Practitioner"),
        "responsibleparty": reference_example(
            lambda r: {"substitution": {"wasSubstituted": True, "responsibleParty": [r]}}, "Practitioner"),
        "status": simple({"status": "in-progress"}, "in-progress"),
        "subject": reference_example(lambda r: {"subject": r}, "Patient"),
        "type": simple({"type": cc(ACT, "FF")}, f"{ACT}|FF"),
        "whenhandedover": simple({"whenHandedOver": "2004-04-04"}, "2004-04-04"),
        "whenprepared": simple({"whenPrepared": "2004-04-03"}, "2004-04-03"),
    })
    E = ex["Encounter"]
    E.update({
        "account": reference_example(lambda r: {"account": [r]}, "Account"),
        "appointment": reference_example(lambda r: {"appointment": [r]}, "Appointment"),
        "based-on": reference_example(lambda r: {"basedOn": [r]}, "ServiceRequest"),
        "class": simple({"class": {"system": ACT, "code": "IMP"}}, f"{ACT}|IMP"),
        "date": simple({"period": {"start": "2005-05-05T10:00:00Z", "end": "2005-05-05T11:00:00Z"}}, "2005-05-05"),
        "diagnosis": reference_example(lambda r: {"diagnosis": [{"condition": r}]}, "Condition"),
        "episode-of-care": reference_example(lambda r: {"episodeOfCare": [r]}, "EpisodeOfCare"),
        "length": simple({"length": {"value": 90, "system": UCUM, "code": "min", "unit": "min"}}, f"90|{UCUM}|min"),
        "location": reference_example(lambda r: {"location": [{"location": r}]}, "Location"),
        "location-period": lambda tg, u: ({"location": [{"location": tg.ref("Location", "a")[0], "period": {
            "start": "2006-06-06T00:00:00Z", "end": "2006-06-06T05:00:00Z"}}]}, "2006-06-06"),
        "part-of": reference_example(lambda r: {"partOf": r}, "Encounter"),
        "participant": reference_example(lambda r: {"participant": [{"individual": r}]}, "Practitioner"),
        "participant-type": simple({"participant": [{"type": [cc(PARTTYPE, "ATND")]}]}, f"{PARTTYPE}|ATND"),
        "patient": reference_example(lambda r: {"subject": r}, "Patient"),
        "practitioner": reference_example(lambda r: {"participant": [{"individual": r}]}, "Practitioner"),
        "reason-code": simple({"reasonCode": [cc(SNOMED, "38341003")]}, f"{SNOMED}|38341003"),
        "reason-reference": reference_example(lambda r: {"reasonReference": [r]}, "Condition"),
        "service-provider": reference_example(lambda r: {"serviceProvider": r}, "Organization"),
        "special-arrangement": simple(
            {"hospitalization": {"specialArrangement": [
                cc("http://terminology.hl7.org/CodeSystem/encounter-special-arrangements", "wheel")]}},
            "http://terminology.hl7.org/CodeSystem/encounter-special-arrangements|wheel"),
        "status": simple({"status": "cancelled"}, "cancelled"),
        "subject": reference_example(lambda r: {"subject": r}, "Patient"),
        "type": simple({"type": [cc(SNOMED, "185349003")]}, f"{SNOMED}|185349003"),
    })
    resolved = cc(CLIN, "resolved")
    C = ex["Condition"]
    C.update({
        "abatement-age": simple({"clinicalStatus": resolved, "abatementAge": q(40, "a")}, f"40|{UCUM}|a"),
        "abatement-date": simple({"clinicalStatus": resolved, "abatementDateTime": "2007-07-07"}, "2007-07-07"),
        "abatement-string": simple({"clinicalStatus": resolved, "abatementString": "Around spring"}, "around"),
        "asserter": reference_example(lambda r: {"asserter": r}, "Practitioner"),
        "body-site": simple({"bodySite": [cc(SNOMED, "368209003")]}, f"{SNOMED}|368209003"),
        "category": simple({"category": [cc(CONDCAT, "encounter-diagnosis")]}, f"{CONDCAT}|encounter-diagnosis"),
        "clinical-status": simple({"clinicalStatus": cc(CLIN, "active")}, f"{CLIN}|active"),
        "code": simple({"code": cc(SNOMED, "44054006")}, f"{SNOMED}|44054006"),
        "encounter": reference_example(lambda r: {"encounter": r}, "Encounter"),
        "evidence": simple({"evidence": [{"code": [cc(SNOMED, "169068008")]}]}, f"{SNOMED}|169068008"),
        "evidence-detail": reference_example(lambda r: {"evidence": [{"detail": [r]}]}, "Observation"),
        "onset-age": simple({"onsetAge": q(30, "a")}, f"30|{UCUM}|a"),
        "onset-date": simple({"onsetDateTime": "2008-08-08"}, "2008-08-08"),
        "onset-info": simple({"onsetString": "Childhood"}, "childhood"),
        "patient": reference_example(lambda r: {"subject": r}, "Patient"),
        "recorded-date": simple({"recordedDate": "2009-09-09"}, "2009-09-09"),
        "severity": simple({"severity": cc(SNOMED, "24484000")}, f"{SNOMED}|24484000"),
        "stage": simple({"stage": [{"summary": cc(SNOMED, "786005")}]}, f"{SNOMED}|786005"),
        "subject": reference_example(lambda r: {"subject": r}, "Patient"),
        "verification-status": simple({"verificationStatus": cc(VER, "confirmed")}, f"{VER}|confirmed"),
    })
    R = ex["MeasureReport"]

    def measure(tg, u):
        url = f"http://example.org/fhir/Measure/truth-{u}"
        return {"measure": url}, url

    def subj_org(tg, u):
        pr, _ = tg.ref("Patient", "a")
        org, v = tg.ref("Organization", "a")
        return {"type": "individual", "subject": dict(pr, extension=[{"url": VBPR_ORG, "valueReference": org}])}, v

    cat = simple({"extension": [{"url": MR_CAT, "valueCodeableConcept": cc("urn:conformance:mrcat", "vbp")}]},
                 "urn:conformance:mrcat|vbp")
    R.update({
        "date": simple({"date": "2011-01-01"}, "2011-01-01"),
        "evaluated-resource": reference_example(lambda r: {"evaluatedResource": [r]}, "Observation"),
        "measure": measure,
        "patient": reference_example(lambda r: {"type": "individual", "subject": r}, "Patient"),
        "period": simple({"period": {"start": "2012-01-01", "end": "2012-12-31"}}, "2012"),
        "reporter": reference_example(lambda r: {"reporter": r}, "Organization"),
        "status": simple({"status": "pending"}, "pending"),
        "subject": reference_example(lambda r: {"type": "individual", "subject": r}, "Patient"),
        "category": cat, "measurereport-category": cat,
        "subject-organization": subj_org, "measurereport-subject-organization": subj_org,
    })
    return ex


EXAMPLES = examples()


def declared(capability, rtype) -> dict:
    rest = next(r for r in capability["rest"] if r["mode"] == "server")
    entry = next((r for r in rest.get("resource", []) if r["type"] == rtype), None)
    return {p["name"]: p.get("type") for p in (entry or {}).get("searchParam", [])}


@pytest.fixture(scope="module")
def targets(client):
    return Targets(client)


def apply(resource: dict, patch: dict) -> dict:
    out = dict(resource)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = v
    return out


TRUTH_CASES = [(t, p) for t in TYPES for p in list(COMMON) + sorted(R4[t])]


@pytest.mark.parametrize("rtype,param", TRUTH_CASES, ids=[f"{t}-{p}" for t, p in TRUTH_CASES])
def test_declared_search_param_filters(client, capability, targets, rtype, param):
    decl = declared(capability, rtype)
    if param not in decl:
        pytest.skip(f"{rtype} does not declare {param}")
    want_type = COMMON.get(param) or R4[rtype].get(param)
    assert decl[param] == want_type, f"{rtype}.{param} is declared as {decl[param]!r}, R4 says {want_type!r}"
    if param in NO_EXAMPLE:
        pytest.skip(f"no example value for {rtype}.{param}: {NO_EXAMPLE[param]}")
    if param not in EXAMPLES[rtype]:
        pytest.skip(f"no example value for {rtype}.{param} in this suite")
    t = Tag(client, "truth")
    patch, value = EXAMPLES[rtype][param](targets, t.code)
    b = t.make(base(rtype, targets), "without")
    time.sleep(1.1 if param == "_lastUpdated" else 0.02)  # lastUpdated may have second precision
    a = t.make(apply(base(rtype, targets), patch), "with")
    if callable(value):
        value = value(a)
    r = client.get(f"/{rtype}", params=[("_tag", t.token), (param, value)])
    res = Result(fhir_json(r, 200, what=f"truth-{rtype}-{param}"), str(r.request.url))
    check_searchset(res.bundle, res.url)
    assert not res.outcomes, f"{res.url}: declared {param} reported as not understood: {res.outcomes}"
    assert_exact(res, t, [a["id"]])
    assert b["id"] not in res.ids


UNDECLARED_CASES = [(t, p) for t in TYPES for p in sorted(R4[t]) + ["_text", "_content", "_list", "_query", "_filter"]]


def probe_value(rtype, param, targets):
    kind = R4[rtype].get(param) or COMMON[param]
    return {"token": "urn:conformance:probe|x", "string": "zzprobe", "date": "2001-01-01",
            "reference": "Patient/zz-probe", "quantity": "5.4", "number": "5", "composite": "a$b",
            "uri": "http://example.org/zz", "special": "zzprobe"}[kind]


def assert_reported_unknown(client, rtype, param, value):
    t = Tag(client, "probe")
    r = client.get(f"/{rtype}", params=[("_tag", t.token), (param, value)])
    if r.status_code == 400:
        expect_outcome(r, statuses=(400,))
        return
    res = Result(fhir_json(r, 200, what=f"probe-{rtype}-{param}"), str(r.request.url))
    check_searchset(res.bundle, res.url)
    assert outcome_names(res, param), (f"{res.url}: {param} is not declared for {rtype} but the server neither "
                                       f"reports it as unknown nor rejects it (a silently working or silently "
                                       f"ignored parameter): outcomes {res.outcomes}")


@pytest.mark.parametrize("rtype,param", UNDECLARED_CASES, ids=[f"{t}-{p}" for t, p in UNDECLARED_CASES])
def test_undeclared_r4_param_is_reported_unknown(client, capability, targets, rtype, param):
    if param in declared(capability, rtype):
        pytest.skip(f"{rtype} declares {param}")
    assert_reported_unknown(client, rtype, param, probe_value(rtype, param, targets))


OTHER_TYPE_PROBES = [("Immunization", "vaccine-code", "http://hl7.org/fhir/sid/cvx|207"),
                     ("Immunization", "lot-number", "AB123"),
                     ("AllergyIntolerance", "criticality", "high"),
                     ("DiagnosticReport", "conclusion", f"{SNOMED}|428763004"),
                     ("CarePlan", "activity-code", f"{SNOMED}|1234")]


@pytest.mark.parametrize("rtype,param,value", OTHER_TYPE_PROBES, ids=[f"{t}-{p}" for t, p, _ in OTHER_TYPE_PROBES])
def test_r4_param_of_other_type_is_reported_unknown(client, capability, rtype, param, value):
    if param in declared(capability, rtype):
        pytest.skip(f"{rtype} declares {param}")
    assert_reported_unknown(client, rtype, param, value)


@pytest.mark.parametrize("rtype", TYPES)
def test_declared_params_are_known(capability, rtype):
    """Every declared parameter is an R4 (or VBPR) parameter of the type, with its R4 type."""
    decl = declared(capability, rtype)
    assert decl, f"{rtype} declares no search parameters"
    unknown = sorted(p for p in decl if p not in R4[rtype] and p not in COMMON)
    assert not unknown, f"{rtype} declares parameters that R4 does not define for it: {unknown}"
    wrong = sorted(f"{p}: {v} (R4 {R4[rtype].get(p) or COMMON.get(p)})" for p, v in decl.items()
                   if v != (R4[rtype].get(p) or COMMON.get(p)))
    assert not wrong, f"{rtype} declares parameters with the wrong type: {wrong}"

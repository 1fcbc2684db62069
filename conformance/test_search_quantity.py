"""Search: quantity, number and composite parameters (R4 search.html#number, #quantity,
#composite, #prefix): implicit precision ranges for eq/ne, exact comparison for
gt/lt/ge/le, value|system|code, value||unit, UCUM conversion of commensurable
units and the clinical HbA1c / LDL conversions of the server's contract."""
from __future__ import annotations

import pytest

from fhirtest import create
from searchkit import LOINC, UCUM, Tag, assert_bounds, assert_exact, cc, ref, search, search_error

pytestmark = pytest.mark.area("search")

# name -> valueQuantity
QTY = {
    "q535": {"value": 5.35, "system": UCUM, "code": "mg/dL", "unit": "mg/dL"},
    "q5449": {"value": 5.449, "system": UCUM, "code": "mg/dL", "unit": "mg/dL"},
    "q545": {"value": 5.45, "system": UCUM, "code": "mg/dL", "unit": "mg/dL"},
    "q53": {"value": 5.3, "system": UCUM, "code": "mg/dL", "unit": "mg/dL"},
    "q54": {"value": 5.4, "system": UCUM, "code": "mg/dL", "unit": "mg/dL"},
    "q5404": {"value": 5.404, "system": UCUM, "code": "mg/dL", "unit": "mg/dL"},
    "q5405": {"value": 5.405, "system": UCUM, "code": "mg/dL", "unit": "mg/dL"},
    "q54mgL": {"value": 54, "system": UCUM, "code": "mg/L", "unit": "mg/L"},
    "q55mgL": {"value": 55, "system": UCUM, "code": "mg/L", "unit": "mg/L"},
    "q54text": {"value": 5.4, "unit": "mg/dL"},
    "q54other": {"value": 5.4, "system": "http://example.org/units", "code": "mg/dL", "unit": "milligrams per decilitre"},
    "q54mmol": {"value": 5.4, "system": UCUM, "code": "mmol/L", "unit": "mmol/L"},
    "q00054gL": {"value": 0.054, "system": UCUM, "code": "g/L", "unit": "g/L"},
}
ALL = set(QTY) | {"novalue"}
MGDL_54 = {"q535", "q5449", "q54", "q5404", "q5405", "q54mgL", "q00054gL"}  # [5.35, 5.45) mg/dL in UCUM

QTY_CASES = [
    # value alone: any unit, precision range [5.35, 5.45)
    ("5.4", {"q535", "q5449", "q54", "q5404", "q5405", "q54text", "q54other", "q54mmol"}),
    ("eq5.4", {"q535", "q5449", "q54", "q5404", "q5405", "q54text", "q54other", "q54mmol"}),
    # 5.40: [5.395, 5.405)
    ("5.40", {"q54", "q5404", "q54text", "q54other", "q54mmol"}),
    ("ne5.4", {"q545", "q53", "q54mgL", "q55mgL", "q00054gL"}),
    # gt/lt/ge/le compare with the exact value
    ("gt5.4", {"q5449", "q545", "q5404", "q5405", "q54mgL", "q55mgL"}),
    ("lt5.4", {"q535", "q53", "q00054gL"}),
    ("ge5.4", {"q5449", "q545", "q5404", "q5405", "q54mgL", "q55mgL", "q54", "q54text", "q54other", "q54mmol"}),
    ("le5.4", {"q535", "q53", "q00054gL", "q54", "q54text", "q54other", "q54mmol"}),
    # value|system|code with UCUM conversion: 54 mg/L = 5.4 mg/dL, 0.054 g/L = 5.4 mg/dL
    (f"5.4|{UCUM}|mg/dL", MGDL_54),
    (f"54|{UCUM}|mg/L", MGDL_54),
    (f"5.40|{UCUM}|mg/dL", {"q54", "q5404", "q54mgL", "q00054gL"}),
    (f"gt5.4|{UCUM}|mg/dL", {"q5449", "q545", "q5404", "q5405", "q55mgL"}),
    (f"le5.4|{UCUM}|mg/dL", {"q535", "q53", "q54", "q54mgL", "q00054gL"}),
    (f"5.4|{UCUM}|mmol/L", {"q54mmol"}),
    ("5.4|http://example.org/units|mg/dL", {"q54other"}),
]


@pytest.fixture(scope="module")
def qty(client):
    t = Tag(client, "qty")
    made = {n: t.make({"resourceType": "Observation", "status": "final", "code": {"text": f"qty {n}"},
                       "valueQuantity": q}, n) for n, q in QTY.items()}
    made["novalue"] = t.make({"resourceType": "Observation", "status": "final", "code": {"text": "qty none"},
                              "valueString": "n/a"}, "novalue")
    return {"t": t, "made": made}


@pytest.mark.parametrize("value,expected", QTY_CASES, ids=[v for v, _ in QTY_CASES])
def test_value_quantity(client, qty, value, expected):
    t = qty["t"]
    res = search(client, "Observation", [("_tag", t.token), ("value-quantity", value)])
    if value.startswith("ne"):
        # whether ne matches a resource without any value is not said by R4: left open
        to_id = lambda names: {qty["made"][n]["id"] for n in names}  # noqa: E731
        assert_bounds(res, t, to_id(expected), to_id(ALL - expected - {"novalue"}))
    else:
        assert_exact(res, t, [qty["made"][n]["id"] for n in sorted(expected)])


def test_value_quantity_unit_only(client, qty):
    """value||unit: no system; the unit matches Quantity.code or Quantity.unit. 54 mg/L
    (another unit) may or may not be converted, so it is left open."""
    t = qty["t"]
    res = search(client, "Observation", [("_tag", t.token), ("value-quantity", "5.4||mg/dL")])
    must = {"q535", "q5449", "q54", "q5404", "q5405", "q54text", "q54other"}
    to_id = lambda names: {qty["made"][n]["id"] for n in names}  # noqa: E731
    assert_bounds(res, t, to_id(must), to_id(ALL - must - {"q54mgL", "q00054gL"}))


def test_value_quantity_approximately(client, qty):
    """ap: approximately (R4 recommends 10%); within 1% must match, beyond 20% must not."""
    t = qty["t"]
    res = search(client, "Observation", [("_tag", t.token), ("value-quantity", "ap5.4")])
    near = {n for n, q in QTY.items() if abs(q["value"] - 5.4) <= 0.054}
    far = {n for n, q in QTY.items() if abs(q["value"] - 5.4) > 1.08} | {"novalue"}
    to_id = lambda names: {qty["made"][n]["id"] for n in names}  # noqa: E731
    assert_bounds(res, t, to_id(near), to_id(far))


def test_value_quantity_missing(client, qty):
    t = qty["t"]
    assert_exact(search(client, "Observation", [("_tag", t.token), ("value-quantity:missing", "true")]), t,
                 [qty["made"]["novalue"]["id"]])


@pytest.mark.parametrize("value", ["abc", "5.4.1", "gt", "zz5.4", "1e", "5.4abc", "--5"])
def test_malformed_quantity_is_400(client, value):
    search_error(client, "/Observation", {"value-quantity": value})


# ---------------------------------------------------------------------------
# clinical conversions (server contract: HbA1c NGSP % = 0.09148 x IFCC mmol/mol + 2.152;
# LDL mg/dL = mmol/L x 38.67)
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clin(client):
    t = Tag(client, "clin")
    subject = create(client, {"resourceType": "Patient"})

    def obs(key, code, value, unit):
        return t.make({"resourceType": "Observation", "status": "final", "code": cc(LOINC, code),
                       "subject": ref(subject), "effectiveDateTime": "2024-06-01",
                       "valueQuantity": {"value": value, "system": UCUM, "code": unit, "unit": unit}}, key)

    made = {
        "ifcc53": obs("ifcc53", "59261-8", 53, "mmol/mol"),      # 7.00 %
        "a1c53mmol": obs("a1c53mmol", "4548-4", 53, "mmol/mol"),  # 7.00 %
        "ifcc48": obs("ifcc48", "59261-8", 48, "mmol/mol"),      # 6.54 %
        "a1c75": obs("a1c75", "4548-4", 7.5, "%"),               # 58.5 mmol/mol
        "a1c65": obs("a1c65", "4548-4", 6.5, "%"),               # 47.5 mmol/mol
        "ldl3": obs("ldl3", "13457-7", 3.0, "mmol/L"),          # 116 mg/dL
        "ldl100": obs("ldl100", "13457-7", 100, "mg/dL"),
        "glu3": obs("glu3", "2345-7", 3.0, "mmol/L"),           # not LDL: no clinical conversion
        "glu8": obs("glu8", "2339-0", 8, "mmol/L"),
    }
    return {"t": t, "made": made}


CLIN_CASES = [
    # no unit in the search: the stored numbers are compared as they are (R4: "irrespective of the unit")
    ("gt7", {"ifcc53", "a1c53mmol", "ifcc48", "a1c75", "ldl100", "glu8"}),
    ("lt7", {"a1c65", "ldl3", "glu3"}),
    (f"ge7|{UCUM}|%", {"ifcc53", "a1c53mmol", "a1c75"}),
    (f"7.0|{UCUM}|%", {"ifcc53", "a1c53mmol"}),
    (f"lt7|{UCUM}|%", {"ifcc48", "a1c65"}),
    (f"lt50|{UCUM}|mmol/mol", {"ifcc48", "a1c65"}),
    (f"gt110|{UCUM}|mg/dL", {"ldl3"}),
    (f"le110|{UCUM}|mg/dL", {"ldl100"}),
]


@pytest.mark.parametrize("value,expected", CLIN_CASES, ids=[v for v, _ in CLIN_CASES])
def test_clinical_conversions(client, clin, value, expected):
    t = clin["t"]
    res = search(client, "Observation", [("_tag", t.token), ("value-quantity", value)])
    assert_exact(res, t, [clin["made"][n]["id"] for n in sorted(expected)])


# ---------------------------------------------------------------------------
# composite
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def comp(client):
    t = Tag(client, "comp")
    subject = create(client, {"resourceType": "Patient"})
    lab = {"subject": ref(subject), "effectiveDateTime": "2024-06-01"}

    def q(v, unit="mm[Hg]"):
        return {"value": v, "system": UCUM, "code": unit, "unit": unit}

    def bp(name, sys_v, dia_v):
        return t.make({"resourceType": "Observation", "status": "final", "code": cc(LOINC, "85354-9"),
                       "component": [{"code": cc(LOINC, "8480-6"), "valueQuantity": q(sys_v)},
                                     {"code": cc(LOINC, "8462-4"), "valueQuantity": q(dia_v)}]}, name)

    made = {
        "a1c8": t.make(dict({"resourceType": "Observation", "status": "final", "code": cc(LOINC, "4548-4"),
                             "valueQuantity": q(8, "%")}, **lab), "a1c8"),
        "a1c65": t.make(dict({"resourceType": "Observation", "status": "final", "code": cc(LOINC, "4548-4"),
                              "valueQuantity": q(6.5, "%")}, **lab), "a1c65"),
        "glu8": t.make({"resourceType": "Observation", "status": "final", "code": cc(LOINC, "2339-0"),
                        "valueQuantity": q(8, "mmol/L")}, "glu8"),
        "bp140": bp("bp140", 140, 90),
        "bp120": bp("bp120", 120, 140),  # diastolic 140: must not pair with the systolic code
        "sys150": t.make({"resourceType": "Observation", "status": "final", "code": cc(LOINC, "8480-6"),
                          "valueQuantity": q(150)}, "sys150"),
    }
    return {"t": t, "made": made}


COMP_CASES = [
    ("code-value-quantity", f"{LOINC}|4548-4$gt7", {"a1c8"}),
    ("code-value-quantity", f"{LOINC}|4548-4$lt7", {"a1c65"}),
    ("code-value-quantity", f"{LOINC}|4548-4$8", {"a1c8"}),
    ("code-value-quantity", f"{LOINC}|4548-4$gt7,{LOINC}|2339-0$gt7", {"a1c8", "glu8"}),
    ("code-value-quantity", f"{LOINC}|8480-6$gt130", {"sys150"}),
    ("component-code-value-quantity", f"{LOINC}|8480-6$gt130", {"bp140"}),
    ("component-code-value-quantity", f"{LOINC}|8462-4$gt100", {"bp120"}),
    ("combo-code-value-quantity", f"{LOINC}|8480-6$gt130", {"bp140", "sys150"}),
    ("combo-code-value-quantity", f"{LOINC}|8480-6$gt130|{UCUM}|mm[Hg]", {"bp140", "sys150"}),
    ("combo-code-value-quantity", f"{LOINC}|8480-6$lt130", {"bp120"}),
    ("combo-code", f"{LOINC}|8480-6", {"bp140", "bp120", "sys150"}),
    ("component-code", f"{LOINC}|8462-4", {"bp140", "bp120"}),
    ("component-value-quantity", "gt135", {"bp140", "bp120"}),
    ("combo-value-quantity", "gt145", {"sys150"}),
]


@pytest.mark.parametrize("param,value,expected", COMP_CASES, ids=[f"{p}={v}" for p, v, _ in COMP_CASES])
def test_composite(client, comp, param, value, expected):
    """R4 search.html#composite: the components must match within one element (a
    systolic code with a diastolic value in the same resource is no match)."""
    t = comp["t"]
    res = search(client, "Observation", [("_tag", t.token), (param, value)])
    assert_exact(res, t, [comp["made"][n]["id"] for n in sorted(expected)])


# ---------------------------------------------------------------------------
# number
# ---------------------------------------------------------------------------

def test_number_parameter(client, capability):
    """R4 search.html#number. Among the R4 definitions of the types this server
    supports there is no number parameter with an expression (Patient.age has
    none), so this runs only if the server declares RiskAssessment.probability."""
    decl = []
    for r in next(x for x in capability["rest"] if x["mode"] == "server").get("resource", []):
        for p in r.get("searchParam", []):
            if p.get("type") == "number":
                decl.append((r["type"], p["name"]))
    if not decl:
        pytest.skip("no search parameter of type number is declared (none exists among the supported types)")
    if ("RiskAssessment", "probability") not in decl:
        pytest.skip(f"number parameters {decl} have no example data in this suite")
    t = Tag(client, "num")
    subj = t.make({"resourceType": "Patient"})
    made = {}
    for name, v in [("p100", 100), ("p995", 99.5), ("p1005", 100.5), ("p99", 99), ("p101", 101)]:
        made[name] = t.make({"resourceType": "RiskAssessment", "status": "final",
                             "subject": {"reference": f"Patient/{subj['id']}"},
                             "prediction": [{"probabilityDecimal": v}]}, name)
    for value, expected in [("100", {"p100", "p995"}), ("gt100", {"p1005", "p101"}), ("le99.5", {"p995", "p99"}),
                            ("ne100", {"p1005", "p99", "p101"})]:
        res = search(client, "RiskAssessment", [("_tag", t.token), ("probability", value)])
        assert_exact(res, t, [made[n]["id"] for n in sorted(expected)])

#!/usr/bin/env python3
"""Generate vbc-server search data from the FHIR R4 (4.0.1) examples package.

Usage:
    python3 tools/gen_search_data.py [/path/to/package] [--vbpr-dir DIR] [--out-dir REPO_ROOT]

``/path/to/package`` is the unpacked ``package/`` folder of the npm package
``hl7.fhir.r4.examples@4.0.1``. It is needed (rather than ``hl7.fhir.r4.core``)
for ``Bundle-searchParams.json``, the spec's ``search-parameters.json``: the
individual ``SearchParameter-*.json`` files of the package also hold example
SearchParameters (``example`` redefines ``_id``, ``example-reference``
redefines Condition ``subject``) and extension-based ones (patient-extensions,
observation-genetics) that are not part of core search. Obtain it with e.g.::

    mkdir -p /tmp/r4core && cd /tmp/r4core
    npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz

Without the argument, the script runs that ``npm pack`` in a temporary
directory itself.

``--vbpr-dir`` is the Da Vinci Value-Based Performance Reporting IG's
conformance folder holding ``SearchParameter-measurereport-category.json`` and
``SearchParameter-measurereport-subject-organization.json``.

Outputs (relative to --out-dir, default: the repository root = parent of tools/):

    profiles/search-parameters.json      SearchParameters the server supports
    profiles/r4-summary-elements.json    isSummary element paths and mandatory
                                         top-level elements per resource type
    profiles/compartment-patient.json    Patient compartment membership params

Expressions that use FHIRPath beyond the subset the server's evaluator is
expected to handle are listed on stderr ("note: ...").

Standard library only; output is deterministic (same input -> byte-identical files).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import OrderedDict

FHIR_VERSION = "4.0.1"
NPM_PACKAGE = "hl7.fhir.r4.examples@4.0.1"
SEARCH_BUNDLE = "Bundle-searchParams.json"
DEFAULT_VBPR_DIR = "/work/shared/reference/davinci-vbpr/conformance"

# Resource types whose search parameters the server supports (Resource and
# DomainResource carry the parameters common to all types: _id, _lastUpdated, ...).
SEARCH_BASES = (
    "Resource", "DomainResource", "Patient", "Observation", "MedicationDispense",
    "MedicationRequest", "MedicationAdministration", "Medication", "Encounter",
    "Condition", "Procedure", "Coverage", "Organization", "Practitioner", "Group",
    "List", "Measure", "MeasureReport", "Library", "ValueSet", "CodeSystem",
    "AuditEvent", "Provenance", "OperationDefinition",
)

# Da Vinci VBPR parameters: file name -> aliases (their SearchParameter ids,
# which clients may also use as the parameter name).
VBPR_PARAMS = OrderedDict([
    ("SearchParameter-measurereport-category.json", ["measurereport-category"]),
    ("SearchParameter-measurereport-subject-organization.json", ["measurereport-subject-organization"]),
])


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


def load_json(path: str):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def fetch_package(tmp: str) -> str:
    """npm pack the examples package into tmp and unpack it; returns package/ dir."""
    log(f"fetching {NPM_PACKAGE} with npm pack into {tmp}")
    out = subprocess.run(
        ["npm", "pack", NPM_PACKAGE], cwd=tmp, check=True, capture_output=True, text=True
    ).stdout.strip().splitlines()
    tgz = os.path.join(tmp, out[-1])
    with tarfile.open(tgz) as tf:
        tf.extractall(tmp, filter="data")
    return os.path.join(tmp, "package")


# ---------------------------------------------------------------------------
# FHIRPath subset check
# ---------------------------------------------------------------------------

_TYPE = r"[A-Za-z][A-Za-z0-9]*"
_STEP = (
    r"(?:[A-Za-z_][A-Za-z0-9_]*"                       # plain element
    r"|as\(" + _TYPE + r"\)"                            # .as(Type)
    r"|ofType\(" + _TYPE + r"\)"                        # .ofType(Type)
    r"|where\(resolve\(\) is " + _TYPE + r"\)"          # .where(resolve() is Type)
    r"|where\([A-Za-z]+ ?= ?'[^']*'\)"                  # .where(field='literal')
    r"|extension\('[^']*'\)"                            # .extension('url')
    r"|exists\(\))"                                     # .exists()
)
_PATH = _STEP + r"(?:\." + _STEP + r")*"
_CLAUSE_RE = re.compile(
    r"^(?:" + _PATH + r"|\(" + _PATH + r" as " + _TYPE + r"\))$"
)


def split_union(expr: str) -> list:
    """Split at top-level '|' (outside parentheses and string literals)."""
    parts, depth, quote, cur = [], 0, False, []
    for ch in expr:
        if quote:
            quote = ch != "'"
        elif ch == "'":
            quote = True
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur).strip())
    return parts


def unusual_clauses(expr: str, bases) -> list:
    """Clauses of expr (for the given base types only, when the expression names
    one per clause) that fall outside the plain-path subset."""
    out = []
    for clause in split_union(expr):
        head = re.match(r"^\(?([A-Za-z]+)", clause)
        if bases is not None and head and head.group(1)[0].isupper() and head.group(1) not in bases:
            continue  # clause for a resource type the server does not search
        if not _CLAUSE_RE.match(clause):
            out.append(clause)
    return out


# ---------------------------------------------------------------------------
# 1. Search parameters
# ---------------------------------------------------------------------------

def param_entry(sp: dict, by_url: dict, aliases=None) -> OrderedDict:
    e = OrderedDict()
    e["url"] = sp["url"]
    e["code"] = sp["code"]
    e["name"] = sp.get("name")
    e["type"] = sp["type"]
    e["base"] = [b for b in sp.get("base", []) if b in SEARCH_BASES]
    e["expression"] = sp["expression"]
    e["target"] = list(sp.get("target", []) or [])
    e["multipleOr"] = sp.get("multipleOr")
    e["multipleAnd"] = sp.get("multipleAnd")
    e["modifier"] = list(sp.get("modifier", []) or [])
    e["comparator"] = list(sp.get("comparator", []) or [])
    if sp["type"] == "composite":
        comps = []
        for c in sp.get("component", []) or []:
            ref = by_url.get(c["definition"])
            if ref is None:
                raise SystemExit(f"error: {sp['url']}: component {c['definition']} not found")
            comps.append(OrderedDict([
                ("definition", c["definition"]),
                ("expression", c["expression"]),
                ("type", ref["type"]),
            ]))
        e["component"] = comps
    if aliases:
        e["aliases"] = list(aliases)
    return e


def build_search_parameters(pkg: str, vbpr_dir: str, source: str):
    bundle_path = os.path.join(pkg, SEARCH_BUNDLE)
    if not os.path.exists(bundle_path):
        raise SystemExit(
            f"error: {bundle_path} not found; use the unpacked {NPM_PACKAGE} package/"
        )
    core = [e["resource"] for e in load_json(bundle_path)["entry"]
            if e["resource"].get("resourceType") == "SearchParameter"]
    by_url = {sp["url"]: sp for sp in core}
    params, skipped, notes = [], [], []
    for sp in core:
        bases = [b for b in sp.get("base", []) if b in SEARCH_BASES]
        if not bases:
            continue
        if sp["type"] == "special" or not sp.get("expression"):
            skipped.append(f"{sp['code']} ({sp['type']}, {'/'.join(bases)})")
            continue
        e = param_entry(sp, by_url)
        params.append(e)
        for clause in unusual_clauses(e["expression"], SEARCH_BASES):
            notes.append(f"{'/'.join(bases)} {e['code']}: {clause}")
        for c in e.get("component", []):
            for clause in unusual_clauses(c["expression"], None):
                notes.append(f"{'/'.join(bases)} {e['code']} component: {clause}")

    # Da Vinci VBPR parameters, appended after the core ones.
    for fname, aliases in VBPR_PARAMS.items():
        sp = load_json(os.path.join(vbpr_dir, fname))
        e = param_entry(sp, by_url, aliases)
        for b in e["base"]:
            for other in params:
                if other["code"] == e["code"] and (
                    b in other["base"] or {"Resource", "DomainResource"} & set(other["base"])
                ):
                    log(f"CLASH: VBPR {e['url']} code {e['code']} vs core {other['url']}")
        for clause in unusual_clauses(e["expression"], SEARCH_BASES):
            notes.append(f"{'/'.join(e['base'])} {e['code']} (VBPR): {clause}")
        params.append(e)
        source += f"; {sp['url']}|{sp.get('version')}"

    doc = OrderedDict()
    doc["source"] = source
    doc["parameters"] = params
    return doc, skipped, notes


# ---------------------------------------------------------------------------
# 2. Summary and mandatory elements
# ---------------------------------------------------------------------------

def build_summary(pkg: str) -> OrderedDict:
    sds = {}
    for path in sorted(glob.glob(os.path.join(pkg, "StructureDefinition-*.json"))):
        sd = load_json(path)
        if (sd.get("resourceType") != "StructureDefinition" or sd.get("kind") != "resource"
                or sd.get("derivation") != "specialization" or sd.get("abstract")):
            continue  # profiles, data types, logical models, DomainResource
        if sd["type"] in sds:
            log(f"warning: duplicate resource type {sd['type']} ({path}); keeping first")
            continue
        sds[sd["type"]] = sd
    summary, mandatory = OrderedDict(), OrderedDict()
    for name in sorted(sds):
        elements = sds[name]["snapshot"]["element"]
        summary[name] = [el["path"] for el in elements if el.get("isSummary") is True]
        mandatory[name] = [
            el["path"] for el in elements
            if el["path"].count(".") == 1 and el["path"].startswith(name + ".")
            and el.get("min", 0) >= 1
        ]
    doc = OrderedDict()
    doc["fhirVersion"] = FHIR_VERSION
    doc["types"] = summary
    doc["mandatory"] = mandatory
    return doc


# ---------------------------------------------------------------------------
# 3. Patient compartment
# ---------------------------------------------------------------------------

def build_compartment(pkg: str) -> OrderedDict:
    cd = load_json(os.path.join(pkg, "CompartmentDefinition-patient.json"))
    resources = OrderedDict()
    for r in sorted(cd.get("resource", []), key=lambda r: r["code"]):
        if r.get("param"):
            resources[r["code"]] = list(r["param"])
    doc = OrderedDict()
    doc["url"] = cd["url"]
    doc["version"] = cd.get("version", FHIR_VERSION)
    doc["resources"] = resources
    return doc


# ---------------------------------------------------------------------------

def dump_lines(obj: OrderedDict, path: str) -> None:
    """Compact JSON with one line per member of each top-level list/object,
    so diffs of regenerated files stay readable."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    compact = dict(ensure_ascii=False, separators=(",", ":"))
    out = []
    for k, v in obj.items():
        key = json.dumps(k)
        if isinstance(v, list) and v:
            body = ",\n".join(json.dumps(x, **compact) for x in v)
            out.append(f"{key}:[\n{body}\n]")
        elif isinstance(v, dict) and v:
            body = ",\n".join(f"{json.dumps(kk)}:{json.dumps(vv, **compact)}" for kk, vv in v.items())
            out.append(f"{key}:{{\n{body}\n}}")
        else:
            out.append(f"{key}:{json.dumps(v, **compact)}")
    text = "{" + ",\n".join(out) + "}\n"
    json.loads(text)  # sanity
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def run(pkg: str, vbpr_dir: str, out_dir: str) -> int:
    if os.path.isdir(os.path.join(pkg, "package")):
        pkg = os.path.join(pkg, "package")
    meta = load_json(os.path.join(pkg, "package.json"))
    source = f"{meta.get('name')}#{meta.get('version')} package/{SEARCH_BUNDLE} (FHIR R4 search-parameters.json, CC0-1.0)"

    doc, skipped, notes = build_search_parameters(pkg, vbpr_dir, source)
    sp_path = os.path.join(out_dir, "profiles", "search-parameters.json")
    dump_lines(doc, sp_path)
    per_base = OrderedDict((b, 0) for b in SEARCH_BASES)
    for p in doc["parameters"]:
        for b in p["base"]:
            per_base[b] += 1
    log(f"wrote {sp_path}: {len(doc['parameters'])} parameters")
    log("  per base: " + ", ".join(f"{b} {n}" for b, n in per_base.items()))
    log("  skipped (special or no expression): " + ", ".join(skipped))
    for n in notes:
        log(f"  note: expression outside the plain-path subset: {n}")

    summ = build_summary(pkg)
    summ_path = os.path.join(out_dir, "profiles", "r4-summary-elements.json")
    dump_lines(summ, summ_path)
    log(
        f"wrote {summ_path}: {len(summ['types'])} resource types, "
        f"{sum(len(v) for v in summ['types'].values())} summary paths, "
        f"{sum(len(v) for v in summ['mandatory'].values())} mandatory top-level elements"
    )

    comp = build_compartment(pkg)
    comp_path = os.path.join(out_dir, "profiles", "compartment-patient.json")
    dump_lines(comp, comp_path)
    log(f"wrote {comp_path}: {len(comp['resources'])} resource types with params")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package_dir", nargs="?",
                    help=f"unpacked {NPM_PACKAGE} package/ directory (default: npm pack it)")
    ap.add_argument("--vbpr-dir", default=DEFAULT_VBPR_DIR,
                    help="Da Vinci VBPR conformance/ folder with the two MeasureReport SearchParameters")
    ap.add_argument(
        "--out-dir",
        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        help="repository root to write profiles/ into (default: repo root)",
    )
    args = ap.parse_args(argv)
    if args.package_dir:
        return run(args.package_dir, args.vbpr_dir, args.out_dir)
    with tempfile.TemporaryDirectory(prefix="r4examples-") as tmp:
        return run(fetch_package(tmp), args.vbpr_dir, args.out_dir)


if __name__ == "__main__":
    sys.exit(main())

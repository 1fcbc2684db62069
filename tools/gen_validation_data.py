#!/usr/bin/env python3
"""Generate vbc-server validation data from the FHIR R4 (4.0.1) definitions package.

Usage:
    python3 tools/gen_validation_data.py /path/to/package [--out-dir REPO_ROOT]

``/path/to/package`` is the unpacked ``package/`` folder of the npm package
``hl7.fhir.r4.core@4.0.1`` (or ``hl7.fhir.r4.examples@4.0.1``, which carries the
same definitions). Obtain it with e.g.::

    mkdir -p /tmp/r4core && cd /tmp/r4core
    npm pack hl7.fhir.r4.examples@4.0.1 && tar xzf hl7.fhir.r4.examples-4.0.1.tgz

Outputs (relative to --out-dir, default: the repository root = parent of tools/):

    profiles/r4-elements.json                 element table from the core snapshots
    valuesets/r4-required-valuesets.json      Bundle of expanded required-binding ValueSets
    valuesets/NON-ENUMERABLE.md               required-binding ValueSets that were skipped

The hand-written VBC profiles in profiles/StructureDefinition-vbc-*.json are not
generated, but are checked against the element table at the end of each run.

Standard library only; output is deterministic (same input -> byte-identical files).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
from collections import OrderedDict

FHIR_VERSION = "4.0.1"
REGEX_EXT = "http://hl7.org/fhir/StructureDefinition/regex"
EXPANSION_TIMESTAMP = "2019-11-01T09:29:23+11:00"
KINDS = ("resource", "complex-type", "primitive-type")


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


def load_dir(pkg: str, prefix: str, resource_type: str) -> dict:
    """Load all <prefix>-*.json files of the given resourceType, keyed by url."""
    out = {}
    for path in sorted(glob.glob(os.path.join(pkg, prefix + "-*.json"))):
        with open(path, encoding="utf-8") as fh:
            res = json.load(fh)
        if res.get("resourceType") != resource_type or "url" not in res:
            continue
        if res["url"] in out:
            log(f"warning: duplicate {resource_type} url {res['url']} ({path}); keeping first")
            continue
        out[res["url"]] = res
    return out


def last_segment(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def strip_version(canonical: str) -> str:
    return canonical.split("|", 1)[0]


# ---------------------------------------------------------------------------
# 1. Element table
# ---------------------------------------------------------------------------

def element_entry(el: dict) -> OrderedDict:
    e = OrderedDict()
    e["min"] = el.get("min", 0)
    e["max"] = el.get("max", "*")
    types = el.get("type") or []
    if types:
        e["types"] = [t["code"] for t in types]
    if "contentReference" in el:
        e["contentReference"] = el["contentReference"].lstrip("#")
    targets = []
    for t in types:
        if t["code"] in ("Reference", "canonical"):
            for tp in t.get("targetProfile", []) or []:
                seg = last_segment(tp)
                if seg not in targets:
                    targets.append(seg)
    if targets:
        e["targets"] = targets
    binding = el.get("binding") or {}
    if binding.get("strength") == "required" and binding.get("valueSet"):
        e["binding"] = strip_version(binding["valueSet"])
    if "maxLength" in el:
        e["maxLength"] = el["maxLength"]
    return e


def build_element_table(sds: dict) -> OrderedDict:
    selected = {}
    for sd in sds.values():
        kind = sd.get("kind")
        if kind not in KINDS:
            continue  # logical models
        derivation = sd.get("derivation")
        # Element and Resource are the roots of the hierarchy and carry no
        # derivation at all; everything else in core is a specialization.
        if derivation not in ("specialization", None):
            continue  # constraint profiles (SimpleQuantity, vitalsigns, ...)
        if "snapshot" not in sd:
            log(f"warning: {sd['url']} has no snapshot; skipped")
            continue
        name = sd.get("type") or sd.get("id")
        if name in selected:
            log(f"warning: duplicate type {name}; keeping first")
            continue
        selected[name] = sd

    types = OrderedDict()
    for name in sorted(selected):
        sd = selected[name]
        t = OrderedDict()
        t["kind"] = sd["kind"]
        t["abstract"] = bool(sd.get("abstract", False))
        base = sd.get("baseDefinition")
        t["base"] = last_segment(base) if base else None
        elements = OrderedDict()
        regex = None
        for el in sd["snapshot"]["element"]:
            path = el["path"]
            if "." not in path:
                continue  # root element
            if path in elements:
                log(f"warning: duplicate path {path} in {name}")
                continue
            elements[path] = element_entry(el)
            if sd["kind"] == "primitive-type" and path == name + ".value":
                for ty in el.get("type") or []:
                    for ext in ty.get("extension", []) or []:
                        if ext.get("url") == REGEX_EXT and "valueString" in ext:
                            regex = ext["valueString"]
        if sd["kind"] == "primitive-type":
            t["regex"] = regex
        t["elements"] = elements
        types[name] = t

    doc = OrderedDict()
    doc["fhirVersion"] = FHIR_VERSION
    doc["types"] = types
    return doc


# ---------------------------------------------------------------------------
# 2. Required value sets
# ---------------------------------------------------------------------------

class NotEnumerable(Exception):
    pass


def is_abstract(concept: dict) -> bool:
    """True when the CodeSystem marks the concept notSelectable (abstract)."""
    for p in concept.get("property", []) or []:
        if p.get("code") in ("notSelectable", "abstract") and p.get("valueBoolean") is True:
            return True
    return False


def flatten_concepts(system: str, concepts: list, out: list) -> None:
    """Append (system, code, display, abstract) for all concepts, depth first."""
    for c in concepts or []:
        out.append((system, c["code"], c.get("display"), is_abstract(c)))
        flatten_concepts(system, c.get("concept"), out)


class Expander:
    def __init__(self, valuesets: dict, codesystems: dict):
        self.vs = valuesets
        self.cs = codesystems
        self.cache = {}
        self.display_index = {}

    def cs_display(self, system: str, code: str):
        cs = self.cs.get(system)
        if cs is None:
            return (None, False)
        idx = self.display_index.get(system)
        if idx is None:
            flat = []
            flatten_concepts(system, cs.get("concept"), flat)
            idx = {c: (d, a) for _, c, d, a in flat}
            self.display_index[system] = idx
        return idx.get(code, (None, False))

    def expand(self, url: str, stack=()) -> list:
        url = strip_version(url)
        if url in self.cache:
            res = self.cache[url]
            if isinstance(res, NotEnumerable):
                raise res
            return res
        if url in stack:
            raise NotEnumerable("circular valueSet import: " + " -> ".join(stack + (url,)))
        vs = self.vs.get(url)
        try:
            if vs is None:
                raise NotEnumerable("ValueSet not in package")
            res = self._expand_vs(vs, stack + (url,))
        except NotEnumerable as exc:
            self.cache[url] = exc
            raise
        self.cache[url] = res
        return res

    def _expand_vs(self, vs: dict, stack) -> list:
        compose = vs.get("compose")
        if not compose:
            raise NotEnumerable("no compose")
        result = []
        seen = set()
        for inc in compose.get("include", []):
            for item in self._expand_include(inc, stack):
                key = (item[0], item[1])
                if key not in seen:
                    seen.add(key)
                    result.append(item)
        excluded = set()
        for exc in compose.get("exclude", []) or []:
            for item in self._expand_include(exc, stack):
                excluded.add((item[0], item[1]))
        return [it for it in result if (it[0], it[1]) not in excluded]

    def _expand_include(self, inc: dict, stack) -> list:
        if inc.get("filter"):
            ops = ", ".join(
                f"{f.get('property')} {f.get('op')} {f.get('value')}" for f in inc["filter"]
            )
            raise NotEnumerable(f"uses filter ({ops}) on {inc.get('system')}")
        parts = []  # each part is an ordered list; the include is their intersection
        system = inc.get("system")
        if system:
            if inc.get("concept"):
                items = []
                for c in inc["concept"]:
                    cs_disp, abstract = self.cs_display(system, c["code"])
                    items.append((system, c["code"], c.get("display") or cs_disp, abstract))
                parts.append(items)
            else:
                cs = self.cs.get(system)
                if cs is None:
                    raise NotEnumerable(f"whole code system {system} is external (not in package)")
                content = cs.get("content")
                if content != "complete":
                    raise NotEnumerable(f"code system {system} has content '{content}' in package")
                items = []
                flatten_concepts(system, cs.get("concept"), items)
                parts.append(items)
        elif inc.get("concept"):
            raise NotEnumerable("include lists concepts without a system")
        for ref in inc.get("valueSet", []) or []:
            try:
                parts.append(self.expand(ref, stack))
            except NotEnumerable as exc:
                raise NotEnumerable(f"imports {strip_version(ref)}, which is not enumerable: {exc}")
        if not parts:
            raise NotEnumerable("empty include")
        first = parts[0]
        for other in parts[1:]:
            keys = {(it[0], it[1]) for it in other}
            first = [it for it in first if (it[0], it[1]) in keys]
        return first


def build_valueset_bundle(element_doc: dict, valuesets: dict, codesystems: dict):
    # required binding canonical -> sorted list of element paths using it
    usage = {}
    for tname, t in element_doc["types"].items():
        for path, e in t["elements"].items():
            if "binding" in e:
                usage.setdefault(e["binding"], []).append(path)
    expander = Expander(valuesets, codesystems)
    entries = []
    skipped = []
    for url in sorted(usage):
        try:
            items = expander.expand(url)
        except NotEnumerable as exc:
            skipped.append((url, str(exc), sorted(usage[url])))
            continue
        src = valuesets[url]
        vs = OrderedDict()
        vs["resourceType"] = "ValueSet"
        if "id" in src:
            vs["id"] = src["id"]
        vs["url"] = src["url"]
        if "version" in src:
            vs["version"] = src["version"]
        if "name" in src:
            vs["name"] = src["name"]
        vs["status"] = src.get("status", "unknown")
        exp = OrderedDict()
        exp["timestamp"] = EXPANSION_TIMESTAMP
        exp["total"] = len(items)
        contains = []
        for system, code, display, abstract in items:
            c = OrderedDict()
            c["system"] = system
            c["code"] = code
            if display is not None:
                c["display"] = display
            if abstract:
                c["abstract"] = True  # notSelectable in the CodeSystem: not valid in instances
            contains.append(c)
        if contains:
            exp["contains"] = contains
        vs["expansion"] = exp
        entry = OrderedDict()
        entry["fullUrl"] = src["url"]
        entry["resource"] = vs
        entries.append(entry)
    bundle = OrderedDict()
    bundle["resourceType"] = "Bundle"
    bundle["id"] = "r4-required-valuesets"
    bundle["type"] = "collection"
    bundle["entry"] = entries
    return bundle, skipped, usage


def write_non_enumerable_md(path: str, skipped: list, emitted: int) -> None:
    lines = [
        "# Required-binding value sets that are NOT enumerated",
        "",
        "Generated by `tools/gen_validation_data.py` from hl7.fhir.r4.core 4.0.1 (CC0).",
        "Do not edit by hand.",
        "",
        f"{emitted} required-binding value sets were expanded into `r4-required-valuesets.json`;",
        f"the {len(skipped)} below could not be fully enumerated from the package",
        "(filters, or whole external code systems such as BCP-13 MIME types, BCP-47",
        "languages, UCUM, ISO 4217 currencies). The server accepts any code for",
        "elements bound to them (a syntactically valid `code` is still required).",
        "",
        "| ValueSet | Reason | Bound from (required) |",
        "|---|---|---|",
    ]
    for url, reason, paths in skipped:
        shown = ", ".join(f"`{p}`" for p in paths[:6])
        if len(paths) > 6:
            shown += f", ... (+{len(paths) - 6} more)"
        reason = reason.replace("|", "\\|")
        lines.append(f"| {url} | {reason} | {shown} |")
    lines.append("")
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        fh.write("\n".join(lines))


# ---------------------------------------------------------------------------
# 3. Check hand-written profiles against the element table
# ---------------------------------------------------------------------------

def resolve_element(element_doc: dict, type_name: str, path: str):
    """Find the element definition for path, descending into data types
    (e.g. Observation.code.coding -> CodeableConcept.coding)."""
    tdef = element_doc["types"].get(type_name)
    if tdef is None:
        return None
    if path in tdef["elements"]:
        return tdef["elements"][path]
    parts = path.split(".")
    for cut in range(len(parts) - 1, 1, -1):
        prefix = ".".join(parts[:cut])
        el = tdef["elements"].get(prefix)
        if el is None:
            continue
        if "contentReference" in el:
            return resolve_element(element_doc, type_name, el["contentReference"] + "." + ".".join(parts[cut:]))
        if len(el.get("types", [])) != 1:
            return None
        sub = el["types"][0]
        return resolve_element(element_doc, sub, sub + "." + ".".join(parts[cut:]))
    return None


def check_profiles(profiles_dir: str, element_doc: dict) -> int:
    problems = 0
    for path in sorted(glob.glob(os.path.join(profiles_dir, "StructureDefinition-*.json"))):
        try:
            with open(path, encoding="utf-8") as fh:
                sd = json.load(fh)
        except ValueError as exc:
            log(f"profile check: {path}: invalid JSON: {exc}")
            problems += 1
            continue
        name = os.path.basename(path)

        def bad(msg):
            nonlocal problems
            problems += 1
            log(f"profile check: {name}: {msg}")

        if sd.get("resourceType") != "StructureDefinition":
            bad("resourceType is not StructureDefinition")
            continue
        for k in ("url", "name", "status", "kind", "abstract", "type", "baseDefinition", "derivation"):
            if k not in sd:
                bad(f"missing {k}")
        base_type = sd.get("type")
        tdef = element_doc["types"].get(base_type)
        if tdef is None:
            bad(f"type {base_type} not in element table")
            continue
        if last_segment(sd.get("baseDefinition", "")) != base_type:
            bad("baseDefinition does not match type")
        diff = (sd.get("differential") or {}).get("element") or []
        if not diff:
            bad("empty differential")
        for el in diff:
            p = el.get("path")
            if el.get("id") != p:
                bad(f"element id {el.get('id')} != path {p}")
            if p == base_type:
                continue
            base_el = resolve_element(element_doc, base_type, p)
            if base_el is None:
                bad(f"path {p} not in base {base_type}")
                continue
            mn = el.get("min", base_el["min"])
            mx = el.get("max", base_el["max"])
            if mn < base_el["min"]:
                bad(f"{p}: min {mn} < base min {base_el['min']}")
            if base_el["max"] != "*" and (mx == "*" or int(mx) > int(base_el["max"])):
                bad(f"{p}: max {mx} exceeds base max {base_el['max']}")
            if mx != "*" and mn > int(mx):
                bad(f"{p}: min > max")
            for ty in el.get("type", []) or []:
                if ty.get("code") not in base_el.get("types", []):
                    bad(f"{p}: type {ty.get('code')} not allowed by base")
                for tp in ty.get("targetProfile", []) or []:
                    allowed = base_el.get("targets", [])
                    seg = last_segment(tp)
                    if allowed and seg not in allowed and "Resource" not in allowed:
                        bad(f"{p}: target {seg} not allowed by base ({allowed})")
        log(f"profile check: {name}: {len(diff)} differential elements checked")
    return problems


# ---------------------------------------------------------------------------

def dump_compact(obj, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        json.dump(obj, fh, ensure_ascii=False, separators=(",", ":"))
        fh.write("\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("package_dir", help="unpacked hl7.fhir.r4.core 4.0.1 package/ directory")
    ap.add_argument(
        "--out-dir",
        default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        help="repository root to write profiles/ and valuesets/ into (default: repo root)",
    )
    args = ap.parse_args(argv)
    pkg = args.package_dir
    if os.path.isdir(os.path.join(pkg, "package")):
        pkg = os.path.join(pkg, "package")

    sds = load_dir(pkg, "StructureDefinition", "StructureDefinition")
    valuesets = load_dir(pkg, "ValueSet", "ValueSet")
    codesystems = load_dir(pkg, "CodeSystem", "CodeSystem")
    if not sds:
        log(f"error: no StructureDefinitions found in {pkg}")
        return 2
    log(f"loaded {len(sds)} StructureDefinitions, {len(valuesets)} ValueSets, {len(codesystems)} CodeSystems")

    element_doc = build_element_table(sds)
    elements_path = os.path.join(args.out_dir, "profiles", "r4-elements.json")
    dump_compact(element_doc, elements_path)
    kinds = {}
    n_el = 0
    for t in element_doc["types"].values():
        kinds[t["kind"]] = kinds.get(t["kind"], 0) + 1
        n_el += len(t["elements"])
    log(f"wrote {elements_path}: {len(element_doc['types'])} types {dict(sorted(kinds.items()))}, {n_el} elements")

    bundle, skipped, usage = build_valueset_bundle(element_doc, valuesets, codesystems)
    vs_path = os.path.join(args.out_dir, "valuesets", "r4-required-valuesets.json")
    dump_compact(bundle, vs_path)
    md_path = os.path.join(args.out_dir, "valuesets", "NON-ENUMERABLE.md")
    write_non_enumerable_md(md_path, skipped, len(bundle["entry"]))
    log(
        f"wrote {vs_path}: {len(usage)} required-binding value sets, "
        f"{len(bundle['entry'])} expanded, {len(skipped)} skipped"
    )
    for url, reason, _ in skipped:
        log(f"  skipped {url}: {reason}")

    problems = check_profiles(os.path.join(args.out_dir, "profiles"), element_doc)
    if problems:
        log(f"profile check: {problems} problem(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Print the per-area passed/failed table from a JUnit XML written by the suite
(every test case carries an `area` property). Usage: python area_table.py junit.xml"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict

AREAS = ["capability", "read/write", "history", "transactions", "search", "validation", "robustness", "r4-examples", "synthea", "reports", "smart"]
# a module skipped as a whole at import is one test case named after the module, without properties
MODULE_AREAS = {"test_smart": "smart"}


def main(path: str) -> int:
    counts = defaultdict(lambda: {"passed": 0, "failed": 0, "skipped": 0})
    for case in ET.parse(path).getroot().iter("testcase"):
        area = MODULE_AREAS.get(case.get("name"), "unknown") if not case.get("classname") else "unknown"
        for prop in case.iter("property"):
            if prop.get("name") == "area":
                area = prop.get("value")
        if case.find("failure") is not None or case.find("error") is not None:
            counts[area]["failed"] += 1
        elif case.find("skipped") is not None:
            counts[area]["skipped"] += 1
        else:
            counts[area]["passed"] += 1
    print(f"{'area':<14}{'passed':>8}{'failed':>8}{'skipped':>9}")
    total = {"passed": 0, "failed": 0, "skipped": 0}
    for area in AREAS + sorted(set(counts) - set(AREAS)):
        c = counts[area]
        for k in total:
            total[k] += c[k]
        print(f"{area:<14}{c['passed']:>8}{c['failed']:>8}{c['skipped']:>9}")
    print(f"{'total':<14}{total['passed']:>8}{total['failed']:>8}{total['skipped']:>9}")
    print(f"conformance: {total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "junit.xml"))

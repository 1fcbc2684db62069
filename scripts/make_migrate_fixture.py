#!/usr/bin/env python3
"""Write the fixture of tests/migrate.rs: a small data directory as a release before the store
engine choice wrote it (sled, no `store-engine` file), and the answers that release gave to a set
of reads, which the migrated copy must give again.

    python3 scripts/make_migrate_fixture.py BINARY [OUT_DIR]

BINARY is a vbc-server build of that release (or a later one up to commit bdda077, the last
that serves sled: it is run with VBC_STORE_ENGINE=sled and the engine records are removed
afterwards). OUT_DIR defaults to
tests/data/migrate.
"""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request

FHIR = "application/fhir+json"

# the reads whose answers the copy must repeat (paths relative to the base URL)
READS = [
    "Patient/mig-1",
    "Patient/mig-1/_history",
    "Patient/mig-1/_history/2",
    "Patient/mig-1/_history/1",
    "Observation/mig-obs-del",
    "Observation/mig-obs-del/_history",
    "Observation?subject=Patient/mig-1&_sort=_id",
    "Patient?identifier=urn:mig|A-2",
    "Patient?identifier=urn:mig|A-1",
    "Patient?identifier=urn:mig|A-0",
    "Observation?code=http://loinc.org|4548-4&_sort=_id",
    "Patient/_history?_count=50",
    "_history?_count=100",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(base, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}/{path}", data=data, method=method)
    req.add_header("Accept", FHIR)
    if data is not None:
        req.add_header("Content-Type", FHIR)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def write_data(base):
    def ok(status, what):
        if status >= 300:
            sys.exit(f"{what}: HTTP {status}")

    for n, family in enumerate(["Lee", "Li", "Lei"]):
        s, _ = call(base, "PUT", "Patient/mig-1", {
            "resourceType": "Patient", "id": "mig-1",
            "identifier": [{"system": "urn:mig", "value": f"A-{n}"}],
            "name": [{"family": family, "given": ["Ada"]}],
            "birthDate": "1961-04-12", "gender": "female",
        })
        ok(s, "update Patient/mig-1")
    s, _ = call(base, "PUT", "Observation/mig-obs-del", {
        "resourceType": "Observation", "id": "mig-obs-del", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "subject": {"reference": "Patient/mig-1"},
        "effectiveDateTime": "2025-03-01",
        "valueQuantity": {"value": 7.25, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
    })
    ok(s, "create Observation/mig-obs-del")
    s, _ = call(base, "DELETE", "Observation/mig-obs-del")
    ok(s, "delete Observation/mig-obs-del")
    entries = []
    for i, (value, day) in enumerate([(8.10, "2025-01-15"), (6.90, "2025-04-15")]):
        entries.append({
            "fullUrl": f"urn:uuid:00000000-0000-4000-8000-00000000000{i}",
            "resource": {
                "resourceType": "Observation", "id": f"mig-a1c-{i}", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
                "subject": {"reference": "Patient/mig-1"},
                "effectiveDateTime": day,
                "valueQuantity": {"value": value, "unit": "%", "system": "http://unitsofmeasure.org", "code": "%"},
            },
            "request": {"method": "PUT", "url": f"Observation/mig-a1c-{i}"},
        })
    s, _ = call(base, "POST", "", {"resourceType": "Bundle", "type": "transaction", "entry": entries})
    ok(s, "transaction")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = os.path.abspath(sys.argv[1])
    out = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else "tests/data/migrate")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp) / "data"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = dict(os.environ, VBC_STORE_ENGINE="sled", RUST_LOG="warn")
        server = subprocess.Popen(
            [binary, "serve", "--no-auth", "--listen", f"127.0.0.1:{port}",
             "--data-dir", str(data), "--contracts-dir", ""],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"{base}/health")
                    break
                except OSError:
                    time.sleep(0.1)
            write_data(base)
            answers = []
            for path in READS:
                status, body = call(base, "GET", path)
                answers.append({"path": path, "status": status, "body": body})
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
        # as a release before the engine choice left it: no engine records
        for record in data.rglob("store-engine"):
            record.unlink()
        archive = out / "sled-data.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(data, arcname="data")
        (out / "expected.json").write_text(json.dumps(
            {"base": base, "reads": answers}, indent=1, sort_keys=True) + "\n")
        print(f"wrote {archive} ({archive.stat().st_size} bytes) and {out / 'expected.json'}")


if __name__ == "__main__":
    main()

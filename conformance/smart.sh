#!/usr/bin/env bash
# The SMART backend-services checks (conformance/test_smart.py) against a fresh
# vbc-server with auth enabled.
#
#   bash conformance/smart.sh [SERVER_BINARY] [extra pytest arguments...]
#
# SERVER_BINARY defaults to ./target/release/vbc-server (relative to the
# repository root; a relative path given here is relative to the current
# directory). Starts it on a free loopback port with a temporary data dir, no
# contracts and the test clients of tests/data/auth/clients.json, waits for
# /health, runs conformance/run.sh on test_smart.py (and the Node validators'
# check of the smart area) as client payer-app (key es-1), stops the server.
# Exit code: pytest's, or 1 when the server does not start, dies or does not
# shut down cleanly.
set -euo pipefail

if [[ $# -gt 0 && "$1" != -* ]]; then
  bin="$1"
  shift
  [[ "$bin" == /* ]] || bin="$(pwd)/$bin"
else
  bin=""
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bin="${bin:-$ROOT/target/release/vbc-server}"
[[ -x "$bin" ]] || { echo "smart.sh: no server binary at $bin" >&2; exit 2; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
log=$(mktemp)
"$bin" serve --listen "127.0.0.1:${port}" --data-dir "$data" --contracts-dir "" \
  --auth-clients "$ROOT/tests/data/auth/clients.json" >"$log" 2>&1 &
pid=$!
cleanup() { kill -9 "$pid" 2>/dev/null || true; rm -rf "$data" "$log"; }
trap cleanup EXIT

up=""
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:${port}/health" >/dev/null 2>&1; then up=1; break; fi
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z "$up" ]]; then
  echo "smart.sh: the server did not answer /health on port ${port}:" >&2
  tail -50 "$log" >&2
  exit 1
fi

# absolute paths: run.sh changes into conformance/
export SMART_CLIENT_ID=payer-app
export SMART_PRIVATE_KEY="$ROOT/tests/data/auth/es384-private.pem"
export SMART_KID=es-1
export SMART_OTHER_PRIVATE_KEY="$ROOT/tests/data/auth/es384-other-private.pem"

status=0
# pytest runs in conformance/: its paths are relative to that directory
bash conformance/run.sh "http://127.0.0.1:${port}" test_smart.py \
  "test_zz_independent_validation.py::test_independent_validation[smart]" "$@" || status=$?

if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  wait "$pid" || { echo "smart.sh: the server did not shut down cleanly"; tail -50 "$log"; status=1; }
else
  echo "smart.sh: the server died during the SMART checks:"; tail -50 "$log"; status=1
fi
exit "$status"

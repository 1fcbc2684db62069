#!/usr/bin/env bash
# The whole test suite: formatting and lint gates, the cargo tests (units and HTTP tests against
# the real binary, including the kill -9 crash test), then the black-box conformance suite against
# a freshly started release build. Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --release --all-targets -- -D warnings

echo "== cargo test (release profile: one build serves the tests and the server)"
cargo test --release

echo "== conformance suite against a fresh release server"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
data=$(mktemp -d)
log=$(mktemp)
./target/release/vbc-server serve --no-auth --listen "127.0.0.1:${port}" --data-dir "$data" >"$log" 2>&1 &
pid=$!
cleanup() { kill -9 "$pid" 2>/dev/null || true; rm -rf "$data"; }
trap cleanup EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:${port}/health" >/dev/null 2>&1 && break
  sleep 0.1
done
status=0
bash conformance/run.sh "http://127.0.0.1:${port}" || status=$?
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  wait "$pid" || { echo "server did not shut down cleanly"; status=1; }
else
  echo "server died during the conformance suite:"; tail -50 "$log"; status=1
fi
echo "== SMART backend-services conformance against a second server with auth on"
bash conformance/smart.sh ./target/release/vbc-server || status=1
exit "$status"

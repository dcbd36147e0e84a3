#!/usr/bin/env bash
# Property-based fuzzing of the served openapi.json: schemathesis (from
# PyPI, in a virtualenv under target/) runs every check against the axum
# example on a fresh SQLite file, with the hooks and settings of this folder
# (what the document cannot say: current clocks, unique op ids, signed
# cursors, typed shape params). Fails on any failure, and when no valid push
# got through (the generated requests must reach past validation).
#
# FUZZ_SEED=N replays a run; FUZZ_SEED=random explores (CI uses the fixed
# default so that a run is repeatable).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
VENV="$ROOT/target/venv-schemathesis"
SERVER="$ROOT/target/debug/examples/axum_server"
[ -x "$SERVER" ] || { echo "missing $SERVER: cargo build --example axum_server" >&2; exit 1; }
if [ ! -x "$VENV/bin/st" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'schemathesis==4.32.5'
fi

DIR=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
SECRET="fuzz-secret-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
BIND="127.0.0.1:$PORT" DATABASE_URL="sqlite://$DIR/fuzz.db?mode=rwc" JWT_SECRET="$SECRET" \
  "$SERVER" >"$DIR/server.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
BASE="http://127.0.0.1:$PORT/api/sync"
for _ in $(seq 100); do
  python3 -c "import urllib.request; urllib.request.urlopen('$BASE/health?probe=live', timeout=1)" 2>/dev/null && break
  sleep 0.2
done

export FUZZ_BASE="$BASE"
FUZZ_TOKEN=$(python3 mint_token.py "$SECRET")
export FUZZ_TOKEN
SEED=${FUZZ_SEED:-20261204}
SEED_ARGS=()
[ "$SEED" = random ] || SEED_ARGS=(--seed "$SEED")
SCHEMATHESIS_HOOKS=hooks PYTHONPATH=. "$VENV/bin/st" run "$BASE/openapi.json" --no-color "${SEED_ARGS[@]}"

# The valid pushes among the generated ones were applied.
python3 - "$BASE" "$FUZZ_TOKEN" <<'PY'
import json, sys, urllib.request
base, token = sys.argv[1], sys.argv[2]
request = urllib.request.Request(f"{base}/pull?limit=1000", headers={"authorization": f"Bearer {token}"})
changes = json.load(urllib.request.urlopen(request, timeout=10))["changes"]
print(f"fuzz: {len(changes)} generated changes were applied")
sys.exit(0 if changes else "fuzz: no generated push got past validation")
PY

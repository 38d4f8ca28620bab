#!/usr/bin/env bash
# Runs oip_clients_test.py with Triton's client library (tritonclient[grpc])
# in a pinned virtual environment under the build tree, made on first use
# from PyPI. Exits 77 (CTest: skipped), saying why, when PyPI is out of
# reach.
# Usage: run_oip_clients_test.sh BUILD_DIR SERVER_BINARY
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$1/oip-venv"
stamp="$venv/requirements.stamp"
if ! cmp -s "$here/requirements-oip.txt" "$stamp" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" || { echo "FAIL: python3 -m venv"; exit 1; }
  if ! "$venv/bin/pip" install -q -r "$here/requirements-oip.txt" >"$1/oip-venv.log" 2>&1; then
    echo "SKIP: cannot install tritonclient from PyPI: $(tail -1 "$1/oip-venv.log")"
    rm -rf "$venv"
    exit 77
  fi
  cp "$here/requirements-oip.txt" "$stamp"
fi
exec "$venv/bin/python" "$here/oip_clients_test.py" "$2"

#!/usr/bin/env bash
# Runs tests/deploy/deploy_test.py in a pinned virtual environment under the
# build tree (made on first use, from PyPI: hadolint, kubernetes-validate).
# Exits 77 (CTest: skipped), saying why, when PyPI is out of reach.
# Usage: run_deploy_test.sh BUILD_DIR SERVER_BINARY
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$1/deploy-venv"
stamp="$venv/requirements.stamp"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" || { echo "FAIL: python3 -m venv"; exit 1; }
  if ! "$venv/bin/pip" install -q -r "$here/requirements.txt" >"$1/deploy-venv.log" 2>&1; then
    echo "SKIP: cannot install the deploy checks' tools from PyPI: $(tail -1 "$1/deploy-venv.log")"
    rm -rf "$venv"
    exit 77
  fi
  cp "$here/requirements.txt" "$stamp"
fi
exec "$venv/bin/python" "$here/deploy_test.py" "$2"

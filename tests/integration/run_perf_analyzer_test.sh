#!/usr/bin/env bash
# Gets Triton's perf_analyzer (bench/get_perf_analyzer.sh) and runs
# perf_analyzer_test.py with it. Exits 77 (CTest: skipped) with the reason
# when perf_analyzer cannot run here.
# Usage: run_perf_analyzer_test.sh BUILD_DIR SERVER_BINARY
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pa=$(bash "$here/../../bench/get_perf_analyzer.sh" "$1" 2>"$1/perf-analyzer.log")
rc=$?
if [ $rc -eq 77 ]; then echo "SKIP: $(cat "$1/perf-analyzer.log")"; exit 77; fi
[ $rc -eq 0 ] || { cat "$1/perf-analyzer.log"; exit 1; }
exec python3 "$here/perf_analyzer_test.py" "$2" "$pa"

#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one run, over a build made with nvcc
# (the CUDA targets, the two CUDA benchmarks, normserve, normctl and
# normbench):
#   1. the CUDA unit tests: kernels against float64 and the CPU kernel, the
#      backend, the pipeline, the launch plan. With a GPU present, a test
#      that skips for "no CUDA device" fails this step;
#   2. the server on the GPU end to end (tests/integration/gpu_server_test.py);
#   3. the CUDA benchmark (GB/s against a device-to-device copy in the same
#      run; JSON in OUT_DIR) and the one-run comparison with PyTorch
#      (bench/compare_cuda.py, table in OUT_DIR); the staged kernels' launch
#      choices against each other (BM_CudaTuning, bench/tuning_report.py's
#      table in OUT_DIR); the backend's benchmark
#      (whole host batches against one thread's memcpy and PCIe; JSON and
#      bench/backend_report.py's table in OUT_DIR);
#   4. compute-sanitizer: memcheck (with leak checks) over the kernel and
#      backend tests, racecheck, synccheck and initcheck over the kernel
#      tests;
#   5. where ncu (Nsight Compute) is on PATH, the kernels' counters per
#      element: instructions, issue rate, DRAM throughput, occupancy, and
#      the warps' stall reasons (bench/profile_cuda.py; ncu_kernels.md in
#      OUT_DIR).
# A summary table ends the output; the exit status is 1 if any step failed.
#
# Usage: tests/gpu_checks.sh [BUILD_DIR] [OUT_DIR]    (or: make gpu-check)
# OUT_DIR defaults to BUILD_DIR/gpu-checks.
# Environment: PYTHON (with NumPy; PyTorch for the comparison), default
# python3; BENCH_ARGS, extra flags for normalize_cuda_bench; BASELINE_BENCH,
# another build's normalize_cuda_bench (say, of the commit before a kernel
# change: bench/build_baseline.sh COMMIT), run right after this build's so
# that the comparison table gives the change's speed-up measured in one run;
# STEP_TIMEOUT_S,
# each sanitizer step's limit (default 600); DEADLINE_S, seconds after which
# the remaining steps are reported as not run (default: none); SKIP_STEPS,
# names of steps to leave out (space-separated, reported as not run).
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$repo/build}" && pwd)
out=${2:-$build/gpu-checks}
mkdir -p "$out"
out=$(cd "$out" && pwd)
python=${PYTHON:-python3}
sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)

step_limit=${STEP_TIMEOUT_S:-600}
deadline=${DEADLINE_S:-0}
summary=()
failed=0
# step NAME TIMEOUT_S COMMAND...: runs COMMAND with its output in
# OUT_DIR/NAME.log, and records its status and time.
step() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  if [[ " ${SKIP_STEPS:-} " == *" $name "* ]]; then
    summary+=("$(printf '%-28s %-24s' "$name" "not run: in SKIP_STEPS")")
    return
  fi
  if [ "$deadline" -gt 0 ] && [ "$SECONDS" -ge "$deadline" ]; then
    failed=1
    summary+=("$(printf '%-28s %-24s' "$name" "not run: past DEADLINE_S")")
    return
  fi
  echo "== $name: $*"
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  local rc=$?
  local verdict=ok
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    verdict="timed out after ${limit} s"
  elif [ "$rc" -ne 0 ]; then
    verdict="failed (exit $rc)"
  fi
  if [ "$verdict" != ok ]; then
    failed=1
    tail -n 25 "$out/$name.log"
  fi
  summary+=("$(printf '%-28s %-24s %4d s' "$name" "$verdict" $((SECONDS - start)))")
}

# Fails if a gtest log shows a skip for want of a device.
no_device_skips() {
  local log=$1
  if grep -q "no CUDA device" "$log"; then
    echo "a test skipped for want of a device, with a GPU present:" >&2
    grep -B1 "no CUDA device" "$log" >&2
    return 1
  fi
}

echo "== device"
if ! nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm \
  --format=csv 2>&1 | tee "$out/device.txt"; then
  echo "gpu_checks: no usable NVIDIA GPU (nvidia-smi failed): nothing checked" >&2
  exit 2
fi

for t in cuda_normalize_test cuda_backend_test cuda_pipeline_test cuda_launch_plan_test; do
  step "$t" 300 "$build/tests/$t"
  [ -f "$out/$t.log" ] && ! no_device_skips "$out/$t.log" &&
    failed=1 && summary+=("$t: a test skipped for want of a device")
done

step gpu_server_test 300 env NORMSERVE_GPU_REPORT="$out/gpu_server_load.json" \
  "$python" "$repo/tests/integration/gpu_server_test.py" \
  "$build/server/normserve" "$build/client/normctl" "$build/client/normbench"

# The launch choices (BM_CudaTuning) have a step of their own, below.
# shellcheck disable=SC2086  # BENCH_ARGS is a list of flags
step normalize_cuda_bench 300 "$build/bench/normalize_cuda_bench" \
  --benchmark_out="$out/normalize_cuda_bench.json" --benchmark_out_format=json \
  --benchmark_filter=-BM_CudaTuning ${BENCH_ARGS:-}
baseline_args=()
if [ -n "${BASELINE_BENCH:-}" ]; then
  # shellcheck disable=SC2086
  step baseline_cuda_bench 300 "$BASELINE_BENCH" \
    --benchmark_out="$out/baseline_cuda_bench.json" --benchmark_out_format=json \
    --benchmark_filter=-BM_CudaTuning ${BENCH_ARGS:-}
  # Only a baseline that ran: a skipped, failed or cut-off one would make
  # the comparison (and its PyTorch table) fail on the missing file.
  if [ -s "$out/baseline_cuda_bench.json" ]; then
    baseline_args=(--baseline_json "$out/baseline_cuda_bench.json")
  fi
fi
step compare_cuda 300 "$python" "$repo/bench/compare_cuda.py" --build "$build" \
  --bench_json "$out/normalize_cuda_bench.json" "${baseline_args[@]}" --out "$out"

# shellcheck disable=SC2086
step tuning 300 "$build/bench/normalize_cuda_bench" \
  --benchmark_out="$out/tuning.json" --benchmark_out_format=json \
  ${BENCH_ARGS:-} --benchmark_filter=BM_CudaTuning
step tuning_report 60 "$python" "$repo/bench/tuning_report.py" \
  --bench_json "$out/tuning.json" --out "$out"

# shellcheck disable=SC2086
step cuda_backend_bench 300 "$build/bench/cuda_backend_bench" \
  --benchmark_out="$out/cuda_backend_bench.json" --benchmark_out_format=json \
  ${BENCH_ARGS:-}
step backend_report 60 "$python" "$repo/bench/backend_report.py" \
  --bench_json "$out/cuda_backend_bench.json" --out "$out"

step memcheck_kernels "$step_limit" "$sanitizer" --tool memcheck --leak-check full \
  --error-exitcode 1 "$build/tests/cuda_normalize_test"
step memcheck_backend "$step_limit" "$sanitizer" --tool memcheck --leak-check full \
  --error-exitcode 1 "$build/tests/cuda_backend_test"
# Racecheck leaves out the large grid of more blocks than the device holds
# (each block shares memory as in every other staged test, and its 14 M
# elements would take most of the step's time under racecheck) and the
# batch-position test (the same kernels as the other tests, at many
# offsets: 59 s of racecheck on an H200, which cut the step off at 100 s
# before the staged tuning test ran).
step racecheck_kernels "$step_limit" "$sanitizer" --tool racecheck --error-exitcode 1 \
  "$build/tests/cuda_normalize_test" \
  --gtest_filter=-CudaKernelTest.StagedGridBeyondTheResidentBlocksDoesNotChangeBits:CudaKernelTest.RowBitsDoNotDependOnBatchPositionOrAlignment
step synccheck_kernels "$step_limit" "$sanitizer" --tool synccheck --error-exitcode 1 \
  "$build/tests/cuda_normalize_test"
step initcheck_kernels "$step_limit" "$sanitizer" --tool initcheck --error-exitcode 1 \
  "$build/tests/cuda_normalize_test"

if command -v ncu >/dev/null 2>&1; then
  step profile_cuda 300 "$python" "$repo/bench/profile_cuda.py" \
    --bench "$build/bench/normalize_cuda_bench" --out "$out"
else
  summary+=("$(printf '%-28s %-24s' profile_cuda "not run: no ncu on PATH")")
fi

echo
echo "== summary (logs in $out)"
printf '%s\n' "${summary[@]}"
exit "$failed"

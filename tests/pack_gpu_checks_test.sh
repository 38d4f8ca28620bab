#!/usr/bin/env bash
# tests/pack_gpu_checks.sh on this build: the archive holds every binary that
# tests/gpu_checks.sh runs and its runner; under the runner's library path
# every library the packed binaries load is the pack's own or one the pack
# leaves to the host (the C library, libstdc++, the driver); and the packed
# launch-plan test runs and passes from the pack.
# Usage: pack_gpu_checks_test.sh BUILD_DIR
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
  echo "pack_gpu_checks_test: $*" >&2
  exit 1
}

PACK_XZ_PRESET=0 "$repo/tests/pack_gpu_checks.sh" "$build" "$tmp/pack.tar.xz"
tar -C "$tmp" -xJf "$tmp/pack.tar.xz"
pack=$tmp/build-gpu-pack
for b in tests/cuda_normalize_test tests/cuda_backend_test tests/cuda_pipeline_test \
  tests/cuda_launch_plan_test bench/normalize_cuda_bench bench/cuda_backend_bench \
  server/normserve client/normctl client/normbench run_gpu_checks.sh; do
  [ -x "$pack/$b" ] || fail "no $b in the archive"
done

host_libs='/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcuda)\.so'
for b in "$pack"/tests/* "$pack"/bench/* "$pack"/server/* "$pack"/client/*; do
  while read -r lib; do
    case $lib in
      "$pack"/*) ;;
      *) [[ $lib =~ $host_libs ]] || fail "$(basename "$b") loads $lib from outside the pack" ;;
    esac
  done < <(LD_LIBRARY_PATH=$pack/lib:$pack/lib-fallback ldd "$b" | awk '/=> \//{print $3}')
done
[ -n "$(ls "$pack/lib")" ] || fail "no libraries packed"

LD_LIBRARY_PATH=$pack/lib:$pack/lib-fallback "$pack/tests/cuda_launch_plan_test" \
  --gtest_brief=1 >"$tmp/plan.log" 2>&1 || {
  cat "$tmp/plan.log" >&2
  fail "the packed cuda_launch_plan_test failed"
}
echo "pack_gpu_checks_test: ok ($(du -h "$tmp/pack.tar.xz" | cut -f1) at preset 0)"

#!/usr/bin/env bash
# NVIDIA's packages install nvcc at /usr/local/cuda/bin without putting it
# on PATH: configure must still find it there and build the CUDA backend
# (else a machine with CUDA silently builds CPU-only).
#   configure_cuda_test.sh SOURCE_DIR
set -euo pipefail
src=$1
if [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "skipped: no /usr/local/cuda/bin/nvcc on this machine"
  exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
out=$(env -u CUDACXX PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  cmake -S "$src" -B "$dir" -G Ninja -DNORMSERVE_BUILD_TESTS=OFF \
  -DNORMSERVE_BUILD_BENCH=OFF 2>&1) || { echo "$out"; exit 1; }
if ! grep -q "normserve: CUDA" <<<"$out"; then
  echo "$out"
  echo "FAIL: nvcc at /usr/local/cuda/bin was not found with it off PATH"
  exit 1
fi
echo "PASS: $(grep 'normserve: CUDA' <<<"$out")"

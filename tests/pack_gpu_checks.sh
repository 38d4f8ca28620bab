#!/usr/bin/env bash
# Packs what tests/gpu_checks.sh runs, from a build made with nvcc, into one
# archive, so that the checks can run on a GPU host that has the NVIDIA
# driver and Python (NumPy; PyTorch for the comparison) but none of this
# project's build dependencies: the CUDA tests, the two CUDA benchmarks,
# normserve, normctl and normbench (stripped), the shared libraries they
# load other than the C library, libstdc++ and the driver (the host's own
# are newer, and a Python process beside them must keep its own), and
# optionally another build's normalize_cuda_bench as the baseline
# (bench/build_baseline.sh). The fatbins repeat across the binaries; xz with
# a dictionary larger than the whole stores them once.
#
# Usage: tests/pack_gpu_checks.sh BUILD_DIR ARCHIVE [BASELINE_BENCH]
# Then, on the GPU host, in a checkout of the same commit:
#   tar xJf ARCHIVE && build-gpu-pack/run_gpu_checks.sh [OUT_DIR]
# with the environment of tests/gpu_checks.sh (SKIP_STEPS, BENCH_ARGS, ...);
# BASELINE_BENCH is set to the packed baseline when there is one.
# PACK_XZ_PRESET sets the compression level (default 6).
set -euo pipefail
if [ $# -lt 2 ] || [ $# -gt 3 ]; then
  sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "$1" && pwd)
archive=$2
baseline=${3:-}
binaries=(tests/cuda_normalize_test tests/cuda_backend_test tests/cuda_pipeline_test
  tests/cuda_launch_plan_test bench/normalize_cuda_bench bench/cuda_backend_bench
  server/normserve client/normctl client/normbench)

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pack=$stage/build-gpu-pack
mkdir -p "$pack/lib" "$pack/lib-fallback"
for b in "${binaries[@]}"; do
  if [ ! -x "$build/$b" ]; then
    echo "pack_gpu_checks: no $build/$b (build it with nvcc found first)" >&2
    exit 1
  fi
  mkdir -p "$pack/$(dirname "$b")"
  cp "$build/$b" "$pack/$b"
done
if [ -n "$baseline" ]; then
  cp "$baseline" "$pack/baseline_cuda_bench"
fi
find "$pack" -type f -perm -u+x -exec strip --strip-unneeded {} +

# Every library the binaries load, but the C library, libstdc++/libgcc and
# the driver; OpenSSL and zlib go where the host's own take precedence.
find "$pack" -type f -perm -u+x -exec ldd {} + | awk '/=> \//{print $3}' | sort -u |
  grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libstdc\+\+|libgcc_s|libcuda)\.so' |
  while read -r lib; do
    case $(basename "$lib") in
      libssl.so.* | libcrypto.so.* | libz.so.*) cp -L "$lib" "$pack/lib-fallback/" ;;
      *) cp -L "$lib" "$pack/lib/" ;;
    esac
  done
strip --strip-unneeded "$pack"/lib/* "$pack"/lib-fallback/* 2>/dev/null || true

cat >"$pack/run_gpu_checks.sh" <<'EOF'
#!/usr/bin/env bash
# Runs tests/gpu_checks.sh over the packed binaries (tests/pack_gpu_checks.sh).
# Usage, from the checkout's root: build-gpu-pack/run_gpu_checks.sh [OUT_DIR]
set -uo pipefail
pack=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH=$pack/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
for lib in libssl.so.3 libcrypto.so.3 libz.so.1; do
  if ! ldconfig -p | grep -q "$lib"; then
    export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$pack/lib-fallback
    break
  fi
done
if [ -x "$pack/baseline_cuda_bench" ] && [ -z "${BASELINE_BENCH:-}" ]; then
  export BASELINE_BENCH=$pack/baseline_cuda_bench
fi
exec "$pack/../tests/gpu_checks.sh" "$pack" "${1:-$pack/gpu-checks}"
EOF
chmod +x "$pack/run_gpu_checks.sh"

tar -C "$stage" -cf - build-gpu-pack |
  xz -T1 "--lzma2=preset=${PACK_XZ_PRESET:-6},dict=192MiB" >"$archive"
echo "pack_gpu_checks: $archive ($(du -h "$archive" | cut -f1)) from $build" \
  "at $(git -C "$repo" rev-parse --short HEAD)" >&2

#!/usr/bin/env bash
# Builds the CUDA benchmark of another commit, to measure a kernel change
# against it in one run on one GPU:
#
#   BASELINE_BENCH=$(bench/build_baseline.sh f994a2d) make gpu-check
#
# The commit (default HEAD~1) is checked out as a detached git worktree
# under build-baseline/<commit>/src and built (Release, CUDA) in
# build-baseline/<commit>/build; only normalize_cuda_bench is built. Prints
# the benchmark's path on stdout, the build's output on stderr. Reuses an
# earlier build of the same commit. CUDA_ARCHITECTURES, when set, is passed
# as CMAKE_CUDA_ARCHITECTURES (e.g. 90-real to build for Hopper only).
#
# Arguments after the commit go to CMake, to build a variant of a commit
# (e.g. other nvcc flags) and measure it against that commit's default in
# one run:
#
#   BASELINE_BENCH=$(bench/build_baseline.sh HEAD \
#     -DCMAKE_CUDA_FLAGS=--maxrregcount=96) make gpu-check
#
# (the table's "baseline" columns are then the variant's). Each variant gets
# its own build folder. The staged kernels' launch tuning (row buffers,
# rows per block) needs no variant build: BM_CudaTuning in the benchmark
# itself measures it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
commit=$(git -C "$repo" rev-parse --short "${1:-HEAD~1}^{commit}")
shift || true
variant=$commit
for arg in "$@"; do
  case "$arg" in
    -D?*=*) variant+="_$(printf '%s' "${arg#-D}" | tr -c 'A-Za-z0-9_.=\n' '_')" ;;
    *)
      echo "build_baseline: $arg: expected -DNAME=VALUE" >&2
      exit 2
      ;;
  esac
done
dir=$repo/build-baseline/$commit
build=$repo/build-baseline/$variant/build
if [ ! -d "$dir/src" ]; then
  mkdir -p "$dir"
  git -C "$repo" worktree add --detach "$dir/src" "$commit" >&2
fi
args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DNORMSERVE_BUILD_TESTS=OFF)
if [ -n "${CUDA_ARCHITECTURES:-}" ]; then
  args+=("-DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCHITECTURES")
fi
cmake -S "$dir/src" -B "$build" "${args[@]}" "$@" >&2
cmake --build "$build" --target normalize_cuda_bench >&2
bench=$build/bench/normalize_cuda_bench
[ -x "$bench" ] || {
  echo "build_baseline: no $bench (was CUDA found at configure time?)" >&2
  exit 1
}
echo "$bench"

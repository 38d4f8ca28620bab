#!/usr/bin/env bash
# Builds the Dockerfile's CUDA variant (--build-arg DEVICE=cuda) with Podman
# and checks the image, on a machine with no GPU and no registry serving
# NVIDIA's nvidia/cuda images.
#
# A MANUAL check, not registered in CTest (so not in `make test`): it takes
# about 3 minutes on 2 cores with a nearby Debian mirror (most of it the
# build stage: apt installing the build dependencies, then compiling
# normserve with its CUDA kernels for three architectures), longer on a slow
# mirror; it needs root, Podman, the host's CUDA toolkit (nvcc), a Debian
# mirror and a few GB of disk while it runs; and it overlaps the
# container_image test, which already builds and checks the CPU image. Run it
# by hand after changing the Dockerfile, deploy/install-deps.sh or the CUDA
# build: `sudo tests/deploy/cuda_image_check.sh`.
#
# Stand-ins for the nvidia/cuda images, made locally from a debootstrapped
# Debian bookworm root (the tarball tests/deploy/container_test.sh makes,
# reused when present) and this machine's toolkit ($CUDA_HOME, default
# /usr/local/cuda), laid out and configured as NVIDIA's images are
# (/usr/local/cuda-X.Y with /usr/local/cuda linking to it, an ld.so.conf.d
# entry for the toolkit's lib directory, NVIDIA's ENV):
#   localhost/normserve-cuda-standin:devel    ("devel": nvcc and what it needs
#     to compile and link: bin/, nvvm/, include/, the cudart libraries, the
#     driver stub; not cuBLAS, cuDNN, NCCL and the rest)
#   localhost/normserve-cuda-standin:runtime  ("base": libcudart only)
# then runs (with the Podman flags below, and --layers=false)
#   podman build --format docker --network host \
#     --build-arg BUILD_IMAGE=localhost/normserve-cuda-standin:devel \
#     --build-arg BASE_IMAGE=localhost/normserve-cuda-standin:runtime \
#     --build-arg DEVICE=cuda -t normserve:cuda-check .
# and checks the image: CMake found nvcc; the HEALTHCHECK is kept;
# normserve --help; ldd resolves libcudart in the
# image; --device=auto serves (health SERVING, through the image's own
# normctl) on the CPU, its log saying no CUDA device was found; a LayerNorm
# request checked against a float64 NumPy reference; a clean exit on
# SIGTERM; --device=cuda refuses to start. Everything it made (images,
# storage, root file systems) is removed at the end; its logs stay in
# BUILD_DIR/cuda-image-check. KEEP_IMAGES=1 keeps the images and storage.
#
# Podman runs as in tests/deploy/container_test.sh (runc, cgroupfs, vfs
# storage under a private root, explicit ulimits, host networking), with its
# own storage root so as not to disturb that test's.
#
# Exits 77 (skipped) with the reason when something it needs is missing.
#
# Usage: cuda_image_check.sh [BUILD_DIR]
#   BUILD_DIR: where its work directory goes (default: the repo's build/)
#   env CUDA_HOME: the toolkit (default /usr/local/cuda)
#   env PYTHON: an interpreter with NumPy for the LayerNorm check (default:
#     python3, else /usr/bin/python3; the check is skipped without NumPy)
#   env MIN_FREE_GB: free disk required to start (default 25)
#   env CONTEXT: the build context (default: this checkout), e.g. an
#     exported commit with a proposed fix applied
set -uo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
build="$(mkdir -p "${1:-$repo/build}" && cd "${1:-$repo/build}" && pwd)"
work="$build/cuda-image-check"
cuda_home="${CUDA_HOME:-/usr/local/cuda}"
min_free_gb="${MIN_FREE_GB:-25}"
context="$(cd "${CONTEXT:-$repo}" && pwd)" || exit 1
devel=localhost/normserve-cuda-standin:devel
runtime=localhost/normserve-cuda-standin:runtime
image=localhost/normserve:cuda-check
started=$(date +%s)
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }
phase() { echo "[$(($(date +%s) - started))s] $*"; }
free_gb() { df -P --block-size=1G "$1" | awk 'NR==2 {print $4}'; }

[ "$(id -u)" -eq 0 ] || skip "podman here needs root"
command -v podman >/dev/null || skip "podman is not installed"
command -v runc >/dev/null || skip "runc is not installed"
nvcc="$cuda_home/bin/nvcc"
[ -x "$nvcc" ] || skip "no nvcc at $nvcc (set CUDA_HOME)"
mkdir -p "$work"
[ "$(free_gb "$work")" -ge "$min_free_gb" ] ||
  skip "$(free_gb "$work") GB free under $work, need $min_free_gb (MIN_FREE_GB)"
podman=(podman --runtime "$(command -v runc)" --cgroup-manager cgroupfs
        --storage-driver vfs --root "$work/storage" --runroot "$work/run")
"${podman[@]}" info >/dev/null 2>&1 || skip "podman cannot start here: $("${podman[@]}" info 2>&1 | tail -1)"
ulimits=(--ulimit nofile=1024:1024 --ulimit nproc=4096:4096)

python="${PYTHON:-}"
if [ -z "$python" ]; then
  for p in python3 /usr/bin/python3; do
    if "$p" -c 'import numpy' 2>/dev/null; then python="$p"; break; fi
  done
fi

cleanup() {
  if [ "${KEEP_IMAGES:-0}" = 1 ]; then
    echo "KEEP_IMAGES=1: images kept in ${podman[*]}"
  else
    "${podman[@]}" rm -a -f >/dev/null 2>&1
    "${podman[@]}" rmi -a -f >/dev/null 2>&1
    # vfs needs no mounts, but a container's run directory may hold some.
    findmnt -rn -o TARGET | grep "^$work/" | sort -r | xargs -r -n1 umount -l 2>/dev/null
    rm -rf "$work/storage" "$work/run"
  fi
  rm -rf "$work/rootfs-devel" "$work/rootfs-runtime" "$work/devel.tar" "$work/runtime.tar" \
    "$work/tensors" "$work/debootstrap-root"
  [ -n "${watch_pid:-}" ] && kill "$watch_pid" 2>/dev/null
  echo "free disk at the end: $(free_gb "$work") GB; total time $(($(date +%s) - started))s"
}
trap cleanup EXIT
echo "free disk at the start: $(free_gb "$work") GB"

# The toolkit: its version and its real layout (lib64 and include may be
# links into targets/x86_64-linux, as in NVIDIA's packages, or the reverse).
cuda_root="$(readlink -f "$cuda_home")"
version=$("$nvcc" --version | sed -n 's/.*release \([0-9][0-9.]*\),.*/\1/p')
full_version=$("$nvcc" --version | sed -n 's/.*, V\([0-9][0-9.]*\)$/\1/p')
[ -n "$version" ] || fail "cannot read the CUDA version from $nvcc --version"
major="${version%%.*}"
libdir=""
for d in lib64 targets/x86_64-linux/lib lib; do
  if ls "$cuda_root/$d"/libcudart.so* >/dev/null 2>&1; then libdir="$(readlink -f "$cuda_root/$d")"; break; fi
done
[ -n "$libdir" ] || skip "no libcudart.so under $cuda_root"
libdir_rel="$(realpath --relative-to="$cuda_root" "$libdir")"
phase "toolkit: CUDA $full_version at $cuda_root (libraries in $libdir_rel)"

# The Debian root: container_test.sh's tarball, else a fresh debootstrap.
bookworm="$build/container-test/bookworm.tar"
if [ ! -f "$bookworm" ]; then
  bookworm="$work/bookworm.tar"
  if [ ! -f "$bookworm" ]; then
    command -v debootstrap >/dev/null || skip "debootstrap is not installed"
    phase "debootstrap --variant=minbase bookworm"
    rm -rf "$work/debootstrap-root"
    debootstrap --variant=minbase bookworm "$work/debootstrap-root" http://deb.debian.org/debian \
      >"$work/debootstrap.log" 2>&1 || skip "debootstrap failed (no Debian mirror?): $(tail -1 "$work/debootstrap.log")"
    tar -C "$work/debootstrap-root" -cf "$bookworm" . || fail "tar of the root file system"
    rm -rf "$work/debootstrap-root"
  fi
fi
phase "base root file system: $bookworm"

# What NVIDIA's images set (nvidia/cuda:*-base and *-devel).
env_common=(
  --change "ENV PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  --change "ENV LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64"
  --change "ENV NVIDIA_VISIBLE_DEVICES=all"
  --change "ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility"
  --change "ENV CUDA_VERSION=$full_version"
)

# A root file system: the Debian root, the given toolkit files under
# /usr/local/cuda-X.Y, /usr/local/cuda linking to it, and the loader
# configured for its library directory (cuda-cudart's 988_cuda-N.conf).
make_root() {  # DIR, then the file list on stdin (paths relative to the toolkit)
  local root="$1"
  rm -rf "$root" && mkdir -p "$root" || return 1
  tar -C "$root" -xf "$bookworm" || return 1
  mkdir -p "$root/usr/local/cuda-$version" || return 1
  tar -C "$cuda_root" --no-recursion --null -T - -cf - | tar -C "$root/usr/local/cuda-$version" -xf - || return 1
  ln -sfn "cuda-$version" "$root/usr/local/cuda" || return 1
  echo "/usr/local/cuda/$libdir_rel" >"$root/etc/ld.so.conf.d/988_cuda-$major.conf" || return 1
  ldconfig -r "$root" || return 1
}

phase "stand-in devel image $devel"
# nvcc and the programs it runs (bin/, nvvm/), all headers, and from the
# library directory only cudart (shared and static), cudadevrt, culibos,
# the driver stub and CMake files; links (lib64, include, targets/) as they
# are. Not copied: cuBLAS, cuFFT, cuDNN, NCCL, nvrtc, the profilers, ...
tops=()
for t in bin nvvm include lib lib64 targets version.json; do
  [ -e "$cuda_root/$t" ] || [ -L "$cuda_root/$t" ] && tops+=("$t")
done
(cd "$cuda_root" && find "${tops[@]}" |
  awk -v lib="$libdir_rel" '
    index($0, lib "/") != 1 { print; next }
    { rest = substr($0, length(lib) + 2) }
    rest ~ /^(libcudart[^\/]*|libcudadevrt\.a|libculibos\.a|stubs|stubs\/libcuda\.so|cmake(\/.*)?)$/ { print }' |
  tr '\n' '\0') >"$work/devel.files" || fail "listing the toolkit"
make_root "$work/rootfs-devel" <"$work/devel.files" || fail "making the devel root file system"
[ -x "$work/rootfs-devel/usr/local/cuda/bin/nvcc" ] || fail "no nvcc in the devel root"
echo "devel toolkit copy: $(du -sh "$work/rootfs-devel/usr/local/cuda-$version" | cut -f1)"
tar -C "$work/rootfs-devel" -cf "$work/devel.tar" . || fail "tar of the devel root"
rm -rf "$work/rootfs-devel"
"${podman[@]}" import -q "${env_common[@]}" --change "ENV LIBRARY_PATH=/usr/local/cuda/lib64/stubs" \
  "$work/devel.tar" "$devel" >/dev/null || fail "podman import $devel"
rm -f "$work/devel.tar"

phase "stand-in runtime image $runtime"
(cd "$cuda_root" && printf '%s\n' "$libdir_rel"/libcudart.so* | tr '\n' '\0') >"$work/runtime.files"
make_root "$work/rootfs-runtime" <"$work/runtime.files" || fail "making the runtime root file system"
tar -C "$work/rootfs-runtime" -cf "$work/runtime.tar" . || fail "tar of the runtime root"
rm -rf "$work/rootfs-runtime"
"${podman[@]}" import -q "${env_common[@]}" "$work/runtime.tar" "$runtime" >/dev/null || fail "podman import $runtime"
rm -f "$work/runtime.tar"
"${podman[@]}" run --rm "${ulimits[@]}" "$devel" nvcc --version | tail -2 || fail "nvcc does not run in $devel"
"${podman[@]}" run --rm "${ulimits[@]}" "$runtime" sh -c "ldconfig -p | grep libcudart" || fail "no libcudart in $runtime's loader cache"
"${podman[@]}" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep standin

# The build. --layers=false: no cached image per instruction, each of
# which vfs would store as a full copy of the root file system (about 25 GB
# at the peak with layers, 1-2 GB without). A watcher records the lowest
# free disk and stops the build should the disk come near full.
phase "podman build of $context (log: $work/build.log)"
echo "$(free_gb "$work")" >"$work/min-free-gb"
(while sleep 10; do
   f=$(free_gb "$work")
   [ "$f" -lt "$(cat "$work/min-free-gb")" ] && echo "$f" >"$work/min-free-gb"
   if [ "$f" -lt 8 ] && [ -f "$work/build.pid" ]; then
     echo "disk nearly full ($f GB): stopping the build" >>"$work/build.log"
     kill "$(cat "$work/build.pid")" 2>/dev/null
   fi
 done) &
watch_pid=$!
build_start=$(date +%s)
"${podman[@]}" build --format docker --network host "${ulimits[@]}" --layers=false \
  --build-arg BUILD_IMAGE="$devel" --build-arg BASE_IMAGE="$runtime" --build-arg DEVICE=cuda \
  -t "$image" "$context" >"$work/build.log" 2>&1 &
echo $! >"$work/build.pid"
wait "$(cat "$work/build.pid")"
build_rc=$?
rm -f "$work/build.pid"
echo "build: $(($(date +%s) - build_start))s, lowest free disk during it: $(cat "$work/min-free-gb") GB"
if [ "$build_rc" -ne 0 ]; then
  grep -nE 'error|Error|ERROR|FAILED|CMake Error|no nvcc' "$work/build.log" | head -20
  tail -30 "$work/build.log"
  if grep -q 'could not find TARGET CUDA::nvToolsExt' "$work/build.log"; then
    echo "DIAGNOSIS: the build stage's CMake ($(grep -m1 -o 'cmake-3\.[0-9]*' "$work/build.log")) has the" \
      "FindCUDAToolkit bug of CMake 3.25.0-3.25.1 (Debian bookworm): with cmake_minimum_required" \
      ">= 3.25 it sets a property on CUDA::nvToolsExt without checking that the target exists," \
      "and CUDA $version has no libnvToolsExt. CMakeLists.txt needs a workaround around" \
      "find_package(CUDAToolkit), or the build image a newer CMake."
  fi
  if grep -q 'Linking CXX executable server/normserve' "$work/build.log" &&
     ! grep -q '^FAILED:' "$work/build.log"; then
    echo "DIAGNOSIS: normserve and normctl were built; the RUN failed after the compile, silently:" \
      "the libcudart check or the library copy. \`ldd ... | grep -q libcudart\` under" \
      "SHELL [... -o pipefail ...] fails at random (grep -q exits at the first match, ldd gets SIGPIPE)."
  fi
  fail "podman build (exit $build_rc)"
fi
grep -E 'normserve: CUDA|NORMSERVE_CUDA=OFF' "$work/build.log" || fail "the build log does not say CUDA was configured"
size=$("${podman[@]}" image inspect "$image" --format '{{.Size}}')
base_size=$("${podman[@]}" image inspect "$runtime" --format '{{.Size}}')
healthcheck=$("${podman[@]}" image inspect "$image" --format '{{json .HealthCheck}}')
grep -q normctl <<<"$healthcheck" || fail "the image has no HEALTHCHECK: $healthcheck"
echo "image size: $size bytes ($((size / 1000000)) MB; the runtime stand-in base: $((base_size / 1000000)) MB)"

phase "normserve --help"
help=$("${podman[@]}" run --rm "${ulimits[@]}" "$image" --help 2>&1)
grep -q -- '--device' <<<"$help" || { echo "$help" | head; fail "--help does not list --device"; }

phase "ldd in the image"
lddout=$("${podman[@]}" run --rm "${ulimits[@]}" --entrypoint ldd "$image" /usr/local/bin/normserve /usr/local/bin/normctl 2>&1)
grep -q 'not found' <<<"$lddout" && { echo "$lddout"; fail "unresolved libraries in the image"; }
grep -E 'libcudart\.so\.[0-9]+ => /' <<<"$lddout" || { echo "$lddout"; fail "normserve does not resolve libcudart"; }
"${podman[@]}" run --rm "${ulimits[@]}" --entrypoint ls "$image" /usr/local/lib/normserve | tr '\n' ' '; echo

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
phase "normserve --device=auto with no GPU"
grpc=$(port); metrics=$(port)
"${podman[@]}" run -d --name normserve-cuda-check --network host "${ulimits[@]}" \
  -e NORMSERVE_GRPC_PORT="$grpc" "$image" --device=auto --metrics_port="$metrics" >/dev/null \
  2>"$work/run.log" || { cat "$work/run.log"; fail "podman run"; }
health=""
for _ in $(seq 60); do
  health=$("${podman[@]}" exec normserve-cuda-check normctl --server="127.0.0.1:$grpc" --health --timeout_ms=500 2>/dev/null)
  [ "$health" = SERVING ] && break
  sleep 0.5
done
[ "$health" = SERVING ] || { "${podman[@]}" logs normserve-cuda-check 2>&1 | tail; fail "health is not SERVING: $health"; }
echo "health: $health"
logs=$("${podman[@]}" logs normserve-cuda-check 2>&1)
grep -E '^normserve device=' <<<"$logs"
grep -q '^normserve device=cpu (auto: no CUDA device' <<<"$logs" ||
  { echo "$logs"; fail "the log does not say it fell back to the CPU for want of a CUDA device"; }
if [ -n "$python" ]; then
  rm -rf "$work/tensors" && mkdir -p "$work/tensors" && chmod 0777 "$work/tensors"
  "$python" "$repo/tests/deploy/layer_norm_check.py" write "$work/tensors" || fail "writing the input"
  "${podman[@]}" run --rm --network host "${ulimits[@]}" -v "$work/tensors:/tensors" --entrypoint normctl "$image" \
    --server="127.0.0.1:$grpc" --input=/tensors/x.npy --gamma=/tensors/gamma.npy --beta=/tensors/beta.npy \
    --epsilon=1e-5 --output=/tensors/y.npy || fail "LayerNorm request failed"
  "$python" "$repo/tests/deploy/layer_norm_check.py" check "$work/tensors" || fail "wrong LayerNorm output"
  echo "LayerNorm request: output matches the float64 reference"
else
  echo "no Python with NumPy: LayerNorm request not checked"
fi
"${podman[@]}" stop -t 30 normserve-cuda-check >/dev/null 2>>"$work/run.log" || fail "podman stop"
code=$("${podman[@]}" inspect normserve-cuda-check --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
grep -q "normserve: stopped" <<<"$("${podman[@]}" logs normserve-cuda-check 2>&1)" || fail "no clean drain in the logs"
"${podman[@]}" rm -f normserve-cuda-check >/dev/null
echo "SIGTERM: exit 0, drained"

phase "normserve --device=cuda with no GPU must refuse to start"
grpc=$(port); metrics=$(port)
out=$(timeout 120 "${podman[@]}" run --rm --name normserve-cuda-check-cuda --network host "${ulimits[@]}" \
  -e NORMSERVE_GRPC_PORT="$grpc" "$image" --device=cuda --metrics_port="$metrics" 2>&1)
rc=$?
"${podman[@]}" rm -f normserve-cuda-check-cuda >/dev/null 2>&1
echo "exit $rc: $(grep -- '--device=cuda' <<<"$out" | head -1)"
[ "$rc" -ne 0 ] && grep -q -- '--device=cuda: no CUDA device' <<<"$out" ||
  { echo "$out" | tail; fail "--device=cuda without a GPU: expected a refusal to start"; }

phase "CUDA image check passed"

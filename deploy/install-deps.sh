#!/usr/bin/env bash
# Installs normserve's build, test and run dependencies from Debian's package
# registry. Idempotent: packages already present are not reinstalled and apt is
# not touched at all when nothing is missing. Needs root (or sudo) only when
# something is missing.
set -euo pipefail

# NORMSERVE_DEPS=build installs only what building the server and CLI needs
# (the container's build stage); the default also installs test tools.
build_packages=(
  build-essential cmake ninja-build pkg-config
  # gRPC, protobuf, Abseil: the service and its wire format.
  libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev
  protobuf-compiler libabsl-dev
  # Metrics.
  prometheus-cpp-dev
  # SIMD with runtime dispatch.
  libhwy-dev
  # Health protocol definitions (the CLI's health check).
  grpc-proto
)
test_packages=(
  # Tests and benchmarks.
  libgtest-dev libgmock-dev libbenchmark-dev
  # Python example and test clients (system interpreter).
  python3 python3-venv python3-grpcio python3-protobuf python3-grpc-tools
  python3-numpy
  # Integration tests: HTTP scrape of /metrics.
  curl
  # Sanitizer and fuzz builds, TLS test certificates; `make format`.
  clang libclang-rt-14-dev libfuzzer-14-dev openssl clang-format
  # Deploy checks: promtool and a real Prometheus server; the container
  # image test (Podman with runc, a debootstrapped base image; uidmap, a
  # mere Recommends of podman, for builds by a user other than root).
  prometheus podman runc debootstrap uidmap
  # tests/pack_gpu_checks.sh (the CUDA build packed for a GPU host).
  xz-utils
)

packages=("${build_packages[@]}")
if [ "${NORMSERVE_DEPS:-all}" != "build" ]; then
  packages+=("${test_packages[@]}")
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

# Debian's prometheus package enables and starts a system Prometheus on
# :9090. The tests run their own; a system one would only hold the port that
# `docker compose -f deploy/compose.yaml up` maps. Stopped only when this
# script installed it.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  echo "install-deps: disabling the prometheus service the package started" \
    "(the tests run their own)"
  $SUDO systemctl disable --now prometheus.service || true
fi

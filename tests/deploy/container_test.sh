#!/usr/bin/env bash
# Builds the Dockerfile's image with a real container runtime (Podman, as
# root, no daemon needed) and checks the container: health SERVING, the
# image's own HEALTHCHECK passing on a non-default gRPC port, a LayerNorm
# request through the CLI checked against a float64 NumPy reference, a
# /metrics scrape, and a clean exit on SIGTERM.
#
# Podman on these machines needs: runc instead of crun, the cgroupfs cgroup
# manager, explicit ulimits, and host networking for builds. No registry is
# reachable for base images, so debian:bookworm-slim is made locally with
# debootstrap and `podman import`. Exits 77 (CTest: skipped) with the reason
# when no container runtime can work here.
#
# The image is built in Docker format (`--format docker`): Podman's default,
# OCI, drops HEALTHCHECK. Podman's health check timer needs systemd, which is
# absent here (podman logs an error and goes on), so the test runs the check
# itself with `podman healthcheck run`.
#
# Usage: container_test.sh BUILD_DIR [PYTHON]
#   BUILD_DIR: the build with client/normctl
#   PYTHON: an interpreter with NumPy (default python3; CTest passes the
#   system one, which deploy/install-deps.sh gives python3-numpy)
set -uo pipefail
build="$(cd "$1" && pwd)"
python="${2:-python3}"
repo="$(cd "$(dirname "$0")/../.." && pwd)"
work="$build/container-test"
mkdir -p "$work"
skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "podman here needs root"
command -v podman >/dev/null || skip "podman is not installed"
command -v runc >/dev/null || skip "runc is not installed"
podman=(podman --runtime "$(command -v runc)" --cgroup-manager cgroupfs
        --storage-driver vfs --root "$work/storage" --runroot "$work/run")
"${podman[@]}" info >/dev/null 2>&1 || skip "podman cannot start here: $("${podman[@]}" info 2>&1 | tail -1)"
"$python" -c 'import numpy' 2>/dev/null || fail "$python has no NumPy (deploy/install-deps.sh installs python3-numpy)"
# vfs keeps a full copy of the root per layer: the build needs several GB.
min_free_gb="${MIN_FREE_GB:-10}"
free_gb=$(df -P --block-size=1G "$work" | awk 'NR==2 {print $4}')
[ "$free_gb" -ge "$min_free_gb" ] || skip "$free_gb GB free under $work, need $min_free_gb (MIN_FREE_GB)"

base=docker.io/library/debian:bookworm-slim
if ! "${podman[@]}" image exists "$base"; then
  command -v debootstrap >/dev/null || skip "debootstrap is not installed"
  if [ ! -f "$work/bookworm.tar" ]; then
    rm -rf "$work/rootfs"
    debootstrap --variant=minbase bookworm "$work/rootfs" http://deb.debian.org/debian \
      >"$work/debootstrap.log" 2>&1 || skip "debootstrap failed (no Debian mirror?): $(tail -1 "$work/debootstrap.log")"
    tar -C "$work/rootfs" -cf "$work/bookworm.tar" . || fail "tar of the root file system"
    rm -rf "$work/rootfs"
  fi
  "${podman[@]}" import "$work/bookworm.tar" "$base" >/dev/null || fail "podman import"
fi

# The vfs storage driver keeps a full copy of every layer: drop the test
# image and its build layers afterwards (the imported base image stays, so
# the next run does not debootstrap again).
cleanup() {
  "${podman[@]}" rm -f normserve-test >/dev/null 2>&1
  "${podman[@]}" rmi -f normserve:test >/dev/null 2>&1
  "${podman[@]}" image prune -f >/dev/null 2>&1
}
trap cleanup EXIT
echo "building the image (this compiles normserve inside the build stage)"
# --layers=false: no cached image per instruction (each a full copy of the
# root under vfs), only the stages and the result.
"${podman[@]}" build --format docker --layers=false --network host --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
  -t normserve:test "$repo" >"$work/build.log" 2>&1 || { tail -30 "$work/build.log"; fail "podman build"; }
"${podman[@]}" image inspect normserve:test --format 'image size: {{.Size}} bytes'
healthcheck=$("${podman[@]}" image inspect normserve:test --format '{{json .HealthCheck}}')
grep -q normctl <<<"$healthcheck" || fail "the image has no HEALTHCHECK: $healthcheck"

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
grpc=$(port); metrics=$(port)
"${podman[@]}" rm -f normserve-test >/dev/null 2>&1
# The gRPC port goes in NORMSERVE_GRPC_PORT (see the Dockerfile), so that
# the image's HEALTHCHECK probes the port the server listens on.
"${podman[@]}" run -d --name normserve-test --network host \
  --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 -e NORMSERVE_GRPC_PORT="$grpc" \
  normserve:test --metrics_port="$metrics" >/dev/null 2>"$work/run.log" || { cat "$work/run.log"; fail "podman run"; }

normctl="$build/client/normctl"
for _ in $(seq 50); do
  "$normctl" --server="127.0.0.1:$grpc" --health --timeout_ms=500 >/dev/null 2>&1 && break
  sleep 0.2
done
[ "$("$normctl" --server="127.0.0.1:$grpc" --health)" = SERVING ] || fail "health is not SERVING"
# The image's HEALTHCHECK, run now rather than by Podman's timer.
"${podman[@]}" healthcheck run normserve-test || fail "the image's HEALTHCHECK fails"
health=$("${podman[@]}" inspect normserve-test --format '{{.State.Health.Status}}')
[ "$health" = healthy ] || fail "health status after the check: $health"
# A LayerNorm request: the output values against a float64 reference.
rm -rf "$work/tensors" && mkdir -p "$work/tensors"
"$python" "$repo/tests/deploy/layer_norm_check.py" write "$work/tensors" || fail "writing the input"
"$normctl" --server="127.0.0.1:$grpc" --input="$work/tensors/x.npy" --gamma="$work/tensors/gamma.npy" \
  --beta="$work/tensors/beta.npy" --epsilon=1e-5 --output="$work/tensors/y.npy" || fail "request failed"
"$python" "$repo/tests/deploy/layer_norm_check.py" check "$work/tensors" || fail "wrong LayerNorm output"
# normctl inside the container, and its user.
[ "$("${podman[@]}" exec normserve-test normctl --server=127.0.0.1:"$grpc" --health)" = SERVING ] \
  || fail "normctl inside the container"
[ "$("${podman[@]}" exec normserve-test id -u)" = 10001 ] || fail "container does not run as uid 10001"
# The body goes to a file before grep reads it: with pipefail, `curl | grep -q`
# fails whenever grep exits before curl has written everything (SIGPIPE).
scraped=no
for _ in $(seq 20); do
  if curl -sf -o "$work/metrics.txt" "http://127.0.0.1:$metrics/metrics" &&
     grep -Eq 'grpc_server_handled_total\{grpc_code="OK",grpc_method="Normalize",[^}]*\} 1$' "$work/metrics.txt"; then
    scraped=yes; break
  fi
  sleep 0.2
done
[ "$scraped" = yes ] || { grep grpc_server_handled_total "$work/metrics.txt"; fail "metrics scrape"; }
"${podman[@]}" stop -t 30 normserve-test >/dev/null 2>>"$work/run.log" || { cat "$work/run.log"; fail "podman stop"; }
code=$("${podman[@]}" inspect normserve-test --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
logs=$("${podman[@]}" logs normserve-test 2>&1)
grep -q "normserve: stopped" <<<"$logs" || fail "no clean drain in the logs"

# Served over TLS, the image's HEALTHCHECK needs the CA: it takes it from
# NORMSERVE_HEALTH_ARGS.
tls="$work/tls" && rm -rf "$tls" && mkdir -p "$tls"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tls/$1" 2>/dev/null; }
key ca.key || fail "TLS: CA key"
openssl req -x509 -new -key "$tls/ca.key" -out "$tls/ca.crt" -days 1 -subj /CN=test-ca || fail "TLS: CA"
key server.key || fail "TLS: server key"
openssl req -new -key "$tls/server.key" -out "$tls/server.csr" -subj /CN=localhost || fail "TLS: request"
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/server.ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
  -out "$tls/server.crt" -days 1 -extfile "$tls/server.ext" 2>/dev/null || fail "TLS: server certificate"
chmod 0644 "$tls"/* || fail "TLS: permissions"
"${podman[@]}" rm -f normserve-test >/dev/null 2>&1
"${podman[@]}" run -d --name normserve-test --network host -v "$tls:/tls:ro" \
  --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 -e NORMSERVE_GRPC_PORT="$grpc" \
  -e NORMSERVE_HEALTH_ARGS="--tls_ca=/tls/ca.crt --tls_server_name=localhost" \
  normserve:test --metrics_port="$metrics" --tls_cert=/tls/server.crt --tls_key=/tls/server.key \
  >/dev/null 2>"$work/run.log" || { cat "$work/run.log"; fail "podman run with TLS"; }
tls_up=no
for _ in $(seq 50); do
  if [ "$("$normctl" --server="127.0.0.1:$grpc" --health --timeout_ms=500 --tls_ca="$tls/ca.crt" \
          --tls_server_name=localhost 2>/dev/null)" = SERVING ]; then
    tls_up=yes; break
  fi
  sleep 0.2
done
[ "$tls_up" = yes ] || { "${podman[@]}" logs normserve-test 2>&1 | tail -5; fail "health over TLS is not SERVING"; }
"${podman[@]}" healthcheck run normserve-test || fail "the image's HEALTHCHECK fails under TLS"
"${podman[@]}" stop -t 30 normserve-test >/dev/null 2>>"$work/run.log" || { cat "$work/run.log"; fail "podman stop"; }
echo "container test passed"

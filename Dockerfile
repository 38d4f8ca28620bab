# normserve container image.
#
#   make image                       CPU image from debian:bookworm-slim
#   docker build --build-arg BUILD_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu24.04 \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04 --build-arg DEVICE=cuda .
#
# DEVICE=cuda needs nvcc in the build image (an NVIDIA CUDA "devel" base;
# Ubuntu 24.04 has the Debian package names install-deps.sh uses) and fails
# rather than build a CPU-only binary without it. The image carries
# libcudart; the GPU driver comes from the host (NVIDIA container toolkit,
# `docker run --gpus all`).
#
# Two stages: the build stage has the -dev packages and the compiler; the
# runtime stage gets only the shared libraries the binaries link and runs
# as an unprivileged user.
ARG BUILD_IMAGE=debian:bookworm-slim
ARG BASE_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
ARG DEVICE=cpu
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
WORKDIR /src
COPY deploy/install-deps.sh deploy/install-deps.sh
# The same dependency script as a developer machine, minus the test tools.
RUN NORMSERVE_DEPS=build bash deploy/install-deps.sh
COPY CMakeLists.txt ./
COPY proto proto
COPY kernels kernels
COPY server server
COPY client client
COPY bench bench
COPY tests tests
RUN if [ "$DEVICE" = cuda ]; then \
      export CUDACXX="${CUDACXX:-/usr/local/cuda/bin/nvcc}"; \
      [ -x "$CUDACXX" ] || { echo "DEVICE=cuda: no nvcc at $CUDACXX (use an nvidia/cuda devel BUILD_IMAGE)" >&2; exit 1; }; \
    fi \
 && cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DNORMSERVE_BUILD_TESTS=OFF -DNORMSERVE_BUILD_BENCH=OFF \
      -DNORMSERVE_CUDA="$([ "$DEVICE" = cuda ] && echo ON || echo OFF)" \
 && cmake --build build --target normserve normctl \
 && if [ "$DEVICE" = cuda ] && ! ldd build/server/normserve | grep libcudart >/dev/null; then \
      echo "DEVICE=cuda: build/server/normserve does not link libcudart" >&2; exit 1; \
    fi \
 && mkdir -p /out/bin /out/lib \
 && cp build/server/normserve build/client/normctl /out/bin/ \
 && ldd /out/bin/normserve /out/bin/normctl | awk '/=> \// {print $3}' | sort -u \
      | grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*|libgcc_s|libstdc\+\+)\.so' \
      | xargs -I{} cp -L {} /out/lib/

FROM ${BASE_IMAGE}
ARG DEVICE=cpu
LABEL org.opencontainers.image.title="normserve" \
      org.opencontainers.image.description="gRPC tensor normalization service (LayerNorm, RMSNorm)"
COPY --from=build /out/lib/ /usr/local/lib/normserve/
COPY --from=build /out/bin/ /usr/local/bin/
RUN echo /usr/local/lib/normserve > /etc/ld.so.conf.d/normserve.conf && ldconfig \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin normserve
USER 10001
# The gRPC port is set here, not with --grpc_port, so that the server and
# its HEALTHCHECK agree: `docker run -e NORMSERVE_GRPC_PORT=9001 ...`. The
# metrics port and every other flag go after the image name as usual.
ENV NORMSERVE_GRPC_PORT=8001
# Extra normctl flags for the HEALTHCHECK: a server started with --tls_cert
# and --tls_key needs them (e.g. -e NORMSERVE_HEALTH_ARGS="--tls_ca=/tls/ca.crt
# --tls_server_name=localhost", plus --tls_cert/--tls_key under mutual TLS).
ENV NORMSERVE_HEALTH_ARGS=""
EXPOSE 8001 8002
# SIGTERM drains: health turns NOT_SERVING, admitted requests finish.
STOPSIGNAL SIGTERM
# Docker-format images only: Podman builds OCI images by default, which drop
# HEALTHCHECK (`podman build --format docker`, as `make image` does).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/bin/sh", "-c", "exec normctl --server=\"127.0.0.1:$NORMSERVE_GRPC_PORT\" --health --timeout_ms=2000 $NORMSERVE_HEALTH_ARGS"]
# exec: normserve is PID 1 and gets SIGTERM itself; "$@" are the arguments
# after the image name (or a Kubernetes container's args).
ENTRYPOINT ["/bin/sh", "-c", "exec normserve --host=0.0.0.0 --grpc_port=\"$NORMSERVE_GRPC_PORT\" \"$@\"", "normserve"]

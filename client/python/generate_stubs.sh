#!/usr/bin/env bash
# Generates the Python gRPC stubs of normserve's protos into OUT_DIR, with
# Debian's protoc and grpc_python_plugin, so they match Debian's
# python3-protobuf/python3-grpcio. The message modules of the gRPC health
# and reflection protocols go to OUT_DIR/grpc_protos (a separate root: their
# package name, grpc.*, would shadow grpcio itself); load them by path.
set -euo pipefail
out="${1:?usage: generate_stubs.sh OUT_DIR}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
grpc_protos=/usr/share/grpc-proto
mkdir -p "$out"
protoc --proto_path="$root/proto" \
  --python_out="$out" --grpc_python_out="$out" \
  --plugin=protoc-gen-grpc_python="$(command -v grpc_python_plugin)" \
  normserve/v1/tensor.proto normserve/v1/normalization_service.proto \
  normserve/v1/model_config.proto
mkdir -p "$out/grpc_protos"
protoc --proto_path="$grpc_protos" --python_out="$out/grpc_protos" \
  grpc/health/v1/health.proto grpc/reflection/v1alpha/reflection.proto

#!/usr/bin/env python3
"""Normalize a tensor with normserve from Python.

Uses Debian's python3-grpcio and python3-numpy. The gRPC stubs are generated
from proto/ (not committed); make them with

    client/python/generate_stubs.sh /tmp/normserve_stubs

then run

    PYTHONPATH=/tmp/normserve_stubs python3 client/python/normalize_example.py \
        --server 127.0.0.1:8001 --rows 4 --dim 768
"""
import argparse
import sys
import time

import grpc
import numpy as np

from normserve.v1 import normalization_service_pb2 as pb
from normserve.v1 import normalization_service_pb2_grpc as pb_grpc
from normserve.v1 import tensor_pb2


def to_tensor(array: np.ndarray) -> tensor_pb2.Tensor:
    """A float32 tensor in raw little-endian bytes, the efficient encoding."""
    array = np.ascontiguousarray(array, dtype="<f4")
    return tensor_pb2.Tensor(shape=list(array.shape),
                             dtype=tensor_pb2.DATA_TYPE_FLOAT32,
                             data=array.tobytes())


def from_tensor(tensor: tensor_pb2.Tensor) -> np.ndarray:
    if tensor.float_data:
        values = np.array(tensor.float_data, dtype=np.float32)
    else:
        values = np.frombuffer(tensor.data, dtype="<f4")
    return values.reshape(tuple(tensor.shape))


def normalize(stub, x, gamma=None, beta=None, epsilon=None, timeout=10.0):
    request = pb.NormalizeRequest(input=to_tensor(x), request_id="python")
    if gamma is not None:
        request.gamma.CopyFrom(to_tensor(gamma))
    if beta is not None:
        request.beta.CopyFrom(to_tensor(beta))
    if epsilon is not None:
        request.epsilon = epsilon
    response = stub.Normalize(request, timeout=timeout)
    return from_tensor(response.output)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:8001")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save", help="write input, gamma, beta, output to this .npz")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    x = rng.normal(3.0, 2.0, size=(args.rows, args.dim)).astype(np.float32)
    gamma = rng.normal(1.0, 0.1, size=(args.dim,)).astype(np.float32)
    beta = rng.normal(0.0, 0.1, size=(args.dim,)).astype(np.float32)

    with grpc.insecure_channel(args.server) as channel:
        stub = pb_grpc.NormalizationServiceStub(channel)
        start = time.perf_counter()
        try:
            y = normalize(stub, x, gamma, beta, epsilon=1e-5)
        except grpc.RpcError as e:
            print(f"error: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
        elapsed_ms = (time.perf_counter() - start) * 1e3

    print(f"shape={y.shape} latency={elapsed_ms:.3f} ms first={y[0, :4]}")
    if args.save:
        np.savez(args.save, x=x, gamma=gamma, beta=beta, y=y)
    return 0


if __name__ == "__main__":
    sys.exit(main())

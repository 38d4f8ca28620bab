#!/usr/bin/env python3
"""BASELINE, not a product: the LayerNorm server a team would write in an
afternoon instead of running normserve.

Debian's python3-grpcio and NumPy, implementing normserve.v1's unary
Normalize for FLOAT32 tensors (optional epsilon, gamma, beta,
normalized_ndim), the statistics in float32 as NumPy computes them. Load
runs against it (bench/run_load_study.py) show what normserve buys over
the obvious alternative; tests check that it answers correctly, so the
comparison is between two working servers.

Usage: python_baseline_server.py --stubs=DIR [--grpc_port=0] [--workers=8]
(--metrics_port is accepted, like normserve's, and ignored: no metrics.)
Prints "python-baseline listening grpc=127.0.0.1:PORT metrics=127.0.0.1:0
tls=off" once serving, then serves until SIGTERM/SIGINT.
"""
import argparse
import signal
import sys
import threading
from concurrent import futures

import grpc
import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--stubs", required=True,
                        help="directory of the generated Python stubs")
    parser.add_argument("--grpc_port", type=int, default=0)
    parser.add_argument("--metrics_port", type=int, default=0,
                        help="ignored (normserve's command line)")
    parser.add_argument("--workers", type=int, default=8,
                        help="gRPC handler threads")
    args = parser.parse_args()
    sys.path.insert(0, args.stubs)
    from normserve.v1 import normalization_service_pb2 as pb
    from normserve.v1 import normalization_service_pb2_grpc as pb_grpc
    from normserve.v1 import tensor_pb2

    def floats(t, field, context):
        if t.dtype != tensor_pb2.DATA_TYPE_FLOAT32:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{field}.dtype: this baseline takes DATA_TYPE_FLOAT32 only")
        values = (np.asarray(t.float_data, np.float32) if len(t.float_data)
                  else np.frombuffer(t.data, np.float32))
        shape = tuple(t.shape)
        if values.size != int(np.prod(shape)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{field}: {values.size} values for shape {list(shape)}")
        return values.reshape(shape)

    class Service(pb_grpc.NormalizationServiceServicer):
        def Normalize(self, request, context):
            x = floats(request.input, "input", context)
            ndim = request.normalized_ndim or 1
            if not 1 <= ndim <= x.ndim:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"normalized_ndim = {ndim}: expected 1 to {x.ndim}")
            axes = tuple(range(x.ndim - ndim, x.ndim))
            eps = request.epsilon if request.HasField("epsilon") else 1e-5
            mean = x.mean(axis=axes, keepdims=True)
            var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
            y = (x - mean) / np.sqrt(var + np.float32(eps))
            if request.HasField("gamma"):
                y = y * floats(request.gamma, "gamma", context)
            if request.HasField("beta"):
                y = y + floats(request.beta, "beta", context)
            out = tensor_pb2.Tensor(shape=x.shape, dtype=tensor_pb2.DATA_TYPE_FLOAT32,
                                    data=y.astype(np.float32).tobytes())
            return pb.NormalizeResponse(output=out, request_id=request.request_id,
                                        model="default")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers),
                         options=[("grpc.max_receive_message_length", 64 << 20),
                                  ("grpc.max_send_message_length", 64 << 20)])
    pb_grpc.add_NormalizationServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port(f"127.0.0.1:{args.grpc_port}")
    server.start()
    print(f"python-baseline listening grpc=127.0.0.1:{port} metrics=127.0.0.1:0 tls=off",
          flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=5).wait()


if __name__ == "__main__":
    main()

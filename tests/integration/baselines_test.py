#!/usr/bin/env python3
"""The load study's baselines work, so that comparing with them means
something: bench/echo_server returns its input unchanged, and the Python
baseline server (bench/python_baseline_server.py) gives the same outputs as
normserve within the float32 bound.

Usage: baselines_test.py NORMSERVE ECHO_SERVER PYTHON_BASELINE STUBS_DIR
"""
import sys
import unittest

import grpc
import numpy as np
from live_server import LiveServer

NORMSERVE = ECHO = BASELINE = STUBS = None


def normalize(target, x, **fields):
    from normserve.v1 import normalization_service_pb2 as pb
    from normserve.v1 import normalization_service_pb2_grpc as pb_grpc
    from normserve.v1 import tensor_pb2

    def tensor(a):
        return tensor_pb2.Tensor(shape=a.shape, dtype=tensor_pb2.DATA_TYPE_FLOAT32,
                                 data=a.astype(np.float32).tobytes())

    request = pb.NormalizeRequest(input=tensor(x), request_id="r",
                                  **{k: tensor(v) if isinstance(v, np.ndarray) else v
                                     for k, v in fields.items()})
    with grpc.insecure_channel(target) as channel:
        response = pb_grpc.NormalizationServiceStub(channel).Normalize(request, timeout=30)
    self_shape = tuple(response.output.shape)
    return np.frombuffer(response.output.data, np.float32).reshape(self_shape), response


class BaselinesTest(unittest.TestCase):
    def test_echo_server_returns_its_input(self):
        x = np.random.default_rng(1).normal(0, 1, (4, 768)).astype(np.float32)
        with LiveServer(ECHO) as echo:
            y, response = normalize(echo.target, x)
        np.testing.assert_array_equal(y, x)
        self.assertEqual(response.request_id, "r")

    def test_python_baseline_agrees_with_normserve(self):
        rng = np.random.default_rng(2)
        x = rng.normal(5, 3, (8, 2, 384)).astype(np.float32)
        gamma = rng.normal(1, 0.2, (2, 384)).astype(np.float32)
        beta = rng.normal(0, 0.2, (2, 384)).astype(np.float32)
        fields = dict(gamma=gamma, beta=beta, epsilon=1e-3, normalized_ndim=2)
        with LiveServer(NORMSERVE) as ours, \
                LiveServer([sys.executable, BASELINE], f"--stubs={STUBS}") as theirs:
            y_ours, _ = normalize(ours.target, x, **fields)
            y_theirs, _ = normalize(theirs.target, x, **fields)
        # Both against float64: within the float32 bound each, so within
        # twice that of each other.
        x64 = x.astype(np.float64)
        mean = x64.mean(axis=(1, 2), keepdims=True)
        var = ((x64 - mean) ** 2).mean(axis=(1, 2), keepdims=True)
        ref = (x64 - mean) / np.sqrt(var + 1e-3) * gamma + beta
        bound = 1e-5 * np.abs(ref).max()
        self.assertLessEqual(np.abs(y_ours - ref).max(), bound)
        self.assertLessEqual(np.abs(y_theirs - ref).max(), bound)
        self.assertLessEqual(np.abs(y_ours - y_theirs).max(), 2 * bound)


if __name__ == "__main__":
    NORMSERVE, ECHO, BASELINE, STUBS = sys.argv[1:5]
    sys.path.insert(0, STUBS)
    unittest.main(argv=sys.argv[:1], verbosity=2)

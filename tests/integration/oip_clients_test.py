#!/usr/bin/env python3
"""Triton's own client library (tritonclient[grpc], from PyPI) against the
real server, through the Open Inference Protocol on the native API's port:
health, metadata, configuration, and inference (raw and typed contents,
unary and streaming, FP32/FP16/BF16/INT8), checked against a float64
reference written here with NumPy.

Run (by run_oip_clients_test.sh, in a venv with tritonclient) as:
  oip_clients_test.py SERVER_BINARY
"""
import os
import queue
import sys
import unittest

import grpc
import ml_dtypes
import numpy as np
import tritonclient.grpc as triton
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from live_server import LiveServer  # noqa: E402

SERVER = None


def reference(x, gamma=None, beta=None, eps=1e-5, kind="layer_norm"):
    """torch.nn.functional.layer_norm / rms_norm over the last axis, float64."""
    x = x.astype(np.float64)
    if kind == "rms_norm":
        mean = np.zeros(x.shape[:-1] + (1,))
        var = (x ** 2).mean(axis=-1, keepdims=True)
    else:
        mean = x.mean(axis=-1, keepdims=True)
        var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + eps)
    y = (x - mean) * rstd
    if gamma is not None:
        y = y * gamma.astype(np.float64)
    if beta is not None:
        y = y + beta.astype(np.float64)
    return y, mean[..., 0], rstd[..., 0]


def tensor(name, array):
    dtypes = {np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16",
              np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.int8): "INT8"}
    t = triton.InferInput(name, list(array.shape), dtypes[array.dtype])
    t.set_data_from_numpy(array)
    return t


class OipClientsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = LiveServer(SERVER).__enter__()
        cls.client = triton.InferenceServerClient(cls.server.target)

    @classmethod
    def tearDownClass(cls):
        cls.client.close()
        cls.server.__exit__(None, None, None)

    def setUp(self):
        self.rng = np.random.default_rng(7)

    def test_health_metadata_and_config(self):
        c = self.client
        self.assertTrue(c.is_server_live())
        self.assertTrue(c.is_server_ready())
        self.assertTrue(c.is_model_ready("default"))
        self.assertFalse(c.is_model_ready("no-such-model"))
        meta = c.get_server_metadata()
        self.assertEqual(meta.name, "normserve")
        self.assertIn("model_configuration", meta.extensions)
        model = c.get_model_metadata("default")
        self.assertEqual([t.name for t in model.inputs][:1], ["input"])
        self.assertEqual(model.inputs[0].datatype, "FP32")
        self.assertEqual(list(model.inputs[0].shape), [-1, -1])
        self.assertIn("rstd", [t.name for t in model.outputs])
        config = c.get_model_config("default").config
        self.assertEqual(config.max_batch_size, 0)
        self.assertEqual(config.input[0].name, "input")
        self.assertTrue(config.input[1].optional)
        with self.assertRaises(InferenceServerException) as e:
            c.get_model_metadata("no-such-model")
        self.assertIn("no such model", str(e.exception))

    def test_infer_fp32_raw_with_affine_and_statistics(self):
        x = self.rng.normal(3.0, 2.0, (4, 768)).astype(np.float32)
        gamma = self.rng.normal(1.0, 0.1, 768).astype(np.float32)
        beta = self.rng.normal(0.0, 0.1, 768).astype(np.float32)
        outputs = [triton.InferRequestedOutput(n) for n in ("output", "mean", "rstd")]
        r = self.client.infer(
            "default", [tensor("input", x), tensor("gamma", gamma), tensor("beta", beta)],
            outputs=outputs, request_id="r1", parameters={"epsilon": 1e-3})
        want, mean, rstd = reference(x, gamma, beta, eps=1e-3)
        np.testing.assert_allclose(r.as_numpy("output"), want, rtol=0, atol=1e-5 * np.abs(want).max())
        np.testing.assert_allclose(r.as_numpy("mean"), mean, rtol=1e-6)
        np.testing.assert_allclose(r.as_numpy("rstd"), rstd, rtol=1e-5)
        self.assertEqual(r.get_response().id, "r1")

    def test_infer_rms_norm_half_precision_and_residual(self):
        x = self.rng.normal(0.0, 1.0, (2, 3, 256)).astype(np.float32)
        res = self.rng.normal(0.0, 1.0, (2, 3, 256)).astype(np.float32)
        for dtype, tol in ((np.float16, 2e-3), (ml_dtypes.bfloat16, 1.6e-2)):
            xs, rs = x.astype(dtype), res.astype(dtype)
            r = self.client.infer(
                "default", [tensor("input", xs), tensor("residual", rs)],
                outputs=[triton.InferRequestedOutput("output"),
                         triton.InferRequestedOutput("residual_sum")],
                parameters={"kind": "rms_norm"})
            # The sum is rounded to the input type, then normalized.
            z = (xs.astype(np.float32) + rs.astype(np.float32)).astype(dtype)
            np.testing.assert_array_equal(r.as_numpy("residual_sum"), z)
            want, _, _ = reference(z.astype(np.float32), kind="rms_norm")
            got = r.as_numpy("output").astype(np.float64)
            self.assertEqual(r.as_numpy("output").dtype, np.dtype(dtype))
            self.assertLessEqual(np.abs(got - want).max(), tol * np.abs(want).max())

    def test_output_datatype_parameter(self):
        x = self.rng.normal(0.0, 1.0, (8, 64)).astype(np.float32)
        r = self.client.infer("default", [tensor("input", x)],
                              parameters={"output_datatype": "BF16"})
        out = r.as_numpy("output")
        self.assertEqual(out.dtype, np.dtype(ml_dtypes.bfloat16))
        want, _, _ = reference(x)
        self.assertLessEqual(np.abs(out.astype(np.float64) - want).max(), 8e-3 * np.abs(want).max())

    def test_infer_int8_both_paths(self):
        q = self.rng.integers(-128, 128, (4, 128)).astype(np.int8)
        scale, zero = 0.05, -2
        x = (q.astype(np.float64) - zero) * scale
        want, _, _ = reference(x)
        results = {}
        for path in ("integer", "float"):
            inp = tensor("input", q)
            # tritonclient has no setter for tensor parameters; the
            # protocol carries them in the tensor's parameters map.
            inp._get_tensor().parameters["scale"].double_param = scale
            inp._get_tensor().parameters["zero_point"].int64_param = zero
            r = self.client.infer("default", [inp], parameters={"int8_path": path})
            out = r.get_output("output")
            self.assertEqual(out.datatype, "INT8")
            out_scale = out.parameters["scale"].double_param
            out_zero = out.parameters["zero_point"].int64_param
            y = (r.as_numpy("output").astype(np.float64) - out_zero) * out_scale
            # Within 2 output steps of the float64 reference (the bound the
            # INT8 report states is tighter; this checks the mapping).
            self.assertLessEqual(np.abs(y - want).max(), 2 * out_scale)
            results[path] = r.as_numpy("output")
        self.assertLessEqual(np.abs(results["integer"].astype(int) - results["float"].astype(int)).max(), 1)

    def test_typed_contents_through_tritons_stubs(self):
        x = self.rng.normal(0.0, 1.0, (3, 32)).astype(np.float32)
        request = service_pb2.ModelInferRequest(model_name="default", id="typed")
        inp = request.inputs.add(name="input", datatype="FP32", shape=[3, 32])
        inp.contents.fp32_contents.extend(x.ravel().tolist())
        with grpc.insecure_channel(self.server.target) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            response = stub.ModelInfer(request)
        self.assertEqual(len(response.raw_output_contents), 0)
        got = np.array(response.outputs[0].contents.fp32_contents).reshape(3, 32)
        want, _, _ = reference(x)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())

    def test_streaming(self):
        results = queue.Queue()
        self.client.start_stream(callback=lambda result, error: results.put((result, error)))
        xs = [self.rng.normal(0.0, 1.0, (1, 768)).astype(np.float32) for _ in range(16)]
        for i, x in enumerate(xs):
            self.client.async_stream_infer("default", [tensor("input", x)], request_id=str(i))
        bad = triton.InferInput("input", [1, 768], "FP32")
        bad.set_data_from_numpy(xs[0])
        bad._raw_content = bad._raw_content[:-4]
        self.client.async_stream_infer("default", [bad], request_id="bad")
        self.client.stop_stream()
        got = {}
        errors = []
        while not results.empty():
            result, error = results.get()
            if error is not None:
                errors.append(str(error))
            else:
                got[result.get_response().id] = result.as_numpy("output")
        self.assertEqual(len(got), 16)
        self.assertEqual(len(errors), 1)
        self.assertIn("raw_input_contents[0]) has 3068 bytes", errors[0])
        for i, x in enumerate(xs):
            want, _, _ = reference(x)
            np.testing.assert_allclose(got[str(i)], want, rtol=0, atol=1e-5 * np.abs(want).max())

    def test_errors_carry_status_and_field(self):
        x = np.zeros((2, 8), np.float32)
        cases = [
            ({"model_name": "nope"}, "NOT_FOUND", "model = 'nope'"),
            ({"parameters": {"epsilon": -1.0}}, "INVALID_ARGUMENT", "epsilon = -1"),
            ({"parameters": {"device": "cuda"}}, "FAILED_PRECONDITION", "device = DEVICE_CUDA"),
            ({"parameters": {"normalized_ndim": 3}}, "INVALID_ARGUMENT", "normalized_ndim = 3"),
            ({"parameters": {"colour": "red"}}, "INVALID_ARGUMENT", "parameters['colour']: unknown"),
        ]
        for kwargs, code, part in cases:
            args = {"model_name": "default", "inputs": [tensor("input", x)], **kwargs}
            with self.assertRaises(InferenceServerException) as e:
                self.client.infer(**args)
            self.assertEqual(e.exception.status(), f"StatusCode.{code}", str(e.exception))
            self.assertIn(part, e.exception.message())
        # The server is still serving.
        self.assertTrue(self.client.is_server_ready())


if __name__ == "__main__":
    SERVER = sys.argv.pop(1)
    unittest.main(verbosity=2)

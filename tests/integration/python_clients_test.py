#!/usr/bin/env python3
"""Python clients against the real server: the example in client/python,
grpcurl-style JSON calls whose types come only from server reflection (the
native API and the README's Open Inference Protocol example), and the gRPC
health protocol.

Run by CTest as:
  python3 python_clients_test.py SERVER_BINARY STUBS_DIR
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
import numpy as np
from live_server import LiveServer
from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory

SERVER = STUBS = None
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_by_path(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_layer_norm(x, gamma=None, beta=None, eps=1e-5):
    """torch.nn.functional.layer_norm over the last axis, in float64."""
    x = x.astype(np.float64)
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma.astype(np.float64)
    if beta is not None:
        y = y + beta.astype(np.float64)
    return y


def assert_close(test, y, ref):
    worst = np.max(np.abs(y.astype(np.float64) - ref))
    test.assertLessEqual(worst, 1e-5 * np.max(np.abs(ref)))


def reflected_method(ask, service, method):
    """The request and response classes of `service`/`method`, built only
    from what server reflection returns (as grpcurl does)."""
    pool = descriptor_pool.DescriptorPool()
    files = {}
    pending = [ask(file_containing_symbol=service)]
    while pending:
        for raw in pending.pop().file_descriptor_response.file_descriptor_proto:
            fd = descriptor_pb2.FileDescriptorProto.FromString(raw)
            files[fd.name] = fd
            for dep in fd.dependency:
                if dep not in files:
                    pending.append(ask(file_by_filename=dep))
    added = set()

    def add(name):
        if name in added:
            return
        for dep in files[name].dependency:
            add(dep)
        pool.Add(files[name])
        added.add(name)

    for name in list(files):
        add(name)
    found = pool.FindServiceByName(service).FindMethodByName(method)
    factory = message_factory.MessageFactory(pool)
    return factory.GetPrototype(found.input_type), factory.GetPrototype(found.output_type)


class PythonClientsTest(unittest.TestCase):
    def test_example_script_matches_float64_reference(self):
        with LiveServer(SERVER) as server, tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "result.npz")
            env = dict(os.environ, PYTHONPATH=STUBS)
            run = subprocess.run(
                [sys.executable, os.path.join(REPO, "client/python/normalize_example.py"),
                 "--server", server.target, "--rows", "5", "--dim", "768", "--save", out],
                env=env, capture_output=True, text=True, timeout=60)
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertIn("shape=(5, 768)", run.stdout)
            r = np.load(out)
            assert_close(self, r["y"], reference_layer_norm(r["x"], r["gamma"], r["beta"]))

    def test_grpcurl_style_json_with_types_from_reflection(self):
        refl = load_by_path("reflection_pb2", os.path.join(
            STUBS, "grpc_protos/grpc/reflection/v1alpha/reflection_pb2.py"))
        with LiveServer(SERVER) as server, grpc.insecure_channel(server.target) as channel:
            info = channel.stream_stream(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=refl.ServerReflectionRequest.SerializeToString,
                response_deserializer=refl.ServerReflectionResponse.FromString)

            def ask(**kwargs):
                return next(iter(info(iter([refl.ServerReflectionRequest(**kwargs)]),
                                      timeout=10)))

            services = [s.name for s in ask(list_services="").list_services_response.service]
            self.assertIn("normserve.v1.NormalizationService", services)
            self.assertIn("grpc.health.v1.Health", services)

            # Everything below knows the API only through reflection.
            request_cls, response_cls = reflected_method(
                ask, "normserve.v1.NormalizationService", "Normalize")

            x = [[1.0, 2.0, 4.0, 8.0], [-3.0, 0.5, 0.25, 10.0]]
            request_json = json.dumps({
                "input": {"shape": [2, 4], "dtype": "DATA_TYPE_FLOAT32",
                          "floatData": sum(x, [])},
                "epsilon": 0.001,
                "requestId": "json-1",
            })
            request = json_format.Parse(request_json, request_cls())
            call = channel.unary_unary(
                "/normserve.v1.NormalizationService/Normalize",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString)
            response = json.loads(json_format.MessageToJson(call(request, timeout=10)))
            self.assertEqual(response["requestId"], "json-1")
            self.assertEqual(response["output"]["shape"], ["2", "4"])
            y = np.array(response["output"]["floatData"], dtype=np.float64).reshape(2, 4)
            assert_close(self, y, reference_layer_norm(np.array(x, np.float32), eps=1e-3))

            # A JSON request with a mistake gets the precise message.
            bad = json_format.Parse(
                '{"input": {"shape": [2, -4], "dtype": "DATA_TYPE_FLOAT32"}}', request_cls())
            with self.assertRaises(grpc.RpcError) as err:
                call(bad, timeout=10)
            self.assertEqual(err.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("input.shape[1] = -4", err.exception.details())

            # The README's Open Inference Protocol example, as grpcurl would
            # send it: same port, types from reflection too.
            self.assertIn("inference.GRPCInferenceService", services)
            request_cls, response_cls = reflected_method(
                ask, "inference.GRPCInferenceService", "ModelInfer")
            request = json_format.Parse(json.dumps({
                "model_name": "default", "inputs": [{
                    "name": "input", "datatype": "FP32", "shape": [2, 4],
                    "contents": {"fp32_contents": [1, 2, 3, 4, 5, 6, 7, 8]}}]}),
                request_cls())
            call = channel.unary_unary(
                "/inference.GRPCInferenceService/ModelInfer",
                request_serializer=request_cls.SerializeToString,
                response_deserializer=response_cls.FromString)
            response = json.loads(json_format.MessageToJson(call(request, timeout=10)))
            out = response["outputs"][0]
            self.assertEqual((out["name"], out["datatype"], out["shape"]),
                             ("output", "FP32", ["2", "4"]))
            y = np.array(out["contents"]["fp32Contents"], np.float64).reshape(2, 4)
            assert_close(self, y, reference_layer_norm(
                np.arange(1, 9, dtype=np.float32).reshape(2, 4)))

    def test_health_reports_serving(self):
        health = load_by_path("health_pb2", os.path.join(
            STUBS, "grpc_protos/grpc/health/v1/health_pb2.py"))
        with LiveServer(SERVER) as server, grpc.insecure_channel(server.target) as channel:
            check = channel.unary_unary(
                "/grpc.health.v1.Health/Check",
                request_serializer=health.HealthCheckRequest.SerializeToString,
                response_deserializer=health.HealthCheckResponse.FromString)
            reply = check(health.HealthCheckRequest(service=""), timeout=10)
            self.assertEqual(reply.status, health.HealthCheckResponse.SERVING)

    def connections_to(self, port):
        """Local ports of this machine's established TCP connections to
        `port` (the test is the server's only client)."""
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    fields = line.split()
                    local, remote, state = fields[1], fields[2], fields[3]
                    if state == "01" and int(remote.split(":")[1], 16) == port:
                        found.add(int(local.split(":")[1], 16))
        return found

    def normalize_over(self, server, seconds, stream_call=None):
        """Normalize calls on one channel for `seconds`, checked against the
        reference; the set of client connections the calls went over. With
        `stream_call`, one NormalizeStream stays open throughout and answers
        a message after each unary call."""
        if STUBS not in sys.path:
            sys.path.insert(0, STUBS)
        from normserve.v1 import normalization_service_pb2 as pb
        from normserve.v1 import tensor_pb2 as tensor_pb
        rng = np.random.default_rng(11)
        seen = set()
        with grpc.insecure_channel(server.target) as channel:
            call = channel.unary_unary(
                "/normserve.v1.NormalizationService/Normalize",
                request_serializer=pb.NormalizeRequest.SerializeToString,
                response_deserializer=pb.NormalizeResponse.FromString)
            stream_in, answers = None, None
            if stream_call:
                import queue
                stream_in = queue.Queue()
                stream = channel.stream_stream(
                    "/normserve.v1.NormalizationService/NormalizeStream",
                    request_serializer=pb.NormalizeStreamRequest.SerializeToString,
                    response_deserializer=pb.NormalizeStreamResponse.FromString)
                answers = stream(iter(stream_in.get, None), timeout=60)

            def request():
                x = rng.normal(size=(3, 64)).astype(np.float32)
                return x, pb.NormalizeRequest(input=tensor_pb.Tensor(
                    dtype=tensor_pb.DATA_TYPE_FLOAT32, shape=[3, 64], float_data=x.ravel()))

            deadline = time.monotonic() + seconds
            streamed = 0
            while time.monotonic() < deadline:
                x, req = request()
                y = np.array(call(req, timeout=10).output.float_data).reshape(3, 64)
                assert_close(self, y, reference_layer_norm(x))
                seen |= self.connections_to(server.grpc_port)
                if stream_in is not None:
                    x, req = request()
                    stream_in.put(pb.NormalizeStreamRequest(request=req))
                    answer = next(answers)
                    self.assertEqual(answer.status_code, 0, answer.status_message)
                    y = np.array(answer.response.output.float_data).reshape(3, 64)
                    assert_close(self, y, reference_layer_norm(x))
                    streamed += 1
                time.sleep(0.05)
            if stream_in is not None:
                stream_in.put(None)
                self.assertEqual(list(answers), [])
                self.assertGreater(streamed, 10)
        return seen

    def test_max_connection_age_moves_clients_to_new_connections(self):
        # Without it one connection carries everything; with it (200 ms) the
        # client is sent GOAWAY and reconnects several times in 2 s, its
        # calls all answered, while a stream opened at the start goes on
        # over its old connection.
        with LiveServer(SERVER) as server:
            self.assertEqual(len(self.normalize_over(server, 1.0)), 1)
        with LiveServer(SERVER, "--max_connection_age_ms=200") as server:
            self.assertGreaterEqual(len(self.normalize_over(server, 2.0, stream_call=True)), 3)


if __name__ == "__main__":
    SERVER, STUBS = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)

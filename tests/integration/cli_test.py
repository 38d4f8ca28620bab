#!/usr/bin/env python3
"""The two command lines against real processes.

normctl (client/normctl.cc) talks to a real server: .npy tensors in (float32
and float64, with --gamma/--beta, --normalized_ndim, --epsilon, --rms,
--dtype/--output_dtype), the answer written with --output and read back by
NumPy, checked against a float64 NumPy reference; the printed summary
(shape, dtype, latency, statistics, first values); random inputs from
--shape; --health and --list_models; and each way it fails.

normserve's own command line: --help documents every flag main() defines,
SIGINT drains admitted requests and exits 0 exactly as SIGTERM does, and
--host=0.0.0.0 listens on every interface (reached here through 127.0.0.1).

Usage: cli_test.py SERVER_BINARY NORMCTL_BINARY
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import numpy as np

from live_server import LiveServer
from numpy_reference import max_error_per_row, reference

SERVER = NORMCTL = None
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SUMMARY = re.compile(r"^model=(\S+) shape=\[([0-9,]*)\] dtype=(\S+) latency=([0-9.]+) ms$",
                     re.MULTILINE)


def listening_sockets():
    """(address, port) of every listening TCP socket, addresses in the
    kernel's hex ("0100007F" is 127.0.0.1, all zeros the wildcard)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    address, port = fields[1].split(":")
                    found.add((address, int(port, 16)))
    return found


def normctl(*args, timeout=60):
    return subprocess.run([NORMCTL, *args], capture_output=True, text=True, timeout=timeout)


def metric(port, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(m.group(1))
               for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", body, re.MULTILINE))


class NormctlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.server = LiveServer(SERVER).__enter__()
        cls.target = f"127.0.0.1:{cls.server.grpc_port}"

    @classmethod
    def tearDownClass(cls):
        cls.server.__exit__(None, None, None)
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def test_npy_input_with_gamma_and_beta_to_npy_output(self):
        rng = np.random.default_rng(1)
        x = rng.normal(2.0, 3.0, (3, 4, 96)).astype(np.float32)
        gamma = rng.normal(1.0, 0.5, (4, 96))  # float64 files: read as float32
        beta = rng.normal(0.0, 0.5, (4, 96))
        np.save(self.path("x.npy"), x)
        np.save(self.path("gamma.npy"), gamma)
        np.save(self.path("beta.npy"), beta)
        started = time.monotonic()
        run = normctl(f"--server={self.target}", f"--input={self.path('x.npy')}",
                      f"--gamma={self.path('gamma.npy')}", f"--beta={self.path('beta.npy')}",
                      "--normalized_ndim=2", "--epsilon=1e-3", "--stats",
                      f"--output={self.path('y.npy')}")
        wall_ms = (time.monotonic() - started) * 1e3
        self.assertEqual(run.returncode, 0, run.stderr)

        y = np.load(self.path("y.npy"))
        self.assertEqual(y.dtype, np.float32)
        self.assertEqual(y.shape, (3, 4, 96))
        want, mean, rstd = reference(x, 2, gamma, beta, eps=1e-3)
        self.assertLessEqual(max_error_per_row(y, want, 2).max(), 1e-5)

        # The summary: shape, dtype and a latency no longer than the run.
        m = SUMMARY.search(run.stdout)
        self.assertIsNotNone(m, run.stdout)
        self.assertEqual(m.group(1), "default")
        self.assertEqual(m.group(2), "3,4,96")
        self.assertEqual(m.group(3), "DATA_TYPE_FLOAT32")
        self.assertGreater(float(m.group(4)), 0)
        self.assertLess(float(m.group(4)), wall_ms)
        # Per-row statistics (--stats), printed to 6 significant digits.
        rows = re.findall(r"^row (\d+): mean=(\S+) rstd=(\S+)$", run.stdout, re.MULTILINE)
        self.assertEqual([int(r[0]) for r in rows], [0, 1, 2])
        for r, got_mean, got_rstd in rows:
            r = int(r)
            self.assertAlmostEqual(float(got_mean), mean[r], delta=1e-5 / rstd[r])
            self.assertAlmostEqual(float(got_rstd), rstd[r], delta=2e-5 * rstd[r])
        # The first values, printed as %.6f: those of the file and of the
        # reference.
        first = re.search(r"^first values:((?: \S+)+)$", run.stdout, re.MULTILINE)
        self.assertIsNotNone(first, run.stdout)
        printed = np.array([float(v) for v in first.group(1).split()])
        self.assertEqual(len(printed), 8)
        np.testing.assert_allclose(printed, y.ravel()[:8], rtol=0, atol=5.1e-7)
        np.testing.assert_allclose(printed, want.ravel()[:8], rtol=0, atol=1e-5 * np.abs(want).max())
        self.assertIn(f"wrote {self.path('y.npy')}", run.stdout)

    def test_float64_input_and_rms_norm(self):
        x = np.random.default_rng(2).normal(-1.0, 0.25, (7, 33))  # float64
        np.save(self.path("x64.npy"), x)
        run = normctl(f"--server={self.target}", f"--input={self.path('x64.npy')}", "--rms",
                      f"--output={self.path('y64.npy')}")
        self.assertEqual(run.returncode, 0, run.stderr)
        y = np.load(self.path("y64.npy"))
        want, _, _ = reference(x.astype(np.float32), rms=True)
        self.assertEqual(y.shape, (7, 33))
        self.assertLessEqual(max_error_per_row(y, want).max(), 1e-5)
        self.assertNotIn("row 0:", run.stdout)  # statistics only with --stats

    def test_bfloat16_on_the_wire_answers_in_bfloat16_unless_asked(self):
        # Values exactly representable in bfloat16, so the wire loses nothing.
        x = (np.random.default_rng(3).integers(-64, 64, (5, 40)) / 8).astype(np.float32)
        np.save(self.path("xb.npy"), x)
        want, _, _ = reference(x)
        # No --output_dtype: the output has the input's dtype.
        run = normctl(f"--server={self.target}", f"--input={self.path('xb.npy')}",
                      "--dtype=bfloat16", f"--output={self.path('yb.npy')}")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(SUMMARY.search(run.stdout).group(3), "DATA_TYPE_BFLOAT16")
        y = np.load(self.path("yb.npy"))
        self.assertTrue(np.all(y.view(np.uint32) & 0xFFFF == 0), "not bfloat16 values")
        # Within bfloat16's rounding (half of 2^-7 relative) of the reference.
        np.testing.assert_array_less(np.abs(y - want), 2.0**-8 * np.abs(want) + 1e-5)
        # Asked for float32: the float32 bound.
        run = normctl(f"--server={self.target}", f"--input={self.path('xb.npy')}",
                      "--dtype=bf16", "--output_dtype=float32", f"--output={self.path('yf.npy')}")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(SUMMARY.search(run.stdout).group(3), "DATA_TYPE_FLOAT32")
        self.assertLessEqual(max_error_per_row(np.load(self.path("yf.npy")), want).max(), 1e-5)

    def test_random_input_from_shape_is_seeded(self):
        outputs = {}
        for seed in (5, 5, 6):
            out = self.path(f"r{seed}.npy")
            run = normctl(f"--server={self.target}", "--shape=4,768", f"--seed={seed}",
                          f"--output={out}")
            self.assertEqual(run.returncode, 0, run.stderr)
            self.assertEqual(SUMMARY.search(run.stdout).group(2), "4,768")
            y = np.load(out).astype(np.float64)
            self.assertEqual(y.shape, (4, 768))
            # LayerNorm of N(0, 1) rows: mean 0, variance var/(var + 1e-5).
            self.assertLess(np.abs(y.mean(axis=1)).max(), 1e-5)
            np.testing.assert_allclose(y.var(axis=1), 1.0, atol=1e-4)
            if seed in outputs:
                np.testing.assert_array_equal(y, outputs[seed])
            outputs[seed] = y
        self.assertFalse(np.array_equal(outputs[5], outputs[6]))

    def test_health_and_list_models(self):
        run = normctl(f"--server={self.target}", "--health")
        self.assertEqual((run.returncode, run.stdout), (0, "SERVING\n"), run.stderr)
        run = normctl(f"--server={self.target}", "--list_models")
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertRegex(run.stdout, r"^default kind=NORM_KIND_LAYER_NORM shape=\[\] eps=1e-05 "
                                     r"gamma=0 beta=0 request_params=1$")

    def test_failures_exit_1_with_the_status(self):
        np.save(self.path("small.npy"), np.ones((2, 4), np.float32))
        cases = [
            # The server's validation, code and message passed through.
            ([f"--input={self.path('small.npy')}", "--epsilon=-1"],
             "normctl: INVALID_ARGUMENT: epsilon = -1"),
            ([f"--input={self.path('small.npy')}", "--model=nope"],
             "normctl: NOT_FOUND: model = 'nope'"),
            ([f"--input={self.path('missing.npy')}"], "normctl: NOT_FOUND: "),
            (["--shape=2,-3"], "normctl: INVALID_ARGUMENT: --shape: expected positive integers"),
            (["--shape=2,8", "--dtype=int4"], "normctl: INVALID_ARGUMENT: --dtype/--output_dtype"),
            ([], "normctl: INVALID_ARGUMENT: give --shape or --input"),
            (["--shape=2,8", "--device=tpu"], "normctl: INVALID_ARGUMENT: --device: expected cpu or cuda"),
            # TLS options without the CA would have gone out in plaintext.
            (["--shape=2,8", "--tls_server_name=normserve.example"],
             "normctl: INVALID_ARGUMENT: tls_cert, tls_key or tls_server_name without tls_ca"),
            # A CPU server asked for DEVICE_CUDA.
            (["--shape=2,8", "--device=cuda"],
             "normctl: FAILED_PRECONDITION: device = DEVICE_CUDA: this server has no usable CUDA device"),
        ]
        for args, message in cases:
            run = normctl(f"--server={self.target}", *args)
            self.assertEqual(run.returncode, 1, args)
            self.assertIn(message, run.stderr, args)
            self.assertEqual(run.stdout, "", args)
        # Nobody listening: UNAVAILABLE, within the deadline.
        with socket_port() as port:
            run = normctl(f"--server=127.0.0.1:{port}", "--shape=1,8", "--timeout_ms=3000")
        self.assertEqual(run.returncode, 1)
        self.assertRegex(run.stderr, r"normctl: (UNAVAILABLE|DEADLINE_EXCEEDED): ")


class socket_port:
    """A port on 127.0.0.1 that nobody listens on while the block runs."""

    def __enter__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))  # bound, never listening: refused
        return self.sock.getsockname()[1]

    def __exit__(self, *exc):
        self.sock.close()


class NormserveCommandLineTest(unittest.TestCase):
    def test_help_documents_every_flag(self):
        with open(os.path.join(REPO, "server", "server_main.cc")) as f:
            flags = re.findall(r"ABSL_FLAG\(\s*[\w:]+\s*,\s*(\w+)\s*,", f.read())
        self.assertGreater(len(flags), 20)
        run = subprocess.run([SERVER, "--help"], capture_output=True, text=True, timeout=30)
        text = run.stdout + run.stderr
        self.assertIn(run.returncode, (0, 1), text)  # Abseil exits 1 after --help
        for flag in flags:
            m = re.search(rf"--{flag} \((.*?)\); default:", text, re.DOTALL)
            self.assertIsNotNone(m, f"--{flag} missing from --help:\n{text}")
            self.assertGreater(len(m.group(1).strip()), 10, flag)
        # It only prints: nothing was started.
        self.assertNotIn("listening", text)

    def test_out_of_range_flags_exit_2_naming_the_flag(self):
        for flag, expected in [("--grpc_port=70000", "expected 0 to 65535"),
                               ("--metrics_port=-1", "expected 0 to 65535"),
                               ("--max_batch_rows=0", "expected >= 1"),
                               ("--cpu_threads=-2", "expected 0 to 2147483647"),
                               ("--max_concurrent_streams=0", "expected 1 to 2147483647"),
                               ("--keepalive_time_ms=4000000000", "expected 1 to 2147483647"),
                               ("--shutdown_grace_ms=-1", "expected >= 0"),
                               ("--stream_window_bytes=0", "expected >= 1"),
                               # Past 2^31: once a parse error (exit 1).
                               ("--max_message_bytes=3000000000", "expected 4096 to 2147483647"),
                               ("--max_message_bytes=10", "expected 4096 to 2147483647"),
                               ("--max_rank=4294967296", "expected 1 to 2147483647")]:
            run = subprocess.run([SERVER, "--grpc_port=0", "--metrics_port=0", flag],
                                 capture_output=True, text=True, timeout=30)
            self.assertEqual(run.returncode, 2, f"{flag}: {run.stdout}{run.stderr}")
            self.assertIn(f"normserve: {flag}: {expected}", run.stderr)
            self.assertNotIn("listening", run.stdout)

    def test_a_model_config_asking_for_cuda_without_a_gpu_stops_startup(self):
        """As --device=cuda does: not a server that refuses every request to
        the model."""
        def start(*flags):
            """Exit status and output, or None where the server came up."""
            proc = subprocess.Popen([SERVER, "--grpc_port=0", "--metrics_port=0", *flags],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            first = proc.stdout.readline()  # the listening line, or EOF at exit
            if "listening" in first:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
                return None
            out, err = proc.communicate(timeout=60)
            return proc.returncode, first + out, err

        if start("--device=cuda") is None:
            self.skipTest("this machine has a usable GPU (--device=cuda starts)")
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "models.pbtxt")
            with open(config, "w") as f:
                f.write('models { name: "gpu-ln" device: DEVICE_CUDA }\n')
            result = start("--device=cpu", f"--model_config={config}")
        self.assertIsNotNone(result, "started without a usable GPU for model gpu-ln")
        code, out, err = result
        self.assertEqual(code, 1, out + err)
        self.assertIn("normserve: model 'gpu-ln' (--model_config): device = DEVICE_CUDA, but ",
                      err)

    def drain_on(self, sig):
        """Requests queued (a long batching delay holds them) when `sig`
        arrives all complete correctly, and the server exits 0."""
        tmp = tempfile.TemporaryDirectory()
        proc = subprocess.Popen([SERVER, "--grpc_port=0", "--metrics_port=0",
                                 "--max_queue_delay_us=1000000", "--max_batch_rows=100000"],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        clients = []
        try:
            m = re.search(r"grpc=[^ ]+:(\d+) metrics=[^ ]+:(\d+)", proc.stdout.readline())
            self.assertIsNotNone(m)
            grpc_port, metrics_port = int(m.group(1)), int(m.group(2))
            rng = np.random.default_rng(sig)
            inputs = []
            for i in range(6):
                x = rng.normal(0.5, 2.0, (2, 64)).astype(np.float32)
                np.save(os.path.join(tmp.name, f"x{i}.npy"), x)
                inputs.append(x)
                clients.append(subprocess.Popen(
                    [NORMCTL, f"--server=127.0.0.1:{grpc_port}",
                     f"--input={os.path.join(tmp.name, f'x{i}.npy')}",
                     f"--output={os.path.join(tmp.name, f'y{i}.npy')}"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
            deadline = time.monotonic() + 20
            while metric(metrics_port, "normserve_requests_in_flight") < len(clients):
                self.assertLess(time.monotonic(), deadline, "requests never queued")
                time.sleep(0.01)
            proc.send_signal(sig)
            self.assertEqual(proc.wait(timeout=30), 0)
            rest = proc.stdout.read()
            self.assertIn(f"normserve: signal {int(sig)}, draining", rest)
            self.assertIn("normserve: stopped", rest)
            for i, client in enumerate(clients):
                _, err = client.communicate(timeout=30)
                self.assertEqual(client.returncode, 0, err)
                y = np.load(os.path.join(tmp.name, f"y{i}.npy"))
                self.assertLessEqual(max_error_per_row(y, reference(inputs[i])[0]).max(), 1e-5)
        finally:
            for c in clients:
                if c.poll() is None:
                    c.kill()
                c.wait()
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            tmp.cleanup()

    def test_sigint_drains_and_exits_0(self):
        self.drain_on(signal.SIGINT)

    def test_sigterm_drains_and_exits_0(self):
        self.drain_on(signal.SIGTERM)

    def test_host_0000_listens_on_every_interface(self):
        with LiveServer(SERVER, "--host=0.0.0.0") as server:
            self.assertTrue(server.target.startswith("0.0.0.0:"), server.target)
            # The address users are told to use works from this machine.
            server.proc.stdout.readline()  # normserve device=...
            self.assertIn(f"--server=127.0.0.1:{server.grpc_port}", server.proc.stdout.readline())
            # The kernel's tables: gRPC and metrics listen on the wildcard
            # address (IPv4, or gRPC's dual-stack IPv6 socket).
            sockets = listening_sockets()
            for port in (server.grpc_port, server.metrics_port):
                self.assertTrue(any(p == port and set(a) == {"0"} for a, p in sockets),
                                f"port {port} is not on the wildcard address")
            # Served through 127.0.0.1, metrics too.
            x = np.random.default_rng(4).normal(size=(2, 50)).astype(np.float32)
            with tempfile.TemporaryDirectory() as tmp:
                np.save(os.path.join(tmp, "x.npy"), x)
                run = normctl(f"--server=127.0.0.1:{server.grpc_port}",
                              f"--input={os.path.join(tmp, 'x.npy')}",
                              f"--output={os.path.join(tmp, 'y.npy')}")
                self.assertEqual(run.returncode, 0, run.stderr)
                y = np.load(os.path.join(tmp, "y.npy"))
            self.assertLessEqual(max_error_per_row(y, reference(x)[0]).max(), 1e-5)
            self.assertGreaterEqual(metric(server.metrics_port, "grpc_server_started_total"), 1)

    def test_ipv6_host_serves_grpc_and_names_the_metrics_limit(self):
        import socket
        try:
            with socket.socket(socket.AF_INET6) as probe:
                probe.bind(("::1", 0))
        except OSError as e:
            self.skipTest(f"no IPv6 loopback on this machine ({e})")
        # gRPC on [::1] given bare or bracketed; metrics on IPv4.
        for host in ("::1", "[::1]"):
            with LiveServer(SERVER, f"--host={host}", "--metrics_host=127.0.0.1") as server:
                self.assertEqual(server.target, f"[::1]:{server.grpc_port}")
                server.proc.stdout.readline()  # normserve device=...
                self.assertIn(f"--server=[::1]:{server.grpc_port}",
                              server.proc.stdout.readline())
                self.assertIn(("00000000000000000000000001000000", server.grpc_port),
                              listening_sockets())
                with tempfile.TemporaryDirectory() as tmp:
                    run = normctl(f"--server={server.target}", "--shape=3,40",
                                  f"--output={os.path.join(tmp, 'y.npy')}")
                    self.assertEqual(run.returncode, 0, run.stderr)
                    self.assertEqual(np.load(os.path.join(tmp, "y.npy")).shape, (3, 40))
                self.assertGreaterEqual(
                    metric(server.metrics_port, "grpc_server_started_total"), 1)
        # The wildcard :: takes IPv4 clients too, and the first-request line
        # names the IPv6 loopback.
        with LiveServer(SERVER, "--host=::", "--metrics_host=127.0.0.1") as server:
            server.proc.stdout.readline()
            self.assertIn(f"--server=[::1]:{server.grpc_port}", server.proc.stdout.readline())
            run = normctl(f"--server=127.0.0.1:{server.grpc_port}", "--health")
            self.assertEqual(run.returncode, 0, run.stderr)
        # Metrics on IPv6: served where the HTTP library has IPv6, else a
        # startup error that says what to do.
        proc = subprocess.Popen([SERVER, "--grpc_port=0", "--metrics_port=0", "--host=::1"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()
        m = re.search(r" metrics=\[::1\]:(\d+) ", first)
        if m:
            try:
                body = urllib.request.urlopen(f"http://[::1]:{m.group(1)}/metrics",
                                              timeout=5).read().decode()
                self.assertIn("grpc_server_started_total", body)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.communicate(timeout=60)
            return
        _, err = proc.communicate(timeout=60)
        self.assertEqual(proc.returncode, 1, first + err)
        self.assertIn("metrics address [::1]:0 (--metrics_host, --metrics_port): cannot listen: "
                      "the HTTP library serving /metrics (civetweb) was built without IPv6; "
                      "expected an IPv4 --metrics_host", err)

    def test_default_host_is_loopback_only(self):
        with LiveServer(SERVER) as server:
            sockets = listening_sockets()
            for port in (server.grpc_port, server.metrics_port):
                # 127.0.0.1, as an IPv4 socket or an IPv4-mapped IPv6 one.
                self.assertEqual({a[-8:] for a, p in sockets if p == port}, {"0100007F"})
                self.assertTrue(all(a in ("0100007F", "0000000000000000FFFF00000100007F")
                                    for a, p in sockets if p == port))


if __name__ == "__main__":
    SERVER, NORMCTL = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)

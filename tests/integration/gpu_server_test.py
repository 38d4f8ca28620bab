#!/usr/bin/env python3
"""normserve on a real GPU, end to end.

Starts the real server with --device=cuda (and a second one with
--device=cpu) and drives it with the real client, normctl:
  - every wire dtype (float32, float16, bfloat16), LayerNorm and RMSNorm,
    γ/β, D on each of the kernels' three row mappings and with a tail,
    checked against a float64 NumPy reference, per-row statistics too;
  - the GPU server's answers against the CPU server's for the same inputs;
  - a 32 MiB request, which the CUDA backend cuts into pipelined chunks;
  - concurrent load from normbench (no errors; requests/s and MB/s of the
    GPU server, the GPU server with one batch worker and the CPU server,
    large requests also over 4 connections, printed, and written as JSON
    to $NORMSERVE_GPU_REPORT when set);
  - a request's own device (DEVICE_CPU on the GPU server runs on the CPU;
    the CPU server refuses DEVICE_CUDA with FAILED_PRECONDITION), by the
    device-labelled latency series;
  - the GPU gauges and the device="cuda" latency series on /metrics.

Without a usable GPU the server refuses --device=cuda; the test then says
so and exits 77 (CTest's skip code here).

CTest also runs it, as fake_gpu_server, against normserve_fake_cuda_server:
the same server on the fake CUDA runtime of tests/fake_cuda, whose kernels
are the CPU kernel. That checks the server's CUDA path (routing, the
pipelined backend under concurrent load, the gauges) on machines without a
GPU; its throughput figures say nothing about a GPU and are labelled "fake".

Usage: gpu_server_test.py NORMSERVE NORMCTL [NORMBENCH]
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import numpy as np

from live_server import LiveServer
from numpy_reference import max_error_per_row, reference

SERVER = NORMCTL = NORMBENCH = None
SKIP_CODE = 77

# |y − ref| bounds relative to the row's largest |ref| (the contract's float32
# bound, and half an ulp of the 16-bit output formats on top of it).
BOUND = {"float32": 1e-5, "float16": 2.0**-11 + 1e-5, "bfloat16": 2.0**-8 + 1e-5}


def to_wire(x, dtype):
    """x (float32) as the values the wire carries in `dtype`, as float32."""
    if dtype == "float32":
        return x
    if dtype == "float16":
        return x.astype(np.float16).astype(np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.astype(np.uint32).view(np.float32)


def metrics_text(port):
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                  timeout=5).read().decode()


def metric_values(text, name, labels=""):
    """Values of every `name` series whose labels contain `labels`."""
    return [float(m.group(2)) for m in
            re.finditer(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, re.MULTILINE)
            if labels in (m.group(1) or "")]


class GpuServerTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.gpu = LiveServer(SERVER, "--device=cuda").__enter__()
        cls.cpu = LiveServer(SERVER, "--device=cpu").__enter__()

    @classmethod
    def tearDownClass(cls):
        cls.gpu.__exit__(None, None, None)
        cls.cpu.__exit__(None, None, None)
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def normalize(self, server, x, dtype, gamma, beta, rms, tag, stats=False, device=None):
        """normctl's answer (float32) and its printed per-row statistics."""
        np.save(self.path(f"{tag}_x.npy"), x)
        np.save(self.path(f"{tag}_g.npy"), gamma)
        args = [NORMCTL, f"--server=127.0.0.1:{server.grpc_port}",
                f"--input={self.path(f'{tag}_x.npy')}", f"--dtype={dtype}",
                f"--gamma={self.path(f'{tag}_g.npy')}",
                f"--output={self.path(f'{tag}_y.npy')}"]
        if beta is not None:
            np.save(self.path(f"{tag}_b.npy"), beta)
            args.append(f"--beta={self.path(f'{tag}_b.npy')}")
        if rms:
            args.append("--rms")
        if stats:
            args.append("--stats")
        if device:
            args.append(f"--device={device}")
        run = subprocess.run(args, capture_output=True, text=True, timeout=120)
        self.assertEqual(run.returncode, 0, f"{tag}: {run.stderr}")
        y = np.load(self.path(f"{tag}_y.npy")).astype(np.float32)
        rows = re.findall(r"^row (\d+): mean=(\S+) rstd=(\S+)$", run.stdout, re.MULTILINE)
        return y, [(float(m), float(r)) for _, m, r in rows]

    def test_every_dtype_kind_and_mapping_matches_the_float64_reference(self):
        rng = np.random.default_rng(11)
        # warp per row, warp with a tail, block per row, streaming block.
        for d in (768, 1031, 4096, 20000):
            rows = max(2, min(64, (1 << 20) // d))
            for dtype in ("float32", "float16", "bfloat16"):
                for rms in (False, True):
                    with self.subTest(d=d, dtype=dtype, rms=rms):
                        x = to_wire(rng.normal(0.5, 2.0, (rows, d)).astype(np.float32), dtype)
                        gamma = rng.normal(1.0, 0.3, d).astype(np.float32)
                        beta = None if rms else rng.normal(0.0, 0.3, d).astype(np.float32)
                        tag = f"{dtype}_{d}_{int(rms)}"
                        y, _ = self.normalize(self.gpu, x, dtype, gamma, beta, rms, tag)
                        want, _, _ = reference(x, gamma=gamma, beta=beta, rms=rms)
                        self.assertEqual(y.shape, want.shape)
                        self.assertLessEqual(max_error_per_row(y, want).max(), BOUND[dtype])
                        # The CPU server: each within the bound of float64,
                        # so within twice the bound of each other.
                        z, _ = self.normalize(self.cpu, x, dtype, gamma, beta, rms, tag + "_cpu")
                        self.assertLessEqual(max_error_per_row(y, z.astype(np.float64)).max(),
                                             2 * BOUND[dtype])

    def test_a_large_request_goes_through_the_pipelined_chunks(self):
        rng = np.random.default_rng(12)
        d = 4096
        x = rng.normal(-1.0, 3.0, (2048, d)).astype(np.float32)  # 32 MiB
        gamma = rng.normal(1.0, 0.3, d).astype(np.float32)
        beta = rng.normal(0.0, 0.3, d).astype(np.float32)
        y, stats = self.normalize(self.gpu, x, "float32", gamma, beta, False, "large",
                                  stats=True)
        want, mean, rstd = reference(x, gamma=gamma, beta=beta)
        self.assertLessEqual(max_error_per_row(y, want).max(), BOUND["float32"])
        self.assertGreater(len(stats), 0)
        for r, (m, s) in enumerate(stats):
            self.assertAlmostEqual(m, mean[r], delta=1e-5 / rstd[r])
            self.assertAlmostEqual(s, rstd[r], delta=2e-5 * rstd[r])

    def test_concurrent_load_has_no_errors(self):
        if NORMBENCH is None:
            self.skipTest("no normbench binary given")
        gpu_name = "fake" if os.environ.get("NORMSERVE_FAKE_CUDA") else "cuda"
        # Also the GPU server with one batch worker (batches one at a time on
        # the GPU), against the default (one per stream, batches overlap):
        # the same load, measured in the same run.
        with LiveServer(SERVER, "--device=cuda", "--batch_workers=1") as one_worker:
            self.load(((gpu_name, self.gpu), (f"{gpu_name}, 1 worker", one_worker),
                       ("cpu", self.cpu)))

    def load(self, servers):
        report = {}
        # Large requests also over 4 connections (one carries every call
        # over one TCP stream): whether one connection bounds the server.
        loads = (("1,768", 1), ("64,4096", 1), ("512,4096", 1), ("64,4096", 4))
        for name, server in servers:
            for shape, connections in loads:
                run = subprocess.run(
                    [NORMBENCH, f"--server=127.0.0.1:{server.grpc_port}",
                     f"--metrics=127.0.0.1:{server.metrics_port}",
                     f"--shape={shape}", "--concurrency=1:16:x4", "--duration_s=1.5",
                     "--warmup_s=0.3", f"--connections={connections}", "--json"],
                    capture_output=True, text=True, timeout=120)
                self.assertEqual(run.returncode, 0, run.stderr)
                steps = [json.loads(line) for line in run.stdout.splitlines()
                         if line.startswith("{")]
                self.assertEqual(len(steps), 3, run.stdout)
                for s in steps:
                    self.assertEqual(s["errors"], 0, s)
                    self.assertGreater(s["requests"], 0, s)
                if connections > 1:
                    shape += f" over {connections} connections"
                report[f"{name} {shape}"] = steps
                best = max(steps, key=lambda s: s["bytes_per_s"])
                print(f"{name:14} {shape:>8}: best {best['requests_per_s']:9.0f} req/s "
                      f"{best['bytes_per_s'] / 1e6:8.1f} MB/s at concurrency "
                      f"{best['concurrency']}, p99 {best['p99_ms']:.3f} ms", flush=True)
        if os.environ.get("NORMSERVE_GPU_REPORT"):
            with open(os.environ["NORMSERVE_GPU_REPORT"], "w") as fh:
                json.dump(report, fh, indent=1)

    def test_metrics_report_the_gpu(self):
        # At least one request has run on the GPU by now in any test order.
        rng = np.random.default_rng(13)
        x = rng.normal(0, 1, (4, 768)).astype(np.float32)
        self.normalize(self.gpu, x, "float32", np.ones(768, np.float32), None, False, "m")
        text = metrics_text(self.gpu.metrics_port)
        used = metric_values(text, "normserve_cuda_memory_used_bytes")
        total = metric_values(text, "normserve_cuda_memory_total_bytes")
        busy = metric_values(text, "normserve_cuda_busy_seconds_total")
        self.assertEqual(len(used), 1, text)
        self.assertEqual(len(total), 1, text)
        self.assertEqual(len(busy), 1, text)
        self.assertGreater(used[0], 0)
        self.assertGreaterEqual(total[0], used[0])
        self.assertGreater(busy[0], 0)
        # Read at each scrape: a counter that stands still while idle and
        # moves with the next request.
        time.sleep(0.2)
        self.assertEqual(metric_values(metrics_text(self.gpu.metrics_port),
                                       "normserve_cuda_busy_seconds_total"), busy)
        self.normalize(self.gpu, x, "float32", np.ones(768, np.float32), None, False, "m2")
        self.assertGreater(metric_values(metrics_text(self.gpu.metrics_port),
                                         "normserve_cuda_busy_seconds_total")[0], busy[0])
        # NVML's utilization: the fake NVML's device reports 37 %; on a GPU
        # host NVML comes with the driver.
        utilization = metric_values(text, "normserve_cuda_utilization_ratio")
        if os.environ.get("NORMSERVE_FAKE_CUDA"):
            self.assertEqual(utilization, [0.37])
        elif utilization:
            self.assertTrue(0 <= utilization[0] <= 1, utilization)
        else:
            print("no normserve_cuda_utilization_ratio: NVML did not load", flush=True)
        # The CPU server has no CUDA families.
        self.assertEqual(metric_values(metrics_text(self.cpu.metrics_port),
                                       "normserve_cuda_busy_seconds_total"), [])
        self.assertGreater(sum(metric_values(
            text, "normserve_request_latency_seconds_count", 'device="cuda"')), 0)

    def test_a_request_may_pick_its_device(self):
        rng = np.random.default_rng(14)
        x = rng.normal(0, 1, (4, 768)).astype(np.float32)
        gamma = rng.normal(1.0, 0.3, 768).astype(np.float32)
        want, _, _ = reference(x, gamma=gamma)

        def count(device):
            return sum(metric_values(metrics_text(self.gpu.metrics_port),
                                     "normserve_request_latency_seconds_count",
                                     f'device="{device}"'))

        # On the GPU server: no device means the model's (CUDA); DEVICE_CPU
        # runs on the CPU. Each request lands in its device's series.
        for device, series in ((None, "cuda"), ("cpu", "cpu"), ("cuda", "cuda")):
            with self.subTest(device=device):
                before = {d: count(d) for d in ("cpu", "cuda")}
                y, _ = self.normalize(self.gpu, x, "float32", gamma, None, False,
                                      f"pick_{device}", device=device)
                self.assertLessEqual(max_error_per_row(y, want).max(), BOUND["float32"])
                after = {d: count(d) for d in ("cpu", "cuda")}
                other = "cpu" if series == "cuda" else "cuda"
                self.assertEqual(after[series], before[series] + 1)
                self.assertEqual(after[other], before[other])
        # The CPU server refuses DEVICE_CUDA with FAILED_PRECONDITION.
        np.save(self.path("pick_x.npy"), x)
        run = subprocess.run([NORMCTL, f"--server=127.0.0.1:{self.cpu.grpc_port}",
                              f"--input={self.path('pick_x.npy')}", "--device=cuda"],
                             capture_output=True, text=True, timeout=60)
        self.assertNotEqual(run.returncode, 0)
        self.assertIn("FAILED_PRECONDITION", run.stderr)
        self.assertIn("CUDA", run.stderr)


def gpu_usable(binary):
    """(True, "") if normserve starts with --device=cuda, else (False, why)."""
    try:
        with LiveServer(binary, "--device=cuda"):
            return True, ""
    except RuntimeError as e:
        return False, str(e)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    SERVER, NORMCTL = sys.argv[1], sys.argv[2]
    NORMBENCH = sys.argv[3] if len(sys.argv) > 3 else None
    ok, why = gpu_usable(SERVER)
    if not ok:
        print(f"gpu_server_test: skipped: no usable CUDA device ({why.strip()})")
        sys.exit(SKIP_CODE)
    result = unittest.main(argv=[sys.argv[0], "-v"], exit=False).result
    sys.exit(0 if result.wasSuccessful() else 1)

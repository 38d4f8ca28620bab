#!/usr/bin/env python3
"""Triton's perf_analyzer drives normserve over the Open Inference Protocol
(gRPC, unary and streaming) at a few concurrency levels: it runs to the
end, reports every level, and no call fails on the server.

Usage: perf_analyzer_test.py SERVER_BINARY PERF_ANALYZER
"""
import csv
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import unittest
import urllib.request

from live_server import LiveServer

SERVER = PERF_ANALYZER = None


def handled(body, method):
    """grpc_server_handled_total of one OIP method, by status code, for the
    codes it answered with (the server exports every code from the start,
    at 0)."""
    codes = {}
    for line in body.splitlines():
        if (line.startswith("grpc_server_handled_total{")
                and 'grpc_service="inference.GRPCInferenceService"' in line
                and f'grpc_method="{method}"' in line):
            code = re.search(r'grpc_code="([A-Z_]+)"', line).group(1)
            codes[code] = codes.get(code, 0) + float(line.rsplit(" ", 1)[1])
    return {code: n for code, n in codes.items() if n > 0}


class PerfAnalyzerTest(unittest.TestCase):
    def test_perf_analyzer_runs_clean(self):
        rng = random.Random(1)
        with tempfile.TemporaryDirectory() as tmp, LiveServer(SERVER) as server:
            data = os.path.join(tmp, "input.json")
            with open(data, "w") as f:
                # Only "input": perf_analyzer leaves the optional inputs out.
                json.dump({"data": [{"input": {"content": [rng.gauss(0, 1) for _ in range(768)],
                                               "shape": [1, 768]}}]}, f)
            for extra, levels in (([], "1:4:3"), (["--streaming"], "2")):
                report = os.path.join(tmp, "report.csv")
                run = subprocess.run(
                    [PERF_ANALYZER, "-m", "default", "-i", "grpc", "-u", server.target,
                     "--input-data", data, "--concurrency-range", levels,
                     "--measurement-interval", "500", "--stability-percentage", "100",
                     "--max-trials", "10", "-f", report, *extra],
                    capture_output=True, text=True, timeout=300)
                self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
                with open(report) as f:
                    rows = list(csv.DictReader(f))
                want = [1, 4] if levels == "1:4:3" else [2]
                # perf_analyzer orders the rows by throughput, not by level.
                self.assertEqual(sorted(int(r["Concurrency"]) for r in rows), want)
                for r in rows:
                    self.assertGreater(float(r["Inferences/Second"]), 0)
            body = urllib.request.urlopen(
                f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
            unary = handled(body, "ModelInfer")
            self.assertGreater(unary.pop("OK", 0), 0)
            self.assertEqual(unary, {}, "unary calls that failed")
            # perf_analyzer ends its streams by cancelling them.
            streams = handled(body, "ModelStreamInfer")
            self.assertLessEqual(set(streams), {"OK", "CANCELLED"})

if __name__ == "__main__":
    SERVER, PERF_ANALYZER = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)

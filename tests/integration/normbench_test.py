#!/usr/bin/env python3
"""normbench against the real server: a short sweep in both modes stops by
itself and reports sane JSON (every step answered, no errors).

Usage: normbench_test.py SERVER_BINARY NORMBENCH_BINARY
"""
import json
import re
import subprocess
import sys
import unittest

SERVER = NORMBENCH = None


class NormbenchTest(unittest.TestCase):
    def test_sweep_reports_every_step(self):
        server = subprocess.Popen([SERVER, "--grpc_port=0", "--metrics_port=0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            m = re.search(r"grpc=[^ ]+:(\d+) metrics=[^ ]+:(\d+)", server.stdout.readline())
            port, metrics = m.group(1), m.group(2)
            for mode in ("unary", "stream"):
                run = subprocess.run([NORMBENCH, f"--server=127.0.0.1:{port}", f"--mode={mode}",
                                      "--concurrency=1:4:x2", "--duration_s=0.5", "--warmup_s=0.1",
                                      "--shape=2,768", "--json",
                                      f"--metrics=127.0.0.1:{metrics}"],
                                     capture_output=True, text=True, timeout=60)
                self.assertEqual(run.returncode, 0, run.stderr)
                steps = [json.loads(line) for line in run.stdout.splitlines()]
                self.assertEqual([s["concurrency"] for s in steps], [1, 2, 4])
                for s in steps:
                    self.assertEqual(s["errors"], 0)
                    self.assertGreater(s["requests"], 0)
                    self.assertAlmostEqual(s["rows_per_s"], 2 * s["requests_per_s"], delta=1)
                    self.assertLessEqual(s["p50_ms"], s["p99_ms"])
                    self.assertLessEqual(s["p99_ms"], s["max_ms"])
                    # The server-side stages, from /metrics, fit inside the
                    # client's view of the call.
                    self.assertGreater(s["server_end_to_end_ms"], 0)
                    self.assertGreaterEqual(s["server_end_to_end_ms"], s["server_queue_ms"])
                    self.assertLess(s["server_end_to_end_ms"], s["max_ms"])
            bad = subprocess.run([NORMBENCH, "--concurrency=0:x"], capture_output=True, text=True)
            self.assertEqual(bad.returncode, 2)
        finally:
            server.terminate()
            self.assertEqual(server.wait(timeout=30), 0)
            server.stdout.close()


if __name__ == "__main__":
    SERVER, NORMBENCH = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)

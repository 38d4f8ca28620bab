#!/usr/bin/env python3
"""normbench against the real server: a short sweep in both modes stops by
itself and reports sane JSON (every step answered, no errors); its request
count matches the server's grpc_server_handled_total; and the open-loop
mode keeps its schedule; --connections opens that many TCP connections;
the server's process_* metrics and normbench's server CPU column agree with
the server's /proc entries.

Usage: normbench_test.py SERVER_BINARY NORMBENCH_BINARY
"""
import json
import os
import re
import subprocess
import urllib.request
import sys
import tempfile
import time
import unittest

from live_server import LiveServer

SERVER = NORMBENCH = None


def proc_cpu_seconds(pid):
    """User and system CPU time of process `pid`, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # proc(5) fields 14 and 15; fields[0] is field 3 (the state).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def established_to(port):
    """Established TCP connections whose local port is `port` (the server's
    side of each connection), from /proc/net/tcp and tcp6."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)  # the header
                for line in f:
                    fields = line.split()
                    local, state = fields[1], fields[3]
                    if state == "01" and int(local.rsplit(":", 1)[1], 16) == port:
                        count += 1
        except FileNotFoundError:
            pass
    return count


class NormbenchTest(unittest.TestCase):
    def test_sweep_reports_every_step(self):
        with LiveServer(SERVER) as server:
            port, metrics = server.grpc_port, server.metrics_port
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
                    # The server's CPU: some, and no more than the cores.
                    self.assertGreater(s["server_cpu_cores"], 0)
                    self.assertLessEqual(s["server_cpu_cores"], os.cpu_count() + 0.5)
            bad = subprocess.run([NORMBENCH, "--concurrency=0:x"], capture_output=True, text=True)
            self.assertEqual(bad.returncode, 2)

    def test_request_count_matches_the_server(self):
        with LiveServer(SERVER) as server:
            run = subprocess.run([NORMBENCH, f"--server={server.target}", "--concurrency=3",
                                  "--requests=40", "--warmup_s=0", "--json", "--metrics="],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(run.returncode, 0, run.stderr)
            step = json.loads(run.stdout)
            self.assertEqual(step["requests"], 120)
            # The server counts a call when gRPC is done with it, which can
            # be just after the client has its answer: read until it agrees.
            for _ in range(50):
                body = urllib.request.urlopen(
                    f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
                handled = re.search(r'grpc_server_handled_total\{grpc_code="OK",'
                                    r'grpc_method="Normalize",[^}]*\} (\S+)', body)
                self.assertIsNotNone(handled, body)
                if float(handled.group(1)) >= step["requests"]:
                    break
                time.sleep(0.1)
            self.assertEqual(float(handled.group(1)), step["requests"])

    def test_open_loop_keeps_its_schedule(self):
        with LiveServer(SERVER) as server:
            for arrival in ("constant", "poisson"):
                run = subprocess.run([NORMBENCH, f"--server={server.target}",
                                      "--request_rate=200:400:x2", f"--arrival={arrival}",
                                      "--duration_s=1", "--warmup_s=0.1", "--json",
                                      f"--metrics=127.0.0.1:{server.metrics_port}"],
                                     capture_output=True, text=True, timeout=60)
                self.assertEqual(run.returncode, 0, run.stderr)
                steps = [json.loads(line) for line in run.stdout.splitlines()]
                self.assertEqual([s["target_rate"] for s in steps], [200, 400])
                for s in steps:
                    self.assertEqual(s["errors"], 0)
                    # The schedule, not the server, sets the pace.
                    self.assertAlmostEqual(s["requests"], s["target_rate"], delta=0.3 * s["target_rate"])
                    self.assertAlmostEqual(s["requests_per_s"], s["target_rate"], delta=0.3 * s["target_rate"])
            bad = subprocess.run([NORMBENCH, "--request_rate=100", "--mode=stream"],
                                 capture_output=True, text=True)
            self.assertEqual(bad.returncode, 2)


    def test_rows_are_the_models_normalized_groups(self):
        with tempfile.TemporaryDirectory() as tmp:
            config = os.path.join(tmp, "models.pbtxt")
            with open(config, "w") as f:
                f.write('models { name: "pair" normalized_shape: [4, 8] }\n')
            with LiveServer(SERVER, f"--model_config={config}") as server:
                run = subprocess.run([NORMBENCH, f"--server={server.target}", "--model=pair",
                                      "--shape=3,4,8", "--concurrency=1", "--duration_s=0.3",
                                      "--warmup_s=0", "--json", "--metrics="],
                                     capture_output=True, text=True, timeout=60)
                self.assertEqual(run.returncode, 0, run.stderr)
                step = json.loads(run.stdout)
                self.assertEqual(step["errors"], 0)
                # 3 groups of [4, 8] a request, not 12 rows of 8.
                self.assertAlmostEqual(step["rows_per_s"], 3 * step["requests_per_s"], delta=1)

    def test_a_step_without_answers_exits_1_and_missing_metrics_read_null(self):
        with LiveServer(SERVER) as server:
            run = subprocess.run([NORMBENCH, f"--server={server.target}", "--model=nosuch",
                                  "--concurrency=1", "--duration_s=0.3", "--warmup_s=0",
                                  "--json", "--metrics=127.0.0.1:1"],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
            self.assertIn("normbench: step 1 got no answer (errors: NOT_FOUND=", run.stderr)
            step = json.loads(run.stdout)
            self.assertEqual(step["requests"], 0)
            self.assertGreater(step["errors"], 0)
            for column in ("server_queue_ms", "server_compute_ms", "server_end_to_end_ms",
                           "server_cpu_cores"):
                self.assertIsNone(step[column])

    def test_process_metrics_are_the_servers_own(self):
        # /metrics' process_* families against the server process's /proc
        # entries, read here (before and after each scrape where they move),
        # and normbench's server CPU column against the server's CPU time
        # over the whole run.
        with LiveServer(SERVER) as server:
            pid = server.proc.pid
            started = time.time()
            cpu_before = proc_cpu_seconds(pid)
            run = subprocess.run([NORMBENCH, f"--server={server.target}", "--concurrency=2",
                                  "--duration_s=1", "--warmup_s=0.1", "--shape=16,1024", "--json",
                                  f"--metrics=127.0.0.1:{server.metrics_port}"],
                                 capture_output=True, text=True, timeout=60)
            cpu_after = proc_cpu_seconds(pid)
            self.assertEqual(run.returncode, 0, run.stderr)
            step = json.loads(run.stdout)
            step_cpu = step["server_cpu_cores"] * step["seconds"]
            self.assertGreater(step_cpu, 0.05 * step["seconds"])
            self.assertLessEqual(step_cpu, cpu_after - cpu_before + 0.05)

            low = proc_cpu_seconds(pid)
            body = urllib.request.urlopen(
                f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
            high = proc_cpu_seconds(pid)
            value = lambda name: float(re.search(rf"^{name} (\S+)$", body, re.M).group(1))
            self.assertIn("# TYPE process_cpu_seconds_total counter", body)
            self.assertGreaterEqual(value("process_cpu_seconds_total"), low - 1e-9)
            self.assertLessEqual(value("process_cpu_seconds_total"), high + 1e-9)
            self.assertGreaterEqual(value("process_cpu_seconds_total"), cpu_after)
            with open(f"/proc/{pid}/statm") as f:
                size_pages, resident_pages = (int(v) for v in f.read().split()[:2])
            page = os.sysconf("SC_PAGE_SIZE")
            self.assertAlmostEqual(value("process_resident_memory_bytes"),
                                   resident_pages * page, delta=0.2 * resident_pages * page)
            self.assertAlmostEqual(value("process_virtual_memory_bytes"),
                                   size_pages * page, delta=0.2 * size_pages * page)
            # Started when LiveServer launched it (before `started`).
            self.assertLessEqual(value("process_start_time_seconds"), started + 1)
            self.assertGreater(value("process_start_time_seconds"), started - 30)
            # Its descriptors, give or take the scrape's own connection.
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            self.assertAlmostEqual(value("process_open_fds"), fds, delta=2)
            with open(f"/proc/{pid}/limits") as f:
                soft = re.search(r"^Max open files\s+(\S+)", f.read(), re.M).group(1)
            if soft != "unlimited":
                self.assertEqual(value("process_max_fds"), int(soft))

    def test_connections_are_separate_tcp_connections(self):
        # The server's established connections, read from the kernel's
        # socket tables while normbench runs, for each --connections (the
        # default 1, and 3), closed loop and open loop, native and OIP: the
        # calls of a step spread over that many connections.
        with LiveServer(SERVER) as server:
            for connections, extra in ((1, ["--concurrency=4"]),
                                       (3, ["--concurrency=4"]),
                                       (3, ["--concurrency=4", "--protocol=oip"]),
                                       (3, ["--request_rate=300"])):
                bench = subprocess.Popen(
                    [NORMBENCH, f"--server={server.target}", f"--connections={connections}",
                     "--duration_s=1.5", "--warmup_s=0.2", "--json", "--metrics=", *extra],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                seen = 0
                while bench.poll() is None:
                    seen = max(seen, established_to(server.grpc_port))
                    time.sleep(0.05)
                out, err = bench.communicate(timeout=60)
                self.assertEqual(bench.returncode, 0, err)
                step = json.loads(out)
                self.assertEqual(step["errors"], 0, (connections, extra))
                self.assertGreater(step["requests"], 0)
                self.assertEqual(seen, connections, (connections, extra))
            bad = subprocess.run([NORMBENCH, "--connections=0"], capture_output=True, text=True)
            self.assertEqual(bad.returncode, 2)
            self.assertIn("--connections", bad.stderr)

    def test_a_stream_broken_by_the_server_counts_once_per_caller(self):
        server = LiveServer(SERVER).__enter__()
        bench = subprocess.Popen([NORMBENCH, f"--server={server.target}", "--mode=stream",
                                  "--concurrency=2", "--duration_s=2", "--warmup_s=0.1",
                                  "--json", "--metrics="],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        server.proc.kill()  # mid-step, streams open
        server.proc.wait()
        server.proc.stdout.close()
        out, err = bench.communicate(timeout=60)
        self.assertEqual(bench.returncode, 0, err)  # the step had answers
        step = json.loads(out)
        self.assertGreater(step["requests"], 0)
        # One error per caller: its stream's end, not every write after it.
        self.assertEqual(step["errors"], 2, out)


if __name__ == "__main__":
    SERVER, NORMBENCH = sys.argv[1], sys.argv[2]
    unittest.main(argv=sys.argv[:1], verbosity=2)

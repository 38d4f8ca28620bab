#!/usr/bin/env python3
"""The server's throughput and latency against its ceilings, measured in
one run on loopback (client and servers share the machine):

  1. the ceiling: bench/echo_server (normserve with the math replaced by a
     copy) for 1x768 and 64x4096 float32 requests;
  2. the alternative: bench/python_baseline_server.py (grpcio + NumPy);
  3. batching: --max_queue_delay_us 0 against tuned values, closed loop at
     concurrency 1..64 and open loop (Poisson arrivals);
  4. Triton's perf_analyzer against normbench on the same OIP load, when
     bench/get_perf_analyzer.sh can make it run here: with client and
     server sharing the cores, and pinned to separate cores.

Writes CSVs, PNG plots (python3-matplotlib) and a Markdown summary with the
ratios to OUT/load_DATE/ and OUT/load_study_DATE.md.

Usage: run_load_study.py --build build [--duration_s 2] [--out bench/results]
"""
import argparse
import csv
import datetime
import io
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import urllib.request
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
from live_server import LiveServer  # noqa: E402

SMALL, LARGE = "1,768", "64,4096"


def normbench(build, server, extra, duration, prefix=()):
    cmd = [*prefix, os.path.join(build, "client", "normbench"), f"--server={server.target}",
           f"--metrics=127.0.0.1:{server.metrics_port}" if server.metrics_port else "--metrics=",
           f"--duration_s={duration}", "--warmup_s=0.5", "--csv", *extra]
    run = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900)
    # Server columns normbench could not read are empty.
    return [{k: float(v) if v != "" else None for k, v in row.items()}
            for row in csv.DictReader(io.StringIO(run.stdout))]


def sweep(args, name, command, flags, shape, load, extra=()):
    """Starts one server, runs normbench over `load`, returns the rows."""
    with LiveServer(command, *flags) as server:
        rows = normbench(args.build, server, [f"--shape={shape}", *load, *extra], args.duration_s)
    for r in rows:
        r["case"] = name
    print(f"  {name} {shape}: peak {max(r['requests_per_s'] for r in rows):.0f} req/s", flush=True)
    return rows


def write_csv(path, rows):
    keys = ["case"] + [k for k in rows[0] if k != "case"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in r.items()})


def plot(path, rows, x, title, throughput="requests_per_s", ylabel="requests/s"):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for case in dict.fromkeys(r["case"] for r in rows):
        pts = [r for r in rows if r["case"] == case]
        xs = [r[x] for r in pts]
        scale = 1e6 if throughput == "bytes_per_s" else 1
        a.plot(xs, [r[throughput] / scale for r in pts], marker="o", label=case)
        b.plot(xs, [r["p99_ms"] for r in pts], marker="o", label=case)
    for ax, label in ((a, ylabel), (b, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency" if x == "concurrency" else "offered requests/s")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    b.set_yscale("log")
    a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def peak(rows, case, key="requests_per_s"):
    return max(r[key] for r in rows if r["case"] == case)


def best_within(rows, case, p99_ms, key="requests_per_s"):
    """Highest throughput of `case` at a p99 no worse than p99_ms."""
    ok = [r[key] for r in rows if r["case"] == case and r["p99_ms"] <= p99_ms]
    return max(ok) if ok else 0.0


def table(rows, x):
    lines = [f"| case | {x} | requests/s | MB/s | p50 ms | p99 ms | server queue / compute / e2e ms |",
             "|---|---:|---:|---:|---:|---:|---|"]
    ms = lambda v: "n/a" if v is None else f"{v:.3f}"
    for r in rows:
        lines.append(f"| {r['case']} | {r[x]:.0f} | {r['requests_per_s']:.0f} | "
                     f"{r['bytes_per_s'] / 1e6:.1f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{ms(r['server_queue_ms'])} / {ms(r['server_compute_ms'])} / "
                     f"{ms(r['server_end_to_end_ms'])} |")
    return "\n".join(lines)


def served(server):
    """OIP ModelInfer calls the server has answered OK so far."""
    body = urllib.request.urlopen(
        f"http://127.0.0.1:{server.metrics_port}/metrics").read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("grpc_server_handled_total{")
               and 'grpc_method="ModelInfer"' in line and 'grpc_code="OK"' in line)


def client_cpu_us(run, server):
    """Runs `run()`; returns its result and the client CPU time (user +
    system, of child processes) per request the server answered meanwhile."""
    before, n0 = resource.getrusage(resource.RUSAGE_CHILDREN), served(server)
    result = run()
    after, n1 = resource.getrusage(resource.RUSAGE_CHILDREN), served(server)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result, 1e6 * cpu / max(1.0, n1 - n0)


def perf_analyzer_rows(args, levels, pinned):
    """perf_analyzer and normbench on the same OIP load. `pinned`: the
    server on CPU 0 (one compute thread) and each load generator on CPU 1,
    so that the client's CPU is not taken from the server."""
    got = subprocess.run(["bash", os.path.join(HERE, "get_perf_analyzer.sh"), args.build],
                         capture_output=True, text=True)
    if got.returncode != 0:
        return None, got.stderr.strip()
    pa = got.stdout.strip()
    server_cmd = [os.path.join(args.build, "server", "normserve")]
    server_flags, client = [], []
    if pinned:
        server_cmd = ["taskset", "-c", "0", *server_cmd]
        server_flags, client = ["--cpu_threads=1"], ["taskset", "-c", "1"]
    rows = []
    rng = random.Random(1)
    with tempfile.TemporaryDirectory() as tmp, LiveServer(server_cmd, *server_flags) as server:
        data = os.path.join(tmp, "input.json")
        with open(data, "w") as f:
            json.dump({"data": [{"input": {"content": [rng.gauss(0, 1) for _ in range(768)],
                                           "shape": [1, 768]}}]}, f)
        for c in levels:
            report = os.path.join(tmp, f"pa{c}.csv")
            _, pa_cpu = client_cpu_us(lambda: subprocess.run(
                [*client, pa, "-m", "default", "-i", "grpc", "-u", server.target,
                 "--input-data", data, "--concurrency-range", str(c),
                 "--measurement-interval", str(int(args.duration_s * 1000)),
                 "--stability-percentage", "25", "--max-trials", "10",
                 "-f", report], capture_output=True, text=True, check=True,
                timeout=600), server)
            with open(report) as f:
                r = next(csv.DictReader(f))
            nb, nb_cpu = client_cpu_us(lambda: normbench(
                args.build, server, ["--protocol=oip", f"--concurrency={c}",
                                     f"--shape={SMALL}"], args.duration_s, client)[0], server)
            rows.append({"concurrency": c,
                         "pa_rps": float(r["Inferences/Second"]),
                         "pa_p50_ms": float(r["p50 latency"]) / 1e3,
                         "pa_p99_ms": float(r["p99 latency"]) / 1e3,
                         "nb_rps": nb["requests_per_s"], "nb_p50_ms": nb["p50_ms"],
                         "nb_p99_ms": nb["p99_ms"],
                         "pa_cpu_us": pa_cpu, "nb_cpu_us": nb_cpu})
            print(f"  perf_analyzer c={c}{' pinned' if pinned else ''}: "
                  f"{rows[-1]['pa_rps']:.0f} vs normbench {rows[-1]['nb_rps']:.0f} req/s",
                  flush=True)
    return rows, ""


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            m = re.search(r"model name\s*:\s*(.+)", f.read())
            cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Linux {platform.release()}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--build", default="build")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--duration_s", type=float, default=2.0)
    parser.add_argument("--tuned_delay_us", type=int, nargs="+", default=[100, 500])
    args = parser.parse_args()
    args.build = os.path.abspath(args.build)
    date = datetime.date.today().isoformat()
    out = os.path.join(args.out, f"load_{date}")
    os.makedirs(out, exist_ok=True)
    normserve = os.path.join(args.build, "server", "normserve")
    echo = os.path.join(args.build, "bench", "echo_server")
    python = [sys.executable, os.path.join(HERE, "python_baseline_server.py")]
    stubs = [f"--stubs={os.path.join(args.build, 'python_stubs')}"]
    closed = ["--concurrency=1:64:x2"]

    print("1-2. ceilings and the Python baseline", flush=True)
    small = (sweep(args, "normserve", normserve, [], SMALL, closed)
             + sweep(args, "echo (ceiling)", echo, [], SMALL, closed)
             + sweep(args, "python grpcio+numpy", python, stubs, SMALL, closed))
    large_load = ["--concurrency=1:16:x2"]
    large = (sweep(args, "normserve", normserve, [], LARGE, large_load)
             + sweep(args, "echo (ceiling)", echo, [], LARGE, large_load)
             + sweep(args, "python grpcio+numpy", python, stubs, LARGE, large_load))

    print("3. batching", flush=True)
    batching = [dict(r, case="normserve delay 0") for r in small if r["case"] == "normserve"]
    for d in args.tuned_delay_us:
        batching += sweep(args, f"normserve delay {d} us", normserve,
                          [f"--max_queue_delay_us={d}"], SMALL, closed)
    peak_small = peak(small, "normserve")
    rates = f"--request_rate={max(500, int(peak_small / 16))}:{int(peak_small * 1.2)}:x2"
    open_loop = sweep(args, "normserve delay 0", normserve, [], SMALL, [rates])
    for d in args.tuned_delay_us:
        open_loop += sweep(args, f"normserve delay {d} us", normserve,
                           [f"--max_queue_delay_us={d}"], SMALL, [rates])

    print("4. perf_analyzer", flush=True)
    pa_runs = [("Client and server sharing both cores", False)]
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        pa_runs.append(("Server pinned to CPU 0 (--cpu_threads=1), each load generator "
                        "to CPU 1", True))
    pa_results = [(title, *perf_analyzer_rows(args, [1, 2, 4, 8], pinned))
                  for title, pinned in pa_runs]

    write_csv(os.path.join(out, "small_1x768.csv"), small)
    write_csv(os.path.join(out, "large_64x4096.csv"), large)
    write_csv(os.path.join(out, "batching_closed.csv"), batching)
    write_csv(os.path.join(out, "batching_open.csv"), open_loop)
    plot(os.path.join(out, "small_1x768.png"), small, "concurrency",
         "1x768 float32: normserve vs echo ceiling vs Python")
    plot(os.path.join(out, "large_64x4096.png"), large, "concurrency",
         "64x4096 float32 (1 MiB): normserve vs echo ceiling vs Python",
         throughput="bytes_per_s", ylabel="tensor MB/s")
    plot(os.path.join(out, "batching_closed.png"), batching, "concurrency",
         "1x768: max_queue_delay_us, closed loop")
    plot(os.path.join(out, "batching_open.png"), open_loop, "target_rate",
         "1x768: max_queue_delay_us, open loop (Poisson)")

    # The ratios the issue asks for.
    r_small = peak(small, "normserve") / peak(small, "echo (ceiling)")
    r_large = (peak(large, "normserve", "bytes_per_s")
               / peak(large, "echo (ceiling)", "bytes_per_s"))
    py_best = max((r for r in small if r["case"] == "python grpcio+numpy"),
                  key=lambda r: r["requests_per_s"])
    ours_at_py_p99 = best_within(small, "normserve", py_best["p99_ms"])
    r_python = ours_at_py_p99 / py_best["requests_per_s"]
    pyl_best = max((r for r in large if r["case"] == "python grpcio+numpy"),
                   key=lambda r: r["bytes_per_s"])
    r_python_large = (best_within(large, "normserve", pyl_best["p99_ms"], "bytes_per_s")
                      / pyl_best["bytes_per_s"])

    rel = os.path.relpath(out, args.out)
    md = [f"# Load study, {date}", "",
          f"Machine: {machine()}. Client (normbench) and server share it, on loopback.",
          f"Command: `python3 bench/run_load_study.py --build {os.path.relpath(args.build, REPO)} "
          f"--duration_s {args.duration_s}` (after `make build` and "
          "`bash deploy/install-bench-deps.sh`).",
          "Servers run with their default flags (--cpu_threads = cores, one batch worker, "
          "--max_queue_delay_us=0) unless a case says otherwise.", "",
          "## Ratios", "",
          "| measure | value | target |", "|---|---:|---:|",
          f"| normserve / echo peak requests/s, 1x768 fp32 | {r_small:.2f} | >= 0.90 |",
          f"| normserve / echo peak bytes/s, 64x4096 fp32 | {r_large:.2f} | >= 0.80 |",
          f"| normserve / Python at the Python server's best point (p99 <= "
          f"{py_best['p99_ms']:.2f} ms), 1x768 | {r_python:.1f}x | >= 5x |",
          f"| same, 64x4096 (p99 <= {pyl_best['p99_ms']:.1f} ms, bytes/s) | "
          f"{r_python_large:.1f}x | >= 5x |", "",
          "## 1x768 float32, closed loop", "",
          f"![1x768]({rel}/small_1x768.png)", "", table(small, "concurrency"), "",
          "## 64x4096 float32 (1 MiB requests), closed loop", "",
          f"![64x4096]({rel}/large_64x4096.png)", "", table(large, "concurrency"), "",
          "## Batching: max_queue_delay_us, closed loop", "",
          f"![batching]({rel}/batching_closed.png)", "", table(batching, "concurrency"), "",
          "## Batching: open loop, Poisson arrivals (latency from the scheduled send)", "",
          f"![open loop]({rel}/batching_open.png)", "", table(open_loop, "target_rate"), ""]
    md += ["## perf_analyzer (Triton) against normbench, same OIP load (1x768)", "",
           "Client CPU is the load generator's own user + system time per request "
           "the server answered during its run.", ""]
    for title, pa, pa_why in pa_results:
        md += [f"### {title}", ""]
        if pa is None:
            md += [f"Not run: {pa_why}", ""]
            continue
        md += ["| concurrency | perf_analyzer req/s | normbench req/s | perf_analyzer / "
               "normbench | perf_analyzer p50 / p99 ms | normbench p50 / p99 ms | "
               "client CPU µs/request: perf_analyzer / normbench |",
               "|---:|---:|---:|---:|---|---|---|"]
        for r in pa:
            md.append(f"| {r['concurrency']} | {r['pa_rps']:.0f} | {r['nb_rps']:.0f} | "
                      f"{r['pa_rps'] / r['nb_rps']:.2f} | {r['pa_p50_ms']:.3f} / "
                      f"{r['pa_p99_ms']:.3f} | {r['nb_p50_ms']:.3f} / {r['nb_p99_ms']:.3f} | "
                      f"{r['pa_cpu_us']:.0f} / {r['nb_cpu_us']:.0f} |")
        md.append("")
    path = os.path.join(args.out, f"load_study_{date}.md")
    with open(path, "w") as f:
        f.write("\n".join(md))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

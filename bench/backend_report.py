#!/usr/bin/env python3
"""The CUDA backend's benchmark as a Markdown table.

Reads the JSON of build/bench/cuda_backend_bench (or runs the benchmark
with --bench) and prints, per batch shape: the backend's GB/s with 4 copy
threads and with none, the copy threads' speed-up, each against one
thread's memcpy of the same bytes (`vs_host_copy`) and against pinned PCIe
copies both ways (`vs_pcie`, the ceiling of a path through host memory),
`vs_pcie` with 8 and 16 copy threads where the benchmark ran them (the
largest batches), and the CPU backend's GB/s on the same batches. Every figure of a row
comes from the same run. The table is also written to
OUT/cuda_backend_<date>.md.

Usage: bench/backend_report.py (--bench_json J | --bench BINARY
                                [--bench_args ARGS]) [--out DIR]
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

from report_file import publish

DTYPES = {0: "f32", 1: "f16", 2: "bf16"}


def load(path):
    """{(name, args tuple): benchmark entry} of a Google Benchmark JSON."""
    with open(path) as fh:
        data = json.load(fh)
    cases = {}
    for b in data.get("benchmarks", []):
        if (b.get("run_type", "iteration") != "iteration"
                or b.get("error_occurred")):
            continue
        parts = b["name"].split("/")
        args = tuple(int(p) for p in parts[1:] if p.isdigit())
        cases[(parts[0], args)] = b
    return data.get("context", {}), cases


def table(context, cases):
    def gbps(b):
        return b["bytes_per_second"] / 1e9 if b else None

    def f(v, fmt):
        return "n/a" if v is None else fmt.format(v)

    shapes = sorted({args[:3] for (name, args) in cases
                     if name == "BM_CudaBackend"})
    lines = [
        "| dtype | D | MiB in | GB/s, 4 copy threads | GB/s, none "
        "| speed-up | vs_host_copy (4 / none) | vs_pcie (4 / none) "
        "| vs_pcie (8 / 16) | PCIe GB/s | CPU backend GB/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for shape in shapes:
        four = cases.get(("BM_CudaBackend", shape + (4,)))
        none = cases.get(("BM_CudaBackend", shape + (0,)))
        eight = cases.get(("BM_CudaBackend", shape + (8,)))
        sixteen = cases.get(("BM_CudaBackend", shape + (16,)))
        cpu = cases.get(("BM_CpuBackend", shape))
        speedup = (gbps(four) / gbps(none)) if four and none else None

        def both(key, pair=(four, none)):
            return " / ".join(f(b.get(key) if b else None, "{:.2f}")
                              for b in pair)

        pcie = (four or none or {}).get("pcie_GBps")
        # 8 and 16 copy threads run on the largest batches only.
        more = ("–" if eight is None and sixteen is None
                else both("vs_pcie", (eight, sixteen)))
        dtype, d, mib = shape
        lines.append(
            f"| {DTYPES.get(dtype, dtype)} | {d} | {mib} "
            f"| {f(gbps(four), '{:.1f}')} | {f(gbps(none), '{:.1f}')} "
            f"| {f(speedup, '{:.2f}×')} | {both('vs_host_copy')} "
            f"| {both('vs_pcie')} | {more} "
            f"| {f(pcie, '{:.1f}')} "
            f"| {f(gbps(cpu), '{:.1f}')} |")
    machine = (f"{context.get('cuda_device', 'unknown device')}; "
               f"{context.get('num_cpus', '?')} CPUs")
    return "\n".join(lines), machine


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--bench_json", help="cuda_backend_bench's JSON")
    src.add_argument("--bench", help="cuda_backend_bench, to run")
    ap.add_argument("--bench_args", default="",
                    help="extra flags for --bench, one string")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()

    path = args.bench_json
    if args.bench:
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        run = subprocess.run(
            [args.bench, f"--benchmark_out={path}",
             "--benchmark_out_format=json", "--benchmark_format=console"]
            + shlex.split(args.bench_args),
            capture_output=True, text=True)
        sys.stderr.write(run.stderr)
        if run.returncode != 0:
            print(f"backend_report: {args.bench} exited {run.returncode}")
            return 1
        if "skipped:" in run.stderr:
            print("backend_report: skipped: the benchmark found no device")
            return 0
    context, cases = load(path)
    if not any(name == "BM_CudaBackend" for (name, _) in cases):
        print(f"backend_report: no BM_CudaBackend results in {path}")
        return 1
    body, machine = table(context, cases)
    publish("CUDA backend on whole batches", [
        f"- Machine: {machine}",
        "- Batches of 8 jobs with γ and β in pageable host memory, output "
        "in the input dtype; GB/s counts bytes in + out. Ratios compare best "
        "runs measured just before each case (1.0 = as fast as the "
        "reference).", "",
        body], args.out, "cuda_backend")
    return 0


if __name__ == "__main__":
    sys.exit(main())

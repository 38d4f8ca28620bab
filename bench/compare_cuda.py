#!/usr/bin/env python3
"""One-run GPU comparison: normserve's CUDA kernels vs copy and vs PyTorch.

On one GPU, in one run, for float32 and bfloat16 (and LayerNorm, RMSNorm
and the transformer's "add & norm", LayerNorm of x + residual that also
writes the sum) over D in {768, 1024, 4096, 8192, 16384} with 512 MiB of
input (rows that fill the chip many times over):
  - normserve's kernels and a device-to-device copy of the same bytes, from
    build/bench/normalize_cuda_bench (Google Benchmark, CUDA events);
  - torch.nn.functional.layer_norm / rms_norm (add & norm: torch.add into
    the sum, then layer_norm of it, as eager PyTorch has no fused kernel)
    and torch's own device copy (Tensor.copy_) on the same shapes, timed
    with CUDA events;
and prints a Markdown table of bandwidths (bytes read + written per second)
and ratios, also written to bench/results/cuda_compare_<date>.md with the
device name and the command.

Usage: bench/compare_cuda.py [--build build-cuda] [--dims 768,...]
                             [--bench_json J] [--baseline_json J]
Needs a CUDA device, a CUDA build (`make build-cuda` or cmake with nvcc) and
a PyTorch with CUDA importable by --python. Without a device it says why and
exits 0.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import textwrap

from report_file import publish

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUT_BYTES = 512 << 20  # as normalize_cuda_bench's kBytes
DTYPES = {"f32": (0, 4), "bf16": (2, 2)}  # name -> (DType enum, bytes)
# name -> the kind argument of BM_CudaNormalize; add & norm is
# BM_CudaAddNorm (no kind argument).
KINDS = {"layer_norm": 0, "rms_norm": 1, "add_layer_norm": None}
# Arrays each kind reads or writes, of rows × D elements: x and y; x, the
# residual, y and the sum.
ARRAYS = {"layer_norm": 2, "rms_norm": 2, "add_layer_norm": 4}

# Runs inside --python: times torch on the GPU with CUDA events (median of
# `iters` calls after warm-up), γ and β in the input dtype as users call it.
# argv[1] is a JSON list of [dtype, kind, d, rows]; one process serves every
# case (a torch import and CUDA context per case would cost seconds each).
TORCH_SNIPPET = textwrap.dedent("""
    import json, sys, torch
    import torch.nn.functional as F
    cases, iters = json.loads(sys.argv[1]), int(sys.argv[2])
    dev = torch.device("cuda")
    def median(fn):
        for _ in range(3): fn()
        times = []
        for _ in range(iters):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record(); fn(); e.record(); e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        times.sort(); return times[len(times) // 2]
    results = []
    for dtype, kind, d, rows in cases:
        t = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
        x = torch.randn(rows, d, device=dev).to(t)
        w = torch.randn(d, device=dev).to(t)
        b = torch.randn(d, device=dev).to(t)
        y = torch.empty_like(x)
        if kind == "layer_norm":
            run = lambda: F.layer_norm(x, (d,), w, b, 1e-5)
        elif kind == "add_layer_norm":
            r = torch.randn(rows, d, device=dev).to(t)
            s = torch.empty_like(x)
            def run():
                torch.add(x, r, out=s)
                return F.layer_norm(s, (d,), w, b, 1e-5)
        elif hasattr(F, "rms_norm"):
            run = lambda: F.rms_norm(x, (d,), w, 1e-5)
        else:
            run = None
        results.append({"seconds": median(run) if run else None,
                        "copy_seconds": median(lambda: y.copy_(x))})
        x = y = r = s = run = None
        torch.cuda.empty_cache()
    print(json.dumps({"results": results, "version": torch.__version__,
                      "device": torch.cuda.get_device_name(0)}))
""")


def torch_status(python):
    """(ok, reason or device name) for PyTorch with CUDA under `python`."""
    probe = ("import torch; print(torch.cuda.get_device_name(0) "
             "if torch.cuda.is_available() else 'NO')")
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True,
                             text=True, timeout=300)
    except OSError as e:
        return False, f"cannot run {python}: {e}"
    if out.returncode != 0:
        return False, "PyTorch is not importable: " + out.stderr.strip()[-200:]
    name = out.stdout.strip()
    if name == "NO":
        return False, "no CUDA device visible to PyTorch"
    return True, name


def normserve_results(build, dims, bench_json=None):
    """{(dtype, kind, d): (GB/s, vs_copy, copy GB/s)} from the CUDA bench
    (run now, or read from its earlier --benchmark_out JSON)."""
    if bench_json:
        with open(bench_json) as fh:
            report = json.load(fh)
    else:
        binary = os.path.join(build, "bench", "normalize_cuda_bench")
        if not os.path.exists(binary):
            sys.exit(f"compare_cuda: {binary} is missing: build with CUDA first")
        enums = "|".join(str(v[0]) for v in DTYPES.values())
        dim_re = "|".join(str(d) for d in dims)
        filt = f"BM_Cuda(Copy|Normalize|AddNorm)/({enums})/.*/?({dim_re})/"
        out = subprocess.run([binary, "--benchmark_format=json",
                              f"--benchmark_filter={filt}"],
                             capture_output=True, text=True, check=True)
        if not out.stdout.strip():
            sys.exit("compare_cuda: the CUDA bench ran nothing: "
                     + out.stderr.strip())
        report = json.loads(out.stdout)
    copies, results = {}, {}
    for b in report["benchmarks"]:
        args = [int(v) for v in re.findall(r"/(\d+)", b["name"])]
        gbps = b["bytes_per_second"] / 1e9
        if b["name"].startswith("BM_CudaCopy"):
            copies[(args[0], args[1])] = gbps
        elif b["name"].startswith("BM_CudaAddNorm"):
            results[(args[0], None, args[1])] = (gbps, b.get("vs_copy"))
        else:
            results[tuple(args)] = (gbps, b.get("vs_copy"))
    merged = {}
    for dtype, (enum, _) in DTYPES.items():
        for kind, kind_enum in KINDS.items():
            for d in dims:
                if (enum, kind_enum, d) in results:
                    gbps, vs_copy = results[(enum, kind_enum, d)]
                    merged[(dtype, kind, d)] = (gbps, vs_copy,
                                                copies.get((enum, d)))
    return merged


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build-cuda"))
    ap.add_argument("--python", default=sys.executable,
                    help="interpreter with PyTorch (CUDA build)")
    ap.add_argument("--dims", default="768,1024,4096,8192,16384,32768,65536")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--bench_json",
                    help="normalize_cuda_bench's --benchmark_out JSON to use "
                    "instead of running it")
    ap.add_argument("--baseline_json",
                    help="another build's normalize_cuda_bench JSON from the "
                    "same run (e.g. the commit before a kernel change): adds "
                    "its GB/s and this build's speed-up over it")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = ap.parse_args()
    dims = [int(d) for d in args.dims.split(",")]

    ok, device = torch_status(args.python)
    if not ok:
        print(f"compare_cuda: skipped: {device}")
        return 0
    ours = normserve_results(args.build, dims, args.bench_json)
    base = (normserve_results(None, dims, args.baseline_json)
            if args.baseline_json else {})

    cases = []
    for dtype, (_, size) in DTYPES.items():
        for kind in KINDS:
            for d in dims:
                if (dtype, kind, d) in ours:
                    cases.append((dtype, kind, d, INPUT_BYTES // (d * size)))
    out = subprocess.run([args.python, "-c", TORCH_SNIPPET, json.dumps(cases),
                          str(args.iters)],
                         capture_output=True, text=True, check=True)
    timed = json.loads(out.stdout)
    version = timed["version"]
    rows = []
    for (dtype, kind, d, n), t in zip(cases, timed["results"]):
        moved = ARRAYS[kind] * n * d * DTYPES[dtype][1] / 1e9
        gbps, vs_copy, copy_gbps = ours[(dtype, kind, d)]
        torch_gbps = moved / t["seconds"] if t["seconds"] else None
        copied = 2 * n * d * DTYPES[dtype][1] / 1e9  # x to y
        torch_copy = copied / t["copy_seconds"] if t["copy_seconds"] else None
        base_gbps = base.get((dtype, kind, d), (None,))[0]
        rows.append((dtype, kind, d, n, copy_gbps, gbps, vs_copy, torch_copy,
                     torch_gbps, base_gbps))

    def f(v, fmt):
        return "n/a" if v is None else fmt.format(v)

    lines = [
        f"- Device: {device}",
        f"- Command: `python3 bench/compare_cuda.py --dims {args.dims}`",
        f"- Input: {INPUT_BYTES >> 20} MiB per case, γ and β, ε = 1e-5, "
        "output in the input dtype. Bandwidth counts bytes read + written "
        "(add & norm: x, residual, y and the sum, for both; its copy moves "
        "x and y only).",
        f"- PyTorch {version}: F.layer_norm / F.rms_norm with γ/β in the "
        "input dtype, and Tensor.copy_ as its copy; medians of CUDA-event "
        "timings.", "",
        "| dtype | kind | D | rows | D2D copy GB/s | normserve GB/s "
        "| normserve / copy | torch copy GB/s | torch GB/s "
        "| normserve vs torch |"
        + (" baseline GB/s | vs baseline |" if base else ""),
        "|---|---|---|---|---|---|---|---|---|---|"
        + ("---|---|" if base else ""),
    ]
    if base:
        name = os.path.basename(args.baseline_json)
        lines.insert(3, f"- Baseline: `{name}`, run on the same device in "
                     "the same session.")
    for (dtype, kind, d, n, copy_gbps, gbps, vs_copy, torch_copy,
         torch_gbps, base_gbps) in rows:
        speedup = gbps / torch_gbps if torch_gbps else None
        line = (
            f"| {dtype} | {kind} | {d} | {n} | {f(copy_gbps, '{:.0f}')} "
            f"| {gbps:.0f} | {f(vs_copy, '{:.2f}')} "
            f"| {f(torch_copy, '{:.0f}')} | {f(torch_gbps, '{:.0f}')} "
            f"| {f(speedup, '{:.2f}×')} |")
        if base:
            gain = gbps / base_gbps if base_gbps else None
            line += f" {f(base_gbps, '{:.0f}')} | {f(gain, '{:.2f}×')} |"
        lines.append(line)
    publish("GPU normalization comparison", lines, args.out, "cuda_compare")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""One-run CPU comparison of LayerNorm implementations on DRAM-sized tensors.

For each dtype (float32, bfloat16), row length D and thread count, on the
same machine in the same run, times:
  - memcpy of the same bytes (the ceiling; Google Benchmark, our binary)
  - normserve's kernel (Google Benchmark, build/bench/normalize_bench)
  - oneDNN's layer normalization primitive (Debian libdnnl-dev)
  - PyTorch F.layer_norm: current PyTorch from PyPI, and Debian's 1.13
  - ONNX Runtime's LayerNormalization (a one-node model built with onnx)
and prints a Markdown table of times and ratios, also written to
bench/results/cpu_compare_<date>.md with the CPU model and the command.

Usage: bench/compare_cpu.py [--build build] [--threads 1,2] [--dims 768,...]
                            [--bytes 1073741824]
--bytes is the input's size: 1 GiB (the default) measures the DRAM regime,
262144 the regime of a server batch, whose input and output stay in cache
(it has to be a footprint that normalize_bench registers).
Run from the repository root after `make build`. It installs its own
baselines (deploy/install-bench-deps.sh, a pinned virtual environment in
BUILD/bench-venv) and needs several GiB of free memory.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1 << 30

# Timing snippet run inside the PyTorch / ONNX Runtime interpreters: median
# of `iters` calls after one warm-up call, output allocated by the library
# (as users call it).
TORCH_SNIPPET = textwrap.dedent("""
    import json, sys, time, torch
    dtype, d, rows, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(threads)
    t = {"f32": torch.float32, "bf16": torch.bfloat16}[dtype]
    x = torch.randn(rows, d).to(t)
    w = torch.full((d,), 1.5, dtype=t); b = torch.full((d,), 0.25, dtype=t)
    times = []
    with torch.no_grad():
        for i in range(iters + 1):
            t0 = time.perf_counter(); y = torch.nn.functional.layer_norm(x, (d,), w, b, 1e-5); t1 = time.perf_counter()
            del y
            if i: times.append(t1 - t0)
    times.sort(); print(json.dumps({"seconds": times[len(times) // 2], "version": torch.__version__}))
""")

ORT_SNIPPET = textwrap.dedent("""
    import json, sys, time, numpy as np, onnx, onnxruntime as ort
    from onnx import helper, TensorProto
    dtype, d, rows, threads, iters = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    if dtype != "f32":
        print(json.dumps({"seconds": None})); sys.exit(0)
    node = helper.make_node("LayerNormalization", ["x", "w", "b"], ["y"], axis=-1, epsilon=1e-5)
    graph = helper.make_graph([node], "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, d])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, d])],
        [helper.make_tensor("w", TensorProto.FLOAT, [d], np.full(d, 1.5, np.float32)),
         helper.make_tensor("b", TensorProto.FLOAT, [d], np.full(d, 0.25, np.float32))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    so = ort.SessionOptions(); so.intra_op_num_threads = threads; so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((rows, d), dtype=np.float32)
    times = []
    for i in range(iters + 1):
        t0 = time.perf_counter(); y = sess.run(None, {"x": x}); t1 = time.perf_counter()
        del y
        if i: times.append(t1 - t0)
    times.sort(); print(json.dumps({"seconds": times[len(times) // 2], "version": ort.__version__}))
""")


def run_json(cmd, env=None):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def venv_python(build):
    venv = os.path.join(build, "bench-venv")
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, "requirements.stamp")
    req = os.path.join(REPO, "bench", "requirements-compare.txt")
    if not os.path.exists(stamp) or open(stamp).read() != open(req).read():
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "-r", req], check=True)
        with open(stamp, "w") as f:
            f.write(open(req).read())
    libs = glob.glob(os.path.join(venv, "lib", "python*", "site-packages", "nvidia", "*", "lib"))
    env = dict(os.environ, LD_LIBRARY_PATH=":".join(libs + ["/usr/local/cuda/lib64"]))
    return py, env


def gbench(build, dtype_index, d, nbytes, threads):
    binary = os.path.join(build, "bench", "normalize_bench")
    flt = (f"BM_Normalize/dtype:{dtype_index}/kind:0/D:{d}/bytes:{nbytes}/threads:{threads}/|"
           f"BM_Memcpy/bytes:{nbytes}/threads:{threads}/")
    out = subprocess.run([binary, f"--benchmark_filter={flt}", "--benchmark_format=json",
                          "--benchmark_min_time=0.5", "--benchmark_repetitions=3",
                          "--benchmark_report_aggregates_only=true"],
                         check=True, capture_output=True, text=True).stdout
    res = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        key = "memcpy" if b["name"].startswith("BM_Memcpy") else "normserve"
        res.setdefault(key, b["real_time"] * 1e-9)  # ns -> s (first memcpy row)
    return res


def size_text(nbytes):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift and nbytes % (1 << shift) == 0:
            return f"{nbytes >> shift} {unit}"
    return f"{nbytes} bytes"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--dims", default="768,1024,4096,16384")
    ap.add_argument("--bytes", type=int, default=GIB)
    ap.add_argument("--iters", type=int, default=None,
                    help="calls timed per baseline (default: 3 for 1 GiB, more for less)")
    ap.add_argument("--out", default=os.path.join(REPO, "bench", "results"))
    args = ap.parse_args()
    if args.iters is None:
        args.iters = max(3, min(2000, 3 * GIB // args.bytes))

    subprocess.run(["bash", os.path.join(REPO, "deploy", "install-bench-deps.sh")], check=True)
    subprocess.run(["cmake", "-S", REPO, "-B", args.build], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", args.build, "--target", "normalize_bench",
                    "onednn_layer_norm"], check=True, capture_output=True)
    py, env = venv_python(args.build)
    versions = {}
    rows_out = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for dtype, index, size in (("f32", 0, 4), ("bf16", 2, 2)):
            for d in [int(x) for x in args.dims.split(",")]:
                rows = args.bytes // (d * size)
                t = gbench(args.build, index, d, args.bytes, threads)
                omp = dict(os.environ, OMP_NUM_THREADS=str(threads))
                t["onednn"] = run_json([os.path.join(args.build, "bench", "onednn_layer_norm"),
                                        f"--dtype={dtype}", f"--d={d}", f"--rows={rows}",
                                        f"--iters={args.iters}"], env=omp)["seconds"]
                snippet = [dtype, str(d), str(rows), str(threads), str(args.iters)]
                r = run_json([py, "-c", TORCH_SNIPPET] + snippet, env=env)
                t["torch"], versions["torch"] = r["seconds"], r["version"]
                r = run_json(["/usr/bin/python3", "-c", TORCH_SNIPPET] + snippet)
                t["torch_debian"], versions["torch_debian"] = r["seconds"], r["version"]
                r = run_json([py, "-c", ORT_SNIPPET] + snippet, env=env)
                t["onnxruntime"] = r["seconds"]
                versions["onnxruntime"] = r.get("version", versions.get("onnxruntime"))
                rows_out.append((threads, dtype, d, rows, t))
                print(threads, dtype, d, {k: round(v * 1e3, 1) if v else None for k, v in t.items()},
                      flush=True)

    small = args.bytes < 64 << 20
    unit, scale = ("µs", 1e6) if small else ("ms", 1e3)

    def ms(v):
        return f"{v * scale:.1f}" if v else "n/a"

    def ratio(a, b):
        return f"{a / b:.2f}×" if a and b else "n/a"

    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), platform.processor())
    lines = [
        f"# CPU LayerNorm comparison{'' if args.bytes == GIB else ', ' + size_text(args.bytes)}, "
        f"{datetime.date.today().isoformat()}",
        "",
        f"- Machine: {cpu}, {os.cpu_count()} cores; kernel target chosen at run time.",
        f"- Command: `python3 bench/compare_cpu.py --threads {args.threads} --dims {args.dims}"
        + ("" if args.bytes == GIB else f" --bytes {args.bytes}") + "`",
        f"- Tensors: {size_text(args.bytes)} of input (rows × D), "
        + ("in cache, as a server batch; " if small else "DRAM-sized; ")
        + "LayerNorm with γ and β, ε = 1e-5;",
        f"  output in the input dtype. Times are medians ({args.iters} calls for the baselines);"
        " memcpy copies the same bytes.",
        f"- Baselines: PyTorch {versions.get('torch')} (PyPI) and {versions.get('torch_debian')} (Debian),",
        f"  ONNX Runtime {versions.get('onnxruntime')} (float32 only: its CPU kernel has no bfloat16),",
        "  oneDNN 2.6 (Debian). PyTorch and ONNX Runtime allocate their output on each call,",
        "  as their users call them; normserve and oneDNN write into preallocated buffers.",
        "",
        f"| threads | dtype | D | memcpy {unit} | normserve {unit} | normserve / memcpy | oneDNN {unit} | PyTorch {unit} | PyTorch 1.13 {unit} | ONNX RT {unit} | vs oneDNN | vs PyTorch | vs PyTorch 1.13 | vs ONNX RT |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for threads, dtype, d, rows, t in rows_out:
        n = t["normserve"]
        lines.append(
            f"| {threads} | {dtype} | {d} | {ms(t['memcpy'])} | {ms(n)} | {ratio(n, t['memcpy'])} | "
            f"{ms(t['onednn'])} | {ms(t['torch'])} | {ms(t['torch_debian'])} | {ms(t['onnxruntime'])} | "
            f"{ratio(t['onednn'], n)} | {ratio(t['torch'], n)} | {ratio(t['torch_debian'], n)} | "
            f"{ratio(t['onnxruntime'], n)} |")
    lines.append("")
    lines.append("Ratios `vs X` are X's time / normserve's time (higher is better for normserve).")
    text = "\n".join(lines) + "\n"
    print(text)
    os.makedirs(args.out, exist_ok=True)
    stem = "cpu_compare" if args.bytes == GIB else f"cpu_compare_{size_text(args.bytes).replace(' ', '')}"
    path = os.path.join(args.out, f"{stem}_{datetime.date.today().isoformat()}.md")
    with open(path, "w") as f:
        f.write(text)
    print("wrote", path)


if __name__ == "__main__":
    main()

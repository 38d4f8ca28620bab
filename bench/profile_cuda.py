#!/usr/bin/env python3
"""Hardware counters of the CUDA kernels, per element, with Nsight Compute.

The staged kernels have been bound by instruction issue (bench/results/
cuda_2026-11-25/, cuda_2026-11-26/), and bench/cuda_sass_path.py predicts
their instructions per element from the machine code. This measures what
the GPU issued: for one launch of each case of bench/normalize_cuda_bench
(512 MiB of input, γ and β), ncu's thread and warp instructions divided by
the input elements, the issue rate per scheduler, DRAM throughput and
occupancy; and where the warps wait: eligible warps per scheduler and
cycle, L1/shared-memory throughput, and the share of the warps' active
cycles spent stalled for each reason ncu tells apart (long scoreboard:
waiting on global or local memory; short scoreboard: shared memory, MUFU,
shuffles; wait: fixed latency; barrier; MIO and LG throttle: the
shared-memory and global load/store queues full; ...). It writes
ncu_kernels.md (and each case's raw CSV) to --out.

  python3 bench/profile_cuda.py --bench build/bench/normalize_cuda_bench \\
      --out build/gpu-checks

Needs ncu (Nsight Compute) on PATH, or --ncu, and a GPU whose counters the
user may read.
"""
import argparse
import csv
import os
import re
import shutil
import subprocess
import sys

# Must match bench/normalize_cuda_bench.cc (kBytes).
INPUT_BYTES = 512 << 20
DTYPE_BYTES = {"f32": 4, "f16": 2, "bf16": 2}

BASE_METRICS = [
    ("thread_inst", "smsp__thread_inst_executed.sum"),
    ("warp_inst", "smsp__inst_executed.sum"),
    ("issue", "smsp__issue_active.avg.per_cycle_active"),
    ("dram_pct", "dram__throughput.avg.pct_of_peak_sustained_elapsed"),
    ("occupancy_pct", "sm__warps_active.avg.pct_of_peak_sustained_active"),
    ("duration", "gpu__time_duration.sum"),
]
# Warp state: the share (%) of the warps' active cycles stalled for each
# reason, and "selected" (issuing); the stalls ncu counts but that do not
# arise in these kernels (texture, sleeping, membar, ...) are left out.
STALLS = [
    ("long scoreboard", "long_scoreboard"),
    ("short scoreboard", "short_scoreboard"),
    ("wait", "wait"),
    ("barrier", "barrier"),
    ("MIO throttle", "mio_throttle"),
    ("LG throttle", "lg_throttle"),
    ("math pipe", "math_pipe_throttle"),
    ("branch", "branch_resolving"),
    ("no instruction", "no_instruction"),
    ("dispatch", "dispatch_stall"),
    ("not selected", "not_selected"),
    ("selected", "selected"),
]
METRICS = BASE_METRICS + [
    ("eligible", "smsp__warps_eligible.avg.per_cycle_active"),
    ("l1_pct", "l1tex__throughput.avg.pct_of_peak_sustained_active"),
] + [("stall " + reason,
      "smsp__warp_issue_stalled_%s_per_warp_active.pct" % reason)
     for _, reason in STALLS]
METRIC = dict(METRICS)  # short name → ncu metric

# (label, benchmark filter, input dtype): the shapes of the README's table,
# the half-warp add & norm and the long rows (staged whole or streamed).
DEFAULT_CASES = [
    ("bf16 layer_norm 768", "BM_CudaNormalize/2/0/768/", "bf16"),
    ("bf16 layer_norm 1024", "BM_CudaNormalize/2/0/1024/", "bf16"),
    ("bf16 layer_norm 4096", "BM_CudaNormalize/2/0/4096/", "bf16"),
    ("bf16 layer_norm 16384", "BM_CudaNormalize/2/0/16384/", "bf16"),
    ("bf16 rms_norm 768", "BM_CudaNormalize/2/1/768/", "bf16"),
    ("f32 layer_norm 768", "BM_CudaNormalize/0/0/768/", "f32"),
    ("f32 layer_norm 4096", "BM_CudaNormalize/0/0/4096/", "f32"),
    ("f32 layer_norm 16384", "BM_CudaNormalize/0/0/16384/", "f32"),
    ("bf16 add & norm 4096", "BM_CudaAddNorm/2/4096/", "bf16"),
    ("bf16 add & norm 768", "BM_CudaAddNorm/2/768/", "bf16"),
    ("bf16 layer_norm 65536", "BM_CudaNormalize/2/0/65536/", "bf16"),
    ("f32 layer_norm 32768", "BM_CudaNormalize/0/0/32768/", "f32"),
    ("f32 layer_norm 65536", "BM_CudaNormalize/0/0/65536/", "f32"),
]


def number(text):
    """A metric value as ncu prints it ("1,234.5", "n/a")."""
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def parse_details_csv(text):
    """{kernel launch ID: {"kernel": name, "block": …, "grid": …, metric
    name: value}} from ncu's --csv output (the details page: one row per
    launch and metric). Lines before the header (ncu's own messages) are
    skipped."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith('"ID"')), None)
    if start is None:
        return {}
    launches = {}
    for row in csv.DictReader(lines[start:]):
        if not (row.get("ID") or "").isdigit() or not row.get("Metric Name"):
            continue  # a message of ncu's among the rows
        launch = launches.setdefault(row["ID"], {
            "kernel": row.get("Kernel Name", "?"),
            "block": row.get("Block Size", "?"),
            "grid": row.get("Grid Size", "?"),
        })
        launch[row["Metric Name"]] = number(row.get("Metric Value", ""))
        launch[row["Metric Name"] + " unit"] = row.get("Metric Unit", "")
    return launches


def short_kernel(name):
    """StagedWarpKernel<BF16, BF16, 6> from the demangled name (namespaces
    left out, also from enum arguments: StagedBlockKernel<F32, F32, true,
    (RowVariant)1>)."""
    m = re.search(r"(\w+Kernel)<(.*)>", name)
    if not m:
        return name
    args = re.sub(r"(\w+::)+", "", m.group(2))
    args = ", ".join(a.strip() for a in args.split(","))
    return "%s<%s>" % (m.group(1), args)


def cell(value, spec):
    """`value` as `spec` formats it, or "?" where ncu gave none."""
    return spec % value if value is not None else "?"


def row_for(label, launch, elements):
    def get(key):
        return launch.get(METRIC[key])

    def per_element(key):
        v = get(key)
        return "%.2f" % (v / elements) if v is not None else "?"

    def fmt(key, spec):
        return cell(get(key), spec)

    return "| %s | %s | %s × %s | %s | %s | %s | %s | %s | %s |" % (
        label, short_kernel(launch["kernel"]), launch["grid"],
        launch["block"], per_element("thread_inst"),
        per_element("warp_inst"), fmt("issue", "%.2f"),
        fmt("dram_pct", "%.0f %%"), fmt("occupancy_pct", "%.0f %%"),
        fmt("duration", "%.1f") + " " + launch.get(
            METRIC["duration"] + " unit", ""))


def refused_metrics(output):
    """True if ncu's output has an error line about a metric (a name its
    version does not know), not merely a failed run."""
    return any("metric" in line.lower() for line in output.splitlines()
               if line.startswith("==ERROR=="))


def stall_row_for(label, launch):
    """The warp-state table's row: eligible warps, L1 throughput, each
    stall's share of the active cycles, and the largest stall."""
    def get(key):
        return launch.get(METRIC[key])

    stalls = [(name, get("stall " + reason)) for name, reason in STALLS]
    waiting = [(v, name) for name, v in stalls
               if v is not None and name != "selected"]
    top = max(waiting)[1] if waiting else "?"
    cells = [label, short_kernel(launch["kernel"]),
             cell(get("eligible"), "%.2f"), cell(get("l1_pct"), "%.0f %%")]
    cells += [cell(v, "%.1f") for _, v in stalls]
    cells.append(top)
    return "| " + " | ".join(cells) + " |"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench", required=True,
                        help="build/bench/normalize_cuda_bench")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--ncu", default=shutil.which("ncu") or "ncu")
    parser.add_argument("--case", action="append", default=[],
                        help="LABEL=FILTER=DTYPE, instead of the defaults")
    args = parser.parse_args()
    cases = DEFAULT_CASES
    if args.case:
        cases = [tuple(c.split("=")) for c in args.case]
    os.makedirs(args.out, exist_ok=True)
    rows, stall_rows, failures = [], [], 0
    # The warp-state metrics are asked for until an ncu refuses them (a
    # metric its version does not know fails the whole run); the cases
    # are then profiled without them. A case that failed otherwise is
    # tried once more without them, and the later cases still ask.
    metrics = METRICS
    for label, bench_filter, dtype in cases:
        elements = INPUT_BYTES // DTYPE_BYTES[dtype]
        log = os.path.join(args.out, "ncu_%s.csv" % re.sub(r"\W+", "_",
                                                             label))

        def profile(names):
            cmd = [args.ncu, "--csv", "--log-file", log, "--clock-control",
                   "none", "--metrics", ",".join(m for _, m in names),
                   "-k", "regex:Kernel", "-c", "1", args.bench,
                   "--benchmark_filter=^" + bench_filter,
                   "--benchmark_min_time=0"]
            print("==", " ".join(cmd), flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True)
            text = open(log).read() if os.path.exists(log) else ""
            return done, text, parse_details_csv(text)

        done, text, launches = profile(metrics)
        if (done.returncode != 0 or not launches) and metrics != BASE_METRICS:
            refused = refused_metrics(done.stderr + "\n" + text)
            print("%s: ncu exit %d with the warp-state metrics%s; again "
                  "without them\n%s" % (
                      label, done.returncode,
                      " (refused)" if refused else "", done.stderr[-2000:]),
                  file=sys.stderr)
            done, text, launches = profile(BASE_METRICS)
            if refused and done.returncode == 0 and launches:
                metrics = BASE_METRICS
        if done.returncode != 0 or not launches:
            failures += 1
            print("%s: ncu exit %d, %d launches profiled\n%s\n%s" %
                  (label, done.returncode, len(launches), done.stderr[-2000:],
                   text[:2000]), file=sys.stderr)
            rows.append("| %s | (not profiled) | | | | | | | |" % label)
            stall_rows.append("| %s | (not profiled) |%s" %
                              (label, " |" * (len(STALLS) + 3)))
            continue
        for launch in launches.values():
            rows.append(row_for(label, launch, elements))
            stall_rows.append(stall_row_for(label, launch))
    table = "\n".join([
        "| case | kernel | grid × block | thread instructions / element "
        "| warp instructions / element | issue per scheduler (active) "
        "| DRAM | occupancy | duration |",
        "|---|---|---|---|---|---|---|---|---|",
    ] + rows)
    stall_table = "\n".join([
        "| case | kernel | eligible warps | L1 | "
        + " | ".join(name for name, _ in STALLS) + " | largest stall |",
        "|---" * (len(STALLS) + 5) + "|",
    ] + stall_rows)
    with open(os.path.join(args.out, "ncu_kernels.md"), "w") as f:
        f.write("# Kernel counters (ncu), one launch per case\n\n"
                "Input elements per case: %d MiB of input; "
                "instructions per input element.\n\n%s\n\n"
                "## Where the warps wait\n\n"
                "Eligible warps per scheduler and cycle; L1/shared-memory "
                "throughput (%% of peak); then the share (%%) of the warps' "
                "active cycles stalled for each reason, and issuing "
                "(selected).\n\n%s\n" %
                (INPUT_BYTES >> 20, table, stall_table))
    print(table)
    print(stall_table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

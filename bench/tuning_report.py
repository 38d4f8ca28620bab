#!/usr/bin/env python3
"""The staged kernels' launch choices against each other, as a Markdown table.

Reads the JSON of build/bench/normalize_cuda_bench run with
--benchmark_filter=BM_CudaTuning (tests/gpu_checks.sh's `tuning` step) and
prints one row per case (dtype, D; LayerNorm, add & norm or RMSNorm) with each
choice's bandwidth over a device-to-device copy measured just before it
(`vs_copy`): the register kernels (staging off), then the staged kernels
with 2–4 row buffers per row group and three grids (as many blocks as the
device holds, or about 8 or 32 rows per row group), and for add & norm its
residual beside x or read from memory, and for LayerNorm under the block
mapping γ and β read per row instead of held; and the default launch (the
buffers, grid, residual placement and weights StagedTuning picks). The last
columns name the fastest choice and give the default's fraction of it, so a
change of default can be read off one run. The table
is also written to OUT/cuda_tuning_<date>.md.

Usage: bench/tuning_report.py --bench_json J [--out DIR]
"""
import argparse
import json
import sys

from report_file import publish

DTYPES = {0: "f32", 1: "f16", 2: "bf16"}
# staged, kAutoStages, kAutoRowsPerGroup, residual auto, weights auto:
# StagedTuning{}
DEFAULT = (1, 0, -1, 0, 0)
# The default of runs from before kAutoStages, when it was 2 buffers.
OLD_DEFAULT = (1, 2, -1, 0, 0)
RESIDUAL = {0: "", 1: ", residual beside x", 2: ", residual from memory"}
WEIGHTS = {0: "", 1: ", γβ held", 2: ", γβ per row"}
# The benchmark's third argument.
NORMS = {0: "LayerNorm", 1: "add & LayerNorm", 2: "RMSNorm"}


def load(path):
    """(context, {(dtype, D, norm): {(staged, buffers, rows_per_group,
    residual, weights): vs_copy}}) from a Google Benchmark JSON; failed
    runs are left out. Runs from before the weights argument count as
    weights auto; in a case without a DEFAULT (a run from before
    kAutoStages), its 2-buffer default launch is the DEFAULT."""
    with open(path) as fh:
        data = json.load(fh)
    cases = {}
    for b in data.get("benchmarks", []):
        parts = b["name"].split("/")
        if (parts[0] != "BM_CudaTuning" or b.get("error_occurred")
                or b.get("run_type", "iteration") != "iteration"
                or "vs_copy" not in b):
            continue
        args = tuple(int(p) for p in parts[1:]
                     if p.lstrip("-").isdigit())
        if len(args) == 7:
            args += (0,)
        if len(args) != 8:
            continue
        cases.setdefault(args[:3], {})[args[3:]] = b["vs_copy"]
    for results in cases.values():
        if DEFAULT not in results and OLD_DEFAULT in results:
            results[DEFAULT] = results.pop(OLD_DEFAULT)
    return data.get("context", {}), cases


def choice_name(choice):
    staged, buffers, rows_per_group, residual, weights = choice
    if not staged:
        return "registers"
    if choice == DEFAULT:
        return "default"
    if rows_per_group == -1:
        grid = "default grid"
    else:
        grid = "resident" if rows_per_group == 0 else f"{rows_per_group} rows"
    return (f"{buffers} buf, {grid}{RESIDUAL.get(residual, residual)}"
            f"{WEIGHTS.get(weights, weights)}")


def table(cases):
    """The Markdown table of `cases` (as load() gives them)."""
    choices = sorted({c for results in cases.values() for c in results})
    lines = [
        "| case | " + " | ".join(choice_name(c) for c in choices)
        + " | best | default / best |",
        "|---|" + "---|" * (len(choices) + 2),
    ]
    for (dtype, d, norm), results in sorted(cases.items()):
        best = max(results, key=results.get)
        cells = []
        for c in choices:
            v = results.get(c)
            text = "n/a" if v is None else f"{v:.3f}"
            cells.append(f"**{text}**" if c == best else text)
        default = results.get(DEFAULT)
        ratio = "n/a" if default is None else f"{default / results[best]:.3f}"
        kind = NORMS.get(norm, norm)
        lines.append(f"| {DTYPES.get(dtype, dtype)} {kind} {d} | "
                     + " | ".join(cells)
                     + f" | {choice_name(best)} | {ratio} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench_json", required=True,
                    help="normalize_cuda_bench's JSON with BM_CudaTuning")
    ap.add_argument("--out", default=".")
    args = ap.parse_args()
    context, cases = load(args.bench_json)
    if not cases:
        print(f"tuning_report: no BM_CudaTuning results in {args.bench_json}")
        return 1
    publish("Staged launch choices", [
        f"- Machine: {context.get('cuda_device', 'unknown device')}",
        "- 512 MiB of input per case, γ and β, output in the input dtype. "
        "Each cell is `vs_copy`: the bandwidth over a device-to-device copy "
        "of the same bytes measured just before the case (1.0 = copy "
        "speed); the fastest choice of a row in bold.",
        "- Columns: staging off (the register kernels), or row buffers per "
        "row group and the grid (as many blocks as the device holds, or "
        "enough that each row group serves about that many rows); add & "
        "norm's residual beside x or from memory, where given.", "",
        table(cases)], args.out, "cuda_tuning")
    return 0


if __name__ == "__main__":
    sys.exit(main())

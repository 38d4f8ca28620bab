#!/usr/bin/env python3
"""Instructions on one path through a CUDA kernel's row loop, from its SASS.

The staged kernels are bound by issue, not by memory (bench/results/
cuda_2026-11-25/ and cuda_2026-11-26/), so the instructions a thread issues
per row are what to cut. This walks one iteration of a row loop (an
outermost loop of the kernel) along the branches a launch takes and counts
what it issues: predicated-off instructions included, as the schedulers
issue them. Which way each conditional branch goes is given, in the order
the walk meets them, by --decisions (t: taken, n: not taken); every
decision is printed with its address, so that it can be checked against
the listing (-v). It is a reading of the code, not a measurement: nothing
here says how well the schedulers issue.

  python3 bench/cuda_sass_path.py build/kernels/CMakeFiles/\\
      normserve_kernels_cuda.dir/cuda/normalize_cuda.cu.o \\
      --kernel 'StagedWarpKernel<BF16, BF16, 4, true' --loop 0 \\
      --decisions nnnntnnntttnntntnttt --elements 24

cuobjdump as for bench/cuda_sass_loops.py (whose SASS parsing this uses).
"""
import argparse
import collections
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_sass_loops import find_cuobjdump, kernels  # noqa: E402

_BRANCH = re.compile(r"^(@!?U?P\w+ )?BRA(\.\w+)? (?:!?U?P\w+, )?0x([0-9a-f]+)$")

# What the count is broken down into, by opcode.
_CLASSES = [
    ("shared loads", r"^LDS"),
    ("global loads", r"^LDG\b"),
    ("async copies", r"^LDGSTS"),
    ("stores", r"^(STG|STS)\b"),
    ("local (spills)", r"^(LDL|STL)\b"),
    ("shuffles, votes", r"^(SHFL|VOTE)"),
    ("float32", r"^(FADD|FMUL|FFMA|FSETP|FSEL|FMNMX|F2FP|HADD2)"),
    ("double", r"^(DADD|DMUL|DFMA|DSETP|F2F|MUFU)"),
    ("control", r"^(BRA|BSSY|BSYNC|BAR|WARPSYNC|DEPBAR|LDGDEPBAR|EXIT|CALL|NOP)"),
]


def row_loops(code):
    """Outermost loops closed by a conditional backward branch that read
    shared memory (a staged row; not the staging loops before the row
    loop): (index of the first instruction, index of the branch)."""
    index = {a: k for k, (a, _) in enumerate(code)}
    spans = []
    for k, (address, text) in enumerate(code):
        m = _BRANCH.match(text)
        if m and m.group(1) and ".DIV" not in (m.group(2) or ""):
            target = int(m.group(3), 16)
            if target < address and target in index:
                spans.append((index[target], k))
    return [s for s in spans
            if not any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in spans)
            and any(re.match(r"LDS\b", t) for _, t in code[s[0]:s[1] + 1])]


def walk(code, first, last, decisions):
    """The instructions from code[first] to the back-edge code[last] (or,
    with last None, to the first EXIT), and the decisions taken as
    (address, 't' or 'n')."""
    index = {a: k for k, (a, _) in enumerate(code)}
    path, taken, k = [], [], first
    while len(path) < 100000:
        address, text = code[k]
        path.append(text)
        if k == last:
            return path, taken
        m = _BRANCH.match(text)
        if m and ".DIV" not in (m.group(2) or ""):
            target = index[int(m.group(3), 16)]
            if m.group(1) is None:
                k = target
                continue
            d = decisions[len(taken)] if len(taken) < len(decisions) else "n"
            taken.append((address, d))
            if d == "t":
                k = target
                continue
        elif re.match(r"EXIT\b", text):
            if last is None:
                return path, taken
            break
        k += 1
    sys.exit("the walk left the loop without reaching its back-edge")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binary", help="object, cubin or executable")
    parser.add_argument("--kernel", required=True,
                        help="regex matching one kernel, e.g. "
                             "'StagedWarpKernel<BF16, BF16, 4, true'")
    parser.add_argument("--loop", type=int, default=0,
                        help="which row loop, in address order (default 0); "
                             "-1: the whole kernel from its entry to EXIT "
                             "(the register kernels, one row per thread)")
    parser.add_argument("--decisions", default="",
                        help="t/n for each conditional branch met")
    parser.add_argument("--elements", type=int,
                        help="elements per thread and row, for a per-element "
                             "figure")
    parser.add_argument("--arch", default="sm_90")
    parser.add_argument("-v", action="store_true", help="print the path")
    args = parser.parse_args()
    sass = subprocess.run(
        [find_cuobjdump(), "-sass", "-arch", args.arch, args.binary],
        check=True, capture_output=True, text=True).stdout
    found = [(name, code) for name, _, code in kernels(sass)
             if re.search(args.kernel, name)]
    if len(found) != 1:
        sys.exit("--kernel matches %d kernels: %s" %
                 (len(found), ", ".join(n for n, _ in found)))
    name, code = found[0]
    loops = row_loops(code)
    if args.loop == -1:
        span, where = (0, None), "entry to EXIT"
    elif 0 <= args.loop < len(loops):
        span = loops[args.loop]
        where = "row loop %d at %#x" % (args.loop, code[span[0]][0])
    else:
        sys.exit("%s has %d row loops" % (name, len(loops)))
    path, taken = walk(code, *span, args.decisions)
    if args.v:
        for text in path:
            print("   ", text)
    print("%s, %s: %d instructions" % (name, where, len(path)), end="")
    if args.elements:
        print(", %.2f per element" % (len(path) / args.elements), end="")
    print()
    classes = collections.Counter()
    for text in path:
        op = re.sub(r"^@!?U?P\w+ ", "", text)
        for label, pattern in _CLASSES:
            if re.search(pattern, op):
                classes[label] += 1
                break
        else:
            classes["integer, moves, other"] += 1
    print("  " + ", ".join("%s %d" % kv for kv in sorted(
        classes.items(), key=lambda kv: -kv[1])))
    print("  decisions: " + " ".join("%x:%s" % t for t in taken))
    calls = sum(1 for text in path if re.match(r"CALL", text))
    if calls:
        print("  (the path makes %d calls, e.g. the slow path of a double "
              "1/sqrt; the count stops at the call)" % calls)
    if len(taken) != len(args.decisions):
        print("  (%d decisions given, %d met)" % (len(args.decisions),
                                                   len(taken)))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Static instruction counts of the CUDA kernels' row loops, from their SASS.

The staged kernels loop over a row held in shared memory, one 16-byte pack
(LDS.128) per thread and iteration; the instructions per element of each
loop show what the kernel costs on a machine without a GPU. This is a
reading of the code, not a measurement: the output loop's count covers the
code for every γ/β combination, of which one runs, and nothing here says
how well the schedulers issue. Since the staged kernels read a row in
loops unrolled to the plan's packs per thread (2026-11-26), their passes
are no longer loops of their own: the innermost loop found is then the
whole row loop, every branch of it (the "double path" label), and its
count per element is only an upper bound.

  python3 bench/cuda_sass_loops.py build/kernels/CMakeFiles/\\
      normserve_kernels_cuda.dir/cuda/normalize_cuda.cu.o --kernel StagedWarp

cuobjdump comes from the CUDA toolkit (PATH, CUDA_HOME/bin) or from the
PyPI package in bench/requirements-sass.txt.
"""
import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig

_ELEMENTS_PER_PACK = {"F32": 4, "F16": 8, "BF16": 8}


def find_cuobjdump():
    found = shutil.which("cuobjdump")
    if found:
        return found
    for root in (os.environ.get("CUDA_HOME", "/usr/local/cuda"),):
        path = os.path.join(root, "bin", "cuobjdump")
        if os.access(path, os.X_OK):
            return path
    site = sysconfig.get_paths()["purelib"]
    for path in glob.glob(os.path.join(site, "nvidia", "*", "bin", "cuobjdump")):
        return path
    sys.exit("cuobjdump not found: install the CUDA toolkit or "
             "pip install -r bench/requirements-sass.txt")


# RowVariant (kernels/cuda/internal/normalize_row.h) by value.
_VARIANTS = ["kAny", "kGammaBeta", "kGammaOnly"]


def kernels(sass):
    """(name, input type, [(address, instruction)]) for each kernel."""
    for block in re.split(r"\n\s*Function : ", sass)[1:]:
        mangled = block.split("\n", 1)[0].strip()
        m = re.search(r"\d+([A-Za-z]+Kernel)I(.*)EEvN", mangled)
        if not m:
            continue
        # A repeated type is a back-reference (S4_): In == Out.
        types = re.findall(r"(BF16|F16|F32)", m.group(2))
        in_type, out_type = types[0], types[-1]
        packs = re.search(r"Li(\d+)E", m.group(2))
        # Kernels split by norm kind and row variant (LayerNorm: true), and
        # the block kernels' held weights where not the default (false).
        flags = ["true" if f == "1" else "false"
                 for f in re.findall(r"Lb([01])E", m.group(2))]
        variant = re.search(r"RowVariantE(\d)E", m.group(2))
        name = "%s<%s, %s%s%s%s%s>" % (
            m.group(1), in_type, out_type,
            ", %s" % packs.group(1) if packs else "",
            ", %s" % flags[0] if flags else "",
            ", %s" % _VARIANTS[int(variant.group(1))] if variant else "",
            "".join(", %s" % f for f in flags[1:] if f == "false"))
        code = []
        for line in block.split("\n"):
            i = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", line)
            if i:
                code.append((int(i.group(1), 16), i.group(2)))
        yield name, in_type, code


def loops(code):
    """Innermost loops (a backward branch with no other inside): (first
    address, body)."""
    index = {a: k for k, (a, _) in enumerate(code)}
    back = []
    for k, (address, text) in enumerate(code):
        m = re.search(r"BRA (?:!?U?P\d, )?0x([0-9a-f]+)", text)
        if m and int(m.group(1), 16) <= address and int(m.group(1), 16) in index:
            back.append((index[int(m.group(1), 16)], k))
    for first, last in back:
        if sum(1 for f, l in back if first <= f and l <= last) == 1:
            yield code[first][0], [t for _, t in code[first:last + 1]]


def describe(body):
    def count(pattern):
        return sum(1 for t in body if re.search(pattern, t))
    if count(r"\bD(ADD|MUL|FMA)\b"):
        return "double path"
    if count(r"\bSTG\b"):
        return "output"
    if count(r"\bSTS\b"):
        return "residual add (staged)"
    if count(r"FSETP") >= count(r"LDS\.128") * 4:
        return "constant-row check"
    return "statistics pass"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binary", help="object, cubin or executable")
    parser.add_argument("--kernel", default="Staged",
                        help="regex on the kernel name (default: Staged)")
    parser.add_argument("--arch", default="sm_90")
    args = parser.parse_args()
    sass = subprocess.run(
        [find_cuobjdump(), "-sass", "-arch", args.arch, args.binary],
        check=True, capture_output=True, text=True).stdout
    print("| kernel | loop | instructions | 16-byte packs | per element |")
    print("|---|---|---|---|---|")
    for name, in_type, code in kernels(sass):
        if not re.search(args.kernel, name):
            continue
        for first, body in loops(code):
            packs = sum(1 for t in body if re.search(r"LDS\.128", t))
            if packs == 0:
                continue  # staging copies and bookkeeping
            elements = packs * _ELEMENTS_PER_PACK[in_type]
            print("| %s | %s (%#x) | %d | %d | %.2f |" % (
                name, describe(body), first, len(body), packs,
                len(body) / elements))


if __name__ == "__main__":
    main()

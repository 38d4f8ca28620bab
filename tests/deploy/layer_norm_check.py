#!/usr/bin/env python3
"""The container test's LayerNorm request and the check of its answer.

`write DIR` writes x.npy (rows chosen to be hard: a large |mean| against a
small spread, a constant row, a wide row), gamma.npy and beta.npy as
float32. `check DIR` reads y.npy, which normctl wrote from the container's
answer, and compares it with a float64 NumPy LayerNorm of the same inputs
(epsilon 1e-5) under the contract's bound: float32 outputs within 1e-5 of
the row's largest reference output (DESIGN.md; tests/kernel_test_util.h).

Usage: layer_norm_check.py write DIR | check DIR
"""
import os
import sys

import numpy as np

EPSILON = 1e-5
DIM = 768


def write(directory):
    rng = np.random.default_rng(8)
    x = np.stack([
        rng.normal(0.0, 1.0, DIM),
        1000.0 + rng.normal(0.0, 0.01, DIM),  # |mean| >> std
        np.full(DIM, 3.0),  # constant: y must be beta exactly
        rng.normal(-2.0, 50.0, DIM),
    ]).astype(np.float32)
    np.save(os.path.join(directory, "x.npy"), x)
    np.save(os.path.join(directory, "gamma.npy"), rng.normal(1.0, 0.2, DIM).astype(np.float32))
    np.save(os.path.join(directory, "beta.npy"), rng.normal(0.0, 0.5, DIM).astype(np.float32))


def check(directory):
    def load(name):
        return np.load(os.path.join(directory, name))

    x, gamma, beta, y = load("x.npy"), load("gamma.npy"), load("beta.npy"), load("y.npy")
    if y.dtype != np.float32 or y.shape != x.shape:
        sys.exit(f"y.npy is {y.dtype} {y.shape}, expected float32 {x.shape}")
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
    ref = (x64 - mean) / np.sqrt(var + EPSILON) * gamma.astype(np.float64) + beta.astype(np.float64)
    err = np.abs(y.astype(np.float64) - ref).max(axis=-1)
    bound = 1e-5 * np.abs(ref).max(axis=-1)
    for r in range(x.shape[0]):
        print(f"row {r}: max |y - ref| = {err[r]:.3g} (bound {bound[r]:.3g})")
    if not np.all(err <= bound):
        sys.exit("output differs from the float64 LayerNorm reference beyond the bound")
    if not np.array_equal(y[2], beta):
        sys.exit("a constant row's output is not beta exactly")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "check"):
        sys.exit(__doc__)
    {"write": write, "check": check}[sys.argv[1]](sys.argv[2])

"""The float64 reference the Python integration tests check answers
against: torch.nn.functional.layer_norm (or rms_norm) over the trailing
axes, with ε, γ and β as the server sees them (float32), and the error
measure of the contract's bound (per row, relative to the row's largest
|reference|).
"""
import numpy as np


def reference(x, ndim=1, gamma=None, beta=None, eps=1e-5, rms=False):
    """torch.nn.functional.layer_norm (or rms_norm) over the trailing `ndim`
    axes, in float64; also the per-row mean and rstd."""
    shape = x.shape
    rows = x.reshape(-1, int(np.prod(shape[len(shape) - ndim:]))).astype(np.float64)
    mean = np.zeros((rows.shape[0], 1)) if rms else rows.mean(axis=1, keepdims=True)
    var = ((rows - mean) ** 2).mean(axis=1, keepdims=True)
    rstd = 1.0 / np.sqrt(var + np.float64(np.float32(eps)))
    y = (rows - mean) * rstd
    if gamma is not None:
        y = y * gamma.astype(np.float32).astype(np.float64).reshape(1, -1)
    if beta is not None:
        y = y + beta.astype(np.float32).astype(np.float64).reshape(1, -1)
    return y.reshape(shape), mean.ravel(), rstd.ravel()


def max_error_per_row(y, ref, ndim=1):
    """Largest |y - ref| of each row over the row's largest |ref|."""
    d = int(np.prod(ref.shape[ref.ndim - ndim:]))
    err = np.abs(y.astype(np.float64) - ref).reshape(-1, d).max(axis=1)
    scale = np.abs(ref).reshape(-1, d).max(axis=1)
    return err / scale

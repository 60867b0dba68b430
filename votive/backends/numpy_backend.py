"""The CPU backend: the small op set every model is written against, on numpy.

Models call these functions (through `votive.backends.get_backend`) and never numpy itself for math, so
`cupy_backend` can offer the same names on a GPU. Arrays are float32 throughout; functions that return a
fresh array may reuse it in place to save the memory traffic of temporaries, which dominates at these sizes.
Thread count: BLAS threads are set from the cores this process may use before numpy loads
(`votive.runtime.cpus.configure_blas_threads`).
"""

from __future__ import annotations

import numpy as np

name = "numpy"
float32 = np.float32
int64 = np.int64


def asarray(x, dtype=None):
    """Host data (lists, numpy arrays, memory-mapped views) as this backend's array; no copy when possible."""
    return np.asarray(x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    return np.asarray(x)


def empty(shape, dtype=np.float32):
    return np.empty(shape, dtype=dtype)


def zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype=dtype)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with weight stored (out_features, in_features) as PyTorch's nn.Linear keeps it.

    `weight.T` of a C-contiguous matrix is a Fortran-ordered view, which BLAS takes as a transposed operand:
    the memory-mapped weight is never copied.
    """
    y = x @ weight.T  # (..., out)
    if bias is not None:
        y += bias
    return y


def matmul(a, b):
    return a @ b


def embedding(table, ids):
    """Rows of `table` (vocab, dim) for integer `ids` of any shape -> (*ids.shape, dim)."""
    return table[ids]


def layer_norm(x, weight, bias, eps: float):
    """LayerNorm over the last axis (torch.nn.functional.layer_norm), in float32 like PyTorch's CPU kernel."""
    mean = x.mean(axis=-1, keepdims=True)
    centered = x - mean  # (..., dim), a fresh array reused for the output
    var = np.einsum("...i,...i->...", centered, centered)[..., None]
    var /= x.shape[-1]
    var += eps
    np.sqrt(var, out=var)
    centered /= var
    centered *= weight
    centered += bias
    return centered


def softmax(x, axis: int = -1):
    """Softmax along `axis`, computed in place on x (callers pass a temporary)."""
    x -= x.max(axis=axis, keepdims=True)
    np.exp(x, out=x)
    x /= x.sum(axis=axis, keepdims=True)
    return x


# Abramowitz & Stegun 7.1.26: erf(z) = 1 - (a1 t + ... + a5 t^5) exp(-z^2), t = 1 / (1 + p z), z >= 0,
# absolute error <= 1.5e-7, below float32 resolution near 1. numpy has no erf and scipy is too heavy to ship.
_ERF_P = np.float32(0.3275911)
_ERF_A = [np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)]
_INV_SQRT2 = np.float32(0.7071067811865476)


def gelu(x):
    """Exact (erf) GELU, torch.nn.functional.gelu(x) with approximate='none', as BERT uses. In place on x."""
    z = np.abs(x)
    z *= _INV_SQRT2  # z = |x| / sqrt(2)
    t = z * _ERF_P
    t += 1
    np.reciprocal(t, out=t)  # t = 1 / (1 + p z)
    y = t * _ERF_A[4]
    for a in reversed(_ERF_A[:4]):  # Horner: y = t (a1 + t (a2 + ... ))
        y += a
        y *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    y *= z  # y = erfc(|x| / sqrt 2) = 2 * Phi(-|x|)
    y *= 0.5  # Phi(-|x|)
    np.subtract(1, y, out=y, where=x >= 0)  # Phi(x) = 1 - Phi(-x) for x >= 0
    x *= y
    return x


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
    """x / max(||x||, eps), as torch.nn.functional.normalize (sentence-transformers' Normalize module)."""
    norm = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    return x / np.maximum(norm, eps)


def masked_mean(x, mask):
    """Mean of x (batch, seq, dim) over positions where mask (batch, seq) is 1, as sentence-transformers pools."""
    m = mask.astype(x.dtype)[..., None]  # (batch, seq, 1)
    summed = np.einsum("bsd,bs->bd", x, mask.astype(x.dtype))  # (batch, dim)
    return summed / np.maximum(m.sum(axis=1), 1e-9)


def masked_max(x, mask):
    """Max of x over unmasked positions; masked ones count as -1e9 like sentence-transformers' max pooling."""
    return np.where(mask[..., None].astype(bool), x, np.float32(-1e9)).max(axis=1)


def concatenate(arrays, axis: int = 0):
    return np.concatenate(arrays, axis=axis)

"""The CPU backend: the small op set every model is written against, on numpy.

Models call these functions (through `votive.backends.get_backend`) and never numpy itself for math, so
`cupy_backend` can offer the same names on a GPU. Arrays are float32 throughout; functions that return a
fresh array may reuse it in place to save the memory traffic of temporaries, which dominates at these sizes.
The elementwise hot spots (GELU, LayerNorm, softmax) run in votive's C library (`votive.runtime.kernels`),
which falls back to numpy twins when it is missing. Thread count: BLAS threads are set from the cores this
process may use before numpy loads (`votive.runtime.cpus.configure_blas_threads`); the C pool follows the same.
"""

from __future__ import annotations

import numpy as np

from votive.runtime import kernels, qlinear

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


def make_linear(gguf, name: str):
    """The linear layer for tensor `name` of an open GGUF file: a float weight, or GGML blocks read in place by
    the C kernels (`votive.runtime.qlinear`)."""
    return qlinear.make_linear(gguf, name)


def embedding(table, ids):
    """Rows of `table` (vocab, dim) for integer `ids` of any shape -> (*ids.shape, dim)."""
    return table[ids]


def layer_norm(x, weight, bias, eps: float, residual=None):
    """LayerNorm of x (+ residual) over the last axis (torch.nn.functional.layer_norm), written into x.

    The C kernel does the add and both passes in one sweep; `kernels` falls back to its numpy twin."""
    return kernels.layer_norm(x, weight, bias, eps, residual=residual, out=x)


def softmax(x, axis: int = -1, mask=None):
    """Softmax along the last axis of x + mask (an additive, broadcastable mask), in place on x."""
    if axis not in (-1, x.ndim - 1):
        raise ValueError(f"softmax runs over the last axis, got axis={axis}")
    return kernels.softmax(x, mask)


def gelu(x, bias=None):
    """Exact (erf) GELU of x + bias, torch.nn.functional.gelu(approximate='none') as BERT uses; in place on x."""
    return kernels.gelu(x, bias)


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


# ----------------------------------------------------------------------------------------- decoder ops
def rms_norm(x, weight, eps: float):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (LLaMA's RMSNorm; GGUF Gemma weights already hold
    Gemma's 1 + w, added by the converter)."""
    ms = np.einsum("...i,...i->...", x, x)[..., None]  # (..., 1)
    ms /= x.shape[-1]
    ms += eps
    return x * (1.0 / np.sqrt(ms)) * weight


def silu(x):
    """x * sigmoid(x), in place on x."""
    s = np.negative(x)
    np.exp(s, out=s)
    s += 1
    x /= s
    return x


_GELU_TANH_C = np.float32(0.7978845608028654)  # sqrt(2 / pi)


def gelu_tanh(x):
    """GELU with the tanh approximation (ggml_gelu, PyTorch approximate='tanh'), as Gemma uses. In place on x."""
    inner = x * x
    inner *= np.float32(0.044715)
    inner += 1
    inner *= x
    inner *= _GELU_TANH_C
    np.tanh(inner, out=inner)
    inner += 1
    inner *= 0.5
    x *= inner
    return x


def rope_table(base: float, head_dim: int, n_positions: int):
    """cos and sin (n_positions, head_dim/2) float32 of angle pos * base^(-2i/head_dim): computed once per model."""
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)  # (d/2,)
    angles = np.arange(n_positions, dtype=np.float64)[:, None] * inv_freq  # (n, d/2)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rope(x, cos, sin, neox: bool):
    """Rotary position embedding of x (n, heads, head_dim), with cos/sin rows (n, head_dim/2) for its positions.

    ggml's two layouts: "normal" (LLaMA in GGUF, whose converter permuted Q/K so adjacent elements pair up)
    rotates (x[2i], x[2i+1]); "neox" (Gemma) rotates (x[i], x[i + head_dim/2]). Returns a new array.
    """
    half = x.shape[-1] // 2
    cos, sin = cos[:, None, :], sin[:, None, :]  # (n, 1, d/2): broadcast over heads
    out = np.empty_like(x)
    if neox:
        (x0, x1), (r0, r1) = (x[..., :half], x[..., half:]), (out[..., :half], out[..., half:])
    else:
        (x0, x1), (r0, r1) = (x[..., 0::2], x[..., 1::2]), (out[..., 0::2], out[..., 1::2])
    np.subtract(x0 * cos, x1 * sin, out=r0)
    np.add(x0 * sin, x1 * cos, out=r1)
    return out


def causal_attention(q, k, v, q_start: int, k_start: int = 0, window: int | None = None):
    """Grouped-query causal attention of n new queries over cached keys and values.

    q: (n, H, Dh) already scaled, for positions q_start .. q_start+n-1; k, v: (Hkv, L, Dh) for positions
    k_start .. k_start+L-1 (the new ones included). A query sees keys at positions <= its own and, with a sliding
    `window`, > its own - window. Returns (n, H, Dh).
    """
    n, H, Dh = q.shape
    Hkv, L, _ = k.shape
    group = H // Hkv
    qg = q.reshape(n, Hkv, group, Dh).transpose(1, 2, 0, 3).reshape(Hkv, group * n, Dh)  # (Hkv, g*n, Dh)
    scores = qg @ k.transpose(0, 2, 1)  # (Hkv, g*n, L)
    # One decoding query sees every cached key (the newest is its own) unless they outrun its window: then, and
    # for several queries at once, build the mask; a decode step pays nothing for it.
    if n > 1 or (window is not None and L > window):
        qpos = q_start + np.arange(n)  # (n,)
        kpos = k_start + np.arange(L)  # (L,)
        masked = kpos[None, :] > qpos[:, None]  # (n, L): keys in the future
        if window is not None:
            masked |= kpos[None, :] <= qpos[:, None] - window  # keys that slid out of the window
        scores = scores.reshape(Hkv, group, n, L)
        scores[:, :, masked] = -np.inf
        scores = scores.reshape(Hkv, group * n, L)
    probs = softmax(scores, axis=-1)
    out = probs @ v  # (Hkv, g*n, Dh)
    return out.reshape(Hkv, group, n, Dh).transpose(2, 0, 1, 3).reshape(n, H, Dh)

"""The CPU backend: the small op set every model is written against (`votive.backends.ops.OpSet`), on numpy.

Models call these functions (through `votive.backends.get_backend`) and never numpy itself for math, so
`cupy_backend` can offer the same names on a GPU; its linears are in `votive.backends.numpy_linears`. Arrays are
float32 throughout; functions that return a fresh array may reuse it in place to save the memory traffic of
temporaries, which dominates at these sizes.
The elementwise hot spots (GELU, LayerNorm, softmax) run in votive's C library (`votive.quant.kernels`),
which falls back to numpy twins when it is missing. Thread count: when this backend starts it tells numpy's
OpenBLAS the cores this process may use (`votive.quant.cpus.limit_blas_threads`; a count the user set in the
environment wins); the C pool follows the same.
"""

from __future__ import annotations

import functools

import numpy as np

from votive.backends import numpy_linears as qlinear
from votive.quant import cpus, kernels

name = "numpy"
_openblas = cpus.openblas_calls()  # (set, get) of numpy's OpenBLAS, looked up once; None where none is loaded
blas_threads = cpus.limit_blas_threads(calls=_openblas)  # None where the user chose, or no OpenBLAS is loaded
_set_blas_threads = _openblas[0] if blas_threads and blas_threads > 1 else None
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

    votive's own product (`kernels.linear`, csrc/dense_kernels.c) on the C pool, packing the weight a panel at a
    time as it goes, as BLAS does; an encoder's matrices are packed once at load instead (`encoder_dense_linear`),
    for the same bits. Without the C library, numpy's BLAS (`linear_ref`).
    """
    if isinstance(weight, qlinear.DensePanels):  # an encoder's matrix packed at load (`encoder_dense_linear`)
        return weight(x, bias)
    return kernels.linear(np.ascontiguousarray(x, np.float32), weight, bias)


def matmul(a, b):
    """a @ b (attention's batched products: small, many). On one OpenBLAS thread: a threaded call wakes
    OpenBLAS's workers, which then spin for a long while (~0.1 s) on the cores the C pool's threads need."""
    if _set_blas_threads is None:
        return a @ b
    _set_blas_threads(1)
    try:
        return a @ b
    finally:
        _set_blas_threads(blas_threads)


def make_linear(gguf, name: str):
    """The linear layer for tensor `name` of an open GGUF file: a float weight, or GGML blocks read in place by
    the C kernels (`votive.backends.numpy_linears`)."""
    return qlinear.make_linear(gguf, name)


# An encoder's linear quantized at load (Q8_0) as the tiled AVX512-VNNI product of csrc/encoder_q8.c
# (`numpy_linears.EncoderQ8Linear`), the same numbers summed in another order; the linear itself where that kernel
# cannot run. Not for GGUF files, whose Q8_0 products follow llama.cpp's order. An optional op, outside the OpSet
# every backend offers: models look it up with getattr.
encoder_linear = qlinear.EncoderQ8Linear.make
# An encoder's float matrix packed once at load into the panels of csrc/dense_kernels.c (`numpy_linears.DensePanels`):
# the products `linear` gives for it as stored, bit for bit, without packing it on every call; the matrix itself
# where the C library is missing. Optional: models look it up with getattr.
encoder_dense_linear = qlinear.DensePanels.make
# The same linear from panels a converted folder stores (`votive convert --type panels`), read in place; without the
# C library the matrix, unpacked.
encoder_dense_stored = qlinear.DensePanels.stored
# An encoder's float matrix quantized at load to int8 with one scale per row (`quantize="int8"`), multiplied by
# csrc/encoder_q8.c's vt_i8_matmul (AVX512-VNNI) or its twin; also optional, looked up with getattr.
encoder_int8_linear = qlinear.EncoderI8Linear
# Bidirectional attention of packed texts (csrc/dense_kernels.c): qkv (N, 3D), each row q | k | v, text s at rows
# offsets[s] .. offsets[s + 1] - 1 -> (N, D). Optional too: with it an encoder's batch runs without its padding
# end to end (votive.models.bert.run_layers).
encoder_attention = kernels.encoder_attention


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
    Gemma's 1 + w, added by the converter), in ggml's arithmetic (the mean summed in double). A new array."""
    return kernels.rms_norm(x, weight, eps)


def swiglu(gate, up):
    """silu(gate) * up (SwiGLU) with ggml's exp, into gate where the C kernel takes it."""
    return kernels.swiglu(np.ascontiguousarray(gate), up)


@functools.cache
def _gelu_half_table():
    """ggml's GELU table: for each half x (all 65536 bit patterns), the tanh-form GELU of x rounded to half, in
    float32. ggml builds it with float math (its `1 + a*x*x` fused by the compiler) and libm's tanhf, which the
    double tanh rounded to float reproduces here entry for entry."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(all="ignore"):  # inf and NaN halves give inf and NaN, as in ggml
        inner = ((np.float32(0.044715) * x).astype(np.float64) * x + 1).astype(np.float32)  # fmaf(a*x, x, 1)
        t = np.tanh(((np.float32(0.7978845608028654) * x) * inner).astype(np.float64)).astype(np.float32)
        return ((np.float32(0.5) * x) * (np.float32(1) + t)).astype(np.float16).astype(np.float32)


def geglu(gate, up):
    """gelu(gate) * up (GeGLU, tanh-form GELU) as ggml_vec_geglu_f32: GELU looked up at gate rounded to half,
    gate itself from 10 up and 0 from -10 down. Into gate when C takes it (vt_geglu), else a new array
    (kernels_ref.geglu_ref: the same lookups and products)."""
    return kernels.geglu(np.ascontiguousarray(gate, np.float32), up, _gelu_half_table())


def rope_table(base: float, head_dim: int, n_positions: int, *, freq_scale: float = 1.0,
               freq_factors: np.ndarray | None = None, ext_factor: float = 0.0, attn_factor: float = 1.0,
               corr_dims: tuple[float, float] = (0.0, 0.0)):
    """RoPE's (n_positions, head_dim) table, cos and sin interleaved, as ggml_rope_cache_init makes it with the
    given scaling (OpSet.rope_table): once per model."""
    return kernels.rope_cache(base, head_dim, n_positions, 0, freq_scale, freq_factors, ext_factor, attn_factor,
                              corr_dims)


def rope(x, table, neox: bool):
    """Rotary position embedding of x (n, heads, head_dim) by its positions' rows of `rope_table` (n, head_dim).

    ggml's two layouts: "normal" (LLaMA in GGUF, whose converter permuted Q/K so adjacent elements pair up)
    rotates (x[2i], x[2i+1]); "neox" (Gemma) rotates (x[i], x[i + head_dim/2]). In place where C takes x.
    """
    return kernels.rope(np.ascontiguousarray(x, np.float32), table, neox)


def kv_cache(n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int):
    """Keys (L, Hkv, ctx, Dh) and transposed values (L, Hkv, Dh, ctx) in float16, as llama.cpp keeps them.

    np.empty reserves address space only: pages are touched as positions fill, so a short chat costs little."""
    return (np.empty((n_layers, n_kv_heads, n_ctx, head_dim), np.float16),
            np.empty((n_layers, n_kv_heads, head_dim, n_ctx), np.float16))


def causal_attention(q, k, v, q_start: int, scale: float, window: int | None = None):
    """Grouped-query causal attention of n new queries over one layer's float16 cache (`kv_cache`).

    q: (n, H, Dh) float32 for positions q_start .. q_start+n-1, whose keys and values are already stored; k:
    (Hkv, ctx, Dh), v: (Hkv, Dh, ctx). A query sees keys at positions <= its own and, with a sliding `window`,
    > its own - window. Scores are q.k * scale. In llama.cpp's arithmetic: queries and probabilities rounded to
    half, products summed in ggml's order (votive/quant/csrc/decoder_kernels.c). Returns (n, H, Dh).
    """
    return kernels.attention_f16(q, k, v, q_start, scale, window)

"""The op set, written down: every array operation a model may call on its backend, and the linears it makes.

A model (votive/models) holds its backend as `ops` and does all its math through it, never through numpy or cupy
itself, so one model file runs on the CPU and on a GPU. `OpSet` is that contract, and exactly that: the members
models use, no more. It has two implementations, both modules, which satisfy it structurally:

- `votive.backends.numpy_backend`: functions over numpy arrays in host memory, with votive's C kernels; its
  linears are `votive.backends.numpy_linears`'.
- `votive.backends.cupy_backend`: the bound methods of `votive.backends.cuda_ops.CudaOps`, over cupy arrays in
  device memory, with votive's CUDA kernels; its linears are `votive.backends.cuda_linears`'.

tests/test_ops_contract.py holds both to it (every member, each signature) and checks that models call nothing
it lacks and that it lists nothing they do not call.

Conventions of every op below:
- `Array` is the backend's array: numpy.ndarray on numpy, cupy.ndarray on cupy. Activations are float32.
- Shapes use n (tokens), dim (model width), F (feed-forward width), H (query heads), Hkv (key/value heads),
  Dh (head width), ctx (positions a KV cache holds), L (layers), B (batch) and T (sequence length).
- An op that "may write into x" returns its result, and the caller uses the return value and not x afterwards:
  the CPU overwrites x itself, the GPU overwrites x or, when x is not contiguous, a contiguous copy of it.
- "A new array" is one the caller owns and may overwrite.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

Array = Any  # the backend's array type (numpy.ndarray or cupy.ndarray); neither package's type names the other


@runtime_checkable
class Linear(Protocol):
    """y = x @ W.T for one weight W (out_features, in_features) held as its GGUF file stores it (float, or GGML
    blocks that are never widened whole). `OpSet.make_linear` makes them; a decoder's token embedding is one too,
    read row by row through `rows` and, when tied, multiplied as the output projection."""

    def __call__(self, x: Array) -> Array:
        """x (n, in_features) float32 -> x @ W.T (n, out_features) float32, a new array."""
        ...

    def rows(self, ids) -> Array:
        """Rows `ids` of W (host integers, (n,); each in [0, out_features)) as float32 (n, in_features), a new
        array on the backend's device: an embedding lookup that decodes only those rows."""
        ...


@runtime_checkable
class FusableLinear(Linear, Protocol):
    """A Linear whose class can multiply several of its instances by the same x in one go (the GPU's quantized
    linear: one kernel launch for q, k and v). `votive.backends.numpy_linears.FusedLinears`, which models build
    over their q/k/v and gate/up linears, asks for this hook and runs the linears one by one without it."""

    @classmethod
    def fused(cls, linears: list) -> Callable[[Array], list] | None:
        """A callable taking x (n, in_features) float32 and returning each linear's x @ W.T, in order; or None
        when these linears cannot share a product (different formats or widths)."""
        ...


@runtime_checkable
class OpSet(Protocol):
    """What a model may call on its backend: `ops.<member>`, for each member below."""

    name: str  # "numpy" or "cupy": the backend a model reports it runs on (its `backend`)
    float32: type  # the backend's float32: a dtype argument, and a scalar constructor (ops.float32(-1e9))
    int64: type  # the backend's int64, for token ids and attention masks

    # ------------------------------------------------------------------------------------------------ arrays
    def asarray(self, x, dtype=None) -> Array:
        """Host data (a list, a numpy array, a view of a memory-mapped file) as the backend's array of `dtype`
        (None: x's own). The CPU copies only when it must convert; the GPU copies once, to the device."""
        ...

    def to_numpy(self, x: Array) -> np.ndarray:
        """x as a numpy array in host memory: x itself on the CPU, a copy from the device on the GPU."""
        ...

    def empty(self, shape, dtype=np.float32) -> Array:
        """A new array of `shape` and `dtype`, its values unset."""
        ...

    def concatenate(self, arrays, axis: int = 0) -> Array:
        """`arrays` joined along `axis` (numpy.concatenate), a new array."""
        ...

    # ---------------------------------------------------------------------------------------------- products
    def linear(self, x: Array, weight: Array, bias: Array | None = None) -> Array:
        """x (..., in) float32 @ weight.T + bias -> (..., out) float32, a new array; weight (out, in) float32 as
        PyTorch's nn.Linear stores it (read, never changed), bias (out,) float32 or None."""
        ...

    def matmul(self, a: Array, b: Array) -> Array:
        """a (..., m, k) @ b (..., k, p) -> (..., m, p) float32, leading axes broadcast (numpy.matmul); new."""
        ...

    def embedding(self, table: Array, ids: Array) -> Array:
        """Rows of `table` (vocab, dim) for the backend's integer array `ids` of any shape -> (*ids.shape, dim),
        a new array."""
        ...

    def make_linear(self, gguf, name: str) -> Linear:
        """The `Linear` for 2-D tensor `name` of an open `votive.formats.gguf.GGUFFile`: F32 as stored, quantized
        blocks as stored (read in place by the kernels; on the GPU copied to the device once). F16 / BF16 are
        widened to float32 once on the CPU and kept as halves on the GPU; a format the GPU has no kernel for (or a
        row width it cannot take) is widened to float32 once there, with a warning."""
        ...

    # ------------------------------------------------------------------------------------------- encoder ops
    def layer_norm(self, x: Array, weight: Array | None, bias: Array | None, eps: float,
                   residual: Array | None = None) -> Array:
        """LayerNorm over the last axis of x + residual (torch.nn.functional.layer_norm), times weight plus
        bias: x (..., dim) float32, weight and bias (dim,) float32 or None, residual x's shape or None. May
        write into x."""
        ...

    def softmax(self, x: Array, axis: int = -1, mask: Array | None = None) -> Array:
        """Softmax over the last axis of x + mask: x (..., keys) float32, mask an additive float32 array that
        broadcasts to x (BERT's (B, 1, 1, T) over scores (B, H, T, T)) or None. `axis` must name the last axis
        (ValueError otherwise). May write into x."""
        ...

    def gelu(self, x: Array, bias: Array | None = None) -> Array:
        """Exact (erf) GELU of x + bias, torch.nn.functional.gelu(approximate='none') as BERT uses: x (..., dim)
        float32, bias (dim,) float32 or None. May write into x."""
        ...

    def l2_normalize(self, x: Array, axis: int = -1, eps: float = 1e-12) -> Array:
        """x / max(||x||, eps) along `axis` (torch.nn.functional.normalize), a new float32 array of x's shape."""
        ...

    def masked_mean(self, x: Array, mask: Array) -> Array:
        """Mean of x (B, T, dim) float32 over the positions where mask (B, T) (integers, 1 = a token, 0 =
        padding) is 1 -> (B, dim) float32, a new array (sentence-transformers' mean pooling)."""
        ...

    def masked_max(self, x: Array, mask: Array) -> Array:
        """Max of x (B, T, dim) float32 over positions, padding (mask (B, T) 0) counted as -1e9 -> (B, dim)
        float32, a new array (sentence-transformers' max pooling)."""
        ...

    # ------------------------------------------------------------------------------------------- decoder ops
    def rms_norm(self, x: Array, weight: Array, eps: float) -> Array:
        """x / sqrt(mean(x^2) + eps) * weight over the last axis (LLaMA's RMSNorm; Gemma's GGUF weights already
        hold its 1 + w): x (..., d) float32, weight (d,) float32 -> x's shape, float32, a new array."""
        ...

    def swiglu(self, gate: Array, up: Array) -> Array:
        """silu(gate) * up (SwiGLU): gate and up (n, F) float32, the same shape -> (n, F) float32. May write into
        gate."""
        ...

    def geglu(self, gate: Array, up: Array) -> Array:
        """gelu(gate) * up (GeGLU, tanh-form GELU as ggml computes it): gate and up (n, F) float32, the same
        shape -> (n, F) float32. May write into gate."""
        ...

    def rope_table(self, base: float, head_dim: int, n_positions: int, *, freq_scale: float = 1.0,
                   freq_factors: np.ndarray | None = None, ext_factor: float = 0.0, attn_factor: float = 1.0,
                   corr_dims: tuple[float, float] = (0.0, 0.0)) -> Array:
        """RoPE's angles for positions 0 .. n_positions-1: (n_positions, head_dim) float32, cos and sin of each
        rotated pair interleaved, computed as ggml_rope_cache_init does (the GPU's is the CPU's, copied). Made
        once per model. The keywords are ggml's scaling, their defaults plain RoPE: freq_scale (1 / linear or
        YaRN factor), freq_factors ((head_dim / 2,) float32 divisors of each pair's angle: Llama 3's
        rope_freqs), ext_factor, attn_factor and corr_dims (YaRN); votive.models.rope_scaling reads them."""
        ...

    def rope(self, x: Array, table: Array, neox: bool) -> Array:
        """x (n, heads, Dh) float32 rotated by its positions' rows of `rope_table`, table (n, Dh) -> (n, heads,
        Dh) float32. neox=False rotates adjacent pairs (x[2i], x[2i+1]) (LLaMA in GGUF, whose converter permuted
        Q/K for it); neox=True rotates (x[i], x[i + Dh/2]) (Gemma). May write into x."""
        ...

    def kv_cache(self, n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int) -> tuple[Array, Array]:
        """One sequence's key/value cache as llama.cpp keeps it, values unset: keys (L, Hkv, ctx, Dh) and values
        indexed (L, Hkv, Dh, ctx), both float16. The caller writes each position before attention reads it."""
        ...

    def causal_attention(self, q: Array, k: Array, v: Array, q_start: int, scale: float,
                         window: int | None = None) -> Array:
        """Grouped-query causal attention of n new queries over one layer of `kv_cache`: q (n, H, Dh) float32 at
        positions q_start .. q_start+n-1, k (Hkv, ctx, Dh) and v (Hkv, Dh, ctx) float16 with those positions and
        all before them stored; H a multiple of Hkv. A query sees the keys at positions <= its own and, given
        `window`, > its own - window; scores are q.k * scale. -> (n, H, Dh) float32, a new array. The GPU takes
        Dh up to 256 and raises KernelError beyond."""
        ...

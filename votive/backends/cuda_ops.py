"""numpy_backend's op set (`votive.backends.ops.OpSet`) on an NVIDIA GPU: cupy arrays, cuBLAS for float
products, votive's CUDA kernels (votive/quant/cusrc) for norms, activations, RoPE and attention. Its linears, which
multiply quantized weights with quant.cu, are in votive.backends.cuda_linears (their names are kept here too).

`CudaOps(xp, kernels)` is written against an array module `xp` and a kernel provider (`kernels.function(name)`
returns a callable taking `(grid, block, args)`, as cupy's RawKernel does). `votive.backends.cupy_backend` builds
it with cupy and `votive.quant.cuda_kernels.CupyKernels`; the tests also build it with numpy and a CPU
emulation of the same kernels, so every line here runs without a GPU too. It therefore uses only what numpy and
cupy share, and never converts device arrays implicitly: weights go to the device once, at load
(`asarray`, `make_linear`), and results come back only through `to_numpy`.

Arrays are float32 unless said otherwise; the KV cache is float16, as on the CPU.
"""

from __future__ import annotations

import numpy as np

from votive.backends import cuda_linears
from votive.backends.cuda_linears import FusedProduct, GpuDenseLinear, GpuQuantLinear  # noqa: F401 (public here too)
from votive.errors import KernelError

NULL = np.uint64(0)  # a null pointer argument (cupy and the emulator both pass an 8-byte scalar as is)
ATTENTION_MAX_DIM = 256  # attention.cu: ATTN_MAX_DIM
ELEMENTWISE_THREADS = 256
MAX_GRID = 65535 * 4  # elementwise kernels loop over what a grid this size does not cover
MAX_GRID_Y = 65535  # CUDA's limit on a grid's y size


def _i32(v) -> np.int32:
    return np.int32(v)


def _i64(v) -> np.int64:
    return np.int64(v)


def _f32(v) -> np.float32:
    return np.float32(v)


def _row_threads(cols: int) -> int:
    """Threads for a one-block-per-row kernel: about 8 elements each, whole warps, 32..1024."""
    return min(1024, max(32, 32 * -(-cols // 256)))


def _blocks(n: int, threads: int = ELEMENTWISE_THREADS) -> int:
    return max(1, min(MAX_GRID, -(-n // threads)))


class CudaOps:
    """The backend op set (`votive.backends.ops.OpSet`) on a CUDA device; see the module docstring."""

    name = "cupy"

    def __init__(self, xp, kernels):
        self.xp = xp
        self.kernels = kernels
        self.float32 = xp.float32
        self.int64 = xp.int64

    def _run(self, kernel: str, grid, block, *args) -> None:
        if 0 in grid:  # nothing to compute (CUDA refuses an empty grid)
            return
        self.kernels.function(kernel)(tuple(grid), tuple(block), args)

    def _run_items(self, kernel: str, items: int, *args) -> None:
        """Launch a kernel that gives each of `items` work items a thread, in blocks of ELEMENTWISE_THREADS and at
        most MAX_GRID of them (the kernels loop over the items a grid that size does not cover)."""
        self._run(kernel, (_blocks(items),), (ELEMENTWISE_THREADS,), *args)

    def _dense(self, x, what: str):
        """x as C-contiguous float32 on the device (a copy only when it is not already)."""
        if x.dtype != np.float32:
            raise KernelError(f"{what}: expected float32, found {x.dtype}")
        return self.xp.ascontiguousarray(x)

    # ---- arrays
    def asarray(self, x, dtype=None):
        """Host data (lists, numpy arrays, memory-mapped views) on the device: one copy, straight from the map."""
        return self.xp.asarray(x, dtype=dtype)

    def to_numpy(self, x) -> np.ndarray:
        asnumpy = getattr(self.xp, "asnumpy", None)
        return asnumpy(x) if asnumpy is not None else np.asarray(x)

    def empty(self, shape, dtype=np.float32):
        return self.xp.empty(shape, dtype=dtype)

    def concatenate(self, arrays, axis: int = 0):
        return self.xp.concatenate(arrays, axis=axis)

    # ---- products
    def linear(self, x, weight, bias=None):
        """x @ weight.T + bias, weight (out, in) on the device: cuBLAS reads the transposed view, no copy."""
        y = x @ weight.T  # (..., out)
        if bias is not None:
            y += bias
        return y

    def matmul(self, a, b):
        return self.xp.matmul(a, b)

    def embedding(self, table, ids):
        """Rows of `table` (vocab, dim) for integer `ids` (on the device) of any shape -> (*ids.shape, dim)."""
        return table[ids]

    def make_linear(self, gguf, name: str):
        """The linear layer for GGUF tensor `name`, its weight copied to the device once, from the file's map.

        Quantized weights (and F16 / BF16) stay as stored and run through quant.cu; F32 goes to cuBLAS. A format
        quant.cu lacks (Q2_K, Q3_K) is widened to float32 once, with a warning about the memory it costs. The
        linears are votive.backends.cuda_linears'.
        """
        return cuda_linears.make_linear(self, gguf, name)

    # ---- encoder ops
    def layer_norm(self, x, weight, bias, eps: float, residual=None):
        """LayerNorm of x (+ residual) over the last axis, written into x (a contiguous copy of x if it is not)."""
        x = self._dense(x, "layer_norm")
        cols = x.shape[-1]
        if residual is not None:
            if residual.shape != x.shape:
                raise KernelError(f"layer_norm: residual {residual.shape} does not match x {x.shape}")
            residual = self._dense(residual, "layer_norm residual")
        rows = x.size // cols
        self._run("layer_norm", (rows,), (_row_threads(cols),), x, NULL if residual is None else residual,
                  NULL if weight is None else weight, NULL if bias is None else bias, x, _i32(rows), _i32(cols),
                  _f32(eps))
        return x

    def softmax(self, x, axis: int = -1, mask=None):
        """Softmax along the last axis of x + mask (additive, broadcastable), in place on x."""
        if axis not in (-1, x.ndim - 1):
            raise ValueError(f"softmax runs over the last axis, got axis={axis}")
        x = self._dense(x, "softmax")
        cols = x.shape[-1]
        rows = x.size // cols
        layout = None if mask is None else _mask_rows(x.shape, mask.shape)
        if mask is not None and layout is None:  # a broadcast the kernel's row rule cannot express
            x += mask
            mask = None
        if mask is None:
            args = (NULL, _i32(rows), _i32(cols), _i32(1), _i32(1))
        else:
            div, mod = layout
            args = (self.xp.ascontiguousarray(mask, dtype=self.xp.float32), _i32(rows), _i32(cols), _i32(div),
                    _i32(mod))
        self._run("softmax_rows", (rows,), (_row_threads(cols),), x, *args, _f32(1.0))
        return x

    def gelu(self, x, bias=None):
        """Exact (erf) GELU of x + bias, in place on x."""
        x = self._dense(x, "gelu")
        self._run_items("gelu_erf", x.size, x, NULL if bias is None else bias, _i64(x.size), _i32(x.shape[-1]))
        return x

    def l2_normalize(self, x, axis: int = -1, eps: float = 1e-12):
        norm = self.xp.sqrt((x * x).sum(axis=axis, keepdims=True))
        return x / self.xp.maximum(norm, self.xp.float32(eps))

    def masked_mean(self, x, mask):
        """Mean of x (batch, seq, dim) over positions where mask (batch, seq) is 1."""
        m = mask.astype(x.dtype)  # (batch, seq)
        summed = self.xp.einsum("bsd,bs->bd", x, m)  # (batch, dim)
        return summed / self.xp.maximum(m.sum(axis=1, keepdims=True), self.xp.float32(1e-9))

    def masked_max(self, x, mask):
        return self.xp.where(mask[..., None].astype(bool), x, self.xp.float32(-1e9)).max(axis=1)

    # ---- decoder ops
    def rms_norm(self, x, weight, eps: float):
        """x / sqrt(mean(x^2) + eps) * weight over the last axis, as a new array."""
        x = self._dense(x, "rms_norm")
        cols = x.shape[-1]
        rows = x.size // cols
        y = self.xp.empty_like(x)
        self._run("rms_norm", (rows,), (_row_threads(cols),), x, weight, y, _i32(rows), _i32(cols), _f32(eps))
        return y

    def swiglu(self, gate, up):
        """silu(gate) * up, into gate (a contiguous copy of gate if it is not), which is returned."""
        return self._gated("swiglu", gate, up)

    def geglu(self, gate, up):
        """gelu(gate) * up (tanh-form GELU), into gate (a contiguous copy of gate if it is not), which is returned."""
        return self._gated("geglu", gate, up)

    def _gated(self, kernel: str, gate, up):
        gate = self._dense(gate, kernel)
        up = self._dense(up, f"{kernel} up")
        if up.shape != gate.shape:
            raise KernelError(f"{kernel}: up {up.shape} does not match gate {gate.shape}")
        self._run_items(kernel, gate.size, gate, up, _i64(gate.size))
        return gate

    def rope_table(self, base: float, head_dim: int, n_positions: int, *, freq_scale: float = 1.0,
                   freq_factors=None, ext_factor: float = 0.0, attn_factor: float = 1.0,
                   corr_dims: tuple[float, float] = (0.0, 0.0)):
        """The CPU backend's table (n_positions, head_dim), cos and sin interleaved, with the same scaling
        (OpSet.rope_table), copied to the device once: both backends rotate by the very same angles."""
        from votive.backends import numpy_backend

        return self.xp.asarray(numpy_backend.rope_table(
            base, head_dim, n_positions, freq_scale=freq_scale, freq_factors=freq_factors, ext_factor=ext_factor,
            attn_factor=attn_factor, corr_dims=corr_dims))

    def rope(self, x, table, neox: bool):
        """Rotate x (n, heads, head_dim) in place by its positions' table rows (n, head_dim); returns x."""
        x = self._dense(x, "rope")
        n, heads, head_dim = x.shape
        if table.shape != (n, head_dim):
            raise KernelError(f"rope: table rows {table.shape} do not fit x {x.shape}")
        table = self._dense(table, "rope table")
        self._run_items("rope", n * heads * head_dim // 2, x, table, _i32(n), _i32(heads), _i32(head_dim),
                        _i32(bool(neox)))
        return x

    def kv_cache(self, n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int):
        """Keys (L, Hkv, ctx, Dh) and values indexed (L, Hkv, Dh, ctx), float16, like the CPU backend's; the values
        are stored position-major underneath (a transposed view), so attention reads each position's values as
        consecutive memory. Nothing is written: cupy allocates without touching the pages."""
        shape = (n_layers, n_kv_heads, n_ctx, head_dim)
        return self.xp.empty(shape, self.xp.float16), self.xp.empty(shape, self.xp.float16).transpose(0, 1, 3, 2)

    def causal_attention(self, q, k, v, q_start: int, scale: float, window: int | None = None):
        """Grouped-query causal attention of q (n, H, Dh) over one layer's cache k (Hkv, ctx, Dh), v (Hkv, Dh, ctx)
        (float16, positions 0 .. q_start + n - 1 filled). Scores are q.k * scale; with `window`, a query sees only
        keys > its position - window. Returns (n, H, Dh)."""
        q = self._dense(q, "causal_attention q")
        n, heads, dims = q.shape
        kv_heads, capacity = k.shape[0], k.shape[1]
        if k.shape != (kv_heads, capacity, dims) or v.shape != (kv_heads, dims, capacity):
            raise KernelError(f"causal_attention: k {k.shape} and v {v.shape} do not fit q {q.shape}")
        if k.dtype != np.float16 or v.dtype != np.float16:
            raise KernelError(f"causal_attention: the cache must be float16, found k {k.dtype} and v {v.dtype}")
        if heads % kv_heads or dims > ATTENTION_MAX_DIM or k.strides[2] != 2:
            raise KernelError(f"causal_attention: {heads} heads over {kv_heads} KV heads of {dims} dims (at most "
                              f"{ATTENTION_MAX_DIM}, keys contiguous per position) is not supported on the GPU")
        if q_start + n > capacity:
            raise KernelError(f"causal_attention: positions up to {q_start + n - 1} in a cache of {capacity}")
        k_head, k_pos, _ = (s // 2 for s in k.strides)  # element strides
        v_head, v_dim, v_pos = (s // 2 for s in v.strides)
        out = self.xp.empty_like(q)
        for t0 in range(0, n, MAX_GRID_Y):  # queries are the grid's y axis
            c = min(MAX_GRID_Y, n - t0)
            self._run("attention", (heads, c), (128,), q[t0 : t0 + c], k, v, out[t0 : t0 + c], _i32(c), _i32(heads),
                      _i32(kv_heads), _i32(dims), _i64(k_head), _i64(k_pos), _i64(v_head), _i64(v_pos),
                      _i64(v_dim), _i32(q_start + t0), _i32(capacity), _i32(window or 0), _f32(scale))
        return out


def _mask_rows(x_shape: tuple, mask_shape: tuple) -> tuple[int, int] | None:
    """How softmax_rows finds the mask row of row r of x: (div, mod) with mask row (r // div) % mod, for a mask
    whose non-1 leading axes are one run matching x's (BERT's (batch, 1, 1, keys) over (batch, heads, q, keys));
    None for any other broadcast."""
    if len(mask_shape) > len(x_shape) or mask_shape[-1] != x_shape[-1]:
        return None
    lead = (1,) * (len(x_shape) - len(mask_shape)) + tuple(mask_shape[:-1])
    xs = x_shape[:-1]
    varying = [i for i, m in enumerate(lead) if m != 1]
    if not varying:
        return 1, 1
    lo, hi = varying[0], varying[-1]
    if any(lead[i] != xs[i] for i in range(lo, hi + 1)):
        return None
    div = int(np.prod(xs[hi + 1 :], dtype=np.int64))
    mod = int(np.prod(xs[lo : hi + 1], dtype=np.int64))
    return div, mod

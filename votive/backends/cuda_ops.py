"""numpy_backend's op set on an NVIDIA GPU: cupy arrays, cuBLAS for float products, votive's CUDA kernels
(votive/quant/cusrc) for quantized weights, norms, activations, RoPE and attention.

`CudaOps(xp, kernels)` is written against an array module `xp` and a kernel provider (`kernels.function(name)`
returns a callable taking `(grid, block, args)`, as cupy's RawKernel does). `votive.backends.cupy_backend` builds
it with cupy and `votive.quant.cuda_kernels.CupyKernels`; the tests also build it with numpy and a CPU
emulation of the same kernels, so every line here runs without a GPU too. It therefore uses only what numpy and
cupy share, and never converts device arrays implicitly: weights go to the device once, at load
(`asarray`, `make_linear`), and results come back only through `to_numpy`.

Arrays are float32 unless said otherwise; the KV cache is float16, as on the CPU.
"""

from __future__ import annotations

import logging

import numpy as np

from votive.errors import InputError, KernelError
from votive.quant.cuda_kernels import QUANT_FORMATS

log = logging.getLogger("votive")

NULL = np.uint64(0)  # a null pointer argument (cupy and the emulator both pass an 8-byte scalar as is)
MATVEC_MAX_TOKENS = 8  # quant.cu: qmatvec takes up to this many rows of x; more go to the tiled qmatmul
MATVEC_ROWS_PER_BLOCK = 4  # quant.cu: one warp per weight row, 128 threads
MATMUL_TILE = 64  # quant.cu: rows and tokens per qmatmul block
# From this many rows of x on, a product widens the weight to float32 (qdequant) and lets cuBLAS multiply: for a
# prompt that beats the tiled qmatmul several times over. Weights whose float32 copy would exceed the scratch
# limit keep to qmatmul.
DEQUANTIZE_MIN_TOKENS = 16
DEQUANTIZE_MAX_BYTES = 256 * 2**20
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
    """The backend op set on a CUDA device. See the module docstring; the methods mirror numpy_backend's."""

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
        quant.cu lacks (Q2_K, Q3_K) is widened to float32 once, here, with a warning about the memory it costs.
        """
        info = gguf.tensors[name]
        type_id = info.ggml_type.id
        rows, cols = info.shape
        data = gguf[name]
        if type_id == 0:
            return GpuDenseLinear(self, self.xp.asarray(data), name)
        if type_id in QUANT_FORMATS and cols % 8 == 0:
            blocks = np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)  # no copy of a mapped tensor
            return GpuQuantLinear(self, self.xp.asarray(blocks), type_id, (rows, cols), name, host=blocks)
        from votive.quant.codecs import dequantize

        log.warning("votive: %s (%s) has no GPU kernel; widened to float32 (%.0f MB on the GPU)", name,
                    info.ggml_type.name, rows * cols * 4 / 2**20)
        return GpuDenseLinear(self, self.xp.asarray(dequantize(data, type_id).reshape(rows, cols)), name)

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
        self._run("gelu_erf", (_blocks(x.size),), (ELEMENTWISE_THREADS,), x, NULL if bias is None else bias,
                  _i64(x.size), _i32(x.shape[-1]))
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
        self._run(kernel, (_blocks(gate.size),), (ELEMENTWISE_THREADS,), gate, up, _i64(gate.size))
        return gate

    def rope_table(self, base: float, head_dim: int, n_positions: int):
        """The CPU backend's table (n_positions, head_dim), cos and sin interleaved, copied to the device once:
        both backends rotate by the very same angles."""
        from votive.backends import numpy_backend

        return self.xp.asarray(numpy_backend.rope_table(base, head_dim, n_positions))

    def rope(self, x, table, neox: bool):
        """Rotate x (n, heads, head_dim) in place by its positions' table rows (n, head_dim); returns x."""
        x = self._dense(x, "rope")
        n, heads, head_dim = x.shape
        if table.shape != (n, head_dim):
            raise KernelError(f"rope: table rows {table.shape} do not fit x {x.shape}")
        table = self._dense(table, "rope table")
        self._run("rope", (_blocks(n * heads * head_dim // 2),), (ELEMENTWISE_THREADS,), x, table, _i32(n),
                  _i32(heads), _i32(head_dim), _i32(bool(neox)))
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


class GpuQuantLinear:
    """y = x @ W.T for W kept as stored (GGML blocks, or F16 / BF16 halves) in device memory, uint8
    (out_features, bytes_per_row), multiplied by quant.cu without ever being widened."""

    def __init__(self, ops: CudaOps, blocks, ggml_type: int, shape: tuple[int, int], name: str = "", host=None):
        self.ops = ops
        self.blocks = blocks  # (out, bytes_per_row) uint8 on the device
        self.host = host  # the same bytes in host memory (a view of the mapped file), or None
        self.ggml_type = ggml_type
        self.suffix = QUANT_FORMATS[ggml_type]
        self.out_features, self.in_features = shape
        self.name = name

    def __call__(self, x):
        """x (n, in) float32 -> (n, out): qmatvec for a few rows (decoding), the tiled qmatmul for more, and for
        many (a prompt) cuBLAS on the weight widened for the call."""
        ops = self.ops
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise KernelError(f"{self.name}: input {x.shape} is not (n, {self.in_features})")
        x = ops._dense(x, f"{self.name} input")
        if _address(x) % 16:  # qmatvec reads x as float4: a view that starts off 16 bytes gets its own copy
            x = x.copy()
        n = x.shape[0]
        y = ops.xp.empty((n, self.out_features), ops.xp.float32)  # (n, out)
        if n >= DEQUANTIZE_MIN_TOKENS and 4 * self.out_features * self.in_features <= DEQUANTIZE_MAX_BYTES:
            return x @ self.dequantize().T  # (n, out); the widened weight is dropped right after
        args = (self.blocks, x, y, _i32(self.out_features), _i32(self.in_features), _i32(n))
        if n <= MATVEC_MAX_TOKENS:
            grid = (-(-self.out_features // MATVEC_ROWS_PER_BLOCK),)
            ops._run(f"qmatvec_{self.suffix}", grid, (32 * MATVEC_ROWS_PER_BLOCK,), *args)
        else:
            grid = (-(-self.out_features // MATMUL_TILE), -(-n // MATMUL_TILE))
            ops._run(f"qmatmul_{self.suffix}", grid, (256,), *args)
        return y

    def rows(self, ids):
        """Embedding lookup: rows `ids` (host integers) of the weight as float32 (n, in), on the device."""
        ids = _row_ids(ids, self.out_features, self.name)
        ops = self.ops
        out = ops.xp.empty((ids.size, self.in_features), ops.xp.float32)
        groups = ids.size * (self.in_features // 8)
        ops._run(f"qget_rows_{self.suffix}", (_blocks(groups),), (ELEMENTWISE_THREADS,), self.blocks,
                 ops.xp.asarray(ids), out, _i32(ids.size), _i32(self.out_features), _i32(self.in_features))
        return out

    @classmethod
    def fused(cls, linears: list) -> "FusedProduct | None":
        """One product for several weights of one format and width that multiply the same x (q/k/v, gate/up),
        for votive.backends.numpy_linears.FusedLinears; None when they differ."""
        first = linears[0]
        if any(lin.ggml_type != first.ggml_type or lin.in_features != first.in_features or lin.ops is not first.ops
               for lin in linears):
            return None
        return FusedProduct(linears)

    def dequantize(self):
        """The whole weight as float32 (out, in) on the device (tests; a caller that wants cuBLAS on it)."""
        ops = self.ops
        out = ops.xp.empty((self.out_features, self.in_features), ops.xp.float32)
        groups = self.out_features * (self.in_features // 8)
        ops._run(f"qdequant_{self.suffix}", (_blocks(groups),), (ELEMENTWISE_THREADS,), self.blocks, out,
                 _i32(self.out_features), _i32(self.in_features))
        return out


class FusedProduct:
    """Weights stacked into one device matrix, so that one kernel computes all their products for a decoding step;
    each linear keeps a view of its own rows (the separate copies are freed). Calling it returns the products:
    for one token, views of one output; for more, each linear's own (contiguous) output."""

    def __init__(self, linears: list[GpuQuantLinear]):
        first = linears[0]
        self.linears = linears
        xp = first.ops.xp
        if all(lin.host is not None for lin in linears):  # stacked from the mapped file: one upload, no kernel
            blocks = xp.asarray(np.concatenate([lin.host for lin in linears]))  # (sum of rows, bytes_per_row)
        else:
            blocks = xp.concatenate([lin.blocks for lin in linears])
        self.bounds = []
        start = 0
        for lin in linears:
            lin.blocks = blocks[start : start + lin.out_features]
            self.bounds.append((start, start + lin.out_features))
            start += lin.out_features
        self.whole = GpuQuantLinear(first.ops, blocks, first.ggml_type, (start, first.in_features),
                                    "+".join(lin.name for lin in linears))

    def __call__(self, x) -> list:
        if x.shape[0] != 1:  # a prompt: separate products, so that nothing downstream copies a strided view
            return [lin(x) for lin in self.linears]
        y = self.whole(x)  # (1, sum of rows)
        return [y[:, a:b] for a, b in self.bounds]


class GpuDenseLinear:
    """y = x @ W.T for a float32 weight (out, in) on the device, by cuBLAS."""

    def __init__(self, ops: CudaOps, weight, name: str = ""):
        self.ops = ops
        self.weight = weight  # (out, in) float32 on the device
        self.name = name
        self.out_features, self.in_features = weight.shape

    def __call__(self, x):
        return self.ops.xp.ascontiguousarray(x, dtype=self.ops.xp.float32) @ self.weight.T  # (n, out)

    def rows(self, ids):
        ids = _row_ids(ids, self.out_features, self.name)
        return self.weight[self.ops.xp.asarray(ids)]


def _address(a) -> int:
    """Where an array's first element is: cupy's device pointer, or numpy's host address (the emulator)."""
    ptr = getattr(a.data, "ptr", None)
    return ptr if ptr is not None else a.ctypes.data


def _row_ids(ids, rows: int, name: str) -> np.ndarray:
    """Host integer ids as int64 (n,), each checked against the table's rows: InputError naming the first bad one."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= rows)]
    if bad.size:
        raise InputError(f"token id {int(bad[0])} is outside the vocabulary ({rows} rows of {name})")
    return ids


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

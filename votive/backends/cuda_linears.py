"""Linear layers on a CUDA device: the drop-in `linear` a decoder is built with on the cupy backend, as
`votive.backends.numpy_linears` is on the CPU (the contract both keep: `votive.backends.ops.Linear`).

`make_linear` copies a GGUF tensor to the device once, from the file's map. Quantized weights (and F16 / BF16)
stay as stored and are multiplied by quant.cu (votive/quant/cusrc) through `GpuQuantLinear`; F32 goes to cuBLAS
through `GpuDenseLinear`. Every linear holds the `CudaOps` it was made by and launches its kernels through it, so
the same code runs on cupy and on the tests' CPU emulator (see votive.backends.cuda_ops).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from votive.errors import InputError, KernelError
from votive.quant.cuda_kernels import QUANT_FORMATS

if TYPE_CHECKING:  # cuda_ops imports this module to make its linears
    from votive.backends.cuda_ops import CudaOps

log = logging.getLogger("votive")

MATVEC_MAX_TOKENS = 8  # quant.cu: qmatvec takes up to this many rows of x; more go to the tiled qmatmul
MATVEC_ROWS_PER_BLOCK = 4  # quant.cu: one warp per weight row, 128 threads
MATMUL_TILE = 64  # quant.cu: rows and tokens per qmatmul block
# From this many rows of x on, a product widens the weight to float32 (qdequant) and lets cuBLAS multiply: for a
# prompt that beats the tiled qmatmul several times over. Weights whose float32 copy would exceed the scratch
# limit keep to qmatmul.
DEQUANTIZE_MIN_TOKENS = 16
DEQUANTIZE_MAX_BYTES = 256 * 2**20
GROUP = 8  # quant.cu decodes 8 consecutive values of a row at a time (a thread each in qget_rows, qdequant)


def make_linear(ops: CudaOps, gguf, name: str):
    """The linear layer for GGUF tensor `name` on `ops`'s device, its weight copied there once, from the map.

    A format quant.cu lacks (Q2_K, Q3_K), or a row width that is not a whole number of its 8-value groups, is
    widened to float32 once, here, with a warning about the memory it costs.
    """
    info = gguf.tensors[name]
    type_id = info.ggml_type.id
    rows, cols = info.shape
    data = gguf[name]
    if type_id == 0:
        return GpuDenseLinear(ops, ops.xp.asarray(data), name)
    if type_id in QUANT_FORMATS and cols % GROUP == 0:
        blocks = np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)  # no copy of a mapped tensor
        return GpuQuantLinear(ops, ops.xp.asarray(blocks), type_id, (rows, cols), name, host=blocks)
    from votive.quant.codecs import dequantize

    log.warning("votive: %s (%s) has no GPU kernel; widened to float32 (%.0f MB on the GPU)", name,
                info.ggml_type.name, rows * cols * 4 / 2**20)
    return GpuDenseLinear(ops, ops.xp.asarray(dequantize(data, type_id).reshape(rows, cols)), name)


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
        args = (self.blocks, x, y, np.int32(self.out_features), np.int32(self.in_features), np.int32(n))
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
        ops._run_items(f"qget_rows_{self.suffix}", ids.size * (self.in_features // GROUP), self.blocks,
                       ops.xp.asarray(ids), out, np.int32(ids.size), np.int32(self.out_features),
                       np.int32(self.in_features))
        return out

    @classmethod
    def fused(cls, linears: list) -> FusedProduct | None:
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
        ops._run_items(f"qdequant_{self.suffix}", self.out_features * (self.in_features // GROUP), self.blocks,
                       out, np.int32(self.out_features), np.int32(self.in_features))
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

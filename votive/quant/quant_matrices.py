"""GGML weights bound once to the C product, for a decoder that multiplies by the same matrices every token.

`KernelLibrary.matrix` and `KernelLibrary.group` (votive.quant.kernels) check the weights and hand them here:
a QuantMatrix is one weight, `m(x)`; a QuantMatrixGroup is weights sharing an input (a layer's q, k and v),
`q, k, v = g(x)`, one C call with x quantized once. Both go through vt_qmatmul_group, which reads the weights
through a table of struct vt_qmatrix built here once, so a call checks only x and out: a decoder makes ~200
products per token, each of tens of microseconds, and checking every weight's layout each time would show.
"""

from __future__ import annotations

import ctypes

import numpy as np

from votive.quant.kernel_args import FLOAT32, VT_OK, activations, data_address, output, refusal


class QMatrix(ctypes.Structure):
    """struct vt_qmatrix in csrc/votive.h: one weight of a grouped product."""

    _fields_ = [("w", ctypes.c_void_p),  # rows of GGML blocks
                ("w_stride", ctypes.c_int64),  # bytes from one row to the next
                ("rows", ctypes.c_int64),  # out_features
                ("type", ctypes.c_int32),  # GGML type id
                ("unused", ctypes.c_int32)]  # 0


class BoundWeights:
    """Checked weights and the struct vt_qmatrix table the C side reads them through.

    `run` is the C call itself (benchmarks/kernels_bench.py wraps it to time the products).
    """

    __slots__ = ("blocks", "type_id", "out_features", "in_features", "_group_fn", "_table", "_table_address")

    def __init__(self, group_fn, weights: list[tuple], in_features: int):
        """group_fn: vt_qmatmul_group as ctypes binds it; weights: (blocks, type id, row stride in bytes,
        out_features) per matrix, as kernel_args.qmatmul_group_args returns them."""
        self.blocks = [blocks for blocks, *_ in weights]  # kept alive: the C side reads them by address
        self.type_id = tuple(type_id for _, type_id, _, _ in weights)
        self.out_features = tuple(rows for *_, rows in weights)
        self.in_features = in_features
        self._group_fn = group_fn
        self._table = (QMatrix * len(weights))(*((data_address(blocks), stride, rows, type_id, 0)
                                                  for blocks, type_id, stride, rows in weights))
        self._table_address = ctypes.addressof(self._table)

    def run(self, out: np.ndarray, x: np.ndarray, n: int) -> None:
        """out = the products of x's n rows with every bound matrix, one matrix's (n, rows) after another."""
        status = self._group_fn(data_address(out), self._table_address, len(self._table), data_address(x), n,
                                self.in_features)
        if status != VT_OK:
            raise refusal("qmatmul", status)


class QuantMatrix(BoundWeights):
    """A GGML-stored weight bound to the C qmatmul, its layout checked once (KernelLibrary.matrix).

    Calling it multiplies: `m(x)` is `x @ W.T` as KernelLibrary.qmatmul computes it; `m(x, out)` writes out.
    """

    __slots__ = ()

    def __init__(self, group_fn, weights: list[tuple], in_features: int):
        super().__init__(group_fn, weights, in_features)
        (self.blocks,), (self.type_id,), (self.out_features,) = self.blocks, self.type_id, self.out_features

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        n = activations("qmatmul", x, self.in_features)
        out = output("qmatmul", out, (n, self.out_features) if x.ndim == 2 else (self.out_features,),
                     reads=(("x", x),))
        self.run(out, x, n)
        return out


class QuantMatrixGroup(BoundWeights):
    """Weights multiplying the same x in one C call (KernelLibrary.group): `g(x)` returns their products."""

    __slots__ = ("_total",)

    def __init__(self, group_fn, weights: list[tuple], in_features: int):
        super().__init__(group_fn, weights, in_features)
        self._total = sum(self.out_features)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """[x @ W.T for each W]: float32 (n, out_features) each, or (out_features,) for a 1-D x; each one a
        C-contiguous part of one buffer."""
        n = activations("qmatmul", x, self.in_features)
        buffer = np.empty(n * self._total, FLOAT32)
        self.run(buffer, x, n)
        outs, start = [], 0
        for rows in self.out_features:
            part = buffer[start : start + n * rows]
            outs.append(part.reshape(n, rows) if x.ndim == 2 else part)
            start += n * rows
        return outs

"""A packed batch through every layer of a BERT-style encoder in one C call (csrc/encoder_pass.c).

A layer is seven kernel calls, each a few microseconds of Python, argument checks and ctypes around a kernel that
takes tens: for one query through MiniLM, a tenth of the time. The C pass calls the same kernels with the same
arguments as `EncoderLayer.packed` (votive/models/bert.py), so its output is that method's to the bit
(tests/test_encoder_pass.py holds them equal); the method stays the slow twin and runs whatever the pass does not
take.

A model takes the pass on the numpy backend with the C library when each layer's products are what the packed
method would hand to C anyway: float32 C-contiguous matrices (`kernels.linear`'s C path, a memory-mapped
checkpoint's views included) or int8 linears with their AVX512-VNNI kernel (`quantize="int8"`). GGUF-held and
Q8_0 linears keep the per-op path. Float q, k and v are read as stored and multiplied as one matrix on the C side
(the method stacks them into a copy, `EncoderLayer.qkv`, made only when the method runs).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np

from votive.errors import KernelError
from votive.quant.kernel_args import data_address, kept_address

_P, _I64, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


class Matrix(ctypes.Structure):
    """struct vt_encoder_matrix (csrc/votive.h)."""

    _fields_ = [("w", _P), ("panels", _P), ("packed", _P), ("scales", _P), ("sums", _P), ("bias", _P)]


class Layer(ctypes.Structure):
    """struct vt_encoder_layer (csrc/votive.h)."""

    _fields_ = [("q", Matrix), ("k", Matrix), ("v", Matrix), ("wo", Matrix), ("up", Matrix), ("down", Matrix),
                ("up_bias", _P), ("attn_norm_w", _P), ("attn_norm_b", _P), ("ffn_norm_w", _P), ("ffn_norm_b", _P)]


class Dims(ctypes.Structure):
    """struct vt_encoder_dims (csrc/votive.h)."""

    _fields_ = [("n_layers", _I64), ("dim", _I64), ("heads", _I64), ("ffn", _I64), ("eps", _F), ("scale", _F)]


class EncoderPass:
    """`pass_(x, offsets)`: x (rows, dim) float32, the packed texts' embeddings (text s at rows offsets[s] ..
    offsets[s + 1] - 1), becomes their last hidden states, in place; returns x."""

    def __init__(self, layers: list, entry):
        first = layers[0]
        self._entry = entry
        self._kept = []  # every array the C side reads by address
        self._layers = (Layer * len(layers))(*(self._layer(layer) for layer in layers))
        self.dim, self.ffn = first.cfg.hidden_size, first.cfg.intermediate_size
        self._dims = Dims(n_layers=len(layers), dim=self.dim, heads=first.n_heads, ffn=self.ffn,
                          eps=first.cfg.layer_norm_eps, scale=1.0 / math.sqrt(first.head_dim))

    def __call__(self, x: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        offsets = np.ascontiguousarray(offsets, np.int64)
        if offsets.ndim != 1 or offsets.size < 2 or x.shape != (int(offsets[-1]), self.dim):
            raise KernelError(f"encoder_pass: rows {getattr(x, 'shape', None)} do not match offsets ending at "
                              f"{offsets.ravel()[-1:]} and width {self.dim}")
        if x.dtype != np.float32 or not (x.flags.c_contiguous and x.flags.writeable):
            x = np.array(x, np.float32, order="C")  # a read-only or other array is copied, never written
        scratch = np.empty(x.shape[0] * (5 * self.dim + self.ffn), np.float32)
        status = self._entry(data_address(x), data_address(scratch), data_address(offsets), offsets.size - 1,
                             ctypes.addressof(self._layers), ctypes.addressof(self._dims))
        if status != 0:
            from votive.quant.kernel_args import refusal

            raise refusal("encoder_pass", status)
        return x

    def _vector(self, a) -> int | None:
        return kept_address(self._kept, a)

    def _matrix(self, weight, bias) -> Matrix:
        bias = self._vector(bias)
        self._kept.append(weight)  # an array, or an EncoderI8Linear, whose arrays live as long as it does
        if isinstance(weight, np.ndarray):
            return Matrix(w=data_address(weight), bias=bias)
        if hasattr(weight, "panels"):  # DensePanels
            return Matrix(panels=data_address(weight.panels), bias=bias)
        return Matrix(packed=data_address(weight.packed), scales=data_address(weight.scales),
                      sums=data_address(weight.sums), bias=bias)

    def _layer(self, layer) -> Layer:
        w = layer.w
        if _float_qkv(w):  # read as stored: the C side multiplies the three as one
            q, k, v = (self._matrix(w[m], w[b]) for m, b in (("wq", "bq"), ("wk", "bk"), ("wv", "bv")))
        else:  # packed float or int8, stacked (DensePanels / EncoderI8Linear.concatenate)
            q, k, v = self._matrix(layer.qkv["wqkv"], layer.qkv["bqkv"]), Matrix(), Matrix()
        return Layer(q=q, k=k, v=v, wo=self._matrix(w["wo"], w["bo"]),
                     up=self._matrix(w["w_up"], None), down=self._matrix(w["w_down"], w["b_down"]),
                     up_bias=self._vector(w["b_up"]), attn_norm_w=self._vector(w["attn_norm.w"]),
                     attn_norm_b=self._vector(w["attn_norm.b"]), ffn_norm_w=self._vector(w["ffn_norm.w"]),
                     ffn_norm_b=self._vector(w["ffn_norm.b"]))


def encoder_pass_for(ops, layers: list) -> EncoderPass | None:
    """The layers' EncoderPass (bert.EncoderLayer objects, one configuration), or None where one cannot run them
    exactly as `EncoderLayer.packed` does (see the module docstring)."""
    if getattr(ops, "name", None) != "numpy" or not layers:
        return None
    from votive.quant import kernels

    lib = kernels.get()
    if lib is None:
        return None
    for layer in layers:
        w = layer.w
        if _float_qkv(w):
            qkv = [w["wq"], w["wk"], w["wv"]]
        elif layer.qkv is not None:
            qkv = [layer.qkv["wqkv"]]
        else:
            return None
        if not all(_taken(m) for m in (*qkv, w["wo"], w["w_up"], w["w_down"])):
            return None
    return EncoderPass(layers, lib.step_entry("vt_encoder_pass"))


def _float_qkv(w: dict) -> bool:
    """q, k and v are float arrays or packed float matrices (DensePanels), which the pass multiplies as one."""
    from votive.backends.numpy_linears import DensePanels

    return all(isinstance(w[m], np.ndarray) for m in ("wq", "wk", "wv")) or \
        all(isinstance(w[m], DensePanels) for m in ("wq", "wk", "wv"))


def _taken(weight) -> bool:
    """A product the pass runs as the packed method would: C's float linear (of a matrix as stored or packed) or the
    int8 VNNI kernel."""
    if isinstance(weight, np.ndarray):
        return weight.dtype == np.float32 and weight.flags.c_contiguous and weight.ndim == 2
    from votive.backends.numpy_linears import DensePanels, EncoderI8Linear

    return isinstance(weight, DensePanels) or (isinstance(weight, EncoderI8Linear) and weight._entry is not None)

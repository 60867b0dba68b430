"""One decoded token through every layer of a LLaMA-style decoder in one C call (csrc/decode_step.c).

A token of a small model is ~12 kernel calls per layer, each a few microseconds of Python and ctypes around a
kernel that may itself take one: on SmolLM2-135M (30 layers) that was a fifth of the time per token. The C step
calls the same kernels with the same arguments as `LlamaModel.forward` does for one position, so a token
decoded either way is the same to the bit (tests/test_decode_step.py holds them equal for every family taking
it); the forward stays the slow twin and runs everything the step does not take.

A model takes the step when it runs on the numpy backend with the C library, every product of its layers is a
bound C product (`QuantMatrix`, `QuantMatrixGroup`), and its class says what its layer adds through
`LlamaModel.step_fields` *below every method the step stands in for* (`STANDS_IN_FOR`): a family overriding
`qkv`, `rotate` or `attention` without saying so is never run by the step. `VOTIVE_DECODE_STEP=0` turns it off
(benchmarks compare the two).
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from votive.errors import KernelError
from votive.quant.kernel_args import data_address, kept_address

STANDS_IN_FOR = ("qkv", "rotate", "attention", "fuse", "forward", "step_fields")
_P, _I64, _F = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float


class Layer(ctypes.Structure):
    """struct vt_decoder_layer (csrc/votive.h)."""

    _fields_ = [("attn_norm", _P), ("ffn_norm", _P), ("q_bias", _P), ("k_bias", _P), ("v_bias", _P),
                ("q_norm", _P), ("k_norm", _P), ("post_attn_norm", _P), ("post_ffn_norm", _P), ("rope_table", _P),
                ("gelu_table", _P), ("qkv", _P), ("wo", _P), ("gate_up", _P), ("down", _P), ("window", _I64),
                ("q_scale", _F), ("scale", _F)]


class Dims(ctypes.Structure):
    """struct vt_decoder_dims (csrc/votive.h)."""

    _fields_ = [("n_layers", _I64), ("dim", _I64), ("heads", _I64), ("kv_heads", _I64), ("head_dim", _I64),
                ("ffn", _I64), ("capacity", _I64), ("neox", _I64), ("eps", _F), ("unused", _F)]


class DecodeStep:
    """`step(x, cache, start)`: x (1, dim) float32, the token's embedding, becomes the residual stream after the
    last layer, with position `start` of every layer written into `cache`."""

    def __init__(self, model, entry):
        cfg = model.cfg
        self._entry = entry
        self._kept = []  # every array and table the C side reads by address
        self._positions = model.n_ctx  # rows of every RoPE table
        rows = [self._layer(model, i, w) for i, w in enumerate(model.layers)]
        self._layers = (Layer * len(rows))(*rows)
        self._dims = dict(n_layers=cfg.n_layers, dim=cfg.dim, heads=cfg.n_heads, kv_heads=cfg.n_kv_heads,
                          head_dim=cfg.head_dim, ffn=cfg.ffn_dim, neox=int(model.rope_neox), eps=cfg.norm_eps)
        q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
        self._scratch = np.empty(2 * cfg.dim + 3 * q + 3 * kv + 2 * cfg.ffn_dim, np.float32)
        self._by_capacity: dict[int, Dims] = {}

    def __call__(self, x: np.ndarray, cache, start: int) -> np.ndarray:
        capacity = cache.k.shape[2]
        dims = self._by_capacity.get(capacity)
        if dims is None:
            dims = self._by_capacity[capacity] = Dims(capacity=capacity, **self._dims)
        status = self._entry(data_address(x), data_address(self._scratch), ctypes.addressof(self._layers),
                             ctypes.addressof(dims), data_address(cache.k), data_address(cache.v), start)
        if status != 0:
            from votive.quant.kernel_args import refusal

            raise refusal("decode_step", status)
        return x

    def takes(self, x, cache, start: int) -> bool:
        """Whether this call is one the step computes exactly as the forward would (else the forward runs)."""
        k, v = cache.k, cache.v
        return (isinstance(k, np.ndarray) and isinstance(v, np.ndarray) and k.dtype == v.dtype == np.float16
                and k.flags.c_contiguous and v.flags.c_contiguous and k.ndim == 4
                and v.shape == (k.shape[0], k.shape[1], k.shape[3], k.shape[2])
                and k.shape[0] == self._dims["n_layers"] and k.shape[1] == self._dims["kv_heads"]
                and k.shape[3] == self._dims["head_dim"]
                and 0 <= start < min(k.shape[2], self._positions)
                and x.shape == (1, self._dims["dim"]) and x.dtype == np.float32 and x.flags.c_contiguous
                and x.flags.writeable)

    def _vector(self, a) -> int | None:
        return kept_address(self._kept, a)

    def _table(self, bound) -> int:
        self._kept.append(bound)
        return bound._table_address

    def _layer(self, model, i: int, w: dict) -> Layer:
        """Layer i as the C step reads it: LLaMA's unless `step_fields` says otherwise (LlamaModel.step_fields)."""
        fields = model.step_fields(i, w)
        rope = _rope_table(model, fields)
        gelu = None
        if fields.get("geglu"):
            from votive.backends.numpy_backend import _gelu_half_table

            gelu = _gelu_half_table()
        vector = self._vector
        return Layer(attn_norm=vector(w["attn_norm"]), ffn_norm=vector(w["ffn_norm"]),
                     q_bias=vector(fields.get("q_bias")), k_bias=vector(fields.get("k_bias")),
                     v_bias=vector(fields.get("v_bias")), q_norm=vector(fields.get("q_norm")),
                     k_norm=vector(fields.get("k_norm")), post_attn_norm=vector(fields.get("post_attn_norm")),
                     post_ffn_norm=vector(fields.get("post_ffn_norm")), rope_table=vector(rope),
                     gelu_table=vector(gelu), qkv=self._table(w["qkv"]._group), wo=self._table(w["wo"]._matrix),
                     gate_up=self._table(w["gate_up"]._group), down=self._table(w["w_down"]._matrix),
                     window=int(fields.get("window", model.cfg.window or 0)), q_scale=fields.get("q_scale", 1.0),
                     scale=fields.get("scale", model.scale))


def decode_step_enabled(environ=os.environ) -> bool:
    """$VOTIVE_DECODE_STEP: 1 or unset, on; 0, off (the handlers check it at init too: settings.py)."""
    raw = environ.get("VOTIVE_DECODE_STEP", "").strip()
    if raw not in ("", "0", "1"):
        raise KernelError(f"VOTIVE_DECODE_STEP must be 0 or 1, found {raw[:40]!r}")
    return raw != "0"


def decode_step_for(model) -> DecodeStep | None:
    """The model's DecodeStep, or None where it cannot take one (see the module docstring)."""
    if not decode_step_enabled() or model.backend != "numpy":
        return None
    from votive.quant import kernels

    lib = kernels.get()
    if lib is None or not _says_what_its_layer_adds(type(model)):
        return None
    from votive.backends.numpy_linears import QuantLinear

    for i, w in enumerate(model.layers):
        groups = (w.get("qkv"), w.get("gate_up"))
        if any(getattr(g, "_group", None) is None for g in groups) or \
                [len(g._group.out_features) for g in groups] != [3, 2]:
            return None
        if not all(isinstance(w.get(name), QuantLinear) and w[name]._matrix is not None for name in ("wo", "w_down")):
            return None
        fields = model.step_fields(i, w)
        if fields is None:
            return None
        rope = _rope_table(model, fields)
        if rope is not None and getattr(rope, "shape", None) != (model.n_ctx, model.cfg.head_dim):
            return None
    return DecodeStep(model, lib.step_entry("vt_decode_step"))


def _rope_table(model, fields: dict):
    """Layer's RoPE table: the model's, the one `step_fields` names (Gemma 3's local layers), or None (no RoPE)."""
    return fields.get("rope_table", model.rope) if fields.get("rope", True) else None


def _says_what_its_layer_adds(cls) -> bool:
    """True when the class defining `step_fields` is, or derives from, the one defining each method the step
    stands in for: no family changed its layer below the declaration of what that layer adds."""
    owner = _definer(cls, "step_fields")
    return all(issubclass(owner, _definer(cls, name)) for name in STANDS_IN_FOR)


def _definer(cls, name: str) -> type:
    return next(c for c in cls.__mro__ if name in vars(c))

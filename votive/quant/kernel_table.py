"""The C kernels' table: a row per kernel (`OPS`) with its C entry and parameters, its numpy twin and its argument
checks, which `votive.quant.kernels` binds (a KernelLibrary method per row; a module function choosing C or the
twin where there is one). A new kernel is a row here, then a method and a function there."""

from __future__ import annotations

import ctypes
from typing import Callable, NamedTuple

from votive.quant import kernel_args

PTR, I64, FLOAT, INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int  # C parameter types


class KernelOp(NamedTuple):
    """One C kernel: its entry as ctypes calls it, its numpy twin, its argument checks."""

    c_entry: str  # the function in csrc/votive.h
    params: tuple[tuple[str, type], ...]  # its parameters (C name, ctypes type); the first is the array it writes
    twin_name: str | None  # kernels_ref's numpy function computing the same; None: the row's comment says what is
    checks: Callable  # kernel_args' function taking the Python arguments and returning them as the kernel takes them
    in_place: bool  # writes its input array and returns it (else a new array or the caller's `out`)

    @property
    def twin(self) -> Callable | None:
        """The numpy function computing the same, from kernels_ref: imported on first use, as a cold start whose C
        kernels load never runs a twin (the module is a 39 KB read)."""
        if self.twin_name is None:
            return None
        from votive.quant import kernels_ref

        return getattr(kernels_ref, self.twin_name)


# The kernels, keyed by the name of the KernelLibrary method (and module function, where there is one) running
# them; qmatmul_group runs behind `matrix` and `group`.
OPS: dict[str, KernelOp] = {
    "gelu": KernelOp(
        "vt_gelu", (("x", PTR), ("bias", PTR), ("rows", I64), ("cols", I64)),
        "gelu_ref", kernel_args.gelu_args, in_place=True),
    "layer_norm": KernelOp(
        "vt_layer_norm", (("out", PTR), ("x", PTR), ("residual", PTR), ("weight", PTR), ("bias", PTR), ("rows", I64),
                          ("cols", I64), ("eps", FLOAT)),
        "layer_norm_ref", kernel_args.layer_norm_args, in_place=False),  # out may be x or residual
    "softmax": KernelOp(
        "vt_softmax", (("x", PTR), ("mask", PTR), ("mask_div", I64), ("mask_mod", I64), ("scale", FLOAT), ("rows", I64),
                       ("cols", I64)),
        "softmax_ref", kernel_args.softmax_args, in_place=True),
    "linear": KernelOp(
        "vt_linear", (("y", PTR), ("x", PTR), ("w", PTR), ("b", PTR), ("m", I64), ("n", I64), ("k", I64)),
        "linear_ref", kernel_args.linear_args, in_place=False),
    "encoder_attention": KernelOp(
        "vt_encoder_attention", (("out", PTR), ("qkv", PTR), ("offsets", PTR), ("n_seqs", I64), ("heads", I64),
                                 ("dh", I64), ("scale", FLOAT)),
        "encoder_attention_ref", kernel_args.encoder_attention_args, in_place=False),
    "rms_norm": KernelOp(
        "vt_rms_norm", (("out", PTR), ("x", PTR), ("weight", PTR), ("rows", I64), ("cols", I64), ("eps", FLOAT)),
        "rms_norm_ref", kernel_args.rms_norm_args, in_place=False),
    "swiglu": KernelOp(
        "vt_swiglu", (("out", PTR), ("gate", PTR), ("up", PTR), ("rows", I64), ("cols", I64)),
        "swiglu_ref", kernel_args.swiglu_args, in_place=True),  # out is gate; the twin makes a new one
    "geglu": KernelOp(
        "vt_geglu", (("gate", PTR), ("up", PTR), ("table", PTR), ("rows", I64), ("cols", I64)),
        "geglu_ref", kernel_args.geglu_args, in_place=True),  # into gate; the twin makes a new one
    "rope_cache": KernelOp(
        "vt_rope_cache", (("cache", PTR), ("first", I64), ("n_pos", I64), ("dims", I64), ("base", FLOAT),
                          ("freq_scale", FLOAT), ("freq_factors", PTR), ("ext_factor", FLOAT), ("attn_factor", FLOAT),
                          ("corr_low", FLOAT), ("corr_high", FLOAT)),
        "rope_cache_ref", kernel_args.rope_cache_args, in_place=False),
    "rope": KernelOp(
        "vt_rope", (("x", PTR), ("cache", PTR), ("rows", I64), ("heads", I64), ("dims", I64), ("neox", INT)),
        "rope_ref", kernel_args.rope_args, in_place=True),  # the twin makes a new array
    "attention_f16": KernelOp(
        "vt_attention_f16", (("out", PTR), ("q", PTR), ("k", PTR), ("v", PTR), ("n", I64), ("heads", I64),
                             ("kv_heads", I64), ("dims", I64), ("q_start", I64), ("capacity", I64), ("window", I64),
                             ("scale", FLOAT)),
        "attention_f16_ref", kernel_args.attention_f16_args, in_place=False),
    "qmatmul": KernelOp(
        "vt_qmatmul", (("out", PTR), ("w", PTR), ("type", INT), ("w_stride", I64), ("x", PTR), ("n", I64),
                       ("out_features", I64), ("cols", I64)),
        "qmatmul_ref", kernel_args.qmatmul_args, in_place=False),
    # matrix and group: each product bit for bit qmatmul's, whose twin is qmatmul_ref
    "qmatmul_group": KernelOp(
        "vt_qmatmul_group", (("out", PTR), ("matrices", PTR), ("count", INT), ("x", PTR), ("n", I64), ("cols", I64)),
        None, kernel_args.qmatmul_group_args, in_place=False),
    "get_rows": KernelOp(
        "vt_get_rows", (("out", PTR), ("w", PTR), ("type", INT), ("w_stride", I64), ("n_rows", I64), ("ids", PTR),
                        ("n_ids", I64), ("cols", I64)),
        "get_rows_ref", kernel_args.get_rows_args, in_place=False),
    # F16 / BF16 weights in llama.cpp's arithmetic (csrc/half_kernels.h)
    "half_matmul": KernelOp(
        "vt_half_matmul", (("out", PTR), ("w", PTR), ("type", INT), ("w_stride", I64), ("x", PTR), ("n", I64),
                           ("out_features", I64), ("cols", I64)),
        "half_matmul_ref", kernel_args.half_matmul_args, in_place=False),
    # the bytes of votive.quant.codecs.quantize_activations, which the tests compare it with
    "quantize_rows": KernelOp(
        "vt_quantize_rows", (("out", PTR), ("act_type", INT), ("x", PTR), ("rows", I64), ("cols", I64)),
        None, kernel_args.quantize_rows_args, in_place=False),
}

"""llama.cpp's x86 summation orders of the K-quant products, in numpy: the reference the x86 kernels are held to.

The portable C kernels and `kernels_ref.qmatmul_ref` sum a product in ggml_vec_dot_q*_K_q8_K's order. On x86
llama.cpp's CPU backend uses other routines for some products, and the x86 kernels follow them (vt_order in
csrc/vt_internal.h, chosen per product by ggml_order in csrc/dispatch.c) so that a decoder gives llama.cpp's
logits bit for bit (tests/test_decoders.py). Each order here mirrors one of those routines, as vendored by
llama-cpp-python 0.3.36, which made the reference outputs:

    repack    ggml_gemv_q4_K_8x8_q8_K (ggml/src/ggml-cpu/arch/x86/repack.cpp): Q4_K matrices of a multiple of 8
              rows, repacked at load, times one activation row. Per output, block after block, each block's
              integer sum is multiply-added into one float with d times the activation's d, its min sum into
              a second with dmin times the activation's d; the second is taken off the first at the end.
    repack_4  ggml_gemm_q4_K_8x8_q8_K (same file): the same matrices times activation rows taken in fours
              (all but the last n % 4 of n > 3): the same two floats, fed per 64 elements.
    tiled     the AVX2 microtile kernel of llama.cpp's tiled K-quant matmul (ggml/src/ggml-cpu/tiled/, x86 kernels
              in ggml/src/ggml-cpu/arch/x86/tiled-kernel.cpp): Q3_K..Q6_K (Q4_K where not repacked) times 8
              activation rows or more. Per block, the integer sum times d, less dmin times the min sum (fused),
              is multiply-added into the output with the activation's d.

Integer sums are exact in every order; only these float steps differ, each rounded as fmaf (`kernels_ref.fma32`).
"""

from __future__ import annotations

import numpy as np

from votive.errors import KernelError
from votive.quant.kernels_ref import fma32

# order -> (the GGML type ids whose products llama.cpp sums that way, float steps per 256-element block)
ORDERS = {
    "repack": ((12,), 1),  # Q4_K
    "repack_4": ((12,), 4),
    "tiled": ((11, 12, 13, 14), 1),  # Q3_K, Q4_K, Q5_K, Q6_K
}


def llama_cpp_order_ref(blocks: np.ndarray, ggml_type: int, x: np.ndarray, order: str) -> np.ndarray:
    """x @ W.T for a K-quant W summed in one of llama.cpp's x86 orders (see the module docstring).

    Args:
        blocks: uint8 (rows, bytes_per_row), the weight as stored.
        ggml_type: its GGML type id, one ORDERS[order] names.
        x: float32 (n, in_features), quantized to Q8_K here as the kernels do.
        order: "repack", "repack_4" or "tiled".

    Returns:
        float32 (n, rows).
    """
    from votive.quant.codecs import FORMATS, quantize_q8

    if order not in ORDERS:
        raise KernelError(f"llama_cpp_order_ref: unknown order {order!r} (known: {', '.join(ORDERS)})")
    if ggml_type not in ORDERS[order][0]:
        raise KernelError(f"llama_cpp_order_ref: llama.cpp sums products of GGML types {ORDERS[order][0]} in the "
                          f"{order!r} order, not of type {ggml_type!r}")
    fmt = FORMATS[ggml_type]
    rows, nb = blocks.shape[0], x.shape[1] // 256
    b = blocks.view(fmt.layout).reshape(rows, nb)
    q, scales, *mins = fmt.unpack(b.reshape(-1))  # q (rows * nb, S, L)
    S, L = q.shape[1:]
    q = q.astype(np.int64).reshape(rows, nb, S, L)
    scales = scales.astype(np.int64).reshape(rows, nb, S)
    act = quantize_q8(x, ggml_type).view(FORMATS[15].layout).reshape(x.shape[0], nb)
    qa = act["qs"].astype(np.int64).reshape(-1, nb, S, L)  # (n, nb, S, L)
    da = act["d"]  # (n, nb) float32
    # per (activation, weight row, block, sub-block): scale * sum q * a, and min * sum a (exact integers)
    dots = np.einsum("rbsl,nbsl->nrbs", q, qa) * scales[None]
    d = b["d"].astype(np.float32)  # (rows, nb)
    has_min = bool(mins)
    if has_min:
        min_terms = mins[0].astype(np.int64).reshape(rows, nb, S)[None] * qa.sum(axis=-1)[:, None]  # (n, rows, nb, S)
        dmin = b["dmin"].astype(np.float32)
    per = ORDERS[order][1]
    isum = dots.reshape(*dots.shape[:3], per, -1).sum(axis=-1).astype(np.float32)  # (n, rows, nb, per)
    if has_min:
        imin = min_terms.reshape(*min_terms.shape[:3], per, -1).sum(axis=-1).astype(np.float32)
    out = np.zeros((x.shape[0], rows), np.float32)
    out_min = np.zeros_like(out)
    for k in range(nb):
        for j in range(per):
            if order == "tiled":
                r = isum[..., k, j] * d[None, :, k]
                if has_min:
                    r = fma32(-dmin[None, :, k], imin[..., k, j], r)
                out = fma32(r, da[:, None, k], out)
            else:
                out = fma32(isum[..., k, j], d[None, :, k] * da[:, None, k], out)
                out_min = fma32(imin[..., k, j], dmin[None, :, k] * da[:, None, k], out_min)
    return out - out_min

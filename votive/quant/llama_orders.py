"""llama.cpp's x86 summation orders of quantized products, in numpy: the reference the x86 kernels are held to.

The portable C kernels and `kernels_ref.qmatmul_ref` sum a product in the order of votive.quant.codecs.vec_dot. On
x86 llama.cpp's CPU backend sums some products otherwise, and the x86 kernels follow it (vt_order in
csrc/vt_internal.h, chosen per product by ggml_order in csrc/dispatch.c) so that a decoder gives llama.cpp's
logits bit for bit (tests/test_decoders.py, tests/test_decoder_families.py). Each order here mirrors one of its
routines, as vendored by llama-cpp-python 0.3.36, which made the reference outputs:

    repack    Matrices of a multiple of 8 rows that llama.cpp repacks at load on x86
              (ggml_repack_get_optimal_repack_type in ggml/src/ggml-cpu/repack.cpp: Q4_0 as q4_0_8x8, Q4_K as
              q4_K_8x8), times one activation row.
              Q4_0, ggml_gemv_q4_0_8x8_q8_0 (ggml/src/ggml-cpu/arch/x86/repack.cpp, gemv_q4_b32_8x8_q8_0_lut_avx):
              per output, block after block, the block's integer sum multiply-added into one float with the
              weight's d times the activation's d. Its gemm (ggml_gemm_q4_0_8x8_q8_0, the rows in fours, AVX2
              and AVX-512 paths alike) sums each output the same way, so this order serves any number of rows.
              Q4_K, ggml_gemv_q4_K_8x8_q8_K (same file): the same, with each block's min sum multiply-added into
              a second float with dmin times the activation's d; the second is taken off the first at the end.
    repack_4  ggml_gemm_q4_K_8x8_q8_K (same file): Q4_K repacked, times activation rows taken in fours (all but
              the last n % 4 of n > 3): the same two floats, fed per 64 elements.
    tiled     the AVX2 microtile kernel of llama.cpp's tiled K-quant matmul (ggml/src/ggml-cpu/tiled/, x86 kernels
              in ggml/src/ggml-cpu/arch/x86/tiled-kernel.cpp): Q3_K..Q6_K (Q4_K where not repacked) times 8
              activation rows or more. Per block, the integer sum times d, less dmin times the min sum (fused),
              is multiply-added into the output with the activation's d.
    vec_dot   ggml_vec_dot_q5_0_q8_0 and ggml_vec_dot_q8_0_q8_0, x86 AVX2 (ggml/src/ggml-cpu/arch/x86/quants.c):
              per block the 8 int32 sums of 4 adjacent products (lane l: elements 4l..4l+3), as floats,
              multiply-added into 8 float lanes with the weight's d times the activation's d; the lanes summed at
              the end (hsum_float_8).
              ggml_vec_dot_q5_K_q8_K, same file: Q5_K times fewer than 8 rows. Per block, the 8 int32 lanes of the scaled integer sums (lane l holding elements 4l..4l+3 of
              every 32) are multiply-added into 8 float lanes with d times the activation's d; the mins' sum is
              multiply-added (fused, as the compiler contracts `summs += dmin * sum`) into one float with
              -(the activation's d times dmin). At the end the lanes are summed (hsum_float_8) and that float
              added.

Integer sums are exact in every order; only these float steps differ, each rounded as fmaf (`kernels_ref.fma32`).
"""

from __future__ import annotations

import numpy as np

from votive.errors import KernelError
from votive.quant.kernels_ref import fma32

# order -> the GGML type ids whose products llama.cpp sums that way
ORDERS = {
    "repack": (2, 12),  # Q4_0, Q4_K
    "repack_4": (12,),
    "tiled": (11, 12, 13, 14),  # Q3_K, Q4_K, Q5_K, Q6_K
    "vec_dot": (6, 8, 13),  # Q5_0, Q8_0, Q5_K
}
# float steps per 256-element block, where not one
STEPS = {"repack_4": 4}


def llama_cpp_order_ref(blocks: np.ndarray, ggml_type: int, x: np.ndarray, order: str) -> np.ndarray:
    """x @ W.T for a quantized W summed in one of llama.cpp's x86 orders (see the module docstring).

    Args:
        blocks: uint8 (rows, bytes_per_row), the weight as stored.
        ggml_type: its GGML type id, one ORDERS[order] names.
        x: float32 (n, in_features), quantized here as the kernels do (Q8_0 for Q4_0, Q8_K for K-quants).
        order: "repack", "repack_4", "tiled" or "vec_dot".

    Returns:
        float32 (n, rows).
    """
    if order not in ORDERS:
        raise KernelError(f"llama_cpp_order_ref: unknown order {order!r} (known: {', '.join(ORDERS)})")
    if ggml_type not in ORDERS[order]:
        raise KernelError(f"llama_cpp_order_ref: llama.cpp sums products of GGML types {ORDERS[order]} in the "
                          f"{order!r} order, not of type {ggml_type!r}")
    if ggml_type == 2:
        return _q4_0_repack(blocks, x)
    if order == "vec_dot":
        return _q5_K_vec_dot(blocks, x) if ggml_type == 13 else _dot32_vec_dot(blocks, ggml_type, x)
    return _k_quant(blocks, ggml_type, x, order)


def _q4_0_repack(blocks: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ggml_gemv_q4_0_8x8_q8_0 / ggml_gemm_q4_0_8x8_q8_0: one float per output, one fmaf per 32-element block."""
    from votive.quant.codecs import FORMATS, quantize_q8

    rows, nb = blocks.shape[0], x.shape[1] // 32
    b = blocks.view(FORMATS[2].layout).reshape(rows, nb)
    q = FORMATS[2].unpack(b.reshape(-1)).astype(np.int64).reshape(rows, nb, 32)
    act = quantize_q8(x, 2).view(FORMATS[8].layout).reshape(x.shape[0], nb)
    isum = np.einsum("rbl,nbl->nrb", q, act["qs"].astype(np.int64)).astype(np.float32)  # exact: |isum| < 2^24
    d, da = b["d"].astype(np.float32), act["d"].astype(np.float32)  # (rows, nb), (n, nb)
    out = np.zeros((x.shape[0], rows), np.float32)
    for k in range(nb):
        out = fma32(isum[..., k], d[None, :, k] * da[:, None, k], out)
    return out


def _k_quant_parts(blocks: np.ndarray, ggml_type: int, x: np.ndarray):
    """-> the weight's blocks (rows, nb), quants (rows, nb, S, L), scales (rows, nb, S), mins or None, and the
    activations' quants (n, nb, S, L) and scales d (n, nb), as int64 and float32."""
    from votive.quant.codecs import FORMATS, quantize_q8

    fmt = FORMATS[ggml_type]
    rows, nb = blocks.shape[0], x.shape[1] // 256
    b = blocks.view(fmt.layout).reshape(rows, nb)
    q, scales, *mins = fmt.unpack(b.reshape(-1))  # q (rows * nb, S, L)
    S, L = q.shape[1:]
    q = q.astype(np.int64).reshape(rows, nb, S, L)
    scales = scales.astype(np.int64).reshape(rows, nb, S)
    mins = mins[0].astype(np.int64).reshape(rows, nb, S) if mins else None
    act = quantize_q8(x, ggml_type).view(FORMATS[15].layout).reshape(x.shape[0], nb)
    qa = act["qs"].astype(np.int64).reshape(-1, nb, S, L)
    return b, q, scales, mins, qa, act["d"]


def _k_quant(blocks: np.ndarray, ggml_type: int, x: np.ndarray, order: str) -> np.ndarray:
    """The repack, repack_4 and tiled orders of the K-quants."""
    b, q, scales, mins, qa, da = _k_quant_parts(blocks, ggml_type, x)
    rows, nb = b.shape
    # per (activation, weight row, block, sub-block): scale * sum q * a, and min * sum a (exact integers)
    dots = np.einsum("rbsl,nbsl->nrbs", q, qa) * scales[None]
    d = b["d"].astype(np.float32)  # (rows, nb)
    has_min = mins is not None
    if has_min:
        min_terms = mins[None] * qa.sum(axis=-1)[:, None]  # (n, rows, nb, S)
        dmin = b["dmin"].astype(np.float32)
    per = STEPS.get(order, 1)
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


def _dot32_vec_dot(blocks: np.ndarray, ggml_type: int, x: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_q5_0_q8_0 / ggml_vec_dot_q8_0_q8_0 on x86: 8 float lanes, one multiply-add per block."""
    from votive.quant.codecs import FORMATS, quantize_q8

    fmt = FORMATS[ggml_type]
    rows, nb, n = blocks.shape[0], x.shape[1] // 32, x.shape[0]
    b = blocks.view(fmt.layout).reshape(rows, nb)
    q = fmt.unpack(b.reshape(-1)).astype(np.int64).reshape(rows, nb, 8, 4)
    act = quantize_q8(x, ggml_type).view(FORMATS[8].layout).reshape(n, nb)
    qa = act["qs"].astype(np.int64).reshape(n, nb, 8, 4)
    lanes = np.einsum("rble,nble->nrbl", q, qa).astype(np.float32)  # (n, rows, nb, 8), exact integers
    d, da = b["d"].astype(np.float32), act["d"].astype(np.float32)  # (rows, nb), (n, nb)
    acc = np.zeros((n, rows, 8), np.float32)
    for k in range(nb):
        acc = fma32((d[None, :, k] * da[:, None, k])[..., None], lanes[:, :, k], acc)
    return _hsum_float_8(acc)


def _hsum_float_8(acc: np.ndarray) -> np.ndarray:
    """hsum_float_8 over the last axis of 8 lanes: the upper four onto the lower, then pairs, then the last two."""
    four = acc[..., 4:] + acc[..., :4]
    two = four[..., :2] + four[..., 2:]
    return two[..., 0] + two[..., 1]


def _q5_K_vec_dot(blocks: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ggml_vec_dot_q5_K_q8_K on x86: 8 float lanes of the scaled sums, the mins' term in one float beside them."""
    b, q, scales, mins, qa, da = _k_quant_parts(blocks, 13, x)
    rows, nb, S, L = q.shape
    n = qa.shape[0]
    # lane l of a block: sum over sub-blocks s of scale_s * (elements 4l..4l+3 of s), an exact integer
    lanes = np.einsum("rbsle,nbsle->nrbsl", q.reshape(rows, nb, S, 8, 4), qa.reshape(n, nb, S, 8, 4))
    lanes = (lanes * scales[None, :, :, :, None]).sum(axis=3).astype(np.float32)  # (n, rows, nb, 8)
    msum = (mins[None] * qa.sum(axis=-1)[:, None]).sum(axis=-1).astype(np.float32)  # (n, rows, nb)
    d, dmin = b["d"].astype(np.float32), b["dmin"].astype(np.float32)
    acc = np.zeros((n, rows, 8), np.float32)
    summs = np.zeros((n, rows), np.float32)
    for k in range(nb):
        acc = fma32((da[:, None, k] * d[None, :, k])[..., None], lanes[:, :, k], acc)
        summs = fma32(-(da[:, None, k] * dmin[None, :, k]), msum[:, :, k], summs)
    return _hsum_float_8(acc) + summs

"""ggml's k-quant quantizers: quantize_row_q4_K_ref, quantize_row_q5_K_ref and quantize_row_q6_K_ref
(ggml/src/ggml-quants.c, ggml-org/llama.cpp), and the 6-bit scale packing Q4_K and Q5_K share.

    Q4_K, Q5_K  each 32-element sub-block fitted as x ~ scale * L + min (make_qkx2_quants; L in 0..15 or 0..31);
                the eight scales and mins quantized to 6 bits against the largest of each (d = max / 63), then
                every L redone against the stored scales: L = nearest_int((x + dmin * m) / (d * sc)).
    Q6_K        each 16-element sub-block fitted as x ~ scale * (L - 32) (make_qx_quants); the sixteen scales
                quantized to int8 against the one of largest magnitude (d = -max / 128), then L redone as
                nearest_int(x / (d * sc)) + 32.

llama.cpp's quantize (no importance matrix) reaches exactly these: quantize_q4_K(..., NULL) calls
quantize_row_q4_K_ref, and so for Q5_K and Q6_K. Each format has a plain-loop `_ref` (one super-block, one
element at a time, returning bytes) and a vectorized twin that fills blocks of the format's `layout`; the fits
they share are in kquant_fits.py.
"""

from __future__ import annotations

import numpy as np

from votive.quant.codecs.common import F32, QK_K, nearest_int, nearest_int_ref, to_half
from votive.quant.codecs.kquant_fits import GROUP_MAX_EPS, make_qkx2_quants, make_qkx2_quants_ref, make_qx_quants, \
    make_qx_quants_ref

# make_qkx2_quants' settings: (nmax, rmin, rdelta, nstep), as quantize_row_q{4,5}_K_ref pass them.
Q4_K_FIT = (15, F32(-1.0), F32(0.1), 20)
Q5_K_FIT = (31, F32(-0.5), F32(0.1), 15)


# ---- scales and mins of Q4_K and Q5_K --------------------------------------------------------------------------


def get_scale_min_k4_ref(j: int, s) -> tuple[int, int]:
    """Sub-block j's 6-bit scale and min from the 12 packed bytes (ggml's get_scale_min_k4)."""
    if j < 4:
        return s[j] & 63, s[j + 4] & 63
    return (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)


def scale_min_k4(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 12) packed -> scales (n, 8), mins (n, 8) in 0..63: get_scale_min_k4 for every j at once."""
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0x0F) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def pack_scale_min_k4(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Inverse of scale_min_k4: (n, 8) scales and mins in 0..63 -> (n, 12) bytes, as quantize_row_q4_K_ref packs."""
    sc, m = sc.astype(np.uint8), m.astype(np.uint8)
    s = np.empty((len(sc), 12), np.uint8)
    s[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    s[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (sc[:, 4:8] & 0x0F) | ((m[:, 4:8] & 0x0F) << 4)
    return s


# ---- Q4_K and Q5_K -------------------------------------------------------------------------------------------------


def _k4_block_ref(xb: list, fit) -> tuple[np.ndarray, np.ndarray, list, list]:
    """One super-block of Q4_K or Q5_K: -> (d as half, dmin as half, the 12 packed scale bytes, L[256])."""
    nmax = fit[0]
    L = [0] * QK_K
    scales, mins = [F32(0.0)] * 8, [F32(0.0)] * 8
    max_scale = max_min = F32(0.0)
    for j in range(8):
        sub = xb[32 * j : 32 * j + 32]
        sum_x2 = F32(0.0)
        for v in sub:
            sum_x2 += v * v
        av_x = np.sqrt(sum_x2 / F32(32.0))
        weights = [av_x + abs(v) for v in sub]
        scales[j], mins[j], L[32 * j : 32 * j + 32] = make_qkx2_quants_ref(sub, weights, *fit)
        max_scale = scales[j] if scales[j] > max_scale else max_scale
        max_min = mins[j] if mins[j] > max_min else max_min
    inv_scale = F32(63.0) / max_scale if max_scale > 0 else F32(0.0)
    inv_min = F32(63.0) / max_min if max_min > 0 else F32(0.0)
    # C stores nearest_int's result in a uint8 before clamping to 63: keep that wrap-around.
    ls = [min(63, nearest_int_ref(inv_scale * scales[j]) & 0xFF) for j in range(8)]
    lm = [min(63, nearest_int_ref(inv_min * mins[j]) & 0xFF) for j in range(8)]
    packed = [0] * 12
    for j in range(8):
        if j < 4:
            packed[j] = ls[j]
            packed[j + 4] = lm[j]
        else:
            packed[j + 4] = (ls[j] & 0x0F) | ((lm[j] & 0x0F) << 4)
            packed[j - 4] |= (ls[j] >> 4) << 6
            packed[j] |= (lm[j] >> 4) << 6
    d16, dmin16 = to_half(max_scale / F32(63.0)), to_half(max_min / F32(63.0))
    d, dmin = F32(d16), F32(dmin16)
    for j in range(8):
        sc, m = get_scale_min_k4_ref(j, packed)
        dj = d * F32(sc)
        if not dj:
            continue  # keep make_qkx2_quants' L, as ggml does
        dm = dmin * F32(m)
        for l in range(32):
            L[32 * j + l] = min(max(nearest_int_ref((xb[32 * j + l] + dm) / dj), 0), nmax)
    return d16, dmin16, packed, L


def quantize_row_q4_K_ref(x: np.ndarray) -> bytes:
    """Mirror of ggml's quantize_row_q4_K_ref, one super-block and one element at a time."""
    out = bytearray()
    for i in range(len(x) // QK_K):
        with np.errstate(all="ignore"):  # degenerate blocks overflow and divide by zero, as in C
            d16, dmin16, packed, L = _k4_block_ref([F32(v) for v in x[i * QK_K : (i + 1) * QK_K]], Q4_K_FIT)
        qs = []
        for chunk in range(4):  # 64 elements: sub-block 2c in the low nibbles, 2c + 1 in the high ones
            qs += [L[64 * chunk + l] | (L[64 * chunk + 32 + l] << 4) for l in range(32)]
        out += d16.tobytes() + dmin16.tobytes() + bytes(packed) + bytes(qs)
    return bytes(out)


def quantize_row_q5_K_ref(x: np.ndarray) -> bytes:
    """Mirror of ggml's quantize_row_q5_K_ref: Q4_K's fit with 5-bit levels, the fifth bit of sub-block j's
    element l in bit j of qh[l]."""
    out = bytearray()
    for i in range(len(x) // QK_K):
        with np.errstate(all="ignore"):  # degenerate blocks overflow and divide by zero, as in C
            d16, dmin16, packed, L = _k4_block_ref([F32(v) for v in x[i * QK_K : (i + 1) * QK_K]], Q5_K_FIT)
        qh, qs = [0] * 32, []
        for chunk in range(4):
            low, high = L[64 * chunk : 64 * chunk + 32], L[64 * chunk + 32 : 64 * chunk + 64]
            for l in range(32):
                qh[l] |= (1 << (2 * chunk) if low[l] > 15 else 0) | (2 << (2 * chunk) if high[l] > 15 else 0)
            qs += [(low[l] & 0x0F) | ((high[l] & 0x0F) << 4) for l in range(32)]
        out += d16.tobytes() + dmin16.tobytes() + bytes(packed) + bytes(qh) + bytes(qs)
    return bytes(out)


def _k4_blocks(x: np.ndarray, fit, layout: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized twin of _k4_block_ref: float32 (n, 256) -> (blocks of `layout` with d, dmin and scales set,
    L (n, 8, 32) uint8)."""
    n, nmax = len(x), fit[0]
    sub = x.reshape(n * 8, 32)
    sum_x2 = np.zeros(n * 8, F32)
    for i in range(32):
        sum_x2 = sum_x2 + sub[:, i] * sub[:, i]
    av_x = np.sqrt(sum_x2 / F32(32.0))
    weights = av_x[:, None] + np.abs(sub)  # (n * 8, 32)
    scales, mins, L = make_qkx2_quants(sub, weights, *fit)
    scales, mins, L = scales.reshape(n, 8), mins.reshape(n, 8), L.reshape(n, 8, 32)

    max_scale = np.maximum(scales.max(axis=1), F32(0.0))
    max_min = np.maximum(mins.max(axis=1), F32(0.0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, F32(63.0) / max_scale, F32(0.0)).astype(F32)
        inv_min = np.where(max_min > 0, F32(63.0) / max_min, F32(0.0)).astype(F32)
    ls = np.minimum(nearest_int(inv_scale[:, None] * scales) & 0xFF, 63)
    lm = np.minimum(nearest_int(inv_min[:, None] * mins) & 0xFF, 63)

    out = np.zeros(n, layout)
    out["d"] = to_half(max_scale / F32(63.0))
    out["dmin"] = to_half(max_min / F32(63.0))
    out["scales"] = pack_scale_min_k4(ls, lm)
    sc, m = scale_min_k4(out["scales"])
    d = out["d"].astype(F32)[:, None] * sc.astype(F32)  # (n, 8)
    dm = out["dmin"].astype(F32)[:, None] * m.astype(F32)  # (n, 8)
    with np.errstate(all="ignore"):
        redone = np.clip(nearest_int((x.reshape(n, 8, 32) + dm[..., None]) / d[..., None]), 0, nmax)
    return out, np.where((d != 0)[..., None], redone, L).astype(np.uint8)  # a zero scale keeps the fit's L


def quantize_q4_K_blocks(x: np.ndarray, layout: np.dtype) -> np.ndarray:
    """float32 (n, 256) -> Q4_K blocks (n,), bit-exact with ggml's quantize_row_q4_K_ref (non-FMA build)."""
    out, L = _k4_blocks(x, Q4_K_FIT, layout)
    pairs = L.reshape(len(x), 4, 2, 32)  # chunk c: sub-blocks 2c (low nibbles) and 2c + 1 (high nibbles)
    out["qs"] = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(len(x), 128)
    return out


def quantize_q5_K_blocks(x: np.ndarray, layout: np.dtype) -> np.ndarray:
    """float32 (n, 256) -> Q5_K blocks (n,), bit-exact with ggml's quantize_row_q5_K_ref (non-FMA build)."""
    out, L = _k4_blocks(x, Q5_K_FIT, layout)
    pairs = (L & 0x0F).reshape(len(x), 4, 2, 32)
    out["qs"] = (pairs[:, :, 0] | (pairs[:, :, 1] << 4)).reshape(len(x), 128)
    high = (L >> 4).astype(np.uint8)  # (n, 8, 32): the fifth bit of sub-block j goes to bit j of qh
    out["qh"] = np.bitwise_or.reduce(high << np.arange(8, dtype=np.uint8)[None, :, None], axis=1)
    return out


# ---- Q6_K ----------------------------------------------------------------------------------------------------------


def _pack_q6_K_ref(L: list) -> tuple[list, list]:
    """L[256] in 0..63 -> ql[128], qh[64] as quantize_row_q6_K_ref packs each half of 128."""
    ql, qh = [], []
    for half in range(2):
        q = L[128 * half : 128 * half + 128]
        low = [(q[l] & 0x0F) | ((q[l + 64] & 0x0F) << 4) for l in range(32)]
        low += [(q[l + 32] & 0x0F) | ((q[l + 96] & 0x0F) << 4) for l in range(32)]
        ql += low
        qh += [(q[l] >> 4) | ((q[l + 32] >> 4) << 2) | ((q[l + 64] >> 4) << 4) | ((q[l + 96] >> 4) << 6)
               for l in range(32)]
    return ql, qh


def quantize_row_q6_K_ref(x: np.ndarray) -> bytes:
    """Mirror of ggml's quantize_row_q6_K_ref, one super-block and one element at a time."""
    out = bytearray()
    for i in range(len(x) // QK_K):
        with np.errstate(all="ignore"):  # degenerate blocks overflow and divide by zero, as in C
            out += _q6_K_block_ref([F32(v) for v in x[i * QK_K : (i + 1) * QK_K]])
    return bytes(out)


def _q6_K_block_ref(xb: list) -> bytes:
    """One super-block of quantize_row_q6_K_ref: 256 floats -> 210 bytes."""
    L = [0] * QK_K
    scales = [F32(0.0)] * 16
    max_scale = max_abs_scale = F32(0.0)
    for ib in range(16):
        scales[ib], L[16 * ib : 16 * ib + 16] = make_qx_quants_ref(xb[16 * ib : 16 * ib + 16], 32)
        if abs(scales[ib]) > max_abs_scale:
            max_abs_scale, max_scale = abs(scales[ib]), scales[ib]
    if max_abs_scale < GROUP_MAX_EPS:
        return bytes(210)  # ggml memsets the block: all quants, scales and d zero
    iscale = F32(-128.0) / max_scale
    d16 = to_half(F32(1.0) / iscale)
    # int8_t keeps the low byte of nearest_int's int (the value never leaves -128..127 in practice)
    sc = [((min(127, nearest_int_ref(iscale * s)) + 128) & 0xFF) - 128 for s in scales]
    for j in range(16):
        d = F32(d16) * F32(sc[j])
        if not d:
            continue  # keep make_qx_quants' L, as ggml does
        for ii in range(16):
            L[16 * j + ii] = max(-32, min(31, nearest_int_ref(xb[16 * j + ii] / d))) + 32
    ql, qh = _pack_q6_K_ref(L)
    return bytes(ql) + bytes(qh) + bytes(s & 0xFF for s in sc) + d16.tobytes()


def quantize_q6_K_blocks(x: np.ndarray, layout: np.dtype) -> np.ndarray:
    """float32 (n, 256) -> Q6_K blocks (n,), bit-exact with ggml's quantize_row_q6_K_ref (non-FMA build)."""
    n = len(x)
    scales, L = make_qx_quants(x.reshape(n * 16, 16), 32)
    scales, L = scales.reshape(n, 16), L.reshape(n, 16, 16)
    first = np.argmax(np.abs(scales), axis=1)  # the first sub-block of largest |scale|, as C's strict `>`
    max_scale = scales[np.arange(n), first]
    zero = np.abs(max_scale) < GROUP_MAX_EPS
    with np.errstate(all="ignore"):  # zero blocks divide by zero; they are written as zeros below
        iscale = (F32(-128.0) / max_scale).astype(F32)
        d16 = to_half(F32(1.0) / iscale)
        sc = (np.minimum(127, nearest_int(iscale[:, None] * scales)) & 0xFF).astype(np.uint8).view(np.int8)
        d = d16.astype(F32)[:, None] * sc.astype(F32)  # (n, 16)
        redone = np.clip(nearest_int(x.reshape(n, 16, 16) / d[..., None]), -32, 31) + 32
    L = np.where((d != 0)[..., None], redone, L).astype(np.uint8).reshape(n, 2, 4, 32)  # 32-element quarters
    out = np.zeros(n, layout)
    out["ql"] = np.concatenate([(L[:, :, 0] & 0x0F) | ((L[:, :, 2] & 0x0F) << 4),
                                (L[:, :, 1] & 0x0F) | ((L[:, :, 3] & 0x0F) << 4)], axis=2).reshape(n, 128)
    out["qh"] = ((L[:, :, 0] >> 4) | ((L[:, :, 1] >> 4) << 2) | ((L[:, :, 2] >> 4) << 4)
                 | ((L[:, :, 3] >> 4) << 6)).reshape(n, 64)
    out["scales"] = sc
    out["d"] = d16
    out[zero] = np.zeros(1, layout)  # ggml memsets a block whose scales are all (near) zero
    return out

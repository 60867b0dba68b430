"""The activation side of ggml's quantized dot products: Q8_1 and Q8_K, and vec_dot of a weight row with them.

ggml multiplies a quantized weight row by an activation row quantized to the weight's "vec_dot type"
(`VEC_DOT_TYPE`): Q8_0 for Q4_0, Q5_0 and Q8_0; Q8_1 for Q4_1 and Q5_1 (its `s = d * sum(q)` carries the
weights' min term); Q8_K for every k-quant (its `bsums`, sums of 16 quants, carry the min term). The products of
quants are exact integers, summed per (sub-)block; only the scaling and the sum over blocks is float.

Float order, which the C kernels may follow or not: per block, a float32 term computed as written below, then the
terms summed in block order in float32. For the 32-element formats the terms are those of ggml's generic C
(ggml/src/ggml-cpu/quants.c, ggml_vec_dot_*_generic):

    Q4_0 (sumi * dx) * dy           Q4_1, Q5_1 (dx * dy) * sumi + mx * sy
    Q5_0 (dx * dy) * sumi           Q8_0       sumi * (dx * dy)

and for the k-quants `(dx * dy) * isum - (dminx * dy) * msum`, where isum = sum over sub-blocks of scale x
(sub-block's integer dot) and msum = sum over sub-blocks of min x (bsums over the sub-block). ggml's generic
Q3_K..Q6_K code splits the scaled sum over 8 lanes and its SIMD code reorders further, so a kernel following
ggml agrees with these only to float32 rounding: |difference| <= ~1e-6 * sum over blocks of |term|, not bit for
bit. A kernel that follows the order above agrees exactly.

Both the vectorized `vec_dot` and the plain-loop `vec_dot_<w>_<a>_ref` twins (named after ggml's routines)
follow that order, so they agree bit for bit with each other.
"""

from __future__ import annotations

import struct

import numpy as np

from votive.quant.codecs import kquants, legacy
from votive.quant.codecs.common import (
    F32,
    QK_K,
    QuantFormat,
    half_ref,
    nearest_int,
    nearest_int_ref,
    row_ref,
    scaled_ref,
    to_half,
)

QK = legacy.QK

# ---- Q8_1: Q8_0 plus s = d * sum(q), stored as halves -----------------------------------------------------------


def unpack_q8_1_ref(blk) -> tuple[np.float32, np.float32, list[int]]:
    return half_ref(blk, 0), half_ref(blk, 2), list(struct.unpack_from("<32b", blk, 4))


def dequantize_row_q8_1_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK, 36, unpack_q8_1_ref, lambda d, s, q: scaled_ref(d, q))


def quantize_row_q8_1_ref(x: np.ndarray) -> bytes:
    out = bytearray()
    for i in range(len(x) // QK):
        d, q = legacy.q8_block_ref(x[i * QK : (i + 1) * QK])
        out += to_half(d).tobytes() + to_half(F32(sum(q)) * d).tobytes() + struct.pack("<32b", *q)
    return bytes(out)


class Q8_1(QuantFormat, type_id=9):
    layout = np.dtype([("d", "<f2"), ("s", "<f2"), ("qs", "i1", QK)])
    dequantize_ref = staticmethod(dequantize_row_q8_1_ref)
    quantize_ref = staticmethod(quantize_row_q8_1_ref)

    @classmethod
    def dequantize_blocks(cls, b):
        return b["qs"].astype(F32) * b["d"].astype(F32)[:, None]

    @classmethod
    def quantize_blocks(cls, x):
        d, qs = quantize_blocks_32(x)
        out = np.empty(len(x), cls.layout)
        out["d"], out["qs"] = to_half(d), qs
        out["s"] = to_half(qs.sum(axis=1).astype(F32) * d)
        return out


def quantize_blocks_32(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Blocks of 32 activations (n, 32) -> float32 d (n,) and int8 quants (n, 32), as ggml's x86 quantize_row_q8_0
    and quantize_row_q8_1 compute them: q = round-half-even(x * (127 / max|x|)). (Its reference C, which Q8_0
    weights are quantized with, rounds x * (1 / d) half away from zero instead: a few quants differ by one.)"""
    amax = np.abs(x).max(axis=1)  # (n,)
    with np.errstate(divide="ignore"):
        inv = np.where(amax != 0, F32(127.0) / amax, F32(0.0)).astype(F32)
    return (amax / F32(127.0)).astype(F32), nearest_int(x * inv[:, None]).astype(np.int8)


def quantize_q8_0_activations(x: np.ndarray):
    """Q8_0 blocks of activations (n, 32), quantized as ggml's x86 code does (see quantize_blocks_32)."""
    d, qs = quantize_blocks_32(x)
    out = np.empty(len(x), legacy.Q8_0.layout)
    out["d"], out["qs"] = to_half(d), qs
    return out


# ---- Q8_K: float32 d, 256 quants, and their sums by 16 ----------------------------------------------------------


def unpack_q8_K_ref(blk) -> tuple[np.float32, list[int], list[int]]:
    (d,) = struct.unpack_from("<f", blk, 0)
    return F32(d), list(struct.unpack_from("<256b", blk, 4)), list(struct.unpack_from("<16h", blk, 260))


def dequantize_row_q8_K_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK_K, 292, unpack_q8_K_ref, lambda d, q, bsums: scaled_ref(d, q))


def quantize_row_q8_K_ref(x: np.ndarray) -> bytes:
    """Scale by the signed value of largest magnitude so that it maps to -127 (ggml's quantize_row_q8_K_ref)."""
    out = bytearray()
    for i in range(len(x) // QK_K):
        block = [F32(v) for v in x[i * QK_K : (i + 1) * QK_K]]
        amax = vmax = F32(0.0)
        for v in block:
            if abs(v) > amax:
                amax, vmax = abs(v), v
        if not amax:
            out += bytes(292)  # ggml leaves bsums unwritten here; zeros are what they would sum to
            continue
        iscale = F32(-127.0) / vmax
        q = [min(127, nearest_int_ref(iscale * v)) for v in block]
        bsums = [sum(q[16 * j : 16 * j + 16]) for j in range(16)]
        out += struct.pack("<f", F32(1.0) / iscale) + struct.pack("<256b", *q) + struct.pack("<16h", *bsums)
    return bytes(out)


class Q8_K(QuantFormat, type_id=15):
    layout = np.dtype([("d", "<f4"), ("qs", "i1", QK_K), ("bsums", "<i2", 16)])
    dequantize_ref = staticmethod(dequantize_row_q8_K_ref)
    quantize_ref = staticmethod(quantize_row_q8_K_ref)

    @classmethod
    def dequantize_blocks(cls, b):
        return b["d"][:, None] * b["qs"].astype(F32)

    @classmethod
    def quantize_blocks(cls, x):
        n = len(x)
        first_max = np.abs(x).argmax(axis=1)  # the first of equal magnitudes, as ggml's strict '>' keeps
        vmax = x[np.arange(n), first_max]
        zero = vmax == 0
        with np.errstate(divide="ignore", invalid="ignore"):
            iscale = np.where(zero, F32(0.0), F32(-127.0) / vmax).astype(F32)
            q = np.minimum(nearest_int(iscale[:, None] * x), 127)
            d = np.where(zero, F32(0.0), F32(1.0) / iscale)
        q = np.where(zero[:, None], 0, q).astype(np.int8)
        out = np.empty(n, cls.layout)
        out["d"], out["qs"] = d, q
        out["bsums"] = q.reshape(n, 16, 16).sum(axis=2, dtype=np.int32)
        return out


# The activation format ggml pairs with each weight format (vec_dot_type in ggml-cpu.c's type traits).
VEC_DOT_TYPE = {2: 8, 3: 9, 6: 8, 7: 9, 8: 8, 10: 15, 11: 15, 12: 15, 13: 15, 14: 15}

# ---- plain-loop dot products -------------------------------------------------------------------------------------


def _blocks(data, nbytes: int, count: int):
    return [data[i * nbytes : (i + 1) * nbytes] for i in range(count)]


def _int_dot(a, b, start: int, length: int) -> int:
    return sum(a[start + l] * b[start + l] for l in range(length))


def _dot_ref(w, a, n: int, weight: tuple, act: tuple, term) -> np.float32:
    """Sum over blocks of term(integer dot as float32, *weight scales, *activation scales), in float32.

    weight and act are (unpack_ref, block bytes, block size); each unpack returns its scales, then the quants.
    """
    (unpack_w, w_bytes, size), (unpack_a, a_bytes, _) = weight, act
    sumf = F32(0.0)
    for wb, ab in zip(_blocks(w, w_bytes, n // size), _blocks(a, a_bytes, n // size)):
        *w_scales, qx = unpack_w(wb)
        *a_scales, qy = unpack_a(ab)
        sumf += term(F32(_int_dot(qx, qy, 0, size)), *w_scales, *a_scales)
    return sumf


_Q8_0 = (legacy.unpack_q8_0_ref, 34, QK)
_Q8_1 = (unpack_q8_1_ref, 36, QK)


def vec_dot_q4_0_q8_0_ref(w, a, n: int) -> np.float32:
    return _dot_ref(w, a, n, (legacy.unpack_q4_0_ref, 18, QK), _Q8_0, lambda sumi, dx, dy: sumi * dx * dy)


def vec_dot_q4_1_q8_1_ref(w, a, n: int) -> np.float32:
    return _dot_ref(w, a, n, (legacy.unpack_q4_1_ref, 20, QK), _Q8_1, _term_with_min)


def vec_dot_q5_0_q8_0_ref(w, a, n: int) -> np.float32:
    return _dot_ref(w, a, n, (legacy.unpack_q5_0_ref, 22, QK), _Q8_0, lambda sumi, dx, dy: (dx * dy) * sumi)


def vec_dot_q5_1_q8_1_ref(w, a, n: int) -> np.float32:
    return _dot_ref(w, a, n, (legacy.unpack_q5_1_ref, 24, QK), _Q8_1, _term_with_min)


def vec_dot_q8_0_q8_0_ref(w, a, n: int) -> np.float32:
    return _dot_ref(w, a, n, _Q8_0, _Q8_0, lambda sumi, dx, dy: sumi * (dx * dy))


def _term_with_min(sumi, dx, mx, dy, sy):
    return (dx * dy) * sumi + mx * sy


def _k_dot_ref(unpack, block_bytes: int, size: int, with_min: bool):
    """The plain-loop dot of a k-quant with Q8_K: `size`-element sub-blocks; bsums cover 16 elements each."""

    def dot(w, a, n: int) -> np.float32:
        sumf = F32(0.0)
        for wb, ab in zip(_blocks(w, block_bytes, n // QK_K), _blocks(a, 292, n // QK_K)):
            d, *parts = unpack(wb)
            dmin, scales, mins, qx = parts if with_min else (None, parts[0], None, parts[1])
            dy, qy, bsums = unpack_q8_K_ref(ab)
            isum = sum(scales[s] * _int_dot(qx, qy, size * s, size) for s in range(QK_K // size))
            term = (d * dy) * F32(isum)
            if with_min:
                per = size // 16
                msum = sum(mins[s] * sum(bsums[per * s : per * s + per]) for s in range(QK_K // size))
                term = term - (dmin * dy) * F32(msum)
            sumf += term
        return sumf

    return dot


vec_dot_q2_K_q8_K_ref = _k_dot_ref(kquants.unpack_q2_K_ref, 84, 16, with_min=True)
vec_dot_q3_K_q8_K_ref = _k_dot_ref(kquants.unpack_q3_K_ref, 110, 16, with_min=False)
vec_dot_q4_K_q8_K_ref = _k_dot_ref(kquants.unpack_q4_K_ref, 144, 32, with_min=True)
vec_dot_q5_K_q8_K_ref = _k_dot_ref(kquants.unpack_q5_K_ref, 176, 32, with_min=True)
vec_dot_q6_K_q8_K_ref = _k_dot_ref(kquants.unpack_q6_K_ref, 210, 16, with_min=False)


VEC_DOT_REF = {
    2: vec_dot_q4_0_q8_0_ref,
    3: vec_dot_q4_1_q8_1_ref,
    6: vec_dot_q5_0_q8_0_ref,
    7: vec_dot_q5_1_q8_1_ref,
    8: vec_dot_q8_0_q8_0_ref,
    10: vec_dot_q2_K_q8_K_ref,
    11: vec_dot_q3_K_q8_K_ref,
    12: vec_dot_q4_K_q8_K_ref,
    13: vec_dot_q5_K_q8_K_ref,
    14: vec_dot_q6_K_q8_K_ref,
}

# ---- vectorized dot products: float32 terms (rows, blocks) --------------------------------------------------------
#
# Each takes weight blocks w (rows, nb) and activation blocks a (nb,) and returns the per-block terms; integer
# sums are exact in int64, so only the float steps, written in the order of the module docstring, round.


def _sub_dots(q: np.ndarray, a_qs: np.ndarray) -> np.ndarray:
    """Integer dots of weight quants (rows, nb, S, L) with activation quants (nb, S * L) -> (rows, nb, S)."""
    return (q.astype(np.int64) * a_qs.reshape(q.shape[1:]).astype(np.int64)).sum(axis=-1)


def _legacy_terms(fmt, w: np.ndarray, a: np.ndarray):
    rows, nb = w.shape
    q = fmt.unpack(w.reshape(-1)).reshape(rows, nb, 1, QK)
    sumi = _sub_dots(q, a["qs"])[..., 0].astype(F32)  # (rows, nb)
    return sumi, w["d"].astype(F32), a["d"].astype(F32)


def _terms_q4_0(w, a):
    sumi, dx, dy = _legacy_terms(legacy.Q4_0, w, a)
    return (sumi * dx) * dy


def _terms_q5_0(w, a):
    sumi, dx, dy = _legacy_terms(legacy.Q5_0, w, a)
    return (dx * dy) * sumi


def _terms_q8_0(w, a):
    sumi, dx, dy = _legacy_terms(legacy.Q8_0, w, a)
    return sumi * (dx * dy)


def _terms_with_min(fmt):
    def terms(w, a):
        sumi, dx, dy = _legacy_terms(fmt, w, a)
        return (dx * dy) * sumi + w["m"].astype(F32) * a["s"].astype(F32)

    return terms


def _k_terms(fmt, sub: int, has_min: bool):
    """Terms of a k-quant: `sub` elements per sub-block; bsums cover 16 elements, so 32-element mins take two."""

    def terms(w, a):
        rows, nb = w.shape
        parts = fmt.unpack(w.reshape(-1))
        q = parts[0].reshape(rows, nb, QK_K // sub, sub)
        scales = parts[1].reshape(rows, nb, -1).astype(np.int64)
        isum = (scales * _sub_dots(q, a["qs"])).sum(axis=-1).astype(F32)  # (rows, nb)
        dy = a["d"].astype(F32)
        term = (w["d"].astype(F32) * dy) * isum
        if has_min:
            bsums = a["bsums"].astype(np.int64).reshape(nb, QK_K // sub, sub // 16).sum(axis=-1)  # (nb, S)
            msum = (parts[2].reshape(rows, nb, -1).astype(np.int64) * bsums).sum(axis=-1).astype(F32)
            term = term - (w["dmin"].astype(F32) * dy) * msum
        return term

    return terms


VEC_DOT_TERMS = {
    2: _terms_q4_0,
    3: _terms_with_min(legacy.Q4_1),
    6: _terms_q5_0,
    7: _terms_with_min(legacy.Q5_1),
    8: _terms_q8_0,
    10: _k_terms(kquants.Q2_K, 16, True),
    11: _k_terms(kquants.Q3_K, 16, False),
    12: _k_terms(kquants.Q4_K, 32, True),
    13: _k_terms(kquants.Q5_K, 32, True),
    14: _k_terms(kquants.Q6_K, 16, False),
}

assert VEC_DOT_TYPE.keys() == VEC_DOT_REF.keys() == VEC_DOT_TERMS.keys()


def sum_in_block_order(terms: np.ndarray) -> np.ndarray:
    """(rows, nb) float32 -> (rows,): left to right in float32, as the scalar loops accumulate."""
    acc = np.zeros(terms.shape[0], F32)
    for b in range(terms.shape[1]):
        acc = acc + terms[:, b]
    return acc


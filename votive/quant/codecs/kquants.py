"""ggml's k-quants: 256-element super-blocks of 16 or 32-element sub-blocks, with quantized sub-block scales.

Mirrors dequantize_row_q{2..6}_K in ggml/src/ggml-quants.c (the quantizers of Q4_K, Q5_K and Q6_K are in
kquantize.py), and the block structs in ggml/src/ggml-common.h (ggml-org/llama.cpp). Element e of a super-block
always belongs to sub-block e // 16 (Q2_K, Q3_K, Q6_K) or e // 32 (Q4_K, Q5_K); what differs is how the bits are spread:

    Q2_K  x = d * sc * q - dmin * m   q 2 bits, 16 x (4-bit sc, 4-bit m) in `scales`
    Q3_K  x = d * (sc - 32) * q       q = 2 low bits + high bit in `hmask` - 4, 16 x 6-bit sc packed in 12 bytes
    Q4_K  x = d * sc * q - dmin * m   q 4 bits, 8 x (6-bit sc, 6-bit m) packed in 12 bytes
    Q5_K  x = d * sc * q - dmin * m   q = 4 low bits + high bit in `qh`, scales as Q4_K
    Q6_K  x = d * sc * (q - 32)       q = 4 low bits in `ql` + 2 high bits in `qh`, 16 x int8 sc

Each format has an `unpack` that returns the integer quants by sub-block with the integer scales (shared with the
vec_dot code in activations.py), a vectorized `dequantize_blocks`, and a plain-loop `dequantize_row_*_ref`
built on `unpack_*_ref`, which walks the bytes the way ggml's loops do.
"""

from __future__ import annotations

import struct

import numpy as np

from votive.quant.codecs.common import F32, QK_K, QuantFormat, half_ref, row_ref
from votive.quant.codecs.kquantize import (
    get_scale_min_k4_ref,
    quantize_q4_K_blocks,
    quantize_q5_K_blocks,
    quantize_q6_K_blocks,
    quantize_row_q4_K_ref,
    quantize_row_q5_K_ref,
    quantize_row_q6_K_ref,
    scale_min_k4,
)

_SHIFTS_2BIT = np.array([0, 2, 4, 6], np.uint8)


def _sub_blocks_ref(size: int, with_min: bool):
    """Floats of one super-block from its unpacked parts, sub-block by sub-block as ggml's loops go:
    x = (d * sc) * q - (dmin * m) with mins, x = (d * sc) * q without."""

    def dequantize_block(d, *parts):
        dmin, scales, mins, q = parts if with_min else (F32(0.0), parts[0], None, parts[1])
        y = np.empty(QK_K, F32)
        for s in range(QK_K // size):
            dl = d * F32(scales[s])
            ml = dmin * F32(mins[s]) if with_min else None
            for l in range(size):
                v = dl * F32(q[size * s + l])
                y[size * s + l] = v - ml if with_min else v
        return y

    return dequantize_block


def _sub_blocks(b, q: np.ndarray, scales: np.ndarray, mins: np.ndarray | None = None) -> np.ndarray:
    """Vectorized twin of _sub_blocks_ref: q (n, S, size), scales and mins (n, S) -> float32 (n, 256)."""
    y = (b["d"].astype(F32)[:, None] * scales.astype(F32))[..., None] * q.astype(F32)
    if mins is not None:
        y = y - (b["dmin"].astype(F32)[:, None] * mins.astype(F32))[..., None]
    return y.reshape(len(b), QK_K)


# ---- Q2_K -----------------------------------------------------------------------------------------------------


def _two_bit_planes(qs: np.ndarray) -> np.ndarray:
    """(n, 64) bytes -> (n, 256): element 128h + 32j + l is bits 2j..2j+1 of byte 32h + l."""
    n = len(qs)
    planes = (qs.reshape(n, 2, 1, 32) >> _SHIFTS_2BIT.reshape(1, 1, 4, 1)) & 3  # (n, 2, 4, 32)
    return planes.reshape(n, QK_K)


def unpack_q2_K_ref(blk):
    """-> d, dmin, scales[16], mins[16], q[256] (q in 0..3)."""
    scales = [blk[j] & 0x0F for j in range(16)]
    mins = [blk[j] >> 4 for j in range(16)]
    q = []
    for half in range(2):
        for shift in (0, 2, 4, 6):
            q += [(blk[16 + 32 * half + l] >> shift) & 3 for l in range(32)]
    return half_ref(blk, 80), half_ref(blk, 82), scales, mins, q


def dequantize_row_q2_K_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK_K, 84, unpack_q2_K_ref, _sub_blocks_ref(16, with_min=True))


class Q2_K(QuantFormat, type_id=10):
    layout = np.dtype([("scales", "u1", 16), ("qs", "u1", 64), ("d", "<f2"), ("dmin", "<f2")])
    dequantize_ref = staticmethod(dequantize_row_q2_K_ref)

    @classmethod
    def unpack(cls, b):
        """-> q (n, 16, 16) in 0..3, scales (n, 16), mins (n, 16) in 0..15."""
        q = _two_bit_planes(b["qs"]).reshape(len(b), 16, 16)
        return q, b["scales"] & 0x0F, b["scales"] >> 4

    @classmethod
    def dequantize_blocks(cls, b):
        return _sub_blocks(b, *cls.unpack(b))


# ---- Q3_K -----------------------------------------------------------------------------------------------------


def _q3_K_scales(s: np.ndarray) -> np.ndarray:
    """(n, 12) packed -> (n, 16) int8 in -32..31. Scale i: low 4 bits from byte i (i < 8) or the high nibble of
    byte i - 8, high 2 bits from byte 8 + i % 4 at bit 2 * (i // 4)."""
    i = np.arange(16)
    low = np.where(i < 8, s[:, i % 8] & 0x0F, s[:, i % 8] >> 4)
    high = (s[:, 8 + i % 4] >> (2 * (i // 4)).astype(np.uint8)) & 3
    return (low | (high << 4)).astype(np.int8) - np.int8(32)


def unpack_q3_K_ref(blk):
    """-> d, scales[16] (-32..31), q[256] (-4..3)."""
    hmask, qs, packed = blk[0:32], blk[32:96], blk[96:108]
    # ggml reads the 12 scale bytes as three uint32 and reshuffles them into sixteen bytes of 6 bits.
    a0, a1, tmp = struct.unpack("<3I", bytes(packed))
    k1, k2 = 0x03030303, 0x0F0F0F0F
    words = [
        (a0 & k2) | (((tmp >> 0) & k1) << 4),
        (a1 & k2) | (((tmp >> 2) & k1) << 4),
        ((a0 >> 4) & k2) | (((tmp >> 4) & k1) << 4),
        ((a1 >> 4) & k2) | (((tmp >> 6) & k1) << 4),
    ]
    scales = [s - 32 for s in struct.pack("<4I", *words)]
    q = []
    bit = 1
    for half in range(2):
        for shift in (0, 2, 4, 6):
            for l in range(32):
                q.append(((qs[32 * half + l] >> shift) & 3) - (0 if hmask[l] & bit else 4))
            bit <<= 1
    return half_ref(blk, 108), scales, q


def dequantize_row_q3_K_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK_K, 110, unpack_q3_K_ref, _sub_blocks_ref(16, with_min=False))


class Q3_K(QuantFormat, type_id=11):
    layout = np.dtype([("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", "<f2")])
    dequantize_ref = staticmethod(dequantize_row_q3_K_ref)

    @classmethod
    def unpack(cls, b):
        """-> q (n, 16, 16) in -4..3, scales (n, 16) in -32..31."""
        n = len(b)
        low = _two_bit_planes(b["qs"]).astype(np.int8)  # (n, 256)
        # Element 32p + l (p = 0..7) takes its high bit from bit p of hmask[l]; a clear bit means q - 4.
        high = (b["hmask"].reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1  # (n, 8, 32)
        q = low - np.int8(4) * (np.int8(1) - high.reshape(n, QK_K).astype(np.int8))
        return q.reshape(n, 16, 16), _q3_K_scales(b["scales"])

    @classmethod
    def dequantize_blocks(cls, b):
        return _sub_blocks(b, *cls.unpack(b))


# ---- Q4_K -----------------------------------------------------------------------------------------------------


def unpack_q4_K_ref(blk):
    """-> d, dmin, scales[8], mins[8] (0..63), q[256] (0..15)."""
    packed = blk[4:16]
    scales, mins = zip(*(get_scale_min_k4_ref(j, packed) for j in range(8)))
    q = []
    for chunk in range(4):  # 64 elements: low nibbles of 32 bytes, then their high nibbles
        qs = blk[16 + 32 * chunk : 16 + 32 * (chunk + 1)]
        q += [b & 0x0F for b in qs] + [b >> 4 for b in qs]
    return half_ref(blk, 0), half_ref(blk, 2), scales, mins, q


def dequantize_row_q4_K_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK_K, 144, unpack_q4_K_ref, _sub_blocks_ref(32, with_min=True))


def _nibble_planes(qs: np.ndarray) -> np.ndarray:
    """(n, 128) bytes -> (n, 8, 32): sub-block 2c is the low nibbles of bytes 32c..32c+31, 2c + 1 the high ones."""
    n = len(qs)
    chunks = qs.reshape(n, 4, 1, 32)
    return np.concatenate([chunks & 0x0F, chunks >> 4], axis=2).reshape(n, 8, 32)


class Q4_K(QuantFormat, type_id=12):
    layout = np.dtype([("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qs", "u1", 128)])
    dequantize_ref = staticmethod(dequantize_row_q4_K_ref)
    quantize_ref = staticmethod(quantize_row_q4_K_ref)

    @classmethod
    def unpack(cls, b):
        """-> q (n, 8, 32) in 0..15, scales (n, 8), mins (n, 8) in 0..63."""
        return (_nibble_planes(b["qs"]), *scale_min_k4(b["scales"]))

    @classmethod
    def dequantize_blocks(cls, b):
        return _sub_blocks(b, *cls.unpack(b))

    @classmethod
    def quantize_blocks(cls, x):
        return quantize_q4_K_blocks(x, cls.layout)


# ---- Q5_K -----------------------------------------------------------------------------------------------------


def unpack_q5_K_ref(blk):
    """-> d, dmin, scales[8], mins[8] (0..63), q[256] (0..31)."""
    packed, qh = blk[4:16], blk[16:48]
    scales, mins = zip(*(get_scale_min_k4_ref(j, packed) for j in range(8)))
    q = []
    low_bit, high_bit = 1, 2
    for chunk in range(4):
        qs = blk[48 + 32 * chunk : 48 + 32 * (chunk + 1)]
        q += [(qs[l] & 0x0F) + (16 if qh[l] & low_bit else 0) for l in range(32)]
        q += [(qs[l] >> 4) + (16 if qh[l] & high_bit else 0) for l in range(32)]
        low_bit, high_bit = low_bit << 2, high_bit << 2
    return half_ref(blk, 0), half_ref(blk, 2), scales, mins, q


def dequantize_row_q5_K_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK_K, 176, unpack_q5_K_ref, _sub_blocks_ref(32, with_min=True))


class Q5_K(QuantFormat, type_id=13):
    layout = np.dtype(
        [("d", "<f2"), ("dmin", "<f2"), ("scales", "u1", 12), ("qh", "u1", 32), ("qs", "u1", 128)]
    )
    dequantize_ref = staticmethod(dequantize_row_q5_K_ref)
    quantize_ref = staticmethod(quantize_row_q5_K_ref)

    @classmethod
    def unpack(cls, b):
        """-> q (n, 8, 32) in 0..31, scales (n, 8), mins (n, 8) in 0..63."""
        n = len(b)
        # Sub-block j's fifth bits are bit j of the 32 qh bytes.
        high = (b["qh"].reshape(n, 1, 32) >> np.arange(8, dtype=np.uint8).reshape(1, 8, 1)) & 1  # (n, 8, 32)
        return (_nibble_planes(b["qs"]) | (high << 4), *scale_min_k4(b["scales"]))

    @classmethod
    def dequantize_blocks(cls, b):
        return _sub_blocks(b, *cls.unpack(b))

    @classmethod
    def quantize_blocks(cls, x):
        return quantize_q5_K_blocks(x, cls.layout)


# ---- Q6_K -----------------------------------------------------------------------------------------------------


def unpack_q6_K_ref(blk):
    """-> d, scales[16] (int8), q[256] (-32..31)."""
    ql, qh = blk[0:128], blk[128:192]
    scales = list(struct.unpack_from("<16b", blk, 192))
    q = [0] * QK_K
    for half in range(2):
        lo, hi, base = ql[64 * half : 64 * half + 64], qh[32 * half : 32 * half + 32], 128 * half
        for l in range(32):
            q[base + l] = ((lo[l] & 0x0F) | (((hi[l] >> 0) & 3) << 4)) - 32
            q[base + l + 32] = ((lo[l + 32] & 0x0F) | (((hi[l] >> 2) & 3) << 4)) - 32
            q[base + l + 64] = ((lo[l] >> 4) | (((hi[l] >> 4) & 3) << 4)) - 32
            q[base + l + 96] = ((lo[l + 32] >> 4) | (((hi[l] >> 6) & 3) << 4)) - 32
    return half_ref(blk, 208), scales, q


def dequantize_row_q6_K_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK_K, 210, unpack_q6_K_ref, _sub_blocks_ref(16, with_min=False))


class Q6_K(QuantFormat, type_id=14):
    layout = np.dtype([("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", "<f2")])
    dequantize_ref = staticmethod(dequantize_row_q6_K_ref)
    quantize_ref = staticmethod(quantize_row_q6_K_ref)

    @classmethod
    def unpack(cls, b):
        """-> q (n, 16, 16) in -32..31, scales (n, 16) int8."""
        n = len(b)
        ql = b["ql"].reshape(n, 2, 64)
        qh = b["qh"].reshape(n, 2, 32)
        lo, hi = ql[..., :32], ql[..., 32:]
        q = np.stack(
            [
                (lo & 0x0F) | ((qh & 3) << 4),
                (hi & 0x0F) | (((qh >> 2) & 3) << 4),
                (lo >> 4) | (((qh >> 4) & 3) << 4),
                (hi >> 4) | (((qh >> 6) & 3) << 4),
            ],
            axis=2,
        )  # (n, 2, 4, 32): element 128h + 32p + l
        return q.reshape(n, 16, 16).astype(np.int8) - np.int8(32), b["scales"]

    @classmethod
    def dequantize_blocks(cls, b):
        return _sub_blocks(b, *cls.unpack(b))  # (d * sc) * q, as ggml's d * sc[is] * q1

    @classmethod
    def quantize_blocks(cls, x):
        return quantize_q6_K_blocks(x, cls.layout)

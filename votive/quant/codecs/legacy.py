"""Plain floats and ggml's 32-element formats: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Mirrors dequantize_row_* and quantize_row_q{5_0,5_1,8_0}_ref in ggml/src/ggml-quants.c and the block structs in
ggml/src/ggml-common.h (ggml-org/llama.cpp). A 32-element block is a half-float scale `d` (and min `m` for the
_1 types) followed by the quants; 4-bit quants pack element j in the low nibble of byte j and element j + 16 in
its high nibble, and the Q5 types keep the fifth bit of element j in bit j of the 32-bit `qh`.

Each format has a `*_ref` that walks the bytes one block and one element at a time, and a vectorized class
method; `unpack_*_ref` and `unpack` give the integer quants that the vec_dot code (activations.py) reuses.
"""

from __future__ import annotations

import struct

import numpy as np

from votive.quant.codecs.common import (
    F32,
    QuantFormat,
    bf16_ref,
    bf16_to_f32,
    half_ref,
    roundf,
    roundf_ref,
    row_ref,
    scaled_ref,
    to_half,
)

QK = 32  # elements per block of every format in this file except the plain ones

# ---- plain floats ----------------------------------------------------------------------------------------------


def f32_row_ref(data, k: int) -> np.ndarray:
    return np.array([struct.unpack_from("<f", data, 4 * i)[0] for i in range(k)], F32)


def fp16_to_fp32_row_ref(data, k: int) -> np.ndarray:
    """ggml_fp16_to_fp32_row."""
    return np.array([half_ref(data, 2 * i) for i in range(k)], F32)


def bf16_to_fp32_row_ref(data, k: int) -> np.ndarray:
    """ggml_bf16_to_fp32_row."""
    return np.array([bf16_ref(data, 2 * i) for i in range(k)], F32)


class F32Format(QuantFormat, type_id=0):
    layout = np.dtype("<f4")
    dequantize_ref = staticmethod(f32_row_ref)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return blocks.astype(F32)[:, None]

    @classmethod
    def quantize_blocks(cls, x):
        return x[:, 0].astype(cls.layout)


class F16Format(QuantFormat, type_id=1):
    layout = np.dtype("<f2")
    dequantize_ref = staticmethod(fp16_to_fp32_row_ref)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return blocks.astype(F32)[:, None]

    @classmethod
    def quantize_blocks(cls, x):
        big = np.abs(x) > F32(65504.0)  # the largest finite half
        if big.any():
            from votive.errors import QuantError

            i = int(np.argmax(big))
            raise QuantError(f"cannot store {x.ravel()[i]} (element {i}) as F16: beyond the half range of 65504")
        return to_half(x[:, 0])


class BF16Format(QuantFormat, type_id=30):
    layout = np.dtype("<u2")  # numpy has no bfloat16: the bits
    dequantize_ref = staticmethod(bf16_to_fp32_row_ref)

    @classmethod
    def dequantize_blocks(cls, blocks):
        return bf16_to_f32(blocks)[:, None]

    @classmethod
    def quantize_blocks(cls, x):
        # ggml_compute_fp32_to_bf16: NaN stays a (quiet) NaN, everything else rounds to nearest even.
        bits = x[:, 0].astype(F32).view("<u4").astype(np.uint64)
        nan = (bits & 0x7FFFFFFF) > 0x7F800000
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        quiet = (bits >> 16) | 64
        return np.where(nan, quiet, rounded).astype(cls.layout)


def _scaled_min_ref(d, m, q) -> list:
    return [F32(v) * d + m for v in q]


# ---- Q4_0: x = d * (q - 8), q in 0..15 -----------------------------------------------------------------------


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(n, 16) packed bytes -> (n, 32) quants: low nibbles are elements 0..15, high nibbles 16..31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _fifth_bits(qh: np.ndarray) -> np.ndarray:
    """(n,) uint32 -> (n, 32) with 16 where element j has bit j of qh set."""
    return (((qh[:, None] >> np.arange(QK, dtype=np.uint32)) & 1) << 4).astype(np.uint8)


def unpack_q4_0_ref(blk) -> tuple[np.float32, list[int]]:
    d = half_ref(blk, 0)
    q = [0] * QK
    for j in range(QK // 2):
        q[j] = (blk[2 + j] & 0x0F) - 8
        q[j + QK // 2] = (blk[2 + j] >> 4) - 8
    return d, q


def dequantize_row_q4_0_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK, 18, unpack_q4_0_ref, scaled_ref)


class Q4_0(QuantFormat, type_id=2):
    layout = np.dtype([("d", "<f2"), ("qs", "u1", 16)])
    dequantize_ref = staticmethod(dequantize_row_q4_0_ref)

    @classmethod
    def unpack(cls, b):
        return _nibbles(b["qs"]).astype(np.int8) - np.int8(8)  # (n, 32) in -8..7

    @classmethod
    def dequantize_blocks(cls, b):
        return cls.unpack(b).astype(F32) * b["d"].astype(F32)[:, None]


# ---- Q4_1: x = d * q + m, q in 0..15 --------------------------------------------------------------------------


def unpack_q4_1_ref(blk) -> tuple[np.float32, np.float32, list[int]]:
    d, m = half_ref(blk, 0), half_ref(blk, 2)
    q = [0] * QK
    for j in range(QK // 2):
        q[j] = blk[4 + j] & 0x0F
        q[j + QK // 2] = blk[4 + j] >> 4
    return d, m, q


def dequantize_row_q4_1_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK, 20, unpack_q4_1_ref, _scaled_min_ref)


class Q4_1(QuantFormat, type_id=3):
    layout = np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)])
    dequantize_ref = staticmethod(dequantize_row_q4_1_ref)

    @classmethod
    def unpack(cls, b):
        return _nibbles(b["qs"])  # (n, 32) in 0..15

    @classmethod
    def dequantize_blocks(cls, b):
        return cls.unpack(b).astype(F32) * b["d"].astype(F32)[:, None] + b["m"].astype(F32)[:, None]


# ---- the Q5_0 and Q5_1 quantizers (llama.cpp's Q4_K_M falls back to them for rows not whole 256-element blocks)


def _c_uint8(v: np.ndarray) -> np.ndarray:
    """C's (uint8_t) / (int8_t) cast of a float: truncate toward zero, keep the low byte (as int32, 0..255)."""
    with np.errstate(invalid="ignore"):
        return np.trunc(v).astype(np.int64).astype(np.int32) & 0xFF


def _pack_q5_ref(q: list) -> tuple[bytes, bytes]:
    """32 five-bit quants -> (qh as 4 little-endian bytes, qs[16]): element j's fifth bit in bit j of qh."""
    qh = 0
    for j in range(QK):
        qh |= ((q[j] & 0x10) >> 4) << j
    return struct.pack("<I", qh), bytes((q[j] & 0x0F) | ((q[j + QK // 2] & 0x0F) << 4) for j in range(QK // 2))


def _pack_q5(q: np.ndarray, out: np.ndarray) -> None:
    """Vectorized _pack_q5_ref: (n, 32) quants in 0..255 -> out["qh"], out["qs"]."""
    q = q.astype(np.uint32)
    out["qh"] = np.bitwise_or.reduce(((q & 0x10) >> 4) << np.arange(QK, dtype=np.uint32), axis=1)
    out["qs"] = ((q[:, : QK // 2] & 0x0F) | ((q[:, QK // 2 :] & 0x0F) << 4)).astype(np.uint8)


def quantize_row_q5_0_ref(x: np.ndarray) -> bytes:
    """Mirror of ggml's quantize_row_q5_0_ref: d = max / -16 (max the element of largest magnitude), q =
    min(31, (int8_t)(x / d + 16.5))."""
    out = bytearray()
    for i in range(len(x) // QK):
        block = [F32(v) for v in x[i * QK : (i + 1) * QK]]
        amax = mx = F32(0.0)
        for v in block:
            if amax < abs(v):
                amax, mx = abs(v), v
        d = mx / F32(-16.0)
        inv = F32(1.0) / d if d else F32(0.0)
        q = []
        for v in block:
            byte = int(float(v * inv + F32(16.5))) & 0xFF  # (int8_t): truncate, keep the low byte
            q.append(min(31, byte - 256 if byte > 127 else byte) & 0xFF)
        qh, qs = _pack_q5_ref(q)
        out += to_half(d).tobytes() + qh + qs
    return bytes(out)


def quantize_row_q5_1_ref(x: np.ndarray) -> bytes:
    """Mirror of ggml's quantize_row_q5_1_ref: d = (max - min) / 31, m = min, q = (uint8_t)((x - min) / d + 0.5)."""
    out = bytearray()
    for i in range(len(x) // QK):
        block = [F32(v) for v in x[i * QK : (i + 1) * QK]]
        lo, hi = F32(np.finfo(F32).max), F32(-np.finfo(F32).max)
        for v in block:
            lo = v if v < lo else lo
            hi = v if v > hi else hi
        d = (hi - lo) / F32(31.0)
        inv = F32(1.0) / d if d else F32(0.0)
        q = [int(float((v - lo) * inv + F32(0.5))) & 0xFF for v in block]
        qh, qs = _pack_q5_ref(q)
        out += to_half(d).tobytes() + to_half(lo).tobytes() + qh + qs
    return bytes(out)


# ---- Q5_0: x = d * (q - 16), q in 0..31 -----------------------------------------------------------------------


def unpack_q5_0_ref(blk) -> tuple[np.float32, list[int]]:
    d = half_ref(blk, 0)
    (qh,) = struct.unpack_from("<I", blk, 2)
    q = [0] * QK
    for j in range(QK // 2):
        high0 = ((qh >> j) << 4) & 0x10
        high1 = (qh >> (j + 12)) & 0x10
        q[j] = ((blk[6 + j] & 0x0F) | high0) - 16
        q[j + QK // 2] = ((blk[6 + j] >> 4) | high1) - 16
    return d, q


def dequantize_row_q5_0_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK, 22, unpack_q5_0_ref, scaled_ref)


class Q5_0(QuantFormat, type_id=6):
    layout = np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])
    dequantize_ref = staticmethod(dequantize_row_q5_0_ref)
    quantize_ref = staticmethod(quantize_row_q5_0_ref)

    @classmethod
    def unpack(cls, b):
        return (_nibbles(b["qs"]) | _fifth_bits(b["qh"])).astype(np.int8) - np.int8(16)  # (n, 32) in -16..15

    @classmethod
    def dequantize_blocks(cls, b):
        return cls.unpack(b).astype(F32) * b["d"].astype(F32)[:, None]

    @classmethod
    def quantize_blocks(cls, x):
        first = np.argmax(np.abs(x), axis=1)  # the first element of largest magnitude, as C's strict `<`
        mx = np.where(np.abs(x).max(axis=1) > 0, x[np.arange(len(x)), first], F32(0.0))  # C's max starts at +0.0
        d = mx / F32(-16.0)  # (n,); +0.0 / -16 is -0.0, as in C
        with np.errstate(divide="ignore"):
            inv = np.where(d != 0, F32(1.0) / d, F32(0.0)).astype(F32)
        q = _c_uint8(x * inv[:, None] + F32(16.5)).astype(np.uint8).view(np.int8)  # (int8_t)
        q = np.minimum(q.astype(np.int32), 31) & 0xFF
        out = np.empty(len(x), cls.layout)
        out["d"] = to_half(d)
        _pack_q5(q, out)
        return out


# ---- Q5_1: x = d * q + m, q in 0..31 --------------------------------------------------------------------------


def unpack_q5_1_ref(blk) -> tuple[np.float32, np.float32, list[int]]:
    d, m = half_ref(blk, 0), half_ref(blk, 2)
    (qh,) = struct.unpack_from("<I", blk, 4)
    q = [0] * QK
    for j in range(QK // 2):
        q[j] = (blk[8 + j] & 0x0F) | (((qh >> j) << 4) & 0x10)
        q[j + QK // 2] = (blk[8 + j] >> 4) | ((qh >> (j + 12)) & 0x10)
    return d, m, q


def dequantize_row_q5_1_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK, 24, unpack_q5_1_ref, _scaled_min_ref)


class Q5_1(QuantFormat, type_id=7):
    layout = np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)])
    dequantize_ref = staticmethod(dequantize_row_q5_1_ref)
    quantize_ref = staticmethod(quantize_row_q5_1_ref)

    @classmethod
    def unpack(cls, b):
        return _nibbles(b["qs"]) | _fifth_bits(b["qh"])  # (n, 32) in 0..31

    @classmethod
    def dequantize_blocks(cls, b):
        return cls.unpack(b).astype(F32) * b["d"].astype(F32)[:, None] + b["m"].astype(F32)[:, None]

    @classmethod
    def quantize_blocks(cls, x):
        lo, hi = x[:, 0].copy(), x[:, 0].copy()
        for j in range(1, QK):  # in C's order: of equal values (0.0 and -0.0) the first stays
            lo = np.where(x[:, j] < lo, x[:, j], lo)
            hi = np.where(x[:, j] > hi, x[:, j], hi)
        d = (hi - lo) / F32(31.0)
        with np.errstate(divide="ignore"):
            inv = np.where(d != 0, F32(1.0) / d, F32(0.0)).astype(F32)
        out = np.empty(len(x), cls.layout)
        out["d"], out["m"] = to_half(d), to_half(lo)
        _pack_q5(_c_uint8((x - lo[:, None]) * inv[:, None] + F32(0.5)), out)
        return out


# ---- Q8_0: x = d * q, q in -127..127 (also the activation format of Q4_0, Q5_0 and Q8_0 dot products) --------


def unpack_q8_0_ref(blk) -> tuple[np.float32, list[int]]:
    return half_ref(blk, 0), list(struct.unpack_from("<32b", blk, 2))


def dequantize_row_q8_0_ref(data, k: int) -> np.ndarray:
    return row_ref(data, k, QK, 34, unpack_q8_0_ref, scaled_ref)


def q8_block_ref(block) -> tuple[np.float32, list[int]]:
    """d = max|x| / 127 (float32, stored later as a half); q = roundf(x * (1 / d)). Shared with Q8_1."""
    block = [F32(v) for v in block]
    amax = F32(0.0)
    for v in block:
        amax = max(amax, abs(v))
    d = amax / F32(127.0)
    inv = F32(1.0) / d if d else F32(0.0)
    return d, [roundf_ref(v * inv) for v in block]


def quantize_row_q8_0_ref(x: np.ndarray) -> bytes:
    out = bytearray()
    for i in range(len(x) // QK):
        d, q = q8_block_ref(x[i * QK : (i + 1) * QK])
        out += to_half(d).tobytes() + struct.pack("<32b", *q)
    return bytes(out)


class Q8_0(QuantFormat, type_id=8):
    layout = np.dtype([("d", "<f2"), ("qs", "i1", QK)])
    dequantize_ref = staticmethod(dequantize_row_q8_0_ref)
    quantize_ref = staticmethod(quantize_row_q8_0_ref)

    @classmethod
    def unpack(cls, b):
        return b["qs"]  # (n, 32) in -127..127

    @classmethod
    def dequantize_blocks(cls, b):
        return b["qs"].astype(F32) * b["d"].astype(F32)[:, None]

    @classmethod
    def quantize_blocks(cls, x):
        d = np.abs(x).max(axis=1) / F32(127.0)  # (n,)
        with np.errstate(divide="ignore"):
            inv = np.where(d != 0, F32(1.0) / d, F32(0.0)).astype(F32)
        out = np.empty(len(x), cls.layout)
        out["d"] = to_half(d)
        out["qs"] = roundf(x * inv[:, None])
        return out

"""Plain floats and ggml's 32-element formats: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0.

Mirrors dequantize_row_* and quantize_row_q8_0_ref in ggml/src/ggml-quants.c and the block structs in
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

    @classmethod
    def unpack(cls, b):
        return (_nibbles(b["qs"]) | _fifth_bits(b["qh"])).astype(np.int8) - np.int8(16)  # (n, 32) in -16..15

    @classmethod
    def dequantize_blocks(cls, b):
        return cls.unpack(b).astype(F32) * b["d"].astype(F32)[:, None]


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

    @classmethod
    def unpack(cls, b):
        return _nibbles(b["qs"]) | _fifth_bits(b["qh"])  # (n, 32) in 0..31

    @classmethod
    def dequantize_blocks(cls, b):
        return cls.unpack(b).astype(F32) * b["d"].astype(F32)[:, None] + b["m"].astype(F32)[:, None]


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

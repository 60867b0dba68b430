"""What every GGML format shares: the format base class, half-float and bfloat16 bits, ggml's two roundings.

Bit-exact agreement with ggml hangs on rounding. Two integer roundings appear in its quantizers: `roundf` (ties
away from zero) in the Q8 quantizers, and `nearest_int` (ties to even, via the 1.5 * 2**23 trick) in the k-quant
ones. Each has a vectorized form and a scalar `_ref` form written the way ggml computes it, so the tests can hold
one against the other. Float arithmetic is float32 throughout, one rounding per operation, in ggml's order of
operations; a C compiler that fuses a multiply and an add into an FMA (GCC does with -march=native) can differ
from it in the last bit, which is why only ggml's non-fused evaluation order is mirrored here.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from votive.quant.ggml_types import GGML_TYPES, GGMLType

F32 = np.float32
QK_K = 256  # elements in a k-quant super-block


class QuantFormat:
    """One GGML storage format. A subclass sets `layout` and writes block-level code only.

    Class attributes:
        ggml: the GGMLType row (id, name, block_size, block_bytes) from votive.quant.ggml_types.
        layout: one block as stored, as a little-endian numpy structured dtype; its itemsize is asserted equal to
            ggml.block_bytes when the subclass is defined, as ggml's static_asserts do for its structs.
        dequantize_ref: plain-loop twin, named after the ggml routine it mirrors: (raw bytes of whole blocks,
            k elements) -> float32 (k,).
        quantize_ref: the same for quantizing, where votive has a quantizer: float32 (k,) -> uint8 bytes.

    Rows, shapes and argument checks live in votive.quant.codecs, not here.
    """

    ggml: GGMLType
    layout: np.dtype
    name: str
    type_id: int
    block_size: int
    block_bytes: int
    dequantize_ref = None
    quantize_ref = None
    quantize_blocks = None  # classmethod (float32 (n, block_size)) -> structured (n,), where a quantizer exists

    def __init_subclass__(cls, type_id: int, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.ggml = GGML_TYPES[type_id]
        cls.name, cls.type_id = cls.ggml.name, cls.ggml.id
        cls.block_size, cls.block_bytes = cls.ggml.block_size, cls.ggml.block_bytes
        assert cls.layout.itemsize == cls.block_bytes, (
            f"{cls.name}: layout is {cls.layout.itemsize} bytes, ggml's block is {cls.block_bytes}"
        )

    @classmethod
    def dequantize_blocks(cls, blocks: np.ndarray) -> np.ndarray:
        """Structured array (n,) of `layout` -> float32 (n, block_size)."""
        raise NotImplementedError


def row_ref(data, k: int, block_size: int, block_bytes: int, unpack, dequantize_block) -> np.ndarray:
    """The row loop of every _ref dequantizer: unpack each block's bytes, then compute its floats."""
    y = np.empty(k, F32)
    for i in range(k // block_size):
        parts = unpack(data[i * block_bytes : (i + 1) * block_bytes])
        y[i * block_size : (i + 1) * block_size] = dequantize_block(*parts)
    return y


def scaled_ref(d, q) -> list:
    """x = q * d for each quant, in float32."""
    return [F32(v) * d for v in q]


# ---- half floats and bfloat16 --------------------------------------------------------------------------------


def to_half(x) -> np.ndarray:
    """float32 -> IEEE half, round to nearest even (ggml's GGML_FP32_TO_FP16); too large becomes inf as in C."""
    with np.errstate(over="ignore"):
        return np.asarray(x, F32).astype("<f2")


def half_ref(buf, offset: int) -> np.float32:
    """The half float stored at buf[offset:offset + 2], widened exactly to float32 (GGML_FP16_TO_FP32)."""
    return F32(struct.unpack_from("<e", buf, offset)[0])


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32: the bits are the top half of a float32."""
    return (bits.astype("<u4") << 16).view("<f4")


def bf16_ref(buf, offset: int) -> np.float32:
    (bits,) = struct.unpack_from("<H", buf, offset)
    return F32(struct.unpack("<f", struct.pack("<I", bits << 16))[0])


# ---- ggml's roundings --------------------------------------------------------------------------------------


def roundf(v: np.ndarray) -> np.ndarray:
    """C roundf on float32: nearest integer, ties away from zero (numpy's rint would send 2.5 to 2)."""
    a = np.abs(v)
    whole = np.floor(a)
    up = (a - whole) >= F32(0.5)  # a - whole is exact in float32
    return np.copysign(whole + up, v).astype(F32)


def roundf_ref(v) -> int:
    # In double, |v| + 0.5 is exact for every float32 v small enough to be quantized, so floor gives roundf.
    return int(math.copysign(math.floor(abs(float(v)) + 0.5), float(v)))


def nearest_int(v: np.ndarray) -> np.ndarray:
    """ggml's nearest_int on float32: ties to even, as int32 for |v| < 2**22 (ggml's own limit). Computed with
    ggml's bit trick, not np.rint, so that out-of-range values, inf and NaN (which a degenerate block can feed it,
    ggml's assert being compiled out) give ggml's garbage, not numpy's."""
    with np.errstate(invalid="ignore", over="ignore"):
        shifted = np.asarray(v, F32) + F32(12582912.0)
    return (shifted.view(np.int32) & 0x007FFFFF) - 0x00400000


def nearest_int_ref(v) -> int:
    # ggml adds 1.5 * 2**23 so that the float's mantissa holds the rounded integer plus 2**22.
    shifted = np.array(F32(v) + F32(12582912.0), F32)
    return (int(shifted.view(np.int32)) & 0x007FFFFF) - 0x00400000


def check_finite(x: np.ndarray, fmt_name: str) -> None:
    """Quantizers refuse NaN and inf: ggml would silently write garbage scales for them."""
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        from votive.errors import QuantError

        where = tuple(int(i) for i in bad[0])
        raise QuantError(
            f"cannot quantize to {fmt_name}: {bad.shape[0]} values are NaN or inf, the first at index {where} "
            f"({x[where]})"
        )

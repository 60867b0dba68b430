"""The GGML tensor types a GGUF file can hold: one table of id, name, block size and bytes per block.

Sources (checked by hand): the `ggml_type` enum in ggml/include/ggml.h and the `block_*` structs in
ggml/src/ggml-common.h of ggml-org/llama.cpp. A block-quantized type stores a row as whole blocks of
`block_size` elements, each `block_bytes` long; a plain type (F32, F16, BF16, I8..I64, F64) is a block of one
element. Each quantized row lists its block struct's fields with their byte sizes, and the module asserts at
import that they add up to `block_bytes`, as ggml's static_asserts do, so a typo in either column fails loudly.

Example:
    >>> GGMLType.Q4_K is GGML_TYPES[12]
    True
    >>> GGML_TYPES[12].name, GGML_TYPES[12].block_size, GGML_TYPES[12].block_bytes
    ('Q4_K', 256, 144)
    >>> GGML_TYPES[12].row_bytes(640)
    Traceback (most recent call last):
    ...
    ValueError: a Q4_K row of 640 elements is not a whole number of 256-element blocks
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QK_K = 256  # elements in a k-quant super-block (ggml-common.h)
F16 = 2  # bytes of a ggml_half scale
F32 = 4  # bytes of a float scale


@dataclass(frozen=True)
class GGMLType:
    """One GGML tensor type."""

    id: int  # the ggml_type enum value stored in GGUF tensor infos
    name: str  # the enum name without GGML_TYPE_, e.g. "Q4_K"
    block_size: int  # elements per block; 1 for plain types
    block_bytes: int  # bytes per block
    dtype: np.dtype | None  # numpy dtype of one element for plain types (BF16 as its uint16 bits); None if quantized

    @property
    def quantized(self) -> bool:
        """True for block-quantized types, whose tensors are exposed as raw bytes."""
        return self.dtype is None

    def row_bytes(self, n: int) -> int:
        """Bytes taken by a row of `n` elements; ValueError if `n` is not a whole number of blocks."""
        if n % self.block_size:
            raise ValueError(
                f"a {self.name} row of {n} elements is not a whole number of {self.block_size}-element blocks"
            )
        return n // self.block_size * self.block_bytes


# Plain types: id, name, numpy dtype. Always little-endian ('<'), as GGUF stores them on every host we read.
_PLAIN = [
    (0, "F32", "<f4"),
    (1, "F16", "<f2"),
    (24, "I8", "i1"),
    (25, "I16", "<i2"),
    (26, "I32", "<i4"),
    (27, "I64", "<i8"),
    (28, "F64", "<f8"),
    (30, "BF16", "<u2"),  # numpy has no bfloat16: the raw bits, widened to float32 by whoever computes with them
]

# Block-quantized types: id, name, elements per block, bytes per block, the block struct's fields (bytes each).
_QUANTIZED = [
    (2, "Q4_0", 32, 18, {"d": F16, "qs": 32 // 2}),
    (3, "Q4_1", 32, 20, {"d": F16, "m": F16, "qs": 32 // 2}),
    (6, "Q5_0", 32, 22, {"d": F16, "qh": 4, "qs": 32 // 2}),
    (7, "Q5_1", 32, 24, {"d": F16, "m": F16, "qh": 4, "qs": 32 // 2}),
    (8, "Q8_0", 32, 34, {"d": F16, "qs": 32}),
    # ggml-common.h has held d and s as halves since 2024; gguf-py's GGML_QUANT_SIZES still says 40 (two floats).
    # Q8_1 is an activation format that model files do not use, so the difference only shows in this comment.
    (9, "Q8_1", 32, 36, {"d": F16, "s": F16, "qs": 32}),
    (10, "Q2_K", QK_K, 84, {"scales": QK_K // 16, "qs": QK_K // 4, "d": F16, "dmin": F16}),
    (11, "Q3_K", QK_K, 110, {"hmask": QK_K // 8, "qs": QK_K // 4, "scales": 12, "d": F16}),
    (12, "Q4_K", QK_K, 144, {"d": F16, "dmin": F16, "scales": 12, "qs": QK_K // 2}),
    (13, "Q5_K", QK_K, 176, {"d": F16, "dmin": F16, "scales": 12, "qh": QK_K // 8, "qs": QK_K // 2}),
    (14, "Q6_K", QK_K, 210, {"ql": QK_K // 2, "qh": QK_K // 4, "scales": QK_K // 16, "d": F16}),
    (15, "Q8_K", QK_K, 292, {"d": F32, "qs": QK_K, "bsums": QK_K // 16 * 2}),
    (16, "IQ2_XXS", QK_K, 66, {"d": F16, "qs": QK_K // 8 * 2}),
    (17, "IQ2_XS", QK_K, 74, {"d": F16, "qs": QK_K // 8 * 2, "scales": QK_K // 32}),
    (18, "IQ3_XXS", QK_K, 98, {"d": F16, "qs": 3 * QK_K // 8}),
    (19, "IQ1_S", QK_K, 50, {"d": F16, "qs": QK_K // 8, "qh": QK_K // 32 * 2}),
    (20, "IQ4_NL", 32, 18, {"d": F16, "qs": 32 // 2}),
    (21, "IQ3_S", QK_K, 110, {"d": F16, "qs": QK_K // 4, "qh": QK_K // 32, "signs": QK_K // 8, "scales": 4}),
    (22, "IQ2_S", QK_K, 82, {"d": F16, "qs": QK_K // 4, "qh": QK_K // 32, "scales": QK_K // 32}),
    (23, "IQ4_XS", QK_K, 136, {"d": F16, "scales_h": 2, "scales_l": QK_K // 64, "qs": QK_K // 2}),
    (29, "IQ1_M", QK_K, 56, {"qs": QK_K // 8, "qh": QK_K // 16, "scales": QK_K // 32}),
    (34, "TQ1_0", QK_K, 54, {"qs": (QK_K - 4 * QK_K // 64) // 5, "qh": QK_K // 64, "d": F16}),
    (35, "TQ2_0", QK_K, 66, {"qs": QK_K // 4, "d": F16}),
    (39, "MXFP4", 32, 17, {"e": 1, "qs": 32 // 2}),
    (40, "NVFP4", 64, 36, {"d": 64 // 16, "qs": 64 // 2}),
    (41, "Q1_0", 128, 18, {"d": F16, "qs": 128 // 8}),
]

# Ids ggml once used and has since dropped; a file naming one was written by an old or experimental tool.
REMOVED_TYPES = {
    4: "Q4_2",
    5: "Q4_3",
    31: "Q4_0_4_4",
    32: "Q4_0_4_8",
    33: "Q4_0_8_8",
    36: "IQ4_NL_4_4",
    37: "IQ4_NL_4_8",
    38: "IQ4_NL_8_8",
}

for _id, _name, _block_size, _block_bytes, _fields in _QUANTIZED:
    assert sum(_fields.values()) == _block_bytes, f"{_name}: fields add up to {sum(_fields.values())}, not {_block_bytes}"

GGML_TYPES: dict[int, GGMLType] = {
    **{i: GGMLType(i, name, 1, np.dtype(dt).itemsize, np.dtype(dt)) for i, name, dt in _PLAIN},
    **{i: GGMLType(i, name, size, nbytes, None) for i, name, size, nbytes, _ in _QUANTIZED},
}
GGML_TYPES = dict(sorted(GGML_TYPES.items()))
assert not GGML_TYPES.keys() & REMOVED_TYPES.keys()

# Name -> type, for callers that say "Q4_K" rather than 12.
GGML_TYPES_BY_NAME: dict[str, GGMLType] = {t.name: t for t in GGML_TYPES.values()}

# And as class attributes, so code can compare `info.ggml_type == GGMLType.Q4_K` the way ggml spells it.
for _t in GGML_TYPES.values():
    setattr(GGMLType, _t.name, _t)


def ggml_type(key: int | str | GGMLType) -> GGMLType:
    """The GGMLType for an id, a name ("Q4_K") or a GGMLType; ValueError naming anything unknown or removed."""
    if isinstance(key, GGMLType):
        return key
    if isinstance(key, str):
        if key in GGML_TYPES_BY_NAME:
            return GGML_TYPES_BY_NAME[key]
        raise ValueError(f"unknown ggml type {key!r} (known: {', '.join(GGML_TYPES_BY_NAME)})")
    if key in GGML_TYPES:
        return GGML_TYPES[key]
    if key in REMOVED_TYPES:
        raise ValueError(
            f"ggml type {key} ({REMOVED_TYPES[key]}) was removed from ggml; re-quantize with a current llama.cpp"
        )
    raise ValueError(f"unknown ggml type id {key} (known ids: {', '.join(map(str, GGML_TYPES))})")

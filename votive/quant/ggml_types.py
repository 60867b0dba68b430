"""The GGML tensor types a GGUF file can hold: the one table of id, name, block size, bytes and fields per block.

Sources (checked by hand): the `ggml_type` enum in ggml/include/ggml.h and the `block_*` structs in
ggml/src/ggml-common.h of ggml-org/llama.cpp. A block-quantized type stores a row as whole blocks of
`block_size` elements, each `block_bytes` long; a plain type (F32, F16, BF16, I8..I64, F64) is a block of one
element. Each quantized row lists its block struct's fields (name, element type, count) in ggml's order; a
field's offset is the sum of the fields before it. The module checks at import that the fields add up to
`block_bytes` with every field aligned to its element type, so the C struct has no padding; a typo in either
column fails loudly.

Everything else reads its block facts from here: the C and CUDA block structs are generated from this table
(`csrc/gen_block_structs.py` writes csrc/ggml_block_structs.h and cusrc/ggml_block_structs.cuh, whose compilers
assert each struct's size), the CUDA kernel list takes its type ids from it, and votive.testing.synthetic its
scale offsets. numpy is imported only when a plain type's `dtype` is first asked for: the CUDA kernel build step
reads this table in an image without numpy.

Example:
    >>> GGMLType.Q4_K is GGML_TYPES[12]
    True
    >>> GGML_TYPES[12].name, GGML_TYPES[12].block_size, GGML_TYPES[12].block_bytes
    ('Q4_K', 256, 144)
    >>> GGMLType.Q6_K.field("d")
    BlockField(name='d', type='half', count=1, offset=208)
    >>> GGML_TYPES[12].row_bytes(640)
    Traceback (most recent call last):
    ...
    votive.errors.QuantError: a Q4_K row of 640 elements is not a whole number of 256-element blocks
"""

from __future__ import annotations

from typing import NamedTuple

from votive.errors import QuantError

QK_K = 256  # elements in a k-quant super-block (ggml-common.h)

# Element types of block fields -> bytes each (also their alignment in the C struct). "half" is ggml_half: the
# bits of an IEEE half float.
FIELD_TYPES = {"half": 2, "f32": 4, "u8": 1, "i8": 1, "u16": 2, "i16": 2}


class BlockField(NamedTuple):
    """One field of a block struct, as ggml-common.h declares it."""

    name: str  # as in ggml-common.h: "d", "qs", "scales", ...
    type: str  # element type, a key of FIELD_TYPES
    count: int  # elements; 1 for a scalar
    offset: int  # bytes from the start of the block

    @property
    def nbytes(self) -> int:
        return FIELD_TYPES[self.type] * self.count


class GGMLType(NamedTuple):
    """One GGML tensor type. The records of this module are NamedTuples, not dataclasses: a frozen dataclass costs
    half a millisecond to define, paid by every cold start that imports it."""

    id: int  # the ggml_type enum value stored in GGUF tensor infos
    name: str  # the enum name without GGML_TYPE_, e.g. "Q4_K"
    block_size: int  # elements per block; 1 for plain types
    block_bytes: int  # bytes per block
    element: str | None  # numpy type string of one element of a plain type ("<f4"; BF16 "<u2"); None if quantized
    # the block struct's fields in order; () for plain types
    fields: tuple[BlockField, ...] = ()

    def __repr__(self) -> str:  # without the fields, which the name implies
        return (f"GGMLType(id={self.id}, name={self.name!r}, block_size={self.block_size}, "
                f"block_bytes={self.block_bytes}, element={self.element!r})")

    @property
    def quantized(self) -> bool:
        """True for block-quantized types, whose tensors are exposed as raw bytes."""
        return self.element is None

    @property
    def dtype(self):
        """numpy dtype of one element for plain types (BF16 as its uint16 bits); None if quantized."""
        if self.element is None:
            return None
        import numpy as np  # here, not at the top: see the module docstring

        return np.dtype(self.element)

    def field(self, name: str) -> BlockField:
        """The block field called `name` (e.g. "d"); QuantError naming the type's fields if it has none such."""
        for f in self.fields:
            if f.name == name:
                return f
        raise QuantError(f"{self.name} blocks have no field {name!r} "
                         f"(fields: {', '.join(f.name for f in self.fields) or 'none, it is a plain type'})")

    def row_bytes(self, n: int) -> int:
        """Bytes taken by a row of `n` elements; QuantError (a ValueError) if `n` is not a whole number of blocks."""
        if n % self.block_size:
            raise QuantError(
                f"a {self.name} row of {n} elements is not a whole number of {self.block_size}-element blocks"
            )
        return n // self.block_size * self.block_bytes


# Plain types: id, name, numpy type string, always little-endian ('<'), as GGUF stores them on every host we read.
# Its last digit is the element's bytes.
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

# Block-quantized types: id, name, elements per block, bytes per block, the block struct's fields in ggml's order
# as (name, element type, count). ggml's unions of two halves with a ggml_half2 (Q4_1's d and m, ...) are listed
# as the two halves.
_QUANTIZED = [
    (2, "Q4_0", 32, 18, [("d", "half", 1), ("qs", "u8", 32 // 2)]),
    (3, "Q4_1", 32, 20, [("d", "half", 1), ("m", "half", 1), ("qs", "u8", 32 // 2)]),
    (6, "Q5_0", 32, 22, [("d", "half", 1), ("qh", "u8", 4), ("qs", "u8", 32 // 2)]),
    (7, "Q5_1", 32, 24, [("d", "half", 1), ("m", "half", 1), ("qh", "u8", 4), ("qs", "u8", 32 // 2)]),
    (8, "Q8_0", 32, 34, [("d", "half", 1), ("qs", "i8", 32)]),
    # ggml-common.h has held d and s as halves since 2024; gguf-py's GGML_QUANT_SIZES still says 40 (two floats).
    # Q8_1 is an activation format that model files do not use, so the difference only shows in this comment.
    (9, "Q8_1", 32, 36, [("d", "half", 1), ("s", "half", 1), ("qs", "i8", 32)]),
    (10, "Q2_K", QK_K, 84, [("scales", "u8", QK_K // 16), ("qs", "u8", QK_K // 4), ("d", "half", 1),
                            ("dmin", "half", 1)]),
    (11, "Q3_K", QK_K, 110, [("hmask", "u8", QK_K // 8), ("qs", "u8", QK_K // 4), ("scales", "u8", 12),
                             ("d", "half", 1)]),
    (12, "Q4_K", QK_K, 144, [("d", "half", 1), ("dmin", "half", 1), ("scales", "u8", 12), ("qs", "u8", QK_K // 2)]),
    (13, "Q5_K", QK_K, 176, [("d", "half", 1), ("dmin", "half", 1), ("scales", "u8", 12), ("qh", "u8", QK_K // 8),
                             ("qs", "u8", QK_K // 2)]),
    (14, "Q6_K", QK_K, 210, [("ql", "u8", QK_K // 2), ("qh", "u8", QK_K // 4), ("scales", "i8", QK_K // 16),
                             ("d", "half", 1)]),
    (15, "Q8_K", QK_K, 292, [("d", "f32", 1), ("qs", "i8", QK_K), ("bsums", "i16", QK_K // 16)]),
    (16, "IQ2_XXS", QK_K, 66, [("d", "half", 1), ("qs", "u16", QK_K // 8)]),
    (17, "IQ2_XS", QK_K, 74, [("d", "half", 1), ("qs", "u16", QK_K // 8), ("scales", "u8", QK_K // 32)]),
    (18, "IQ3_XXS", QK_K, 98, [("d", "half", 1), ("qs", "u8", 3 * QK_K // 8)]),
    (19, "IQ1_S", QK_K, 50, [("d", "half", 1), ("qs", "u8", QK_K // 8), ("qh", "u16", QK_K // 32)]),
    (20, "IQ4_NL", 32, 18, [("d", "half", 1), ("qs", "u8", 32 // 2)]),
    (21, "IQ3_S", QK_K, 110, [("d", "half", 1), ("qs", "u8", QK_K // 4), ("qh", "u8", QK_K // 32),
                              ("signs", "u8", QK_K // 8), ("scales", "u8", QK_K // 64)]),
    (22, "IQ2_S", QK_K, 82, [("d", "half", 1), ("qs", "u8", QK_K // 4), ("qh", "u8", QK_K // 32),
                             ("scales", "u8", QK_K // 32)]),
    (23, "IQ4_XS", QK_K, 136, [("d", "half", 1), ("scales_h", "u16", 1), ("scales_l", "u8", QK_K // 64),
                               ("qs", "u8", QK_K // 2)]),
    (29, "IQ1_M", QK_K, 56, [("qs", "u8", QK_K // 8), ("qh", "u8", QK_K // 16), ("scales", "u8", QK_K // 32)]),
    (34, "TQ1_0", QK_K, 54, [("qs", "u8", (QK_K - 4 * QK_K // 64) // 5), ("qh", "u8", QK_K // 64), ("d", "half", 1)]),
    (35, "TQ2_0", QK_K, 66, [("qs", "u8", QK_K // 4), ("d", "half", 1)]),
    (39, "MXFP4", 32, 17, [("e", "u8", 1), ("qs", "u8", 32 // 2)]),  # e: a shared E8M0 exponent
    (40, "NVFP4", 64, 36, [("d", "u8", 64 // 16), ("qs", "u8", 64 // 2)]),  # d: a UE4M3 scale per 16 elements
    (41, "Q1_0", 128, 18, [("d", "half", 1), ("qs", "u8", 128 // 8)]),
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


def block_fields(name: str, block_bytes: int, spec: list[tuple[str, str, int]]) -> tuple[BlockField, ...]:
    """A block struct's fields with their offsets, from (name, element type, count) in order; QuantError when a
    field's type is unknown, a field would sit unaligned (a C compiler would pad before it), or the fields do not
    add up to `block_bytes`."""
    fields, offset = [], 0
    for field_name, field_type, count in spec:
        if field_type not in FIELD_TYPES:
            raise QuantError(f"{name}.{field_name}: unknown element type {field_type!r} "
                             f"(known: {', '.join(FIELD_TYPES)})")
        if offset % FIELD_TYPES[field_type]:
            raise QuantError(f"{name}.{field_name}: a {field_type} field at byte {offset} is not aligned to "
                             f"{FIELD_TYPES[field_type]} bytes; C would pad the struct")
        fields.append(BlockField(field_name, field_type, count, offset))
        offset += fields[-1].nbytes
    if offset != block_bytes:
        raise QuantError(f"{name}: the fields add up to {offset} bytes, not the {block_bytes} of its block")
    return tuple(fields)


GGML_TYPES: dict[int, GGMLType] = {
    **{i: GGMLType(i, name, 1, int(element[-1]), element) for i, name, element in _PLAIN},
    **{i: GGMLType(i, name, size, nbytes, None, block_fields(name, nbytes, spec))
       for i, name, size, nbytes, spec in _QUANTIZED},
}
GGML_TYPES = dict(sorted(GGML_TYPES.items()))
assert not GGML_TYPES.keys() & REMOVED_TYPES.keys()

# Name -> type, for callers that say "Q4_K" rather than 12.
GGML_TYPES_BY_NAME: dict[str, GGMLType] = {t.name: t for t in GGML_TYPES.values()}

# And as class attributes, so code can compare `info.ggml_type == GGMLType.Q4_K` the way ggml spells it.
for _t in GGML_TYPES.values():
    setattr(GGMLType, _t.name, _t)


def ggml_type(key: int | str | GGMLType) -> GGMLType:
    """The GGMLType for an id, a name ("Q4_K") or a GGMLType; QuantError (a ValueError) naming anything unknown or
    removed."""
    if isinstance(key, GGMLType):
        return key
    if isinstance(key, str):
        if key in GGML_TYPES_BY_NAME:
            return GGML_TYPES_BY_NAME[key]
        raise QuantError(f"unknown ggml type {key!r} (known: {', '.join(GGML_TYPES_BY_NAME)})")
    if key in GGML_TYPES:
        return GGML_TYPES[key]
    if key in REMOVED_TYPES:
        raise QuantError(
            f"ggml type {key} ({REMOVED_TYPES[key]}) was removed from ggml; re-quantize with a current llama.cpp"
        )
    raise QuantError(f"unknown ggml type id {key} (known ids: {', '.join(map(str, GGML_TYPES))})")

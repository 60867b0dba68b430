"""Write GGUF files (version 3, little-endian) that llama.cpp, gguf-py and `votive.formats.gguf` read.

The layout is the one gguf-py's GGUFWriter and llama.cpp's gguf_write produce: header, metadata in the given
order, tensor infos in the given order, zero padding to the alignment, then each tensor's bytes followed by zero
padding to the alignment (the last one too). With the same inputs the bytes equal GGUFWriter's.

Tensors are given in the form `GGUFFile[name]` returns them, so reading and writing are inverses:

    np.ndarray of float32, float16, float64, int8, int16, int32 or int64  -> F32, F16, F64, I8, I16, I32, I64;
    (type, array) with type a name ("Q4_K", "BF16"), an id or a GGMLType, and the array as stored: uint16 bits
        of the tensor's shape for BF16, uint8 of shape shape[:-1] + (bytes per row,) for a quantized type.

Metadata values: bool -> bool, int -> u32 (i32 if negative, i64/u64 if larger), float -> f32, str -> str, a
numpy scalar or 1-D array -> its own type, a list or tuple (or StringArray) of str, bool, float or int -> an
array (ints as i32, or i64 if they need it). `metadata_types` overrides any of these, spelled as
`GGUFFile.metadata_types` spells them ("u16", "arr[u32]", ...), so a file's metadata copies across unchanged.

Example:
    >>> src = GGUFFile("model.gguf")                                                   # doctest: +SKIP
    >>> write_gguf("slim.gguf", src.metadata, {n: (src.tensors[n].ggml_type, src[n]) for n in src},
    ...            metadata_types=src.metadata_types)                                   # doctest: +SKIP
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from votive.errors import WeightFileError
from votive.formats.gguf import (
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    MAX_DIMS,
    MAX_TENSOR_NAME_BYTES,
    VALUE_DTYPES,
    VALUE_TYPE_NAMES,
    StringArray,
    ValueType,
)
from votive.quant.ggml_types import GGML_TYPES, GGMLType, ggml_type

GGUF_VERSION = 3

_TYPES_BY_NAME = {name: t for t, name in VALUE_TYPE_NAMES.items()}
_TYPES_BY_DTYPE = {dt: t for t, dt in VALUE_DTYPES.items() if t != ValueType.BOOL}
_TYPES_BY_DTYPE[np.dtype(np.bool_)] = ValueType.BOOL

# numpy dtype -> the plain GGML type an untagged tensor of that dtype becomes.
_TENSOR_TYPES = {t.dtype: t for t in GGML_TYPES.values() if t.dtype is not None and t.name != "BF16"}

# Ranges Python ints are checked against before packing, so an out-of-range value names its key.
_INT_RANGES = {
    ValueType.UINT8: (0, 2**8),
    ValueType.INT8: (-(2**7), 2**7),
    ValueType.UINT16: (0, 2**16),
    ValueType.INT16: (-(2**15), 2**15),
    ValueType.UINT32: (0, 2**32),
    ValueType.INT32: (-(2**31), 2**31),
    ValueType.UINT64: (0, 2**64),
    ValueType.INT64: (-(2**63), 2**63),
}


def write_gguf(
    path,
    metadata: Mapping[str, object],
    tensors: Mapping[str, object],
    *,
    metadata_types: Mapping[str, str] | None = None,
    alignment: int = DEFAULT_ALIGNMENT,
    overwrite: bool = False,
) -> Path:
    """Write a GGUF file; it appears at `path` only once complete.

    Args:
        path (str or Path): the file to write.
        metadata (Mapping): key -> value, written in this order (see the module docstring for types).
        tensors (Mapping): name -> array or (ggml type, stored array), written in this order.
        metadata_types (Mapping, optional): key -> type name ("u32", "arr[str]", ...) overriding the inferred type.
        alignment (int): data alignment, a power of two; other than 32 it is recorded as `general.alignment`.
        overwrite (bool): replace an existing file; by default an existing file is an error.

    Returns:
        Path: `path`.

    Raises:
        WeightFileError: `path` exists and overwrite is False.
        ValueError, TypeError: a value or tensor cannot be written; the message names its key or tensor.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise WeightFileError(path, "already exists; pass overwrite=True to replace it")
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment}")
    metadata = dict(metadata)
    types = dict(metadata_types or {})
    if alignment != DEFAULT_ALIGNMENT or "general.alignment" in metadata:
        if metadata.setdefault("general.alignment", alignment) != alignment:
            raise ValueError(f"metadata general.alignment is {metadata['general.alignment']}, alignment {alignment}")
        types["general.alignment"] = "u32"
    unknown = types.keys() - metadata.keys()
    if unknown:
        raise ValueError(f"metadata_types names keys not in metadata: {sorted(unknown)}")

    header = bytearray(struct.pack("<4sIQQ", GGUF_MAGIC, GGUF_VERSION, len(tensors), len(metadata)))
    for key, value in metadata.items():
        header += _string(key, f"metadata key {key!r}")
        header += _value(key, value, types.get(key))

    stored = [_tensor(name, value) for name, value in tensors.items()]
    offset = 0
    for name, gtype, ne, data in stored:
        header += _string(name, f"tensor name {name!r}")
        header += struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, gtype.id, offset)
        offset += _padded(data.nbytes, alignment)

    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as out:
            out.write(header)
            out.write(bytes(_padded(len(header), alignment) - len(header)))
            for _, _, _, data in stored:
                out.write(data.reshape(-1).view(np.uint8))
                out.write(bytes(_padded(data.nbytes, alignment) - data.nbytes))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _padded(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _string(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, got {type(text).__name__}")
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


# -- metadata values


def _value(key: str, value, type_name: str | None) -> bytes:
    """u32 value type, then the value; arrays as u32 ARRAY, u32 element type, u64 count, elements."""
    what = f"metadata {key!r}"
    if type_name is None:
        vtype, elem = _infer(what, value)
    else:
        vtype, elem = _parse_type_name(what, type_name)
    if vtype != ValueType.ARRAY:
        return struct.pack("<I", vtype) + _scalar(what, vtype, value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"{what} is typed arr[{VALUE_TYPE_NAMES[elem]}] but holds {type(value).__name__}")
    head = struct.pack("<IIQ", ValueType.ARRAY, elem, len(value))
    if elem == ValueType.STRING:
        return head + b"".join(_string(s, f"{what} element {i}") for i, s in enumerate(value))
    return head + _numeric_array(what, elem, value)


def _parse_type_name(what: str, name: str) -> tuple[ValueType, ValueType | None]:
    if name.startswith("arr[") and name.endswith("]"):
        elem = _TYPES_BY_NAME.get(name[4:-1])
        if elem is not None and elem != ValueType.ARRAY:
            return ValueType.ARRAY, elem
    elif name in _TYPES_BY_NAME and name != "arr":
        return _TYPES_BY_NAME[name], None
    known = ", ".join(n for n in _TYPES_BY_NAME if n != "arr")
    raise ValueError(f"{what}: unknown type name {name!r} (known: {known}, and arr[<one of those>])")


def _infer(what: str, value) -> tuple[ValueType, ValueType | None]:
    if isinstance(value, np.ndarray):
        if value.ndim != 1 or value.dtype.newbyteorder("<") not in _TYPES_BY_DTYPE:
            raise TypeError(
                f"{what}: a metadata array must be 1-D of a GGUF numeric type, got {value.dtype} {value.shape}"
            )
        return ValueType.ARRAY, _TYPES_BY_DTYPE[value.dtype.newbyteorder("<")]
    if isinstance(value, np.generic):
        if value.dtype.newbyteorder("<") not in _TYPES_BY_DTYPE:
            raise TypeError(f"{what}: numpy {value.dtype} has no GGUF type")
        return _TYPES_BY_DTYPE[value.dtype.newbyteorder("<")], None
    kind = _kind(value)
    if kind == "int":
        order = (ValueType.UINT32, ValueType.INT32, ValueType.INT64)
        return next((t for t in order if _fits(t, value, value)), ValueType.UINT64), None  # u64 checks the range
    if kind in _DEFAULT_TYPES:
        return _DEFAULT_TYPES[kind], None
    if kind != "array":
        raise TypeError(f"{what}: {kind} has no GGUF type")
    if not value:
        raise ValueError(f"{what} is an empty list; give its element type in metadata_types, e.g. 'arr[i32]'")
    kinds = {_kind(v) for v in value}
    if "array" in kinds:
        raise TypeError(f"{what}: nested arrays are not supported (llama.cpp cannot read them)")
    if len(kinds) > 1:
        raise TypeError(f"{what}: array elements mix {', '.join(sorted(kinds))}; GGUF arrays hold one type")
    kind = kinds.pop()
    if kind == "int":
        low, high = min(value), max(value)
        order = (ValueType.INT32, ValueType.INT64)
        return ValueType.ARRAY, next((t for t in order if _fits(t, low, high)), ValueType.UINT64)
    if kind in _DEFAULT_TYPES:
        return ValueType.ARRAY, _DEFAULT_TYPES[kind]
    raise TypeError(f"{what}: array elements of type {kind} have no GGUF type")


# What a Python bool, float or str becomes (ints depend on their range).
_DEFAULT_TYPES = {"bool": ValueType.BOOL, "float": ValueType.FLOAT32, "str": ValueType.STRING}


def _kind(value) -> str:
    """"bool", "int", "float", "str", "array", or the type's name for anything else."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (list, tuple, np.ndarray, StringArray)):
        return "array"
    return type(value).__name__


def _fits(vtype: ValueType, lo, hi) -> bool:
    low, high = _INT_RANGES[vtype]
    return low <= lo and hi < high


def _scalar(what: str, vtype: ValueType, value) -> bytes:
    if vtype == ValueType.STRING:
        return _string(value, what)
    return _numeric_array(what, vtype, [value])


def _numeric_array(what: str, elem: ValueType, values) -> bytes:
    """Little-endian bytes of `values` (a numpy array or a sequence of numbers) as `elem`, checked first."""
    name = VALUE_TYPE_NAMES[elem]
    allowed = {"bool"} if elem == ValueType.BOOL else {"int"} if elem in _INT_RANGES else {"int", "float"}
    wrong = _element_kinds(values) - allowed
    if wrong:
        expected = "True or False" if elem == ValueType.BOOL else "integers" if allowed == {"int"} else "numbers"
        raise TypeError(f"{what}: {name} values must be {expected}, got {', '.join(sorted(wrong))}")
    if elem in _INT_RANGES and len(values) and not _fits(elem, int(np.min(values)), int(np.max(values))):
        low, high = _INT_RANGES[elem]
        raise ValueError(f"{what}: values must lie in [{low}, {high - 1}] for {name}")
    return np.asarray(values, dtype=VALUE_DTYPES[elem]).tobytes()


def _element_kinds(values) -> set[str]:
    """The kinds of element `values` holds (a numpy array by its first element, which stands for its dtype)."""
    return {_kind(v) for v in (values[:1].tolist() if isinstance(values, np.ndarray) else values)}


# -- tensors


def _tensor(name: str, value) -> tuple[str, GGMLType, tuple[int, ...], np.ndarray]:
    """(name, type, ne innermost first, contiguous little-endian data) for one tensor to write."""
    what = f"tensor {name!r}"
    if len(name.encode("utf-8")) > MAX_TENSOR_NAME_BYTES:
        raise ValueError(f"{what}: names are at most {MAX_TENSOR_NAME_BYTES} bytes")
    if isinstance(value, tuple):
        if len(value) != 2:
            raise TypeError(f"{what}: expected an array or (ggml type, array), got a {len(value)}-tuple")
        gtype, data = ggml_type(value[0]), np.asarray(value[1])
    else:
        data = np.asarray(value)
        gtype = _TENSOR_TYPES.get(data.dtype.newbyteorder("<"))
        if gtype is None:
            raise TypeError(f"{what}: numpy {data.dtype} has no GGML type; pass (type, array) for BF16 or quants")
    if gtype.quantized:
        if data.dtype != np.uint8 or data.ndim == 0:
            raise TypeError(f"{what}: {gtype.name} data must be uint8 rows of bytes, got {data.dtype} {data.shape}")
        if data.shape[-1] % gtype.block_bytes:
            raise ValueError(
                f"{what}: rows of {data.shape[-1]} bytes are not whole {gtype.block_bytes}-byte {gtype.name} blocks"
            )
        shape = data.shape[:-1] + (data.shape[-1] // gtype.block_bytes * gtype.block_size,)
    else:
        if data.dtype.newbyteorder("<") != gtype.dtype:
            raise TypeError(f"{what}: {gtype.name} data must be {gtype.dtype}, got {data.dtype}")
        shape = data.shape
    if len(shape) > MAX_DIMS or 0 in shape:
        raise ValueError(f"{what}: shape {shape} must have at most {MAX_DIMS} dimensions, none of them zero")
    data = np.ascontiguousarray(data, dtype=data.dtype.newbyteorder("<"))
    return name, gtype, tuple(reversed(shape)), data

"""Memory-mapped GGUF files: typed metadata, and every tensor as a read-only numpy view of its stored bytes.

Format (ggml-org/llama.cpp docs/gguf.md; all integers little-endian):

    magic "GGUF" | u32 version | u64 tensor_count | u64 kv_count
    kv_count   x  (string key, u32 value_type, value)
    tensor_count x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
    padding to `general.alignment` (default 32), then the data section; each offset is relative to it.

A string is a u64 byte length and that many UTF-8 bytes; an array value is u32 element type, u64 count, elements.
Dimensions are stored innermost first: ne[0] is the row length. `TensorInfo.shape` reverses them into numpy order,
so a GGUF matrix with ne = [640, 262144] has shape (262144, 640): 262144 rows of 640 elements.

What `f[name]` returns (zero-copy, read-only):
    F32, F16, F64, I8..I64  a view of that dtype with the tensor's shape;
    BF16                    its raw uint16 bits with the tensor's shape;
    block-quantized types   uint8 of shape shape[:-1] + (bytes per row,): row i's blocks are f[name][i].

Checks, as llama.cpp's gguf.cpp makes them (`gguf_init_from_file_impl`) plus the bounds a mapping needs: magic,
versions 2 and 3 only (1 and big-endian files rejected with a reason), counts the file can hold, every string and
array inside the file, known value and tensor types, UTF-8 keys, names and strings, no duplicate keys or names,
no arrays of arrays (llama.cpp refuses them too), `general.alignment` a u32 power of two, at most 4 dimensions
(0 is a scalar) and none zero, rows a whole number of blocks, tensor offsets aligned, in order without overlap, and inside the file. Every
violation raises `WeightFileError` naming the file and the problem; no count from the file is allocated up front.

Cold start: numeric arrays (token scores, token types) are views, and string arrays (262144 tokens for Gemma 3)
are only walked at open, to find where they end; `StringArray` decodes them on first use, in one pass.

Example:
    >>> f = GGUFFile("SmolLM2-135M-Instruct.Q4_1.gguf")                 # doctest: +SKIP
    >>> f.architecture, f.require("llama.block_count", int)              # doctest: +SKIP
    ('llama', 30)
    >>> f.tensors["token_embd.weight"].shape, f["token_embd.weight"].shape  # doctest: +SKIP
    ((49152, 576), (49152, 612))
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NoReturn

import numpy as np

from votive.errors import WeightFileError
from votive.formats.mapped_file import map_weight_file
from votive.quant.ggml_types import GGML_TYPES, REMOVED_TYPES, GGMLType

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)  # v2 moved counts and lengths to 64 bits; v3 only added big-endian files
DEFAULT_ALIGNMENT = 32  # when `general.alignment` is absent
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_TENSOR_NAME_BYTES = 64  # docs/gguf.md: "must be at most 64 bytes long"
MAX_KEY_BYTES = 65535  # docs/gguf.md: keys are at most 2^16 - 1 bytes

HEADER = struct.Struct("<4sIQQ")  # magic, version, tensor_count, kv_count
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_ARRAY_HEAD = struct.Struct("<IQ")  # element type, count
_DIMS = [struct.Struct(f"<{n}Q") for n in range(5)]  # ne[0..n_dims)


class ValueType(IntEnum):
    """GGUF metadata value types (gguf_type in ggml's gguf.h)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# Fixed-size value types: numpy dtype of one value. A scalar becomes a Python int, float or bool; an array stays a
# read-only numpy view (bool arrays checked to hold only 0 and 1).
VALUE_DTYPES: dict[ValueType, np.dtype] = {
    ValueType.UINT8: np.dtype("u1"),
    ValueType.INT8: np.dtype("i1"),
    ValueType.UINT16: np.dtype("<u2"),
    ValueType.INT16: np.dtype("<i2"),
    ValueType.UINT32: np.dtype("<u4"),
    ValueType.INT32: np.dtype("<i4"),
    ValueType.FLOAT32: np.dtype("<f4"),
    ValueType.BOOL: np.dtype("u1"),
    ValueType.UINT64: np.dtype("<u8"),
    ValueType.INT64: np.dtype("<i8"),
    ValueType.FLOAT64: np.dtype("<f8"),
}
_SCALAR_STRUCTS = {
    t: struct.Struct("<" + fmt)
    for t, fmt in zip(VALUE_DTYPES, ["B", "b", "H", "h", "I", "i", "f", "B", "Q", "q", "d"], strict=True)
}
assert all(s.size == VALUE_DTYPES[t].itemsize for t, s in _SCALAR_STRUCTS.items())

# Short names for `GGUFFile.metadata_types`, as llama.cpp's gguf_type_name spells them; arrays read "arr[u32]".
VALUE_TYPE_NAMES: dict[ValueType, str] = {
    ValueType.UINT8: "u8",
    ValueType.INT8: "i8",
    ValueType.UINT16: "u16",
    ValueType.INT16: "i16",
    ValueType.UINT32: "u32",
    ValueType.INT32: "i32",
    ValueType.FLOAT32: "f32",
    ValueType.BOOL: "bool",
    ValueType.STRING: "str",
    ValueType.ARRAY: "arr",
    ValueType.UINT64: "u64",
    ValueType.INT64: "i64",
    ValueType.FLOAT64: "f64",
}

# The fewest bytes one key-value pair and one tensor info can take, to bound counts by the file size.
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, a one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, n_dims, ggml type, offset


@dataclass(frozen=True)
class TensorInfo:
    """One tensor info entry, checked against the file."""

    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]  # numpy order, outermost first: shape[-1] is GGUF's ne[0], the row length
    offset: int  # absolute byte offset of the first byte in the file (data section start + stored offset)
    nbytes: int  # bytes the tensor's data takes

    @property
    def view_shape(self) -> tuple[int, ...]:
        """Shape of `GGUFFile[name]`: `shape` for plain types, rows of raw bytes for quantized ones."""
        if not self.ggml_type.quantized:
            return self.shape
        row = self.shape[-1] if self.shape else 1
        return self.shape[:-1] + (self.ggml_type.row_bytes(row),)


class StringArray(Sequence):
    """A GGUF array of strings, decoded from the mapping on first use (all at once) and then cached.

    Behaves like a tuple of str: len, indexing, slicing, iteration, `==` with a list or tuple. A string that is
    not UTF-8 raises `WeightFileError` on that first use, since open() only walked the lengths.
    """

    def __init__(self, path: Path, buf, start: int, end: int, count: int):
        self._path, self._buf, self._start, self._end, self._count = path, buf, start, end, count
        self._items: list[str] | None = None

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index):
        return self._decoded()[index]

    def __iter__(self):
        return iter(self._decoded())

    def __eq__(self, other) -> bool:
        if isinstance(other, (StringArray, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # like list: equal to lists, so not hashable

    def __repr__(self) -> str:
        return f"StringArray({self._count} strings)"

    def tolist(self) -> list[str]:
        """All strings, as a new list (decoding happens once; later calls copy the decoded list)."""
        return list(self._decoded())

    def _decoded(self) -> list[str]:
        if self._items is None:
            # One copy of the region, then slices of it: faster than slicing the mapping string by string.
            region = self._buf[self._start : self._end]
            unpack = _U64.unpack_from
            items, pos = [], 0
            append = items.append
            try:
                for _ in range(self._count):
                    (length,) = unpack(region, pos)
                    pos += 8
                    append(region[pos : pos + length].decode("utf-8"))
                    pos += length
            except UnicodeDecodeError as e:
                raise WeightFileError(
                    self._path,
                    f"string {len(items)} of the array at byte {self._start} is not valid UTF-8 (byte {e.start})",
                ) from None
            self._items = items
        return self._items


class GGUFFile:
    """A validated, memory-mapped GGUF file.

    Args:
        path (str or Path): the file to open.

    Raises:
        WeightFileError: the file cannot be read or breaks the format; the message names the file and the rule.

    Attributes:
        path (Path), version (int), alignment (int), data_offset (int: where the data section starts);
        metadata (dict): key -> int, float, bool, str, read-only 1-D numpy array (numeric arrays) or StringArray,
            in file order;
        metadata_types (dict): key -> its stored type, "u32", "f32", "str", "arr[i32]", ... (see VALUE_TYPE_NAMES);
        tensors (dict): name -> TensorInfo, in file order.

    `f[name]` returns the tensor's data as stored (see the module docstring); the mapping stays open while any
    view or StringArray is alive.

    Example:
        >>> f = GGUFFile("gemma-3-270m-q4_k_m.gguf")                  # doctest: +SKIP
        >>> f.tensors["token_embd.weight"].ggml_type.name              # doctest: +SKIP
        'Q8_0'
        >>> len(f.metadata["tokenizer.ggml.tokens"])                   # doctest: +SKIP
        262144
    """

    def __init__(self, path):
        self.path = Path(path)
        head, self._map = map_weight_file(self.path, HEADER.size)
        _check_header_start(self.path, head)
        _magic, self.version, n_tensors, n_kv = HEADER.unpack_from(self._map)
        cursor = _Cursor(self.path, self._map, HEADER.size)
        self.metadata, self.metadata_types = _read_metadata(cursor, n_kv)
        self.alignment = _alignment(self.path, self.metadata, self.metadata_types)
        infos = _read_tensor_infos(cursor, n_tensors)
        self.data_offset = _align(cursor.pos, self.alignment)
        self.tensors = _place_tensors(self.path, infos, self.data_offset, self.alignment, len(self._map))

    # -- tensors

    def keys(self):
        return self.tensors.keys()

    def __iter__(self):
        return iter(self.tensors)

    def __contains__(self, name) -> bool:
        return name in self.tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            t = self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None
        dtype = t.ggml_type.dtype if t.ggml_type.dtype is not None else np.dtype("u1")
        arr = np.frombuffer(self._map, dtype=dtype, count=t.nbytes // dtype.itemsize, offset=t.offset)
        return arr.reshape(t.view_shape)

    def advise_rows(self, name: str) -> None:
        """Tensor `name` is read a few rows at a time (a token table): votive.formats.safetensors.advise_rows."""
        from votive.formats.safetensors import advise_rows

        t = self.tensors[name]
        advise_rows(self._map, t.offset, t.nbytes)

    def read_ahead(self, names) -> None:
        """Start faulting in tensors `names` from background threads (votive.formats.safetensors.read_ahead)."""
        from votive.formats.safetensors import read_ahead

        read_ahead(self._map, [(self.tensors[n].offset, self.tensors[n].offset + self.tensors[n].nbytes)
                               for n in names])

    # -- metadata

    def get(self, key: str, default=None):
        """The value of metadata `key`, or `default` when the file has no such key."""
        return self.metadata.get(key, default)

    def require(self, key: str, kind: type | None = None):
        """The value of metadata `key`, which must be present (and of `kind`, if given).

        Args:
            key (str): e.g. "llama.block_count".
            kind (type, optional): int, float, bool, str, np.ndarray or StringArray. float accepts an integer
                value (returned as float); int refuses bool.

        Raises:
            WeightFileError: "missing metadata key 'llama.block_count'", or the key holds another kind of value.

        Example:
            >>> f.require(f"{f.architecture}.context_length", int)     # doctest: +SKIP
            8192
        """
        if key not in self.metadata:
            raise WeightFileError(self.path, f"missing metadata key {key!r}")
        value = self.metadata[key]
        if kind is None:
            return value
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise WeightFileError(
            self.path, f"metadata key {key!r} is {self.metadata_types[key]} {_brief(value)}, expected {kind.__name__}"
        )

    @property
    def architecture(self) -> str:
        """`general.architecture`, e.g. "llama" or "gemma3": the prefix of the model's own metadata keys."""
        return self.require("general.architecture", str)


# ---------------------------------------------------------------------------------------------------------------
# Parsing


class _Cursor:
    """A read position in the mapping; every read is bounds-checked and names what it was reading."""

    def __init__(self, path: Path, buf, pos: int):
        self.path, self.buf, self.pos, self.size = path, buf, pos, len(buf)

    def fail(self, problem: str) -> NoReturn:
        raise WeightFileError(self.path, problem)

    def need(self, n: int, what: str) -> int:
        """Advance past `n` bytes and return where they start; fail if the file ends first."""
        start = self.pos
        if n > self.size - start:
            self.fail(f"{what} runs past the end of the file (needs {n} bytes at byte {start} of {self.size})")
        self.pos = start + n
        return start

    def unpack(self, st: struct.Struct, what: str):
        return st.unpack_from(self.buf, self.need(st.size, what))

    def string(self, what: str, limit: int | None = None) -> str:
        (length,) = self.unpack(_U64, f"{what} length")
        if limit is not None and length > limit:
            self.fail(f"{what} is {length} bytes long, more than the {limit} GGUF allows")
        start = self.need(length, f"{what} ({length} bytes)")
        try:
            return self.buf[start : start + length].decode("utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"{what} at byte {start} is not valid UTF-8 (byte {e.start} of it)")

    def value_type(self, what: str) -> ValueType:
        (raw,) = self.unpack(_U32, f"{what} type")
        try:
            return ValueType(raw)
        except ValueError:
            self.fail(f"{what} has unknown value type {raw} (known: 0-{max(ValueType)})")


def _check_header_start(path: Path, head: bytes) -> None:
    if len(head) < HEADER.size:
        raise WeightFileError(path, f"file is {len(head)} bytes, too short for the {HEADER.size}-byte GGUF header")
    magic, version, _, _ = HEADER.unpack_from(head)
    if magic != GGUF_MAGIC:
        raise WeightFileError(path, f"not a GGUF file: starts with {magic!r}, expected {GGUF_MAGIC!r}")
    if version in SUPPORTED_VERSIONS:
        return
    swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
    if swapped in SUPPORTED_VERSIONS:
        raise WeightFileError(
            path, f"big-endian GGUF (version {swapped} stored byte-swapped); only little-endian files are supported"
        )
    if version == 1:
        raise WeightFileError(
            path, "GGUF version 1 is not supported (it predates 64-bit counts); convert the model with a current tool"
        )
    if version > max(SUPPORTED_VERSIONS):
        raise WeightFileError(path, f"GGUF version {version} is newer than this reader supports (2 or 3)")
    raise WeightFileError(path, f"GGUF version {version} is not a valid version (expected 2 or 3)")


def _read_metadata(cur: _Cursor, n_kv: int) -> tuple[dict, dict]:
    if n_kv > (cur.size - cur.pos) // _MIN_KV_BYTES:
        cur.fail(f"header claims {n_kv} metadata keys, more than the {cur.size}-byte file can hold")
    metadata, types = {}, {}
    for i in range(n_kv):
        key = cur.string(f"metadata key #{i}", MAX_KEY_BYTES)
        if not key:
            cur.fail(f"metadata key #{i} is empty")
        if key in metadata:
            cur.fail(f"metadata key {key!r} appears twice")
        what = f"metadata {key!r}"
        vtype = cur.value_type(what)
        if vtype == ValueType.ARRAY:
            metadata[key], elem = _read_array(cur, what)
            types[key] = f"arr[{VALUE_TYPE_NAMES[elem]}]"
        else:
            metadata[key] = _read_scalar(cur, vtype, what)
            types[key] = VALUE_TYPE_NAMES[vtype]
    return metadata, types


def _read_scalar(cur: _Cursor, vtype: ValueType, what: str):
    if vtype == ValueType.STRING:
        return cur.string(what)
    (value,) = cur.unpack(_SCALAR_STRUCTS[vtype], what)
    if vtype == ValueType.BOOL:
        if value > 1:
            cur.fail(f"{what} is a bool stored as {value}, expected 0 or 1")
        return bool(value)
    return value


def _read_array(cur: _Cursor, what: str):
    elem, count = cur.unpack(_ARRAY_HEAD, f"{what} array header")
    try:
        elem = ValueType(elem)
    except ValueError:
        cur.fail(f"{what} is an array of unknown value type {elem} (known: 0-{max(ValueType)})")
    if elem == ValueType.ARRAY:
        cur.fail(f"{what} is an array of arrays, which llama.cpp does not read either")
    if elem == ValueType.STRING:
        return _walk_strings(cur, count, what), elem
    dtype = VALUE_DTYPES[elem]
    if count > (cur.size - cur.pos) // dtype.itemsize:
        cur.fail(f"{what}: array of {count} {VALUE_TYPE_NAMES[elem]} runs past the end of the file")
    start = cur.need(count * dtype.itemsize, what)
    arr = np.frombuffer(cur.buf, dtype=dtype, count=count, offset=start)
    if elem == ValueType.BOOL:
        if count and arr.max() > 1:
            cur.fail(f"{what}: bool array holds {int(arr.max())} at index {int(arr.argmax())}, expected 0 or 1")
        arr = arr.view(np.bool_)
    return arr, elem


def _walk_strings(cur: _Cursor, count: int, what: str) -> StringArray:
    if count > (cur.size - cur.pos) // 8:
        cur.fail(f"{what}: array of {count} strings runs past the end of the file")
    # The hot loop of open(): only follow the lengths (about 17 ms for 262144 tokens); decoding waits for use.
    unpack, buf, start = _U64.unpack_from, cur.buf, cur.pos
    pos = start
    try:
        for _ in range(count):
            pos += 8 + unpack(buf, pos)[0]
    except (struct.error, OverflowError):  # a length field lies past the end, or a length put pos beyond any index
        pos = cur.size + 1
    if pos > cur.size:
        cur.fail(f"{what}: array of {count} strings starting at byte {start} runs past the end of the file")
    cur.pos = pos
    return StringArray(cur.path, buf, start, pos, count)


def _alignment(path: Path, metadata: dict, types: dict) -> int:
    if "general.alignment" not in metadata:
        return DEFAULT_ALIGNMENT
    value = metadata["general.alignment"]
    if types["general.alignment"] != "u32":
        raise WeightFileError(path, f"general.alignment is {types['general.alignment']}, expected u32")
    if value == 0 or value & (value - 1):
        raise WeightFileError(path, f"general.alignment is {value}, expected a power of two")
    return value


@dataclass(frozen=True)
class _RawInfo:
    name: str
    ggml_type: GGMLType
    shape: tuple[int, ...]  # numpy order
    offset: int  # as stored: relative to the data section
    nbytes: int


def _read_tensor_infos(cur: _Cursor, n_tensors: int) -> list[_RawInfo]:
    if n_tensors > (cur.size - cur.pos) // _MIN_TENSOR_INFO_BYTES:
        cur.fail(f"header claims {n_tensors} tensors, more than the {cur.size}-byte file can hold")
    infos, seen = [], set()
    for i in range(n_tensors):
        name = cur.string(f"tensor #{i} name", MAX_TENSOR_NAME_BYTES)
        if name in seen:
            cur.fail(f"tensor name {name!r} appears twice")
        seen.add(name)
        what = f"tensor {name!r}"
        (n_dims,) = cur.unpack(_U32, f"{what} dimension count")
        if n_dims > MAX_DIMS:
            cur.fail(f"{what} has {n_dims} dimensions, more than the {MAX_DIMS} GGUF allows")
        ne = cur.unpack(_DIMS[n_dims], f"{what} dimensions")  # n_dims 0 is a scalar, as in llama.cpp
        if 0 in ne:
            cur.fail(f"{what} has a zero dimension (ne = {list(ne)}); GGUF tensors cannot be empty")
        (type_id,) = cur.unpack(_U32, f"{what} type")
        ggml_type = _tensor_type(cur, type_id, what)
        (offset,) = cur.unpack(_U64, f"{what} offset")
        row = ne[0] if ne else 1
        if row % ggml_type.block_size:
            cur.fail(
                f"{what}: rows of {row} elements are not a whole number of "
                f"{ggml_type.block_size}-element {ggml_type.name} blocks"
            )
        # Python integers do not wrap, so a product meant to overflow uint64 is simply too big for the file below.
        nbytes = ggml_type.row_bytes(row) * math.prod(ne[1:])
        infos.append(_RawInfo(name, ggml_type, tuple(reversed(ne)), offset, nbytes))
    return infos


def _tensor_type(cur: _Cursor, type_id: int, what: str) -> GGMLType:
    if type_id in GGML_TYPES:
        return GGML_TYPES[type_id]
    if type_id in REMOVED_TYPES:
        cur.fail(f"{what} has ggml type {type_id} ({REMOVED_TYPES[type_id]}), which ggml has removed")
    cur.fail(f"{what} has unknown ggml type {type_id}")


def _place_tensors(path: Path, infos: list[_RawInfo], data_offset: int, alignment: int, size: int) -> dict:
    tensors = {}
    previous = None
    for t in infos:
        if t.offset % alignment:
            raise WeightFileError(path, f"tensor {t.name!r} data offset {t.offset} is not a multiple of {alignment}")
        if previous is not None and t.offset < previous.offset + previous.nbytes:
            raise WeightFileError(
                path,
                f"tensor {t.name!r} starts at data byte {t.offset}, before the end of {previous.name!r} "
                f"(data bytes {previous.offset}-{previous.offset + previous.nbytes}): tensors must be stored in "
                "order, without overlap",
            )
        start = data_offset + t.offset
        if t.nbytes > size - start:
            raise WeightFileError(
                path,
                f"tensor {t.name!r} ({t.ggml_type.name} {t.shape}) needs {t.nbytes} bytes at byte {start}, "
                f"past the end of the {size}-byte file",
            )
        tensors[t.name] = TensorInfo(t.name, t.ggml_type, t.shape, start, t.nbytes)
        previous = t
    return tensors


def _align(n: int, alignment: int) -> int:
    return -(-n // alignment) * alignment


def _brief(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

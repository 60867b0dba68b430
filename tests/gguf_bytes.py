"""GGUF files written field by field with `struct`, for the reader's tests (hostile files above all).

Independent of votive's writer on purpose: each piece here is one line of docs/gguf.md, and `gguf_file` takes
every header field as an argument, so a test builds a valid file and changes exactly one field.

Example:
    >>> raw = gguf_file([kv_u32("general.alignment", 64)], [tensor_info("w", [32], F32, 0)], bytes(128))
"""

from __future__ import annotations

import struct

# GGUF value types (docs/gguf.md, gguf_metadata_value_type).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)

# GGML tensor types used by the tests (ggml.h, ggml_type).
F32, F16, Q4_0, Q8_0, Q4_K, Q6_K, BF16 = 0, 1, 2, 8, 12, 14, 30

# struct format of each fixed-size value type.
FORMATS = {
    UINT8: "B",
    INT8: "b",
    UINT16: "H",
    INT16: "h",
    UINT32: "I",
    INT32: "i",
    FLOAT32: "f",
    BOOL: "B",
    UINT64: "Q",
    INT64: "q",
    FLOAT64: "d",
}


def gstr(text: str | bytes, length: int | None = None) -> bytes:
    """A GGUF string: u64 length, then the bytes; `length` overrides the stated length."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    return struct.pack("<Q", len(raw) if length is None else length) + raw


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    """One metadata pair from its parts: key, u32 value type, the value's bytes as given."""
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_scalar(key: str, vtype: int, value) -> bytes:
    return kv(key, vtype, gstr(value) if vtype == STRING else struct.pack("<" + FORMATS[vtype], value))


def kv_u32(key: str, value: int) -> bytes:
    return kv_scalar(key, UINT32, value)


def kv_str(key: str, value: str | bytes) -> bytes:
    return kv(key, STRING, gstr(value))


def kv_array(key: str, elem: int, values, count: int | None = None) -> bytes:
    """An array pair: u32 ARRAY, u32 element type, u64 count (default len(values)), the packed elements."""
    if elem == STRING:
        body = b"".join(gstr(v) for v in values)
    else:
        body = struct.pack(f"<{len(values)}{FORMATS[elem]}", *values)
    n = len(values) if count is None else count
    return kv(key, ARRAY, struct.pack("<IQ", elem, n) + body)


def tensor_info(name: str | bytes, ne, ggml_type: int, offset: int, n_dims: int | None = None) -> bytes:
    """One tensor info: name, u32 n_dims, u64 ne[] (innermost first, as stored), u32 type, u64 offset."""
    n = len(ne) if n_dims is None else n_dims
    return gstr(name) + struct.pack(f"<I{len(ne)}QIQ", n, *ne, ggml_type, offset)


def gguf_file(
    kvs=(),
    infos=(),
    data: bytes = b"",
    *,
    magic: bytes = b"GGUF",
    version: int = 3,
    n_tensors: int | None = None,
    n_kv: int | None = None,
    alignment: int = 32,
    pad: bool = True,
) -> bytes:
    """Header, metadata pairs, tensor infos, zero padding to `alignment` (unless pad=False), then `data`."""
    head = struct.pack(
        "<4sIQQ",
        magic,
        version,
        len(infos) if n_tensors is None else n_tensors,
        len(kvs) if n_kv is None else n_kv,
    )
    body = head + b"".join(kvs) + b"".join(infos)
    if pad:
        body += bytes(-len(body) % alignment)
    return body + data

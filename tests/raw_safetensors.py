"""Helpers for the safetensors tests: write files byte by byte (hostile ones included), spot zero-copy views."""

from __future__ import annotations

import json
import mmap
import struct

import numpy as np


def write_raw(path, header, data: bytes = b"", header_len: int | None = None):
    """Write u64 little-endian header length, header bytes, data bytes; return path.

    Args:
        path (Path): where to write.
        header: a dict (dumped as JSON), a str (encoded as UTF-8) or raw bytes.
        data: the bytes after the header.
        header_len: the length to claim; defaults to the true length of the header bytes.

    Example:
        >>> write_raw(tmp / "m.safetensors", {"a": entry("U8", [1], 0, 1)}, b"\\x07")  # doctest: +SKIP
    """
    if isinstance(header, dict):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode("utf-8")
    claimed = len(header) if header_len is None else header_len
    path.write_bytes(struct.pack("<Q", claimed) + header + data)
    return path


def entry(dtype: str, shape, begin, end) -> dict:
    """One header entry."""
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def reaches_mmap(arr: np.ndarray) -> bool:
    """True when following `.base` from arr ends at an mmap object: a view into the file, not a copy."""
    base = arr
    while isinstance(base, (np.ndarray, memoryview)):  # numpy sometimes keeps the buffer's memoryview
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return isinstance(base, mmap.mmap)

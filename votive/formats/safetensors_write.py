"""Write a safetensors file: an 8-byte little-endian header length, the JSON header (each tensor's dtype, shape
and data offsets; padded with spaces to a multiple of 8 bytes, as the reference writer does), then the tensors'
bytes in order. The reader is votive.formats.safetensors; its DTYPES table names the stored types."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from votive.errors import WeightFileError
from votive.formats.safetensors import DTYPES

# numpy dtype -> safetensors dtype, for the types whose numpy dtype says what they are (BF16 and FP8 bits travel
# as unsigned integers: their callers name them)
_BY_NUMPY = {d: name for name, (d, _) in DTYPES.items() if name != "BF16" and not name.startswith("F8")}


def write_safetensors(path, tensors: dict, *, dtypes: dict | None = None, metadata: dict | None = None,
                      overwrite: bool = False) -> Path:
    """Write `tensors` (name -> numpy array) to `path`, which appears only once complete.

    Args:
        dtypes: name -> safetensors dtype for tensors whose numpy dtype does not say it (BF16 as uint16 bits).
        metadata: str -> str pairs stored under the header's "__metadata__".
        overwrite: replace an existing file; by default an existing file is an error.

    Raises:
        WeightFileError: `path` exists and overwrite is False, or a tensor's dtype has no safetensors name.
    """
    path, dtypes = Path(path), dtypes or {}
    if path.exists() and not overwrite:
        raise WeightFileError(path, "already exists; pass overwrite=True to replace it")
    header, offset, arrays = {}, 0, []
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        dtype = dtypes.get(name) or _BY_NUMPY.get(array.dtype.newbyteorder("<"))
        if dtype is None or DTYPES[dtype][1] != array.dtype.itemsize:
            raise WeightFileError(path, f"tensor {name!r}: numpy dtype {array.dtype} has no safetensors type here")
        array = array.astype(DTYPES[dtype][0], copy=False)  # little-endian whatever the host
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
        arrays.append(array)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(partial, "wb") as out:
            out.write(len(text).to_bytes(8, "little") + text)
            for array in arrays:
                out.write(array.reshape(-1).view(np.uint8).data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path

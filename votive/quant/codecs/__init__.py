"""GGML quantized formats in numpy: dequantize, quantize, and the quantized dot products, each with a slow twin.

Formats, by GGML type id (see votive.quant.ggml_types for every id ggml defines):

    0 F32   1 F16   30 BF16                                        plain floats
    2 Q4_0  3 Q4_1  6 Q5_0  7 Q5_1  8 Q8_0                         32-element blocks (legacy.py)
    10 Q2_K 11 Q3_K 12 Q4_K 13 Q5_K 14 Q6_K                        256-element super-blocks (kquants.py)
    9 Q8_1  15 Q8_K                                                activations of dot products (activations.py)

Every format dequantizes. Quantizers exist for F32, F16, BF16, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K (the types of
llama.cpp's Q4_K_M mixture and its fallbacks) and the activation formats Q8_1 and Q8_K, each bit-exact with
ggml's reference quantizer (quantize_row_*_ref) compiled without FMA contraction.

Each format module writes block-level code only; this module handles rows, shapes and argument checks. Every
function has a `_ref` twin that runs ggml's plain loops, one block and one element at a time, for tests and
for checking C kernels: slow, but written to be read against ggml/src/ggml-quants.c.

Example:
    >>> import numpy as np
    >>> block = np.frombuffer(np.float16(1.0).tobytes() + bytes(range(0, 256, 17)), np.uint8)  # d=1, nibbles
    >>> dequantize(block, 2)[0, :4]  # Q4_0: element j is low nibble j - 8, element j + 16 is high nibble j - 8
    array([-8., -7., -6., -5.], dtype=float32)
"""

from __future__ import annotations

import numpy as np

from votive.errors import QuantError
from votive.quant.codecs import activations, kquants, legacy
from votive.quant.codecs.activations import VEC_DOT_TYPE
from votive.quant.codecs.common import F32, QuantFormat, check_finite
from votive.quant.ggml_types import ggml_type

# The one table of formats votive can compute with, keyed by GGML type id.
FORMATS: dict[int, type[QuantFormat]] = {
    fmt.type_id: fmt
    for fmt in (
        legacy.F32Format,
        legacy.F16Format,
        legacy.BF16Format,
        legacy.Q4_0,
        legacy.Q4_1,
        legacy.Q5_0,
        legacy.Q5_1,
        legacy.Q8_0,
        activations.Q8_1,
        kquants.Q2_K,
        kquants.Q3_K,
        kquants.Q4_K,
        kquants.Q5_K,
        kquants.Q6_K,
        activations.Q8_K,
    )
}

__all__ = [
    "FORMATS",
    "VEC_DOT_TYPE",
    "QuantFormat",
    "dequantize",
    "dequantize_ref",
    "quant_format",
    "quantize",
    "quantize_q8",
    "quantize_ref",
    "vec_dot",
    "vec_dot_ref",
]


def quant_format(type_id) -> type[QuantFormat]:
    """The format for a GGML type id (or name, e.g. "Q4_K"); QuantError naming anything votive cannot handle.

    Example:
        >>> quant_format(12).name, quant_format(12).block_size, quant_format(12).block_bytes
        ('Q4_K', 256, 144)
    """
    try:
        known = ggml_type(type_id)
    except (ValueError, TypeError) as exc:
        raise QuantError(str(exc)) from None
    if known.id not in FORMATS:
        supported = ", ".join(f.name for f in FORMATS.values())
        raise QuantError(f"GGML type {known.id} ({known.name}) is not supported by votive (supported: {supported})")
    return FORMATS[known.id]


def dequantize(data, type_id, cols: int | None = None) -> np.ndarray:
    """Raw GGML data -> float32 (rows, cols).

    Args:
        data: the bytes as stored in a GGUF file: a uint8 array (rows, bytes_per_row) or flat, bytes-like, or for
            F32 / F16 / BF16 also an array of that element type (float32, float16, uint16 bits).
        type_id: GGML type id (or name).
        cols: elements per row, for flat data; flat data without it is one row.

    Returns:
        float32 array (rows, cols), bit-exact with ggml's dequantize_row_* (and the gguf package).
    """
    fmt = quant_format(type_id)
    raw = _rows_of_bytes(data, fmt, cols)  # uint8 (rows, row_bytes)
    blocks = raw.view(fmt.layout).reshape(-1)  # (rows * blocks_per_row,)
    return fmt.dequantize_blocks(blocks).reshape(raw.shape[0], raw.shape[1] // fmt.block_bytes * fmt.block_size)


def dequantize_ref(data, type_id, cols: int | None = None) -> np.ndarray:
    """dequantize through the format's plain-loop twin (slow; for tests). Same arguments and result."""
    fmt = quant_format(type_id)
    raw = _rows_of_bytes(data, fmt, cols)
    k = raw.shape[1] // fmt.block_bytes * fmt.block_size
    out = np.empty((raw.shape[0], k), F32)
    for r, row in enumerate(raw):
        out[r] = fmt.dequantize_ref(row.tobytes(), k)
    return out


def quantize(x, type_id) -> np.ndarray:
    """float rows -> GGML data: uint8 (rows, bytes_per_row), as a GGUF file stores it.

    Args:
        x: float array (rows, cols) or (cols,); converted to float32 first, as ggml quantizes float32.
        type_id: a format with a quantizer: F32, F16, BF16, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, or the activation
            formats Q8_1, Q8_K.

    Raises:
        QuantError: no quantizer for the type, cols not whole blocks, or NaN / inf in a block-quantized format.
    """
    fmt, x = _quantizable(x, type_id)
    out = fmt.quantize_blocks(x.reshape(-1, fmt.block_size))  # structured (rows * blocks_per_row,)
    return out.view(np.uint8).reshape(x.shape[0], _row_bytes(fmt, x.shape[1]))


def quantize_ref(x, type_id) -> np.ndarray:
    """quantize through ggml's reference loops (quantize_row_*_ref mirrors; slow). Same arguments and result."""
    fmt, x = _quantizable(x, type_id)
    if fmt.block_size == 1:  # plain floats: a conversion, nothing to mirror
        return quantize(x, type_id)
    out = np.empty((x.shape[0], _row_bytes(fmt, x.shape[1])), np.uint8)
    for r, row in enumerate(x):
        out[r] = np.frombuffer(fmt.quantize_ref(row), np.uint8)
    return out


def quantize_q8(x, weight_type) -> np.ndarray:
    """Quantize activations for a dot product with `weight_type` weights, to the format ggml pairs with it
    (VEC_DOT_TYPE: Q8_0, Q8_1 or Q8_K). x (cols,) or (rows, cols) -> uint8 (rows, bytes_per_row)."""
    return quantize_activations(x, _vec_dot_type(weight_type))


def quantize_activations(x, type_id) -> np.ndarray:
    """`quantize` for activations: as ggml's CPU code quantizes them, which for Q8_0 rounds differently from the
    reference quantizer that Q8_0 weights are made with (activations.quantize_blocks_32 says how)."""
    if getattr(type_id, "id", type_id) != legacy.Q8_0.type_id:
        return quantize(x, type_id)
    fmt, x = _quantizable(x, type_id)
    out = activations.quantize_q8_0_activations(x.reshape(-1, fmt.block_size))
    return out.view(np.uint8).reshape(x.shape[0], _row_bytes(fmt, x.shape[1]))


def vec_dot(weights, activation, weight_type) -> np.ndarray:
    """Each weight row times one quantized activation row, with ggml's integer products.

    Args:
        weights: GGML data of `weight_type`, uint8 (rows, bytes_per_row).
        activation: one row from quantize_q8(x, weight_type), uint8 (bytes,) or (1, bytes).
        weight_type: GGML type id of the weights; must be quantized (F32/F16/BF16 have no quantized dot).

    Returns:
        float32 (rows,), bit-exact with vec_dot_ref; see activations.py for the float order and how far ggml's
        own kernels may differ. A reference for kernels, not a fast path: it holds int64 products of the whole
        weight matrix (8 bytes per weight) at once.
    """
    wfmt, afmt = quant_format(weight_type), quant_format(_vec_dot_type(weight_type))
    w = _rows_of_bytes(weights, wfmt, None)
    a = _rows_of_bytes(activation, afmt, None)
    cols = _check_pair(w, a, wfmt, afmt)
    terms = activations.VEC_DOT_TERMS[wfmt.type_id](w.view(wfmt.layout), a.view(afmt.layout).reshape(-1))
    assert terms.shape == (w.shape[0], cols // wfmt.block_size)
    return activations.sum_in_block_order(terms)


def vec_dot_ref(weights, activation, weight_type) -> np.ndarray:
    """vec_dot through the plain-loop ggml_vec_dot_* mirrors (slow). Same arguments and result."""
    wfmt, afmt = quant_format(weight_type), quant_format(_vec_dot_type(weight_type))
    w = _rows_of_bytes(weights, wfmt, None)
    a = _rows_of_bytes(activation, afmt, None)
    cols = _check_pair(w, a, wfmt, afmt)
    dot = activations.VEC_DOT_REF[wfmt.type_id]
    a_bytes = a.tobytes()
    return np.array([dot(row.tobytes(), a_bytes, cols) for row in w], F32)


# ---- helpers -----------------------------------------------------------------------------------------------------


def _rows_of_bytes(data, fmt: type[QuantFormat], cols: int | None) -> np.ndarray:
    """Any accepted form of stored data -> C-contiguous uint8 (rows, row_bytes), row_bytes whole blocks."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, np.uint8)
    arr = np.asarray(data)
    if arr.dtype != np.uint8:
        element = fmt.layout if fmt.layout.fields is None else None  # plain floats may come typed
        if element is None or arr.dtype.newbyteorder("<") != element:
            wanted = "uint8 bytes" + (f" or {element}" if element is not None else "")
            raise QuantError(f"{fmt.name} data must be {wanted}, got an array of {arr.dtype}")
        arr = np.ascontiguousarray(arr.astype(element, copy=False)).view(np.uint8)
    if arr.ndim == 0:
        raise QuantError(f"{fmt.name} data must be an array of bytes, got a scalar")
    if arr.ndim == 1:
        if cols is None:
            arr = arr.reshape(1, -1)
        else:
            row_bytes = _row_bytes(fmt, cols)
            if row_bytes == 0 or arr.size % row_bytes:
                raise QuantError(
                    f"{fmt.name}: {arr.size} bytes are not whole rows of {cols} elements ({row_bytes} bytes each)"
                )
            arr = arr.reshape(-1, row_bytes)
    else:
        arr = arr.reshape(-1, arr.shape[-1])
        if cols is not None and _row_bytes(fmt, cols) != arr.shape[1]:
            raise QuantError(
                f"{fmt.name}: rows of {arr.shape[1]} bytes do not hold {cols} elements "
                f"({_row_bytes(fmt, cols)} bytes)"
            )
    if arr.shape[1] % fmt.block_bytes:
        raise QuantError(
            f"{fmt.name}: a row of {arr.shape[1]} bytes is not a whole number of {fmt.block_bytes}-byte blocks"
        )
    return np.ascontiguousarray(arr)


def _row_bytes(fmt: type[QuantFormat], cols: int) -> int:
    if cols < 0 or cols % fmt.block_size:
        raise QuantError(
            f"{fmt.name}: a row of {cols} elements is not a whole number of {fmt.block_size}-element blocks"
        )
    return cols // fmt.block_size * fmt.block_bytes


def _quantizable(x, type_id) -> tuple[type[QuantFormat], np.ndarray]:
    fmt = quant_format(type_id)
    if fmt.quantize_blocks is None:
        have = ", ".join(f.name for f in FORMATS.values() if f.quantize_blocks is not None)
        raise QuantError(f"votive has no {fmt.name} quantizer (it has: {have})")
    x = np.asarray(x, dtype=F32)
    if x.ndim == 0:
        raise QuantError(f"cannot quantize a scalar to {fmt.name}: give rows (cols,) or (rows, cols)")
    x = np.ascontiguousarray(x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1))
    _row_bytes(fmt, x.shape[1])
    if fmt.block_size > 1:
        check_finite(x, fmt.name)
    return fmt, x


def _vec_dot_type(weight_type) -> int:
    fmt = quant_format(weight_type)
    if fmt.type_id not in VEC_DOT_TYPE:
        have = ", ".join(FORMATS[t].name for t in VEC_DOT_TYPE)
        raise QuantError(f"{fmt.name} has no quantized dot product (weights with one: {have})")
    return VEC_DOT_TYPE[fmt.type_id]


def _check_pair(w: np.ndarray, a: np.ndarray, wfmt, afmt) -> int:
    cols = w.shape[1] // wfmt.block_bytes * wfmt.block_size
    a_cols = a.size // afmt.block_bytes * afmt.block_size
    if a.shape[0] != 1 or a_cols != cols:
        raise QuantError(
            f"vec_dot {wfmt.name} x {afmt.name}: weight rows hold {cols} elements but the activation is "
            f"{a.shape[0]} row(s) of {a_cols}; give one {afmt.name} row of {cols} elements (quantize_q8)"
        )
    return cols

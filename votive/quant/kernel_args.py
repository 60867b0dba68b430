"""What crosses into the C kernels: the checks on their arguments, an array's address, the status that comes back.

One check per class of argument, each raising KernelError that names the kernel, the argument, what it must be
and what was found, and returning the argument as the kernel takes it:

    floats          a float array the kernel takes as it is: float32 C-contiguous for C, any floating-point array
                    for the numpy twin; writable where the kernel writes it
    row_length      the length of a non-empty last axis (kernels over rows)
    vector          an optional per-column operand (bias, weight), converted to float32 C-contiguous
    like            an operand of a given shape (residual, up, cache), converted to float32 C-contiguous
    number          a finite scalar (eps, scale, base)
    broadcast_mask  an additive float mask broadcasting against x (softmax)
    output          the array a result goes to: the caller's `out`, checked, or a new one
    activations     the float32 rows of x a quantized product multiplies (hot: checked on every product)
    stored_matrix   GGML blocks of a type the C library takes, rows of this many columns
    row_ids         row ids of an embedding lookup
    kv_cache        a float16 attention cache

Below them, each kernel's checks built from these (`gelu_args`, ...): the `checks` column of the table in
`votive.quant.kernels`, run before it chooses C or the numpy twin, so both refuse the same arguments in the same
words. The float kernels' checks take `for_c`: True when the arrays go to C as they are. Then what a call
needs besides: `mask_layout` (a checked mask as vt_softmax reads it), `data_address` (an array as a pointer)
and `refusal` (the error for a status the checks should have made impossible).
"""

from __future__ import annotations

import ctypes

import numpy as np

from votive.errors import KernelError
from votive.quant.ggml_types import GGML_TYPES

VT_OK = 0  # VT_OK in csrc/votive.h; the other statuses are negative
VT_ERANGE = -4  # VT_ERANGE: vt_get_rows found a row id outside the matrix
MAX_GROUP = 16  # VT_MAX_GROUP: matrices in one vt_qmatmul_group call
ACTIVATION_TYPES = {8: "Q8_0", 9: "Q8_1", 15: "Q8_K"}  # what vt_quantize_rows writes
FLOAT32 = np.dtype(np.float32)  # numpy's built-in dtypes are singletons: `is` compares them in a few nanoseconds


def refusal(op: str, status: int) -> KernelError:
    """The error for a negative status the checks here should have made impossible."""
    return KernelError(f"{op}: the C kernel rejected its arguments (status {status})")


def describe(a) -> str:
    """What was found, for an error message: dtype, shape and layout of an array, else the type's name."""
    if isinstance(a, np.ndarray):
        layout = "C-contiguous" if a.flags.c_contiguous else "non-contiguous"
        return f"{a.dtype} array of shape {a.shape}, {layout}{'' if a.flags.writeable else ', read-only'}"
    return type(a).__name__


# ---------------------------------------------------------------------------------------- argument classes


def floats(op: str, name: str, a, for_c: bool, written: bool = False) -> np.ndarray:
    """A float array the kernel takes as it is: float32 and C-contiguous for C (`for_c`), any floating-point array
    for its numpy twin; writable when the kernel writes it (`written`)."""
    if for_c:
        if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous):
            raise KernelError(f"{op}: {name} must be a C-contiguous float32 array, found {describe(a)}")
    elif not (isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)):
        raise KernelError(f"{op}: {name} must be a floating-point array, found {describe(a)}")
    if written and not a.flags.writeable:
        raise KernelError(f"{op}: {name} is read-only and the kernel writes it in place; pass a writable copy")
    return a


def row_length(op: str, name: str, a: np.ndarray) -> int:
    """The length of a's last axis, the rows a kernel normalises or softmaxes; refused when there is none."""
    if a.ndim == 0 or a.shape[-1] == 0:
        raise KernelError(f"{op}: {name} needs a non-empty last axis, found shape {a.shape}")
    return a.shape[-1]


def vector(op: str, name: str, v, length: int) -> np.ndarray | None:
    """An optional (length,) float operand as float32 C-contiguous (None stays None)."""
    if v is None:
        return None
    if type(v) is np.ndarray and v.dtype is FLOAT32 and v.shape == (length,) and v.flags.c_contiguous:
        return v  # as the kernel takes it (every call of an encoder's layers): no conversion to check
    v = np.asarray(v)
    if v.shape != (length,) or not np.issubdtype(v.dtype, np.floating):
        raise KernelError(f"{op}: {name} must be a float vector of shape ({length},), found {describe(v)}")
    return np.ascontiguousarray(v, dtype=np.float32)


def like(op: str, name: str, a, shape: tuple) -> np.ndarray:
    """A float operand of `shape` as float32 C-contiguous."""
    if type(a) is np.ndarray and a.dtype is FLOAT32 and a.shape == shape and a.flags.c_contiguous:
        return a
    a = np.asarray(a)
    if a.shape != shape or not np.issubdtype(a.dtype, np.floating):
        raise KernelError(f"{op}: {name} must be a float array of shape {shape}, found {describe(a)}")
    return np.ascontiguousarray(a, dtype=np.float32)


def number(op: str, name: str, value) -> float:
    """A finite number, as a Python float."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise KernelError(f"{op}: {name} must be a number, found {value!r}") from None
    if not np.isfinite(value):
        raise KernelError(f"{op}: {name} must be finite, found {value}")
    return value


def broadcast_mask(op: str, mask, shape: tuple) -> np.ndarray:
    """An additive float mask that broadcasts against `shape`, with leading axes of size 1 added to match.

    Its dtype is kept: the numpy twin adds it as given; `mask_layout` converts it for C.
    """
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.floating):
        raise KernelError(f"{op}: mask must be additive floats (0 to keep, large negative to drop), "
                          f"found {mask.dtype}")
    if mask.ndim > len(shape) or any(m not in (1, s) for m, s in zip(mask.shape[::-1], shape[::-1])):
        raise KernelError(f"{op}: mask of shape {mask.shape} does not broadcast against x of shape {shape}")
    return mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)


def mask_layout(mask: np.ndarray, shape: tuple) -> tuple[np.ndarray, int, int]:
    """A mask from `broadcast_mask` as vt_softmax reads it: (float32 mask rows, div, mod).

    Row r of x (all axes but the last flattened) takes mask row (r // div) % mod. That covers a mask whose
    non-broadcast leading axes are consecutive, like (batch, 1, 1, k) or (1, 1, q, k) against (batch, heads,
    q, k); any other mask is expanded to x's shape first.
    """
    lead = shape[:-1]
    sized = [i for i, s in enumerate(lead) if s != 1]  # axes of size 1 do not break a run
    varying = [k for k, i in enumerate(sized) if mask.shape[i] != 1]  # positions in `sized`
    if mask.shape[-1] != shape[-1] or (varying and varying != list(range(varying[0], varying[-1] + 1))):
        full = np.ascontiguousarray(np.broadcast_to(mask, shape), dtype=np.float32)
        return full.reshape(-1, shape[-1]), 1, max(1, int(np.prod(lead, dtype=np.int64)))
    rows = np.ascontiguousarray(mask, dtype=np.float32).reshape(-1, shape[-1])
    if not varying:
        return rows, 1, 1
    div = int(np.prod(lead[sized[varying[-1]] + 1:], dtype=np.int64))
    return rows, max(div, 1), rows.shape[0]


def output(op: str, out, shape: tuple, for_c: bool = True, reads: tuple = (), same_ok: bool = False):
    """The array a kernel writes its result of `shape` to.

    out None: a new float32 array for C, None for the numpy twin (which makes its own). Otherwise out, after
    checking it is writable, of that shape, and shares no memory with the inputs in `reads` ((name, array)
    pairs); with `same_ok` it may be one of them exactly (in place), just not a shifted view of one.
    """
    if out is None:
        return np.empty(shape, FLOAT32) if for_c else None
    floats(op, "out", out, for_c, written=True)
    if out.shape != shape:
        raise KernelError(f"{op}: out must have shape {shape}, found {out.shape}")
    for name, a in reads:
        if a is None or (same_ok and a is out) or not np.may_share_memory(out, a):
            continue
        if not (same_ok and out.ctypes.data == a.ctypes.data and out.shape == a.shape and out.strides == a.strides):
            raise KernelError(f"{op}: out overlaps {name}" + (" without being the same array" if same_ok else ""))
    return out


def activations(op: str, x, in_features: int) -> int:
    """Rows of a quantized product's input, after checking it is float32 C-contiguous (n, in_features) or
    (in_features,) (one row)."""
    if type(x) is not np.ndarray or x.dtype is not FLOAT32 or not x.flags.c_contiguous or not 1 <= x.ndim <= 2 \
            or x.shape[-1] != in_features:
        raise KernelError(f"{op}: x must be a C-contiguous float32 array of shape (n, {in_features}) "
                          f"or ({in_features},), found {describe(x)}")
    return x.shape[0] if x.ndim == 2 else 1


def stored_matrix(op: str, types: dict, blocks, ggml_type, rows: int, cols: int) -> tuple[int, int]:
    """(type id, row stride in bytes) of a GGML-stored matrix of `rows` rows of `cols` elements, after checking
    that `types` (id or GGMLType -> GGMLType, what the C kernel takes) has its type and that its layout fits.

    Block formats come as uint8 (rows, bytes_per_row); plain floats may also come typed, (rows, cols) of their
    2- or 4-byte elements, as GGUFFile returns them. Rows may be further apart than their bytes.
    """
    try:
        t = types[ggml_type]
    except (KeyError, TypeError):
        what = "weights" if op == "qmatmul" else "rows"
        raise KernelError(f"{op}: {_type_name(ggml_type)} {what} are not supported by the C kernels "
                          f"(supported: {_type_names(types)})") from None
    if cols < 0 or cols % t.block_size:
        raise KernelError(f"{op}: in_features must be a whole number of {t.block_size}-element blocks, found {cols}")
    row_bytes = cols // t.block_size * t.block_bytes
    if isinstance(blocks, np.ndarray) and blocks.ndim == 2:
        if blocks.dtype == np.uint8:
            shape, element = (rows, row_bytes), 1
        elif t.block_size == 1 and blocks.itemsize == t.block_bytes and blocks.dtype.kind in "fu":
            shape, element = (rows, cols), t.block_bytes
        else:
            shape = element = None
        if blocks.shape == shape and blocks.strides[1] == element and blocks.strides[0] >= row_bytes:
            return t.id, blocks.strides[0]
    strides = f", strides {blocks.strides}" if isinstance(blocks, np.ndarray) else ""
    raise KernelError(f"{op}: blocks must be uint8 of shape ({rows}, {row_bytes}) (rows of {cols} elements in "
                      f"{t.block_bytes}-byte blocks) with contiguous rows, found {describe(blocks)}{strides}")


def _type_name(ggml_type) -> str:
    type_id = getattr(ggml_type, "id", ggml_type)
    known = GGML_TYPES.get(type_id) if isinstance(type_id, (int, np.integer)) else None
    return f"GGML type {type_id!r}" + (f" ({known.name})" if known else "")


def _type_names(types: dict) -> str:
    return ", ".join(GGML_TYPES[t].name for t in sorted(k for k in types if isinstance(k, int)))


def row_ids(op: str, ids) -> np.ndarray:
    """Row ids (a scalar is one) as a 1-D int64 C-contiguous array."""
    ids = np.asarray(ids)
    if ids.ndim > 1 or not (ids.dtype.kind in "iu" or ids.size == 0):
        raise KernelError(f"{op}: ids must be a 1-D array of integers, found {describe(ids)}")
    return np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)


def kv_cache(op: str, name: str, a) -> np.ndarray:
    """A half-precision cache, (kv_heads, ...) float16 C-contiguous."""
    if not (isinstance(a, np.ndarray) and a.dtype == np.float16 and a.ndim == 3 and a.flags.c_contiguous):
        raise KernelError(f"{op}: {name} must be a C-contiguous float16 (kv_heads, ...) array, found {describe(a)}")
    return a


# ------------------------------------------------------------------------------------ each kernel's checks


def gelu_args(x, bias, for_c: bool):
    x = floats("gelu", "x", x, for_c, written=True)
    return x, vector("gelu", "bias", bias, x.shape[-1] if x.ndim else 1)


def layer_norm_args(x, weight, bias, eps, residual, out, for_c: bool):
    x = floats("layer_norm", "x", x, for_c)
    cols = row_length("layer_norm", "x", x)
    weight = vector("layer_norm", "weight", weight, cols)
    bias = vector("layer_norm", "bias", bias, cols)
    if residual is not None:
        residual = like("layer_norm", "residual", residual, x.shape)
    out = output("layer_norm", out, x.shape, for_c, reads=(("x", x), ("residual", residual)), same_ok=True)
    return x, weight, bias, number("layer_norm", "eps", eps), residual, out


def softmax_args(x, mask, scale, for_c: bool):
    x = floats("softmax", "x", x, for_c, written=True)
    row_length("softmax", "x", x)
    scale = number("softmax", "scale", scale)
    return x, None if mask is None else broadcast_mask("softmax", mask, x.shape), scale


def linear_args(x, weight, bias, for_c: bool):
    x = floats("linear", "x", x, for_c)
    weight = floats("linear", "weight", weight, for_c)
    if weight.ndim != 2 or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise KernelError(f"linear: weight must be a matrix (out, {x.shape[-1] if x.ndim else '?'}) matching "
                          f"x's last axis, found weight {describe(weight)} for x {describe(x)}")
    return x, weight, vector("linear", "bias", bias, weight.shape[0])


def encoder_attention_args(qkv, offsets, heads, scale, for_c: bool):
    qkv = floats("encoder_attention", "qkv", qkv, for_c)
    heads = int(heads)
    if qkv.ndim != 2 or heads < 1 or qkv.shape[1] == 0 or qkv.shape[1] % (3 * heads):
        raise KernelError(f"encoder_attention: qkv must be (rows, 3 * heads * head_dim) for {heads} heads, found "
                          f"{describe(qkv)}")
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    if offsets.ndim != 1 or offsets.size < 1 or offsets[0] != 0 or offsets[-1] != qkv.shape[0] or \
            (np.diff(offsets) < 0).any():
        raise KernelError(f"encoder_attention: offsets must rise from 0 to qkv's {qkv.shape[0]} rows, found "
                          f"{offsets.tolist()[:8]}")
    return qkv, offsets, heads, number("encoder_attention", "scale", scale)


def rms_norm_args(x, weight, eps, for_c: bool):
    x = floats("rms_norm", "x", x, for_c)
    cols = row_length("rms_norm", "x", x)
    return x, vector("rms_norm", "weight", weight, cols), number("rms_norm", "eps", eps)


def swiglu_args(gate, up, for_c: bool):
    gate = floats("swiglu", "gate", gate, for_c, written=for_c)  # the twin returns a new array
    return gate, like("swiglu", "up", up, gate.shape)


def geglu_args(gate, up, table, for_c: bool):
    gate = floats("geglu", "gate", gate, for_c, written=for_c)  # the twin returns a new array
    return gate, like("geglu", "up", up, gate.shape), vector("geglu", "table", table, 1 << 16)


def rope_cache_args(base, dims, n_positions, first, freq_scale, freq_factors, ext_factor, attn_factor, corr_dims,
                    for_c: bool):
    """ggml_rope_cache_init's arguments: a finite base, freq_scale > 0, freq_factors None or (dims / 2,) floats,
    finite ext_factor and attn_factor, and two corr_dims."""
    freq_scale = number("rope_cache", "freq_scale", freq_scale)
    if not freq_scale > 0:
        raise KernelError(f"rope_cache: freq_scale must be > 0, found {freq_scale}")
    if freq_factors is not None:
        freq_factors = like("rope_cache", "freq_factors", freq_factors, (dims // 2,))
    if len(corr_dims) != 2:
        raise KernelError(f"rope_cache: corr_dims must be (low, high), found {corr_dims!r}")
    return (number("rope_cache", "base", base), dims, n_positions, first, freq_scale, freq_factors,
            number("rope_cache", "ext_factor", ext_factor), number("rope_cache", "attn_factor", attn_factor),
            tuple(number("rope_cache", "corr_dims", c) for c in corr_dims))


def rope_args(x, cache, neox, for_c: bool):
    x = floats("rope", "x", x, for_c, written=for_c)  # the twin returns a new array
    if x.ndim != 3:
        raise KernelError(f"rope: x must be (n, heads, dims), found shape {x.shape}")
    return x, like("rope", "cache", cache, (x.shape[0], x.shape[2])), bool(neox)


def attention_f16_args(q, k, v, q_start, scale, window, for_c: bool):
    q = floats("attention_f16", "q", q, for_c)
    k, v = kv_cache("attention_f16", "k", k), kv_cache("attention_f16", "v", v)
    kv_heads, capacity = k.shape[0], k.shape[1]
    if q.ndim != 3 or k.shape[2] != q.shape[2] or v.shape != (kv_heads, q.shape[2], capacity):
        raise KernelError(f"attention_f16: k {k.shape} and v {v.shape} do not fit q {q.shape}: expected q (n, heads, "
                          f"dims), k (kv_heads, capacity, dims), v (kv_heads, dims, capacity)")
    return q, k, v, q_start, number("attention_f16", "scale", scale), window


def qmatmul_args(types: dict, blocks, ggml_type, x, out_features: int, in_features: int, out):
    """-> (type id, row stride, rows of x, out)."""
    type_id, stride = stored_matrix("qmatmul", types, blocks, ggml_type, out_features, in_features)
    n = activations("qmatmul", x, in_features)
    out = output("qmatmul", out, (n, out_features) if x.ndim == 2 else (out_features,), reads=(("x", x),))
    return type_id, stride, n, out


def half_matmul_args(types: dict, w, ggml_type, x, out_features: int, in_features: int, out):
    """qmatmul_args for an F16 / BF16 weight (float16 or uint16 bits, or its bytes) -> (type id, row stride, rows
    of x, out)."""
    type_id, stride = stored_matrix("half_matmul", types, w, ggml_type, out_features, in_features)
    n = activations("half_matmul", x, in_features)
    out = output("half_matmul", out, (n, out_features) if x.ndim == 2 else (out_features,), reads=(("x", x),))
    return type_id, stride, n, out


def qmatmul_group_args(types: dict, weights: list, in_features: int) -> list[tuple]:
    """(blocks, ggml_type, out_features) per matrix -> (blocks, type id, row stride, out_features) per matrix."""
    if not 1 <= len(weights) <= MAX_GROUP:
        raise KernelError(f"group: expected 1 to {MAX_GROUP} matrices, found {len(weights)}")
    return [(blocks, *stored_matrix("qmatmul", types, blocks, ggml_type, rows, in_features), rows)
            for blocks, ggml_type, rows in weights]


def get_rows_args(types: dict, blocks, ggml_type, ids, in_features: int, out):
    """-> (type id, row stride, rows of the matrix, ids, out)."""
    rows = blocks.shape[0] if isinstance(blocks, np.ndarray) and blocks.ndim == 2 else -1
    type_id, stride = stored_matrix("get_rows", types, blocks, ggml_type, rows, in_features)
    ids = row_ids("get_rows", ids)
    return type_id, stride, rows, ids, output("get_rows", out, (ids.shape[0], in_features))


def quantize_rows_args(x, act_type):
    """-> (x as float32 C-contiguous rows, a new uint8 array for their blocks)."""
    if act_type not in ACTIVATION_TYPES:
        raise KernelError(f"quantize_rows: act_type must be one of {ACTIVATION_TYPES}, found {act_type!r}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    x = x.reshape(1, -1) if x.ndim == 1 else x
    block = GGML_TYPES[act_type]
    if x.ndim != 2 or x.shape[1] % block.block_size:
        raise KernelError(f"quantize_rows: x must be rows of whole {block.block_size}-element blocks, "
                          f"found shape {x.shape}")
    return x, np.empty((x.shape[0], block.row_bytes(x.shape[1])), np.uint8)


# ------------------------------------------------------------------------------------- an array's address


def _address_reader():
    """A function giving an ndarray's data address, the argument every kernel call passes two or three of.

    `a.ctypes.data` builds a helper object each time (about a microsecond). Hack, checked here: the address is
    the field right after the object header of numpy's PyArrayObject (`char *data` in PyArrayObject_fields,
    unchanged since numpy 1.7), so it is read from there (a quarter of that). The offset is verified against
    `.ctypes.data` on a few arrays; where it does not hold (another header size, say a free-threaded or a
    debug build of CPython) the reader is `.ctypes.data` itself.
    """
    offset = 2 * ctypes.sizeof(ctypes.c_void_p)  # PyObject_HEAD: reference count and type pointer
    read = ctypes.c_void_p.from_address

    def fast(a):
        return read(id(a) + offset).value

    probes = [np.zeros(3, np.float32), np.zeros((4, 5), np.uint8)[1:, 2:], np.empty(0, np.int64)]
    if all(fast(p) == p.ctypes.data for p in probes if p.ctypes.data):
        return fast
    return lambda a: a.ctypes.data


data_address = _address_reader()


def kept_address(kept: list, a) -> int | None:
    """The address of `a` as C reads a float vector (float32, C-contiguous, flattened; converted where it is not),
    the array appended to `kept`, which its owner holds for as long as a C structure points into it; None (a NULL
    pointer) for None. The whole-model passes build their layer tables so (models/decode_step.py,
    models/encoder_pass.py)."""
    if a is None:
        return None
    a = np.ascontiguousarray(np.ravel(a), np.float32)
    kept.append(a)
    return data_address(a)

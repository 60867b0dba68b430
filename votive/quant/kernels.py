"""The C kernels (libvotive.so) bound with ctypes, with their numpy twins as the fallback.

Why a plain shared library and ctypes rather than a CPython extension: an extension module is tied to one
Python ABI (cp310, cp311, ...), so a Lambda layer or wheel would need one build per Python version. This
library exports C functions on float pointers and knows nothing of Python, so one build per architecture
loads in every supported Python (3.10-3.13) and its own C self-test can run it without Python at all (under
qemu-user for arm64). ctypes releases the GIL during each call; a call costs a few microseconds with the
argument checks, small beside the kernels themselves.

Two ways in:

- `gelu`, `layer_norm`, `softmax` (module functions): the C kernel when the library is loaded and the main
  array is float32 and C-contiguous, else the numpy twin from `votive.quant.kernels_ref`. Same results
  either way, to float32 rounding. These are what the numpy backend's ops route to.
- `get()` returns the loaded `KernelLibrary` (None when it is missing, after ONE logged warning), whose
  methods always run C and raise KernelError on arrays they cannot take.

Quantized weights (GGUF blocks, kept as stored): `qmatmul` multiplies float activations by a matrix of Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0 or Q2_K..Q6_K blocks without expanding it to floats, and `get_rows` dequantizes selected
rows (embedding lookups; also F32, F16, BF16). `supports(ggml_type)` says whether the C library takes a type;
`votive.backends.numpy_linears` asks it before calling in, and dequantizes band by band with numpy otherwise. Their
numpy twins are `qmatmul_ref` and `get_rows_ref`. A decoder, which multiplies by the same weights every token,
binds them once: `KernelLibrary.matrix` (one weight) and `KernelLibrary.group` (weights sharing an input, such
as q, k and v: one call, the input quantized once).

Threads: kernels split rows over a persistent pool (csrc/threadpool.c) of `available_cpus()` threads, or
$VOTIVE_NUM_THREADS, or what `set_num_threads` says; small inputs stay on the calling thread. Idle workers spin
for $VOTIVE_SPIN_US (or `KernelLibrary.set_spin_us`; default 100) microseconds, then sleep.

    >>> import numpy as np
    >>> from votive.quant import kernels
    >>> x = np.array([[-1.0, 0.0, 2.0]], dtype=np.float32)
    >>> np.round(kernels.gelu(x), 4)
    array([[-0.1587,  0.    ,  1.9545]], dtype=float32)
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from votive.errors import KernelError
from votive.quant.cpus import available_cpus
from votive.quant.ggml_types import GGML_TYPES
from votive.quant.kernels_ref import (
    attention_f16_ref,
    gelu_ref,
    get_rows_ref,
    layer_norm_ref,
    normal_tail_ref,
    qmatmul_ref,
    rms_norm_ref,
    rope_cache_ref,
    rope_ref,
    softmax_ref,
    swiglu_ref,
)

__all__ = [
    "LIBRARY_PATH", "KernelLibrary", "QuantMatrix", "QuantMatrixGroup", "load", "get", "available", "supports", "configured_threads",
    "configured_spin_us",
    "set_num_threads", "num_threads", "gelu", "layer_norm", "softmax", "qmatmul", "get_rows", "gelu_ref",
    "layer_norm_ref", "softmax_ref", "normal_tail_ref", "qmatmul_ref", "get_rows_ref",
]

log = logging.getLogger(__name__)

LIBRARY_PATH = Path(__file__).with_name("libvotive.so")
ABI_VERSION = 3  # VT_ABI_VERSION in csrc/votive.h
THREADS_ENV = "VOTIVE_NUM_THREADS"
SPIN_ENV = "VOTIVE_SPIN_US"
MAX_SPIN_US = 100_000  # the cap in csrc/threadpool.c

_VT_OK = 0  # VT_OK; the C side returns a negative code for arguments the checks here should have caught
_VT_ERANGE = -4  # VT_ERANGE: vt_get_rows found an id outside the matrix
_ACTIVATION_TYPES = {8: "Q8_0", 9: "Q8_1", 15: "Q8_K"}  # what vt_quantize_rows writes


class KernelLibrary:
    """libvotive opened with ctypes: typed wrappers that check every array before C sees its pointer.

    Arrays the kernels write (x, out) must be float32, C-contiguous and writable; small read-only operands
    (bias, weight, mask, residual) are converted to float32 C-contiguous when they are not already.
    """

    def __init__(self, cdll, path: Path):
        import ctypes

        self.path = path
        self._lib = cdll
        ptr, i64, f32, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float, ctypes.c_int
        signatures = {
            "vt_abi_version": ([], c_int),
            "vt_isa": ([], ctypes.c_char_p),
            "vt_isa_supported": ([ctypes.c_char_p], c_int),
            "vt_set_isa": ([ctypes.c_char_p], c_int),
            "vt_set_num_threads": ([c_int], None),
            "vt_num_threads": ([], c_int),
            "vt_set_spin_us": ([i64], None),
            "vt_spin_us": ([], i64),
            "vt_gelu": ([ptr, ptr, i64, i64], c_int),
            "vt_layer_norm": ([ptr, ptr, ptr, ptr, ptr, i64, i64, f32], c_int),
            "vt_softmax": ([ptr, ptr, i64, i64, f32, i64, i64], c_int),
            "vt_qmatmul_supports": ([c_int], c_int),
            "vt_get_rows_supports": ([c_int], c_int),
            "vt_qmatmul": ([ptr, ptr, c_int, i64, ptr, i64, i64, i64], c_int),
            "vt_qmatmul_group": ([ptr, ptr, c_int, ptr, i64, i64], c_int),
            "vt_get_rows": ([ptr, ptr, c_int, i64, i64, ptr, i64, i64], c_int),
            "vt_quantize_rows": ([ptr, c_int, ptr, i64, i64], c_int),
            "vt_quant_isa": ([], ctypes.c_char_p),
            "vt_rms_norm": ([ptr, ptr, ptr, i64, i64, f32], c_int),
            "vt_swiglu": ([ptr, ptr, ptr, i64, i64], c_int),
            "vt_rope_cache": ([ptr, i64, i64, i64, f32], c_int),
            "vt_rope": ([ptr, ptr, i64, i64, i64, c_int], c_int),
            "vt_attention_f16": ([ptr, ptr, ptr, ptr, i64, i64, i64, i64, i64, i64, i64, f32], c_int),
            "vt_set_quant_isa": ([ctypes.c_char_p], c_int),
        }
        for name, (argtypes, restype) in signatures.items():
            fn = getattr(cdll, name)
            fn.argtypes, fn.restype = argtypes, restype
        self._qmatmul_fn, self._group_fn, self._get_rows_fn = cdll.vt_qmatmul, cdll.vt_qmatmul_group, cdll.vt_get_rows
        self._address = _address_reader(ctypes)

        class QMatrixStruct(ctypes.Structure):  # struct vt_qmatrix in csrc/votive.h
            _fields_ = [("w", ctypes.c_void_p), ("w_stride", i64), ("rows", i64), ("type", ctypes.c_int32),
                        ("unused", ctypes.c_int32)]

        self._matrix_struct, self._addressof = QMatrixStruct, ctypes.addressof
        # Per GGML type the C side takes, keyed by id and by GGMLType: (id, elements and bytes per block),
        # looked up once here rather than per call.
        self._qmatmul_blocks = _type_table(cdll.vt_qmatmul_supports)
        self._get_rows_blocks = _type_table(cdll.vt_get_rows_supports)

    @property
    def abi_version(self) -> int:
        return self._lib.vt_abi_version()

    # ---- instruction sets and threads

    @property
    def isa(self) -> str:
        """The kernel build in use: 'avx512', 'avx2', 'sse2' (x86_64), 'neon' (arm64) or 'generic'."""
        return self._lib.vt_isa().decode()

    def supported_isas(self) -> list[str]:
        """Kernel builds this library has and this CPU runs, best first."""
        return [name for name in ("avx512", "avx2", "sse2", "neon", "generic")
                if self._lib.vt_isa_supported(name.encode())]

    def set_isa(self, name: str) -> None:
        """Use the named kernel build (to compare them); the best one is chosen automatically otherwise."""
        if self._lib.vt_set_isa(str(name).encode()) != _VT_OK:
            raise KernelError(f"set_isa: {name!r} is not available here; choose one of {self.supported_isas()}")

    @property
    def num_threads(self) -> int:
        return self._lib.vt_num_threads()

    def set_num_threads(self, n: int | None) -> None:
        """Threads a kernel may use, the caller included; None: $VOTIVE_NUM_THREADS or the cores available."""
        n = configured_threads() if n is None else n
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise KernelError(f"set_num_threads: expected an integer >= 1, found {n!r}")
        self._lib.vt_set_num_threads(int(n))

    @property
    def spin_us(self) -> int:
        return self._lib.vt_spin_us()

    def set_spin_us(self, us: int | None) -> None:
        """How long an idle worker thread spins for the next kernel before it sleeps, in microseconds.

        Args:
            us: 0 to 100000; None: $VOTIVE_SPIN_US or the default, 100. Longer keeps workers awake across
                longer gaps between kernels but holds a core that numpy or BLAS between them may need.

        Raises:
            KernelError: us is not an integer in 0..100000.
        """
        if us is None:
            us = configured_spin_us()
            if us is None:
                self._lib.vt_set_spin_us(-1)  # the C default
                return
        if isinstance(us, bool) or not isinstance(us, (int, np.integer)) or not 0 <= us <= MAX_SPIN_US:
            raise KernelError(f"set_spin_us: expected an integer from 0 to {MAX_SPIN_US}, found {us!r}")
        self._lib.vt_set_spin_us(int(us))

    @property
    def quant_isa(self) -> str:
        """The int8 dot-product instructions of the quantized kernels: e.g. 'avx2', 'avx2+vnni', 'neon+dotprod'."""
        return self._lib.vt_quant_isa().decode()

    def set_quant_isa(self, name: str) -> None:
        """Use the named int8 dot-product instructions (the ISA's own name for its base ones; tests compare them)."""
        if self._lib.vt_set_quant_isa(str(name).encode()) != _VT_OK:
            raise KernelError(f"set_quant_isa: {name!r} is not available with the {self.isa} kernels on this CPU")

    def supports(self, ggml_type) -> bool:
        """Whether `qmatmul` takes weights of this GGML type (id or GGMLType)."""
        return ggml_type in self._qmatmul_blocks

    # ---- kernels

    def gelu(self, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """Exact (erf) GELU of x + bias, in place on x, which is returned.

        Args:
            x: float32, C-contiguous, writable, any shape (..., d).
            bias: optional (d,), added before the activation (a linear layer's bias, fused).
        """
        _check_writable("gelu", "x", x)
        cols = x.shape[-1] if x.ndim else 1
        bias = _vector("gelu", "bias", bias, cols)
        _call("gelu", self._lib.vt_gelu(x.ctypes.data, _ptr(bias), x.size // max(cols, 1), cols))
        return x

    def layer_norm(self, x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
                   residual: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """LayerNorm over the last axis of x + residual (BERT's add & norm), into out.

        Args:
            x: float32, C-contiguous, shape (..., d).
            weight, bias: (d,) or None (1 and 0).
            eps: added to the variance.
            residual: optional, same shape as x, added first.
            out: float32 C-contiguous array of x's shape to write (may be x or residual); default a new one.

        Returns:
            out.
        """
        _check_contiguous("layer_norm", "x", x)
        if x.ndim == 0 or x.shape[-1] == 0:
            raise KernelError(f"layer_norm: x needs a non-empty last axis, found shape {x.shape}")
        cols = x.shape[-1]
        weight = _vector("layer_norm", "weight", weight, cols)
        bias = _vector("layer_norm", "bias", bias, cols)
        if residual is not None:
            residual = _same_shape("layer_norm", "residual", residual, x)
        if out is None:
            out = np.empty_like(x)
        else:
            _check_writable("layer_norm", "out", out)
            if out.shape != x.shape:
                raise KernelError(f"layer_norm: out must have x's shape {x.shape}, found {out.shape}")
            for name, arr in (("x", x), ("residual", residual)):
                if arr is not None and _partly_overlaps(out, arr):
                    raise KernelError(f"layer_norm: out overlaps {name} without being the same array")
        eps = _finite("layer_norm", "eps", eps)
        status = self._lib.vt_layer_norm(out.ctypes.data, x.ctypes.data, _ptr(residual), _ptr(weight), _ptr(bias),
                                         x.size // cols, cols, eps)
        _call("layer_norm", status)
        return out

    def softmax(self, x: np.ndarray, mask: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
        """Softmax over the last axis of x * scale + mask, in place on x, which is returned.

        Args:
            x: float32, C-contiguous, writable, shape (..., d), e.g. attention scores (batch, heads, q, k).
            mask: optional additive mask broadcasting against x, e.g. (batch, 1, 1, k) with 0 for keys to
                keep and a large negative number for padding. Bool masks are refused (ambiguous).
            scale: multiplies x first (1 / sqrt(head_dim) for attention scores).
        """
        _check_writable("softmax", "x", x)
        if x.ndim == 0 or x.shape[-1] == 0:
            raise KernelError(f"softmax: x needs a non-empty last axis, found shape {x.shape}")
        cols = x.shape[-1]
        rows = x.size // cols
        scale = _finite("softmax", "scale", scale)
        mask_rows, div, mod = (None, 1, 1) if mask is None else _mask_layout(mask, x.shape)
        _call("softmax", self._lib.vt_softmax(x.ctypes.data, _ptr(mask_rows), div, mod, scale, rows, cols))
        return x

    # ---- decoder rows, in ggml's float order (csrc/decoder_kernels.c)

    def rms_norm(self, x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
        """x / sqrt(mean(x^2) + eps) * weight over the last axis of float32 C-contiguous x, as a new array."""
        _check_contiguous("rms_norm", "x", x)
        if x.ndim == 0 or x.shape[-1] == 0:
            raise KernelError(f"rms_norm: x needs a non-empty last axis, found shape {x.shape}")
        cols = x.shape[-1]
        weight = _vector("rms_norm", "weight", weight, cols)
        out = np.empty_like(x)
        _call("rms_norm", self._lib.vt_rms_norm(out.ctypes.data, x.ctypes.data, _ptr(weight), x.size // cols, cols,
                                                _finite("rms_norm", "eps", eps)))
        return out

    def swiglu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        """silu(gate) * up, written into gate (float32, C-contiguous, writable), which is returned."""
        _check_writable("swiglu", "gate", gate)
        up = _same_shape("swiglu", "up", up, gate)
        cols = gate.shape[-1] if gate.ndim else 1
        _call("swiglu", self._lib.vt_swiglu(gate.ctypes.data, gate.ctypes.data, up.ctypes.data,
                                            gate.size // max(cols, 1), cols))
        return gate

    def rope_cache(self, base: float, dims: int, n_positions: int, first: int = 0) -> np.ndarray:
        """(n_positions, dims) float32: cos and sin interleaved, of positions first.. (see vt_rope_cache)."""
        out = np.empty((n_positions, dims), np.float32)
        _call("rope_cache", self._lib.vt_rope_cache(out.ctypes.data, first, n_positions, dims,
                                                    _finite("rope_cache", "base", base)))
        return out

    def rope(self, x: np.ndarray, cache: np.ndarray, neox: bool) -> np.ndarray:
        """Rotate x (n, heads, dims) in place by cache rows (n, dims) from rope_cache; returns x."""
        _check_writable("rope", "x", x)
        if x.ndim != 3 or cache.shape != (x.shape[0], x.shape[2]):
            raise KernelError(f"rope: x must be (n, heads, dims) and cache (n, dims), found {x.shape}, {cache.shape}")
        cache = np.ascontiguousarray(cache, np.float32)
        _call("rope", self._lib.vt_rope(x.ctypes.data, cache.ctypes.data, x.shape[0], x.shape[1], x.shape[2],
                                        int(bool(neox))))
        return x

    def attention_f16(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, q_start: int, scale: float,
                      window: int | None = None) -> np.ndarray:
        """Causal attention of q (n, heads, dims) float32 over a half cache k (kv_heads, capacity, dims) and
        v (kv_heads, dims, capacity), positions 0 .. q_start + n - 1 filled -> (n, heads, dims)."""
        _check_contiguous("attention_f16", "q", q)
        for name, arr in (("k", k), ("v", v)):
            if not (isinstance(arr, np.ndarray) and arr.dtype == np.float16 and arr.ndim == 3 and
                    arr.flags.c_contiguous):
                raise KernelError(f"attention_f16: {name} must be a C-contiguous float16 (kv_heads, ...) array")
        n, heads, dims = q.shape
        kv_heads, capacity = k.shape[0], k.shape[1]
        if k.shape != (kv_heads, capacity, dims) or v.shape != (kv_heads, dims, capacity):
            raise KernelError(f"attention_f16: k {k.shape} and v {v.shape} do not fit q {q.shape}")
        out = np.empty_like(q)
        status = self._lib.vt_attention_f16(out.ctypes.data, q.ctypes.data, k.ctypes.data, v.ctypes.data, n, heads,
                                            kv_heads, dims, q_start, capacity, window or 0,
                                            _finite("attention_f16", "scale", scale))
        _call("attention_f16", status)
        return out

    def qmatmul(self, blocks: np.ndarray, ggml_type: int, x: np.ndarray, out_features: int, in_features: int,
                out: np.ndarray | None = None) -> np.ndarray:
        """x @ W.T for W stored as GGML blocks, which are read in place (never expanded to floats).

        x is quantized once per call to the activation format ggml pairs with the type (Q8_0, Q8_1 or Q8_K),
        then every output is integer dot products per block, scaled and summed in float32, in the order
        llama.cpp's CPU backend uses for that product (on x86 the K-quants' order depends on the weight's row
        count and on n, as llama.cpp's does: see vt_order in csrc/vt_internal.h). The same bits for any thread
        count, and, for a given n, whatever x's other rows hold. To multiply by the same
        weight many times (a decoder), `matrix` checks the weight once instead of per call.

        Args:
            blocks: uint8 (out_features, bytes_per_row), e.g. a zero-copy view of a GGUF tensor; read-only and
                unaligned is fine, rows may be further apart than their bytes.
            ggml_type: GGML type id of the weight, or its GGMLType (see `supports`).
            x: float32 C-contiguous (n, in_features), or (in_features,) for one row.
            out_features, in_features: the weight's shape.
            out: optional float32 C-contiguous writable array of the result's shape, returned.

        Returns:
            float32 (n, out_features), or (out_features,) for a 1-D x. A NaN or inf in a row of x (in one
            32- or 256-element block of it) makes that output row NaN.
        """
        type_id, w_stride = self._weight("qmatmul", self._qmatmul_blocks, blocks, ggml_type, out_features, in_features)
        return self._qmatmul(self._address(blocks), type_id, w_stride, x, out_features, in_features, out)

    def matrix(self, blocks: np.ndarray, ggml_type: int, out_features: int, in_features: int) -> QuantMatrix:
        """The weight checked once and bound to qmatmul: `m = lib.matrix(...)`, then `m(x)` or `m(x, out)`.

        A decoder multiplies by ~200 matrices per token, each call taking tens of microseconds: checking the
        weight's layout every time would cost a noticeable share. The QuantMatrix keeps `blocks` alive.
        """
        return QuantMatrix(self, [self._bound(blocks, ggml_type, out_features, in_features)], in_features)

    def group(self, weights: list[tuple], in_features: int) -> QuantMatrixGroup:
        """Weights that multiply the same x, bound to one C call: `q, k, v = lib.group([...], d)(x)`.

        Args:
            weights: (blocks, ggml_type, out_features) for each matrix, 1 to 16 of them, e.g. a layer's q, k, v
                projections, or its gate and up projections.
            in_features: their common row length.

        Each result is bit for bit what qmatmul gives for that matrix, but x is quantized once per activation
        format, the rows of all the matrices are split over the threads as one job, and the call costs one
        Python-to-C crossing instead of one per matrix.
        """
        if not 1 <= len(weights) <= 16:
            raise KernelError(f"group: expected 1 to 16 matrices, found {len(weights)}")
        return QuantMatrixGroup(self, [self._bound(b, t, rows, in_features) for b, t, rows in weights], in_features)

    def _bound(self, blocks, ggml_type, out_features: int, in_features: int) -> tuple:
        """(blocks, struct vt_qmatrix fields) of a checked weight."""
        type_id, w_stride = self._weight("qmatmul", self._qmatmul_blocks, blocks, ggml_type, out_features, in_features)
        return blocks, (self._address(blocks), w_stride, out_features, type_id, 0)

    def _weight(self, kernel: str, table: dict, blocks, ggml_type, rows: int, cols: int) -> tuple[int, int]:
        """(type id, row stride in bytes) of a stored matrix, after checking the type and the layout."""
        try:
            type_id, block_elems, block_bytes = table[ggml_type]
        except (KeyError, TypeError):
            what = "weights" if kernel == "qmatmul" else "rows"
            raise KernelError(f"{kernel}: {_type_name(ggml_type)} {what} are not supported by the C kernels "
                              f"(supported: {_type_names(table)})") from None
        return type_id, _check_blocks(kernel, blocks, rows, cols, block_elems, block_bytes)

    def _qmatmul(self, w_address: int, type_id: int, w_stride: int, x, out_features: int, in_features: int,
                 out) -> np.ndarray:
        n = _rows_of_x(x, in_features)
        out = _output(out, (n, out_features) if x.ndim == 2 else (out_features,), x)
        status = self._qmatmul_fn(self._address(out), w_address, type_id, w_stride, self._address(x), n,
                                  out_features, in_features)
        if status != _VT_OK:
            _call("qmatmul", status)
        return out

    def get_rows(self, blocks: np.ndarray, ggml_type: int, ids, in_features: int,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Rows `ids` of a GGML-stored matrix as float32, bit for bit ggml's dequantization (embedding lookup).

        Args:
            blocks: the matrix as stored: uint8 (rows, bytes_per_row) for block formats, or for F32 / F16 / BF16
                an array of that element type (float32, float16, uint16 bits) of shape (rows, in_features).
            ggml_type: GGML type id or GGMLType (quantized types of `supports`, and F32 0, F16 1, BF16 30).
            ids: integer row ids, 1-D (a scalar gives one row); each in [0, rows).
            in_features: elements per row.
            out: optional float32 C-contiguous writable (len(ids), in_features), returned.

        Returns:
            float32 (len(ids), in_features).
        """
        rows = blocks.shape[0] if isinstance(blocks, np.ndarray) and blocks.ndim == 2 else -1
        type_id, w_stride = self._weight("get_rows", self._get_rows_blocks, blocks, ggml_type, rows, in_features)
        ids = _row_ids(ids)
        shape = (ids.shape[0], in_features)
        if out is None:
            out = np.empty(shape, np.float32)
        else:
            _check_writable("get_rows", "out", out)
            if out.shape != shape:
                raise KernelError(f"get_rows: out must have shape {shape}, found {out.shape}")
        status = self._get_rows_fn(self._address(out), self._address(blocks), type_id, w_stride, rows,
                                   self._address(ids), ids.shape[0], in_features)
        if status == _VT_ERANGE:
            bad = ids[(ids < 0) | (ids >= rows)]
            raise KernelError(f"get_rows: row id {int(bad[0])} is outside the matrix's {rows} rows "
                              f"({bad.size} bad ids of {ids.size})")
        _call("get_rows", status)
        return out

    def quantize_rows(self, x: np.ndarray, act_type: int) -> np.ndarray:
        """Rows of x quantized to Q8_0 (8), Q8_1 (9) or Q8_K (15) as `qmatmul` does, in ggml's block layout.

        Returns uint8 (rows, bytes_per_row): the bytes of votive.quant.codecs.quantize for that type.
        """
        if act_type not in _ACTIVATION_TYPES:
            raise KernelError(f"quantize_rows: act_type must be one of {_ACTIVATION_TYPES}, found {act_type!r}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        x = x.reshape(1, -1) if x.ndim == 1 else x
        block = GGML_TYPES[act_type]
        if x.ndim != 2 or x.shape[1] % block.block_size:
            raise KernelError(f"quantize_rows: x must be rows of whole {block.block_size}-element blocks, "
                              f"found shape {x.shape}")
        out = np.empty((x.shape[0], block.row_bytes(x.shape[1])), np.uint8)
        _call("quantize_rows", self._lib.vt_quantize_rows(out.ctypes.data, act_type, x.ctypes.data, *x.shape))
        return out


class _BoundWeights:
    """Checked weights and the struct vt_qmatrix table the C side reads them through."""

    __slots__ = ("blocks", "type_id", "out_features", "in_features", "_lib", "_table", "_table_address")

    def __init__(self, lib: KernelLibrary, bound: list[tuple], in_features: int):
        self.blocks = [blocks for blocks, _ in bound]  # kept alive: the C side reads them by address
        self.type_id = tuple(fields[3] for _, fields in bound)
        self.out_features = tuple(fields[2] for _, fields in bound)
        self.in_features = in_features
        self._lib = lib
        self._table = (lib._matrix_struct * len(bound))(*(fields for _, fields in bound))
        self._table_address = lib._addressof(self._table)

    def _run(self, out: np.ndarray, x: np.ndarray, n: int) -> None:
        lib = self._lib
        status = lib._group_fn(lib._address(out), self._table_address, len(self._table), lib._address(x), n,
                               self.in_features)
        if status != _VT_OK:
            _call("qmatmul", status)


class QuantMatrix(_BoundWeights):
    """A GGML-stored weight bound to the C qmatmul, its layout checked once (KernelLibrary.matrix).

    Calling it multiplies: `m(x)` is `x @ W.T` as KernelLibrary.qmatmul computes it; `m(x, out)` writes out.
    """

    __slots__ = ()

    def __init__(self, lib: KernelLibrary, bound: list[tuple], in_features: int):
        super().__init__(lib, bound, in_features)
        (self.blocks,), (self.type_id,), (self.out_features,) = self.blocks, self.type_id, self.out_features

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        n = _rows_of_x(x, self.in_features)
        out = _output(out, (n, self.out_features) if x.ndim == 2 else (self.out_features,), x)
        self._run(out, x, n)
        return out


class QuantMatrixGroup(_BoundWeights):
    """Weights multiplying the same x in one C call (KernelLibrary.group): `g(x)` returns their products."""

    __slots__ = ("_total",)

    def __init__(self, lib: KernelLibrary, bound: list[tuple], in_features: int):
        super().__init__(lib, bound, in_features)
        self._total = sum(self.out_features)

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """[x @ W.T for each W]: float32 (n, out_features) each, or (out_features,) for a 1-D x; each one a
        C-contiguous part of one buffer."""
        n = _rows_of_x(x, self.in_features)
        buffer = np.empty(n * self._total, _F32)
        self._run(buffer, x, n)
        outs, start = [], 0
        for rows in self.out_features:
            part = buffer[start : start + n * rows]
            outs.append(part.reshape(n, rows) if x.ndim == 2 else part)
            start += n * rows
        return outs


def _rows_of_x(x, in_features: int) -> int:
    """Rows of a qmatmul input, after checking it is float32 C-contiguous (n, in_features) or (in_features,)."""
    if type(x) is not np.ndarray or x.dtype is not _F32 or not x.flags.c_contiguous or not 1 <= x.ndim <= 2 \
            or x.shape[-1] != in_features:
        raise KernelError(f"qmatmul: x must be a C-contiguous float32 array of shape (n, {in_features}) "
                          f"or ({in_features},), found {_describe(x)}")
    return x.shape[0] if x.ndim == 2 else 1


def _output(out, shape: tuple, x: np.ndarray) -> np.ndarray:
    """A fresh float32 array of `shape`, or `out` after checking it can be written as that."""
    if out is None:
        return np.empty(shape, _F32)
    _check_writable("qmatmul", "out", out)
    if out.shape != shape:
        raise KernelError(f"qmatmul: out must have shape {shape}, found {out.shape}")
    if np.may_share_memory(out, x):
        raise KernelError("qmatmul: out overlaps x")
    return out


_F32 = np.dtype(np.float32)  # numpy's built-in dtypes are singletons: `is` compares them in a few nanoseconds


def _address_reader(ctypes):
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


# ------------------------------------------------------------------------------------------------ loading


_warned: set[str] = set()
_lock = threading.Lock()
_default: list[KernelLibrary | None] = []  # empty until the first get()


def load(path: str | Path | None = None) -> KernelLibrary | None:
    """Open the kernel library at `path` (default LIBRARY_PATH, beside this module).

    Returns None when it cannot be used (missing, unloadable, from another version of votive), after logging
    one warning per path saying why and that the numpy path runs instead.

    Raises:
        KernelError: $VOTIVE_NUM_THREADS is set but not an integer >= 1, or $VOTIVE_SPIN_US not one in
            0..100000.
    """
    import ctypes

    path = Path(path) if path is not None else LIBRARY_PATH
    try:
        lib = KernelLibrary(ctypes.CDLL(str(path)), path)
    except (OSError, AttributeError) as exc:  # the loader's message names the file; AttributeError: no symbols
        _warn_once(path, str(exc))
        return None
    if lib.abi_version != ABI_VERSION:
        _warn_once(path, f"{path} has ABI version {lib.abi_version}, this votive needs {ABI_VERSION} (a stale build)")
        return None
    lib.set_num_threads(configured_threads())
    lib.set_spin_us(configured_spin_us())
    return lib


def get() -> KernelLibrary | None:
    """The default library, loaded at the first call; None (after one warning) when it is missing."""
    if not _default:
        with _lock:
            if not _default:
                _default.append(load())
    return _default[0]


def available() -> bool:
    """Whether the C kernels are loaded (loading them if not yet tried)."""
    return get() is not None


def supports(ggml_type: int) -> bool:
    """Whether the C library is loaded and has a quantized matmul for this GGML type id."""
    lib = get()
    return lib is not None and lib.supports(ggml_type)


def configured_threads(environ=os.environ) -> int:
    """$VOTIVE_NUM_THREADS when set, else the cores this process may use (cgroup quota included)."""
    value = environ.get(THREADS_ENV, "").strip()
    if not value:
        return available_cpus()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise KernelError(f"{THREADS_ENV} must be an integer >= 1, found {value!r}")
    return n


def configured_spin_us(environ=os.environ) -> int | None:
    """$VOTIVE_SPIN_US (microseconds a worker spins before it sleeps) when set, else None (the C default)."""
    value = environ.get(SPIN_ENV, "").strip()
    if not value:
        return None
    try:
        us = int(value)
    except ValueError:
        us = -1
    if not 0 <= us <= MAX_SPIN_US:
        raise KernelError(f"{SPIN_ENV} must be an integer from 0 to {MAX_SPIN_US} (microseconds), found {value!r}")
    return us


def set_num_threads(n: int | None) -> None:
    """Threads the C kernels may use (None: back to the default). No effect on the numpy fallback."""
    lib = get()
    if lib is not None:
        lib.set_num_threads(n)


def num_threads() -> int:
    """Threads the C kernels use; 1 when the library is missing (numpy's own ops are single-threaded)."""
    lib = get()
    return lib.num_threads if lib is not None else 1


def _warn_once(path: Path, reason: str) -> None:
    if str(path) in _warned:
        return
    _warned.add(str(path))
    log.warning("votive C kernels unavailable (%s); using the slower numpy path. Build them with "
                "`python -m votive.quant.kernel_build` (needs a C compiler) or reinstall votive.", reason)


# ---------------------------------------------------------------------------------- fast or reference path


def _fast(x) -> KernelLibrary | None:
    """The library when it is loaded and x can be handed to C as is, else None (use the numpy twin)."""
    if not (isinstance(x, np.ndarray) and x.dtype == np.float32 and x.flags.c_contiguous and x.flags.writeable):
        return None
    return get()


def gelu(x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Exact GELU of x + bias, in place on x: C when possible, else `gelu_ref`. See KernelLibrary.gelu."""
    lib = _fast(x)
    if lib is not None:
        return lib.gelu(x, bias)
    _check_writable("gelu", "x", x, layout=False)
    if bias is not None:
        bias = _vector("gelu", "bias", bias, x.shape[-1] if x.ndim else 1)
    return gelu_ref(x, bias)


def layer_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
               residual: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm of x + residual over the last axis: C when possible, else `layer_norm_ref`."""
    lib = _fast(x) if out is None or _fast(out) else None
    if lib is not None:
        return lib.layer_norm(x, weight, bias, eps, residual, out)
    if not isinstance(x, np.ndarray) or x.ndim == 0 or x.shape[-1] == 0:
        raise KernelError(f"layer_norm: x needs a non-empty last axis, found {_describe(x)}")
    cols = x.shape[-1]
    if residual is not None:
        residual = _same_shape("layer_norm", "residual", residual, x)
    if out is not None:
        _check_writable("layer_norm", "out", out, layout=False)
    return layer_norm_ref(x, _vector("layer_norm", "weight", weight, cols), _vector("layer_norm", "bias", bias, cols),
                          _finite("layer_norm", "eps", eps), residual, out)


def softmax(x: np.ndarray, mask: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
    """Softmax over the last axis of x * scale + mask, in place: C when possible, else `softmax_ref`."""
    lib = _fast(x)
    if lib is not None:
        return lib.softmax(x, mask, scale)
    _check_writable("softmax", "x", x, layout=False)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise KernelError(f"softmax: x needs a non-empty last axis, found shape {x.shape}")
    if mask is not None:
        mask = _checked_mask(mask, x.shape)
    return softmax_ref(x, mask, _finite("softmax", "scale", scale))


def qmatmul(blocks: np.ndarray, ggml_type: int, x: np.ndarray, out_features: int, in_features: int,
            out: np.ndarray | None = None) -> np.ndarray:
    """x @ W.T for W in GGML blocks: C when the library takes the type, else `qmatmul_ref` (slow; the numpy
    twin, for tests and correctness rather than speed). See KernelLibrary.qmatmul."""
    lib = get()
    if lib is not None and ggml_type in lib._qmatmul_blocks:
        return lib.qmatmul(blocks, ggml_type, x, out_features, in_features, out)
    x = np.asarray(x, dtype=np.float32)
    flat = x.ndim == 1
    got = qmatmul_ref(np.asarray(blocks), getattr(ggml_type, "id", ggml_type), x.reshape(1, -1) if flat else x)
    got = got.reshape(-1) if flat else got
    if out is None:
        return got
    out[...] = got
    return out


def get_rows(blocks: np.ndarray, ggml_type: int, ids, in_features: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows `ids` of a GGML-stored matrix as float32: C when the library takes the type, else `get_rows_ref`."""
    lib = get()
    if lib is not None and ggml_type in lib._get_rows_blocks:
        return lib.get_rows(blocks, ggml_type, ids, in_features, out)
    got = get_rows_ref(np.asarray(blocks), getattr(ggml_type, "id", ggml_type), _row_ids(ids)).reshape(-1, in_features)
    if out is None:
        return got
    out[...] = got
    return out


# ---------------------------------------------------------------------------------------- argument checks


def _type_table(supported) -> dict:
    """{id or GGMLType: (id, elements per block, bytes per block)} for the types `supported(id)` accepts."""
    table = {}
    for t in GGML_TYPES.values():
        if supported(t.id):
            table[t.id] = table[t] = (t.id, t.block_size, t.block_bytes)
    return table


def _type_name(ggml_type) -> str:
    type_id = getattr(ggml_type, "id", ggml_type)
    known = GGML_TYPES.get(type_id) if isinstance(type_id, (int, np.integer)) else None
    return f"GGML type {type_id!r}" + (f" ({known.name})" if known else "")


def _type_names(table: dict) -> str:
    return ", ".join(GGML_TYPES[t].name for t in sorted(k for k in table if isinstance(k, int)))


def _check_blocks(kernel: str, blocks, rows: int, cols: int, block_elems: int, block_bytes: int) -> int:
    """A stored matrix of `rows` rows of `cols` elements: its rows' stride in bytes, after checking its layout.

    Block formats come as uint8 (rows, bytes_per_row); plain floats may also come typed, (rows, cols) of their
    2- or 4-byte elements, as GGUFFile returns them.
    """
    if cols < 0 or cols % block_elems:
        raise KernelError(f"{kernel}: in_features must be a whole number of {block_elems}-element blocks, "
                          f"found {cols}")
    row_bytes = cols // block_elems * block_bytes
    if isinstance(blocks, np.ndarray) and blocks.ndim == 2:
        if blocks.dtype == np.uint8:
            shape, element = (rows, row_bytes), 1
        elif block_elems == 1 and blocks.itemsize == block_bytes and blocks.dtype.kind in "fu":
            shape, element = (rows, cols), block_bytes
        else:
            shape = element = None
        if blocks.shape == shape and blocks.strides[1] == element and blocks.strides[0] >= row_bytes:
            return blocks.strides[0]
    strides = f", strides {blocks.strides}" if isinstance(blocks, np.ndarray) else ""
    raise KernelError(f"{kernel}: blocks must be uint8 of shape ({rows}, {row_bytes}) (rows of {cols} elements in "
                      f"{block_bytes}-byte blocks) with contiguous rows, found {_describe(blocks)}{strides}")


def _row_ids(ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim > 1 or not (ids.dtype.kind in "iu" or ids.size == 0):
        raise KernelError(f"get_rows: ids must be a 1-D array of integers, found {_describe(ids)}")
    return np.ascontiguousarray(ids.reshape(-1), dtype=np.int64)


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        layout = "C-contiguous" if a.flags.c_contiguous else "non-contiguous"
        return f"{a.dtype} array of shape {a.shape}, {layout}{'' if a.flags.writeable else ', read-only'}"
    return type(a).__name__


def _check_contiguous(kernel: str, name: str, a) -> None:
    if not (isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous):
        raise KernelError(f"{kernel}: {name} must be a C-contiguous float32 array, found {_describe(a)}")


def _check_writable(kernel: str, name: str, a, layout: bool = True) -> None:
    """The array a kernel writes: float32 C-contiguous (for C) and writable."""
    if layout:
        _check_contiguous(kernel, name, a)
    elif not (isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)):
        raise KernelError(f"{kernel}: {name} must be a floating-point array, found {_describe(a)}")
    if not a.flags.writeable:
        raise KernelError(f"{kernel}: {name} is read-only and the kernel writes it in place; pass a writable copy")


def _vector(kernel: str, name: str, v, length: int) -> np.ndarray | None:
    """An optional (length,) operand as float32 C-contiguous."""
    if v is None:
        return None
    v = np.asarray(v)
    if v.shape != (length,) or not np.issubdtype(v.dtype, np.floating):
        raise KernelError(f"{kernel}: {name} must be a float vector of shape ({length},), found {_describe(v)}")
    return np.ascontiguousarray(v, dtype=np.float32)


def _same_shape(kernel: str, name: str, a, like: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != like.shape or not np.issubdtype(a.dtype, np.floating):
        raise KernelError(f"{kernel}: {name} must be a float array of shape {like.shape}, found {_describe(a)}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _finite(kernel: str, name: str, value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise KernelError(f"{kernel}: {name} must be a number, found {value!r}") from None
    if not np.isfinite(value):
        raise KernelError(f"{kernel}: {name} must be finite, found {value}")
    return value


def _partly_overlaps(out: np.ndarray, a: np.ndarray) -> bool:
    """True when out and a share memory but are not the same elements (in place is fine, shifted is not)."""
    same = out.ctypes.data == a.ctypes.data and out.shape == a.shape
    return not same and np.may_share_memory(out, a)


def _checked_mask(mask, shape: tuple[int, ...]) -> np.ndarray:
    """An additive float mask that broadcasts against `shape`, with leading axes of size 1 added to match."""
    mask = np.asarray(mask)
    if not np.issubdtype(mask.dtype, np.floating):
        raise KernelError(f"softmax: mask must be additive floats (0 to keep, large negative to drop), "
                          f"found {mask.dtype}")
    if mask.ndim > len(shape) or any(m not in (1, s) for m, s in zip(mask.shape[::-1], shape[::-1])):
        raise KernelError(f"softmax: mask of shape {mask.shape} does not broadcast against x of shape {shape}")
    return mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)


def _mask_layout(mask, shape: tuple[int, ...]) -> tuple[np.ndarray, int, int]:
    """An additive mask broadcasting against x of `shape`, as (mask rows, div, mod) for vt_softmax.

    Row r of x (all axes but the last flattened) takes mask row (r // div) % mod. That covers a mask whose
    non-broadcast leading axes are consecutive, like (batch, 1, 1, k) or (1, 1, q, k) against (batch, heads,
    q, k); any other mask is expanded to x's shape first.
    """
    mask = _checked_mask(mask, shape)
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


def _ptr(a: np.ndarray | None):
    return None if a is None else a.ctypes.data


def _call(kernel: str, status: int) -> None:
    if status != _VT_OK:  # the checks above should make this unreachable
        raise KernelError(f"{kernel}: the C kernel rejected its arguments (status {status})")


# ---------------------------------------------------------------------------------------------- decoder rows


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """RMSNorm over the last axis, a new array: C when loaded, else `rms_norm_ref` (the same arithmetic)."""
    lib = get()
    x = np.ascontiguousarray(x, np.float32)
    return lib.rms_norm(x, weight, eps) if lib is not None else rms_norm_ref(x, weight, eps)


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up in ggml's arithmetic, into gate when C takes it; else `swiglu_ref` (a new array)."""
    lib = _fast(gate)
    return lib.swiglu(gate, up) if lib is not None else swiglu_ref(gate, up)


def rope_cache(base: float, dims: int, n_positions: int, first: int = 0) -> np.ndarray:
    """(n_positions, dims) interleaved cos, sin table of RoPE: C (libm's cosf/sinf), else `rope_cache_ref`."""
    lib = get()
    if lib is not None:
        return lib.rope_cache(base, dims, n_positions, first)
    return rope_cache_ref(base, dims, n_positions, first)


def rope(x: np.ndarray, cache: np.ndarray, neox: bool) -> np.ndarray:
    """x (n, heads, dims) rotated by cache rows: in place in C when x is float32 C-contiguous, else a new array."""
    lib = _fast(x)
    return lib.rope(x, cache, neox) if lib is not None else rope_ref(x, cache, neox)


def attention_f16(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_start: int, scale: float,
                  window: int | None = None) -> np.ndarray:
    """Causal attention over a float16 KV cache in ggml's order: C when loaded, else the (slow) numpy twin."""
    lib = get()
    q = np.ascontiguousarray(q, np.float32)
    if lib is not None:
        return lib.attention_f16(q, k, v, q_start, scale, window)
    return attention_f16_ref(q, k, v, q_start, scale, window)

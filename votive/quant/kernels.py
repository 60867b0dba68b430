"""The C kernels (libvotive.so) bound with ctypes, with their numpy twins as the fallback.

Why a plain shared library and ctypes rather than a CPython extension: an extension module is tied to one
Python ABI (cp310, cp311, ...), so a Lambda layer or wheel would need one build per Python version. This
library exports C functions on float pointers and knows nothing of Python, so one build per architecture
loads in every supported Python (3.10-3.13) and its own C self-test can run it without Python at all (under
qemu-user for arm64). ctypes releases the GIL during each call; a call costs a few microseconds with the
argument checks, small beside the kernels themselves.

How it is organised:

- `OPS`, the table (`votive.quant.kernel_table`): a row per kernel with its C entry (name, and its parameters as
  ctypes types; every kernel returns an int status), its numpy twin in `votive.quant.kernels_ref`, its argument
  checks (a function of `votive.quant.kernel_args`, built from one check per class of argument) and whether it
  works in place. A new kernel is a row, a KernelLibrary method and, where it has a twin, a module function.
- `KernelLibrary`, the opened library (`get()`; None when it is missing, after ONE logged warning). Its kernel
  methods always run C: the row's checks, which raise KernelError on anything C cannot take, then the C entry.
  Its settings (instruction sets, threads, spin) come from `votive.quant.kernel_settings`, and the objects of
  `matrix` and `group` from `votive.quant.quant_matrices`.
- The module functions (`gelu`, `linear`, `qmatmul`, ...: the kernels with a twin): C when the library is loaded
  and takes the arrays as they are, else the twin after the same checks. Same results to float32 rounding (bit
  for bit for the decoder rows and the quantized products' portable kernels). The numpy backend's ops are these.
- Loading: `load`, `get`, `available`, `supports`, `set_num_threads`, `num_threads`.

Quantized weights (GGUF blocks, kept as stored): `qmatmul` multiplies float activations by a matrix of Q4_0,
Q4_1, Q5_0, Q5_1, Q8_0 or Q2_K..Q6_K blocks without expanding it to floats, and `get_rows` dequantizes selected
rows (embedding lookups; also F32, F16, BF16). `supports(ggml_type)` says whether the C library takes a type;
`votive.backends.numpy_linears` asks it before calling in, and dequantizes band by band with numpy otherwise. A
decoder, which multiplies by the same weights every token, binds them once: `KernelLibrary.matrix` (one weight)
and `KernelLibrary.group` (weights sharing an input, such as q, k and v: one call, the input quantized once).

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

import ctypes
import math
import _thread
from pathlib import Path

import numpy as np

from votive.errors import KernelError
from votive.quant import kernel_args
from votive.quant.ggml_types import GGML_TYPES
from votive.quant.kernel_args import VT_ERANGE, VT_OK, data_address, refusal
from votive.quant.kernel_settings import LibrarySettings, configured_spin_us, configured_threads
from votive.quant.kernel_table import I64, INT, OPS, PTR, KernelOp  # noqa: F401 (KernelOp: public here too)
from votive.quant.quant_matrices import QuantMatrix, QuantMatrixGroup

__all__ = [
    "LIBRARY_PATH", "ABI_VERSION", "KernelOp", "OPS", "KernelLibrary", "QuantMatrix", "QuantMatrixGroup",
    "load", "get", "available", "supports", "configured_threads", "configured_spin_us", "set_num_threads",
    "num_threads", "gelu", "layer_norm", "softmax", "linear", "encoder_attention", "rms_norm", "swiglu", "geglu", "rope_cache", "rope",
    "attention_f16", "qmatmul", "get_rows", "half_matmul",
]


LIBRARY_PATH = Path(__file__).with_name("libvotive.so")
ABI_VERSION = 11  # VT_ABI_VERSION in csrc/votive.h

class KernelLibrary(LibrarySettings):
    """libvotive opened with ctypes: a method per row of OPS that checks every argument before C sees it, and
    the library's settings (instruction sets, threads: votive.quant.kernel_settings).

    Arrays the kernels write (x, out) must be float32, C-contiguous and writable; small read-only operands
    (bias, weight, mask, residual) are converted to float32 C-contiguous when they are not already.
    """

    def __init__(self, cdll, path: Path):
        super().__init__(cdll)
        self.path = path
        self._entries = {}
        for op, row in OPS.items():
            fn = getattr(cdll, row.c_entry)
            fn.argtypes, fn.restype = [ctype for _, ctype in row.params], INT
            self._entries[op] = fn
        # The GGML types each quantized kernel takes, id or GGMLType -> GGMLType, asked once here, not per call.
        self.qmatmul_types = _types_taken(cdll.vt_qmatmul_supports)
        self.get_rows_types = _types_taken(cdll.vt_get_rows_supports)
        self.half_types = HALF_TYPES

    def _call(self, op: str, *args) -> int:
        """op's C entry on args (arrays passed by address, None as NULL): its status."""
        return self._entries[op](*[data_address(a) if isinstance(a, np.ndarray) else a for a in args])

    def _run(self, op: str, *args) -> np.ndarray:
        """op's C entry on args, which must succeed: returns args[0], the array it wrote."""
        status = self._call(op, *args)
        if status != VT_OK:
            raise refusal(op, status)
        return args[0]

    # Whole passes through a model's layers (csrc/decode_step.c, csrc/encoder_pass.c) and their parameters:
    # votive.models.decode_step and votive.models.encoder_pass build the arguments (a layer table, checked once)
    # and are their only callers.
    STEP_ENTRIES = {"vt_decode_step": [PTR] * 6 + [I64], "vt_encoder_pass": [PTR, PTR, PTR, I64, PTR, PTR]}

    def step_entry(self, name: str):
        """`name`, a STEP_ENTRIES key, typed for ctypes."""
        fn = getattr(self._lib, name)
        fn.argtypes, fn.restype = self.STEP_ENTRIES[name], INT
        return fn

    # The AVX512-VNNI products of csrc/encoder_q8.c and their parameters; the encoders' quantized linears
    # (votive.backends.numpy_linears) lay their weights out once and are their only callers.
    VNNI_ENTRIES = {"vt_eq8_matmul": [PTR, PTR, PTR, I64, I64, PTR, I64, PTR],
                    "vt_i8_matmul": [PTR, PTR, PTR, I64, I64, PTR, I64, PTR, PTR],
                    "vt_i8_pack": [PTR, I64, I64, PTR, PTR, PTR]}

    def vnni_entry(self, name: str):
        """`name`, a VNNI_ENTRIES key, typed for ctypes; None where this CPU lacks AVX512-VNNI."""
        if not self._lib.vt_eq8_supported():
            return None
        fn = getattr(self._lib, name)
        fn.argtypes, fn.restype = self.VNNI_ENTRIES[name], INT
        return fn

    # Float matrices packed once into panels (csrc/dense_kernels.c) and their products; numpy_linears.DensePanels
    # packs an encoder's matrices at load and is their only caller.
    PANEL_ENTRIES = {"vt_pack_panels": [PTR, PTR, I64, I64], "vt_linear_panels": [PTR, PTR, PTR, PTR, I64, I64, I64]}

    def panel_entry(self, name: str):
        """`name`, a PANEL_ENTRIES key, typed for ctypes."""
        fn = getattr(self._lib, name)
        fn.argtypes, fn.restype = self.PANEL_ENTRIES[name], INT
        return fn

    def supports(self, ggml_type) -> bool:
        """Whether `qmatmul` takes weights of this GGML type (id or GGMLType)."""
        return ggml_type in self.qmatmul_types

    # ---- encoder rows (csrc/nn_kernels.c)

    def gelu(self, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """Exact (erf) GELU of x + bias, in place on x, which is returned.

        Args:
            x: float32, C-contiguous, writable, any shape (..., d).
            bias: optional (d,), added before the activation (a linear layer's bias, fused).
        """
        x, bias = OPS["gelu"].checks(x, bias, for_c=True)
        cols = x.shape[-1] if x.ndim else 1
        return self._run("gelu", x, bias, x.size // max(cols, 1), cols)

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
        x, weight, bias, eps, residual, out = OPS["layer_norm"].checks(x, weight, bias, eps, residual, out,
                                                                       for_c=True)
        cols = x.shape[-1]
        return self._run("layer_norm", out, x, residual, weight, bias, x.size // cols, cols, eps)

    def softmax(self, x: np.ndarray, mask: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
        """Softmax over the last axis of x * scale + mask, in place on x, which is returned.

        Args:
            x: float32, C-contiguous, writable, shape (..., d), e.g. attention scores (batch, heads, q, k).
            mask: optional additive mask broadcasting against x, e.g. (batch, 1, 1, k) with 0 for keys to
                keep and a large negative number for padding. Bool masks are refused (ambiguous).
            scale: multiplies x first (1 / sqrt(head_dim) for attention scores).
        """
        x, mask, scale = OPS["softmax"].checks(x, mask, scale, for_c=True)
        mask_rows, div, mod = (None, 1, 1) if mask is None else kernel_args.mask_layout(mask, x.shape)
        cols = x.shape[-1]
        return self._run("softmax", x, mask_rows, div, mod, scale, x.size // cols, cols)

    # ---- float products (csrc/dense_kernels.c)

    def linear(self, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        """x (..., in) @ weight.T + bias -> a new (..., out): float32 C-contiguous x and weight (out, in), read in
        place (a memory-mapped checkpoint's view is fine); bias (out,) or None."""
        x, weight, bias = OPS["linear"].checks(x, weight, bias, for_c=True)
        y = np.empty((*x.shape[:-1], weight.shape[0]), np.float32)
        return self._run("linear", y, x, weight, bias, math.prod(x.shape[:-1]), *weight.shape)

    def encoder_attention(self, qkv: np.ndarray, offsets, heads: int, scale: float) -> np.ndarray:
        """Bidirectional attention of packed sequences -> a new (rows, heads * dh): qkv float32 C-contiguous
        (rows, 3 * heads * dh), each row q | k | v; sequence s is rows offsets[s] .. offsets[s + 1] - 1."""
        qkv, offsets, heads, scale = OPS["encoder_attention"].checks(qkv, offsets, heads, scale, for_c=True)
        out = np.empty((qkv.shape[0], qkv.shape[1] // 3), np.float32)
        return self._run("encoder_attention", out, qkv, offsets, offsets.size - 1, heads, out.shape[1] // heads,
                         scale)

    # ---- decoder rows, in ggml's float order (csrc/decoder_kernels.c)

    def rms_norm(self, x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
        """x / sqrt(mean(x^2) + eps) * weight over the last axis of float32 C-contiguous x, as a new array."""
        x, weight, eps = OPS["rms_norm"].checks(x, weight, eps, for_c=True)
        cols = x.shape[-1]
        return self._run("rms_norm", np.empty_like(x), x, weight, x.size // cols, cols, eps)

    def swiglu(self, gate: np.ndarray, up: np.ndarray) -> np.ndarray:
        """silu(gate) * up, written into gate (float32, C-contiguous, writable), which is returned."""
        gate, up = OPS["swiglu"].checks(gate, up, for_c=True)
        cols = gate.shape[-1] if gate.ndim else 1
        return self._run("swiglu", gate, gate, up, gate.size // max(cols, 1), cols)

    def geglu(self, gate: np.ndarray, up: np.ndarray, table: np.ndarray) -> np.ndarray:
        """gelu(gate) * up with GELU from `table` (see geglu_ref), written into gate (float32, C-contiguous,
        writable), which is returned."""
        gate, up, table = OPS["geglu"].checks(gate, up, table, for_c=True)
        cols = gate.shape[-1] if gate.ndim else 1
        return self._run("geglu", gate, up, table, gate.size // max(cols, 1), cols)

    def rope_cache(self, base: float, dims: int, n_positions: int, first: int = 0, freq_scale: float = 1.0,
                   freq_factors: np.ndarray | None = None, ext_factor: float = 0.0, attn_factor: float = 1.0,
                   corr_dims: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """(n_positions, dims) float32: cos and sin interleaved, of positions first.., as ggml_rope_cache_init makes
        them (see vt_rope_cache). The defaults are plain RoPE; freq_factors is (dims / 2,) (Llama 3's rope_freqs),
        freq_scale 1 / the linear or YaRN factor, ext_factor, attn_factor and corr_dims YaRN's."""
        base, dims, n_positions, first, freq_scale, freq_factors, ext_factor, attn_factor, corr_dims = OPS[
            "rope_cache"].checks(base, dims, n_positions, first, freq_scale, freq_factors, ext_factor, attn_factor,
                                 corr_dims, for_c=True)
        return self._run("rope_cache", np.empty((n_positions, dims), np.float32), first, n_positions, dims, base,
                         freq_scale, freq_factors, ext_factor, attn_factor, *corr_dims)

    def rope(self, x: np.ndarray, cache: np.ndarray, neox: bool) -> np.ndarray:
        """Rotate x (n, heads, dims) in place by cache rows (n, dims) from rope_cache; returns x."""
        x, cache, neox = OPS["rope"].checks(x, cache, neox, for_c=True)
        return self._run("rope", x, cache, *x.shape, int(neox))

    def attention_f16(self, q: np.ndarray, k: np.ndarray, v: np.ndarray, q_start: int, scale: float,
                      window: int | None = None) -> np.ndarray:
        """Causal attention of q (n, heads, dims) float32 over a half cache k (kv_heads, capacity, dims) and
        v (kv_heads, dims, capacity), positions 0 .. q_start + n - 1 filled -> (n, heads, dims)."""
        q, k, v, q_start, scale, window = OPS["attention_f16"].checks(q, k, v, q_start, scale, window, for_c=True)
        n, heads, dims = q.shape
        return self._run("attention_f16", np.empty_like(q), q, k, v, n, heads, k.shape[0], dims, q_start,
                         k.shape[1], window or 0, scale)

    # ---- GGML-quantized matrices (csrc/quant_kernels.c)

    def qmatmul(self, blocks: np.ndarray, ggml_type: int, x: np.ndarray, out_features: int, in_features: int,
                out: np.ndarray | None = None) -> np.ndarray:
        """x @ W.T for W stored as GGML blocks, read in place (never expanded to floats): blocks uint8
        (out_features, bytes_per_row), e.g. a zero-copy view of a GGUF tensor (read-only, unaligned and rows further
        apart than their bytes are fine); ggml_type an id or GGMLType (see `supports`); x float32 C-contiguous
        (n, in_features) or (in_features,); out an optional float32 array of the result's shape, returned.

        x is quantized once per call to the activation format ggml pairs with the type (Q8_0, Q8_1 or Q8_K),
        then every output is integer dot products per block, scaled and summed in float32, in the order
        llama.cpp's CPU backend uses for that product (on x86 the K-quants' order depends on the weight's row
        count and on n, as llama.cpp's does: see vt_order in csrc/vt_internal.h and votive.quant.llama_orders).
        The same bits for any thread count, and, for a given n, whatever x's other rows hold; a NaN or inf in a
        row of x makes that output row NaN. `matrix` checks the weight once for many calls (a decoder).
        """
        type_id, stride, n, out = OPS["qmatmul"].checks(self.qmatmul_types, blocks, ggml_type, x, out_features,
                                                        in_features, out)
        return self._run("qmatmul", out, blocks, type_id, stride, x, n, out_features, in_features)

    def matrix(self, blocks: np.ndarray, ggml_type: int, out_features: int, in_features: int) -> QuantMatrix:
        """The weight checked once and bound to qmatmul: `m = lib.matrix(...)`, then `m(x)` or `m(x, out)` (a
        decoder multiplies by ~200 matrices per token: checking each every time would cost a noticeable share).
        The QuantMatrix keeps `blocks` alive."""
        weights = OPS["qmatmul_group"].checks(self.qmatmul_types, [(blocks, ggml_type, out_features)], in_features)
        return QuantMatrix(self._entries["qmatmul_group"], weights, in_features)

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
        weights = OPS["qmatmul_group"].checks(self.qmatmul_types, weights, in_features)
        return QuantMatrixGroup(self._entries["qmatmul_group"], weights, in_features)

    def get_rows(self, blocks: np.ndarray, ggml_type: int, ids, in_features: int,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Rows `ids` (integers in [0, rows), 1-D or a scalar) of a GGML-stored matrix as float32 (len(ids),
        in_features), bit for bit ggml's dequantization (embedding lookup). blocks: uint8 (rows, bytes_per_row) for
        block formats, or for F32 / F16 / BF16 an array of that element type (float32, float16, uint16 bits);
        ggml_type: an id or GGMLType (quantized types of `supports`, and F32 0, F16 1, BF16 30); out: optional
        float32 C-contiguous writable (len(ids), in_features), returned."""
        type_id, stride, rows, ids, out = OPS["get_rows"].checks(self.get_rows_types, blocks, ggml_type, ids,
                                                                 in_features, out)
        status = self._call("get_rows", out, blocks, type_id, stride, rows, ids, ids.shape[0], in_features)
        if status == VT_ERANGE:  # the C side checks the ids as it reads them, before writing anything
            bad = ids[(ids < 0) | (ids >= rows)]
            raise KernelError(f"get_rows: row id {int(bad[0])} is outside the matrix's {rows} rows "
                              f"({bad.size} bad ids of {ids.size})")
        if status != VT_OK:
            raise refusal("get_rows", status)
        return out

    def half_matmul(self, w: np.ndarray, ggml_type: int, x: np.ndarray, out_features: int, in_features: int,
                    out: np.ndarray | None = None) -> np.ndarray:
        """x @ W.T for W stored as F16 or BF16, read in place, as llama.cpp's CPU backend computes it: x rounded to
        the weight's type, each output summed in the lane order of llamafile's tinyBLAS (n >= 2, out_features a
        multiple of 4, rows of whole 16 (F16) or 32 (BF16) elements) or of ggml_vec_dot_f16 / _bf16 (the rest);
        see csrc/half_kernels.h. The same bits on every ISA and thread count. Arguments and result as qmatmul's,
        w being float16 (F16) or uint16 bits (BF16) of shape (out_features, in_features), or their bytes."""
        type_id, stride, n, out = OPS["half_matmul"].checks(self.half_types, w, ggml_type, x, out_features,
                                                            in_features, out)
        return self._run("half_matmul", out, w, type_id, stride, x, n, out_features, in_features)

    def quantize_rows(self, x: np.ndarray, act_type: int) -> np.ndarray:
        """Rows of x quantized to Q8_0 (8), Q8_1 (9) or Q8_K (15) as `qmatmul` does, in ggml's block layout: uint8
        (rows, bytes_per_row), the bytes of votive.quant.codecs.quantize for that type."""
        x, out = OPS["quantize_rows"].checks(x, act_type)
        return self._run("quantize_rows", out, act_type, x, *x.shape)


def _types_taken(supported) -> dict:
    """{id or GGMLType: GGMLType} for the types `supported(id)` accepts."""
    table = {}
    for t in GGML_TYPES.values():
        if supported(t.id):
            table[t.id] = table[t] = t
    return table


HALF_TYPES = _types_taken(lambda t: t in (1, 30))  # F16 and BF16: what half_matmul takes, C or twin


# ------------------------------------------------------------------------------- the module functions


def _c_or_twin(op: str, args: tuple, written: tuple = (), taken: tuple = ()):
    """`op` on args in C when the library is loaded and takes `written` (the arrays the kernel writes) as they
    are: float32, C-contiguous and writable, since a converted copy would not be the caller's array; and `taken`
    (large operands, such as a checkpoint's read-only weight, that C reads in place) float32 and C-contiguous.
    Else its numpy twin, after the same checks."""
    if all(a is None or _c_ready(a) for a in written) and all(_c_input(a) for a in taken):
        lib = get()
        if lib is not None:
            return getattr(lib, op)(*args)
    row = OPS[op]
    return row.twin(*row.checks(*args, for_c=False))


def _c_input(a) -> bool:
    return isinstance(a, np.ndarray) and a.dtype == np.float32 and a.flags.c_contiguous


def _c_ready(a) -> bool:
    return _c_input(a) and a.flags.writeable


def gelu(x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Exact GELU of x + bias, in place on x: C when it takes x, else `gelu_ref`. See KernelLibrary.gelu."""
    return _c_or_twin("gelu", (x, bias), written=(x,))


def layer_norm(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
               residual: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm of x + residual over the last axis: C when it takes x and out, else `layer_norm_ref`.

    x counts as written: the numpy backend passes out=x (BERT's add & norm in place).
    """
    return _c_or_twin("layer_norm", (x, weight, bias, eps, residual, out), written=(x, out))


def softmax(x: np.ndarray, mask: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
    """Softmax over the last axis of x * scale + mask, in place: C when it takes x, else `softmax_ref`."""
    return _c_or_twin("softmax", (x, mask, scale), written=(x,))


def linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x @ weight.T + bias, a new array: C when it takes x and weight as they are (float32, C-contiguous), else
    `linear_ref` (numpy's BLAS). See KernelLibrary.linear."""
    return _c_or_twin("linear", (x, weight, bias), taken=(x, weight))


def encoder_attention(qkv: np.ndarray, offsets, heads: int, scale: float) -> np.ndarray:
    """Attention of packed sequences: C when it takes qkv as it is, else `encoder_attention_ref`. See
    KernelLibrary.encoder_attention."""
    return _c_or_twin("encoder_attention", (qkv, offsets, heads, scale), taken=(qkv,))


def rms_norm(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """RMSNorm over the last axis, a new array: C when loaded, else `rms_norm_ref` (the same arithmetic)."""
    return _c_or_twin("rms_norm", (np.ascontiguousarray(x, np.float32), weight, eps))


def swiglu(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up in ggml's arithmetic, into gate when C takes it; else `swiglu_ref` (a new array)."""
    return _c_or_twin("swiglu", (gate, up), written=(gate,))


def geglu(gate: np.ndarray, up: np.ndarray, table: np.ndarray) -> np.ndarray:
    """gelu(gate) * up as ggml_vec_geglu_f32 (GELU from `table`), into gate when C takes it; else `geglu_ref`."""
    return _c_or_twin("geglu", (gate, up, table), written=(gate,))


def rope_cache(base: float, dims: int, n_positions: int, first: int = 0, freq_scale: float = 1.0,
               freq_factors: np.ndarray | None = None, ext_factor: float = 0.0, attn_factor: float = 1.0,
               corr_dims: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(n_positions, dims) interleaved cos, sin table of RoPE as ggml_rope_cache_init makes it: C, else
    `rope_cache_ref` (both with libm's cosf/sinf). See KernelLibrary.rope_cache."""
    return _c_or_twin("rope_cache", (base, dims, n_positions, first, freq_scale, freq_factors, ext_factor,
                                     attn_factor, corr_dims))


def rope(x: np.ndarray, cache: np.ndarray, neox: bool) -> np.ndarray:
    """x (n, heads, dims) rotated by cache rows: in place in C when x is float32 C-contiguous, else a new array."""
    return _c_or_twin("rope", (x, cache, neox), written=(x,))


def attention_f16(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_start: int, scale: float,
                  window: int | None = None) -> np.ndarray:
    """Causal attention over a float16 KV cache in ggml's order: C when loaded, else the (slow) numpy twin."""
    return _c_or_twin("attention_f16", (np.ascontiguousarray(q, np.float32), k, v, q_start, scale, window))


def qmatmul(blocks: np.ndarray, ggml_type: int, x: np.ndarray, out_features: int, in_features: int,
            out: np.ndarray | None = None) -> np.ndarray:
    """x @ W.T for W in GGML blocks: C when the library takes the type, else `qmatmul_ref` (slow; the numpy
    twin, for tests and correctness rather than speed). See KernelLibrary.qmatmul."""
    lib = get()
    if lib is not None and ggml_type in lib.qmatmul_types:
        return lib.qmatmul(blocks, ggml_type, x, out_features, in_features, out)
    x = np.asarray(x, dtype=np.float32)
    flat = x.ndim == 1
    got = OPS["qmatmul"].twin(np.asarray(blocks), getattr(ggml_type, "id", ggml_type), x.reshape(1, -1) if flat else x)
    got = got.reshape(-1) if flat else got
    if out is None:
        return got
    out[...] = got
    return out


def get_rows(blocks: np.ndarray, ggml_type: int, ids, in_features: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows `ids` of a GGML-stored matrix as float32: C when the library takes the type, else `get_rows_ref`."""
    lib = get()
    if lib is not None and ggml_type in lib.get_rows_types:
        return lib.get_rows(blocks, ggml_type, ids, in_features, out)
    ids = kernel_args.row_ids("get_rows", ids)
    got = OPS["get_rows"].twin(np.asarray(blocks), getattr(ggml_type, "id", ggml_type), ids).reshape(-1, in_features)
    if out is None:
        return got
    out[...] = got
    return out


def half_matmul(w: np.ndarray, ggml_type: int, x: np.ndarray, out_features: int, in_features: int,
                out: np.ndarray | None = None) -> np.ndarray:
    """x @ W.T for W stored as F16 or BF16, in llama.cpp's arithmetic: C when the library is loaded, else
    `half_matmul_ref` (the same bits, slowly). See KernelLibrary.half_matmul."""
    lib = get()
    if lib is not None:
        return lib.half_matmul(w, ggml_type, x, out_features, in_features, out)
    row = OPS["half_matmul"]
    type_id, _, n, out = row.checks(HALF_TYPES, w, ggml_type, x, out_features, in_features, out)
    w = np.asarray(w).view(np.float16 if type_id == 1 else np.uint16).reshape(out_features, in_features)
    row.twin(w, type_id, x.reshape(n, in_features), out.reshape(n, out_features))
    return out


# ------------------------------------------------------------------------------------------------ loading


_warned: set[str] = set()
_lock = _thread.allocate_lock()
_default: list[KernelLibrary | None] = []  # empty until the first get()


def load(path: str | Path | None = None) -> KernelLibrary | None:
    """Open the kernel library at `path` (default LIBRARY_PATH, beside this module).

    Returns None when it cannot be used (missing, unloadable, from another version of votive), after logging
    one warning per path saying why and that the numpy path runs instead.

    Raises:
        KernelError: $VOTIVE_NUM_THREADS is set but not an integer >= 1, or $VOTIVE_SPIN_US not one in
            0..100000.
    """
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
    import logging  # only here: loading a model would otherwise import logging for this one warning

    logging.getLogger(__name__).warning("votive C kernels unavailable (%s); using the slower numpy path. Build them with "
                "`python -m votive.quant.kernel_build` (needs a C compiler) or reinstall votive.", reason)

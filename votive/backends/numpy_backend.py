"""The CPU backend: the small op set every model is written against (`votive.backends.ops.OpSet`), on numpy.

Models call these functions (through `votive.backends.get_backend`) and never numpy itself for math, so
`cupy_backend` can offer the same names on a GPU; its linears are in `votive.backends.numpy_linears`. Arrays are
float32 throughout; functions that return a fresh array may reuse it in place to save the memory traffic of
temporaries, which dominates at these sizes.
The elementwise hot spots (GELU, LayerNorm, softmax) run in votive's C library (`votive.quant.kernels`),
which falls back to numpy twins when it is missing. Thread count: when this backend starts it tells numpy's
OpenBLAS the cores this process may use (`votive.quant.cpus.limit_blas_threads`; a count the user set in the
environment wins); the C pool follows the same.
"""

from __future__ import annotations

import functools

import numpy as np

from votive.backends import numpy_linears as qlinear
from votive.quant import cpus, kernels

name = "numpy"
_openblas = cpus.openblas_calls()  # (set, get) of numpy's OpenBLAS, looked up once; None where none is loaded
blas_threads = cpus.limit_blas_threads(calls=_openblas)  # None where the user chose, or no OpenBLAS is loaded
# Products of fewer rows than this (one short text: a dozen tokens) run as (W @ x.T).T on one BLAS thread.
# x @ W.T makes OpenBLAS pack the whole weight from a transposed operand on every call, which at a dozen rows
# costs as much as the product; W @ x.T reads W as stored, and the transposed (rows, out) result is copied back
# (small). A second thread saves little at this size on idle cores and costs several times over when a core is
# busy elsewhere, as OpenBLAS's threads wait on each other. Each output is the same dot product, summed in the
# same order, so the results are bit for bit x @ W.T's (tests/test_encoder_speed_paths.py).
SMALL_ROWS = 64
_set_blas_threads = _openblas[0] if blas_threads and blas_threads > 1 else None
# Products of at least this many multiply-adds are split over the output features into column chunks, each one
# OpenBLAS call on one thread, which `blas_threads` threads take in turn (`_Chunks`), instead of OpenBLAS's own
# threading: its threads spin on each other inside every call (40% of the cycles of a batch-32 MiniLM under
# load, in perf), and a core taken by another process stalls its partner; here a late thread only takes fewer
# chunks. Chunks are at least CHUNK_COLS wide and a multiple of 64: each output is then the same dot product in
# the same kernel as the unsplit call, bit for bit (tests/test_linear_chunks.py); below SPLIT_ROWS rows
# OpenBLAS picks other kernels by width, so those products stay whole.
SPLIT_MACS = 1 << 21
SPLIT_ROWS = 16
CHUNK_COLS = 128
float32 = np.float32
int64 = np.int64


def asarray(x, dtype=None):
    """Host data (lists, numpy arrays, memory-mapped views) as this backend's array; no copy when possible."""
    return np.asarray(x, dtype=dtype)


def to_numpy(x) -> np.ndarray:
    return np.asarray(x)


def empty(shape, dtype=np.float32):
    return np.empty(shape, dtype=dtype)


def linear(x, weight, bias=None):
    """x @ weight.T + bias, with weight stored (out_features, in_features) as PyTorch's nn.Linear keeps it.

    `weight.T` of a C-contiguous matrix is a Fortran-ordered view, which BLAS takes as a transposed operand:
    the memory-mapped weight is never copied.
    """
    if x.ndim == 2 and _chunks is not None and x.shape[0] >= SPLIT_ROWS and x.shape[0] * weight.size >= SPLIT_MACS:
        y = _chunks.linear(x, weight)  # (rows, out)
    elif x.ndim == 2 and x.shape[0] < SMALL_ROWS:
        if _set_blas_threads is not None:
            _set_blas_threads(1)
        try:
            y = np.ascontiguousarray((weight @ x.T).T)  # (rows, out)
        finally:
            if _set_blas_threads is not None:
                _set_blas_threads(blas_threads)
    else:
        y = x @ weight.T  # (..., out)
    if bias is not None:
        y += bias
    return y


class _Chunks:
    """x @ W.T as column chunks of W's rows (`SPLIT_MACS`), taken in turn by the calling thread and helper threads
    (started on first use, daemons), each chunk one OpenBLAS call on one thread. numpy releases the GIL inside
    the call, so the threads multiply at once. A product arriving while another runs (a second Python thread)
    is done on its caller alone, chunk by chunk."""

    def __init__(self, threads: int, set_blas_threads):
        import os

        self.n_helpers = threads - 1
        self.set_blas_threads = set_blas_threads
        self._reset()
        os.register_at_fork(after_in_child=self._reset)  # a forked child has none of the helpers: start afresh

    def _reset(self):
        import threading

        self.busy = threading.Lock()
        self.go = threading.Semaphore(0)
        self.done = threading.Semaphore(0)
        self.helpers = []
        self.job = None
        self.failed = []  # an exception a helper met, for the caller

    def linear(self, x, weight):
        """x (rows, in) @ weight.T (weight (out, in)) -> (rows, out), a new array."""
        rows, out = x.shape[0], weight.shape[0]
        step = max(CHUNK_COLS, -(-out // (2 * (self.n_helpers + 1)) // 64) * 64)
        small = rows < SMALL_ROWS  # (W @ x.T).T: W read as stored (see SMALL_ROWS), chunks over W's rows
        y = np.empty((out, rows) if small else (rows, out), np.float32)
        xt = x.T
        parts = iter(range(0, out, step))

        def work():
            for n0 in parts:  # next() on a shared iterator: each chunk goes to one thread
                if small:
                    np.matmul(weight[n0 : n0 + step], xt, out=y[n0 : n0 + step])
                else:
                    np.matmul(x, weight[n0 : n0 + step].T, out=y[:, n0 : n0 + step])

        self.set_blas_threads(1)
        try:
            if out > step and self.busy.acquire(blocking=False):
                try:
                    self._start_helpers()
                    self.job = work
                    for _ in self.helpers:
                        self.go.release()
                    work()
                    for _ in self.helpers:
                        self.done.acquire()
                    if self.failed:
                        raise self.failed.pop()
                finally:
                    self.job = None
                    self.busy.release()
            else:
                work()
        finally:
            self.set_blas_threads(blas_threads)
        return np.ascontiguousarray(y.T) if small else y

    def _start_helpers(self):
        import threading

        while len(self.helpers) < self.n_helpers:
            t = threading.Thread(target=self._helper, name="votive-linear", daemon=True)
            t.start()
            self.helpers.append(t)

    def _helper(self):
        while True:
            self.go.acquire()
            try:
                self.job()
            except BaseException as e:  # handed to the caller, which re-raises it
                self.failed.append(e)
            finally:
                self.done.release()


_chunks = _Chunks(blas_threads, _set_blas_threads) if _set_blas_threads is not None else None


def matmul(a, b):
    """a @ b (attention's batched products: small, many). On one OpenBLAS thread where the splitter is in use:
    a threaded call wakes OpenBLAS's workers, which then spin for a long while (~0.1 s) on the cores the
    splitter's and the C pool's threads need."""
    if _chunks is None:
        return a @ b
    _set_blas_threads(1)
    try:
        return a @ b
    finally:
        _set_blas_threads(blas_threads)


def make_linear(gguf, name: str):
    """The linear layer for tensor `name` of an open GGUF file: a float weight, or GGML blocks read in place by
    the C kernels (`votive.backends.numpy_linears`)."""
    return qlinear.make_linear(gguf, name)


# An encoder's linear quantized at load (Q8_0) as the tiled AVX512-VNNI product of csrc/encoder_q8.c
# (`numpy_linears.EncoderQ8Linear`), the same numbers summed in another order; the linear itself where that kernel
# cannot run. Not for GGUF files, whose Q8_0 products follow llama.cpp's order. An optional op, outside the OpSet
# every backend offers: models look it up with getattr.
encoder_linear = qlinear.EncoderQ8Linear.make


def embedding(table, ids):
    """Rows of `table` (vocab, dim) for integer `ids` of any shape -> (*ids.shape, dim)."""
    return table[ids]


def layer_norm(x, weight, bias, eps: float, residual=None):
    """LayerNorm of x (+ residual) over the last axis (torch.nn.functional.layer_norm), written into x.

    The C kernel does the add and both passes in one sweep; `kernels` falls back to its numpy twin."""
    return kernels.layer_norm(x, weight, bias, eps, residual=residual, out=x)


def softmax(x, axis: int = -1, mask=None):
    """Softmax along the last axis of x + mask (an additive, broadcastable mask), in place on x."""
    if axis not in (-1, x.ndim - 1):
        raise ValueError(f"softmax runs over the last axis, got axis={axis}")
    return kernels.softmax(x, mask)


def gelu(x, bias=None):
    """Exact (erf) GELU of x + bias, torch.nn.functional.gelu(approximate='none') as BERT uses; in place on x."""
    return kernels.gelu(x, bias)


def l2_normalize(x, axis: int = -1, eps: float = 1e-12):
    """x / max(||x||, eps), as torch.nn.functional.normalize (sentence-transformers' Normalize module)."""
    norm = np.sqrt(np.einsum("...i,...i->...", x, x))[..., None]
    return x / np.maximum(norm, eps)


def masked_mean(x, mask):
    """Mean of x (batch, seq, dim) over positions where mask (batch, seq) is 1, as sentence-transformers pools."""
    m = mask.astype(x.dtype)[..., None]  # (batch, seq, 1)
    summed = np.einsum("bsd,bs->bd", x, mask.astype(x.dtype))  # (batch, dim)
    return summed / np.maximum(m.sum(axis=1), 1e-9)


def masked_max(x, mask):
    """Max of x over unmasked positions; masked ones count as -1e9 like sentence-transformers' max pooling."""
    return np.where(mask[..., None].astype(bool), x, np.float32(-1e9)).max(axis=1)


def concatenate(arrays, axis: int = 0):
    return np.concatenate(arrays, axis=axis)


# ----------------------------------------------------------------------------------------- decoder ops
def rms_norm(x, weight, eps: float):
    """x / sqrt(mean(x^2) + eps) * weight over the last axis (LLaMA's RMSNorm; GGUF Gemma weights already hold
    Gemma's 1 + w, added by the converter), in ggml's arithmetic (the mean summed in double). A new array."""
    return kernels.rms_norm(x, weight, eps)


def swiglu(gate, up):
    """silu(gate) * up (SwiGLU) with ggml's exp, into gate where the C kernel takes it."""
    return kernels.swiglu(np.ascontiguousarray(gate), up)


@functools.cache
def _gelu_half_table():
    """ggml's GELU table: for each half x (all 65536 bit patterns), the tanh-form GELU of x rounded to half, in
    float32. ggml builds it with float math (its `1 + a*x*x` fused by the compiler) and libm's tanhf, which the
    double tanh rounded to float reproduces here entry for entry."""
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    with np.errstate(all="ignore"):  # inf and NaN halves give inf and NaN, as in ggml
        inner = ((np.float32(0.044715) * x).astype(np.float64) * x + 1).astype(np.float32)  # fmaf(a*x, x, 1)
        t = np.tanh(((np.float32(0.7978845608028654) * x) * inner).astype(np.float64)).astype(np.float32)
        return ((np.float32(0.5) * x) * (np.float32(1) + t)).astype(np.float16).astype(np.float32)


def geglu(gate, up):
    """gelu(gate) * up (GeGLU, tanh-form GELU) as ggml_vec_geglu_f32: GELU looked up at gate rounded to half,
    gate itself from 10 up and 0 from -10 down. Into gate when C takes it (vt_geglu), else a new array
    (kernels_ref.geglu_ref: the same lookups and products)."""
    return kernels.geglu(np.ascontiguousarray(gate, np.float32), up, _gelu_half_table())


def rope_table(base: float, head_dim: int, n_positions: int, *, freq_scale: float = 1.0,
               freq_factors: np.ndarray | None = None, ext_factor: float = 0.0, attn_factor: float = 1.0,
               corr_dims: tuple[float, float] = (0.0, 0.0)):
    """RoPE's (n_positions, head_dim) table, cos and sin interleaved, as ggml_rope_cache_init makes it with the
    given scaling (OpSet.rope_table): once per model."""
    return kernels.rope_cache(base, head_dim, n_positions, 0, freq_scale, freq_factors, ext_factor, attn_factor,
                              corr_dims)


def rope(x, table, neox: bool):
    """Rotary position embedding of x (n, heads, head_dim) by its positions' rows of `rope_table` (n, head_dim).

    ggml's two layouts: "normal" (LLaMA in GGUF, whose converter permuted Q/K so adjacent elements pair up)
    rotates (x[2i], x[2i+1]); "neox" (Gemma) rotates (x[i], x[i + head_dim/2]). In place where C takes x.
    """
    return kernels.rope(np.ascontiguousarray(x, np.float32), table, neox)


def kv_cache(n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int):
    """Keys (L, Hkv, ctx, Dh) and transposed values (L, Hkv, Dh, ctx) in float16, as llama.cpp keeps them.

    np.empty reserves address space only: pages are touched as positions fill, so a short chat costs little."""
    return (np.empty((n_layers, n_kv_heads, n_ctx, head_dim), np.float16),
            np.empty((n_layers, n_kv_heads, head_dim, n_ctx), np.float16))


def causal_attention(q, k, v, q_start: int, scale: float, window: int | None = None):
    """Grouped-query causal attention of n new queries over one layer's float16 cache (`kv_cache`).

    q: (n, H, Dh) float32 for positions q_start .. q_start+n-1, whose keys and values are already stored; k:
    (Hkv, ctx, Dh), v: (Hkv, Dh, ctx). A query sees keys at positions <= its own and, with a sliding `window`,
    > its own - window. Scores are q.k * scale. In llama.cpp's arithmetic: queries and probabilities rounded to
    half, products summed in ggml's order (votive/quant/csrc/decoder_kernels.c). Returns (n, H, Dh).
    """
    return kernels.attention_f16(q, k, v, q_start, scale, window)

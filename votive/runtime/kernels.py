"""The C kernels (libvotive.so) bound with ctypes, with their numpy twins as the fallback.

Why a plain shared library and ctypes rather than a CPython extension: an extension module is tied to one
Python ABI (cp310, cp311, ...), so a Lambda layer or wheel would need one build per Python version. This
library exports C functions on float pointers and knows nothing of Python, so one build per architecture
loads in every supported Python (3.10-3.13) and its own C self-test can run it without Python at all (under
qemu-user for arm64). ctypes releases the GIL during each call; a call costs a few microseconds with the
argument checks, small beside the kernels themselves.

Two ways in:

- `gelu`, `layer_norm`, `softmax` (module functions): the C kernel when the library is loaded and the main
  array is float32 and C-contiguous, else the numpy twin from `votive.runtime.kernels_ref`. Same results
  either way, to float32 rounding. These are what the numpy backend's ops route to.
- `get()` returns the loaded `KernelLibrary` (None when it is missing, after ONE logged warning), whose
  methods always run C and raise KernelError on arrays they cannot take.

Threads: kernels split rows over a persistent pool (csrc/threadpool.c) of `available_cpus()` threads, or
$VOTIVE_NUM_THREADS, or what `set_num_threads` says; small inputs stay on the calling thread.

    >>> import numpy as np
    >>> from votive.runtime import kernels
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
from votive.runtime.cpus import available_cpus
from votive.runtime.kernels_ref import gelu_ref, layer_norm_ref, normal_tail_ref, softmax_ref

__all__ = [
    "LIBRARY_PATH", "KernelLibrary", "load", "get", "available", "supports", "configured_threads",
    "set_num_threads", "num_threads", "gelu", "layer_norm", "softmax", "gelu_ref", "layer_norm_ref",
    "softmax_ref", "normal_tail_ref",
]

log = logging.getLogger(__name__)

LIBRARY_PATH = Path(__file__).with_name("libvotive.so")
ABI_VERSION = 1  # VT_ABI_VERSION in csrc/votive.h
THREADS_ENV = "VOTIVE_NUM_THREADS"

_VT_OK = 0  # VT_OK; the C side returns a negative code for arguments the checks here should have caught


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
            "vt_gelu": ([ptr, ptr, i64, i64], c_int),
            "vt_layer_norm": ([ptr, ptr, ptr, ptr, ptr, i64, i64, f32], c_int),
            "vt_softmax": ([ptr, ptr, i64, i64, f32, i64, i64], c_int),
        }
        for name, (argtypes, restype) in signatures.items():
            fn = getattr(cdll, name)
            fn.argtypes, fn.restype = argtypes, restype

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


# ------------------------------------------------------------------------------------------------ loading


_warned: set[str] = set()
_lock = threading.Lock()
_default: list[KernelLibrary | None] = []  # empty until the first get()


def load(path: str | Path | None = None) -> KernelLibrary | None:
    """Open the kernel library at `path` (default LIBRARY_PATH, beside this module).

    Returns None when it cannot be used (missing, unloadable, from another version of votive), after logging
    one warning per path saying why and that the numpy path runs instead.

    Raises:
        KernelError: $VOTIVE_NUM_THREADS is set but not an integer >= 1.
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
    """Whether the library has a quantized matmul for this GGML type: none yet (the numpy path runs)."""
    return False


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
                "`python -m votive.runtime.kernel_build` (needs a C compiler) or reinstall votive.", reason)


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


# ---------------------------------------------------------------------------------------- argument checks


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

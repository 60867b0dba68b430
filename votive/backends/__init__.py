"""Array backends: one module per array library, each exposing the same small op set (`ops.OpSet`, the written
contract), with its linears beside it (`numpy_linears`, `cuda_linears`).

`get_backend()` picks one by name ("numpy", "cupy", "auto") or, given none, from `VOTIVE_BACKEND`, else "auto":
cupy when this machine has an NVIDIA GPU and cupy is installed, numpy otherwise. Deciding costs a few file-system
checks (`gpu_visible`), never an import of cupy: its import and CUDA context would cost a CPU function's cold
start for nothing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os

from votive.errors import BackendError

BACKENDS = {"numpy": "votive.backends.numpy_backend", "cupy": "votive.backends.cupy_backend"}
CHOICES = (*BACKENDS, "auto")
# Device nodes an NVIDIA driver creates (Linux), and the one WSL2 exposes GPUs through.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg")


def gpu_visible(exists=os.path.exists, find_spec=importlib.util.find_spec) -> bool:
    """Whether the cupy backend is worth trying: an NVIDIA device node exists and cupy is installed (found on the
    path, not imported)."""
    return any(exists(node) for node in GPU_DEVICE_NODES) and find_spec("cupy") is not None


def get_backend(name: str | None = None, *, gpu_visible=gpu_visible):
    """The backend module called `name` (default: $VOTIVE_BACKEND, else "auto").

    "auto" is cupy where `gpu_visible()`, else numpy; if cupy then fails to start (a driver problem), it says why
    in a warning and returns numpy. An explicit "cupy" that cannot start raises BackendError saying why.
    """
    name = (name or os.environ.get("VOTIVE_BACKEND") or "auto").lower()
    if name not in CHOICES:
        raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(CHOICES)}")
    if name == "auto":
        if not gpu_visible():
            return _import("numpy")
        try:
            return _import("cupy")
        except BackendError as err:
            import logging  # only here: a library load would otherwise import logging for this one warning

            logging.getLogger("votive").warning("votive: a GPU is present but the cupy backend cannot start (%s); "
                                                "using numpy", err)
            return _import("numpy")
    return _import(name)


def _import(name: str):
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as e:
        hint = " (pip install 'votive[gpu]' installs cupy for CUDA 12)" if name == "cupy" else ""
        raise BackendError(f"backend {name!r} is not available here: {e}{hint}") from None

"""Array backends: one module per array library, each exposing the same small op set.

`get_backend()` picks one by name ("numpy", "cupy") or, given none, from `VOTIVE_BACKEND`, else numpy. cupy is
imported only when asked for: its import and CUDA context cost a CPU function's cold start for nothing.
"""

from __future__ import annotations

import importlib
import os

from votive.errors import BackendError

BACKENDS = {"numpy": "votive.backends.numpy_backend", "cupy": "votive.backends.cupy_backend"}


def get_backend(name: str | None = None):
    """The backend module called `name` (default: $VOTIVE_BACKEND or "numpy")."""
    name = (name or os.environ.get("VOTIVE_BACKEND") or "numpy").lower()
    if name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}")
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as e:
        raise BackendError(f"backend {name!r} is not available here: {e}") from None

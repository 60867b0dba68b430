"""How many CPU cores this process may really use.

Lambda gives a function 1 to 6 vCPUs according to its memory size, and containers often cap CPU with a cgroup
quota while `os.cpu_count()` still reports the host's cores. Running more compute threads than the quota allows
makes them queue behind each other, so kernels and BLAS follow this number instead: the C kernels' pool is
sized by it when the library starts (`votive.quant.kernels`), and numpy's OpenBLAS is told it when the numpy
backend starts (`limit_blas_threads`). Importing votive changes no environment variable.
"""

from __future__ import annotations

import math
import os


def _cgroup_quota(path: str = "/sys/fs/cgroup/cpu.max") -> float | None:
    """cgroup v2 quota in cores ('max 100000' means none); v1 as a fallback."""
    try:
        with open(path) as fh:
            quota, period = fh.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as q, open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as p:
            quota_us, period_us = int(q.read()), int(p.read())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """Cores this process may run on: affinity mask, capped by any cgroup quota, at least 1."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        n = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        n = min(n, max(1, math.ceil(quota)))
    return max(1, n)


# Variables with which a user chooses the BLAS thread count; where one is set, votive leaves BLAS alone.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# OpenBLAS's setter and getter under the names its builds export: numpy 2's scipy-openblas (64-bit ints, then
# 32-bit), numpy 1's openblas64_, and a system OpenBLAS.
_OPENBLAS_NAMES = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                   ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                   ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                   ("openblas_set_num_threads", "openblas_get_num_threads"))


def limit_blas_threads(n: int | None = None, environ=os.environ, maps: str = "/proc/self/maps", *,
                       calls=None) -> int | None:
    """Set the thread count of the OpenBLAS this process has loaded (numpy's) to `n` (default
    `available_cpus()`), through OpenBLAS's own call: the environment is never changed. Does nothing where the
    user chose a count with one of `BLAS_THREAD_VARIABLES`, or where no OpenBLAS is loaded (import numpy first).
    `calls` is `openblas_calls()`'s answer when the caller has it already (found once, not twice).

    Returns:
        The count OpenBLAS reports afterwards, or None when it was left alone or not found.
    """
    if any(environ.get(name, "").strip() for name in BLAS_THREAD_VARIABLES):
        return None
    calls = calls if calls is not None else openblas_calls(maps)
    if calls is None:
        return None
    set_threads, get_threads = calls
    set_threads(n or available_cpus())
    return int(get_threads())


def openblas_calls(maps: str = "/proc/self/maps"):
    """(set_num_threads, get_num_threads) of the OpenBLAS this process has loaded, or None where none is: for
    `limit_blas_threads`, and for callers that change the count per call (`numpy_backend.linear`)."""
    library = _loaded_openblas(maps)
    for setter, getter in _OPENBLAS_NAMES:
        set_threads, get_threads = getattr(library, setter, None), getattr(library, getter, None)
        if set_threads is not None and get_threads is not None:
            return set_threads, get_threads
    return None


def _loaded_openblas(maps: str):
    """The OpenBLAS shared library mapped into this process, opened with ctypes (no new load), or None."""
    import ctypes

    try:
        with open(maps) as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.rsplit("/", 1)[-1].lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            return ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
        except OSError:
            continue
    return None

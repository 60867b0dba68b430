"""How many CPU cores this process may really use.

Lambda gives a function 1 to 6 vCPUs according to its memory size, and containers often cap CPU with a cgroup
quota while `os.cpu_count()` still reports the host's cores. Running more compute threads than the quota allows
makes them queue behind each other, so kernels and BLAS follow this number instead.
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


def configure_blas_threads() -> int:
    """Set the BLAS/OpenMP thread count from available_cpus() unless the user already chose one.

    Only effective before numpy is first imported (OpenBLAS reads these at load), which is why
    `votive/__init__.py` calls it first thing. Returns the count in force.
    """
    n = available_cpus()
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    return int(os.environ["OPENBLAS_NUM_THREADS"])

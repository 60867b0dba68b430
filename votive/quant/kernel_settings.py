"""The C library's entries that are not kernels: its ABI version, the kernel build (ISA) and int8 dot products in
use, the thread count, how long idle workers spin, and the GGML types the quantized kernels take; and the
thread and spin settings' defaults from the environment.

`LibrarySettings` binds these entries (the `SETTINGS` table) and is the base of
`votive.quant.kernels.KernelLibrary`, whose methods are the kernels themselves.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from votive.errors import KernelError
from votive.quant.cpus import available_cpus
from votive.quant.kernel_args import VT_OK

THREADS_ENV = "VOTIVE_NUM_THREADS"
SPIN_ENV = "VOTIVE_SPIN_US"
MAX_SPIN_US = 100_000  # the cap in csrc/threadpool.c

_INT, _I64, _STR = ctypes.c_int, ctypes.c_int64, ctypes.c_char_p

# C entry (csrc/votive.h) -> (its parameters as ctypes types, its return type).
SETTINGS: dict[str, tuple[tuple, type | None]] = {
    "vt_abi_version": ((), _INT),
    "vt_isa": ((), _STR),
    "vt_isa_supported": ((_STR,), _INT),
    "vt_set_isa": ((_STR,), _INT),
    "vt_set_num_threads": ((_INT,), None),
    "vt_num_threads": ((), _INT),
    "vt_set_spin_us": ((_I64,), None),
    "vt_spin_us": ((), _I64),
    "vt_qmatmul_supports": ((_INT,), _INT),
    "vt_get_rows_supports": ((_INT,), _INT),
    "vt_quant_isa": ((), _STR),
    "vt_set_quant_isa": ((_STR,), _INT),
}


class LibrarySettings:
    """The settings of an opened libvotive (a ctypes CDLL), with their SETTINGS entries typed."""

    def __init__(self, cdll):
        self._lib = cdll
        for name, (argtypes, restype) in SETTINGS.items():
            fn = getattr(cdll, name)
            fn.argtypes, fn.restype = argtypes, restype

    @property
    def abi_version(self) -> int:
        return self._lib.vt_abi_version()

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
        if self._lib.vt_set_isa(str(name).encode()) != VT_OK:
            raise KernelError(f"set_isa: {name!r} is not available here; choose one of {self.supported_isas()}")

    @property
    def quant_isa(self) -> str:
        """The int8 dot-product instructions of the quantized kernels: e.g. 'avx2', 'avx2+vnni', 'neon+dotprod'."""
        return self._lib.vt_quant_isa().decode()

    def set_quant_isa(self, name: str) -> None:
        """Use the named int8 dot-product instructions (the ISA's own name for its base ones; tests compare them)."""
        if self._lib.vt_set_quant_isa(str(name).encode()) != VT_OK:
            raise KernelError(f"set_quant_isa: {name!r} is not available with the {self.isa} kernels on this CPU")

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

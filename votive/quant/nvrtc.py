"""NVRTC, NVIDIA's runtime CUDA compiler, through ctypes: CUDA C++ source in, cubin or PTX out, no GPU needed.

votive compiles its CUDA kernels ahead of time (`votive.quant.cuda_kernels`), typically while a container image
is built on a machine without a GPU. NVRTC is a plain shared library that needs no driver and no device, so it is
called directly here rather than through cupy (which wants a GPU to import its compiler paths) or cuda-python.

Where the library is looked for, first match wins (`find_library`):

    1. $VOTIVE_NVRTC, a path to libnvrtc.so.*;
    2. the dynamic loader's search path: libnvrtc.so.12, then .13 (a CUDA runtime image, /usr/local/cuda);
    3. the NVIDIA pip wheels: nvidia-cuda-nvrtc-cu12 (nvidia/cuda_nvrtc/lib), then CUDA 13's (nvidia/cu13/lib).

CUDA 12 comes first because the GPU image runs cupy-cuda12x: cubins from the same major version load on every
driver that runs it.

Example:
    >>> nv = load()                                                          # doctest: +SKIP
    >>> nv.version
    (12, 9)
    >>> cubin = nv.compile('extern "C" __global__ void k() {}', "k.cu", arch="sm_80")   # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path

from votive.errors import KernelError

ENV_LIBRARY = "VOTIVE_NVRTC"
SONAMES = ("libnvrtc.so.12", "libnvrtc.so.13")
# (pip wheel's package directory under site-packages/nvidia, library file), in order of preference.
WHEEL_LIBRARIES = (("cuda_nvrtc/lib", "libnvrtc.so.12"), ("cu13/lib", "libnvrtc.so.13"))

_SUCCESS = 0


@dataclass(frozen=True)
class Program:
    """What one compilation produced."""

    binary: bytes  # the cubin (arch "sm_XY") or the PTX text, NUL-free (arch "compute_XY")
    log: str  # the compiler's warnings, often empty


class NVRTC:
    """One loaded libnvrtc: `compile` and the version and architectures it supports."""

    def __init__(self, path: str):
        try:
            self._lib = ctypes.CDLL(path)
        except OSError as err:
            raise KernelError(f"cannot load NVRTC from {path}: {err}") from None
        self.path = path
        lib = self._lib
        for name, args in (
            ("nvrtcVersion", [ctypes.POINTER(ctypes.c_int)] * 2),
            ("nvrtcCreateProgram", [ctypes.POINTER(ctypes.c_void_p), ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int,
                                    ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p)]),
            ("nvrtcCompileProgram", [ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_char_p)]),
            ("nvrtcGetProgramLogSize", [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]),
            ("nvrtcGetProgramLog", [ctypes.c_void_p, ctypes.c_char_p]),
            ("nvrtcGetCUBINSize", [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]),
            ("nvrtcGetCUBIN", [ctypes.c_void_p, ctypes.c_char_p]),
            ("nvrtcGetPTXSize", [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)]),
            ("nvrtcGetPTX", [ctypes.c_void_p, ctypes.c_char_p]),
            ("nvrtcDestroyProgram", [ctypes.POINTER(ctypes.c_void_p)]),
            ("nvrtcGetNumSupportedArchs", [ctypes.POINTER(ctypes.c_int)]),
            ("nvrtcGetSupportedArchs", [ctypes.POINTER(ctypes.c_int)]),
        ):
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, ctypes.c_int
        lib.nvrtcGetErrorString.argtypes, lib.nvrtcGetErrorString.restype = [ctypes.c_int], ctypes.c_char_p
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._check(lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)), "nvrtcVersion")
        self.version = (major.value, minor.value)

    def supported_archs(self) -> list[int]:
        """The SM versions this NVRTC compiles for, e.g. [75, 80, 86, 87, 89, 90, ...]."""
        n = ctypes.c_int()
        self._check(self._lib.nvrtcGetNumSupportedArchs(ctypes.byref(n)), "nvrtcGetNumSupportedArchs")
        archs = (ctypes.c_int * n.value)()
        self._check(self._lib.nvrtcGetSupportedArchs(archs), "nvrtcGetSupportedArchs")
        return list(archs)

    def compile(self, source: str, name: str, *, arch: str, headers: dict[str, str] | None = None,
                options: tuple[str, ...] = ()) -> Program:
        """Compile CUDA C++ `source` for one target.

        Args:
            source: the .cu text.
            name: its file name, used in diagnostics.
            arch: "sm_XY" for a cubin of that GPU architecture, "compute_XY" for PTX that any later GPU's driver
                can compile.
            headers: file name -> text of the headers the source #includes (NVRTC reads no files itself).
            options: further NVRTC options, e.g. ("-DNDEBUG",).

        Returns:
            A Program: the binary and the compiler log.

        Raises:
            KernelError: the source does not compile (the message holds NVRTC's log), or NVRTC failed.
        """
        headers = headers or {}
        names = (ctypes.c_char_p * len(headers))(*(k.encode() for k in headers))
        texts = (ctypes.c_char_p * len(headers))(*(v.encode() for v in headers.values()))
        prog = ctypes.c_void_p()
        self._check(self._lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), len(headers),
                                                 texts, names), "nvrtcCreateProgram")
        try:
            opts = [f"--gpu-architecture={arch}", *options]
            argv = (ctypes.c_char_p * len(opts))(*(o.encode() for o in opts))
            status = self._lib.nvrtcCompileProgram(prog, len(opts), argv)
            log = self._log(prog)
            if status != _SUCCESS:
                raise KernelError(f"NVRTC {self.version[0]}.{self.version[1]} cannot compile {name} for {arch} "
                                  f"({self._error(status)}):\n{log.strip()}")
            if arch.startswith("sm_"):
                binary = self._read(prog, self._lib.nvrtcGetCUBINSize, self._lib.nvrtcGetCUBIN, "nvrtcGetCUBIN")
            else:
                binary = self._read(prog, self._lib.nvrtcGetPTXSize, self._lib.nvrtcGetPTX, "nvrtcGetPTX")
                binary = binary.rstrip(b"\0")
            return Program(binary, log)
        finally:
            self._lib.nvrtcDestroyProgram(ctypes.byref(prog))

    def _log(self, prog) -> str:
        size = ctypes.c_size_t()
        self._check(self._lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size)), "nvrtcGetProgramLogSize")
        buf = ctypes.create_string_buffer(size.value)
        self._check(self._lib.nvrtcGetProgramLog(prog, buf), "nvrtcGetProgramLog")
        return buf.value.decode(errors="replace")

    def _read(self, prog, size_fn, read_fn, what: str) -> bytes:
        size = ctypes.c_size_t()
        self._check(size_fn(prog, ctypes.byref(size)), what + "Size")
        buf = ctypes.create_string_buffer(size.value)
        self._check(read_fn(prog, buf), what)
        return buf.raw

    def _error(self, status: int) -> str:
        return self._lib.nvrtcGetErrorString(status).decode()

    def _check(self, status: int, call: str) -> None:
        if status != _SUCCESS:
            raise KernelError(f"{call} failed in {self.path}: {self._error(status)}")


def candidates(environ=os.environ) -> list[str]:
    """Every NVRTC library path or soname to try, in order of preference (see the module docstring)."""
    if environ.get(ENV_LIBRARY):
        return [environ[ENV_LIBRARY]]
    found = list(SONAMES)
    for sub, lib in WHEEL_LIBRARIES:  # CUDA 12's wheel before 13's, whichever site-packages holds them
        for site in _nvidia_package_dirs():
            if (site / sub / lib).is_file():
                found.append(str(site / sub / lib))
    return found


def load(environ=os.environ) -> NVRTC:
    """The first NVRTC that loads; KernelError naming every place tried when none does."""
    tried = []
    for path in candidates(environ):
        try:
            return NVRTC(path)
        except KernelError as err:
            tried.append(str(err))
    raise KernelError("no NVRTC library found; install it with `pip install nvidia-cuda-nvrtc-cu12` (no GPU "
                      f"needed), or point ${ENV_LIBRARY} at a libnvrtc.so. Tried: " + "; ".join(tried))


def load_all(environ=os.environ) -> list[NVRTC]:
    """Every distinct NVRTC found (by version), for tests that compile with each."""
    seen, out = set(), []
    for path in candidates(environ):
        try:
            nv = NVRTC(path)
        except KernelError:
            continue
        if nv.version not in seen:
            seen.add(nv.version)
            out.append(nv)
    return out


def _nvidia_package_dirs() -> list[Path]:
    """site-packages/nvidia of every path entry: where NVIDIA's pip wheels put their libraries. Found without
    importing anything (the `nvidia` namespace package has no code worth running)."""
    import sys

    dirs = []
    for entry in sys.path:
        candidate = Path(entry or ".") / "nvidia"
        if candidate.is_dir() and candidate not in dirs:
            dirs.append(candidate)
    return dirs

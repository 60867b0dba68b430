"""Run votive's CUDA kernels on the CPU: each .cu module compiled by g++ against cuda_emu/cuda_emu.h.

`EmulatedKernels` has the interface of `votive.quant.cuda_kernels.CupyKernels` (`function(name)` returning a
callable `fn(grid, block, args)` as cupy's RawKernel takes them), over numpy arrays instead of cupy ones, so the
same backend code (`votive.backends.cuda_ops.CudaOps`) runs here with numpy standing in for cupy. It is slow
(every GPU thread is a fiber) and only for tests; x86-64 Linux with g++.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np

from votive.quant import cuda_kernels

EMU_DIR = Path(__file__).resolve().parent / "cuda_emu"
CXXFLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-ffp-contract=off", "-fno-strict-aliasing")


def available() -> str | None:
    """None when the emulator can run here, else the reason it cannot."""
    if platform.machine() != "x86_64" or platform.system() != "Linux":
        return f"the CUDA emulator's launch path is x86-64 Linux only (this is {platform.system()} {platform.machine()})"
    if shutil.which("g++") is None:
        return "the CUDA emulator needs g++"
    return None


def build_module(module: str, out_dir: Path) -> Path:
    """Compile cusrc/<module>.cu with the emulator into out_dir (reused while the sources are unchanged)."""
    spec = cuda_kernels.MODULES[module]
    sources = [EMU_DIR / "cuda_emu.h", EMU_DIR / "runtime.cpp", cuda_kernels.SOURCE_DIR / spec.source,
               *(cuda_kernels.SOURCE_DIR / h for h in cuda_kernels.HEADERS)]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources) + " ".join(CXXFLAGS).encode()).hexdigest()
    lib = Path(out_dir) / f"emu-{module}-{digest[:16]}.so"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        tmp = lib.with_name(f".{lib.name}.{os.getpid()}.tmp")
        cmd = ["g++", *CXXFLAGS, "-include", str(EMU_DIR / "cuda_emu.h"), "-I", str(cuda_kernels.SOURCE_DIR),
               "-x", "c++", str(cuda_kernels.SOURCE_DIR / spec.source), "-x", "c++", str(EMU_DIR / "runtime.cpp"),
               "-o", str(tmp)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"g++ cannot build the emulated {module} module:\n{done.stderr}")
        tmp.replace(lib)
    return lib


class EmulatedKernel:
    """One kernel: call it as cupy's RawKernel, `fn(grid, block, args)`."""

    def __init__(self, lib, name: str):
        self.name = name
        self._lib = lib
        self._fn = ctypes.cast(getattr(lib, name), ctypes.c_void_p)

    def __call__(self, grid, block, args, shared_mem: int = 0):
        grid, block = (tuple(grid) + (1, 1))[:3], (tuple(block) + (1, 1))[:3]
        ints, floats = [], []
        for a in args:
            if isinstance(a, np.ndarray):
                ints.append(a.ctypes.data)
            elif isinstance(a, (np.floating, float)):
                floats.append(float(a))
            elif isinstance(a, (np.integer, int)):
                ints.append(int(a))
            else:
                raise TypeError(f"{self.name}: cannot pass a {type(a).__name__} to an emulated kernel")
        int_args = (ctypes.c_longlong * 16)(*[i - (1 << 64) if i >= 1 << 63 else i for i in ints])
        float_args = (ctypes.c_float * 8)(*floats)
        status = self._lib.emu_launch(self._fn, *grid, *block, int_args, len(ints), float_args, len(floats))
        if status:
            raise RuntimeError(f"{self.name}: {self._lib.emu_error().decode()}")


class EmulatedKernels:
    """Kernels by name, as `votive.quant.cuda_kernels.CupyKernels` gives them, running on the CPU."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self._libs: dict[str, ctypes.CDLL] = {}

    def function(self, name: str) -> EmulatedKernel:
        module = cuda_kernels.module_of(name)
        if module not in self._libs:
            lib = ctypes.CDLL(str(build_module(module, self.out_dir)))
            lib.emu_launch.restype = ctypes.c_int
            lib.emu_launch.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 6 + [
                ctypes.POINTER(ctypes.c_longlong), ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_int]
            lib.emu_error.restype = ctypes.c_char_p
            self._libs[module] = lib
        return EmulatedKernel(self._libs[module], name)

"""Where the CUDA code runs in the tests: the CPU emulator, or a real GPU through cupy.

`make_ops("emu", ...)` is `CudaOps` over numpy with the kernels compiled by g++ against tests/cuda_emu (see
tests/cuda_emulator.py); `make_ops("cuda", ...)` is the real thing, with the kernels compiled ahead of time by
NVRTC into a temporary cache and loaded from there (never compiled at load). Each skips, saying why, where it
cannot run. The `cuda_ops` fixture in conftest.py runs a test once on each; the GPU one carries the `gpu` mark.
"""

from __future__ import annotations

import numpy as np
import pytest

from votive.backends.cuda_ops import CudaOps


def make_ops(kind: str, config, tmp_path_factory) -> CudaOps:
    if kind == "emu":
        import cuda_emulator

        reason = cuda_emulator.available()
        if reason:
            pytest.skip(reason)
        cache = getattr(config, "cache", None)  # None under -p no:cacheprovider
        folder = cache.mkdir("cuda_emu") if cache is not None else tmp_path_factory.mktemp("cuda_emu")
        return CudaOps(np, cuda_emulator.EmulatedKernels(folder))
    return CudaOps(*gpu_and_kernels(tmp_path_factory))


def gpu_and_kernels(tmp_path_factory):
    """(cupy, CupyKernels over a fresh ahead-of-time build for this GPU), or a skip saying what is missing."""
    cupy = pytest.importorskip("cupy", reason="the GPU tests need cupy (pip install 'votive[gpu]')")
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:
        pytest.skip(f"cupy finds no CUDA device: {err}")
    if devices < 1:
        pytest.skip("cupy finds no CUDA device")
    from votive.quant import cuda_kernels, nvrtc

    capability = int(cupy.cuda.Device().compute_capability)
    nv = nvrtc.load()
    archs = (capability,) if capability in nv.supported_archs() else ()  # else the PTX alone
    out = tmp_path_factory.mktemp("cuda-kernels")
    cuda_kernels.build(out, archs, nv=nv)
    return cupy, cuda_kernels.CupyKernels(dirs=[out], compile_missing=False)

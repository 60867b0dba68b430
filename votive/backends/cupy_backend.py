"""The GPU backend: the op set (`votive.backends.ops.OpSet`) on an NVIDIA GPU, with cupy arrays and votive's CUDA
kernels.

Importing this module imports cupy and checks that a CUDA device answers (BackendError otherwise). The ops are
`votive.backends.cuda_ops.CudaOps`; the kernels are loaded on first use from the ahead-of-time cache that
`python -m votive.quant.cuda_kernels build` fills (see votive.quant.cuda_kernels), so a cold start does not
compile them.
"""

from __future__ import annotations

import cupy

from votive.backends.cuda_ops import CudaOps
from votive.errors import BackendError
from votive.quant.cuda_kernels import CupyKernels

try:
    _devices = cupy.cuda.runtime.getDeviceCount()
except Exception as err:  # cupy's CUDARuntimeError: no driver, or a driver older than cupy's CUDA
    raise BackendError(f"cupy is installed but CUDA does not answer: {err}") from None
if _devices < 1:
    raise BackendError("cupy is installed but sees no CUDA device")

_ops = CudaOps(cupy, CupyKernels())
kernels = _ops.kernels  # where each module was loaded from: kernels.loaded_from

name = _ops.name
float32 = cupy.float32
int64 = cupy.int64

asarray = _ops.asarray
to_numpy = _ops.to_numpy
empty = _ops.empty
concatenate = _ops.concatenate
linear = _ops.linear
matmul = _ops.matmul
make_linear = _ops.make_linear
embedding = _ops.embedding
layer_norm = _ops.layer_norm
softmax = _ops.softmax
gelu = _ops.gelu
l2_normalize = _ops.l2_normalize
masked_mean = _ops.masked_mean
masked_max = _ops.masked_max
rms_norm = _ops.rms_norm
swiglu = _ops.swiglu
geglu = _ops.geglu
rope_table = _ops.rope_table
rope = _ops.rope
kv_cache = _ops.kv_cache
causal_attention = _ops.causal_attention

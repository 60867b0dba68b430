"""Linear layers over GGUF weights, quantized or not: the drop-in `linear` a decoder is built with on the CPU
(the contract: `votive.backends.ops.Linear`; the GPU's are in votive.backends.cuda_linears).

`QuantLinear` keeps the weight as the file stores it (GGML blocks, memory-mapped) and multiplies through the C
kernels, which read the blocks directly. Where the compiled library is missing, or lacks a format, the numpy
path dequantizes a band of rows at a time into a scratch buffer, so the weight is never expanded whole.
`HalfLinear` keeps a GGUF file's F16 or BF16 weight as stored too, and multiplies it as llama.cpp's CPU backend
does (x rounded to the weight's type, ggml's summation orders: `votive.quant.kernels.half_matmul`, C or its twin).
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("votive")

# Rows dequantized per step on the numpy path: bounds the scratch buffer (rows x cols float32).
_BAND_ROWS = 1024


class DenseLinear:
    """y = x @ W.T for a float weight (F32 view, or a Hugging Face checkpoint's F16/BF16 widened once)."""

    def __init__(self, weight: np.ndarray, name: str = ""):
        self.weight = weight  # (out, in) float32
        self.name = name
        self.out_features, self.in_features = weight.shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight.T  # (n, out)

    def rows(self, ids) -> np.ndarray:
        """Embedding lookup: rows `ids` of the weight as float32 (n, in)."""
        return np.array(self.weight[ids], dtype=np.float32)


class HalfLinear:
    """y = x @ W.T for W stored as F16 or BF16 in a GGUF file, kept as stored (zero-copy, half the bytes of floats)
    and multiplied in llama.cpp's arithmetic: x rounded to the weight's type, each output summed in the lane order
    of ggml's CPU kernels (`votive.quant.kernels.half_matmul`), so the file gives llama.cpp's logits bit for bit."""

    def __init__(self, weight: np.ndarray, ggml_type, name: str = ""):
        self.weight = weight  # (out, in) float16, or BF16 bits as uint16
        self.ggml_type = ggml_type
        self.name = name
        self.out_features, self.in_features = weight.shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from votive.quant import kernels

        x = np.ascontiguousarray(x, dtype=np.float32)  # (n, in)
        return kernels.half_matmul(self.weight, self.ggml_type, x, self.out_features, self.in_features)  # (n, out)

    def rows(self, ids) -> np.ndarray:
        """Embedding lookup: rows `ids` widened to float32 (n, in), exactly."""
        from votive.quant import kernels

        return kernels.get_rows(self.weight, self.ggml_type, np.asarray(ids, np.int64), self.in_features)


class QuantLinear:
    """y = x @ W.T for W held as GGML blocks (uint8 (out, bytes_per_row), zero-copy over the file)."""

    def __init__(self, blocks: np.ndarray, ggml_type: int, shape: tuple[int, int], name: str = ""):
        from votive.quant import kernels

        self.blocks = blocks
        self.ggml_type = ggml_type
        self.out_features, self.in_features = shape
        self.name = name
        self._fast = kernels.supports(ggml_type)
        # The C product with the weight's layout checked once, here: a decoder calls it ~200 times per token.
        self._matrix = kernels.get().matrix(blocks, ggml_type, *shape) if self._fast else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)  # (n, in)
        if self._matrix is not None:
            return self._matrix(x)  # (n, out)
        out = np.empty((x.shape[0], self.out_features), np.float32)  # (n, out)
        for start in range(0, self.out_features, _BAND_ROWS):
            band = self._dequantize(slice(start, start + _BAND_ROWS))  # (band, in)
            np.matmul(x, band.T, out=out[:, start : start + band.shape[0]])
        return out

    def rows(self, ids) -> np.ndarray:
        """Embedding lookup: dequantize only rows `ids` -> float32 (n, in)."""
        ids = np.asarray(ids, np.int64)
        if self._fast:
            from votive.quant import kernels

            return kernels.get_rows(self.blocks, self.ggml_type, ids, self.in_features)
        return self._dequantize(ids)

    def _dequantize(self, rows) -> np.ndarray:
        from votive.quant.codecs import dequantize

        return dequantize(self.blocks[rows], self.ggml_type).reshape(-1, self.in_features)


def make_linear(gguf, name: str):
    """The right linear for tensor `name` of an open GGUF file: dense for F32, half for F16 and BF16, quantized
    otherwise. A Hugging Face checkpoint's F16 / BF16 matrices (`gguf` a models.hf_checkpoint.HFWeights) are widened
    to float32 once instead: the reference there is transformers, which multiplies float32 activations."""
    from votive.formats.gguf import GGMLType, GGUFFile

    info = gguf.tensors[name]
    if info.ggml_type == GGMLType.F32:
        return DenseLinear(gguf[name], name)
    if info.ggml_type in (GGMLType.F16, GGMLType.BF16) and isinstance(gguf, GGUFFile):
        return HalfLinear(gguf[name], info.ggml_type, name)
    if info.ggml_type in (GGMLType.F16, GGMLType.BF16):
        from votive.quant.codecs import dequantize

        return DenseLinear(dequantize(gguf[name], info.ggml_type).reshape(info.shape), name)
    return QuantLinear(gguf[name], info.ggml_type, info.shape, name)


class FusedLinears:
    """Several linears that multiply the same x, as one call returning each product: `q, k, v = qkv(x)`.

    With the C library the input is quantized once and all the rows go to the threads as one job (one
    Python-to-C crossing instead of three). Another backend's linears may offer the same through a classmethod
    `fused(linears)` returning such a callable, or None (`votive.backends.ops.FusableLinear`; the GPU's: one kernel
    launch instead of three).
    Otherwise each linear runs on its own.
    """

    def __init__(self, linears: list):
        self.linears = linears
        self._group = None
        self._fused = None  # a backend's own fused product, taking x as that backend's array
        if all(isinstance(lin, QuantLinear) and lin._matrix is not None for lin in linears):
            from votive.quant import kernels

            weights = [(lin.blocks, lin.ggml_type, lin.out_features) for lin in linears]
            self._group = kernels.get().group(weights, linears[0].in_features)
        elif hasattr(type(linears[0]), "fused") and all(type(lin) is type(linears[0]) for lin in linears):
            self._fused = type(linears[0]).fused(linears)

    def __call__(self, x: np.ndarray) -> tuple:
        if self._group is not None:
            return tuple(self._group(np.ascontiguousarray(x, dtype=np.float32)))
        if self._fused is not None:
            return tuple(self._fused(x))
        return tuple(lin(x) for lin in self.linears)

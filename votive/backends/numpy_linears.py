"""Linear layers over GGUF weights, quantized or not: the drop-in `linear` a decoder is built with on the CPU
(the contract: `votive.backends.ops.Linear`; the GPU's are in votive.backends.cuda_linears).

`QuantLinear` keeps the weight as the file stores it (GGML blocks, memory-mapped) and multiplies through the C
kernels, which read the blocks directly. Where the compiled library is missing, or lacks a format, the numpy
path dequantizes a band of rows at a time into a scratch buffer, so the weight is never expanded whole.
`HalfLinear` keeps a GGUF file's F16 or BF16 weight as stored too, and multiplies it as llama.cpp's CPU backend
does (x rounded to the weight's type, ggml's summation orders: `votive.quant.kernels.half_matmul`, C or its twin).
"""

from __future__ import annotations

import numpy as np

# Rows dequantized per step on the numpy path: bounds the scratch buffer (rows x cols float32).
_BAND_ROWS = 1024


class DenseLinear:
    """y = x @ W.T for a float weight (F32 view, or a Hugging Face checkpoint's F16/BF16 widened once)."""

    def __init__(self, weight: np.ndarray, name: str = ""):
        self.weight = weight  # (out, in) float32
        self.name = name
        self.out_features, self.in_features = weight.shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        # numpy's BLAS, not votive's vt_linear: a decoder's F32 GGUF is compared with llama.cpp's F32 path, which
        # BLAS's order happens to track closer (within 1e-5 of the logits on the random-weight files; vt_linear's
        # one-accumulator order drifts to 1.5e-5 through their layers)
        return x @ self.weight.T  # (n, out)

    def rows(self, ids) -> np.ndarray:
        """Embedding lookup: rows `ids` of the weight as float32 (n, in)."""
        return np.array(self.weight[ids], dtype=np.float32)


class DensePanels:
    """y = x @ W.T for an encoder's float matrix held as the panels csrc/dense_kernels.c reads (vt_pack_panels: 64
    rows of W transposed a panel), so that no call packs it again. Each output is the number `kernels.linear` gives
    for the matrix as stored, to the bit: one chain of multiply-adds over the inputs in order.

    `make` packs a matrix at load (MiniLM's 43 MB: ~35 ms with the new pages' faults) and lets the stored one go
    (`release`: a memory-mapped checkpoint's pages of it leave memory); `stored` reads panels a converted folder
    holds (`votive convert --type panels`), in place: nothing computed or copied at load. Without the C library
    `make` returns the matrix unchanged (numpy's BLAS then multiplies it)."""

    PANEL = 64  # rows of W a panel (csrc/vt_internal.h VT_PANEL)

    def __init__(self, panels: np.ndarray, shape: tuple[int, int], name: str, lib):
        self.panels = panels  # (ceil(out / 64) * 64 * in,) float32 C-contiguous
        self.out_features, self.in_features = shape
        self.name = name
        self._lib = lib
        self._entry = lib.panel_entry("vt_linear_panels")

    @classmethod
    def make(cls, weight: np.ndarray, name: str = "", lib=None, release=None):
        """weight (out, in); lib: the KernelLibrary to run on (tests pass a fresh build), None: the default one;
        release: called once the panels are made (the stored weight's pages may then go)."""
        from votive.quant import kernels
        from votive.quant.kernel_args import data_address, refusal

        lib = lib or kernels.get()
        if lib is None:
            return weight
        w = np.ascontiguousarray(weight, np.float32)
        n, k = w.shape
        panels = _aligned_floats(cls.panel_floats(n, k))
        status = lib.panel_entry("vt_pack_panels")(data_address(panels), data_address(w), n, k)
        if status != 0:
            raise refusal("vt_pack_panels", status)
        if release is not None:
            release()
        return cls(panels, (n, k), name, lib)

    @classmethod
    def stored(cls, panels: np.ndarray, shape: tuple[int, int], name: str = "", lib=None):
        """The linear of a weight of `shape` (out, in) from its panels as `make` lays them out (float32, any shape
        holding panel_floats(out, in) elements, C-contiguous), read in place; without the C library the matrix
        itself, unpacked (numpy's BLAS then multiplies it, as it does a float folder's)."""
        from votive.quant import kernels

        lib = lib or kernels.get()
        flat = np.ascontiguousarray(panels, np.float32).reshape(-1)
        if lib is None:
            n, k = shape
            return flat.reshape(-1, k, cls.PANEL).transpose(0, 2, 1).reshape(-1, k)[:n].copy()
        return cls(flat, shape, name, lib)

    @classmethod
    def panel_floats(cls, n: int, k: int) -> int:
        """Floats of the panels of an (n, k) matrix: n rounded up to whole panels, by k."""
        return -(-n // cls.PANEL) * cls.PANEL * k


    @classmethod
    def concatenate(cls, linears: list):
        """The linears' rows stacked as one (an encoder's q, k and v: one product), each output the same number as
        its own linear's; None unless all are DensePanels of one width, each of whole panels."""
        if not all(isinstance(lin, cls) for lin in linears) or len({lin.in_features for lin in linears}) != 1 or \
                any(lin.out_features % cls.PANEL for lin in linears):
            return None
        panels = _aligned_floats(sum(lin.panels.size for lin in linears))
        np.concatenate([lin.panels for lin in linears], out=panels)
        return cls(panels, (sum(lin.out_features for lin in linears), linears[0].in_features),
                   "+".join(lin.name for lin in linears), linears[0]._lib)

    def __call__(self, x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
        from votive.errors import KernelError
        from votive.quant.kernel_args import data_address, refusal

        x = np.ascontiguousarray(x, dtype=np.float32)
        lead = x.shape[:-1]
        x = x.reshape(-1, self.in_features) if x.ndim and x.shape[-1] == self.in_features else x
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise KernelError(f"linear {self.name}: x must be (..., {self.in_features}), found {x.shape}")
        if bias is not None:
            bias = np.ascontiguousarray(bias, np.float32)
            if bias.shape != (self.out_features,):
                raise KernelError(f"linear {self.name}: bias must be ({self.out_features},), found {bias.shape}")
        y = np.empty((x.shape[0], self.out_features), np.float32)  # (n, out)
        status = self._entry(data_address(y), data_address(x), data_address(self.panels),
                             None if bias is None else data_address(bias), x.shape[0], self.out_features,
                             self.in_features)
        if status != 0:
            raise refusal("vt_linear_panels", status)
        return y.reshape(*lead, self.out_features)


def _aligned_floats(n: int) -> np.ndarray:
    """An uninitialised float32 array of n elements starting on a 64-byte boundary (a cache line: a panel's vector
    loads never straddle two)."""
    raw = np.empty(n + 16, np.float32)
    skip = (-raw.ctypes.data % 64) // 4
    return raw[skip : skip + n]


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


class EncoderQ8Linear(QuantLinear):
    """A Q8_0 weight quantized at load for an encoder (votive.models.bert), multiplied by the tiled AVX512-VNNI
    product of csrc/encoder_q8.c: the same Q8_0 numbers as `QuantLinear` (the weight's blocks, the activations
    quantized to Q8_0 as ggml does), summed in another float order (relative differences ~1e-7); faster on a
    batch's hundreds of rows. The quants and scales are split out of the blocks once, here, into the layout the
    kernel reads, and the blocks let go (the weight is held once: 36 bytes per 32 weights, the blocks' 34 plus
    the offsets' float). `make` returns the QuantLinear unchanged where the kernel cannot run (no AVX512-VNNI, no C library,
    another type), so a GGUF file's decoders and llama.cpp-exact encoders never come here."""

    def __init__(self, lin: QuantLinear, entry):
        self.__dict__.update(lin.__dict__)
        nb = self.in_features // 32
        blocks = np.ascontiguousarray(lin.blocks).reshape(self.out_features, nb, 34)  # d (f16) then 32 int8
        self.scales = np.ascontiguousarray(blocks[:, :, :2]).view(np.float16).astype(np.float32).reshape(
            self.out_features, nb)  # (out, in / 32)
        self.quants = np.ascontiguousarray(blocks[:, :, 2:]).view(np.int8).reshape(self.out_features, -1)  # (out, in)
        # 128 * d * (sum of the block's quants): the kernel's activations are offset by 128 (unsigned for dpbusd)
        sums = self.quants.reshape(self.out_features, nb, 32).sum(axis=2, dtype=np.int32)  # (out, in / 32)
        self.offsets = (np.float32(128) * self.scales * sums.astype(np.float32)).astype(np.float32)
        self._entry = entry
        self.blocks = self._matrix = None  # the quants and scales above replace them

    @classmethod
    def concatenate(cls, linears: list):
        """The linears' rows stacked as one EncoderQ8Linear (an encoder's q, k and v: one product, one quantization
        of x), each output the same number as its own linear's; None unless all are EncoderQ8Linear of one width."""
        return _stacked(cls, linears, ("quants", "scales", "offsets"))

    def rows(self, ids) -> np.ndarray:
        """Rows `ids` dequantized -> float32 (n, in): d * q, as Q8_0's dequantization."""
        ids = np.asarray(ids, np.int64)
        q = self.quants[ids].reshape(ids.size, -1, 32).astype(np.float32)  # (n, in / 32, 32)
        return (q * self.scales[ids][:, :, None]).reshape(ids.size, self.in_features)

    @classmethod
    def make(cls, lin):
        from votive.formats.gguf import GGMLType

        if not (isinstance(lin, QuantLinear) and lin.ggml_type == GGMLType.Q8_0 and lin._matrix is not None):
            return lin
        entry = _vnni_entry("vt_eq8_matmul")
        return cls(lin, entry) if entry is not None else lin

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from votive.quant.kernel_args import data_address, refusal

        x = np.ascontiguousarray(x, dtype=np.float32)  # (n, in)
        y = np.empty((x.shape[0], self.out_features), np.float32)  # (n, out)
        status = self._entry(data_address(self.quants), data_address(self.scales), data_address(self.offsets),
                             self.out_features, self.in_features, data_address(x), x.shape[0], data_address(y))
        if status != 0:
            raise refusal("vt_eq8_matmul", status)
        return y


def _stacked(cls, linears: list, arrays: tuple):
    """The linears' rows as one linear of `cls` (their per-row `arrays` concatenated), or None unless all are of
    `cls` and one width: the encoders' q, k and v as one product."""
    if not all(type(lin) is cls for lin in linears) or len({lin.in_features for lin in linears}) != 1:
        return None
    fused = object.__new__(cls)
    fused.__dict__.update(linears[0].__dict__)
    fused.name = "+".join(lin.name for lin in linears)
    for attr in arrays:
        setattr(fused, attr, np.concatenate([getattr(lin, attr) for lin in linears]))
    fused.out_features = sum(lin.out_features for lin in linears)
    return fused


def _vnni_entry(name: str):
    """The C entry `name` of csrc/encoder_q8.c typed for ctypes (KernelLibrary.vnni_entry), or None without the
    library or AVX512-VNNI."""
    from votive.quant import kernels

    lib = kernels.get()
    return None if lib is None else lib.vnni_entry(name)


def encoder_q8_reference(blocks: np.ndarray, x: np.ndarray) -> np.ndarray:
    """The slow twin of EncoderQ8Linear (tests): x's rows quantized to Q8_0 as ggml does, each block's integer
    sum exact, times both scales, summed in float64. blocks: (out, in / 32 * 34) uint8 Q8_0; x (n, in)."""
    out = blocks.shape[0]
    b = np.ascontiguousarray(blocks).reshape(out, -1, 34)
    dw = np.ascontiguousarray(b[:, :, :2]).view(np.float16)[..., 0].astype(np.float64)  # (out, nb)
    qw = np.ascontiguousarray(b[:, :, 2:]).view(np.int8).astype(np.int64)  # (out, nb, 32)
    xb = np.asarray(x, np.float32).reshape(x.shape[0], -1, 32)  # (n, nb, 32)
    amax = np.abs(xb).max(axis=2)  # (n, nb)
    da = (amax / np.float32(127)).astype(np.float16)  # kept as half, as ggml's block_q8_0
    inv = np.where(amax != 0, np.float32(127) / np.where(amax != 0, amax, 1), np.float32(0)).astype(np.float32)
    qa = np.rint(xb * inv[..., None]).astype(np.int64)  # (n, nb, 32), ties to even as ggml's x86 code
    sums = np.einsum("rbk,obk->rob", qa, qw)  # (n, out, nb) exact integers
    return np.einsum("rob,ob,rb->ro", sums.astype(np.float64), dw, da.astype(np.float64))


class EncoderI8Linear:
    """y = x @ W.T for an encoder's float matrix quantized at load to int8 with one scale per row
    (`quantize="int8"`): s_w[n] = max|W[n]| / 127, q_w = round(W[n] / s_w[n]). Each call quantizes x's rows the
    same way and sums every output's products exactly in integers, then y[r][n] = s_x[r] * s_w[n] * sum: one
    conversion per output where Q8_0 pays one per 32 products, so the AVX512-VNNI kernel (csrc/encoder_q8.c,
    vt_i8_matmul) does four times the multiply-adds per instruction of a float product. Without that kernel the
    twin, `encoder_i8_reference`, gives the same bits. A row of x holding inf or NaN gives NaN outputs."""

    def __init__(self, weight: np.ndarray, name: str = ""):
        self.name = name
        self.out_features, self.in_features = weight.shape
        self._entry = _vnni_entry("vt_i8_matmul")
        if self._entry is not None:  # C quantizes and packs in one pass (numpy's way below: ~8x slower at load)
            self.scales, self.sums, self.packed = _pack_in_c(np.ascontiguousarray(weight, np.float32))
            return
        self.scales, quants = quantize_rows_i8(np.asarray(weight, np.float32))  # (out,), (out, in) int8
        self.sums = quants.sum(axis=1, dtype=np.int32)  # (out,): takes off the kernel's +128 offset of x
        self.packed = pack_i8(quants)  # the kernel's layout, the only copy of the quants kept

    @classmethod
    def from_packed(cls, shape: tuple[int, int], packed: np.ndarray, scales: np.ndarray, sums: np.ndarray,
                    name: str = "") -> "EncoderI8Linear":
        """The linear of a weight of `shape` (out, in) from its arrays as a model converted by `votive convert --type
        int8` stores them (`packed`, `scales`, `sums` of the EncoderI8Linear made of the float weight), read in
        place: a memory-mapped file's views are the weight, nothing is computed or copied at load."""
        lin = object.__new__(cls)
        lin.name, lin.packed, lin.scales, lin.sums = name, packed, scales, sums
        lin.out_features, lin.in_features = shape
        lin._entry = _vnni_entry("vt_i8_matmul")
        return lin

    @property
    def quants(self) -> np.ndarray:
        """The weight's quants (out, in) int8, from the packed layout (the twin and tests read them)."""
        return unpack_i8(self.packed, self.out_features, self.in_features)

    @classmethod
    def concatenate(cls, linears: list):
        """The linears' rows stacked as one (an encoder's q, k and v: one product, one quantization of x), each
        output the same number as its own linear's; None unless all are EncoderI8Linear of one width."""
        fused = _stacked(cls, linears, ("scales", "sums"))
        if fused is None:
            return None
        if all(lin.out_features % 16 == 0 for lin in linears):  # whole blocks of 16 rows: the packings stack
            fused.packed = np.concatenate([lin.packed for lin in linears])
        else:  # rows stacked, then packed afresh (a part's last block is not full)
            fused.packed = pack_i8(np.concatenate([lin.quants for lin in linears]))
        return fused

    def __call__(self, x: np.ndarray) -> np.ndarray:
        from votive.quant.kernel_args import data_address, refusal

        x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, self.in_features)  # (n, in)
        if self._entry is None:
            return encoder_i8_reference(self.quants, self.scales, x)
        y = np.empty((x.shape[0], self.out_features), np.float32)  # (n, out)
        status = self._entry(data_address(self.packed), data_address(self.scales), data_address(self.sums),
                             self.out_features, self.in_features, data_address(x), x.shape[0], None,
                             data_address(y))
        if status != 0:
            raise refusal("vt_i8_matmul", status)
        return y


def quantize_rows_i8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of float32 x (rows, cols) as scale max|row| / 127 and int8 round-to-nearest-even(row * (127 /
    max|row|)), in vt_i8_matmul's float32 arithmetic; a zero row: scale 0, a row holding inf or NaN: scale NaN."""
    with np.errstate(invalid="ignore", divide="ignore"):
        amax = np.abs(x).max(axis=1)  # (rows,) NaN where a NaN is, inf where an inf is
        finite = np.isfinite(amax)
        inv = np.where(finite & (amax != 0), np.float32(127) / np.where(amax != 0, amax, 1), 0).astype(np.float32)
        scales = np.where(finite, amax / np.float32(127), np.float32(np.nan)).astype(np.float32)
        quants = np.rint(np.where(finite[:, None], x, 0) * inv[:, None]).astype(np.int8)  # ties to even
    return scales, quants


def _pack_in_c(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """vt_i8_pack: the same scales, sums and packed quants as quantize_rows_i8 + pack_i8, from float32 w (out, in)."""
    from votive.quant.kernel_args import data_address, refusal

    out, k = w.shape
    packed = np.zeros((-(-out // 16), -(-k // 4), 16, 4), np.int8)
    scales, sums = np.empty(out, np.float32), np.empty(out, np.int32)
    status = _vnni_entry("vt_i8_pack")(data_address(w), out, k, data_address(packed), data_address(scales),
                                       data_address(sums))
    if status != 0:
        raise refusal("vt_i8_pack", status)
    return scales, sums, packed


def pack_i8(quants: np.ndarray) -> np.ndarray:
    """(out, in) int8 quants in vt_i8_matmul's layout: blocks of 16 rows (output columns), and in each, for every 4
    consecutive inputs, the 16 rows' 4 bytes (out / 16, in / 4, 16, 4), both padded with zero quants."""
    out, k = quants.shape
    padded = np.zeros((-(-out // 16) * 16, -(-k // 4) * 4), np.int8)
    padded[:out, :k] = quants
    return np.ascontiguousarray(padded.reshape(-1, 16, padded.shape[1] // 4, 4).transpose(0, 2, 1, 3))


def unpack_i8(packed: np.ndarray, out: int, k: int) -> np.ndarray:
    """`pack_i8`'s inverse: the (out, in) quants."""
    return packed.transpose(0, 2, 1, 3).reshape(packed.shape[0] * 16, -1)[:out, :k]


def encoder_i8_reference(quants: np.ndarray, scales: np.ndarray, x: np.ndarray) -> np.ndarray:
    """vt_i8_matmul's twin, bit for bit: x's rows quantized by `quantize_rows_i8`, each output's integer sum formed
    exactly (float64 products of integers, whose sums stay far below 2^53), rounded to float32 as the kernel
    converts it, times s_x * s_w. quants (out, in) int8, scales (out,), x (n, in) float32 -> (n, out)."""
    sx, qx = quantize_rows_i8(np.asarray(x, np.float32))
    sums = (qx.astype(np.float64) @ quants.T.astype(np.float64)).astype(np.float32)  # (n, out)
    return sums * (sx[:, None] * scales[None, :])


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

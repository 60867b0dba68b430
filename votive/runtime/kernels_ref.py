"""numpy twins of the C kernels in `votive.runtime.kernels`: the fallback when the library is missing, and
the reference the tests hold the C code to.

Each follows its C kernel's arithmetic (same formulas, float32 throughout) so the two paths agree to a few
float32 ulps and a model gives the same answers with or without a compiler at install time. They do not
check their arguments: `votive.runtime.kernels` does that before choosing a path.

The quantized twins (`qmatmul_ref`, `get_rows_ref`) are built on `votive.runtime.quants`: activations quantized
as ggml does, then its integer dot products; the C library's portable kernels agree with them bit for bit and
its SIMD kernels to float32 rounding of the sum over blocks.
"""

from __future__ import annotations

import numpy as np

# Q(a) = P(Z > a) = t exp(P(t) - a^2 / 2), t = 1 / (1 + 0.33 a): the fit from csrc/fit_normal_tail.py, also
# in csrc/simd.h (v_normal_tail), where its accuracy is discussed. GELU from it is within 4e-7 of the exact
# value on [-10, 10], about the float32 rounding of the result.
_TAIL_P = np.float32(0.33)
_TAIL_COEFS = tuple(
    np.float32(c)  # highest power first, for Horner
    for c in (0.15515317, -0.8422977, 1.7778286, -1.736531, 0.75670224, -0.33525887, 0.17446224, 0.38394272,
              1.0004648, -2.0276134)
)


def normal_tail_ref(a: np.ndarray) -> np.ndarray:
    """P(Z > a) for a standard normal Z, elementwise for float32 a >= 0 (erfc(a / sqrt 2) / 2)."""
    t = a * _TAIL_P
    t += 1
    np.reciprocal(t, out=t)  # (...,) t = 1 / (1 + p a)
    poly = np.full_like(a, _TAIL_COEFS[0])
    for c in _TAIL_COEFS[1:]:
        poly *= t
        poly += c
    poly -= np.float32(0.5) * a * a  # a*a is inf for huge a: exp(-inf) = 0, as in C
    np.exp(poly, out=poly)
    poly *= t
    return poly


def gelu_ref(x: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """Exact (erf) GELU of x + bias, in place on x (float32), as `torch.nn.functional.gelu(x + bias)`.

    GELU(x) = x Phi(x), Phi(x) = 1 - Q(x) for x >= 0 and Q(-x) below. gelu(-inf) is NaN, as in PyTorch.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if bias is not None:
            x += bias
        q = normal_tail_ref(np.abs(x))  # (...,) Q(|x|)
        np.subtract(1, q, out=q, where=~(x < 0))  # Phi(x); NaN lanes take 1 - NaN = NaN
        x *= q
    return x


def layer_norm_ref(x: np.ndarray, weight: np.ndarray | None, bias: np.ndarray | None, eps: float,
                   residual: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """LayerNorm over the last axis of x + residual (torch.nn.functional.layer_norm), float32.

    out may be x or residual (in place); a fresh array when None.
    """
    h = x + residual if residual is not None else x  # (..., d)
    mean = h.mean(axis=-1, keepdims=True, dtype=np.float32)  # (..., 1)
    centered = np.subtract(h, mean, out=out)  # (..., d), the output buffer from here on
    var = np.einsum("...i,...i->...", centered, centered)[..., None]  # (..., 1)
    var /= np.float32(x.shape[-1])
    var += np.float32(eps)
    np.sqrt(var, out=var)
    centered /= var
    if weight is not None:
        centered *= weight
    if bias is not None:
        centered += bias
    return centered


def softmax_ref(x: np.ndarray, mask: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
    """Softmax over the last axis of x * scale + mask, in place on x (float32); mask broadcasts against x.

    A row whose every entry is -inf comes out NaN, as in numpy and PyTorch.
    """
    with np.errstate(invalid="ignore"):
        if scale != 1.0:
            x *= np.float32(scale)
        if mask is not None:
            x += mask
        x -= x.max(axis=-1, keepdims=True)
        np.exp(x, out=x)
        x /= x.sum(axis=-1, keepdims=True)
    return x


# Weight rows per vec_dot call in qmatmul_ref: vec_dot holds int64 products of the rows it is given (8 bytes
# per weight), so a band bounds that scratch to 8 * _QMATMUL_BAND * cols bytes.
_QMATMUL_BAND = 256


def qmatmul_ref(blocks: np.ndarray, ggml_type: int, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x @ W.T as ggml computes it for W in GGML blocks: each row of x quantized to the format ggml pairs with
    `ggml_type` (quants.quantize_q8), then quants.vec_dot against every weight row.

    Args:
        blocks: uint8 (out_features, bytes_per_row), the weight as stored.
        ggml_type: GGML type id of the weight, one with a quantized dot product.
        x: float32 (n, in_features).
        out: optional float32 (n, out_features) to write.

    Returns:
        float32 (n, out_features).
    """
    from votive.runtime.quants import quantize_q8, vec_dot

    acts = quantize_q8(x, ggml_type)  # (n, activation bytes per row)
    if out is None:
        out = np.empty((x.shape[0], blocks.shape[0]), np.float32)  # (n, out_features)
    for start in range(0, blocks.shape[0], _QMATMUL_BAND):
        band = blocks[start : start + _QMATMUL_BAND]  # (band, bytes_per_row)
        for i, act in enumerate(acts):
            out[i, start : start + band.shape[0]] = vec_dot(band, act, ggml_type)
    return out


def get_rows_ref(blocks: np.ndarray, ggml_type: int, ids: np.ndarray) -> np.ndarray:
    """Rows `ids` of a GGML-stored matrix as float32 (len(ids), in_features): quants.dequantize of those rows."""
    from votive.runtime.quants import dequantize

    return dequantize(blocks[ids], ggml_type)

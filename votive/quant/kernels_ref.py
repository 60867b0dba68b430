"""numpy twins of the C kernels in `votive.quant.kernels`: the fallback when the library is missing, and
the reference the tests hold the C code to.

Each follows its C kernel's arithmetic (same formulas, float32 throughout) so the two paths agree to a few
float32 ulps and a model gives the same answers with or without a compiler at install time. They do not
check their arguments: `votive.quant.kernels` does that before choosing a path.

The quantized twins (`qmatmul_ref`, `get_rows_ref`) are built on `votive.quant.codecs`: activations quantized
as ggml does, then its integer dot products; the C library's portable kernels agree with them bit for bit and
its SIMD kernels to float32 rounding of the sum over blocks. The x86 kernels' K-quant products, which follow
llama.cpp's x86 summation orders instead, are held bit for bit to `votive.quant.llama_orders`.
"""

from __future__ import annotations

import functools

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


def linear_ref(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """x @ weight.T + bias (nn.Linear; weight (out, in)) by numpy's BLAS: vt_linear's twin, within float rounding
    of it (each output the same dot product, its terms summed in another order)."""
    y = x @ weight.T  # (..., out)
    if bias is not None:
        y += bias
    return y


def encoder_attention_ref(qkv: np.ndarray, offsets: np.ndarray, heads: int, scale: float) -> np.ndarray:
    """vt_encoder_attention's twin: per packed sequence (rows offsets[s] .. offsets[s + 1] - 1 of qkv, each row
    q | k | v of heads * dh) and head, softmax(q k^T * scale) v -> (rows, heads * dh)."""
    d = qkv.shape[1] // 3
    out = np.empty((qkv.shape[0], d), np.float32)
    for a, b in zip(offsets[:-1], offsets[1:]):
        if a == b:
            continue
        q, k, v = (qkv[a:b, i * d : (i + 1) * d].reshape(b - a, heads, -1).transpose(1, 0, 2) for i in range(3))
        scores = (q @ k.transpose(0, 2, 1)) * np.float32(scale)  # (heads, len, len)
        probs = np.exp(scores - scores.max(axis=-1, keepdims=True))
        probs /= probs.sum(axis=-1, keepdims=True)
        out[a:b] = (probs @ v).transpose(1, 0, 2).reshape(b - a, d)
    return out


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
    from votive.quant.codecs import quantize_q8, vec_dot

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
    from votive.quant.codecs import dequantize

    return dequantize(blocks[ids], ggml_type)


# ---- decoder rows in ggml's float order (csrc/decoder_kernels.c); fma32 is fmaf, rounded once.


def fma32(a, b, c) -> np.ndarray:
    """fmaf(a, b, c) elementwise on float32: a * b + c rounded once. The float64 product is exact; its sum with c
    may round, and then rounding to float32 would round twice where that sum lands on a midpoint between two
    floats: there the sum's exact error (TwoSum) says which side the true value is on."""
    a, b, c = (np.asarray(v, np.float32) for v in (a, b, c))
    with np.errstate(all="ignore"):  # inf and NaN pass through as fmaf gives them
        p = a.astype(np.float64) * b
        s = p + c
        t = s - p
        err = (p - (s - t)) + (c - t)  # s + err == p + c exactly
        r = s.astype(np.float32)
        other = np.nextafter(r, np.where(r.astype(np.float64) < s, np.float32(np.inf), np.float32(-np.inf)))
        midpoint = (r.astype(np.float64) + other) / 2 == s
        toward_other = np.sign(err) == np.sign(other.astype(np.float64) - r)
        return np.where(midpoint & (err != 0) & toward_other, other, r).astype(np.float32)


def rms_norm_ref(x: np.ndarray, weight: np.ndarray | None, eps: float) -> np.ndarray:
    """x / sqrt(mean(x^2) + eps) * weight: the float32 squares summed in float64, as ggml_compute_forward_rms_norm."""
    x = np.asarray(x, np.float32)
    mean = ((x * x).astype(np.float64).sum(axis=-1) / x.shape[-1]).astype(np.float32)  # (...)
    scale = np.float32(1.0) / np.sqrt(mean + np.float32(eps))
    y = x * scale[..., None]
    return y * weight if weight is not None else y


_EXP = {name: np.float32(float.fromhex(v)) for name, v in dict(
    shift="0x1.8p23", log2e="0x1.715476p+0", ln2_lo="0x1.7f7d1cp-20", ln2_hi="0x1.62e4p-1", p0="0x1.0e4020p-7",
    p1="0x1.573e2ep-5", p2="0x1.555e66p-3", p3="0x1.fffdb6p-2", p4="0x1.ffffecp-1").items()}


def ggml_exp_ref(x: np.ndarray) -> np.ndarray:
    """ggml_v_expf: 2^n * p(b), n = round(x / ln 2), b = x - n ln 2 in two parts, p of degree 5."""
    c = _EXP
    x = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        n = (fma32(x, c["log2e"], c["shift"]) - c["shift"]).astype(np.float32)
        b = fma32(-n, c["ln2_lo"], fma32(-n, c["ln2_hi"], x))
        u = b * b
        j = fma32(fma32(fma32(c["p0"], b, c["p1"]), u, fma32(c["p2"], b, c["p3"])), u, fma32(c["p4"], b, np.float32(1.0)))
        out = np.ldexp(j, np.nan_to_num(n).astype(np.int32)).astype(np.float32)
        out = np.where(np.abs(n) > 192, np.where(n <= 0, np.float32(0), np.float32(np.inf)), out)
    return np.where(np.isnan(x), x, out).astype(np.float32)


def swiglu_ref(gate: np.ndarray, up: np.ndarray) -> np.ndarray:
    """silu(gate) * up as ggml_vec_swiglu_f32: ggml's exp for whole groups of 16 per row, libm's for the tail."""
    gate = np.asarray(gate, np.float32)
    cols = gate.shape[-1]
    whole = cols - cols % 16
    e = np.empty_like(gate)
    e[..., :whole] = ggml_exp_ref(np.float32(0) - gate[..., :whole])
    with np.errstate(over="ignore"):  # exp past float32's range is inf, as libm's expf gives
        e[..., whole:] = np.exp(-gate[..., whole:].astype(np.float64)).astype(np.float32)
    return (gate / (np.float32(1) + e)) * up


def geglu_ref(gate: np.ndarray, up: np.ndarray, table: np.ndarray) -> np.ndarray:
    """gelu(gate) * up as ggml_vec_geglu_f32: GELU looked up in `table` (65536 floats, by the bits of gate rounded
    to half), gate itself from 10 up and 0 from -10 down. A new array."""
    gate = np.asarray(gate, np.float32)
    with np.errstate(over="ignore"):  # past half's range: inf's entry, replaced below (gate >= 10)
        out = np.asarray(table, np.float32)[gate.astype(np.float16).view(np.uint16)]
    out *= up
    if (np.abs(gate) >= 10).any():
        np.copyto(out, gate * up, where=gate >= 10)
        np.copyto(out, np.float32(0), where=gate <= -10)
    return out


@functools.cache
def _libm_float_functions() -> dict:
    """libm's float cosf, sinf, powf and logf through ctypes, the functions ggml (and the C kernel) call: glibc's
    are not all correctly rounded, so a twin computing them in double would differ from ggml by an ulp at times.
    Without a C libm (not a glibc or musl system), numpy's correctly rounded double results, rounded to float32.
    Opened on first use: a cold start that never runs the twin pays nothing for it (find_library alone runs
    ldconfig)."""
    import ctypes

    try:
        libm = ctypes.CDLL("libm.so.6")  # glibc's soname: found without a search
    except OSError:
        import ctypes.util

        path = ctypes.util.find_library("m")
        if path is None:
            return {}
        libm = ctypes.CDLL(path)
    funcs = {}
    for name, n_args in (("cosf", 1), ("sinf", 1), ("logf", 1), ("powf", 2)):
        f = getattr(libm, name)
        f.restype, f.argtypes = ctypes.c_float, [ctypes.c_float] * n_args
        funcs[name] = f
    return funcs


_NUMPY_LIBM = {"cosf": np.cos, "sinf": np.sin, "logf": np.log, "powf": np.power}


def libm_f32(name: str, *args) -> np.ndarray:
    """libm's float `name` (cosf, sinf, logf, powf) elementwise on float32 arrays or scalars."""
    args = np.broadcast_arrays(*(np.asarray(a, np.float32) for a in args))
    libm = _libm_float_functions()
    if name in libm:
        f = libm[name]
        flat = [a.ravel().tolist() for a in args]
        return np.array([f(*v) for v in zip(*flat)], np.float32).reshape(args[0].shape)
    return _NUMPY_LIBM[name](*(a.astype(np.float64) for a in args)).astype(np.float32)


def rope_yarn_ramp_ref(low: float, high: float, i0: int) -> np.float32:
    """ggml-cpu ops.cpp rope_yarn_ramp: 1 - clamp((i0 / 2 - low) / max(0.001, high - low), 0, 1), i0 / 2 an
    integer division, the rest float32."""
    low, high = np.float32(low), np.float32(high)
    r = (np.float32(i0 // 2) - low) / max(np.float32(0.001), np.float32(high - low))
    return np.float32(1) - min(np.float32(1), max(np.float32(0), r))


def rope_cache_ref(base: float, dims: int, n_positions: int, first: int = 0, freq_scale: float = 1.0,
                   freq_factors: np.ndarray | None = None, ext_factor: float = 0.0, attn_factor: float = 1.0,
                   corr_dims: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """(n_positions, dims): cos, sin interleaved, as ggml_rope_cache_init with rope_yarn makes them (the C
    kernel's comment gives the formulas). A loop over pairs, each vectorized over positions; libm's cosf, sinf,
    powf and logf (`libm_f32`), and fmaf where ggml's build fuses (fma32)."""
    f32 = np.float32
    theta_scale = libm_f32("powf", base, f32(-2.0) / f32(dims))[()]
    freq_scale, ext_factor = f32(freq_scale), f32(ext_factor)
    mscale = f32(attn_factor)
    if ext_factor != 0:
        mscale = mscale * fma32(f32(0.1), libm_f32("logf", f32(1) / freq_scale), f32(1))[()]
    theta = np.arange(first, first + n_positions, dtype=np.float32)  # (n,)
    out = np.empty((n_positions, dims), np.float32)
    for i in range(0, dims, 2):
        extrap = theta / (f32(freq_factors[i // 2]) if freq_factors is not None else f32(1))  # (n,)
        t = freq_scale * extrap  # (n,) interpolated angle
        if ext_factor != 0:
            ramp_mix = rope_yarn_ramp_ref(corr_dims[0], corr_dims[1], i) * ext_factor
            t = fma32(t, f32(1) - ramp_mix, extrap * ramp_mix)
        out[:, i] = libm_f32("cosf", t) * mscale
        out[:, i + 1] = libm_f32("sinf", t) * mscale
        theta = theta * theta_scale
    return out


def rope_ref(x: np.ndarray, cache: np.ndarray, neox: bool) -> np.ndarray:
    """x (n, heads, dims) rotated by cache rows (n, dims) with ggml's fused products; a new array."""
    x = np.asarray(x, np.float32)
    half = x.shape[-1] // 2
    cos, sin = cache[:, None, 0::2], cache[:, None, 1::2]  # (n, 1, dims/2)
    i0, i1 = (slice(0, half), slice(half, None)) if neox else (slice(0, None, 2), slice(1, None, 2))
    x0, x1 = x[..., i0], x[..., i1]
    out = np.empty_like(x)
    out[..., i0] = fma32(x0, cos, -(x1 * sin))
    out[..., i1] = fma32(x0, sin, x1 * cos)
    return out


def _reduce16(v: np.ndarray) -> np.ndarray:
    while v.shape[-1] > 1:
        h = v.shape[-1] // 2
        v = v[..., :h] + v[..., h:]
    return v[..., 0]


def _dot_halves(a: np.ndarray, b: np.ndarray, batched: bool) -> np.ndarray:
    """Sum over the last axis of a * b (halves as float32) in ggml's lane order; see decoder_kernels.c."""
    n = a.shape[-1]
    shape = np.broadcast_shapes(a.shape, b.shape)[:-1]
    if batched and n % 16 == 0:
        acc = np.zeros(shape + (16,), np.float32)
        for k in range(0, n, 16):
            acc = fma32(a[..., k : k + 16], b[..., k : k + 16], acc)
        return _reduce16(acc)
    whole = n - n % 64
    acc = np.zeros(shape + (4, 16), np.float32)
    for k in range(0, whole, 64):
        acc = fma32(a[..., k : k + 64].reshape(a.shape[:-1] + (4, 16)),
                   b[..., k : k + 64].reshape(b.shape[:-1] + (4, 16)), acc)
    pair = acc[..., :2, :] + acc[..., 2:, :]
    total = _reduce16(pair[..., 0, :] + pair[..., 1, :]).astype(np.float64)
    total = total + (a[..., whole:] * b[..., whole:]).astype(np.float64).sum(axis=-1)
    return total.astype(np.float32)


def attention_f16_ref(q: np.ndarray, k: np.ndarray, v: np.ndarray, q_start: int, scale: float,
                      window: int | None = None) -> np.ndarray:
    """Twin of vt_attention_f16: q (n, H, D) float32, k (Hkv, cap, D) and v (Hkv, D, cap) float16."""
    n, heads, dims = q.shape
    group = heads // k.shape[0]
    out = np.empty_like(q)
    batched = n > 1
    for i in range(n):
        pos = q_start + i
        lo = max(0, pos + 1 - window) if window else 0
        span = -(-(pos + 1) // 64) * 64
        for h in range(heads):
            qh = q[i, h].astype(np.float16).astype(np.float32)
            keys = k[h // group, lo : pos + 1].astype(np.float32)  # (m, D)
            row = (_dot_halves(qh[None, :], keys, batched) * np.float32(scale)).astype(np.float32)
            e = np.zeros(span, np.float32)
            e[lo : pos + 1] = ggml_exp_ref(row - row.max())
            total = sum(float(_reduce16(e[g : g + 16])) for g in range(lo // 16 * 16, pos + 1, 16))
            probs = np.zeros(span, np.float32)
            probs[lo : pos + 1] = (e[lo : pos + 1] * np.float32(1.0 / total)).astype(np.float16)
            first = lo // 64 * 64
            vals = np.zeros((dims, span), np.float32)
            vals[:, lo : pos + 1] = v[h // group, :, lo : pos + 1]
            out[i, h] = _dot_halves(probs[None, first:], vals[:, first:], batched)
    return out


# ---- products with F16 / BF16 matrices in llama.cpp's order (csrc/half_kernels.h describes both orders). Every
# product of two halves (two bfloat16s) is exact in float32, so a numpy multiply then add rounds as ggml's FMA.
_F16, _BF16 = 1, 30  # GGML type ids
_HALF_BAND = 64  # weight rows per step: bounds the (n, band, 64) float32 scratch


def half_tiled(ggml_type: int, rows: int, n: int, cols: int) -> bool:
    """Whether llama.cpp sums this product in tinyBLAS's order, not ggml_vec_dot's (half_matmul.c's half_order)."""
    return n >= 2 and rows % 4 == 0 and cols % (32 if ggml_type == _BF16 else 16) == 0


def bf16_round_ref(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16) rounded to nearest even, NaNs kept quiet: GGML_FP32_TO_BF16."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = ((u.astype(np.uint64) + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where((u & 0x7FFFFFFF) > 0x7F800000, ((u >> 16) | 64).astype(np.uint16), rounded)


def _bf16_floats(bits: np.ndarray, daz: bool) -> np.ndarray:
    """bfloat16 bits -> float32; daz: those below 2^-126 as signed zeros, as vdpbf16ps reads its inputs."""
    bits = np.asarray(bits, np.uint16)
    if daz:
        bits = np.where(bits & 0x7F80, bits, bits & 0x8000).astype(np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def half_matmul_ref(w: np.ndarray, ggml_type: int, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """x @ W.T as llama.cpp's CPU backend computes it for W stored F16 or BF16: x rounded to the weight's type,
    then each output's products summed in tinyBLAS's or ggml_vec_dot's lane order (`half_tiled` picks).

    Args:
        w: the weight as stored: float16 (rows, cols) for F16, uint16 bits (rows, cols) for BF16.
        ggml_type: 1 (F16) or 30 (BF16).
        x: float32 (n, cols).
        out: optional float32 (n, rows) to write.

    Returns:
        float32 (n, rows).
    """
    n, cols = x.shape
    rows, bf16 = w.shape[0], ggml_type == _BF16
    tiled = half_tiled(ggml_type, rows, n, cols)
    xb = bf16_round_ref(x) if bf16 else None
    with np.errstate(over="ignore"):  # past the half's range: inf, as vcvtps2ph gives
        xs = _bf16_floats(xb, daz=False) if bf16 else x.astype(np.float16).astype(np.float32)  # (n, cols), for tails
    xd = _bf16_floats(xb, daz=True)[:, None, :] if bf16 else xs[:, None, :]  # (n, 1, cols), for the lanes
    out = np.empty((n, rows), np.float32) if out is None else out
    whole = cols if tiled else cols - cols % 64
    with np.errstate(invalid="ignore", over="ignore"):  # inf and NaN products pass through as in C
        _half_bands(out, w, bf16, tiled, whole, xs, xd)
    return out


def _half_bands(out, w, bf16, tiled, whole, xs, xd) -> None:
    """half_matmul_ref's sums, _HALF_BAND weight rows at a time, into out."""
    n, cols = xs.shape
    rows = w.shape[0]
    for start in range(0, rows, _HALF_BAND):
        band = w[start : start + _HALF_BAND]
        ws = _bf16_floats(band, daz=False) if bf16 else band.astype(np.float32)  # (band, cols)
        wd = _bf16_floats(band, daz=True)[None] if bf16 else ws[None]  # (1, band, cols)
        # accumulators: tiled one of 16 lanes; ggml_vec_dot_f16 four, over the 16-element quarters of each
        # 64-element step; ggml_vec_dot_bf16 two, over its 32-element halves, each lane taking a pair
        accs = 1 if tiled else (2 if bf16 else 4)
        acc = np.zeros((n, band.shape[0], accs, 16), np.float32)
        step = 16 * accs * (2 if bf16 else 1)
        for k in range(0, whole, step):
            p = (xd[..., k : k + step] * wd[..., k : k + step]).reshape(acc.shape[:2] + (accs, -1))
            if bf16:  # vdpbf16ps: lane j adds the product of elements 2j + 1, then of 2j
                acc = (acc + p[..., 1::2]) + p[..., 0::2]
            else:
                acc = acc + p
        if tiled:
            total = _reduce16(acc[:, :, 0])
        elif bf16:
            total = _reduce16(acc[:, :, 0]).astype(np.float64) + _reduce16(acc[:, :, 1])
        else:  # GGML_F16_VEC_REDUCE: (0 + 2) + (1 + 3), then across
            total = _reduce16((acc[:, :, 0] + acc[:, :, 2]) + (acc[:, :, 1] + acc[:, :, 3])).astype(np.float64)
        for k in range(whole, cols):  # one element at a time, float products added in double
            total = total + (xs[:, None, k] * ws[None, :, k]).astype(np.float64)
        out[:, start : start + band.shape[0]] = total

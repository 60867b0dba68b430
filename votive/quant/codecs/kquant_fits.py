"""The fits behind ggml's k-quant quantizers: for each sub-block, a scale (and a min) and the integer levels.

Mirrors make_qkx2_quants (Q4_K, Q5_K: x ~ scale * L + min, L in 0..nmax, min <= 0, a weighted least-squares fit
tried at nstep + 1 candidate scales) and make_qx_quants with rmse_type 1 and no importance weights (Q6_K:
x ~ scale * (L - nmax), weights x * x, 18 candidate scales around -nmax / max) in ggml/src/ggml-quants.c
(ggml-org/llama.cpp). llama.cpp quantizes without an importance matrix through these `_ref` paths.

Each fit has a plain-loop `_ref` (one sub-block, one element at a time) and a vectorized twin over many
sub-blocks. The twins loop over the elements of a sub-block in C's order, so that every float32 sum adds the same
terms in the same order and rounds as C's does: that is what makes the result bit-exact (with ggml built without
FMA contraction, as llama-cpp-python's libggml-base is).
"""

from __future__ import annotations

import numpy as np

from votive.quant.codecs.common import F32, nearest_int, nearest_int_ref

GROUP_MAX_EPS = F32(1e-15)  # ggml: a sub-block whose largest |x| is below this is all zero


# ---- make_qkx2_quants (use_mad = false) --------------------------------------------------------------------------


def make_qkx2_quants_ref(x, weights, nmax: int, rmin, rdelta, nstep: int):
    """One sub-block: -> (scale, the_min, L). Mirrors ggml's make_qkx2_quants with use_mad = false."""
    n = len(x)
    lo = hi = x[0]
    sum_w = weights[0]
    sum_x = sum_w * x[0]
    for i in range(1, n):
        lo = x[i] if x[i] < lo else lo
        hi = x[i] if x[i] > hi else hi
        sum_w += weights[i]
        sum_x += weights[i] * x[i]
    if lo > 0:
        lo = F32(0.0)
    if hi == lo:
        return F32(0.0), -lo, [0] * n
    iscale = F32(nmax) / (hi - lo)
    scale = F32(1.0) / iscale
    L = [min(max(nearest_int_ref(iscale * (x[i] - lo)), 0), nmax) for i in range(n)]
    best_error = F32(0.0)
    for i in range(n):
        diff = scale * F32(L[i]) + lo - x[i]
        best_error += weights[i] * (diff * diff)
    for step in range(nstep + 1):
        iscale = (rmin + rdelta * F32(step) + F32(nmax)) / (hi - lo)
        aux = [min(max(nearest_int_ref(iscale * (x[i] - lo)), 0), nmax) for i in range(n)]
        sum_l = sum_l2 = sum_xl = F32(0.0)
        for i in range(n):
            wl = weights[i] * F32(aux[i])
            sum_l += wl
            sum_l2 += wl * F32(aux[i])
            sum_xl += wl * x[i]
        det = sum_w * sum_l2 - sum_l * sum_l
        if det > 0:
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            if this_min > 0:
                this_min = F32(0.0)
                this_scale = sum_xl / sum_l2
            cur_error = F32(0.0)
            for i in range(n):
                diff = this_scale * F32(aux[i]) + this_min - x[i]
                cur_error += weights[i] * (diff * diff)
            if cur_error < best_error:
                L, best_error, scale, lo = aux, cur_error, this_scale, this_min
    return scale, -lo, L



def make_qkx2_quants(x: np.ndarray, weights: np.ndarray, nmax: int, rmin, rdelta, nstep: int):
    """make_qkx2_quants on many sub-blocks at once: x, weights (n, 32) float32 -> scale (n,), the_min (n,),
    L (n, 32) int32. Products are taken for all elements at once; only the float32 sums loop over the 32
    elements, in C's order, so that they round as C's do. Candidate scales loop too, never sub-blocks."""
    n, width = x.shape
    cols = np.ascontiguousarray(x.T)  # (width, n): element i of every sub-block contiguous
    w = np.ascontiguousarray(weights.T)

    def total(terms, start=None):  # sum over the elements, one at a time as C's `sum += term`
        acc = np.zeros(n, F32) if start is None else start
        for i in range(0 if start is None else 1, width):
            acc = acc + terms[i]
        return acc

    with np.errstate(all="ignore"):  # flat sub-blocks divide by zero; their results are replaced below
        lo, hi = cols[0].copy(), cols[0].copy()
        for i in range(1, width):
            lo = np.where(cols[i] < lo, cols[i], lo)
            hi = np.where(cols[i] > hi, cols[i], hi)
        sum_w = total(w, w[0].copy())
        sum_x = total(w * cols, w[0] * cols[0])
        lo = np.where(lo > 0, F32(0.0), lo)
        flat = hi == lo

        def levels(iscale, lo):  # (width, n) float32 levels in 0..nmax
            return np.clip(nearest_int(iscale * (cols - lo)), 0, nmax).astype(F32)

        def weighted_error(scale, lo, lf):
            diff = scale * lf + lo - cols
            return total(w * (diff * diff))

        iscale = F32(nmax) / (hi - lo)
        scale = F32(1.0) / iscale
        L = levels(iscale, lo)
        best_error = weighted_error(scale, lo, L)
        for step in range(nstep + 1):
            iscale = (rmin + rdelta * F32(step) + F32(nmax)) / (hi - lo)
            aux = levels(iscale, lo)
            wl = w * aux
            sum_l, sum_l2, sum_xl = total(wl), total(wl * aux), total(wl * cols)
            det = sum_w * sum_l2 - sum_l * sum_l
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / det
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det
            clamp = this_min > 0
            this_min = np.where(clamp, F32(0.0), this_min)
            this_scale = np.where(clamp, sum_xl / sum_l2, this_scale)
            cur_error = weighted_error(this_scale, this_min, aux)
            better = (det > 0) & (cur_error < best_error)
            L = np.where(better, aux, L)
            best_error = np.where(better, cur_error, best_error)
            scale = np.where(better, this_scale, scale)
            lo = np.where(better, this_min, lo)
        scale = np.where(flat, F32(0.0), scale).astype(F32)
        L = np.where(flat, F32(0.0), L)
    return scale, (-lo).astype(F32), np.ascontiguousarray(L.T).astype(np.int32)


# ---- make_qx_quants (rmse_type = 1, no quant_weights) ------------------------------------------------------------


def make_qx_quants_ref(x, nmax: int):
    """One sub-block: -> (scale, L) with L in 0..2 * nmax - 1 (the level plus nmax). Mirrors ggml's make_qx_quants
    with rmse_type = 1 and qw = NULL: weights x * x, the best of 18 scales around -nmax / max by sum(w x l)^2 /
    sum(w l^2)."""
    n = len(x)
    mx = amax = F32(0.0)
    for v in x:
        if abs(v) > amax:  # the first element of largest magnitude, with its sign
            amax, mx = abs(v), v
    if amax < GROUP_MAX_EPS:
        return F32(0.0), [0] * n
    iscale = F32(-nmax) / mx
    sumlx = suml2 = F32(0.0)
    L = [0] * n
    for i in range(n):
        lv = max(-nmax, min(nmax - 1, nearest_int_ref(iscale * x[i])))
        L[i] = lv + nmax
        w = x[i] * x[i]
        sumlx += w * x[i] * F32(lv)
        suml2 += w * F32(lv) * F32(lv)
    scale = sumlx / suml2 if suml2 else F32(0.0)
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        iscale = -(F32(nmax) + F32(0.1) * F32(step)) / mx
        sumlx = suml2 = F32(0.0)
        levels = []
        for i in range(n):
            lv = max(-nmax, min(nmax - 1, nearest_int_ref(iscale * x[i])))
            levels.append(lv)
            w = x[i] * x[i]
            sumlx += w * x[i] * F32(lv)
            suml2 += w * F32(lv) * F32(lv)
        if suml2 > 0 and sumlx * sumlx > best * suml2:
            L = [lv + nmax for lv in levels]
            scale = sumlx / suml2
            best = scale * sumlx
    return scale, L


def make_qx_quants(x: np.ndarray, nmax: int):
    """make_qx_quants_ref on many sub-blocks at once: x (n, width) float32 -> scale (n,) float32, L (n, width)
    int32 in 0..2 * nmax - 1. Sums run over the elements in C's order; the candidates over all sub-blocks."""
    n, width = x.shape
    rows = np.arange(n)
    first = np.argmax(np.abs(x), axis=1)  # argmax keeps the first of equal magnitudes, as C's strict `>`
    mx = x[rows, first]
    zero = np.abs(mx) < GROUP_MAX_EPS
    cols = np.ascontiguousarray(x.T)  # (width, n): each element's column contiguous
    w = cols * cols
    wx = w * cols

    def sums(iscale):
        levels = np.clip(nearest_int(iscale * cols), -nmax, nmax - 1)  # (width, n)
        lf = levels.astype(F32)
        sumlx = np.zeros(n, F32)
        suml2 = np.zeros(n, F32)
        for i in range(width):
            sumlx = sumlx + wx[i] * lf[i]
            suml2 = suml2 + w[i] * lf[i] * lf[i]
        return levels, sumlx, suml2

    with np.errstate(all="ignore"):  # zero sub-blocks divide by zero; their results are replaced below
        levels, sumlx, suml2 = sums(F32(-nmax) / mx)
        L = levels + nmax
        scale = np.where(suml2 != 0, sumlx / suml2, F32(0.0)).astype(F32)
        best = scale * sumlx
        for step in range(-9, 10):
            if step == 0:
                continue
            levels, sumlx, suml2 = sums(-(F32(nmax) + F32(0.1) * F32(step)) / mx)
            better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
            L = np.where(better, levels + nmax, L)
            scale = np.where(better, sumlx / suml2, scale).astype(F32)
            best = np.where(better, scale * sumlx, best).astype(F32)
    scale = np.where(zero, F32(0.0), scale).astype(F32)
    L = np.where(zero, 0, L)
    return scale, np.ascontiguousarray(L.T)

"""C kernels (libvotive) against numpy on the BERT-encoder shapes of all-MiniLM-L6-v2 at 32 x 20 tokens.

Prints the best of --reps timings (milliseconds) per kernel: the numpy code the backend ran before the C
kernels (A&S erf GELU, numpy LayerNorm and softmax), the numpy twins in votive.runtime.kernels_ref (the
fallback now), and the C kernels for every ISA this CPU runs at 1 thread and at the default thread count.
Figures are printed, never asserted; on a shared machine only ratios from one run mean much.

    .venv/bin/python benchmarks/kernels_bench.py [--reps 30]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from votive.runtime import kernels
from votive.runtime.kernels_ref import gelu_ref, layer_norm_ref, softmax_ref

# Abramowitz & Stegun 7.1.26 erf, as votive/backends/numpy_backend.py computed GELU before the C kernels.
_AS_P = np.float32(0.3275911)
_AS_A = [np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)]


def gelu_numpy_as(x):
    z = np.abs(x) * np.float32(0.7071067811865476)
    t = 1 / (1 + _AS_P * z)
    y = t * _AS_A[4]
    for a in reversed(_AS_A[:4]):
        y += a
        y *= t
    y *= np.exp(-z * z) * np.float32(0.5)
    np.subtract(1, y, out=y, where=x >= 0)
    x *= y
    return x


def best_ms(fn, make_input, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        arg = make_input()
        start = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    hidden = rng.normal(0, 2, (640, 1536)).astype(np.float32)  # FFN activations: 640 tokens x 1536
    bias = rng.normal(0, 1, 1536).astype(np.float32)
    x = rng.normal(0, 1, (640, 384)).astype(np.float32)  # 640 tokens x 384
    residual = rng.normal(0, 1, (640, 384)).astype(np.float32)
    w, b = rng.normal(1, 0.1, 384).astype(np.float32), rng.normal(0, 0.1, 384).astype(np.float32)
    scores = rng.normal(0, 3, (32, 12, 20, 20)).astype(np.float32)  # (batch, heads, queries, keys)
    mask = np.where(rng.random((32, 1, 1, 20)) < 0.2, -1e4, 0).astype(np.float32)
    scale = 1 / np.sqrt(32)
    reps = args.reps

    def row(label, gelu, bias_gelu, ln, ln_res, smax):
        print(f"{label:<26} {best_ms(gelu, hidden.copy, reps):9.3f} {best_ms(bias_gelu, hidden.copy, reps):9.3f} "
              f"{best_ms(ln, x.copy, reps):9.3f} {best_ms(ln_res, x.copy, reps):9.3f} "
              f"{best_ms(smax, scores.copy, reps):9.3f}")

    print(f"{'ms, best of ' + str(reps):<26} {'gelu':>9} {'bias+gelu':>9} {'LN':>9} {'LN+res':>9} {'softmax':>9}")
    print(f"{'':<26} {'640x1536':>9} {'640x1536':>9} {'640x384':>9} {'640x384':>9} {'32,12,20,20':>9}")

    def ln_numpy(a, res=None):  # the backend's LayerNorm, with the residual added first as BERT does
        h = a + res if res is not None else a
        mean = h.mean(axis=-1, keepdims=True)
        c = h - mean
        var = np.einsum("...i,...i->...", c, c)[..., None] / h.shape[-1] + np.float32(1e-12)
        return c / np.sqrt(var) * w + b

    def softmax_numpy(s):  # scale, mask and the backend's softmax
        s *= np.float32(scale)
        s += mask
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        return s

    row("numpy (backend before)", gelu_numpy_as, lambda a: gelu_numpy_as(np.add(a, bias, out=a)), ln_numpy,
        lambda a: ln_numpy(a, residual), softmax_numpy)
    row("numpy twins (fallback)", gelu_ref, lambda a: gelu_ref(a, bias), lambda a: layer_norm_ref(a, w, b, 1e-12),
        lambda a: layer_norm_ref(a, w, b, 1e-12, residual), lambda a: softmax_ref(a, mask, scale))

    lib = kernels.get()
    if lib is None:
        print("C kernels unavailable: build them with `python -m votive.runtime.kernel_build`")
        return
    default_threads, best_isa = lib.num_threads, lib.isa
    for isa in lib.supported_isas():
        lib.set_isa(isa)
        for threads in sorted({1, default_threads}):
            lib.set_num_threads(threads)
            row(f"C {isa}, {threads} thread{'s' if threads > 1 else ''}", lib.gelu, lambda a: lib.gelu(a, bias),
                lambda a: lib.layer_norm(a, w, b, 1e-12), lambda a: lib.layer_norm(a, w, b, 1e-12, residual),
                lambda a: lib.softmax(a, mask, scale))
    lib.set_isa(best_isa)
    lib.set_num_threads(None)


if __name__ == "__main__":
    main()

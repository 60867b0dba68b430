"""Derive the coefficients simd.h uses for the standard normal upper tail Q(a) = P(Z > a), a >= 0.

GELU(x) = x * Phi(x), and Phi(x) = 1 - Q(x) for x >= 0, Q(-x) for x < 0, so one vectorizable Q gives exact
GELU. The form is

    Q(a) = t * exp(P(t) - a*a/2),   t = 1 / (1 + p * a),

which maps a in [0, inf) onto t in (0, 1]. P(t) = log(Q(a) / t) + a*a/2 is smooth on the whole interval
(it tends to a constant as a -> inf because Q(a) ~ exp(-a*a/2) / (a sqrt(2 pi))), so one polynomial covers
every a with a small *relative* error, which float32 needs far out in the tail. Fitting Q this way is an
old idea (Numerical Recipes' erfcc fits the same form to erfc); these coefficients are our own fit:
Lawson's iteratively reweighted least squares towards the minimax error, on Chebyshev points in t, with
math.erfc as the truth. Run `python fit_normal_tail.py` to print them; it needs only numpy.
"""

from __future__ import annotations

import math

import numpy as np

DEGREE = 9
A_MAX = 37.0  # Q(37) ~ 1e-300: past it exp() of the target underflows in double


def target(t: np.ndarray, p: float) -> np.ndarray:
    a = (1.0 / t - 1.0) / p
    return np.array([math.log(0.5 * math.erfc(ai / math.sqrt(2.0)) / ti) + ai * ai / 2.0 for ai, ti in zip(a, t)])


def fit(p: float, degree: int = DEGREE, points: int = 400, rounds: int = 40) -> np.ndarray:
    """Coefficients c[0..degree] of P(t) = sum c[k] t**k, lowest first."""
    t_min = 1.0 / (1.0 + p * A_MAX)
    k = np.arange(points)
    t = 0.5 * (1.0 + t_min) + 0.5 * (1.0 - t_min) * np.cos(np.pi * (k + 0.5) / points)
    y = target(t, p)
    basis = np.vander(t, degree + 1, increasing=True)
    weight = np.ones_like(t)
    for _ in range(rounds):  # Lawson: weight up the points where the error is largest
        coef, *_ = np.linalg.lstsq(basis * weight[:, None], y * weight, rcond=None)
        err = np.abs(basis @ coef - y)
        weight *= 1.0 + err / err.max()
        weight /= weight.mean()
    return coef


def max_relative_error(coef: np.ndarray, p: float) -> float:
    """Worst |Q_fit / Q - 1| over a in [0, 13] (float32 Q underflows past 13), coefficients as float32."""
    c32 = np.asarray(coef, dtype=np.float32).astype(np.float64)
    a = np.linspace(0.0, 13.0, 100001)
    t = 1.0 / (1.0 + p * a)
    q = t * np.exp(np.polyval(c32[::-1], t) - a * a / 2.0)
    truth = np.array([0.5 * math.erfc(ai / math.sqrt(2.0)) for ai in a])
    return float(np.max(np.abs(q / truth - 1.0)))


def main() -> None:
    best = min((max_relative_error(fit(p), p), p) for p in np.arange(0.20, 0.41, 0.01))
    p = float(np.float32(best[1]))  # the value the C code will hold
    coef = fit(p)
    err = max_relative_error(coef, p)
    print(f"p = {_as_c_float(p)}  (max relative error of Q, float32 coefficients: {err:.2e})")
    for k, c in enumerate(coef):
        print(f"c{k} = {_as_c_float(c)}")


def _as_c_float(value: float) -> str:
    """The shortest decimal that reads back as the same float32, as a C float literal."""
    return np.format_float_positional(np.float32(value), unique=True) + "f"


if __name__ == "__main__":
    main()

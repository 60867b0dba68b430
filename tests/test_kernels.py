"""The C kernels (libvotive) against their numpy twins and against math.erf, on every ISA this CPU runs.

The library under test is compiled from the current sources into a temporary folder once per session (a
second or two), so a stale in-tree build cannot hide a change; the module-level functions that pick C or
numpy are tested on the installed build (or the fallback when there is none).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import platform
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from votive.errors import KernelError
from votive.quant import kernel_args, kernel_build, kernels, kernels_ref
from votive.backends.numpy_linears import DensePanels
from votive.quant.kernels_ref import gelu_ref, layer_norm_ref, softmax_ref

FLT_MAX = float(np.finfo(np.float32).max)


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """libvotive.so and its C self-test, freshly compiled; skips when this machine has no C compiler."""
    if not shutil.which(kernel_build.default_cc()[0]):
        pytest.skip("no C compiler: the C kernels cannot be built here")
    folder = tmp_path_factory.mktemp("kernels")
    library = kernel_build.build_library(folder / kernel_build.LIBRARY_NAME)
    return library, kernel_build.build_selftest(library)


@pytest.fixture(scope="session")
def lib(built):
    loaded = kernels.load(built[0])
    assert loaded is not None, f"{built[0]} was built but does not load"
    return loaded


# The kernel builds of this machine's architecture (kernel_build.ISA_FLAGS); the CPU may lack some.
ARCH_ISAS = [name for name, _ in kernel_build.ISA_FLAGS.get(platform.machine(), kernel_build.GENERIC_ISA)]


@pytest.fixture(params=ARCH_ISAS)
def isa(request, lib):
    """Each kernel build this CPU runs, made active for the test."""
    if request.param not in lib.supported_isas():
        pytest.skip(f"{request.param} kernels do not run here")
    best = lib.isa
    lib.set_isa(request.param)
    yield request.param
    lib.set_isa(best)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def gelu_exact(x: np.ndarray) -> np.ndarray:
    """GELU in float64 from math.erf: the independent truth."""
    return np.array([0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0))) for v in np.asarray(x, np.float64).ravel()])


# Shapes with tails of every kind: 1 row, 1 column, lengths not divisible by 4, 8 or 16, and 3-D.
ODD_SHAPES = [(1, 1), (1, 7), (3, 17), (5, 33), (2, 3, 65), (7, 384), (1, 1000)]


# ---------------------------------------------------------------------------------------------------- GELU


def test_gelu_matches_erf_on_minus10_to_10(lib, isa):
    x = np.linspace(-10, 10, 200_001, dtype=np.float32)
    truth = gelu_exact(x)
    assert np.abs(lib.gelu(x.copy()) - truth).max() <= 1e-6
    assert np.abs(gelu_ref(x.copy()) - truth).max() <= 1e-6


@pytest.mark.parametrize("shape", ODD_SHAPES)
def test_gelu_with_and_without_bias_matches_reference(lib, isa, rng, shape):
    x = rng.normal(0, 3, shape).astype(np.float32)
    bias = rng.normal(0, 1, shape[-1]).astype(np.float32)
    np.testing.assert_allclose(lib.gelu(x.copy()), gelu_ref(x.copy()), rtol=0, atol=1e-6)
    fused = lib.gelu(x.copy(), bias)
    np.testing.assert_allclose(fused, gelu_ref(x.copy(), bias), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fused, gelu_exact(x + bias).reshape(shape), rtol=0, atol=1e-6)


def test_gelu_extremes_stay_finite_and_nan_propagates(lib, isa):
    x = np.array([FLT_MAX, -FLT_MAX, 1e30, -1e30, 1e-40, -1e-40, 0.0, -0.0, 40, -40, np.inf, -np.inf, np.nan],
                 dtype=np.float32)
    want = np.array([FLT_MAX, 0, 1e30, 0, 0.5e-40, -0.5e-40, 0, 0, 40, 0, np.inf, np.nan, np.nan], dtype=np.float32)
    for got in (lib.gelu(x.copy()), gelu_ref(x.copy())):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-44)  # NaN where want is NaN, nowhere else


def test_gelu_leaves_nothing_outside_the_array(lib):
    buf = np.full(64, 7.0, dtype=np.float32)
    lib.gelu(buf[8:21])  # 13 floats: a tail on every ISA, inside a larger buffer
    assert (buf[:8] == 7.0).all() and (buf[21:] == 7.0).all()


# ----------------------------------------------------------------------------------------------- LayerNorm


def layer_norm_exact(x, weight, bias, eps, residual=None):
    h = x.astype(np.float64) + (0 if residual is None else residual)
    y = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + eps)
    return y * (1 if weight is None else weight) + (0 if bias is None else bias)


@pytest.mark.parametrize("shape", ODD_SHAPES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_layer_norm_matches_reference(lib, isa, rng, shape, with_residual):
    x = rng.normal(2, 3, shape).astype(np.float32)
    residual = rng.normal(0, 1, shape).astype(np.float32) if with_residual else None
    weight = rng.normal(1, 0.2, shape[-1]).astype(np.float32)
    bias = rng.normal(0, 0.5, shape[-1]).astype(np.float32)
    got = lib.layer_norm(x, weight, bias, 1e-5, residual)
    np.testing.assert_allclose(got, layer_norm_ref(x, weight, bias, 1e-5, residual), rtol=0, atol=2e-5)
    np.testing.assert_allclose(got, layer_norm_exact(x, weight, bias, 1e-5, residual), rtol=0, atol=2e-5)
    assert got is not x and got.shape == x.shape


def test_layer_norm_in_place_and_without_affine(lib, rng):
    x = rng.normal(0, 1, (9, 50)).astype(np.float32)
    residual = rng.normal(0, 1, (9, 50)).astype(np.float32)
    want = layer_norm_exact(x, None, None, 1e-12, residual)
    for out_name in ("x", "residual"):
        xs, rs = x.copy(), residual.copy()
        out = xs if out_name == "x" else rs
        assert lib.layer_norm(xs, None, None, 1e-12, rs, out=out) is out
        np.testing.assert_allclose(out, want, rtol=0, atol=2e-5)


def test_layer_norm_large_offset_does_not_cancel(lib):
    # mean 1e4, spread 1e-1: E[x^2] - mean^2 would lose every digit; the two-pass variance does not
    x = (1e4 + np.linspace(-0.1, 0.1, 384)).astype(np.float32)[None, :]
    np.testing.assert_allclose(lib.layer_norm(x, None, None, 0.0), layer_norm_exact(x, None, None, 0.0),
                               rtol=0, atol=2e-3)


# ------------------------------------------------------------------------------------------------- softmax


def softmax_exact(x, mask, scale):
    # x * scale + mask is rounded to float32 as the kernels store it (a -1e4 mask leaves ~1e-3 of resolution)
    h = (x * np.float32(scale) + (0 if mask is None else mask)).astype(np.float64)
    e = np.exp(h - h.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


MASK_SHAPES = [None, (3, 1, 1, 21), (1, 1, 5, 21), (3, 1, 5, 21), (21,), (3, 4, 5, 1), (1, 4, 1, 21), ()]


@pytest.mark.parametrize("mask_shape", MASK_SHAPES)
def test_softmax_with_broadcast_masks_matches_reference(lib, isa, rng, mask_shape):
    x = rng.normal(0, 4, (3, 4, 5, 21)).astype(np.float32)  # (batch, heads, queries, keys)
    mask = None
    if mask_shape is not None:
        mask = np.where(rng.random(mask_shape) < 0.3, -10000.0, 0.0).astype(np.float32)
    got = lib.softmax(x.copy(), mask, scale=0.125)
    np.testing.assert_allclose(got, softmax_ref(x.copy(), mask, 0.125), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got, softmax_exact(x, mask, 0.125), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", ODD_SHAPES + [(2, 300), (2, 4099)])
def test_softmax_rows_sum_to_one(lib, isa, rng, shape):
    x = rng.normal(0, 10, shape).astype(np.float32)
    got = lib.softmax(x.copy())
    np.testing.assert_allclose(got, softmax_exact(x, None, 1.0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(got.sum(-1), 1.0, rtol=0, atol=1e-5)


def test_softmax_extremes(lib):
    x = np.array([[1e30, 1e30, -1e30, 88.0], [-np.inf, -np.inf, -np.inf, -np.inf], [0, np.nan, 0, 0]],
                 dtype=np.float32)
    got = lib.softmax(x.copy())
    np.testing.assert_array_equal(got[0], [0.5, 0.5, 0, 0])
    assert np.isnan(got[1]).all() and np.isnan(got[2]).all()  # as numpy and PyTorch give
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(np.isnan(softmax_ref(x.copy())), np.isnan(got))


def mask_layout(mask, shape):
    """vt_softmax's (mask rows, div, mod) for a mask, checked as softmax checks it."""
    return kernel_args.mask_layout(kernel_args.broadcast_mask("softmax", mask, shape), shape)


@pytest.mark.parametrize(
    "mask_shape, want",
    [
        ((3, 1, 1, 21), (3, 20, 3)),  # one mask row per batch, 4 heads x 5 queries each
        ((1, 1, 5, 21), (5, 1, 5)),  # one per query, cycling over batch and heads
        ((1, 4, 5, 21), (20, 1, 20)),
        ((21,), (1, 1, 1)),
        ((3, 1, 5, 21), (60, 1, 60)),  # batch and query vary, heads do not: expanded to x's shape
        ((3, 4, 5, 1), (60, 1, 60)),  # one value per row: expanded
    ],
)
def test_mask_layout(mask_shape, want):
    rows, div, mod = mask_layout(np.zeros(mask_shape, np.float32), (3, 4, 5, 21))
    assert (rows.shape[0], div, mod) == want and rows.shape[1] == 21 and rows.flags.c_contiguous


def test_mask_layout_skips_axes_of_size_one(lib, rng):
    # one head: (batch, 1, queries, keys) masks vary over consecutive axes once the size-1 axis is ignored
    rows, div, mod = mask_layout(np.zeros((3, 1, 5, 21), np.float32), (3, 1, 5, 21))
    assert (rows.shape[0], div, mod) == (15, 1, 15)
    x = rng.normal(0, 2, (3, 1, 5, 21)).astype(np.float32)
    mask = rng.normal(0, 2, (3, 1, 5, 21)).astype(np.float32)
    np.testing.assert_allclose(lib.softmax(x.copy(), mask), softmax_exact(x, mask, 1.0), atol=1e-6)


# ------------------------------------------------------------------------------------------------- threads


def test_one_and_two_threads_give_identical_bits(lib, isa, rng):
    x = rng.normal(0, 3, (640, 1536)).astype(np.float32)  # large enough to be split over threads
    bias = rng.normal(0, 1, 1536).astype(np.float32)
    scores = rng.normal(0, 3, (64, 12, 20, 20)).astype(np.float32)
    mask = np.where(rng.random((64, 1, 1, 20)) < 0.2, -1e4, 0).astype(np.float32)
    results = []
    try:
        for threads in (1, 2):
            lib.set_num_threads(threads)
            assert lib.num_threads == threads
            results.append((lib.gelu(x.copy()), lib.gelu(x.copy(), bias), lib.layer_norm(x, bias, bias, 1e-6, x),
                            lib.softmax(scores.copy(), mask, 0.2)))
    finally:
        lib.set_num_threads(None)
    for one, two in zip(*results):
        assert np.array_equal(one, two, equal_nan=True)


def test_concurrent_python_threads(lib, rng):
    # ctypes drops the GIL: two callers at once, one gets the pool and the other runs alone, both right
    inputs = [rng.normal(0, 3, (256, 1024)).astype(np.float32) for _ in range(4)]
    want = [gelu_ref(a.copy()) for a in inputs]
    got = [None] * len(inputs)

    def work(i):
        for _ in range(5):
            got[i] = lib.gelu(inputs[i].copy())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-6)


def _gelu_in_child(path, queue):
    child_lib = kernels.load(path)
    x = np.linspace(-5, 5, 1 << 20, dtype=np.float32)
    queue.put(float(np.abs(child_lib.gelu(x.copy()) - gelu_ref(x)).max()))


def test_kernels_work_in_a_forked_child(lib, built):
    lib.gelu(np.ones((1024, 1024), np.float32))  # the parent's pool exists before the fork
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_gelu_in_child, args=(built[0], queue))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child hung running a kernel")
    assert child.exitcode == 0 and queue.get(timeout=5) <= 1e-6


def test_configured_threads_from_environment():
    assert kernels.configured_threads({"VOTIVE_NUM_THREADS": "3"}) == 3
    assert kernels.configured_threads({}) >= 1
    for bad in ("0", "-2", "two"):
        with pytest.raises(KernelError, match=f"VOTIVE_NUM_THREADS must be an integer >= 1, found '{bad}'"):
            kernels.configured_threads({"VOTIVE_NUM_THREADS": bad})


def test_spin_window_setting_and_idle_workers_sleep(lib, rng):
    x = rng.normal(0, 3, (640, 1536)).astype(np.float32)  # split over the pool
    want = gelu_ref(x.copy())
    try:
        lib.set_num_threads(2)
        for us in (0, 5000, None):
            lib.set_spin_us(us)
            assert lib.spin_us == (100 if us is None else us)
            for _ in range(3):  # workers asleep (0) or spinning (5000) when the next job comes: same answer
                np.testing.assert_allclose(lib.gelu(x.copy()), want, rtol=0, atol=1e-6)
                time.sleep(0.002)
        # after the spin window the workers sleep: an idle process uses no CPU
        lib.gelu(x.copy())
        cpu, wall = time.process_time(), time.perf_counter()
        time.sleep(0.3)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        assert cpu < 0.05 * wall, f"{cpu:.3f} s of CPU in {wall:.3f} s idle: workers did not go to sleep"
    finally:
        lib.set_spin_us(None)
        lib.set_num_threads(None)
    for bad in (-1, 100_001, 2.5, True):
        with pytest.raises(KernelError, match="set_spin_us: expected an integer from 0 to 100000"):
            lib.set_spin_us(bad)


def test_configured_spin_from_environment():
    assert kernels.configured_spin_us({"VOTIVE_SPIN_US": "250"}) == 250
    assert kernels.configured_spin_us({}) is None
    for bad in ("-1", "100001", "1ms"):
        with pytest.raises(KernelError, match=f"VOTIVE_SPIN_US must be an integer from 0 to 100000 .*'{bad}'"):
            kernels.configured_spin_us({"VOTIVE_SPIN_US": bad})


# ------------------------------------------------------------------------------------------- dense products

# (m, n, k): one row, one column, k below / across one vector, n not a multiple of the 4-row groups, m across
# tiles of every height and blocks of 48 rows, MiniLM's shapes (a short text and a batch).
LINEAR_SHAPES = [(1, 1, 1), (1, 5, 7), (2, 3, 16), (3, 17, 17), (5, 33, 31), (7, 13, 100), (20, 1152, 384),
                 (49, 64, 65), (97, 130, 384), (450, 384, 1536)]


@pytest.mark.parametrize("m, n, k", LINEAR_SHAPES)
def test_linear_matches_float64_products(lib, isa, rng, m, n, k):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    # each output a k-term float32 dot product: within k ulps-ish of the exact sum, scaled by its terms' size
    bound = 2 * k * np.finfo(np.float32).eps * (np.abs(x).astype(np.float64) @ np.abs(w).T.astype(np.float64))
    for bias in (None, b):
        got = lib.linear(x, w, bias)
        assert got.dtype == np.float32 and got.shape == (m, n)
        want = exact + (0 if bias is None else b)
        assert np.all(np.abs(got - want) <= bound + 1e-6 * np.abs(want)), (m, n, k)
    assert np.all(np.abs(lib.linear(x, w, b) - kernels_ref.linear_ref(x, w, b)) <= 2 * bound + 1e-5)  # the twin


def fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """a * b + c rounded once to float32 (the FMA instruction), for float32 arrays: the product is exact in float64,
    the sum rounded there; where that rounding lands exactly halfway between two float32s, its exact error (TwoSum)
    says which way the single rounding goes."""
    p, c64 = a.astype(np.float64) * b.astype(np.float64), c.astype(np.float64)
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)  # s + err == p + c exactly
    r = s.astype(np.float32)
    d = s - r.astype(np.float64)  # towards the other neighbour where s is a tie
    other = np.nextafter(r, np.where(d > 0, np.float32(np.inf), np.float32(-np.inf)))
    tie = (d != 0) & (2 * np.abs(d) == np.abs(other.astype(np.float64) - r.astype(np.float64)))
    return np.where(tie & (np.sign(err) == np.sign(d)), other, r)


def chain_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, fused: bool) -> np.ndarray:
    """vt_linear's exact twin: each output one chain over k in order from 0, acc = x[i] * w[i] + acc (one rounding
    with a fused multiply-add, two on SSE2), then + b."""
    acc = np.zeros((x.shape[0], w.shape[0]), np.float32)
    for i in range(x.shape[1]):
        xi, wi = x[:, i, None], w[None, :, i]
        acc = fma32(np.broadcast_to(xi, acc.shape), np.broadcast_to(wi, acc.shape), acc) if fused else \
            (xi * wi).astype(np.float32) + acc
    return acc if b is None else acc + b


@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (3, 17, 17), (7, 130, 100), (20, 64, 384), (13, 65, 65)])
def test_linear_is_one_chain_of_multiply_adds_per_output(lib, isa, rng, m, n, k):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    fused = isa in ("avx512", "avx2", "neon")
    for bias in (None, b):
        want = chain_linear(x, w, bias, fused)
        assert np.array_equal(lib.linear(x, w, bias), want), (m, n, k)
        assert np.array_equal(DensePanels.make(w, lib=lib)(x, bias), want), (m, n, k)  # packed at load: the same bits


def test_packed_matrices_stack_and_refuse_bad_input(lib, rng):
    x = rng.standard_normal((9, 40)).astype(np.float32)
    parts = [rng.standard_normal((64, 40)).astype(np.float32) for _ in range(3)]
    fused = DensePanels.concatenate([DensePanels.make(p, lib=lib) for p in parts])
    assert fused.out_features == 192 and fused.panels.ctypes.data % 64 == 0
    assert np.array_equal(fused(x), lib.linear(x, np.concatenate(parts)))
    short = DensePanels.make(parts[1][:63], lib=lib)  # 63 rows: a part not of whole panels
    assert DensePanels.concatenate([DensePanels.make(parts[0], lib=lib), short]) is None
    with pytest.raises(KernelError, match=r"x must be \(\.\.\., 40\)"):
        DensePanels.make(parts[0], lib=lib)(x[:, :39])
    with pytest.raises(KernelError, match=r"bias must be \(64,\)"):
        DensePanels.make(parts[0], lib=lib)(x, np.zeros(63, np.float32))


def test_linear_leading_axes_empty_inputs_and_nan(lib, rng):
    x = rng.standard_normal((2, 3, 40)).astype(np.float32)
    w = rng.standard_normal((9, 40)).astype(np.float32)
    assert np.allclose(lib.linear(x, w), x @ w.T, rtol=1e-5, atol=1e-5) and lib.linear(x, w).shape == (2, 3, 9)
    assert lib.linear(np.zeros((0, 40), np.float32), w).shape == (0, 9)
    assert np.array_equal(lib.linear(np.ones((3, 0), np.float32), np.ones((4, 0), np.float32), np.arange(4.0)),
                          np.tile(np.arange(4, dtype=np.float32), (3, 1)))  # k = 0: the bias alone
    x[0, 1, 5] = np.nan
    got = lib.linear(x, w)
    assert np.isnan(got[0, 1]).all() and np.isfinite(np.delete(got.reshape(6, 9), 1, axis=0)).all()


def test_linear_sums_in_one_order_whatever_the_threads(lib, isa, rng):
    x = rng.standard_normal((300, 384)).astype(np.float32)  # panels and runs of rows over both threads
    w = rng.standard_normal((1536, 384)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2, 3):
            lib.set_num_threads(threads)
            results.append(lib.linear(x, w))
            results.append(DensePanels.make(w, lib=lib)(x))
    finally:
        lib.set_num_threads(None)
    assert all(np.array_equal(results[0], r) for r in results[1:])
    assert np.array_equal(lib.linear(x[:7], w), results[0][:7])  # a row's outputs do not depend on m


def test_linear_refuses_mismatched_shapes_from_c_and_numpy(lib, monkeypatch):
    x, w = np.zeros((2, 8), np.float32), np.zeros((3, 7), np.float32)
    message = "linear: weight must be a matrix (out, 8) matching x's last axis"
    with pytest.raises(KernelError, match=message.replace("(", r"\(").replace(")", r"\)")):
        lib.linear(x, w)
    with pytest.raises(KernelError, match="linear: bias must be a float vector of shape \\(3,\\)"):
        kernels.linear(np.zeros((2, 7), np.float32), w, np.zeros(4, np.float32))
    monkeypatch.setattr(kernels, "_default", [None])
    with pytest.raises(KernelError, match="linear: weight must be a matrix"):
        kernels.linear(x, w)
    # without the library the twin answers, for any float layout
    assert np.array_equal(kernels.linear(np.ones((2, 7)), np.ones((3, 7)).T.copy().T), np.full((2, 3), 7.0))


@pytest.mark.parametrize("lengths, heads, dh", [([1], 1, 1), ([5, 0, 17], 2, 24), ([20, 3, 64, 1], 12, 32),
                                                 ([70], 3, 40), ([2, 2], 4, 16)])
def test_encoder_attention_matches_float64_softmax(lib, isa, rng, lengths, heads, dh):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    qkv = rng.normal(0, 2, (offsets[-1], 3 * heads * dh)).astype(np.float32)
    got = lib.encoder_attention(qkv, offsets, heads, 1 / math.sqrt(dh))
    want = kernels_ref.encoder_attention_ref(qkv.astype(np.float64), offsets, heads, 1 / math.sqrt(dh))
    assert got.shape == (offsets[-1], heads * dh) and np.abs(got - want).max() <= 2e-5
    # each text attends to itself only: the same rows alone give the same numbers
    a, b = offsets[-2], offsets[-1]
    alone = lib.encoder_attention(np.ascontiguousarray(qkv[a:b]), [0, b - a], heads, 1 / math.sqrt(dh))
    assert np.array_equal(alone, got[a:b])


def test_encoder_attention_threads_nan_and_refusals(lib, rng):
    offsets = np.arange(0, 33 * 20 + 1, 20)  # 33 texts of 20 tokens
    qkv = rng.normal(0, 1, (offsets[-1], 3 * 384)).astype(np.float32)
    results = []
    try:
        for threads in (1, 2):
            lib.set_num_threads(threads)
            results.append(lib.encoder_attention(qkv, offsets, 12, 0.2))
    finally:
        lib.set_num_threads(None)
    assert np.array_equal(*results)
    qkv[25, 5] = np.nan  # a query of text 1, head 0: that row's head 0 only
    got = lib.encoder_attention(qkv, offsets, 12, 0.2)
    assert np.isnan(got[25, :32]).all() and np.isfinite(np.delete(got, 25, axis=0)).all()
    for bad, message in (([0, 5, 3, 660], "offsets must rise from 0 to qkv's 660 rows"),
                         ([1, 660], "offsets must rise from 0"), ([0, 659], "offsets must rise")):
        with pytest.raises(KernelError, match=message):
            lib.encoder_attention(qkv, bad, 12, 0.2)
    with pytest.raises(KernelError, match=r"qkv must be \(rows, 3 \* heads \* head_dim\) for 5 heads"):
        kernels.encoder_attention(qkv, offsets, 5, 0.2)


# -------------------------------------------------------------------------------------------------- errors


# What only C refuses (the layout of x: the module functions take any and run the numpy twin), and settings;
# SAME_REFUSALS below holds what both paths refuse.
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lib: lib.gelu(np.zeros(4)), "gelu: x must be a C-contiguous float32 array, found float64"),
        (lambda lib: lib.gelu(np.zeros((4, 4), np.float32).T), "found float32 array of shape (4, 4), non-contiguous"),
        (lambda lib: lib.layer_norm(np.zeros((2, 3), np.float32), np.zeros(4), None, 1e-5),
         "layer_norm: weight must be a float vector of shape (3,)"),
        (lambda lib: lib.layer_norm(np.zeros((2, 3), np.float32), None, None, float("nan")),
         "layer_norm: eps must be finite"),
        (lambda lib: lib.softmax(np.zeros((2, 3), np.float32), np.zeros((2, 3), bool)),
         "softmax: mask must be additive floats"),
        (lambda lib: lib.set_num_threads(0), "set_num_threads: expected an integer >= 1, found 0"),
        (lambda lib: lib.set_isa("sve9"), "set_isa: 'sve9' is not available here"),
    ],
)
def test_bad_arguments_raise_clear_errors(lib, call, message):
    with pytest.raises(KernelError) as err:
        call(lib)
    assert message in str(err.value)


def test_read_only_and_overlapping_outputs_are_refused(lib):
    frozen = np.zeros((2, 8), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(KernelError, match="gelu: x is read-only"):
        lib.gelu(frozen)
    with pytest.raises(KernelError, match="gelu: x is read-only"):
        kernels.gelu(frozen)  # the numpy path checks the same
    buf = np.zeros(20, np.float32)
    with pytest.raises(KernelError, match="layer_norm: out overlaps x without being the same array"):
        lib.layer_norm(buf[:16].reshape(2, 8), None, None, 1e-5, out=buf[4:20].reshape(2, 8))


# Arguments each path checks alike (not the layout of x, which sends the module functions to the numpy twin).
SAME_REFUSALS = [
    (lambda api: api.gelu(np.zeros((2, 4), np.float32), np.zeros(3, np.float32)),
     "gelu: bias must be a float vector of shape (4,)"),
    (lambda api: api.layer_norm(np.zeros((2, 3), np.float32), None, None, 1e-5, np.zeros((3, 2))),
     "layer_norm: residual must be a float array of shape (2, 3)"),
    (lambda api: api.layer_norm(np.zeros((2, 0), np.float32), None, None, 1e-5),
     "layer_norm: x needs a non-empty last axis, found shape (2, 0)"),
    (lambda api: api.layer_norm(np.zeros((2, 3), np.float32), None, None, 1e-5, out=np.zeros((3, 2), np.float32)),
     "layer_norm: out must have shape (2, 3), found (3, 2)"),
    (lambda api: api.softmax(np.zeros((2, 3), np.float32), np.zeros((3, 3), np.float32)),
     "softmax: mask of shape (3, 3) does not broadcast against x of shape (2, 3)"),
    (lambda api: api.softmax(np.zeros((2, 3), np.float32), scale="half"),
     "softmax: scale must be a number, found 'half'"),
    (lambda api: api.rms_norm(np.zeros((2, 3), np.float32), np.zeros(4, np.float32), 1e-5),
     "rms_norm: weight must be a float vector of shape (3,)"),
    (lambda api: api.swiglu(np.zeros((2, 3), np.float32), np.zeros((3, 2), np.float32)),
     "swiglu: up must be a float array of shape (2, 3)"),
    (lambda api: api.rope_cache(float("nan"), 8, 2), "rope_cache: base must be finite, found nan"),
    (lambda api: api.rope(np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32), False),
     "rope: x must be (n, heads, dims), found shape (2, 8)"),
    (lambda api: api.rope(np.zeros((2, 3, 8), np.float32), np.zeros((2, 6), np.float32), True),
     "rope: cache must be a float array of shape (2, 8)"),
    (lambda api: api.attention_f16(np.zeros((1, 4, 8), np.float32), np.zeros((2, 16, 8), np.float16),
                                   np.zeros((2, 16, 8), np.float16), 0, 1.0),
     "attention_f16: k (2, 16, 8) and v (2, 16, 8) do not fit q (1, 4, 8)"),
]


@pytest.mark.parametrize("call, message", SAME_REFUSALS)
def test_c_and_numpy_paths_refuse_alike(lib, monkeypatch, call, message):
    # each kernel's checks run once, before the path is chosen: the same words from C and from the twin
    with pytest.raises(KernelError) as from_c:
        call(lib)
    monkeypatch.setattr(kernels, "_default", [None])  # as after get() found no library
    with pytest.raises(KernelError) as from_numpy:
        call(kernels)
    assert message in str(from_c.value) and str(from_c.value) == str(from_numpy.value)


# ------------------------------------------------------------------------------- loading and the fallback


def test_missing_library_returns_none_and_warns_once(tmp_path, caplog):
    missing = tmp_path / "libvotive.so"
    with caplog.at_level(logging.WARNING, logger="votive.quant.kernels"):
        assert kernels.load(missing) is None
        assert kernels.load(missing) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(missing) in warnings[0].getMessage() and "numpy path" in warnings[0].getMessage()


def test_file_that_is_not_the_library_is_refused(tmp_path, caplog):
    junk = tmp_path / "libvotive.so"
    junk.write_bytes(b"not an ELF file")
    with caplog.at_level(logging.WARNING, logger="votive.quant.kernels"):
        assert kernels.load(junk) is None
    assert f"votive C kernels unavailable ({junk}: " in caplog.text


def test_module_functions_fall_back_to_numpy_without_library(monkeypatch, rng):
    monkeypatch.setattr(kernels, "_default", [None])  # as after get() found no library
    assert not kernels.available() and kernels.num_threads() == 1
    x = rng.normal(0, 2, (4, 33)).astype(np.float32)
    np.testing.assert_allclose(kernels.gelu(x.copy()), gelu_exact(x).reshape(x.shape), rtol=0, atol=1e-6)
    w = np.ones(33, np.float32)
    np.testing.assert_allclose(kernels.layer_norm(x, w, w, 1e-5), layer_norm_exact(x, w, w, 1e-5), atol=2e-5)
    np.testing.assert_allclose(kernels.softmax(x.copy(), scale=0.5), softmax_exact(x, None, 0.5), atol=1e-6)
    with pytest.raises(KernelError, match="gelu: bias must be a float vector of shape"):
        kernels.gelu(x, np.zeros(5, np.float32))


def test_module_functions_take_any_layout(rng):
    # C when the library is there and x is float32 C-contiguous, numpy otherwise: same numbers either way
    x = rng.normal(0, 2, (33, 4)).astype(np.float32)
    np.testing.assert_allclose(kernels.gelu(x.T.copy()), kernels.gelu(np.array(x.T, order="F")), atol=1e-6)
    w = np.ones(4, np.float64)
    np.testing.assert_allclose(kernels.layer_norm(x, w, w, 1e-5), layer_norm_exact(x, w, w, 1e-5), atol=2e-5)


def test_c_selftest_program_passes(built):
    done = subprocess.run([str(built[1])], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("all passed")


# ---------------------------------------------------------------------------------------------- the build


class RecordingRun:
    """Stands in for subprocess.run: records each command and writes the -o file a compiler would."""

    def __init__(self, machine="x86_64-linux-gnu", fail_on=None):
        self.machine, self.fail_on, self.calls = machine, fail_on, []

    def __call__(self, args, **kwargs):
        self.calls.append(args)
        if "-dumpmachine" in args:
            return subprocess.CompletedProcess(args, 0, self.machine + "\n", "")
        if self.fail_on and any(self.fail_on in a for a in args):
            return subprocess.CompletedProcess(args, 1, "", "error: bad things")
        with open(args[args.index("-o") + 1], "wb") as fh:
            fh.write(b"\x7fELF")
        return subprocess.CompletedProcess(args, 0, "", "")


def test_build_compiles_one_kernel_object_per_isa_of_the_target(tmp_path):
    for machine, isas in (("x86_64-linux-gnu", ["sse2", "avx2", "avx512"]), ("aarch64-linux-gnu", ["neon"]),
                          ("riscv64-linux-gnu", ["generic"])):
        run = RecordingRun(machine)
        out = kernel_build.build_library(tmp_path / machine / "libvotive.so", cc=["fakecc"], run=run)
        assert out.read_bytes() == b"\x7fELF"
        objects = [a[a.index("-o") + 1] for a in run.calls if "-c" in a and "nn_kernels.c" in a[a.index("-c") + 1]]
        assert [o.rsplit("_", 1)[-1][:-2] for o in objects] == isas
        assert any("-mavx2" in a for a in run.calls) == (machine.startswith("x86_64"))
        assert run.calls[-1][1] == "-shared" and "-lm" in run.calls[-1]
        assert not list((tmp_path / machine).glob(".*tmp"))  # no partial file left


def test_build_errors_name_the_step(tmp_path):
    with pytest.raises(kernel_build.KernelBuildError, match="(?s)cannot compile nn_kernels.c for avx2: .*bad things"):
        kernel_build.build_library(tmp_path / "libvotive.so", cc=["fakecc"], run=RecordingRun(fail_on="-mavx2"))
    with pytest.raises(kernel_build.KernelBuildError, match="C compiler 'no-such-cc-here' not found"):
        kernel_build.build_library(tmp_path / "libvotive.so", cc=["no-such-cc-here"])
    assert not (tmp_path / "libvotive.so").exists()


# ------------------------------------------------------------------- decoder rows (csrc/decoder_kernels.c)
# The twins compute fmaf exactly (kernels_ref.fma32) and call libm's cosf/sinf/powf as C does, so these compare
# bit for bit (the RoPE table's scaled variants: tests/test_rope_scaling.py).


def test_fma32_rounds_once():
    from votive.quant.kernels_ref import fma32

    # (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 lies midway between two floats: a tiny addend decides, which a float64 sum
    # (rounded, then rounded to float32) loses
    a = np.float32(1 + 2**-12)
    assert fma32(a, a, np.float32(2.0**-80)) == np.float32(1 + 2**-11 + 2**-23)
    assert fma32(a, a, np.float32(-(2.0**-80))) == np.float32(1 + 2**-11)
    assert fma32(a, a, np.float32(0)) == np.float32(1 + 2**-11)  # a true tie: to even
    x = np.array([1.5, np.inf, np.nan], np.float32)
    np.testing.assert_array_equal(fma32(x, np.float32(2), np.float32(1)), [4.0, np.inf, np.nan])


def test_geglu_is_ggml_table_gelu_times_up():
    from votive.backends import numpy_backend

    # entries of ggml's GELU table (llama-cpp-python 0.3.36's ggml_table_gelu_f16) where a float32 tanh, rounded
    # to half, gives another half: the table's float math and tanhf must be reproduced, not approximated
    gate = np.array([-1.8173828125, -3.77734375, -4.57421875, -5.2890625], np.float32)
    ggml = np.array([-0.0628662109375, -0.00019466876983642578, -3.3974647521972656e-06, -0.0], np.float32)
    np.testing.assert_array_equal(numpy_backend.geglu(gate, np.ones_like(gate)), ggml)
    rng = np.random.default_rng(7)
    gate = rng.normal(0, 4, (3, 700)).astype(np.float32)
    gate[0, :4] = (-10.0, -10.5, 10.0, 12.5)  # ggml's cut-offs: 0 from -10 down, gate * up from 10 up
    up = rng.normal(0, 1, gate.shape).astype(np.float32)
    got = numpy_backend.geglu(gate.copy(), up)  # OpSet.geglu may write into gate (the C kernel does)
    h = gate.astype(np.float16).astype(np.float64)  # the table is indexed by gate rounded to half
    gelu = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))
    gelu[gate <= -10], gelu[gate >= 10] = 0, gate[gate >= 10]
    np.testing.assert_allclose(got, gelu * up, rtol=2**-10, atol=3e-7)  # the table holds halves (2^-24 apart near 0)
    np.testing.assert_array_equal(got[0, :4], [0, 0, 10 * up[0, 2], 12.5 * up[0, 3]])


def test_geglu_is_its_twin_bit_for_bit_on_every_isa(lib, isa, rng):
    """The C GeGLU of each build (F16C rounds eight gates to half at once where the build has it) against the numpy
    lookup, on lengths around the vector of 8; a NaN gate looks up the one quiet NaN of the portable rounding on
    every build (F16C would keep its payload), so all builds give the same bits."""
    from votive.backends import numpy_backend

    table = numpy_backend._gelu_half_table()
    for n in (1, 7, 8, 9, 23, 640):
        gate = rng.normal(0, 4, (2, n)).astype(np.float32)
        gate.flat[:6] = [10.0, -10.0, 9.999999, 6.1e-5, -3e-8, 65504.0][: gate.size]  # cut-offs, subnormal halves
        up = rng.normal(0, 1, gate.shape).astype(np.float32)
        got = lib.geglu(gate.copy(), up, table)
        np.testing.assert_array_equal(got.view(np.uint32), kernels_ref.geglu_ref(gate, up, table).view(np.uint32),
                                      err_msg=f"{isa} n={n}")
    gate = np.full((1, 16), 0.5, np.float32)
    gate.view(np.uint32)[0, [1, 9]] = [0x7FC12345, 0xFFC00001]  # quiet NaNs with payloads, in both halves of 16
    up = np.full_like(gate, 2.0)
    got = lib.geglu(gate.copy(), up, table).view(np.uint32)
    want = [(table[0x7E00] * np.float32(2.0)).view(np.uint32), (table[0xFE00] * np.float32(2.0)).view(np.uint32)]
    assert [got[0, 1], got[0, 9]] == want, isa


def test_rms_norm_matches_its_twin_bit_for_bit(lib, isa, rng):
    for shape in ODD_SHAPES:
        x = rng.normal(0, 3, shape).astype(np.float32)
        w = rng.normal(1, 0.2, shape[-1]).astype(np.float32)
        np.testing.assert_array_equal(lib.rms_norm(x, w, 1e-6), kernels_ref.rms_norm_ref(x, w, 1e-6),
                                      err_msg=str(shape))
        np.testing.assert_array_equal(lib.rms_norm(x, None, 1e-5), kernels_ref.rms_norm_ref(x, None, 1e-5))


def test_swiglu_matches_its_twin_bit_for_bit(lib, isa, rng):
    for shape in ODD_SHAPES:  # tails past a multiple of 16 take libm's expf in both
        gate = rng.normal(0, 4, shape).astype(np.float32)
        gate.flat[:3] = [-200.0, 200.0, 0.0]  # exp's overflow and underflow branches
        up = rng.normal(0, 1, shape).astype(np.float32)
        want = kernels_ref.swiglu_ref(gate, up)
        np.testing.assert_array_equal(lib.swiglu(gate.copy(), up), want, err_msg=str(shape))


def test_ggml_exp_is_close_to_exp():
    x = np.linspace(-80, 80, 10001, dtype=np.float32)
    from votive.quant.kernels_ref import ggml_exp_ref

    got = ggml_exp_ref(x).astype(np.float64)
    np.testing.assert_allclose(got, np.exp(x.astype(np.float64)), rtol=3e-7)  # ggml: within about 2 ulp


@pytest.mark.parametrize("neox", [False, True])
def test_rope_matches_its_twin(lib, isa, rng, neox):
    table = lib.rope_cache(10000.0, 64, 40, first=3)
    np.testing.assert_array_equal(table.view(np.uint32), kernels_ref.rope_cache_ref(10000.0, 64, 40, first=3).view(
        np.uint32))
    x = rng.normal(0, 2, (40, 5, 64)).astype(np.float32)
    want = kernels_ref.rope_ref(x, table, neox)
    np.testing.assert_array_equal(lib.rope(x.copy(), table, neox), want)
    # the rotation keeps each pair's length (to rounding): a check independent of the twin
    pairs = (x[..., :32], x[..., 32:]) if neox else (x[..., 0::2], x[..., 1::2])
    rotated = (want[..., :32], want[..., 32:]) if neox else (want[..., 0::2], want[..., 1::2])
    np.testing.assert_allclose(np.hypot(*rotated), np.hypot(*pairs), rtol=1e-5)


@pytest.mark.parametrize("n, q_start, window", [(1, 0, None), (1, 70, None), (7, 0, None), (5, 60, 16), (1, 90, 16)])
def test_attention_f16_matches_its_twin_bit_for_bit(lib, isa, rng, n, q_start, window):
    heads, kv_heads, dims, capacity = 6, 2, 64, 128
    k = rng.normal(0, 1, (kv_heads, capacity, dims)).astype(np.float16)
    v = rng.normal(0, 1, (kv_heads, dims, capacity)).astype(np.float16)
    q = rng.normal(0, 1, (n, heads, dims)).astype(np.float32)
    got = lib.attention_f16(q, k, v, q_start, 0.125, window)
    np.testing.assert_array_equal(got, kernels_ref.attention_f16_ref(q, k, v, q_start, 0.125, window))
    # and it is attention: float64 softmax over the visible keys, to half precision
    i, h = n - 1, heads - 1
    pos = q_start + i
    lo = max(0, pos + 1 - window) if window else 0
    keys, vals = k[h // 3, lo : pos + 1].astype(np.float64), v[h // 3, :, lo : pos + 1].astype(np.float64)
    scores = keys @ q[i, h].astype(np.float64) * 0.125
    p = np.exp(scores - scores.max())
    np.testing.assert_allclose(got[i, h], vals @ (p / p.sum()), atol=5e-3)


@pytest.mark.parametrize("q_start, window", [(98, None), (64, None), (63, 20), (0, None)])
def test_decoded_tokens_attention_reads_only_the_filled_cache(lib, isa, rng, q_start, window):
    """One query (a decoded token) takes each KV head's queries together on the half cache itself: the same bits as
    the twin, with 4 heads to a KV head, a capacity that is not whole 64-key groups (filled 99 of 100: the last
    group runs past the row), and NaN in every cache position not yet written."""
    heads, kv_heads, dims, capacity = 8, 2, 64, 100
    k = np.full((kv_heads, capacity, dims), np.nan, np.float16)
    v = np.full((kv_heads, dims, capacity), np.nan, np.float16)
    filled = q_start + 1
    k[:, :filled] = rng.normal(0, 1, (kv_heads, filled, dims))
    v[:, :, :filled] = rng.normal(0, 1, (kv_heads, dims, filled))
    q = rng.normal(0, 1, (1, heads, dims)).astype(np.float32)
    got = lib.attention_f16(q, k, v, q_start, 0.125, window)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got.view(np.uint32),
                                  kernels_ref.attention_f16_ref(q, k, v, q_start, 0.125, window).view(np.uint32))


@pytest.mark.parametrize("q_start, window, dims", [(1400, None, 80), (1400, 700, 80), (1400, None, 64),
                                                   (1001, 300, 64)])
def test_decoded_tokens_attention_splits_over_threads_with_the_same_bits(lib, isa, rng, q_start, window, dims):
    """A long cache is split over threads by keys, then by value dimensions: the twin's bits for any thread count,
    with 3 heads to a KV head (a run of chains shorter than 4), at 80 dimensions (a tail past whole 64s) and 64
    (AVX-512 sums the lanes of 16 scores at once: chunks of keys start and end inside such a run)."""
    heads, kv_heads, capacity = 6, 2, 1500
    k = rng.normal(0, 1, (kv_heads, capacity, dims)).astype(np.float16)
    v = rng.normal(0, 1, (kv_heads, dims, capacity)).astype(np.float16)
    q = rng.normal(0, 1, (1, heads, dims)).astype(np.float32)
    want = kernels_ref.attention_f16_ref(q, k, v, q_start, 0.11, window).view(np.uint32)
    try:
        for n in (1, 2, 3):
            lib.set_num_threads(n)
            np.testing.assert_array_equal(lib.attention_f16(q, k, v, q_start, 0.11, window).view(np.uint32), want)
    finally:
        lib.set_num_threads(None)


POOL_REBUILDS = """
import os
import numpy as np
from votive.quant import kernels
lib = kernels.get()
rng = np.random.default_rng(0)
k = rng.normal(0, 1, (2, 2048, 128)).astype(np.float16)
v = rng.normal(0, 1, (2, 128, 2048)).astype(np.float16)
q = rng.normal(0, 1, (256, 8, 128)).astype(np.float32)
sizes = []
for cycle in range(13):
    lib.set_num_threads(2)
    lib.attention_f16(q, k, v, 2048 - 256, 0.1)  # the worker keeps a buffer of ~2 MB for the next prompt
    lib.set_num_threads(1)
    lib.attention_f16(q[:1], k, v, 0, 0.1)  # the pool of two is taken down
    sizes.append(int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
print(sizes[-1] - sizes[0])
"""


@pytest.mark.skipif(platform.system() != "Linux", reason="reads /proc/self/statm")
def test_a_rebuilt_pool_leaves_no_worker_buffers_behind(lib):
    """Each worker keeps its attention buffers between calls; a worker leaving with its pool (another thread count)
    frees them: twelve rebuilds after a 2048-position prompt's attention grew the process by 24 MB before."""
    out = subprocess.run([sys.executable, "-c", POOL_REBUILDS], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) < 4 << 20


def test_attention_f16_refuses_caches_that_do_not_fit(lib):
    q = np.zeros((1, 4, 8), np.float32)
    with pytest.raises(KernelError, match="float16"):
        lib.attention_f16(q, np.zeros((2, 16, 8), np.float32), np.zeros((2, 8, 16), np.float16), 0, 1.0)
    with pytest.raises(KernelError, match="do not fit"):
        lib.attention_f16(q, np.zeros((2, 16, 8), np.float16), np.zeros((2, 16, 8), np.float16), 0, 1.0)

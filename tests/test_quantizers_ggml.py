"""votive's quantizers of llama.cpp's Q4_K_M mixture (Q4_K, Q5_K, Q6_K and the fallbacks Q5_0, Q5_1, Q8_0)
against ggml itself: libggml-base from llama-cpp-python (the dev extras' pin), whose quantize_row_*_ref are what
llama_model_quantize reaches without an importance matrix, called through ctypes. Every byte must agree, for the
vectorized quantizer and for its plain-loop `_ref` twin, on random rows and on rows built to hit the edges: all
zero, constant, a huge range, tiny values (fp16 scales underflow), negative only, -0.0, a lone spike.

This libggml-base is built without FMA contraction (it holds no vfmadd instruction), the evaluation order the
codecs mirror; a build that fuses would differ in the last bit of a few blocks (tests/test_quants.py).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from votive.quant import codecs as quants

F32 = np.float32
ROUTINES = {12: "q4_K", 13: "q5_K", 14: "q6_K", 6: "q5_0", 7: "q5_1", 8: "q8_0"}


@pytest.fixture(scope="module")
def libggml():
    llama_cpp = pytest.importorskip("llama_cpp")
    path = Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"
    if not path.is_file():
        pytest.skip(f"no {path}")
    return ctypes.CDLL(str(path))


def ggml_quantize(lib, x: np.ndarray, type_id: int) -> np.ndarray:
    """ggml's quantize_row_<type>_ref over the whole of x (rows back to back), as uint8 (rows, row_bytes)."""
    fmt = quants.FORMATS[type_id]
    x = np.ascontiguousarray(x, F32)
    out = np.zeros(x.size // fmt.block_size * fmt.block_bytes, np.uint8)
    routine = getattr(lib, f"quantize_row_{ROUTINES[type_id]}_ref")
    routine(x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p), ctypes.c_int64(x.size))
    return out.reshape(x.shape[0], -1)


def edge_rows(rng) -> dict[str, np.ndarray]:
    n = 512  # two super-blocks, sixteen 32-element blocks
    spiky = rng.standard_normal(n).astype(F32)
    spiky[::37] *= F32(1e6)
    holes = rng.standard_normal(n).astype(F32)
    holes[256:272] = 0.0  # a zero Q6_K sub-block inside a super-block that is not
    holes[300:332] = 0.0  # a zero Q4_K / Q5_K sub-block
    lone = np.zeros(n, F32)
    lone[5], lone[300] = 1.0, -2.0
    signed_zeros = rng.standard_normal(n).astype(F32)
    signed_zeros[:256] = -0.0
    return {
        "normal": rng.standard_normal(n).astype(F32),
        "weights": (rng.standard_normal(n) * 0.02).astype(F32),
        "zeros": np.zeros(n, F32),
        "constant": np.full(n, 0.37, F32),
        "negative": -np.abs(rng.standard_normal(n)).astype(F32),
        "positive": np.abs(rng.standard_normal(n)).astype(F32),
        "tiny": (rng.standard_normal(n) * 1e-20).astype(F32),
        "small": (rng.standard_normal(n) * 1e-8).astype(F32),
        "huge": (rng.standard_normal(n) * 1e12).astype(F32),
        "spiky": spiky,
        "holes": holes,
        "integers": rng.integers(-3, 4, n).astype(F32),
        "lone": lone,
        "signed_zeros": signed_zeros,
    }


@pytest.mark.parametrize("type_id", list(ROUTINES), ids=list(ROUTINES.values()))
def test_quantizer_and_its_ref_give_ggmls_bytes_on_edge_rows(libggml, type_id):
    rows = edge_rows(np.random.default_rng(type_id))
    x = np.stack(list(rows.values()))
    expected = ggml_quantize(libggml, x, type_id)
    got = quants.quantize(x, type_id)
    ref = quants.quantize_ref(x, type_id)
    block = quants.FORMATS[type_id].block_bytes
    for name, want, fast, slow in zip(rows, expected, got, ref):
        bad = np.nonzero((want.reshape(-1, block) != fast.reshape(-1, block)).any(axis=1))[0]
        assert bad.size == 0, f"{ROUTINES[type_id]} row {name!r}: blocks {bad.tolist()} differ from ggml's"
        assert np.array_equal(want, slow), f"{ROUTINES[type_id]}_ref row {name!r} differs from ggml's"


@pytest.mark.parametrize("type_id", list(ROUTINES), ids=list(ROUTINES.values()))
def test_quantizer_gives_ggmls_bytes_on_a_weight_matrix(libggml, type_id):
    """Many blocks of weight-like values (rows of standard deviation 1/sqrt(cols)), some rows scaled up: enough
    blocks that an evaluation order differing from C's would show."""
    rng = np.random.default_rng(100 + type_id)
    x = (rng.standard_normal((96, 1024)) / 32).astype(F32)
    x[::7] *= F32(50.0)
    np.testing.assert_array_equal(quants.quantize(x, type_id), ggml_quantize(libggml, x, type_id))


def test_round_trip_error_of_q6_K_and_q5_K_within_ggml_bounds():
    """test-quantize-fns' bound on the reference quantizers' round trip (0.002 for every k-quant)."""
    x = (0.1 + 2 * np.cos(np.arange(4096, dtype=np.float64))).astype(F32)
    for type_id in (13, 14, 6, 7):
        back = quants.dequantize(quants.quantize(x, type_id), type_id)[0]
        assert np.sqrt(np.sum((back.astype(np.float64) - x) ** 2)) / x.size < 0.002

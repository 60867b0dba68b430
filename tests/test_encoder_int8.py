"""Encoders quantized at load to int8 with one scale per row (`quantize="int8"`, issue 15): the AVX512-VNNI product
(csrc/encoder_q8.c's vt_i8_matmul through numpy_linears.EncoderI8Linear) against its twin bit for bit, and both
against float64 products; MiniLM's embeddings against sentence-transformers' float reference; the refusals (a
decoder, a backend without the linear). The twin runs where the CPU lacks AVX512-VNNI. No timing."""

from __future__ import annotations

import json

import numpy as np
import pytest

import votive
from votive.backends import numpy_backend
from votive.backends.numpy_linears import EncoderI8Linear, encoder_i8_reference, pack_i8, quantize_rows_i8, unpack_i8
from votive.errors import InputError

needs_kernel = pytest.mark.skipif(EncoderI8Linear(np.ones((1, 1), np.float32))._entry is None,
                                  reason="no AVX512-VNNI CPU or no C library: the twin answers (tested below)")


def test_rows_quantize_to_127_steps_of_their_largest_magnitude():
    x = np.array([[0.5, -1.0, 0.25, 0.0], [0, 0, 0, 0], [3.0, np.inf, 1, 1], [1, np.nan, 1, 1]], np.float32)
    scales, quants = quantize_rows_i8(x)
    assert scales[0] == np.float32(1.0) / np.float32(127) and quants[0].tolist() == [64, -127, 32, 0]  # 63.5 -> 64
    assert scales[1] == 0 and not quants[1].any()
    assert np.isnan(scales[2:]).all()  # inf and NaN rows: NaN outputs, never a silent number


@needs_kernel
@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (3, 5, 7), (7, 13, 100), (20, 1152, 384), (97, 130, 383),
                                     (130, 384, 1536), (5, 9, 64), (6, 4, 65)])
def test_kernel_equals_its_twin_bit_for_bit(m, n, k):
    rng = np.random.default_rng(m * 1000 + n + k)
    w = rng.standard_normal((n, k), dtype=np.float32)
    x = rng.standard_normal((m, k), dtype=np.float32)
    x[0, : min(k, 10)] *= 50  # one large value: the row's other quants get coarse, the arithmetic stays exact
    lin = EncoderI8Linear(w)
    got = lin(x)
    assert got.dtype == np.float32 and got.shape == (m, n)
    assert np.array_equal(got, encoder_i8_reference(lin.quants, lin.scales, x))
    exact = x.astype(np.float64) @ w.T.astype(np.float64)
    # each factor within half a step (max / 254) of its value: the error is bounded by the rows' magnitudes
    bound = k * (np.abs(x).max(1)[:, None] * np.abs(w).max(1)[None, :]) / 254 * 2
    assert np.all(np.abs(got - exact) <= bound)
    assert lin(np.zeros((0, k), np.float32)).shape == (0, n)


@needs_kernel
@pytest.mark.parametrize("n, k", [(1, 1), (5, 7), (17, 33), (1536, 384), (20, 100)])
def test_weights_packed_in_c_equal_numpys_quants(n, k):
    rng = np.random.default_rng(n + k)
    w = rng.standard_normal((n, k), dtype=np.float32)
    if n > 4:
        w[3, k // 2], w[4] = np.nan, 0  # a NaN row (scale NaN, quants 0) and a zero row (scale 0)
    lin = EncoderI8Linear(w)  # C: vt_i8_pack
    scales, quants = quantize_rows_i8(w)
    assert np.array_equal(lin.scales, scales, equal_nan=True) and np.array_equal(lin.packed, pack_i8(quants))
    assert np.array_equal(lin.sums, quants.sum(axis=1, dtype=np.int32))
    assert np.array_equal(unpack_i8(lin.packed, n, k), quants)


@needs_kernel
def test_kernel_nan_rows_and_the_fused_rows():
    rng = np.random.default_rng(2)
    parts = [EncoderI8Linear(rng.standard_normal((n, 64), dtype=np.float32), f"w{n}") for n in (8, 12, 4)]
    fused = EncoderI8Linear.concatenate(parts)
    x = rng.standard_normal((5, 64), dtype=np.float32)
    x[1, 7], x[3, 0] = np.nan, -np.inf
    got = fused(x)
    assert np.array_equal(got, np.concatenate([p(x) for p in parts], axis=1), equal_nan=True)
    assert np.isnan(got[[1, 3]]).all() and np.isfinite(got[[0, 2, 4]]).all()
    assert EncoderI8Linear.concatenate([parts[0], np.ones((2, 64))]) is None


def test_twin_answers_where_the_kernel_cannot_run(monkeypatch):
    rng = np.random.default_rng(3)
    lin = EncoderI8Linear(rng.standard_normal((10, 48), dtype=np.float32))
    x = rng.standard_normal((4, 48), dtype=np.float32)
    want = encoder_i8_reference(lin.quants, lin.scales, x)
    monkeypatch.setattr(lin, "_entry", None)
    assert np.array_equal(lin(x), want)


def test_minilm_int8_keeps_its_embeddings(minilm_dir, reference_dir):
    model = votive.load(str(minilm_dir), backend="numpy", quantize="int8")
    assert all(type(layer.qkv["wqkv"]) is EncoderI8Linear and type(layer.w["w_down"]) is EncoderI8Linear
               for layer in model.model.layers)
    got = model.embed(json.loads((reference_dir / "minilm_sentences.json").read_text())["sentences"])
    want = np.load(reference_dir / "minilm_embeddings.npy")  # sentence-transformers, float32
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99 and cos.mean() >= 0.995, (cos.min(), cos.mean())


def test_int8_is_refused_where_it_does_not_apply(minilm_dir, monkeypatch):
    monkeypatch.delattr(numpy_backend, "encoder_int8_linear")
    with pytest.raises(InputError, match="quantize='int8' runs on the numpy backend only"):
        votive.load(str(minilm_dir), backend="numpy", quantize="int8")
    with pytest.raises(InputError, match="quantize='int9' is not a choice .*int8"):
        votive.load(str(minilm_dir), quantize="int9")
    # a decoder's refusal: tests/test_hf_decoders.py::test_quantize_choices_are_checked

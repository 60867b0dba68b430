"""The encoders' tiled Q8_0 product (csrc/encoder_q8.c through numpy_linears.EncoderQ8Linear, issue 15) against
its slow twin `encoder_q8_reference` (the same Q8_0 numbers, integer block sums exact, summed in float64) and
against the decoders' QuantLinear it replaces for MiniLM quantized at load. Skipped where the CPU has no
AVX512-VNNI or the C library is missing (then `make` hands the QuantLinear back, checked too). No timing."""

from __future__ import annotations

import json

import numpy as np
import pytest

import votive
from votive.backends import get_backend, numpy_backend
from votive.backends.numpy_linears import EncoderQ8Linear, QuantLinear, _vnni_entry, encoder_q8_reference
from votive.models.hf_checkpoint import quantize_rows
from votive.quant.ggml_types import GGMLType

needs_kernel = pytest.mark.skipif(_vnni_entry("vt_eq8_matmul") is None, reason="no AVX512-VNNI CPU or no C library")


def _quant_linear(rng, out, inp):
    w = rng.standard_normal((out, inp), dtype=np.float32)
    blocks = quantize_rows(w, "F32", GGMLType.Q8_0)
    return blocks, QuantLinear(blocks, GGMLType.Q8_0, (out, inp))


@needs_kernel
@pytest.mark.parametrize("out_in", [(384, 384), (1536, 384), (384, 1536), (37, 96), (5, 64), (3, 32)])
def test_tiled_product_matches_its_slow_twin_and_the_decoders_kernel(out_in):
    rng = np.random.default_rng(sum(out_in))
    blocks, plain = _quant_linear(rng, *out_in)
    fast = EncoderQ8Linear.make(plain)
    assert type(fast) is EncoderQ8Linear and fast.blocks is None  # the weight held once, as quants and scales
    ids = np.array([0, out_in[0] - 1, out_in[0] // 2])
    assert np.array_equal(fast.rows(ids), plain.rows(ids))
    for rows in (1, 2, 3, 4, 5, 7, 8, 9, 33, 130):
        x = rng.standard_normal((rows, out_in[1]), dtype=np.float32)
        x[0, :32] = 0  # an all-zero block: scale 0, quants 0
        got = fast(x)
        assert got.shape == (rows, out_in[0]) and got.dtype == np.float32
        ref = encoder_q8_reference(blocks, x)
        scale = np.abs(ref).max()
        assert np.abs(got - ref).max() <= 1e-6 * scale, rows
        assert np.abs(got - plain(x)).max() <= 2e-6 * scale, rows
    assert fast(np.zeros((0, out_in[1]), np.float32)).shape == (0, out_in[0])


def test_make_keeps_what_the_kernel_does_not_take():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 64), dtype=np.float32)
    q5 = QuantLinear(quantize_rows(w, "F32", GGMLType.Q5_0), GGMLType.Q5_0, (8, 64))
    assert EncoderQ8Linear.make(q5) is q5
    dense = np.ones((4, 4), np.float32)
    assert EncoderQ8Linear.make(dense) is dense
    if _vnni_entry("vt_eq8_matmul") is None:  # no kernel here: the Q8_0 linear comes back as it was
        _, q8 = _quant_linear(rng, 8, 64)
        assert EncoderQ8Linear.make(q8) is q8


@needs_kernel
def test_minilm_q8_0_takes_the_tiled_product_and_keeps_its_embeddings(minilm_dir, reference_dir, monkeypatch):
    sentences = json.loads((reference_dir / "bench_sentences.json").read_text())["sentences"][:64]
    model = votive.load(str(minilm_dir), backend="numpy", quantize="q8_0")
    assert all(type(layer.w["w_up"]) is EncoderQ8Linear for layer in model.model.layers)
    fast = model.embed(sentences)
    monkeypatch.setattr(numpy_backend, "encoder_linear", lambda lin: lin)  # the decoders' kernel instead
    plain = votive.load(str(minilm_dir), backend="numpy", quantize="q8_0")
    assert type(plain.model.layers[0].w["w_up"]) is QuantLinear
    slow = plain.embed(sentences)
    # Each product agrees to ~1e-7, but a difference that small moves some activations across a rounding edge of
    # the next layer's Q8_0 quantization, so the two runs differ by quantization noise (measured min 0.99982).
    cos = (fast * slow).sum(1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(slow, axis=1)
    assert cos.min() >= 0.9995
    expected = np.load(reference_dir / "minilm_embeddings.npy")
    ref_sentences = json.loads((reference_dir / "minilm_sentences.json").read_text())["sentences"]
    for enc in (model, plain):  # both held to sentence-transformers alike
        got = enc.embed(ref_sentences)
        cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
        assert cos.min() >= 0.999


def test_backend_offers_the_encoder_linear():
    assert get_backend("numpy").encoder_linear == EncoderQ8Linear.make


@needs_kernel
def test_fused_qkv_gives_each_projection_its_own_numbers():
    rng = np.random.default_rng(7)
    parts = [EncoderQ8Linear.make(_quant_linear(rng, 384, 384)[1]) for _ in range(3)]
    fused = EncoderQ8Linear.concatenate(parts)
    assert fused.out_features == 1152 and all(p.out_features == 384 for p in parts)
    x = rng.standard_normal((40, 384), dtype=np.float32)
    assert np.array_equal(fused(x), np.concatenate([p(x) for p in parts], axis=1))
    assert EncoderQ8Linear.concatenate([parts[0], np.ones((4, 384), np.float32)]) is None


@needs_kernel
def test_minilm_q8_0_layers_fuse_q_k_and_v(minilm_dir):
    model = votive.load(str(minilm_dir), backend="numpy", quantize="q8_0")
    layer = model.model.layers[0]
    assert type(layer.qkv["wqkv"]) is EncoderQ8Linear and layer.qkv["wqkv"].out_features == 3 * 384

"""Every layer of a BERT-style encoder in one C call (votive.models.encoder_pass, csrc/encoder_pass.c): the pass
calls the kernels `EncoderLayer.packed` calls, with the same arguments in the same order, so its hidden states are
that method's bit for bit, float and int8, for BERT (MiniLM) and XLM-RoBERTa, texts of mixed lengths in one
batch. Models it cannot run exactly (Q8_0 and GGUF-held linears, matrices C would not take in place, another
backend) keep the per-op path. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import votive
from votive.backends import get_backend
from votive.errors import KernelError
from votive.models import encoder_pass
from votive.quant import kernels
from votive.testing.encoder_folders import SPECS, write_xlm_roberta_folder

needs_c = pytest.mark.skipif(not kernels.available(), reason="the C kernels are not built")
TOKENIZER = Path(__file__).parent / "data" / "unigram" / "tokenizer.json"


def _texts(reference_dir) -> list[str]:
    texts = json.loads((reference_dir / "bench_sentences.json").read_text())["sentences"][:20]
    return texts + ["a", "short one", "x " * 70]  # 3 .. 70+ tokens in one batch


def _both(encoder, texts):
    """The hidden states of `texts` through the C pass and through the per-op packed path."""
    ids = encoder.tokenize(texts)
    T = max(len(i) for i in ids)
    mask = np.array([[1] * len(i) + [0] * (T - len(i)) for i in ids], np.int64)
    ids = np.array([i + [0] * (T - len(i)) for i in ids], np.int64)
    model = encoder.model
    whole = model.whole
    got = np.asarray(model.forward(ids, mask))
    model.whole = None
    try:
        want = np.asarray(model.forward(ids, mask))
    finally:
        model.whole = whole
    return got, want


@needs_c
@pytest.mark.parametrize("quantize", [None, "int8"])
def test_minilm_through_the_pass_is_the_per_op_path_bit_for_bit(minilm_dir, reference_dir, quantize):
    if quantize == "int8" and kernels.get().vnni_entry("vt_i8_matmul") is None:
        pytest.skip("no AVX512-VNNI here: int8 runs its numpy twin, which the pass does not take")
    enc = votive.load(str(minilm_dir), backend="numpy", **({"quantize": quantize} if quantize else {}))
    assert isinstance(enc.model.whole, encoder_pass.EncoderPass)
    if quantize is None:  # float q, k, v are read where they are: their stacked copy waits for the per-op path
        enc.embed(["a first text"])
        assert not any("qkv" in vars(layer) for layer in enc.model.layers)
    got, want = _both(enc, _texts(reference_dir))
    assert np.array_equal(got, want)
    assert np.abs(want).max() > 0  # a real run, not two empty ones
    assert all(vars(layer).get("qkv") is not None for layer in enc.model.layers)  # the per-op path stacked them


@needs_c
@pytest.mark.parametrize("width", [32, 40])  # 40: q, k and v each end in a part-filled panel of 16 rows of W
def test_xlm_roberta_through_the_pass_is_the_per_op_path_bit_for_bit(tmp_path, reference_dir, width):
    spec = SPECS["xlm-roberta"]
    spec = dict(spec, config=dict(spec["config"], hidden_size=width, intermediate_size=2 * width))
    enc = votive.load(str(write_xlm_roberta_folder(tmp_path / "xlmr", TOKENIZER, spec)), backend="numpy")
    assert isinstance(enc.model.whole, encoder_pass.EncoderPass)
    got, want = _both(enc, _texts(reference_dir))
    assert np.array_equal(got, want)


@needs_c
def test_one_text_alone_and_in_a_batch_are_the_same(minilm_dir, reference_dir):
    enc = votive.load(str(minilm_dir), backend="numpy")
    texts = _texts(reference_dir)
    together = enc.embed(texts)
    alone = np.stack([enc.embed([t])[0] for t in texts[-3:]])
    assert np.array_equal(together[-3:], alone)


@needs_c
def test_a_read_only_array_is_copied_and_rows_must_match_the_offsets(minilm_dir):
    whole = votive.load(str(minilm_dir), backend="numpy").model.whole
    x = np.random.default_rng(0).standard_normal((7, 384)).astype(np.float32)
    x.flags.writeable = False
    kept = x.copy()
    y = whole(x, np.array([0, 3, 7]))
    assert y is not x and y.shape == (7, 384) and np.isfinite(y).all() and np.array_equal(x, kept)
    for offsets, rows in (([0, 3, 8], x), ([0, 7], x[:, :100]), ([7], x)):
        with pytest.raises(KernelError, match="do not match"):
            whole(np.ascontiguousarray(rows), np.array(offsets))


@needs_c
def test_bad_offsets_are_refused_by_c(minilm_dir):
    whole = votive.load(str(minilm_dir), backend="numpy").model.whole
    x = np.zeros((4, 384), np.float32)
    with pytest.raises(KernelError):
        whole(x, np.array([0, 3, 2, 4]))  # a text of -1 rows
    with pytest.raises(KernelError):
        whole(x, np.array([1, 4]))  # the first text must start at row 0


@needs_c
def test_models_the_pass_cannot_run_exactly_keep_the_per_op_path(minilm_dir, monkeypatch):
    assert votive.load(str(minilm_dir), backend="numpy", quantize="q8_0").model.whole is None
    enc = votive.load(str(minilm_dir), backend="numpy")
    layers = enc.model.layers
    assert encoder_pass.encoder_pass_for(get_backend("numpy"), layers) is not None
    # a matrix C would not read in place (kernels.linear gives it to BLAS): the pass would differ, so no pass
    w_up = layers[2].w["w_up"]
    monkeypatch.setitem(layers[2].w, "w_up", np.asfortranarray(w_up))
    assert encoder_pass.encoder_pass_for(get_backend("numpy"), layers) is None
    monkeypatch.undo()
    # another backend's ops, or no C library
    assert encoder_pass.encoder_pass_for(type("Ops", (), {"name": "cupy"})(), layers) is None
    monkeypatch.setattr(kernels, "get", lambda: None)
    assert encoder_pass.encoder_pass_for(get_backend("numpy"), layers) is None

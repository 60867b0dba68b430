"""BERT's padding left out of the products (issue 15): a batch of texts of mixed lengths runs its linears, norms,
GELU and (with the numpy backend's `encoder_attention`) attention on the tokens' rows only (`bert.token_rows`,
`bert.run_layers`), each text attending to its own rows. Every token's hidden state must be the padded, masked
run's to float rounding (a float model), and the embeddings the same to a cosine of 1 - 1e-5 (0.999 for Q8_0,
whose activation quants a rounding difference can move by a step); a batch without padding takes the plain path. No
timing is asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest

import votive
from votive.backends import get_backend, numpy_backend
from votive.models import bert


def _padded(monkeypatch):
    """Every position computed, the padding masked in each block's attention (the path of backends without
    `encoder_attention`)."""
    monkeypatch.setattr(bert, "token_rows", lambda ops, mask: None)
    monkeypatch.delattr(numpy_backend, "encoder_attention")


def _hidden(encoder, texts, padded: bool, monkeypatch):
    """The encoder's last hidden states and mask for `texts`, padding skipped or (padded=True) computed."""
    if padded:
        _padded(monkeypatch)
    ids = encoder.tokenize(texts)
    T = max(len(i) for i in ids)
    mask = np.array([[1] * len(i) + [0] * (T - len(i)) for i in ids], np.int64)
    ids = np.array([i + [0] * (T - len(i)) for i in ids], np.int64)
    out = encoder.model.forward(ids, mask)
    monkeypatch.undo()
    return np.asarray(out), mask


@pytest.mark.parametrize("quantize", [None, "q8_0"])
def test_skipping_the_padding_gives_each_token_the_padded_runs_numbers(minilm_dir, reference_dir, quantize,
                                                                       monkeypatch):
    enc = votive.load(str(minilm_dir), backend="numpy", **({"quantize": quantize} if quantize else {}))
    texts = json.loads((reference_dir / "bench_sentences.json").read_text())["sentences"][:24]
    texts += ["a", "short one", "x " * 60]  # lengths 3 .. 60+ tokens in one batch
    packed, mask = _hidden(enc, texts, False, monkeypatch)
    padded, _ = _hidden(enc, texts, True, monkeypatch)
    keep = mask.astype(bool)
    if quantize is None:
        assert np.abs(packed[keep] - padded[keep]).max() <= 2e-6 * np.abs(padded[keep]).max()
    assert not packed[~keep].any()  # the padding's states are zeros now, never read by pooling
    got = enc.embed(texts)
    _padded(monkeypatch)
    want = enc.embed(texts)
    cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    # Q8_0: a rounding difference moves an activation's quant by a step; still far closer than to the float model
    assert cos.min() >= (1 - 1e-5 if quantize is None else 0.999)


def test_token_rows_lists_the_tokens_and_is_none_without_padding():
    ops = get_backend("numpy")
    assert bert.token_rows(ops, np.ones((3, 5), np.int64)) is None
    rows = bert.token_rows(ops, np.array([[1, 1, 0], [1, 1, 1]], np.int64))
    assert rows.tolist() == [0, 1, 3, 4, 5]

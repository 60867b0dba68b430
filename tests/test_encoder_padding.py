"""BERT's padding left out of the products (issue 15): a batch of texts of mixed lengths runs its linears, norms and
GELU on the tokens' rows only (`bert.token_rows`), the padding put back as zeros for attention alone. Every
token's hidden state must be the padded run's bit for bit, float and Q8_0 alike; a batch without padding takes
the plain path. No timing is asserted."""

from __future__ import annotations

import json

import numpy as np
import pytest

import votive
from votive.backends import get_backend
from votive.models import bert


def _hidden(encoder, texts, padded: bool, monkeypatch):
    """The encoder's last hidden states and mask for `texts`, padding skipped or (padded=True) computed."""
    if padded:
        monkeypatch.setattr(bert, "token_rows", lambda ops, mask: None)
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
    assert np.array_equal(packed[keep], padded[keep])
    assert not packed[~keep].any()  # the padding's states are zeros now, never read by pooling
    got = enc.embed(texts)
    monkeypatch.setattr(bert, "token_rows", lambda ops, mask: None)
    assert np.array_equal(got, enc.embed(texts))


def test_token_rows_lists_the_tokens_and_is_none_without_padding():
    ops = get_backend("numpy")
    assert bert.token_rows(ops, np.ones((3, 5), np.int64)) is None
    rows = bert.token_rows(ops, np.array([[1, 1, 0], [1, 1, 1]], np.int64))
    assert rows.tolist() == [0, 1, 3, 4, 5]

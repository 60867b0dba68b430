"""Loads fault their weights in from background threads (votive.formats.safetensors.read_ahead): what each loader
asks to read ahead. A tied token table is the output matrix of a generator (read whole by its first token) but only
looked up by rows in an embedder or a reranker; an encoder's token table is always looked up by rows. No timing is
asserted (benchmarks/cold_start_bench.py measures it)."""

from __future__ import annotations

import pytest

import votive
from votive.backends import get_backend
from votive.formats.gguf import GGUFFile
from votive.formats.weights import WeightStore
from votive.models import load_gguf


@pytest.fixture
def asked(monkeypatch):
    """The tensor names each read_ahead call is given, as one list per call."""
    calls = []
    for cls in (GGUFFile, WeightStore):
        monkeypatch.setattr(cls, "read_ahead", lambda self, names: calls.append(list(names)))
    return calls


def test_a_tied_decoder_reads_its_token_table_ahead_unless_only_rows_are_looked_up(gemma_gguf, asked):
    ops = get_backend("numpy")
    tensors = GGUFFile(gemma_gguf).tensors
    assert "output.weight" not in tensors  # Gemma 3 ties its output to the token table
    load_gguf(gemma_gguf, ops, n_ctx=64)
    assert sorted(asked[-1]) == sorted(tensors)
    load_gguf(gemma_gguf, ops, n_ctx=64, rows_only=True)
    assert sorted(asked[-1]) == sorted(n for n in tensors if n != "token_embd.weight")


def test_an_encoder_reads_its_layers_ahead_but_not_its_token_table(minilm_dir, asked):
    votive.load(str(minilm_dir), backend="numpy")
    names = [n for call in asked for n in call]
    assert names and all(n.startswith("encoder.layer.") for n in names)
    assert len(names) == 6 * 16  # every tensor of MiniLM's 6 layers

"""The encoder's speed paths give the same numbers as the plain ones, bit for bit (issue 15): q, k and v fused
into one product, against three (vt_linear sums each output in one order, wherever its row of W sits). And the
cost / cold-start benchmarks' arithmetic and page-cache tools, on inputs made here. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

from votive.backends import get_backend, numpy_backend
from votive.models.sentence_encoder import SentenceEncoder

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return SentenceEncoder.from_folder(minilm_dir, get_backend("numpy"))


def test_fused_transposed_layers_equal_the_stored_layout_bit_for_bit(minilm, reference_dir):
    sentences = json.loads((reference_dir / "bench_sentences.json").read_text())["sentences"][:40]
    layers = minilm.model.layers
    assert all(layer.qkv is not None for layer in layers)  # a float checkpoint takes the fused path
    fast = [minilm.embed(sentences, batch_size=b) for b in (1, 32)]
    saved = [layer.qkv for layer in layers]
    try:
        for layer in layers:
            layer.qkv = None  # q, k and v one by one
        plain = [minilm.embed(sentences, batch_size=b) for b in (1, 32)]
    finally:
        for layer, qkv in zip(layers, saved):
            layer.qkv = qkv
    for a, b in zip(fast, plain):
        assert np.array_equal(a, b)
    expected = np.load(reference_dir / "minilm_embeddings.npy")
    got = minilm.embed(json.loads((reference_dir / "minilm_sentences.json").read_text())["sentences"])
    cos = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cos.min() >= 0.99999


def test_packed_attention_equals_the_padded_masked_one(minilm, reference_dir, monkeypatch):
    # the numpy backend's encoder_attention runs each text's rows alone; without it, the padded layout and mask
    sentences = json.loads((reference_dir / "bench_sentences.json").read_text())["sentences"][:48]
    packed = [minilm.embed(sentences, batch_size=b) for b in (1, 16)]
    monkeypatch.delattr(numpy_backend, "encoder_attention")
    padded = minilm.embed(sentences, batch_size=16)
    for got in packed:
        assert np.abs(got - padded).max() <= 2e-6  # unit vectors: float rounding of another summation order


def _load(name):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cost_per_million_by_hand():
    cost = _load("cost")
    assert cost.vcpus(1769) == 1.0 and cost.vcpus(10240) == pytest.approx(5.789, abs=1e-3)
    # 10 ms on 2 cores -> 20 ms on 1 vCPU (1769 MB); 1e6 requests; x86_64 at $0.0000166667/GB-s, $0.20/M requests
    warm = cost.per_million(units_per_request=1, warm_s=0.010, cold_s=0.5, memory_mb=1769, arch="x86_64",
                            cold_share=0.0)
    assert warm == pytest.approx(0.20 + 1e6 * 0.020 * 1769 / 1024 * 0.0000166667)
    # all cold: each request also pays the 0.5 s start, unscaled; 32 per request: 31,250 requests
    cold = cost.per_million(units_per_request=32, warm_s=0.100, cold_s=0.5, memory_mb=3008, arch="arm64",
                            cold_share=1.0)
    # 0.1 s x 2 / 1.70 vCPUs + 0.5 s = 0.6176 s, billed as 0.618 s (Lambda rounds up to the millisecond)
    assert cold == pytest.approx(31250 * (0.2e-6 + 0.618 * 3008 / 1024 * 0.0000133334))
    # 10240 MB has ~5.8 vCPUs: no speed-up past the 2 measured cores is claimed
    assert cost.scaled(0.010, 10240) == pytest.approx(0.010)


def test_cost_tables_from_results_files():
    cost = _load("cost")
    emb = {"meta": {"date": "d", "loadavg_start": [1.0], "loadavg_end": [2.0]},
           "throughput": {n: {"sentences_per_s": {"1": r, "32": 10 * r}} for n, r in
                          (("votive", 100.0), ("ort", 150.0), ("st", 50.0))},
           "cold": {"votive": {"median_wall_s": 0.1}, "ort": {"median_wall_s": 0.3}, "st": {"median_wall_s": 5.0}}}
    text = cost.report(emb, None, None, "gemma3", 256)
    assert text.count("| votive | 1769 |") == 2 and "| sentence-transformers | 10240 | 5.8 |" in text
    cold = {"stacks": {"embed/votive": {"cold_median": {"wall_s": 0.9}}}}
    assert "cold start 0.900 s (page-cold)" in cost.report(emb, None, cold, "gemma3", 256)


def test_eviction_and_mincore_on_a_file_written_here(tmp_path):
    cold = _load("cold_start_bench")
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(1 << 20))
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())  # DONTNEED drops clean pages only
    path.read_bytes()
    assert cold.resident_bytes(str(path)) == 1 << 20
    cold.evict([str(path)])
    if cold.resident_bytes(str(path)) != 0:
        pytest.skip("this file system keeps pages after POSIX_FADV_DONTNEED (tmpfs?)")
    assert cold.resident_bytes(str(tmp_path / "missing")) == 0

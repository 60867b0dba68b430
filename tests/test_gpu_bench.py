"""benchmarks/gpu_bench.py's CPU side: it refuses to run without a GPU, writes its models, counts the bytes a
decoding step reads, maps the shape to PyTorch's config and prints ratios. The GPU measurements themselves run
only on a GPU machine (see the script's docstring)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from votive.backends import numpy_backend
from votive.formats.gguf import GGUFFile
from votive.models import load_gguf

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_stops_at_once_saying_why(bench, capsys, tmp_path):
    def no_gpu():
        raise bench.BenchError("cupy is not installed (No module named 'cupy'); this benchmark needs an NVIDIA GPU")

    assert bench.main(["--work", str(tmp_path)], gpu_probe=no_gpu) == 2
    assert capsys.readouterr().err == ("gpu_bench: cupy is not installed (No module named 'cupy'); this benchmark "
                                       "needs an NVIDIA GPU\n")
    assert list(tmp_path.iterdir()) == []  # nothing written before the check
    if "cupy" not in sys.modules and importlib.util.find_spec("cupy") is None:
        with pytest.raises(bench.BenchError, match=r"cupy is not installed .*pip install 'votive\[gpu\]'"):
            bench.require_gpu()
    assert bench.main(["--formats", "Q2_K"], gpu_probe=no_gpu) == 2
    assert "--formats takes GGML formats with GPU kernels" in capsys.readouterr().err


def test_models_bytes_per_step_and_the_torch_shape(bench, tmp_path):
    lines = []
    paths = bench.write_models(tmp_path, "tiny", ("Q4_K", "Q8_0"), say=lines.append)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["llama-tiny-q4_k.gguf", "llama-tiny-q8_0.gguf"]
    assert len(lines) == 2 and bench.write_models(tmp_path, "tiny", ("Q4_K",), say=lines.append) == {
        "Q4_K": paths["Q4_K"]} and len(lines) == 2  # kept, not rewritten
    f = GGUFFile(paths["Q8_0"])
    everything = sum(t.nbytes for t in f.tensors.values())
    assert bench.bytes_per_token(paths["Q8_0"]) == everything - f.tensors["token_embd.weight"].nbytes
    model = load_gguf(paths["Q4_K"], numpy_backend)
    shape = bench.SHAPES["tiny"]
    assert (model.cfg.n_layers, model.cfg.dim, model.cfg.vocab_size) == (shape.n_layers, shape.dim, shape.vocab)
    ids = bench.prompt_ids(16, shape.vocab)
    assert ids == bench.prompt_ids(16, shape.vocab) and all(259 <= i < shape.vocab for i in ids)
    assert np.isfinite(model.logits(ids)).all()
    cfg = bench.torch_config(bench.SHAPES["1b"])
    assert cfg["hidden_size"] == 2048 and cfg["num_key_value_heads"] == 8 and cfg["head_dim"] == 64
    assert cfg["vocab_size"] == 128256 and cfg["tie_word_embeddings"] is True
    assert 1.2e9 < bench.SHAPES["1b"].n_params() < 1.3e9


def test_the_report_prints_the_ratios_the_targets_are_about(bench):
    results = {"gpu": "NVIDIA H100", "shape": "1b", "params": 1.24e9, "prompt": 128, "decode": 64,
               "bytes_per_token": {"Q4_K": 10**9}, "bandwidth": {"bytes": 2 * 2**30, "seconds": [2 * 2**30 / 2e12]},
               "votive-llm": {"Q4_K": {"decode_s": [0.064], "prompt_s": [0.128]}},
               "torch-llm": {"decode_s": [0.128], "prompt_s": [0.064]},
               "votive-embed": {"batch32_s": [1.0], "batch256_s": [0.5], "sentences": 256},
               "st-embed": {"error": "No module named 'sentence_transformers'"},
               "cold": {"votive-llm": {"median_s": 1.0}, "torch-llm": {"median_s": 4.0}}}
    text = "\n".join(bench.summarize(results))
    assert "copy bandwidth: 2000 GB/s" in text
    assert ("votive Q4_K: decode 1000 tok/s (2.00x torch; 50% of the 2000 tok/s bandwidth bound), prompt 1000 "
            "tok/s (0.50x torch)") in text
    assert "MiniLM batch 256: votive 512 sentences/s, sentence-transformers n/a (n/a)" in text
    assert "cold start LLM: votive 1.00s vs torch 4.00s (ratio 0.25; target <= 0.5)" in text

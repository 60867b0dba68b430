"""Alibaba GTE v1.5 encoders (model_type "new", gte-base-en-v1.5's architecture) against the upstream code.

The upstream model is Hub remote code (Alibaba-NLP/new-impl), not in transformers.
tests/data/rotary_encoders/make_reference.py ran that code (README.md there says where it came from) on random
folders of each shape in specs.GTE_VARIANTS, all texts in one padded batch, and stored the mean-pooled,
normalized embeddings of specs.TEXTS (reference.npz). The tests rebuild the folders from the seed and embed the
texts with votive in batches of three.

The two agree to ~2e-7; the tolerances below (cosine >= 0.9999, max abs <= 1e-4 on unit vectors) still fail on
a slip of the RoPE frequencies: dropping gte-base's NTK scaling gives cosine 0.9976, factor 4 instead of 2 0.997.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from votive.backends import get_backend
from votive.errors import ModelConfigError, WeightFileError
from votive.models.sentence_encoder import SentenceEncoder
from votive.testing.rotary_encoder_folders import GteShape, gte_tensors, write_gte_folder, write_safetensors

DATA = Path(__file__).resolve().parent / "data" / "rotary_encoders"


def _specs():
    spec = importlib.util.spec_from_file_location("rotary_encoder_specs", DATA / "specs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


specs = _specs()
VARIANTS = list(specs.GTE_VARIANTS)


@pytest.fixture(scope="module")
def reference():
    return np.load(DATA / "reference.npz")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    root = tmp_path_factory.mktemp("gte")
    return {name: SentenceEncoder.from_folder(write_gte_folder(root / name, shape), get_backend("numpy"))
            for name, shape in specs.GTE_VARIANTS.items()}


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("name", VARIANTS)
def test_token_ids_are_the_references(encoders, reference, name):
    assert encoders[name].tokenize(specs.TEXTS) == specs.unpadded_ids(reference[f"gte/{name}/ids"])


@pytest.mark.parametrize("name", VARIANTS)
def test_embeddings_match_upstream_code(encoders, reference, name):
    got = encoders[name].embed(specs.TEXTS, batch_size=specs.BATCH_SIZE)
    assert got.shape == (len(specs.TEXTS), specs.GTE_VARIANTS[name].hidden_size) and got.dtype == np.float32
    _close(got, reference[f"gte/{name}/embeddings"])


def test_padding_does_not_change_a_text(encoders):
    one_by_one = np.stack([encoders["base"].embed(t) for t in specs.TEXTS])
    all_at_once = encoders["base"].embed(specs.TEXTS, batch_size=len(specs.TEXTS))
    assert np.abs(one_by_one - all_at_once).max() <= 1e-5


def test_ntk_frequencies_are_upstreams():
    """gte-base-en-v1.5: head 64, rope_theta 500000, NTK factor 2 -> inv_freq_i = (1e6)^(-2i/64) / 2^(2/64),
    the numbers NTKScalingRotaryEmbedding holds after load (and text-embeddings-inference's gte.rs computes)."""
    from votive.models.gte import Config

    cfg = Config(hidden_size=768, num_attention_heads=12, rope_theta=500000, rope_scaling={"type": "ntk",
                                                                                          "factor": 2.0})
    base, divisors = cfg.rope_frequencies()
    i = np.arange(32)
    inv_freq = base ** (-2.0 * i / 64) / divisors
    assert np.allclose(inv_freq, 1.0 / (1e6 ** (2.0 * i / 64)) / 2 ** (2 / 64), rtol=1e-6)
    assert Config(rope_scaling=None).rope_frequencies() == (10000.0, None)


def test_task_checkpoint_prefix_loads(tmp_path, reference):
    """A NewForMaskedLM checkpoint names the encoder's tensors "new." + ..., beside its lm_head."""
    shape = specs.GTE_VARIANTS["base"]
    folder = write_gte_folder(tmp_path / "prefixed", shape)
    tensors = {"new." + n: t for n, t in gte_tensors(shape).items()}
    tensors["lm_head.dense.weight"] = np.zeros((64, 64), np.float32)
    write_safetensors(folder / "model.safetensors", tensors)
    got = SentenceEncoder.from_folder(folder, get_backend("numpy")).embed(specs.TEXTS, batch_size=3)
    _close(got, reference["gte/base/embeddings"])


def test_unknown_tensor_is_refused(tmp_path):
    folder = write_gte_folder(tmp_path / "extra", GteShape())
    tensors = gte_tensors(GteShape()) | {"encoder.layer.0.attention.q_proj.weight": np.zeros((64, 64), np.float32)}
    write_safetensors(folder / "model.safetensors", tensors)
    with pytest.raises(ModelConfigError, match=r"attention.q_proj.weight.*pack_qkv True"):
        SentenceEncoder.from_folder(folder, get_backend("numpy"))


@pytest.mark.parametrize("key, value, named", [
    ("hidden_act", "relu", "hidden_act"), ("hidden_act", "gelu_new", "hidden_act"),
    ("layer_norm_type", "rms_norm", "layer_norm_type"), ("position_embedding_type", "absolute",
                                                         "position_embedding_type"),
    ("logn_attention_scale", True, "logn_attention_scale"), ("logn_attention_clip1", True, "logn_attention_clip1"),
    ("rope_scaling", {"type": "dynamic", "factor": 2.0}, "rope_scaling"),
    ("rope_scaling", {"type": "ntk", "factor": 2.0, "mixed_b": 0.5}, "rope_scaling.mixed_b"),
])
def test_unsupported_config_is_refused_by_name(tmp_path, key, value, named):
    folder = write_gte_folder(tmp_path / "m", GteShape(extra=((key, value),)))
    with pytest.raises(ModelConfigError, match=named):
        SentenceEncoder.from_folder(folder, get_backend("numpy"))


def test_absent_keys_take_newconfigs_defaults(tmp_path):
    """NewConfig defaults type_vocab_size to 1: a config.json without it needs the one-row segment table."""
    folder = write_gte_folder(tmp_path / "m", GteShape(type_vocab_size=0))
    config = json.loads((folder / "config.json").read_text())
    del config["type_vocab_size"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightFileError, match="missing tensor .embeddings.token_type_embeddings.weight"):
        SentenceEncoder.from_folder(folder, get_backend("numpy"))


def test_cuda_backend_matches_upstream_code(cuda_ops, tmp_path, reference):
    """gte-base's settings on votive's CUDA backend (its kernels on the CPU emulator, or a real GPU): the NTK
    table comes from the GPU's rope_table with per-pair divisors."""
    folder = write_gte_folder(tmp_path / "base", specs.GTE_VARIANTS["base"])
    enc = SentenceEncoder.from_folder(folder, cuda_ops)
    got = enc.embed(specs.TEXTS, batch_size=specs.BATCH_SIZE)
    assert isinstance(got, np.ndarray) and enc.backend == "cupy"
    _close(got, reference["gte/base/embeddings"])

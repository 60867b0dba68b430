"""BERT encoder: the real all-MiniLM-L6-v2 against sentence-transformers' outputs, and the checkpoint variants
(prefixes, TF-era names, half precision, pooling modes) on tiny random models built here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from votive.backends import get_backend
from votive.errors import InputError, ModelConfigError, WeightFileError
from votive.models.sentence_encoder import SentenceEncoder


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return SentenceEncoder.from_folder(minilm_dir, get_backend("numpy"))


@pytest.fixture(scope="module")
def reference(reference_dir):
    sentences = json.loads((reference_dir / "minilm_sentences.json").read_text())
    return sentences, np.load(reference_dir / "minilm_embeddings.npy")


def test_token_ids_equal_reference(minilm, reference):
    sentences, _ = reference
    assert minilm.tokenize(sentences["sentences"]) == sentences["input_ids"]


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_embeddings_match_sentence_transformers(minilm, reference, batch_size):
    sentences, expected = reference
    got = minilm.embed(sentences["sentences"], batch_size=batch_size)
    assert got.dtype == np.float32 and got.shape == expected.shape == (8, 384)
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999
    assert np.abs(got - expected).max() <= 1e-4


def test_encode_counts_tokens_and_keeps_order(minilm, reference):
    sentences, expected = reference
    texts = sentences["sentences"][::-1]  # lengths no longer sorted: the batch sorting must undo itself
    vectors, n_tokens = minilm.encode(texts, batch_size=2)
    assert n_tokens == sum(len(ids) for ids in sentences["input_ids"])
    assert np.abs(vectors - expected[::-1]).max() <= 1e-4


def test_single_string_and_empty_list(minilm, reference):
    sentences, expected = reference
    one = minilm.embed(sentences["sentences"][0])
    assert one.shape == (384,) and np.abs(one - expected[0]).max() <= 1e-4
    assert minilm.embed([]).shape == (0, 384)


def test_truncates_to_max_seq_length(minilm):
    assert minilm.max_seq_length == 256  # sentence_bert_config.json, not tokenizer.json's 128
    long_text = "word " * 1000
    assert len(minilm.tokenize([long_text])[0]) == 256
    assert minilm.embed([long_text]).shape == (1, 384)


@pytest.mark.parametrize("bad", [None, 3, [1, 2], ["ok", None], {"a": 1}])
def test_bad_texts_raise_input_error(minilm, bad):
    with pytest.raises(InputError):
        minilm.encode(bad)


# ---------------------------------------------------------------------------------- tiny random checkpoints
TINY = dict(vocab_size=40, hidden_size=8, num_hidden_layers=2, num_attention_heads=2, intermediate_size=16,
            max_position_embeddings=32, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu", model_type="bert")
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(35)]


def _tiny_tensors(rng) -> dict[str, np.ndarray]:
    D, F, L = TINY["hidden_size"], TINY["intermediate_size"], TINY["num_hidden_layers"]
    t = {
        "embeddings.word_embeddings.weight": rng.normal(size=(40, D)),
        "embeddings.position_embeddings.weight": rng.normal(size=(32, D)),
        "embeddings.token_type_embeddings.weight": rng.normal(size=(2, D)),
        "embeddings.LayerNorm.weight": 1 + 0.1 * rng.normal(size=D),
        "embeddings.LayerNorm.bias": 0.1 * rng.normal(size=D),
        "pooler.dense.weight": rng.normal(size=(D, D)),
        "pooler.dense.bias": rng.normal(size=D),
    }
    for i in range(L):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            t[p + name + ".weight"] = rng.normal(size=(D, D)) / np.sqrt(D)
            t[p + name + ".bias"] = 0.1 * rng.normal(size=D)
        t[p + "intermediate.dense.weight"] = rng.normal(size=(F, D)) / np.sqrt(D)
        t[p + "intermediate.dense.bias"] = 0.1 * rng.normal(size=F)
        t[p + "output.dense.weight"] = rng.normal(size=(D, F)) / np.sqrt(F)
        t[p + "output.dense.bias"] = 0.1 * rng.normal(size=D)
        for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
            t[p + norm + ".weight"] = 1 + 0.1 * rng.normal(size=D)
            t[p + norm + ".bias"] = 0.1 * rng.normal(size=D)
    return {k: v.astype(np.float32) for k, v in t.items()}


def _reference_forward(t: dict, ids: list[int]) -> np.ndarray:
    """A plain float64 BERT forward for one unpadded sequence, written independently of votive's layers."""
    from math import erf, sqrt

    def ln(x, w, b):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-12) * w + b

    g = {k: v.astype(np.float64) for k, v in t.items()}
    T, D, H = len(ids), TINY["hidden_size"], TINY["num_attention_heads"]
    x = g["embeddings.word_embeddings.weight"][ids] + g["embeddings.position_embeddings.weight"][:T]
    x = ln(x + g["embeddings.token_type_embeddings.weight"][0], g["embeddings.LayerNorm.weight"],
           g["embeddings.LayerNorm.bias"])
    for i in range(TINY["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda v, n: v @ g[p + n + ".weight"].T + g[p + n + ".bias"]  # noqa: E731
        q, k, v = (lin(x, f"attention.self.{n}").reshape(T, H, -1) for n in ("query", "key", "value"))
        out = np.zeros((T, D))
        for h in range(H):
            s = q[:, h] @ k[:, h].T / sqrt(D // H)
            p_ = np.exp(s - s.max(-1, keepdims=True))
            out[:, h * (D // H):(h + 1) * (D // H)] = (p_ / p_.sum(-1, keepdims=True)) @ v[:, h]
        x = ln(x + lin(out, "attention.output.dense"), g[p + "attention.output.LayerNorm.weight"],
               g[p + "attention.output.LayerNorm.bias"])
        u = lin(x, "intermediate.dense")
        u = u * 0.5 * (1 + np.vectorize(erf)(u / sqrt(2)))
        x = ln(x + lin(u, "output.dense"), g[p + "output.LayerNorm.weight"], g[p + "output.LayerNorm.bias"])
    return x


def _write_tiny(folder, tensors, pooling=None, normalize=True, dtype=np.float32):
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(TINY))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    save_file({k: v.astype(dtype) for k, v in tensors.items()}, str(folder / "model.safetensors"))
    if pooling is not None:
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if normalize:
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize",
                            "type": "sentence_transformers.models.Normalize"})
        (folder / "modules.json").write_text(json.dumps(modules))
        (folder / "1_Pooling").mkdir(exist_ok=True)
        flags = {f"pooling_mode_{m}": m in pooling
                 for m in ("cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens")}
        (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 8, **flags}))
    return folder


TEXTS = ["w1 w2 w3", "w4", "w5 w6 w7 w8 w9 w10 w11", ""]


@pytest.mark.parametrize("pooling", [("mean_tokens",), ("cls_token",), ("max_tokens",), ("mean_sqrt_len_tokens",),
                                     ("cls_token", "mean_tokens")])
def test_pooling_modes_match_plain_reference(tmp_path, pooling):
    tensors = _tiny_tensors(np.random.default_rng(0))
    enc = SentenceEncoder.from_folder(_write_tiny(tmp_path / "m", tensors, pooling), get_backend("numpy"))
    got = enc.embed(TEXTS, batch_size=3)  # mixed lengths inside one padded batch
    for row, ids in zip(got, enc.tokenize(TEXTS)):
        hidden = _reference_forward(tensors, ids)
        parts = {"cls_token": hidden[0], "mean_tokens": hidden.mean(0), "max_tokens": hidden.max(0),
                 "mean_sqrt_len_tokens": hidden.sum(0) / np.sqrt(len(ids))}
        want = np.concatenate([parts[m] for m in ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")
                               if m in pooling])
        want /= np.linalg.norm(want)
        assert np.abs(row - want).max() < 1e-5


def test_prefixed_gamma_beta_and_half_precision_checkpoints(tmp_path):
    tensors = _tiny_tensors(np.random.default_rng(1))
    plain = SentenceEncoder.from_folder(_write_tiny(tmp_path / "plain", tensors, ("mean_tokens",)), get_backend())
    renamed = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in tensors.items()}
    old = SentenceEncoder.from_folder(_write_tiny(tmp_path / "old", renamed, ("mean_tokens",)), get_backend())
    assert np.array_equal(plain.embed(TEXTS), old.embed(TEXTS))
    half = SentenceEncoder.from_folder(
        _write_tiny(tmp_path / "half", tensors, ("mean_tokens",), dtype=np.float16), get_backend())
    assert np.abs(half.embed(TEXTS) - plain.embed(TEXTS)).max() < 1e-2
    assert half.model.w["tok_embed"].dtype == np.float32  # widened once, at load


def test_no_modules_json_means_mean_pooling_without_normalize(tmp_path):
    tensors = _tiny_tensors(np.random.default_rng(2))
    enc = SentenceEncoder.from_folder(_write_tiny(tmp_path / "m", tensors), get_backend())
    ids = enc.tokenize(["w3 w4"])[0]
    assert np.abs(enc.embed(["w3 w4"])[0] - _reference_forward(tensors, ids).mean(0)).max() < 1e-5


def test_checkpoint_problems_are_named(tmp_path):
    tensors = _tiny_tensors(np.random.default_rng(3))
    missing = dict(tensors)
    del missing["encoder.layer.1.output.dense.bias"]
    with pytest.raises(WeightFileError, match="missing tensor 'encoder.layer.1.output.dense.bias'"):
        SentenceEncoder.from_folder(_write_tiny(tmp_path / "a", missing), get_backend())
    extra = dict(tensors, **{"encoder.layer.2.output.dense.bias": np.zeros(8, np.float32)})
    with pytest.raises(ModelConfigError, match="does not use, e.g. 'encoder.layer.2.output.dense.bias'"):
        SentenceEncoder.from_folder(_write_tiny(tmp_path / "b", extra), get_backend())
    wrong = dict(tensors, **{"embeddings.LayerNorm.bias": np.zeros(9, np.float32)})
    with pytest.raises(WeightFileError, match=r"has shape \(9,\), expected \(8,\)"):
        SentenceEncoder.from_folder(_write_tiny(tmp_path / "c", wrong), get_backend())
    folder = _write_tiny(tmp_path / "d", tensors)
    (folder / "config.json").write_text(json.dumps(dict(TINY, hidden_act="relu")))
    with pytest.raises(ModelConfigError, match="hidden_act 'relu' is not supported"):
        SentenceEncoder.from_folder(folder, get_backend())

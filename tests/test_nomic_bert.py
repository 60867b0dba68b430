"""NomicBERT encoders (model_type "nomic_bert", nomic-embed-text-v1.5's architecture) against llama.cpp.

The upstream model is Hub remote code, not in transformers; the independent implementation here is llama.cpp's
"nomic-bert" graph. tests/data/rotary_encoders/make_reference.py wrote random folders of each shape in
specs.NOMIC_VARIANTS and the same weights as GGUF files, and stored llama.cpp's mean-pooled embeddings of
specs.TEXTS (reference.npz). The tests rebuild the folders from the seed and embed the texts with votive in
batches of three, so that most batches pad, where llama.cpp ran each text alone.

The two agree to ~1e-7 (float32 rounding); the tolerances below (cosine >= 0.9999, max abs <= 1e-4 on unit
vectors) still fail on a slip of the RoPE: turning the whole head in the half-rotary model gives cosine 0.973,
halves instead of interleaved pairs 0.986, base 10000 instead of 1000 0.9986 (max abs 0.02).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from votive.backends import get_backend
from votive.errors import ModelConfigError
from votive.models.sentence_encoder import SentenceEncoder
from votive.testing.rotary_encoder_folders import (NomicShape, nomic_bert_tensors, write_nomic_bert_folder,
                                                   write_nomic_bert_gguf, write_safetensors)

DATA = Path(__file__).resolve().parent / "data" / "rotary_encoders"


def _specs():
    spec = importlib.util.spec_from_file_location("rotary_encoder_specs", DATA / "specs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


specs = _specs()
VARIANTS = list(specs.NOMIC_VARIANTS)


@pytest.fixture(scope="module")
def reference():
    return np.load(DATA / "reference.npz")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("nomic")
    return {name: write_nomic_bert_folder(root / name, shape) for name, shape in specs.NOMIC_VARIANTS.items()}


@pytest.fixture(scope="module")
def encoders(folders):
    return {name: SentenceEncoder.from_folder(folder, get_backend("numpy")) for name, folder in folders.items()}


def _close(got: np.ndarray, expected: np.ndarray) -> None:
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert np.abs(got - expected).max() <= 1e-4


@pytest.mark.parametrize("name", VARIANTS)
def test_token_ids_are_the_references(encoders, reference, name):
    assert encoders[name].tokenize(specs.TEXTS) == specs.unpadded_ids(reference[f"nomic/{name}/ids"])


@pytest.mark.parametrize("name", VARIANTS)
def test_embeddings_match_llama_cpp(encoders, reference, name):
    got = encoders[name].embed(specs.TEXTS, batch_size=specs.BATCH_SIZE)
    assert got.shape == (len(specs.TEXTS), specs.NOMIC_VARIANTS[name].n_embd) and got.dtype == np.float32
    _close(got, reference[f"nomic/{name}/embeddings"])


def test_padding_does_not_change_a_text(encoders):
    one_by_one = np.stack([encoders["partial"].embed(t) for t in specs.TEXTS])
    all_at_once = encoders["partial"].embed(specs.TEXTS, batch_size=len(specs.TEXTS))
    assert np.abs(one_by_one - all_at_once).max() <= 1e-5


@pytest.mark.parametrize("name", VARIANTS)
def test_llama_cpp_still_answers_the_same(tmp_path, encoders, reference, name):
    """The stored numbers are llama.cpp's here too (with llama-cpp-python installed): the GGUF writer and the
    vocabulary still produce what llama.cpp ran."""
    pytest.importorskip("llama_cpp")
    gguf = write_nomic_bert_gguf(tmp_path / f"{name}.gguf", specs.NOMIC_VARIANTS[name])
    ids = specs.unpadded_ids(reference[f"nomic/{name}/ids"])
    _close(specs.normalized(specs.llama_cpp_embeddings(gguf, ids)), reference[f"nomic/{name}/embeddings"])


@pytest.mark.parametrize("type_name", ["F32", "Q8_0"])
@pytest.mark.parametrize("name", VARIANTS)
def test_gguf_file_embeds_as_llama_cpp_does(tmp_path, reference, name, type_name):
    """The llama.cpp nomic-bert file of the same weights, read by votive (its WordPiece vocabulary, MEAN pooling,
    unnormalised as llama.cpp returns it), against llama.cpp's vectors: the F32 file to float32 rounding, and
    with its matrices quantized to Q8_0 against llama.cpp on that same file."""
    import votive
    from votive.formats.gguf import GGUFFile
    from votive.formats.gguf_write import write_gguf
    from votive.quant.codecs import quantize

    path = write_nomic_bert_gguf(tmp_path / f"{name}.gguf", specs.NOMIC_VARIANTS[name])
    if type_name == "Q8_0":  # the same file with its matrices in Q8_0 blocks (token types stay F32, as the
        f = GGUFFile(path)   # converter keeps them: llama.cpp adds a view of that table)
        tensors = {n: ("Q8_0", quantize(np.asarray(f[n]), 8)) if f[n].ndim == 2 and n != "token_types.weight"
                   else np.asarray(f[n]) for n in f.tensors}
        path = write_gguf(tmp_path / f"{name}.q8_0.gguf", dict(f.metadata), tensors)
    model = votive.load(str(path), backend="numpy")
    got = model.embed(specs.TEXTS, batch_size=specs.BATCH_SIZE)
    assert model.tokenize(specs.TEXTS) == specs.unpadded_ids(reference[f"nomic/{name}/ids"])
    if type_name == "F32":
        _close(specs.normalized(got), reference[f"nomic/{name}/embeddings"])
        return
    pytest.importorskip("llama_cpp")
    theirs = specs.llama_cpp_embeddings(path, specs.unpadded_ids(reference[f"nomic/{name}/ids"]))
    cosine = (got * theirs).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cosine.min() >= 0.999, cosine


def test_model_reports_its_sizes(encoders):
    enc = encoders["v15"]
    assert enc.dim == 64 and enc.model.max_positions == 128 and enc.max_seq_length == 128
    assert enc.model.cfg.ffn_dim == 256 and enc.model.cfg.vocab_rows == 128  # 64 + 26 + 26 + 5 words -> 128


def test_pretraining_checkpoint_prefix_loads(tmp_path, encoders, reference):
    """A NomicBertForPreTraining checkpoint names every tensor "bert." + ..., and carries the MLM head."""
    folder = write_nomic_bert_folder(tmp_path / "prefixed", specs.NOMIC_VARIANTS["v15"])
    tensors = {"bert." + n: t for n, t in nomic_bert_tensors(specs.NOMIC_VARIANTS["v15"]).items()}
    tensors["cls.predictions.transform.dense.weight"] = np.zeros((64, 64), np.float32)
    write_safetensors(folder / "model.safetensors", tensors)
    got = SentenceEncoder.from_folder(folder, get_backend("numpy")).embed(specs.TEXTS, batch_size=3)
    _close(got, reference["nomic/v15/embeddings"])


def test_unknown_tensor_is_refused(tmp_path):
    folder = write_nomic_bert_folder(tmp_path / "extra", NomicShape())
    tensors = nomic_bert_tensors(NomicShape()) | {"encoder.layers.2.attn.Wqkv.weight": np.zeros((192, 64),
                                                                                                 np.float32)}
    write_safetensors(folder / "model.safetensors", tensors)
    with pytest.raises(ModelConfigError, match=r"encoder.layers.2.attn.Wqkv.weight.*2 layers"):
        SentenceEncoder.from_folder(folder, get_backend("numpy"))


@pytest.mark.parametrize("key, value", [
    ("activation_function", "gelu"), ("activation_function", "geglu"), ("rotary_emb_scale_base", 512),
    ("rotary_scaling_factor", 2), ("qkv_proj_bias", True), ("mlp_fc1_bias", True), ("mlp_fc2_bias", True),
    ("prenorm", True), ("parallel_block", True), ("use_rms_norm", True), ("rotary_emb_fraction", 0.0),
    ("rotary_emb_fraction", 0.3), ("num_heads_kv", 2),
])
def test_unsupported_config_is_refused_by_name(tmp_path, key, value):
    folder = write_nomic_bert_folder(tmp_path / "m", NomicShape(extra=((key, value),)))
    with pytest.raises(ModelConfigError, match=key):
        SentenceEncoder.from_folder(folder, get_backend("numpy"))


def test_missing_defaults_mean_what_upstream_means(tmp_path):
    """NomicBertConfig defaults the biases on: a config.json that leaves qkv_proj_bias out is refused."""
    folder = write_nomic_bert_folder(tmp_path / "m", NomicShape())
    config = json.loads((folder / "config.json").read_text())
    del config["qkv_proj_bias"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelConfigError, match="qkv_proj_bias True"):
        SentenceEncoder.from_folder(folder, get_backend("numpy"))


@pytest.mark.parametrize("name", ["partial", "interleaved"])
def test_cuda_backend_matches_llama_cpp(cuda_ops, folders, reference, name):
    """The same folders on votive's CUDA backend (its kernels on the CPU emulator, or a real GPU): RoPE over part
    of each head goes through the GPU's rope on a strided slice."""
    enc = SentenceEncoder.from_folder(folders[name], cuda_ops)
    got = enc.embed(specs.TEXTS, batch_size=specs.BATCH_SIZE)
    assert isinstance(got, np.ndarray) and enc.backend == "cupy"
    _close(got, reference[f"nomic/{name}/embeddings"])

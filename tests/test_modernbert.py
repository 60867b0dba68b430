"""ModernBERT encoders (model_type "modernbert": modernbert-embed-base, gte-modernbert-base) against transformers.

tests/data/encoder_reference/modernbert/make_reference.py trained a byte-level BPE tokenizer in ModernBERT's form
(tokenizer.json), wrote the random folders of folders.FOLDERS with votive.testing.modernbert_folders, and stored
transformers' ids, last hidden states (ModernBertModel, eager attention, float32, all texts in one padded batch)
and pooled, normalised embeddings (reference.npz); it checked that each text alone, sdpa attention and
sentence-transformers itself agree with those to < 1e-5. Every text but two is longer than twice the local
window, so the sliding-window layers see less than the global ones. The tests rebuild the folders from the seeds
and run them through votive in batches of three, so that most batches pad.

Measured (numpy backend): hidden states within 2.6e-6 of transformers' (max abs over every real token), embeddings
within 1.6e-7, cosine >= 0.99999994. The tolerances (hidden 5e-5, cosine 0.9999) still fail on a slip: a window
one token wider or narrower on each side gives cosine 0.94 to 0.99, the two RoPE bases swapped 0.966 to 0.994,
every layer global 0.85 to 0.96, and tanh-approximated GELU (cosine unchanged) hidden states 9e-4 to 1.2e-3 off.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import pytest

from votive.backends import get_backend
from votive.errors import ModelConfigError, WeightFileError
from votive.models.modernbert import Config, ModernBertModel
from votive.models.sentence_encoder import SentenceEncoder
from votive.testing.modernbert_folders import ModernBertShape, write_modernbert_folder

DATA = Path(__file__).resolve().parent / "data" / "encoder_reference" / "modernbert"
HIDDEN_TOLERANCE = 5e-5  # max abs; votive and transformers differ by float32 rounding (2.6e-6 measured)
BATCH_SIZE = 3


def _folders_module():
    spec = importlib.util.spec_from_file_location("modernbert_reference_folders", DATA / "folders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


specs = _folders_module()
NAMES = list(specs.FOLDERS)


@pytest.fixture(scope="module")
def reference():
    return np.load(DATA / "reference.npz")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("modernbert")
    return {name: specs.write_folder(name, root / name) for name in NAMES}


@pytest.fixture(scope="module")
def encoders(folders):
    return {name: SentenceEncoder.from_folder(folder, get_backend("numpy")) for name, folder in folders.items()}


def _padded(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    T = max(map(len, ids))
    return (np.array([row + [0] * (T - len(row)) for row in ids], np.int64),
            np.array([[1] * len(row) + [0] * (T - len(row)) for row in ids], np.int64))


def _hidden_error(model, ids, reference, name) -> float:
    """Max abs difference from transformers' hidden states over every real token, all texts in one padded batch."""
    hidden = model.ops.to_numpy(model.forward(*(model.ops.asarray(a) for a in _padded(ids))))
    return max(float(np.abs(hidden[k, : len(row)] - reference[f"{name}/hidden{k}"]).max())
               for k, row in enumerate(ids))


def _check_embeddings(got: np.ndarray, expected: np.ndarray) -> None:
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999, cosine
    assert np.abs(got - expected).max() <= 1e-4


# --------------------------------------------------------------------------------------------- references
@pytest.mark.parametrize("name", NAMES)
def test_token_ids_are_transformers(encoders, reference, name):
    ids = encoders[name].tokenize(specs.TEXTS)
    assert ids == [reference[f"{name}/ids{k}"].tolist() for k in range(len(specs.TEXTS))]
    assert max(map(len, ids)) == 64 and ids[-1][-1] == ids[0][-1]  # truncated to max_seq_length, [SEP] kept


@pytest.mark.parametrize("name", NAMES)
def test_hidden_states_match_transformers(encoders, reference, name):
    model = encoders[name].model
    ids = encoders[name].tokenize(specs.TEXTS)
    shape = specs.FOLDERS[name][0]
    assert max(map(len, ids)) > 2 * (shape.local_attention // 2) + 1  # local attention matters
    assert _hidden_error(model, ids, reference, name) <= HIDDEN_TOLERANCE


@pytest.mark.parametrize("name", NAMES)
def test_embeddings_match_sentence_transformers(encoders, reference, name):
    got = encoders[name].embed(specs.TEXTS, batch_size=BATCH_SIZE)
    assert got.shape == (len(specs.TEXTS), specs.FOLDERS[name][0].hidden_size) and got.dtype == np.float32
    _check_embeddings(got, reference[f"{name}/embeddings"])


def test_padding_does_not_change_a_text(encoders):
    one_by_one = np.stack([encoders["embed"].embed(t) for t in specs.TEXTS])
    all_at_once = encoders["embed"].embed(specs.TEXTS, batch_size=len(specs.TEXTS))
    assert np.abs(one_by_one - all_at_once).max() <= 1e-5


def test_layouts_and_rope_bases_are_read(encoders):
    embed, biased, v5 = (encoders[n].model.cfg for n in NAMES)
    assert embed.layer_types == ["full_attention", "sliding_attention", "sliding_attention", "full_attention"]
    assert biased.layer_types == ["full_attention", "sliding_attention"] * 2 + ["full_attention"]
    assert v5.layer_types == ["sliding_attention", "full_attention", "sliding_attention"]
    assert (biased.window, v5.window) == (4, 3)
    assert biased.rope_parameters["full_attention"]["rope_theta"] == 80000.0
    assert biased.rope_parameters["sliding_attention"]["rope_theta"] == 5000.0
    assert encoders["biased"].pooling.modes == ("cls_token",) and encoders["embed"].pooling.modes == ("mean_tokens",)


def test_cuda_ops_match_transformers(cuda_ops, folders, reference):
    """The GPU backend's kernels (on the CPU emulator, or a real GPU under the gpu mark) against the same
    reference, the sliding-window mask included."""
    for name in ("embed", "biased"):
        encoder = SentenceEncoder.from_folder(folders[name], cuda_ops)
        assert _hidden_error(encoder.model, encoder.tokenize(specs.TEXTS), reference, name) <= HIDDEN_TOLERANCE
        _check_embeddings(encoder.embed(specs.TEXTS, batch_size=BATCH_SIZE), reference[f"{name}/embeddings"])


# ------------------------------------------------------------------------------------------------ refusals
def _config(tmp_path, **changes) -> Path:
    path = tmp_path / "config.json"
    raw = {"model_type": "modernbert", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 4,
           "global_attn_every_n_layers": 3, "global_rope_theta": 160000.0, "local_rope_theta": 10000.0}
    raw.update(changes)
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("changes, words", [
    ({"hidden_activation": "silu"}, "hidden_activation 'silu' is not supported"),
    ({"hidden_activation": "gelu_pytorch_tanh"}, "hidden_activation 'gelu_pytorch_tanh'"),
    ({"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 160000.0}}},
     "rope_parameters.full_attention.rope_type 'yarn'"),
    ({"rope_parameters": {"sliding_attention": {"rope_type": "default", "rope_theta": 5.0}}},
     "rope_parameters.sliding_attention.rope_theta 5.0 disagrees with local_rope_theta 10000.0"),
    ({"layer_types": ["full_attention"] * 4}, "disagrees with global_attn_every_n_layers 3"),
    ({"layer_types": ["full_attention"] * 3}, "for each of the 4 layers"),
    ({"local_rope_theta": None}, "local_rope_theta null"),
    ({"global_attn_every_n_layers": 0}, "global_attn_every_n_layers 0"),
    ({"head_dim": 32}, "head_dim 32"),
    ({"model_type": "bert"}, "is not a ModernBERT encoder"),
])
def test_configs_votive_cannot_run_exactly_are_refused_by_key(tmp_path, changes, words):
    with pytest.raises(ModelConfigError, match=re.escape(words)):
        Config.from_json(_config(tmp_path, **changes))


def test_transformers_5_keys_alone_are_read(tmp_path):
    """A config with only layer_types and rope_parameters (no old keys): a type rope_parameters leaves out gets
    the old key's default base, as ModernBertConfig.convert_rope_params_to_dict gives it."""
    path = tmp_path / "v5.json"
    path.write_text(json.dumps({"model_type": "modernbert", "num_hidden_layers": 2,
                                "layer_types": ["sliding_attention", "sliding_attention"],
                                "rope_parameters": {"sliding_attention": {"rope_type": "default",
                                                                          "rope_theta": 123.0}}}))
    cfg = Config.from_json(path)
    assert cfg.layer_types == ["sliding_attention"] * 2
    assert cfg.rope_parameters == {"full_attention": {"rope_type": "default", "rope_theta": 160000.0},
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 123.0}}


def test_checkpoint_problems_are_named(tmp_path):
    tokenizer = DATA / "tokenizer.json"
    # biases the config does not declare: unknown tensors, named
    folder = write_modernbert_folder(tmp_path / "extra", ModernBertShape(mlp_bias=True, extra=(("mlp_bias", False),)),
                                     tokenizer)
    with pytest.raises(ModelConfigError, match=r"tensors a ModernBERT encoder does not use, e\.g\. 'layers\.0\.mlp"):
        ModernBertModel.from_folder(folder, get_backend("numpy"))
    # biases the config declares but the file lacks: the missing tensor, named
    folder = write_modernbert_folder(tmp_path / "missing", ModernBertShape(extra=(("norm_bias", True),)), tokenizer)
    with pytest.raises(WeightFileError, match=r"missing tensor 'embeddings\.norm\.bias'"):
        ModernBertModel.from_folder(folder, get_backend("numpy"))
    # a layer count the file does not hold
    folder = write_modernbert_folder(tmp_path / "layers", ModernBertShape(extra=(("num_hidden_layers", 5),)),
                                     tokenizer)
    with pytest.raises(WeightFileError, match=r"missing tensor 'layers\.4\.attn_norm\.weight'"):
        ModernBertModel.from_folder(folder, get_backend("numpy"))

"""XLM-RoBERTa encoders (multilingual-e5, bge-m3's dense head): a random-weight folder written by
votive.testing.encoder_folders against sentence-transformers' embeddings of the same folder
(tests/data/encoder_reference/xlm_roberta, made by its make_reference.py), with votive's own Unigram tokenizer;
the position offset, truncation at max_seq_length, and the checkpoint variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import votive
from votive.backends import get_backend
from votive.errors import ModelConfigError
from votive.formats.weights import WeightStore
from votive.models import xlm_roberta
from votive.models.sentence_encoder import SentenceEncoder
from votive.testing.encoder_folders import SPECS, write_xlm_roberta_folder
from votive.testing.synthetic import _write_safetensors
from votive.text.unigram import UnigramTokenizer

DATA = Path(__file__).parent / "data"
TOKENIZER = DATA / "unigram" / "tokenizer.json"
MAX_SEQ = SPECS["xlm-roberta"]["max_seq_length"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return write_xlm_roberta_folder(tmp_path_factory.mktemp("xlmr") / "model", TOKENIZER)


@pytest.fixture(scope="module")
def encoder(folder):
    return votive.load(str(folder))


@pytest.fixture(scope="module")
def reference():
    with np.load(DATA / "encoder_reference" / "xlm_roberta" / "reference.npz") as f:
        return {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith("xlm-roberta/")}


@pytest.fixture(scope="module")
def texts(reference) -> list[str]:
    return [str(t) for t in reference["texts"]]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_tokens_are_sentence_transformers_ids(encoder, reference, texts):
    assert isinstance(encoder, SentenceEncoder) and isinstance(encoder.tokenizer, UnigramTokenizer)
    ids = encoder.tokenize(texts)
    lengths = reference["lengths"]
    assert ids == [reference["input_ids"][i, : lengths[i]].tolist() for i in range(len(texts))]


@pytest.mark.parametrize("batch_size", [14, 5, 1])
def test_embeddings_match_sentence_transformers(encoder, reference, texts, batch_size):
    """One padded batch, batches of mixed lengths, and one text at a time, against sentence-transformers'
    one-batch and one-at-a-time outputs: every text's cosine at least 0.9999."""
    got = encoder.embed(texts, batch_size=batch_size)
    assert got.dtype == np.float32 and got.shape == (len(texts), 32)
    for key in ("embeddings", "embeddings_b1"):
        assert cosines(got, reference[key]).min() >= 0.9999
        assert np.abs(got - reference[key]).max() <= 1e-5


def test_positions_start_after_the_padding_index(encoder, reference, texts, monkeypatch):
    """Positions are padding_idx + 1, + 2, ... (create_position_ids_from_input_ids), a pad's is padding_idx; with
    BERT's 0, 1, 2, ... instead the outputs no longer match, so the reference pins the offset."""
    ids = np.array([[0, 7, 7, 2, 1], [0, 9, 1, 2, 1]])
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    assert xlm_roberta.position_ids(ids, mask, 1).tolist() == [[2, 3, 4, 5, 1], [2, 3, 1, 4, 1]]
    monkeypatch.setattr(xlm_roberta, "position_ids", lambda ids, mask, pad: np.cumsum(mask, axis=1) - 1)
    shifted = encoder.embed(texts)
    assert cosines(shifted, reference["embeddings"]).min() < 0.999


def test_truncation_at_max_seq_length(encoder, folder):
    """max_seq_length (sentence_bert_config.json's 24) below the position table's 40 - 1 - 1 = 38 rows."""
    assert encoder.model.max_positions == 38
    assert encoder.max_seq_length == MAX_SEQ
    long_text = "the machine learning model " * 40
    ids = encoder.tokenize([long_text])[0]
    assert len(ids) == MAX_SEQ and ids[0] == 0 and ids[-1] == 2
    assert encoder.embed([long_text]).shape == (1, 32)


def test_position_table_caps_max_seq_length(folder, tmp_path):
    """A max_seq_length past the table is cut to what the table covers (512 for a 514-row XLM-R table)."""
    other = tmp_path / "long"
    other.mkdir()
    for f in folder.rglob("*"):
        if f.is_file():
            (other / f.relative_to(folder)).parent.mkdir(parents=True, exist_ok=True)
            (other / f.relative_to(folder)).write_bytes(f.read_bytes())
    (other / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 512}))
    enc = SentenceEncoder.from_folder(other, get_backend("numpy"))
    assert enc.max_seq_length == 38
    assert len(enc.tokenize(["word " * 100])[0]) == 38
    assert np.isfinite(enc.embed(["word " * 100])).all()


def _rewrite(folder: Path, dest: Path, rename=lambda n: n, extra=None, config=None) -> Path:
    dest.mkdir()
    store = WeightStore(folder)
    tensors = {rename(n): np.asarray(store.get(n)) for n in store.keys()}
    tensors.update(extra or {})
    _write_safetensors(dest / "model.safetensors", tensors)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(config or {})
    (dest / "config.json").write_text(json.dumps(cfg))
    (dest / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    return dest


def test_task_checkpoint_prefix_and_roberta_model_type(folder, encoder, tmp_path):
    """An XLMRobertaForSequenceClassification-style file ("roberta." keys, a classifier) and model_type
    "roberta" (RobertaModel: the same network) give the same hidden states."""
    ops = get_backend("numpy")
    head = {"classifier.dense.weight": np.zeros((32, 32), np.float32)}
    prefixed = _rewrite(folder, tmp_path / "task", lambda n: "roberta." + n, head, {"model_type": "roberta"})
    model = xlm_roberta.XLMRobertaModel.from_folder(prefixed, ops)
    ids = np.array([encoder.tokenize(["hello world"])[0]])
    mask = np.ones_like(ids)
    assert np.array_equal(model.forward(ids, mask), encoder.model.forward(ids, mask))


def test_refusals(folder, tmp_path):
    ops = get_backend("numpy")
    stray = {"encoder.layer.2.output.dense.weight": np.zeros((2, 2), np.float32)}  # a third layer's
    extra = _rewrite(folder, tmp_path / "extra", extra=stray)
    with pytest.raises(ModelConfigError, match="1 tensors an XLM-RoBERTa encoder does not use, e.g. "
                                               "'encoder.layer.2.output.dense.weight'"):
        xlm_roberta.XLMRobertaModel.from_folder(extra, ops)
    for key, value, message in [("hidden_act", "relu", "hidden_act 'relu' is not supported"),
                                ("position_embedding_type", "relative_key", "'relative_key' is not supported"),
                                ("model_type", "bert", "model_type 'bert' is not an XLM-RoBERTa encoder")]:
        cfg = json.loads((folder / "config.json").read_text())
        (tmp_path / "config.json").write_text(json.dumps(dict(cfg, **{key: value})))
        with pytest.raises(ModelConfigError, match=message):
            xlm_roberta.Config.from_json(tmp_path / "config.json")


def test_cuda_backend(cuda_ops, folder, reference, texts):
    """The same folder on votive's CuPy backend (the CPU emulator here; a real GPU where the `gpu` mark runs)."""
    enc = SentenceEncoder.from_folder(folder, cuda_ops)
    got = enc.embed(texts, batch_size=5)
    assert cosines(got, reference["embeddings"]).min() >= 0.9999

"""Random-weight sentence-transformers encoder folders in the Hugging Face layout, for tests: one spec per family in
`SPECS` (config.json with the upstream keys, the seed, max_seq_length) and one writer per family.

A folder is what sentence-transformers downloads for such a model: config.json, model.safetensors, the given
tokenizer.json (with tokenizer_config.json), sentence_bert_config.json, modules.json with mean pooling and
Normalize. Weights come from a numpy generator with the spec's seed, drawn in the order of the family's tensor
list, so a test rebuilds byte-identical folders; each row has a standard deviation of about 1 / sqrt(columns) and
norm weights sit near 1, so activations keep their scale through the layers.

Example:
    >>> write_xlm_roberta_folder(tmp / "xlmr", Path("tests/data/unigram/tokenizer.json"))   # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from votive.testing.synthetic import _write_safetensors, bert_tensors

# family -> what its writer builds. "config" is config.json as written (vocab_size is the tokenizer's).
SPECS = {
    # multilingual-e5-small's layout (XLMRobertaModel, padding_idx 1, one token type), shrunk: a 40-row position
    # table covers 38 tokens; max_seq_length 24 truncates before that, as e5's 512 does before 514 - 2.
    "xlm-roberta": dict(seed=14, max_seq_length=24, config=dict(
        architectures=["XLMRobertaModel"], model_type="xlm-roberta", hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=40, type_vocab_size=1,
        layer_norm_eps=1e-5, hidden_act="gelu", position_embedding_type="absolute", pad_token_id=1,
        bos_token_id=0, eos_token_id=2)),
}


def write_xlm_roberta_folder(folder, tokenizer_json: Path, spec: dict = SPECS["xlm-roberta"]) -> Path:
    """Write a random XLM-RoBERTa sentence-transformers folder into `folder` (which must not exist yet) with the
    given tokenizer.json; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    vocab = len(json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))["model"]["vocab"])
    config = dict(spec["config"], vocab_size=vocab)
    D, F, L = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    rng = np.random.default_rng(spec["seed"])

    tensors = bert_tensors(rng, vocab, config["max_position_embeddings"], config["type_vocab_size"], D, F, L)
    _write_safetensors(folder / "model.safetensors", tensors)

    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512, "bos_token": "<s>", "eos_token": "</s>",
        "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": spec["max_seq_length"],
                                                                  "do_lower_case": False}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": D,
                                                                  "pooling_mode_mean_tokens": True}))
    (folder / "2_Normalize").mkdir()
    return folder

"""Random-weight cross-encoder rerankers in the Hugging Face layout, for tests and benchmarks.

`write_reranker_folder` writes a `BertForSequenceClassification` folder (config.json with one label,
model.safetensors with the encoder under `bert.`, the pooler and the classifier, and a WordPiece tokenizer, as
tokenizer.json or as vocab.txt) from a seed, with numpy alone; `write_xlm_roberta_reranker` an
`XLMRobertaForSequenceClassification` one (the encoder under `roberta.`, RoBERTa's classification head, a given
tokenizer.json). sentence-transformers' `CrossEncoder` and `votive.load` both read them like downloaded
rerankers (see tests/data/reranker_reference/).

Example:
    >>> write_reranker_folder(Path("tiny-reranker"), RerankerShape(), seed=3)  # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from votive.testing.synthetic import _write_safetensors, bert_tensors

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
WORDS = ("the", "a", "is", "of", "in", "to", "and", "what", "who", "where", "capital", "city", "france", "paris",
         "berlin", "germany", "river", "cat", "dog", "sat", "on", "mat", "book", "wrote", "novel", "population",
         "museum", "known", "for", "large", "small", "##s", "##ed", "##ing", "##ly")


@dataclass(frozen=True)
class RerankerShape:
    """The config.json fields of a small BERT cross-encoder (see votive.models.bert.Config)."""

    num_hidden_layers: int = 2
    hidden_size: int = 32
    num_attention_heads: int = 4
    intermediate_size: int = 64
    max_position_embeddings: int = 64
    words: tuple[str, ...] = field(default=WORDS)


def vocabulary(shape: RerankerShape) -> list[str]:
    """Specials, the shape's words, then every single character a test text uses, alone and as a continuation."""
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    words = [*SPECIALS, *shape.words, *chars, *".,?!'-()", *(f"##{c}" for c in chars)]
    return list(dict.fromkeys(words))


def write_reranker_folder(folder, shape: RerankerShape = RerankerShape(), *, seed: int = 0,
                          tokenizer: str = "json", model_max_length: int | None = None,
                          activation_fn: str | None = None) -> Path:
    """Write a random `BertForSequenceClassification` reranker into `folder` (which must not exist); returns it.

    Args:
        tokenizer: "json" (tokenizer.json with BertNormalizer, BertPreTokenizer, WordPiece and a
            TemplateProcessing with its pair template) or "vocab" (vocab.txt, as older checkpoints ship).
        model_max_length: tokenizer_config.json's, or None to leave it out (the tokenizer is then capped by
            max_position_embeddings alone).
        activation_fn: saved as config.json `sentence_transformers.activation_fn` (e.g.
            "torch.nn.modules.linear.Identity"), or None for the default (Sigmoid for one label).
    """
    folder = Path(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    words = vocabulary(shape)
    D, F, L = shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers
    config = {"architectures": ["BertForSequenceClassification"], "model_type": "bert", "vocab_size": len(words),
              "hidden_size": D, "num_hidden_layers": L, "num_attention_heads": shape.num_attention_heads,
              "intermediate_size": F, "max_position_embeddings": shape.max_position_embeddings,
              "type_vocab_size": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0,
              "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    if activation_fn is not None:
        config["sentence_transformers"] = {"activation_fn": activation_fn}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer_config = {"do_lower_case": True, "tokenizer_class": "BertTokenizer", "cls_token": "[CLS]",
                        "sep_token": "[SEP]", "pad_token": "[PAD]", "unk_token": "[UNK]", "mask_token": "[MASK]"}
    if model_max_length is not None:
        tokenizer_config["model_max_length"] = model_max_length
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    if tokenizer == "json":
        (folder / "tokenizer.json").write_text(json.dumps(_tokenizer_json(words), indent=2))
    elif tokenizer == "vocab":
        (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    else:
        raise ValueError(f"tokenizer {tokenizer!r}: expected 'json' or 'vocab'")

    tensors = bert_tensors(rng, len(words), shape.max_position_embeddings, 2, shape.hidden_size,
                           shape.intermediate_size, shape.num_hidden_layers, prefix="bert.")
    # the head: a pooler (tanh) and one logit, scaled so scores spread over the sigmoid's slope
    tensors["bert.pooler.dense.weight"] = _mat(rng, D, D)
    tensors["bert.pooler.dense.bias"] = _vec(rng, D)
    tensors["classifier.weight"] = 3.0 * _mat(rng, 1, D)
    tensors["classifier.bias"] = _vec(rng, 1)
    _write_safetensors(folder / "model.safetensors", tensors)
    return folder


def write_xlm_roberta_reranker(folder, tokenizer_json: Path, shape: RerankerShape = RerankerShape(), *,
                               seed: int = 0, model_max_length: int = 30) -> Path:
    """Write a random `XLMRobertaForSequenceClassification` reranker (one label, padding_idx 1, one token type)
    with the given tokenizer.json into `folder` (which must not exist); returns it.

    model_max_length must leave room for RoBERTa's position offset: a pair of n tokens uses positions 2 .. n + 1,
    so the table's max_position_embeddings rows hold n <= max_position_embeddings - 2 (transformers caps the
    tokenizer at max_position_embeddings alone, and indexes past the table for longer pairs).
    """
    folder = Path(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    vocab = len(json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))["model"]["vocab"])
    D = shape.hidden_size
    config = {"architectures": ["XLMRobertaForSequenceClassification"], "model_type": "xlm-roberta",
              "vocab_size": vocab, "hidden_size": D, "num_hidden_layers": shape.num_hidden_layers,
              "num_attention_heads": shape.num_attention_heads, "intermediate_size": shape.intermediate_size,
              "max_position_embeddings": shape.max_position_embeddings, "type_vocab_size": 1,
              "layer_norm_eps": 1e-5, "hidden_act": "gelu", "position_embedding_type": "absolute",
              "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2,
              "id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "XLMRobertaTokenizer", "model_max_length": model_max_length, "bos_token": "<s>",
        "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
        "mask_token": "<mask>"}, indent=2))
    tensors = bert_tensors(rng, vocab, shape.max_position_embeddings, 1, shape.hidden_size,
                           shape.intermediate_size, shape.num_hidden_layers, prefix="roberta.")
    # RobertaClassificationHead: dense + tanh on <s>, then out_proj
    tensors["classifier.dense.weight"] = _mat(rng, D, D)
    tensors["classifier.dense.bias"] = _vec(rng, D)
    tensors["classifier.out_proj.weight"] = 3.0 * _mat(rng, 1, D)
    tensors["classifier.out_proj.bias"] = _vec(rng, 1)
    _write_safetensors(folder / "model.safetensors", tensors)
    return folder


def _mat(rng, rows: int, cols: int) -> np.ndarray:
    return (rng.standard_normal((rows, cols), np.float32) / np.sqrt(cols)).astype(np.float32)


def _vec(rng, n: int, center: float = 0.0) -> np.ndarray:
    return (center + 0.1 * rng.standard_normal(n)).astype(np.float32)


def _tokenizer_json(words: list[str]) -> dict:
    """A BERT tokenizer.json as `tokenizers` saves one (the parts votive.text.wordpiece reads, and the rest)."""
    vocab = {w: i for i, w in enumerate(words)}

    def special(name: str, type_id: int) -> dict:
        return {"SpecialToken": {"id": name, "type_id": type_id}}

    def sequence(name: str, type_id: int) -> dict:
        return {"Sequence": {"id": name, "type_id": type_id}}

    return {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True} for t in SPECIALS],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0)],
            "pair": [special("[CLS]", 0), sequence("A", 0), special("[SEP]", 0), sequence("B", 1),
                     special("[SEP]", 1)],
            "special_tokens": {t: {"id": t, "ids": [vocab[t]], "tokens": [t]} for t in ("[CLS]", "[SEP]")},
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab},
    }

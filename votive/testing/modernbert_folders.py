"""Random-weight ModernBERT encoders in the Hugging Face layout, for tests: what sentence-transformers downloads for
modernbert-embed-base (mean pooling, Normalize) or gte-modernbert-base (CLS pooling, Normalize), with small sizes.

`write_modernbert_folder(folder, shape, tokenizer_json, seed=...)` writes config.json with the upstream keys (the
values of answerdotai/ModernBERT-base's where the shape allows), model.safetensors (float32, from a numpy
generator with a fixed seed, so a test rebuilds byte-identical folders), the given byte-level BPE tokenizer.json
with tokenizer_config.json and special_tokens_map.json, and sentence-transformers' modules.json, 1_Pooling,
2_Normalize and sentence_bert_config.json. The token table has the tokenizer's size rounded up to a multiple of
64 rows, as the real checkpoint's 50368 rows hold 50285 tokens.

`layer_types` writes the keys transformers 5 saves instead (layer_types, rope_parameters).
`masked_lm=True` writes a ModernBertForMaskedLM checkpoint instead: every encoder tensor under "model.", plus the
MLM head (head.dense, head.norm, decoder.bias; decoder.weight is tied to the token table and not saved).

Example:
    >>> write_modernbert_folder(tmp / "mb", ModernBertShape(), Path("tokenizer.json"), seed=0)   # doctest: +SKIP
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from votive.testing.synthetic import _write_safetensors

SPECIALS = ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]")  # ModernBERT's, named in tokenizer_config.json


@dataclass(frozen=True)
class ModernBertShape:
    """config.json fields of a ModernBERT encoder (see votive.models.modernbert.Config), and the folder's extras."""

    num_hidden_layers: int = 4
    hidden_size: int = 64
    num_attention_heads: int = 4
    intermediate_size: int = 96
    max_position_embeddings: int = 128
    global_attn_every_n_layers: int = 3  # layers 0 and 3 global, 1 and 2 sliding-window
    local_attention: int = 8  # each token sees 4 on either side in the local layers
    global_rope_theta: float = 160000.0  # ModernBERT-base's
    local_rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    masked_lm: bool = False  # a ModernBertForMaskedLM checkpoint ("model." prefix, MLM head)
    pooling: str = "mean"  # 1_Pooling's mode: "mean" (modernbert-embed) or "cls" (gte-modernbert)
    max_seq_length: int = 64  # sentence_bert_config.json
    # transformers 5's keys instead of global_attn_every_n_layers and the two rope thetas: each layer's
    # "full_attention" / "sliding_attention", and rope_parameters per layer type (the thetas above)
    layer_types: tuple[str, ...] | None = None
    extra: tuple = ()  # (key, value) pairs added to config.json (refusal tests)


# ---------------------------------------------------------------------------------------------- tokenizer
def _token_ids(tokenizer: dict) -> dict[str, int]:
    """Every token of a tokenizer.json (model vocab and added tokens) -> its id."""
    ids = dict(tokenizer["model"]["vocab"])
    ids.update({t["content"]: t["id"] for t in tokenizer.get("added_tokens", [])})
    return ids


def table_rows(tokenizer_json: Path) -> int:
    """Rows of the token table for this tokenizer: its size rounded up to a multiple of 64."""
    n = max(_token_ids(json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))).values()) + 1
    return -(-n // 64) * 64


# ----------------------------------------------------------------------------------------------- config.json
def modernbert_config(shape: ModernBertShape, tokenizer_json: Path) -> dict:
    """config.json as ModernBERT-base's (transformers 4.48's keys), with `shape`'s sizes."""
    ids = _token_ids(json.loads(Path(tokenizer_json).read_text(encoding="utf-8")))
    config = {
        "architectures": ["ModernBertForMaskedLM" if shape.masked_lm else "ModernBertModel"],
        "attention_bias": shape.attention_bias, "attention_dropout": 0.0, "bos_token_id": ids["[CLS]"],
        "classifier_activation": "gelu", "classifier_bias": False, "classifier_dropout": 0.0,
        "classifier_pooling": "mean", "cls_token_id": ids["[CLS]"], "decoder_bias": True,
        "deterministic_flash_attn": False, "embedding_dropout": 0.0, "eos_token_id": ids["[SEP]"],
        "global_attn_every_n_layers": shape.global_attn_every_n_layers,
        "global_rope_theta": shape.global_rope_theta, "gradient_checkpointing": False, "hidden_activation": "gelu",
        "hidden_size": shape.hidden_size, "initializer_cutoff_factor": 2.0, "initializer_range": 0.02,
        "intermediate_size": shape.intermediate_size, "layer_norm_eps": 1e-05,
        "local_attention": shape.local_attention, "local_rope_theta": shape.local_rope_theta,
        "max_position_embeddings": shape.max_position_embeddings, "mlp_bias": shape.mlp_bias, "mlp_dropout": 0.0,
        "model_type": "modernbert", "norm_bias": shape.norm_bias, "norm_eps": shape.norm_eps,
        "num_attention_heads": shape.num_attention_heads, "num_hidden_layers": shape.num_hidden_layers,
        "pad_token_id": ids["[PAD]"], "position_embedding_type": "absolute", "reference_compile": False,
        "sep_token_id": ids["[SEP]"], "sparse_pred_ignore_index": -100, "sparse_prediction": False,
        "torch_dtype": "float32", "vocab_size": table_rows(tokenizer_json),
    }
    if shape.layer_types is not None:
        for key in ("global_attn_every_n_layers", "global_rope_theta", "local_rope_theta"):
            del config[key]
        config["layer_types"] = list(shape.layer_types)
        config["rope_parameters"] = {
            "full_attention": {"rope_type": "default", "rope_theta": shape.global_rope_theta},
            "sliding_attention": {"rope_type": "default", "rope_theta": shape.local_rope_theta}}
    return config | dict(shape.extra)


# ---------------------------------------------------------------------------------------------------- weights
class _Draw:
    """Well-scaled random tensors from one generator, drawn in call order: rows of std 1 / sqrt(columns), norm
    weights near 1, biases near 0, so activations keep their scale through the layers."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def mat(self, rows: int, cols: int) -> np.ndarray:
        return (self.rng.standard_normal((rows, cols), np.float32) / np.sqrt(cols)).astype(np.float32)

    def vec(self, n: int, center: float = 0.0) -> np.ndarray:
        return (center + 0.1 * self.rng.standard_normal(n)).astype(np.float32)


def modernbert_tensors(shape: ModernBertShape, vocab_rows: int, seed: int = 0) -> dict:
    """Hugging Face name -> float32 tensor of a random ModernBertModel (or ForMaskedLM) of `shape`."""
    draw = _Draw(seed)
    D, F = shape.hidden_size, shape.intermediate_size
    p = "model." if shape.masked_lm else ""
    t = {}

    def norm(name: str) -> None:
        t[name + ".weight"] = draw.vec(D, 1.0)
        if shape.norm_bias:
            t[name + ".bias"] = draw.vec(D)

    def linear(name: str, rows: int, cols: int, bias: bool) -> None:
        t[name + ".weight"] = draw.mat(rows, cols)
        if bias:
            t[name + ".bias"] = draw.vec(rows)

    t[p + "embeddings.tok_embeddings.weight"] = draw.mat(vocab_rows, D)
    norm(p + "embeddings.norm")
    for i in range(shape.num_hidden_layers):
        layer = f"{p}layers.{i}."
        if i:  # layer 0's attn_norm is Identity: the embeddings' norm precedes it
            norm(layer + "attn_norm")
        linear(layer + "attn.Wqkv", 3 * D, D, shape.attention_bias)
        linear(layer + "attn.Wo", D, D, shape.attention_bias)
        norm(layer + "mlp_norm")
        linear(layer + "mlp.Wi", 2 * F, D, shape.mlp_bias)
        linear(layer + "mlp.Wo", D, F, shape.mlp_bias)
    norm(p + "final_norm")
    if shape.masked_lm:
        linear("head.dense", D, D, False)  # classifier_bias false
        norm("head.norm")
        t["decoder.bias"] = draw.vec(vocab_rows)
    return t


# ----------------------------------------------------------------------------------------------------- folder
def write_modernbert_folder(folder, shape: ModernBertShape, tokenizer_json, *, seed: int = 0) -> Path:
    """Write a random sentence-transformers ModernBERT folder into `folder` (which must not exist), with the
    byte-level BPE `tokenizer_json` copied in; returns the folder."""
    folder, tokenizer_json = Path(folder), Path(tokenizer_json)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(modernbert_config(shape, tokenizer_json), indent=2))
    _write_safetensors(folder / "model.safetensors",
                       modernbert_tensors(shape, table_rows(tokenizer_json), seed))
    shutil.copyfile(tokenizer_json, folder / "tokenizer.json")
    names = {"unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
             "mask_token": "[MASK]"}
    (folder / "special_tokens_map.json").write_text(json.dumps(names, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "clean_up_tokenization_spaces": True,
         "model_input_names": ["input_ids", "attention_mask"], "model_max_length": shape.max_position_embeddings,
         **names}, indent=2))
    (folder / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": shape.max_seq_length, "do_lower_case": False}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
        indent=2))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": shape.hidden_size, "pooling_mode_cls_token": shape.pooling == "cls",
        "pooling_mode_mean_tokens": shape.pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "include_prompt": True}, indent=2))
    (folder / "2_Normalize").mkdir()
    return folder

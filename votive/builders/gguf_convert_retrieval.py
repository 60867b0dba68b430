"""What `votive convert` adds to a decoder GGUF that is a retrieval model, as llama.cpp's convert_hf_to_gguf.py
does (TextModel._try_set_pooling_type; Qwen3Model's rerank branch):

- an embedder (a sentence-transformers folder over a decoder: modules.json with a Pooling module):
  `{arch}.pooling_type` from its 1_Pooling/config.json, MEAN (1), CLS (2) or LAST (3), checked in that order;
- a Qwen3-Reranker (votive_reranker.json, votive/models/decoder_reranker.py): `{arch}.pooling_type` RANK (4),
  `{arch}.classifier.output_labels` ["yes", "no"], the LM head's rows of those two tokens as `cls.output.weight`
  (2, D) in that order (llama.cpp's softmax over them gives P(yes) first), and `tokenizer.chat_template.rerank`:
  the recipe's prefix, pair and suffix with the instruction filled in and {query} / {document} left for the
  server to replace.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from votive.errors import ModelConfigError

# sentence-transformers pooling flag -> llama.cpp's llama_pooling_type, in the order the converter checks them.
POOLING_TYPES = {"pooling_mode_mean_tokens": 1, "pooling_mode_cls_token": 2, "pooling_mode_lasttoken": 3}
RANK = 4


def retrieval_extras(folder: Path, arch: str, head) -> tuple[dict, dict, dict]:
    """(metadata, metadata types, tensors) to add for a retrieval folder; three empty dicts for a plain decoder.

    `head()` returns the LM head as float32 (vocab, D): lm_head, or the embedding when tied."""
    folder = Path(folder)
    if (folder / "votive_reranker.json").is_file():
        return _reranker(folder, arch, head)
    if (folder / "modules.json").is_file():
        return {f"{arch}.pooling_type": _pooling_type(folder)}, {f"{arch}.pooling_type": "u32"}, {}
    return {}, {}, {}


def _pooling_type(folder: Path) -> int:
    modules = json.loads((folder / "modules.json").read_bytes())
    pooling = next((m for m in modules if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")), None)
    if pooling is None:
        raise ModelConfigError(f"{folder}/modules.json: no Pooling module; the GGUF's pooling_type would be unset")
    settings = json.loads((folder / pooling.get("path", "") / "config.json").read_bytes())
    for flag, kind in POOLING_TYPES.items():
        if settings.get(flag):
            return kind
    raise ModelConfigError(f"{folder}: its pooling is not mean, CLS or last-token; llama.cpp has no other "
                           "pooling_type for a sentence embedding")


def _reranker(folder: Path, arch: str, head) -> tuple[dict, dict, dict]:
    from votive.models.decoder_reranker import Recipe

    if arch != "qwen3":
        raise ModelConfigError(f"{folder}: a {arch} reranker cannot be converted: llama.cpp scores RANK pooling "
                               f"with yes / no rows for qwen3 only")
    recipe = Recipe.from_folder(folder)
    vocab = json.loads((folder / "tokenizer.json").read_bytes())["model"]["vocab"]
    rows = []
    for token in (recipe.true_token, recipe.false_token):
        if token not in vocab:
            raise ModelConfigError(f"{folder}/tokenizer.json: no token {token!r}")
        rows.append(vocab[token])
    pair = recipe.pair.replace("{instruction}", recipe.instruction)
    meta = {
        f"{arch}.pooling_type": RANK,
        f"{arch}.classifier.output_labels": [recipe.true_token, recipe.false_token],
        "tokenizer.chat_template.rerank": recipe.prefix + pair + recipe.suffix,
    }
    types = {f"{arch}.pooling_type": "u32", f"{arch}.classifier.output_labels": "arr[str]"}
    return meta, types, {"cls.output.weight": np.ascontiguousarray(head()[rows], np.float32)}  # (2, D)

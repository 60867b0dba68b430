"""Random-weight decoder retrieval folders, written with numpy alone (no torch, no transformers) so that
make_reference.py (sentence-transformers / transformers) and tests/test_decoder_retrieval.py (votive) read the
same bytes. Both are the `qwen3` checkpoint of tests/data/hf_reference/hf_folders.py (seed 4: BF16, head_dim
32 != hidden / heads, tied embeddings) with a vocabulary grown by three merges ("ye", "yes", "no": vocab_size
262; llama.cpp's BPE also wants some merges), plus the files that make it a retrieval model:

- `write_embedder(folder)`: two shards in Qwen3-Embedding's layout: modules.json (Transformer, 1_Pooling with
  pooling_mode_lasttoken, 2_Normalize), config_sentence_transformers.json with Qwen3-Embedding's prompts
  ({"query": "Instruct: ...\\nQuery:", "document": ""}), sentence_bert_config.json (max_seq_length 160, so the
  long text is cut), tokenizer_config.json with padding_side "left", and a tokenizer.json whose post-processor
  appends <|endoftext|> as Qwen3-Embedding's does (TemplateProcessing "$A <|endoftext|>"), eos_token
  <|endoftext|> (so a GGUF's add_eos_token appends the same token).
- `write_reranker(folder)`: one shard, the "yes" and "no" embedding rows (the tied LM head's) scaled by
  YES_NO_SCALE so that the scores spread instead of sitting near 0, and votive_reranker.json naming the
  Qwen3-Reranker recipe with max_length 400, so the long document is cut.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent


def _hf_folders():
    name = "hf_reference_folders"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE.parent / "hf_reference" / "hf_folders.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


QWEN3_EMBEDDING_PROMPTS = {
    "query": "Instruct: Given a web search query, retrieve relevant passages that answer the query\nQuery:",
    "document": "",
}
MAX_SEQ_LENGTH = 160  # sentence_bert_config.json of the embedder
RERANK_MAX_LENGTH = 400  # votive_reranker.json of the reranker

QUERIES = ["What is the capital of France?", "how do plants make food", "", "Ünïcödé query 日本語"]
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Berlin is big.",
    "no",
    "A long document that goes on and on. " * 10,  # 380 bytes: past both limits
]


def write_embedder(folder: Path) -> Path:
    folder = Path(folder)
    spec = reranker_spec() | {"eos": "<|endoftext|>", "shards": 2}
    tok = _write_grown(spec, folder)
    eot = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|endoftext|>")
    last = {"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}}
    tok["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"Sequence": {"id": "A", "type_id": 0}}, last],
        "pair": [{"Sequence": {"id": "A", "type_id": 0}}, last, {"Sequence": {"id": "B", "type_id": 1}}, last],
        "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [eot], "tokens": ["<|endoftext|>"]}},
    }
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config |= {"padding_side": "left", "pad_token": "<|endoftext|>"}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "2_Normalize").mkdir(exist_ok=True)
    dim = spec["config"]["hidden_size"]
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": dim, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False, "pooling_mode_lasttoken": True, "include_prompt": True}))
    (folder / "config_sentence_transformers.json").write_text(json.dumps(
        {"prompts": QWEN3_EMBEDDING_PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"}))
    (folder / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": MAX_SEQ_LENGTH, "do_lower_case": False}))
    return folder


RERANK_MERGES = [("y", "e"), ("ye", "s"), ("n", "o")]  # new tokens 256.. in this order
YES_NO_SCALE = 0.1  # the "yes" / "no" embedding rows (the tied LM head's) shrunk, so P(yes) is not saturated


def reranker_spec() -> dict:
    spec = copy.deepcopy(_hf_folders().SPECS["qwen3"])
    spec["config"]["vocab_size"] = 262
    spec["shards"] = 1
    return spec


def grown_tokenizer(spec: dict) -> dict:
    """hf_folders' byte-level tokenizer.json with RERANK_MERGES (llama.cpp's BPE needs merges to exist): the
    merged tokens take ids 256.. and the special tokens move after them, as in Qwen's vocabulary (the
    `tokenizers` library numbers added tokens from the model's vocabulary size on)."""
    tok = _hf_folders().tokenizer_json(spec)
    for k, (a, b) in enumerate(RERANK_MERGES):
        tok["model"]["vocab"][a + b] = 256 + k
    tok["model"]["merges"] = [f"{a} {b}" for a, b in RERANK_MERGES]
    for added in tok["added_tokens"]:
        added["id"] += len(RERANK_MERGES)
    return tok


def _write_grown(spec: dict, folder: Path) -> dict:
    """Write the folder with the grown tokenizer, config.json / generation_config.json's EOS id moved with it."""
    hf = _hf_folders()
    folder = hf.write_folder(spec, Path(folder))
    tok = grown_tokenizer(spec)
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    eos = next(t["id"] for t in tok["added_tokens"] if t["content"] == spec["eos"])
    for name in ("config.json", "generation_config.json"):
        config = json.loads((folder / name).read_text())
        (folder / name).write_text(json.dumps(config | {"eos_token_id": eos}, indent=2))
    return tok


def write_reranker(folder: Path) -> Path:
    folder, hf = Path(folder), _hf_folders()
    spec = reranker_spec()
    tok = _write_grown(spec, folder)
    vocab = tok["model"]["vocab"]
    weights = hf.draw_weights(spec)
    embed = weights["model.embed_tokens.weight"]
    embed[[vocab["yes"], vocab["no"]]] *= YES_NO_SCALE
    hf.write_safetensors(folder / "model.safetensors",
                         {name: (spec["dtype"], hf.stored(w, spec["dtype"])) for name, w in weights.items()})
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps(config | {"pad_token": "<|endoftext|>"}))  # as Qwen3's
    (folder / "votive_reranker.json").write_text(json.dumps(
        {"recipe": "qwen3-reranker", "max_length": RERANK_MAX_LENGTH}))
    return folder

"""Malformed model files (issue 19, items 4 and 5): a small random GGUF decoder or BERT folder with one thing
broken, by case name. `build(case, folder)` writes it and returns (path, load options, what to run after load:
"generate", "embed" or "score")."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from votive.formats.gguf_write import write_gguf
from votive.testing.reranker_folders import write_reranker_folder
from votive.testing.synthetic import DecoderShape, decoder_metadata, decoder_tensors, write_bert_folder

SHAPE = DecoderShape(n_layers=2, dim=64, ffn_dim=128, n_heads=4, n_kv_heads=2, vocab=300, context=64)
A = "llama"


def _tokens_cut(meta, n):
    for key in ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type"):
        meta[key] = meta[key][:n]


def _tokens_added(meta, extra):
    meta["tokenizer.ggml.tokens"] = list(meta["tokenizer.ggml.tokens"]) + [f"<user{i}>" for i in range(extra)]
    meta["tokenizer.ggml.scores"] = np.concatenate([meta["tokenizer.ggml.scores"], np.zeros(extra, np.float32)])
    meta["tokenizer.ggml.token_type"] = np.concatenate([meta["tokenizer.ggml.token_type"],
                                                        np.full(extra, 4, np.int32)])  # USER_DEFINED


def _nan(tensors, name):
    t = tensors[name].copy()
    t.flat[len(t.flat) // 2] = np.nan
    tensors[name] = t


# GGUF decoder cases: case -> (change to metadata and tensors, what must happen: the error class and a piece of its
# message, or "NumericalError" raised when generating).
GGUF_CASES = {
    "head_count-0": (lambda m, t: m.update({f"{A}.attention.head_count": 0}), "attention.head_count"),
    "head_count-string": (lambda m, t: m.update({f"{A}.attention.head_count": "4"}), "attention.head_count"),
    "head_count_kv-0": (lambda m, t: m.update({f"{A}.attention.head_count_kv": 0}), "head_count_kv"),
    "head_count_kv-3": (lambda m, t: m.update({f"{A}.attention.head_count_kv": 3}), "head_count_kv"),
    "head_count_kv-4": (lambda m, t: m.update({f"{A}.attention.head_count_kv": 4}), "head_count_kv"),
    "key_length-32": (lambda m, t: m.update({f"{A}.attention.key_length": 32}), "key_length"),
    "key_length-0": (lambda m, t: m.update({f"{A}.attention.key_length": 0}), "key_length"),
    "block_count-0": (lambda m, t: m.update({f"{A}.block_count": 0}), "block_count"),
    "context_length-0": (lambda m, t: m.update({f"{A}.context_length": 0}), "context_length"),
    "freq_base-0": (lambda m, t: m.update({f"{A}.rope.freq_base": 0.0}), "rope.freq_base"),
    "eps-negative": (lambda m, t: m.update({f"{A}.attention.layer_norm_rms_epsilon": -1e-6}),
                     "layer_norm_rms_epsilon"),
    "eps-nan": (lambda m, t: m.update({f"{A}.attention.layer_norm_rms_epsilon": float("nan")}),
                "layer_norm_rms_epsilon"),
    "eps-string": (lambda m, t: m.update({f"{A}.attention.layer_norm_rms_epsilon": "1e-6"}),
                   "layer_norm_rms_epsilon"),
    "all-byte-types": (lambda m, t: m.update({"tokenizer.ggml.token_type": np.full(SHAPE.vocab, 6, np.int32)}),
                       "token_type"),
    "vocab-smaller": (lambda m, t: _tokens_cut(m, SHAPE.vocab - 20), "tokenizer.ggml.tokens"),
    "user-tokens-past-rows": (lambda m, t: _tokens_added(m, 5), "tokenizer.ggml.tokens"),
    "nan-output-norm": (lambda m, t: _nan(t, "output_norm.weight"), "output_norm.weight"),
    "nan-layer-norm": (lambda m, t: _nan(t, "blk.1.ffn_norm.weight"), "blk.1.ffn_norm.weight"),
    "inf-attn-norm": (lambda m, t: t.update({"blk.0.attn_norm.weight": np.full(SHAPE.dim, np.inf, np.float32)}),
                      "blk.0.attn_norm.weight"),
    "nan-in-a-matrix": (lambda m, t: _nan(t, "blk.0.ffn_down.weight"), "NumericalError"),
}
# Gemma 3's own keys (the window, the local / global layout), on a Gemma 3 file.
GEMMA = DecoderShape(arch="gemma3", n_layers=2, dim=64, ffn_dim=128, n_heads=4, n_kv_heads=2, vocab=300, context=64)
GEMMA_CASES = {
    "sliding_window_pattern-0": ({"gemma3.attention.sliding_window_pattern": 0}, "sliding_window_pattern"),
    "sliding_window-string": ({"gemma3.attention.sliding_window": "16"}, "attention.sliding_window"),
    "eps-negative": ({"gemma3.attention.layer_norm_rms_epsilon": -1.0}, "layer_norm_rms_epsilon"),
}
# votive.load's own argument.
N_CTX_CASES = {"n_ctx--5": -5, "n_ctx-0": 0, "n_ctx-string": "512", "n_ctx-bool": True}


def _config(folder, **changes):
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _poison_safetensors(path: Path, name: str, value: float = float("nan"), index: int = 1) -> None:
    """Overwrite float32 number `index` of tensor `name` in place with `value`."""
    with open(path, "r+b") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        f.seek(8 + n + header[name]["data_offsets"][0] + 4 * index)
        f.write(struct.pack("<f", value))


def _poison_token_row(folder: Path, token: str, value: float) -> None:
    """An infinity in the word-embedding row of `token` (vocab.txt's line number is its id)."""
    token_id = (folder / "vocab.txt").read_text().split("\n").index(token)
    hidden = json.loads((folder / "config.json").read_text())["hidden_size"]
    _poison_safetensors(folder / "model.safetensors", "embeddings.word_embeddings.weight", value,
                        token_id * hidden + 1)


def _extra_words(folder):
    with open(folder / "vocab.txt", "a") as f:
        f.write("".join(f"extra{i}\n" for i in range(10)))


# BERT folder cases: case -> (change to the folder, the piece of the error's message, or "NumericalError").
BERT_CASES = {
    "heads-0": (lambda d: _config(d, num_attention_heads=0), "num_attention_heads"),
    "hidden_size-string": (lambda d: _config(d, hidden_size="64"), "hidden_size"),
    "layers-negative": (lambda d: _config(d, num_hidden_layers=-1), "num_hidden_layers"),
    "eps-negative": (lambda d: _config(d, layer_norm_eps=-1), "layer_norm_eps"),
    "eps-zero": (lambda d: _config(d, layer_norm_eps=0), "layer_norm_eps"),
    "config-list": (lambda d: (d / "config.json").write_text("[1, 2]"), "expected a JSON object"),
    "modules-strings": (lambda d: (d / "modules.json").write_text('["Pooling"]'), "modules.json"),
    "modules-object": (lambda d: (d / "modules.json").write_text('{"a": 1}'), "modules.json"),
    "modules-path-number": (lambda d: (d / "modules.json").write_text(
        '[{"type": "sentence_transformers.models.Pooling", "path": 5}]'), "modules.json"),
    "pooling-list": (lambda d: (d / "1_Pooling" / "config.json").write_text("[true]"), "1_Pooling"),
    "pooling-none": (lambda d: (d / "1_Pooling" / "config.json").write_text("{}"), "no pooling mode"),
    "sentence-config-list": (lambda d: (d / "sentence_bert_config.json").write_text("[512]"), "ok"),
    "ids-past-rows": (_extra_words, "vocab_size"),
    "nan-layernorm": (lambda d: _poison_safetensors(d / "model.safetensors", "embeddings.LayerNorm.weight"),
                      "LayerNorm"),
    "nan-bias": (lambda d: _poison_safetensors(d / "model.safetensors", "encoder.layer.1.output.dense.bias"),
                 "encoder.layer.1.output.dense.bias"),
    "nan-in-a-matrix": (lambda d: _poison_safetensors(d / "model.safetensors",
                                                      "encoder.layer.0.intermediate.dense.weight"), "NumericalError"),
    "inf-embeddings": (lambda d: _poison_token_row(d, "[CLS]", float("inf")), "NumericalError"),
    # the [PAD] row (id 0) only ever reaches padding, which the encoder no longer computes: the answer is the
    # same as with a finite row, and finite (before, 0 x inf in attention turned it to NaN and then a refusal)
    "inf-in-the-pad-row": (lambda d: _poison_safetensors(d / "model.safetensors", "embeddings.word_embeddings.weight",
                                                         float("inf")), "ok"),
}


# Hugging Face decoder folders: config.json and one tensor, refused before the weights are bound.
HF_DECODER = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
              "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
              "max_position_embeddings": 64, "vocab_size": 300, "hidden_act": "silu"}
HF_CASES = {
    "heads-0": ({"num_attention_heads": 0}, "num_attention_heads"),
    "hidden_size-string": ({"hidden_size": "64"}, "hidden_size"),
    "rms_norm_eps-negative": ({"rms_norm_eps": -1e-6}, "rms_norm_eps"),
    "rope_theta-0": ({"rope_theta": 0}, "rope_theta"),
}


def build(case: str, folder: Path):
    """Write the model of `case` under `folder` -> (path, votive.load options, "generate" or "embed")."""
    folder.mkdir(parents=True, exist_ok=True)
    if case.startswith("bert:"):
        model = write_bert_folder(folder / "bert")
        BERT_CASES[case[5:]][0](model)
        return model, {}, "embed"
    if case.startswith("rerank:"):  # a cross-encoder with NaN in a matrix: its scores, never NaN
        model = write_reranker_folder(folder / "rerank")
        _poison_safetensors(model / "model.safetensors", "bert.encoder.layer.0.intermediate.dense.weight")
        return model, {}, "score"
    if case.startswith("hf:"):
        (folder / "hf").mkdir()
        (folder / "hf" / "config.json").write_text(json.dumps({**HF_DECODER, **HF_CASES[case[3:]][0]}))
        header = json.dumps({"model.norm.weight": {"dtype": "F32", "shape": [64], "data_offsets": [0, 256]}}).encode()
        (folder / "hf" / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(256))
        return folder / "hf", {}, "generate"
    if case.startswith("gemma:"):
        meta = {**decoder_metadata(GEMMA), **GEMMA_CASES[case[6:]][0]}
        return write_gguf(folder / "gemma.gguf", meta, decoder_tensors(GEMMA, "F32", seed=0)), {}, "generate"
    meta, tensors = decoder_metadata(SHAPE), decoder_tensors(SHAPE, "F32", seed=0)
    options = {}
    if case in N_CTX_CASES:
        options["n_ctx"] = N_CTX_CASES[case]
    else:
        GGUF_CASES[case][0](meta, tensors)
    return write_gguf(folder / "model.gguf", meta, tensors), options, "generate"


def expected(case: str) -> str:
    if case.startswith("bert:"):
        return BERT_CASES[case[5:]][1]
    if case.startswith("hf:"):
        return HF_CASES[case[3:]][1]
    if case.startswith("rerank:"):
        return "NumericalError"
    if case.startswith("gemma:"):
        return GEMMA_CASES[case[6:]][1]
    return "n_ctx" if case in N_CTX_CASES else GGUF_CASES[case][1]


ALL_CASES = [*GGUF_CASES, *N_CTX_CASES, *(f"bert:{c}" for c in BERT_CASES), *(f"hf:{c}" for c in HF_CASES),
             *(f"gemma:{c}" for c in GEMMA_CASES), "rerank:nan-in-a-matrix"]

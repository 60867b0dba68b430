"""Random-weight rotary encoders in the Hugging Face layout, for tests: NomicBERT ("nomic_bert") and Alibaba's GTE
"new" ("new") folders, and the same NomicBERT weights as a GGUF file in llama.cpp's "nomic-bert" layout.

A folder is what sentence-transformers downloads for such a model, minus the remote code: config.json with the
upstream keys (the real checkpoints' values where the shape allows: nomic-embed-text-v1.5's, gte-base-en-v1.5's),
model.safetensors, a WordPiece vocab.txt, modules.json with mean pooling and Normalize. Weights come from a
numpy generator with a fixed seed, so a test rebuilds byte-identical folders; each row has a standard deviation
of about 1 / sqrt(columns) and norm weights sit near 1, so activations keep their scale through the layers.

The GGUF file holds the folder's tensors renamed by NOMIC_GGUF_NAMES (llama.cpp's convert_hf_to_gguf.py
NomicBertModel does the same renaming), with the metadata llama.cpp's nomic-bert loader reads. An interleaved
rotary model (`rotary_emb_interleaved`), which llama.cpp's nomic-bert graph cannot express (it always pairs
halves), is written with each q and k head's rotated rows reordered evens-then-odds: halves-paired RoPE over
those rows is the same rotation of the same pairs, and q.k is unchanged by reordering both alike.

Example:
    >>> folder = write_nomic_bert_folder(tmp / "nomic", NomicShape())                   # doctest: +SKIP
    >>> write_nomic_bert_gguf(tmp / "nomic.gguf", NomicShape())                          # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from votive.testing.synthetic import _write_safetensors

WORDS = ("hello", "world", "the", "a", "cat", "dog", "sat", "on", "mat", "and", "of", "is")


# ------------------------------------------------------------------------------------------------- shapes
@dataclass(frozen=True)
class NomicShape:
    """config.json fields of a NomicBERT encoder (see votive.models.nomic_bert.Config)."""

    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    n_inner: int = 256  # rounded up to a multiple of 256 by the model
    n_positions: int = 128
    rotary_emb_fraction: float = 1.0
    rotary_emb_base: float = 1000.0  # nomic-embed-text-v1.5's
    rotary_emb_interleaved: bool = False
    type_vocab_size: int = 2
    pad_vocab_size_multiple: int = 64  # the table has more rows than the vocabulary, as the real one
    layer_norm_epsilon: float = 1e-12
    extra: tuple = ()  # (key, value) pairs added to config.json (refusal tests)
    words: tuple[str, ...] = field(default=WORDS)

    @property
    def ffn_dim(self) -> int:
        return -(-self.n_inner // 256) * 256


@dataclass(frozen=True)
class GteShape:
    """config.json fields of a GTE "new" encoder (see votive.models.gte.Config)."""

    num_hidden_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 64
    rope_theta: float = 500000.0  # gte-base-en-v1.5's
    rope_scaling: tuple | None = (("type", "ntk"), ("factor", 2.0))  # gte-base-en-v1.5's, as pairs (hashable)
    type_vocab_size: int = 0  # gte-base-en-v1.5 has no segment table
    pack_qkv: bool = True
    layer_norm_eps: float = 1e-12
    extra: tuple = ()  # (key, value) pairs added to config.json (refusal tests)
    words: tuple[str, ...] = field(default=WORDS)


# ------------------------------------------------------------------------------------------- folder parts
def write_safetensors(path, tensors: dict) -> None:
    """Name -> float32 array as a safetensors file (votive.testing.synthetic's writer): tests rewrite a folder's
    weights with it (prefixed names, extra tensors)."""
    _write_safetensors(Path(path), tensors)


def _vocabulary(words: tuple[str, ...]) -> list[str]:
    """BERT's specials, the words, single letters and their ## continuations (any lower-case text tokenizes)."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words, *letters, *(f"##{c}" for c in letters)]
    return list(dict.fromkeys(tokens))  # once each ("a" is a word and a letter): llama.cpp refuses duplicates


def _write_common(folder: Path, vocab: list[str], dim: int, max_len: int) -> None:
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "model_max_length": max_len}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": dim,
                                                                  "pooling_mode_mean_tokens": True}))


class _Draw:
    """Well-scaled random tensors from one generator, drawn in call order."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def mat(self, rows: int, cols: int) -> np.ndarray:
        return (self.rng.standard_normal((rows, cols), np.float32) / np.sqrt(cols)).astype(np.float32)

    def vec(self, n: int, center: float = 0.0) -> np.ndarray:
        return (center + 0.1 * self.rng.standard_normal(n)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ NomicBERT
def nomic_bert_config(shape: NomicShape, vocab_size: int) -> dict:
    """config.json as nomic-embed-text-v1.5's, with `shape`'s sizes."""
    config = {
        "architectures": ["NomicBertModel"], "model_type": "nomic_bert", "activation_function": "swiglu",
        "attn_pdrop": 0.0, "causal": False, "dense_seq_output": True, "embd_pdrop": 0.0, "fused_bias_fc": True,
        "fused_dropout_add_ln": True, "initializer_range": 0.02, "layer_norm_epsilon": shape.layer_norm_epsilon,
        "max_trained_positions": 2048, "mlp_fc1_bias": False, "mlp_fc2_bias": False, "n_embd": shape.n_embd,
        "n_head": shape.n_head, "n_inner": shape.n_inner, "n_layer": shape.n_layer, "n_positions": shape.n_positions,
        "pad_vocab_size_multiple": shape.pad_vocab_size_multiple, "parallel_block": False,
        "parallel_block_tied_norm": False, "prenorm": False, "qkv_proj_bias": False, "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.0, "rotary_emb_base": shape.rotary_emb_base,
        "rotary_emb_fraction": shape.rotary_emb_fraction, "rotary_emb_interleaved": shape.rotary_emb_interleaved,
        "rotary_emb_scale_base": None, "rotary_scaling_factor": None, "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True, "torch_dtype": "float32", "type_vocab_size": shape.type_vocab_size,
        "use_cache": True, "use_flash_attn": True, "use_rms_norm": False, "use_xentropy": True,
        "vocab_size": vocab_size,
    }
    return config | dict(shape.extra)


def nomic_bert_tensors(shape: NomicShape, seed: int = 0) -> dict:
    """Hugging Face name -> float32 tensor of a random NomicBertModel of `shape` (numpy order, rows are outputs)."""
    draw = _Draw(seed)
    vocab = len(_vocabulary(shape.words))
    m = shape.pad_vocab_size_multiple
    D, F = shape.n_embd, shape.ffn_dim
    tensors = {"embeddings.word_embeddings.weight": draw.mat(-(-vocab // m) * m, D)}
    if shape.type_vocab_size:
        tensors["embeddings.token_type_embeddings.weight"] = draw.mat(shape.type_vocab_size, D)
    tensors |= {"emb_ln.weight": draw.vec(D, 1.0), "emb_ln.bias": draw.vec(D)}
    for i in range(shape.n_layer):
        p = f"encoder.layers.{i}."
        tensors[p + "attn.Wqkv.weight"] = draw.mat(3 * D, D)
        tensors[p + "attn.out_proj.weight"] = draw.mat(D, D)
        tensors[p + "norm1.weight"], tensors[p + "norm1.bias"] = draw.vec(D, 1.0), draw.vec(D)
        tensors[p + "mlp.fc11.weight"] = draw.mat(F, D)
        tensors[p + "mlp.fc12.weight"] = draw.mat(F, D)
        tensors[p + "mlp.fc2.weight"] = draw.mat(D, F)
        tensors[p + "norm2.weight"], tensors[p + "norm2.bias"] = draw.vec(D, 1.0), draw.vec(D)
    return tensors


def write_nomic_bert_folder(folder, shape: NomicShape = NomicShape(), *, seed: int = 0) -> Path:
    """Write a random sentence-transformers NomicBERT folder into `folder` (which must not exist); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    vocab = _vocabulary(shape.words)
    (folder / "config.json").write_text(json.dumps(nomic_bert_config(shape, len(vocab)), indent=2))
    _write_common(folder, vocab, shape.n_embd, shape.n_positions)
    write_safetensors(folder / "model.safetensors", nomic_bert_tensors(shape, seed))
    return folder


# Hugging Face name -> llama.cpp's nomic-bert tensor name (gguf-py's tensor_mapping for nomic-bert).
NOMIC_GGUF_NAMES = {
    "embeddings.word_embeddings.weight": "token_embd.weight",
    "embeddings.token_type_embeddings.weight": "token_types.weight",
    "emb_ln.weight": "token_embd_norm.weight",
    "emb_ln.bias": "token_embd_norm.bias",
}
NOMIC_GGUF_LAYER_NAMES = {
    "attn.Wqkv.weight": "attn_qkv.weight",
    "attn.out_proj.weight": "attn_output.weight",
    "norm1.weight": "attn_output_norm.weight",
    "norm1.bias": "attn_output_norm.bias",
    "mlp.fc11.weight": "ffn_up.weight",
    "mlp.fc12.weight": "ffn_gate.weight",
    "mlp.fc2.weight": "ffn_down.weight",
    "norm2.weight": "layer_output_norm.weight",
    "norm2.bias": "layer_output_norm.bias",
}


def _evens_then_odds(wqkv: np.ndarray, n_head: int, rot: int) -> np.ndarray:
    """Wqkv with the first `rot` rows of every q and k head reordered (0, 2, 4, ..., 1, 3, 5, ...): see the
    module docstring."""
    D = wqkv.shape[1]
    dh = D // n_head
    order = np.concatenate([np.arange(0, rot, 2), np.arange(1, rot, 2), np.arange(rot, dh)])
    rows = np.arange(3 * D)
    for head in range(2 * n_head):  # q's heads, then k's
        rows[head * dh : (head + 1) * dh] = head * dh + order
    return wqkv[rows]


def write_nomic_bert_gguf(path, shape: NomicShape = NomicShape(), *, seed: int = 0) -> Path:
    """The folder's weights (nomic_bert_tensors with the same seed) as an F32 GGUF file in llama.cpp's nomic-bert
    layout, with a BERT vocabulary in llama.cpp's spelling (word starts marked by U+2581, ## dropped)."""
    from votive.formats.gguf_write import write_gguf

    vocab = _vocabulary(shape.words)
    tokens = [t if t.startswith("[") else (t[2:] if t.startswith("##") else "\u2581" + t) for t in vocab]
    hf = nomic_bert_tensors(shape, seed)
    rows = hf["embeddings.word_embeddings.weight"].shape[0]
    tokens += [f"[PAD{i}]" for i in range(len(tokens), rows)]  # the table's padding rows, as the converter does
    arch = "nomic-bert"
    metadata = {
        "general.architecture": arch, "general.name": "random nomic-bert",
        f"{arch}.context_length": shape.n_positions, f"{arch}.embedding_length": shape.n_embd,
        f"{arch}.feed_forward_length": shape.ffn_dim, f"{arch}.block_count": shape.n_layer,
        f"{arch}.attention.head_count": shape.n_head, f"{arch}.attention.head_count_kv": shape.n_head,
        f"{arch}.attention.layer_norm_epsilon": shape.layer_norm_epsilon, f"{arch}.attention.causal": False,
        f"{arch}.pooling_type": 1,  # mean
        f"{arch}.rope.freq_base": float(shape.rotary_emb_base),
        f"{arch}.rope.dimension_count": int(shape.n_embd // shape.n_head * shape.rotary_emb_fraction),
        "general.file_type": 0,  # all F32
        "tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [3 if t.startswith("[") else 1 for t in tokens],
        "tokenizer.ggml.token_type_count": shape.type_vocab_size,
        "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.eos_token_id": 3, "tokenizer.ggml.unknown_token_id": 1,
        "tokenizer.ggml.padding_token_id": 0, "tokenizer.ggml.seperator_token_id": 3,
        "tokenizer.ggml.cls_token_id": 2, "tokenizer.ggml.mask_token_id": 4,
    }
    tensors = {NOMIC_GGUF_NAMES[n]: t for n, t in hf.items() if n in NOMIC_GGUF_NAMES}
    rot = int(shape.n_embd // shape.n_head * shape.rotary_emb_fraction)
    for i in range(shape.n_layer):
        for hf_name, gguf_name in NOMIC_GGUF_LAYER_NAMES.items():
            t = hf[f"encoder.layers.{i}.{hf_name}"]
            if hf_name == "attn.Wqkv.weight" and shape.rotary_emb_interleaved:
                t = _evens_then_odds(t, shape.n_head, rot)
            tensors[f"blk.{i}.{gguf_name}"] = np.ascontiguousarray(t)
    return write_gguf(path, metadata, tensors)


# ----------------------------------------------------------------------------------------------- GTE "new"
def gte_config(shape: GteShape, vocab_size: int) -> dict:
    """config.json as gte-base-en-v1.5's, with `shape`'s sizes."""
    config = {
        "architectures": ["NewModel"], "model_type": "new", "attention_probs_dropout_prob": 0.0,
        "classifier_dropout": None, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "hidden_size": shape.hidden_size, "initializer_range": 0.02, "intermediate_size": shape.intermediate_size,
        "layer_norm_eps": shape.layer_norm_eps, "layer_norm_type": "layer_norm", "logn_attention_clip1": False,
        "logn_attention_scale": False, "max_position_embeddings": shape.max_position_embeddings,
        "num_attention_heads": shape.num_attention_heads, "num_hidden_layers": shape.num_hidden_layers,
        "pack_qkv": shape.pack_qkv, "pad_token_id": 0, "position_embedding_type": "rope",
        "rope_scaling": dict(shape.rope_scaling) if shape.rope_scaling else None, "rope_theta": shape.rope_theta,
        "torch_dtype": "float32", "type_vocab_size": shape.type_vocab_size, "unpad_inputs": False,
        "use_memory_efficient_attention": False, "vocab_size": vocab_size,
    }
    return config | dict(shape.extra)


def gte_tensors(shape: GteShape, seed: int = 0) -> dict:
    """Hugging Face name -> float32 tensor of a random NewModel of `shape` (numpy order, rows are outputs)."""
    draw = _Draw(seed)
    vocab = len(_vocabulary(shape.words))
    D, F = shape.hidden_size, shape.intermediate_size
    tensors = {"embeddings.word_embeddings.weight": draw.mat(vocab, D)}
    if shape.type_vocab_size:
        tensors["embeddings.token_type_embeddings.weight"] = draw.mat(shape.type_vocab_size, D)
    tensors |= {"embeddings.LayerNorm.weight": draw.vec(D, 1.0), "embeddings.LayerNorm.bias": draw.vec(D)}
    for i in range(shape.num_hidden_layers):
        p = f"encoder.layer.{i}."
        if shape.pack_qkv:
            tensors[p + "attention.qkv_proj.weight"] = draw.mat(3 * D, D)
            tensors[p + "attention.qkv_proj.bias"] = draw.vec(3 * D)
        else:
            for part in "qkv":
                tensors[p + f"attention.{part}_proj.weight"] = draw.mat(D, D)
                tensors[p + f"attention.{part}_proj.bias"] = draw.vec(D)
        tensors[p + "attention.o_proj.weight"] = draw.mat(D, D)
        tensors[p + "attention.o_proj.bias"] = draw.vec(D)
        tensors[p + "mlp.up_gate_proj.weight"] = draw.mat(2 * F, D)
        tensors[p + "mlp.down_proj.weight"] = draw.mat(D, F)
        tensors[p + "mlp.down_proj.bias"] = draw.vec(D)
        tensors[p + "attn_ln.weight"], tensors[p + "attn_ln.bias"] = draw.vec(D, 1.0), draw.vec(D)
        tensors[p + "mlp_ln.weight"], tensors[p + "mlp_ln.bias"] = draw.vec(D, 1.0), draw.vec(D)
    return tensors


def write_gte_folder(folder, shape: GteShape = GteShape(), *, seed: int = 0) -> Path:
    """Write a random sentence-transformers GTE "new" folder into `folder` (which must not exist); returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True)
    vocab = _vocabulary(shape.words)
    (folder / "config.json").write_text(json.dumps(gte_config(shape, len(vocab)), indent=2))
    _write_common(folder, vocab, shape.hidden_size, shape.max_position_embeddings)
    write_safetensors(folder / "model.safetensors", gte_tensors(shape, seed))
    return folder

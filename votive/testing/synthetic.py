"""Model files with random weights, of any shape, for tests and benchmarks: GGUF decoders and BERT folders.

The files are complete: `votive.load` reads them like downloaded ones (a GGUF decoder carries a small
SentencePiece-style vocabulary of byte tokens, a BERT folder its config.json and a WordPiece vocab.txt), so they
exercise the real loading path. Weights are random but well scaled (each row has a standard deviation of about
1 / sqrt(columns)), so activations stay finite through many layers and greedy decoding is not degenerate.

Quantized weights are random bytes rather than quantized random floats: quantizing a billion weights in numpy
takes minutes, random blocks take a second. Their scale fields (the half floats `d`, `dmin`, `m` of
`SCALE_FIELDS`) are then set so that the dequantized rows have the intended spread.

Example:
    >>> shape = DecoderShape(n_layers=2, dim=64, ffn_dim=128, n_heads=4, n_kv_heads=2, vocab=300)  # doctest: +SKIP
    >>> write_decoder_gguf("tiny.gguf", shape, weight_type="Q4_K")                                # doctest: +SKIP
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from votive.errors import QuantError
from votive.quant.ggml_types import ggml_type

# GGML type name -> {half-float scale field: value before scaling}. A value is chosen so that a block's dequantized
# values center on zero (a min of about minus the mean quant), then all are multiplied by one factor per tensor.
_SCALE_VALUES = {
    "Q4_0": {"d": 1.0},
    "Q4_1": {"d": 1.0, "m": -7.5},
    "Q5_0": {"d": 1.0},
    "Q5_1": {"d": 1.0, "m": -15.5},
    "Q8_0": {"d": 1.0},
    "Q2_K": {"d": 1.0, "dmin": 1.5},  # x = d sc q - dmin m: dmin such that the mean of q (1.5) is taken off
    "Q3_K": {"d": 1.0},
    "Q4_K": {"d": 1.0, "dmin": 7.5},
    "Q5_K": {"d": 1.0, "dmin": 15.5},
    "Q6_K": {"d": 1.0},
}


def _half_offset(type_name: str, field_name: str) -> int:
    """The byte offset of a half-float field in the type's block, from the GGML type table."""
    f = ggml_type(type_name).field(field_name)
    if f.type != "half" or f.count != 1:
        raise QuantError(f"{type_name}.{field_name} is {f.count} {f.type}, not the one half float a scale is")
    return f.offset


# GGML type name -> (byte offset in the block, value before scaling) of each scale field.
SCALE_FIELDS = {name: tuple((_half_offset(name, field), value) for field, value in values.items())
                for name, values in _SCALE_VALUES.items()}


@dataclass(frozen=True)
class DecoderShape:
    """Hyperparameters of a LLaMA- or Gemma 3-shaped decoder (see votive.models.llama.Config)."""

    arch: str = "llama"  # "llama" or "gemma3"
    n_layers: int = 2
    dim: int = 64
    ffn_dim: int = 128
    n_heads: int = 4
    n_kv_heads: int = 2
    head_dim: int = 0  # 0: dim / n_heads
    vocab: int = 300  # at least 259: three specials and 256 byte tokens
    context: int = 256
    rope_base: float = 10000.0
    sliding_window: int = 16  # gemma3 only
    tied: bool = False  # llama: no output.weight, the token embedding is the output matrix (gemma3 always ties)

    @property
    def dh(self) -> int:
        return self.head_dim or self.dim // self.n_heads

    def n_params(self) -> int:
        dh = self.dh
        attn = self.dim * dh * (2 * self.n_heads + 2 * self.n_kv_heads)
        ffn = 3 * self.dim * self.ffn_dim
        return self.n_layers * (attn + ffn) + self.vocab * self.dim * (1 if self.arch == "gemma3" or self.tied else 2)


# Sizes of Llama 3.2 1B: 16 layers, width 2048, GQA 32 / 8 heads of 64, 8192 feed-forward, 128256 tokens, tied
# embeddings: 1.24B parameters.
LLAMA_1B = DecoderShape(n_layers=16, dim=2048, ffn_dim=8192, n_heads=32, n_kv_heads=8, vocab=128256, context=4096,
                        rope_base=500000.0, tied=True)


def random_weight(rng: np.random.Generator, type_name: str, rows: int, cols: int):
    """A random (rows, cols) weight as a GGUF file stores it: float32 / float16 values, ("BF16", uint16 bits), or
    (type name, uint8 blocks (rows, bytes_per_row)) for a quantized type of SCALE_FIELDS."""
    if type_name == "F32":
        return (rng.standard_normal((rows, cols), np.float32) / np.sqrt(cols)).astype(np.float32)
    if type_name == "F16":
        return (rng.standard_normal((rows, cols), np.float32) / np.sqrt(cols)).astype(np.float16)
    if type_name == "BF16":  # the top halves of float32 values, as GGUF stores them (uint16 bits)
        values = (rng.standard_normal((rows, cols), np.float32) / np.sqrt(cols)).astype(np.float32)
        return "BF16", (values.view(np.uint32) >> 16).astype(np.uint16)
    t = ggml_type(type_name)
    if cols % t.block_size:
        raise ValueError(f"a {t.name} row holds whole {t.block_size}-element blocks; {cols} columns do not fit")
    blocks = rng.integers(0, 256, (rows, cols // t.block_size * t.block_bytes), dtype=np.uint8)
    return t.name, scale_blocks(blocks, t.name, target_std=1.0 / np.sqrt(cols))


def scale_blocks(blocks: np.ndarray, type_name: str, target_std: float) -> np.ndarray:
    """Set the scale fields of random blocks (uint8 (rows, bytes_per_row), in place) so that dequantized rows have
    about `target_std` spread; returns `blocks`."""
    from votive.quant.codecs import dequantize

    t = ggml_type(type_name)
    per_row = blocks.reshape(blocks.shape[0], -1, t.block_bytes)  # (rows, blocks, block_bytes)
    fields = SCALE_FIELDS[t.name]
    for offset, value in fields:
        per_row[:, :, offset : offset + 2] = _half_bytes(value)
    sample = dequantize(blocks[: min(len(blocks), 64)], t.id)  # (<=64, cols)
    factor = target_std / max(float(sample.std()), 1e-30)
    for offset, value in fields:
        per_row[:, :, offset : offset + 2] = _half_bytes(value * factor)
    return blocks


def _half_bytes(value: float) -> np.ndarray:
    return np.array([value], np.float16).view(np.uint8)


def decoder_metadata(shape: DecoderShape) -> dict:
    """GGUF metadata of a decoder of `shape`, with a byte-level SentencePiece vocabulary of shape.vocab tokens."""
    a = shape.arch
    meta = {
        "general.architecture": a,
        "general.name": f"random {a} {shape.n_layers}x{shape.dim}",
        f"{a}.block_count": shape.n_layers,
        f"{a}.embedding_length": shape.dim,
        f"{a}.feed_forward_length": shape.ffn_dim,
        f"{a}.attention.head_count": shape.n_heads,
        f"{a}.attention.head_count_kv": shape.n_kv_heads,
        f"{a}.attention.key_length": shape.dh,
        f"{a}.attention.value_length": shape.dh,
        f"{a}.rope.freq_base": float(shape.rope_base),
        f"{a}.attention.layer_norm_rms_epsilon": 1e-6,
        f"{a}.context_length": shape.context,
    }
    if a == "gemma3":
        meta[f"{a}.attention.sliding_window"] = shape.sliding_window
    meta.update(_byte_vocabulary(shape.vocab))
    return meta


def _byte_vocabulary(vocab: int) -> dict:
    """<unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF>, then filler words: every text encodes (bytes)."""
    if vocab < 259:
        raise ValueError(f"a vocabulary needs at least 259 tokens (3 specials, 256 bytes), got {vocab}")
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"\u2581w{i}" for i in range(vocab - len(tokens))]
    types = [2, 3, 3] + [6] * 256 + [1] * (vocab - 259)  # unknown, control, control, byte..., normal...
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": np.arange(vocab, 0, -1, dtype=np.float32) * np.float32(-0.01),
        "tokenizer.ggml.token_type": np.array(types, np.int32),
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
        "tokenizer.ggml.unknown_token_id": 0,
        "tokenizer.ggml.add_bos_token": True,
    }


def decoder_tensors(shape: DecoderShape, weight_type: str, seed: int = 0, embed_type: str | None = None) -> dict:
    """name -> weight of a random decoder, in GGUF names and numpy order (see votive.models.llama.WEIGHTS).

    Args:
        weight_type: GGML type of every matrix ("Q4_K", "Q8_0", "F16", ...).
        embed_type: of the token embedding (and llama's output matrix); default weight_type.
    """
    rng = np.random.default_rng(seed)
    dh, embed_type = shape.dh, embed_type or weight_type

    def norm(n):  # RMSNorm weights near 1 (Gemma's stored 1 + w as well)
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    tensors = {"token_embd.weight": random_weight(rng, embed_type, shape.vocab, shape.dim),
               "output_norm.weight": norm(shape.dim)}
    if shape.arch == "llama" and not shape.tied:
        tensors["output.weight"] = random_weight(rng, embed_type, shape.vocab, shape.dim)
    for i in range(shape.n_layers):
        b = f"blk.{i}."
        tensors[b + "attn_norm.weight"] = norm(shape.dim)
        tensors[b + "attn_q.weight"] = random_weight(rng, weight_type, shape.n_heads * dh, shape.dim)
        tensors[b + "attn_k.weight"] = random_weight(rng, weight_type, shape.n_kv_heads * dh, shape.dim)
        tensors[b + "attn_v.weight"] = random_weight(rng, weight_type, shape.n_kv_heads * dh, shape.dim)
        tensors[b + "attn_output.weight"] = random_weight(rng, weight_type, shape.dim, shape.n_heads * dh)
        tensors[b + "ffn_norm.weight"] = norm(shape.dim)
        tensors[b + "ffn_gate.weight"] = random_weight(rng, weight_type, shape.ffn_dim, shape.dim)
        tensors[b + "ffn_up.weight"] = random_weight(rng, weight_type, shape.ffn_dim, shape.dim)
        tensors[b + "ffn_down.weight"] = random_weight(rng, weight_type, shape.dim, shape.ffn_dim)
        if shape.arch == "gemma3":
            tensors[b + "attn_q_norm.weight"] = norm(dh)
            tensors[b + "attn_k_norm.weight"] = norm(dh)
            tensors[b + "post_attention_norm.weight"] = norm(shape.dim)
            tensors[b + "post_ffw_norm.weight"] = norm(shape.dim)
    return tensors


def write_decoder_gguf(path, shape: DecoderShape, weight_type: str = "Q8_0", *, seed: int = 0,
                       embed_type: str | None = None, overwrite: bool = False) -> Path:
    """Write a random decoder of `shape` to the GGUF file `path`; returns the path (see decoder_tensors)."""
    from votive.formats.gguf_write import write_gguf

    return write_gguf(path, decoder_metadata(shape), decoder_tensors(shape, weight_type, seed, embed_type),
                      overwrite=overwrite)


@dataclass(frozen=True)
class EncoderShape:
    """A BERT encoder's config.json fields (see votive.models.bert.Config)."""

    num_hidden_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    intermediate_size: int = 128
    max_position_embeddings: int = 64
    words: tuple[str, ...] = field(default=("hello", "world", "the", "a", "cat", "dog", "sat", "on", "mat"))


# all-MiniLM-L6-v2's sizes (its real vocabulary has 30522 entries; the filler words make up the count).
MINILM = EncoderShape(num_hidden_layers=6, hidden_size=384, num_attention_heads=12, intermediate_size=1536,
                      max_position_embeddings=512)


def write_bert_folder(folder, shape: EncoderShape = EncoderShape(), *, seed: int = 0, vocab: int = 0) -> Path:
    """Write a random sentence-transformers BERT folder (config.json, model.safetensors, vocab.txt, mean pooling
    with normalization) into `folder`, which must not exist yet; returns it.

    Args:
        vocab: vocabulary size; default the specials, `shape.words` and single letters. Larger sizes add filler
            words (e.g. 30522 for MiniLM's embedding table).
    """
    folder = Path(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *shape.words, *"abcdefghijklmnopqrstuvwxyz"]
    words += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    words += [f"filler{i}" for i in range(max(0, vocab - len(words)))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    D, F, L = shape.hidden_size, shape.intermediate_size, shape.num_hidden_layers
    config = {"model_type": "bert", "vocab_size": len(words), "hidden_size": D, "num_hidden_layers": L,
              "num_attention_heads": shape.num_attention_heads, "intermediate_size": F,
              "max_position_embeddings": shape.max_position_embeddings, "type_vocab_size": 2,
              "layer_norm_eps": 1e-12, "hidden_act": "gelu"}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": D,
                                                                  "pooling_mode_mean_tokens": True}))

    tensors = bert_tensors(rng, len(words), shape.max_position_embeddings, 2, D, F, L)
    _write_safetensors(folder / "model.safetensors", tensors)
    return folder


def bert_tensors(rng, vocab: int, positions: int, types: int, D: int, F: int, L: int, prefix: str = "") -> dict:
    """BertModel's tensors (XLMRobertaModel's have the same names) under `prefix`, drawn from `rng` in this order:
    matrices ~ N(0, 1 / in), norm weights ~ 1 + N(0, 0.1^2), biases ~ N(0, 0.1^2). Test folders and the references
    made from them depend on the order."""

    def mat(rows, cols):
        return (rng.standard_normal((rows, cols), np.float32) / np.sqrt(cols)).astype(np.float32)

    def vec(n, center=0.0):
        return (center + 0.1 * rng.standard_normal(n)).astype(np.float32)

    tensors = {f"{prefix}embeddings.word_embeddings.weight": mat(vocab, D),
               f"{prefix}embeddings.position_embeddings.weight": mat(positions, D),
               f"{prefix}embeddings.token_type_embeddings.weight": mat(types, D),
               f"{prefix}embeddings.LayerNorm.weight": vec(D, 1.0), f"{prefix}embeddings.LayerNorm.bias": vec(D)}
    for i in range(L):
        p = f"{prefix}encoder.layer.{i}."
        for part in ("query", "key", "value"):
            tensors[p + f"attention.self.{part}.weight"] = mat(D, D)
            tensors[p + f"attention.self.{part}.bias"] = vec(D)
        tensors[p + "attention.output.dense.weight"] = mat(D, D)
        tensors[p + "attention.output.dense.bias"] = vec(D)
        tensors[p + "attention.output.LayerNorm.weight"] = vec(D, 1.0)
        tensors[p + "attention.output.LayerNorm.bias"] = vec(D)
        tensors[p + "intermediate.dense.weight"] = mat(F, D)
        tensors[p + "intermediate.dense.bias"] = vec(F)
        tensors[p + "output.dense.weight"] = mat(D, F)
        tensors[p + "output.dense.bias"] = vec(D)
        tensors[p + "output.LayerNorm.weight"] = vec(D, 1.0)
        tensors[p + "output.LayerNorm.bias"] = vec(D)
    return tensors


def _write_safetensors(path: Path, tensors: dict) -> None:
    """The tensors as float32 in a safetensors file (votive.formats.safetensors_write), replacing any file there."""
    from votive.formats.safetensors_write import write_safetensors

    write_safetensors(path, {name: np.asarray(t, np.float32) for name, t in tensors.items()}, overwrite=True)

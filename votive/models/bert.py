"""BERT encoders: token ids -> BertModel -> last hidden states (pooled by votive.models.sentence_encoder).

Ported from, at pinned commits:
- transformers `src/transformers/models/bert/modeling_bert.py` @ v4.44.0 (BertEmbeddings, BertSelfAttention,
  BertSelfOutput, BertIntermediate, BertOutput): post-norm encoder, absolute position embeddings, exact GELU.

Any checkpoint with this architecture (all-MiniLM-L6-v2, bge-small, e5-small, ...) loads unchanged: the sizes
come from its config.json.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from votive.errors import ModelConfigError
from votive.formats.weights import WeightStore
from votive.text.tokenizer_json import read_json


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class Config:
    """The upstream config.json, the fields BertModel reads (defaults are bert-base's)."""

    vocab_size: int = 30522  # rows of the token embedding table
    hidden_size: int = 768  # model width D
    num_hidden_layers: int = 12  # encoder blocks
    num_attention_heads: int = 12  # H; head size is D / H
    intermediate_size: int = 3072  # feed-forward width
    max_position_embeddings: int = 512  # longest sequence the position table covers
    type_vocab_size: int = 2  # segment (token type) embeddings; single sentences use type 0
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"  # only exact GELU is supported (what BERT checkpoints use)
    position_embedding_type: str = "absolute"

    @classmethod
    def from_json(cls, path: Path) -> "Config":
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ModelConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        model_type = raw.get("model_type", "bert")
        if model_type != "bert":
            raise ModelConfigError(f"{path}: model_type {model_type!r} is not a BERT encoder")
        cfg = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        if cfg.hidden_act != "gelu":
            raise ModelConfigError(f"{path}: hidden_act {cfg.hidden_act!r} is not supported (only 'gelu')")
        if cfg.position_embedding_type != "absolute":
            raise ModelConfigError(
                f"{path}: position_embedding_type {cfg.position_embedding_type!r} is not supported (only 'absolute')"
            )
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ModelConfigError(
                f"{path}: hidden_size {cfg.hidden_size} is not divisible by {cfg.num_attention_heads} heads"
            )
        return cfg


# -------------------------------------------------------------------------------------------- weight names
# Our name -> the checkpoint's name (BertModel's state dict). Linear weights are stored (out, in) as PyTorch
# keeps them and used through a transposed view, never copied. Checkpoints saved from a task model prefix every
# key with "bert."; old TF conversions call LayerNorm's parameters gamma/beta. Both are resolved in `_lookup`.
WEIGHTS = {
    "tok_embed": "embeddings.word_embeddings.weight",  # (vocab, D)
    "pos_embed": "embeddings.position_embeddings.weight",  # (max_pos, D)
    "type_embed": "embeddings.token_type_embeddings.weight",  # (types, D)
    "embed_norm.w": "embeddings.LayerNorm.weight",  # (D,)
    "embed_norm.b": "embeddings.LayerNorm.bias",  # (D,)
}
LAYER_WEIGHTS = {
    "wq": "encoder.layer.{i}.attention.self.query.weight",  # (D, D)
    "bq": "encoder.layer.{i}.attention.self.query.bias",  # (D,)
    "wk": "encoder.layer.{i}.attention.self.key.weight",  # (D, D)
    "bk": "encoder.layer.{i}.attention.self.key.bias",  # (D,)
    "wv": "encoder.layer.{i}.attention.self.value.weight",  # (D, D)
    "bv": "encoder.layer.{i}.attention.self.value.bias",  # (D,)
    "wo": "encoder.layer.{i}.attention.output.dense.weight",  # (D, D)
    "bo": "encoder.layer.{i}.attention.output.dense.bias",  # (D,)
    "attn_norm.w": "encoder.layer.{i}.attention.output.LayerNorm.weight",  # (D,)
    "attn_norm.b": "encoder.layer.{i}.attention.output.LayerNorm.bias",  # (D,)
    "w_up": "encoder.layer.{i}.intermediate.dense.weight",  # (F, D)
    "b_up": "encoder.layer.{i}.intermediate.dense.bias",  # (F,)
    "w_down": "encoder.layer.{i}.output.dense.weight",  # (D, F)
    "b_down": "encoder.layer.{i}.output.dense.bias",  # (D,)
    "ffn_norm.w": "encoder.layer.{i}.output.LayerNorm.weight",  # (D,)
    "ffn_norm.b": "encoder.layer.{i}.output.LayerNorm.bias",  # (D,)
}
# In the checkpoint but not used by an encoder that pools token states: the [CLS] pooler head, MLM heads, and
# the position_ids buffer older transformers versions saved.
UNUSED_PREFIXES = ("pooler.", "cls.", "embeddings.position_ids")


def _weight_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Expected shape of every tensor, by our name (the comments in WEIGHTS / LAYER_WEIGHTS, as numbers)."""
    D, F = cfg.hidden_size, cfg.intermediate_size
    shapes = {"tok_embed": (cfg.vocab_size, D), "pos_embed": (cfg.max_position_embeddings, D),
              "type_embed": (cfg.type_vocab_size, D), "embed_norm.w": (D,), "embed_norm.b": (D,)}
    shapes.update(dict.fromkeys(LAYER_WEIGHTS, (D,)))  # biases and norms
    shapes.update({"wq": (D, D), "wk": (D, D), "wv": (D, D), "wo": (D, D), "w_up": (F, D), "b_up": (F,),
                   "w_down": (D, F)})
    return shapes


# ---------------------------------------------------------------------------------------------------- layers
class EncoderLayer:
    """One post-norm transformer block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, ops, w: dict, cfg: Config):
        self.ops, self.cfg = ops, cfg
        self.w = w  # LAYER_WEIGHTS names -> arrays, shapes as listed there
        self.n_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads

    def __call__(self, x, mask_bias):
        """x: (B, T, D) hidden states; mask_bias: (B, 1, 1, T), 0 for tokens and a large negative for padding."""
        ops, w, cfg = self.ops, self.w, self.cfg
        B, T, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        flat = x.reshape(B * T, D)

        # self-attention: softmax(q k^T / sqrt(Dh) + mask) v, per head
        q = ops.linear(flat, w["wq"], w["bq"])  # (B*T, D)
        q *= 1.0 / math.sqrt(Dh)  # scale q rather than the (B, H, T, T) scores: fewer elements for short T
        q = q.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh)
        k = ops.linear(flat, w["wk"], w["bk"]).reshape(B, T, H, Dh).transpose(0, 2, 3, 1)  # (B, H, Dh, T)
        v = ops.linear(flat, w["wv"], w["bv"]).reshape(B, T, H, Dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh)
        probs = ops.softmax(ops.matmul(q, k), mask=mask_bias)  # (B, H, T, T)
        ctx = ops.matmul(probs, v).transpose(0, 2, 1, 3).reshape(B * T, D)  # (B*T, D), heads concatenated
        attn = ops.linear(ctx, w["wo"], w["bo"])  # (B*T, D)
        flat = ops.layer_norm(attn, w["attn_norm.w"], w["attn_norm.b"], cfg.layer_norm_eps, residual=flat)

        # feed-forward: GELU(x W_up^T + b) W_down^T + b
        h = ops.gelu(ops.linear(flat, w["w_up"]), bias=w["b_up"])  # (B*T, F)
        out = ops.linear(h, w["w_down"], w["b_down"])  # (B*T, D)
        out = ops.layer_norm(out, w["ffn_norm.w"], w["ffn_norm.b"], cfg.layer_norm_eps, residual=flat)
        return out.reshape(B, T, D)


# ------------------------------------------------------------------------------------------------- forward
class BertModel:
    """The encoder: embeddings then `num_hidden_layers` blocks; returns the last hidden states."""

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict]):
        self.ops, self.cfg = ops, cfg
        self.w = weights  # WEIGHTS names -> arrays
        self.layers = [EncoderLayer(ops, lw, cfg) for lw in layers]

    def forward(self, ids, mask):
        """ids, mask: (B, T) integer arrays -> (B, T, D) float32 hidden states."""
        ops, w, cfg = self.ops, self.w, self.cfg
        T = ids.shape[1]
        x = ops.embedding(w["tok_embed"], ids)  # (B, T, D)
        x += w["pos_embed"][:T]  # positions 0..T-1
        x += w["type_embed"][0]  # single-segment input: token type 0 everywhere
        x = ops.layer_norm(x, w["embed_norm.w"], w["embed_norm.b"], cfg.layer_norm_eps)  # (B, T, D)
        # HF's extended attention mask: (1 - mask) * finfo(float32).min, broadcast over heads and query rows
        mask_bias = (1.0 - ops.asarray(mask, ops.float32)) * ops.float32(-3.4028234663852886e38)
        mask_bias = mask_bias.reshape(mask.shape[0], 1, 1, T)  # (B, 1, 1, T)
        for layer in self.layers:
            x = layer(x, mask_bias)
        return x

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    @property
    def max_positions(self) -> int:
        """The longest input the position table covers."""
        return self.cfg.max_position_embeddings

    @classmethod
    def from_folder(cls, folder: Path, ops) -> "BertModel":
        """A Hugging Face BertModel folder (config.json, safetensors) on `ops`."""
        return cls.from_safetensors(WeightStore(folder), Config.from_json(Path(folder) / "config.json"), ops)

    @classmethod
    def from_safetensors(cls, store: WeightStore, cfg: Config, ops) -> "BertModel":
        """Bind every tensor of WEIGHTS/LAYER_WEIGHTS from `store`, checking shapes; unknown keys fail loudly."""
        prefix = "bert." if "bert." + WEIGHTS["tok_embed"] in store else ""
        shapes = _weight_shapes(cfg)
        used = set()

        def fetch(ours: str, theirs: str):
            name = _lookup(store, prefix + theirs)
            used.add(name)
            return ops.asarray(store.get(name, shape=shapes.get(ours)))

        weights = {ours: fetch(ours, theirs) for ours, theirs in WEIGHTS.items()}
        layers = [
            {ours: fetch(ours, theirs.format(i=i)) for ours, theirs in LAYER_WEIGHTS.items()}
            for i in range(cfg.num_hidden_layers)
        ]
        unknown = [
            n for n in store.keys() if n not in used and not n[len(prefix) :].startswith(UNUSED_PREFIXES)
        ]
        if unknown:
            raise ModelConfigError(
                f"{store.path}: {len(unknown)} tensors a BERT encoder does not use, e.g. {unknown[0]!r} "
                f"(config says {cfg.num_hidden_layers} layers; is this really a BertModel checkpoint?)"
            )
        return cls(ops, cfg, weights, layers)


def _lookup(store: WeightStore, name: str) -> str:
    """The stored name for `name`, allowing LayerNorm's TF-era gamma/beta spelling."""
    if name in store:
        return name
    for new, old in ((".LayerNorm.weight", ".LayerNorm.gamma"), (".LayerNorm.bias", ".LayerNorm.beta")):
        if name.endswith(new) and name[: -len(new)] + old in store:
            return name[: -len(new)] + old
    return name  # store.get raises, naming it

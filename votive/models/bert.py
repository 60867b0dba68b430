"""BERT encoders as sentence-transformers runs them: token ids -> BertModel -> pooling -> (optional) L2 norm.

Ported from, at pinned commits:
- transformers `src/transformers/models/bert/modeling_bert.py` @ v4.44.0 (BertEmbeddings, BertSelfAttention,
  BertSelfOutput, BertIntermediate, BertOutput): post-norm encoder, absolute position embeddings, exact GELU.
- sentence-transformers `sentence_transformers/models/Pooling.py` and `Normalize.py` @ v3.0.0: the pooling
  modes and their concatenation order, and the `modules.json` pipeline that names them.

Any checkpoint with this architecture (all-MiniLM-L6-v2, bge-small, e5-small, ...) loads unchanged: the sizes
come from its config.json, the pooling from its sentence-transformers files.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from pathlib import Path

from votive.errors import InputError, ModelConfigError
from votive.formats.weights import WeightStore
from votive.text.wordpiece import load_tokenizer


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
        raw = _read_json(path)
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


# ------------------------------------------------------------------------------------------------- pooling
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")  # sentence-transformers' order


@dataclass
class Pooling:
    """How token states become one vector: the `pooling_mode_*` flags of 1_Pooling/config.json, and Normalize."""

    modes: tuple[str, ...] = ("mean_tokens",)
    normalize: bool = False

    def __call__(self, ops, hidden, mask):
        """hidden (B, T, D), mask (B, T) -> (B, D * len(modes))."""
        parts = []
        for mode in self.modes:
            if mode == "cls_token":
                parts.append(hidden[:, 0])  # (B, D)
            elif mode == "max_tokens":
                parts.append(ops.masked_max(hidden, mask))  # (B, D)
            elif mode == "mean_tokens":
                parts.append(ops.masked_mean(hidden, mask))  # (B, D)
            else:  # mean_sqrt_len_tokens: the sum over tokens divided by sqrt(token count)
                mean = ops.masked_mean(hidden, mask)
                parts.append(mean * ops.asarray(mask, ops.float32).sum(axis=1, keepdims=True) ** 0.5)
        out = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        return ops.l2_normalize(out) if self.normalize else out

    @classmethod
    def from_folder(cls, folder: Path) -> "Pooling":
        """Read modules.json; a plain transformers folder (no modules.json) gets mean pooling, as ST defaults."""
        modules_path = folder / "modules.json"
        if not modules_path.is_file():
            return cls()
        modules = _read_json(modules_path)
        if not isinstance(modules, list):
            raise ModelConfigError(f"{modules_path}: expected a list of modules")
        pooling, normalize = None, False
        for m in modules:
            kind = str(m.get("type", "")).rsplit(".", 1)[-1]
            if kind == "Transformer":
                continue
            if kind == "Pooling":
                pooling = _read_json(folder / m.get("path", "") / "config.json")
            elif kind == "Normalize":
                normalize = True
            else:
                raise ModelConfigError(f"{modules_path}: module {m.get('type')!r} is not supported by votive")
        if pooling is None:
            return cls(normalize=normalize)
        modes = tuple(mode for mode in POOLING_MODES if pooling.get(f"pooling_mode_{mode}"))
        others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v and k[13:] not in POOLING_MODES]
        if others:
            raise ModelConfigError(f"{folder}/1_Pooling/config.json: {others[0]} is not supported")
        if not modes:
            raise ModelConfigError(f"{folder}/1_Pooling/config.json: no pooling mode is enabled")
        return cls(modes=modes, normalize=normalize)


# ------------------------------------------------------------------------------------------- the encoder
class SentenceEncoder:
    """Text in, one float32 vector per text out: tokenizer, BertModel, pooling.

    Example:
        >>> enc = SentenceEncoder.from_folder(Path("all-MiniLM-L6-v2"), ops)   # doctest: +SKIP
        >>> enc.embed(["hello", "world"]).shape                               # doctest: +SKIP
        (2, 384)
    """

    kind = "embedding"

    def __init__(self, model: BertModel, tokenizer, pooling: Pooling, max_seq_length: int, model_id: str):
        self.model, self.ops = model, model.ops
        self.tokenizer = tokenizer  # encode_batch(texts) -> ids per text, truncated to max_seq_length, unpadded
        self.pooling = pooling
        self.max_seq_length = max_seq_length
        self.model_id = model_id
        self.dim = model.cfg.hidden_size * len(pooling.modes)
        self.backend = self.ops.name

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, truncated to max_seq_length."""
        return self.tokenizer.encode_batch(_check_texts(texts))

    def encode(self, texts: list[str], batch_size: int = 32):
        """Embed `texts` -> (float32 array (len(texts), dim), total token count incl. special tokens).

        Texts are sorted by length so each batch pads only to its own longest member, then put back in order.
        """
        texts = _check_texts(texts)
        ops = self.ops
        out = ops.empty((len(texts), self.dim), ops.float32)
        if not texts:
            return ops.to_numpy(out), 0
        token_ids = self.tokenizer.encode_batch(texts)  # InputError for text that is not Unicode
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        n_tokens = 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            T = max(len(token_ids[i]) for i in idx)
            ids = [token_ids[i] + [0] * (T - len(token_ids[i])) for i in idx]
            mask = [[1] * len(token_ids[i]) + [0] * (T - len(token_ids[i])) for i in idx]
            n_tokens += sum(len(token_ids[i]) for i in idx)
            ids, mask = ops.asarray(ids, ops.int64), ops.asarray(mask, ops.int64)  # (b, T) each
            hidden = self.model.forward(ids, mask)  # (b, T, D)
            out[ops.asarray(idx, ops.int64)] = self.pooling(ops, hidden, mask)  # (b, dim)
        return ops.to_numpy(out), n_tokens  # host memory on every backend

    def embed(self, texts, batch_size: int = 32):
        """Like sentence-transformers' `encode`: a list of n texts -> (n, dim) float32; one str -> (dim,)."""
        if isinstance(texts, str):
            return self.encode([texts], batch_size)[0][0]
        return self.encode(texts, batch_size)[0]

    @classmethod
    def from_folder(cls, folder: Path, ops, model_id: str | None = None) -> "SentenceEncoder":
        folder = Path(folder)
        cfg = Config.from_json(folder / "config.json")
        model = BertModel.from_safetensors(WeightStore(folder), cfg, ops)
        max_len = _max_seq_length(folder, cfg)
        return cls(model, _load_tokenizer(folder, max_len), Pooling.from_folder(folder), max_len, model_id or folder.name)


# --------------------------------------------------------------------------------------------------- addenda
def _check_texts(texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InputError(f"expected a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"item {i} is {type(t).__name__}, expected a string")
    return list(texts)


def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelConfigError(f"{path}: file not found") from None
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{path}: cannot read JSON ({e})") from None


def _max_seq_length(folder: Path, cfg: Config) -> int:
    """sentence_bert_config.json's max_seq_length, else the tokenizer's model_max_length, capped by positions."""
    limit = cfg.max_position_embeddings
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        if (folder / name).is_file():
            value = _read_json(folder / name).get(key)
            if isinstance(value, int) and value > 0:
                return min(value, limit)
    return limit


def _load_tokenizer(folder: Path, max_len: int):
    """The folder's tokenizer with sentence-transformers' settings: truncate to max_len, no padding
    (tokenizer.json often says Fixed-128 padding; ST pads per batch instead). BERT WordPiece tokenizers are read
    by votive.text.wordpiece; any other tokenizer.json needs the `tokenizers` library."""
    return load_tokenizer(folder, max_len)

"""BERT encoders: token ids -> BertModel -> last hidden states (pooled by votive.models.sentence_encoder).

Ported from, at pinned commits:
- transformers `src/transformers/models/bert/modeling_bert.py` @ v4.44.0 (BertEmbeddings, BertSelfAttention,
  BertSelfOutput, BertIntermediate, BertOutput): post-norm encoder, absolute position embeddings, exact GELU.
- llama.cpp (ggml-org/llama.cpp @ c392e50) `convert_hf_to_gguf.py` BertModel and `src/llama.cpp` build_bert: the
  GGUF names (`GGUF_WEIGHTS`), hyperparameters under `bert.*`. llama.cpp's graph runs ggml_gelu, the tanh form;
  votive runs BERT's exact GELU on GGUF files too (the function the checkpoint was trained with), so a GGUF's
  embeddings agree with llama.cpp's to a cosine of about 1 - 1e-6 rather than bit for bit.

Quantized matrices: `from_safetensors(..., quantize=Q8_0)` and a quantized GGUF keep the six matrices of each
layer (q, k, v, attention output, FFN up and down) as GGML blocks multiplied by votive's C kernels (the decoders'
linears, `ops.make_linear`; the B*T rows of a batch go through in one call); embeddings, norms and biases stay
float32. A float checkpoint's matrices are packed at load as the backend's float product reads them (numpy:
`encoder_dense_linear`, the products `ops.linear` gives), or read so from a folder `votive convert --type panels`
wrote.

Any checkpoint with this architecture (all-MiniLM-L6-v2, bge-small, e5-small, ...) loads unchanged: the sizes
come from its config.json.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, fields
from functools import cached_property, partial
from pathlib import Path

from votive.errors import InputError, ModelConfigError
from votive.formats.weights import WeightStore
from votive.models.config_checks import check_fields
from votive.models.encoder_pass import encoder_pass_for
from votive.quant.ggml_types import GGMLType
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
        stored = raw.get("quantization_config")
        method = stored.get("quant_method") if isinstance(stored, dict) else stored
        if stored is not None and method not in (INT8_METHOD, PANELS_METHOD):
            raise ModelConfigError(f"{path}: quantization_config {str(method)[:60]!r} is not a layout votive runs "
                                   f"(only {INT8_METHOD!r} and {PANELS_METHOD!r}, what `votive convert --type int8` "
                                   "and `--type panels` write)")
        cfg = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        check_fields(cfg, path)  # every size positive, layer_norm_eps finite and > 0, each named by its key
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

    @classmethod
    def from_gguf(cls, f) -> "Config":
        """The `bert.*` hyperparameters of an open GGUFFile (llama.cpp's names; the vocabulary and token type
        counts come from the tensors). A causal `bert` file is refused: BERT attends both ways."""
        if f.get("bert.attention.causal", False):
            raise ModelConfigError(f"{f.path}: bert.attention.causal is true; a BERT encoder attends both ways")
        cfg = cls(
            vocab_size=f.tensors["token_embd.weight"].shape[0] if "token_embd.weight" in f.tensors else 0,
            hidden_size=f.require("bert.embedding_length", int),
            num_hidden_layers=f.require("bert.block_count", int),
            num_attention_heads=f.require("bert.attention.head_count", int),
            intermediate_size=f.require("bert.feed_forward_length", int),
            max_position_embeddings=f.require("bert.context_length", int),
            type_vocab_size=f.tensors["token_types.weight"].shape[0] if "token_types.weight" in f.tensors else 0,
            layer_norm_eps=f.require("bert.attention.layer_norm_epsilon", float),
        )
        check_fields(cfg, f.path, GGUF_KEYS)
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ModelConfigError(f"{f.path}: bert.embedding_length {cfg.hidden_size} is not divisible by "
                                   f"{cfg.num_attention_heads} heads")
        return cfg


# Config field -> the `bert.*` GGUF key (or tensor) it comes from, for messages.
GGUF_KEYS = {"vocab_size": "token_embd.weight rows", "hidden_size": "bert.embedding_length",
             "num_hidden_layers": "bert.block_count", "num_attention_heads": "bert.attention.head_count",
             "intermediate_size": "bert.feed_forward_length", "max_position_embeddings": "bert.context_length",
             "type_vocab_size": "token_types.weight rows", "layer_norm_eps": "bert.attention.layer_norm_epsilon"}


# -------------------------------------------------------------------------------------------- weight names
# Our name -> the checkpoint's name (BertModel's state dict). Linear weights are stored (out, in) as PyTorch
# keeps them; the numpy backend packs each once at load (`encoder_dense_linear`). Checkpoints saved from a task
# model prefix every key with "bert."; old TF conversions call LayerNorm's parameters gamma/beta. Both are resolved
# in `_lookup`.
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
# The same weights in a llama.cpp `bert` GGUF (convert_hf_to_gguf.py's tensor map; matrices (out, in) as above).
GGUF_WEIGHTS = {
    "tok_embed": "token_embd.weight",  # (vocab, D); F16 or Q8_0 in such files: rows decoded as looked up
    "pos_embed": "position_embd.weight",  # (max_pos, D), F32
    "type_embed": "token_types.weight",  # (types, D), F32
    "embed_norm.w": "token_embd_norm.weight",
    "embed_norm.b": "token_embd_norm.bias",
}
GGUF_LAYER_WEIGHTS = {
    "wq": "blk.{i}.attn_q.weight", "bq": "blk.{i}.attn_q.bias",
    "wk": "blk.{i}.attn_k.weight", "bk": "blk.{i}.attn_k.bias",
    "wv": "blk.{i}.attn_v.weight", "bv": "blk.{i}.attn_v.bias",
    "wo": "blk.{i}.attn_output.weight", "bo": "blk.{i}.attn_output.bias",
    "attn_norm.w": "blk.{i}.attn_output_norm.weight", "attn_norm.b": "blk.{i}.attn_output_norm.bias",
    "w_up": "blk.{i}.ffn_up.weight", "b_up": "blk.{i}.ffn_up.bias",
    "w_down": "blk.{i}.ffn_down.weight", "b_down": "blk.{i}.ffn_down.bias",
    "ffn_norm.w": "blk.{i}.layer_output_norm.weight", "ffn_norm.b": "blk.{i}.layer_output_norm.bias",
}  # fmt: skip
# The matrices quantized at load (`quantize=`) and run as linears: the bulk of the multiplications.
MATRICES = ("wq", "wk", "wv", "wo", "w_up", "w_down")
# config.json's quantization_config.quant_method of a folder whose MATRICES are stored as int8, each as its quants
# in the int8 kernel's layout, one float32 scale and one quant sum per row (`_stored_int8`): what `votive convert
# --type int8` writes, the arrays `quantize="int8"` makes at load (votive.builders.bert_folders).
INT8_METHOD = "votive-int8"
INT8_SCALE, INT8_SUM = "_scale", "_sum"
# ... of a folder whose MATRICES are stored as float32 panels, `<name>` (ceil(out / 64), in, 64): the layout the
# numpy backend's float product packs each matrix into at load (`encoder_dense_linear`), read in place
# (`_stored_panels`): what `votive convert --type panels` writes.
PANELS_METHOD = "votive-panels"

# In the checkpoint but not used by the encoder itself: the [CLS] pooler and a sequence classifier (read by
# votive.models.cross_encoder when the model reranks), MLM heads, and the position_ids buffer older transformers
# versions saved.
UNUSED_PREFIXES = ("pooler.", "classifier.", "cls.", "embeddings.position_ids")


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
def embed_tokens(ops, table, ids):
    """(B, T) ids -> (B, T, D) rows of the token table: an array, or a GGUF's table behind a linear (F16 / Q8_0
    blocks), of which only the rows looked up are decoded."""
    if callable(table):
        return table.rows(ops.to_numpy(ids).reshape(-1)).reshape(*ids.shape, -1)
    return ops.embedding(table, ids)


def extended_mask(ops, mask):
    """HF's extended attention mask: (B, T) 1/0 -> (B, 1, 1, T) float32, 0 for tokens and finfo(float32).min for
    padding, broadcast over heads and query rows (every encoder family here adds it to its scores)."""
    bias = (1.0 - ops.asarray(mask, ops.float32)) * ops.float32(-3.4028234663852886e38)
    return bias.reshape(mask.shape[0], 1, 1, mask.shape[1])


def project(ops, x, weight, bias=None):
    """x (n, in) @ W.T + b -> (n, out) float32, a new array. A float W (an array) goes through `ops.linear` as it
    always has; a quantized or GGUF-held W is a `votive.backends.ops.Linear` (callable), multiplied by the kernels."""
    if not callable(weight):
        return ops.linear(x, weight, bias)
    y = weight(x)  # (n, out)
    if bias is not None:
        y += bias
    return y


class EncoderLayer:
    """One post-norm transformer block: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""

    def __init__(self, ops, w: dict, cfg: Config):
        self.ops, self.cfg = ops, cfg
        self.w = w  # LAYER_WEIGHTS names -> arrays, shapes as listed there
        self.n_heads = cfg.num_attention_heads
        self.head_dim = cfg.hidden_size // cfg.num_attention_heads

    @cached_property
    def qkv(self) -> dict | None:
        """q, k, v as one matrix and bias (`_fused_qkv`); None when quantized and not fusable. Made on first use:
        the C pass (encoder_pass) multiplies float q, k and v as stored, so a model it runs never copies them."""
        return _fused_qkv(self.ops, self.w)

    def __call__(self, x, mask_bias, rows=None):
        """x: (B, T, D) hidden states; mask_bias: (B, 1, 1, T), 0 for tokens and a large negative for padding.

        rows: None, or the positions (of B*T) holding tokens, with x (N, D) their states only (`token_rows`): every
        product then skips the padding, which is put back (zeros) only for the attention's (B, H, T, T) scores;
        returns (N, D). Each token's numbers are the padded run's."""
        ops, w = self.ops, self.w
        B, T, D = mask_bias.shape[0], mask_bias.shape[-1], x.shape[-1]
        H, Dh = self.n_heads, self.head_dim
        flat = x.reshape(-1, D)  # (B*T, D), or (N, D) with rows

        # self-attention: softmax(q k^T / sqrt(Dh) + mask) v, per head
        if self.qkv is not None:
            qkv = project(ops, flat, self.qkv["wqkv"], self.qkv["bqkv"])  # (B*T, 3D): q | k | v, one product
            qkv = qkv if rows is None else _scatter_rows(ops, qkv, rows, B * T)
            q, k, v = qkv[:, :D], qkv[:, D : 2 * D], qkv[:, 2 * D :]  # views, (B*T, D) each
        else:
            q, k, v = (project(ops, flat, w[m], w[b]) for m, b in (("wq", "bq"), ("wk", "bk"), ("wv", "bv")))
            if rows is not None:
                q, k, v = (_scatter_rows(ops, t, rows, B * T) for t in (q, k, v))
        q *= 1.0 / math.sqrt(Dh)  # scale q rather than the (B, H, T, T) scores: fewer elements for short T
        q = q.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh)
        k = k.reshape(B, T, H, Dh).transpose(0, 2, 3, 1)  # (B, H, Dh, T)
        v = v.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh)
        probs = ops.softmax(ops.matmul(q, k), mask=mask_bias)  # (B, H, T, T)
        ctx = ops.matmul(probs, v).transpose(0, 2, 1, 3).reshape(B * T, D)  # (B*T, D), heads concatenated
        if rows is not None:
            ctx = ctx[rows]  # (N, D): the tokens' rows
        out = self.output(ctx, flat)  # (B*T, D) or (N, D)
        return out.reshape(B, T, D) if rows is None else out

    def packed(self, x, offsets, attend):
        """x (N, D): the tokens of the batch's texts one after another, text s at rows offsets[s] ..
        offsets[s + 1] - 1, no padding anywhere: attention per text by `attend`, the backend's optional
        `encoder_attention` (no mask, no padded (B, H, T, T) scores, no scatter). Returns (N, D)."""
        ops, w = self.ops, self.w
        if self.qkv is not None:
            qkv = project(ops, x, self.qkv["wqkv"], self.qkv["bqkv"])  # (N, 3D): q | k | v, one product
        else:
            qkv = ops.concatenate([project(ops, x, w[m], w[b]) for m, b in (("wq", "bq"), ("wk", "bk"), ("wv", "bv"))],
                                  axis=1)  # (N, 3D)
        ctx = attend(qkv, offsets, self.n_heads, 1.0 / math.sqrt(self.head_dim))  # (N, D)
        return self.output(ctx, x)

    def output(self, ctx, flat):
        """The block after attention: x = LN(x + ctx W_o^T + b); x = LN(x + FFN(x)), on rows (n, D)."""
        ops, w, eps = self.ops, self.w, self.cfg.layer_norm_eps
        attn = project(ops, ctx, w["wo"], w["bo"])  # (n, D)
        flat = ops.layer_norm(attn, w["attn_norm.w"], w["attn_norm.b"], eps, residual=flat)

        # feed-forward: GELU(x W_up^T + b) W_down^T + b
        h = ops.gelu(project(ops, flat, w["w_up"]), bias=w["b_up"])  # (n, F)
        out = project(ops, h, w["w_down"], w["b_down"])  # (n, D)
        return ops.layer_norm(out, w["ffn_norm.w"], w["ffn_norm.b"], eps, residual=flat)


def run_layers(ops, layers: list, x, mask, mask_bias, whole=None):
    """x (B, T, D) through the blocks -> (B, T, D), zeros at the padding. Padding is left out of every product
    (`token_rows`); with the backend's `encoder_attention` the texts' rows go through packed end to end, else
    they are put back in the padded layout for the masked attention of each block. whole: the layers'
    `encoder_pass.EncoderPass` (all of them in one C call, the packed path's bits) or None."""
    B, T = mask.shape
    rows = token_rows(ops, mask)  # None: no padding (a single text, or texts of one length)
    attend = getattr(ops, "encoder_attention", None)  # an optional op, outside the OpSet every backend offers
    if attend is not None:
        lengths = ops.to_numpy(mask).astype(bool).sum(axis=1) if rows is not None else [T] * B  # host data
        offsets = ops.asarray([0, *itertools.accumulate(int(n) for n in lengths)], ops.int64)  # (B+1,)
        packed = x.reshape(B * T, -1) if rows is None else x.reshape(B * T, -1)[rows]  # (N, D)
        if whole is not None:
            packed = whole(packed, offsets)
        else:
            for layer in layers:
                packed = layer.packed(packed, offsets, attend)
    elif rows is None:
        for layer in layers:
            x = layer(x, mask_bias)
        return x
    else:
        packed = x.reshape(B * T, -1)[rows]  # (N, D)
        for layer in layers:
            packed = layer(packed, mask_bias, rows)
    return packed.reshape(B, T, -1) if rows is None else _scatter_rows(ops, packed, rows, B * T).reshape(B, T, -1)


def token_rows(ops, mask):
    """The positions of B*T that hold tokens (mask 1), as an index array; None when no position is padding (a
    single text, or texts of one length), which then run as they are."""
    flat = ops.to_numpy(mask).reshape(-1)  # host data: the tokenizer's mask
    kept = flat.nonzero()[0]
    return None if kept.size == flat.size else ops.asarray(kept, ops.int64)


def _scatter_rows(ops, x, rows, n):
    """x (N, d) put at `rows` of a zeroed (n, d): the padded layout attention reads (zero keys and values at the
    padding, whose scores the mask removes)."""
    out = ops.empty((n, x.shape[1]), ops.float32)
    out[:] = 0
    out[rows] = x
    return out


def _stored_op(ops, store: WeightStore, name: str, op: str, kind: str, method: str, quantize):
    """The backend's optional op `op` reading matrix `name` as a converted folder stores it (`kind`, `method`);
    refused where the backend lacks it, or with `quantize` (None when none was asked), which needs the original
    float weights."""
    found = getattr(ops, op, None)
    if found is None:
        raise InputError(f"{store.path}: {name} is stored as {kind} ({method}), which runs on the numpy backend only, "
                         f"not {ops.name}")
    if quantize is not None:
        raise InputError(f"{store.path}: {name} is stored as {kind} ({method}); quantize="
                         f"{getattr(quantize, 'name', str(quantize)).lower()!r} needs the float weights: load it "
                         "without quantize, or quantize the original float model")
    return found


def _stored_int8(ops, store: WeightStore, name: str, shape: tuple, quantize):
    """Matrix `name` (out, in) stored as INT8_METHOD lays it out (`<name>` its quants packed for the int8 kernel,
    I8 (out / 16, in / 4, 16, 4) rounded up; `<name>_scale` F32 (out,); `<name>_sum` I32 (out,), the quants' row
    sums) as the backend's int8 linear, read in place: the one `quantize="int8"` makes of the float matrix. Refused on
    a backend without that linear, with a GGML type to quantize to (`quantize`, None when none or int8 was asked:
    the float weights are gone), or when a part is missing or malformed."""
    int8 = _stored_op(ops, store, name, "encoder_int8_linear", "int8", INT8_METHOD, quantize)
    out, k = shape
    parts = {name: ("I8", (-(-out // 16), -(-k // 4), 16, 4)), name + INT8_SCALE: ("F32", (out,)),
             name + INT8_SUM: ("I32", (out,))}
    for part, (dtype, want) in parts.items():
        if part not in store or store.dtype_of(part) != dtype or store.raw(part).shape != want:
            raise ModelConfigError(f"{store.path}: int8 matrix {name!r} of shape {tuple(shape)} needs {part!r}, "
                                   f"{dtype} of shape {want} ({INT8_METHOD})")
    return int8.from_packed(shape, *(store.raw(part) for part in parts), name)


def _stored_panels(ops, store: WeightStore, name: str, shape: tuple, quantize):
    """Matrix `name` (out, in) stored as PANELS_METHOD lays it out, as the backend's packed float linear, read in
    place. Refused on a backend without that linear, with `quantize` (the panels are the float matrix, transposed:
    quantize the original folder), or when the tensor is not float32 of shape (ceil(out / 64), in, 64)."""
    stored = _stored_op(ops, store, name, "encoder_dense_stored", "panels", PANELS_METHOD, quantize)
    out, k = shape
    want = (-(-out // 64), k, 64)
    if store.dtype_of(name) != "F32" or tuple(store.raw(name).shape) != want:
        raise ModelConfigError(f"{store.path}: matrix {name!r} of shape {tuple(shape)} stored as panels needs F32 of "
                               f"shape {want} ({PANELS_METHOD}), found {store.dtype_of(name)} "
                               f"{tuple(store.raw(name).shape)}")
    return stored(store.raw(name), shape, name)


def _fused_qkv(ops, w: dict):
    """q, k and v as one (3D, D) matrix and one (3D,) bias, made once, by the per-op path's first call
    (`EncoderLayer.qkv`): one product per layer instead of three (at batch 1 each product costs mostly its
    dispatch). The rows are the stored
    rows, so each output is the same dot product in the same order as before: bit for bit. None when the
    matrices are quantized or held as GGUF linears (callables), which keep their own products."""
    if any(callable(w[m]) for m in ("wq", "wk", "wv")):
        # quantized at load: a backend's batched Q8_0 linears concatenate (their outputs are independent, the
        # input is quantized once instead of three times); other linears keep their own products
        fuse = getattr(type(w["wq"]), "concatenate", None)
        fused = fuse([w["wq"], w["wk"], w["wv"]]) if fuse else None
        if fused is None:
            return None
        return {"wqkv": fused, "bqkv": ops.concatenate([w["bq"], w["bk"], w["bv"]], axis=0)}
    return {"wqkv": ops.concatenate([w["wq"], w["wk"], w["wv"]], axis=0),  # (3D, D): a 1.8 MB copy per MiniLM layer
            "bqkv": ops.concatenate([w["bq"], w["bk"], w["bv"]], axis=0)}  # (3D,)


# ------------------------------------------------------------------------------------------------- forward
class BertModel:
    """The encoder: embeddings then `num_hidden_layers` blocks; returns the last hidden states."""

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict]):
        self.ops, self.cfg = ops, cfg
        self.w = weights  # WEIGHTS names -> arrays
        self.layers = [EncoderLayer(ops, lw, cfg) for lw in layers]
        self.whole = encoder_pass_for(ops, self.layers)  # every layer in one C call, or None

    def forward(self, ids, mask, token_types=None):
        """ids, mask: (B, T) integer arrays -> (B, T, D) float32 hidden states. token_types: (B, T) segment ids
        (0 for a pair's first text, 1 for its second), or None for single texts (type 0 everywhere)."""
        ops, w, cfg = self.ops, self.w, self.cfg
        B, T = ids.shape
        x = embed_tokens(ops, w["tok_embed"], ids)  # (B, T, D)
        x += w["pos_embed"][:T]  # positions 0..T-1
        if token_types is None:
            x += w["type_embed"][0]  # single-segment input: token type 0 everywhere
        else:
            x += ops.embedding(w["type_embed"], token_types)  # (B, T, D)
        x = ops.layer_norm(x, w["embed_norm.w"], w["embed_norm.b"], cfg.layer_norm_eps)  # (B, T, D)
        return run_layers(ops, self.layers, x, mask, extended_mask(ops, mask), self.whole)  # (B, T, D)

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    @property
    def max_positions(self) -> int:
        """The longest input the position table covers."""
        return self.cfg.max_position_embeddings

    @classmethod
    def from_folder(cls, folder: Path, ops, quantize=None) -> "BertModel":
        """A Hugging Face BertModel folder (config.json, safetensors) on `ops`; `quantize` as from_safetensors."""
        return cls.from_safetensors(WeightStore(folder), Config.from_json(Path(folder) / "config.json"), ops,
                                    quantize=quantize)

    @classmethod
    def from_safetensors(cls, store: WeightStore, cfg: Config, ops, quantize=None) -> "BertModel":
        """Bind every tensor of WEIGHTS/LAYER_WEIGHTS from `store`, checking shapes; unknown keys fail loudly.
        `quantize`: a GGML type (votive.models.hf_checkpoint.QUANTIZE_TYPES) the MATRICES are quantized to at
        load (a matrix whose rows are not whole blocks stays float), "int8" (one scale per row: the backend's
        `encoder_int8_linear`), or None to keep every tensor as stored."""
        prefix = checkpoint_prefix(store)
        # the first text (or quantizing at load) reads every layer whole: their pages start coming in now, from
        # background threads; the token table is read a few rows at a time (advise_rows)
        store.read_ahead([n for n in store.keys() if n.startswith(prefix + "encoder.")])
        shapes = _weight_shapes(cfg)
        used = set()
        int8 = None
        if quantize == "int8":  # hf_checkpoint.ENCODER_INT8: one scale per row, the backend's own linear
            int8 = getattr(ops, "encoder_int8_linear", None)
            if int8 is None:
                raise InputError(f"{store.path}: quantize='int8' runs on the numpy backend only, not {ops.name}")
            quantize = None
        if quantize is not None and not isinstance(quantize, GGMLType):  # a mixture's name: its rules are a decoder's
            raise InputError(f"{store.path}: quantize={quantize!r} is llama.cpp's mixture for decoders; a BERT encoder "
                             "quantizes its matrices to one type (q8_0 or int8)")
        blocks = None if quantize is None else _QuantizedMatrices(store, quantize)
        dense = getattr(ops, "encoder_dense_linear", None)  # optional: numpy's packed float product

        def fetch(ours: str, theirs: str):
            name = _lookup(store, prefix + theirs)
            used.add(name)
            if ours in MATRICES and len(store.raw(name).shape) == 3:
                return _stored_panels(ops, store, name, shapes[ours], "int8" if int8 is not None else quantize)
            if ours in MATRICES and store.dtype_of(name) == "I8":
                used.update((name + INT8_SCALE, name + INT8_SUM))
                return _stored_int8(ops, store, name, shapes[ours], quantize)
            if int8 is not None and ours in MATRICES:
                return int8(store.get(name, shape=shapes[ours]), name)
            if blocks is not None and ours in MATRICES:
                blocks.add(name, shapes[ours])
                # a backend's tiled product for a batch's many rows, where it has one (numpy: AVX512-VNNI)
                batched = getattr(ops, "encoder_linear", None)
                return batched(ops.make_linear(blocks, name)) if batched else ops.make_linear(blocks, name)
            if ours == "tok_embed":
                store.advise_rows(name)  # a cold start reads the rows a text looks up, not the whole table
            if dense is not None and ours in MATRICES:  # packed once for the backend's product, same bits
                return dense(store.get(name, shape=shapes[ours]), name, release=partial(store.release, name))
            return ops.asarray(store.get(name, shape=shapes.get(ours)))

        weights = {ours: fetch(ours, theirs) for ours, theirs in WEIGHTS.items()}
        layers = [
            {ours: fetch(ours, theirs.format(i=i)) for ours, theirs in LAYER_WEIGHTS.items()}
            for i in range(cfg.num_hidden_layers)
        ]
        unknown = [
            n for n in store.keys() if n not in used and not n.removeprefix(prefix).startswith(UNUSED_PREFIXES)
        ]
        if unknown:
            raise ModelConfigError(
                f"{store.path}: {len(unknown)} tensors a BERT encoder does not use, e.g. {unknown[0]!r} "
                f"(config says {cfg.num_hidden_layers} layers; is this really a BertModel checkpoint?)"
            )
        return cls(ops, cfg, weights, layers)

    @classmethod
    def from_gguf(cls, f, ops) -> "BertModel":
        """A llama.cpp `bert` GGUF (an open votive.formats.gguf.GGUFFile) on `ops`: matrices and the token table
        as the file stores them (`ops.make_linear`: F32, F16 widened once, Q8_0 and other blocks in place),
        position and type tables, norms and biases as float32. Missing or unknown tensors and wrong shapes fail
        loudly, naming the tensor."""
        from votive.quant.codecs import dequantize

        cfg = Config.from_gguf(f)
        shapes = _weight_shapes(cfg)
        used = set()

        def fetch(ours: str, theirs: str):
            info = f.tensors.get(theirs)
            if info is None:
                raise ModelConfigError(f"{f.path}: missing tensor {theirs!r}")
            if info.shape != shapes[ours]:
                raise ModelConfigError(f"{f.path}: tensor {theirs!r} has shape {info.shape}, expected "
                                       f"{shapes[ours]} from the bert.* metadata")
            used.add(theirs)
            if ours == "tok_embed":
                f.advise_rows(theirs)  # read by rows only (the encoder has no output matrix)
            if ours in MATRICES or ours == "tok_embed":
                return ops.make_linear(f, theirs)
            data = f[theirs] if info.ggml_type.dtype == "float32" else dequantize(f[theirs], info.ggml_type)
            return ops.asarray(data, ops.float32).reshape(info.shape)

        weights = {ours: fetch(ours, theirs) for ours, theirs in GGUF_WEIGHTS.items()}
        layers = [
            {ours: fetch(ours, theirs.format(i=i)) for ours, theirs in GGUF_LAYER_WEIGHTS.items()}
            for i in range(cfg.num_hidden_layers)
        ]
        unknown = sorted(set(f.tensors) - used)
        if unknown:
            raise ModelConfigError(f"{f.path}: {len(unknown)} tensors a BERT encoder does not use, e.g. "
                                   f"{unknown[0]!r}")
        return cls(ops, cfg, weights, layers)


class _QuantizedMatrices:
    """Checkpoint matrices quantized at load, behind the part of an open GGUFFile that `ops.make_linear` reads
    (`.path`, `.tensors` name -> HFTensor, `[name]` the blocks), as votive.models.hf_checkpoint does for decoders;
    a matrix whose rows are not whole blocks stays float32."""

    def __init__(self, store: WeightStore, ggml_type):
        self.path, self.store, self.ggml_type = store.path, store, ggml_type
        self.tensors = {}

    def add(self, name: str, shape: tuple[int, int]) -> None:
        from votive.models.hf_checkpoint import HFTensor

        stored = self.store.raw(name)
        if tuple(stored.shape) != shape or self.store.dtype_of(name) not in ("F32", "F16", "BF16"):
            self.store.get(name, shape=shape)  # raises, naming the tensor, its shape or dtype and what was expected
        whole = shape[1] % self.ggml_type.block_size == 0
        self.tensors[name] = HFTensor(name, self.ggml_type if whole else GGMLType.F32, shape)

    def __getitem__(self, name: str):
        from votive.models.hf_checkpoint import as_float32, quantize_rows

        info, dtype = self.tensors[name], self.store.dtype_of(name)
        if info.ggml_type == GGMLType.F32:
            return as_float32(self.store.raw(name), dtype)
        return quantize_rows(self.store.raw(name), dtype, info.ggml_type)  # (rows, row_bytes) uint8


def checkpoint_prefix(store: WeightStore) -> str:
    """"bert." where the checkpoint names its tensors as BertFor...'s `bert` submodule does (a classifier's or an MLM
    checkpoint), else "" (a bare BertModel's)."""
    return "bert." if "bert." + WEIGHTS["tok_embed"] in store else ""


def _lookup(store: WeightStore, name: str) -> str:
    """The stored name for `name`, allowing LayerNorm's TF-era gamma/beta spelling."""
    if name in store:
        return name
    for new, old in ((".LayerNorm.weight", ".LayerNorm.gamma"), (".LayerNorm.bias", ".LayerNorm.beta")):
        if name.endswith(new) and name[: -len(new)] + old in store:
            return name[: -len(new)] + old
    return name  # store.get raises, naming it

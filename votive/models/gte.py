"""Alibaba GTE v1.5 encoders (config.json `model_type` "new": gte-base-en-v1.5, gte-large-en-v1.5): token ids ->
last hidden states (pooled by votive.models.sentence_encoder).

Ported from, at pinned commits:
- the Hub's remote code Alibaba-NLP/new-impl `modeling.py` and `configuration.py` (`trust_remote_code`, not in
  transformers), as copied into github.com/xuhaike/SparseCL `gte/modeling.py` @ 03dd0e1 (NewEmbeddings,
  RotaryEmbedding, NTKScalingRotaryEmbedding, NewAttention, NewGatedMLP, NewLayer, NewModel): the file
  tests/data/rotary_encoders/make_reference.py runs as the reference;
- huggingface/text-embeddings-inference `backends/candle/src/models/gte.rs` @ 005a693, a second reading of the
  same math (the NTK frequencies, the up/gate order).

The block is BERT's (bert.py), post-norm, but for:
- no position table: RoPE turns each whole q and k head, halves paired (rotate_half), angles
  pos * rope_theta^(-2i / Dh). With `rope_scaling` {"type": "ntk", "factor": f > 1} the upstream rotary module
  builds its cache for max_position_embeddings * f positions at load, and that cache already has the scaled
  frequencies, so every length gets them: angles pos * (rope_theta * f)^(-2i / Dh) / f^(2 / Dh);
- q, k and v are one matrix `qkv_proj` with bias (q's rows, then k's, then v's; `pack_qkv` false: three);
- the feed-forward is a GeGLU: down_proj(up * gelu(gate)) + b, with up and gate the two halves of the bias-free
  `up_gate_proj` (up's rows first) and exact (erf) GELU, `hidden_act` "gelu";
- segment embeddings only when type_vocab_size > 0 (gte-base-en-v1.5 has none).
Everything the upstream code would compute differently (absolute positions, RMSNorm, log-n attention scaling,
mixed NTK, other activations) is refused by Config.from_json, naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

import numpy as np

from votive.errors import ModelConfigError
from votive.formats.weights import WeightStore
from votive.models.binding import encoder_arrays
from votive.models.bert import extended_mask
from votive.text.tokenizer_json import read_json


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class Config:
    """The upstream config.json, the fields NewModel reads. Defaults are NewConfig's, so a key a checkpoint leaves
    out means what it means upstream."""

    vocab_size: int = 30528  # rows of the token embedding table
    hidden_size: int = 768  # model width D
    num_hidden_layers: int = 12  # encoder blocks
    num_attention_heads: int = 12  # H; head size Dh is D / H
    intermediate_size: int = 3072  # feed-forward width F (up_gate_proj has 2F rows)
    hidden_act: str = "gelu"  # the gate's activation; only exact GELU is supported
    max_position_embeddings: int = 2048  # the longest input votive accepts (RoPE has no table to bound it)
    type_vocab_size: int = 1  # segment embeddings; single texts use type 0; 0 means none
    layer_norm_type: str = "layer_norm"  # "rms_norm" is refused
    layer_norm_eps: float = 1e-12
    position_embedding_type: str = "rope"  # "absolute" is refused
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # None, or {"type": "ntk", "factor": f} (mixed_b refused)
    pack_qkv: bool = True  # one qkv_proj matrix, else q_proj, k_proj, v_proj
    logn_attention_scale: bool = False  # refused unless False
    logn_attention_clip1: bool = False  # refused unless False

    @classmethod
    def from_json(cls, path: Path) -> "Config":
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ModelConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        if raw.get("model_type") != "new":
            raise ModelConfigError(f"{path}: model_type {raw.get('model_type')!r} is not a GTE (\"new\") encoder")
        cfg = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        # key -> (value votive supports, what it would mean otherwise)
        refused = {
            "hidden_act": ("gelu", "a gate activation other than exact GELU"),
            "layer_norm_type": ("layer_norm", "RMSNorm"),
            "position_embedding_type": ("rope", "absolute position embeddings"),
            "logn_attention_scale": (False, "log-n attention scaling"),
            "logn_attention_clip1": (False, "log-n attention scaling"),
        }
        for key, (supported, meaning) in refused.items():
            if getattr(cfg, key) != supported:
                raise ModelConfigError(f"{path}: {key} {getattr(cfg, key)!r} is not supported ({meaning}; votive "
                                       f"runs {key} {supported!r})")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ModelConfigError(f"{path}: hidden_size {cfg.hidden_size} is not divisible by "
                                   f"{cfg.num_attention_heads} heads")
        if cfg.rope_scaling is not None:
            scaling = cfg.rope_scaling
            kind = scaling.get("type", scaling.get("rope_type")) if isinstance(scaling, dict) else None
            if kind != "ntk":
                raise ModelConfigError(f"{path}: rope_scaling {scaling!r} is not supported (only type 'ntk', as "
                                       f"the upstream code)")
            if scaling.get("mixed_b") is not None:
                raise ModelConfigError(f"{path}: rope_scaling.mixed_b {scaling['mixed_b']!r} is not supported "
                                       f"(mixed NTK scaling)")
            if not isinstance(scaling.get("factor"), (int, float)):
                raise ModelConfigError(f"{path}: rope_scaling.factor {scaling.get('factor')!r} is not a number")
        return cfg

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def rope_frequencies(self) -> tuple[float, np.ndarray | None]:
        """(base, per-pair divisors or None) of the angles pos * base^(-2i / Dh) / divisor_i the upstream rotary
        cache holds: plain RoPE, or NTK's scaled base and its constant divisor f^(2 / Dh) (module docstring)."""
        factor = float(self.rope_scaling["factor"]) if self.rope_scaling else 1.0
        if factor <= 1.0:  # the cache for max_position_embeddings * factor positions is not past the limit
            return float(self.rope_theta), None
        divisors = np.full(self.head_dim // 2, factor ** (2.0 / self.head_dim), np.float32)  # (Dh / 2,)
        return float(self.rope_theta) * factor, divisors


# -------------------------------------------------------------------------------------------- weight names
# Our name -> the checkpoint's name (NewModel's state dict; task models prefix "new."). Linear weights are
# (out, in) as PyTorch keeps them. The fused matrices are cut into their row blocks at load (views, not copies).
WEIGHTS = {
    "tok_embed": "embeddings.word_embeddings.weight",  # (vocab, D)
    "type_embed": "embeddings.token_type_embeddings.weight",  # (types, D); absent when type_vocab_size is 0
    "embed_norm.w": "embeddings.LayerNorm.weight",  # (D,)
    "embed_norm.b": "embeddings.LayerNorm.bias",  # (D,)
}
LAYER_WEIGHTS = {
    "wqkv": "encoder.layer.{i}.attention.qkv_proj.weight",  # (3D, D): q's D rows, k's, v's; heads in order
    "bqkv": "encoder.layer.{i}.attention.qkv_proj.bias",  # (3D,)
    "wo": "encoder.layer.{i}.attention.o_proj.weight",  # (D, D)
    "bo": "encoder.layer.{i}.attention.o_proj.bias",  # (D,)
    "attn_norm.w": "encoder.layer.{i}.attn_ln.weight",  # (D,)
    "attn_norm.b": "encoder.layer.{i}.attn_ln.bias",  # (D,)
    "w_up_gate": "encoder.layer.{i}.mlp.up_gate_proj.weight",  # (2F, D): up's F rows, then the gate's
    "w_down": "encoder.layer.{i}.mlp.down_proj.weight",  # (D, F)
    "b_down": "encoder.layer.{i}.mlp.down_proj.bias",  # (D,)
    "ffn_norm.w": "encoder.layer.{i}.mlp_ln.weight",  # (D,)
    "ffn_norm.b": "encoder.layer.{i}.mlp_ln.bias",  # (D,)
}
# pack_qkv false: q, k, v as three matrices, (D, D) and (D,) each, in place of wqkv / bqkv.
UNPACKED_QKV = {f"{p}{part}": f"encoder.layer.{{i}}.attention.{part}_proj.{kind}"
                for part in "qkv" for p, kind in (("w", "weight"), ("b", "bias"))}
# In a checkpoint but not used by an encoder that pools token states: the pooler and task heads.
UNUSED_PREFIXES = ("pooler.", "lm_head.", "classifier.", "embeddings.position_ids")


def _weight_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Expected shape of every tensor, by our name (the comments in the tables above, as numbers)."""
    D, F = cfg.hidden_size, cfg.intermediate_size
    shapes = {"tok_embed": (cfg.vocab_size, D), "type_embed": (cfg.type_vocab_size, D), "embed_norm.w": (D,),
              "embed_norm.b": (D,)}
    shapes.update(dict.fromkeys(LAYER_WEIGHTS, (D,)))  # biases and norms
    shapes.update({"wqkv": (3 * D, D), "bqkv": (3 * D,), "wo": (D, D), "w_up_gate": (2 * F, D), "w_down": (D, F)})
    shapes.update({name: (D, D) if name[0] == "w" else (D,) for name in UNPACKED_QKV})
    return shapes


# ---------------------------------------------------------------------------------------------------- layers
class EncoderLayer:
    """One post-norm block: x = LN(x + Attn(RoPE(q), RoPE(k), v)); x = LN(x + GeGLU-FFN(x))."""

    def __init__(self, ops, w: dict, cfg: Config):
        self.ops, self.cfg = ops, cfg
        self.w = w  # wq, bq, wk, bk, wv, bv, wo, bo, w_up, w_gate, w_down, b_down, norms -> arrays
        self.n_heads, self.head_dim = cfg.num_attention_heads, cfg.head_dim

    def __call__(self, x, mask_bias, angles):
        """x: (B, T, D) hidden states; mask_bias: (B, 1, 1, T), 0 for tokens and a large negative for padding;
        angles: (B*T, Dh), each token's row of the RoPE table (its position in its own text)."""
        ops, w, cfg = self.ops, self.w, self.cfg
        B, T, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        flat = x.reshape(B * T, D)

        # self-attention: softmax(RoPE(q) RoPE(k)^T / sqrt(Dh) + mask) v, per head
        q = ops.rope(ops.linear(flat, w["wq"], w["bq"]).reshape(B * T, H, Dh), angles, True)  # (B*T, H, Dh)
        k = ops.rope(ops.linear(flat, w["wk"], w["bk"]).reshape(B * T, H, Dh), angles, True)  # (B*T, H, Dh)
        q *= 1.0 / math.sqrt(Dh)  # upstream divides the scores by sqrt(Dh); scaling q is the same product
        q = q.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh)
        k = k.reshape(B, T, H, Dh).transpose(0, 2, 3, 1)  # (B, H, Dh, T)
        v = ops.linear(flat, w["wv"], w["bv"]).reshape(B, T, H, Dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh)
        probs = ops.softmax(ops.matmul(q, k), mask=mask_bias)  # (B, H, T, T)
        ctx = ops.matmul(probs, v).transpose(0, 2, 1, 3).reshape(B * T, D)  # (B*T, D), heads concatenated
        attn = ops.linear(ctx, w["wo"], w["bo"])  # (B*T, D)
        flat = ops.layer_norm(attn, w["attn_norm.w"], w["attn_norm.b"], cfg.layer_norm_eps, residual=flat)

        # feed-forward: down_proj(up * gelu(gate)) + b
        h = ops.gelu(ops.linear(flat, w["w_gate"]))  # (B*T, F)
        h *= ops.linear(flat, w["w_up"])  # (B*T, F)
        out = ops.linear(h, w["w_down"], w["b_down"])  # (B*T, D)
        out = ops.layer_norm(out, w["ffn_norm.w"], w["ffn_norm.b"], cfg.layer_norm_eps, residual=flat)
        return out.reshape(B, T, D)


# ------------------------------------------------------------------------------------------------- forward
class GteModel:
    """The encoder: token (and type-0) embeddings, LayerNorm, then `num_hidden_layers` blocks; returns the last
    hidden states."""

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict]):
        self.ops, self.cfg = ops, cfg
        self.w = weights  # WEIGHTS names -> arrays
        self.layers = [EncoderLayer(ops, lw, cfg) for lw in layers]
        self.rope_base, self.rope_divisors = cfg.rope_frequencies()

    def forward(self, ids, mask):
        """ids, mask: (B, T) integer arrays -> (B, T, D) float32 hidden states."""
        ops, w, cfg = self.ops, self.w, self.cfg
        B, T = ids.shape
        x = ops.embedding(w["tok_embed"], ids)  # (B, T, D)
        if "type_embed" in w:
            x += w["type_embed"][0]  # single-segment input: token type 0 everywhere
        x = ops.layer_norm(x, w["embed_norm.w"], w["embed_norm.b"], cfg.layer_norm_eps)  # (B, T, D)
        mask_bias = extended_mask(ops, mask)  # (B, 1, 1, T): 0 for tokens, finfo(float32).min for padding
        # each text's tokens sit at positions 0..T-1 (padding is at the end, and masked out as keys)
        table = ops.rope_table(self.rope_base, cfg.head_dim, T, freq_factors=self.rope_divisors)  # (T, Dh)
        angles = ops.embedding(table, ops.asarray([list(range(T))] * B, ops.int64)).reshape(B * T, cfg.head_dim)
        for layer in self.layers:
            x = layer(x, mask_bias, angles)
        return x

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    @property
    def max_positions(self) -> int:
        """config.json's max_position_embeddings: the length upstream declares (its rotary cache grows past it)."""
        return self.cfg.max_position_embeddings

    @classmethod
    def from_folder(cls, folder: Path, ops) -> "GteModel":
        """A Hugging Face NewModel folder (config.json, safetensors) on `ops`."""
        return cls.from_safetensors(WeightStore(folder), Config.from_json(Path(folder) / "config.json"), ops)

    @classmethod
    def from_safetensors(cls, store: WeightStore, cfg: Config, ops) -> "GteModel":
        """Bind every tensor of the tables from `store`, checking shapes; unknown keys fail loudly."""
        prefix = "new." if "new." + WEIGHTS["tok_embed"] in store else ""
        shapes = _weight_shapes(cfg)
        used = set()

        def fetch(ours: str, theirs: str):
            used.add(prefix + theirs)
            return store.get(prefix + theirs, shape=shapes[ours])

        wanted = {k: v for k, v in WEIGHTS.items() if k != "type_embed" or cfg.type_vocab_size > 0}
        weights = {ours: ops.asarray(fetch(ours, theirs)) for ours, theirs in wanted.items()}
        table = dict(LAYER_WEIGHTS)
        if not cfg.pack_qkv:
            del table["wqkv"], table["bqkv"]
            table.update(UNPACKED_QKV)
        D, F = cfg.hidden_size, cfg.intermediate_size
        layers = []
        for i in range(cfg.num_hidden_layers):
            lw = {ours: fetch(ours, theirs.format(i=i)) for ours, theirs in table.items()}
            if cfg.pack_qkv:  # (3D, D) and (3D,) -> their q, k, v blocks
                wqkv, bqkv = lw.pop("wqkv"), lw.pop("bqkv")
                lw.update(wq=wqkv[:D], wk=wqkv[D : 2 * D], wv=wqkv[2 * D :],
                          bq=bqkv[:D], bk=bqkv[D : 2 * D], bv=bqkv[2 * D :])
            w_up_gate = lw.pop("w_up_gate")  # (2F, D) -> up's rows, the gate's rows
            lw.update(w_up=w_up_gate[:F], w_gate=w_up_gate[F:])
            names = (prefix + theirs.format(i=i) for theirs in table.values())
            layers.append(encoder_arrays(ops, lw, partial(store.release, *names)))
        unknown = [n for n in store.keys() if n not in used  # task heads sit beside the prefixed encoder
                   and not n.startswith(UNUSED_PREFIXES) and not n[len(prefix) :].startswith(UNUSED_PREFIXES)]
        if unknown:
            raise ModelConfigError(
                f"{store.path}: {len(unknown)} tensors a GTE encoder does not use, e.g. {unknown[0]!r} "
                f"(config says {cfg.num_hidden_layers} layers, pack_qkv {cfg.pack_qkv}; is this really a NewModel "
                f"checkpoint?)"
            )
        return cls(ops, cfg, weights, layers)

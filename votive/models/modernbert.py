"""ModernBERT encoders (config.json `model_type` "modernbert": modernbert-embed-base, gte-modernbert-base, ...):
token ids -> last hidden states (pooled by votive.models.sentence_encoder).

Ported from, at pinned versions:
- transformers `src/transformers/models/modernbert/modeling_modernbert.py` @ v5.25.0 (ModernBertEmbeddings,
  ModernBertMLP, ModernBertRotaryEmbedding, ModernBertAttention with eager_attention_forward, rotate_half,
  ModernBertEncoderLayer, ModernBertModel) and `configuration_modernbert.py` @ v5.25.0 (layer_types and
  rope_parameters, and how it reads the older keys);
- the same file @ v4.48.0 (`ModernBertModel._update_attention_mask`: the sliding-window mask) and its config keys
  (global_attn_every_n_layers, global_rope_theta, local_rope_theta), which the published checkpoints carry.

The block differs from BERT's (bert.py):
- no position or token-type tables: the token embedding is LayerNormed, then RoPE turns each q and k head
  (halves paired, transformers' rotate_half), with `global_rope_theta` in global layers and `local_rope_theta`
  in local ones;
- pre-norm: x = x + Attn(LN(x)); x = x + MLP(LN(x)), layer 0 without the first LN (the embeddings' norm stands
  in), and a final LN after the last layer;
- layers alternate: every `global_attn_every_n_layers`-th (0, 3, 6, ...) attends to the whole text, the others
  only to tokens at most local_attention // 2 positions away on either side (|i - j| <= 64 for 128);
- q, k, v are one matrix Wqkv (q's rows, then k's, then v's); the feed-forward is GeGLU with exact GELU:
  Wo(gelu(x Wi_in^T) * x Wi_gate^T), Wi's first half of rows being the input, its second the gate;
- LayerNorm, attention and MLP biases are each optional (norm_bias, attention_bias, mlp_bias; all false in the
  published checkpoints).
Transformers' unpadded (flash-attention) path and its padded path compute the same thing; votive runs the
padded one, with padding keys masked as in eager attention. Local layers, like global ones, compute every
score and mask those outside the window (exact, but (H, B, T, T) floats: 3.2 GB per layer for one 8192-token
text at base size); the RoPE angles come from ggml's table (OpSet.rope_table), within float32 rounding of
transformers' cos / sin. What the upstream code would compute differently
(other activations, RoPE scaling, conflicting old and new layout keys) is refused by Config.from_json naming the
key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

from votive.errors import ModelConfigError
from votive.formats.weights import WeightStore
from votive.models.binding import encoder_arrays
from votive.text.tokenizer_json import read_json

GLOBAL, LOCAL = "full_attention", "sliding_attention"  # transformers 5's layer_types values
NEG = -3.4028234663852886e38  # finfo(float32).min: the additive mask of a key a query may not see


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class Config:
    """The upstream config.json, the fields ModernBertModel reads. Defaults are ModernBertConfig's (ModernBERT-
    base's), so a key a checkpoint leaves out means what it means upstream."""

    vocab_size: int = 50368  # rows of the token table (the tokenizer's 50285 tokens rounded up)
    hidden_size: int = 768  # model width D
    intermediate_size: int = 1152  # feed-forward width F (Wi has 2F rows: input, then gate)
    num_hidden_layers: int = 22
    num_attention_heads: int = 12  # H; head size Dh is D / H
    hidden_activation: str = "gelu"  # only "gelu" (exact erf GELU, transformers' ACT2FN) is supported
    max_position_embeddings: int = 8192  # the longest input votive accepts (RoPE has no table to run out of)
    norm_eps: float = 1e-5
    norm_bias: bool = False  # LayerNorms with a bias
    attention_bias: bool = False  # biases on Wqkv and attn.Wo
    mlp_bias: bool = False  # biases on Wi and mlp.Wo
    local_attention: int = 128  # a local layer's window: local_attention // 2 positions on either side
    global_attn_every_n_layers: int = 3  # transformers 4's layout key: layer i is global when i % n == 0
    global_rope_theta: float = 160000.0  # transformers 4's RoPE base of global layers
    local_rope_theta: float | None = 10000.0  # ... and of local layers
    layer_types: list | None = None  # transformers 5's layout: "full_attention" / "sliding_attention" per layer
    rope_parameters: dict | None = None  # transformers 5's RoPE: {layer type: {"rope_type", "rope_theta"}}
    rope_scaling: dict | None = None  # refused unless None
    head_dim: int | None = None  # transformers 5's RoPE reads it; only None or D / H is supported

    @classmethod
    def from_json(cls, path: Path) -> "Config":
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ModelConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        if raw.get("model_type") != "modernbert":
            raise ModelConfigError(f"{path}: model_type {raw.get('model_type')!r} is not a ModernBERT encoder")
        cfg = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        if cfg.hidden_activation != "gelu":
            raise ModelConfigError(f"{path}: hidden_activation {cfg.hidden_activation!r} is not supported (only "
                                   f"'gelu', the exact erf GELU)")
        if cfg.rope_scaling is not None:
            raise ModelConfigError(f"{path}: rope_scaling {cfg.rope_scaling!r} is not supported (only plain RoPE)")
        if cfg.hidden_size % cfg.num_attention_heads or cfg.head_size % 2:
            raise ModelConfigError(f"{path}: hidden_size {cfg.hidden_size} is not {cfg.num_attention_heads} heads "
                                   f"of an even size")
        if cfg.head_dim not in (None, cfg.head_size):
            raise ModelConfigError(f"{path}: head_dim {cfg.head_dim} is not supported (only hidden_size / "
                                   f"num_attention_heads, {cfg.head_size}, which attention uses)")
        if not isinstance(cfg.local_attention, int) or cfg.local_attention < 0:
            raise ModelConfigError(f"{path}: local_attention {cfg.local_attention!r} is not a window size")
        cfg.layer_types = cfg._layout(path, raw)
        cfg.rope_parameters = {kind: {"rope_type": "default", "rope_theta": cfg._theta(path, raw, kind)}
                               for kind in (GLOBAL, LOCAL)}
        return cfg

    def _layout(self, path: Path, raw: dict) -> list[str]:
        """Each layer's kind: transformers 5's layer_types, else every global_attn_every_n_layers-th global. A file
        with both must agree with itself (transformers 4 reads only the one, 5 only the other)."""
        n = self.global_attn_every_n_layers
        if not isinstance(n, int) or n < 1:
            raise ModelConfigError(f"{path}: global_attn_every_n_layers {n!r} is not a positive integer")
        derived = [LOCAL if i % n else GLOBAL for i in range(self.num_hidden_layers)]
        if self.layer_types is None:
            return derived
        types = list(self.layer_types)
        if len(types) != self.num_hidden_layers or set(types) - {GLOBAL, LOCAL}:
            raise ModelConfigError(f"{path}: layer_types {types!r} is not one of {GLOBAL!r} / {LOCAL!r} for each "
                                   f"of the {self.num_hidden_layers} layers")
        if "global_attn_every_n_layers" in raw and types != derived:
            raise ModelConfigError(f"{path}: layer_types {types!r} disagrees with global_attn_every_n_layers {n} "
                                   f"(transformers 4 and 5 would run different models)")
        return types

    def _theta(self, path: Path, raw: dict, kind: str) -> float:
        """The RoPE base of `kind` layers: rope_parameters[kind].rope_theta, else the old key, else its default;
        both present must agree."""
        old_key = "global_rope_theta" if kind == GLOBAL else "local_rope_theta"
        old = getattr(self, old_key)
        if old is None:  # transformers 4 fell back to the global base, 5 cannot read it: ambiguous
            raise ModelConfigError(f"{path}: {old_key} null is not supported (give the local layers' RoPE base)")
        entry = (self.rope_parameters or {}).get(kind) or {}
        if entry.get("rope_type", "default") != "default":
            raise ModelConfigError(f"{path}: rope_parameters.{kind}.rope_type {entry['rope_type']!r} is not "
                                   f"supported (only 'default', plain RoPE)")
        theta = float(entry.get("rope_theta", old))
        if old_key in raw and theta != float(old):
            raise ModelConfigError(f"{path}: rope_parameters.{kind}.rope_theta {theta} disagrees with {old_key} "
                                   f"{old} (transformers 4 and 5 would run different models)")
        return theta

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def window(self) -> int:
        """How far a local layer's query sees, either side: transformers' config.sliding_window."""
        return self.local_attention // 2


# -------------------------------------------------------------------------------------------- weight names
# Our name -> the checkpoint's name (ModernBertModel's state dict; a ModernBertForMaskedLM or ...ForSequence-
# Classification checkpoint prefixes "model."). Linear weights are (out, in) as PyTorch keeps them. Wqkv is cut
# into its q, k, v row blocks and Wi into its input and gate halves at load (views, not copies). The biases are
# in a checkpoint only when the config flag OPTIONAL names is true.
WEIGHTS = {
    "tok_embed": "embeddings.tok_embeddings.weight",  # (vocab, D)
    "embed_norm.w": "embeddings.norm.weight",  # (D,)
    "embed_norm.b": "embeddings.norm.bias",  # (D,), norm_bias
    "final_norm.w": "final_norm.weight",  # (D,)
    "final_norm.b": "final_norm.bias",  # (D,), norm_bias
}
LAYER_WEIGHTS = {
    "attn_norm.w": "layers.{i}.attn_norm.weight",  # (D,); not in layer 0 (Identity there)
    "attn_norm.b": "layers.{i}.attn_norm.bias",  # (D,), norm_bias
    "wqkv": "layers.{i}.attn.Wqkv.weight",  # (3D, D): q's D rows, k's, v's; heads of Dh rows in order
    "bqkv": "layers.{i}.attn.Wqkv.bias",  # (3D,), attention_bias
    "wo": "layers.{i}.attn.Wo.weight",  # (D, D)
    "bo": "layers.{i}.attn.Wo.bias",  # (D,), attention_bias
    "mlp_norm.w": "layers.{i}.mlp_norm.weight",  # (D,)
    "mlp_norm.b": "layers.{i}.mlp_norm.bias",  # (D,), norm_bias
    "wi": "layers.{i}.mlp.Wi.weight",  # (2F, D): GELU's input rows, then the gate's
    "bi": "layers.{i}.mlp.Wi.bias",  # (2F,), mlp_bias
    "w_down": "layers.{i}.mlp.Wo.weight",  # (D, F)
    "b_down": "layers.{i}.mlp.Wo.bias",  # (D,), mlp_bias
}
OPTIONAL = {"embed_norm.b": "norm_bias", "final_norm.b": "norm_bias", "attn_norm.b": "norm_bias",
            "mlp_norm.b": "norm_bias", "bqkv": "attention_bias", "bo": "attention_bias", "bi": "mlp_bias",
            "b_down": "mlp_bias"}  # our name -> the config flag that puts it in the checkpoint
# In a checkpoint but not used by an encoder that pools token states: the MLM head and decoder bias, a
# sequence classifier's head.
UNUSED_PREFIXES = ("head.", "decoder.", "classifier.")


def _wanted(cfg: Config, table: dict, layer: int | None = None) -> dict[str, str]:
    """The entries of `table` this checkpoint holds: biases by their flags, no attn_norm in layer 0."""
    return {ours: theirs for ours, theirs in table.items()
            if (ours not in OPTIONAL or getattr(cfg, OPTIONAL[ours]))
            and not (layer == 0 and ours.startswith("attn_norm"))}


def _weight_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Expected shape of every tensor, by our name (the comments in WEIGHTS / LAYER_WEIGHTS, as numbers)."""
    D, F = cfg.hidden_size, cfg.intermediate_size
    shapes = {name: (D,) for name in (*WEIGHTS, *LAYER_WEIGHTS)}  # norms and D-wide biases
    shapes.update({"tok_embed": (cfg.vocab_size, D), "wqkv": (3 * D, D), "bqkv": (3 * D,), "wo": (D, D),
                   "wi": (2 * F, D), "bi": (2 * F,), "w_down": (D, F)})
    return shapes


# ---------------------------------------------------------------------------------------------------- layers
def _norm(ops, x, w: dict, name: str, eps: float):
    """LayerNorm `name` of x as a new array (ops.layer_norm may write into its input; x is the residual)."""
    return ops.layer_norm(x.copy(), w[name + ".w"], w.get(name + ".b"), eps)


class EncoderLayer:
    """One pre-norm block: x = x + Attn(LN(x)) with RoPE'd q, k over the whole text or a window; x = x +
    GeGLU(LN(x))."""

    def __init__(self, ops, w: dict, cfg: Config, index: int):
        self.ops, self.cfg = ops, cfg
        self.w = w  # LAYER_WEIGHTS names (wqkv cut into wq/wk/wv, wi into w_in/w_gate) -> arrays
        self.index = index
        self.kind = cfg.layer_types[index]  # GLOBAL or LOCAL: which mask and which RoPE base

    def __call__(self, x, B: int, T: int, mask_bias, angles):
        """x: (B*T, D) residual stream; mask_bias: (1, B, 1, T) global or (1, B, T, T) local, 0 where a query may
        see a key and finfo(float32).min elsewhere; angles: (B*T, Dh), each token's row of this kind's RoPE
        table. Returns x updated (written in place)."""
        ops, w, cfg = self.ops, self.w, self.cfg
        H, Dh, D = cfg.num_attention_heads, cfg.head_size, cfg.hidden_size
        eps = cfg.norm_eps

        # attention: softmax(RoPE(q) RoPE(k)^T / sqrt(Dh) + mask) v, per head
        h = x if self.index == 0 else _norm(ops, x, w, "attn_norm", eps)  # layer 0: attn_norm is Identity
        q = ops.rope(ops.linear(h, w["wq"], w.get("bq")).reshape(B * T, H, Dh), angles, True)  # (B*T, H, Dh)
        k = ops.rope(ops.linear(h, w["wk"], w.get("bk")).reshape(B * T, H, Dh), angles, True)  # (B*T, H, Dh)
        q *= 1.0 / math.sqrt(Dh)  # upstream scales the scores by Dh^-0.5; scaling q is the same product
        # heads first, (H, B, ...): then a local mask (1, B, T, T) varies over consecutive axes of the scores,
        # which the softmax kernels read in place (BERT's (B, H, T, T) would need it broadcast to full size)
        q = q.reshape(B, T, H, Dh).transpose(2, 0, 1, 3)  # (H, B, T, Dh)
        k = k.reshape(B, T, H, Dh).transpose(2, 0, 3, 1)  # (H, B, Dh, T)
        v = ops.linear(h, w["wv"], w.get("bv")).reshape(B, T, H, Dh).transpose(2, 0, 1, 3)  # (H, B, T, Dh)
        probs = ops.softmax(ops.matmul(q, k), mask=mask_bias)  # (H, B, T, T)
        ctx = ops.matmul(probs, v).transpose(1, 2, 0, 3).reshape(B * T, D)  # (B*T, D), heads concatenated
        x += ops.linear(ctx, w["wo"], w.get("bo"))  # (B*T, D)

        # feed-forward (GeGLU): Wo(gelu(input) * gate), input and gate the two halves of Wi's product
        h = _norm(ops, x, w, "mlp_norm", eps)  # (B*T, D)
        act = ops.gelu(ops.linear(h, w["w_in"]), bias=w.get("b_in"))  # (B*T, F), exact GELU
        act *= ops.linear(h, w["w_gate"], w.get("b_gate"))  # (B*T, F)
        x += ops.linear(act, w["w_down"], w.get("b_down"))  # (B*T, D)
        return x


# ------------------------------------------------------------------------------------------------- forward
class ModernBertModel:
    """The encoder: token embeddings and their LayerNorm, `num_hidden_layers` blocks, a final LayerNorm; returns
    the last hidden states."""

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict]):
        self.ops, self.cfg = ops, cfg
        self.w = weights  # WEIGHTS names -> arrays
        self.layers = [EncoderLayer(ops, lw, cfg, i) for i, lw in enumerate(layers)]

    def masks(self, mask):
        """mask (B, T) integers (1 = token) -> {kind: additive float32 mask}: GLOBAL (1, B, 1, T) hides padding
        keys; LOCAL (1, B, T, T) also hides keys more than `window` positions from the query (transformers'
        |i - j| <= local_attention // 2). Only the kinds some layer uses are built."""
        ops, cfg = self.ops, self.cfg
        B, T = mask.shape
        keys = ops.asarray(mask, ops.float32).reshape(1, B, 1, T)  # 1 for a token, 0 for padding
        out = {}
        if GLOBAL in cfg.layer_types:
            out[GLOBAL] = (1.0 - keys) * ops.float32(NEG)  # (1, B, 1, T)
        if LOCAL in cfg.layer_types:
            pos = ops.asarray(list(range(T)), ops.int64)  # (T,)
            near = ops.asarray(abs(pos.reshape(T, 1) - pos.reshape(1, T)) <= cfg.window, ops.float32)  # (T, T)
            # one product, never a sum of two masks: NEG + NEG would be -inf, and an all -inf row NaN
            out[LOCAL] = (1.0 - keys * near.reshape(1, 1, T, T)) * ops.float32(NEG)  # (1, B, T, T)
        return out

    def forward(self, ids, mask):
        """ids, mask: (B, T) integer arrays -> (B, T, D) float32 hidden states."""
        ops, w, cfg = self.ops, self.w, self.cfg
        B, T = ids.shape
        D, Dh = cfg.hidden_size, cfg.head_size
        x = ops.embedding(w["tok_embed"], ids).reshape(B * T, D)  # (B*T, D)
        x = ops.layer_norm(x, w["embed_norm.w"], w.get("embed_norm.b"), cfg.norm_eps)  # (B*T, D)
        masks = self.masks(mask)
        # each text's tokens sit at positions 0..T-1 (padding is at the end, and masked out as keys)
        positions = ops.asarray([list(range(T))] * B, ops.int64)  # (B, T)
        angles = {kind: ops.embedding(ops.rope_table(p["rope_theta"], Dh, T), positions).reshape(B * T, Dh)
                  for kind, p in cfg.rope_parameters.items() if kind in masks}  # kind -> (B*T, Dh)
        for layer in self.layers:
            x = layer(x, B, T, masks[layer.kind], angles[layer.kind])
        x = ops.layer_norm(x, w["final_norm.w"], w.get("final_norm.b"), cfg.norm_eps)  # (B*T, D)
        return x.reshape(B, T, D)

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    @property
    def max_positions(self) -> int:
        """config.json's max_position_embeddings: RoPE has no table to run out of, this is what upstream
        declares."""
        return self.cfg.max_position_embeddings

    @classmethod
    def from_folder(cls, folder: Path, ops) -> "ModernBertModel":
        """A Hugging Face ModernBertModel folder (config.json, safetensors) on `ops`."""
        return cls.from_safetensors(WeightStore(folder), Config.from_json(Path(folder) / "config.json"), ops)

    @classmethod
    def from_safetensors(cls, store: WeightStore, cfg: Config, ops) -> "ModernBertModel":
        """Bind every tensor of WEIGHTS/LAYER_WEIGHTS the config calls for from `store`, checking shapes; unknown
        keys fail loudly."""
        prefix = "model." if "model." + WEIGHTS["tok_embed"] in store else ""
        shapes = _weight_shapes(cfg)
        used = set()

        def fetch(ours: str, theirs: str):
            used.add(prefix + theirs)
            return store.get(prefix + theirs, shape=shapes[ours])

        weights = {ours: ops.asarray(fetch(ours, theirs)) for ours, theirs in _wanted(cfg, WEIGHTS).items()}
        D, F = cfg.hidden_size, cfg.intermediate_size
        layers = []
        for i in range(cfg.num_hidden_layers):
            lw = {ours: fetch(ours, theirs.format(i=i)) for ours, theirs in _wanted(cfg, LAYER_WEIGHTS, i).items()}
            for fused, parts, cuts in (("wqkv", ("wq", "wk", "wv"), (0, D, 2 * D, 3 * D)),
                                       ("bqkv", ("bq", "bk", "bv"), (0, D, 2 * D, 3 * D)),
                                       ("wi", ("w_in", "w_gate"), (0, F, 2 * F)),
                                       ("bi", ("b_in", "b_gate"), (0, F, 2 * F))):
                if fused in lw:  # row blocks, in the order upstream's view / chunk reads them
                    t = lw.pop(fused)
                    lw.update({part: t[a:b] for part, a, b in zip(parts, cuts, cuts[1:])})
            names = (prefix + theirs.format(i=i) for theirs in _wanted(cfg, LAYER_WEIGHTS, i).values())
            layers.append(encoder_arrays(ops, lw, partial(store.release, *names)))
        unknown = [n for n in store.keys() if n not in used and not n.removeprefix(prefix).startswith(UNUSED_PREFIXES)]
        if unknown:
            raise ModelConfigError(
                f"{store.path}: {len(unknown)} tensors a ModernBERT encoder does not use, e.g. {unknown[0]!r} "
                f"(config says {cfg.num_hidden_layers} layers, norm_bias {cfg.norm_bias}, attention_bias "
                f"{cfg.attention_bias}, mlp_bias {cfg.mlp_bias}; is this really a ModernBertModel checkpoint?)"
            )
        return cls(ops, cfg, weights, layers)

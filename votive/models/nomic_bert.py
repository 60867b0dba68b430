"""NomicBERT encoders (config.json `model_type` "nomic_bert": nomic-embed-text-v1, v1.5): token ids -> last hidden
states (pooled by votive.models.sentence_encoder).

Ported from, at pinned commits:
- nomic-ai/contrastors `src/contrastors/models/huggingface/modeling_hf_nomic_bert.py` @ 1e27692 (the Hub's
  remote code, `trust_remote_code`, not in transformers): NomicBertEmbeddings, NomicBertAttention,
  NomciBertGatedMLP, NomicBertBlock (the post-norm branch), NomicBertModel; config keys from
  `configuration_hf_nomic_bert.py` @ 4ed6743 (a GPT2Config: n_embd, n_layer, n_head, n_inner, ...).
- llama.cpp `src/models/bert.cpp` @ 0820f21 (its "nomic-bert" graph) and `convert_hf_to_gguf.py` NomicBertModel
  @ c392e50 (what the upstream model may be): tests/test_nomic_bert.py holds votive to llama.cpp's embeddings.

The block is BERT's (bert.py) but for:
- no position table: RoPE turns the first `rotary_emb_fraction` of each q and k head (halves paired, GPT-NeoX
  style; pairs (2i, 2i+1) with `rotary_emb_interleaved`), angles pos * base^(-2i / rot_dim);
- q, k and v are one bias-free matrix `Wqkv` (q's rows, then k's, then v's), the output projection has no bias;
- the feed-forward is SwiGLU without biases: fc2(fc11(x) * silu(fc12(x))), its width `n_inner` rounded up to a
  multiple of 256 (the upstream GatedMLP's `multiple_of`);
- the token table has `vocab_size` rounded up to `pad_vocab_size_multiple` rows.
Everything the upstream code would compute differently (pre-norm, other activations, biases, xPos, dynamic NTK
scaling, no rotary at all) is refused by Config.from_json, naming the key. Keys upstream reads but never uses in
its forward pass (`causal`, `scale_attn_weights`, the dropouts, `use_flash_attn`, `fused_*`) are ignored here
too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

from votive.errors import ModelConfigError
from votive.formats.weights import WeightStore
from votive.models.binding import encoder_arrays
from votive.models.bert import embed_tokens, extended_mask, project
from votive.text.tokenizer_json import read_json

FFN_MULTIPLE_OF = 256  # NomciBertGatedMLP(multiple_of=256): its hidden width is n_inner rounded up to this


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class Config:
    """The upstream config.json, the fields NomicBertModel reads. Defaults are NomicBertConfig's (and its base
    GPT2Config's), so a key a checkpoint leaves out means what it means upstream."""

    vocab_size: int = 50257  # token ids; the table has this rounded up to pad_vocab_size_multiple rows
    pad_vocab_size_multiple: int = 1
    n_embd: int = 768  # model width D
    n_layer: int = 12  # encoder blocks
    n_head: int = 12  # H; head size Dh is D / H
    num_heads_kv: int | None = None  # grouped k/v heads; only None (= n_head) is supported, as upstream
    n_inner: int | None = None  # feed-forward width before rounding; None: int(8 * D / 3)
    n_positions: int = 1024  # the longest input votive accepts (there is no position table to bound it)
    type_vocab_size: int = 2  # segment embeddings; single texts use type 0; 0 means none
    layer_norm_epsilon: float = 1e-5
    activation_function: str = "gelu_new"  # only "swiglu" (every NomicBERT embedding checkpoint) is supported
    rotary_emb_fraction: float = 0.0  # share of each head RoPE turns; 0 would mean absolute positions (refused)
    rotary_emb_base: float = 10000.0
    rotary_emb_interleaved: bool = False  # pairs (2i, 2i+1) instead of (i, i + rot_dim / 2)
    rotary_emb_scale_base: float | None = None  # xPos scaling: refused unless None
    rotary_scaling_factor: float | None = None  # dynamic NTK past max_trained_positions: refused unless None
    qkv_proj_bias: bool = True  # biases on Wqkv and out_proj: refused (no checkpoint has them, nor llama.cpp)
    mlp_fc1_bias: bool = True  # biases on fc11 / fc12: refused
    mlp_fc2_bias: bool = True  # bias on fc2: refused
    prenorm: bool = False  # pre-norm blocks: refused (upstream's other branch)
    parallel_block: bool = False  # refused unless False
    use_rms_norm: bool = False  # refused unless False

    @classmethod
    def from_json(cls, path: Path) -> "Config":
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ModelConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        if raw.get("model_type") != "nomic_bert":
            raise ModelConfigError(f"{path}: model_type {raw.get('model_type')!r} is not a NomicBERT encoder")
        cfg = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        # key -> (value votive supports, what it would mean otherwise)
        refused = {
            "activation_function": ("swiglu", "a feed-forward other than SwiGLU"),
            "rotary_emb_scale_base": (None, "xPos-scaled rotary embeddings"),
            "rotary_scaling_factor": (None, "dynamic NTK rotary scaling"),
            "qkv_proj_bias": (False, "biases on Wqkv and out_proj"),
            "mlp_fc1_bias": (False, "biases on fc11 and fc12"),
            "mlp_fc2_bias": (False, "a bias on fc2"),
            "prenorm": (False, "pre-norm blocks"),
            "parallel_block": (False, "parallel attention and MLP"),
            "use_rms_norm": (False, "RMSNorm"),
        }
        for key, (supported, meaning) in refused.items():
            if getattr(cfg, key) != supported:
                raise ModelConfigError(f"{path}: {key} {getattr(cfg, key)!r} is not supported ({meaning}; votive "
                                       f"runs {key} {supported!r})")
        if cfg.num_heads_kv not in (None, cfg.n_head):
            raise ModelConfigError(f"{path}: num_heads_kv {cfg.num_heads_kv} is not supported (only n_head, "
                                   f"{cfg.n_head})")
        if cfg.n_embd % cfg.n_head:
            raise ModelConfigError(f"{path}: n_embd {cfg.n_embd} is not divisible by n_head {cfg.n_head}")
        if not 0.0 < cfg.rotary_emb_fraction <= 1.0:
            raise ModelConfigError(f"{path}: rotary_emb_fraction {cfg.rotary_emb_fraction} is not supported (only "
                                   f"rotary position embeddings, 0 < fraction <= 1)")
        rot = cfg.head_dim * cfg.rotary_emb_fraction
        if rot != int(rot) or int(rot) % 2:
            raise ModelConfigError(f"{path}: rotary_emb_fraction {cfg.rotary_emb_fraction} of head size "
                                   f"{cfg.head_dim} is {rot} dims, not an even whole number")
        return cfg

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rot_dim(self) -> int:
        """The leading dims of each q and k head that RoPE turns."""
        return int(self.head_dim * self.rotary_emb_fraction)

    @property
    def ffn_dim(self) -> int:
        """The feed-forward width F as the GatedMLP builds it."""
        inner = self.n_inner if self.n_inner is not None else int(8 * self.n_embd / 3)
        return -(-inner // FFN_MULTIPLE_OF) * FFN_MULTIPLE_OF

    @property
    def vocab_rows(self) -> int:
        """Rows of the token table: vocab_size rounded up to pad_vocab_size_multiple, as NomicBertModel does."""
        m = max(1, self.pad_vocab_size_multiple)
        return -(-self.vocab_size // m) * m


# -------------------------------------------------------------------------------------------- weight names
# Our name -> the checkpoint's name (NomicBertModel's state dict; a NomicBertForPreTraining checkpoint prefixes
# "bert."). Linear weights are (out, in) as PyTorch keeps them. Wqkv is cut into its q, k, v row blocks at load
# (views, not copies): each is then one product, and RoPE reads contiguous heads.
WEIGHTS = {
    "tok_embed": "embeddings.word_embeddings.weight",  # (vocab_rows, D)
    "type_embed": "embeddings.token_type_embeddings.weight",  # (types, D); absent when type_vocab_size is 0
    "embed_norm.w": "emb_ln.weight",  # (D,)
    "embed_norm.b": "emb_ln.bias",  # (D,)
}
LAYER_WEIGHTS = {
    "wqkv": "encoder.layers.{i}.attn.Wqkv.weight",  # (3D, D): q's D rows, k's, v's; heads of Dh rows in order
    "wo": "encoder.layers.{i}.attn.out_proj.weight",  # (D, D)
    "attn_norm.w": "encoder.layers.{i}.norm1.weight",  # (D,)
    "attn_norm.b": "encoder.layers.{i}.norm1.bias",  # (D,)
    "w_up": "encoder.layers.{i}.mlp.fc11.weight",  # (F, D): the value half, y
    "w_gate": "encoder.layers.{i}.mlp.fc12.weight",  # (F, D): the gate, silu(gate) * y
    "w_down": "encoder.layers.{i}.mlp.fc2.weight",  # (D, F)
    "ffn_norm.w": "encoder.layers.{i}.norm2.weight",  # (D,)
    "ffn_norm.b": "encoder.layers.{i}.norm2.bias",  # (D,)
}
# In a checkpoint but not used by an encoder that pools token states: the [CLS] pooler and the MLM head.
UNUSED_PREFIXES = ("pooler.", "cls.")
# The same weights in a llama.cpp `nomic-bert` GGUF (convert_hf_to_gguf.py NomicBertModel, gguf-py's tensor map):
# Wqkv kept fused, and each q / k head's rotated rows in halves order: llama.cpp turns them NEOX-style, so a
# converter reorders an interleaved checkpoint's rows, and a file never needs interleaved RoPE.
GGUF_WEIGHTS = {
    "tok_embed": "token_embd.weight",  # (vocab_rows, D); F16 or Q8_0 in such files: rows decoded as looked up
    "type_embed": "token_types.weight",  # (types, D)
    "embed_norm.w": "token_embd_norm.weight",  # (D,)
    "embed_norm.b": "token_embd_norm.bias",  # (D,)
}
GGUF_LAYER_WEIGHTS = {
    "wqkv": "blk.{i}.attn_qkv.weight",  # (3D, D)
    "wo": "blk.{i}.attn_output.weight",  # (D, D)
    "attn_norm.w": "blk.{i}.attn_output_norm.weight",  # (D,)
    "attn_norm.b": "blk.{i}.attn_output_norm.bias",  # (D,)
    "w_up": "blk.{i}.ffn_up.weight",  # (F, D): fc11
    "w_gate": "blk.{i}.ffn_gate.weight",  # (F, D): fc12
    "w_down": "blk.{i}.ffn_down.weight",  # (D, F)
    "ffn_norm.w": "blk.{i}.layer_output_norm.weight",  # (D,)
    "ffn_norm.b": "blk.{i}.layer_output_norm.bias",  # (D,)
}
MATRICES = ("wqkv", "wo", "w_up", "w_gate", "w_down")


def _weight_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Expected shape of every tensor, by our name (the comments in WEIGHTS / LAYER_WEIGHTS, as numbers)."""
    D, F = cfg.n_embd, cfg.ffn_dim
    shapes = {"tok_embed": (cfg.vocab_rows, D), "type_embed": (cfg.type_vocab_size, D), "embed_norm.w": (D,),
              "embed_norm.b": (D,)}
    shapes.update(dict.fromkeys(LAYER_WEIGHTS, (D,)))  # norms
    shapes.update({"wqkv": (3 * D, D), "wo": (D, D), "w_up": (F, D), "w_gate": (F, D), "w_down": (D, F)})
    return shapes


# ---------------------------------------------------------------------------------------------------- layers
class EncoderLayer:
    """One post-norm block: x = LN(x + Attn(RoPE(q), RoPE(k), v)); x = LN(x + SwiGLU-FFN(x))."""

    def __init__(self, ops, w: dict, cfg: Config):
        self.ops, self.cfg = ops, cfg
        self.w = w  # LAYER_WEIGHTS names (wqkv cut into wq, wk, wv) -> arrays, shapes as listed there
        self.n_heads, self.head_dim, self.rot_dim = cfg.n_head, cfg.head_dim, cfg.rot_dim

    def rotate(self, x, angles):
        """x: (n, H, Dh) q or k -> its first rot_dim dims of each head RoPE'd by `angles` (n, rot_dim), the rest
        as they are (upstream's apply_rotary_emb)."""
        neox = not self.cfg.rotary_emb_interleaved
        if self.rot_dim == self.head_dim:
            return self.ops.rope(x, angles, neox)
        turned = self.ops.rope(x[..., : self.rot_dim], angles, neox)  # (n, H, rot_dim)
        return self.ops.concatenate([turned, x[..., self.rot_dim :]], axis=-1)  # (n, H, Dh)

    def __call__(self, x, mask_bias, angles):
        """x: (B, T, D) hidden states; mask_bias: (B, 1, 1, T), 0 for tokens and a large negative for padding;
        angles: (B*T, rot_dim), each token's row of the RoPE table (its position in its own text)."""
        ops, w, cfg = self.ops, self.w, self.cfg
        B, T, D = x.shape
        H, Dh = self.n_heads, self.head_dim
        flat = x.reshape(B * T, D)

        # self-attention: softmax(RoPE(q) RoPE(k)^T / sqrt(Dh) + mask) v, per head
        if "wqkv" in w:  # a GGUF's fused matrix (kept whole for the kernels): one product, cut into q, k, v
            qkv = project(ops, flat, w["wqkv"])  # (B*T, 3D)
            q, k, v = qkv[:, :D], qkv[:, D : 2 * D], qkv[:, 2 * D :]
        else:
            q, k, v = (ops.linear(flat, w[name]) for name in ("wq", "wk", "wv"))  # (B*T, D) each
        q = self.rotate(q.reshape(B * T, H, Dh), angles)  # (B*T, H, Dh)
        k = self.rotate(k.reshape(B * T, H, Dh), angles)  # (B*T, H, Dh)
        q *= 1.0 / math.sqrt(Dh)  # upstream divides the scores by sqrt(Dh); scaling q is the same product
        q = q.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh)
        k = k.reshape(B, T, H, Dh).transpose(0, 2, 3, 1)  # (B, H, Dh, T)
        v = v.reshape(B, T, H, Dh).transpose(0, 2, 1, 3)  # (B, H, T, Dh)
        probs = ops.softmax(ops.matmul(q, k), mask=mask_bias)  # (B, H, T, T)
        ctx = ops.matmul(probs, v).transpose(0, 2, 1, 3).reshape(B * T, D)  # (B*T, D), heads concatenated
        attn = project(ops, ctx, w["wo"])  # (B*T, D)
        flat = ops.layer_norm(attn, w["attn_norm.w"], w["attn_norm.b"], cfg.layer_norm_epsilon, residual=flat)

        # feed-forward: fc2(fc11(x) * silu(fc12(x)))
        h = ops.swiglu(project(ops, flat, w["w_gate"]), project(ops, flat, w["w_up"]))  # (B*T, F)
        out = project(ops, h, w["w_down"])  # (B*T, D)
        out = ops.layer_norm(out, w["ffn_norm.w"], w["ffn_norm.b"], cfg.layer_norm_epsilon, residual=flat)
        return out.reshape(B, T, D)


# ------------------------------------------------------------------------------------------------- forward
class NomicBertModel:
    """The encoder: token (and type-0) embeddings, LayerNorm, then `n_layer` blocks; returns the last hidden
    states."""

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict]):
        self.ops, self.cfg = ops, cfg
        self.w = weights  # WEIGHTS names -> arrays
        self.layers = [EncoderLayer(ops, lw, cfg) for lw in layers]

    def forward(self, ids, mask):
        """ids, mask: (B, T) integer arrays -> (B, T, D) float32 hidden states."""
        ops, w, cfg = self.ops, self.w, self.cfg
        B, T = ids.shape
        x = embed_tokens(ops, w["tok_embed"], ids)  # (B, T, D)
        if "type_embed" in w:
            x += w["type_embed"][0]  # single-segment input: token type 0 everywhere
        x = ops.layer_norm(x, w["embed_norm.w"], w["embed_norm.b"], cfg.layer_norm_epsilon)  # (B, T, D)
        mask_bias = extended_mask(ops, mask)  # (B, 1, 1, T): 0 for tokens, finfo(float32).min for padding
        # each text's tokens sit at positions 0..T-1 (padding is at the end, and masked out as keys)
        table = ops.rope_table(float(cfg.rotary_emb_base), cfg.rot_dim, T)  # (T, rot_dim)
        angles = ops.embedding(table, ops.asarray([list(range(T))] * B, ops.int64)).reshape(B * T, cfg.rot_dim)
        for layer in self.layers:
            x = layer(x, mask_bias, angles)
        return x

    @property
    def hidden_size(self) -> int:
        return self.cfg.n_embd

    @property
    def max_positions(self) -> int:
        """config.json's n_positions: RoPE has no table to run out of, this is the length upstream declares."""
        return self.cfg.n_positions

    @classmethod
    def from_folder(cls, folder: Path, ops) -> "NomicBertModel":
        """A Hugging Face NomicBertModel folder (config.json, safetensors) on `ops`."""
        return cls.from_safetensors(WeightStore(folder), Config.from_json(Path(folder) / "config.json"), ops)

    @classmethod
    def from_safetensors(cls, store: WeightStore, cfg: Config, ops) -> "NomicBertModel":
        """Bind every tensor of WEIGHTS/LAYER_WEIGHTS from `store`, checking shapes; unknown keys fail loudly."""
        prefix = "bert." if "bert." + WEIGHTS["tok_embed"] in store else ""
        shapes = _weight_shapes(cfg)
        used = set()

        def fetch(ours: str, theirs: str):
            used.add(prefix + theirs)
            return store.get(prefix + theirs, shape=shapes[ours])

        wanted = {k: v for k, v in WEIGHTS.items() if k != "type_embed" or cfg.type_vocab_size > 0}
        weights = {ours: ops.asarray(fetch(ours, theirs)) for ours, theirs in wanted.items()}
        D = cfg.n_embd
        layers = []
        for i in range(cfg.n_layer):
            lw = {ours: fetch(ours, theirs.format(i=i)) for ours, theirs in LAYER_WEIGHTS.items()}
            wqkv = lw.pop("wqkv")  # (3D, D) -> its q, k, v row blocks
            lw.update(wq=wqkv[:D], wk=wqkv[D : 2 * D], wv=wqkv[2 * D :])
            names = (prefix + theirs.format(i=i) for theirs in LAYER_WEIGHTS.values())
            layers.append(encoder_arrays(ops, lw, partial(store.release, *names)))
        unknown = [n for n in store.keys() if n not in used  # task heads sit beside the prefixed encoder
                   and not n.startswith(UNUSED_PREFIXES) and not n[len(prefix) :].startswith(UNUSED_PREFIXES)]
        if unknown:
            raise ModelConfigError(
                f"{store.path}: {len(unknown)} tensors a NomicBERT encoder does not use, e.g. {unknown[0]!r} "
                f"(config says {cfg.n_layer} layers; is this really a NomicBertModel checkpoint?)"
            )
        return cls(ops, cfg, weights, layers)

    @classmethod
    def from_gguf(cls, f, ops) -> "NomicBertModel":
        """A llama.cpp `nomic-bert` GGUF (an open votive.formats.gguf.GGUFFile) on `ops`: matrices and the token
        table as stored (`ops.make_linear`), norms as float32; `nomic-bert.*` keys for the sizes, NEOX RoPE over
        `rope.dimension_count` dims. Missing or unknown tensors and wrong shapes fail loudly, naming the tensor."""
        from votive.quant.codecs import dequantize

        arch = "nomic-bert"
        if f.get(f"{arch}.attention.causal", False):
            raise ModelConfigError(f"{f.path}: {arch}.attention.causal is true; NomicBERT attends both ways")
        D, H = f.require(f"{arch}.embedding_length", int), f.require(f"{arch}.attention.head_count", int)
        if f.get(f"{arch}.attention.head_count_kv", H) != H or H <= 0 or D % H:
            raise ModelConfigError(f"{f.path}: {arch}.attention.head_count {H} must divide {arch}.embedding_length "
                                   f"{D}, with as many k/v heads")
        rot = f.get(f"{arch}.rope.dimension_count", D // H)
        ffn = f.require(f"{arch}.feed_forward_length", int)
        types = f.tensors["token_types.weight"].shape[0] if "token_types.weight" in f.tensors else 0
        cfg = Config(vocab_size=f.tensors["token_embd.weight"].shape[0] if "token_embd.weight" in f.tensors else 0,
                     n_embd=D, n_layer=f.require(f"{arch}.block_count", int), n_head=H, n_inner=ffn,
                     n_positions=f.require(f"{arch}.context_length", int), type_vocab_size=types,
                     layer_norm_epsilon=f.require(f"{arch}.attention.layer_norm_epsilon", float),
                     activation_function="swiglu", rotary_emb_fraction=rot / (D // H),
                     rotary_emb_base=f.get(f"{arch}.rope.freq_base", 10000.0), qkv_proj_bias=False,
                     mlp_fc1_bias=False, mlp_fc2_bias=False)
        if not (0 < rot <= D // H and rot % 2 == 0):
            raise ModelConfigError(f"{f.path}: {arch}.rope.dimension_count {rot} must be even and at most the "
                                   f"head size {D // H}")
        shapes = _weight_shapes(cfg) | {"wqkv": (3 * D, D), "w_up": (ffn, D), "w_gate": (ffn, D),
                                        "w_down": (D, ffn)}
        used = set()

        def fetch(ours: str, theirs: str):
            info = f.tensors.get(theirs)
            if info is None:
                raise ModelConfigError(f"{f.path}: missing tensor {theirs!r}")
            if info.shape != shapes[ours]:
                raise ModelConfigError(f"{f.path}: tensor {theirs!r} has shape {info.shape}, expected "
                                       f"{shapes[ours]} from the {arch}.* metadata")
            used.add(theirs)
            if ours in MATRICES or ours == "tok_embed":
                return ops.make_linear(f, theirs)
            data = f[theirs] if info.ggml_type.dtype == "float32" else dequantize(f[theirs], info.ggml_type)
            return ops.asarray(data, ops.float32).reshape(info.shape)

        wanted = {k: v for k, v in GGUF_WEIGHTS.items() if k != "type_embed" or types > 0}
        weights = {ours: fetch(ours, theirs) for ours, theirs in wanted.items()}
        layers = [{ours: fetch(ours, theirs.format(i=i)) for ours, theirs in GGUF_LAYER_WEIGHTS.items()}
                  for i in range(cfg.n_layer)]
        unknown = sorted(set(f.tensors) - used)
        if unknown:
            raise ModelConfigError(f"{f.path}: {len(unknown)} tensors a NomicBERT encoder does not use, e.g. "
                                   f"{unknown[0]!r}")
        return cls(ops, cfg, weights, layers)

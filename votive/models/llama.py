"""LLaMA-family decoders from GGUF files (SmolLM2, TinyLlama, Llama 2/3, Mistral: `general.architecture` "llama").

Ported from, at pinned commits:
- llama.cpp `src/models/llama.cpp` and `src/llama-model.cpp` (hparams, tensor names) @ 569a009: pre-norm
  blocks of RMSNorm -> GQA attention with RoPE -> residual -> RMSNorm -> SwiGLU -> residual.
- llama.cpp `convert_hf_to_gguf.py` (LlamaModel.permute): the converter reorders Q/K rows so ggml's "normal"
  RoPE, which rotates adjacent pairs, reproduces Hugging Face's rotate_half. We therefore rotate adjacent pairs.
- Mistral is LLaMA with a sliding window (transformers `models/mistral/modeling_mistral.py`): with
  `llama.attention.sliding_window` set (Mistral 7B v0.1: 4096; v0.2 on: none), a query at position p sees the
  keys at p - window + 1 .. p. llama.cpp's `llama` graph reads no window (and its converter writes none), so it
  attends to every key whatever the file says: the two stacks agree up to `window` positions, and past them
  votive follows transformers (tests/test_decoder_families.py checks both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from votive.backends.numpy_linears import FusedLinears
from votive.models.binding import bind_weights
from votive.models.config_checks import check_gguf_decoder, setting
from votive.models.decoding import TextGenerator
from votive.models.rope_scaling import RopeScaling, read_rope


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class Config:
    """Hyperparameters, read from GGUF metadata under the architecture's prefix (`llama.*`)."""

    n_layers: int  # {arch}.block_count
    dim: int  # {arch}.embedding_length
    ffn_dim: int  # {arch}.feed_forward_length
    n_heads: int  # {arch}.attention.head_count
    n_kv_heads: int  # {arch}.attention.head_count_kv (GQA: each KV head serves n_heads / n_kv_heads queries)
    head_dim: int  # {arch}.attention.key_length, else dim / n_heads
    rope_base: float  # {arch}.rope.freq_base
    # {arch}.rope.* scaling keys and rope_freqs.weight, as llama.cpp reads them (rope_scaling.read_rope)
    rope: RopeScaling
    norm_eps: float  # {arch}.attention.layer_norm_rms_epsilon
    train_ctx: int  # {arch}.context_length: the longest context the model was trained on
    vocab_size: int  # rows of token_embd
    # llama.attention.sliding_window, read for `llama` files only (LlamaModel.from_gguf): a query sees the last
    # `window` keys, itself included (Mistral 7B v0.1: 4096). 0: all keys before it.
    window: int = 0

    @classmethod
    def from_gguf(cls, f, arch: str) -> "Config":
        n_heads = setting(f, f"{arch}.attention.head_count", positive=True)  # typed and > 0, naming the key
        dim = setting(f, f"{arch}.embedding_length", positive=True)
        head_dim = setting(f, f"{arch}.attention.key_length", default=dim // n_heads, positive=True)
        cfg = cls(
            n_layers=f.require(f"{arch}.block_count"),
            dim=dim,
            ffn_dim=f.require(f"{arch}.feed_forward_length"),
            n_heads=n_heads,
            n_kv_heads=f.get(f"{arch}.attention.head_count_kv", n_heads),
            head_dim=head_dim,
            rope_base=setting(f, f"{arch}.rope.freq_base", float, default=10000.0),
            rope=read_rope(f, arch, head_dim),
            norm_eps=setting(f, f"{arch}.attention.layer_norm_rms_epsilon", float),
            train_ctx=f.require(f"{arch}.context_length"),
            vocab_size=f.tensors["token_embd.weight"].shape[0],
        )
        check_gguf_decoder(f, arch, cfg)  # ranges, GQA, tensor rows, vocabulary, finite norms (config_checks.py)
        return cfg

    @classmethod
    def from_hf(cls, hf, longrope: bool = False) -> "Config":
        """Hyperparameters from a Hugging Face config.json (`hf`: a models.hf_checkpoint.HFConfig), key by key:
        num_hidden_layers, hidden_size, intermediate_size, num_attention_heads, num_key_value_heads (default the
        heads), head_dim (default hidden_size / heads), rope_theta and rope_scaling (HFConfig.rope), rms_norm_eps,
        max_position_embeddings, vocab_size. What this block cannot run is refused naming the key."""
        hf.refuse("hidden_act", ("silu",))
        hf.refuse("attention_bias", (False,))  # llama's q/k/v/o biases (Qwen2's are its own table's)
        hf.refuse("mlp_bias", (False,))
        n_heads = hf.require("num_attention_heads")
        dim = hf.require("hidden_size")
        head_dim = hf.get("head_dim", dim // n_heads)
        rope = hf.rope(head_dim, longrope)  # longrope: Phi-3's (HFConfig.rope)
        return cls(
            n_layers=hf.require("num_hidden_layers"),
            dim=dim,
            ffn_dim=hf.require("intermediate_size"),
            n_heads=n_heads,
            n_kv_heads=hf.get("num_key_value_heads", n_heads),
            head_dim=head_dim,
            rope_base=rope.base,
            rope=rope,
            norm_eps=hf.require("rms_norm_eps", float),
            train_ctx=hf.require("max_position_embeddings"),
            vocab_size=hf.require("vocab_size"),
        )


# -------------------------------------------------------------------------------------------- weight names
# Our name -> GGUF tensor name. Matrices are (out, in) in numpy order; quantized ones stay GGML blocks.
WEIGHTS = {
    "tok_embed": "token_embd.weight",  # (vocab, dim)
    "norm": "output_norm.weight",  # (dim,)
    "output": "output.weight",  # (vocab, dim); absent when tied to tok_embed
}
LAYER_WEIGHTS = {
    "attn_norm": "blk.{i}.attn_norm.weight",  # (dim,)
    "wq": "blk.{i}.attn_q.weight",  # (n_heads * head_dim, dim), rows permuted for adjacent-pair RoPE
    "wk": "blk.{i}.attn_k.weight",  # (n_kv_heads * head_dim, dim), likewise
    "wv": "blk.{i}.attn_v.weight",  # (n_kv_heads * head_dim, dim)
    "wo": "blk.{i}.attn_output.weight",  # (dim, n_heads * head_dim)
    "ffn_norm": "blk.{i}.ffn_norm.weight",  # (dim,)
    "w_gate": "blk.{i}.ffn_gate.weight",  # (ffn_dim, dim)
    "w_up": "blk.{i}.ffn_up.weight",  # (ffn_dim, dim)
    "w_down": "blk.{i}.ffn_down.weight",  # (dim, ffn_dim)
}
# Our name -> Hugging Face tensor name (LlamaForCausalLM, MistralForCausalLM), same shapes as above. Q and K
# keep HF's row order, run with NEOX RoPE (the choice and why: votive/models/hf_checkpoint.py).
HF_WEIGHTS = {
    "tok_embed": "model.embed_tokens.weight",
    "norm": "model.norm.weight",
    "output": "lm_head.weight",  # absent when tie_word_embeddings
}
HF_LAYER_WEIGHTS = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "wq": "model.layers.{i}.self_attn.q_proj.weight",
    "wk": "model.layers.{i}.self_attn.k_proj.weight",
    "wv": "model.layers.{i}.self_attn.v_proj.weight",
    "wo": "model.layers.{i}.self_attn.o_proj.weight",
    "ffn_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "w_gate": "model.layers.{i}.mlp.gate_proj.weight",
    "w_up": "model.layers.{i}.mlp.up_proj.weight",
    "w_down": "model.layers.{i}.mlp.down_proj.weight",
}


# ------------------------------------------------------------------------------------------------- KV cache
class KVCache:
    """Keys and values of every layer for one sequence, preallocated for n_ctx positions by the backend
    (`ops.kv_cache`: float16, values transposed, as llama.cpp keeps them)."""

    def __init__(self, ops, n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int):
        self.k, self.v = ops.kv_cache(n_layers, n_kv_heads, n_ctx, head_dim)  # (L, Hkv, ctx, Dh), (L, Hkv, Dh, ctx)

    def store(self, layer: int, start: int, k, v):
        """k, v: (n, Hkv, Dh) for positions start..start+n-1 -> this layer's whole cache (keys, values)."""
        end = start + k.shape[0]
        self.k[layer, :, start:end] = k.transpose(1, 0, 2)
        self.v[layer, :, :, start:end] = v.transpose(1, 2, 0)
        return self.k[layer], self.v[layer]

    def prefix(self, n: int):
        """Copies of positions 0..n-1 of every layer: keys (L, Hkv, n, Dh), values (L, Hkv, Dh, n), on the device."""
        return self.k[:, :, :n].copy(), self.v[:, :, :, :n].copy()

    def load_prefix(self, k, v) -> None:
        """Fill positions 0..n-1 from `prefix`'s copies (written into this cache's own layout)."""
        n = k.shape[2]
        self.k[:, :, :n] = k
        self.v[:, :, :, :n] = v

    def fork(self, ops, n: int) -> "KVCache":
        """A new cache holding a copy of positions 0..n-1: a second continuation of the same prompt (`n` > 1)."""
        L, Hkv, ctx, Dh = self.k.shape
        other = KVCache(ops, L, Hkv, ctx, Dh)
        other.load_prefix(self.k[:, :, :n], self.v[:, :, :, :n])
        return other


# Positions per prompt pass on backends whose products round differently with the row count (the GPU: matvec up
# to 8 rows, tiled products, cuBLAS from 16; BLAS through numpy): a prompt, and a cached prefix plus the rest, are
# then computed in the same passes, cut at multiples of this, so the prefix cache changes no bit (llama.cpp cuts
# its prompts likewise, at n_ubatch).
PROMPT_BLOCK = 64


# ---------------------------------------------------------------------------------------------------- model
class LlamaModel(TextGenerator):
    """A LLaMA decoder over memory-mapped GGUF weights."""

    rope_neox = False  # ggml's "normal" RoPE (adjacent pairs), see the module docstring

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict], tokenizer, n_ctx: int, model_id: str):
        self.ops, self.cfg = ops, cfg
        self.w = weights  # WEIGHTS names -> arrays / linears
        self.layers = layers  # per layer: LAYER_WEIGHTS names -> arrays / linears
        for w in layers:
            self.fuse(w)
        self.output = weights["output"] or weights["tok_embed"]  # tied embeddings when output.weight is absent
        self.tokenizer = tokenizer
        self.n_ctx = n_ctx  # positions the KV cache holds (<= cfg.train_ctx)
        self.model_id = model_id
        self.eos_ids = tokenizer.eos_ids
        self.backend = ops.name
        self.scale = 1.0 / math.sqrt(cfg.head_dim)
        self.rope = cfg.rope.table(ops, cfg.head_dim, n_ctx)  # (n_ctx, head_dim): cos, sin interleaved
        self._prompt_block: int | None = None  # see prompt_block
        self._step = False  # the C decode step (decode_step.py): False until first asked, then it or None

    def fuse(self, w: dict) -> None:
        """Set a layer's "qkv" and "gate_up": products that share their input, run as one kernel call. phi3's
        files hold them fused already (phi3.py)."""
        w["qkv"] = FusedLinears([w["wq"], w["wk"], w["wv"]])
        w["gate_up"] = FusedLinears([w["w_gate"], w["w_up"]])

    @property
    def prompt_block(self) -> int:
        """Positions per prompt pass (decoding.evaluate_prompt, prompt_passes): 0, one pass, with the C kernels
        of the numpy backend, whose rows do not depend on the pass once it has MIN_PASS_ROWS (so a prompt stays
        one pass, as llama.cpp runs it, and matches llama.cpp to the bit); else PROMPT_BLOCK, passes cut at its
        multiples."""
        if getattr(self, "_prompt_block", None) is None:
            from votive.backends.numpy_linears import HalfLinear, QuantLinear

            linears = [lin for w in self.layers for lin in w.values() if hasattr(lin, "out_features")]
            by_row = self.backend == "numpy" and all(isinstance(lin, HalfLinear) or (  # F16 / BF16: by row always
                isinstance(lin, QuantLinear) and lin._matrix is not None) for lin in linears)
            self._prompt_block = 0 if by_row else PROMPT_BLOCK
        return self._prompt_block

    def new_cache(self) -> KVCache:
        return KVCache(self.ops, self.cfg.n_layers, self.cfg.n_kv_heads, self.n_ctx, self.cfg.head_dim)

    def qkv(self, w: dict, x):
        """x: (n, dim) normed -> q (n, H, Dh), k (n, Hkv, Dh), v (n, Hkv, Dh), the heads before RoPE. The hook
        where families differ: Qwen2 adds biases (qwen2.py), Qwen3 RMS-norms each q and k head (qwen3.py)."""
        cfg, n = self.cfg, x.shape[0]
        q, k, v = w["qkv"](x)  # (n, H * Dh), (n, Hkv * Dh), (n, Hkv * Dh)
        return (q.reshape(n, cfg.n_heads, cfg.head_dim), k.reshape(n, cfg.n_kv_heads, cfg.head_dim),
                v.reshape(n, cfg.n_kv_heads, cfg.head_dim))

    def rotate(self, i: int, x, angles):
        """x: (n, heads, Dh) q or k of layer i -> RoPE'd by `angles`, this position's table rows. The hook where
        families differ: phi3 turns only the first n_rot dims (phi3.py), SmolLM3 skips every 4th layer
        (smollm3.py)."""
        return self.ops.rope(x, angles, self.rope_neox)

    def attention(self, i: int, x, cache: KVCache, start: int):
        """x: (n, dim) normed -> (n, dim) attention output, filling layer i of the cache."""
        ops, cfg, w = self.ops, self.cfg, self.layers[i]
        n = x.shape[0]
        angles = self.rope[start : start + n]  # (n, Dh)
        q, k, v = self.qkv(w, x)
        q = self.rotate(i, q, angles)  # (n, H, Dh)
        k = self.rotate(i, k, angles)  # (n, Hkv, Dh)
        keys, values = cache.store(i, start, k, v)
        out = ops.causal_attention(q, keys, values, start, self.scale, cfg.window or None)  # (n, H, Dh)
        return w["wo"](out.reshape(n, cfg.n_heads * cfg.head_dim))  # (n, dim)

    def step_fields(self, i: int, w: dict) -> dict | None:
        """What layer i adds to LLaMA's for the C decode step (decode_step.py): Qwen2's biases, Qwen3's q/k
        norms, SmolLM3's layers without RoPE; None where the step cannot run it. A family overriding `qkv`,
        `rotate` or `attention` must override this too, or the step leaves it to `forward`."""
        return {}

    def stepped(self, x, cache: KVCache, start: int):
        """x (1, dim), one token's input, through every layer by the C decode step (decode_step.py), position
        `start` written into the cache; None where the step does not take this model or this call."""
        if self._step is False:
            from votive.models.decode_step import decode_step_for

            self._step = decode_step_for(self)
        if self._step is not None and self._step.takes(x, cache, start):
            return self._step(x, cache, start)
        return None

    def forward(self, ids, cache: KVCache, start: int):
        """Run tokens `ids` at positions start.. through the model; returns logits (vocab,) of the last one."""
        ops, cfg = self.ops, self.cfg
        x = self.w["tok_embed"].rows(ids)  # (n, dim)
        if len(ids) == 1 and (stepped := self.stepped(x, cache, start)) is not None:
            x = ops.rms_norm(stepped, self.w["norm"], cfg.norm_eps)  # (1, dim)
            return ops.to_numpy(self.output(x)[0])  # (vocab,)
        last = len(self.layers) - 1
        for i, w in enumerate(self.layers):
            h = ops.rms_norm(x, w["attn_norm"], cfg.norm_eps)  # (n, dim)
            h = self.attention(i, h, cache, start)  # (n, dim)
            if i == last:  # only the last position is sampled: llama.cpp drops the others here (inp_out_ids), and
                x, h = x[-1:], h[-1:]  # (1, dim): its feed-forward then multiplies one row, in the one-row order
            x = x + h
            h = ops.rms_norm(x, w["ffn_norm"], cfg.norm_eps)
            gate, up = w["gate_up"](h)  # (n, ffn_dim) each, n = 1 in the last layer
            h = ops.swiglu(gate, up)
            x = x + w["w_down"](h)  # (n, dim)
        x = ops.rms_norm(x, self.w["norm"], cfg.norm_eps)  # (1, dim)
        return ops.to_numpy(self.output(x)[0])  # (vocab,), on the host for the sampler

    def hidden(self, ids):
        """The final-normed hidden state of every position of prompt `ids` (n, dim), on the backend: what an
        embedder pools (llama.cpp's `result_norm`, transformers' `last_hidden_state`). `forward` without the
        last-layer cut to one row, in a cache of its own sized to the prompt; the generation cache is untouched."""
        ops, cfg = self.ops, self.cfg
        cache = KVCache(ops, cfg.n_layers, cfg.n_kv_heads, len(ids), cfg.head_dim)
        x = self.w["tok_embed"].rows(ids)  # (n, dim)
        for i, w in enumerate(self.layers):
            h = ops.rms_norm(x, w["attn_norm"], cfg.norm_eps)  # (n, dim)
            x = x + self.attention(i, h, cache, 0)
            h = ops.rms_norm(x, w["ffn_norm"], cfg.norm_eps)
            gate, up = w["gate_up"](h)  # (n, ffn_dim) each
            x = x + w["w_down"](ops.swiglu(gate, up))  # (n, dim)
        return ops.rms_norm(x, self.w["norm"], cfg.norm_eps)  # (n, dim)

    @classmethod
    def from_gguf(cls, f, ops, tokenizer, n_ctx: int | None = None, model_id: str = "") -> "LlamaModel":
        cfg = Config.from_gguf(f, "llama")
        cfg.window = f.get("llama.attention.sliding_window", 0)  # see the module docstring (Mistral)
        weights, layers = bind_weights(f, ops, WEIGHTS, cfg.n_layers, LAYER_WEIGHTS, optional=("output",))
        return cls(ops, cfg, weights, layers, tokenizer, min(n_ctx or 4096, cfg.train_ctx), model_id)

    @classmethod
    def from_safetensors(cls, hf, weights, ops, tokenizer, n_ctx: int | None = None,
                         model_id: str = "") -> "LlamaModel":
        """From a Hugging Face folder: its config.json (`hf`, an HFConfig) and tensors (`weights`, an HFWeights).
        Mistral's `sliding_window` (null: none) is the window, as in from_gguf."""
        cfg = Config.from_hf(hf)
        cfg.window = hf.get("sliding_window", 0)
        return cls.bind_hf(hf, weights, ops, cfg, HF_WEIGHTS, HF_LAYER_WEIGHTS, tokenizer, n_ctx, model_id)

    @classmethod
    def bind_hf(cls, hf, weights, ops, cfg: Config, table: dict, layer_table: dict, tokenizer, n_ctx, model_id):
        """Check a folder's tensors against `cfg`, bind them through the family's HF tables and build the model,
        rotating Q and K as NEOX (hf_checkpoint.py says why)."""
        from votive.models.hf_checkpoint import check_shapes

        tied = bool(hf.get("tie_word_embeddings", False))
        check_shapes(weights, cfg, table, layer_table, tied)
        top, layers = bind_weights(weights, ops, table, cfg.n_layers, layer_table, optional=("output",))
        model = cls(ops, cfg, top, layers, tokenizer, min(n_ctx or 4096, cfg.train_ctx), model_id)
        model.rope_neox = True
        return model

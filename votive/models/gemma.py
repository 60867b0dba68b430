"""Gemma 3 decoders from GGUF files (`general.architecture` "gemma3") and Hugging Face Gemma3ForCausalLM folders
(Gemma 3 270M, 1B: the text-only ones).

Ported from llama.cpp @ 569a009: `src/models/gemma3.cpp` (the graph) and `src/llama-model.cpp` (hparams for
LLM_ARCH_GEMMA3), which follow google/gemma_pytorch `gemma/model.py`. Differences from LLaMA, in order:
- the token embedding is scaled by sqrt(dim);
- RMSNorm weights: Gemma computes x * (1 + w); the GGUF converter stores 1 + w, so the norm here is plain;
- Q and K are RMS-normed per head (QK-norm) before RoPE, and RoPE rotates halves ("neox" layout);
- five of every six layers attend through a sliding window with RoPE base 10000; every sixth is global with
  the file's `rope.freq_base`;
- attention and feed-forward outputs pass through their own RMSNorm before the residual add;
- the feed-forward is GeGLU (tanh-approximated GELU of the gate times the up projection; on the CPU looked up in
  ggml's half-precision table, as llama.cpp computes it);
- the output projection is tied to the token embedding.

On x86 the logits equal llama.cpp's bit for bit (tests/test_decoders.py; also checked by hand against
llama-cpp-python 0.3.36 on a 1388-token prompt at n_ctx 4096, in 512-token batches) with llama.cpp's full-size
sliding-window cache (its default) and without flash attention (llama-cpp-python's default): its flash-attention
kernel sums the attention in another order, and so would a sliding-window cache that reuses cells.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from votive.errors import ModelConfigError
from votive.models.binding import bind_weights
from votive.models.config_checks import DECODER_GGUF_KEYS, check_fields
from votive.models.llama import Config as LlamaConfig
from votive.models.llama import LlamaModel


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class Config(LlamaConfig):
    """LLaMA's fields plus Gemma 3's attention layout."""

    sliding_window: int = 512  # gemma3.attention.sliding_window: keys a local layer can see
    # Gemma 3 puts one global layer after every five sliding-window ones, so that only one layer in six attends
    # to (and needs keys for) the whole context. Layer i is global when (i + 1) % swa_pattern == 0: with 6,
    # layers 5, 11, 17, ..., as llama.cpp's set_swa_pattern(6) (layer il slides when il % 6 < 5) and Hugging
    # Face's Gemma3TextConfig (layer_types from sliding_window_pattern, default 6) lay them out.
    swa_pattern: int = 6  # gemma3.attention.sliding_window_pattern when it is an integer, else 6
    rope_base_local: float = 10000.0  # RoPE base of sliding-window layers (llama.cpp: rope_freq_base_train_swa)
    attn_scale: float = 0.0  # query scale: 1/sqrt(head_dim), except 27B's 1/sqrt(dim/n_heads)

    @classmethod
    def from_gguf(cls, f, arch: str = "gemma3") -> "Config":
        base = LlamaConfig.from_gguf(f, arch)
        cfg = cls(**vars(base), sliding_window=f.require(f"{arch}.attention.sliding_window"))
        # llama.cpp's converter writes no pattern for Gemma 3 (Gemma 3 270M's file on PyPI has none) and its loader
        # fixes it at 6. An integer pattern in the file is followed; the per-layer bool list that gguf-py's
        # add_sliding_window_pattern writes for other models is not read, and 6 stands.
        cfg.swa_pattern = f.get(f"{arch}.attention.sliding_window_pattern", cfg.swa_pattern)
        if not isinstance(cfg.swa_pattern, int):
            cfg.swa_pattern = 6
        # The query scale is 1/sqrt(query_pre_attn_scalar) in Hugging Face's config, a number GGUF files do not
        # carry. It is head_dim for every Gemma 3 size but 27B, whose 168 is dim / n_heads (5376 / 32; its
        # head_dim is 128). llama.cpp's src/llama-model.cpp (LLM_ARCH_GEMMA3) tells the 27B by its layer count,
        # 62, and scales it by 1/sqrt(n_embd / n_head); we mirror that test, so any 62-layer file gets 27B's scale.
        cfg.attn_scale = 1.0 / math.sqrt(cfg.dim / cfg.n_heads if cfg.n_layers == 62 else cfg.head_dim)
        check_fields(cfg, f.path, DECODER_GGUF_KEYS, arch)  # Gemma's own: the window, the layout's period
        return cfg

    @classmethod
    def from_hf(cls, hf) -> "Config":
        """Hyperparameters of a Hugging Face Gemma3ForCausalLM (Gemma3TextConfig) folder: LLaMA's keys (the
        global layers' RoPE from rope_theta / rope_scaling) plus sliding_window, the layout (layer_types, else
        sliding_window_pattern), rope_local_base_freq and query_pre_attn_scalar. transformers 5's per-layer-type
        `rope_parameters` is read too. What the block cannot run is refused naming the key."""
        hf.refuse("hidden_activation", ("gelu_pytorch_tanh",))
        hf.refuse("hidden_act", ("gelu_pytorch_tanh",))
        hf.refuse("final_logit_softcapping", ())  # Gemma 2's softcaps: absent (null) in Gemma 3
        hf.refuse("attn_logit_softcapping", ())
        hf.refuse("attention_bias", (False,))
        hf.refuse("tie_word_embeddings", (True,))
        local_base = hf.get("rope_local_base_freq", 10000.0)
        params = hf.get("rope_parameters")
        if isinstance(params, dict) and "full_attention" in params:  # transformers 5: one entry per layer type
            local = params.get("sliding_attention") or {}
            if local.get("rope_type", "default") != "default":
                raise ModelConfigError(f"{hf.path}: rope_parameters.sliding_attention.rope_type = "
                                       f"{local.get('rope_type')!r} is not supported (only 'default')")
            local_base = local.get("rope_theta", local_base)
            hf = hf.with_data(rope_parameters=params["full_attention"], rope_scaling=None)
        global_params = hf.get("rope_parameters") if isinstance(hf.get("rope_parameters"), dict) else {}
        theta = hf.get("rope_theta", global_params.get("rope_theta", 1000000.0))  # Gemma3TextConfig's default
        # hidden_act: LlamaConfig.from_hf checks LLaMA's activation; Gemma's was checked above
        base = LlamaConfig.from_hf(hf.with_data(hidden_act="silu", rope_theta=theta))
        cfg = cls(**vars(base), sliding_window=hf.require("sliding_window"), rope_base_local=float(local_base))
        n_layers, pattern = cfg.n_layers, hf.get("sliding_window_pattern", 6)
        types = hf.get("layer_types")
        if types is not None:  # the explicit layout must be the every-Nth-global one this model computes
            pattern = next((i + 1 for i, t in enumerate(types) if t == "full_attention"), n_layers + 1)
            want = ["full_attention" if (i + 1) % pattern == 0 else "sliding_attention" for i in range(n_layers)]
            if list(types) != want:
                raise ModelConfigError(f"{hf.path}: layer_types is not one global layer every {pattern} (votive "
                                       f"runs Gemma 3's layout)")
        if not (isinstance(pattern, int) and pattern > 0):
            raise ModelConfigError(f"{hf.path}: sliding_window_pattern = {pattern!r} must be an int > 0")
        cfg.swa_pattern = pattern
        cfg.attn_scale = 1.0 / math.sqrt(hf.get("query_pre_attn_scalar", cfg.head_dim))
        return cfg

    def is_global(self, layer: int) -> bool:
        return (layer + 1) % self.swa_pattern == 0


# -------------------------------------------------------------------------------------------- weight names
WEIGHTS = {
    "tok_embed": "token_embd.weight",  # (vocab, dim), also the output projection
    "norm": "output_norm.weight",  # (dim,)
}
LAYER_WEIGHTS = {
    "attn_norm": "blk.{i}.attn_norm.weight",  # (dim,)
    "wq": "blk.{i}.attn_q.weight",  # (n_heads * head_dim, dim)
    "wk": "blk.{i}.attn_k.weight",  # (n_kv_heads * head_dim, dim)
    "wv": "blk.{i}.attn_v.weight",  # (n_kv_heads * head_dim, dim)
    "q_norm": "blk.{i}.attn_q_norm.weight",  # (head_dim,)
    "k_norm": "blk.{i}.attn_k_norm.weight",  # (head_dim,)
    "wo": "blk.{i}.attn_output.weight",  # (dim, n_heads * head_dim)
    "post_attn_norm": "blk.{i}.post_attention_norm.weight",  # (dim,)
    "ffn_norm": "blk.{i}.ffn_norm.weight",  # (dim,)
    "w_gate": "blk.{i}.ffn_gate.weight",  # (ffn_dim, dim)
    "w_up": "blk.{i}.ffn_up.weight",  # (ffn_dim, dim)
    "w_down": "blk.{i}.ffn_down.weight",  # (dim, ffn_dim)
    "post_ffn_norm": "blk.{i}.post_ffw_norm.weight",  # (dim,)
}

# Our name -> Hugging Face tensor name (Gemma3ForCausalLM), same shapes. Its RMSNorm weights are w of x * (1 + w):
# from_safetensors adds the 1 at load (in float32, as transformers' Gemma3RMSNorm does), as the GGUF converter does.
HF_WEIGHTS = {"tok_embed": "model.embed_tokens.weight", "norm": "model.norm.weight",
              "output": "lm_head.weight"}  # refused: Gemma 3 ties it (check_shapes)
HF_LAYER_WEIGHTS = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "wq": "model.layers.{i}.self_attn.q_proj.weight",
    "wk": "model.layers.{i}.self_attn.k_proj.weight",
    "wv": "model.layers.{i}.self_attn.v_proj.weight",
    "q_norm": "model.layers.{i}.self_attn.q_norm.weight",
    "k_norm": "model.layers.{i}.self_attn.k_norm.weight",
    "wo": "model.layers.{i}.self_attn.o_proj.weight",
    "post_attn_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "ffn_norm": "model.layers.{i}.pre_feedforward_layernorm.weight",
    "w_gate": "model.layers.{i}.mlp.gate_proj.weight",
    "w_up": "model.layers.{i}.mlp.up_proj.weight",
    "w_down": "model.layers.{i}.mlp.down_proj.weight",
    "post_ffn_norm": "model.layers.{i}.post_feedforward_layernorm.weight",
}
NORMS = ("attn_norm", "q_norm", "k_norm", "post_attn_norm", "ffn_norm", "post_ffn_norm")
HF_NORM_OFFSET = ("norm",) + NORMS  # stored as w of x * (1 + w): the GGUF converter writes 1 + w


# ---------------------------------------------------------------------------------------------------- model
class Gemma3Model(LlamaModel):
    """A Gemma 3 decoder; shares the KV cache and generation loop with LlamaModel."""

    rope_neox = True

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict], tokenizer, n_ctx: int, model_id: str):
        super().__init__(ops, cfg, weights, layers, tokenizer, n_ctx, model_id)
        # Sliding-window layers rotate with their own base (cfg.rope_base_local), unscaled (llama.cpp's Gemma 3
        # hparams: rope_freq_scale_train_swa = 1); self.rope, with the file's scaling (cfg.rope), serves global ones.
        self.rope_local = ops.rope_table(cfg.rope_base_local, cfg.head_dim, self.n_ctx)  # (n_ctx, head_dim)

    def attention(self, i: int, x, cache, start: int):
        """x: (n, dim) normed -> (n, dim), local (sliding window) or global by layer index."""
        ops, cfg, w = self.ops, self.cfg, self.layers[i]
        n = x.shape[0]
        is_global = cfg.is_global(i)
        angles = (self.rope if is_global else self.rope_local)[start : start + n]  # (n, Dh)
        q, k, v = w["qkv"](x)
        q = q.reshape(n, cfg.n_heads, cfg.head_dim)  # (n, H, Dh)
        k = k.reshape(n, cfg.n_kv_heads, cfg.head_dim)  # (n, Hkv, Dh)
        q = ops.rope(ops.rms_norm(q, w["q_norm"], cfg.norm_eps), angles, True)
        q *= cfg.attn_scale  # llama.cpp scales q here and the scores by 1
        k = ops.rope(ops.rms_norm(k, w["k_norm"], cfg.norm_eps), angles, True)
        keys, values = cache.store(i, start, k, v.reshape(n, cfg.n_kv_heads, cfg.head_dim))
        window = None if is_global else cfg.sliding_window
        out = ops.causal_attention(q, keys, values, start, 1.0, window)  # (n, H, Dh)
        return w["wo"](out.reshape(n, cfg.n_heads * cfg.head_dim))  # (n, dim)

    def step_fields(self, i: int, w: dict) -> dict:
        """`attention` and `forward`'s layer for the C decode step (decode_step.py)."""
        cfg, is_global = self.cfg, self.cfg.is_global(i)
        return {"q_norm": w["q_norm"], "k_norm": w["k_norm"], "post_attn_norm": w["post_attn_norm"],
                "post_ffn_norm": w["post_ffn_norm"], "rope_table": self.rope if is_global else self.rope_local,
                "window": 0 if is_global else cfg.sliding_window or 0, "q_scale": cfg.attn_scale, "scale": 1.0,
                "geglu": True}

    def forward(self, ids, cache, start: int):
        """Tokens `ids` at positions start.. -> logits (vocab,) of the last one."""
        ops, cfg = self.ops, self.cfg
        x = self.w["tok_embed"].rows(ids)  # (n, dim)
        x *= np.float32(math.sqrt(cfg.dim))
        if len(ids) == 1 and (stepped := self.stepped(x, cache, start)) is not None:
            x = ops.rms_norm(stepped, self.w["norm"], cfg.norm_eps)  # (1, dim)
            return ops.to_numpy(self.w["tok_embed"](x)[0])  # (vocab,)
        for i, w in enumerate(self.layers):
            h = self.attention(i, ops.rms_norm(x, w["attn_norm"], cfg.norm_eps), cache, start)  # (n, dim)
            x = x + ops.rms_norm(h, w["post_attn_norm"], cfg.norm_eps)
            h = ops.rms_norm(x, w["ffn_norm"], cfg.norm_eps)
            gate, up = w["gate_up"](h)  # (n, ffn_dim) each
            h = ops.geglu(gate, up)
            x = x + ops.rms_norm(w["w_down"](h), w["post_ffn_norm"], cfg.norm_eps)  # (n, dim)
        x = ops.rms_norm(x[-1:], self.w["norm"], cfg.norm_eps)  # (1, dim)
        return ops.to_numpy(self.w["tok_embed"](x)[0])  # (vocab,): tied output, on the host for the sampler

    @classmethod
    def from_gguf(cls, f, ops, tokenizer, n_ctx: int | None = None, model_id: str = "") -> "Gemma3Model":
        cfg = Config.from_gguf(f)
        weights, layers = bind_weights(f, ops, WEIGHTS, cfg.n_layers, LAYER_WEIGHTS)
        weights["output"] = None  # tied: LlamaModel falls back to tok_embed
        return cls(ops, cfg, weights, layers, tokenizer, min(n_ctx or 4096, cfg.train_ctx), model_id)

    @classmethod
    def from_safetensors(cls, hf, weights, ops, tokenizer, n_ctx: int | None = None,
                         model_id: str = "") -> "Gemma3Model":
        """From a Hugging Face Gemma3ForCausalLM folder (see LlamaModel.from_safetensors)."""
        from votive.models.hf_checkpoint import check_shapes

        cfg = Config.from_hf(hf)
        check_shapes(weights, cfg, HF_WEIGHTS, HF_LAYER_WEIGHTS, tied=True)
        top, layers = bind_weights(weights, ops, HF_WEIGHTS, cfg.n_layers, HF_LAYER_WEIGHTS, optional=("output",))
        one = ops.float32(1)
        top["norm"] = top["norm"] + one  # (dim,)
        for w in layers:
            for name in NORMS:
                w[name] = w[name] + one  # (dim,) or (head_dim,)
        top["output"] = None  # tied
        return cls(ops, cfg, top, layers, tokenizer, min(n_ctx or 4096, cfg.train_ctx), model_id)

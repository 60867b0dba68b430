"""Phi-3 decoders (`general.architecture` "phi3", Hugging Face Phi3ForCausalLM: Phi-3 / Phi-3.5 mini, Phi-4-mini).

Ported from llama.cpp (the version llama-cpp-python 0.3.36 vendors): `src/models/phi3.cpp` (hparams, tensors and
the graph), `llama_model::get_rope_factors` (src/llama-model.cpp) and `convert_hf_to_gguf.py` Phi3MiniModel (what
a phi3 file holds), which follow transformers' `models/phi3/modeling_phi3.py`. The block is LLaMA's (llama.py)
but for:
- q, k and v are one matrix, `blk.N.attn_qkv.weight` (dim + 2 * n_kv_heads * head_dim rows: q's, then k's, then
  v's), and gate and up are one, `blk.N.ffn_up.weight` (2 * ffn_dim rows: gate's, then up's; llama.cpp's
  LLM_FFN_SWIGLU over the fused product, silu of the first half times the second). Each is one product, as in
  llama.cpp (a K-quant's summation order depends on the matrix's row count), cut into its parts afterwards;
- RoPE rotates halves ("neox" layout: the converter keeps Hugging Face's Q/K row order), over the first
  `phi3.rope.dimension_count` dims of each head (Phi-4-mini: 96 of 128; the rest pass unturned), with longrope's
  factors and attention factor as votive.models.rope_scaling describes (the short factors up to the original
  context, the long ones past it);
- q is scaled by 1/sqrt(head_dim) right after RoPE (ggml_scale, in float32) and attention then scales its scores
  by 1: the same product, rounded at another point than LLaMA's;
- the window: transformers' Phi3 attends within `sliding_window` (Phi-3-mini-4k: 2047, written by the converter
  as `phi3.attention.sliding_window`; Phi-4-mini: 262144, wider than any context). llama.cpp reads the key but
  switches the window off for phi3 ("Phi SWA is currently disabled", src/models/phi3.cpp), attending to every
  key. As for Mistral (llama.py), votive follows transformers: a query at position p sees the keys at
  p - window + 1 .. p, so the two stacks agree for contexts up to the window, and past it votive follows
  transformers (tests/test_phi3_smollm3.py checks both).
The heads span the width (head_dim = dim / n_heads: llama.cpp's attn_output is (dim, dim) for phi3). The output
projection is tied to the token embedding when `output.weight` is absent (Phi-4-mini).
"""

from __future__ import annotations

import numpy as np

from votive.errors import ModelConfigError
from votive.models import llama
from votive.models.binding import bind_weights
from votive.models.llama import Config, KVCache, LlamaModel

# -------------------------------------------------------------------------------------------- weight names
WEIGHTS = llama.WEIGHTS | {  # token_embd (vocab, dim), output_norm (dim,), output (vocab, dim) unless tied
    # longrope's factors (n_rot / 2,), one pair for every layer: rope_scaling.read_rope reads them into the RoPE
    # table; named here so that the binder claims them
    "rope_long": "rope_factors_long.weight",
    "rope_short": "rope_factors_short.weight",
}
LAYER_WEIGHTS = {
    "attn_norm": "blk.{i}.attn_norm.weight",  # (dim,)
    "wqkv": "blk.{i}.attn_qkv.weight",  # (dim + 2 * n_kv_heads * head_dim, dim): q, k, v rows, Hugging Face order
    "wo": "blk.{i}.attn_output.weight",  # (dim, dim)
    "ffn_norm": "blk.{i}.ffn_norm.weight",  # (dim,)
    "w_gate_up": "blk.{i}.ffn_up.weight",  # (2 * ffn_dim, dim): gate rows, then up rows
    "w_down": "blk.{i}.ffn_down.weight",  # (dim, ffn_dim)
}
OPTIONAL = ("output", "rope_long", "rope_short")
# Our name -> Hugging Face tensor name (Phi3ForCausalLM), same shapes as above: the converter copies both fused
# matrices unchanged, and longrope's factors are config.json's (HFConfig.rope).
HF_WEIGHTS = llama.HF_WEIGHTS  # lm_head absent when tie_word_embeddings
HF_LAYER_WEIGHTS = {
    "attn_norm": "model.layers.{i}.input_layernorm.weight",
    "wqkv": "model.layers.{i}.self_attn.qkv_proj.weight",
    "wo": "model.layers.{i}.self_attn.o_proj.weight",
    "ffn_norm": "model.layers.{i}.post_attention_layernorm.weight",
    "w_gate_up": "model.layers.{i}.mlp.gate_up_proj.weight",
    "w_down": "model.layers.{i}.mlp.down_proj.weight",
}


class SplitProduct:
    """One linear whose output columns are several results: y = linear(x), (n, sum(sizes)) -> the column
    ranges of `sizes`, in order, as views."""

    def __init__(self, linear, sizes: tuple[int, ...]):
        self.linear, self.bounds = linear, np.cumsum((0,) + tuple(sizes)).tolist()

    def __call__(self, x):
        y = self.linear(x)  # (n, sum(sizes))
        return tuple(y[:, a:b] for a, b in zip(self.bounds, self.bounds[1:]))


# ---------------------------------------------------------------------------------------------------- model
class Phi3Model(LlamaModel):
    """A Phi-3 decoder: LLaMA's with fused q/k/v and gate/up, NEOX (partial) RoPE with longrope, q pre-scaled."""

    rope_neox = True

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict], tokenizer, n_ctx: int, model_id: str):
        super().__init__(ops, cfg, weights, layers, tokenizer, n_ctx, model_id)
        self.n_rot = cfg.rope.n_rot or cfg.head_dim  # the leading dims of each head that RoPE turns
        # src/models/phi3.cpp: ggml_scale(Qcur, 1.0f / sqrtf(float(n_embd_head))), in float
        self.q_scale = np.float32(1) / np.sqrt(np.float32(cfg.head_dim))

    def fuse(self, w: dict) -> None:
        cfg = self.cfg
        kv = cfg.n_kv_heads * cfg.head_dim
        w["qkv"] = SplitProduct(w["wqkv"], (cfg.n_heads * cfg.head_dim, kv, kv))
        w["gate_up"] = SplitProduct(w["w_gate_up"], (cfg.ffn_dim, cfg.ffn_dim))

    def rotate(self, i: int, x, angles):
        """x: (n, heads, Dh) -> its first n_rot dims RoPE'd (halves paired), the rest as they are."""
        if self.n_rot == self.cfg.head_dim:
            return self.ops.rope(x, angles, True)
        turned = self.ops.rope(x[..., : self.n_rot], angles, True)  # (n, heads, n_rot)
        return self.ops.concatenate([turned, x[..., self.n_rot :]], axis=-1)  # (n, heads, Dh)

    def attention(self, i: int, x, cache: KVCache, start: int):
        """x: (n, dim) normed -> (n, dim) attention output, filling layer i of the cache."""
        ops, cfg, w = self.ops, self.cfg, self.layers[i]
        n = x.shape[0]
        angles = self.rope[start : start + n]  # (n, n_rot)
        q, k, v = self.qkv(w, x)
        q = self.rotate(i, q, angles) * self.q_scale  # (n, H, Dh), scaled before the product, as phi3.cpp does
        k = self.rotate(i, k, angles)  # (n, Hkv, Dh)
        keys, values = cache.store(i, start, k, v)
        out = ops.causal_attention(q, keys, values, start, 1.0, cfg.window or None)  # (n, H, Dh)
        return w["wo"](out.reshape(n, cfg.n_heads * cfg.head_dim))  # (n, dim)

    @classmethod
    def from_gguf(cls, f, ops, tokenizer, n_ctx: int | None = None, model_id: str = "") -> "Phi3Model":
        cfg = Config.from_gguf(f, "phi3")
        if cfg.n_heads * cfg.head_dim != cfg.dim:
            raise ModelConfigError(f"{f.path}: phi3.attention.key_length = {cfg.head_dim} times "
                                   f"{cfg.n_heads} heads must be the width {cfg.dim} (llama.cpp's phi3 shapes)")
        cfg.window = f.get("phi3.attention.sliding_window", 0)  # see the module docstring
        weights, layers = bind_weights(f, ops, WEIGHTS, cfg.n_layers, LAYER_WEIGHTS, optional=OPTIONAL)
        return cls(ops, cfg, weights, layers, tokenizer, min(n_ctx or 4096, cfg.train_ctx), model_id)

    @classmethod
    def from_safetensors(cls, hf, weights, ops, tokenizer, n_ctx: int | None = None,
                         model_id: str = "") -> "Phi3Model":
        """From a Hugging Face Phi3ForCausalLM folder (see LlamaModel.from_safetensors): longrope and partial
        rotary from config.json, `sliding_window` (null: none) as transformers applies it."""
        cfg = Config.from_hf(hf, longrope=True)
        if cfg.n_heads * cfg.head_dim != cfg.dim:
            raise ModelConfigError(f"{hf.path}: head_dim {cfg.head_dim} times {cfg.n_heads} heads must be "
                                   f"hidden_size {cfg.dim} (Phi3's shapes)")
        cfg.window = hf.get("sliding_window", 0)
        return cls.bind_hf(hf, weights, ops, cfg, HF_WEIGHTS, HF_LAYER_WEIGHTS, tokenizer, n_ctx, model_id)

"""Qwen2 decoders from GGUF files (`general.architecture` "qwen2": Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen).

Ported from llama.cpp: `src/models/qwen2.cpp` @ 93bf6ab (the graph; `llm_graph_context::build_qkv` and
`llama_model_base::create_tensor_qkv` for the biases) and `src/llama-model.cpp` (LLM_ARCH_QWEN2: hparams, NEOX
RoPE), which follow transformers' `models/qwen2/modeling_qwen2.py`. The block is LLaMA's (llama.py) but for:
- q, k and v carry biases (`blk.N.attn_{q,k,v}.bias`): llama.cpp adds each right after its product, before the
  heads are split; we add it after the split, which rounds the same (one float add per element either way);
- RoPE rotates halves ("neox" layout): the converter keeps Hugging Face's Q/K row order for Qwen2, where it
  permutes LLaMA's for adjacent pairs;
- no sliding window: transformers' `use_sliding_window` is off in every released Qwen2 / Qwen2.5 and llama.cpp
  reads no window for "qwen2".
The output projection is tied to the token embedding when `output.weight` is absent (Qwen2.5 0.5B to 3B). The
heads span the width (head_dim = dim / n_heads; llama.cpp's tensor shapes for "qwen2" allow nothing else).
"""

from __future__ import annotations

from votive.models import llama
from votive.models.binding import bind_weights
from votive.models.llama import Config, LlamaModel

# -------------------------------------------------------------------------------------------- weight names
WEIGHTS = llama.WEIGHTS  # token_embd (vocab, dim), output_norm (dim,), output (vocab, dim) unless tied
LAYER_WEIGHTS = llama.LAYER_WEIGHTS | {
    "bq": "blk.{i}.attn_q.bias",  # (n_heads * head_dim,)
    "bk": "blk.{i}.attn_k.bias",  # (n_kv_heads * head_dim,)
    "bv": "blk.{i}.attn_v.bias",  # (n_kv_heads * head_dim,)
}
# Our name -> Hugging Face tensor name (Qwen2ForCausalLM), same shapes as above.
HF_WEIGHTS = llama.HF_WEIGHTS  # lm_head absent when tie_word_embeddings
HF_LAYER_WEIGHTS = llama.HF_LAYER_WEIGHTS | {
    "bq": "model.layers.{i}.self_attn.q_proj.bias",
    "bk": "model.layers.{i}.self_attn.k_proj.bias",
    "bv": "model.layers.{i}.self_attn.v_proj.bias",
}


# ---------------------------------------------------------------------------------------------------- model
class Qwen2Model(LlamaModel):
    """A Qwen2 decoder: LLaMA's with q/k/v biases and NEOX RoPE."""

    rope_neox = True

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict], tokenizer, n_ctx: int, model_id: str):
        super().__init__(ops, cfg, weights, layers, tokenizer, n_ctx, model_id)
        for w in layers:  # one row per head, so that a bias adds to the (n, heads, Dh) products by broadcasting
            w["bq"] = w["bq"].reshape(cfg.n_heads, cfg.head_dim)  # (H, Dh)
            w["bk"] = w["bk"].reshape(cfg.n_kv_heads, cfg.head_dim)  # (Hkv, Dh)
            w["bv"] = w["bv"].reshape(cfg.n_kv_heads, cfg.head_dim)  # (Hkv, Dh)

    def qkv(self, w: dict, x):
        """x: (n, dim) normed -> q (n, H, Dh), k and v (n, Hkv, Dh): each product plus its bias."""
        q, k, v = super().qkv(w, x)
        return q + w["bq"], k + w["bk"], v + w["bv"]

    def step_fields(self, i: int, w: dict) -> dict:
        return {"q_bias": w["bq"], "k_bias": w["bk"], "v_bias": w["bv"]}

    @classmethod
    def from_gguf(cls, f, ops, tokenizer, n_ctx: int | None = None, model_id: str = "") -> "Qwen2Model":
        cfg = Config.from_gguf(f, "qwen2")
        weights, layers = bind_weights(f, ops, WEIGHTS, cfg.n_layers, LAYER_WEIGHTS, optional=("output",))
        return cls(ops, cfg, weights, layers, tokenizer, min(n_ctx or 4096, cfg.train_ctx), model_id)

    @classmethod
    def from_safetensors(cls, hf, weights, ops, tokenizer, n_ctx: int | None = None,
                         model_id: str = "") -> "Qwen2Model":
        """From a Hugging Face folder (see LlamaModel.from_safetensors); `use_sliding_window` must be off."""
        hf.refuse("use_sliding_window", (False,))
        cfg = Config.from_hf(hf)
        return cls.bind_hf(hf, weights, ops, cfg, HF_WEIGHTS, HF_LAYER_WEIGHTS, tokenizer, n_ctx, model_id)

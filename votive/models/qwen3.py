"""Qwen3 decoders from GGUF files (`general.architecture` "qwen3": Qwen3 0.6B to 32B, dense).

Ported from llama.cpp: `src/models/qwen3.cpp` @ 069be0a (hparams, tensor names and the graph) and
`src/llama-model.cpp` (NEOX RoPE for LLM_ARCH_QWEN3), which follow transformers' `models/qwen3/modeling_qwen3.py`.
The block is LLaMA's (llama.py) but for:
- each q and k head is RMS-normed (`blk.N.attn_q_norm`, `attn_k_norm`, a (head_dim,) weight shared by the
  heads) after the product and before RoPE, with the same eps as the block's norms
  (`qwen3.attention.layer_norm_rms_epsilon`);
- head_dim is `qwen3.attention.key_length`, independent of the width: Qwen3-0.6B has 16 heads of 128 in a
  width of 1024, so q is 2048 wide and the output projection maps 2048 back to 1024;
- RoPE rotates halves ("neox" layout), as for Qwen2;
- no biases: transformers' `attention_bias` is off in every released Qwen3 (a file with them is refused by the
  binder, naming the tensor).
"""

from __future__ import annotations

from votive.models import llama
from votive.models.binding import bind_weights
from votive.models.llama import Config, LlamaModel

# -------------------------------------------------------------------------------------------- weight names
WEIGHTS = llama.WEIGHTS  # token_embd (vocab, dim), output_norm (dim,), output (vocab, dim) unless tied
LAYER_WEIGHTS = llama.LAYER_WEIGHTS | {
    "q_norm": "blk.{i}.attn_q_norm.weight",  # (head_dim,)
    "k_norm": "blk.{i}.attn_k_norm.weight",  # (head_dim,)
}
# Our name -> Hugging Face tensor name (Qwen3ForCausalLM), same shapes as above.
HF_WEIGHTS = llama.HF_WEIGHTS  # lm_head absent when tie_word_embeddings
HF_LAYER_WEIGHTS = llama.HF_LAYER_WEIGHTS | {
    "q_norm": "model.layers.{i}.self_attn.q_norm.weight",
    "k_norm": "model.layers.{i}.self_attn.k_norm.weight",
}


# ---------------------------------------------------------------------------------------------------- model
class Qwen3Model(LlamaModel):
    """A Qwen3 decoder: LLaMA's with per-head q/k RMSNorm and NEOX RoPE."""

    rope_neox = True

    def qkv(self, w: dict, x):
        """x: (n, dim) normed -> q (n, H, Dh), k and v (n, Hkv, Dh): q and k RMS-normed head by head."""
        ops, eps = self.ops, self.cfg.norm_eps
        q, k, v = super().qkv(w, x)
        return ops.rms_norm(q, w["q_norm"], eps), ops.rms_norm(k, w["k_norm"], eps), v

    def step_fields(self, i: int, w: dict) -> dict:
        return {"q_norm": w["q_norm"], "k_norm": w["k_norm"]}

    @classmethod
    def from_gguf(cls, f, ops, tokenizer, n_ctx: int | None = None, model_id: str = "") -> "Qwen3Model":
        cfg = Config.from_gguf(f, "qwen3")
        weights, layers = bind_weights(f, ops, WEIGHTS, cfg.n_layers, LAYER_WEIGHTS, optional=("output",))
        return cls(ops, cfg, weights, layers, tokenizer, min(n_ctx or 4096, cfg.train_ctx), model_id)

    @classmethod
    def from_safetensors(cls, hf, weights, ops, tokenizer, n_ctx: int | None = None,
                         model_id: str = "") -> "Qwen3Model":
        """From a Hugging Face folder (see LlamaModel.from_safetensors); `use_sliding_window` must be off."""
        hf.refuse("use_sliding_window", (False,))
        cfg = Config.from_hf(hf)
        return cls.bind_hf(hf, weights, ops, cfg, HF_WEIGHTS, HF_LAYER_WEIGHTS, tokenizer, n_ctx, model_id)

"""SmolLM3 decoders from GGUF files (`general.architecture` "smollm3": SmolLM3-3B).

Ported from llama.cpp (the version llama-cpp-python 0.3.36 vendors): `src/models/smollm3.cpp` (hparams and the
graph) and `src/llama-model.cpp` (LLM_ARCH_SMOLLM3: "normal" RoPE, LLaMA's tensors), which follow transformers'
`models/smollm3/modeling_smollm3.py` (`no_rope_layers`). The block is LLaMA's (llama.py), Q/K rows permuted by the
converter (SmolLM3Model is a LlamaModel there), but every 4th layer has no RoPE at all (NoPE): layer il skips it
where (il + 1) % n_no_rope_layer_step == 0, layers 3, 7, 11, ... counting from 0. llama.cpp fixes the step at 4
in its hparams loader; no GGUF key carries it, so none is read here either. No window and no frequency factors
(llama.cpp's smollm3 graph passes none to ggml_rope_ext; a file with rope_freqs.weight is refused).
"""

from __future__ import annotations

from votive.models import llama
from votive.models.binding import bind_weights
from votive.models.llama import Config, LlamaModel

NO_ROPE_LAYER_STEP = 4  # llama.cpp: hparams.n_no_rope_layer_step = 4 for LLM_ARCH_SMOLLM3, a constant

# -------------------------------------------------------------------------------------------- weight names
WEIGHTS = llama.WEIGHTS  # token_embd (vocab, dim), output_norm (dim,), output (vocab, dim) unless tied
LAYER_WEIGHTS = llama.LAYER_WEIGHTS  # LLaMA's: q, k, v, o, gate, up, down and the two norms


# ---------------------------------------------------------------------------------------------------- model
class SmolLM3Model(LlamaModel):
    """A SmolLM3 decoder: LLaMA's with RoPE left out of every 4th layer."""

    def rotate(self, i: int, x, angles):
        """x: (n, heads, Dh) -> RoPE'd, except in the NoPE layers, where it passes unturned."""
        if (i + 1) % NO_ROPE_LAYER_STEP == 0:
            return x
        return super().rotate(i, x, angles)

    def step_fields(self, i: int, w: dict) -> dict:
        return {"rope": (i + 1) % NO_ROPE_LAYER_STEP != 0}

    @classmethod
    def from_gguf(cls, f, ops, tokenizer, n_ctx: int | None = None, model_id: str = "") -> "SmolLM3Model":
        cfg = Config.from_gguf(f, "smollm3")
        weights, layers = bind_weights(f, ops, WEIGHTS, cfg.n_layers, LAYER_WEIGHTS, optional=("output",))
        return cls(ops, cfg, weights, layers, tokenizer, min(n_ctx or 4096, cfg.train_ctx), model_id)

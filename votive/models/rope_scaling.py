"""RoPE's hyperparameters as llama.cpp reads them from a GGUF file, checked, in one object the models build their
tables from (`RopeScaling.table`).

Ported from ggml-org/llama.cpp (the version llama-cpp-python 0.3.36 vendors), at the points named:
- src/llama-model.cpp `load_hparams`: `{arch}.rope.freq_base` (default 10000), `{arch}.rope.scaling.type`
  (default "linear"), `{arch}.rope.scaling.factor` (else the old `{arch}.rope.scale_linear`; 0 or absent: 1),
  freq_scale = 1.0f / factor, `{arch}.rope.scaling.attn_factor`, `{arch}.rope.scaling.original_context_length`,
  `{arch}.rope.dimension_count` (n_rot, default the head size), and the `rope_freqs.weight` tensor ({n_rot / 2}
  floats) that `get_rope_factors` hands ggml_rope_ext as its freq_factors.
- src/llama-context.cpp (cparams): scaling type "none" forces freq_scale 1; ext_factor is 1 for YaRN, else 0.
- ggml-cpu ops.cpp `ggml_rope_cache_init` / `rope_yarn`: the table itself (votive/quant/csrc/decoder_kernels.c).

What votive runs exactly: no scaling, linear scaling, and per-pair frequency factors (Llama 3.1 / 3.2, whose
"llama3" scaling llama.cpp's converter bakes into rope_freqs.weight). Everything else is refused with a
ModelConfigError naming the key and its value, never run approximately: YaRN and its keys (the table kernel
computes YaRN's ramp, but llama.cpp's cparams arithmetic for it is not yet checked against llama.cpp), longrope
(phi3's, later work), an unknown type, an attention factor other than 1, partial rotary (dimension_count other
than the head size), and frequency factors in a family llama.cpp does not give them to.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from votive.errors import ModelConfigError

FREQ_FACTORS = "rope_freqs.weight"  # (n_rot / 2,) float32 divisors of each pair's angle
# Architectures whose llama.cpp graph passes rope_freqs to ggml_rope_ext (LLM_TENSOR_ROPE_FREQS in their tensor
# list); in any other, llama.cpp refuses the file for an unexpected tensor, and so do we.
FREQ_FACTOR_ARCHS = frozenset({"llama"})
# The YaRN keys llama.cpp reads (src/llama-arch.cpp LLM_KV_ROPE_SCALING_YARN_*): present means YaRN settings.
YARN_KEYS = ("yarn_log_multiplier", "yarn_ext_factor", "yarn_attn_factor", "yarn_beta_fast", "yarn_beta_slow")


@dataclass(frozen=True)
class RopeScaling:
    """The arguments of ggml_rope_cache_init a model's table is built with (llama.cpp's hparams and cparams)."""

    base: float  # {arch}.rope.freq_base: theta = pos * base^(-2i / n_rot)
    freq_scale: float = 1.0  # 1 / {arch}.rope.scaling.factor for linear scaling, else 1
    freq_factors: np.ndarray | None = None  # rope_freqs.weight, (n_rot / 2,) float32, or None
    scaling_type: str = "none"  # {arch}.rope.scaling.type as llama.cpp resolves it: none or linear

    def table(self, ops, head_dim: int, n_positions: int):
        """(n_positions, head_dim) cos, sin interleaved on `ops`'s device (OpSet.rope_table)."""
        return ops.rope_table(self.base, head_dim, n_positions, freq_scale=self.freq_scale,
                              freq_factors=self.freq_factors)


def read_rope(f, arch: str, head_dim: int) -> RopeScaling:
    """The RoPE settings of GGUF file `f` for architecture `arch` with heads of `head_dim`, as llama.cpp reads them.

    Raises:
        ModelConfigError: a setting votive does not compute exactly (see the module docstring), naming the file,
            the key and its value.
    """
    key = f"{arch}.rope.dimension_count"
    n_rot = f.get(key, head_dim)
    if n_rot != head_dim:
        raise ModelConfigError(f"{f.path}: {key} = {n_rot} rotates part of each head (head size {head_dim}); "
                               f"partial rotary RoPE is not implemented")

    key = f"{arch}.rope.scaling.type"
    scaling_type = f.get(key, "linear")  # llama.cpp's default when the key is absent
    if scaling_type == "yarn":
        raise ModelConfigError(f"{f.path}: {key} = 'yarn' is not supported yet (YaRN scaling; supported: none, "
                               f"linear, and rope_freqs frequency factors)")
    if scaling_type == "longrope":
        raise ModelConfigError(f"{f.path}: {key} = 'longrope' is not supported for architecture {arch!r} (longrope "
                               f"is phi3's scaling, not implemented yet)")
    if scaling_type not in ("none", "linear"):
        raise ModelConfigError(f"{f.path}: {key} = {scaling_type!r} is not a RoPE scaling type votive implements "
                               f"(supported: none, linear)")
    for name in YARN_KEYS:
        key = f"{arch}.rope.scaling.{name}"
        if key in f.metadata:
            raise ModelConfigError(f"{f.path}: {key} = {f.get(key)!r} is a YaRN setting; YaRN is not supported yet")
    key = f"{arch}.rope.scaling.attn_factor"
    attn_factor = float(f.get(key, 1.0))
    if attn_factor != 1.0:
        raise ModelConfigError(f"{f.path}: {key} = {attn_factor} is not supported (only 1: RoPE without a "
                               f"magnitude factor)")

    factor = f.get(f"{arch}.rope.scaling.factor", f.get(f"{arch}.rope.scale_linear", 0.0))
    factor = np.float32(factor)
    if not (np.isfinite(factor) and factor >= 0):
        raise ModelConfigError(f"{f.path}: {arch}.rope.scaling.factor = {factor} must be a finite number >= 0")
    # llama.cpp: rope_freq_scale_train = ropescale == 0.0f ? 1.0f : 1.0f/ropescale, in float; type none forces 1
    freq_scale = np.float32(1) if factor == 0 or scaling_type == "none" else np.float32(1) / factor
    return RopeScaling(base=float(f.get(f"{arch}.rope.freq_base", 10000.0)), freq_scale=float(freq_scale),
                       freq_factors=_freq_factors(f, arch, n_rot), scaling_type=scaling_type)


def _freq_factors(f, arch: str, n_rot: int) -> np.ndarray | None:
    """rope_freqs.weight as float32 (n_rot / 2,), or None when the file has none."""
    if FREQ_FACTORS not in f.tensors:
        return None
    if arch not in FREQ_FACTOR_ARCHS:
        raise ModelConfigError(f"{f.path}: tensor {FREQ_FACTORS!r} is not used by architecture {arch!r} (llama.cpp "
                               f"reads it for {sorted(FREQ_FACTOR_ARCHS)})")
    values = np.asarray(f[FREQ_FACTORS])
    if values.dtype != np.float32 or values.shape != (n_rot // 2,):
        # ggml_rope_ext asserts an F32 tensor of at least n_rot / 2 values; converters write exactly that many
        raise ModelConfigError(f"{f.path}: tensor {FREQ_FACTORS!r} must be float32 of shape ({n_rot // 2},), found "
                               f"{values.dtype} {values.shape}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ModelConfigError(f"{f.path}: tensor {FREQ_FACTORS!r} must hold finite factors > 0, found "
                               f"min {values.min()} max {values.max()}")
    return np.array(values, np.float32)

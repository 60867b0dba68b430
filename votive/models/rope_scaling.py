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

- longrope (phi3 only; convert_hf_to_gguf.py Phi3MiniModel and src/models/phi3.cpp): the converter writes
  `rope_factors_long.weight` and `rope_factors_short.weight` ({n_rot / 2} floats each, one pair for all layers),
  `{arch}.rope.scaling.original_context_length` and `{arch}.rope.scaling.attn_factor` (sqrt(1 + ln(scale) /
  ln(original context)) for a 128k model), and no scaling type, so llama.cpp's type is "linear" with factor 1.
  `llama_model::get_rope_factors` hands ggml_rope_ext the long factors when the context per sequence exceeds
  the original context (n_ctx_seq > n_ctx_orig_yarn), else the short ones; llama-context.cpp pads that context
  up to a multiple of 256 first (GGML_PAD(n_ctx, 256)). The attention factor reaches ggml as
  cparams.yarn_attn_factor (1, times hparams.rope_attn_factor, with ext_factor 0): cos and sin are scaled by it.
  Phi-4-mini rotates 3/4 of each head (`{arch}.rope.dimension_count` 96 of 128), which phi3's graph allows.

What votive runs exactly: no scaling, linear scaling, per-pair frequency factors (Llama 3.1 / 3.2, whose "llama3"
scaling llama.cpp's converter bakes into rope_freqs.weight), and for phi3 longrope, its attention factor and
partial rotary. Everything else is refused with a ModelConfigError naming the key and its value, never run
approximately: YaRN and its keys (the table kernel computes YaRN's ramp, but llama.cpp's cparams arithmetic for it
is not yet checked against llama.cpp), longrope, an attention factor other than 1 or partial rotary outside phi3,
an unknown type, and frequency factors in a family llama.cpp does not give them to.
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
# Architectures whose llama.cpp graph takes longrope's two factor tensors (get_rope_factors), an attention factor
# from the file and a rotated part smaller than the head: phi3 (Phi-3, Phi-3.5, Phi-4-mini).
LONGROPE_ARCHS = frozenset({"phi3"})
LONG_FACTORS, SHORT_FACTORS = "rope_factors_long.weight", "rope_factors_short.weight"  # (n_rot / 2,) float32
CONTEXT_PAD = 256  # llama-context.cpp: n_ctx (and n_ctx_seq) = GGML_PAD(n_ctx, 256) before the factors are chosen


@dataclass(frozen=True)
class RopeScaling:
    """The arguments of ggml_rope_cache_init a model's table is built with (llama.cpp's hparams and cparams)."""

    base: float  # {arch}.rope.freq_base: theta = pos * base^(-2i / n_rot)
    freq_scale: float = 1.0  # 1 / {arch}.rope.scaling.factor for linear scaling, else 1
    freq_factors: np.ndarray | None = None  # rope_freqs.weight, (n_rot / 2,) float32, or None
    scaling_type: str = "none"  # {arch}.rope.scaling.type as llama.cpp resolves it: none, linear or longrope
    # phi3 only (LONGROPE_ARCHS); the defaults are every other family's:
    n_rot: int = 0  # {arch}.rope.dimension_count: the leading dims of each head that turn; 0: all of them
    attn_factor: float = 1.0  # {arch}.rope.scaling.attn_factor (float32): cos and sin are multiplied by it
    # longrope: freq_factors holds rope_factors_short.weight, these the long ones ((n_rot / 2,) float32, or None)
    long_factors: np.ndarray | None = None
    original_context: int = 0  # {arch}.rope.scaling.original_context_length, else {arch}.context_length

    def factors(self, n_ctx: int) -> np.ndarray | None:
        """The frequency factors of a context of n_ctx positions: longrope's long ones past the original
        context (n_ctx padded as llama.cpp pads it), else the short ones; rope_freqs for other families."""
        padded = -(-n_ctx // CONTEXT_PAD) * CONTEXT_PAD
        if self.scaling_type == "longrope" and padded > self.original_context:
            return self.long_factors
        return self.freq_factors

    def table(self, ops, head_dim: int, n_positions: int):
        """(n_positions, n_rot or head_dim) cos, sin interleaved on `ops`'s device (OpSet.rope_table), for a
        context of n_positions (which picks longrope's factors)."""
        return ops.rope_table(self.base, self.n_rot or head_dim, n_positions, freq_scale=self.freq_scale,
                              freq_factors=self.factors(n_positions), attn_factor=self.attn_factor)


def read_rope(f, arch: str, head_dim: int) -> RopeScaling:
    """The RoPE settings of GGUF file `f` for architecture `arch` with heads of `head_dim`, as llama.cpp reads them.

    Raises:
        ModelConfigError: a setting votive does not compute exactly (see the module docstring), naming the file,
            the key and its value.
    """
    longrope_arch = arch in LONGROPE_ARCHS
    key = f"{arch}.rope.dimension_count"
    n_rot = f.get(key, head_dim)
    if n_rot != head_dim and not longrope_arch:
        raise ModelConfigError(f"{f.path}: {key} = {n_rot} rotates part of each head (head size {head_dim}); "
                               f"partial rotary RoPE is not implemented")
    if not (0 < n_rot <= head_dim and n_rot % 2 == 0):  # ggml_rope_ext turns pairs within the head
        raise ModelConfigError(f"{f.path}: {key} = {n_rot} must be even and in 2..{head_dim} (the head size)")

    key = f"{arch}.rope.scaling.type"
    scaling_type = f.get(key, "linear")  # llama.cpp's default when the key is absent
    if scaling_type == "yarn":
        raise ModelConfigError(f"{f.path}: {key} = 'yarn' is not supported yet (YaRN scaling; supported: none, "
                               f"linear, and rope_freqs frequency factors)")
    if scaling_type == "longrope" and not longrope_arch:
        raise ModelConfigError(f"{f.path}: {key} = 'longrope' is not supported for architecture {arch!r} (votive "
                               f"runs longrope as llama.cpp does, for phi3 only)")
    if scaling_type not in ("none", "linear", "longrope"):
        raise ModelConfigError(f"{f.path}: {key} = {scaling_type!r} is not a RoPE scaling type votive implements "
                               f"(supported: none, linear)")
    for name in YARN_KEYS:
        key = f"{arch}.rope.scaling.{name}"
        if key in f.metadata:
            raise ModelConfigError(f"{f.path}: {key} = {f.get(key)!r} is a YaRN setting; YaRN is not supported yet")
    key = f"{arch}.rope.scaling.attn_factor"
    attn_factor = float(np.float32(f.get(key, 1.0)))  # hparams.rope_attn_factor is a float
    if longrope_arch and not (np.isfinite(attn_factor) and attn_factor > 0):
        raise ModelConfigError(f"{f.path}: {key} = {attn_factor} must be a finite number > 0")
    if attn_factor != 1.0 and not longrope_arch:
        raise ModelConfigError(f"{f.path}: {key} = {attn_factor} is not supported (only 1: RoPE without a "
                               f"magnitude factor)")

    factor = f.get(f"{arch}.rope.scaling.factor", f.get(f"{arch}.rope.scale_linear", 0.0))
    factor = np.float32(factor)
    if not (np.isfinite(factor) and factor >= 0):
        raise ModelConfigError(f"{f.path}: {arch}.rope.scaling.factor = {factor} must be a finite number >= 0")
    # llama.cpp: rope_freq_scale_train = ropescale == 0.0f ? 1.0f : 1.0f/ropescale, in float; type none forces 1
    freq_scale = np.float32(1) if factor == 0 or scaling_type == "none" else np.float32(1) / factor
    base = float(f.get(f"{arch}.rope.freq_base", 10000.0))
    if not longrope_arch:
        return RopeScaling(base=base, freq_scale=float(freq_scale), freq_factors=_freq_factors(f, arch, n_rot),
                           scaling_type=scaling_type)
    _freq_factors(f, arch, n_rot)  # refuses rope_freqs.weight, which phi3's graph does not read
    short, long = _factor_tensor(f, SHORT_FACTORS, n_rot), _factor_tensor(f, LONG_FACTORS, n_rot)
    # llama.cpp picks between the two tensors whenever the file has them, whatever the scaling type says
    original = f.get(f"{arch}.rope.scaling.original_context_length", f.get(f"{arch}.context_length", 0))
    return RopeScaling(base=base, freq_scale=float(freq_scale), freq_factors=short,
                       scaling_type="longrope" if short is not None or long is not None else scaling_type,
                       n_rot=n_rot, attn_factor=attn_factor, long_factors=long, original_context=int(original))


def _freq_factors(f, arch: str, n_rot: int) -> np.ndarray | None:
    """rope_freqs.weight as float32 (n_rot / 2,), or None when the file has none."""
    if FREQ_FACTORS not in f.tensors:
        return None
    if arch not in FREQ_FACTOR_ARCHS:
        raise ModelConfigError(f"{f.path}: tensor {FREQ_FACTORS!r} is not used by architecture {arch!r} (llama.cpp "
                               f"reads it for {sorted(FREQ_FACTOR_ARCHS)})")
    return _factor_tensor(f, FREQ_FACTORS, n_rot)


def _factor_tensor(f, name: str, n_rot: int) -> np.ndarray | None:
    """Tensor `name` of frequency factors as float32 (n_rot / 2,), checked, or None when the file has none."""
    if name not in f.tensors:
        return None
    values = np.asarray(f[name])
    if values.dtype != np.float32 or values.shape != (n_rot // 2,):
        # ggml_rope_ext asserts an F32 tensor of at least n_rot / 2 values; converters write exactly that many
        raise ModelConfigError(f"{f.path}: tensor {name!r} must be float32 of shape ({n_rot // 2},), found "
                               f"{values.dtype} {values.shape}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ModelConfigError(f"{f.path}: tensor {name!r} must hold finite factors > 0, found "
                               f"min {values.min()} max {values.max()}")
    return np.array(values, np.float32)

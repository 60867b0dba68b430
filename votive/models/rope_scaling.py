"""RoPE's hyperparameters as llama.cpp reads them from a GGUF file, checked, in one object the models build their
tables from (`RopeScaling.table`).

Ported from ggml-org/llama.cpp (the version llama-cpp-python 0.3.36 vendors), at the points named:
- src/llama-model.cpp `load_hparams`: `{arch}.rope.freq_base` (default 10000), `{arch}.rope.scaling.type`
  (default "linear"), `{arch}.rope.scaling.factor` (else the old `{arch}.rope.scale_linear`; 0 or absent: 1),
  freq_scale = 1.0f / factor, `{arch}.rope.scaling.attn_factor`, `{arch}.rope.scaling.original_context_length`
  (n_ctx_orig_yarn; absent: `{arch}.context_length`), `{arch}.rope.dimension_count` (n_rot, default the head
  size), and the `rope_freqs.weight` tensor ({n_rot / 2} floats) that `get_rope_factors` hands ggml_rope_ext as
  its freq_factors.
- src/llama-context.cpp (cparams): scaling type "none" forces freq_scale 1; ext_factor is 1 for YaRN, else 0;
  the attention factor handed to ggml (cparams.yarn_attn_factor, `yarn_attn_factor` below) is 1 times
  rope.scaling.attn_factor, and for YaRN first get_mscale(factor) / (1 + 0.1 ln factor), factor = 1 / freq_scale.
- ggml.c `ggml_rope_yarn_corr_dims`: YaRN's ramp between the pairs that turn fewer than beta_fast (32) and more
  than beta_slow (1) times over the original context (`yarn_corr_dims` below).
- ggml-cpu ops.cpp `ggml_rope_cache_init` / `rope_yarn`: the table itself (votive/quant/csrc/decoder_kernels.c):
  with YaRN each pair's angle mixes the scaled and the unscaled one by the ramp, and cos and sin are multiplied by
  attn_factor * (1 + 0.1 ln(1 / freq_scale)); so with rope.scaling.attn_factor 1 the magnitude is YaRN's
  0.1 ln(factor) + 1, up to the rounding of llama.cpp's float arithmetic, which votive repeats.
- The YaRN keys `{arch}.rope.scaling.yarn_*` (src/llama-arch.cpp) are read only by grok, mistral3 and
  deepseek2's hparams loaders (src/models/*.cpp); for the architectures votive runs llama.cpp ignores them and
  uses beta_fast 32, beta_slow 1, no log multiplier (llama.cpp's converter writes them from config.json all the
  same). votive takes such a key where it holds the value llama.cpp uses in its place and refuses it otherwise:
  a file that asks for what llama.cpp does not do is run by neither.
- No architecture votive runs scales kq_scale for YaRN (llama.cpp does it in deepseek2's graph only).

- longrope (phi3 only; convert_hf_to_gguf.py Phi3MiniModel and src/models/phi3.cpp): the converter writes
  `rope_factors_long.weight` and `rope_factors_short.weight` ({n_rot / 2} floats each, one pair for all layers),
  `{arch}.rope.scaling.original_context_length` and `{arch}.rope.scaling.attn_factor` (sqrt(1 + ln(scale) /
  ln(original context)) for a 128k model), and no scaling type, so llama.cpp's type is "linear" with factor 1.
  `llama_model::get_rope_factors` hands ggml_rope_ext the long factors when the context per sequence exceeds
  the original context (n_ctx_seq > n_ctx_orig_yarn), else the short ones; llama-context.cpp pads that context
  up to a multiple of 256 first (GGML_PAD(n_ctx, 256)). The attention factor reaches ggml as
  cparams.yarn_attn_factor (1, times hparams.rope_attn_factor, with ext_factor 0): cos and sin are scaled by it.
  Phi-4-mini rotates 3/4 of each head (`{arch}.rope.dimension_count` 96 of 128), which phi3's graph allows.

What votive runs exactly: no scaling, linear scaling, YaRN, an attention factor, per-pair frequency factors
(Llama 3.1 / 3.2, whose "llama3" scaling llama.cpp's converter bakes into rope_freqs.weight), and for phi3
longrope and partial rotary. Everything else is refused with a ModelConfigError naming the key and its value,
never run approximately: longrope or partial rotary outside phi3, YaRN or an attention factor other than 1 for
gemma3 (llama.cpp hands them to its sliding-window layers too, whose table votive builds unscaled), a YaRN key
llama.cpp ignores set to another value than the one it uses, an unknown type, and frequency factors in a family
llama.cpp does not give them to.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from votive.errors import ModelConfigError

FREQ_FACTORS = "rope_freqs.weight"  # (n_rot / 2,) float32 divisors of each pair's angle
# Architectures whose llama.cpp graph passes rope_freqs to ggml_rope_ext (LLM_TENSOR_ROPE_FREQS in their tensor
# list); in any other, llama.cpp refuses the file for an unexpected tensor, and so do we.
FREQ_FACTOR_ARCHS = frozenset({"llama"})
# Architectures whose every RoPE layer turns by the one table RopeScaling.table builds, so that YaRN and an
# attention factor reach all of them as llama.cpp hands them to ggml_rope_ext. Not gemma3: its sliding-window
# layers get them too in llama.cpp (with freq_scale 1), and votive builds their table unscaled.
YARN_ARCHS = frozenset({"llama", "qwen2", "qwen3", "phi3", "smollm3"})
# The YaRN keys (src/llama-arch.cpp LLM_KV_ROPE_SCALING_YARN_*), none of which llama.cpp's loader reads for the
# architectures votive runs, and the value llama.cpp uses in each one's place (None: 1 for YaRN, else 0, as
# llama-context.cpp sets ext_factor). A file holding another value is refused (module docstring).
YARN_KEYS = {"yarn_log_multiplier": 0.0, "yarn_ext_factor": None, "yarn_attn_factor": 1.0, "yarn_beta_fast": 32.0,
             "yarn_beta_slow": 1.0}
BETA_FAST, BETA_SLOW = 32.0, 1.0  # llama-hparams.h: hparams.yarn_beta_fast / yarn_beta_slow
# Architectures whose llama.cpp graph takes longrope's two factor tensors (get_rope_factors), an attention factor
# from the file and a rotated part smaller than the head: phi3 (Phi-3, Phi-3.5, Phi-4-mini).
LONGROPE_ARCHS = frozenset({"phi3"})
LONG_FACTORS, SHORT_FACTORS = "rope_factors_long.weight", "rope_factors_short.weight"  # (n_rot / 2,) float32
CONTEXT_PAD = 256  # llama-context.cpp: n_ctx (and n_ctx_seq) = GGML_PAD(n_ctx, 256) before the factors are chosen


@dataclass(frozen=True)
class RopeScaling:
    """The arguments of ggml_rope_cache_init a model's table is built with (llama.cpp's hparams and cparams)."""

    base: float  # {arch}.rope.freq_base: theta = pos * base^(-2i / n_rot)
    freq_scale: float = 1.0  # 1 / {arch}.rope.scaling.factor for linear and YaRN scaling, else 1
    freq_factors: np.ndarray | None = None  # rope_freqs.weight, (n_rot / 2,) float32, or None
    scaling_type: str = "none"  # {arch}.rope.scaling.type as llama.cpp resolves it: none, linear, yarn or longrope
    n_rot: int = 0  # {arch}.rope.dimension_count: the leading dims of each head that turn; 0: all (phi3 only)
    # cparams.yarn_attn_factor (float32): cos and sin are multiplied by it, and with YaRN by 1 + 0.1 ln(factor) too
    attn_factor: float = 1.0
    # longrope: freq_factors holds rope_factors_short.weight, these the long ones ((n_rot / 2,) float32, or None)
    long_factors: np.ndarray | None = None
    original_context: int = 0  # {arch}.rope.scaling.original_context_length, else {arch}.context_length
    ext_factor: float = 0.0  # cparams.yarn_ext_factor: 1 for YaRN (the ramp's weight), else 0
    corr_dims: tuple[float, float] = (0.0, 0.0)  # YaRN's ramp, in pairs: ggml_rope_yarn_corr_dims (float32 values)

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
                              freq_factors=self.factors(n_positions), attn_factor=self.attn_factor,
                              ext_factor=self.ext_factor, corr_dims=self.corr_dims)


def yarn_corr_dims(n_dims: int, original_context: int, base: float, beta_fast: float = BETA_FAST,
                   beta_slow: float = BETA_SLOW) -> tuple[float, float]:
    """ggml.c ggml_rope_yarn_corr_dims, in its float32 arithmetic and libm's logf: the pair index where a pair
    turns beta_fast times over the original context, floored (at least 0), and where it turns beta_slow times,
    ceiled (at most n_dims - 1). Pair i's angle is the unscaled one below the first, the scaled one past the
    second, and mixed linearly between (rope_yarn_ramp)."""
    from votive.quant.kernels_ref import libm_f32

    f32 = np.float32

    def corr_dim(n_rot: float) -> np.float32:  # n_dims * logf(n_ctx_orig / (n_rot * 2 * pi)) / (2 * logf(base))
        turns = f32(original_context) / (f32(n_rot) * f32(2) * f32(np.pi))
        return f32(n_dims) * libm_f32("logf", turns)[()] / (f32(2) * libm_f32("logf", f32(base))[()])

    start, end = np.floor(corr_dim(beta_fast)), np.ceil(corr_dim(beta_slow))
    return float(max(f32(0), start)), float(min(f32(n_dims - 1), end))


def yarn_attn_factor(freq_scale: float, mscale: float | None = None, rope_attn_factor: float = 1.0) -> float:
    """cparams.yarn_attn_factor for YaRN (llama-context.cpp, float32, no fused multiply-adds: libllama is built
    without them): get_mscale(factor) = 0.1 ln(factor) + 1 (1 for factor <= 1), divided back by ggml's own
    1 + 0.1 ln(factor), times rope.scaling.attn_factor; factor = 1 / freq_scale. `mscale` replaces
    get_mscale(factor) (a Hugging Face attention_factor, which llama.cpp's graphs for these families never read)."""
    from votive.quant.kernels_ref import libm_f32

    f32 = np.float32
    factor = f32(1) / f32(freq_scale)
    log_factor = libm_f32("logf", factor)[()]
    if mscale is None:
        mscale = f32(1) if factor <= 1 else f32(0.1) * f32(1) * log_factor + f32(1)
    out = f32(mscale) * (f32(1) / (f32(1) + f32(0.1) * log_factor))
    return float(out * f32(rope_attn_factor))


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
    if scaling_type == "yarn" and arch not in YARN_ARCHS:
        raise ModelConfigError(f"{f.path}: {key} = 'yarn' is not supported for architecture {arch!r} (votive runs "
                               f"YaRN for {', '.join(sorted(YARN_ARCHS))})")
    if scaling_type == "longrope" and not longrope_arch:
        raise ModelConfigError(f"{f.path}: {key} = 'longrope' is not supported for architecture {arch!r} (votive "
                               f"runs longrope as llama.cpp does, for phi3 only)")
    if scaling_type not in ("none", "linear", "yarn", "longrope"):
        raise ModelConfigError(f"{f.path}: {key} = {scaling_type!r} is not a RoPE scaling type votive implements "
                               f"(supported: none, linear, yarn)")
    ext_factor = 1.0 if scaling_type == "yarn" else 0.0  # llama-context.cpp: yarn_ext_factor -1 means this
    for name, used in YARN_KEYS.items():
        key = f"{arch}.rope.scaling.{name}"
        used = ext_factor if used is None else used
        if key in f.metadata and _number(f, key) != used:
            raise ModelConfigError(f"{f.path}: {key} = {f.get(key)!r} is not supported: llama.cpp does not read "
                                   f"it for architecture {arch!r} and uses {used} (votive runs what llama.cpp runs)")
    key = f"{arch}.rope.scaling.attn_factor"
    rope_attn_factor = _number(f, key, 1.0)  # hparams.rope_attn_factor is a float
    if not (np.isfinite(rope_attn_factor) and rope_attn_factor > 0):
        raise ModelConfigError(f"{f.path}: {key} = {rope_attn_factor} must be a finite number > 0")
    if rope_attn_factor != 1.0 and arch not in YARN_ARCHS:
        raise ModelConfigError(f"{f.path}: {key} = {rope_attn_factor} is not supported for architecture {arch!r} "
                               f"(only 1: RoPE without a magnitude factor)")

    factor = f.get(f"{arch}.rope.scaling.factor", f.get(f"{arch}.rope.scale_linear", 0.0))
    factor = np.float32(factor)
    if not (np.isfinite(factor) and factor >= 0):
        raise ModelConfigError(f"{f.path}: {arch}.rope.scaling.factor = {factor} must be a finite number >= 0")
    # llama.cpp: rope_freq_scale_train = ropescale == 0.0f ? 1.0f : 1.0f/ropescale, in float; type none forces 1
    freq_scale = float(np.float32(1) if factor == 0 or scaling_type == "none" else np.float32(1) / factor)
    base = float(f.get(f"{arch}.rope.freq_base", 10000.0))
    key = f"{arch}.rope.scaling.original_context_length"
    original = f.get(key, f.get(f"{arch}.context_length", 0))  # hparams.n_ctx_orig_yarn
    if not (isinstance(original, (int, np.integer)) and not isinstance(original, bool) and original >= 0):
        raise ModelConfigError(f"{f.path}: {key} = {original!r} must be an integer >= 0")
    scaling = RopeScaling(base=base, freq_scale=freq_scale, scaling_type=scaling_type, attn_factor=rope_attn_factor,
                          original_context=int(original))
    if ext_factor:
        if original == 0:
            raise ModelConfigError(f"{f.path}: {key} = 0: YaRN needs the original context (or {arch}.context_length)")
        scaling = replace(scaling, ext_factor=ext_factor, corr_dims=yarn_corr_dims(n_rot, int(original), base),
                          attn_factor=yarn_attn_factor(freq_scale, rope_attn_factor=rope_attn_factor))
    if not longrope_arch:
        return replace(scaling, freq_factors=_freq_factors(f, arch, n_rot))
    _freq_factors(f, arch, n_rot)  # refuses rope_freqs.weight, which phi3's graph does not read
    short, long = _factor_tensor(f, SHORT_FACTORS, n_rot), _factor_tensor(f, LONG_FACTORS, n_rot)
    # llama.cpp picks between the two tensors whenever the file has them, whatever the scaling type says
    return replace(scaling, freq_factors=short, long_factors=long, n_rot=n_rot,
                   scaling_type="longrope" if short is not None or long is not None else scaling_type)


def _number(f, key: str, default: float = 0.0) -> float:
    """Float key `key` of `f` (absent: `default`) as llama.cpp's float hparams hold it (float32)."""
    value = f.get(key, default)
    if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
        raise ModelConfigError(f"{f.path}: {key} = {value!r} must be a number")
    return float(np.float32(value))


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

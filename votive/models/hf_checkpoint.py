"""Hugging Face decoder checkpoints: a folder with config.json, model.safetensors (or shards with
model.safetensors.index.json), tokenizer.json and tokenizer_config.json, read into the same models the GGUF
files build (llama.py, qwen2.py, qwen3.py, phi3.py, gemma.py).

Each family keeps its own HF weight table (`HF_WEIGHTS` / `HF_LAYER_WEIGHTS`, beside its GGUF one: our name ->
HF tensor name), and reads its hyperparameters with `Config.from_hf`, which names the config.json key of every
field. This module holds what they share: config.json with named-key errors and its RoPE settings (`HFConfig`),
the weights behind the interface `models.binding.bind_weights` reads (`HFWeights`), the check that config and
tensors agree (`check_shapes`), and quantizing at load.

The Q/K question, decided here once. transformers' `rotate_half` turns the pairs (i, i + head_dim / 2) of each
head: ggml's NEOX RoPE. llama.cpp's converter permutes LLaMA's Q and K rows (convert_hf_to_gguf.py
LlamaModel.permute) so that ggml's "normal" RoPE, which turns adjacent pairs, computes the same thing. From
safetensors we do not permute: every family runs NEOX RoPE on the rows as stored. Then a float32 weight stays a
view of the file's map (a permutation would copy it), quantizing at load sees the rows in HF's order, and the q.k
dot products sum the head's elements in transformers' order. A GGUF written from such a folder would need
llama.cpp's permutation for `llama` (that is the converter's business, not this reader's).

Weights stay as stored: float32 matrices are views of the map; F16 / BF16 matrices go to the backend as such (the
CPU widens them to float32 once, exactly, as it does for GGUF files; the GPU keeps the halves). 1-D tensors (norm
weights, biases) are widened to float32 here, exactly. With `quantize="q8_0"` every matrix whose rows are whole
32-element blocks is quantized at load with votive's Q8_0 quantizer (votive.quant.codecs, bit-exact with ggml's
quantize_row_q8_0_ref), a band of rows at a time; other matrices stay as stored. With `quantize="q4_k_m"` each
matrix gets the type llama.cpp's Q4_K_M mixture gives its GGUF tensor (votive.quant.mixtures, `hf_mixture`), so
the model holds the blocks `votive convert --type q4_k_m` writes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from votive.errors import InputError, ModelConfigError
from votive.formats.weights import WeightStore, bf16_to_f32
from votive.models.rope_scaling import RopeScaling, yarn_attn_factor
from votive.quant.ggml_types import GGMLType

# safetensors dtype -> the GGML type a float tensor of it is handed to the backend as.
FLOAT_TYPES = {"F32": GGMLType.F32, "F16": GGMLType.F16, "BF16": GGMLType.BF16}

# `votive.load(..., quantize=)` value -> the GGML type matrices are quantized to at load, or the name of a
# llama.cpp mixture (votive.quant.mixtures.MIXTURES) that chooses one per matrix.
# "int8": an encoder's matrices to int8 with one scale per row, summed exactly in integers (votive.models.bert and
# the numpy backend's encoder_int8_linear); no GGML type holds it, so decoders, whose reference is llama.cpp, refuse it.
ENCODER_INT8 = "int8"
QUANTIZE_TYPES = {"q8_0": GGMLType.Q8_0, "q4_k_m": "q4_k_m", "int8": ENCODER_INT8}
_BAND_ROWS = 1024  # rows widened to float32 at a time when quantizing: bounds the scratch memory

# rope_scaling types votive computes as transformers does (see HFConfig.rope).
ROPE_TYPES = ("default", "linear", "llama3", "yarn")
# The classes whose YaRN votive checks against transformers (tests/data/hf_reference); Gemma 3 turns its sliding
# layers unscaled in transformers but with YaRN's arguments in llama.cpp, so votive runs neither.
YARN_CLASSES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
YARN_KEYS = {"rope_type", "type", "rope_theta", "partial_rotary_factor", "factor", "original_max_position_embeddings",
             "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim", "truncate"}


# ------------------------------------------------------------------------------------------------ config.json
class HFConfig:
    """A parsed config.json with getters that name a missing or mistyped key.

    Args:
        folder: the checkpoint folder.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / "config.json"
        try:
            self.data = json.loads(self.path.read_bytes())
        except (OSError, ValueError) as e:
            raise ModelConfigError(f"{self.path}: cannot read JSON ({e})") from None
        if not isinstance(self.data, dict):
            raise ModelConfigError(f"{self.path}: expected a JSON object, found {type(self.data).__name__}")

    @property
    def architecture(self) -> str:
        """The one entry of `architectures`, e.g. "LlamaForCausalLM"."""
        archs = self.data.get("architectures")
        if not (isinstance(archs, list) and len(archs) == 1 and isinstance(archs[0], str)):
            raise ModelConfigError(f"{self.path}: 'architectures' must list one class name, found {archs!r}")
        return archs[0]

    def with_data(self, **changes) -> "HFConfig":
        """The same file's config with `changes` laid over its keys (a family reading a nested layout)."""
        other = object.__new__(HFConfig)
        other.path, other.data = self.path, {**self.data, **changes}
        return other

    def get(self, key: str, default=None):
        value = self.data.get(key)
        return default if value is None else value

    def require(self, key: str, kind: type = int):
        """config.json's `key`, which must be present and of `kind` (int refuses bool; float takes an int)."""
        if key not in self.data or self.data[key] is None:
            raise ModelConfigError(f"{self.path}: missing key {key!r}")
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ModelConfigError(f"{self.path}: {key!r} is {value!r}, expected {kind.__name__}")
        return value

    def refuse(self, key: str, allowed) -> None:
        """Refuse a checkpoint whose `key` is set to anything but the `allowed` values (absent / null is fine)."""
        value = self.data.get(key)
        if value is not None and value not in allowed:
            raise ModelConfigError(f"{self.path}: {key} = {value!r} is not supported (votive runs "
                                   f"{' or '.join(repr(a) for a in allowed)})")

    def rope(self, head_dim: int, longrope: bool = False) -> RopeScaling:
        """RoPE settings: `rope_theta` and `rope_scaling` (the Hub's keys), or transformers 5's `rope_parameters`
        holding both. Types ROPE_TYPES; any other, and `partial_rotary_factor` other than 1, are refused naming
        the key, never approximated. `longrope` (Phi-3 only) allows longrope and partial rotary (`_longrope`).

        "llama3" scaling (Llama 3.1 / 3.2) becomes per-pair frequency factors, computed as llama.cpp's converter
        computes its rope_freqs.weight (convert_hf_to_gguf.py LlamaModel.generate_extra_tensors); transformers'
        `_compute_llama3_parameters` divides each inverse frequency by the same factor. "yarn" becomes ggml's YaRN
        arguments (`_yarn`), for YARN_CLASSES.
        """
        params, scaling, where, kind = self.rope_scaling()
        base = float(self.get("rope_theta", params.get("rope_theta", 10000.0)))
        partial = self.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))
        if longrope:
            return self._longrope(scaling, where, kind, base, partial, head_dim)
        if partial != 1.0:
            raise ModelConfigError(f"{self.path}: partial_rotary_factor = {partial!r} is not supported (only 1.0)")
        if kind not in ROPE_TYPES:
            raise ModelConfigError(f"{self.path}: {where}.rope_type = {kind!r} is not supported (votive runs "
                                   f"{', '.join(ROPE_TYPES)})")
        if kind == "yarn":
            return self._yarn(scaling, where, base, head_dim)
        known = {"rope_type", "type", "rope_theta", "factor", "partial_rotary_factor"}
        if kind == "llama3":
            known |= {"low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}
        extra = sorted(set(scaling) - known)
        if extra:  # e.g. attention_factor: a setting we would otherwise ignore
            raise ModelConfigError(f"{self.path}: {where}.{extra[0]} = {scaling[extra[0]]!r} is not supported for "
                                   f"rope_type {kind!r}")
        if kind == "default":
            return RopeScaling(base=base)
        factor = scaling.get("factor")
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not factor > 0:
            raise ModelConfigError(f"{self.path}: {where}.factor = {factor!r} must be a number > 0")
        if kind == "linear":  # positions divided by factor, as ggml's freq_scale (in float, as llama.cpp)
            return RopeScaling(base=base, freq_scale=float(np.float32(1) / np.float32(factor)), scaling_type="linear")
        return RopeScaling(base=base, freq_factors=self._llama3_factors(scaling, base, head_dim, float(factor)),
                           scaling_type="linear")

    def rope_scaling(self) -> tuple[dict, dict, str, str]:
        """(rope_parameters, the scaling settings, the key they are under, their rope_type): the Hub's
        `rope_scaling`, else transformers 5's `rope_parameters` holding it; "default" when neither scales."""
        params = self.data.get("rope_parameters")
        params = params if isinstance(params, dict) else {}
        scaling = self.data.get("rope_scaling") or params
        where = "rope_scaling" if self.data.get("rope_scaling") else "rope_parameters"
        if not isinstance(scaling, dict):
            raise ModelConfigError(f"{self.path}: {where} must be an object or null, found {scaling!r}")
        return params, scaling, where, scaling.get("rope_type", scaling.get("type", "default"))

    def _longrope(self, scaling: dict, where: str, kind: str, base: float, partial, head_dim: int) -> RopeScaling:
        """Phi-3's RoPE as transformers' Phi3 computes it (modeling_rope_utils `_compute_longrope_parameters`):
        the first head_dim * partial_rotary_factor dims turn, each pair's angle divided by `short_factor`'s entry
        (or `long_factor`'s past original_max_position_embeddings), cos and sin times the attention factor
        sqrt(1 + ln(max_position_embeddings / original) / ln(original)) unless `attention_factor` says it.
        Phi3Config reads the old types "su" and "yarn" as longrope. transformers picks the factors by the length of
        the sequence at hand; votive, like llama.cpp, by the context it allocates (RopeScaling.factors)."""
        if not (isinstance(partial, (int, float)) and 0 < partial <= 1):
            raise ModelConfigError(f"{self.path}: partial_rotary_factor = {partial!r} must be in (0, 1]")
        n_rot = int(head_dim * partial)
        if n_rot < 2 or n_rot % 2:
            raise ModelConfigError(f"{self.path}: partial_rotary_factor = {partial!r} turns {n_rot} of {head_dim} "
                                   f"dims; an even number >= 2 is needed")
        if kind == "default":
            return RopeScaling(base=base, n_rot=n_rot)
        if kind not in ("longrope", "su", "yarn"):
            raise ModelConfigError(f"{self.path}: {where}.rope_type = {kind!r} is not supported for Phi-3 (votive "
                                   f"runs default and longrope)")
        extra = sorted(set(scaling) - {"rope_type", "type", "rope_theta", "partial_rotary_factor", "short_factor",
                                       "long_factor", "attention_factor", "original_max_position_embeddings",
                                       "factor"})
        if extra:
            raise ModelConfigError(f"{self.path}: {where}.{extra[0]} is not supported for longrope")
        factors = []
        for key in ("short_factor", "long_factor"):
            values = np.asarray(scaling.get(key), dtype=object)
            if values.shape != (n_rot // 2,) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        and v > 0 for v in values):
                raise ModelConfigError(f"{self.path}: {where}.{key} must list {n_rot // 2} numbers > 0")
            factors.append(np.asarray(values.tolist(), np.float32))
        original = scaling.get("original_max_position_embeddings", self.get("original_max_position_embeddings",
                                                                           4096))
        if not (isinstance(original, int) and original > 0):
            raise ModelConfigError(f"{self.path}: original_max_position_embeddings = {original!r} must be an int > 0")
        attn = scaling.get("attention_factor")
        if attn is None:
            factor = scaling.get("factor") or self.require("max_position_embeddings") / original
            attn = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
        if not (isinstance(attn, (int, float)) and math.isfinite(attn) and attn > 0):
            raise ModelConfigError(f"{self.path}: {where}.attention_factor = {attn!r} must be a finite number > 0")
        return RopeScaling(base=base, freq_factors=factors[0], scaling_type="longrope", n_rot=n_rot,
                           attn_factor=float(np.float32(attn)), long_factors=factors[1], original_context=original)

    def _yarn(self, scaling: dict, where: str, base: float, head_dim: int) -> RopeScaling:
        """YaRN as transformers' `_compute_yarn_parameters` computes it, as ggml's table arguments
        (votive.models.rope_scaling): pair j's inverse frequency mixes 1 / (factor * base^(2j / head_dim)) and
        base^(-2j / head_dim) by e_j = 1 - clamp((j - low) / (high - low), 0, 1), which is ggml's rope_yarn_ramp
        of corr_dims (low, high); low and high are the correction dims of beta_fast (32) and beta_slow (1) over
        original_max_position_embeddings, floored / ceiled unless `truncate` is false; cos and sin are multiplied
        by attention_factor, else get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim) when both are
        set, else get_mscale(factor) = 0.1 ln(factor) + 1 (then computed as llama.cpp does, so that a converted
        file's table is this one). Refused where ggml's ramp is not transformers' (high - low under 0.001)."""
        arch = (self.data.get("architectures") or [None])[0]
        if arch not in YARN_CLASSES:
            raise ModelConfigError(f"{self.path}: {where}.rope_type = 'yarn' is not supported for {arch} (votive "
                                   f"runs YaRN for {', '.join(YARN_CLASSES)})")
        extra = sorted(set(scaling) - YARN_KEYS)
        if extra:
            raise ModelConfigError(f"{self.path}: {where}.{extra[0]} = {scaling[extra[0]]!r} is not supported for "
                                   f"rope_type 'yarn'")
        original, top = scaling.get("original_max_position_embeddings"), self.data.get(
            "original_max_position_embeddings")
        if top is not None and top != original:  # transformers' choice between the two varies; we do not guess
            raise ModelConfigError(f"{self.path}: original_max_position_embeddings = {top!r} differs from "
                                   f"{where}.original_max_position_embeddings = {original!r}")
        original = self.require("max_position_embeddings") if original is None else original
        if not (isinstance(original, int) and not isinstance(original, bool) and original > 0):
            raise ModelConfigError(f"{self.path}: {where}.original_max_position_embeddings = {original!r} must be "
                                   f"an int > 0")
        values = {}
        for key in ("factor", "attention_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim"):
            value = scaling.get(key)
            if value is not None and not (isinstance(value, (int, float)) and not isinstance(value, bool)
                                          and math.isfinite(value) and value >= 0):
                raise ModelConfigError(f"{self.path}: {where}.{key} = {value!r} must be a finite number >= 0")
            values[key] = value
        factor = values["factor"]
        if factor is None:  # transformers: the ratio of the two contexts
            factor = self.require("max_position_embeddings") / original
        if not factor > 0:
            raise ModelConfigError(f"{self.path}: {where}.factor = {factor!r} must be > 0")
        truncate = scaling.get("truncate", True)
        if not isinstance(truncate, bool):
            raise ModelConfigError(f"{self.path}: {where}.truncate = {truncate!r} must be true or false")

        def get_mscale(m: float) -> float:  # transformers' yarn_get_mscale
            return 1.0 if factor <= 1 else 0.1 * m * math.log(factor) + 1.0

        attention = values["attention_factor"]
        if attention is None and values["mscale"] and values["mscale_all_dim"]:
            attention = get_mscale(values["mscale"]) / get_mscale(values["mscale_all_dim"])
        if attention is not None and not attention > 0:
            raise ModelConfigError(f"{self.path}: {where}.attention_factor = {attention!r} must be > 0")

        def correction_dim(turns: float) -> float:  # find_correction_dim, in Python floats as transformers
            return head_dim * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(base))

        low, high = correction_dim(values["beta_fast"] or 32), correction_dim(values["beta_slow"] or 1)
        if truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, head_dim - 1)
        if low != high and not high - low >= 0.001:  # transformers divides by high - low, ggml by max(0.001, it)
            raise ModelConfigError(f"{self.path}: {where} beta_fast / beta_slow give YaRN's ramp from pair {low} to "
                                   f"{high}, which ggml's ramp does not compute as transformers does")
        freq_scale = float(np.float32(1) / np.float32(factor))
        return RopeScaling(base=base, freq_scale=freq_scale, scaling_type="yarn", ext_factor=1.0,
                           corr_dims=(float(np.float32(low)), float(np.float32(high))), original_context=original,
                           attn_factor=yarn_attn_factor(freq_scale, attention))

    def _llama3_factors(self, scaling: dict, base: float, head_dim: int, factor: float) -> np.ndarray:
        """(head_dim / 2,) float32 divisors of each pair's angle, as llama.cpp's converter writes them."""
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
        if not high > low:
            raise ModelConfigError(f"{self.path}: rope_scaling high_freq_factor = {high} must exceed "
                                   f"low_freq_factor = {low}")
        freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))  # (head_dim / 2,)
        out = []
        for freq in freqs.astype(np.float64):
            wavelen = 2 * np.pi / freq
            if wavelen < old_ctx / high:  # high frequencies: untouched
                out.append(1.0)
            elif wavelen > old_ctx / low:  # low frequencies: slowed by factor
                out.append(factor)
            else:  # in between: a smooth blend of the two
                smooth = (old_ctx / wavelen - low) / (high - low)
                out.append(1 / ((1 - smooth) / factor + smooth))
        return np.array(out, np.float32)


# ---------------------------------------------------------------------------------------------------- weights
@dataclass(frozen=True)
class HFTensor:
    """What `bind_weights` and the backends' `make_linear` read of a tensor (GGUFFile's TensorInfo, in part)."""

    name: str
    ggml_type: GGMLType  # F32, F16, BF16 as stored, F32 for widened 1-D tensors, or the type quantized to
    shape: tuple[int, ...]  # numpy order


class HFWeights:
    """A checkpoint's tensors behind the interface of an open GGUFFile that `bind_weights` and `make_linear`
    use: `.path`, `.tensors` (name -> HFTensor) and `[name]` (the data as that type stores it).

    Args:
        store: the checkpoint's `votive.formats.weights.WeightStore`.
        quantize: a GGML type to quantize matrices to at load (those whose rows are whole blocks of it), a
            type per tensor name (`hf_mixture`; None keeps that tensor as stored), or None to keep all as stored.
    """

    def __init__(self, store: WeightStore, quantize: GGMLType | dict | None = None):
        self.path = store.path
        self.store = store
        self.quantize = quantize
        if isinstance(quantize, str):  # a mixture's name reaches here only from an encoder (load_hf_decoder maps it)
            raise InputError(f"{self.path}: quantize={quantize!r} is llama.cpp's mixture for decoders (its rules "
                             f"name GGUF decoder tensors); quantize an encoder with 'q8_0'")
        self.tensors: dict[str, HFTensor] = {}
        for name in store.keys():
            dtype = store.dtype_of(name)
            shape = tuple(store.raw(name).shape)
            if dtype not in FLOAT_TYPES:
                raise ModelConfigError(f"{self.path}: tensor {name!r} is {dtype}; votive reads F32, F16 and BF16 "
                                       f"checkpoints (quantized safetensors are not supported)")
            kind = FLOAT_TYPES[dtype] if len(shape) == 2 else GGMLType.F32
            if isinstance(quantize, dict):
                kind = quantize.get(name) or kind
            elif quantize is not None and len(shape) == 2 and shape[1] % quantize.block_size == 0:
                kind = quantize
            self.tensors[name] = HFTensor(name, kind, shape)

    def __getitem__(self, name: str) -> np.ndarray:
        info = self.tensors[name]
        if info.ggml_type == GGMLType.F32:
            return self.store.get(name)  # a view for F32, widened once (exactly) for F16 / BF16
        if info.ggml_type in (GGMLType.F16, GGMLType.BF16):
            dtype = self.store.dtype_of(name)
            if info.ggml_type == FLOAT_TYPES[dtype]:
                return self.store.raw(name)  # float16, or BF16 bits as uint16: what make_linear dequantizes
            return as_float32(self.store.raw(name), dtype).astype(np.float16)  # a mixture's F16 (gguf-py's rounding)
        return self._quantized(name, info)

    def _quantized(self, name: str, info: HFTensor) -> np.ndarray:
        return quantize_rows(self.store.raw(name), self.store.dtype_of(name), info.ggml_type)


def as_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """A float tensor as stored (safetensors `dtype` F32, F16, or BF16 bits as uint16) as float32, exactly."""
    return bf16_to_f32(raw) if dtype == "BF16" else np.asarray(raw, np.float32)


def quantize_rows(raw: np.ndarray, dtype: str, ggml_type: GGMLType) -> np.ndarray:
    """uint8 (rows, row_bytes) GGML blocks of a matrix stored as `dtype`, widened and quantized a band of rows at
    a time (votive.quant.codecs' quantizer), so the whole matrix is never widened at once."""
    from votive.quant.codecs import quantize

    rows, cols = raw.shape
    out = np.empty((rows, ggml_type.row_bytes(cols)), np.uint8)  # (rows, row_bytes)
    for start in range(0, rows, _BAND_ROWS):
        band = as_float32(raw[start : start + _BAND_ROWS], dtype)  # (band, cols), exact
        out[start : start + band.shape[0]] = quantize(band, ggml_type.id)
    return out


def quantize_type(quantize) -> GGMLType | str | None:
    """The GGML type (or mixture name) for `votive.load`'s `quantize` argument; an InputError naming the choices
    for a bad one."""
    if quantize is None:
        return None
    if quantize not in QUANTIZE_TYPES:
        raise InputError(f"quantize={quantize!r} is not a choice (choices: {', '.join(QUANTIZE_TYPES)}, or None)")
    return QUANTIZE_TYPES[quantize]


def hf_mixture(mixture: str, hf: HFConfig, store: WeightStore, family, arch: str) -> dict[str, GGMLType | None]:
    """HF tensor name -> the type llama.cpp's `mixture` (votive.quant.mixtures) gives the GGUF tensor a converted
    file holds for it (None: kept as stored), from the family's two weight tables (our name -> HF name, our name
    -> GGUF name) and config.json's layers and heads. `arch` is the family's general.architecture.

    Raises:
        QuantError: an architecture the mixture does not mirror.
    """
    from votive.quant.mixtures import MixtureModel, check_mixture, mixture_types

    check_mixture(mixture, arch)
    # the counts the rules read, by their config.json keys (the family's Config refuses what it cannot run later;
    # phi3's would also need its longrope flag here)
    n_layers, n_heads = hf.require("num_hidden_layers"), hf.require("num_attention_heads")
    n_kv_heads = hf.get("num_key_value_heads", n_heads)
    tied = bool(hf.get("tie_word_embeddings", False))
    gguf_of = {}  # HF name -> GGUF name
    for ours, theirs in family.HF_WEIGHTS.items():
        if not (ours == "output" and tied):
            gguf_of[theirs] = family.WEIGHTS[ours]
    for i in range(n_layers):
        for ours, theirs in family.HF_LAYER_WEIGHTS.items():
            gguf_of[theirs.format(i=i)] = family.LAYER_WEIGHTS[ours].format(i=i)
    shapes = {gguf_of[name]: tuple(store.raw(name).shape) for name in store.keys() if name in gguf_of}
    types = mixture_types(mixture, MixtureModel(arch, n_layers, n_heads, n_kv_heads), shapes)
    return {name: types[gguf_of[name]] for name in store.keys() if name in gguf_of}


# ------------------------------------------------------------------------------------- config against tensors
def decoder_shapes(cfg) -> tuple[dict, dict]:
    """The shape config.json implies for each of our names (llama.Config `cfg`), whole-model and per layer."""
    q, kv = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    top = {"tok_embed": (cfg.vocab_size, cfg.dim), "norm": (cfg.dim,), "output": (cfg.vocab_size, cfg.dim)}
    layer = {
        "attn_norm": (cfg.dim,), "wq": (q, cfg.dim), "wk": (kv, cfg.dim), "wv": (kv, cfg.dim), "wo": (cfg.dim, q),
        "ffn_norm": (cfg.dim,), "w_gate": (cfg.ffn_dim, cfg.dim), "w_up": (cfg.ffn_dim, cfg.dim),
        "w_down": (cfg.dim, cfg.ffn_dim), "bq": (q,), "bk": (kv,), "bv": (kv,),
        "q_norm": (cfg.head_dim,), "k_norm": (cfg.head_dim,),
        "wqkv": (q + 2 * kv, cfg.dim), "w_gate_up": (2 * cfg.ffn_dim, cfg.dim),  # Phi-3's fused matrices
        "post_attn_norm": (cfg.dim,), "post_ffn_norm": (cfg.dim,),  # Gemma 3's
    }  # fmt: skip
    return top, layer


def check_shapes(weights: HFWeights, cfg, table: dict, layer_table: dict, tied: bool) -> None:
    """Refuse a checkpoint whose tensors disagree with its config.json, naming the first disagreement: a tensor
    of another shape, a layer past num_hidden_layers, or an lm_head that tie_word_embeddings says is absent.
    (Missing tensors and tensors no table names are bind_weights' to refuse.)"""
    top, layer = decoder_shapes(cfg)
    names = [(ours, theirs, top[ours]) for ours, theirs in table.items()]
    for i in range(cfg.n_layers):
        names += [(ours, theirs.format(i=i), layer[ours]) for ours, theirs in layer_table.items()]
    for ours, theirs, expected in names:
        info = weights.tensors.get(theirs)
        if info is not None and info.shape != expected:
            raise ModelConfigError(f"{weights.path}: tensor {theirs!r} has shape {info.shape} but config.json "
                                   f"implies {expected} (hidden_size {cfg.dim}, heads {cfg.n_heads} / "
                                   f"{cfg.n_kv_heads} of {cfg.head_dim}, intermediate_size {cfg.ffn_dim}, "
                                   f"vocab_size {cfg.vocab_size})")
    beyond = layer_table["attn_norm"].format(i=cfg.n_layers)
    if beyond in weights.tensors:
        raise ModelConfigError(f"{weights.path}: tensor {beyond!r} exists but config.json says "
                               f"num_hidden_layers = {cfg.n_layers}")
    if tied and table["output"] in weights.tensors:
        raise ModelConfigError(f"{weights.path}: tensor {table['output']!r} exists but config.json says "
                               f"tie_word_embeddings = true")
    if not tied and table["output"] not in weights.tensors:
        raise ModelConfigError(f"{weights.path}: missing tensor {table['output']!r} (config.json says "
                               f"tie_word_embeddings = false)")

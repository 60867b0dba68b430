"""llama.cpp's quantization mixtures: which GGML type each tensor of a model gets for a llama_ftype such as Q4_K_M.

Mirrors, for Q4_K_M, src/llama-quant.cpp (ggml-org/llama.cpp, as in llama-cpp-python 0.3.36):
tensor_allows_quantization, tensor_get_category, llama_tensor_get_type_impl, tensor_type_fallback and the
counters of quantize_state_impl, in llama_model_quantize_impl's order of tensors (llama_model_loader's
weights_map: by layer number, tensors outside layers first, then by name). For a dense model (no experts):

    output.weight (and token_embd.weight when tied, i.e. no output.weight)   Q6_K; Q8_0 when its rows are not
                                                                            whole 256-element blocks
    attn_v / attn_qkv / attn_kv_b of layer i     Q6_K where use_more_bits(i, count); else Q4_K, but Q5_K on a
                                                 "70B" model (MODEL_70B)
    ffn_down of layer i                          Q6_K where use_more_bits(i, n_layers); else Q4_K
    every other matrix (token_embd untied too)   Q4_K
    1-D tensors, norms                           not quantized

then a matrix whose rows are not whole blocks of its type falls back (Q4_K -> Q5_0, Q5_K -> Q5_1,
Q6_K -> Q8_0; F16 when not whole 32-element blocks either), and llama.cpp refuses a Q8_0 one it cannot fall
back from. Mixture-of-experts models are not mirrored (their rules read the expert count and tensor names).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from votive.errors import QuantError
from votive.quant.ggml_types import GGMLType

# Mixture name -> (llama.h's llama_ftype, written as general.file_type; the default type of its matrices).
MIXTURES = {"q4_k_m": (15, GGMLType.Q4_K)}

# tensor_type_fallback: the type a matrix takes when its rows are not whole blocks of the one chosen.
FALLBACKS = {GGMLType.Q4_K: GGMLType.Q5_0, GGMLType.Q5_K: GGMLType.Q5_1, GGMLType.Q6_K: GGMLType.Q8_0}

# "70B" models (llama-model.cpp's load_hparams: LLM_TYPE_70B), the only model type the Q4_K_M rules read:
# general.architecture -> whether (n_layers, n_heads, n_kv_heads) is one.
MODEL_70B = {
    "llama": lambda n_layers, n_heads, n_kv_heads: n_layers == 80 and n_heads != n_kv_heads,
    "qwen2": lambda n_layers, n_heads, n_kv_heads: n_layers == 80,
    "qwen3": lambda n_layers, n_heads, n_kv_heads: False,
}

# Names never quantized though 2-D (tensor_allows_quantization; the ones a decoder of these families can hold).
_KEEP = ("_norm.weight", "ffn_gate_inp.weight", "position_embd.weight", "token_types.weight")
_LAYER = re.compile(r"blk\.(\d+)\.")


@dataclass(frozen=True)
class MixtureModel:
    """The hyperparameters llama.cpp's type rules read (llama_hparams)."""

    arch: str  # general.architecture
    n_layers: int  # {arch}.block_count
    n_heads: int  # {arch}.attention.head_count
    n_kv_heads: int  # {arch}.attention.head_count_kv


def use_more_bits(i_layer: int, n_layers: int) -> bool:
    """llama.cpp's use_more_bits: the first and last eighth of the layers, and every third one between."""
    return i_layer < n_layers // 8 or i_layer >= 7 * n_layers // 8 or (i_layer - n_layers // 8) % 3 == 2


def _category(name: str) -> str:
    """tensor_get_category, by the same substring tests in the same order."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for part, category in (("attn_qkv.weight", "attn_v"), ("attn_kv_b.weight", "attn_v"),
                           ("attn_v.weight", "attn_v"), ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                           ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"),
                           ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down")):
        if part in name:
            return category
    return "other"


def _order(name: str) -> tuple[int, str]:
    """llama_model_loader's weight_name_comparer: layer number (-1 outside layers), then name."""
    match = _LAYER.match(name)
    return (int(match.group(1)) if match else -1, name)


def mixture_types(mixture: str, model: MixtureModel, shapes: dict[str, tuple[int, ...]]) -> dict[str, GGMLType | None]:
    """The GGML type llama.cpp's llama_model_quantize gives each tensor for `mixture`.

    Args:
        mixture: a key of MIXTURES ("q4_k_m").
        model: the model's hyperparameters.
        shapes: GGUF tensor name -> shape in numpy order ((rows, cols) for a matrix; ggml's ne[0] is cols).

    Returns:
        name -> GGMLType, or None for a tensor llama.cpp leaves as it is (1-D tensors, norms).

    Raises:
        QuantError: an architecture without its model-type rule, or a matrix llama.cpp cannot quantize (rows
            not whole 32-element blocks where the rules choose Q8_0).

    Example:
        >>> shapes = {"output.weight": (1000, 256), "blk.0.attn_v.weight": (256, 256), "blk.0.attn_norm.weight": (256,)}
        >>> {k: v and v.name for k, v in mixture_types("q4_k_m", MixtureModel("llama", 1, 4, 4), shapes).items()}
        {'output.weight': 'Q6_K', 'blk.0.attn_v.weight': 'Q6_K', 'blk.0.attn_norm.weight': None}
    """
    check_mixture(mixture, model.arch)
    default = MIXTURES[mixture][1]
    is_70b = MODEL_70B[model.arch](model.n_layers, model.n_heads, model.n_kv_heads)
    names = sorted(shapes, key=_order)
    categories = {name: _category(name) for name in names}
    n_attention_wv = sum(1 for c in categories.values() if c == "attn_v")
    tied = "output.weight" not in shapes
    i_attention_wv = i_ffn_down = 0
    types: dict[str, GGMLType | None] = {}
    for name in names:
        shape, category = shapes[name], categories[name]
        if len(shape) < 2 or not name.endswith("weight") or any(part in name for part in _KEEP):
            types[name] = None
            continue
        cols = shape[-1]
        new_type = default
        if category == "output" or (tied and category == "token_embd"):
            new_type = GGMLType.Q8_0 if cols % default.block_size else GGMLType.Q6_K
        elif category == "attn_v":
            if use_more_bits(i_attention_wv, n_attention_wv):
                new_type = GGMLType.Q6_K
            if is_70b and new_type == GGMLType.Q4_K:  # 8 heads share attn_v: more bits for little size
                new_type = GGMLType.Q5_K
            i_attention_wv += 1
        elif category == "ffn_down":
            if use_more_bits(i_ffn_down, model.n_layers):
                new_type = GGMLType.Q6_K
            i_ffn_down += 1
        types[name] = _fallback(name, cols, new_type)
    return {name: types[name] for name in shapes}


def check_mixture(mixture: str, arch: str) -> None:
    """QuantError unless `mixture` is one of MIXTURES and its rules are mirrored for `arch`."""
    if mixture not in MIXTURES:
        raise QuantError(f"no mixture {mixture!r} (mixtures: {', '.join(MIXTURES)})")
    if arch not in MODEL_70B:
        raise QuantError(f"the {mixture} mixture is mirrored for architectures {', '.join(MODEL_70B)}, not {arch!r}")


def _fallback(name: str, cols: int, chosen: GGMLType) -> GGMLType:
    """tensor_type_fallback: the chosen type, or what llama.cpp stores rows of `cols` elements as instead."""
    if cols % chosen.block_size == 0:
        return chosen
    if chosen not in FALLBACKS:
        raise QuantError(f"{name}: rows of {cols} elements are not whole {chosen.block_size}-element {chosen.name} "
                         f"blocks, and llama.cpp defines no fallback from {chosen.name} (it refuses the model)")
    fallback = FALLBACKS[chosen]
    return fallback if cols % fallback.block_size == 0 else GGMLType.F16

"""llama.cpp's quantization mixtures: which GGML type each tensor of a model gets for a llama_ftype such as Q4_K_M.

Mirrors, for Q4_K_M, src/llama-quant.cpp of the llama.cpp that llama-cpp-python 0.3.36 vendors (its sdist,
vendor/llama.cpp): tensor_allows_quantization, tensor_get_category, llama_tensor_get_type_impl,
tensor_type_fallback and the counters of quantize_state_impl (init_quantize_state_counters), in
llama_model_quantize_impl's order of tensors (llama_model_loader's weights_map: by layer number, tensors outside
layers first, then by name). For the dense decoders votive runs (MODEL_70B's architectures, no experts):

    tensor (category)                            Q4_K_M type
    output.weight; token_embd.weight when tied   Q6_K; Q8_0 when its rows are not whole 256-element blocks
    (no output.weight in the file)
    attn_v, attn_qkv, attn_kv_b of the i-th      Q6_K where use_more_bits(i, n), n counting all three kinds;
    such tensor (category_is_attn_v)             else Q4_K, but Q5_K on an LLM_TYPE_70B model (MODEL_70B)
    ffn_down of layer i                          Q6_K where use_more_bits(i, block_count); else Q4_K
    everything else: token_embd untied, attn_q,  Q4_K
    attn_k, attn_output, ffn_gate, ffn_up (also
    phi3's fused gate/up), gemma3's matrices
    1-D tensors, norms, rope_factors_*/freqs     not quantized (kept as stored)

phi3's fused q/k/v (attn_qkv.weight) takes attn_v's rule: llama_tensor_get_type_impl tests category_is_attn_v
before its own ATTENTION_QKV branch (Q5_K for Q4_K_M), which that else-if chain therefore never reaches (a phi3
file from llama-quantize holds Q4_K / Q6_K attn_qkv; tests/test_q4_k_m.py). gemma3's tied embedding is the
tied token_embd row above; its q/k norms and sandwich norms end in "_norm.weight" and stay F32.

Then a matrix whose rows are not whole blocks of its type falls back (tensor_type_fallback): Q4_K -> Q5_0,
Q5_K -> Q5_1, Q6_K -> Q8_0, and any of these, Q8_0 included, to F16 when the rows are not whole 32-element
blocks either. Mixture-of-experts models are not mirrored: their rules read the expert count and tensor names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from votive.errors import QuantError
from votive.quant.ggml_types import GGMLType

# Mixture name -> (llama.h's llama_ftype, written as general.file_type; the default type of its matrices).
MIXTURES = {"q4_k_m": (15, GGMLType.Q4_K)}

# tensor_type_fallback: the type a matrix takes when its rows are not whole blocks of the one chosen. A
# 32-element type (Q8_0) has no smaller block to go to: it stays, and so goes to F16 like the others.
FALLBACKS = {GGMLType.Q4_K: GGMLType.Q5_0, GGMLType.Q5_K: GGMLType.Q5_1, GGMLType.Q6_K: GGMLType.Q8_0}

# Model types. Of the LLM_TYPE_* that llama_model_quantize_impl's model->load_hparams gives a file
# (src/models/{arch}.cpp, load_arch_hparams: a switch on the layer count), the Q4_K_M rules read only
# LLM_TYPE_70B. general.architecture -> whether (n_layers, n_heads, n_kv_heads) is one:
#   llama    80 layers with GQA (80 layers of MHA are LLM_TYPE_65B); its 8-expert table never says 70B, and
#            votive's llama holds no experts
#   qwen2    80 layers
#   qwen3    never (its table: 28, 36, 40, 64 layers)
#   phi3     never (24, 32, 40)
#   gemma3   never (18, 26, 32, 34, 48, 62)
#   smollm3  never (36)
# The rules also read hparams.n_expert (== 8), 0 here: these files hold no {arch}.expert_count. Any other
# architecture is refused (check_mixture) rather than guessed.
MODEL_70B = {
    "llama": lambda n_layers, n_heads, n_kv_heads: n_layers == 80 and n_heads != n_kv_heads,
    "qwen2": lambda n_layers, n_heads, n_kv_heads: n_layers == 80,
    "qwen3": lambda n_layers, n_heads, n_kv_heads: False,
    "phi3": lambda n_layers, n_heads, n_kv_heads: False,
    "gemma3": lambda n_layers, n_heads, n_kv_heads: False,
    "smollm3": lambda n_layers, n_heads, n_kv_heads: False,
}

# Names never quantized though 2-D (tensor_allows_quantization; the ones a decoder of these families can hold).
_KEEP = ("_norm.weight", "ffn_gate_inp.weight", "position_embd.weight", "token_types.weight")
# tensor_get_category after output / token_embd (whole names): the first substring found names the category.
_CATEGORIES = (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_kv_b"), ("attn_v.weight", "attn_v"),
               ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"), ("attn_output.weight", "attn_output"),
               ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"), ("ffn_down", "ffn_down"))
_ATTN_V_LIKE = ("attn_v", "attn_qkv", "attn_kv_b")  # category_is_attn_v: counted and typed as attn_v
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
    """tensor_get_category, by the same tests in the same order."""
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    return next((category for part, category in _CATEGORIES if part in name), "other")


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
        QuantError: a mixture or an architecture whose rules are not mirrored here.

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
    n_attention_wv = sum(1 for c in categories.values() if c in _ATTN_V_LIKE)
    tied = "output.weight" not in shapes  # has_tied_embeddings: until output.weight is seen
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
        elif category in _ATTN_V_LIKE:  # attn_qkv too: the chain's ATTENTION_QKV branch comes after this one
            if use_more_bits(i_attention_wv, n_attention_wv):
                new_type = GGMLType.Q6_K
            if is_70b and new_type == GGMLType.Q4_K:  # 8 heads share attn_v: more bits for little size
                new_type = GGMLType.Q5_K
            i_attention_wv += 1
        elif category == "ffn_down":
            if use_more_bits(i_ffn_down, model.n_layers):
                new_type = GGMLType.Q6_K
            i_ffn_down += 1
        types[name] = _fallback(cols, new_type)
    return {name: types[name] for name in shapes}


def check_mixture(mixture: str, arch: str) -> None:
    """QuantError unless `mixture` is one of MIXTURES and its rules are mirrored for `arch`."""
    if mixture not in MIXTURES:
        raise QuantError(f"no mixture {mixture!r} (mixtures: {', '.join(MIXTURES)})")
    if arch not in MODEL_70B:
        raise QuantError(f"the {mixture} mixture is mirrored for architectures {', '.join(MODEL_70B)}, not {arch!r} "
                         f"(its llama.cpp model types are not mirrored)")


def _fallback(cols: int, chosen: GGMLType) -> GGMLType:
    """tensor_type_fallback: the chosen type, or what llama.cpp stores rows of `cols` elements as instead."""
    if cols % chosen.block_size == 0:
        return chosen
    fallback = FALLBACKS.get(chosen, chosen)  # Q8_0: the check below turns it into F16
    return fallback if cols % fallback.block_size == 0 else GGMLType.F16

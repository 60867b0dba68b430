"""Convert a Hugging Face decoder folder (config.json, safetensors, tokenizer.json) into a GGUF file that
llama.cpp and votive load: `votive convert FOLDER --to model.gguf --type q8_0|f16|f32`.

What is written follows llama.cpp's convert_hf_to_gguf.py (ggml-org/llama.cpp, LlamaModel, Qwen2Model,
Qwen3Model and gguf-py's SpecialVocab), so that the file reads as if that script had made it:
- tensor names from the family's GGUF table, beside its HF table (votive/models/llama.py, qwen2.py, qwen3.py:
  one pair of tables per family, nothing renamed here);
- for `llama` (LlamaForCausalLM, MistralForCausalLM) Q and K rows permuted (LlamaModel.permute) so that ggml's
  "normal" RoPE, which turns adjacent pairs, computes transformers' rotate_half; qwen2 / qwen3 keep HF's order
  and run NEOX RoPE;
- hyperparameters under the architecture's keys; `{arch}.attention.key_length` / `value_length` only when
  config.json sets head_dim (TextModel.set_gguf_parameters); for `llama`, `llama.vocab_size` and
  `llama.rope.dimension_count`; Llama 3 ("llama3") rope scaling as the `rope_freqs.weight` tensor
  (LlamaModel.generate_extra_tensors; the factors are HFConfig.rope's, the converter's formula), linear scaling
  as `rope.scaling.type` / `rope.scaling.factor`, YaRN (llama, qwen2, qwen3) as those two keys,
  `rope.scaling.original_context_length` and the betas config.json gives (which llama.cpp does not read for
  them: `_check_yarn` refuses values other than the ones it uses, and whatever else a GGUF would lose).
  Mistral's `sliding_window` is not written: llama.cpp's converter writes no window for `llama`, and its `llama`
  graph reads none (votive/models/llama.py);
- 1-D tensors (norms, biases) and rope_freqs in F32; matrices in the asked type, and for Q8_0 a matrix whose
  rows are not whole 32-element blocks falls back to F16, as the converter does. `q4_k_m` is what llama.cpp's
  llama-quantize makes of the F32 file with Q4_K_M (no importance matrix): each matrix's type from
  votive.quant.mixtures (Q6_K for output.weight and for attn_v / ffn_down on use_more_bits layers, Q4_K
  elsewhere, Q5_0 / Q8_0 / F16 for rows not whole blocks), its blocks from votive.quant.codecs' quantizers, bit
  for bit those of ggml's quantize_row_*_ref;
- the tokenizer as a "gpt2" (byte-level BPE) vocabulary: tokens by id (gaps become `[PAD{id}]`, unused),
  types (special added tokens control, other added tokens user-defined, the rest normal), merges, the
  pre-tokenizer's llama.cpp name (PRE_TOKENIZER_NAMES: recognised from tokenizer.json's pre_tokenizer, where the
  converter hashes a sample text's ids; both name the same split), BOS / EOS / UNK / PAD ids, the chat template.
  `tokenizer.ggml.add_bos_token` is always written (what tokenizer.json's post-processor does), where
  SpecialVocab writes it only when it can tell: so the two stacks never fall back on differing defaults.
"""

from __future__ import annotations

import importlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from votive.errors import InputError, ModelConfigError
from votive.formats.gguf_write import write_gguf
from votive.formats.weights import WeightStore
from votive.models.hf_checkpoint import HFConfig, HFWeights, as_float32, check_shapes, quantize_rows
from votive.quant.ggml_types import GGMLType
from votive.quant.mixtures import MIXTURES, MixtureModel, mixture_types

# `--type` -> (GGML type of the matrices, or the default type of a llama.cpp mixture (MIXTURES) whose rules
# choose each matrix's; general.file_type: llama.h's llama_ftype).
CONVERT_TYPES = {"f32": (GGMLType.F32, 0), "f16": (GGMLType.F16, 1), "q8_0": (GGMLType.Q8_0, 7),
                 "q4_k_m": (MIXTURES["q4_k_m"][1], MIXTURES["q4_k_m"][0])}
QUANTIZATION_VERSION = 2  # general.quantization_version, GGML_QNT_VERSION

# config.json `architectures` -> (general.architecture, module with the weight tables and Config, permute Q/K).
ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", "votive.models.llama", True),
    "MistralForCausalLM": ("llama", "votive.models.llama", True),
    "Qwen2ForCausalLM": ("qwen2", "votive.models.qwen2", False),
    "Qwen3ForCausalLM": ("qwen3", "votive.models.qwen3", False),
    "Phi3ForCausalLM": ("phi3", "votive.models.phi3", False),
    "Gemma3ForCausalLM": ("gemma3", "votive.models.gemma", False),
}
# rope_scaling types each architecture's GGUF expresses: Llama 3's as rope_freqs.weight, linear as two keys,
# longrope as phi3's two factor tensors and its attention factor (Phi3Config reads "su" as longrope).
CONVERTED_SCALING = {"llama": ("default", "linear", "llama3", "yarn"), "qwen2": ("default", "yarn"),
                     "qwen3": ("default", "yarn"),
                     "phi3": ("default", "longrope", "su"), "gemma3": ("default", "linear")}
GEMMA3_LOCAL_BASE = 10000.0  # llama.cpp fixes Gemma 3's sliding-window RoPE base (rope_freq_base_train_swa)
GEMMA3_SWA_PATTERN = 6  # and its layout: every sixth layer global
# Tensors a checkpoint may hold that the converter drops (transformers recomputes them).
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)

# llama.cpp's tokenizer.ggml.pre name for a tokenizer.json pre_tokenizer, keyed by its shape (_pre_key): the
# regexes llama.cpp's llm_tokenizer_bpe uses for that name split text as this pre_tokenizer does.
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZER_NAMES = {
    ("ByteLevel+regex",): "gpt-2",  # GPT-2's own regex inside ByteLevel
    ("Digits(individual)", "ByteLevel+regex"): "smollm",  # SmolLM / StarCoder: each digit alone, then GPT-2's
    ("Split:" + _LLAMA3_SPLIT, "ByteLevel"): "llama-bpe",  # Llama 3
    ("Split:" + _LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}"), "ByteLevel"): "qwen2",  # Qwen2 / 2.5 / 3
}
TOKEN_TYPES = {"normal": 1, "control": 3, "user_defined": 4, "unused": 5}  # llama_token_type / gguf-py TokenType


@dataclass(frozen=True)
class ConvertResult:
    """What `convert_folder` wrote."""

    path: Path  # the GGUF file
    architecture: str  # general.architecture
    type_name: str  # the --type asked for ("q8_0", ...)
    folder_bytes: int  # the folder's safetensors files
    gguf_bytes: int  # the file written
    fallbacks: dict[str, str]  # matrix -> the type it is stored as, its rows not whole blocks of the asked type
    types: dict[str, str]  # every tensor written -> its GGML type name


def convert_type(name: str, flag: str = "--type") -> tuple[GGMLType, int]:
    """(matrix type, general.file_type) for `{flag} name`; InputError naming the choices otherwise."""
    if name not in CONVERT_TYPES:
        raise InputError(f"{flag} {name!r} is not a choice (choices: {', '.join(CONVERT_TYPES)})")
    return CONVERT_TYPES[name]


def convert_folder(folder, out, type_name: str = "q8_0", *, overwrite: bool = False) -> ConvertResult:
    """Write the Hugging Face decoder in `folder` as a GGUF file at `out` (a BERT encoder folder goes to
    votive.builders.gguf_convert_bert.convert_bert_folder).

    Args:
        folder (str or Path): config.json, model.safetensors (or shards and their index), tokenizer.json,
            tokenizer_config.json.
        out (str or Path): the GGUF file to write; it appears only once complete.
        type_name (str): "q8_0", "f16" or "f32": the type of the matrices; or "q4_k_m": llama.cpp's mixture
            (CONVERT_TYPES).
        overwrite (bool): replace an existing `out`.

    Returns:
        ConvertResult.

    Raises:
        InputError: a bad type_name, or `out` exists and overwrite is False.
        ModelConfigError: an architecture, rope setting, tensor or tokenizer the converter cannot write.
        QuantError: q4_k_m of an architecture whose mixture rules are not mirrored (votive.quant.mixtures).
        WeightFileError: a malformed safetensors file.

    Example:
        >>> convert_folder("Qwen2.5-0.5B-Instruct", "qwen.gguf", "q8_0").gguf_bytes  # doctest: +SKIP
    """
    folder, out = Path(folder), Path(out)
    matrix_type, file_type = convert_type(type_name)
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --force (overwrite=True) to replace it")
    from votive.builders.gguf_convert_bert import convert_bert_folder, is_bert_folder

    if is_bert_folder(folder):  # an embedding encoder: llama.cpp's `bert` layout (its own module)
        return convert_bert_folder(folder, out, type_name, overwrite=overwrite)
    hf = HFConfig(folder)
    if hf.architecture not in ARCHITECTURES:
        raise ModelConfigError(f"{hf.path}: architecture {hf.architecture!r} cannot be converted (supported: "
                               f"{', '.join(ARCHITECTURES)})")
    arch, module_name, permute = ARCHITECTURES[hf.architecture]
    family = importlib.import_module(module_name)
    if arch in ("qwen2", "qwen3"):
        hf.refuse("use_sliding_window", (False,))
    # refuses what the family cannot run, naming the key
    cfg = family.Config.from_hf(hf, longrope=True) if arch == "phi3" else family.Config.from_hf(hf)
    scaling = _rope_scaling(hf)
    if scaling["kind"] not in CONVERTED_SCALING[arch]:
        raise ModelConfigError(f"{hf.path}: rope_scaling type {scaling['kind']!r} is not converted for {arch} "
                               f"(its GGUF expresses {', '.join(CONVERTED_SCALING[arch])})")
    if scaling["kind"] == "yarn":
        _check_yarn(hf, cfg, scaling["settings"], scaling["where"])
    if arch == "gemma3":
        _check_gemma3(hf, cfg)
    store = WeightStore(folder)
    tied = bool(hf.get("tie_word_embeddings", False))
    check_shapes(HFWeights(store), cfg, family.HF_WEIGHTS, family.HF_LAYER_WEIGHTS, tied)

    metadata = _model_metadata(hf, cfg, arch, file_type, folder.name, scaling)
    metadata.update(_tokenizer_metadata(folder, hf, cfg.vocab_size))
    tensors: dict[str, object] = {}
    rope = cfg.rope
    if arch == "llama" and rope.freq_factors is not None:
        tensors["rope_freqs.weight"] = np.asarray(rope.freq_factors, np.float32)  # (head_dim / 2,)
    if arch == "phi3" and rope.long_factors is not None:  # (n_rot / 2,) each, as Phi3MiniModel writes them
        tensors["rope_factors_long.weight"] = np.asarray(rope.long_factors, np.float32)
        tensors["rope_factors_short.weight"] = np.asarray(rope.freq_factors, np.float32)
    names = _tensor_names(store, cfg, family, tied)
    plus_one = getattr(family, "HF_NORM_OFFSET", ())  # Gemma's x * (1 + w) norms: the converter stores 1 + w
    shapes = {gguf_name: tuple(store.raw(hf_name).shape) for gguf_name, (hf_name, _, _) in names.items()}
    if type_name in MIXTURES:  # one type per tensor, as llama.cpp's quantizer chooses them; None: kept F32
        chosen = mixture_types(type_name, MixtureModel(arch, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads), shapes)
    else:
        chosen = {name: _uniform_type(shape, matrix_type) for name, shape in shapes.items()}
    fallbacks, types = {}, {name: "F32" for name in tensors}
    for gguf_name, (hf_name, heads, ours) in names.items():
        data = as_float32(store.raw(hf_name), store.dtype_of(hf_name))  # exact; HFWeights refused other dtypes
        if heads and permute:
            data = permute_qk(data, heads)
        if ours in plus_one:
            data = data + np.float32(1)  # in float32, as transformers' Gemma3RMSNorm adds it
        ggml_type = chosen[gguf_name] or GGMLType.F32
        tensors[gguf_name] = _store(data, ggml_type)
        types[gguf_name] = ggml_type.name
        if data.ndim == 2 and matrix_type != GGMLType.F32 and data.shape[1] % matrix_type.block_size:
            fallbacks[gguf_name] = ggml_type.name
    meta_types = {"tokenizer.ggml.merges": "arr[str]"}  # an empty list needs its element type spelled out
    from votive.builders.gguf_convert_retrieval import retrieval_extras  # an embedder's or reranker's keys

    def lm_head():  # (vocab, D) float32: what a reranker's yes / no rows are cut from
        name = family.HF_WEIGHTS["tok_embed" if tied else "output"]
        return as_float32(store.raw(name), store.dtype_of(name))

    extra_meta, extra_types, extra_tensors = retrieval_extras(folder, arch, lm_head)
    metadata.update(extra_meta)
    meta_types.update(extra_types)
    tensors.update(extra_tensors)
    types.update(dict.fromkeys(extra_tensors, "F32"))
    write_gguf(out, metadata, tensors, metadata_types=meta_types, overwrite=overwrite)
    folder_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return ConvertResult(out, arch, type_name, folder_bytes, out.stat().st_size, fallbacks, types)


# ------------------------------------------------------------------------------------------------ tensors
def permute_qk(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's LlamaModel.permute: (heads * head_dim, cols) rows of each head reordered from rotate_half's
    pairs (i, i + head_dim / 2) to adjacent pairs (2i, 2i + 1), which ggml's "normal" RoPE turns."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _tensor_names(store: WeightStore, cfg, family, tied: bool) -> dict[str, tuple[str, int, str]]:
    """GGUF name -> (HF name, heads to permute by for Q / K else 0, our name), in the converter's order
    (embedding, layers, final norm, output); a checkpoint tensor no table names is refused, naming it."""
    names = {}
    for ours, theirs in family.HF_WEIGHTS.items():
        if ours == "output" and tied:
            continue
        names[family.WEIGHTS[ours]] = (theirs, 0, ours)
    for i in range(cfg.n_layers):
        for ours, theirs in family.HF_LAYER_WEIGHTS.items():
            heads = {"wq": cfg.n_heads, "wk": cfg.n_kv_heads}.get(ours, 0)
            names[family.LAYER_WEIGHTS[ours].format(i=i)] = (theirs.format(i=i), heads, ours)
    wanted = {hf_name for hf_name, _, _ in names.values()}
    for name in store.keys():
        if name not in wanted and not name.endswith(IGNORED_SUFFIXES):
            raise ModelConfigError(f"{store.path}: tensor {name!r} has no GGUF name in the "
                                   f"{family.__name__} tables; the converter cannot write it")
    for hf_name in wanted:
        if hf_name not in store:
            raise ModelConfigError(f"{store.path}: missing tensor {hf_name!r}")
    return names


def _uniform_type(shape: tuple[int, ...], matrix_type: GGMLType) -> GGMLType | None:
    """A tensor's type for --type f32 / f16 / q8_0: 1-D tensors kept (F32), matrices `matrix_type`, and a Q8_0
    matrix whose rows are not whole 32-element blocks F16, as llama.cpp's converter does."""
    if len(shape) < 2:
        return None
    return GGMLType.F16 if shape[1] % matrix_type.block_size else matrix_type


def _store(data: np.ndarray, ggml_type: GGMLType) -> object:
    """What write_gguf takes for one tensor of `ggml_type`: float32 for F32, float16 by numpy's
    round-to-nearest-even (as gguf-py), else blocks by votive's quantizer, bit-exact with ggml's
    quantize_row_*_ref."""
    if ggml_type == GGMLType.F32:
        return np.ascontiguousarray(data, np.float32)
    if ggml_type == GGMLType.F16:
        return data.astype(np.float16)
    return (ggml_type.name, quantize_rows(data, "F32", ggml_type))


# ----------------------------------------------------------------------------------------------- metadata
def _rope_scaling(hf) -> dict:
    """{"kind": rope type, "factor": float or None}, as HFConfig.rope_scaling reads them."""
    _, scaling, where, kind = hf.rope_scaling()
    return {"kind": kind, "factor": scaling.get("factor"), "settings": scaling, "where": where}


def _check_yarn(hf, cfg, settings: dict, where: str) -> None:
    """Refuse YaRN settings a llama / qwen2 / qwen3 GGUF cannot carry. llama.cpp's converter writes the type, the
    factor (none: no YaRN at all), the original context and the betas, attention factor and extrapolation factor
    given, but its loader reads only the first three for these architectures (beta_fast 32, beta_slow 1 and its
    own attention factor in place of the rest; votive.models.rope_scaling): a folder's other betas,
    attention_factor, mscale / mscale_all_dim pair or untruncated ramp would be lost. And ggml's ramp bounds,
    float32, must be the ones transformers computes in double (HFConfig._yarn)."""
    from votive.models.rope_scaling import yarn_corr_dims

    where = f"{hf.path}: {where}"
    if settings.get("factor") is None:
        raise ModelConfigError(f"{where}.factor is absent: llama.cpp's converter writes no YaRN without it")
    for key, used in (("beta_fast", 32), ("beta_slow", 1)):
        if settings.get(key) is not None and settings[key] != used:
            raise ModelConfigError(f"{where}.{key} = {settings[key]!r} cannot be written to a GGUF (llama.cpp reads "
                                   f"no YaRN betas for this architecture and uses {used})")
    if settings.get("attention_factor") is not None:
        raise ModelConfigError(f"{where}.attention_factor = {settings['attention_factor']!r} cannot be written to a "
                               f"GGUF (llama.cpp computes YaRN's attention factor from the factor alone)")
    if settings.get("mscale") and settings.get("mscale_all_dim"):
        raise ModelConfigError(f"{where}.mscale / mscale_all_dim cannot be written to a GGUF (llama.cpp computes "
                               f"YaRN's attention factor from the factor alone)")
    if settings.get("truncate", True) is not True:
        raise ModelConfigError(f"{where}.truncate = {settings['truncate']!r} cannot be written to a GGUF (ggml "
                               f"always truncates YaRN's ramp)")
    rope = cfg.rope
    ggml = yarn_corr_dims(cfg.head_dim, rope.original_context, float(np.float32(rope.base)))
    if ggml != rope.corr_dims:
        raise ModelConfigError(f"{where}: YaRN's ramp runs over pairs {rope.corr_dims} in transformers but "
                               f"{ggml} in ggml's float32 arithmetic")


def _model_metadata(hf, cfg, arch: str, file_type: int, name: str, scaling: dict) -> dict:
    """general.* and {arch}.* keys, in the order the converter writes them."""
    meta = {
        "general.architecture": arch,
        "general.name": name,
        f"{arch}.block_count": cfg.n_layers,
        f"{arch}.context_length": cfg.train_ctx,
        f"{arch}.embedding_length": cfg.dim,
        f"{arch}.feed_forward_length": cfg.ffn_dim,
        f"{arch}.attention.head_count": cfg.n_heads,
        f"{arch}.attention.head_count_kv": cfg.n_kv_heads,
        f"{arch}.rope.freq_base": np.float32(cfg.rope_base),
        f"{arch}.attention.layer_norm_rms_epsilon": np.float32(cfg.norm_eps),
    }
    if hf.get("head_dim") is not None:
        meta[f"{arch}.attention.key_length"] = cfg.head_dim
        meta[f"{arch}.attention.value_length"] = cfg.head_dim
    meta["general.file_type"] = file_type
    if arch == "llama":
        meta["llama.vocab_size"] = cfg.vocab_size
        meta["llama.rope.dimension_count"] = cfg.head_dim
    if scaling["kind"] == "linear":
        meta[f"{arch}.rope.scaling.type"] = "linear"
        meta[f"{arch}.rope.scaling.factor"] = np.float32(scaling["factor"])
    if scaling["kind"] == "yarn":  # TextModel.set_gguf_parameters; _check_yarn refused what a GGUF loses
        meta[f"{arch}.rope.scaling.type"] = "yarn"
        meta[f"{arch}.rope.scaling.factor"] = np.float32(scaling["factor"])
        meta[f"{arch}.rope.scaling.original_context_length"] = cfg.rope.original_context
        for key in ("beta_fast", "beta_slow"):
            if scaling["settings"].get(key) is not None:
                meta[f"{arch}.rope.scaling.yarn_{key}"] = np.float32(scaling["settings"][key])
    if arch == "phi3":  # Phi3MiniModel: the turned dims, longrope's context and attention factor, the window
        meta["phi3.rope.dimension_count"] = cfg.rope.n_rot or cfg.head_dim
        if cfg.rope.scaling_type == "longrope":
            meta["phi3.rope.scaling.attn_factor"] = np.float32(cfg.rope.attn_factor)
            meta["phi3.rope.scaling.original_context_length"] = cfg.rope.original_context
        if hf.get("sliding_window"):
            meta["phi3.attention.sliding_window"] = hf.get("sliding_window")
    if arch == "gemma3":
        meta["gemma3.attention.sliding_window"] = cfg.sliding_window
    meta["general.quantization_version"] = QUANTIZATION_VERSION
    return meta


def _check_gemma3(hf, cfg) -> None:
    """Refuse what a gemma3 GGUF cannot say: llama.cpp fixes the local RoPE base, the layout, and the query
    scale (1/sqrt(head_dim), but 1/sqrt(dim / heads) for 62 layers)."""
    if cfg.rope_base_local != GEMMA3_LOCAL_BASE:
        raise ModelConfigError(f"{hf.path}: rope_local_base_freq = {cfg.rope_base_local} cannot be written to a "
                               f"gemma3 GGUF (llama.cpp uses {GEMMA3_LOCAL_BASE})")
    if cfg.swa_pattern != GEMMA3_SWA_PATTERN:
        raise ModelConfigError(f"{hf.path}: one global layer every {cfg.swa_pattern} cannot be written to a gemma3 "
                               f"GGUF (llama.cpp lays out one every {GEMMA3_SWA_PATTERN})")
    implied = 1.0 / math.sqrt(cfg.dim / cfg.n_heads if cfg.n_layers == 62 else cfg.head_dim)
    if not math.isclose(cfg.attn_scale, implied, rel_tol=1e-9):
        raise ModelConfigError(f"{hf.path}: query_pre_attn_scalar gives a query scale llama.cpp does not derive "
                               f"for this shape")


def _pre_key(pre) -> tuple[str, ...]:
    """A tokenizer.json pre_tokenizer as a tuple of its steps' shapes (the keys of PRE_TOKENIZER_NAMES)."""
    steps = pre.get("pretokenizers", []) if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    key = []
    for step in steps:
        kind = step.get("type") if isinstance(step, dict) else None
        if kind == "ByteLevel":
            key.append("ByteLevel+regex" if step.get("use_regex", True) else "ByteLevel")
        elif kind == "Digits":
            key.append("Digits(individual)" if step.get("individual_digits") else "Digits")
        elif kind == "Split":
            pattern = step.get("pattern", {})
            key.append("Split:" + str(pattern.get("Regex", pattern.get("String"))))
        else:
            key.append(str(kind))
    return tuple(key)


def _tokenizer_metadata(folder: Path, hf, vocab_size: int) -> dict:
    """tokenizer.* keys for a byte-level BPE tokenizer.json, as _set_vocab_gpt2 and SpecialVocab write them."""
    path = folder / "tokenizer.json"
    try:
        spec = json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{path}: cannot read JSON ({e})") from None
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise ModelConfigError(f"{path}: model.type is {model.get('type')!r}; the converter writes byte-level BPE "
                               f"('gpt2') vocabularies only")
    pre_key = _pre_key(spec.get("pre_tokenizer"))
    if pre_key not in PRE_TOKENIZER_NAMES:
        raise ModelConfigError(f"{path}: pre_tokenizer {' + '.join(pre_key)} has no llama.cpp name the converter "
                               f"knows (known: {', '.join(sorted(PRE_TOKENIZER_NAMES.values()))})")
    by_id: dict[int, tuple[str, int]] = {i: (t, TOKEN_TYPES["normal"]) for t, i in model["vocab"].items()}
    for added in spec.get("added_tokens") or []:
        kind = TOKEN_TYPES["control"] if added.get("special") else TOKEN_TYPES["user_defined"]
        by_id[added["id"]] = (added["content"], kind)
    if by_id and max(by_id) >= vocab_size:
        raise ModelConfigError(f"{path}: token id {max(by_id)} is past config.json vocab_size = {vocab_size}")
    tokens, types = [], []
    for i in range(vocab_size):
        text, kind = by_id.get(i, (f"[PAD{i}]", TOKEN_TYPES["unused"]))
        tokens.append(text)
        types.append(kind)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": PRE_TOKENIZER_NAMES[pre_key],
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.asarray(types, np.int32),
        "tokenizer.ggml.merges": merges,
    }
    meta.update(_special_ids(folder, hf, spec, {t: i for i, (t, _) in by_id.items()}))
    return meta


def _special_ids(folder: Path, hf, spec: dict, ids: dict[str, int]) -> dict:
    """BOS / EOS / UNK / PAD ids (tokenizer_config.json's token texts, else config.json's ids), whether BOS / EOS
    are added (tokenizer.json's TemplateProcessing), and the chat template."""
    config_path = folder / "tokenizer_config.json"
    try:
        config = json.loads(config_path.read_bytes()) if config_path.is_file() else {}
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{config_path}: cannot read JSON ({e})") from None
    meta = {}
    for kind in ("bos", "eos", "unk", "pad"):
        text = config.get(f"{kind}_token")
        text = text.get("content") if isinstance(text, dict) else text
        token_id = ids.get(text) if isinstance(text, str) else None
        if token_id is None:
            value = hf.get(f"{kind}_token_id")
            token_id = value[0] if isinstance(value, list) and value else value
        if isinstance(token_id, int) and not isinstance(token_id, bool):
            meta[f"tokenizer.ggml.{kind}_token_id"] = token_id
    post = spec.get("post_processor") or {}
    single = post.get("single", []) if post.get("type") == "TemplateProcessing" else []
    pieces = ["A" if "Sequence" in p else "special" for p in single]
    meta["tokenizer.ggml.add_bos_token"] = bool(pieces) and pieces[0] == "special"
    meta["tokenizer.ggml.add_eos_token"] = bool(pieces) and pieces[-1] == "special"
    template = config.get("chat_template")
    if not isinstance(template, str) and (folder / "chat_template.jinja").is_file():
        template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
    if isinstance(template, str):
        meta["tokenizer.chat_template"] = template
    return meta

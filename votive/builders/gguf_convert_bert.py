"""Convert a Hugging Face BERT encoder folder (config.json model_type "bert", safetensors, a WordPiece
tokenizer, sentence-transformers' modules.json) into a llama.cpp `bert` GGUF file that llama.cpp and votive embed
with: `votive convert FOLDER --to model.gguf --type q8_0|f16|f32` (votive.builders.gguf_convert hands encoder
folders here), and what `votive build lambda FOLDER --quantize q8_0` packs for an encoder.

What is written follows llama.cpp's convert_hf_to_gguf.py (ggml-org/llama.cpp @ c392e50: BertModel,
Model.set_gguf_parameters and prepare_tensors, gguf-py's SpecialVocab), so that the file reads as if that script
had made it:
- tensor names from votive/models/bert.py's GGUF table, beside its Hugging Face one (nothing renamed here); the
  [CLS] pooler, MLM heads and the position_ids buffer dropped, as the converter drops them;
- `bert.*` hyperparameters (block_count, context_length = max_position_embeddings, embedding_length,
  feed_forward_length, attention.head_count, attention.layer_norm_epsilon), `bert.attention.causal` false, and
  `bert.pooling_type` from 1_Pooling/config.json (MEAN 1 when pooling_mode_mean_tokens, else CLS 2; another
  pooling, or none, is refused: the GGUF would embed differently). A Normalize module is not recorded: a GGUF
  has no key for it, and llama.cpp returns the pooled vector unnormalised;
- norms, biases, `position_embd` and `token_types` in F32; the token table and the layers' matrices in the asked
  type (for Q8_0 a matrix whose rows are not whole blocks falls back to F16, as the converter does);
- the vocabulary in the converter's phantom-space form (`##x` -> `x`, a word-initial `x` -> `▁x`, `[...]`
  unchanged), token types (special added tokens control, other added tokens user-defined, the rest normal, gaps
  `[PAD{id}]` unused), `tokenizer.ggml.token_type_count`, and the special ids; `tokenizer.ggml.bos_token_id` is
  [CLS] (llama.cpp puts BOS first in a "bert" vocabulary and defaults it to 101, bert-base's [CLS], so a
  vocabulary with another [CLS] id needs it written).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from votive.builders.gguf_convert import (QUANTIZATION_VERSION, TOKEN_TYPES, ConvertResult, _store, _uniform_type,
                                         convert_type)
from votive.errors import InputError, ModelConfigError
from votive.formats.gguf_write import write_gguf
from votive.formats.weights import WeightStore
from votive.models import bert
from votive.models.hf_checkpoint import as_float32
from votive.quant.ggml_types import GGMLType

# --type choices for an encoder: one type for every matrix (q4_k_m is a decoder's mixture of types).
UNIFORM_TYPES = ("f32", "f16", "q8_0")
# Our names stored F32 whatever the type asked for (prepare_tensors: POS_EMBD, TOKEN_TYPES; 1-D tensors).
ALWAYS_F32 = ("pos_embed", "type_embed")
# sentence-transformers pooling flag -> llama.cpp's llama_pooling_type, in the order the converter checks them.
POOLING_TYPES = {"pooling_mode_mean_tokens": 1, "pooling_mode_cls_token": 2}
# tokenizer_config.json token -> GGUF key (gguf-py SpecialVocab's names).
SPECIAL_KEYS = {"unk": "tokenizer.ggml.unknown_token_id", "sep": "tokenizer.ggml.seperator_token_id",
                "pad": "tokenizer.ggml.padding_token_id", "cls": "tokenizer.ggml.cls_token_id",
                "mask": "tokenizer.ggml.mask_token_id"}


def is_bert_folder(folder) -> bool:
    """Whether `folder`'s config.json names a BERT encoder (model_type "bert" and no ...ForCausalLM class)."""
    try:
        raw = json.loads((Path(folder) / "config.json").read_bytes())
    except (OSError, ValueError):
        return False
    archs = raw.get("architectures") if isinstance(raw, dict) else None
    causal = isinstance(archs, list) and any(str(a).endswith("ForCausalLM") for a in archs)
    return isinstance(raw, dict) and raw.get("model_type", "") == "bert" and not causal


def convert_bert_folder(folder, out, type_name: str = "q8_0", *, overwrite: bool = False) -> ConvertResult:
    """Write the BERT encoder in `folder` as a llama.cpp `bert` GGUF file at `out` (see the module docstring).

    Args:
        folder (str or Path): config.json, model.safetensors, tokenizer.json or vocab.txt, modules.json with a
            Pooling module.
        out (str or Path): the GGUF file to write; it appears only once complete.
        type_name (str): "q8_0", "f16" or "f32": the type of the token table and the layers' matrices.
        overwrite (bool): replace an existing `out`.

    Returns:
        ConvertResult (architecture "bert").

    Raises:
        InputError: a bad type_name, or `out` exists and overwrite is False.
        ModelConfigError: a config, pooling, tensor or vocabulary the converter cannot write.
    """
    folder, out = Path(folder), Path(out)
    matrix_type, file_type = convert_type(type_name)
    if type_name not in UNIFORM_TYPES:
        raise InputError(f"--type {type_name} is a llama.cpp mixture for decoders; a BERT encoder converts to "
                         f"{', '.join(UNIFORM_TYPES)}")
    if out.exists() and not overwrite:
        raise InputError(f"{out} already exists; pass --force (overwrite=True) to replace it")
    cfg = bert.Config.from_json(folder / "config.json")  # refuses what BertModel cannot run, naming the key
    store = WeightStore(folder)
    metadata = {
        "general.architecture": "bert",
        "general.name": folder.name,
        "bert.block_count": cfg.num_hidden_layers,
        "bert.context_length": cfg.max_position_embeddings,
        "bert.embedding_length": cfg.hidden_size,
        "bert.feed_forward_length": cfg.intermediate_size,
        "bert.attention.head_count": cfg.num_attention_heads,
        "bert.attention.layer_norm_epsilon": np.float32(cfg.layer_norm_eps),
        "general.file_type": file_type,
        "bert.attention.causal": False,
        "bert.pooling_type": _pooling_type(folder),
    }
    metadata.update(_vocabulary(folder, cfg))
    metadata["general.quantization_version"] = QUANTIZATION_VERSION
    types = {"bert.pooling_type": "u32", **{key: "u32" for key in metadata if key.endswith("_token_id")},
             "tokenizer.ggml.token_type_count": "u32"}

    tensors, fallbacks, stored_types = {}, {}, {}
    for gguf_name, (ours, hf_name) in _tensor_names(store, cfg).items():
        data = as_float32(store.raw(hf_name), store.dtype_of(hf_name))  # exact
        ggml_type = GGMLType.F32 if ours in ALWAYS_F32 else _uniform_type(data.shape, matrix_type) or GGMLType.F32
        tensors[gguf_name] = _store(data, ggml_type)
        stored_types[gguf_name] = ggml_type.name
        if data.ndim == 2 and ours not in ALWAYS_F32 and data.shape[1] % matrix_type.block_size:
            fallbacks[gguf_name] = ggml_type.name
    write_gguf(out, metadata, tensors, metadata_types=types, overwrite=overwrite)
    folder_bytes = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    return ConvertResult(out, "bert", type_name, folder_bytes, out.stat().st_size, fallbacks, stored_types)


def _tensor_names(store: WeightStore, cfg) -> dict[str, tuple[str, str]]:
    """GGUF name -> (our name, checkpoint name), embeddings then layers, every shape checked against config.json;
    a checkpoint tensor the encoder does not use (beyond bert.UNUSED_PREFIXES) is refused, naming it."""
    prefix = bert.checkpoint_prefix(store)
    shapes = bert._weight_shapes(cfg)
    names = {}
    pairs = [(ours, bert.GGUF_WEIGHTS[ours], theirs) for ours, theirs in bert.WEIGHTS.items()]
    for i in range(cfg.num_hidden_layers):
        pairs += [(ours, bert.GGUF_LAYER_WEIGHTS[ours].format(i=i), theirs.format(i=i))
                  for ours, theirs in bert.LAYER_WEIGHTS.items()]
    for ours, gguf_name, theirs in pairs:
        hf_name = bert._lookup(store, prefix + theirs)
        if hf_name not in store:
            raise ModelConfigError(f"{store.path}: missing tensor {hf_name!r}")
        shape = tuple(store.raw(hf_name).shape)
        if shape != shapes[ours]:
            raise ModelConfigError(f"{store.path}: tensor {hf_name!r} has shape {shape}, expected {shapes[ours]} "
                                   "from config.json")
        names[gguf_name] = (ours, hf_name)
    used = {hf_name for _, hf_name in names.values()}
    for name in store.keys():
        if name not in used and not name.removeprefix(prefix).startswith(bert.UNUSED_PREFIXES):
            raise ModelConfigError(f"{store.path}: tensor {name!r} has no GGUF name in votive.models.bert's "
                                   "tables; the converter cannot write it")
    return names


def _pooling_type(folder: Path) -> int:
    """bert.pooling_type from modules.json's Pooling module (MEAN before CLS, as the converter checks)."""
    modules_path = folder / "modules.json"
    modules = _json(modules_path) if modules_path.is_file() else []
    pooling = next((m for m in modules if isinstance(m, dict) and m.get("type") == "sentence_transformers.models"
                    ".Pooling"), None)
    if pooling is None:
        raise ModelConfigError(f"{folder}: no sentence-transformers Pooling module (modules.json); the GGUF's "
                               "bert.pooling_type would be unset and llama.cpp would not pool")
    settings = _json(folder / pooling.get("path", "") / "config.json")
    for flag, kind in POOLING_TYPES.items():
        if settings.get(flag):
            return kind
    raise ModelConfigError(f"{folder}: its pooling is neither mean nor CLS; llama.cpp's bert.pooling_type has "
                           "no other sentence-embedding pooling the converter writes")


def _vocabulary(folder: Path, cfg) -> dict:
    """tokenizer.* keys: the WordPiece vocabulary of tokenizer.json (else vocab.txt) in phantom-space form."""
    spec_path = folder / "tokenizer.json"
    vocab, added = {}, []
    if spec_path.is_file():
        spec = _json(spec_path)
        model = spec.get("model") or {}
        if model.get("type") != "WordPiece" or not isinstance(model.get("vocab"), dict):
            raise ModelConfigError(f"{spec_path}: model.type is {model.get('type')!r}; a BERT GGUF holds a "
                                   "WordPiece vocabulary")
        vocab, added = dict(model["vocab"]), spec.get("added_tokens") or []
    elif (folder / "vocab.txt").is_file():
        lines = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        vocab = {line.rstrip("\r"): i for i, line in enumerate(lines) if line.rstrip("\r")}
    else:
        raise ModelConfigError(f"{folder}: no tokenizer.json or vocab.txt")
    by_id = {i: (text, TOKEN_TYPES["normal"]) for text, i in vocab.items()}
    for token in added:
        kind = TOKEN_TYPES["control"] if token.get("special") else TOKEN_TYPES["user_defined"]
        by_id[token["id"]] = (token["content"], kind)
    if by_id and max(by_id) >= cfg.vocab_size:
        raise ModelConfigError(f"{folder}: token id {max(by_id)} is past config.json vocab_size = {cfg.vocab_size}")
    tokens, types = [], []
    for i in range(cfg.vocab_size):
        text, kind = by_id.get(i, (f"[PAD{i}]", TOKEN_TYPES["unused"]))
        tokens.append(phantom(text))
        types.append(kind)
    meta = {
        "tokenizer.ggml.token_type_count": cfg.type_vocab_size,
        "tokenizer.ggml.model": "bert",
        "tokenizer.ggml.pre": "default",  # llama.cpp reads no pre-tokenizer for a WPM vocabulary
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": np.asarray(types, np.int32),
    }
    ids = {text: i for i, (text, _) in by_id.items()}
    config_path = folder / "tokenizer_config.json"
    config = _json(config_path) if config_path.is_file() else {}
    defaults = {"unk": "[UNK]", "sep": "[SEP]", "pad": "[PAD]", "cls": "[CLS]", "mask": "[MASK]"}
    for kind, key in SPECIAL_KEYS.items():
        text = config.get(f"{kind}_token", defaults[kind])
        text = text.get("content") if isinstance(text, dict) else text
        if isinstance(text, str) and text in ids:
            meta[key] = ids[text]
    if "tokenizer.ggml.cls_token_id" not in meta or "tokenizer.ggml.seperator_token_id" not in meta:
        raise ModelConfigError(f"{folder}: the vocabulary has no [CLS] or no [SEP] token; llama.cpp puts both "
                               "around every text")
    meta["tokenizer.ggml.bos_token_id"] = meta["tokenizer.ggml.cls_token_id"]
    meta["tokenizer.ggml.add_bos_token"] = True
    meta["tokenizer.ggml.add_eos_token"] = False
    return meta


def phantom(token: str) -> str:
    """convert_hf_to_gguf.py BertModel.set_vocab's phantom(): `##x` -> `x`, `x` -> `▁x`, `[...]` unchanged."""
    if token.startswith("[") and token.endswith("]"):
        return token
    if token.startswith("##"):
        return token[2:]
    return "\u2581" + token


def _json(path: Path):
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError) as e:
        raise ModelConfigError(f"{path}: cannot read JSON ({e})") from None

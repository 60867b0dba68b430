"""What a model's settings and outputs must satisfy, checked where it costs nothing proportional to the weights.

Model files are untrusted: a head count of 0 or "8", a negative norm epsilon or NaN norm weights must not turn
into a ZeroDivisionError, a reshape error at the first request, or NaN logits that decode to an empty answer with
status 200. At load, every number in a family's config is checked for type and range (`setting`, `check_fields`)
and a decoder's shapes against its tensors (`check_gguf_decoder`), each failure a ModelConfigError naming the
key; the small 1-D tensors (norms, biases) are checked for NaN and infinity. The large matrices cannot be scanned
at load cheaply, so the outputs are checked instead at run time (`check_finite`: a NumericalError, HTTP 500).
"""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np

from votive.errors import ModelConfigError, NumericalError

REQUIRED = object()  # `setting`'s default: the key must be present

# llama.Config (and its families' subclasses) field -> the GGUF key it comes from, `{arch}` for the architecture.
DECODER_GGUF_KEYS = {
    "n_layers": "{arch}.block_count",
    "dim": "{arch}.embedding_length",
    "ffn_dim": "{arch}.feed_forward_length",
    "n_heads": "{arch}.attention.head_count",
    "n_kv_heads": "{arch}.attention.head_count_kv",
    "head_dim": "{arch}.attention.key_length",
    "rope_base": "{arch}.rope.freq_base",
    "norm_eps": "{arch}.attention.layer_norm_rms_epsilon",
    "train_ctx": "{arch}.context_length",
    "vocab_size": "the rows of token_embd.weight",
    "window": "{arch}.attention.sliding_window",
    "sliding_window": "{arch}.attention.sliding_window",
    "swa_pattern": "{arch}.attention.sliding_window_pattern",
    "rope_base_local": "{arch}.rope.freq_base_swa",
    "attn_scale": "the query scale (from {arch}.attention.key_length)",
}
# Fields that may be 0 (the others, integers and floats alike, must be positive): "no window", "no token types".
ZERO_OK = frozenset({"window", "sliding_window", "type_vocab_size"})


def check_number(value, kind: type, name: str, where, *, low=None, positive: bool = False):
    """`value` as `kind` (int refuses bool; float takes an int and must be finite), at least `low`, above 0 when
    `positive`; else ModelConfigError "{where}: {name} is {value!r}, expected ..."."""
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
        ok = math.isfinite(number)
    else:
        number = value
        ok = isinstance(value, kind) and not isinstance(value, bool)
    expected = "a finite number" if kind is float else f"an {kind.__name__}"
    if ok and positive:
        ok, expected = number > 0, f"{expected} above 0"
    if ok and low is not None:
        ok, expected = number >= low, f"{expected} of at least {low}"
    if not ok:
        raise ModelConfigError(f"{where}: {name} is {value!r}, expected {expected}")
    return number


def setting(source, key: str, kind: type = int, *, default=REQUIRED, low=None, positive: bool = False):
    """Metadata / config.json `key` of `source` (a GGUFFile, or an HFConfig), checked by `check_number`; absent
    (or null), `default`, unchecked, or ModelConfigError "missing key" when there is none."""
    data = getattr(source, "metadata", None)
    data = source.data if data is None else data
    value = data.get(key)
    if value is None:
        if default is REQUIRED:
            raise ModelConfigError(f"{source.path}: missing key {key!r}")
        return default
    return check_number(value, kind, key, source.path, low=low, positive=positive)


def check_fields(cfg, where, keys: dict | None = None, arch: str = "") -> None:
    """Every int and float field of dataclass `cfg` positive (ZERO_OK: at least 0), floats finite; a failure
    names the field's upstream key (`keys`: field -> key with `{arch}`, else the field's own name)."""
    for field in fields(cfg):
        kind = {"int": int, "float": float}.get(field.type if isinstance(field.type, str) else field.type.__name__)
        if kind is None:
            continue
        key = (keys or {}).get(field.name, field.name).format(arch=arch)
        if field.name in ZERO_OK:
            check_number(getattr(cfg, field.name), kind, key, where, low=0)
        else:
            check_number(getattr(cfg, field.name), kind, key, where, positive=True)


def check_gguf_decoder(f, arch: str, cfg) -> None:
    """A decoder's config (llama.Config or a subclass) against its GGUF file `f`: ranges, GQA grouping, the
    attention tensors' rows (every layer), the vocabulary against the embedding rows, finite 1-D tensors."""
    check_fields(cfg, f.path, DECODER_GGUF_KEYS, arch)
    if cfg.n_heads % cfg.n_kv_heads:
        raise ModelConfigError(f"{f.path}: {arch}.attention.head_count_kv is {cfg.n_kv_heads}, which does not "
                               f"divide {arch}.attention.head_count ({cfg.n_heads})")
    q_rows, kv_rows = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    expected = {"attn_q": q_rows, "attn_k": kv_rows, "attn_v": kv_rows, "attn_qkv": q_rows + 2 * kv_rows}
    for i in range(cfg.n_layers):
        for name, rows in expected.items():
            t = f.tensors.get(f"blk.{i}.{name}.weight")
            if t is not None and t.shape[0] != rows:
                raise ModelConfigError(
                    f"{f.path}: tensor blk.{i}.{name}.weight has {t.shape[0]} rows, but {arch}.attention.head_count "
                    f"({cfg.n_heads}), head_count_kv ({cfg.n_kv_heads}) and key_length ({cfg.head_dim}) make {rows}")
        wo = f.tensors.get(f"blk.{i}.attn_output.weight")
        if wo is not None and wo.shape[-1] != q_rows:
            raise ModelConfigError(f"{f.path}: tensor blk.{i}.attn_output.weight takes {wo.shape[-1]} inputs, but "
                                   f"{arch}.attention.head_count x key_length is {q_rows}")
    # llama.cpp requires one embedding row and one output row per token: a shorter vocabulary could sample ids it
    # cannot print, a longer one look up rows that do not exist.
    tokens = f.get("tokenizer.ggml.tokens")
    if tokens is not None and len(tokens) != cfg.vocab_size:
        raise ModelConfigError(f"{f.path}: tokenizer.ggml.tokens holds {len(tokens)} tokens, but token_embd.weight "
                               f"has {cfg.vocab_size} rows (one per token)")
    output = f.tensors.get("output.weight")
    if output is not None and output.shape[0] != cfg.vocab_size:
        raise ModelConfigError(f"{f.path}: output.weight has {output.shape[0]} rows, token_embd.weight "
                               f"{cfg.vocab_size}: one logit per token")
    check_small_tensors(f)


def check_small_tensors(f) -> None:
    """Every 1-D float tensor of GGUF file `f` (norm weights, biases: a few KB per layer) finite."""
    for name, t in f.tensors.items():
        if len(t.shape) == 1 and t.ggml_type.dtype is not None and t.ggml_type.dtype.kind == "f":
            if not np.isfinite(f[name]).all():
                raise ModelConfigError(f"{f.path}: tensor {name!r} holds NaN or infinite values")


def check_small_arrays(model, where) -> None:
    """Every 1-D array of an encoder `model` (norm weights, biases, in `model.w` and its layers' `w`) finite."""
    import sys

    family = sys.modules.get(type(model).__module__)  # its weight tables name the tensors in messages
    tables = getattr(family, "WEIGHTS", {}), getattr(family, "LAYER_WEIGHTS", {})
    layers = [layer if isinstance(layer, dict) else getattr(layer, "w", None) for layer in getattr(model, "layers", [])]
    for i, group in enumerate([getattr(model, "w", None), *layers]):
        for name, a in (group.items() if isinstance(group, dict) else ()):
            if getattr(a, "ndim", 0) == 1 and getattr(a, "dtype", np.dtype("i1")).kind == "f":
                if not math.isfinite(float(abs(a).max())):  # NaN or inf propagate through max
                    tensor = tables[bool(i)].get(name, name).format(i=i - 1)
                    place = f" (layer {i - 1})" if i else ""
                    raise ModelConfigError(f"{where}: weight {tensor!r}{place} holds NaN or infinite values")


# config.json keys (Hugging Face's, across the families votive runs) whose value, when set, is a count (> 0), or a
# float that divides or scales (finite, > 0). Checked on the raw file before a family divides by any of them.
CONFIG_JSON_COUNTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                      "intermediate_size", "max_position_embeddings", "head_dim", "n_embd", "n_head", "n_layer",
                      "n_positions", "n_inner", "global_attn_every_n_layers")
CONFIG_JSON_POSITIVE = ("layer_norm_eps", "layer_norm_epsilon", "rms_norm_eps", "norm_eps", "rope_theta",
                        "rotary_emb_base", "global_rope_theta", "local_rope_theta", "rope_local_base_freq")


def check_config_json(data: dict, path) -> None:
    """The counts and positive floats of a parsed config.json (`data`), where set: ModelConfigError naming the
    key for "12" as a count, 0 heads, a negative or NaN epsilon."""
    for key in CONFIG_JSON_COUNTS:
        if data.get(key) is not None:
            check_number(data[key], int, key, path, positive=True)
    for key in CONFIG_JSON_POSITIVE:
        if data.get(key) is not None:
            check_number(data[key], float, key, path, positive=True)
    if data.get("type_vocab_size") is not None:
        check_number(data["type_vocab_size"], int, "type_vocab_size", path, low=0)


def check_n_ctx(n_ctx) -> None:
    """`votive.load`'s n_ctx: None (the model's default) or a positive number of positions."""
    if n_ctx is not None:
        check_number(n_ctx, int, "n_ctx", "votive.load", positive=True)


def check_finite(values, what) -> None:
    """NumericalError when host array `values` (logits, pooled vectors) holds NaN or infinity: one pass over the
    output, nothing proportional to the weights. `what` names them: a string, or a callable making it (so that a
    per-token check formats nothing unless it fails)."""
    if not np.isfinite(values).all():
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        what = what() if callable(what) else what
        raise NumericalError(f"{what}: {bad} of {np.size(values)} values are NaN or infinite (broken weights or "
                             f"settings); refusing to answer from them")

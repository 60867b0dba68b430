"""Sentence embeddings as sentence-transformers computes them: tokenizer -> encoder family -> pooling -> (optional)
L2 norm. The family is picked by config.json's `model_type` (`ENCODERS`); each family's model takes padded ids
and a mask and returns the last hidden states, so pooling, batching and the tokenizer settings live here once.

Ported from sentence-transformers `sentence_transformers/models/Pooling.py` and `Normalize.py` @ v3.0.0: the
pooling modes and their concatenation order, and the `modules.json` pipeline that names them.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from pathlib import Path

from votive.errors import InputError, ModelConfigError, check_deadline
from votive.models.config_checks import check_config_json, check_finite, check_small_arrays
from votive.models.embedding_controls import Prompts, finish, matryoshka_dims
from votive.text.tokenizer_json import read_json
from votive.text.wordpiece import load_tokenizer

# config.json `model_type` -> (module, class) of the encoder family. The class has `from_folder(folder, ops)`,
# `forward(ids, mask) -> (B, T, D)`, `hidden_size` and `max_positions`.
ENCODERS = {
    "bert": ("votive.models.bert", "BertModel"),
    "nomic_bert": ("votive.models.nomic_bert", "NomicBertModel"),
    "new": ("votive.models.gte", "GteModel"),
    "xlm-roberta": ("votive.models.xlm_roberta", "XLMRobertaModel"),
    "roberta": ("votive.models.xlm_roberta", "XLMRobertaModel"),  # the same network as XLM-R
    "modernbert": ("votive.models.modernbert", "ModernBertModel"),
}
# GGUF `general.architecture` -> (module, class) of the encoder family whose `from_gguf(f, ops)` reads it.
GGUF_ENCODERS = {
    "bert": ("votive.models.bert", "BertModel"),
    "nomic-bert": ("votive.models.nomic_bert", "NomicBertModel"),
}
# llama.cpp's `{arch}.pooling_type` (llama_pooling_type) -> sentence-transformers' pooling mode; NONE (per-token
# states), LAST and RANK (a reranker's score) are not sentence embeddings this encoder makes.
GGUF_POOLING = {1: "mean_tokens", 2: "cls_token"}


def encoder_class(folder: Path):
    """The family class that reads `folder`, from its config.json `model_type`; ModelConfigError naming the
    type when votive has none."""
    path = Path(folder) / "config.json"
    raw = read_json(path)
    if not isinstance(raw, dict):
        raise ModelConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    check_config_json(raw, path)  # sizes and epsilons typed and in range, before a family divides by them
    model_type = raw.get("model_type", "bert")
    if model_type not in ENCODERS:
        raise ModelConfigError(f"{path}: model_type {model_type!r} is not an encoder votive runs (supported: "
                               f"{', '.join(ENCODERS)})")
    module, name = ENCODERS[model_type]
    return getattr(importlib.import_module(module), name)


# ------------------------------------------------------------------------------------------------- pooling
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens")  # sentence-transformers' order


@dataclass
class Pooling:
    """How token states become one vector: the `pooling_mode_*` flags of 1_Pooling/config.json, and Normalize."""

    modes: tuple[str, ...] = ("mean_tokens",)
    normalize: bool = False
    include_prompt: bool = True  # False: prompt tokens left out of the pooling (not implemented: refused)

    def __call__(self, ops, hidden, mask):
        """hidden (B, T, D), mask (B, T) -> (B, D * len(modes))."""
        parts = []
        for mode in self.modes:
            if mode == "cls_token":
                parts.append(hidden[:, 0])  # (B, D)
            elif mode == "max_tokens":
                parts.append(ops.masked_max(hidden, mask))  # (B, D)
            elif mode == "mean_tokens":
                parts.append(ops.masked_mean(hidden, mask))  # (B, D)
            else:  # mean_sqrt_len_tokens: the sum over tokens divided by sqrt(token count)
                mean = ops.masked_mean(hidden, mask)
                parts.append(mean * ops.asarray(mask, ops.float32).sum(axis=1, keepdims=True) ** 0.5)
        out = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        return ops.l2_normalize(out) if self.normalize else out

    @classmethod
    def from_folder(cls, folder: Path) -> "Pooling":
        """Read modules.json; a plain transformers folder (no modules.json) gets mean pooling, as ST defaults."""
        modules_path = folder / "modules.json"
        if not modules_path.is_file():
            return cls()
        modules = read_json(modules_path)
        if not isinstance(modules, list):
            raise ModelConfigError(f"{modules_path}: expected a list of modules")
        pooling, normalize = None, False
        for m in modules:
            if not (isinstance(m, dict) and isinstance(m.get("type", ""), str) and isinstance(m.get("path", ""), str)):
                raise ModelConfigError(f"{modules_path}: each module must be an object with string 'type' and "
                                       f"'path', found {m!r}")
            kind = m.get("type", "").rsplit(".", 1)[-1]
            if kind == "Transformer":
                continue
            if kind == "Pooling":
                pooling_path = folder / m.get("path", "") / "config.json"
                pooling = read_json(pooling_path)
                if not isinstance(pooling, dict):
                    raise ModelConfigError(f"{pooling_path}: expected a JSON object, found {type(pooling).__name__}")
            elif kind == "Normalize":
                normalize = True
            else:
                raise ModelConfigError(f"{modules_path}: module {m.get('type')!r} is not supported by votive")
        if pooling is None:
            return cls(normalize=normalize)
        modes = tuple(mode for mode in POOLING_MODES if pooling.get(f"pooling_mode_{mode}"))
        others = [k for k, v in pooling.items() if k.startswith("pooling_mode_") and v and k[13:] not in POOLING_MODES]
        if others:
            raise ModelConfigError(f"{folder}/1_Pooling/config.json: {others[0]} is not supported")
        if not modes:
            raise ModelConfigError(f"{folder}/1_Pooling/config.json: no pooling mode is enabled")
        return cls(modes=modes, normalize=normalize, include_prompt=pooling.get("include_prompt", True) is not False)


# ------------------------------------------------------------------------------------------- the encoder
class SentenceEncoder:
    """Text in, one float32 vector per text out: tokenizer, encoder family, pooling.

    Example:
        >>> enc = SentenceEncoder.from_folder(Path("all-MiniLM-L6-v2"), ops)   # doctest: +SKIP
        >>> enc.embed(["hello", "world"]).shape                               # doctest: +SKIP
        (2, 384)
    """

    kind = "embedding"

    def __init__(self, model, tokenizer, pooling: Pooling, max_seq_length: int, model_id: str,
                 prompts: Prompts | None = None, matryoshka_dims: tuple[int, ...] | None = None):
        self.model, self.ops = model, model.ops
        self.tokenizer = tokenizer  # encode_batch(texts) -> ids per text, truncated to max_seq_length, unpadded
        self.pooling = pooling
        self.max_seq_length = max_seq_length
        self.model_id = model_id
        self.dim = model.hidden_size * len(pooling.modes)
        self.backend = self.ops.name
        self.prompts = prompts or Prompts()  # config_sentence_transformers.json's prompts, default_prompt_name
        self.matryoshka_dims = matryoshka_dims  # config.json: dimensions it was trained to be cut to, or None
        self.normalized = pooling.normalize  # unit vectors out (modules.json has Normalize)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, special tokens included, truncated to max_seq_length."""
        return self.tokenizer.encode_batch(_check_texts(texts))

    def encode(self, texts: list[str], batch_size: int = 32, *, prompt: str | None = None,
               prompt_name: str | None = None, truncate_dim: int | None = None, precision: str = "float32",
               ranges=None):
        """Embed `texts` -> (float32 array (len(texts), dim), total token count incl. special tokens and prompts).

        Texts are sorted by length so each batch pads only to its own longest member, then put back in order.
        `prompt` / `prompt_name` (else the default prompt) is put before each text, then truncated with it to
        max_seq_length. `truncate_dim`, `precision`, `ranges`: see `votive.models.embedding_controls.finish`
        (re-normalised after truncation when the model normalises; int8 / uint8 / binary / ubinary arrays).
        """
        texts = _check_texts(texts)
        prefix = self.prompts.resolve(prompt, prompt_name)
        if prefix:
            if not self.pooling.include_prompt:
                raise InputError(f"{self.model_id}: its pooling leaves prompt tokens out (1_Pooling include_prompt: "
                                 f"false), which votive does not implement; it cannot take the prompt {prefix!r}")
            texts = [prefix + t for t in texts]
        ops = self.ops
        out = ops.empty((len(texts), self.dim), ops.float32)
        if not texts:
            return ops.to_numpy(out), 0
        token_ids = self.tokenizer.encode_batch(texts)  # InputError for text that is not Unicode
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        n_tokens = 0
        for start in range(0, len(order), batch_size):
            check_deadline()  # an invocation whose time is up stops here, between batches (DeadlineExceeded)
            idx = order[start : start + batch_size]
            T = max(len(token_ids[i]) for i in idx)
            ids = [token_ids[i] + [0] * (T - len(token_ids[i])) for i in idx]
            mask = [[1] * len(token_ids[i]) + [0] * (T - len(token_ids[i])) for i in idx]
            n_tokens += sum(len(token_ids[i]) for i in idx)
            ids, mask = ops.asarray(ids, ops.int64), ops.asarray(mask, ops.int64)  # (b, T) each
            hidden = self.model.forward(ids, mask)  # (b, T, D)
            out[ops.asarray(idx, ops.int64)] = self.pooling(ops, hidden, mask)  # (b, dim)
        out = ops.to_numpy(out)  # host memory on every backend
        check_finite(out, f"{self.model_id}: the pooled vectors")  # broken weights: a 500, never NaN vectors
        if truncate_dim is None and precision == "float32":
            return out, n_tokens
        return finish(out, truncate_dim=truncate_dim, normalized=self.normalized, precision=precision,
                      ranges=ranges), n_tokens

    def embed(self, texts, batch_size: int = 32, *, prompt_name: str | None = None, prompt: str | None = None,
              truncate_dim: int | None = None, precision: str = "float32", ranges=None):
        """Like sentence-transformers' `encode`: a list of n texts -> (n, dim) float32; one str -> (dim,).

        prompt_name / prompt / precision / ranges as theirs; truncate_dim re-normalises when the model does (their
        `truncate_dim=d, normalize_embeddings=True`), see `votive.models.embedding_controls`.
        """
        options = dict(prompt=prompt, prompt_name=prompt_name, truncate_dim=truncate_dim, precision=precision,
                       ranges=ranges)
        if isinstance(texts, str):
            return self.encode([texts], batch_size, **options)[0][0]
        return self.encode(texts, batch_size, **options)[0]

    @classmethod
    def from_folder(cls, folder: Path, ops, model_id: str | None = None, quantize=None) -> "SentenceEncoder":
        """`quantize`: a GGML type the family quantizes its large matrices to at load (its from_folder takes a
        `quantize` argument), or None to keep the weights as stored."""
        folder = Path(folder)
        family = encoder_class(folder)
        if quantize is None:
            model = family.from_folder(folder, ops)
        elif "quantize" in inspect.signature(family.from_folder).parameters:
            model = family.from_folder(folder, ops, quantize=quantize)
        else:
            raise ModelConfigError(f"{folder}: the {family.__name__} family does not quantize at load yet; load it "
                                   "without quantize=")
        check_small_arrays(model, folder)  # NaN norms or biases: refused at load, naming the weight
        max_len = _max_seq_length(folder, model.max_positions)
        pooling = Pooling.from_folder(folder)
        tokenizer = _load_tokenizer(folder, max_len)
        _check_ids_fit(tokenizer, model, folder)
        return cls(model, tokenizer, pooling, max_len, model_id or folder.name,
                   Prompts.from_folder(folder), matryoshka_dims(folder, model.hidden_size * len(pooling.modes)))

    @classmethod
    def from_gguf(cls, path: Path, ops, model_id: str | None = None) -> "SentenceEncoder":
        """An encoder GGUF as llama.cpp embeds with it: the family by `general.architecture`, its WordPiece
        vocabulary tokenized as llama.cpp does (votive.text.gguf_wordpiece), pooling by `{arch}.pooling_type`,
        and no normalisation: llama.cpp's llama_get_embeddings_seq, and so llama-cpp-python's `embed` /
        `create_embedding` (normalize=False by default), return the pooled vector as it is. Inputs are cut to the
        position table (`{arch}.context_length`), the closing [SEP] kept."""
        from votive.formats.gguf import GGUFFile
        from votive.text.gguf_wordpiece import GGUFWordPiece

        path = Path(path)
        f = GGUFFile(path)
        arch = f.architecture
        if arch not in GGUF_ENCODERS:
            raise ModelConfigError(f"{path}: encoder architecture {arch!r} is not supported (supported: "
                                   f"{', '.join(GGUF_ENCODERS)})")
        pooling = f.get(f"{arch}.pooling_type")
        if pooling not in GGUF_POOLING:
            raise ModelConfigError(f"{path}: {arch}.pooling_type is {pooling!r}; votive embeds with MEAN (1) or CLS "
                                   f"(2) pooling")
        module, name = GGUF_ENCODERS[arch]
        model = getattr(importlib.import_module(module), name).from_gguf(f, ops)
        check_small_arrays(model, path)
        max_len = model.max_positions
        return cls(model, GGUFWordPiece.from_gguf(f, max_len), Pooling((GGUF_POOLING[pooling],), normalize=False),
                   max_len, model_id or path.stem)


# --------------------------------------------------------------------------------------------------- addenda
def _check_texts(texts) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
        raise InputError(f"expected a list of strings, got {type(texts).__name__}")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"item {i} is {type(t).__name__}, expected a string")
    return list(texts)


def _largest_id(tokenizer) -> int | None:
    """The largest id `tokenizer` can give (its vocabulary, added tokens, template), or None for one whose ids
    are not known without tokenizing (the `tokenizers` library: its own count)."""
    if hasattr(tokenizer, "tokenizer") and hasattr(tokenizer.tokenizer, "get_vocab_size"):
        return tokenizer.tokenizer.get_vocab_size(with_added_tokens=True) - 1
    vocab = getattr(getattr(tokenizer, "wordpiece", None), "vocab", None) or getattr(
        getattr(tokenizer, "model", None), "ids", None)
    if not isinstance(vocab, dict):
        return None
    ids = [max(vocab.values(), default=0), *getattr(tokenizer, "before", ()), *getattr(tokenizer, "after", ())]
    for matcher in (getattr(tokenizer, "_raw_tokens", None), getattr(tokenizer, "_normalized_tokens", None)):
        ids += [t.id for t in getattr(matcher, "tokens", {}).values()]
    return max(ids)


def _check_ids_fit(tokenizer, model, folder: Path) -> None:
    """Every id the tokenizer gives has a row in the token table: else a lookup past it fails per request."""
    cfg = getattr(model, "cfg", None)
    rows = getattr(cfg, "vocab_rows", None) or getattr(cfg, "vocab_size", None)
    largest = _largest_id(tokenizer)
    if isinstance(rows, int) and largest is not None and largest >= rows:
        raise ModelConfigError(f"{folder}: the tokenizer gives ids up to {largest}, but config.json vocab_size "
                               f"makes {rows} token embedding rows")


def _max_seq_length(folder: Path, limit: int) -> int:
    """sentence_bert_config.json's max_seq_length, else the tokenizer's model_max_length, capped by `limit` (the
    model's position table)."""
    for name, key in (("sentence_bert_config.json", "max_seq_length"), ("tokenizer_config.json", "model_max_length")):
        if (folder / name).is_file():
            data = read_json(folder / name)
            value = data.get(key) if isinstance(data, dict) else None
            if isinstance(value, int) and value > 0:
                return min(value, limit)
    return limit


def _load_tokenizer(folder: Path, max_len: int):
    """The folder's tokenizer with sentence-transformers' settings: truncate to max_len, no padding
    (tokenizer.json often says Fixed-128 padding; ST pads per batch instead). BERT WordPiece tokenizers are read
    by votive.text.wordpiece; any other tokenizer.json needs the `tokenizers` library."""
    return load_tokenizer(folder, max_len)

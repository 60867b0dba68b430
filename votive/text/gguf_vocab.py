"""What a GGUF file says about its tokenizer: the tokenizer.* metadata keys read into a `TokenizerSpec`, each
value checked for its kind as it is read.

Upstream: ggml-org/llama.cpp `src/llama-vocab.cpp` (read at commit 00ad355e): `llama_vocab::impl::load`, which
reads these keys. What llama.cpp assumes when a key is absent is applied by `GGUFTokenizer`, not here: a spec
keeps None for "not in the file".

Example:
    >>> spec = TokenizerSpec.from_metadata({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["<unk>"]})
    >>> spec.model, spec.tokens, spec.bos_id
    ('llama', ['<unk>'], None)
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Mapping, Sequence

from votive.errors import ModelConfigError


class TokenType(IntEnum):
    """`tokenizer.ggml.token_type` values (llama.cpp's llama_token_type)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6



# GGUF metadata keys, by TokenizerSpec field.
GGUF_KEYS = {
    "model": "tokenizer.ggml.model",
    "pre": "tokenizer.ggml.pre",
    "tokens": "tokenizer.ggml.tokens",
    "token_types": "tokenizer.ggml.token_type",
    "scores": "tokenizer.ggml.scores",
    "merges": "tokenizer.ggml.merges",
    "bos_id": "tokenizer.ggml.bos_token_id",
    "eos_id": "tokenizer.ggml.eos_token_id",
    "eot_id": "tokenizer.ggml.eot_token_id",
    "unk_id": "tokenizer.ggml.unknown_token_id",
    "pad_id": "tokenizer.ggml.padding_token_id",
    "add_bos": "tokenizer.ggml.add_bos_token",
    "add_eos": "tokenizer.ggml.add_eos_token",
    "add_space_prefix": "tokenizer.ggml.add_space_prefix",
    "chat_template": "tokenizer.chat_template",
    "model_name": "general.name",  # not a tokenizer key, but llama.cpp keys token attributes on it (Phi-3)
}


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything a GGUF file says about its tokenizer, as plain Python values. None means "not in the file".

    Build one with `from_metadata(gguf_file.metadata)`, or by hand for tests.
    """

    model: str  # tokenizer.ggml.model: "llama" (SentencePiece-style) or "gpt2" (byte-level BPE)
    tokens: Sequence[str]  # token text by id
    token_types: Sequence[int] | None = None  # TokenType by id; None: all NORMAL
    scores: Sequence[float] | None = None  # merge priority by id ("llama" only); None: all 0
    merges: Sequence[str] | None = None  # "left right" pairs, best first ("gpt2" only)
    pre: str | None = None  # tokenizer.ggml.pre: pre-tokenizer name, e.g. "smollm" ("gpt2" only)
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None  # end of turn, when the file names one
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool | None = None  # prepend BOS when encoding with add_special
    add_eos: bool | None = None  # append EOS when encoding with add_special
    add_space_prefix: bool | None = None  # "llama" only: a space before text at the start or after a special token
    chat_template: str | None = None  # tokenizer.chat_template (Jinja)
    model_name: str | None = None  # general.name
    source: str = "GGUF metadata"  # where this came from, for error messages (the file's path)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], source: str = "GGUF metadata") -> "TokenizerSpec":
        """Read the tokenizer.* keys of a GGUF metadata mapping (numpy arrays and string sequences welcome).

        Raises:
            ModelConfigError: a key holds the wrong kind of value, or the vocabulary is missing.
        """
        if GGUF_KEYS["tokens"] not in metadata:
            raise ModelConfigError(f"{source}: no {GGUF_KEYS['tokens']}: the file carries no tokenizer")
        values: dict[str, Any] = {}
        for field, key in GGUF_KEYS.items():
            if key not in metadata:
                continue
            value = metadata[key]
            if field == "merges":
                value = string_list(value, key, source)
            elif field == "tokens":
                value = as_list(value)  # checked by GGUFTokenizer
            elif field in ("token_types", "scores"):
                if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                    raise ModelConfigError(f"{source}: {key} is {type(value).__name__}, expected an array")
            elif field.endswith("_id"):
                value = _integer(value, key, source)
            elif field.startswith("add_"):
                value = _flag(value, key, source)
            elif not isinstance(value, str):
                raise ModelConfigError(f"{source}: {key} is {type(value).__name__}, expected a string")
            values[field] = value
        return cls(source=source, **values)


# -- metadata values -----------------------------------------------------------------------------------------


def as_list(value) -> list:
    """A numpy array (GGUF arrays arrive as one) or any sequence as a plain list."""
    return value.tolist() if hasattr(value, "tolist") else list(value)


def string_list(value, key: str, source: str) -> list[str]:
    """`value` as a list of str; ModelConfigError naming `key` and the first item that is not one."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ModelConfigError(f"{source}: {key} is {type(value).__name__}, expected an array of strings")
    items = as_list(value)
    if set(map(type, items)) - {str}:  # one C-speed pass; the loop below runs only for bad input
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ModelConfigError(f"{source}: {key}[{i}] is {type(item).__name__}, expected a string")
    return items


def _integer(value, key: str, source: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ModelConfigError(f"{source}: {key} is {value!r}, expected an integer token id")
    return int(value)


def _flag(value, key: str, source: str) -> bool:
    if type(value).__name__ not in ("bool", "bool_"):
        raise ModelConfigError(f"{source}: {key} is {value!r}, expected true or false")
    return bool(value)

"""What a caller may ask of a sentence embedding beyond its text: an instruction prefix (`Prompts`), fewer
dimensions (Matryoshka truncation) and a smaller number type (`quantize`).

Ported from sentence-transformers v6.3.0: `base/model.py` (`_resolve_prompt`: prompt, prompt_name,
default_prompt_name), `sentence_transformer/model.py` (`encode_query` / `encode_document`: which prompt names
stand for a query and a document; `encode`: truncate_dim is applied after every module, Normalize included) and
`util/quantization.py` (`quantize_embeddings`: int8 / uint8 buckets over per-dimension ranges, binary / ubinary
sign bits packed by np.packbits).

Decisions where sentence-transformers leaves a choice to its caller:
- Truncation re-normalises when the model normalises (its modules.json has Normalize): OpenAI's `dimensions`
  returns unit vectors, and so does sentence-transformers' `encode(truncate_dim=d, normalize_embeddings=True)`.
  A model without Normalize gets the first d numbers as they are (`encode(truncate_dim=d)`).
- A model declares its Matryoshka dimensions in config.json, as vLLM and SGLang read them:
  `"matryoshka_dimensions": [64, 128, ...]`, or `"is_matryoshka": true` for any dimension.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from votive.errors import InputError, ModelConfigError
from votive.text.tokenizer_json import read_json

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")  # sentence-transformers' `precision` names

# input_type aliases -> the prompt names they stand for, first configured one wins. The query names follow
# sentence-transformers' encode_query ("query"), the document names its encode_document ("document", "passage",
# "corpus"), with Nomic's and Cohere's spellings (search_query, search_document) beside them.
QUERY_NAMES = ("query", "search_query")
DOCUMENT_NAMES = ("document", "passage", "corpus", "search_document")
INPUT_TYPE_ALIASES = {"query": QUERY_NAMES, "search_query": QUERY_NAMES,
                      "document": DOCUMENT_NAMES, "passage": DOCUMENT_NAMES, "corpus": DOCUMENT_NAMES,
                      "search_document": DOCUMENT_NAMES}


# ------------------------------------------------------------------------------------------------- prompts
class Prompts(NamedTuple):
    """config_sentence_transformers.json's `prompts` ({"query": "query: ", ...}) and `default_prompt_name`."""

    prompts: dict[str, str] = MappingProxyType({})  # prompt name -> text put before every input
    default_name: str | None = None  # the prompt used when the caller names none

    def resolve(self, prompt: str | None = None, prompt_name: str | None = None) -> str:
        """The text to put before each input, as sentence-transformers' `_resolve_prompt`: `prompt` itself
        (even ""), else the named prompt, else the default prompt, else "". InputError for an unknown name."""
        if prompt is not None:
            if not isinstance(prompt, str):
                raise InputError(f"prompt must be a string, got {type(prompt).__name__}")
            return prompt  # sentence-transformers ignores prompt_name beside it, with a warning
        if prompt_name is not None:
            if prompt_name not in self.prompts:
                raise InputError(f"prompt_name {prompt_name!r} is not one of this model's prompts "
                                 f"({_names(self.prompts) or 'it has none'})")
            return self.prompts[prompt_name]
        return self.prompts.get(self.default_name, "") if self.default_name is not None else ""

    def for_input_type(self, input_type: str) -> str:
        """The prompt text an API `input_type` asks for: a prompt name of the model, else an alias of
        INPUT_TYPE_ALIASES (its first configured prompt, or "" when the model has none of them: like
        sentence-transformers' encode_query, naming the kind of text turns the default prompt off).
        InputError naming the choices for anything else."""
        if input_type in self.prompts:
            return self.prompts[input_type]
        if input_type in INPUT_TYPE_ALIASES:
            return next((self.prompts[n] for n in INPUT_TYPE_ALIASES[input_type] if n in self.prompts), "")
        raise InputError(f"input_type {input_type!r} is not one of {', '.join(map(repr, self.input_types()))}")

    def input_types(self) -> list[str]:
        """Every accepted input_type: the model's prompt names, then the aliases."""
        return list(self.prompts) + [a for a in INPUT_TYPE_ALIASES if a not in self.prompts]

    @classmethod
    def from_folder(cls, folder: Path) -> "Prompts":
        """Read config_sentence_transformers.json (no file: no prompts). ModelConfigError for a malformed one."""
        path = Path(folder) / "config_sentence_transformers.json"
        if not path.is_file():
            return cls()
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ModelConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        prompts = raw.get("prompts") or {}
        if not isinstance(prompts, dict) or not all(isinstance(v, str) for v in prompts.values()):
            raise ModelConfigError(f"{path}: 'prompts' must map prompt names to strings, found {prompts!r}")
        default = raw.get("default_prompt_name")
        if default is not None and default not in prompts:
            raise ModelConfigError(f"{path}: default_prompt_name {default!r} is not one of the prompts "
                                   f"({_names(prompts) or 'there are none'})")
        return cls(dict(prompts), default)


# --------------------------------------------------------------------------------------- Matryoshka dims
def matryoshka_dims(folder: Path, dim: int) -> tuple[int, ...] | None:
    """The dimensions config.json says the model was trained to be cut to (`matryoshka_dimensions`, or every one
    from 1 to `dim` for `is_matryoshka: true`), ascending; None when it declares none. ModelConfigError for
    values that are not integers from 1 to `dim`."""
    path = Path(folder) / "config.json"
    raw = read_json(path)
    if not isinstance(raw, dict):
        return None
    if raw.get("is_matryoshka") is True:
        return tuple(range(1, dim + 1))
    dims = raw.get("matryoshka_dimensions")
    if dims is None:
        return None
    if not isinstance(dims, list) or not dims or not all(_is_int(d) and 1 <= d <= dim for d in dims):
        raise ModelConfigError(f"{path}: matryoshka_dimensions must be a list of integers from 1 to the "
                               f"embedding dimension {dim}, found {dims!r}")
    return tuple(sorted(set(dims)))


# ------------------------------------------------------------------------------------ truncate, quantize
def truncate(vectors, dim: int, renormalize: bool):
    """(n, D) float32 -> (n, dim): the first `dim` numbers, L2-normalised again when `renormalize` (as torch's
    F.normalize: divided by max(norm, 1e-12))."""
    import numpy as np

    D = vectors.shape[1]
    if not _is_int(dim) or not 1 <= dim <= D:
        raise InputError(f"truncate_dim is {dim!r}; expected an integer from 1 to the model's dimension {D}")
    out = np.ascontiguousarray(vectors[:, :dim], np.float32)  # (n, dim)
    if renormalize:
        norms = np.sqrt((out.astype(np.float64) ** 2).sum(axis=1, keepdims=True))  # (n, 1)
        out = (out / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def quantize(vectors, precision: str, ranges=None):
    """(n, D) float32 -> sentence-transformers' `quantize_embeddings(vectors, precision, ranges)`, bit for bit:

        float32  the vectors as they are
        int8     floor((x - lo) / ((hi - lo) / 255)) clipped to 0..255, minus 128   (n, D) int8
        uint8    the same without the offset                                          (n, D) uint8
        binary   np.packbits(x > 0) (first dimension in the top bit), minus 128       (n, ceil(D / 8)) int8
        ubinary  np.packbits(x > 0)                                                   (n, ceil(D / 8)) uint8

    `ranges` (int8 / uint8): lo and hi per dimension, shape (2, D), or (2,) for the same pair everywhere; None
    takes them from `vectors` themselves, as sentence-transformers does (so at least two vectors are needed, and
    the codes then depend on the batch). All arithmetic is float32, as theirs.
    """
    import numpy as np

    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    x = np.asarray(vectors, np.float32)  # (n, D)
    if not np.isfinite(x).all():  # a NaN would become an arbitrary code; the float path reports it instead
        raise RuntimeError(f"cannot quantize to {precision}: the embeddings hold non-finite values (NaN or inf)")
    if precision == "float32":
        return x
    if precision in ("binary", "ubinary"):
        packed = np.packbits(x > 0, axis=-1)  # (n, ceil(D / 8)) uint8
        return packed if precision == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)
    ranges = _ranges(x, ranges, precision)  # (2, D) float32
    starts = ranges[0]
    steps = (ranges[1] - starts) / np.float32(255)
    steps = np.where(steps == 0, np.float32(1), steps)  # a constant dimension: every value in bucket 0
    q = np.clip(np.floor((x - starts) / steps), 0, 255)  # (n, D) float32 bucket numbers
    return q.astype(np.uint8) if precision == "uint8" else (q - 128).astype(np.int8)


def finish(vectors, *, truncate_dim: int | None, normalized: bool, precision: str, ranges=None):
    """The order sentence-transformers' encode keeps: truncate (and re-normalise), then quantize."""
    if truncate_dim is not None:
        vectors = truncate(vectors, truncate_dim, renormalize=normalized)
    return quantize(vectors, precision, ranges)


# --------------------------------------------------------------------------------------------------- addenda
def _ranges(x, ranges, precision: str):
    import numpy as np

    n, D = x.shape
    if ranges is None:
        if n < 2:
            raise InputError(f"{precision} needs quantization ranges: pass ranges (lo and hi per dimension, e.g. "
                             f"the min and max of a calibration set's embeddings); one embedding has no range")
        return np.vstack((x.min(axis=0), x.max(axis=0)))  # (2, D)
    r = np.asarray(ranges, np.float32)
    if r.shape == (2,):
        r = np.repeat(r[:, None], D, axis=1)  # (2, D)
    if r.shape != (2, D):
        raise InputError(f"ranges has shape {r.shape}; expected (2, {D}) (lo and hi per dimension) or (2,)")
    if not np.isfinite(r).all():
        raise InputError("ranges holds non-finite values")
    return r


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _names(prompts: dict) -> str:
    return ", ".join(map(repr, prompts))

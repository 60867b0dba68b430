"""Lambda handler: an embedding model behind OpenAI's embeddings API, on a function URL or by direct invoke.

Set the function's handler to `votive.handlers.embeddings.handler`.

Routes:
    POST /v1/embeddings   OpenAI's request and response (also at /embeddings)
    GET  /health          the served model: id, dimension, backend, limits, the controls it accepts

A direct invoke's event is the request body itself (`{"input": ["a", "b"]}` -> the OpenAI response dict), or a
routed request (`{"path": "/health"}`); see `votive.handlers.events`.

Configuration, read once at init from the environment:
    VOTIVE_MODEL       the model, as `votive.load` takes it (folder, file, hf:org/name, pkg:NAME, alias); required
    VOTIVE_MAX_INPUTS  texts one request may send, default 2048 (OpenAI's limit)
    VOTIVE_BATCH_SIZE  texts per forward pass, default 32
    VOTIVE_BACKEND     numpy (default) or cupy, read by `votive.load`
    VOTIVE_MATRYOSHKA_DIMS  the `dimensions` a request may ask for, "64,128,256" or "any", in place of what the
                       model's config.json declares (for a Matryoshka model whose config does not say so)

When the model loads: `handler` is built on first access to the attribute, which Lambda makes during its init
phase right after importing this module. So the model loads once per process, inside init, and a missing or
unloadable VOTIVE_MODEL fails init with a `VotiveFault` (Votive.ConfigError, Votive.ModelLoadError). Importing
the module by itself loads nothing heavy, not even numpy; tests and other runtimes call `make_handler(model)`.

Decisions (OpenAI's behaviour where it costs nothing, strict where leniency would hide a wrong answer):
- `model` may name anything: one model is served, OpenAI clients must send some name, and the response's
  `model` says which one answered.
- `input` is a string or a list of 1 to VOTIVE_MAX_INPUTS strings; "" is a text like any other. Token-id
  arrays are refused (this endpoint tokenizes with the model's own tokenizer). A text longer than the model's
  `max_seq_length` tokens is truncated, as sentence-transformers does; /health reports that length.
- `encoding_format` is "float" (default) or "base64": little-endian float32 bytes, base64'd, which is what the
  openai Python client asks for by default and decodes. Beyond OpenAI, "int8", "uint8", "binary" and "ubinary"
  answer each embedding as a JSON list of integers, exactly sentence-transformers' `quantize_embeddings` of the
  float vector (see `votive.models.embedding_controls.quantize`): int8 / uint8 put each number in one of 256
  buckets between a low and a high value per dimension; binary / ubinary pack the signs 8 to a byte
  (`ceil(dimensions / 8)` integers, first dimension in the top bit; binary is the byte minus 128).
  The buckets' ranges: the request's `quantization_ranges`, [lo, hi] for every dimension or [[lo, ...], [hi,
  ...]] with one pair per returned dimension (sentence-transformers' `ranges`: e.g. the per-dimension min and max
  of a calibration corpus's embeddings); without it, [-1, 1] for a model that normalises (every number of a unit
  vector lies there: exact, never clipped, but coarse: about 0.008 per bucket), and a 400 for one that does not.
  Never from the request's own texts, as sentence-transformers falls back to: the codes would then change with
  what else was sent.
- `dimensions` (OpenAI's): the first `dimensions` numbers of the embedding, L2-normalised again when the model
  normalises (unit vectors, as OpenAI answers; sentence-transformers' `truncate_dim` with
  `normalize_embeddings=True`), as they are when it does not. Only for dimensions the model was trained to be
  shortened to (Matryoshka), as its config.json declares them (`matryoshka_dimensions`: [...], or
  `is_matryoshka`: true for any, as vLLM reads them) or VOTIVE_MATRYOSHKA_DIMS overrides; else a 400, since
  cutting an embedding that was not trained for it quietly makes it worse. A request may insist with
  `"allow_untrained_dimensions": true`. The model's own dimension is always accepted; below 1 or above it, a 400.
- `input_type` picks the instruction prefix from the model's config_sentence_transformers.json `prompts`: a
  prompt name of the model ("query", "passage", ...) or an alias: "query" and "search_query" mean the model's
  "query" or "search_query" prompt, "document", "passage", "corpus" and "search_document" its first of
  "document", "passage", "corpus", "search_document" (none configured: no prefix, and no default prompt either,
  as sentence-transformers' encode_query; its encode_document would take an unconfigured "document" as "" before
  a configured "passage", votive takes the configured one). Without `input_type`, the model's
  `default_prompt_name` applies (if any), as in sentence-transformers' encode.
  Anything else is a 400 naming the choices. The prefix is tokenized with the text, so it counts in `usage`
  and in the `max_seq_length` truncation.
- `user` and fields OpenAI may add later are ignored.
- `usage.prompt_tokens` counts the tokens embedded, [CLS], [SEP] and the prompt prefix included, after truncation.
- A float response takes about 21 bytes per number: at 384 dimensions, some 780 texts fill Lambda's 6 MB response
  limit, and a larger answer is refused with a 400 that suggests base64 (5.3 bytes per number): before anything
  is computed when the inputs, dimensions and encoding_format already say it cannot fit (`answer_floor_bytes`),
  else once computed.
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from votive.errors import InputError, VotiveFault
from votive.handlers import events, settings
from votive.handlers.http_errors import HttpError

if TYPE_CHECKING:
    from votive.sources import ResolvedSource

DEFAULT_MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
MAX_INPUTS_CAP = events.LAMBDA_PAYLOAD_LIMIT // 3  # a 6 MB body holds no more JSON strings ("",) than this
DEFAULT_BATCH_SIZE = 32  # texts per forward pass; sentence-transformers' default
ENCODING_FORMATS = ("float", "base64", "int8", "uint8", "binary", "ubinary")
QUANTIZED = ("int8", "uint8", "binary", "ubinary")  # answered as integer lists: sentence-transformers' precisions
UNIT_RANGES = [-1.0, 1.0]  # the int8 / uint8 ranges of a normalising model when a request sends none

Handler = Callable[[Any, Any], Any]  # (event, context) -> Lambda's answer


@dataclass(frozen=True)
class Settings:
    """The handler's configuration, as the VOTIVE_* environment variables give it."""

    model: str | ResolvedSource  # VOTIVE_MODEL: the source votive.load resolves (or one resolved already)
    max_inputs: int = DEFAULT_MAX_INPUTS  # VOTIVE_MAX_INPUTS
    batch_size: int = DEFAULT_BATCH_SIZE  # VOTIVE_BATCH_SIZE
    matryoshka_dims: tuple[int, ...] | str | None = None  # VOTIVE_MATRYOSHKA_DIMS: dimensions, "any", or the model's

    @classmethod
    def from_env(cls, environ: Mapping[str, str], source: ResolvedSource | None = None) -> "Settings":
        """Read and check the settings (`source`, when given, is the model instead of VOTIVE_MODEL). Raises
        VotiveFault (Votive.ConfigError) naming the bad variable."""
        model = settings.required_model(environ, "a model folder, a weight file, hf:org/name or pkg:NAME, "
                                                 "e.g. VOTIVE_MODEL=minilm", source)
        return cls(model, settings.positive_int(environ, "VOTIVE_MAX_INPUTS", DEFAULT_MAX_INPUTS,
                                                maximum=MAX_INPUTS_CAP),
                   settings.positive_int(environ, "VOTIVE_BATCH_SIZE", DEFAULT_BATCH_SIZE),
                   _matryoshka_setting(environ.get("VOTIVE_MATRYOSHKA_DIMS", "")))


@dataclass(frozen=True)
class EmbeddingRequest:
    """A checked /v1/embeddings request."""

    texts: list[str]
    encoding_format: str = "float"  # one of ENCODING_FORMATS
    dimensions: int | None = None  # fewer dimensions than the model's, or None
    prompt: str | None = None  # the prefix input_type chose ("" for none), or None: the model's default prompt
    ranges: list | None = None  # int8 / uint8: [lo, hi] or [[lo, ...], [hi, ...]]

    def options(self) -> dict:
        """The keyword arguments of the model's `encode` this request needs (none for a plain one)."""
        options = {}
        if self.prompt is not None:
            options["prompt"] = self.prompt
        if self.dimensions is not None:
            options["truncate_dim"] = self.dimensions
        if self.encoding_format in QUANTIZED:
            options["precision"] = self.encoding_format
            if self.ranges is not None:
                options["ranges"] = self.ranges
        return options


class EmbeddingsAPI:
    """The routes of an embedding endpoint around one loaded model.

    Args:
        model: an encoder as `votive.load` returns it: `.encode(texts, batch_size) -> (array (n, dim), n_tokens)`,
            `.model_id`, `.dim`, `.backend`, `.max_seq_length`; for the controls, `.encode(..., prompt=,
            truncate_dim=, precision=, ranges=)`, `.prompts` (`for_input_type`, `input_types`),
            `.matryoshka_dims` and `.normalized`, as `SentenceEncoder` has them.
        max_inputs: the most texts one request may send.
        batch_size: texts per forward pass.
        matryoshka_dims: the dimensions a request may ask for (a tuple, or "any"), in place of the model's own
            `matryoshka_dims`; None keeps the model's.
    """

    def __init__(self, model, *, max_inputs: int = DEFAULT_MAX_INPUTS, batch_size: int = DEFAULT_BATCH_SIZE,
                 matryoshka_dims: tuple[int, ...] | str | None = None):
        self.model = model
        self.max_inputs = max_inputs
        self.batch_size = batch_size
        if isinstance(matryoshka_dims, tuple) and max(matryoshka_dims) > model.dim:
            raise VotiveFault(VotiveFault.CONFIG_ERROR, f"VOTIVE_MATRYOSHKA_DIMS names {max(matryoshka_dims)}, but "
                                                        f"{model.model_id} makes {model.dim}-dimensional embeddings")
        dims = getattr(model, "matryoshka_dims", None) if matryoshka_dims is None else matryoshka_dims
        if isinstance(dims, tuple) and dims == tuple(range(1, model.dim + 1)):  # is_matryoshka: true
            dims = "any"
        self.matryoshka_dims = dims  # the dimensions a request may cut to: a tuple, "any", or None
        self.dims_from_setting = matryoshka_dims is not None  # VOTIVE_MATRYOSHKA_DIMS, not the model's config

    def routes(self) -> events.Routes:
        return {"/v1/embeddings": {"POST": self.embeddings}, "/embeddings": {"POST": self.embeddings},
                "/health": {"GET": self.health}}

    def embeddings(self, request: events.Request) -> dict:
        """POST /v1/embeddings: OpenAI's request in, OpenAI's response out."""
        req = self.parse(request.json())
        _refuse_oversized_answer(req, self.model.dim)
        try:
            vectors, n_tokens = self.model.encode(req.texts, batch_size=self.batch_size, **req.options())
        except InputError as e:  # the model's own checks on its input: still the client's to fix
            raise HttpError(400, str(e), param="input", code="invalid_input") from None
        vectors = self._checked(vectors, req)
        if req.encoding_format == "base64":
            data = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
        else:
            data = vectors.tolist()  # floats, or the quantized formats' integers
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "model": self.model.model_id,
            "usage": {"prompt_tokens": n_tokens, "total_tokens": n_tokens},
        }

    def health(self, request: events.Request) -> dict:
        """GET /health: what is served and with which limits."""
        from votive import __version__

        m = self.model
        prompts = getattr(m, "prompts", None)
        dims = self.matryoshka_dims
        return {"status": "ok", "model": m.model_id, "dimension": m.dim, "backend": m.backend,
                "max_seq_length": m.max_seq_length, "max_inputs": self.max_inputs, "batch_size": self.batch_size,
                "encoding_formats": list(ENCODING_FORMATS),
                "matryoshka_dimensions": list(dims) if isinstance(dims, tuple) else dims,
                "input_types": prompts.input_types() if prompts is not None else [],
                "votive": __version__}

    def parse(self, body) -> EmbeddingRequest:
        """Check an embeddings request body. HttpError 400 naming the bad field."""
        if not isinstance(body, dict):
            raise HttpError(400, f"the request body must be a JSON object, found a JSON {events.json_type(body)}",
                            code="invalid_type")
        if "input" not in body:
            raise HttpError(400, "'input' is required: a string or a list of strings", param="input",
                            code="missing_input")
        texts = _texts(body["input"], self.max_inputs)
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise HttpError(400, f"'model' must be a string, found a JSON {events.json_type(model)}",
                            param="model", code="invalid_type")
        encoding_format = body.get("encoding_format") or "float"
        if encoding_format not in ENCODING_FORMATS:
            raise HttpError(400, f"'encoding_format' is {encoding_format!r}; expected one of "
                                 f"{', '.join(map(repr, ENCODING_FORMATS))}", param="encoding_format",
                            code="invalid_value")
        dimensions = self._dimensions(body)
        return EmbeddingRequest(texts, encoding_format, dimensions, self._prompt(body.get("input_type")),
                                self._ranges(body.get("quantization_ranges"), encoding_format,
                                             dimensions or self.model.dim))

    def _dimensions(self, body: dict) -> int | None:
        """OpenAI's `dimensions` -> fewer dimensions than the model's, or None."""
        dimensions, m = body.get("dimensions"), self.model
        if dimensions is None:
            return None
        if not isinstance(dimensions, int) or isinstance(dimensions, bool):
            raise HttpError(400, f"'dimensions' must be an integer, found a JSON {events.json_type(dimensions)}",
                            param="dimensions", code="invalid_type")
        if not 1 <= dimensions <= m.dim:
            raise HttpError(400, f"'dimensions' is {dimensions}, but {m.model_id} makes {m.dim}-dimensional "
                                 f"embeddings; send an integer from 1 to {m.dim}", param="dimensions",
                            code="invalid_value")
        if dimensions == m.dim:
            return None
        insist = body.get("allow_untrained_dimensions")
        if insist is not None and not isinstance(insist, bool):
            raise HttpError(400, f"'allow_untrained_dimensions' must be a boolean, found a JSON "
                                 f"{events.json_type(insist)}", param="allow_untrained_dimensions",
                            code="invalid_type")
        allowed = self.matryoshka_dims
        if insist or allowed == "any" or (allowed is not None and dimensions in allowed):
            return dimensions
        listed = ", ".join(map(str, allowed or ()))
        trained = ("declares no Matryoshka dimensions it was trained to be shortened to (config.json "
                   "matryoshka_dimensions)" if allowed is None else
                   f"is served shortened to {listed} only (VOTIVE_MATRYOSHKA_DIMS)" if self.dims_from_setting else
                   f"was trained to be shortened to {listed} only")
        raise HttpError(400, f"'dimensions' is {dimensions}, but {m.model_id} makes {m.dim}-dimensional embeddings "
                             f"and {trained}; send one of those, leave 'dimensions' out, or send "
                             f"\"allow_untrained_dimensions\": true to cut anyway", param="dimensions",
                        code="invalid_value")

    def _prompt(self, input_type) -> str | None:
        """`input_type` -> the prompt prefix it picks ("" for none), or None: the model's default prompt."""
        if input_type is None:
            return None
        if not isinstance(input_type, str):
            raise HttpError(400, f"'input_type' must be a string, found a JSON {events.json_type(input_type)}",
                            param="input_type", code="invalid_type")
        prompts = getattr(self.model, "prompts", None)  # None: a model without prompt support takes no input_type
        if prompts is not None:
            try:
                return prompts.for_input_type(input_type)
            except InputError:
                pass  # answered below, with the choices in the request's words
        choices = prompts.input_types() if prompts is not None else []
        raise HttpError(400, f"'input_type' is {input_type!r}; {self.model.model_id} takes "
                             f"{'one of ' + ', '.join(map(repr, choices)) if choices else 'none'}",
                        param="input_type", code="invalid_value")

    def _ranges(self, ranges, encoding_format: str, dim: int) -> list | None:
        """`quantization_ranges` -> [lo, hi] or [[lo] * dim, [hi] * dim] for int8 / uint8, else None."""
        param = "quantization_ranges"
        if ranges is None:
            if encoding_format not in ("int8", "uint8"):
                return None
            if getattr(self.model, "normalized", False):
                return UNIT_RANGES
            raise HttpError(400, f"encoding_format {encoding_format!r} needs 'quantization_ranges' for "
                                 f"{self.model.model_id}: its embeddings are not normalised, so no range holds them "
                                 f"all; send [lo, hi], or [[lo, ...], [hi, ...]] with {dim} of each (e.g. the "
                                 f"per-dimension min and max of a calibration set)", param=param,
                            code="missing_ranges")
        if encoding_format not in ("int8", "uint8"):
            raise HttpError(400, f"'{param}' applies to encoding_format 'int8' and 'uint8' only, not "
                                 f"{encoding_format!r}", param=param, code="invalid_value")
        if isinstance(ranges, list) and len(ranges) == 2 and all(_is_number(v) for v in ranges):
            return ranges
        if (isinstance(ranges, list) and len(ranges) == 2
                and all(isinstance(r, list) and len(r) == dim and all(map(_is_number, r)) for r in ranges)):
            return ranges
        raise HttpError(400, f"'{param}' must be [lo, hi] (finite numbers) or [[lo, ...], [hi, ...]] with {dim} "
                             f"numbers each, one pair per returned dimension", param=param, code="invalid_value")

    def _checked(self, vectors, req: EmbeddingRequest):
        """The model's output as host float32 (little-endian, C order), or the quantized formats' int8 / uint8;
        RuntimeError (a 500) if it is wrong."""
        import numpy as np  # already loaded by the model; not needed to import this module

        if not isinstance(vectors, np.ndarray) and hasattr(vectors, "get"):  # cupy: copy to host explicitly
            vectors = vectors.get()
        n, dim = len(req.texts), req.dimensions or self.model.dim
        if req.encoding_format in QUANTIZED:
            dtype = np.int8 if req.encoding_format in ("int8", "binary") else np.uint8
            cols = dim if req.encoding_format.endswith("int8") else -(-dim // 8)
            if vectors.dtype != dtype or vectors.shape != (n, cols):
                raise RuntimeError(f"the model returned {vectors.dtype} embeddings of shape {vectors.shape}, "
                                   f"expected {np.dtype(dtype)} ({n}, {cols})")
            return vectors
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.shape != (n, dim):
            raise RuntimeError(f"the model returned embeddings of shape {vectors.shape}, expected ({n}, {dim})")
        if not np.isfinite(vectors).all():
            bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise RuntimeError(f"the model returned non-finite values (NaN or inf), first in input[{bad}]")
        return vectors


def make_handler(model, *, max_inputs: int = DEFAULT_MAX_INPUTS, batch_size: int = DEFAULT_BATCH_SIZE,
                 matryoshka_dims: tuple[int, ...] | str | None = None) -> Handler:
    """A Lambda handler `(event, context) -> answer` serving `model`; see the module docstring for what it accepts.

    Example:
        >>> handler = make_handler(votive.load("minilm"))                  # doctest: +SKIP
        >>> handler({"input": "hello"}, None)["data"][0]["index"]         # doctest: +SKIP
        0
    """
    routes = EmbeddingsAPI(model, max_inputs=max_inputs, batch_size=batch_size,
                           matryoshka_dims=matryoshka_dims).routes()

    def handler(event, context):
        return events.serve(event, routes, default_path="/v1/embeddings",
                            oversize_hint="send fewer inputs per request, or ask for encoding_format 'base64' "
                                          "(about a quarter of the size)", context=context)

    return handler


def load_handler(environ: Mapping[str, str] | None = None, load: Callable | None = None, *,
                 source: ResolvedSource | None = None) -> Handler:
    """Read the settings from `environ` (default os.environ), load the model with `load` (default votive.load):
    `source` when the caller resolved it already (`votive serve`, a built function's entry point), else
    VOTIVE_MODEL.

    Raises:
        VotiveFault: Votive.ConfigError for a missing or malformed setting, Votive.ModelLoadError when the model
            cannot be loaded (the message carries the cause's).
    """
    config = Settings.from_env(os.environ if environ is None else environ, source)
    model = settings.load_model(config.model, load)
    return make_handler(model, max_inputs=config.max_inputs, batch_size=config.batch_size,
                        matryoshka_dims=config.matryoshka_dims)


__getattr__ = settings.handler_on_access(globals(), load_handler)


# --------------------------------------------------------------------------------------------------- addenda
def _texts(value, max_inputs: int) -> list[str]:
    """OpenAI's `input` -> a list of texts, or HttpError 400 saying what is wrong and where."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise HttpError(400, f"'input' must be a string or a list of strings, found a JSON "
                             f"{events.json_type(value)}", param="input", code="invalid_type")
    if not value:
        raise HttpError(400, "'input' is an empty list; send at least one string", param="input",
                        code="empty_input")
    if len(value) > max_inputs:
        raise HttpError(400, f"'input' has {len(value)} items, more than the {max_inputs} one request may send; "
                             f"split it over several requests", param="input", code="too_many_inputs")
    for i, item in enumerate(value):
        if isinstance(item, str):
            continue
        if (isinstance(item, int) and not isinstance(item, bool)) or isinstance(item, list):
            raise HttpError(400, f"'input' holds token ids (input[{i}] is a JSON {events.json_type(item)}); this "
                                 f"endpoint embeds text only: send strings", param="input", code="unsupported_input")
        raise HttpError(400, f"input[{i}] is a JSON {events.json_type(item)}; expected a string", param="input",
                        code="invalid_type")
    i = events.first_non_unicode(value)
    if i is not None:
        raise HttpError(400, f"input[{i}] contains an unpaired UTF-16 surrogate; texts must be valid Unicode",
                        param="input", code="invalid_text")
    return value


# The fewest bytes one returned number takes in the answer's JSON, per encoding_format, and one item's wrapping
# ({"object":"embedding","index":i,"embedding":...},). A float32 from a model, printed as the double it is, takes
# 17 significant digits (about 21 bytes) unless it happens to be a short binary fraction; 10 is well under any
# real embedding's, so the refusal below never turns away an answer that would have fit. Integers take at least
# one digit and a comma.
_MIN_NUMBER_BYTES = {"float": 10, "int8": 2, "uint8": 2, "binary": 2, "ubinary": 2}
_MIN_ITEM_BYTES = 40


def answer_floor_bytes(n_texts: int, dim: int, encoding_format: str) -> int:
    """The least an embeddings answer of `n_texts` vectors of `dim` numbers can weigh, known before computing:
    base64 exactly (4 characters per 3 bytes of little-endian float32), the JSON formats from their shortest
    numbers; binary / ubinary pack 8 dimensions per integer."""
    if encoding_format == "base64":
        per_item = 4 * -(-dim * 4 // 3) + 2  # the quoted base64 text
    else:
        numbers = -(-dim // 8) if encoding_format in ("binary", "ubinary") else dim
        per_item = numbers * _MIN_NUMBER_BYTES[encoding_format]
    return n_texts * (per_item + _MIN_ITEM_BYTES)


def _refuse_oversized_answer(req: EmbeddingRequest, model_dim: int) -> None:
    """A 400 before any computing for a request whose answer cannot fit Lambda's 6 MB response limit (its size
    follows from the inputs, dimensions and encoding_format), instead of computing it and refusing it after."""
    dim = req.dimensions or model_dim
    floor = answer_floor_bytes(len(req.texts), dim, req.encoding_format)
    if floor <= events.LAMBDA_PAYLOAD_LIMIT:
        return
    fits = max(1, len(req.texts) * events.LAMBDA_PAYLOAD_LIMIT // floor)
    hint = "" if req.encoding_format == "base64" else ", or ask for encoding_format 'base64' (about a quarter " \
                                                      "of the size of 'float')"
    raise HttpError(400, f"the answer would be at least {floor / 2**20:.1f} MiB ({len(req.texts)} inputs of {dim} "
                         f"dimensions as {req.encoding_format!r}), over the {events.LAMBDA_PAYLOAD_LIMIT / 2**20:.0f} "
                         f"MiB a Lambda function may return; send at most about {fits} inputs per request{hint}",
                    param="input", code="response_too_large")


def _matryoshka_setting(raw: str) -> tuple[int, ...] | str | None:
    """VOTIVE_MATRYOSHKA_DIMS: "" (the model's own), "any", or comma-separated positive integers."""
    raw = raw.strip()
    if not raw:
        return None
    if raw == "any":
        return "any"
    parts = [p.strip() for p in raw.split(",")]
    if not all(p.isdigit() and int(p) > 0 for p in parts):
        raise VotiveFault(VotiveFault.CONFIG_ERROR, f"VOTIVE_MATRYOSHKA_DIMS={raw!r} is not 'any' or a list of "
                                                    f"positive integers such as '64,128,256'")
    return tuple(sorted({int(p) for p in parts}))


def _is_number(value) -> bool:
    """A finite JSON number (Python's json reads NaN and Infinity too)."""
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


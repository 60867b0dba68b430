"""Lambda handler: an embedding model behind OpenAI's embeddings API, on a function URL or by direct invoke.

Set the function's handler to `votive.handlers.embeddings.handler`.

Routes:
    POST /v1/embeddings   OpenAI's request and response (also at /embeddings)
    GET  /health          the served model: id, dimension, backend, limits

A direct invoke's event is the request body itself (`{"input": ["a", "b"]}` -> the OpenAI response dict), or a
routed request (`{"path": "/health"}`); see `votive.handlers.events`.

Configuration, read once at init from the environment:
    VOTIVE_MODEL       the model, as `votive.load` takes it (folder, file, hf:org/name, pkg:NAME, alias); required
    VOTIVE_MAX_INPUTS  texts one request may send, default 2048 (OpenAI's limit)
    VOTIVE_BATCH_SIZE  texts per forward pass, default 32
    VOTIVE_BACKEND     numpy (default) or cupy, read by `votive.load`

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
  openai Python client asks for by default and decodes.
- `dimensions` is accepted only when it equals the model's dimension: cutting an embedding the model was not
  trained to shorten (Matryoshka) would quietly make it worse.
- `user` and fields OpenAI may add later are ignored.
- `usage.prompt_tokens` counts the tokens embedded, [CLS] and [SEP] included, after truncation.
- A float response takes about 21 bytes per number: at 384 dimensions, some 780 texts fill Lambda's 6 MB response
  limit, and a larger answer is refused with a 400 that suggests base64 (5.3 bytes per number).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from votive.errors import InputError
from votive.handlers import events, settings
from votive.handlers.http_errors import HttpError

if TYPE_CHECKING:
    from votive.sources import ResolvedSource

DEFAULT_MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
DEFAULT_BATCH_SIZE = 32  # texts per forward pass; sentence-transformers' default
ENCODING_FORMATS = ("float", "base64")

Handler = Callable[[Any, Any], Any]  # (event, context) -> Lambda's answer


@dataclass(frozen=True)
class Settings:
    """The handler's configuration, as the VOTIVE_* environment variables give it."""

    model: str | ResolvedSource  # VOTIVE_MODEL: the source votive.load resolves (or one resolved already)
    max_inputs: int = DEFAULT_MAX_INPUTS  # VOTIVE_MAX_INPUTS
    batch_size: int = DEFAULT_BATCH_SIZE  # VOTIVE_BATCH_SIZE

    @classmethod
    def from_env(cls, environ: Mapping[str, str], source: ResolvedSource | None = None) -> "Settings":
        """Read and check the settings (`source`, when given, is the model instead of VOTIVE_MODEL). Raises
        VotiveFault (Votive.ConfigError) naming the bad variable."""
        model = settings.required_model(environ, "a model folder, a weight file, hf:org/name or pkg:NAME, "
                                                 "e.g. VOTIVE_MODEL=minilm", source)
        return cls(model, settings.positive_int(environ, "VOTIVE_MAX_INPUTS", DEFAULT_MAX_INPUTS),
                   settings.positive_int(environ, "VOTIVE_BATCH_SIZE", DEFAULT_BATCH_SIZE))


class EmbeddingsAPI:
    """The routes of an embedding endpoint around one loaded model.

    Args:
        model: an encoder as `votive.load` returns it: `.encode(texts, batch_size) -> (array (n, dim), n_tokens)`,
            `.model_id`, `.dim`, `.backend`, `.max_seq_length`.
        max_inputs: the most texts one request may send.
        batch_size: texts per forward pass.
    """

    def __init__(self, model, *, max_inputs: int = DEFAULT_MAX_INPUTS, batch_size: int = DEFAULT_BATCH_SIZE):
        self.model = model
        self.max_inputs = max_inputs
        self.batch_size = batch_size

    def routes(self) -> events.Routes:
        return {"/v1/embeddings": {"POST": self.embeddings}, "/embeddings": {"POST": self.embeddings},
                "/health": {"GET": self.health}}

    def embeddings(self, request: events.Request) -> dict:
        """POST /v1/embeddings: OpenAI's request in, OpenAI's response out."""
        texts, encoding_format = self.parse(request.json())
        try:
            vectors, n_tokens = self.model.encode(texts, batch_size=self.batch_size)
        except InputError as e:  # the model's own checks on its input: still the client's to fix
            raise HttpError(400, str(e), param="input", code="invalid_input") from None
        vectors = self._checked(vectors, len(texts))
        if encoding_format == "base64":
            data = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
        else:
            data = vectors.tolist()
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
        return {"status": "ok", "model": m.model_id, "dimension": m.dim, "backend": m.backend,
                "max_seq_length": m.max_seq_length, "max_inputs": self.max_inputs, "batch_size": self.batch_size,
                "votive": __version__}

    def parse(self, body) -> tuple[list[str], str]:
        """Check an embeddings request body -> (texts, encoding_format). HttpError 400 naming the bad field."""
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
            raise HttpError(400, f"'encoding_format' is {encoding_format!r}; expected 'float' or 'base64'",
                            param="encoding_format", code="invalid_value")
        dimensions = body.get("dimensions")
        if dimensions is not None:
            if not isinstance(dimensions, int) or isinstance(dimensions, bool):
                raise HttpError(400, f"'dimensions' must be an integer, found a JSON {events.json_type(dimensions)}",
                                param="dimensions", code="invalid_type")
            if dimensions != self.model.dim:
                raise HttpError(400, f"'dimensions' is {dimensions}, but {self.model.model_id} makes {self.model.dim}-"
                                     f"dimensional embeddings and was not trained to shorten them; send "
                                     f"{self.model.dim} or leave 'dimensions' out", param="dimensions",
                                code="invalid_value")
        return texts, encoding_format

    def _checked(self, vectors, n: int):
        """The model's output as host float32 (little-endian, C order), or RuntimeError (a 500) if it is wrong."""
        import numpy as np  # already loaded by the model; not needed to import this module

        if not isinstance(vectors, np.ndarray) and hasattr(vectors, "get"):  # cupy: copy to host explicitly
            vectors = vectors.get()
        vectors = np.ascontiguousarray(vectors, dtype="<f4")
        if vectors.shape != (n, self.model.dim):
            raise RuntimeError(f"the model returned embeddings of shape {vectors.shape}, expected ({n}, "
                               f"{self.model.dim})")
        if not np.isfinite(vectors).all():
            bad = int(np.flatnonzero(~np.isfinite(vectors).all(axis=1))[0])
            raise RuntimeError(f"the model returned non-finite values (NaN or inf), first in input[{bad}]")
        return vectors


def make_handler(model, *, max_inputs: int = DEFAULT_MAX_INPUTS, batch_size: int = DEFAULT_BATCH_SIZE) -> Handler:
    """A Lambda handler `(event, context) -> answer` serving `model`; see the module docstring for what it accepts.

    Example:
        >>> handler = make_handler(votive.load("minilm"))                  # doctest: +SKIP
        >>> handler({"input": "hello"}, None)["data"][0]["index"]         # doctest: +SKIP
        0
    """
    routes = EmbeddingsAPI(model, max_inputs=max_inputs, batch_size=batch_size).routes()

    def handler(event, context):
        return events.serve(event, routes, default_path="/v1/embeddings",
                            oversize_hint="send fewer inputs per request, or ask for encoding_format 'base64' "
                                          "(about a quarter of the size)")

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
    return make_handler(model, max_inputs=config.max_inputs, batch_size=config.batch_size)


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
    # JSON may escape half a surrogate pair ("\ud800"); such a str is not Unicode text and the tokenizer rejects
    # it with a bare TypeError. One encode of the whole list finds out; only then look for the culprit.
    try:
        "".join(value).encode("utf-8")
    except UnicodeEncodeError:
        i = next(i for i, text in enumerate(value) if not _is_unicode(text))
        raise HttpError(400, f"input[{i}] contains an unpaired UTF-16 surrogate; texts must be valid Unicode",
                        param="input", code="invalid_text") from None
    return value


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True

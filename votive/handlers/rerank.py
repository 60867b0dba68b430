"""Lambda handler: a cross-encoder reranker behind the rerank API that Cohere's and Jina's clients call.

Set the function's handler to `votive.handlers.rerank.handler`. `votive serve`, `votive build` and the Modal app
pick it by themselves for a Hugging Face `...ForSequenceClassification` folder.

Routes:
    POST /v1/rerank   a query and documents in, the documents' relevance scores out, best first (also at
                      /v2/rerank, Cohere's v2 path, and /rerank)
    GET  /health      the served model: id, backend, limits

    request:  {"model": "any", "query": "What is the capital of France?",
               "documents": ["Paris is the capital.", {"text": "Berlin is big."}],
               "top_n": 1, "return_documents": true}
    response: {"id": "…", "model": "ms-marco-MiniLM-L6-v2",
               "results": [{"index": 0, "relevance_score": 0.998, "document": {"text": "Paris is the capital."}}],
               "usage": {"total_tokens": 31}}

That is Cohere's rerank (v1 and v2 requests; the v2 response plus v1's `document`) and Jina's (`model`, `usage`,
`document` as an object): their clients read the fields they know and ignore the rest. A direct invoke's event
is the request body itself (`{"query": ..., "documents": [...]}` -> the response dict), or a routed request
(`{"path": "/health"}`); see `votive.handlers.events`.

Configuration, read once at init from the environment:
    VOTIVE_MODEL          the reranker, as `votive.load` takes it; required
    VOTIVE_MAX_DOCUMENTS  documents one request may send, default 1000 (Cohere's advice per request)
    VOTIVE_BATCH_SIZE     (query, document) pairs per forward pass, default 32 (sentence-transformers' default)
    VOTIVE_BACKEND        numpy (default) or cupy, read by `votive.load`

Decisions (the clients' behaviour where it costs nothing, strict where leniency would hide a wrong answer):
- `model` may name anything: one model is served, and the response's `model` says which one answered.
- `query` is a string with something besides whitespace. `documents` is a list of 1 to VOTIVE_MAX_DOCUMENTS
  items, each a string or an object with a string `text` (Cohere v1, Jina); "" is a document like any other.
  TEI's `texts` is refused with a 400 that says to send `documents` (TEI answers a bare list, which these
  clients do not read).
- A (query, document) pair longer than the model's `max_seq_length` tokens is truncated 'longest_first', as
  sentence-transformers' CrossEncoder does (the longer text loses tokens first; two long texts keep half each);
  /health reports that length.
- `top_n` is a positive integer; absent or null, or more than the documents, returns them all. Results are best
  first; equal scores keep the documents' order.
- `return_documents` is a boolean, default false (Cohere's default; Jina's is true, so Jina clients that read
  `document` send it): true adds `{"text": ...}` to each result.
- `relevance_score` is the model's score as sentence-transformers' CrossEncoder gives it: the sigmoid of the
  logit (a probability) unless the model's config saves another activation (ms-marco cross-encoders save
  Identity: raw logits).
- Cohere's `rank_fields`, `max_tokens_per_doc` and `max_chunks_per_doc` are refused when set (not null):
  silently ignoring them would change what is scored. Other fields (`user`, ...) are ignored.
- `usage.total_tokens` counts the tokens the model read over all pairs, special tokens included, after
  truncation.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from votive.errors import InputError, VotiveFault
from votive.handlers import events, settings
from votive.handlers.http_errors import HttpError

if TYPE_CHECKING:
    from votive.sources import ResolvedSource

DEFAULT_MAX_DOCUMENTS = 1000  # Cohere advises at most 1000 documents per rerank request
DEFAULT_BATCH_SIZE = 32  # pairs per forward pass; sentence-transformers' CrossEncoder.predict default
UNSUPPORTED_FIELDS = {  # Cohere's fields we do not implement, with what they would do
    "rank_fields": "ranks on chosen fields of structured documents",
    "max_tokens_per_doc": "truncates each document to that many tokens first",
    "max_chunks_per_doc": "splits long documents into chunks",
}

Handler = Callable[[Any, Any], Any]  # (event, context) -> Lambda's answer


@dataclass(frozen=True)
class Settings:
    """The handler's configuration, as the VOTIVE_* environment variables give it."""

    model: str | ResolvedSource  # VOTIVE_MODEL: the source votive.load resolves (or one resolved already)
    max_documents: int = DEFAULT_MAX_DOCUMENTS  # VOTIVE_MAX_DOCUMENTS
    batch_size: int = DEFAULT_BATCH_SIZE  # VOTIVE_BATCH_SIZE

    @classmethod
    def from_env(cls, environ: Mapping[str, str], source: ResolvedSource | None = None) -> "Settings":
        """Read and check the settings (`source`, when given, is the model instead of VOTIVE_MODEL). Raises
        VotiveFault (Votive.ConfigError) naming the bad variable."""
        model = settings.required_model(environ, "a cross-encoder folder (config.json naming a "
                                                 "...ForSequenceClassification), hf:org/name or pkg:NAME", source)
        return cls(model, settings.positive_int(environ, "VOTIVE_MAX_DOCUMENTS", DEFAULT_MAX_DOCUMENTS),
                   settings.positive_int(environ, "VOTIVE_BATCH_SIZE", DEFAULT_BATCH_SIZE))


@dataclass(frozen=True)
class RerankRequest:
    """A checked rerank request."""

    query: str
    documents: list[str]
    top_n: int  # how many results to return, at most len(documents)
    return_documents: bool


class RerankAPI:
    """The routes of a rerank endpoint around one loaded model.

    Args:
        model: a reranker as `votive.load` returns it: `.predict(pairs, batch_size) -> (scores (n,), n_tokens)`,
            `.model_id`, `.backend`, `.max_seq_length`.
        max_documents: the most documents one request may send.
        batch_size: pairs per forward pass.
    """

    def __init__(self, model, *, max_documents: int = DEFAULT_MAX_DOCUMENTS, batch_size: int = DEFAULT_BATCH_SIZE):
        self.model = model
        self.max_documents = max_documents
        self.batch_size = batch_size

    def routes(self) -> events.Routes:
        rerank = {"POST": self.rerank}
        return {"/v1/rerank": rerank, "/v2/rerank": rerank, "/rerank": rerank, "/health": {"GET": self.health}}

    def rerank(self, request: events.Request) -> dict:
        """POST /v1/rerank: score every document against the query, answer the best first."""
        req = self.parse(request.json())
        try:
            scores, n_tokens = self.model.predict([(req.query, d) for d in req.documents], batch_size=self.batch_size)
        except InputError as e:  # the model's own checks on its input: still the client's to fix
            raise HttpError(400, str(e), param="documents", code="invalid_input") from None
        scores = self._checked(scores, len(req.documents))
        ranking = sorted(range(len(scores)), key=lambda i: -scores[i])[: req.top_n]  # stable: ties keep order
        results = []
        for i in ranking:
            result = {"index": i, "relevance_score": float(scores[i])}
            if req.return_documents:
                result["document"] = {"text": req.documents[i]}
            results.append(result)
        return {"id": str(uuid.uuid4()), "model": self.model.model_id, "results": results,
                "usage": {"total_tokens": n_tokens}}

    def health(self, request: events.Request) -> dict:
        """GET /health: what is served and with which limits."""
        from votive import __version__

        m = self.model
        return {"status": "ok", "model": m.model_id, "kind": "rerank", "backend": m.backend,
                "max_seq_length": m.max_seq_length, "max_documents": self.max_documents,
                "batch_size": self.batch_size, "votive": __version__}

    def parse(self, body) -> RerankRequest:
        """Check a rerank request body. HttpError 400 naming the bad field."""
        if not isinstance(body, dict):
            raise HttpError(400, f"the request body must be a JSON object, found a JSON {events.json_type(body)}",
                            code="invalid_type")
        for name, what in UNSUPPORTED_FIELDS.items():
            if body.get(name) is not None:
                raise HttpError(400, f"'{name}' ({what}) is not supported by this endpoint; leave it out",
                                param=name, code="unsupported_parameter")
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise HttpError(400, f"'model' must be a string, found a JSON {events.json_type(model)}",
                            param="model", code="invalid_type")
        query = body.get("query")
        if not isinstance(query, str):
            found = "it is missing" if "query" not in body else f"found a JSON {events.json_type(query)}"
            raise HttpError(400, f"'query' must be a string; {found}", param="query",
                            code="missing_query" if "query" not in body else "invalid_type")
        if not query.strip():
            raise HttpError(400, "'query' is empty; send the text to rank the documents against", param="query",
                            code="empty_query")
        if events.first_non_unicode([query]) is not None:
            raise HttpError(400, "'query' contains an unpaired UTF-16 surrogate; texts must be valid Unicode",
                            param="query", code="invalid_text")
        documents = self._documents(body)
        top_n = body.get("top_n")
        if top_n is not None and (not isinstance(top_n, int) or isinstance(top_n, bool)):
            raise HttpError(400, f"'top_n' must be an integer, found a JSON {events.json_type(top_n)}",
                            param="top_n", code="invalid_type")
        if top_n is not None and top_n < 1:
            raise HttpError(400, f"'top_n' is {top_n}; send a positive integer, or leave it out for every document",
                            param="top_n", code="invalid_value")
        return_documents = body.get("return_documents", False)
        if return_documents is None:
            return_documents = False
        if not isinstance(return_documents, bool):
            raise HttpError(400, f"'return_documents' must be true or false, found a JSON "
                                 f"{events.json_type(return_documents)}", param="return_documents",
                            code="invalid_type")
        n = len(documents)
        return RerankRequest(query, documents, n if top_n is None else min(top_n, n), return_documents)

    def _documents(self, body: dict) -> list[str]:
        """`documents` -> its texts, or HttpError 400 saying what is wrong and where."""
        if "documents" not in body:
            hint = (" (this endpoint takes Cohere's and Jina's request shape: send the texts as 'documents', not "
                    "TEI's 'texts')" if "texts" in body else "")
            raise HttpError(400, f"'documents' is required: a list of strings or {{\"text\": ...}} objects{hint}",
                            param="documents", code="missing_documents")
        value = body["documents"]
        if not isinstance(value, list):
            raise HttpError(400, f"'documents' must be a list, found a JSON {events.json_type(value)}",
                            param="documents", code="invalid_type")
        if not value:
            raise HttpError(400, "'documents' is an empty list; send at least one document", param="documents",
                            code="empty_documents")
        if len(value) > self.max_documents:
            raise HttpError(400, f"'documents' has {len(value)} items, more than the {self.max_documents} one "
                                 f"request may send; split it over several requests", param="documents",
                            code="too_many_documents")
        texts = []
        for i, item in enumerate(value):
            if isinstance(item, dict):
                item = item.get("text")
                if not isinstance(item, str):
                    raise HttpError(400, f"documents[{i}] is an object without a string 'text' (found "
                                         f"{events.json_type(item)})", param="documents", code="invalid_type")
            elif not isinstance(item, str):
                raise HttpError(400, f"documents[{i}] is a JSON {events.json_type(item)}; expected a string or "
                                     f"{{\"text\": ...}}", param="documents", code="invalid_type")
            texts.append(item)
        i = events.first_non_unicode(texts)
        if i is not None:
            raise HttpError(400, f"documents[{i}] contains an unpaired UTF-16 surrogate; texts must be valid Unicode",
                            param="documents", code="invalid_text")
        return texts

    def _checked(self, scores, n: int):
        """The model's scores as host float32 (n,), or RuntimeError (a 500) if they are wrong."""
        import numpy as np  # already loaded by the model; not needed to import this module

        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (n,):
            raise RuntimeError(f"the model returned scores of shape {scores.shape}, expected ({n},)")
        if not np.isfinite(scores).all():
            bad = int(np.flatnonzero(~np.isfinite(scores))[0])
            raise RuntimeError(f"the model returned a non-finite score (NaN or inf), first for documents[{bad}]")
        return scores


def make_handler(model, *, max_documents: int = DEFAULT_MAX_DOCUMENTS,
                 batch_size: int = DEFAULT_BATCH_SIZE) -> Handler:
    """A Lambda handler `(event, context) -> answer` serving `model`; see the module docstring for what it accepts.

    Example:
        >>> handler = make_handler(votive.load("cross-encoder/ms-marco-MiniLM-L6-v2"))     # doctest: +SKIP
        >>> handler({"query": "hi", "documents": ["hello", "bye"]}, None)["results"][0]   # doctest: +SKIP
        {'index': 0, 'relevance_score': 0.93}
    """
    routes = RerankAPI(model, max_documents=max_documents, batch_size=batch_size).routes()

    def handler(event, context):
        return events.serve(event, routes, default_path="/v1/rerank",
                            oversize_hint="send fewer documents, ask for a smaller top_n, or leave "
                                          "return_documents false")

    return handler


def load_handler(environ: Mapping[str, str] | None = None, load: Callable | None = None, *,
                 source: ResolvedSource | None = None) -> Handler:
    """Read the settings from `environ` (default os.environ), load the model with `load` (default votive.load):
    `source` when the caller resolved it already (`votive serve`, a built function's entry point), else
    VOTIVE_MODEL.

    Raises:
        VotiveFault: Votive.ConfigError for a missing or malformed setting, or a model that is not a reranker;
            Votive.ModelLoadError when the model cannot be loaded (the message carries the cause's).
    """
    config = Settings.from_env(os.environ if environ is None else environ, source)
    model = settings.load_model(config.model, load)
    kind = getattr(model, "kind", None)
    if kind != "rerank":
        raise VotiveFault(VotiveFault.CONFIG_ERROR,
                          f"{settings.model_name(config.model)} is not a cross-encoder reranker (it loads as kind "
                          f"{kind!r}; a reranker is a folder whose config.json names a "
                          f"...ForSequenceClassification); serve it with its own handler (votive serve picks one "
                          f"by itself)")
    return make_handler(model, max_documents=config.max_documents, batch_size=config.batch_size)


__getattr__ = settings.handler_on_access(globals(), load_handler)

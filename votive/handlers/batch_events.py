"""Batches from a Step Functions Distributed Map, answered by any votive handler as a direct invoke.

A Map state with an ItemBatcher invokes the function with `{"Items": [item, ...], "BatchInput": {...}}`. The
export (`votive export stepfunctions`, votive.deploy.aws.stepfunctions) sets BatchInput to `{"field": F,
"id_field": I}`: F is the item field holding the text, I the one holding its id. The handler's own route answers
the batch, and the result has one entry per item, in order:

- embeddings: the batch is one /v1/embeddings request; `{"results": [{"id", "embedding": [floats]}], "usage"}`;
- rerank: each item (`{"query": ..., F: [documents]}`) is one /v1/rerank request; `{"results": [{"id",
  "results": [{"index", "relevance_score"}]}]}`;
- generation: each item's F (a prompt, or a list of chat messages) is one completion; `{"results": [{"id",
  "text", "finish_reason"}]}`.
Any other fields of BatchInput's `request` object go into every request (e.g. {"max_tokens": 64}). An item
without the field is the whole batch's 400: Step Functions counts it against ToleratedFailurePercentage.
"""

from __future__ import annotations

from typing import Any, Callable

from votive.handlers.http_errors import HttpError

Call = Callable[[str, dict], Any]  # (path, JSON body) -> the route's answer body


def is_batch_event(event) -> bool:
    return isinstance(event, dict) and isinstance(event.get("Items"), list) and "rawPath" not in event


def answer_batch(event: dict, default_path: str, call: Call) -> dict:
    """The batch's answer, through `call` (the handler's routes). Raises HttpError 400 for a malformed batch."""
    settings = event.get("BatchInput") or {}
    if not isinstance(settings, dict):
        raise HttpError(400, "BatchInput must be an object")
    items = event["Items"]
    field = settings.get("field", "text")
    id_field = settings.get("id_field")
    extra = settings.get("request") or {}
    if not isinstance(extra, dict):
        raise HttpError(400, "BatchInput.request must be an object")
    ids = [_item(item, id_field, i) if id_field else i for i, item in enumerate(items)]
    if default_path.endswith("/embeddings"):
        texts = [_item(item, field, i) for i, item in enumerate(items)]
        answer = call(default_path, {**extra, "input": texts})
        data = sorted(answer["data"], key=lambda d: d["index"])
        return {"results": [{"id": i, "embedding": d["embedding"]} for i, d in zip(ids, data)],
                "usage": answer.get("usage")}
    results = []
    for i, item in enumerate(items):
        value = _item(item, field, i)
        if default_path.endswith("/rerank"):
            answer = call(default_path, {**extra, "query": _item(item, "query", i), "documents": value})
            results.append({"id": ids[i], "results": answer["results"]})
            continue
        chat = isinstance(value, list)
        answer = call("/v1/chat/completions" if chat else "/v1/completions",
                      {**extra, ("messages" if chat else "prompt"): value})
        choice = answer["choices"][0]
        results.append({"id": ids[i], "text": choice["message"]["content"] if chat else choice["text"],
                        "finish_reason": choice.get("finish_reason")})
    return {"results": results}


def _item(item, field: str, index: int):
    if not isinstance(item, dict) or field not in item:
        raise HttpError(400, f"batch item {index} has no {field!r} field (BatchInput.field / id_field name the item "
                             f"fields to read)")
    return item[field]

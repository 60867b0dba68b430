"""What `votive map` asks of a function per batch of rows, and what it keeps of the answers.

- `embed`: a batch of rows is one POST /v1/embeddings with `input` the batch's texts (the `--field` column) and
  `encoding_format` "base64", so that the float32 vectors arrive exactly; a shard is `part-NNNNN.npy` (float32,
  (rows, dim)) beside `part-NNNNN.ids.json`.
- `rerank`: one row is one POST /v1/rerank: `query` (the `--query-field` column) and `documents` (the `--field`
  column, a list); a shard is `part-NNNNN.jsonl`, one {"id", "results"} line per row, beside its ids file.
- `generate`: one row is one POST /v1/completions with `prompt` (the `--field` column), or /v1/chat/completions
  when that column holds a list of messages; a shard is JSONL lines {"id", "text", "finish_reason", "usage"}.
`params` (the user's `--params` JSON object) is merged into every request body, e.g. {"max_tokens": 64}.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass
from typing import Any

from votive.client.corpus import Row
from votive.errors import InputError

TASKS = ("embed", "rerank", "generate")
DEFAULT_FIELDS = {"embed": "text", "rerank": "documents", "generate": "prompt"}
KIND_TASKS = {"embeddings": "embed", "rerank": "rerank", "generation": "generate"}  # /health "kind" -> task


class AnswerError(Exception):
    """A 200 answer that does not have the shape the task expects."""


@dataclass(frozen=True)
class Task:
    name: str  # one of TASKS
    field: str  # the column the texts (prompts, documents) are in
    query_field: str = "query"  # rerank: the column the query is in
    params: dict | None = None  # merged into every request body

    @property
    def rows_per_request(self) -> int | None:
        """None: as many as the batch size; 1: one row per request."""
        return None if self.name == "embed" else 1

    def check_row(self, row: Row, source: str) -> None:
        """InputError naming the row when it lacks what the task sends."""
        value = row.values.get(self.field)
        if self.name == "embed" and not isinstance(value, str):
            raise InputError(f"{source}: row {row.index} has no text in {self.field!r} (found {value!r:.60})")
        if self.name == "rerank":
            if not isinstance(row.values.get(self.query_field), str):
                raise InputError(f"{source}: row {row.index} has no query in {self.query_field!r}")
            if not (isinstance(value, list) and value):
                raise InputError(f"{source}: row {row.index}: {self.field!r} must be a list of documents")
        if self.name == "generate" and not isinstance(value, (str, list)):
            raise InputError(f"{source}: row {row.index} has no prompt or messages in {self.field!r}")

    def request(self, rows: list[Row]) -> tuple[str, dict]:
        """(path, JSON body) asking for `rows`."""
        extra = dict(self.params or {})
        if self.name == "embed":
            return "/v1/embeddings", {**extra, "input": [r.values[self.field] for r in rows],
                                      "encoding_format": "base64"}
        (row,) = rows
        if self.name == "rerank":
            return "/v1/rerank", {**extra, "query": row.values[self.query_field], "documents": row.values[self.field]}
        value = row.values[self.field]
        if isinstance(value, list):
            return "/v1/chat/completions", {**extra, "messages": value}
        return "/v1/completions", {**extra, "prompt": value}

    def results(self, rows: list[Row], answer: Any) -> list[Any]:
        """One result per row from a 200 answer: a float32 vector (embed) or a JSON object."""
        import numpy as np

        try:
            if self.name == "embed":
                data = sorted(answer["data"], key=lambda item: item["index"])
                if len(data) != len(rows):
                    raise AnswerError(f"{len(data)} embeddings for {len(rows)} inputs")
                return [np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in data]
            if self.name == "rerank":
                return [{"id": rows[0].id, "results": answer["results"]}]
            choice = answer["choices"][0]
            text = choice["message"]["content"] if "message" in choice else choice["text"]
            return [{"id": rows[0].id, "text": text, "finish_reason": choice.get("finish_reason"),
                     "usage": answer.get("usage")}]
        except (KeyError, IndexError, TypeError, ValueError) as err:
            raise AnswerError(f"unexpected answer ({type(err).__name__}: {err})") from None

    def shard_files(self, name: str, rows: list[Row], results: list[Any]) -> dict[str, bytes]:
        """The bytes of a finished shard's files."""
        files = {f"{name}.ids.json": json.dumps([r.id for r in rows]).encode()}
        if self.name == "embed":
            import numpy as np

            buffer = io.BytesIO()
            np.save(buffer, np.stack(results).astype("<f4"), allow_pickle=False)
            files[f"{name}.npy"] = buffer.getvalue()
        else:
            files[f"{name}.jsonl"] = b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in results)
        return files

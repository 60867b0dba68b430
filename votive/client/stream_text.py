"""The text in a streamed answer: OpenAI-style server-sent events (`data: {...}` chat or completion chunks, then
`data: [DONE]`) turned into the words they carry, as they arrive, for `votive invoke --stream`.

    >>> reader = StreamText()
    >>> reader.feed(b'data: {"choices": [{"delta": {"content": "Hel"}}]}\\n\\ndata: {"choi')
    'Hel'
    >>> reader.feed(b'ces": [{"text": "lo"}]}\\n\\ndata: [DONE]\\n\\n'), reader.done
    ('lo', True)

A body that is not an event stream (an embeddings answer, a plain-text stream) passes through unchanged.
"""

from __future__ import annotations

import codecs
import json

_SSE_STARTS = (b"data:", b"event:", b"id:", b"retry:", b":")


class StreamText:
    """Feed it the body's pieces in order; each call returns the text that became complete."""

    def __init__(self) -> None:
        self.is_sse: bool | None = None  # decided by the first bytes
        self.done = False  # `data: [DONE]` seen
        self.errors: list[str] = []  # `data: {"error": {...}}` events: the stream failed part-way
        self._pending = b""
        self._cr = b""  # a trailing \r held back
        self._text = codecs.getincrementaldecoder("utf-8")("replace")

    def feed(self, chunk: bytes) -> str:
        if self.is_sse is None:
            head = (self._pending + chunk).lstrip()
            if not head or any(start.startswith(head) for start in _SSE_STARTS):  # too short to tell yet
                self._pending += chunk
                return ""
            self.is_sse = head.startswith(_SSE_STARTS)
        if not self.is_sse:
            chunk, self._pending = self._pending + chunk, b""
            return self._text.decode(chunk)  # a character split between chunks waits for its other half
        chunk, self._cr = self._cr + chunk, b""
        if chunk.endswith(b"\r"):  # maybe the first half of a \r\n: wait for the next piece
            chunk, self._cr = chunk[:-1], b"\r"
        self._pending += chunk.replace(b"\r\n", b"\n")
        *events, self._pending = self._pending.split(b"\n\n")
        return "".join(self._event(event) for event in events)

    def end(self) -> str:
        """What is left when the body ends (an event without its blank line, or undecided bytes)."""
        rest, self._pending, self._cr = self._pending + self._cr, b"", b""
        if not self.is_sse:
            return self._text.decode(rest, final=True)
        return self._event(rest)

    def _event(self, event: bytes) -> str:
        data = "\n".join(line[5:].removeprefix(" ") for line in event.decode("utf-8", "replace").split("\n")
                         if line.startswith("data:"))
        if not data:
            return ""
        if data.strip() == "[DONE]":
            self.done = True
            return ""
        try:
            chunk = json.loads(data)
        except ValueError:
            return data  # not JSON: the data itself is the text
        if not isinstance(chunk, dict):
            return ""
        if "error" in chunk:
            error = chunk["error"]
            self.errors.append(error.get("message", str(error)) if isinstance(error, dict) else str(error))
            return ""
        text = []
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text.append(delta.get("content") or choice.get("text") or "")
        return "".join(text)

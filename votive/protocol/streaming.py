"""A handler's streamed HTTP answer, and the bytes Lambda's response streaming carries it in.

A function URL in RESPONSE_STREAM invoke mode lets a function send its answer while it is still being produced.
The runtime posts it to the Runtime API as a chunked body of content type
`application/vnd.awslambda.http-integration-response`: a JSON prelude `{"statusCode", "headers", "cookies"}`,
then eight NUL bytes, then the body bytes as they come (the framing Node's `awslambda.HttpResponseStream.from`
writes; AWS Lambda developer guide, "Implementing response streaming in a custom runtime").

A votive handler streams by returning a `StreamingResponse` instead of a payload 2.0 dict. Two things turn it
into those bytes with `integration_stream`: votive's own runtime loop (`votive.handlers.stream_runtime`), which
is what runs on Lambda, and the in-process emulator behind `votive serve`. awslambdaric cannot stream; it would
fail to serialize the object (Runtime.MarshalError).

Example:
    >>> answer = StreamingResponse(200, {"content-type": "text/plain"}, iter([b"hel", b"lo"]))
    >>> prelude, body = b"".join(integration_stream(answer)).split(PRELUDE_DELIMITER)
    >>> prelude, body
    (b'{"statusCode":200,"headers":{"content-type":"text/plain"},"cookies":[]}', b'hello')
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

from votive.protocol.payload_v2 import response_body

INTEGRATION_CONTENT_TYPE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\0" * 8  # ends the JSON prelude; JSON text never holds a NUL byte, so it cannot be mistaken

# Server-Sent Events, as OpenAI's streaming API sends them: one `data:` line per event, a blank line after it.
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
SSE_DONE = b"data: [DONE]\n\n"


@dataclass
class StreamingResponse:
    """An HTTP answer whose body is produced while it is sent.

    `body` yields bytes; closing it (when the client has gone, or the time is up) must stop whatever produces
    them, so a generator with a `finally` is the natural body.
    """

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: Iterable[bytes] = ()
    cookies: list[str] = field(default_factory=list)

    def close(self) -> None:
        """Stop the body's producer (a no-op for bodies that cannot be closed)."""
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


def integration_stream(response: StreamingResponse) -> Iterator[bytes]:
    """The bytes a runtime posts for `response`: the prelude and its delimiter, then each body chunk.

    Closing this iterator early closes the response's body too.
    """
    prelude = {"statusCode": response.status, "headers": response.headers, "cookies": response.cookies}
    try:
        yield json.dumps(prelude, separators=(",", ":")).encode("utf-8") + PRELUDE_DELIMITER
        for chunk in response.body:
            if chunk:  # an empty chunk would read as the end of a chunked body
                yield bytes(chunk)
    finally:
        response.close()


def as_streaming(result: Any) -> StreamingResponse:
    """What a buffered function URL makes of a handler's return value, as a StreamingResponse.

    A function URL in RESPONSE_STREAM mode does not read a returned payload 2.0 dict (statusCode, headers, body)
    the way a buffered one does, so the runtime does it: a dict with `statusCode` gives that answer, any other
    value a 200 whose body is its JSON.

    Raises:
        ValueError: the body is marked isBase64Encoded but is not base64 (a MalformedResponse).
    """
    if not (isinstance(result, dict) and "statusCode" in result):
        body = json.dumps(result).encode("utf-8")
        return StreamingResponse(200, {"content-type": "application/json"}, [body])
    headers = {str(k): str(v) for k, v in (result.get("headers") or {}).items()}
    if not any(name.lower() == "content-type" for name in headers):
        headers["content-type"] = "application/json"
    body = response_body(result)  # read by the rules a buffered function URL follows
    return StreamingResponse(result["statusCode"], headers, [body], list(result.get("cookies") or []))


def sse_event(data: Any) -> bytes:
    """One Server-Sent Event carrying `data` as compact JSON."""
    return b"data: " + json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n\n"

"""A Lambda handler behind ASGI, so that the same routes answer on Modal (or any ASGI server) as on a function URL.

Each HTTP request becomes a function URL event (payload format 2.0, the body base64-encoded), the handler runs in
a worker thread (it is synchronous and may take a while), and its payload 2.0 answer becomes the HTTP response.
A streamed answer (the generation handler's `StreamingResponse`, for `"stream": true`) is sent chunk by chunk
as it is produced; a client that goes away closes it, which stops the generation.
Requests are served one at a time, as in one Lambda execution environment: the model's kernels are not meant
to be entered from two threads at once, and the platform scales by adding containers.

    >>> app = lambda_asgi_app(lambda event, context: {"statusCode": 200, "body": "ok"})
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any, Callable

MAX_REQUEST_BYTES = 6 * 1024 * 1024  # Lambda's request payload limit; the handler's answers assume it


def lambda_asgi_app(handler: Callable[[Any, Any], Any], *, max_request_bytes: int = MAX_REQUEST_BYTES):
    """An ASGI 3 application serving `handler(event, context)` (context is None)."""
    lock = threading.Lock()  # held from the call to the last byte of a streamed answer

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body, too_large = b"", False
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > max_request_bytes:
                too_large = True
            if not message.get("more_body") or too_large:
                break
        if too_large:
            error = {"error": {"message": f"the request body is over {max_request_bytes} bytes", "type":
                               "invalid_request_error", "code": "request_too_large"}}
            await _send(send, {"statusCode": 413, "body": json.dumps(error)})
            return
        await asyncio.to_thread(lock.acquire)
        try:
            answer = await asyncio.to_thread(handler, url_event(scope, body), None)
            if _is_streaming(answer):
                await _stream(send, answer)
            else:
                await _send(send, answer)
        finally:
            lock.release()

    return app


def url_event(scope: dict, body: bytes) -> dict:
    """The function URL event (payload 2.0) for an ASGI HTTP request."""
    headers: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]},{text}" if key in headers else text  # repeated headers, as Lambda joins them
    path = scope.get("path") or "/"
    method = scope.get("method", "GET").upper()
    return {
        "version": "2.0",
        "rawPath": path,
        "rawQueryString": scope.get("query_string", b"").decode("latin-1"),
        "headers": headers,
        "requestContext": {"http": {"method": method, "path": path, "protocol": f"HTTP/{scope.get('http_version', '1.1')}"}},
        "body": base64.b64encode(body).decode("ascii") if body else None,
        "isBase64Encoded": bool(body),
    }


def _is_streaming(answer: Any) -> bool:
    """A `votive.protocol.streaming.StreamingResponse` (told by its shape, so this module imports no handler)."""
    return all(hasattr(answer, name) for name in ("status", "headers", "body", "close"))


async def _stream(send, answer) -> None:
    """Send a streamed answer chunk by chunk as the handler's body yields them (it runs in a worker thread)."""
    headers = [(k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in answer.headers.items()]
    chunks = iter(answer.body)
    try:
        await send({"type": "http.response.start", "status": int(answer.status), "headers": headers})
        while True:
            chunk = await asyncio.to_thread(next, chunks, None)
            if chunk is None:
                break
            if chunk:
                await send({"type": "http.response.body", "body": bytes(chunk), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        answer.close()  # also when the client went away: stops the generation


async def _send(send, answer: Any) -> None:
    """Send a payload 2.0 answer; anything else (a bare dict or string) is a 200 JSON body, as Lambda treats it."""
    if not (isinstance(answer, dict) and "statusCode" in answer):
        answer = {"statusCode": 200, "body": answer if isinstance(answer, str) else json.dumps(answer)}
    body = answer.get("body") or ""
    data = base64.b64decode(body) if answer.get("isBase64Encoded") else str(body).encode("utf-8")
    headers = {k.lower(): str(v) for k, v in (answer.get("headers") or {}).items()}
    headers.setdefault("content-type", "application/json")
    headers["content-length"] = str(len(data))
    await send({"type": "http.response.start", "status": int(answer["statusCode"]),
                "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]})
    await send({"type": "http.response.body", "body": data})

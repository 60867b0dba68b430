"""HTTP request -> Lambda function URL event, and handler payload -> HTTP response (payload format 2.0).

A function URL hands the function the event of API Gateway's payload format version 2.0 and maps what the
function returns back to HTTP. The rules below follow the AWS Lambda developer guide, "Invoking Lambda
function URLs" (request and response payloads, cookies) and API Gateway's "payload format version 2.0":

- header names are lower-cased; a header sent twice is one comma-joined value; the Cookie header moves into
  `cookies` (a list) and leaves `headers`;
- query parameters sent twice are comma-joined; `queryStringParameters` is absent when there are none;
- the body stays text only for textual content types (text/*, JSON, XML, JavaScript) without a
  content-encoding; everything else, form posts and a missing content type included, arrives base64-encoded
  with `isBase64Encoded` true (checked against the real service by ministack PR #766);
- a response dict with `statusCode` is taken as {statusCode, headers, cookies, body, isBase64Encoded}; any other
  JSON value (a dict without statusCode, a list, string or number) becomes a 200 application/json response
  whose body is that JSON;
- a streamed response (a function URL in RESPONSE_STREAM mode) begins with a JSON prelude {statusCode, headers,
  cookies} read by the same rules (`stream_prelude`); its body is what follows the prelude's eight NUL bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Protocol


class BodyStream(Protocol):
    """The rest of a streamed answer, as the emulators' `ResponseStream` holds it."""

    content_type: str

    def read(self, timeout: float | None = None) -> bytes | None: ...

    def cancel(self) -> None: ...

# Content types whose bodies a function URL passes as text; compared without parameters (charset).
TEXT_CONTENT_TYPES = ("application/json", "application/xml", "application/javascript")
# Placeholders function URLs put where API Gateway would have a route and a stage.
DEFAULT_ROUTE = "$default"
# The id a local function URL goes by (a real one is 32 lowercase letters and digits).
LOCAL_URL_ID = "votivelocalfunctionurl0000000000"

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class MalformedResponse(ValueError):
    """The function returned a structured response a function URL cannot turn into HTTP (it answers 502)."""


@dataclass
class HttpRequest:
    """One HTTP request as the front received it."""

    method: str
    target: str  # the request target: path plus optional ?query
    headers: list[tuple[str, str]]  # in arrival order, repeats kept
    body: bytes = b""
    protocol: str = "HTTP/1.1"
    source_ip: str = "127.0.0.1"
    server_port: int = 0


@dataclass
class HttpResponse:
    """What the front writes back."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)  # Set-Cookie may repeat
    body: bytes = b""  # for a streamed answer: the part of the body already read with the prelude
    stream: BodyStream | None = None  # the rest of a streamed answer, sent chunked as it arrives


def is_text_body(content_type: str | None, content_encoding: str | None = None) -> bool:
    """Whether a function URL would pass a body with these headers as text rather than base64."""
    if content_encoding and content_encoding.strip().lower() not in ("", "identity"):
        return False
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.startswith("text/") or media_type in TEXT_CONTENT_TYPES


def request_time(epoch_s: float) -> str:
    """requestContext.time: '25/Nov/2026:02:38:00 +0000', spelled the same whatever the locale."""
    t = time.gmtime(epoch_s)
    return f"{t.tm_mday:02d}/{_MONTHS[t.tm_mon - 1]}/{t.tm_year}:{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"


def new_trace_id(epoch_s: float) -> str:
    """An X-Ray trace header: Root=1-<8 hex epoch seconds>-<24 hex random>."""
    return f"Root=1-{int(epoch_s):08x}-{secrets.token_hex(12)}"


def request_event(request: HttpRequest, *, request_id: str, now: float, url_id: str = LOCAL_URL_ID) -> dict:
    """The payload-format-2.0 event a function URL sends the function for `request`.

    Args:
        request: the HTTP request.
        request_id: the invocation id (requestContext.requestId, and the context's aws_request_id).
        now: epoch seconds at which the request arrived.
        url_id: the function URL's id (requestContext.apiId and domainPrefix).

    Example:
        >>> e = request_event(HttpRequest("GET", "/a?x=1&x=2", [("Host", "h")]), request_id="r", now=0)
        >>> e["queryStringParameters"], e["requestContext"]["time"]
        ({'x': '1,2'}, '01/Jan/1970:00:00:00 +0000')
    """
    split = urllib.parse.urlsplit(request.target)
    path = split.path or "/"
    headers: dict[str, str] = {}
    cookies: list[str] = []
    for name, value in request.headers:
        key = name.lower()
        if key == "cookie":
            cookies += [c.strip() for c in value.split(";") if c.strip()]
        else:
            headers[key] = f"{headers[key]},{value}" if key in headers else value

    # What the function URL front adds on its way to the function.
    forwarded = headers.get("x-forwarded-for")
    headers["x-forwarded-for"] = f"{forwarded}, {request.source_ip}" if forwarded else request.source_ip
    headers["x-forwarded-proto"] = "http"
    headers["x-forwarded-port"] = str(request.server_port)
    headers.setdefault("x-amzn-trace-id", new_trace_id(now))
    domain = headers.get("host", f"127.0.0.1:{request.server_port}")

    query: dict[str, str] = {}
    for key, value in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value

    event: dict = {
        "version": "2.0",
        "routeKey": DEFAULT_ROUTE,
        "rawPath": path,
        "rawQueryString": split.query,
    }
    if cookies:
        event["cookies"] = cookies
    event["headers"] = headers
    if query:
        event["queryStringParameters"] = query
    event["requestContext"] = {
        "accountId": "anonymous",  # what a function URL with auth type NONE reports
        "apiId": url_id,
        "domainName": domain,
        "domainPrefix": url_id,
        "http": {
            "method": request.method.upper(),
            "path": path,
            "protocol": request.protocol,
            "sourceIp": request.source_ip,
            "userAgent": headers.get("user-agent", ""),
        },
        "requestId": request_id,
        "routeKey": DEFAULT_ROUTE,
        "stage": DEFAULT_ROUTE,
        "time": request_time(now),
        "timeEpoch": int(now * 1000),
    }
    body, is_base64 = _event_body(request.body, headers.get("content-type"), headers.get("content-encoding"))
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = is_base64
    return event


def _event_body(raw: bytes, content_type: str | None, content_encoding: str | None) -> tuple[str | None, bool]:
    if not raw:
        return None, False
    if is_text_body(content_type, content_encoding):
        try:
            return raw.decode("utf-8"), False
        except UnicodeDecodeError:
            pass  # declared text but not UTF-8: base64 keeps the bytes intact
    return base64.b64encode(raw).decode("ascii"), True


def http_response(payload: bytes) -> HttpResponse:
    """Map what the function returned (its JSON payload, as the runtime posted it) to the HTTP response.

    Raises:
        MalformedResponse: a structured response (one with statusCode) that cannot be honoured.
    """
    try:
        value = json.loads(payload)
    except ValueError:
        # Not JSON (a handler returning bytes): pass it through rather than guess.
        return HttpResponse(200, [("content-type", "application/octet-stream")], payload)
    if not (isinstance(value, dict) and "statusCode" in value):
        return HttpResponse(200, [("content-type", "application/json")], payload)
    return _structured_response(value)


def stream_prelude(prelude: bytes) -> HttpResponse:
    """The status and headers a streamed response's prelude sets; the body is streamed after it.

    Raises:
        MalformedResponse: the prelude is not a JSON object, or names a status, header or cookie that cannot be sent.
    """
    try:
        value = json.loads(prelude)
    except ValueError as exc:
        raise MalformedResponse(f"the streamed response's prelude is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise MalformedResponse(f"the streamed response's prelude must be a JSON object, found {type(value).__name__}")
    return _structured_response({"statusCode": 200, **value, "body": None})


def _structured_response(value: dict) -> HttpResponse:
    status = value["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise MalformedResponse(f"statusCode must be an integer from 100 to 599, found {value['statusCode']!r}")

    raw_headers = value.get("headers") or {}
    if not isinstance(raw_headers, dict):
        raise MalformedResponse(f"headers must be an object, found {type(raw_headers).__name__}")
    headers = [(str(k), _header_value(v)) for k, v in raw_headers.items()]
    for name, val in headers:
        if _has_line_break(name + val) or not name:
            raise MalformedResponse(f"header {name!r} has an empty name or a line break")
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/json"))

    cookies = value.get("cookies") or []
    if not isinstance(cookies, list) or not all(isinstance(c, str) and not _has_line_break(c) for c in cookies):
        raise MalformedResponse("cookies must be a list of strings without line breaks")
    headers += [("set-cookie", c) for c in cookies]

    return HttpResponse(status, headers, response_body(value))


def response_body(value: dict) -> bytes:
    """The body bytes of a structured response: `body` as text, or base64-decoded when isBase64Encoded.

    Raises:
        MalformedResponse: isBase64Encoded is true but the body is not base64.
    """
    body = value.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        # API Gateway documents body as a string; serializing anything else is the lenient reading.
        return json.dumps(body).encode("utf-8")
    if value.get("isBase64Encoded") is not True:
        return body.encode("utf-8")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedResponse(f"isBase64Encoded is true but body is not base64: {exc}") from None


def _has_line_break(text: str) -> bool:
    return "\r" in text or "\n" in text


def _header_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def json_response(status: int, obj, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    """A small JSON answer the front gives on its own (413, 429, 502), as {"Message": ...} like the service."""
    return HttpResponse(status, [("content-type", "application/json"), *(headers or [])], json.dumps(obj).encode())

"""Lambda events in, one small `Request` to a route, Lambda's answer out: the HTTP plumbing every handler shares.

Two kinds of event reach a votive function:

- **Function URL events** (payload format 2.0, as also sent by API Gateway HTTP APIs set to 2.0): `version` "2.0",
  `rawPath`, `rawQueryString`, `requestContext.http.method`, lower-case `headers`, `body`, `isBase64Encoded`.
  They get a payload 2.0 response: `{"statusCode", "headers": {"content-type": "application/json"}, "body": JSON
  text, "isBase64Encoded": false}`, errors included (4xx for the client's mistakes, 500 for the model's).
- **Direct invokes** (`aws lambda invoke`, boto3 `invoke`), any other JSON object:
    - `{"path": "/health"}` or `{"path": "/v1/embeddings", "method": "POST", "body": {...}}` is routed like an
      HTTP request: `method` defaults to POST when there is a body, else GET; `body` is a JSON value, or JSON
      text (base64 when `isBase64Encoded`); `headers` is optional; a query string may follow the path.
    - anything else is itself the JSON body for the handler's default route, e.g. `{"input": "hello"}`.
  The answer is the response body (a dict). A refused request raises `VotiveFault` (`Votive.BadRequest` for a
  4xx, `Votive.ModelError` for a 500), which Lambda reports as a function error with errorType "VotiveFault".

Payload format 1.0 (API Gateway REST APIs) is refused with `Votive.UnsupportedEvent` rather than misread.

Example:
    >>> routes = {"/health": {"GET": lambda request: {"status": "ok"}}}
    >>> event = {"version": "2.0", "rawPath": "/health", "requestContext": {"http": {"method": "GET"}}}
    >>> serve(event, routes, default_path="/health")["body"]
    '{"status":"ok"}'
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import parse_qsl

from votive.errors import DeadlineExceeded, VotiveFault, reset_deadline, set_deadline
from votive.handlers.batch_events import answer_batch, is_batch_event
from votive.handlers.http_errors import HttpError

log = logging.getLogger("votive")

# Lambda refuses a synchronous invocation whose request, or response, is over 6 MB (function URLs included).
LAMBDA_PAYLOAD_LIMIT = 6 * 1024 * 1024

_NO_JSON = object()  # marks a Request whose body has not been parsed yet


@dataclass
class Request:
    """What a route sees of an invocation, whichever kind of event carried it."""

    method: str  # upper case: "GET", "POST"
    path: str  # "/v1/embeddings": no query string, no trailing slash
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    query: dict[str, str] = field(default_factory=dict)  # repeated keys joined by "," (as Lambda's own events do)
    body: bytes = b""  # as sent, base64 already decoded
    from_url: bool = False  # True: a function URL event, answered with a payload 2.0 response
    parsed: Any = _NO_JSON  # a direct invoke's body arrives already parsed; json() returns it as is

    def json(self) -> Any:
        """The body as JSON. Raises HttpError 400 when it is empty, not UTF-8, malformed, or nested too deep."""
        if self.parsed is not _NO_JSON:
            return self.parsed
        if not self.body:
            raise HttpError(400, "the request body is empty; expected a JSON object", code="invalid_json")
        try:
            self.parsed = json.loads(self.body)
        except UnicodeDecodeError as e:
            raise HttpError(400, f"the request body is not UTF-8 text ({e.reason} at byte {e.start})",
                            code="invalid_json") from None
        except json.JSONDecodeError as e:
            sent_as = self.headers.get("content-type")
            note = f"; it was sent as {sent_as!r}" if sent_as and "json" not in sent_as else ""
            raise HttpError(400, f"the request body is not valid JSON ({e.msg} at line {e.lineno} column "
                                 f"{e.colno}){note}", code="invalid_json") from None
        except RecursionError:
            raise HttpError(400, "the request body's JSON is nested too deeply", code="invalid_json") from None
        except ValueError as e:  # an integer past Python's int-from-text limit (4300 digits), as json.loads says
            raise HttpError(400, f"the request body's JSON has a number too long to read ({e})",
                            code="invalid_json") from None
        return self.parsed


@dataclass
class Response:
    """A route's answer when a plain 200 with a JSON body is not enough."""

    status: int = 200
    body: Any = None  # any JSON value
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[Request], Any]  # returns the JSON body of a 200, or a Response
Routes = dict[str, dict[str, Route]]  # path -> method -> route


def serve(event, routes: Routes, *, default_path: str, max_response_bytes: int = LAMBDA_PAYLOAD_LIMIT,
          oversize_hint: str = "ask for less in one request", context=None) -> dict:
    """Answer one Lambda event with `routes`: the whole per-invocation path of a votive handler.

    Args:
        event: the Lambda event, a function URL event or a direct invoke (see the module docstring).
        routes: path -> HTTP method -> route function.
        default_path: the route a direct invoke's bare body goes to (it is POSTed there).
        max_response_bytes: a function URL response over this is refused with a 400 instead of failing in Lambda.
        oversize_hint: how the client can get a smaller response; ends that 400's message.
        context: the invocation's Lambda context: its remaining time is the deadline the model's loops check
            (`votive.errors.check_deadline`); a route that runs past it raises DeadlineExceeded out of the handler,
            which Lambda (and the emulator) answers as the timeout it is.

    Returns:
        A payload 2.0 response for a function URL event; the response body for a direct invoke.

    Raises:
        VotiveFault: the event is of no kind we know, or a direct invoke was refused or failed.
    """
    from_url = is_url_event(event)
    request = None
    deadline = set_deadline(getattr(context, "get_remaining_time_in_millis", None))
    try:
        if not from_url and is_batch_event(event):  # a Step Functions Distributed Map batch (batch_events.py)
            return answer_batch(event, default_path, lambda path, body: dispatch(
                parse_direct_event({"path": path, "body": body}, default_path), routes).body)
        request = parse_url_event(event) if from_url else parse_direct_event(event, default_path)
        response = dispatch(request, routes)
        if not from_url:
            return response.body
        return url_response(response, max_response_bytes, oversize_hint)
    except DeadlineExceeded:
        raise  # a timeout, not the model's failure: Lambda answers it as one
    except HttpError as e:
        error, fault = e, None
        log.warning("%d %s: %s", e.status, _describe(request, event), e.message)
    except Exception as e:  # a route or the model failed: the log gets the trace, the client a plain 500
        fault = VotiveFault.from_exception(VotiveFault.MODEL_ERROR, e)
        log.error("500 %s: %s\n%s", _describe(request, event), fault.message, "".join(fault.trace).rstrip())
        error = HttpError(500, "the model failed to answer this request; the cause is in the function's log",
                          code="model_error")
    finally:
        reset_deadline(deadline)
    if from_url:
        return url_response(Response(error.status, error.body(), error.headers))
    if fault is None:
        fault = VotiveFault(VotiveFault.BAD_REQUEST,
                            f"{_describe(request, event)} answered {error.status}: {error.message}")
    raise fault


# ---------------------------------------------------------------------------------------------------- events
def is_url_event(event) -> bool:
    """True for a function URL (payload 2.0) event, False for a direct invoke; VotiveFault for anything else."""
    if not isinstance(event, dict):
        raise VotiveFault(VotiveFault.UNSUPPORTED_EVENT,
                          f"the event is a JSON {json_type(event)}; expected an object: a function URL event, a "
                          f'request body, or {{"path": ..., "method": ..., "body": ...}}')
    if event.get("version") == "2.0":
        return True
    if "requestContext" in event:
        version = event.get("version", "1.0")
        raise VotiveFault(VotiveFault.UNSUPPORTED_EVENT,
                          f"payload format version {version!r} is not supported; invoke through a function URL, "
                          f"or set the API Gateway integration to payload format 2.0")
    return False


def parse_url_event(event: dict) -> Request:
    """A function URL event (payload 2.0) -> Request. HttpError for a malformed event or body."""
    http = (event.get("requestContext") or {}).get("http") or {}
    method, path = http.get("method"), event.get("rawPath", http.get("path"))
    if not isinstance(method, str) or not isinstance(path, str):
        raise HttpError(400, "malformed function URL event: requestContext.http.method and rawPath must be "
                             f"strings, found {json_type(method)} and {json_type(path)}", code="invalid_event")
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    query = _parse_query(event.get("rawQueryString") or "")
    body = _decode_body(event.get("body"), bool(event.get("isBase64Encoded")))
    return Request(method.upper(), _clean_path(path), headers, query, body, from_url=True)


def parse_direct_event(event: dict, default_path: str) -> Request:
    """A direct invoke -> Request: `{"path", "method", "body", "headers"}`, or a bare body for default_path."""
    if "path" not in event:
        return Request("POST", default_path, parsed=event)
    path, body = event["path"], event.get("body")
    method = event.get("method") or ("POST" if body is not None else "GET")
    headers = event.get("headers") or {}
    if not isinstance(path, str) or not isinstance(method, str) or not isinstance(headers, dict):
        raise HttpError(400, "a routed direct invoke needs 'path' and 'method' as strings and 'headers' as an "
                             f"object; found {json_type(path)}, {json_type(method)} and {json_type(headers)}",
                        code="invalid_event")
    path, _, raw_query = path.partition("?")
    request = Request(method.upper(), _clean_path(path), {str(k).lower(): str(v) for k, v in headers.items()},
                      _parse_query(raw_query))
    if isinstance(body, str):  # JSON text, as in an HTTP request
        request.body = _decode_body(body, bool(event.get("isBase64Encoded")))
    elif body is not None:  # already a JSON value
        request.parsed = body
    return request


# ---------------------------------------------------------------------------------------------------- routing
def dispatch(request: Request, routes: Routes) -> Response:
    """Run the route for request.path and method (HEAD runs GET's): 404 for an unknown path, 405 (with `allow`)
    for a wrong method."""
    methods = routes.get(request.path)
    if methods is None:
        raise HttpError(404, f"no route {request.method} {request.path}; this function serves "
                             f"{', '.join(sorted(routes))}", code="not_found")
    route = methods.get(request.method)
    if route is None and request.method == "HEAD":  # HTTP's HEAD is a GET whose body the front does not send
        route = methods.get("GET")
    if route is None:
        allow = ", ".join(sorted(methods))
        raise HttpError(405, f"{request.method} is not allowed on {request.path}; use {allow}",
                        code="method_not_allowed", headers={"allow": allow})
    result = route(request)
    return result if isinstance(result, Response) else Response(200, result)


def url_response(response: Response, max_bytes: int = LAMBDA_PAYLOAD_LIMIT, oversize_hint: str = "") -> dict:
    """A payload 2.0 response. HttpError 400 when it would exceed what Lambda lets a function return."""
    text = json.dumps(response.body, separators=(",", ":"), allow_nan=False)  # NaN is not JSON: fail, not send
    # the body travels as a JSON string inside the response JSON, so its quotes and backslashes double
    size = len(text) + text.count('"') + text.count("\\") + 256
    if size > max_bytes:
        raise HttpError(400, f"the response would be {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.1f} MiB "
                             f"a Lambda function may return; {oversize_hint}", code="response_too_large")
    headers = {"content-type": "application/json", **response.headers}
    return {"statusCode": response.status, "headers": headers, "body": text, "isBase64Encoded": False}


# --------------------------------------------------------------------------------------------------- addenda
def _decode_body(body, is_base64: bool) -> bytes:
    if body is None:
        return b""
    if not isinstance(body, str):
        raise HttpError(400, f"malformed event: 'body' is a JSON {json_type(body)}, expected a string",
                        code="invalid_event")
    raw = body.encode("utf-8", "surrogatepass")  # a lone surrogate then fails as "not UTF-8" in Request.json
    if len(raw) > LAMBDA_PAYLOAD_LIMIT:
        raise HttpError(413, f"the request body is {len(raw)} bytes, over Lambda's {LAMBDA_PAYLOAD_LIMIT}-byte "
                             f"payload limit", code="body_too_large")
    if not is_base64:
        return raw
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise HttpError(400, f"the body is marked isBase64Encoded but is not valid base64 ({e})",
                        code="invalid_base64") from None


def _parse_query(raw: str) -> dict[str, str]:
    query: dict[str, str] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    return query


def _clean_path(path: str) -> str:
    return path.rstrip("/") or "/"


def _describe(request: Request | None, event) -> str:
    """'POST /v1/embeddings' for the log, from the request or, when it could not be parsed, the raw event."""
    if request is not None:
        return f"{request.method} {request.path}"
    if isinstance(event, dict) and event.get("version") == "2.0":
        method = ((event.get("requestContext") or {}).get("http") or {}).get("method")
        return f"{method} {event.get('rawPath')}"
    return "direct invoke"


def first_non_unicode(texts: list[str]) -> int | None:
    """The index of the first text holding an unpaired UTF-16 surrogate, or None when all are Unicode text.

    JSON may escape half a surrogate pair ("\\ud800"); such a str is not Unicode text, and the `tokenizers`
    library rejects it with a bare TypeError. One encode of the whole list finds out; only then is the culprit
    looked for."""
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        return next(i for i, text in enumerate(texts) if not _is_unicode(text))
    return None


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def json_type(value) -> str:
    """The JSON name of a parsed value's type, as a client would call it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)

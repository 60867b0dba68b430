"""votive's Lambda runtime loop: the Runtime API spoken by hand, so that a function URL can stream.

awslambdaric, the Python runtime client, posts a handler's return value in one piece, so a token stream would
reach the client only once the last token is made. This loop posts in the Runtime API's streaming response
mode instead. Make it the image's entry point and set the function URL's invoke mode to RESPONSE_STREAM:

    python -m votive.handlers.stream_runtime votive.handlers.generation.handler

(the handler defaults to $_HANDLER, as Lambda sets it from the function's configuration).

What it does (AWS Lambda developer guide: "Using the Lambda runtime API for custom runtimes", "Implementing
response streaming in a custom runtime"; the loop is awslambdaric's, `bootstrap.run`):

- **init**: load the handler as awslambdaric does (`votive.protocol.handler_loading.load_handler`: import the module,
  then read the attribute, which for votive's handlers loads the model). A failure is posted to /init/error
  and the process exits with status 1.
- **loop**: GET /invocation/next, call `handler(event, context)`, then
    - for a `StreamingResponse`: POST /invocation/{id}/response with `Lambda-Runtime-Function-Response-Mode:
      streaming`, `Transfer-Encoding: chunked` and content type `application/vnd.awslambda.http-integration-
      response`; the body is the prelude (status, headers, cookies), eight NUL bytes, then each chunk the moment
      the handler's body yields it. An exception from the body ends it with the trailers
      `Lambda-Runtime-Function-Error-Type` (the exception's type name) and `Lambda-Runtime-Function-Error-Body`
      (base64 of the error JSON), which tells Lambda the answer is incomplete.
    - for any other answer to a function URL event: the same, in one piece (`as_streaming`): in RESPONSE_STREAM
      mode the function URL no longer reads a returned {statusCode, headers, body} itself.
    - for the answer to any other event (a direct invoke): a plain POST of its JSON, as awslambdaric sends it.
    - for an exception: POST /invocation/{id}/error with {errorMessage, errorType, stackTrace}.
- If the Runtime API stops taking a stream (it closes the connection; the local emulator does this when the
  client hangs up), the handler's body is closed, which stops a generation, and the loop goes on.

Logs go to stderr (CloudWatch on Lambda).
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import sys
import time
import types
from dataclasses import dataclass
from typing import Any, Iterable, MutableMapping

from votive.protocol.chunked import chunk, last_chunk
from votive.protocol.faults import MARSHAL_ERROR, UNMARSHAL_ERROR, error_from_exception, lambda_error, marshal_result
from votive.protocol.handler_loading import HandlerInitError, load_handler
from votive.protocol.streaming import INTEGRATION_CONTENT_TYPE, StreamingResponse, as_streaming, integration_stream

log = logging.getLogger("votive.quant")

API_VERSION = "2018-06-01"
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"


@dataclass
class NextInvocation:
    """What GET /invocation/next answered: the event and the invocation's headers."""

    request_id: str  # Lambda-Runtime-Aws-Request-Id
    event: bytes  # the event, JSON
    headers: dict[str, str]  # every response header, lower-case names


class RuntimeApiClient:
    """The Runtime API over one kept-alive HTTP/1.1 connection (reopened after the API closes it).

    Args:
        address: host:port, as in $AWS_LAMBDA_RUNTIME_API.
    """

    def __init__(self, address: str):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"AWS_LAMBDA_RUNTIME_API must be host:port, found {address!r}")
        self.address = address
        # No timeout: between invocations Lambda freezes the process, and a poll may wait for minutes.
        self._connection = http.client.HTTPConnection(host, int(port))

    def next(self) -> NextInvocation:
        """Wait for the next event."""
        status, body, headers = self._request("GET", "invocation/next")
        if status != 200:
            raise ConnectionError(f"GET /invocation/next answered {status}: {body[:200]!r}")
        return NextInvocation(headers.get("lambda-runtime-aws-request-id", ""), body, headers)

    def post_response(self, request_id: str, data: bytes, content_type: str = "application/json") -> None:
        self._posted(f"invocation/{request_id}/response", data, {"Content-Type": content_type})

    def post_error(self, request_id: str, error: dict) -> None:
        self._posted(f"invocation/{request_id}/error", _json(error), _error_headers(error))

    def post_init_error(self, error: dict) -> None:
        self._posted("init/error", _json(error), _error_headers(error))

    def post_stream(self, request_id: str, chunks: Iterable[bytes], content_type: str) -> bool:
        """POST /invocation/{id}/response in streaming mode, each chunk sent as soon as `chunks` yields it.

        Returns:
            False when the Runtime API stopped taking the stream (it closed the connection), else True.

        Raises:
            Exception: whatever `chunks` raised; it was reported in the error trailers first.
        """
        connection = self._connection
        failure = None
        try:
            connection.putrequest("POST", f"/{API_VERSION}/runtime/invocation/{request_id}/response",
                                  skip_accept_encoding=True)
            for name, value in (("Lambda-Runtime-Function-Response-Mode", "streaming"),
                                ("Transfer-Encoding", "chunked"), ("Content-Type", content_type),
                                ("Trailer", f"{ERROR_TYPE}, {ERROR_BODY}")):
                connection.putheader(name, value)
            connection.endheaders()
            pieces = iter(chunks)
            while True:
                try:
                    data = next(pieces)
                except StopIteration:
                    break
                except Exception as exc:  # the handler's body failed: end the stream with the error trailers
                    failure = exc
                    break
                if data:
                    connection.send(chunk(data))
            trailers = None
            if failure is not None:
                error = error_from_exception(failure)
                trailers = {ERROR_TYPE: error["errorType"], ERROR_BODY: base64.b64encode(_json(error)).decode()}
            connection.send(last_chunk(trailers))
            response = connection.getresponse()
            answer = response.read()
            if response.status != 202:
                log.warning("the Runtime API answered %d to a streamed response: %s", response.status, answer[:200])
        except OSError:  # the API hung up (connection reset, broken pipe, closed before answering)
            connection.close()
            if failure is None:
                return False
        if failure is not None:
            raise failure
        return True

    def _posted(self, path: str, data: bytes, headers: dict[str, str]) -> None:
        status, body, _ = self._request("POST", path, data, headers)
        if status != 202:
            log.warning("POST /%s answered %d: %s", path, status, body[:200])

    def _request(self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None):
        url = f"/{API_VERSION}/runtime/{path}"
        for attempt in (1, 2):  # a kept-alive connection the API closed meanwhile fails once, then reopens
            try:
                self._connection.request(method, url, body=data, headers=headers or {})
                response = self._connection.getresponse()
                body = response.read()
                return response.status, body, {k.lower(): v for k, v in response.getheaders()}
            except (ConnectionError, http.client.HTTPException):
                self._connection.close()
                if attempt == 2:
                    raise


class LambdaContext:
    """The `context` a handler gets, filled as awslambdaric fills it: from the invocation's headers and the
    variables Lambda starts the runtime with."""

    def __init__(self, invocation: NextInvocation, environ: MutableMapping[str, str], clock=time.time):
        headers = invocation.headers
        self.aws_request_id = invocation.request_id
        self.invoked_function_arn = headers.get("lambda-runtime-invoked-function-arn", "")
        self.deadline_ms = int(headers.get("lambda-runtime-deadline-ms") or 0)
        self.function_name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = environ.get("AWS_LAMBDA_FUNCTION_VERSION", "")
        self.memory_limit_in_mb = environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "")
        self.log_group_name = environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.client_context = _namespace(headers.get("lambda-runtime-client-context"), ("client", "custom", "env"))
        self.identity = _namespace(headers.get("lambda-runtime-cognito-identity"),
                                   ("cognito_identity_id", "cognito_identity_pool_id"))
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.deadline_ms - int(self._clock() * 1000))


def handle(handler, invocation: NextInvocation, client, environ: MutableMapping[str, str] = os.environ) -> None:
    """Run one invocation and post its answer (see the module docstring for which way).

    Args:
        handler: `handler(event, context)`.
        invocation: what /invocation/next answered.
        client: a `RuntimeApiClient`, or a fake with its post_* methods.
        environ: Lambda's variables (the context reads them; the X-Ray trace id is written to it).
    """
    request_id = invocation.request_id
    trace_id = invocation.headers.get("lambda-runtime-trace-id")
    if trace_id:
        environ["_X_AMZN_TRACE_ID"] = trace_id  # where the X-Ray SDK looks for it, as under awslambdaric
    try:
        event = json.loads(invocation.event)
    except ValueError as exc:
        client.post_error(request_id, lambda_error(f"Unable to unmarshal input: {exc}", UNMARSHAL_ERROR, request_id))
        return
    try:
        result = handler(event, LambdaContext(invocation, environ))
    except Exception as exc:
        error = error_from_exception(exc, request_id, skip_frames=1)
        log.error("invocation %s failed: %s: %s", request_id, error["errorType"], error["errorMessage"], exc_info=exc)
        client.post_error(request_id, error)
        return
    if isinstance(result, StreamingResponse) or is_url_event(event):
        _post_stream(client, request_id, result)
        return
    try:
        data, content_type = marshal_result(result)
    except (TypeError, ValueError) as exc:
        client.post_error(request_id, lambda_error(f"Unable to marshal response: {exc}", MARSHAL_ERROR, request_id))
        return
    client.post_response(request_id, data, content_type)


def _post_stream(client, request_id: str, result: Any) -> None:
    try:
        response = result if isinstance(result, StreamingResponse) else as_streaming(result)
    except (TypeError, ValueError, AttributeError) as exc:
        message = f"Unable to marshal response: not a function URL response: {exc}"
        client.post_error(request_id, lambda_error(message, MARSHAL_ERROR, request_id))
        return
    chunks = integration_stream(response)
    try:
        if not client.post_stream(request_id, chunks, INTEGRATION_CONTENT_TYPE):
            log.info("invocation %s: the Runtime API stopped taking the stream (the client hung up)", request_id)
    except Exception as exc:  # already reported to Lambda in the stream's error trailers
        log.error("invocation %s failed mid-stream: %s: %s", request_id, type(exc).__name__, exc, exc_info=exc)
    finally:
        chunks.close()  # closes the handler's body: a generation stops here if it had not finished


def is_url_event(event: Any) -> bool:
    """Whether the event came from a function URL (or an HTTP API): payload format 2.0."""
    return isinstance(event, dict) and event.get("version") == "2.0" and "requestContext" in event


def run(handler_name: str, client, environ: MutableMapping[str, str] = os.environ) -> int:
    """Init, then serve invocations until the Runtime API goes away. Returns the exit status."""
    try:
        handler = load_handler(handler_name)
    except HandlerInitError as exc:
        log.error("init failed: %s", exc)
        client.post_init_error(exc.error)
        return 1
    while True:
        try:
            invocation = client.next()
        except (OSError, http.client.HTTPException) as exc:
            log.error("the Runtime API at %s cannot be reached: %s", getattr(client, "address", "?"), exc)
            return 1
        handle(handler, invocation, client, environ)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    handler_name = args[0] if args else os.environ.get("_HANDLER", "")
    address = os.environ.get("AWS_LAMBDA_RUNTIME_API", "")
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] %(name)s: %(message)s", stream=sys.stderr)
    if not handler_name or not address:
        missing = "the handler (argument or $_HANDLER)" if not handler_name else "$AWS_LAMBDA_RUNTIME_API"
        log.error("%s is not set; usage: python -m votive.handlers.stream_runtime module.function", missing)
        return 2
    try:
        client = RuntimeApiClient(address)
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    return run(handler_name, client)


# --------------------------------------------------------------------------------------------------- addenda
def _json(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


def _error_headers(error: dict) -> dict[str, str]:
    return {"Content-Type": "application/json", ERROR_TYPE: str(error.get("errorType", "Unhandled"))}


def _namespace(header: str | None, fields: tuple[str, ...]):
    """A JSON header as an object with `fields` as attributes (None when absent or not a JSON object)."""
    if not header:
        return None
    try:
        value = json.loads(header)
    except ValueError:
        return None
    return types.SimpleNamespace(**{name: value.get(name) for name in fields}) if isinstance(value, dict) else None


if __name__ == "__main__":
    sys.exit(main())

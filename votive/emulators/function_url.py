"""A local Lambda function URL: an HTTP server in front of a function's execution environments.

Each request becomes the payload-format-2.0 event a function URL sends (`votive.protocol.payload_v2`), waits for a
free environment (one invocation at a time per environment; throttled with 429 past the queue timeout), and
what the function returns is written back as the function URL would: a structured response as given, any
other value as 200 JSON, a function error as 502. Requests over Lambda's 6 MB payload limit get 413 before the
function runs. The front's own refusals (413, a malformed request line, Content-Length, chunked coding or
headers) carry the service's {"Message"} and OpenAI's {"error": {...}} in one JSON body.

A function that streams its answer (a `votive.protocol.streaming.StreamingResponse` in process, or a runtime
posting in streaming mode) is answered as a function URL in RESPONSE_STREAM mode answers: the status and
headers come from the stream's prelude, and the body is sent chunked as it arrives, so the client reads the
first piece while the function still works on the next. A client that hangs up cancels the stream, which stops
the function's producer; a function that fails or times out mid-stream gets its connection cut without the
last chunk, which is how the client learns the answer is incomplete.

The function behind it is either a handler run in this process (`InProcessFunction`, built when you pass a
handler) or the real awslambdaric runtime behind an emulated Runtime API (`RuntimeApiEmulator`).

`POST /2015-03-31/functions/function/invocations` is also accepted, as by the AWS Runtime Interface Emulator:
the body is the event as is, and the answer is the function's raw payload (200), its error object (200 with
X-Amz-Function-Error: Unhandled), or 429.

Example:
    >>> server = FunctionUrlServer(lambda event, context: {"path": event["rawPath"]}, port=0, environments=2)
    >>> server.start()
    >>> urllib.request.urlopen(server.url + "/hello").read()
    b'{"path": "/hello"}'
    >>> server.stop()
"""

from __future__ import annotations

import base64
import json
import logging
import select
import socket
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Callable, Protocol

from votive.emulators.http_server import LocalHTTPServer
from votive.emulators.in_process import InProcessFunction
from votive.emulators.invocation_queue import Outcome, ResponseStream, StreamFailed
from votive.errors import EmulatorError
from votive.protocol.chunked import ChunkedError, ChunkReader, chunk, last_chunk
from votive.protocol.context import PAYLOAD_LIMIT_BYTES, FunctionConfig
from votive.protocol.handler_loading import HandlerFunction
from votive.protocol.openai_errors import error_body
from votive.protocol.payload_v2 import (
    LOCAL_URL_ID,
    HttpRequest,
    HttpResponse,
    MalformedResponse,
    http_response,
    json_response,
    request_event,
    stream_prelude,
)
from votive.protocol.streaming import INTEGRATION_CONTENT_TYPE, PRELUDE_DELIMITER

log = logging.getLogger("votive.serve")

DIRECT_INVOKE_PATH = "/2015-03-31/functions/function/invocations"
# A client that announces a body over the limit is still read (and dropped) up to this size, so that it sees
# the 413 instead of a reset connection; past it the connection is simply closed after the answer.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
# A streamed answer's prelude must end (eight NUL bytes) within this many bytes (API Gateway documents 16 KB).
PRELUDE_LIMIT_BYTES = 16 * 1024
# While a stream is quiet, how often the front looks whether its client has hung up.
DISCONNECT_POLL_S = 0.05


class LocalFunction(Protocol):
    """A function the front can invoke: `InProcessFunction` or `RuntimeApiEmulator`."""

    config: FunctionConfig

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def invoke(
        self, event: bytes | dict, *, request_id: str | None = None, client_context: str | None = None
    ) -> Outcome: ...


class FunctionUrlServer:
    """An HTTP server that behaves like a Lambda function URL for one function.

    Args:
        function: a `LocalFunction`, or a handler ("package.module.function" or a callable), which is then
            run in this process by an `InProcessFunction` with the options below.
        host: the address to bind; 127.0.0.1 keeps it private to this machine.
        port: the port; 0 picks a free one (read it back from `url`).
        environments: with a handler: how many invocations may run at once.
        config: with a handler: the function's settings (timeout, memory, name).
        queue_timeout_s: with a handler: how long a request waits for a free environment before 429.
        clock: epoch seconds, for event timestamps and deadlines.
        direct_invoke: also accept Runtime Interface Emulator style direct invocations.
    """

    def __init__(
        self,
        function: LocalFunction | str | HandlerFunction,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        environments: int = 1,
        config: FunctionConfig | None = None,
        queue_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        direct_invoke: bool = True,
    ):
        if isinstance(function, str) or not hasattr(function, "invoke"):
            function = InProcessFunction(
                function, environments=environments, config=config, queue_timeout_s=queue_timeout_s, clock=clock
            )
        self.function: LocalFunction = function
        self.host = host
        self.port = port
        self.clock = clock
        self.direct_invoke = direct_invoke
        self._httpd: LocalHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise EmulatorError("the function URL server is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        """Bind, run the function's init, then serve in a background thread.

        Raises:
            EmulatorError: the address cannot be bound, or the function's init failed.
        """
        try:
            self._httpd = LocalHTTPServer((self.host, self.port), _FrontHandler, owner=self)
        except OSError as exc:
            raise EmulatorError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        try:
            self.function.start()
        except BaseException:
            self._httpd.server_close()
            self._httpd = None
            raise
        self._thread = self._httpd.serve_in_thread("function-url")

    def wait(self) -> None:
        """Block until the server stops (use from a CLI; Ctrl-C raises KeyboardInterrupt here)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def stop(self) -> None:
        """Stop serving and stop the function's environments."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.function.stop()

    def __enter__(self) -> "FunctionUrlServer":
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def respond(self, request: HttpRequest) -> HttpResponse:
        """The whole request-to-response path, without sockets (the HTTP handler calls this)."""
        request_id = str(uuid.uuid4())
        path = request.target.split("?", 1)[0]
        if self.direct_invoke and request.method == "POST" and path == DIRECT_INVOKE_PATH:
            return self._direct(request, request_id)
        event = request_event(request, request_id=request_id, now=self.clock(), url_id=LOCAL_URL_ID)
        data = json.dumps(event).encode("utf-8")
        if len(data) > PAYLOAD_LIMIT_BYTES:
            return _too_large(len(data))
        outcome = self.function.invoke(data, request_id=request_id)
        if outcome.throttled:
            return json_response(429, {"Message": "Rate Exceeded."})
        if outcome.error is not None:
            error = outcome.error
            log.error("function error %s: %s: %s", request_id, error.get("errorType"), error.get("errorMessage"))
            return json_response(502, {"Message": "Internal Server Error"}, [("x-amzn-requestid", request_id)])
        if outcome.stream is not None:
            return self._streamed(outcome.stream, request_id)
        assert outcome.payload is not None
        try:
            response = http_response(outcome.payload)
        except MalformedResponse as exc:
            log.error("function %s returned a response a function URL rejects: %s", request_id, exc)
            return json_response(502, {"Message": "Internal Server Error"}, [("x-amzn-requestid", request_id)])
        response.headers.append(("x-amzn-requestid", request_id))
        return response

    def _direct(self, request: HttpRequest, request_id: str) -> HttpResponse:
        headers = [("x-amzn-requestid", request_id)]
        client_context = None
        encoded = next((v for k, v in request.headers if k.lower() == "x-amz-client-context"), None)
        if encoded:
            # As with the Invoke API: base64 of a JSON object, handed to the runtime as the JSON text.
            try:
                client_context = base64.b64decode(encoded, validate=True).decode("utf-8")
                json.loads(client_context)
            except ValueError:
                message = "X-Amz-Client-Context must be base64-encoded JSON"
                return json_response(400, {"Type": "User", "message": message}, headers)
        outcome = self.function.invoke(request.body or b"{}", request_id=request_id, client_context=client_context)
        if outcome.throttled:
            return json_response(429, {"Type": "User", "message": "Rate Exceeded."}, headers)
        error, payload = outcome.error, outcome.payload
        if outcome.stream is not None:  # the Invoke API hands a streamed answer back whole
            try:
                payload = _read_all(outcome.stream)
            except StreamFailed as exc:
                error = exc.error
        if error is not None:
            return json_response(200, error, [*headers, ("x-amz-function-error", "Unhandled")])
        return HttpResponse(200, [("content-type", "application/json"), *headers], payload or b"")

    def _streamed(self, stream: ResponseStream, request_id: str) -> HttpResponse:
        """The answer to a streamed response: status and headers from its prelude, the body still to come."""
        media_type = stream.content_type.split(";", 1)[0].strip().lower()
        if media_type != INTEGRATION_CONTENT_TYPE:  # a bare stream: a 200 of that content type
            headers = [("content-type", stream.content_type or "application/octet-stream")]
            return HttpResponse(200, [*headers, ("x-amzn-requestid", request_id)], stream=stream)
        try:
            prelude, rest = _read_prelude(stream)
            response = stream_prelude(prelude)
        except (StreamFailed, MalformedResponse) as exc:
            stream.cancel()
            log.error("function %s streamed no usable answer: %s", request_id, exc)
            return json_response(502, {"Message": "Internal Server Error"}, [("x-amzn-requestid", request_id)])
        response.headers.append(("x-amzn-requestid", request_id))
        response.body, response.stream = rest, stream
        return response


def _read_prelude(stream: ResponseStream) -> tuple[bytes, bytes]:
    """Read a streamed answer up to its prelude's delimiter -> (prelude JSON, the body bytes read past it)."""
    data = b""
    while (end := data.find(PRELUDE_DELIMITER)) < 0:
        if len(data) > PRELUDE_LIMIT_BYTES:
            raise MalformedResponse(f"no prelude delimiter (eight NUL bytes) in the first {PRELUDE_LIMIT_BYTES} bytes")
        piece = stream.read()
        if piece is None:
            raise MalformedResponse("the stream ended before its prelude delimiter (eight NUL bytes)")
        data += piece
    return data[:end], data[end + len(PRELUDE_DELIMITER) :]


def _read_all(stream: ResponseStream) -> bytes:
    pieces = []
    while (piece := stream.read()) is not None:
        pieces.append(piece)
    return b"".join(pieces)


def _too_large(size: int) -> HttpResponse:
    message = (
        f"Request must be smaller than {PAYLOAD_LIMIT_BYTES} bytes for the InvokeFunction operation (found {size})"
    )
    return _front_error(413, message, "request_too_large")


def _front_error(status: int, message: str, code: str) -> HttpResponse:
    """An error the front answers by itself (the function never saw the request): the service's {"Message"} and
    OpenAI's {"error"} in one body, so that both AWS-minded and OpenAI clients read it."""
    return json_response(status, {"Message": message, **error_body(status, message, code=code)})


class _FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # otherwise a small answer can wait ~40 ms for a delayed ACK
    server_version = "votive-function-url"
    timeout = 60  # seconds a connection may sit idle or half-sent before it is closed
    server: LocalHTTPServer

    def _handle(self) -> None:
        started = time.perf_counter()
        try:
            body = self._read_body()
            if body is None:
                response = _too_large(self._declared_length())
            else:
                request = HttpRequest(
                    method=self.command,
                    target=self.path,
                    headers=list(self.headers.items()),
                    body=body,
                    protocol=self.request_version,
                    source_ip=self.client_address[0],
                    server_port=self.server.server_address[1],
                )
                response = self.server.owner.respond(request)
        except _BadRequest as exc:
            response = _front_error(400, str(exc), "bad_request")
            self.close_connection = True
        except Exception:
            log.exception("unexpected error answering %s %s", self.command, self.path)
            response = _front_error(500, "Internal Server Error", "internal_error")
        try:
            self._write(response)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        ms = (time.perf_counter() - started) * 1000
        log.info("%s %s %d %.1f ms", self.command, self.path.split("?", 1)[0], response.status, ms)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, a line or headers too long, too many headers, an
        unknown method) as JSON like the front's other errors, instead of its HTML page."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # what http.server assumes of an unreadable request line
            self.request_version = "HTTP/1.0"  # so that the status line and headers are written
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = "Error"
        text = f"{message or phrase}{f': {explain}' if explain else ''}"
        try:
            self._write(_front_error(int(code), text, phrase.lower().replace(" ", "_")))
        except OSError:
            pass

    def _declared_length(self) -> int:
        try:
            return int(self.headers.get("content-length", "0"))
        except ValueError:
            return 0

    def _read_body(self) -> bytes | None:
        """The request body, or None when it is over Lambda's limit (the rest is drained or the socket closed)."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return self._read_chunked()
        length_header = self.headers.get("content-length")
        if length_header is None:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            raise _BadRequest(f"Content-Length must be an integer, found {length_header!r}") from None
        if length < 0:
            raise _BadRequest(f"Content-Length must not be negative, found {length}")
        if length > PAYLOAD_LIMIT_BYTES:
            self._drain(length)
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        parts, total = [], 0
        try:
            for data in ChunkReader(self.rfile):
                total += len(data)
                if total > PAYLOAD_LIMIT_BYTES:
                    self.close_connection = True
                    return None
                parts.append(data)
        except ChunkedError as exc:
            raise _BadRequest(str(exc)) from None
        return b"".join(parts)

    def _drain(self, length: int) -> None:
        if length > DRAIN_LIMIT_BYTES:
            self.close_connection = True
            return
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 16))
            if not chunk:
                break
            left -= len(chunk)

    def _write(self, response: HttpResponse) -> None:
        if response.stream is not None:
            self._write_stream(response, response.stream)
            return
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(response.body)))
        if self.close_connection:
            self.send_header("connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def _write_stream(self, response: HttpResponse, stream: ResponseStream) -> None:
        """Send a streamed answer as it arrives: chunked over HTTP/1.1, until the connection closes over 1.0."""
        chunked = self.request_version != "HTTP/1.0"
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        if chunked:
            self.send_header("transfer-encoding", "chunked")
        else:
            self.close_connection = True
            self.send_header("connection", "close")
        try:
            self.end_headers()
            if self.command == "HEAD":
                stream.cancel()
                return
            piece = response.body
            while piece is not None:
                if self._client_gone():
                    raise ConnectionResetError("the client closed the connection")
                if piece:
                    self.wfile.write(chunk(piece) if chunked else piece)
                piece = stream.read(timeout=DISCONNECT_POLL_S)
            if chunked:
                self.wfile.write(last_chunk())
        except StreamFailed as exc:
            # Cut the connection before the last chunk: the client sees the answer broke off, as from Lambda.
            self.close_connection = True
            error = exc.error
            log.error("function error mid-stream: %s: %s", error.get("errorType"), error.get("errorMessage"))
        except OSError:
            self.close_connection = True
            stream.cancel()
            log.info("client hung up mid-stream; the function's stream is cancelled")

    def _client_gone(self) -> bool:
        """Whether the client has closed its end (a readable socket with nothing to read), without blocking."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def log_message(self, format: str, *args) -> None:
        log.debug("%s - %s", self.address_string(), format % args)


class _BadRequest(Exception):
    """The request cannot be parsed as HTTP the way the front needs it."""

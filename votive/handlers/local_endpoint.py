"""An image's answer where no Lambda service runs it (`docker run -p 9000:8080 IMAGE`, a GPU container platform):
the handler behind a plain HTTP server on :8080, in place of AWS's Runtime Interface Emulator.

An image's entry script runs the Lambda runtime client when `AWS_LAMBDA_RUNTIME_API` is set (on Lambda) and this
module otherwise. It answers the two ways a caller expects:

- `POST /2015-03-31/functions/function/invocations` with an event, as the Runtime Interface Emulator does: the
  handler's result (a streamed one joined) as JSON;
- any other request as a function URL would: a payload 2.0 event in, the handler's answer mapped to HTTP out
  (a streamed answer, `"stream": true`, sent chunk by chunk as it is made).

One request at a time, as one Lambda execution environment serves them. The handler is loaded before the port
opens, so a failing init exits with its traceback and the container stops.

    python -m votive.handlers.local_endpoint votive_function.handler        # $PORT, default 8080
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer

from votive.protocol.context import FunctionConfig, LambdaContext, new_log_stream_name
from votive.protocol.faults import error_from_exception
from votive.protocol.handler_loading import HandlerInitError, load_handler
from votive.protocol.payload_v2 import HttpRequest, MalformedResponse, http_response, request_event
from votive.protocol.streaming import StreamingResponse

INVOKE_PATH = "/2015-03-31/functions/function/invocations"  # the Runtime Interface Emulator's
DEFAULT_PORT = 8080
TIMEOUT_S = 900.0  # what the context reports as the time left; nothing here cuts a request short


def serve(handler_name: str, port: int | None = None, host: str = "0.0.0.0") -> None:
    """Load the handler, then answer on `port` ($PORT, default 8080) until stopped."""
    try:
        handler = load_handler(handler_name)
    except HandlerInitError as exc:
        print(f"init failed: {exc}", file=sys.stderr)
        print("".join(str(frame) for frame in exc.error.get("stackTrace") or []), file=sys.stderr, end="")
        raise SystemExit(1) from None
    config = FunctionConfig(name=os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "votive-local"), timeout_s=TIMEOUT_S)
    stream_name = new_log_stream_name()

    class Handler(_Endpoint):
        def call(self, event):
            deadline_ms = int((time.time() + TIMEOUT_S) * 1000)
            return handler(event, LambdaContext(str(uuid.uuid4()), deadline_ms, config, stream_name))

    server = HTTPServer((host, DEFAULT_PORT if port is None else port), Handler)
    print(f"votive: {handler_name} answering on http://{host}:{server.server_address[1]} "
          f"(POST {INVOKE_PATH} for an event; any other path as a function URL)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


class _Endpoint(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def call(self, event):  # set by serve()
        raise NotImplementedError

    def do_GET(self):
        self._answer()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.command == "POST" and self.path.split("?")[0] == INVOKE_PATH:
            try:
                event = json.loads(body or b"{}")
            except ValueError as exc:
                return self._send(400, {"content-type": "application/json"},
                                  json.dumps({"errorMessage": f"the event is not JSON: {exc}",
                                              "errorType": "InvalidRequestContentException"}).encode())
            try:
                result = self.call(event)
                if isinstance(result, StreamingResponse):
                    result = b"".join(bytes(c) for c in result.body).decode("utf-8", "replace")
                payload = result if isinstance(result, str) else json.dumps(result)
            except Exception as exc:  # as awslambdaric reports a handler's exception: an error object, 200
                traceback.print_exc()
                payload = json.dumps(error_from_exception(exc))
            return self._send(200, {"content-type": "application/json"}, payload.encode("utf-8"))
        request = HttpRequest(self.command, self.path, list(self.headers.items()), body,
                              source_ip=self.client_address[0], server_port=self.server.server_address[1])
        try:
            result = self.call(request_event(request, request_id=str(uuid.uuid4()), now=time.time()))
        except Exception:
            traceback.print_exc()
            return self._send(502, {"content-type": "application/json"},
                              b'{"Message":"Internal Server Error"}')  # what a function URL answers
        if isinstance(result, StreamingResponse):
            return self._stream(result)
        try:
            answer = http_response(json.dumps(result).encode("utf-8"))
        except MalformedResponse as exc:
            print(f"votive: malformed response: {exc}", file=sys.stderr)
            return self._send(502, {"content-type": "application/json"}, b'{"Message":"Internal Server Error"}')
        self._send(answer.status, answer.headers, answer.body)

    def _stream(self, result: StreamingResponse) -> None:
        self.send_response(result.status)
        for name, value in list(result.headers.items()) + [("set-cookie", c) for c in result.cookies]:
            self.send_header(name, value)
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            for chunk in result.body:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), bytes(chunk)))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            self.close_connection = True  # the client went away: closing the body stops the generation
        finally:
            result.close()

    def _send(self, status: int, headers, body: bytes) -> None:
        self.send_response(status)
        for name, value in (headers.items() if isinstance(headers, dict) else headers):
            if name.lower() not in ("content-length", "transfer-encoding"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        sys.stderr.write("votive: %s %s\n" % (self.address_string(), format % args))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m votive.handlers.local_endpoint MODULE.FUNCTION")
    port = os.environ.get("PORT")
    serve(sys.argv[1], int(port) if port else None)

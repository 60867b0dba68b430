"""Lambda's Runtime API, emulated, with the real awslambdaric runtime client polling it.

A Lambda container image starts `python -m awslambdaric module.function`; the runtime client imports the
handler (init), then loops: GET /invocation/next (a long poll), call the handler, POST /invocation/{id}/response
or /invocation/{id}/error. An import failure goes to /init/error and the process exits. This module plays the
Lambda service's side of that conversation so the very entry point of the image is what runs locally.

Each execution environment is one awslambdaric process with its own Runtime API server on 127.0.0.1 (as each
Lambda sandbox has its own), which makes it plain which process runs which invocation. All environments take
work from one `InvocationQueue`, so an invocation waits for a free environment, is throttled past
`queue_timeout_s`, and fails with Sandbox.Timedout past the function timeout, when the process is killed and a
fresh one started (as Lambda resets an environment that timed out). A process that exits while running an
invocation fails it with Runtime.ExitError and is restarted; a process that fails during init (an import error
reported through /init/error, or an exit before its first poll) fails the whole function: `start()` raises, and
if it happens on a restart, every later request is answered with that init error.

The runtime's stdout and stderr are forwarded, line by line, to the `votive.lambda` logger.

A runtime may also stream its answer, as votive's own runtime does for a function URL in RESPONSE_STREAM mode
(`python -m votive.handlers.stream_runtime module.function`, passed as `command`): it POSTs /response with
`Lambda-Runtime-Function-Response-Mode: streaming` and a chunked body (the prelude, eight NULs, the body), and
reports a failure mid-stream in the trailers `Lambda-Runtime-Function-Error-Type` and
`Lambda-Runtime-Function-Error-Body` (base64 of the error JSON). Each chunk is handed to the front as it
arrives. When the client hangs up, the emulator closes the runtime's connection, so the runtime's next write
fails and it stops producing; past the function timeout the runtime is killed, as for any invocation.

The command line, interpreter, working folder and environment are all parameters, so the same emulator runs on
a Lambda-like tree (code in /var/task, dependencies in /opt/python) with none of this process's environment:

    RuntimeApiEmulator(
        "app.handler", python="/usr/bin/python3.11", cwd="/tmp/tree/var/task", inherit_env=False,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": "/tmp/tree/var/task:/tmp/tree/opt/python"},
    )

Under `python -I` the interpreter ignores PYTHONPATH and the working folder; such a caller passes
`command=[python, "-I", "/tmp/tree/bootstrap.py", "app.handler"]` with a bootstrap that sets sys.path itself
and then runs awslambdaric's main.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler
from typing import Callable, Sequence

from votive.emulators.http_server import LocalHTTPServer
from votive.emulators.invocation_queue import TIMEOUT_GRACE_S, Invocation, QueuedFunction
from votive.errors import EmulatorError
from votive.protocol.chunked import ChunkedError, ChunkReader
from votive.protocol.context import PAYLOAD_LIMIT_BYTES, FunctionConfig, lambda_environment, new_log_stream_name
from votive.protocol.faults import EXIT_ERROR, TIMEOUT_ERROR, lambda_error, response_too_large
from votive.protocol.payload_v2 import new_trace_id

log = logging.getLogger("votive.lambda")

RUNTIME_PREFIX = "/2018-06-01/runtime"
ERROR_TYPE_HEADER = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY_TRAILER = "Lambda-Runtime-Function-Error-Body"  # base64 of the error JSON, after a streamed body
RESPONSE_MODE_HEADER = "Lambda-Runtime-Function-Response-Mode"
# Variables of this process that would change how awslambdaric behaves (multi-concurrency mode, a telemetry
# log fd that is not ours); they are never passed to the runtime.
_RUNTIME_VARIABLES_DROPPED = ("AWS_LAMBDA_MAX_CONCURRENCY", "_LAMBDA_TELEMETRY_LOG_FD", "AWS_LAMBDA_RUNTIME_API")
_STOP_GRACE_S = 2.0
_OUTPUT_TAIL_LINES = 40  # of a runtime's own output, kept to show why it died before init ended


class RuntimeApiEmulator(QueuedFunction):
    """A Lambda function run by awslambdaric processes behind an emulated Runtime API.

    Args:
        handler: "package.module.function", as in the image's CMD (the _HANDLER variable).
        environments: how many runtime processes (each runs one invocation at a time).
        config: the function's settings (name, memory, timeout, fake ARN).
        python: the interpreter that runs awslambdaric.
        python_args: options placed before `-m awslambdaric` (for example ["-I"]).
        command: the full command instead of [python, *python_args, "-m", "awslambdaric", handler].
        cwd: the task root (LAMBDA_TASK_ROOT and the runtime's working folder); default: this folder.
        env: variables added last, over this process's (when inherited) and Lambda's own.
        inherit_env: start from this process's environment (PATH, a virtualenv); False gives only Lambda's.
        queue_timeout_s: how long an invocation may wait for a free environment before it is throttled.
        init_timeout_s: how long each runtime may take to import the handler and ask for its first event.
        clock: epoch seconds, for deadlines.
    """

    def __init__(
        self,
        handler: str,
        *,
        environments: int = 1,
        config: FunctionConfig | None = None,
        python: str = sys.executable,
        python_args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        cwd: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        inherit_env: bool = True,
        queue_timeout_s: float = 10.0,
        init_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__(environments=environments, config=config, queue_timeout_s=queue_timeout_s, clock=clock)
        self.handler = handler
        self.command = list(command) if command else [python, *python_args, "-m", "awslambdaric", handler]
        self.task_root = os.path.abspath(cwd if cwd is not None else os.getcwd())
        self.extra_env = dict(env or {})
        self.inherit_env = inherit_env
        self.init_timeout_s = init_timeout_s
        self.stopping = False
        self.init_error: dict | None = None  # set once the function failed init; nothing is served after
        self._changed = threading.Condition()  # notified when an environment is ready or init failed
        self._environments: list[_RuntimeEnvironment] = []

    def start(self) -> None:
        """Start every runtime and wait until each has imported the handler and polls for events.

        Raises:
            EmulatorError: a runtime failed init (its Lambda error object is in `lambda_error`), could not be
                started, or took longer than init_timeout_s.
        """
        self._environments = [_RuntimeEnvironment(i, self) for i in range(self.environments)]
        for environment in self._environments:
            environment.start()
        with self._changed:
            all_ready = self._changed.wait_for(
                lambda: self.init_error is not None or all(e.ready.is_set() for e in self._environments),
                timeout=self.init_timeout_s,
            )
        if self.init_error is not None:
            error = self.init_error
            self.stop()
            trace = "".join(str(frame) for frame in error.get("stackTrace") or [])
            raise EmulatorError(
                f"function init failed: {error.get('errorType')}: {error.get('errorMessage')}"
                + (f"\nTraceback (most recent call last):\n{trace.rstrip()}" if trace else ""), lambda_error=error
            )
        if not all_ready:
            self.stop()
            raise EmulatorError(
                f"the runtime ({' '.join(self.command)}) did not ask for an event within {self.init_timeout_s:g} s "
                "of starting: init too slow, or AWS_LAMBDA_RUNTIME_API not honoured"
            )

    def stop(self) -> None:
        """Fail what is queued, stop every runtime process and Runtime API server."""
        self.stopping = True
        # Runtimes go first: a runtime whose poll is answered "shutting down" would print a traceback.
        for environment in self._environments:
            environment.terminate()
        self.queue.close()
        for environment in self._environments:
            environment.stop()
        self._environments = []

    def runtime_environment(self, environment: "_RuntimeEnvironment") -> dict[str, str]:
        """The variables one runtime process starts with."""
        base = dict(os.environ) if self.inherit_env else {}
        for name in _RUNTIME_VARIABLES_DROPPED:
            base.pop(name, None)
        base.update(
            lambda_environment(
                self.config,
                handler=self.handler,
                runtime_api=environment.address,
                task_root=self.task_root,
                log_stream_name=environment.log_stream_name,
            )
        )
        base.update(self.extra_env)
        return base

    def _notify(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def _init_failed(self, error: dict) -> None:
        with self._changed:
            if self.init_error is None:
                self.init_error = error
            self._changed.notify_all()
        self.queue.break_with(error)


class _RuntimeEnvironment:
    """One sandbox: a Runtime API server on its own port and the awslambdaric process polling it."""

    def __init__(self, index: int, emulator: RuntimeApiEmulator):
        self.name = f"env-{index}"
        self.emulator = emulator
        self.log_stream_name = new_log_stream_name(emulator.config.version, emulator.clock())
        self.lock = threading.Lock()
        self.generation = 0  # bumped each time the process exits; a poll from an older one gets nothing
        self.current: Invocation | None = None  # what the process is running now
        self.init_error: dict | None = None  # what the process posted to /init/error
        self.ready = threading.Event()  # the process finished init and polled /next
        self.process: subprocess.Popen | None = None
        self.output: deque[str] = deque(maxlen=_OUTPUT_TAIL_LINES)  # the process's last lines of output
        self.server = LocalHTTPServer(("127.0.0.1", 0), _RuntimeApiHandler, owner=self)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads.append(self.server.serve_in_thread(f"runtime-{self.name}-api"))
        supervisor = threading.Thread(target=self._supervise, name=f"runtime-{self.name}-supervisor", daemon=True)
        supervisor.start()
        self._threads.append(supervisor)

    def abort(self, invocation: Invocation) -> None:
        """Past its deadline: kill the process, as Lambda resets a timed-out environment (it is restarted)."""
        with self.lock:
            process = self.process if self.current is invocation else None
        if process is not None:
            log.warning("[%s] invocation %s timed out; restarting the runtime", self.name, invocation.request_id)
            process.kill()

    def terminate(self) -> None:
        """Ask the runtime process to end (SIGTERM); stop() waits for it."""
        with self.lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()

    def stop(self) -> None:
        with self.lock:
            process = self.process
        if process is not None:
            try:
                process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.server.shutdown()
        self.server.server_close()
        for thread in self._threads:
            thread.join(timeout=_STOP_GRACE_S)

    def _supervise(self) -> None:
        """Run the runtime process; on exit fail its invocation, then restart it or report a failed init."""
        emulator = self.emulator
        while not emulator.stopping:
            self.output.clear()
            try:
                process = subprocess.Popen(
                    emulator.command,
                    cwd=emulator.task_root,
                    env=emulator.runtime_environment(self),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C in a terminal reaches us; we stop the runtimes ourselves
                )
            except OSError as exc:
                message = f"cannot start the runtime {emulator.command[0]!r}: {exc.strerror or exc}"
                emulator._init_failed(lambda_error(message, "Runtime.InvalidEntrypoint"))
                return
            with self.lock:
                self.process = process
                if emulator.stopping:  # stop() began while this one was starting: it will not see it
                    process.terminate()
            reader = threading.Thread(target=self._forward_output, args=(process,), daemon=True)
            reader.start()
            status = process.wait()
            reader.join(timeout=1.0)
            with self.lock:
                self.generation += 1
                invocation, self.current = self.current, None
                was_ready = self.ready.is_set()
                self.ready.clear()
                init_error, self.init_error = self.init_error, None
            emulator.queue.wake()
            if emulator.stopping:
                return
            if invocation is not None:
                message = f"RequestId: {invocation.request_id} Error: Runtime exited with error: exit status {status}"
                emulator.queue.finish(invocation, error=lambda_error(message, EXIT_ERROR, invocation.request_id))
            if not was_ready:
                # A runtime that dies before it can post /init/error (awslambdaric itself not importable, say)
                # leaves only its output: that, not the exit status alone, says why.
                output = "\n".join(self.output).strip()
                error = init_error or lambda_error(
                    f"Runtime exited with error: exit status {status} before asking for an event"
                    + (f"; its output ended:\n{output}" if output else ""), EXIT_ERROR
                )
                log.error("[%s] init failed: %s: %s", self.name, error.get("errorType"), error.get("errorMessage"))
                emulator._init_failed(error)
                return
            log.warning("[%s] runtime exited with status %s; starting a fresh one", self.name, status)

    def _forward_output(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            # awslambdaric joins the lines of an error report with \r; show them as lines.
            for line in raw.decode("utf-8", "replace").rstrip("\n").split("\r"):
                self.output.append(line)
                log.info("[%s] %s", self.name, line)


class _RuntimeApiHandler(BaseHTTPRequestHandler):
    """The Lambda service's side of the Runtime API, for one environment."""

    protocol_version = "HTTP/1.1"  # the runtime client keeps its connection open between calls
    disable_nagle_algorithm = True  # otherwise a small answer can wait ~40 ms for a delayed ACK
    server: LocalHTTPServer

    def do_GET(self) -> None:
        if self.path == f"{RUNTIME_PREFIX}/invocation/next":
            self._next()
        else:
            self._answer(404, {"errorMessage": f"unknown path {self.path}", "errorType": "InvalidRequest"})

    def do_POST(self) -> None:
        parts = self.path[len(RUNTIME_PREFIX) :].strip("/").split("/") if self.path.startswith(RUNTIME_PREFIX) else []
        streaming = self.headers.get(RESPONSE_MODE_HEADER, "").strip().lower() == "streaming"
        if streaming and len(parts) == 3 and parts[0] == "invocation" and parts[2] == "response":
            self._streamed_result(parts[1])
            return
        try:
            body = self._body()
        except ChunkedError as exc:
            self.close_connection = True
            self._answer(400, {"errorMessage": f"malformed chunked body: {exc}", "errorType": "InvalidRequest"})
            return
        if parts == ["init", "error"]:
            self._init_error(body)
        elif len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            self._result(parts[1], parts[2], body)
        else:
            self._answer(404, {"errorMessage": f"unknown path {self.path}", "errorType": "InvalidRequest"})

    def _next(self) -> None:
        environment = self.server.owner
        emulator = environment.emulator
        with environment.lock:
            generation = environment.generation
        if not environment.ready.is_set():
            environment.ready.set()
            emulator._notify()

        def alive() -> bool:
            return environment.generation == generation and not emulator.stopping

        invocation = emulator.queue.take(environment, is_alive=alive)
        if invocation is None:
            self._answer(500, {"errorMessage": "the environment is shutting down", "errorType": "ServiceException"})
            return
        with environment.lock:
            if environment.generation != generation:  # the process died between the poll and now
                emulator.queue.give_back(invocation)
                return
            environment.current = invocation
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(invocation.deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": emulator.config.arn,
            "Lambda-Runtime-Trace-Id": f"{new_trace_id(emulator.clock())};Parent={os.urandom(8).hex()};Sampled=0",
        }
        if invocation.client_context:
            headers["Lambda-Runtime-Client-Context"] = invocation.client_context
        try:
            self._send(200, invocation.event, "application/json", headers)
        except OSError:
            with environment.lock:
                if environment.current is invocation:
                    environment.current = None
            emulator.queue.give_back(invocation)
            self.close_connection = True

    def _result(self, request_id: str, kind: str, body: bytes) -> None:
        environment = self.server.owner
        with environment.lock:
            invocation = environment.current
            if invocation is None or invocation.request_id != request_id:
                invocation = None
            else:
                environment.current = None
        if invocation is None:
            message = f"invocation {request_id} is not running in this environment"
            self._answer(400, {"errorMessage": message, "errorType": "InvalidRequestID"})
            return
        queue = environment.emulator.queue
        if kind == "error":
            queue.finish(invocation, error=_error_object(body, self.headers.get(ERROR_TYPE_HEADER), request_id))
        elif len(body) > PAYLOAD_LIMIT_BYTES:
            error = response_too_large(len(body), request_id)
            queue.finish(invocation, error=error)
            self._answer(413, {"errorMessage": error["errorMessage"], "errorType": error["errorType"]})
            return
        else:
            queue.finish(invocation, payload=body)
        self._answer(202, {"status": "OK"})

    def _streamed_result(self, request_id: str) -> None:
        """A response posted in streaming mode: hand each chunk to the front as it arrives."""
        environment = self.server.owner
        emulator = environment.emulator
        with environment.lock:
            invocation = environment.current
        if invocation is None or invocation.request_id != request_id:
            self.close_connection = True  # its body is not read, so the connection cannot carry another request
            message = f"invocation {request_id} is not running in this environment"
            self._answer(400, {"errorMessage": message, "errorType": "InvalidRequestID"})
            return
        connection = self.connection
        stream = invocation.response_stream(
            self.headers.get("content-type") or "application/octet-stream",
            clock=emulator.clock,
            on_cancel=lambda: _hang_up(connection),
        )
        if not emulator.queue.finish(invocation, stream=stream):  # it timed out before its answer began
            self.close_connection = True
            return
        reader = ChunkReader(self.rfile)
        failure = None
        try:
            # Lambda ends a function at its timeout even while it streams; the socket timeout is the backstop.
            connection.settimeout(max(invocation.deadline_ms / 1000 - emulator.clock() + TIMEOUT_GRACE_S, 0.01))
            for data in reader:
                if not stream.write(data):
                    break
        except TimeoutError:
            stream.fail(stream.deadline_error)
        except (ChunkedError, OSError) as exc:
            failure = exc
        if stream.error is not None and stream.error.get("errorType") == TIMEOUT_ERROR:
            environment.abort(invocation)  # kills the runtime; its supervisor starts a fresh one
            self.close_connection = True
            return
        with environment.lock:
            if environment.current is invocation:
                environment.current = None
        if not reader.complete:
            # The client hung up (the stream was cancelled), the stream went over its limit, or the runtime broke
            # off. Either way its connection closes, so a runtime still writing learns to stop.
            self.close_connection = True
            _hang_up(connection)
            if not stream.cancelled and failure is not None:
                message = f"RequestId: {request_id} Error: the runtime's response stream broke off: {failure}"
                stream.fail(lambda_error(message, EXIT_ERROR, request_id))
            return
        connection.settimeout(None)
        error_type = reader.trailers.get(ERROR_TYPE_HEADER.lower())
        if error_type:
            stream.fail(_error_object(_unbase64(reader.trailers.get(ERROR_BODY_TRAILER.lower(), "")), error_type,
                                      request_id))
        else:
            stream.end()
        self._answer(202, {"status": "OK"})

    def _init_error(self, body: bytes) -> None:
        environment = self.server.owner
        error = _error_object(body, self.headers.get(ERROR_TYPE_HEADER), "")
        with environment.lock:
            environment.init_error = error
        self._answer(202, {"status": "OK"})

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            return b"".join(ChunkReader(self.rfile))
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _answer(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json", {})

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, format: str, *args) -> None:
        log.debug("runtime api %s: %s", self.server.owner.name, format % args)


def _hang_up(connection: socket.socket) -> None:
    """Close a runtime's connection under it, so its next write fails (it may be blocked reading in a thread)."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _unbase64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.encode("utf-8", "replace")  # not base64 after all: keep what was sent, as text


def _error_object(body: bytes, header_type: str | None, request_id: str) -> dict:
    """The error a runtime posted, as Lambda's error object, even when the body is not the usual JSON."""
    try:
        error = json.loads(body)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        error = {"errorMessage": body.decode("utf-8", "replace"), "errorType": header_type or "Unhandled"}
    error.setdefault("errorType", header_type or "Unhandled")
    error.setdefault("errorMessage", "")
    error.setdefault("stackTrace", [])
    if request_id:
        error.setdefault("requestId", request_id)
    return error

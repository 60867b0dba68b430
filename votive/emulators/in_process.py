"""Execution environments as threads in this process, sharing one imported handler.

Why threads: importing the handler is the init phase, and for votive it maps the model's weights. The weights
are read-only, so N environments can share one import and one mapping; a thread per environment keeps
Lambda's rule that an environment runs one invocation at a time, and numpy releases the GIL inside its
kernels, so environments do overlap in real work. What threads cannot give is isolation: a handler that
mutates module state shares it, and a crash takes the process down. For faithful isolation use
`votive.emulators.runtime_api.RuntimeApiEmulator`, where each environment is its own awslambdaric process.

Timeouts: Lambda ends an invocation that runs past the function timeout and resets its environment, so capacity
comes back at once. A thread cannot be killed, so here (1) votive's handlers stop themselves: their encode and
generate loops check the context's remaining time between batches and tokens (`votive.errors.check_deadline`)
and raise DeadlineExceeded, reported as the Sandbox.Timedout it is; and (2) the environment whose invocation
timed out is retired and a fresh one takes its place right away, so a handler that does not stop (not votive's,
or inside one long forward pass) no longer holds a slot: its thread ends when the handler returns. The fresh
environment reuses the imported handler instead of re-running init: the environments already share that one
handler across threads, so it must be thread-safe anyway, and re-running init would map the model again.

The handler sees what it would on Lambda: the event after a JSON round trip, a `LambdaContext`, and its result
serialized as awslambdaric would (so a numpy array returned by mistake fails here with Runtime.MarshalError,
not only once deployed).

A handler that returns a `votive.protocol.streaming.StreamingResponse` is run as votive's streaming runtime
(`votive.handlers.stream_runtime`) runs it on Lambda: its bytes (`integration_stream`: prelude, eight NULs,
body) go into the invocation's `ResponseStream` from the environment's thread, which stays busy until the body
ends, the client hangs up, or the function timeout passes; each of the last two closes the body, so a
generation stops computing.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import types
from typing import Callable

from votive.emulators.invocation_queue import Invocation, QueuedFunction, timeout_error
from votive.errors import DeadlineExceeded, EmulatorError
from votive.protocol.context import PAYLOAD_LIMIT_BYTES, FunctionConfig, LambdaContext, new_log_stream_name
from votive.protocol.faults import (
    EXIT_ERROR,
    MARSHAL_ERROR,
    UNMARSHAL_ERROR,
    error_from_exception,
    lambda_error,
    marshal_result,
    response_too_large,
)
from votive.protocol.handler_loading import HandlerFunction, HandlerInitError, load_handler
from votive.protocol.streaming import INTEGRATION_CONTENT_TYPE, StreamingResponse, integration_stream

log = logging.getLogger("votive.lambda")
_CLIENT_CONTEXT_FIELDS = ("client", "custom", "env")


class InProcessFunction(QueuedFunction):
    """A Lambda function whose environments are threads calling `handler` here.

    Args:
        handler: "package.module.function" or a callable `handler(event, context)`.
        init: the function's init, run once by `start` instead of importing `handler`, returning the handler
            (`votive serve` builds votive's handler around the model source it resolved).
        environments: how many invocations may run at once (each environment runs one at a time).
        config: the function's settings (name, memory, timeout, fake ARN).
        queue_timeout_s: how long an invocation may wait for a free environment before it is throttled.
        clock: epoch seconds, for deadlines and the context's remaining time.

    Example:
        >>> f = InProcessFunction(lambda event, context: {"echo": event})
        >>> f.start(); f.invoke({"a": 1}).payload; f.stop()
        b'{"echo": {"a": 1}}'
    """

    def __init__(
        self,
        handler: str | HandlerFunction,
        *,
        environments: int = 1,
        config: FunctionConfig | None = None,
        queue_timeout_s: float = 10.0,
        clock: Callable[[], float] = time.time,
        init: Callable[[], HandlerFunction] | None = None,
    ):
        super().__init__(environments=environments, config=config, queue_timeout_s=queue_timeout_s, clock=clock)
        self.handler = handler
        self.init = init
        self._threads: list[threading.Thread] = []
        self._threads_lock = threading.Lock()
        self._next_index = 0

    def start(self) -> None:
        """Init: import the handler once, then start the environments.

        Raises:
            EmulatorError: the handler cannot be loaded; `lambda_error` holds what Lambda would report.
        """
        try:
            function = load_handler(self.handler) if self.init is None else _run_init(self.init)
        except HandlerInitError as exc:
            raise EmulatorError(f"function init failed: {exc}", lambda_error=exc.error) from None
        for _ in range(self.environments):
            self._start_environment(function)

    def stop(self) -> None:
        """Stop taking work and let idle environments end (a handler still running is left to finish)."""
        self.queue.close()
        with self._threads_lock:
            threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout=1.0)

    def _start_environment(self, function: HandlerFunction) -> None:
        with self._threads_lock:
            environment = _ThreadEnvironment(self._next_index, self, function)
            self._next_index += 1
            thread = threading.Thread(target=environment.serve, name=f"lambda-{environment.name}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()]  # retired ones that have ended
            self._threads.append(thread)
            thread.start()

    def retire(self, environment: "_ThreadEnvironment") -> None:
        """An invocation of `environment` timed out: a fresh environment takes its place now (as Lambda resets a
        timed-out one); the old thread ends when its handler returns, taking no more work."""
        environment.retired = True
        if not self.queue.closed:
            self._start_environment(environment.handler)


def _run_init(init: Callable[[], HandlerFunction]) -> HandlerFunction:
    """`init()`, an exception turned into the error Lambda reports for a failed init (as `load_handler` does)."""
    try:
        return init()
    except Exception as exc:
        raise HandlerInitError(error_from_exception(exc)) from exc


class _ThreadEnvironment:
    """One environment: a thread that takes one invocation at a time from the queue."""

    def __init__(self, index: int, function: InProcessFunction, handler: HandlerFunction):
        self.name = f"env-{index}"
        self.function = function
        self.handler = handler
        self.log_stream_name = new_log_stream_name(function.config.version, function.clock())
        self.retired = False  # an invocation of it timed out: it takes no more work

    def abort(self, invocation: Invocation) -> None:
        log.warning(
            "[%s] invocation %s timed out; a fresh environment takes its place (this thread ends when the handler "
            "returns: votive's handlers stop at their next batch or token)",
            self.name,
            invocation.request_id,
        )
        self.function.retire(self)

    def serve(self) -> None:
        queue = self.function.queue
        while (invocation := queue.take(self, is_alive=lambda: not self.retired)) is not None:
            payload, error = self._run(invocation)
            if isinstance(payload, StreamingResponse):
                self._stream(invocation, payload)
            else:
                queue.finish(invocation, payload=payload, error=error)

    def _stream(self, invocation: Invocation, response: StreamingResponse) -> None:
        """Feed a streamed answer to the front until it ends, the client goes or the deadline passes."""
        stream = invocation.response_stream(INTEGRATION_CONTENT_TYPE, clock=self.function.clock)
        if not self.function.queue.finish(invocation, stream=stream):  # timed out before it began
            response.close()
            return
        chunks = integration_stream(response)
        try:
            for data in chunks:
                if not stream.write(data):
                    break  # nobody reads on: the client hung up, or the time is up
            else:
                stream.end()
        except Exception as exc:
            error = error_from_exception(exc, invocation.request_id, skip_frames=1)
            log.error("[%s] mid-stream %s: %s", self.name, error["errorType"], error["errorMessage"], exc_info=exc)
            stream.fail(error)
        finally:
            chunks.close()

    def _run(self, invocation: Invocation) -> tuple[bytes | StreamingResponse | None, dict | None]:
        request_id = invocation.request_id
        context = LambdaContext(
            request_id, invocation.deadline_ms, self.function.config, self.log_stream_name, self.function.clock
        )
        try:
            event = json.loads(invocation.event)
            if invocation.client_context:
                # awslambdaric turns the client context into an object with client/custom/env attributes.
                fields = json.loads(invocation.client_context)
                context.client_context = types.SimpleNamespace(**{k: fields.get(k) for k in _CLIENT_CONTEXT_FIELDS})
        except ValueError as exc:
            return None, lambda_error(f"Unable to unmarshal input: {exc}", UNMARSHAL_ERROR, request_id)
        try:
            result = self.handler(event, context)
        except DeadlineExceeded:  # the handler stopped itself at the deadline: Lambda's timeout, as it is
            return None, timeout_error(request_id, invocation.timeout_s)
        except Exception as exc:
            error = error_from_exception(exc, request_id, skip_frames=1)
            log.error("[%s] %s: %s", self.name, error["errorType"], error["errorMessage"], exc_info=exc)
            return None, error
        except SystemExit as exc:
            message = f"RequestId: {request_id} Error: Runtime exited with error: exit status {exc.code}"
            return None, lambda_error(message, EXIT_ERROR, request_id)
        if isinstance(result, StreamingResponse):
            return result, None
        try:
            payload, _content_type = marshal_result(result)
        except (TypeError, ValueError) as exc:
            return None, lambda_error(f"Unable to marshal response: {exc}", MARSHAL_ERROR, request_id)
        if len(payload) > PAYLOAD_LIMIT_BYTES:
            return None, response_too_large(len(payload), request_id)
        return payload, None

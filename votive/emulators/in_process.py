"""Execution environments as threads in this process, sharing one imported handler.

Why threads: importing the handler is the init phase, and for votive it maps the model's weights. The weights
are read-only, so N environments can share one import and one mapping; a thread per environment keeps
Lambda's rule that an environment runs one invocation at a time, and numpy releases the GIL inside its
kernels, so environments do overlap in real work. What threads cannot give is isolation: a handler that
mutates module state shares it, a crash takes the process down, and a handler past its timeout cannot be
stopped (its caller gets Sandbox.Timedout while the thread stays busy until the handler returns). For faithful
isolation use `votive.emulators.runtime_api.RuntimeApiEmulator`, where each environment is its own awslambdaric
process.

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

from votive.emulators.invocation_queue import Invocation, QueuedFunction
from votive.errors import EmulatorError
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

    def start(self) -> None:
        """Init: import the handler once, then start the environments.

        Raises:
            EmulatorError: the handler cannot be loaded; `lambda_error` holds what Lambda would report.
        """
        try:
            function = load_handler(self.handler) if self.init is None else _run_init(self.init)
        except HandlerInitError as exc:
            raise EmulatorError(f"function init failed: {exc}", lambda_error=exc.error) from None
        for index in range(self.environments):
            environment = _ThreadEnvironment(index, self, function)
            thread = threading.Thread(target=environment.serve, name=f"lambda-{environment.name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop taking work and let idle environments end (a handler still running is left to finish)."""
        self.queue.close()
        for thread in self._threads:
            thread.join(timeout=1.0)
        self._threads.clear()


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

    def abort(self, invocation: Invocation) -> None:
        log.warning(
            "[%s] invocation %s timed out; a thread cannot be stopped, so this environment stays busy until the "
            "handler returns",
            self.name,
            invocation.request_id,
        )

    def serve(self) -> None:
        queue = self.function.queue
        while (invocation := queue.take(self)) is not None:
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

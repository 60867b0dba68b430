"""The queue between the HTTP front and the execution environments, with Lambda's timing rules.

Lambda runs one invocation at a time per execution environment. Locally there is a fixed set of environments
(threads, or awslambdaric processes behind the Runtime API); an invocation waits in this queue until one takes
it, for at most `wait_s` (past that it is throttled, as Lambda answers 429 when no concurrency is left), then has
the function timeout to finish (past that it fails with Sandbox.Timedout). Both kinds of environment take work
with `take()` and report with `finish()`, so the timing rules live only here.

A streamed answer (a function URL in RESPONSE_STREAM mode) finishes its invocation as soon as it starts: the
outcome then carries a `ResponseStream`, through which the environment hands the bytes to the front while they
are produced. The environment stays busy until the stream ends, so concurrency is counted as Lambda counts it,
and the stream itself keeps the invocation's deadline.
"""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable, Protocol

from votive.errors import EmulatorError
from votive.protocol.context import FunctionConfig
from votive.protocol.faults import RESPONSE_TOO_LARGE, TIMEOUT_ERROR, lambda_error

# Slack past the deadline before the front declares a timeout, so a result posted right at the deadline wins.
TIMEOUT_GRACE_S = 0.1
# Lambda's limit on a streamed response (a soft limit AWS may raise; buffered responses stop at 6 MB).
STREAM_LIMIT_BYTES = 20 * 1024 * 1024
# Chunks an environment may run ahead of the client before it waits: enough to keep the pipe busy, few enough
# that a client that hangs up costs only a handful of wasted chunks (tokens, for a generation).
STREAM_CAPACITY_CHUNKS = 8


@dataclass
class Outcome:
    """How one invocation ended: a payload, an error object, or throttled before it ran."""

    request_id: str
    payload: bytes | None = None  # the function's response, as the runtime posted it (JSON for most)
    error: dict | None = None  # Lambda's error object when the function or its runtime failed
    throttled: bool = False  # no environment became free within the wait; the function never ran
    stream: "ResponseStream | None" = None  # a streamed response, still arriving

    @property
    def ok(self) -> bool:
        return self.error is None and not self.throttled


class Environment(Protocol):
    """What the queue needs from an execution environment."""

    name: str

    def abort(self, invocation: "Invocation") -> None:
        """The invocation ran past its deadline: stop it if possible (a process is killed; a thread cannot be)."""


class Invocation:
    """One event on its way through an environment."""

    def __init__(self, event: bytes, request_id: str, timeout_s: float, client_context: str | None = None):
        self.event = event  # JSON bytes, exactly what the runtime receives
        self.request_id = request_id
        self.timeout_s = timeout_s
        self.client_context = client_context  # JSON text the caller passed (Lambda-Runtime-Client-Context)
        self.deadline_ms = 0  # set when an environment takes it
        self.environment: Environment | None = None
        self.outcome: Outcome | None = None
        self.started = threading.Event()
        self.done = threading.Event()

    def response_stream(
        self, content_type: str, *, clock: Callable[[], float], on_cancel: Callable[[], None] | None = None
    ) -> "ResponseStream":
        """A stream for this invocation's streamed answer, cut off at its deadline (call once it has started)."""
        return ResponseStream(
            content_type,
            deadline_s=self.deadline_ms / 1000 + TIMEOUT_GRACE_S,
            deadline_error=timeout_error(self.request_id, self.timeout_s),
            request_id=self.request_id,
            clock=clock,
            on_cancel=on_cancel,
        )


class StreamFailed(Exception):
    """A streamed response broke off: the function failed or timed out, or the stream went over its limit."""

    def __init__(self, error: dict):
        self.error = error  # Lambda's error object
        super().__init__(f"{error.get('errorType')}: {error.get('errorMessage')}")


class ResponseStream:
    """The bytes of one streamed response on their way from an environment (the writer) to the front (the reader).

    A short queue of chunks: the writer waits while the reader is `capacity` chunks behind, and `write` returning
    False tells it to stop producing: the reader cancelled (its client hung up), the deadline passed, or the
    stream failed. Chunks written before a failure are still read; then `read` raises StreamFailed.

    Args:
        content_type: the Content-Type the runtime posted the stream with.
        deadline_s: epoch seconds past which `read` cuts the stream with `deadline_error`.
        deadline_error: Lambda's error object for a timeout (Sandbox.Timedout).
        request_id: the invocation's id, for error objects.
        clock: epoch seconds.
        on_cancel: called once when the stream is cancelled or cut at its deadline, so the writer's side can be
            told even while it waits for its own producer (the Runtime API closes the runtime's connection).
        capacity: chunks the writer may run ahead.
        limit_bytes: the most the stream may carry (Function.ResponseSizeTooLarge past it).

    Example:
        >>> s = ResponseStream("text/plain")
        >>> s.write(b"hi"), s.end(), s.read(), s.read()
        (True, None, b'hi', None)
    """

    def __init__(
        self,
        content_type: str,
        *,
        deadline_s: float = float("inf"),
        deadline_error: dict | None = None,
        request_id: str = "",
        clock: Callable[[], float] = time.time,
        on_cancel: Callable[[], None] | None = None,
        capacity: int = STREAM_CAPACITY_CHUNKS,
        limit_bytes: int = STREAM_LIMIT_BYTES,
    ):
        self.content_type = content_type
        self.deadline_s = deadline_s
        self.deadline_error = deadline_error or timeout_error(request_id, 0.0)
        self.request_id = request_id
        self.capacity = capacity
        self.limit_bytes = limit_bytes
        self._clock = clock
        self._on_cancel = on_cancel
        self._lock = threading.Condition()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._ended = False
        self._error: dict | None = None
        self._cancelled = False

    @property
    def cancelled(self) -> bool:
        """Whether the reader gave up on the stream (client gone, or deadline passed)."""
        return self._cancelled

    @property
    def error(self) -> dict | None:
        """The error the stream failed with, once it has."""
        return self._error

    # --- the writer's side

    def write(self, data: bytes) -> bool:
        """Queue a chunk, waiting while the reader is behind. False: stop producing, nobody will read more."""
        with self._lock:
            while len(self._chunks) >= self.capacity and self._open_locked():
                self._lock.wait()
            if not self._open_locked():
                return False
            if not data:
                return True
            self._size += len(data)
            if self._size > self.limit_bytes:
                message = f"Response payload size exceeded maximum allowed payload size ({self.limit_bytes} bytes)."
                self._error = lambda_error(message, RESPONSE_TOO_LARGE, self.request_id)
                self._lock.notify_all()
                return False
            self._chunks.append(bytes(data))
            self._lock.notify_all()
            return True

    def end(self) -> None:
        """The writer is done; the reader gets None after the last chunk."""
        with self._lock:
            if self._error is None:
                self._ended = True
            self._lock.notify_all()

    def fail(self, error: dict) -> None:
        """The function failed mid-stream; the reader gets StreamFailed(error) after the chunks already queued."""
        with self._lock:
            if self._error is None and not self._ended:
                self._error = error
            self._lock.notify_all()

    # --- the reader's side

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next chunk; b"" when none came within `timeout` seconds; None at the end.

        Raises:
            StreamFailed: the function failed, the stream went over its limit, or the deadline passed.
        """
        give_up = None if timeout is None else time.monotonic() + timeout
        cut = False
        with self._lock:
            while True:
                left = self.deadline_s - self._clock()
                if left <= 0 and self._error is None and not self._ended:
                    # Lambda stops the function at its timeout, whatever it was still sending
                    self._error, self._cancelled, cut = self.deadline_error, True, True
                    self._chunks.clear()
                    self._lock.notify_all()
                if self._chunks:
                    chunk = self._chunks.popleft()
                    self._lock.notify_all()
                    return chunk
                if self._ended or self._error is not None or self._cancelled:
                    break
                if give_up is not None:
                    if time.monotonic() >= give_up:
                        return b""
                    left = min(left, give_up - time.monotonic())
                self._lock.wait(max(left, 0.0))
            error = self._error
        if cut:
            self._notify_cancel()
        if error is not None:
            raise StreamFailed(error)
        return None

    def cancel(self) -> None:
        """The reader stops reading (its client hung up): drop what is queued and tell the writer to stop."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            self._chunks.clear()
            self._lock.notify_all()
        self._notify_cancel()

    def _open_locked(self) -> bool:
        return not (self._cancelled or self._ended or self._error is not None)

    def _notify_cancel(self) -> None:
        if self._on_cancel is not None:
            self._on_cancel()


class InvocationQueue:
    """A FIFO of invocations that environments long-poll, with throttling and timeouts.

    Args:
        clock: epoch seconds; deadlines are computed from it.
    """

    def __init__(self, clock: Callable[[], float] = time.time):
        self._clock = clock
        self._lock = threading.Condition()
        self._waiting: collections.deque[Invocation] = collections.deque()
        self._closed = False
        self._broken: dict | None = None  # set when the function can no longer run anything (failed re-init)

    @property
    def closed(self) -> bool:
        """Whether `close` was called: no more work is handed out."""
        return self._closed

    def run(
        self,
        event: bytes,
        *,
        wait_s: float,
        timeout_s: float,
        request_id: str | None = None,
        client_context: str | None = None,
    ) -> Outcome:
        """Queue `event`, wait for an environment and for the result; never blocks past wait_s + timeout_s."""
        invocation = self.submit(event, timeout_s=timeout_s, request_id=request_id, client_context=client_context)
        if not invocation.started.wait(wait_s) and self._cancel(invocation):
            return Outcome(invocation.request_id, throttled=True)
        # Started now (the cancel found it taken), so its deadline is set.
        left_s = invocation.deadline_ms / 1000 - self._clock() + TIMEOUT_GRACE_S
        if not invocation.done.wait(max(0.0, left_s)):
            if self.finish(invocation, error=timeout_error(invocation.request_id, timeout_s)):
                environment = invocation.environment
                if environment is not None:
                    environment.abort(invocation)
        invocation.done.wait()
        assert invocation.outcome is not None
        return invocation.outcome

    def submit(
        self, event: bytes, *, timeout_s: float, request_id: str | None = None, client_context: str | None = None
    ) -> Invocation:
        """Queue an invocation without waiting for it."""
        invocation = Invocation(event, request_id or str(uuid.uuid4()), timeout_s, client_context)
        with self._lock:
            if self._broken is not None or self._closed:
                invocation.started.set()
                refusal = self._refusal(invocation.request_id)
                self._finish_locked(invocation, Outcome(invocation.request_id, error=refusal))
                return invocation
            self._waiting.append(invocation)
            self._lock.notify()
        return invocation

    def take(self, environment: Environment, *, is_alive: Callable[[], bool] = lambda: True) -> Invocation | None:
        """Block until an invocation is queued, start it on `environment`; None once closed or not alive."""
        with self._lock:
            while True:
                while not self._waiting and not self._closed and is_alive():
                    self._lock.wait()
                if self._closed or not is_alive():
                    return None
                invocation = self._waiting.popleft()
                if not invocation.done.is_set():  # one given back can have timed out meanwhile
                    break
            invocation.environment = environment
            invocation.deadline_ms = int((self._clock() + invocation.timeout_s) * 1000)
            invocation.started.set()
            return invocation

    def give_back(self, invocation: Invocation) -> None:
        """An environment took an invocation but could not deliver it (its runtime vanished): queue it again."""
        with self._lock:
            if invocation.done.is_set():
                return
            invocation.environment = None
            invocation.started.clear()
            self._waiting.appendleft(invocation)
            self._lock.notify()

    def finish(
        self,
        invocation: Invocation,
        *,
        payload: bytes | None = None,
        error: dict | None = None,
        stream: "ResponseStream | None" = None,
    ) -> bool:
        """Record how an invocation ended (or, for a stream, that its answer began); the first report wins.
        Returns whether this one did."""
        with self._lock:
            if invocation.done.is_set():
                return False
            outcome = Outcome(invocation.request_id, payload=payload, error=error, stream=stream)
            self._finish_locked(invocation, outcome)
            return True

    def wake(self) -> None:
        """Make blocked take() calls re-check their environment's liveness."""
        with self._lock:
            self._lock.notify_all()

    def break_with(self, error: dict) -> None:
        """The function cannot run anymore: fail everything queued, and everything submitted later, with `error`."""
        with self._lock:
            self._broken = error
            self._fail_waiting_locked()

    def close(self) -> None:
        """Stop handing out work; waiting invocations fail, blocked take() calls return None."""
        with self._lock:
            self._closed = True
            self._fail_waiting_locked()

    def _refusal(self, request_id: str) -> dict:
        if self._broken is not None:
            return {**self._broken, "requestId": request_id}
        return lambda_error("the function is shutting down", "Emulator.Stopped", request_id)

    def _fail_waiting_locked(self) -> None:
        while self._waiting:
            invocation = self._waiting.popleft()
            invocation.started.set()
            self._finish_locked(invocation, Outcome(invocation.request_id, error=self._refusal(invocation.request_id)))
        self._lock.notify_all()

    def _cancel(self, invocation: Invocation) -> bool:
        with self._lock:
            if invocation.started.is_set():
                return False
            self._waiting.remove(invocation)
            invocation.started.set()
            self._finish_locked(invocation, Outcome(invocation.request_id, throttled=True))
            return True

    @staticmethod
    def _finish_locked(invocation: Invocation, outcome: Outcome) -> None:
        invocation.outcome = outcome
        invocation.done.set()


def timeout_error(request_id: str, timeout_s: float) -> dict:
    """The error Lambda reports for an invocation that ran past the function timeout."""
    message = f"RequestId: {request_id} Error: Task timed out after {timeout_s:.2f} seconds"
    return lambda_error(message, TIMEOUT_ERROR, request_id)


class QueuedFunction:
    """What the local functions (in-process threads, awslambdaric processes) share: settings, queue, invoke().

    Args:
        environments: how many invocations may run at once (each environment runs one at a time).
        config: the function's settings (name, memory, timeout, fake ARN).
        queue_timeout_s: how long an invocation may wait for a free environment before it is throttled.
        clock: epoch seconds, for deadlines.
    """

    def __init__(
        self,
        *,
        environments: int,
        config: FunctionConfig | None,
        queue_timeout_s: float,
        clock: Callable[[], float],
    ):
        if environments < 1:
            raise EmulatorError(f"environments must be at least 1, found {environments}")
        self.environments = environments
        self.config = config or FunctionConfig()
        self.queue_timeout_s = queue_timeout_s
        self.clock = clock
        self.queue = InvocationQueue(clock)

    def invoke(
        self, event: bytes | dict, *, request_id: str | None = None, client_context: str | None = None
    ) -> Outcome:
        """Run one invocation synchronously: wait for a free environment (throttled past queue_timeout_s), then
        for the result (Sandbox.Timedout past the function timeout)."""
        data = event if isinstance(event, bytes) else json.dumps(event).encode("utf-8")
        return self.queue.run(
            data,
            wait_s=self.queue_timeout_s,
            timeout_s=self.config.timeout_s,
            request_id=request_id,
            client_context=client_context,
        )

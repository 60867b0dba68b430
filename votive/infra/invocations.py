"""The queue between the HTTP front and the execution environments, with Lambda's timing rules.

Lambda runs one invocation at a time per execution environment. Locally there is a fixed set of environments
(threads, or awslambdaric processes behind the Runtime API); an invocation waits in this queue until one takes
it, for at most `wait_s` (past that it is throttled, as Lambda answers 429 when no concurrency is left), then has
the function timeout to finish (past that it fails with Sandbox.Timedout). Both kinds of environment take work
with `take()` and report with `finish()`, so the timing rules live only here.
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
from votive.infra.lambda_sandbox import TIMEOUT_ERROR, FunctionConfig, lambda_error

# Slack past the deadline before the front declares a timeout, so a result posted right at the deadline wins.
TIMEOUT_GRACE_S = 0.1


@dataclass
class Outcome:
    """How one invocation ended: a payload, an error object, or throttled before it ran."""

    request_id: str
    payload: bytes | None = None  # the function's response, as the runtime posted it (JSON for most)
    error: dict | None = None  # Lambda's error object when the function or its runtime failed
    throttled: bool = False  # no environment became free within the wait; the function never ran

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
            message = f"RequestId: {invocation.request_id} Error: Task timed out after {timeout_s:.2f} seconds"
            if self.finish(invocation, error=lambda_error(message, TIMEOUT_ERROR, invocation.request_id)):
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

    def finish(self, invocation: Invocation, *, payload: bytes | None = None, error: dict | None = None) -> bool:
        """Record how an invocation ended; the first report wins. Returns whether this one did."""
        with self._lock:
            if invocation.done.is_set():
                return False
            self._finish_locked(invocation, Outcome(invocation.request_id, payload=payload, error=error))
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

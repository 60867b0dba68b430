"""`votive map` over a Modal deployment through the modal SDK rather than its web endpoint.

The app `votive build modal` writes has a method `Endpoint.invoke`: a direct-invoke event `{"path", "body"}` in
(what a Lambda function takes from the Invoke API, votive.handlers.events), the JSON answer out. `ModalTarget`
sends a window of batches as one `invoke.map(events, order_outputs=True, return_exceptions=True)`, so that Modal's
own autoscaling spreads them over containers; the fan-out (votive.client.fanout) drives a target with
`call_many` through one window at a time, sized by its concurrency limit (`--concurrency`: batches per window,
halved on throttles), and keeps its guarantees: shards written whole, failed batches retried up to the cap in
the next window, failures.jsonl, resume, Ctrl-C (the window in flight finishes, nothing new starts).

Each output becomes a `Reply` of the classes the fan-out knows:
- the answer: "ok" (200);
- "Votive.BadRequest: ..." (the handler refused the request; the app raises it as a RuntimeError): "refused"
  (400), not retried;
- `ResourceExhaustedError` (Modal's rate limits and quotas): "throttled" (429);
- a timeout (`FunctionTimeoutError`, any `TimeoutError`): "retry", counted as a timeout;
- anything else (`InternalFailure`, "Votive.ModelError: ...", a lost connection, an exception that did not
  unpickle): "retry" (500).
`NotFoundError`, `AuthError` and the like are refused: retrying cannot make an app appear.

Time: Modal reports no billed duration per input. A reply's `seconds` is from its window's start to its output's
arrival, queueing included, so their sum (the report's measured seconds, priced as GPU seconds) is an upper
bound, like a URL target's. Per-input timeouts are the app's own (`TIMEOUT_S` in modal_app.py), not `--timeout`.

`.spawn_map` is not used: in the modal SDK installed here (1.6) it returns None once the inputs are created, and
its docstring says programmatic retrieval of the results is yet to come; a run through it could write no shards,
record nothing to resume from, and report no failures. (`experimental_spawn_map` returns a FunctionCall whose
results can be iterated, but it is marked hidden and experimental.) So there is no detached mode: `votive map`
waits for the results it writes.

Example:
    >>> target = ModalTarget("votive-minilm")                                    # doctest: +SKIP
    >>> [reply.body["status"] for reply in target.call_many([("/health", None)])]
    ['ok']
"""

from __future__ import annotations

import time
from typing import Iterable

from votive.client.map_targets import Reply

DEFAULT_INVOKE = {"class": "Endpoint", "method": "invoke"}  # what `votive build modal` writes (its manifest says)
THROTTLED = frozenset({"ResourceExhaustedError"})
TIMEOUTS = frozenset({"TimeoutError", "FunctionTimeoutError"})  # modal's TimeoutError family, and Python's
NOT_RETRIED = frozenset({"NotFoundError", "AuthError", "PermissionDeniedError", "InvalidError"})


class ModalSdk:
    """The one call that reaches Modal's servers: the deployed class's method by name (modal imported on first
    use). Tests replace it."""

    def method(self, app: str, environment: str | None, invoke: dict):
        """The deployed `invoke` method; its `.map(inputs, order_outputs=, return_exceptions=)` runs remotely."""
        import modal

        cls = modal.Cls.from_name(app, invoke["class"], environment_name=environment)
        return getattr(cls(), invoke["method"])


class ModalTarget:
    """A deployed votive Modal app, called through the SDK.

    Args:
        app: the deployed app's name.
        environment: the Modal environment (None: the profile's, or MODAL_ENVIRONMENT).
        sdk: ModalSdk, or a stand-in for its network call.
        invoke: {"class", "method"} of the direct-invoke method (default Endpoint.invoke).
    """

    def __init__(self, app: str, *, environment: str | None = None, sdk: ModalSdk | None = None,
                 invoke: dict | None = None):
        self.app, self.environment = app, environment
        self.sdk = sdk or ModalSdk()
        self.invoke = dict(invoke or DEFAULT_INVOKE)
        self.where = f"modal:{app}"
        self._method = None

    def call(self, path: str, body: dict | None) -> Reply:
        (reply,) = self.call_many([(path, body)])
        return reply

    def call_many(self, requests: list[tuple[str, dict | None]]) -> list[Reply]:
        """One Reply per (path, body), in order, from one `.map` over their direct-invoke events."""
        events = [{"path": path} if body is None else {"path": path, "body": body} for path, body in requests]
        replies: list[Reply] = []
        started = time.monotonic()
        try:
            if self._method is None:
                self._method = self.sdk.method(self.app, self.environment, self.invoke)
            outputs: Iterable = self._method.map(events, order_outputs=True, return_exceptions=True)
            for output in outputs:
                replies.append(_reply(output, time.monotonic() - started))
            del replies[len(events):]
        except Exception as exc:  # the call itself failed (lookup, connection): every input still unanswered
            failed = _reply(exc, time.monotonic() - started)
            replies += [Reply(failed.status, error=failed.error, seconds=failed.seconds)
                        for _ in range(len(events) - len(replies))]
        if len(replies) < len(events):  # the SDK ended the stream early: those inputs are lost, so retried
            lost = Reply(500, error=f"modal: {len(events) - len(replies)} of {len(events)} outputs never came back",
                         seconds=time.monotonic() - started)
            replies += [lost] * (len(events) - len(replies))
        return replies


def _reply(output, seconds: float) -> Reply:
    """An output of `.map(..., return_exceptions=True)` as a Reply: the answer, or the exception classed."""
    if not isinstance(output, BaseException):
        return Reply(200, body=output, seconds=seconds)
    kinds = {c.__name__ for c in type(output).__mro__}
    text = f"{type(output).__name__}: {' '.join(str(output).split())[:500]}"
    if "Votive.BadRequest" in text or kinds & NOT_RETRIED:
        return Reply(400, error=text, seconds=seconds)
    if kinds & THROTTLED:
        return Reply(429, error=text, seconds=seconds)
    if kinds & TIMEOUTS:
        return Reply(0, error=f"did not answer in time ({text})", seconds=seconds)
    return Reply(500, error=text, seconds=seconds)

"""The functions `votive map` sends batches to. Each answers `call(path, body)` with a `Reply`, never raising
for the function's own failures: the fan-out decides what to retry from the reply's class.

- `UrlTarget`: a function URL or any votive HTTP endpoint (`votive serve`, a Modal web endpoint), SigV4-signed
  when a signer is given.
- `LambdaTarget`: a function by name through the Invoke API, with the direct-invoke event `{"path", "body"}`
  (votive.handlers.events). The invocation's log tail (LogType Tail) carries Lambda's REPORT line, whose
  "Billed Duration" is what the run's cost estimate adds up.

Reply classes: "ok" (200), "throttled" (429; Lambda's TooManyRequestsException, or a function URL's 429),
"retry" (5xx, a timeout, a lost connection), "refused" (any other 4xx: the request itself is wrong, retrying
cannot help).
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from votive.errors import EndpointError

BILLED = re.compile(r"Billed Duration: (\d+(?:\.\d+)?) ms")
THROTTLE_CODES = frozenset({"TooManyRequestsException", "ThrottlingException", "EC2ThrottledException"})


@dataclass
class Reply:
    status: int  # HTTP status, or 0 when nothing came back
    body: Any = None  # the JSON answer, when there is one
    error: str = ""  # one line, when not ok
    billed_ms: float | None = None  # Lambda's billed duration, when it says
    retry_after: float | None = None  # seconds, when the server says
    seconds: float = 0.0  # wall time of the call

    @property
    def outcome(self) -> str:
        if self.status == 200:
            return "ok"
        if self.status == 429:
            return "throttled"
        if self.status == 0 or self.status >= 500 or self.status in (408, 413):
            return "retry"
        return "refused"


class UrlTarget:
    def __init__(self, url: str, *, signer=None, timeout_s: float = 60.0):
        self.url, self.signer, self.timeout_s = url.rstrip("/"), signer, timeout_s
        self.where = url

    def call(self, path: str, body: dict | None) -> Reply:
        from votive.client.url_invoke import invoke_url

        started = time.monotonic()
        data = None if body is None else json.dumps(body).encode()
        try:
            result = invoke_url(self.url, data=data, path=path, timeout_s=self.timeout_s, sign=self.signer)
        except EndpointError as err:
            return Reply(0, error=str(err), seconds=time.monotonic() - started)
        reply = Reply(result.status, seconds=time.monotonic() - started)
        headers = {name.lower(): value for name, value in result.headers}
        try:
            reply.body = json.loads(result.body) if result.body else None
        except ValueError:
            reply.body = None
        if result.status != 200:
            reply.error = _message(reply.body) or f"HTTP {result.status} {result.reason}"
            reply.retry_after = _seconds(headers.get("retry-after"))
        return reply


class LambdaTarget:
    def __init__(self, lambda_client, name: str, *, qualifier: str | None = None):
        self.client, self.name, self.qualifier = lambda_client, name, qualifier
        self.where = f"lambda:{name}" + (f":{qualifier}" if qualifier else "")

    def call(self, path: str, body: dict | None) -> Reply:
        from votive.client.aws_session import describe, error_code

        event = {"path": path} if body is None else {"path": path, "body": body}
        kwargs = {"FunctionName": self.name, "Payload": json.dumps(event).encode(), "LogType": "Tail"}
        if self.qualifier:
            kwargs["Qualifier"] = self.qualifier
        started = time.monotonic()
        try:
            response = self.client.invoke(**kwargs)
            payload = response["Payload"].read()
        except Exception as exc:  # botocore's errors, classed by their code
            status = 429 if error_code(exc) in THROTTLE_CODES else 0
            return Reply(status, error=describe(exc), seconds=time.monotonic() - started)
        reply = Reply(200, seconds=time.monotonic() - started, billed_ms=_billed_ms(response.get("LogResult")))
        try:
            reply.body = json.loads(payload) if payload else None
        except ValueError:
            reply.body = None
        if response.get("FunctionError"):
            kind = reply.body.get("errorType", "") if isinstance(reply.body, dict) else ""
            message = reply.body.get("errorMessage", "") if isinstance(reply.body, dict) else payload[:300]
            # votive's handlers raise VotiveFault with the class in the message ("Votive.BadRequest: ...")
            reply.status = 400 if "BadRequest" in f"{kind} {message}" else 500
            reply.error = f"{kind}: {message}".strip(": ")
        return reply


def _billed_ms(log_result: str | None) -> float | None:
    if not log_result:
        return None
    found = BILLED.search(base64.b64decode(log_result).decode("utf-8", "replace"))
    return float(found.group(1)) if found else None


def _message(body: Any) -> str:
    """OpenAI's {"error": {"message"}} (votive's handlers), or a 413's {"Message"}."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("Message"):
            return str(body["Message"])
    return ""


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None

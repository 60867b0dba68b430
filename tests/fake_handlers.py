"""Small Lambda handlers for the emulator tests (importable as `fake_handlers.<name>` from tests/).

The runtime API tests start awslambdaric with tests/ as the task root, so these run in a separate process
there; keep them free of test-only imports.
"""

from __future__ import annotations

import json
import os
import threading
import time

_CONTEXT_FIELDS = (
    "function_name",
    "function_version",
    "invoked_function_arn",
    "memory_limit_in_mb",
    "aws_request_id",
    "log_group_name",
    "log_stream_name",
)


def echo(event, context):
    """A bare dict (no statusCode): the event and the context fields, so tests can check both."""
    fields = {name: getattr(context, name) for name in _CONTEXT_FIELDS}
    fields["remaining_ms"] = context.get_remaining_time_in_millis()
    fields["pid"] = os.getpid()
    return {"event": event, "context": fields}


def mirror(event, context):
    """Return whatever JSON the request body holds, so tests choose the response the function gives."""
    return json.loads(event["body"])


def boom(event, context):
    raise ValueError(f"boom: {event.get('rawPath', 'direct')}")


def slow(event, context):
    """Sleep for ?s=SECONDS (default 0.2), then say which environment ran it."""
    seconds = float((event.get("queryStringParameters") or {}).get("s", event.get("sleep", 0.2)))
    time.sleep(seconds)
    return {"slept": seconds, "stream": context.log_stream_name, "pid": os.getpid(), "id": context.aws_request_id}


def exit_if_asked(event, context):
    """Kill the runtime process mid-invocation when the event says {"exit": CODE}; else answer."""
    if "exit" in event:
        os._exit(event["exit"])
    return {"pid": os.getpid()}


def environ(event, context):
    """The values of the environment variables named in event["names"]."""
    return {name: os.environ.get(name) for name in event["names"]}


_active: dict[str, int] = {}
_active_lock = threading.Lock()
overlaps: list[str] = []  # environments seen running two invocations at once
peak_total = [0]


def record_overlap(event, context):
    """Count invocations running per environment (log stream) and in total while sleeping briefly."""
    stream = context.log_stream_name
    with _active_lock:
        _active[stream] = _active.get(stream, 0) + 1
        if _active[stream] > 1:
            overlaps.append(stream)
        peak_total[0] = max(peak_total[0], sum(_active.values()))
    time.sleep(0.02)
    with _active_lock:
        _active[stream] -= 1
    return {"stream": stream, "n": json.loads(event.get("body") or "null")}


def reset_overlap() -> None:
    with _active_lock:
        _active.clear()
        overlaps.clear()
        peak_total[0] = 0

"""`votive logs NAME`: the function's CloudWatch log events, from some time back, and new ones as they come.

Example:
    >>> parse_since("90s"), parse_since("10m"), parse_since("2h")
    (90, 600, 7200)
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timezone
from typing import Callable, Iterator

from votive.client.aws_session import aws_errors, is_not_found
from votive.errors import DeployError

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
POLL_S = 2.0  # between polls when following: CloudWatch itself takes seconds to show new events


def parse_since(text: str) -> int:
    """'30s', '10m', '2h', '1d' (or plain seconds) -> seconds; DeployError for anything else."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise DeployError(f"--since {text!r}: expected a number with s, m, h or d (e.g. 10m)")
    return int(match.group(1)) * UNITS[match.group(2) or "s"]


def tail_logs(logs_client, group: str, *, since_s: int, follow: bool = False,
              now: Callable[[], float] = time.time, sleep: Callable[[float], None] = time.sleep,
              polls: int | None = None) -> Iterator[str]:
    """Yield the log group's events from `since_s` ago as lines '<UTC time> <message>', oldest first.

    Args:
        logs_client: a boto3 CloudWatch Logs client.
        group: the log group.
        since_s: how far back to start.
        follow: keep polling for new events (until the caller stops iterating, or `polls` rounds).
        now, sleep: the clock and the wait between polls (fakes in tests).
        polls: with `follow`, stop after this many rounds (None: never).
    """
    start_ms = int((now() - since_s) * 1000)
    seen: set[str] = set()
    rounds = 0
    while True:
        newest = start_ms
        for event in _events(logs_client, group, start_ms):
            if event["eventId"] in seen:
                continue
            seen.add(event["eventId"])
            stamp = int(event["timestamp"])  # ms; some endpoints (moto) send a float, and startTime must be an int
            newest = max(newest, stamp)
            when = datetime.fromtimestamp(stamp / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
            yield f"{when[:-3]}Z {event['message'].rstrip()}"
        rounds += 1
        if not follow or (polls is not None and rounds >= polls):
            return
        start_ms = newest  # events at that very millisecond come again and are skipped by id
        sleep(POLL_S)


def _events(logs_client, group: str, start_ms: int) -> Iterator[dict]:
    token = None
    with aws_errors(f"read the log group {group}"):
        while True:
            kwargs = {"logGroupName": group, "startTime": start_ms}
            if token:
                kwargs["nextToken"] = token
            try:
                page = logs_client.filter_log_events(**kwargs)
            except Exception as exc:
                if is_not_found(exc):
                    raise DeployError(f"log group {group} does not exist: the function has not been deployed, or "
                                      f"was destroyed") from None
                raise
            yield from sorted(page.get("events", []), key=lambda e: (e["timestamp"], e["eventId"]))
            token = page.get("nextToken")
            if not token:
                return

"""Flow control for fanning requests out: a rate limit, a concurrency limit that backs off when throttled, and
retries with jittered exponential backoff. Time comes from a `clock` (monotonic seconds) and `sleep`, so tests
drive them without waiting.

- `TokenBucket(rps)`: at most `rps` request starts per second on average, bursts up to one second's worth.
- `AdaptiveLimit(maximum)`: how many requests may be in flight. Additive increase, multiplicative decrease (TCP's
  AIMD): every throttle (429, or Lambda's TooManyRequestsException) halves it, down to 1; every `window`
  successes in a row add 1 back, up to the maximum the user set. So a reindex that starts into a cold fleet
  settles at what the account's concurrency allows, instead of storming it.
- `Backoff`: the wait before retry k is uniform in [0, min(cap, base * 2**k)] ("full jitter"), or what the
  server's Retry-After said when it said so.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from typing import Callable


class TokenBucket:
    """Wait until a request may start; `rps` None or 0: no limit."""

    def __init__(self, rps: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.rps = rps
        self.clock, self.sleep = clock, sleep
        self.tokens = float(rps or 0)  # a full bucket: one second's burst
        self.stamp = clock()
        self.lock = threading.Lock()

    def take(self) -> None:
        """Take a token, sleeping until it is due. Tokens are reserved (the count may go below zero), so
        callers waiting together are spaced 1 / rps apart rather than racing for the same refill."""
        if not self.rps:
            return
        with self.lock:
            now = self.clock()
            self.tokens = min(float(self.rps), self.tokens + (now - self.stamp) * self.rps)
            self.stamp = now
            self.tokens -= 1
            wait = -self.tokens / self.rps if self.tokens < 0 else 0.0
        if wait > 0:
            self.sleep(wait)


class AdaptiveLimit:
    """A concurrency limit with AIMD: `acquire` blocks while `limit` requests are in flight."""

    def __init__(self, maximum: int, *, window: int = 8):
        self.maximum = maximum
        self.limit = maximum
        self.window = window  # successes in a row that earn one more slot
        self.in_flight = 0
        self.streak = 0
        self.throttles = 0
        self.cond = threading.Condition()

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Take a slot; False if `stop` was set while waiting."""
        with self.cond:
            while self.in_flight >= self.limit:
                if stop is not None and stop.is_set():
                    return False
                self.cond.wait(0.1)
            self.in_flight += 1
            return True

    def release(self, outcome: str) -> None:
        """Give the slot back; outcome "ok", "throttled" or "failed" adjusts the limit."""
        with self.cond:
            self.in_flight -= 1
            if outcome == "throttled":
                self.throttles += 1
                self.limit = max(1, self.limit // 2)
                self.streak = 0
            elif outcome == "ok":
                self.streak += 1
                if self.streak >= self.window and self.limit < self.maximum:
                    self.limit += 1
                    self.streak = 0
            self.cond.notify_all()


@dataclass
class Backoff:
    """Retry waits: full jitter over an exponential ceiling."""

    base_s: float = 0.2
    cap_s: float = 20.0
    rng: random.Random | None = None

    def wait(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry)."""
        if retry_after is not None and retry_after >= 0:
            return min(self.cap_s, retry_after)
        ceiling = min(self.cap_s, self.base_s * 2**attempt)
        return (self.rng or random).uniform(0, ceiling)

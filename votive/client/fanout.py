"""`votive map`'s engine: a corpus cut into shards, shards into batches, batches sent to a function by a pool of
threads under flow control (votive.client.flow), each finished shard written and recorded
(votive.client.map_output) before it is forgotten.

Memory stays bounded: rows are read as a stream, and the reader waits while `max_open_shards` shards are still
being answered. Order is kept: a shard's results are put back in row order whatever order its batches come back
in. A batch is retried (up to `retries` times, with jittered backoff) when it was throttled or the function
failed or timed out; a request the function refuses (a 4xx) is not retried. A shard with a batch that failed
for good is not written: its failed batches go to failures.jsonl with their rows and the last error, and a rerun
redoes that shard. On stop (Ctrl-C) no new request starts, requests in flight finish, and only whole shards are
recorded.

A target that answers many batches in one call (`call_many`, a Modal `.map`: votive.client.modal_map) is driven
by one thread instead of a pool: each window is as many batches as the concurrency limit allows (so throttles
shrink it), and the batches of a window that failed are retried, after one backoff, in the next window beside new
ones; the caps, the outcome classes and the accounting are the pool's.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
import queue
from queue import Queue
from typing import Any, Iterable

from votive.client.flow import AdaptiveLimit, Backoff, TokenBucket
from votive.client.map_output import FAILURES
from votive.client.map_tasks import AnswerError

PAYLOAD_LIMIT = 6 * 1024 * 1024  # Lambda's (and function URLs') limit on a synchronous request
_STOP = object()


@dataclass
class MapSettings:
    batch_size: int = 64  # rows per request, for tasks that batch (embed)
    shard_rows: int = 10000  # rows per output shard
    concurrency: int = 8  # requests in flight at most (AIMD brings it down when throttled)
    rps: float | None = None  # request starts per second at most
    retries: int = 4  # retries per batch after its first try
    max_open_shards: int = 4  # shards read ahead of the ones still being answered
    payload_limit: int = PAYLOAD_LIMIT


@dataclass
class MapReport:
    rows: int = 0  # rows written in this run
    skipped_rows: int = 0  # rows of shards a previous run finished
    shards: int = 0
    failed_batches: int = 0
    failed_rows: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)  # outcome class -> count of failed tries
    billed_ms: float = 0.0  # Lambda's billed duration, summed where it was reported
    billed_requests: int = 0  # requests whose billed duration was reported
    measured_s: float = 0.0  # wall time of every request, summed
    stopped: bool = False

    def percentile(self, q: float) -> float | None:
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Shard:
    def __init__(self, name: str, rows: list, n_batches: int):
        self.name, self.rows = name, rows
        self.results: list[Any] = [None] * len(rows)
        self.pending = n_batches
        self.failures: list[dict] = []


class MapRun:
    """One pass over a corpus. `rows` yields corpus.Row in order; `manifest` says which shards are done."""

    def __init__(self, target, task, rows: Iterable, manifest, folder, settings: MapSettings, *,
                 source: str = "input", progress=None, backoff: Backoff | None = None, sleep=time.sleep):
        self.target, self.task, self.rows, self.source = target, task, rows, source
        self.manifest, self.folder, self.s = manifest, folder, settings
        self.progress = progress
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.limit = AdaptiveLimit(settings.concurrency)
        self.bucket = TokenBucket(settings.rps)
        self.report = MapReport()
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.open_shards = threading.Semaphore(settings.max_open_shards)
        self.queue: Queue = Queue(maxsize=settings.concurrency * 4)

    def run(self) -> MapReport:
        started = time.monotonic()
        windows = hasattr(self.target, "call_many")  # the target fans a window out itself: one driver
        workers = [threading.Thread(target=self._work_windows if windows else self._work, daemon=True,
                                    name=f"map-{i}") for i in range(1 if windows else self.s.concurrency)]
        for w in workers:
            w.start()
        try:
            self._produce()
        except KeyboardInterrupt:
            self.stop.set()
            self.report.stopped = True
        except BaseException:  # a malformed row: nothing more starts, the shards already whole are kept
            self.stop.set()
            raise
        finally:
            for _ in workers:
                self.queue.put(_STOP)
            for w in workers:
                while w.is_alive():  # joined in steps so that Ctrl-C still reaches us
                    try:
                        w.join(0.2)
                    except KeyboardInterrupt:
                        self.stop.set()
                        self.report.stopped = True
            self.report.seconds = time.monotonic() - started
            if self.progress:
                self.progress.done(self)
        return self.report

    # ------------------------------------------------------------------------------------------- producer
    def _produce(self) -> None:
        shard_rows, first = [], 0
        for row in self.rows:
            if self.stop.is_set():
                return
            if not shard_rows:
                first = row.index
            shard_rows.append(row)
            if len(shard_rows) == self.s.shard_rows:
                self._submit_shard(first, shard_rows)
                shard_rows = []
        if shard_rows and not self.stop.is_set():
            self._submit_shard(first, shard_rows)

    def _submit_shard(self, first: int, rows: list) -> None:
        name = f"part-{first // self.s.shard_rows:05d}"
        if self.manifest.done(name):
            self.report.skipped_rows += len(rows)
            return
        for row in rows:
            self.task.check_row(row, self.source)
        batches = self._batches(rows)
        while not self.open_shards.acquire(timeout=0.2):
            if self.stop.is_set():
                return
        shard = _Shard(name, rows, len(batches))
        for start, stop in batches:
            while not self.stop.is_set():
                try:
                    self.queue.put((shard, start, stop), timeout=0.2)
                    break
                except queue.Full:  # every worker busy: wait
                    continue

    def _batches(self, rows: list) -> list[tuple[int, int]]:
        """(start, stop) index ranges of the shard's requests: the batch size, halved while a request would
        exceed the payload limit."""
        size = self.task.rows_per_request or self.s.batch_size
        out, start = [], 0
        while start < len(rows):
            stop = min(len(rows), start + size)
            while stop - start > 1 and len(json.dumps(self.task.request(rows[start:stop])[1])) > self.s.payload_limit:
                stop = start + (stop - start) // 2
            out.append((start, stop))
            start = stop
        return out

    # --------------------------------------------------------------------------------------------- workers
    def _work(self) -> None:
        while True:
            item = self.queue.get()
            if item is _STOP:
                return
            shard, start, stop = item
            if self.stop.is_set():
                self._finish(shard, start, stop, None, "stopped")
                continue
            results, error = self._send(shard.rows[start:stop])
            self._finish(shard, start, stop, results, error)

    def _send(self, rows: list) -> tuple[list | None, str]:
        """Results for `rows`, retried as needed; (None, last error) when the batch failed for good."""
        path, body = self.task.request(rows)
        error = ""
        for attempt in range(self.s.retries + 1):
            if attempt and self.stop.is_set():
                return None, f"stopped after: {error}"
            if not self.limit.acquire(self.stop):
                return None, "stopped"
            self.bucket.take()
            reply = self.target.call(path, body)
            results, outcome, error = self._answer(rows, reply)
            if results is not None:
                return results, ""
            if outcome == "refused" or attempt == self.s.retries:
                break
            with self.lock:
                self.report.retries += 1
            self.sleep(self.backoff.wait(attempt, reply.retry_after))
        return None, error

    def _answer(self, rows: list, reply) -> tuple[list | None, str, str]:
        """(results or None, outcome, error) of one try: the reply read by the task and counted in the report,
        its slot given back to the concurrency limit."""
        outcome = reply.outcome
        results = None
        if outcome == "ok":
            try:
                results = self.task.results(rows, reply.body)
            except AnswerError as err:
                outcome, reply.error = "refused", f"{self.target.where}: {err}"
        self.limit.release(outcome)
        with self.lock:
            r = self.report
            r.requests += 1
            r.latencies.append(reply.seconds)
            r.measured_s += reply.seconds
            if reply.billed_ms is not None:
                r.billed_ms += reply.billed_ms
                r.billed_requests += 1
            if outcome != "ok":
                r.errors[_error_class(reply)] += 1
        if results is not None:
            return results, outcome, ""
        return None, outcome, f"HTTP {reply.status}: {reply.error}" if reply.status else reply.error

    def _work_windows(self) -> None:
        """The one driver of a `call_many` target: windows of batches until the producer is done and no batch
        waits for a retry."""
        waiting: list[list] = []  # [shard, start, stop, attempt, last error]: batches to retry in the next window
        ended = False
        while waiting or not ended:
            window, later = [], []
            for entry in waiting:
                if self.stop.is_set():
                    self._finish(*entry[:3], None, f"stopped after: {entry[4]}")
                else:  # a throttle may have shrunk the limit below the batches waiting
                    (window if len(window) < self.limit.limit else later).append(entry)
            while not ended and len(window) < self.limit.limit:
                try:
                    item = self.queue.get_nowait() if window else self.queue.get()
                except queue.Empty:  # send what there is rather than wait for the reader
                    break
                if item is _STOP:
                    ended = True
                elif self.stop.is_set():
                    self._finish(*item, None, "stopped")
                else:
                    window.append([*item, 0, ""])
            waiting = later + (self._send_window(window) if window else [])

    def _send_window(self, window: list[list]) -> list[list]:
        """Send a window in one call; finish the batches answered or failed for good, return those to retry."""
        requests = [self.task.request(shard.rows[start:stop]) for shard, start, stop, *_ in window]
        for _ in window:
            self.limit.acquire()  # free: one driver, and a window no larger than the limit
            self.bucket.take()
        retry, retry_after = [], None
        for (shard, start, stop, attempt, _), reply in zip(window, self.target.call_many(requests)):
            results, outcome, error = self._answer(shard.rows[start:stop], reply)
            if results is not None or outcome == "refused" or attempt == self.s.retries:
                self._finish(shard, start, stop, results, error)
            else:
                retry.append([shard, start, stop, attempt + 1, error])
                retry_after = reply.retry_after if retry_after is None else retry_after
        if retry:
            with self.lock:
                self.report.retries += len(retry)
            self.sleep(self.backoff.wait(max(entry[3] for entry in retry) - 1, retry_after))
        return retry

    def _finish(self, shard: _Shard, start: int, stop: int, results: list | None, error: str) -> None:
        with self.lock:
            if results is not None:
                shard.results[start:stop] = results
            elif error != "stopped":
                rows = shard.rows[start:stop]
                shard.failures.append({"shard": shard.name, "rows": [rows[0].index, rows[-1].index + 1],
                                       "ids": [r.id for r in rows], "error": error})
            else:
                shard.failures.append(None)  # abandoned on stop: neither written nor a failure
            shard.pending -= 1
            last = shard.pending == 0
        if self.progress and results is not None:
            self.progress.update(self, stop - start)
        if last:
            self._close(shard)

    def _close(self, shard: _Shard) -> None:
        try:
            if not shard.failures:
                self.manifest.record(shard.name, shard.rows[0].index,
                                     self.task.shard_files(shard.name, shard.rows, shard.results))
                with self.lock:
                    self.report.rows += len(shard.rows)
                    self.report.shards += 1
                return
            real = [f for f in shard.failures if f is not None]
            if real:
                self.folder.append(FAILURES, b"".join(json.dumps(f).encode() + b"\n" for f in real))
                with self.lock:
                    self.report.failed_batches += len(real)
                    self.report.failed_rows += sum(f["rows"][1] - f["rows"][0] for f in real)
        finally:
            self.open_shards.release()


def _error_class(reply) -> str:
    if reply.status == 0:
        return "timeout" if "did not answer" in reply.error else "connection"
    if reply.status == 429:
        return "429"
    return "5xx" if reply.status >= 500 else f"{reply.status}"


class Progress:
    """One line on stderr, redrawn at most twice a second: rows, batches, rate, ETA, concurrency, 429s, retries."""

    def __init__(self, total: int | None, stream=sys.stderr, clock=time.monotonic):
        self.total, self.stream, self.clock = total, stream, clock
        self.rows = self.batches = 0
        self.started = self.last = clock()

    def update(self, run: MapRun, rows: int) -> None:
        with run.lock:
            self.rows += rows
            self.batches += 1
        now = self.clock()
        if now - self.last >= 0.5:
            self.last = now
            self.stream.write("\r" + self.line(run))
            self.stream.flush()

    def line(self, run: MapRun) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.rows / elapsed
        done = self.rows + run.report.skipped_rows
        total = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and rate > 0:
            eta = f"  ETA {_clock((self.total - done) / rate)}"
        return (f"{done}{total} rows  {self.batches} batches  {rate:.1f} rows/s{eta}  concurrency "
                f"{run.limit.limit}  429s {run.limit.throttles}  retries {run.report.retries}   ")

    def done(self, run: MapRun) -> None:
        self.stream.write("\r" + self.line(run) + "\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"

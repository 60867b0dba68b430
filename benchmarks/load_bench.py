"""Load test: many clients against `votive serve MODEL --environments 4`, the local function URL under overload.

What it measures (issue 19): latency p50 / p99 of the ordinary requests, how many got 429 (no environment free
within the queue wait), and that no answer crossed to another request: every vector that comes back is checked
against the reference vector of the text it was asked for (computed one request at a time before the load), and
must be nearer to it than to any other text of the pool. With `--long-fraction`, that fraction of requests is
made to run past the function timeout (`--timeout`): they must come back 502 (Lambda's answer to a timed-out
function URL invocation) while the ordinary ones keep being served, since a timed-out environment stops its work
and is replaced.

Two servers:
    --model minilm      the real embeddings handler (all-MiniLM-L6-v2 from its installed package)
    --fake              no model: votive's embeddings handler around this file's `_CountingModel` stand-in (one
                        forward pass per text, `LOAD_BENCH_PASS_S` seconds each), so the serving path, deadlines and
                        environment replacement are exercised without the model's compute

Run (the full run; `--seconds 15` for a short one):

    .venv/bin/python benchmarks/load_bench.py --fake --seconds 60
    .venv/bin/python benchmarks/load_bench.py --fake --seconds 60 --timeout 1 --long-fraction 0.05
    .venv/bin/python benchmarks/load_bench.py --model minilm --seconds 60
    .venv/bin/python benchmarks/load_bench.py --model minilm --seconds 60 --timeout 2 --long-fraction 0.02

It prints one JSON summary (also with --json PATH); the load average is read at the start and at the end.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
POOL_SIZE = 64  # distinct texts the requests draw from, each with a reference vector
FAKE_DIM = 8


# ------------------------------------------------------------------------------------- the --fake server side
class _CountingModel:
    """An encoder family stand-in: each token's state is cos(id * 0.37 * d) for d = 1..D, slept over per pass."""

    hidden_size = FAKE_DIM
    max_positions = 64

    def __init__(self):
        from votive.backends import get_backend

        self.ops = get_backend("numpy")
        self.pass_s = float(os.environ.get("LOAD_BENCH_PASS_S", "0.004"))

    def forward(self, ids, mask):
        time.sleep(self.pass_s)  # stands for the compute; releases the GIL as numpy's kernels do
        ids = np.asarray(ids, np.float64)[:, :, None]  # (b, T, 1)
        return np.cos(ids * 0.37 * np.arange(1, FAKE_DIM + 1)).astype(np.float32)  # (b, T, D): a direction per id


class _HashTokenizer:
    """[CLS] crc32(text) [SEP]: a text's mean-pooled vector depends on the text only, and differs between texts."""

    def encode_batch(self, texts):
        return [[1, zlib.crc32(t.encode("utf-8")) % (1 << 20), 2] for t in texts]


def _fake_handler():
    from votive.handlers.embeddings import make_handler
    from votive.models.sentence_encoder import Pooling, SentenceEncoder

    encoder = SentenceEncoder(_CountingModel(), _HashTokenizer(), Pooling(), 64, "counting-encoder")
    return make_handler(encoder, batch_size=1)


handler = None


def fake_embeddings(event, context):
    """The --fake function's handler (`load_bench.fake_embeddings`); built on the first call."""
    global handler
    if handler is None:
        handler = _fake_handler()
    return handler(event, context)


# ------------------------------------------------------------------------------------------------- the client
def start_server(args) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "votive.cli", "serve", "--port", "0", "--environments", str(args.environments),
               "--timeout", str(args.timeout)]
    env = dict(os.environ)
    if args.fake:
        command += ["--handler", "load_bench.fake_embeddings"]
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "benchmarks"), str(REPO), env.get("PYTHONPATH", "")])
    else:
        command.insert(4, args.model)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, start_new_session=True)
    assert process.stdout is not None
    for line in process.stdout:
        match = re.search(r"at (http://[\d.]+:\d+)", line)
        if match:
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()  # drain
            return process, match.group(1)
    raise SystemExit(f"votive serve did not start (exit status {process.wait()})")


def post(connection: http.client.HTTPConnection, path: str, body: dict | None) -> tuple[int, bytes]:
    if body is None:
        connection.request("GET", path)
    else:
        connection.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def vectors_of(answer: bytes) -> np.ndarray:
    data = json.loads(answer)["data"]
    return np.stack([np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in data])


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency_ms: list[float] = []  # ordinary requests answered 200
        self.long_latency_ms: list[float] = []
        self.status: dict[str, int] = {}
        self.crossed = 0
        self.checked = 0
        self.errors: list[str] = []

    def count(self, kind: str, status: int | str) -> None:
        key = f"{kind} {status}"
        with self.lock:
            self.status[key] = self.status.get(key, 0) + 1


def run_client(url: str, pool: list[str], reference: np.ndarray, args, stop_at: float, tally: Tally,
               seed: int) -> None:
    rng = random.Random(seed)
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=args.timeout + 30)
    while time.monotonic() < stop_at:
        roll = rng.random()
        if roll < args.health_fraction:
            kind, body = "health", None
        elif roll < args.health_fraction + args.long_fraction:
            kind, body = "long", {"input": args.long_input, "encoding_format": "base64"}
        else:
            kind = "short"
            picks = [rng.randrange(len(pool)) for _ in range(rng.randint(1, args.max_inputs))]
            body = {"input": [pool[i] for i in picks], "encoding_format": "base64"}
        started = time.perf_counter()
        try:
            status, answer = post(connection, "/health" if body is None else "/v1/embeddings", body)
        except (OSError, http.client.HTTPException) as exc:
            tally.count(kind, type(exc).__name__)
            connection.close()
            connection = http.client.HTTPConnection(host, int(port), timeout=args.timeout + 30)
            continue
        ms = (time.perf_counter() - started) * 1000
        tally.count(kind, status)
        if status != 200:
            continue
        with tally.lock:
            (tally.long_latency_ms if kind == "long" else tally.latency_ms).append(ms)
        if kind != "short":
            continue
        got = vectors_of(answer)
        wanted = reference[picks]
        crossed = _crossed(got, wanted, reference, picks)
        with tally.lock:
            tally.checked += len(picks)
            tally.crossed += crossed


def _crossed(got: np.ndarray, wanted: np.ndarray, reference: np.ndarray, picks: list[int]) -> int:
    """How many returned vectors are not their own text's: not within cosine 0.9999 of its reference, or nearer
    to another pool text's reference."""
    if got.shape != wanted.shape:
        return len(picks)
    unit = lambda a: a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-30)  # noqa: E731
    cos_all = unit(got) @ unit(reference).T  # (n, pool)
    own = cos_all[np.arange(len(picks)), picks]
    nearest = cos_all.argmax(axis=1)
    scale_ok = np.allclose(np.linalg.norm(got, axis=1), np.linalg.norm(wanted, axis=1), rtol=1e-3)
    bad = (own < 0.9999) | (nearest != np.asarray(picks)) | (not scale_ok)
    return int(bad.sum())


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="model to serve (e.g. minilm)")
    which.add_argument("--fake", action="store_true", help="serve this file's stand-in encoder instead of a model")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--environments", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=30.0, help="the function timeout of the server")
    parser.add_argument("--long-fraction", type=float, default=0.0, help="fraction of requests made to time out")
    parser.add_argument("--health-fraction", type=float, default=0.05, help="fraction of GET /health requests")
    parser.add_argument("--max-inputs", type=int, default=8, help="texts per ordinary request: 1 to this")
    parser.add_argument("--json", type=Path, help="also write the summary here")
    args = parser.parse_args()
    # A long request: inputs enough to run far past the timeout (at --fake's default pass time, 1000 texts are
    # 4 s of passes; MiniLM takes ~0.1-0.3 s per 32 texts of 200 words on 2 busy cores), under the 6 MB answer.
    args.long_input = [f"long {i} " + "word " * 200 for i in range(1000 if args.fake else 2000)]

    load_start = os.getloadavg()
    process, url = start_server(args)
    try:
        pool = [f"text {i}: " + " ".join(random.Random(i).choice(["alpha", "beta", "gamma", "delta"])
                                         for _ in range(5 + i % 20)) for i in range(POOL_SIZE)]
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=300)
        reference = []
        for text in pool:  # one text per request, before any load: the vectors each answer is checked against
            status, answer = post(connection, "/v1/embeddings", {"input": [text], "encoding_format": "base64"})
            if status != 200:
                raise SystemExit(f"reference request answered {status}: {answer[:300]!r}")
            reference.append(vectors_of(answer)[0])
        reference = np.stack(reference)
        tally = Tally()
        stop_at = time.monotonic() + args.seconds
        threads = [threading.Thread(target=run_client, args=(url, pool, reference, args, stop_at, tally, seed),
                                    daemon=True) for seed in range(args.clients)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        # after the load: the server must answer at once again (no environment left blocked); a new connection,
        # since the server has closed the idle one by now
        connection.close()
        status_after, _ = post(connection, "/health", None)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    total = sum(tally.status.values())
    summary = {
        "server": f"votive serve {args.model or '(fake encoder)'} --environments {args.environments} "
                  f"--timeout {args.timeout}",
        "clients": args.clients, "seconds": round(elapsed, 1), "requests": total,
        "requests_per_s": round(total / elapsed, 1),
        "short_p50_ms": percentile(tally.latency_ms, 50), "short_p99_ms": percentile(tally.latency_ms, 99),
        "long_fraction": args.long_fraction,
        "status_counts": dict(sorted(tally.status.items())),
        "throttled_429": sum(n for k, n in tally.status.items() if k.endswith(" 429")),
        "vectors_checked": tally.checked, "crossed_answers": tally.crossed,
        "health_after_load": status_after,
        "loadavg_start": " ".join(f"{x:.2f}" for x in load_start),
        "loadavg_end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "cpus": os.cpu_count(),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if tally.crossed == 0 and status_after == 200 else 1


if __name__ == "__main__":
    sys.exit(main())

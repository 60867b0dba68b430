"""`votive map`: a corpus fanned out to a function and back, in order, once per row, resumable.

Real parts: the function URL emulator with 2 or 4 environments in this process (fake embedders with injected
faults from tests/fake_map_handlers.py, and the real MiniLM handler), the CLI in this process or as a child
process killed with SIGKILL, and S3 on the session's moto server.
"""

from __future__ import annotations

import base64
import csv
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import fake_map_handlers
from map_outputs import read_embeddings
from votive.cli import main
from votive.client.flow import AdaptiveLimit, Backoff, TokenBucket
from votive.client.map_targets import LambdaTarget
from votive.emulators.function_url import FunctionUrlServer

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def serve():
    servers = []

    def start(handler, **options):
        server = FunctionUrlServer(handler, port=0, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _corpus(path: Path, n: int, *, poison_at: int | None = None) -> list[dict]:
    rows = [{"id": f"doc-{i}", "text": "poison" if i == poison_at else f"text number {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _batch(url: str, texts: list[str]) -> np.ndarray:
    request = urllib.request.Request(url + "/v1/embeddings", method="POST",
                                     data=json.dumps({"input": texts, "encoding_format": "base64"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        data = json.loads(response.read())["data"]
    return np.stack([np.frombuffer(base64.b64decode(item["embedding"]), "<f4") for item in data])


def _single(url: str, text: str) -> np.ndarray:
    return _batch(url, [text])[0]


def _map(*args) -> int:
    return main(["map", *map(str, args), "--quiet"])


# ------------------------------------------------------------------------------------------------ correctness
def test_ten_thousand_rows_through_four_environments(serve, tmp_path):
    server = serve(fake_map_handlers.embed, environments=4)
    rows = _corpus(tmp_path / "in.jsonl", 10_000)
    assert _map(server.url, tmp_path / "in.jsonl", "--out", tmp_path / "out", "--id-field", "id",
                "--batch-size", 64, "--shard-rows", 2500, "--concurrency", 8) == 0
    ids, vectors = read_embeddings(tmp_path / "out")
    assert ids == [r["id"] for r in rows]  # every row once, in order
    assert np.array_equal(vectors, np.stack([fake_map_handlers.vector(r["text"]) for r in rows]))
    for i in np.random.default_rng(0).choice(len(rows), 40, replace=False):  # and as single requests answer
        assert np.array_equal(vectors[i], _single(server.url, rows[i]["text"]))
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["rows"] == 10_000 and sorted(manifest["shards"]) == [f"part-{k:05d}" for k in range(4)]
    assert manifest["shards"]["part-00001"]["rows"] == [2500, 5000]


def test_minilm_through_the_real_handler_equals_single_requests(serve, tmp_path, minilm_dir):
    from votive.cli.serve import DEFAULT_HANDLER, handler_init
    from votive.emulators.in_process import InProcessFunction
    from votive.sources import resolve_source

    function = InProcessFunction(DEFAULT_HANDLER, environments=2,
                                 init=handler_init(DEFAULT_HANDLER, resolve_source(str(minilm_dir))))
    server = serve(function)
    texts = [f"sentence {i}: " + "word " * (i % 23) for i in range(96)]
    with (tmp_path / "in.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["body", "n"])
        writer.writerows([t, i] for i, t in enumerate(texts))
    assert _map(server.url, tmp_path / "in.csv", "--out", tmp_path / "out", "--field", "body",
                "--batch-size", 16, "--shard-rows", 48) == 0
    ids, vectors = read_embeddings(tmp_path / "out")
    assert ids == [str(i) for i in range(96)]
    # the same batches sent by hand give the same bytes: no row was mixed up, none reordered
    assert np.array_equal(vectors, np.concatenate([_batch(server.url, texts[i : i + 16]) for i in range(0, 96, 16)]))
    # one text per request pads nothing, so the matrix products sum in another order: equal to float rounding
    singles = np.stack([_single(server.url, t) for t in texts[:24]])
    assert np.abs(vectors[:24] - singles).max() < 1e-6


def test_faults_are_retried_and_every_row_lands_once(serve, tmp_path, capsys):
    """An environment failing one request in five, answering 429 one in seven, and hanging past the timeout."""
    fake_map_handlers.hung.clear()
    server = serve(fake_map_handlers.faulty_embed, environments=4)
    rows = _corpus(tmp_path / "in.jsonl", 1200)
    assert _map(server.url, tmp_path / "in.jsonl", "--out", tmp_path / "out", "--batch-size", 20,
                "--shard-rows", 300, "--concurrency", 4, "--timeout", 1, "--retries", 8) == 0
    ids, vectors = read_embeddings(tmp_path / "out")
    assert ids == [str(i) for i in range(1200)]
    assert np.array_equal(vectors, np.stack([fake_map_handlers.vector(r["text"]) for r in rows]))
    assert not (tmp_path / "out" / "failures.jsonl").exists()
    report = capsys.readouterr().err
    assert "5xx x" in report and "429 x" in report and "timeout x" in report and fake_map_handlers.hung


def test_a_batch_refused_for_good_goes_to_failures_and_a_rerun_redoes_its_shard(serve, tmp_path, capsys):
    server = serve(fake_map_handlers.refusing_embed, environments=2)
    rows = _corpus(tmp_path / "in.jsonl", 300, poison_at=150)
    args = (server.url, tmp_path / "in.jsonl", "--out", tmp_path / "out", "--id-field", "id", "--batch-size", 10,
            "--shard-rows", 100)
    assert _map(*args) == 1
    assert "1 batches (10 rows) failed after their retries" in capsys.readouterr().err
    (failure,) = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert failure["rows"] == [150, 160] and failure["ids"][0] == "doc-150"
    assert "poison refused" in failure["error"] and failure["shard"] == "part-00001"
    assert sorted(json.loads((tmp_path / "out" / "manifest.json").read_text())["shards"]) == ["part-00000",
                                                                                                "part-00002"]
    fake_map_handlers.refuse[0] = False  # the function is fixed; the same command picks up where it failed
    try:
        assert _map(*args) == 0
    finally:
        fake_map_handlers.refuse[0] = True
    ids, _ = read_embeddings(tmp_path / "out")
    assert ids == [r["id"] for r in rows]
    assert "200 rows already done" in capsys.readouterr().err


def test_kill_9_then_rerun_gives_the_bytes_of_an_uninterrupted_run(serve, tmp_path):
    server = serve(fake_map_handlers.slow_embed, environments=2)
    _corpus(tmp_path / "in.jsonl", 2400)
    command = [sys.executable, "-m", "votive.cli", "map", server.url, str(tmp_path / "in.jsonl"), "--id-field", "id",
               "--batch-size", 10, "--shard-rows", 200, "--concurrency", 2, "--quiet"]
    command = [str(c) for c in command]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([*command, "--out", str(tmp_path / "whole")], env=env, timeout=300).returncode == 0
    child = subprocess.Popen([*command, "--out", str(tmp_path / "killed")], env=env)
    manifest = tmp_path / "killed" / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if manifest.exists() and len(json.loads(manifest.read_text())["shards"]) >= 3:
            break
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(json.loads(manifest.read_text())["shards"]) < 12  # killed half way
    assert subprocess.run([*command, "--out", str(tmp_path / "killed")], env=env, timeout=300).returncode == 0
    whole = {p.name: p.read_bytes() for p in (tmp_path / "whole").iterdir()}
    resumed = {p.name: p.read_bytes() for p in (tmp_path / "killed").iterdir() if not p.name.startswith(".")}
    assert whole == resumed and len(whole) == 25  # 12 shards x 2 files + the manifest


def test_another_job_in_the_output_folder_is_refused(serve, tmp_path, capsys):
    server = serve(fake_map_handlers.embed)
    _corpus(tmp_path / "in.jsonl", 20)
    assert _map(server.url, tmp_path / "in.jsonl", "--out", tmp_path / "out") == 0
    assert _map(server.url, tmp_path / "in.jsonl", "--out", tmp_path / "out", "--batch-size", 5) == 2
    assert "holds another job's output (differs in batch_size)" in capsys.readouterr().err


def test_s3_input_and_output(serve, tmp_path, moto_endpoint, monkeypatch, capsys):
    import boto3

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_ENDPOINT_URL": moto_endpoint, "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_endpoint)
    s3.create_bucket(Bucket="corpus")
    rows = _corpus(tmp_path / "in.jsonl", 500)
    s3.upload_file(str(tmp_path / "in.jsonl"), "corpus", "docs/in.jsonl")
    server = serve(fake_map_handlers.embed, environments=2)
    args = (server.url, "s3://corpus/docs/in.jsonl", "--out", "s3://corpus/out/", "--shard-rows", 200)
    assert _map(*args) == 0
    manifest = json.loads(s3.get_object(Bucket="corpus", Key="out/manifest.json")["Body"].read())
    assert manifest["rows"] == 500 and len(manifest["shards"]) == 3
    ids = json.loads(s3.get_object(Bucket="corpus", Key="out/part-00002.ids.json")["Body"].read())
    assert ids == [str(i) for i in range(400, 500)]
    import io

    vectors = np.load(io.BytesIO(s3.get_object(Bucket="corpus", Key="out/part-00002.npy")["Body"].read()))
    assert np.array_equal(vectors, np.stack([fake_map_handlers.vector(r["text"]) for r in rows[400:]]))
    capsys.readouterr()
    assert _map(*args) == 0  # resumed: nothing left to do
    assert "0 rows in 0 shards" in capsys.readouterr().err


def test_a_recorded_modal_deployment_is_called_through_its_endpoint(serve, tmp_path, capsys):
    from votive.deploy.state import StateStore

    server = serve(fake_map_handlers.embed)
    StateStore(tmp_path / "state").save({"name": "embedder", "provider": "modal", "url": server.url, "gpu": "L4"})
    _corpus(tmp_path / "in.jsonl", 50)
    assert _map("embedder", tmp_path / "in.jsonl", "--out", tmp_path / "out", "--state-dir", tmp_path / "state") == 0
    assert len(read_embeddings(tmp_path / "out")[0]) == 50
    assert "GPU s (measured) x $0.000222/s (L4)" in capsys.readouterr().err


def test_parquet_input(serve, tmp_path, capsys):
    server = serve(fake_map_handlers.embed)
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    texts = [f"row {i}" for i in range(300)]
    pq.write_table(pa.table({"key": [f"k{i}" for i in range(300)], "body": texts}), tmp_path / "in.parquet",
                   row_group_size=64)
    assert _map(server.url, tmp_path / "in.parquet", "--out", tmp_path / "out", "--field", "body",
                "--id-field", "key") == 0
    ids, vectors = read_embeddings(tmp_path / "out")
    assert ids == [f"k{i}" for i in range(300)]
    assert np.array_equal(vectors, np.stack([fake_map_handlers.vector(t) for t in texts]))


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\n[1]\n', r"in.jsonl: line 2 is a JSON list, expected an object"),
    ('{"text": "a"}\n{"txt": "b"}\n', r"in.jsonl: row 1 has no text in 'text'"),
    ('{"text": "a"}\n{oops\n', r"in.jsonl: line 2 is not JSON"),
])
def test_malformed_rows_are_named(serve, tmp_path, capsys, content, message):
    server = serve(fake_map_handlers.embed)
    (tmp_path / "in.jsonl").write_text(content)
    assert _map(server.url, tmp_path / "in.jsonl", "--out", tmp_path / "out") == 2
    import re

    assert re.search(message, capsys.readouterr().err)


# ------------------------------------------------------------------------------------------------ the parts
def test_lambda_target_reads_the_billed_duration_and_classes_errors():
    class Payload:
        def __init__(self, data):
            self.data = data

        def read(self):
            return self.data

    class FakeLambda:
        def __init__(self):
            self.calls = []

        def invoke(self, **kwargs):
            self.calls.append(kwargs)
            event = json.loads(kwargs["Payload"])
            log = base64.b64encode(b"REPORT RequestId: x\tDuration: 10.51 ms\tBilled Duration: 11 ms\t").decode()
            if event["body"].get("bad"):
                error = {"errorType": "VotiveFault", "errorMessage": "Votive.BadRequest: input is missing"}
                return {"Payload": Payload(json.dumps(error).encode()), "FunctionError": "Unhandled", "LogResult": log}
            return {"Payload": Payload(b'{"data": []}'), "LogResult": log}

    client = FakeLambda()
    target = LambdaTarget(client, "embed", qualifier="live")
    ok = target.call("/v1/embeddings", {"input": ["a"]})
    assert ok.outcome == "ok" and ok.billed_ms == 11.0 and ok.body == {"data": []}
    assert client.calls[0]["Qualifier"] == "live" and client.calls[0]["LogType"] == "Tail"
    assert json.loads(client.calls[0]["Payload"]) == {"path": "/v1/embeddings", "body": {"input": ["a"]}}
    bad = target.call("/v1/embeddings", {"bad": True})
    assert bad.outcome == "refused" and "input is missing" in bad.error


def test_token_bucket_spaces_requests_to_the_rate():
    now = [0.0]
    bucket = TokenBucket(10, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    for _ in range(30):
        bucket.take()
    assert now[0] == pytest.approx(2.0, abs=0.05)  # 10 from the full bucket, then 20 at 10 per second


def test_adaptive_limit_halves_on_throttles_and_climbs_back():
    limit = AdaptiveLimit(16, window=2)
    for outcome in ("throttled", "throttled", "throttled"):
        limit.acquire()
        limit.release(outcome)
    assert limit.limit == 2 and limit.throttles == 3
    for _ in range(4):
        limit.acquire()
        limit.release("ok")
    assert limit.limit == 4
    for _ in range(100):
        limit.acquire()
        limit.release("ok")
    assert limit.limit == 16


def test_backoff_is_jittered_under_a_growing_cap_and_obeys_retry_after():
    import random

    backoff = Backoff(base_s=0.5, cap_s=4.0, rng=random.Random(1))
    waits = [backoff.wait(k) for k in range(8) for _ in range(50)]
    assert all(0 <= w <= 4.0 for w in waits) and max(waits[:50]) <= 0.5
    assert backoff.wait(0, retry_after=2.5) == 2.5

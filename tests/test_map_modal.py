"""`votive map modal:APP`: the app `votive build modal` writes for the packaged MiniLM, constructed offline by the
real modal package, called through the SDK seam (votive.client.modal_map.ModalSdk). Only the network boundary is
replaced: the stand-in's `.map` runs each event through the app's own `Endpoint.invoke` in this process (modal's
`.local()`, which also runs the class's `@modal.enter` methods), so the answers are the real model's, and sends
every output and exception through a pickle round trip as Modal's wire does. Failures are injected there as the
modal exceptions Modal's servers would raise.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from map_outputs import read_embeddings
from votive.cli import main
from votive.client import modal_map

modal = pytest.importorskip("modal")

APP = "embed-map"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(build folder, the imported modal_app module): the real builder's CPU app, with VOTIVE_MODEL pointing
    where the image would put the weights, and the handler module's cached handler dropped afterwards."""
    from votive.builders.modal_build import ModalTarget, build_modal
    import votive.handlers.embeddings as served

    out = tmp_path_factory.mktemp("modal-map") / "app"
    build_modal("minilm", out, ModalTarget(app_name=APP))
    spec = importlib.util.spec_from_file_location("votive_map_modal_app", out / "modal_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cached = "handler" in vars(served)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VOTIVE_MODEL", str(out / "model" / Path(module.MODEL_PATH).relative_to(module.MODEL_ROOT)))
        patch.setenv("VOTIVE_BACKEND", "numpy")  # Endpoint.load sets it; restored after
        yield out, module
    if not cached:
        vars(served).pop("handler", None)


@pytest.fixture(scope="module")
def reference(built):
    """The same model answering direct-invoke events through votive's handler, not through the app."""
    from votive.handlers.embeddings import load_handler

    out, module = built
    handler = load_handler({"VOTIVE_MODEL": str(out / "model" / Path(module.MODEL_PATH).name)})

    def embed(texts: list[str]) -> np.ndarray:
        answer = handler({"path": "/v1/embeddings", "body": {"input": texts, "encoding_format": "base64"}}, None)
        return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in answer["data"]])

    return embed


class InProcessModal(modal_map.ModalSdk):
    """ModalSdk with Modal's servers replaced by this process.

    `method` is the built app's own `Endpoint().invoke` (one "container"); its `.map` runs each event with
    `.local()`. `fault(event, tries)` may raise in place of a run (`tries`: how often that event ran before).
    """

    def __init__(self, module, fault=None):
        self.module, self.fault = module, fault
        self.looked_up: list[tuple] = []
        self.windows: list[int] = []  # inputs per .map call
        self.runs: list[dict] = []  # every event run, in order
        self.tries: Counter = Counter()

    def method(self, app, environment, invoke):
        self.looked_up.append((app, environment, dict(invoke)))
        return LocalMethod(self, getattr(getattr(self.module, invoke["class"])(), invoke["method"]))


class LocalMethod:
    def __init__(self, sdk: InProcessModal, method):
        self.sdk, self.method = sdk, method

    def map(self, events, *, order_outputs=True, return_exceptions=False):
        assert order_outputs and return_exceptions  # votive pairs outputs with inputs by their order
        events = list(events)
        self.sdk.windows.append(len(events))
        return (self._run(event) for event in events)

    def _run(self, event):
        key = json.dumps(event, sort_keys=True)
        tries = self.sdk.tries[key]
        self.sdk.tries[key] += 1
        self.sdk.runs.append(event)
        try:
            if self.sdk.fault:
                self.sdk.fault(event, tries)
            output = self.method.local(event)
        except Exception as exc:
            output = exc
        try:  # what Modal sends back is pickled in the container and unpickled here
            return pickle.loads(pickle.dumps(output))
        except Exception as exc:
            return modal.exception.ExecutionError(f"Could not deserialize remote exception: {exc}")


def _corpus(path: Path, n: int, *, special: dict | None = None) -> list[str]:
    texts = [f"row {i}: " + "lorem ipsum " * (i % 13) for i in range(n)]
    texts = [(special or {}).get(i, t) for i, t in enumerate(texts)]
    path.write_text("".join(json.dumps({"id": f"doc-{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    return texts


def _map(sdk, monkeypatch, *args) -> int:
    monkeypatch.setattr(modal_map, "ModalSdk", lambda: sdk)  # what `modal:APP` constructs
    return main(["map", *map(str, args), "--quiet"])


def _first_row(event) -> int:
    return int(event["body"]["input"][0].split(":")[0].split()[1])


# ------------------------------------------------------------------------------------------------ the app
def test_the_app_has_an_invoke_method_answering_direct_invoke_events(built):
    out, module = built
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["app"]["invoke"] == {"class": "Endpoint", "method": "invoke"}
    assert isinstance(module.app, modal.App)
    invoke = module.Endpoint().invoke
    assert isinstance(invoke, modal.Function)  # a Modal method: .map / .remote / .local
    health = invoke.local({"path": "/health"})
    assert health["status"] == "ok" and health["dimension"] == 384
    with pytest.raises(RuntimeError, match="Votive.BadRequest: POST /v1/embeddings answered 400: 'input' is an "):
        invoke.local({"path": "/v1/embeddings", "body": {"input": []}})


# ------------------------------------------------------------------------------------------------ correctness
def test_three_hundred_rows_equal_the_same_batches_and_single_requests(built, reference, tmp_path, monkeypatch,
                                                                        capsys):
    sdk = InProcessModal(built[1])
    texts = _corpus(tmp_path / "in.jsonl", 300)
    assert _map(sdk, monkeypatch, f"modal:{APP}", tmp_path / "in.jsonl", "--out", tmp_path / "out",
                "--id-field", "id", "--batch-size", 16, "--shard-rows", 100, "--concurrency", 8, "--gpu", "L4") == 0

    ids, vectors = read_embeddings(tmp_path / "out")
    assert ids == [f"doc-{i}" for i in range(300)]  # every row once, in order
    # the batches as votive map cut them (16 rows, restarting at each shard), sent by hand: the same bytes
    expected = np.concatenate([reference(texts[s:e]) for first in range(0, 300, 100)
                               for s, e in ((i, min(i + 16, first + 100)) for i in range(first, first + 100, 16))])
    assert np.array_equal(vectors, expected)
    # one text per request pads nothing, so the sums run in another order: equal to float rounding
    sample = np.random.default_rng(0).choice(300, 30, replace=False)
    singles = np.concatenate([reference([texts[i]]) for i in sample])
    assert np.abs(vectors[sample] - singles).max() < 1e-6

    assert sdk.looked_up == [(APP, None, {"class": "Endpoint", "method": "invoke"})]
    assert sum(sdk.windows) == 1 + 21  # /health, then 21 batches, each sent once
    assert 1 < max(sdk.windows) <= 8  # several batches per .map, never more than the limit
    report = capsys.readouterr().err
    assert "300 rows in 3 shards" in report and "GPU s (measured) x $0.000222/s (L4)" in report


def test_injected_failures_are_retried_and_a_permanent_one_is_recorded_then_resumed(built, reference, tmp_path,
                                                                                     monkeypatch, capsys):
    """Batches of 10 rows (batch b starts at row 10 b): b % 5 == 4 raises once (the function failed), b == 2 is
    rate limited twice, b == 7 times out once, and b == 13 fails with an internal failure until it is fixed."""
    broken = [True]

    def fault(event, tries):
        if event["path"] != "/v1/embeddings":
            return
        b = _first_row(event) // 10
        if b == 13 and broken[0]:
            raise modal.exception.InternalFailure("worker lost (injected)")
        if b % 5 == 4 and tries == 0:
            raise RuntimeError("Votive.ModelError: the model failed to answer (injected)")
        if b == 2 and tries < 2:
            raise modal.exception.ResourceExhaustedError("rate limit exceeded (injected)")
        if b == 7 and tries == 0:
            raise modal.exception.FunctionTimeoutError("Function timed out (injected)")

    sdk = InProcessModal(built[1], fault)
    texts = _corpus(tmp_path / "in.jsonl", 200)
    args = (f"modal:{APP}", tmp_path / "in.jsonl", "--out", tmp_path / "out", "--id-field", "id", "--batch-size", 10,
            "--shard-rows", 50, "--concurrency", 6, "--retries", 3, "--task", "embed")
    assert _map(sdk, monkeypatch, *args) == 1

    (failure,) = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert failure["rows"] == [130, 140] and failure["shard"] == "part-00002"
    assert failure["ids"] == [f"doc-{i}" for i in range(130, 140)] and "InternalFailure" in failure["error"]
    tries = Counter(_first_row(e) // 10 for e in sdk.runs)
    assert tries[13] == 4  # the first try and 3 retries
    assert [tries[b] for b in (2, 4, 7, 9)] == [3, 2, 2, 2] and tries[0] == tries[1] == 1
    report = capsys.readouterr().err
    assert "429 x2" in report and "timeout x1" in report and "5xx x" in report
    assert "1 batches (10 rows) failed after their retries" in report

    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert sorted(manifest["shards"]) == ["part-00000", "part-00001", "part-00003"]
    ids, vectors = read_embeddings(tmp_path / "out")
    kept = [*range(0, 100), *range(150, 200)]
    assert ids == [f"doc-{i}" for i in kept]
    assert np.array_equal(vectors, np.concatenate([reference(texts[i:i + 10]) for i in kept[::10]]))

    broken[0] = False  # fixed: the same command redoes only the shard that failed
    sdk.runs.clear()
    assert _map(sdk, monkeypatch, *args) == 0
    assert sorted({_first_row(e) for e in sdk.runs}) == [100, 110, 120, 130, 140]
    assert "150 rows already done" in capsys.readouterr().err
    ids, vectors = read_embeddings(tmp_path / "out")
    assert ids == [f"doc-{i}" for i in range(200)]
    assert np.array_equal(vectors, np.concatenate([reference(texts[i:i + 10]) for i in range(0, 200, 10)]))


def test_a_request_the_handler_refuses_is_not_retried(built, tmp_path, monkeypatch, capsys):
    """A lone UTF-16 surrogate: the real handler refuses it (400), raised out of `invoke` as Votive.BadRequest."""
    sdk = InProcessModal(built[1])
    _corpus(tmp_path / "in.jsonl", 40, special={25: "half a pair: \ud800"})
    assert _map(sdk, monkeypatch, f"modal:{APP}", tmp_path / "in.jsonl", "--out", tmp_path / "out",
                "--batch-size", 10, "--shard-rows", 20, "--task", "embed") == 1
    (failure,) = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").read_text().splitlines()]
    assert failure["rows"] == [20, 30] and "Votive.BadRequest" in failure["error"]
    assert "unpaired UTF-16 surrogate" in failure["error"]
    assert sum(_first_row(e) == 20 for e in sdk.runs) == 1  # refused: tried once
    assert sorted(json.loads((tmp_path / "out" / "manifest.json").read_text())["shards"]) == ["part-00000"]
    assert "400 x1" in capsys.readouterr().err


def test_a_recorded_deployment_is_called_through_the_sdk(built, tmp_path, monkeypatch, capsys):
    from votive.deploy.state import StateStore

    out, module = built
    state = StateStore(tmp_path / "state")
    state.save({"name": "embedder", "provider": "modal", "app": APP, "environment": "dev", "gpu": "A10G",
                "url": "https://unused.invalid", "build": str(out)})
    sdk = InProcessModal(module)
    _corpus(tmp_path / "in.jsonl", 30)
    assert _map(sdk, monkeypatch, "embedder", tmp_path / "in.jsonl", "--out", tmp_path / "out",
                "--state-dir", tmp_path / "state", "--price-gpu-s", 0.001) == 0
    assert sdk.looked_up == [(APP, "dev", {"class": "Endpoint", "method": "invoke"})]
    assert read_embeddings(tmp_path / "out")[0] == [str(i) for i in range(30)]
    assert "x $0.001/s (A10G)" in capsys.readouterr().err  # --price-gpu-s is the price used


# ------------------------------------------------------------------------------------------------ the parts
@pytest.mark.parametrize("output, status, outcome", [
    ({"data": []}, 200, "ok"),
    (RuntimeError("Votive.BadRequest: POST /v1/embeddings answered 400: no"), 400, "refused"),
    (RuntimeError("Votive.ModelError: boom"), 500, "retry"),
    (modal.exception.NotFoundError("App 'x' not found"), 400, "refused"),
    (modal.exception.ResourceExhaustedError("rate limited"), 429, "throttled"),
    (modal.exception.FunctionTimeoutError("timed out"), 0, "retry"),
    (modal.exception.InternalFailure("lost"), 500, "retry"),
])
def test_outputs_are_classed_as_replies(output, status, outcome):
    reply = modal_map._reply(output, 0.5)
    assert (reply.status, reply.outcome, reply.seconds) == (status, outcome, 0.5)


def test_a_call_that_fails_whole_or_ends_early_answers_every_input():
    class Broken:
        def __init__(self, outputs, error=None):
            self.outputs, self.error = outputs, error

        def method(self, app, environment, invoke):
            return self

        def map(self, events, **options):
            yield from self.outputs
            if self.error:
                raise self.error

    lost = modal_map.ModalTarget("x", sdk=Broken([{"a": 1}], modal.exception.ConnectionError("reset")))
    replies = lost.call_many([("/p", {}), ("/p", {}), ("/p", {})])
    assert [r.outcome for r in replies] == ["ok", "retry", "retry"] and "ConnectionError: reset" in replies[1].error
    short = modal_map.ModalTarget("x", sdk=Broken([{"a": 1}])).call_many([("/p", {}), ("/p", {})])
    assert [r.outcome for r in short] == ["ok", "retry"] and "never came back" in short[1].error


def test_ctrl_c_lets_the_window_in_flight_finish_and_keeps_only_whole_shards(tmp_path):
    """The window driver on its own (votive.client.fanout) with a `call_many` target answering from a hash: Ctrl-C
    arrives while the third window is in flight. That window's answers are kept, no window starts after it, and
    exactly the shards whose batches were all answered are recorded."""
    import threading
    import time

    import fake_map_handlers
    from votive.client.corpus import Row
    from votive.client.fanout import MapRun, MapSettings
    from votive.client.map_output import Manifest, open_folder
    from votive.client.map_targets import Reply
    from votive.client.map_tasks import Task

    in_flight = threading.Event()

    class HashTarget:
        where = "modal:hash"

        def __init__(self):
            self.windows: list[list[str]] = []  # the first text of each batch, per window
            self.run = None

        def call_many(self, requests):
            self.windows.append([body["input"][0] for _, body in requests])
            if len(self.windows) == 3:  # hold this window until Ctrl-C has stopped the run
                in_flight.set()
                deadline = time.monotonic() + 60
                while not self.run.stop.is_set() and time.monotonic() < deadline:
                    time.sleep(0.01)
            replies = []
            for _, body in requests:
                data = [{"index": i, "embedding": base64.b64encode(fake_map_handlers.vector(t).tobytes()).decode()}
                        for i, t in enumerate(body["input"])]
                replies.append(Reply(200, body={"data": data}, seconds=0.01))
            return replies

    def rows():
        for i in range(1000):
            if i == 150:  # shards 0-6 (14 batches) are queued by now
                in_flight.wait(60)
                raise KeyboardInterrupt
            yield Row(i, str(i), {"text": f"text number {i}"})

    folder = open_folder(str(tmp_path / "out"))
    manifest = Manifest(folder, {"job": "ctrl-c"})
    target = HashTarget()
    run = target.run = MapRun(target, Task("embed", "text"), rows(), manifest, folder,
                              MapSettings(batch_size=10, shard_rows=20, concurrency=4, max_open_shards=8))
    report = run.run()

    assert report.stopped and report.failed_batches == 0
    assert len(target.windows) == 3 and all(len(w) <= 4 for w in target.windows)
    sent = [text for window in target.windows for text in window]
    assert sent == [f"text number {i}" for i in range(0, 10 * len(sent), 10)]  # batches in order, each once
    whole = len(sent) // 2  # two batches a shard
    assert sorted(manifest.shards) == [f"part-{k:05d}" for k in range(whole)] and report.rows == 20 * whole
    for k in range(whole):
        ids = json.loads((tmp_path / "out" / f"part-{k:05d}.ids.json").read_text())
        assert ids == [str(i) for i in range(20 * k, 20 * k + 20)]
        expected = np.stack([fake_map_handlers.vector(f"text number {i}") for i in range(20 * k, 20 * k + 20)])
        assert np.array_equal(np.load(tmp_path / "out" / f"part-{k:05d}.npy"), expected)
    assert not (tmp_path / "out" / "failures.jsonl").exists()  # batches abandoned on stop are not failures

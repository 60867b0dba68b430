"""Issue 19 item 2: one valid request must not block an execution environment for minutes.

Lambda ends an invocation past the function timeout and resets its environment. Here: the encode and generate
loops stop at the context's deadline (DeadlineExceeded, answered as Sandbox.Timedout), a thread environment whose
invocation timed out is replaced at once, and an embeddings answer that cannot fit the 6 MB response limit is
refused before anything is computed. No assertion here is about elapsed time: each checks what happened (which
answer, how many batches or tokens were computed); the waits only turn a hang into a failure.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.hostile.hostile_child import call_url
from votive.backends import get_backend
from votive.emulators.in_process import InProcessFunction
from votive.errors import DeadlineExceeded, check_deadline, reset_deadline, set_deadline
from votive.handlers import embeddings
from votive.models.decoding import Generation
from votive.models.sampling import SamplingParams
from votive.models.sentence_encoder import Pooling, SentenceEncoder
from votive.protocol.context import FunctionConfig

HANG_GUARD_S = 60  # only there to turn a hang into a failure


class Countdown:
    """A remaining-time function that reports 1000 ms for the first `calls` reads, then 0: the deadline passes
    after a known number of checks, whatever the machine's speed."""

    def __init__(self, calls: int):
        self.calls = calls

    def __call__(self) -> int:
        self.calls -= 1
        return 1000 if self.calls >= 0 else 0


class FakeContext:
    def __init__(self, remaining):
        self.get_remaining_time_in_millis = remaining


# ------------------------------------------------------------------------------------------------ encoder
class CountingEncoderModel:
    """An encoder family stand-in: counts its forward passes."""

    hidden_size = 4
    max_positions = 16

    def __init__(self):
        self.ops = get_backend("numpy")
        self.passes = 0

    def forward(self, ids, mask):
        self.passes += 1
        return np.ones((ids.shape[0], ids.shape[1], self.hidden_size), np.float32)  # (b, T, D)


class WordTokenizer:
    def encode_batch(self, texts):
        return [[1] + [2] * len(t.split()) + [3] for t in texts]


def counting_encoder() -> SentenceEncoder:
    return SentenceEncoder(CountingEncoderModel(), WordTokenizer(), Pooling(), 16, "counting")


def test_the_encode_loop_stops_at_the_deadline_between_batches():
    encoder = counting_encoder()
    token = set_deadline(Countdown(calls=3))
    try:
        with pytest.raises(DeadlineExceeded):
            encoder.encode(["a b"] * 100, batch_size=10)  # 10 batches
    finally:
        reset_deadline(token)
    assert encoder.model.passes == 3  # three batches ran, then the deadline stopped the rest


def test_no_deadline_outside_an_invocation():
    check_deadline()  # nothing set: no error
    encoder = counting_encoder()
    vectors, _ = encoder.encode(["a b"] * 100, batch_size=10)
    assert vectors.shape == (100, 4) and encoder.model.passes == 10


def test_the_embeddings_handler_turns_the_context_into_the_deadline():
    encoder = counting_encoder()
    handler = embeddings.make_handler(encoder, batch_size=10)
    with pytest.raises(DeadlineExceeded):  # out of the handler: Lambda answers it as the timeout it is
        handler({"input": ["a b"] * 100}, FakeContext(Countdown(calls=2)))
    assert encoder.model.passes == 2
    # the deadline belonged to that invocation only
    answer = handler({"input": ["a b"] * 3}, None)
    assert len(answer["data"]) == 3


# ------------------------------------------------------------------------------------------------ decoder
class CountingDecoder:
    """A decoder stand-in for `Generation`: always predicts token 5, never EOS; counts its forward passes."""

    n_ctx = 10_000
    eos_ids = {0}
    model_id = "counting"

    class tokenizer:  # noqa: N801 - what Generation reads: tokenizer.stream_decoder()
        class stream_decoder:  # noqa: N801
            def push(self, token):
                return "x"

            def flush(self):
                return ""

    def __init__(self):
        self.passes = 0

    def new_cache(self):
        return None

    def forward(self, ids, cache, start):
        self.passes += 1
        logits = np.zeros(8, np.float32)
        logits[5] = 1.0
        return logits


def test_the_generate_loop_stops_at_the_deadline_between_tokens():
    model = CountingDecoder()
    generation = Generation(model, [1, 2, 3], 4000, SamplingParams(), [])
    token = set_deadline(Countdown(calls=5))
    try:
        with pytest.raises(DeadlineExceeded):
            generation.text()
    finally:
        reset_deadline(token)
    assert model.passes == 1 + 5  # the prompt, five tokens' passes, then the deadline: not 4000


# ------------------------------------------------------------------------------ the emulator's environments
def test_a_timed_out_thread_environment_is_replaced_and_later_requests_are_served():
    release = threading.Event()

    def handler(event, context):
        if event.get("block"):
            release.wait(HANG_GUARD_S)  # a handler that does not stop by itself
        return {"echo": event}

    function = InProcessFunction(handler, environments=1, config=FunctionConfig(timeout_s=0.2),
                                 queue_timeout_s=HANG_GUARD_S / 4)
    function.start()
    try:
        first = function.invoke({"block": True})
        assert first.error is not None and first.error["errorType"] == "Sandbox.Timedout"
        # before the fix the only environment stayed busy, so this waited out the queue timeout and got a 429
        for i in range(3):
            later = function.invoke({"n": i})
            assert not later.throttled and later.error is None
            assert later.payload == f'{{"echo": {{"n": {i}}}}}'.encode()
    finally:
        release.set()
        function.stop()


def test_an_encode_past_the_timeout_stops_computing_and_is_answered_as_a_timeout():
    encoder = counting_encoder()
    started, returned = threading.Event(), threading.Event()
    inner = embeddings.make_handler(encoder, batch_size=1)
    real_forward = encoder.model.forward

    def slow_forward(ids, mask):
        started.set()
        threading.Event().wait(0.02)  # some work per batch
        return real_forward(ids, mask)

    encoder.model.forward = slow_forward

    def handler(event, context):
        try:
            return inner(event, context)
        finally:
            returned.set()

    function = InProcessFunction(handler, environments=1, config=FunctionConfig(timeout_s=0.3),
                                 queue_timeout_s=HANG_GUARD_S / 4)
    function.start()
    try:
        outcome = function.invoke({"input": ["a b"] * 2000})  # 40 s of batches at 0.02 s
        assert outcome.error is not None and outcome.error["errorType"] == "Sandbox.Timedout"
        assert returned.wait(HANG_GUARD_S), "the handler kept computing past its deadline"
        assert encoder.model.passes < 2000
        assert function.invoke({"path": "/health"}).error is None
    finally:
        function.stop()


def test_a_handler_stopping_at_its_deadline_reports_sandbox_timedout():
    def handler(event, context):
        raise DeadlineExceeded("out of time")

    function = InProcessFunction(handler, config=FunctionConfig(timeout_s=5))
    function.start()
    try:
        outcome = function.invoke({})
        assert outcome.error["errorType"] == "Sandbox.Timedout"
        assert "Task timed out after 5.00 seconds" in outcome.error["errorMessage"]
    finally:
        function.stop()


# ------------------------------------------------------------------------- answers that cannot fit 6 MB
class MustNotEncode:
    model_id, dim, backend, max_seq_length = "minilm-like", 384, "numpy", 256

    def encode(self, texts, batch_size=32, **options):
        raise AssertionError("the request should have been refused before computing")


def test_an_answer_that_cannot_fit_is_refused_before_computing():
    handler = embeddings.make_handler(MustNotEncode())
    status, body = call_url(handler, "/v1/embeddings", {"input": ["hi"] * 2048})
    assert status == 400
    assert body["error"]["code"] == "response_too_large" and body["error"]["param"] == "input"
    assert "base64" in body["error"]["message"]
    # the long-input request (5.9 MB in, within both limits) is refused up front too
    status, body = call_url(handler, "/v1/embeddings", {"input": ["word " * 600] * 2000})
    assert status == 400 and body["error"]["code"] == "response_too_large"


def test_answers_that_can_fit_are_computed():
    class Encoder(MustNotEncode):
        def encode(self, texts, batch_size=32, precision="float32", **options):
            if precision == "binary":
                return np.zeros((len(texts), self.dim // 8), np.int8), len(texts)
            return np.full((len(texts), self.dim), 0.5, np.float32), len(texts)

    handler = embeddings.make_handler(Encoder())
    for body in ({"input": ["hi"] * 2048, "encoding_format": "base64"}, {"input": ["hi"] * 500},
                 {"input": ["hi"] * 2048, "encoding_format": "binary"}):
        status, answer = call_url(handler, "/v1/embeddings", body)
        assert status == 200 and len(answer["data"]) == len(body["input"]), body.get("encoding_format")


def test_the_floor_is_never_above_the_real_answer():
    """The up-front refusal uses a floor: the real answer's JSON is never smaller."""
    import base64
    import json

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((50, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    def answer(data):
        return len(json.dumps({"data": [{"object": "embedding", "index": i, "embedding": e}
                                        for i, e in enumerate(data)]}, separators=(",", ":")))
    assert embeddings.answer_floor_bytes(50, 384, "float") <= answer(vectors.tolist())
    assert embeddings.answer_floor_bytes(50, 384, "base64") <= answer(
        [base64.b64encode(v.tobytes()).decode() for v in vectors])
    assert embeddings.answer_floor_bytes(50, 384, "int8") <= answer(np.zeros((50, 384), np.int8).tolist())
    assert embeddings.answer_floor_bytes(50, 384, "binary") <= answer(np.zeros((50, 48), np.int8).tolist())

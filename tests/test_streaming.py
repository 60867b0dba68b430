"""Streaming answers end to end: the pieces (ResponseStream, chunked coding, the prelude), votive's runtime loop,
and the local function URL in front of a handler in process, or of votive's runtime behind the emulated
Runtime API; with the openai client, and with `votive serve` on the real SmolLM2.

Ordering is proven with a fake model whose tokens the test releases one by one: the client reads token 1
while token 2 has not been computed. Hang-ups are proven by closing the socket and checking that the
generation was closed after only a few more tokens.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from fake_llm import FakeModel, Gate

from votive.emulators.function_url import FunctionUrlServer
from votive.emulators.invocation_queue import STREAM_CAPACITY_CHUNKS, ResponseStream, StreamFailed
from votive.emulators.runtime_api import RuntimeApiEmulator
from votive.handlers import stream_runtime
from votive.handlers.generation import make_handler
from votive.protocol.chunked import ChunkedError, ChunkReader, chunk, last_chunk
from votive.protocol.context import FunctionConfig
from votive.protocol.payload_v2 import MalformedResponse, stream_prelude
from votive.protocol.streaming import (
    INTEGRATION_CONTENT_TYPE,
    PRELUDE_DELIMITER,
    StreamingResponse,
    as_streaming,
    integration_stream,
)
from votive.sources import resolve_source

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


# --- ResponseStream ------------------------------------------------------------------------------------------


def test_stream_hands_chunks_in_order_then_the_end():
    stream = ResponseStream("text/plain")
    assert stream.write(b"a") and stream.write(b"") and stream.write(b"b")
    stream.end()
    assert [stream.read(), stream.read(), stream.read()] == [b"a", b"b", None]
    assert not stream.write(b"late")


def test_stream_read_times_out_with_empty_bytes():
    assert ResponseStream("text/plain").read(timeout=0.01) == b""


def test_writer_waits_while_the_reader_is_behind():
    stream = ResponseStream("text/plain", capacity=2)
    written = []

    def writer():
        for i in range(5):
            stream.write(b"%d" % i)
            written.append(i)
        stream.end()

    thread = threading.Thread(target=writer)
    thread.start()
    deadline = time.monotonic() + 5
    while len(written) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    time.sleep(0.05)
    assert written == [0, 1]  # the third write waits for the reader
    assert [stream.read(timeout=5) for _ in range(6)] == [b"0", b"1", b"2", b"3", b"4", None]
    thread.join(5)


def test_cancel_tells_the_writer_to_stop_and_calls_back_once():
    calls = []
    stream = ResponseStream("text/plain", capacity=1, on_cancel=lambda: calls.append(1))
    assert stream.write(b"a")
    results = []
    thread = threading.Thread(target=lambda: results.append(stream.write(b"b")))  # waits: the queue is full
    thread.start()
    time.sleep(0.02)
    stream.cancel()
    stream.cancel()
    thread.join(5)
    assert results == [False] and calls == [1] and stream.cancelled


def test_failure_comes_after_the_chunks_already_written():
    stream = ResponseStream("text/plain")
    stream.write(b"a")
    stream.fail({"errorType": "ValueError", "errorMessage": "bad"})
    assert stream.read() == b"a"
    with pytest.raises(StreamFailed) as err:
        stream.read()
    assert err.value.error["errorType"] == "ValueError"


def test_deadline_cuts_the_stream_with_a_timeout_and_stops_the_writer():
    now = [100.0]
    cancelled = []
    stream = ResponseStream("text/plain", deadline_s=101.0, deadline_error={"errorType": "Sandbox.Timedout"},
                            clock=lambda: now[0], on_cancel=lambda: cancelled.append(True))
    stream.write(b"a")
    assert stream.read() == b"a"
    now[0] = 101.5
    stream.write(b"b")
    with pytest.raises(StreamFailed) as err:
        stream.read()
    assert err.value.error["errorType"] == "Sandbox.Timedout" and cancelled == [True]
    assert not stream.write(b"c")


def test_stream_over_its_limit_fails_as_too_large():
    stream = ResponseStream("text/plain", limit_bytes=3, request_id="r-1")
    assert stream.write(b"ab")
    assert not stream.write(b"cd")
    assert stream.read() == b"ab"
    with pytest.raises(StreamFailed) as err:
        stream.read()
    assert err.value.error["errorType"] == "Function.ResponseSizeTooLarge"
    assert err.value.error["requestId"] == "r-1"


# --- chunked coding, prelude -------------------------------------------------------------------------------------


def test_chunks_round_trip_with_extensions_and_trailers():
    raw = chunk(b"hello") + b"6;name=value\r\n world\r\n" + last_chunk({"Lambda-Runtime-Function-Error-Type": "X"})
    assert raw.endswith(b"0\r\nLambda-Runtime-Function-Error-Type: X\r\n\r\n")
    reader = ChunkReader(io.BytesIO(raw))
    assert list(reader) == [b"hello", b" world"]
    assert reader.trailers == {"lambda-runtime-function-error-type": "X"} and reader.complete


def test_a_large_chunk_is_handed_on_in_pieces():
    data = os.urandom(200_000)
    pieces = list(ChunkReader(io.BytesIO(chunk(data) + last_chunk())))
    assert len(pieces) == 4 and b"".join(pieces) == data


@pytest.mark.parametrize("raw, message", [
    (b"zz\r\nab\r\n0\r\n\r\n", "bad chunk size b'zz'"),
    (b"-1\r\n", "bad chunk size b'-1'"),
    (b"0x5\r\nhello\r\n0\r\n\r\n", "bad chunk size b'0x5'"),
    (b"5\r\nhel", "the body ended inside a chunk, 2 bytes short"),
    (b"5\r\nhello", "the body ended before its last chunk"),
    (b"3\r\nhello\r\n", "longer than its declared size"),
    (b"1" * 9000 + b"\r\n", "longer than 8192 bytes"),
    (b"0\r\nno colon\r\n\r\n", "bad trailer field"),
])
def test_malformed_chunked_bodies_are_refused(raw, message):
    with pytest.raises(ChunkedError, match=message.replace("(", r"\(").replace("[", r"\[")):
        list(ChunkReader(io.BytesIO(raw)))


def test_integration_stream_is_prelude_nuls_then_body_and_closing_it_closes_the_body():
    closed = []

    def body():
        try:
            yield b"one"
            yield b""
            yield b"two"
        finally:
            closed.append(True)

    response = StreamingResponse(202, {"content-type": "text/plain"}, body(), ["c=1"])
    out = list(integration_stream(response))
    assert out == [b'{"statusCode":202,"headers":{"content-type":"text/plain"},"cookies":["c=1"]}' + b"\0" * 8,
                   b"one", b"two"]
    assert closed == [True]
    early = integration_stream(StreamingResponse(200, {}, body()))
    next(early), next(early)
    early.close()
    assert closed == [True, True]


def test_a_buffered_answer_as_a_stream():
    response = as_streaming({"statusCode": 201, "headers": {"x": 1}, "cookies": ["a=b"], "isBase64Encoded": True,
                             "body": base64.b64encode(b"\x00\x01").decode()})
    assert (response.status, response.headers, list(response.body), response.cookies) == (
        201, {"x": "1", "content-type": "application/json"}, [b"\x00\x01"], ["a=b"])
    plain = as_streaming([1, 2])
    assert (plain.status, list(plain.body)) == (200, [b"[1, 2]"])


def test_prelude_sets_status_headers_and_cookies():
    response = stream_prelude(b'{"statusCode": 418, "headers": {"content-type": "text/plain"}, "cookies": ["a=1"]}')
    assert response.status == 418
    assert response.headers == [("content-type", "text/plain"), ("set-cookie", "a=1")]
    assert stream_prelude(b"{}").status == 200


@pytest.mark.parametrize("prelude, message", [
    (b"not json", "prelude is not JSON"),
    (b"[1]", "must be a JSON object, found list"),
    (b'{"statusCode": 99}', "statusCode must be an integer from 100 to 599"),
    (b'{"headers": {"a\\nb": "c"}}', "line break"),
])
def test_bad_preludes_are_refused(prelude, message):
    with pytest.raises(MalformedResponse, match=message):
        stream_prelude(prelude)


# --- votive's runtime loop, with a recording Runtime API client --------------------------------------------------


class RecordingClient:
    """A Runtime API client that records each post; a stream is read like the real client reads it."""

    def __init__(self, take_chunks: int | None = None):
        self.posts: list[tuple] = []
        self.take_chunks = take_chunks  # stop taking the stream after this many chunks, as a hung-up API

    def post_response(self, request_id, data, content_type="application/json"):
        self.posts.append(("response", request_id, data, content_type))

    def post_error(self, request_id, error):
        self.posts.append(("error", request_id, error))

    def post_init_error(self, error):
        self.posts.append(("init_error", error))

    def post_stream(self, request_id, chunks, content_type):
        taken = []
        try:
            for data in chunks:
                taken.append(data)
                if self.take_chunks is not None and len(taken) >= self.take_chunks:
                    self.posts.append(("stream", request_id, b"".join(taken), content_type, "hung up"))
                    return False
        except Exception as exc:
            self.posts.append(("stream", request_id, b"".join(taken), content_type, type(exc).__name__))
            raise
        self.posts.append(("stream", request_id, b"".join(taken), content_type, "complete"))
        return True


def invocation(event, request_id="r-1", **headers) -> stream_runtime.NextInvocation:
    data = event if isinstance(event, bytes) else json.dumps(event).encode()
    base = {"lambda-runtime-aws-request-id": request_id, "lambda-runtime-deadline-ms": "4102444800000",
            "lambda-runtime-invoked-function-arn": "arn:aws:lambda:xx-local-1:000000000000:function:f"}
    return stream_runtime.NextInvocation(request_id, data, {**base, **headers})


URL_EVENT = {"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "GET", "path": "/"}}}


def test_runtime_streams_a_streaming_response_with_the_prelude():
    client = RecordingClient()
    response = StreamingResponse(200, {"content-type": "text/plain"}, iter([b"a", b"b"]))
    stream_runtime.handle(lambda event, context: response, invocation(URL_EVENT), client, {})
    [(kind, request_id, data, content_type, how)] = client.posts
    assert (kind, request_id, content_type, how) == ("stream", "r-1", INTEGRATION_CONTENT_TYPE, "complete")
    prelude, body = data.split(PRELUDE_DELIMITER, 1)
    assert json.loads(prelude) == {"statusCode": 200, "headers": {"content-type": "text/plain"}, "cookies": []}
    assert body == b"ab"


def test_runtime_answers_a_function_url_event_in_streaming_form_and_a_direct_invoke_as_json():
    client = RecordingClient()
    answer = {"statusCode": 404, "body": "nope"}
    stream_runtime.handle(lambda event, context: answer, invocation(URL_EVENT), client, {})
    stream_runtime.handle(lambda event, context: {"ok": event}, invocation({"a": 1}, "r-2"), client, {})
    (_, _, data, _, _), direct = client.posts
    assert data == b'{"statusCode":404,"headers":{"content-type":"application/json"},"cookies":[]}' + b"\0" * 8 + \
        b"nope"
    assert direct == ("response", "r-2", b'{"ok": {"a": 1}}', "application/json")


def test_runtime_context_comes_from_the_headers_and_lambda_variables():
    seen = {}

    def handler(event, context):
        seen.update(id=context.aws_request_id, arn=context.invoked_function_arn, name=context.function_name,
                    memory=context.memory_limit_in_mb, left=context.get_remaining_time_in_millis(),
                    custom=context.client_context.custom)
        return {}

    environ = {"AWS_LAMBDA_FUNCTION_NAME": "gen", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "2048"}
    event = invocation({}, **{"lambda-runtime-client-context": '{"custom": {"k": "v"}}',
                              "lambda-runtime-trace-id": "Root=1-abc"})
    stream_runtime.handle(handler, event, RecordingClient(), environ)
    assert seen["id"] == "r-1" and seen["arn"].endswith(":function:f") and seen["name"] == "gen"
    assert seen["memory"] == "2048" and seen["left"] > 0 and seen["custom"] == {"k": "v"}
    assert environ["_X_AMZN_TRACE_ID"] == "Root=1-abc"


def test_runtime_reports_handler_errors_bad_events_and_unserializable_answers():
    client = RecordingClient()

    def boom(event, context):
        raise ValueError("no way")

    stream_runtime.handle(boom, invocation({}), client, {})
    stream_runtime.handle(boom, invocation(b"{not json", "r-2"), client, {})
    stream_runtime.handle(lambda event, context: {1, 2}, invocation({}, "r-3"), client, {})
    (_, _, error), (_, _, unmarshal), (_, _, marshal) = client.posts
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "no way" and error["requestId"] == "r-1"
    assert error["stackTrace"] and "stream_runtime.py" not in "".join(error["stackTrace"])
    assert unmarshal["errorType"] == "Runtime.UnmarshalError"
    assert marshal["errorType"] == "Runtime.MarshalError"


def test_runtime_closes_the_body_when_the_api_stops_taking_the_stream(caplog):
    model = FakeModel()
    handler = make_handler(model)
    event = json.loads(json.dumps(URL_EVENT))
    event.update(rawPath="/v1/completions", body=json.dumps({"prompt": "hi", "stream": True, "max_tokens": 50}))
    event["requestContext"]["http"]["method"] = "POST"
    with caplog.at_level(logging.INFO, logger="votive.quant"):
        stream_runtime.handle(handler, invocation(event), RecordingClient(take_chunks=3), {})
    [generation] = model.generations
    assert generation.closed and generation.completion_tokens == 2  # prelude, 1 token, 2 tokens: then closed
    assert "stopped taking the stream" in caplog.text


def test_runtime_logs_a_body_that_fails_mid_stream(caplog):
    def body():
        yield b"a"
        raise OSError("disk gone")  # an OSError from the body is the handler's, not a hang-up

    client = RecordingClient()
    with caplog.at_level(logging.ERROR, logger="votive.quant"):
        stream_runtime.handle(lambda e, c: StreamingResponse(200, {}, body()), invocation(URL_EVENT), client, {})
    assert client.posts[0][-1] == "OSError"
    assert "failed mid-stream: OSError: disk gone" in caplog.text


def test_runtime_init_failure_is_posted_to_init_error():
    client = RecordingClient()
    assert stream_runtime.run("fake_handlers_broken.handler", client, {}) == 1
    [(kind, error)] = client.posts
    assert kind == "init_error" and error["errorType"] == "RuntimeError"
    assert error["errorMessage"] == "model weights not found at /nowhere"


def test_runtime_main_without_its_settings_exits_2(monkeypatch):
    monkeypatch.delenv("AWS_LAMBDA_RUNTIME_API", raising=False)
    assert stream_runtime.main(["m.handler"]) == 2
    monkeypatch.setenv("AWS_LAMBDA_RUNTIME_API", "no-port")
    assert stream_runtime.main(["m.handler"]) == 2


# --- HTTP helpers ------------------------------------------------------------------------------------------------


class RawStream:
    """A streamed HTTP answer read straight off the socket, chunk by chunk, so the test decides when to read."""

    def __init__(self, url: str, path: str, body: dict | None = None):
        host, port = urllib.parse.urlsplit(url).netloc.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        data = json.dumps(body).encode() if body is not None else b""
        method = "POST" if body is not None else "GET"
        self.sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                          f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
        self.file = self.sock.makefile("rb")
        self.status = int(self.file.readline().split()[1])
        self.headers = {}
        while (line := self.file.readline().decode()) not in ("\r\n", ""):
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.headers.get("transfer-encoding") != "chunked":  # an error answer, say: its body in the failure
            body = self.file.read(int(self.headers.get("content-length", 0)))
            raise AssertionError(f"not a streamed answer: {self.status} {body!r}")
        self._pieces = iter(ChunkReader(self.file))
        self._buffer = b""

    def read(self) -> bytes | None:
        """The next piece of the body; None at its end."""
        return next(self._pieces, None)

    def event(self):
        """The next Server-Sent Event's data, parsed (the string for [DONE])."""
        while b"\n\n" not in self._buffer:
            piece = self.read()
            assert piece is not None, f"the stream ended inside an event: {self._buffer!r}"
            self._buffer += piece
        event, self._buffer = self._buffer.split(b"\n\n", 1)
        data = event.decode()[len("data: "):]
        return data if data == "[DONE]" else json.loads(data)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def wait_for(condition, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)
    return result


@pytest.fixture
def serve():
    """serve(handler or function, **options) -> a started FunctionUrlServer, stopped after the test."""
    servers = []

    def start(function, **options):
        server = FunctionUrlServer(function, port=0, **options)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


# --- in process (`votive serve`) ---------------------------------------------------------------------------------


def test_client_reads_each_token_before_the_next_is_computed(serve):
    gate = Gate()
    model = FakeModel(gate=gate)
    server = serve(make_handler(model))
    client = RawStream(server.url, "/v1/chat/completions",
                       {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 3})
    try:
        assert client.status == 200 and client.headers["transfer-encoding"] == "chunked"
        assert client.headers["content-type"].startswith("text/event-stream")
        assert client.event()["choices"][0]["delta"]["role"] == "assistant"
        [generation] = model.generations
        assert generation.completion_tokens == 0  # headers and the role arrive before any token is computed
        for expected in ("Hello", ","):
            gate.release()
            assert client.event()["choices"][0]["delta"] == {"content": expected}
            # the client has this token while the next one is still waiting to be computed
            assert generation.completion_tokens == 1 + ("Hello", ",").index(expected)
        gate.release()
        assert client.event()["choices"][0]["delta"] == {"content": " world"}
        assert client.event()["choices"][0]["finish_reason"] == "length"
        assert client.event() == "[DONE]"
        assert client.read() is None  # the last chunk came: the answer is complete
    finally:
        client.close()


def test_client_that_hangs_up_stops_the_generation(serve):
    gate = Gate()
    closed = threading.Event()
    model = FakeModel(gate=gate, on_close=lambda generation: closed.set(), n_ctx=4096)
    server = serve(make_handler(model))
    client = RawStream(server.url, "/v1/completions", {"prompt": "hi", "stream": True, "max_tokens": 1000})
    gate.release()
    assert client.event()["choices"][0]["text"] == "Hello"
    client.close()
    gate.release(1000)  # let the model run as fast as it can: only the hang-up may stop it
    assert closed.wait(10), "the generation was not closed after the client hung up"
    [generation] = model.generations
    # the first token, one or two more written before the front sees the hang-up, those the pipe holds, and the
    # one the environment was handing over when it learnt to stop: a handful, of the 1000 it was asked for
    assert generation.completion_tokens <= 3 + STREAM_CAPACITY_CHUNKS + 1
    assert serve(make_handler(FakeModel())).url  # and the machinery is fine for the next


def test_next_request_is_served_after_a_hang_up(serve):
    gate = Gate()
    model = FakeModel(gate=gate, n_ctx=4096)
    server = serve(make_handler(model))
    client = RawStream(server.url, "/v1/completions", {"prompt": "hi", "stream": True, "max_tokens": 1000})
    gate.release()
    client.event()
    client.close()
    gate.release(2000)
    wait_for(lambda: model.generations[0].closed, "the first generation to close")
    again = RawStream(server.url, "/v1/completions", {"prompt": "hi", "stream": True, "max_tokens": 2})
    events = [again.event() for _ in range(4)]
    again.close()
    assert events[-1] == "[DONE]"


def test_stream_failing_mid_way_is_cut_without_the_last_chunk(serve, caplog):
    from fake_stream_handlers import chunks

    server = serve(chunks)
    client = RawStream(server.url, "/?n=5&fail_at=2", None)
    try:
        assert client.status == 200 and client.headers["x-test"] == "yes" and client.headers["set-cookie"] == "a=1"
        assert client.read() == b"chunk 0\n" and client.read() == b"chunk 1\n"
        with pytest.raises(ChunkedError, match="ended before its last chunk"):
            client.read()
    finally:
        client.close()
    assert "function error mid-stream: RuntimeError: chunk 2 failed" in caplog.text


def test_stream_past_the_function_timeout_is_cut(serve, caplog, tmp_path):
    gate = Gate()
    model = FakeModel(gate=gate)
    server = serve(make_handler(model), config=FunctionConfig(timeout_s=0.5))
    client = RawStream(server.url, "/v1/completions", {"prompt": "hi", "stream": True, "max_tokens": 5})
    try:
        gate.release()
        assert client.event()["choices"][0]["text"] == "Hello"
        with pytest.raises(ChunkedError):
            while True:
                assert client.read() is not None
    finally:
        client.close()
    assert "Sandbox.Timedout" in caplog.text
    gate.release(10)
    wait_for(lambda: model.generations[0].closed, "the timed-out generation to close")


def test_openai_client_streams_and_not(serve):
    openai = pytest.importorskip("openai")
    server = serve(make_handler(FakeModel(eos_after=3)), environments=2)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)

    chat = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    assert chat.choices[0].message.content == "Hello, world" and chat.choices[0].finish_reason == "stop"
    assert chat.usage.completion_tokens == 3

    pieces = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(pieces)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello, world"
    assert chunks[-1].usage.completion_tokens == 3 and chunks[-2].choices[0].finish_reason == "stop"

    completion = client.completions.create(model="fake", prompt="a b", max_tokens=2)
    assert completion.choices[0].text == "Hello," and completion.usage.prompt_tokens == 3
    streamed = client.completions.create(model="fake", prompt="a b", max_tokens=2, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == "Hello,"

    with pytest.raises(openai.BadRequestError) as err:
        client.completions.create(model="fake", prompt="a", max_tokens=2, extra_body={"mirostat": 2})
    assert "unknown parameter 'mirostat'" in str(err.value)
    assert [m.id for m in client.models.list()] == ["fake/llm"]


def test_openai_client_raises_a_failure_mid_stream(serve):
    openai = pytest.importorskip("openai")
    server = serve(make_handler(FakeModel(fail_at=1)))
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    stream = client.completions.create(model="fake", prompt="a", max_tokens=5, stream=True)
    with pytest.raises(openai.APIError, match="the model failed while answering"):
        list(stream)


def test_direct_invocation_path_gets_a_streamed_answer_whole(serve):
    from fake_stream_handlers import chunks

    server = serve(chunks)
    event = json.dumps({"version": "2.0", "rawPath": "/", "requestContext": {"http": {"method": "GET"}}})
    import urllib.request

    with urllib.request.urlopen(server.url + "/2015-03-31/functions/function/invocations", event.encode()) as r:
        body = r.read()
    assert body.split(PRELUDE_DELIMITER, 1)[1] == b"chunk 0\nchunk 1\nchunk 2\n"


def test_http_1_0_client_gets_the_stream_until_the_connection_closes(serve):
    from fake_stream_handlers import chunks

    server = serve(chunks)
    host, port = urllib.parse.urlsplit(server.url).netloc.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /?n=2 HTTP/1.0\r\n\r\n")
        raw = b""
        while data := sock.recv(65536):
            raw += data
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding" not in head.lower() and body == b"chunk 0\nchunk 1\n"


# --- votive's runtime behind the emulated Runtime API ------------------------------------------------------------


@pytest.fixture
def runtime(tmp_path):
    """runtime(handler name, **options) -> a started emulator running votive's runtime loop, stopped after."""
    started = []
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir()

    def start(name, **options):
        env = {"FAKE_GATE_DIR": str(gate_dir), "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])}
        command = [sys.executable, "-m", "votive.handlers.stream_runtime", f"fake_stream_handlers.{name}"]
        function = RuntimeApiEmulator(f"fake_stream_handlers.{name}", command=command, cwd=TESTS, env=env,
                                      init_timeout_s=20, **options)
        started.append(function)
        function.start()
        server = FunctionUrlServer(function, port=0)
        server.start()
        started.append(server)
        return server, gate_dir

    yield start
    for thing in reversed(started):
        thing.stop()


def release(gate_dir: Path, upto: int) -> None:
    for i in range(upto):
        (gate_dir / str(i)).touch()


def test_runtime_process_streams_each_chunk_as_it_is_made(runtime):
    server, gate_dir = runtime("chunks")
    client = RawStream(server.url, "/?n=3", None)
    try:
        assert client.status == 200 and client.headers["x-test"] == "yes" and client.headers["set-cookie"] == "a=1"
        for i in range(3):
            release(gate_dir, i + 1)
            assert client.read() == f"chunk {i}\n".encode()
            if i < 2:  # the body is still running: its next chunk waits for the test
                assert not (gate_dir / "closed").exists()
        assert client.read() is None
    finally:
        client.close()
    assert wait_for(lambda: (gate_dir / "closed").exists() and (gate_dir / "closed").read_text(), "close") == "3"


def test_runtime_process_stops_generating_when_the_client_hangs_up(runtime):
    server, gate_dir = runtime("generation")
    client = RawStream(server.url, "/v1/completions", {"prompt": "hi", "stream": True, "max_tokens": 200})
    release(gate_dir, 1)
    assert client.event()["choices"][0]["text"] == "Hello"
    client.close()
    closed = gate_dir / "closed"
    for i in range(1, 200):  # release the rest at a steady pace; a hang-up that works stops well before the end
        (gate_dir / str(i)).touch()
        if closed.exists():
            break
        time.sleep(0.02)
    made = int(wait_for(lambda: closed.exists() and closed.read_text(), "the generation to close"))
    assert made < 40, f"the generation made {made} tokens after the client hung up"
    release(gate_dir, 200)
    again = RawStream(server.url, "/v1/completions", {"prompt": "hi", "stream": True, "max_tokens": 2})
    assert [again.event() for _ in range(4)][-1] == "[DONE]"  # and the runtime took the next invocation
    again.close()


def test_runtime_process_error_mid_stream_cuts_the_answer(runtime, caplog):
    server, gate_dir = runtime("chunks")
    release(gate_dir, 5)
    client = RawStream(server.url, "/?n=5&fail_at=1", None)
    try:
        assert client.read() == b"chunk 0\n"
        with pytest.raises(ChunkedError):
            client.read()
    finally:
        client.close()
    assert "function error mid-stream: RuntimeError: chunk 1 failed" in caplog.text  # from the error trailers


def test_runtime_process_openai_client_and_buffered_answers(runtime):
    openai = pytest.importorskip("openai")
    server, gate_dir = runtime("generation")
    release(gate_dir, 10)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    streamed = client.chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=3, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == "Hello, world"
    whole = client.completions.create(model="fake", prompt="hi", max_tokens=2)
    assert whole.choices[0].text == "Hello,"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="fake", prompt="hi", max_tokens=0)


def test_runtime_process_answers_buffered_handlers_and_direct_invokes(runtime):
    import urllib.request

    server, _ = runtime("http_answer")
    with urllib.request.urlopen(server.url + "/x") as r:
        assert (r.status, r.read(), r.headers["content-type"], r.headers["set-cookie"]) == (
            201, b"made", "text/plain", "k=v")
    direct = urllib.request.Request(server.url + "/2015-03-31/functions/function/invocations", b'{"a": 1}')
    with urllib.request.urlopen(direct) as r:
        assert json.loads(r.read()) == {"echo": {"a": 1}}


def test_runtime_process_handler_error_is_502(runtime):
    import urllib.error
    import urllib.request

    server, _ = runtime("boom")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(server.url + "/")
    assert err.value.code == 502


def test_runtime_process_init_failure_is_reported():
    from votive.errors import EmulatorError

    command = [sys.executable, "-m", "votive.handlers.stream_runtime", "fake_handlers_broken.handler"]
    function = RuntimeApiEmulator("fake_handlers_broken.handler", command=command, cwd=TESTS, init_timeout_s=20,
                                  env={"PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO)])})
    with pytest.raises(EmulatorError) as err:
        function.start()
    assert err.value.lambda_error["errorType"] == "RuntimeError"
    assert err.value.lambda_error["errorMessage"] == "model weights not found at /nowhere"


def test_runtime_process_past_the_timeout_is_killed_and_replaced(runtime, caplog):
    server, gate_dir = runtime("chunks", config=FunctionConfig(timeout_s=1.0))
    client = RawStream(server.url, "/?n=3", None)
    try:
        release(gate_dir, 1)
        assert client.read() == b"chunk 0\n"
        with pytest.raises(ChunkedError):
            client.read()  # chunk 1 is never released: the function times out
    finally:
        client.close()
    assert "Sandbox.Timedout" in caplog.text
    release(gate_dir, 3)
    again = RawStream(server.url, "/?n=3", None)
    assert b"".join(iter(again.read, None)) == b"chunk 0\nchunk 1\nchunk 2\n"
    again.close()


# --- votive serve ------------------------------------------------------------------------------------------------


def test_serve_picks_the_generation_handler_for_a_gguf_model(smollm_gguf, minilm_dir):
    from votive.cli import serve as cli

    assert cli.default_handler(resolve_source(str(smollm_gguf))) == cli.GENERATION_HANDLER
    assert cli.default_handler(resolve_source(str(minilm_dir))) == cli.DEFAULT_HANDLER


def test_votive_serve_runtime_api_runs_votives_streaming_runtime(tmp_path):
    """`votive serve --runtime-api --runtime votive`: the runtime processes are votive's loop, and they stream."""
    release(tmp_path, 3)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]), FAKE_GATE_DIR=str(tmp_path))
    command = [sys.executable, "-m", "votive.cli", "serve", "--handler", "fake_stream_handlers.generation",
               "--runtime-api", "--runtime", "votive", "--port", "0"]
    process = _start_serve(command, cwd=TESTS, env=env)
    try:
        ready = process.stdout.readline()
        assert "(1 environment(s), votive runtime)" in ready, ready or process.stderr.read()
        client = RawStream(ready.split(" at ", 1)[1].split()[0], "/v1/completions",
                           {"prompt": "hi", "stream": True, "max_tokens": 2})
        events = [client.event() for _ in range(4)]
        client.close()
        assert [e["choices"][0]["text"] for e in events[:2]] == ["Hello", ","] and events[-1] == "[DONE]"
    finally:
        _stop_serve(process)


@pytest.mark.parametrize("options, mode", [([], "in-process"), (["--runtime-api"], "votive runtime")])
def test_votive_serve_streams_the_real_model_to_the_openai_client(options, mode):
    """`votive serve smollm2` in its own process (with --runtime-api, votive's runtime in another by default);
    the openai client streams a chat and gets a completion."""
    openai = pytest.importorskip("openai")
    env = dict(os.environ, PYTHONPATH=str(REPO), VOTIVE_N_CTX="256")
    command = [sys.executable, "-m", "votive.cli", "serve", "smollm2", "--port", "0", *options]
    process = _start_serve(command, env=env)
    try:
        ready = process.stdout.readline()
        assert "votive: serving votive.handlers.generation.handler at http://127.0.0.1:" in ready, \
            process.stderr.read() if process.poll() is not None else ready
        assert f"(1 environment(s), {mode})" in ready
        url = ready.split(" at ", 1)[1].split()[0]
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        chunks = list(client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=2, temperature=0, stream=True))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert chunks[-1].choices[0].finish_reason in ("length", "stop")
        assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
        completion = client.completions.create(model="smollm2", prompt="The capital of France is", max_tokens=1,
                                               temperature=0)
        assert completion.choices[0].text == " Paris"
    finally:
        _stop_serve(process)


def _start_serve(command: list[str], **options) -> subprocess.Popen:
    # A test run started in the background inherits SIGINT ignored, and Python then keeps ignoring it.
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **options)


def _stop_serve(process: subprocess.Popen) -> None:
    """Ctrl-C, as a user stops `votive serve`: it stops its runtimes and exits 130."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(10) == 130, process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    process.stdout.close()
    process.stderr.close()

"""The Runtime API emulator driving the real awslambdaric runtime client on small handlers.

Each test starts `python -m awslambdaric fake_handlers.<name>` with tests/ as the task root, so the code path
is the one a Lambda container image runs.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from votive.emulators.function_url import FunctionUrlServer
from votive.emulators.runtime_api import RuntimeApiEmulator
from votive.errors import EmulatorError
from votive.protocol.context import FunctionConfig

TASK_ROOT = Path(__file__).resolve().parent


@pytest.fixture
def emulator():
    """emulator(handler, **options) -> a started RuntimeApiEmulator, stopped after the test."""
    started = []

    def start(handler, **options):
        options.setdefault("cwd", TASK_ROOT)
        options.setdefault("init_timeout_s", 20)
        function = RuntimeApiEmulator(f"fake_handlers.{handler}", **options)
        started.append(function)
        function.start()
        return function

    yield start
    for function in started:
        function.stop()


def _get(url, path="/"):
    try:
        with urllib.request.urlopen(url + path, timeout=20) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def test_round_trip_through_function_url_and_awslambdaric(emulator):
    function = emulator("echo", config=FunctionConfig(name="embed", memory_mb=512))
    server = FunctionUrlServer(function, port=0)
    server.start()
    try:
        status, body = _get(server.url, "/v1/embeddings?x=1")
    finally:
        server.stop()
    assert status == 200
    reply = json.loads(body)
    assert reply["event"]["rawPath"] == "/v1/embeddings"
    assert reply["event"]["queryStringParameters"] == {"x": "1"}
    context = reply["context"]
    assert context["pid"] != __import__("os").getpid()  # ran in the runtime process, not here
    assert context["function_name"] == "embed"
    assert context["memory_limit_in_mb"] == "512"
    assert context["function_version"] == "$LATEST"
    assert context["invoked_function_arn"] == "arn:aws:lambda:xx-local-1:000000000000:function:embed"
    assert context["log_group_name"] == "/aws/lambda/embed"
    assert context["aws_request_id"] == reply["event"]["requestContext"]["requestId"]
    assert 0 < context["remaining_ms"] <= 30_000


def test_runtime_sees_lambda_variables_and_ours(emulator):
    function = emulator("environ", env={"VOTIVE_MODEL": "/models/minilm"})
    names = ["_HANDLER", "LAMBDA_TASK_ROOT", "AWS_LAMBDA_FUNCTION_NAME", "AWS_REGION", "AWS_LAMBDA_RUNTIME_API",
             "AWS_LAMBDA_LOG_STREAM_NAME", "VOTIVE_MODEL"]
    outcome = function.invoke({"names": names})
    assert outcome.ok, outcome.error
    seen = json.loads(outcome.payload)
    assert seen["_HANDLER"] == "fake_handlers.environ"
    assert seen["LAMBDA_TASK_ROOT"] == str(TASK_ROOT)
    assert seen["AWS_LAMBDA_FUNCTION_NAME"] == "votive-local"
    assert seen["AWS_REGION"] == "xx-local-1"
    assert seen["AWS_LAMBDA_RUNTIME_API"].startswith("127.0.0.1:")
    assert "[$LATEST]" in seen["AWS_LAMBDA_LOG_STREAM_NAME"]
    assert seen["VOTIVE_MODEL"] == "/models/minilm"


def test_handler_error_comes_back_in_lambda_error_shape_and_output_is_forwarded(emulator, caplog):
    caplog.set_level("INFO", logger="votive.lambda")
    function = emulator("boom")
    outcome = function.invoke({"rawPath": "/x"})
    error = outcome.error
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "boom: /x"
    assert error["requestId"] == outcome.request_id
    assert any("fake_handlers.py" in frame and "in boom" in frame for frame in error["stackTrace"])
    # the runtime's own log line reaches ours through the emulator's reader of its output, which may come a moment
    # after the error's HTTP answer: waited for, up to 10 s
    deadline = time.monotonic() + 10
    while "[ERROR] ValueError: boom: /x" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "[ERROR] ValueError: boom: /x" in caplog.text

    server = FunctionUrlServer(function, port=0)
    server.start()
    try:
        status, body = _get(server.url)
    finally:
        server.stop()
    assert status == 502 and json.loads(body) == {"Message": "Internal Server Error"}


@pytest.mark.parametrize(
    "handler, error_type, message",
    [
        ("fake_handlers_broken.handler", "RuntimeError", "model weights not found at /nowhere"),
        ("no_such_module_xyz.handler", "Runtime.ImportModuleError", "Unable to import module 'no_such_module_xyz'"),
    ],
)
def test_init_error_is_reported_and_nothing_is_served(handler, error_type, message):
    function = RuntimeApiEmulator(handler, cwd=TASK_ROOT, init_timeout_s=20)
    with pytest.raises(EmulatorError, match=f"function init failed: {error_type}") as info:
        function.start()
    assert info.value.lambda_error["errorType"] == error_type
    assert message in info.value.lambda_error["errorMessage"]
    outcome = function.invoke({})  # stopped: answered at once with an error, never run
    assert outcome.error is not None and outcome.payload is None


def test_slow_handler_with_concurrent_requests_queues_per_environment(emulator):
    function = emulator("slow", environments=2)
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(function.invoke({"sleep": 0.3}))) for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=20)
    elapsed = time.monotonic() - started
    assert len(outcomes) == 4 and all(o.ok for o in outcomes), [o.error for o in outcomes]
    replies = [json.loads(o.payload) for o in outcomes]
    assert len({r["id"] for r in replies}) == 4
    assert len({r["pid"] for r in replies}) == 2  # two runtime processes shared the work
    assert elapsed >= 0.55  # two rounds of 0.3 s: each process ran one invocation at a time


def test_runtime_exit_mid_invocation_fails_it_and_a_fresh_runtime_serves_the_next(emulator):
    function = emulator("exit_if_asked")
    first_pid = json.loads(function.invoke({}).payload)["pid"]
    outcome = function.invoke({"exit": 3})
    assert outcome.error["errorType"] == "Runtime.ExitError"
    assert "exit status 3" in outcome.error["errorMessage"]
    after = function.invoke({})
    assert after.ok, after.error
    assert json.loads(after.payload)["pid"] != first_pid


def test_runtime_that_restarts_into_a_failing_init_answers_every_later_request_with_that_error(tmp_path):
    marker = tmp_path / "break"
    function = RuntimeApiEmulator(
        "fake_handlers_flaky.handler", cwd=TASK_ROOT, env={"FAKE_BREAK_INIT": str(marker)}, init_timeout_s=20
    )
    function.start()
    try:
        assert function.invoke({}).ok
        marker.touch()  # the next init of this function fails
        assert function.invoke({"exit": 1}).error["errorType"] == "Runtime.ExitError"
        later = function.invoke({})
        assert later.error["errorType"] == "RuntimeError"
        assert later.error["errorMessage"] == "init broke on restart"
        assert function.init_error["errorType"] == "RuntimeError"
    finally:
        function.stop()


def test_timeout_kills_the_runtime_and_the_next_request_is_served(emulator):
    function = emulator("slow", config=FunctionConfig(timeout_s=0.3))
    started = time.monotonic()
    outcome = function.invoke({"sleep": 5})
    assert time.monotonic() - started < 2.5
    assert outcome.error["errorType"] == "Sandbox.Timedout"
    after = function.invoke({"sleep": 0})
    assert after.ok, after.error


def test_missing_interpreter_is_a_clear_error():
    function = RuntimeApiEmulator("fake_handlers.echo", python="/nonexistent/python3", cwd=TASK_ROOT)
    with pytest.raises(EmulatorError, match="cannot start the runtime '/nonexistent/python3'"):
        function.start()


def test_runtime_that_never_polls_times_out_instead_of_hanging():
    function = RuntimeApiEmulator(
        "fake_handlers.echo", command=[sys.executable, "-c", "import time; time.sleep(30)"], init_timeout_s=0.5
    )
    started = time.monotonic()
    with pytest.raises(EmulatorError, match="did not ask for an event within 0.5 s"):
        function.start()
    assert time.monotonic() - started < 5

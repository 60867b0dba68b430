"""A container image answers where no Lambda service runs it: its entry script runs the runtime client under Lambda
(AWS_LAMBDA_RUNTIME_API set) and votive's own endpoint elsewhere (`docker run -p 9000:8080`), which answers the
Runtime Interface Emulator's invoke path and any other path as a function URL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from votive.builders.image_build import entry_script
from votive.handlers.local_endpoint import INVOKE_PATH

TESTS = Path(__file__).resolve().parent


class Endpoint:
    """`python -m votive.handlers.local_endpoint HANDLER` (or another command) on a free port, in tests/."""

    def __init__(self, command: list[str], env: dict[str, str] | None = None):
        environ = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{TESTS}:{TESTS.parent}", "PORT": "0", **(env or {})}
        self.process = subprocess.Popen(command, cwd=TESTS, env=environ, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.banner = self.process.stdout.readline()
        self.url = self.banner.split(" answering on ")[-1].split()[0].replace("0.0.0.0", "127.0.0.1") \
            if " answering on " in self.banner else None

    def request(self, path: str, body: dict | None = None) -> tuple[int, dict, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET",
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers, exc.read()

    def stop(self) -> str:
        self.process.terminate()
        _, err = self.process.communicate(timeout=30)
        return err


@pytest.fixture
def endpoint():
    started = []

    def start(command, env=None):
        started.append(Endpoint(command, env))
        return started[-1]

    yield start
    for one in started:
        if one.process.poll() is None:
            one.stop()


def _local(handler: str) -> list[str]:
    return [sys.executable, "-m", "votive.handlers.local_endpoint", handler]


def test_the_emulators_invoke_path_answers_with_the_handlers_result(endpoint):
    server = endpoint(_local("fake_handlers.echo"))
    assert server.url, server.banner
    status, headers, body = server.request(INVOKE_PATH, {"input": "hello"})
    answer = json.loads(body)
    assert status == 200 and answer["event"] == {"input": "hello"}
    assert answer["context"]["function_name"] == "votive-local" and answer["context"]["remaining_ms"] > 0


def test_any_other_path_is_a_function_url(endpoint):
    server = endpoint(_local("fake_handlers.echo"))
    status, _, body = server.request("/v1/embeddings?x=1", {"input": "hello"})
    event = json.loads(body)["event"]
    assert status == 200 and event["version"] == "2.0" and event["rawPath"] == "/v1/embeddings"
    assert event["queryStringParameters"] == {"x": "1"} and json.loads(event["body"]) == {"input": "hello"}
    status, headers, body = endpoint(_local("fake_handlers.mirror")).request(
        "/", {"statusCode": 418, "headers": {"x-a": "b"}, "body": "teapot"})
    assert (status, headers["x-a"], body) == (418, "b", b"teapot")


def test_a_streamed_answer_is_sent_as_it_is_made(endpoint):
    server = endpoint(_local("fake_stream_handlers.chunks"))
    status, headers, body = server.request("/?n=3")
    assert status == 200 and headers["Transfer-Encoding"] == "chunked" and body == b"chunk 0\nchunk 1\nchunk 2\n"


def test_a_failing_init_exits_with_the_traceback(endpoint):
    server = endpoint(_local("fake_handlers_broken.handler"))
    assert server.process.wait(timeout=60) == 1 and server.url is None
    err = server.process.stderr.read()
    assert "RuntimeError: model weights not found at /nowhere" in err and "fake_handlers_broken.py" in err


def test_the_entry_script_picks_the_runtime_client_only_under_lambda(endpoint, tmp_path):
    script = tmp_path / "votive-entry"
    client = [sys.executable, "-c", "import sys; print('runtime client for', sys.argv[1])"]
    script.write_text(entry_script(sys.executable, client))
    script.chmod(0o755)
    under_lambda = subprocess.run([str(script), "fake_handlers.echo"], capture_output=True, text=True, timeout=60,
                                  env={"PATH": os.environ["PATH"], "AWS_LAMBDA_RUNTIME_API": "127.0.0.1:9001"})
    assert under_lambda.stdout == "runtime client for fake_handlers.echo\n"
    server = endpoint([str(script), "fake_handlers.echo"])  # no AWS_LAMBDA_RUNTIME_API: docker run
    assert json.loads(server.request(INVOKE_PATH, {"a": 1})[2])["event"] == {"a": 1}
    assert f"POST {INVOKE_PATH} with an event" in entry_script(sys.executable, client)


def test_the_gpu_image_and_the_modal_app_pin_the_same_cupy(tmp_path):
    from test_packaging_units import FakeToolchain

    from votive.builders.image_build import ImageTarget, build_image
    from votive.builders.modal_build import ModalTarget, build_modal
    from votive.builders.targets import GPU_PINS

    fake = FakeToolchain()
    manifest = build_image("minilm", tmp_path / "gpu", ImageTarget(gpu=True, python="3.12"), tools=fake.tools())
    asked = [arg for call in fake.commands("fake-pip") for arg in call if arg.startswith("cupy")]
    assert asked == [f"cupy-cuda12x=={GPU_PINS['cupy-cuda12x']}"]
    assert manifest["image"]["entrypoint"] == ["/var/task/votive-entry"]
    assert "EXPOSE 8080" in (tmp_path / "gpu" / "Dockerfile").read_text()
    app = build_modal("minilm", tmp_path / "modal", ModalTarget(gpu="L4"), tools=FakeToolchain().tools())
    pins = dict(r.split("==") for r in app["app"]["requirements"])
    assert pins["cupy-cuda12x"] == GPU_PINS["cupy-cuda12x"]
    assert pins["nvidia-cuda-nvrtc-cu12"] == GPU_PINS["nvidia-cuda-nvrtc-cu12"]

"""The `votive` command line: help, one-line errors and exit codes, `serve` and `invoke` end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import fake_handlers
import pytest

from votive.cli import main
from votive.emulators.function_url import FunctionUrlServer

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


@pytest.fixture
def local_url():
    servers = []

    def start(handler):
        server = FunctionUrlServer(handler, port=0)
        server.start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "serve" in out and "invoke" in out


def test_invoke_prints_body_to_stdout_and_status_to_stderr(local_url, capsys):
    url = local_url(fake_handlers.echo)
    code = main(["invoke", url, "--path", "/v1/embeddings?k=v", "--data", '{"input": ["hi"]}'])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.err.strip() == "HTTP 200 OK"
    event = json.loads(captured.out)["event"]
    assert event["rawPath"] == "/v1/embeddings" and event["queryStringParameters"] == {"k": "v"}
    assert event["requestContext"]["http"]["method"] == "POST"
    assert json.loads(event["body"]) == {"input": ["hi"]}


def test_invoke_data_from_file_and_explicit_method(local_url, capsys, tmp_path):
    url = local_url(fake_handlers.echo)
    (tmp_path / "body.json").write_text('{"from": "file"}')
    assert main(["invoke", url, "--data", f"@{tmp_path / 'body.json'}", "--method", "put"]) == 0
    event = json.loads(capsys.readouterr().out)["event"]
    assert event["requestContext"]["http"]["method"] == "PUT" and event["body"] == '{"from": "file"}'


def test_invoke_non_2xx_exits_1(local_url, capsys):
    url = local_url(fake_handlers.boom)
    assert main(["invoke", url]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip() == "HTTP 502 Bad Gateway"
    assert json.loads(captured.out) == {"Message": "Internal Server Error"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["invoke", "http://127.0.0.1:9", "--data", "{not json"], "votive: error: --data is not valid JSON: "),
        (
            ["invoke", "http://127.0.0.1:9", "--data", "@/no/such/file.json"],
            "votive: error: --data @/no/such/file.json: cannot read",
        ),
        (["invoke", "ftp://host/x"], "votive: error: URL must look like http(s)://"),
        (["invoke", "http://127.0.0.1:9", "-H", "no-colon"], "votive: error: --header must look like 'Name: value'"),
        (["serve"], "votive: error: serve needs a MODEL for the default handler, or --handler module.function"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(message)
    assert captured.err.count("\n") == 1 and captured.out == ""


def test_invoke_unreachable_endpoint_is_exit_2(capsys):
    assert main(["invoke", "http://127.0.0.1:9", "--timeout", "2"]) == 2
    assert capsys.readouterr().err.startswith("votive: error: cannot reach http://127.0.0.1:9")


def test_serve_init_failure_is_one_line_exit_2(capsys):
    assert main(["serve", "--handler", "fake_handlers_broken.handler", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("votive: error: function init failed: RuntimeError: model weights not found at /nowhere")
    assert err.count("\n") == 1


def test_serve_port_in_use_is_exit_2(local_url, capsys):
    port = local_url(fake_handlers.echo).rsplit(":", 1)[1]
    assert main(["serve", "--handler", "fake_handlers.echo", "--port", port]) == 2
    assert capsys.readouterr().err.startswith(f"votive: error: cannot listen on 127.0.0.1:{port}")


def test_serve_then_ctrl_c_exits_130_quietly(tmp_path):
    """The real thing: `votive serve MODEL --handler ...` in a process, one request, then SIGINT."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), str(REPO)]))
    command = [sys.executable, "-m", "votive.cli", "serve", str(tmp_path), "--handler", "fake_handlers.environ"]
    process = subprocess.Popen(
        [*command, "--port", "0"],
        cwd=TESTS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A test run started in the background inherits SIGINT ignored, and Python then keeps ignoring it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        ready = process.stdout.readline()
        assert "votive: serving fake_handlers.environ at http://127.0.0.1:" in ready, process.stderr.read()
        url = ready.split(" at ", 1)[1].split()[0]
        direct = f"{url}/2015-03-31/functions/function/invocations"
        reply = subprocess.run(
            [sys.executable, "-m", "votive.cli", "invoke", direct, "--data", '{"names": ["VOTIVE_MODEL"]}'],
            env=env, capture_output=True, text=True, timeout=30,
        )
        assert reply.returncode == 0, reply.stderr
        assert json.loads(reply.stdout) == {"VOTIVE_MODEL": str(tmp_path)}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 130
        err = process.stderr.read()
        assert "Traceback" not in err
        assert "POST /2015-03-31/functions/function/invocations 200" in err  # the request log line
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
        process.stderr.close()

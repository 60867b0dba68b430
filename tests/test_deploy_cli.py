"""The deployment commands end to end through `votive.cli.main`, against the moto server: deploy prints the URL,
status and logs read it back, destroy removes it, and every error is one line with exit code 2. Also
`votive invoke --function` and the SnapStart hooks."""

from __future__ import annotations

import io
import json
import time
import urllib.request

import pytest
from deploy_fakes import REGION, make_build

from votive.cli import main
from votive.client.aws_session import AwsClients
from votive.client.lambda_invoke import invoke_function
from votive.client.logs import tail_logs
from votive.handlers import snapstart


@pytest.fixture
def aws_env(moto_endpoint, monkeypatch, tmp_path):
    """The CLI pointed at moto the way a user points boto3 anywhere: AWS_ENDPOINT_URL, plus fake credentials."""
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.chdir(tmp_path)  # state goes to ./.votive/deployments, as for a user
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).close()
    return AwsClients(REGION, endpoint_url=moto_endpoint)


def test_deploy_status_logs_destroy(aws_env, tmp_path, capsys):
    build = make_build(tmp_path / "build")
    assert main(["deploy", "aws", str(build), "--name", "cli-fn", "--auth", "NONE", "--memory", "1024", "--yes"]) == 0
    out = capsys.readouterr()
    url = out.out.strip()
    assert url.startswith("https://") and ".lambda-url.eu-west-1.on.aws" in url
    assert "uploaded votive-function.zip" in out.err
    assert json.loads((tmp_path / ".votive/deployments/cli-fn.json").read_text())["url"] == url

    assert main(["status", "cli-fn", "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert (status["state"], status["memory_mb"], status["url"]) == ("Active", 1024, url)

    logs = aws_env.logs
    logs.create_log_stream(logGroupName="/aws/lambda/cli-fn", logStreamName="s1")
    now = int(time.time() * 1000)
    logs.put_log_events(logGroupName="/aws/lambda/cli-fn", logStreamName="s1",
                        logEvents=[{"timestamp": now - 2000, "message": "INIT_START"},
                                   {"timestamp": now - 1000, "message": "served 3 embeddings\n"}])
    assert main(["logs", "cli-fn", "--since", "5m"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["INIT_START", "served 3 embeddings"]

    assert main(["destroy", "cli-fn"]) == 0
    assert aws_env.lambda_.list_functions()["Functions"] == []
    assert main(["status", "cli-fn"]) == 2
    assert "no deployment named 'cli-fn'" in capsys.readouterr().err


def test_deploy_errors_are_one_line_with_exit_2(aws_env, tmp_path, capsys):
    build = make_build(tmp_path / "build")
    cases = [
        (["--name", "ok", "--region", "nowhere-1"], "unknown AWS region 'nowhere-1'"),
        (["--name", "no/slash"], "is not a Lambda function name"),
        (["--name", "ok", "--arch", "arm64"], "is for x86_64, but the deploy asks for --arch arm64"),
    ]
    for extra, expected in cases:
        assert main(["deploy", "aws", str(build), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith("votive: error: ") and expected in err and err.count("\n") == 1, err
    assert aws_env.s3.list_buckets()["Buckets"] == []


def test_reusing_an_earlier_build_of_the_same_model(aws_env, tmp_path, capsys, monkeypatch):
    make_build(tmp_path / ".votive" / "builds" / "reuse", model="minilm")
    built = []
    monkeypatch.setattr("votive.builders.lambda_build.build_lambda", lambda *a, **k: built.append(a))
    assert main(["deploy", "aws", "minilm", "--name", "reuse"]) == 0
    assert "reusing the build in .votive/builds/reuse" in capsys.readouterr().err
    assert built == []


def test_logs_follow_polls_without_waiting():
    class Logs:
        def __init__(self):
            self.pages = [[_event("a", 1000)], [_event("a", 1000), _event("b", 2000)], []]

        def filter_log_events(self, **kwargs):
            return {"events": self.pages.pop(0)}

    sleeps = []
    lines = list(tail_logs(Logs(), "/aws/lambda/x", since_s=60, follow=True, now=lambda: 100.0,
                           sleep=sleeps.append, polls=3))
    assert [line.split(" ", 1)[1] for line in lines] == ["a", "b"]  # "a" came twice, printed once
    assert sleeps == [2.0, 2.0]


def _event(message: str, timestamp: int) -> dict:
    return {"eventId": message, "timestamp": timestamp, "message": message}


class FakeLambda:
    """The two Invoke operations, answering as Lambda does (a streaming function's chunks, an error payload)."""

    def __init__(self):
        self.calls = []

    def invoke(self, **kwargs):
        self.calls.append(("invoke", kwargs))
        if kwargs["Payload"] == b'{"bad": true}':
            return {"FunctionError": "Unhandled", "Payload": io.BytesIO(
                b'{"errorType": "VotiveFault", "errorMessage": "Votive.BadRequest: no input"}')}
        return {"Payload": io.BytesIO(b'{"data": []}')}

    def invoke_with_response_stream(self, **kwargs):
        self.calls.append(("stream", kwargs))
        return {"EventStream": iter([{"PayloadChunk": {"Payload": b"data: 1\n\n"}},
                                     {"PayloadChunk": {"Payload": b"data: [DONE]\n\n"}},
                                     {"InvokeComplete": {}}])}


def test_invoke_function_directly():
    client = FakeLambda()
    result = invoke_function(client, "fn", b'{"input": "x"}', qualifier="live")
    assert (result.payload, result.error) == (b'{"data": []}', None)
    assert client.calls[0][1] == {"FunctionName": "fn", "Payload": b'{"input": "x"}', "Qualifier": "live"}
    assert invoke_function(client, "fn", b'{"bad": true}').error == "VotiveFault: Votive.BadRequest: no input"
    chunks = []
    streamed = invoke_function(client, "fn", b"{}", stream=True, on_chunk=chunks.append)
    assert chunks == [b"data: 1\n\n", b"data: [DONE]\n\n"] and streamed.error is None


def test_invoke_function_of_a_missing_function_is_one_line(aws_env, capsys):
    assert main(["invoke", "--function", "nothing-here", "--data", "{}"]) == 2
    err = capsys.readouterr().err
    assert "invoke nothing-here: Invoke: ResourceNotFoundException" in err and err.count("\n") == 1


def test_snapstart_hooks_warm_before_and_reseed_after():
    class Hooks:
        before, after = [], []

        def register_before_snapshot(self, f):
            self.before.append(f)

        def register_after_restore(self, f):
            self.after.append(f)

    import random

    hooks, seen = Hooks(), []
    assert snapstart.register_hooks("votive.handlers.embeddings.handler", lambda e, c: seen.append(e), hooks=hooks)
    [warm], [reseed] = hooks.before, hooks.after
    warm()
    assert seen == [{"input": ["SnapStart warm-up"]}]
    random.seed(1)
    first = random.random()
    random.seed(1)
    reseed()
    assert random.random() != first  # a restored copy does not replay the snapshot's random stream


def test_a_failing_warm_up_does_not_stop_the_snapshot(caplog):
    def broken(event, context):
        raise RuntimeError("model not ready")

    snapstart.warm(broken, {"input": ["x"]})
    assert "warm-up request failed" in caplog.text

"""The deploy commands say what happened: a kept shared bucket is "kept", an unusable flag names what would work,
`invoke | head` is not a connection failure, and an unknown AWS profile is one line on every command that
talks to AWS. Through `votive.cli.main` against the moto server, or a real pipe."""

from __future__ import annotations

import http.server
import json
import sys
import threading

import pytest
from deploy_fakes import REGION, make_build
from test_deploy_cli import aws_env  # noqa: F401  (the CLI pointed at moto)

from votive.cli import main
from votive.client.url_invoke import invoke_url
from votive.errors import EndpointError


def test_destroy_says_it_kept_a_shared_bucket(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    assert main(["deploy", "aws", str(build), "--name", "one"]) == 0
    assert main(["deploy", "aws", str(build), "--name", "two"]) == 0
    bucket = f"votive-123456789012-{REGION}"
    capsys.readouterr()
    assert main(["destroy", "one"]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert f"votive: kept bucket {bucket} (shared: other deployments' files are still in it)" in lines
    assert not [line for line in lines if "deleted bucket" in line]
    assert main(["destroy", "two"]) == 0
    assert f"votive: deleted bucket {bucket}" in capsys.readouterr().err.splitlines()
    assert aws_env.s3.list_buckets()["Buckets"] == []


def test_an_arm64_build_deploys_as_arm64_without_the_flag(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "arm", arch="arm64")
    assert main(["deploy", "aws", str(build), "--name", "graviton", "--arch", "x86_64"]) == 2
    assert capsys.readouterr().err == (
        f"votive: error: the build in {build} is for arm64, but the deploy asks for --arch x86_64: deploy it with "
        f"--arch arm64 (or leave --arch out), or rebuild it with `votive build lambda minilm --arch x86_64`\n")
    assert main(["deploy", "aws", str(build), "--name", "graviton"]) == 0
    conf = aws_env.lambda_.get_function_configuration(FunctionName="graviton")
    assert conf["Architectures"] == ["arm64"]


def test_stream_on_an_embedding_model_suggests_no_refused_command(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    assert main(["deploy", "aws", str(build), "--name", "emb", "--stream"]) == 2
    err = capsys.readouterr().err
    assert err == ("votive: error: --stream: minilm is served by votive.handlers.embeddings.handler, which answers "
                   "whole (only generation streams); deploy without --stream\n")
    assert "votive build" not in err


def test_stream_with_snapstart_is_refused_before_the_build(aws_env, tmp_path, capsys, monkeypatch):  # noqa: F811
    built = []
    monkeypatch.setattr("votive.builders.lambda_build.build_lambda", lambda *a, **k: built.append(a))
    assert main(["deploy", "aws", "some/generation-model", "--name", "g", "--stream", "--snapstart"]) == 2
    assert "--snapstart cannot go with --stream" in capsys.readouterr().err
    assert main(["export", "sam", "some/generation-model", "--name", "g", "--stream", "--snapstart"]) == 2
    assert built == []


# --- an unknown AWS profile -------------------------------------------------------------------------------


def _record(tmp_path) -> None:
    state = tmp_path / ".votive" / "deployments"
    state.mkdir(parents=True)
    (state / "rec.json").write_text(json.dumps({"name": "rec", "provider": "aws", "region": REGION,
                                                "resources": [{"kind": "role", "name": "votive-rec"}]}))


COMMANDS = [
    ["deploy", "aws", "BUILD", "--name", "x"],
    ["deploy", "aws", "BUILD", "--name", "x", "--region", REGION],
    ["deploy", "aws", "BUILD", "--name", "x", "--plan"],
    ["status", "rec"],
    ["logs", "rec"],
    ["destroy", "rec"],
    ["invoke", "--function", "rec", "--data", "{}"],
    ["invoke", "https://abc.lambda-url.eu-west-1.on.aws/", "--sign", "always"],
]


@pytest.mark.parametrize("how", ["flag", "environment"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_an_unknown_profile_is_one_line_on_every_aws_command(aws_env, tmp_path, capsys, monkeypatch,  # noqa: F811
                                                             command, how):
    _record(tmp_path)
    build = make_build(tmp_path / "build")
    argv = [str(build) if part == "BUILD" else part for part in command]
    if how == "flag":
        argv += ["--profile", "nosuch"]
    else:
        monkeypatch.setenv("AWS_PROFILE", "nosuch")
    assert main(argv) == 2
    err = capsys.readouterr().err
    where = "--profile" if how == "flag" else "AWS_PROFILE"
    assert f"AWS profile 'nosuch' ({where}) is not in your AWS config or credentials files" in err, err
    assert err.count("\n") == 1 and err.startswith("votive: error: ")


# --- invoke | head ------------------------------------------------------------------------------------------


class ClosedPipe:
    """A stdout whose reader has gone: every write raises BrokenPipeError, as writing to a closed pipe does."""

    def write(self, data):
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self):
        pass

    def isatty(self):
        return False

    @property
    def buffer(self):
        return self


def test_a_closed_output_is_not_a_connection_failure(capsys, monkeypatch):
    class Big(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 20))
            self.end_headers()
            try:
                self.wfile.write(b"x" * (1 << 20))
            except (BrokenPipeError, ConnectionResetError):  # the client went away first: the point of the test,
                pass  # and no traceback from this server thread in the stderr the test reads

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Big)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        def closed(chunk):
            raise BrokenPipeError(32, "Broken pipe")

        with pytest.raises(BrokenPipeError):  # the reader's error, not EndpointError("connection ... failed")
            invoke_url(url, on_chunk=closed)
        with pytest.raises(EndpointError, match="cannot reach"):
            invoke_url("http://127.0.0.1:1")  # a real connection failure is still one
        # `votive invoke URL | head`: the reader went away. (A real pipe cannot show it here: this machine's
        # pipes take the whole answer before the reader closes; a stdout that raises EPIPE stands in for it.)
        for stream in ([], ["--stream"]):
            capsys.readouterr()
            monkeypatch.setattr(sys, "stdout", ClosedPipe())
            assert main(["invoke", url, "--sign", "never", *stream]) == 141
            monkeypatch.undo()
            err = capsys.readouterr().err
            assert "error" not in err and "Broken pipe" not in err and "connection" not in err, err
    finally:
        server.shutdown()

"""The command line's rough edges, filed in issue 18 and each pinned here: `invoke --stream` (the body asks to
stream, the text is printed, --raw keeps the events), a trailing newline before the status line, `logs` with
float timestamps, `--version`, shell completion, one --gpu default for `build modal` and `deploy modal`, and
deploys under another name reusing an identical build."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import votive
from votive.cli import build_parser, main
from votive.emulators.function_url import FunctionUrlServer

TESTS = Path(__file__).resolve().parent
CHAT = {"messages": [{"role": "user", "content": "tell me a story"}], "max_tokens": 5, "temperature": 0}


@pytest.fixture
def generation_url():
    from fake_llm import FakeModel

    from votive.handlers.generation import make_handler

    server = FunctionUrlServer(make_handler(FakeModel(n_ctx=4096)), port=0)
    server.start()
    yield server.url
    server.stop()


def _invoke(capfd, *argv) -> tuple[int, str, str]:
    code = main(["invoke", *argv])
    out, err = capfd.readouterr()
    return code, out, err


def test_invoke_stream_asks_for_a_stream_and_prints_its_text(generation_url, capfd):
    code, whole, _ = _invoke(capfd, generation_url, "--path", "/v1/chat/completions", "--data", json.dumps(CHAT))
    assert code == 0
    expected = json.loads(whole)["choices"][0]["message"]["content"]  # the same request answered whole
    assert expected
    code, out, err = _invoke(capfd, generation_url, "--path", "/v1/chat/completions", "--data", json.dumps(CHAT),
                             "--stream")
    assert code == 0 and err == "HTTP 200 OK\n"
    assert out == expected + "\n"  # the text, not `data: {...}` lines, and a final newline


def test_invoke_stream_raw_prints_the_events(generation_url, capfd):
    code, out, _ = _invoke(capfd, generation_url, "--path", "/v1/completions", "--stream", "--raw",
                           "--data", json.dumps({"prompt": "once", "max_tokens": 3, "temperature": 0}))
    events = [line for line in out.splitlines() if line]
    assert code == 0 and events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert out.endswith("\n")


def test_invoke_stream_leaves_an_explicit_stream_false_and_other_bodies_alone():
    from votive.cli.invoke import ask_to_stream

    assert json.loads(ask_to_stream(b'{"prompt": "x"}')) == {"prompt": "x", "stream": True}
    assert json.loads(ask_to_stream(b'{"prompt": "x", "stream": false}')) == {"prompt": "x", "stream": False}
    assert ask_to_stream(b'{"input": ["a"]}') == b'{"input": ["a"]}'  # embeddings do not stream


def test_stream_text_reads_events_split_anywhere():
    from votive.client.stream_text import StreamText

    body = (b'data: {"choices":[{"delta":{"role":"assistant","content":""}}]}\n\n'
            b'data: {"choices":[{"delta":{"content":"caf\xc3\xa9 "}}]}\r\n\r\n'
            b'data: {"choices":[{"index":0,"text":"au lait"}]}\n\n'
            b'data: {"error":{"message":"the generation failed"}}\n\ndata: [DONE]\n\n')
    for size in (1, 3, 7, len(body)):
        reader = StreamText()
        text = b"".join(reader.feed(body[i:i + size]).encode() for i in range(0, len(body), size)) + \
            reader.end().encode()
        assert text.decode() == "café au lait" and reader.done and reader.errors == ["the generation failed"]
    plain = StreamText()
    assert plain.feed(b'{"data": [1]}') + plain.end() == '{"data": [1]}'  # not an event stream: as it came


def test_the_body_ends_with_a_newline_before_the_status_line(tmp_path):
    """`}HTTP 200 OK` on a terminal: stdout and stderr together must show the body, a newline, then the status."""
    import fake_handlers

    server = FunctionUrlServer(fake_handlers.mirror, port=0)
    server.start()
    try:
        body = json.dumps({"statusCode": 200, "body": '{"a": 1}'})  # no newline at its end
        done = subprocess.run([sys.executable, "-m", "votive.cli", "invoke", server.url, "--data", body],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=TESTS.parent, timeout=120)
    finally:
        server.stop()
    assert done.returncode == 0
    assert done.stdout.decode() == '{"a": 1}\nHTTP 200 OK\n'


def test_logs_with_float_timestamps_keep_polling_with_an_integer_start():
    from votive.client.logs import tail_logs

    class Logs:
        """CloudWatch as some endpoints (moto) answer: timestamps as floats. botocore wants startTime an int."""

        def __init__(self):
            self.pages = [[{"eventId": "a", "timestamp": 1000.0, "message": "first\n"}],
                          [{"eventId": "b", "timestamp": 2500.0, "message": "second"}], []]
            self.starts = []

        def filter_log_events(self, **kwargs):
            if not isinstance(kwargs["startTime"], int):
                raise TypeError(f"Invalid type for parameter startTime, value: {kwargs['startTime']!r}")
            self.starts.append(kwargs["startTime"])
            return {"events": self.pages.pop(0)}

    logs = Logs()
    lines = list(tail_logs(logs, "/aws/lambda/x", since_s=1, follow=True, now=lambda: 0.5, sleep=lambda s: None,
                           polls=3))
    assert lines == ["1970-01-01T00:00:01.000Z first", "1970-01-01T00:00:02.500Z second"]
    assert logs.starts == [-500, 1000, 2500]


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out == f"votive {votive.__version__}\n"


def _complete(script: str, *words: str) -> list[str]:
    """What bash offers after `votive WORDS...` (the last word being completed)."""
    line = " ".join(f"'{w}'" for w in ("votive", *words))
    program = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words)}; _votive; printf "%s\\n" "${{COMPREPLY[@]}}"'
    done = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return sorted(w for w in done.stdout.splitlines() if w)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash here")
def test_bash_completion_offers_every_command_option_and_choice(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    commands = sorted(build_parser()._subparsers._group_actions[0].choices)
    assert _complete(script, "") == sorted(commands + ["-h", "--help", "--version"])
    assert _complete(script, "dep") == ["deploy"]
    assert "--arch" in _complete(script, "build", "lambda", "minilm", "--")
    assert _complete(script, "build", "lambda", "minilm", "--arch", "") == ["arm64", "x86_64"]
    assert _complete(script, "completion", "") == sorted(["-h", "--help", "bash", "zsh"])


def test_zsh_completion_loads_bash_completion_first(capsys):
    assert main(["completion", "zsh"]) == 0
    script = capsys.readouterr().out
    assert script.startswith("autoload -U +X bashcompinit && bashcompinit\n")
    assert "complete -o default -F _votive votive" in script


def test_argcomplete_answers_when_the_shell_asks(monkeypatch):
    """With argcomplete installed and _ARGCOMPLETE set, main hands it the parser before parsing anything."""
    import types

    seen = []
    fake = types.ModuleType("argcomplete")
    fake.autocomplete = lambda parser: (seen.append(parser.prog), sys.exit(0))
    monkeypatch.setitem(sys.modules, "argcomplete", fake)
    monkeypatch.setenv("_ARGCOMPLETE", "1")
    with pytest.raises(SystemExit):
        main(["invoke"])
    assert seen == ["votive"]


def test_build_modal_and_deploy_modal_share_the_gpu_default():
    parser = build_parser()
    built = parser.parse_args(["build", "modal", "minilm"])
    deployed = parser.parse_args(["deploy", "modal", "minilm"])
    assert built.gpu == deployed.gpu == "T4"
    assert parser.parse_args(["build", "modal", "minilm", "--gpu", "none"]).gpu is None
    assert parser.parse_args(["deploy", "modal", "minilm", "--gpu", "l4"]).gpu == "L4"


def test_an_unknown_gpu_is_refused_by_both(capsys):
    for argv in (["build", "modal", "minilm", "--gpu", "V100"], ["deploy", "modal", "minilm", "--gpu", "V100"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(argv)
        assert "expected one of T4, L4, A10G, A100, H100 or none, found 'V100'" in capsys.readouterr().err

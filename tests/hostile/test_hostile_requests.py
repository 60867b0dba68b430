"""Hostile and malformed requests (issue 19, item 6): a 5000-digit integer is a 400, not a 500; the local
function URL answers its own refusals (too large, bad Content-Length, bad chunked coding, malformed request line,
oversized headers, unknown method) in OpenAI's error shape, and HEAD on a GET route answers as GET without a
body. After each, the server still answers."""

from __future__ import annotations

import http.client
import json
import socket

import pytest
from fake_llm import FakeModel
from hostile_child import call_url as call

from votive.emulators.function_url import FunctionUrlServer
from votive.handlers.generation import make_handler


def test_a_5000_digit_integer_is_a_400():
    handler = make_handler(FakeModel(n_ctx=64), default_max_tokens=4)
    body = b'{"prompt": "hi", "max_tokens": ' + b"9" * 5000 + b"}"
    status, answer = call(handler, "/v1/completions", body)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_json" and "too long" in answer["error"]["message"]
    assert call(handler, "/v1/completions", {"prompt": "hi", "max_tokens": 1})[0] == 200


def test_head_on_a_get_route_answers_as_get_without_a_body():
    handler = make_handler(FakeModel(n_ctx=64), default_max_tokens=4)
    status, _ = call(handler, "/health", method="HEAD")
    assert status == 200
    status, answer = call(handler, "/v1/completions", method="DELETE")
    assert status == 405 and "use POST" in answer["error"]["message"]


@pytest.fixture(scope="module")
def server():
    with FunctionUrlServer(make_handler(FakeModel(n_ctx=64), default_max_tokens=4), port=0) as front:
        yield front


def _raw(server, data: bytes) -> tuple[int, dict, bytes]:
    """Send raw bytes, read until the server closes -> (status, headers, body)."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server may answer and close before reading everything
            pass
        received = b""
        while piece := s.recv(1 << 16):
            received += piece
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, body


def _assert_openai_error(status: int, headers: dict, body: bytes, expected: int) -> dict:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"] and error["code"]
    assert error["type"] == ("invalid_request_error" if expected < 500 else "server_error")
    return error


def _still_serving(server) -> None:
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    connection.request("GET", "/health")
    assert connection.getresponse().status == 200
    connection.close()


BAD = {
    "body-over-6mb": (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n", 413),
    "content-length-not-a-number": (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
    "negative-content-length": (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    "bad-chunked": (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n", 400),
    "request-line-garbage": (b"GARBAGE\r\n\r\n", 400),
    "request-line-bad-version": (b"GET /health HTTP/x.y\r\n\r\n", 400),
    "request-line-http-9": (b"GET /health HTTP/9.0\r\n\r\n", 505),
    "request-line-too-long": (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", 414),
    "header-line-too-long": (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
    "too-many-headers": (b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n",
                         431),
    "unknown-method": (b"BREW /health HTTP/1.1\r\nHost: x\r\n\r\n", 501),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_fronts_own_refusals_are_openai_shaped(server, case):
    data, expected = BAD[case]
    _assert_openai_error(*_raw(server, data), expected)
    _still_serving(server)


def test_chunked_body_over_6mb_is_413_openai_shaped(server):
    piece = b"x" * (1 << 20)
    data = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + (b"100000\r\n" + piece + b"\r\n") * 7 + b"0\r\n\r\n")
    status, headers, body = _raw(server, data)
    error = _assert_openai_error(status, headers, body, 413)
    assert "6291456" in error["message"] and json.loads(body)["Message"] == error["message"]  # AWS's key too
    _still_serving(server)


def test_head_through_the_front_has_gets_headers_and_no_body(server):
    connection = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    connection.request("GET", "/health")
    get = connection.getresponse()
    get_body = get.read()
    connection.request("HEAD", "/health")
    head = connection.getresponse()
    assert head.status == 200 and head.read() == b""
    assert head.getheader("content-length") == str(len(get_body)) and head.getheader("content-type") == \
        get.getheader("content-type")
    connection.close()

"""The local function URL: payload-format-2.0 events, response mapping, environments, limits.

Handlers come from tests/fake_handlers.py and run in this process (InProcessFunction); the Runtime API
emulator, which runs them under awslambdaric, has its own tests in test_runtime_api.py.
"""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
import urllib.error
import urllib.request

import fake_handlers
import pytest

from votive.emulators.function_url import DIRECT_INVOKE_PATH, FunctionUrlServer
from votive.emulators.in_process import InProcessFunction
from votive.errors import EmulatorError
from votive.protocol.context import PAYLOAD_LIMIT_BYTES, FunctionConfig, LambdaContext
from votive.protocol.handler_loading import HandlerInitError, load_handler
from votive.protocol.payload_v2 import (
    HttpRequest,
    MalformedResponse,
    http_response,
    is_text_body,
    request_event,
    request_time,
)

# 2026-11-25 02:38:00 UTC
FIXED_NOW = 1795574280.0


def _event(method="GET", target="/", headers=(), body=b""):
    request = HttpRequest(method, target, list(headers), body, source_ip="10.1.2.3", server_port=9000)
    return request_event(request, request_id="req-1", now=FIXED_NOW)


# --- request -> event ------------------------------------------------------------------------------------


def test_get_event_has_the_function_url_shape():
    event = _event(headers=[("Host", "127.0.0.1:9000"), ("User-Agent", "curl/8")])
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/" and event["rawQueryString"] == ""
    assert "queryStringParameters" not in event and "cookies" not in event and "body" not in event
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["accountId"] == "anonymous"
    assert context["domainName"] == "127.0.0.1:9000"
    assert context["apiId"] == context["domainPrefix"]
    assert context["http"] == {
        "method": "GET",
        "path": "/",
        "protocol": "HTTP/1.1",
        "sourceIp": "10.1.2.3",
        "userAgent": "curl/8",
    }
    assert context["requestId"] == "req-1"
    assert context["routeKey"] == "$default" and context["stage"] == "$default"
    assert context["time"] == "25/Nov/2026:02:38:00 +0000"
    assert context["timeEpoch"] == 1795574280000
    assert event["headers"]["x-forwarded-for"] == "10.1.2.3"
    assert event["headers"]["x-forwarded-port"] == "9000"
    assert event["headers"]["x-amzn-trace-id"].startswith("Root=1-")


def test_query_repeated_keys_are_comma_joined_and_decoded():
    event = _event(target="/v1/embeddings?model=a&x=1&x=2&empty=&q=hello%20world")
    assert event["rawPath"] == "/v1/embeddings"
    assert event["rawQueryString"] == "model=a&x=1&x=2&empty=&q=hello%20world"
    assert event["queryStringParameters"] == {"model": "a", "x": "1,2", "empty": "", "q": "hello world"}


def test_headers_are_lowercased_and_repeats_comma_joined_cookies_moved_out():
    event = _event(
        headers=[("X-Tag", "a"), ("x-tag", "b"), ("Cookie", "s=1; theme=dark"), ("Cookie", "id=7"), ("Accept", "*/*")]
    )
    assert event["headers"]["x-tag"] == "a,b"
    assert event["headers"]["accept"] == "*/*"
    assert "cookie" not in event["headers"]
    assert event["cookies"] == ["s=1", "theme=dark", "id=7"]


@pytest.mark.parametrize(
    "content_type, encoding, text",
    [
        ("application/json", None, True),
        ("application/json; charset=utf-8", None, True),
        ("text/plain", None, True),
        ("application/xml", None, True),
        ("application/javascript", None, True),
        ("application/octet-stream", None, False),
        ("application/x-www-form-urlencoded", None, False),
        ("image/png", None, False),
        (None, None, False),
        ("application/json", "gzip", False),
    ],
)
def test_text_or_binary_is_decided_by_content_type_and_encoding(content_type, encoding, text):
    assert is_text_body(content_type, encoding) is text


def test_text_body_stays_text():
    event = _event("POST", headers=[("Content-Type", "application/json")], body=b'{"input": "h\xc3\xa9"}')
    assert event["body"] == '{"input": "hé"}'
    assert event["isBase64Encoded"] is False


def test_binary_body_is_base64():
    raw = bytes(range(256))
    event = _event("POST", headers=[("Content-Type", "application/octet-stream")], body=raw)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw


def test_text_type_with_bytes_that_are_not_utf8_is_base64_not_mangled():
    event = _event("POST", headers=[("Content-Type", "text/plain")], body=b"\xff\xfe")
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe"


def test_request_time_is_english_whatever_the_month():
    assert request_time(0) == "01/Jan/1970:00:00:00 +0000"
    assert request_time(1795574280.9) == "25/Nov/2026:02:38:00 +0000"


# --- payload -> HTTP response ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"embedding": [0.5, 1.0]}, [1, 2], "hello", 42, None, {"statuscode": 201}])
def test_any_value_without_statusCode_is_200_json_of_that_value(value):
    payload = json.dumps(value).encode()
    response = http_response(payload)
    assert response.status == 200
    assert ("content-type", "application/json") in response.headers
    assert response.body == payload


def test_structured_response_is_honoured_with_cookies_as_set_cookie():
    payload = {
        "statusCode": 201,
        "headers": {"Content-Type": "text/plain", "X-Custom": "v", "X-Count": 3},
        "cookies": ["a=1; Max-Age=60", "b=2"],
        "body": "created",
    }
    response = http_response(json.dumps(payload).encode())
    assert response.status == 201
    assert response.body == b"created"
    assert ("Content-Type", "text/plain") in response.headers
    assert ("X-Count", "3") in response.headers
    assert [v for k, v in response.headers if k == "set-cookie"] == ["a=1; Max-Age=60", "b=2"]


def test_base64_response_body_is_decoded_and_content_type_defaults_to_json():
    raw = b"\x00\x01binary\xff"
    payload = {"statusCode": 200, "body": base64.b64encode(raw).decode(), "isBase64Encoded": True}
    response = http_response(json.dumps(payload).encode())
    assert response.body == raw
    assert ("content-type", "application/json") in response.headers


@pytest.mark.parametrize(
    "payload, message",
    [
        ({"statusCode": "abc"}, "statusCode must be an integer"),
        ({"statusCode": 700}, "statusCode must be an integer"),
        ({"statusCode": 200, "headers": ["x"]}, "headers must be an object"),
        ({"statusCode": 200, "headers": {"x": "a\r\nInjected: 1"}}, "line break"),
        ({"statusCode": 200, "cookies": "a=1"}, "cookies must be a list"),
        ({"statusCode": 200, "body": "%%%", "isBase64Encoded": True}, "not base64"),
    ],
)
def test_malformed_structured_responses_are_rejected(payload, message):
    with pytest.raises(MalformedResponse, match=message):
        http_response(json.dumps(payload).encode())


# --- context and handler loading ---------------------------------------------------------------------------


def test_context_fields_and_remaining_time_follow_the_clock():
    now = [1000.0]
    config = FunctionConfig(name="embed", memory_mb=2048, timeout_s=3)
    context = LambdaContext("id-1", deadline_ms=1003_000, config=config, log_stream_name="s", clock=lambda: now[0])
    assert context.function_name == "embed"
    assert context.function_version == "$LATEST"
    assert context.invoked_function_arn == "arn:aws:lambda:xx-local-1:000000000000:function:embed"
    assert context.memory_limit_in_mb == "2048"
    assert context.log_group_name == "/aws/lambda/embed"
    assert context.aws_request_id == "id-1"
    assert context.get_remaining_time_in_millis() == 3000
    now[0] = 1002.5
    assert context.get_remaining_time_in_millis() == 500
    now[0] = 1010.0
    assert context.get_remaining_time_in_millis() == 0


@pytest.mark.parametrize(
    "name, error_type, message",
    [
        ("nodot", "Runtime.MalformedHandlerName", "Bad handler 'nodot'"),
        ("no_such_module_xyz.handler", "Runtime.ImportModuleError", "Unable to import module 'no_such_module_xyz'"),
        ("fake_handlers.missing", "Runtime.HandlerNotFound", "Handler 'missing' missing on module 'fake_handlers'"),
        ("fake_handlers_broken.handler", "RuntimeError", "model weights not found at /nowhere"),
        ("fake_handlers_lazy.handler", "RuntimeError", "lazy model load failed"),
        ("fake_handlers_lazy.other", "Runtime.HandlerNotFound", "Handler 'other' missing"),
    ],
)
def test_handler_loading_reports_lambda_init_errors(name, error_type, message):
    with pytest.raises(HandlerInitError) as info:
        load_handler(name)
    assert info.value.error["errorType"] == error_type
    assert message in info.value.error["errorMessage"]


# --- over HTTP ---------------------------------------------------------------------------------------------


@pytest.fixture
def serve():
    """serve(handler, **options) -> a started FunctionUrlServer, stopped after the test."""
    servers = []

    def start(handler, **options):
        server = FunctionUrlServer(handler, port=0, **options)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _call(url, path="/", data=None, headers=None, method=None):
    """(status, headers, body) for one request; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url + path, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers, exc.read()


def test_get_with_query_cookies_and_repeated_headers_reaches_the_handler(serve):
    server = serve(fake_handlers.echo)
    host, port = server.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("GET", "/items?tag=a&tag=b")
    for name, value in [("X-Tag", "one"), ("X-Tag", "two"), ("Cookie", "s=1; t=2"), ("User-Agent", "probe")]:
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("content-type") == "application/json"
    reply = json.loads(response.read())
    connection.close()
    event = reply["event"]
    assert event["rawPath"] == "/items" and event["queryStringParameters"] == {"tag": "a,b"}
    assert event["headers"]["x-tag"] == "one,two"
    assert event["cookies"] == ["s=1", "t=2"]
    assert event["requestContext"]["http"]["method"] == "GET"
    assert event["requestContext"]["http"]["userAgent"] == "probe"
    assert reply["context"]["aws_request_id"] == event["requestContext"]["requestId"]
    assert response.getheader("x-amzn-requestid") == event["requestContext"]["requestId"]


def test_post_binary_body_arrives_base64_and_json_stays_text(serve):
    server = serve(fake_handlers.echo)
    raw = bytes(range(256)) * 4
    status, _, body = _call(server.url, "/up", raw, {"Content-Type": "application/octet-stream"})
    event = json.loads(body)["event"]
    assert status == 200 and event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == raw
    _, _, body = _call(server.url, "/up", b'{"a": 1}', {"Content-Type": "application/json"})
    event = json.loads(body)["event"]
    assert event["body"] == '{"a": 1}' and event["isBase64Encoded"] is False


def test_structured_response_cookies_and_base64_body_over_http(serve):
    server = serve(fake_handlers.mirror)
    wanted = {
        "statusCode": 201,
        "headers": {"content-type": "image/png", "x-extra": "yes"},
        "cookies": ["a=1; Path=/", "b=2"],
        "body": base64.b64encode(b"\x89PNG\x00\xff").decode(),
        "isBase64Encoded": True,
    }
    status, headers, body = _call(server.url, "/", json.dumps(wanted).encode(), {"Content-Type": "application/json"})
    assert status == 201
    assert body == b"\x89PNG\x00\xff"
    assert headers["content-type"] == "image/png" and headers["x-extra"] == "yes"
    assert headers.get_all("set-cookie") == ["a=1; Path=/", "b=2"]


def test_bare_string_result_is_json_text(serve):
    server = serve(fake_handlers.mirror)
    status, headers, body = _call(server.url, "/", b'"hello"', {"Content-Type": "application/json"})
    assert (status, headers["content-type"], body) == (200, "application/json", b'"hello"')


def test_handler_exception_is_502_and_the_server_keeps_serving(serve, caplog):
    def sometimes(event, context):
        if event["rawPath"] == "/fail":
            raise ValueError("bad input on purpose")
        return {"ok": True}

    server = serve(sometimes)
    status, headers, body = _call(server.url, "/fail")
    assert status == 502
    assert headers["content-type"] == "application/json"
    assert json.loads(body) == {"Message": "Internal Server Error"}
    assert "ValueError" in caplog.text and "bad input on purpose" in caplog.text
    assert _call(server.url, "/fine")[:1] == (200,)


def test_malformed_structured_response_is_502(serve):
    server = serve(fake_handlers.mirror)
    status, _, body = _call(server.url, "/", b'{"statusCode": "soon"}', {"Content-Type": "application/json"})
    assert status == 502 and json.loads(body) == {"Message": "Internal Server Error"}


def test_unserializable_result_fails_like_lambda_marshalling():
    function = InProcessFunction(lambda event, context: {"vector": {1, 2}})
    function.start()
    try:
        outcome = function.invoke({})
    finally:
        function.stop()
    assert outcome.error["errorType"] == "Runtime.MarshalError"
    assert "not JSON serializable" in outcome.error["errorMessage"]


def test_body_over_6_mb_is_413_before_the_handler_runs(serve):
    calls = []
    server = serve(lambda event, context: calls.append(1) or {"ok": True})
    big = b"x" * (PAYLOAD_LIMIT_BYTES + 1)
    status, headers, body = _call(server.url, "/", big, {"Content-Type": "text/plain"})
    assert status == 413
    assert headers["content-type"] == "application/json"
    assert "6291456" in json.loads(body)["Message"]
    assert calls == []
    assert _call(server.url, "/")[0] == 200 and calls == [1]


def test_direct_invocation_like_the_runtime_interface_emulator(serve):
    server = serve(fake_handlers.echo)
    status, _, body = _call(server.url, DIRECT_INVOKE_PATH, b'{"raw": "event"}')
    assert status == 200 and json.loads(body)["event"] == {"raw": "event"}

    failing = serve(fake_handlers.boom)
    status, headers, body = _call(failing.url, DIRECT_INVOKE_PATH, b"{}")
    assert status == 200 and headers["x-amz-function-error"] == "Unhandled"
    error = json.loads(body)
    assert error["errorType"] == "ValueError" and error["errorMessage"] == "boom: direct"
    assert any("fake_handlers.py" in frame for frame in error["stackTrace"])


def test_context_deadline_uses_the_injected_clock(serve):
    server = serve(fake_handlers.echo, clock=lambda: FIXED_NOW, config=FunctionConfig(timeout_s=7))
    reply = json.loads(_call(server.url, "/")[2])
    assert reply["context"]["remaining_ms"] == 7000
    assert reply["event"]["requestContext"]["timeEpoch"] == int(FIXED_NOW * 1000)


def test_one_log_line_per_request(serve, caplog):
    caplog.set_level("INFO", logger="votive.serve")
    server = serve(fake_handlers.echo)
    _call(server.url, "/logged?x=1")
    for _ in range(100):  # the line is written just after the answer is sent
        lines = [r.getMessage() for r in caplog.records if r.name == "votive.serve"]
        if lines:
            break
        time.sleep(0.01)
    assert len(lines) == 1
    method, path, status, ms, unit = lines[0].split()
    assert (method, path, status, unit) == ("GET", "/logged", "200", "ms") and float(ms) >= 0


@pytest.mark.parametrize("environments", [2, 4])
def test_fifty_concurrent_clients_get_their_own_answers(serve, environments):
    fake_handlers.reset_overlap()
    server = serve(fake_handlers.record_overlap, environments=environments)
    results: dict[int, tuple] = {}

    def client(n: int) -> None:
        try:
            status, _, body = _call(server.url, f"/n/{n}", json.dumps(n).encode(), {"Content-Type": "application/json"})
            results[n] = (status, json.loads(body))
        except Exception as exc:  # recorded, so a failure shows which client and why
            results[n] = (None, repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(results) == list(range(50))
    assert all(status == 200 and reply["n"] == n for n, (status, reply) in results.items()), results
    streams = {reply["stream"] for _, reply in results.values()}
    assert 1 <= len(streams) <= environments
    assert fake_handlers.overlaps == []  # no environment ever ran two invocations at once
    assert fake_handlers.peak_total[0] <= environments


def test_no_free_environment_within_the_queue_timeout_is_429(serve):
    entered, release = threading.Event(), threading.Event()

    def blocking(event, context):
        entered.set()
        release.wait(10)
        return {"ok": True}

    server = serve(blocking, environments=1, queue_timeout_s=0.1)
    first = []
    thread = threading.Thread(target=lambda: first.append(_call(server.url, "/first")))
    thread.start()
    assert entered.wait(10)  # the only environment is busy from here on
    status, _, body = _call(server.url, "/second")
    release.set()
    thread.join(timeout=10)
    assert (status, json.loads(body)) == (429, {"Message": "Rate Exceeded."})
    assert first[0][0] == 200


def test_handler_past_the_function_timeout_fails_with_sandbox_timedout():
    function = InProcessFunction(fake_handlers.slow, config=FunctionConfig(timeout_s=0.2))
    function.start()
    try:
        started = time.monotonic()
        outcome = function.invoke({"sleep": 0.8})
        elapsed = time.monotonic() - started
    finally:
        function.stop()
    assert outcome.error["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 0.20 seconds" in outcome.error["errorMessage"]
    assert elapsed < 0.75  # answered at the deadline, not when the handler finally returned


def test_init_failure_raises_and_frees_the_port():
    server = FunctionUrlServer("fake_handlers_broken.handler", port=0)
    with pytest.raises(EmulatorError, match="function init failed: RuntimeError: model weights not found") as info:
        server.start()
    assert info.value.lambda_error["errorType"] == "RuntimeError"


def test_port_in_use_is_a_clear_error(serve):
    first = serve(fake_handlers.echo)
    port = int(first.url.rsplit(":", 1)[1])
    with pytest.raises(EmulatorError, match=f"cannot listen on 127.0.0.1:{port}"):
        FunctionUrlServer(fake_handlers.echo, port=port).start()

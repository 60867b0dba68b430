"""Event adapters: function URL (payload 2.0) and direct-invoke events into Requests, routing, payload 2.0
responses, and how refusals and failures come out (HTTP error bodies, one log line, VotiveFault)."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from votive.errors import VotiveFault
from votive.handlers import events
from votive.handlers.events import LAMBDA_PAYLOAD_LIMIT, Request, Response
from votive.handlers.http_errors import HttpError


def url_event(method="GET", path="/health", *, query="", headers=None, body=None, b64=False) -> dict:
    """A function URL event as Lambda sends it (payload format 2.0), trimmed to the fields that matter here."""
    event = {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": headers or {},
        "requestContext": {"http": {"method": method, "path": path, "protocol": "HTTP/1.1"}},
        "isBase64Encoded": b64,
    }
    if body is not None:
        event["body"] = body
    return event


def echo(request: Request):
    return {"method": request.method, "path": request.path, "query": request.query, "json": request.json()}


def fail(request: Request):
    raise ZeroDivisionError("the model divided by zero")


ROUTES = {
    "/echo": {"POST": echo, "PUT": echo},
    "/health": {"GET": lambda request: {"status": "ok"}},
    "/accepted": {"POST": lambda request: Response(202, {"queued": True}, {"x-votive": "1"})},
    "/fail": {"POST": fail},
}


def serve(event, **kwargs):
    return events.serve(event, ROUTES, default_path="/echo", **kwargs)


def error_of(response: dict) -> dict:
    assert response["headers"]["content-type"] == "application/json"
    assert response["isBase64Encoded"] is False
    body = json.loads(response["body"])
    assert list(body) == ["error"] and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


# ------------------------------------------------------------------------------------------------ URL events
def test_get_with_query_string_and_headers():
    event = url_event("GET", "/health/", query="a=1&b=&a=2&c=x%20y", headers={"X-Mixed": "v", "accept": "*/*"})
    request = events.parse_url_event(event)
    assert (request.method, request.path) == ("GET", "/health")  # trailing slash dropped
    assert request.query == {"a": "1,2", "b": "", "c": "x y"}
    assert request.headers == {"x-mixed": "v", "accept": "*/*"}
    assert request.body == b"" and request.from_url


def test_post_plain_and_base64_bodies_read_the_same():
    payload = {"text": "héllo"}
    plain = events.parse_url_event(url_event("post", "/echo", body=json.dumps(payload)))
    encoded = base64.b64encode(json.dumps(payload).encode()).decode()
    b64 = events.parse_url_event(url_event("POST", "/echo", body=encoded, b64=True))
    assert plain.method == "POST"
    assert plain.json() == b64.json() == payload


def test_url_event_gets_a_payload_v2_response():
    response = serve(url_event("POST", "/echo", query="k=v", body='{"x": [1, 2]}'))
    assert response == {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": '{"method":"POST","path":"/echo","query":{"k":"v"},"json":{"x":[1,2]}}',
        "isBase64Encoded": False,
    }


def test_route_may_answer_a_response_with_status_and_headers():
    response = serve(url_event("POST", "/accepted"))
    assert response["statusCode"] == 202
    assert response["headers"] == {"content-type": "application/json", "x-votive": "1"}
    assert json.loads(response["body"]) == {"queued": True}


def test_invalid_base64_body_is_400():
    error = error_of(response := serve(url_event("POST", "/echo", body="not base64!", b64=True)))
    assert response["statusCode"] == 400
    assert error["code"] == "invalid_base64" and "isBase64Encoded" in error["message"]


def test_body_over_lambda_limit_is_413():
    body = '{"x": "' + "a" * LAMBDA_PAYLOAD_LIMIT + '"}'
    response = serve(url_event("POST", "/echo", body=body))
    error = error_of(response)
    assert response["statusCode"] == 413 and error["code"] == "body_too_large"
    assert f"{len(body)} bytes" in error["message"] and str(LAMBDA_PAYLOAD_LIMIT) in error["message"]


def test_malformed_url_event_is_400():
    event = url_event("POST", "/echo")
    del event["requestContext"]["http"]["method"]
    response = serve(event)
    assert response["statusCode"] == 400
    assert "requestContext.http.method" in error_of(response)["message"]


@pytest.mark.parametrize("event, expected", [
    ("hello", "the event is a JSON string"),
    ([{"input": "x"}], "the event is a JSON array"),
    ({"resource": "/", "httpMethod": "GET", "requestContext": {}}, "payload format version '1.0'"),
    ({"version": "1.0", "requestContext": {}}, "payload format version '1.0'"),
])
def test_unknown_event_kinds_raise_unsupported_event(event, expected):
    with pytest.raises(VotiveFault) as info:
        serve(event)
    assert info.value.code == VotiveFault.UNSUPPORTED_EVENT == "Votive.UnsupportedEvent"
    assert expected in str(info.value)


# ----------------------------------------------------------------------------------------- request bodies
NOT_UTF8 = base64.b64encode(b'{"a": "\xff"}').decode()  # bytes a str body cannot carry: sent as base64


@pytest.mark.parametrize("body, b64, headers, expected", [
    (None, False, {}, "the request body is empty; expected a JSON object"),
    ("{oops", False, {}, "the request body is not valid JSON (Expecting property name enclosed in double quotes "
                         "at line 1 column 2)"),
    ("input=x", False, {"content-type": "application/x-www-form-urlencoded"},
     "; it was sent as 'application/x-www-form-urlencoded'"),
    ("[" * 100_000 + "]" * 100_000, False, {}, "nested too deeply"),
    (NOT_UTF8, True, {}, "the request body is not UTF-8 text (invalid start byte at byte 7)"),
])
def test_unreadable_json_bodies_are_400(body, b64, headers, expected):
    response = serve(url_event("POST", "/echo", headers=headers, body=body, b64=b64))
    assert response["statusCode"] == 400
    error = error_of(response)
    assert error["code"] == "invalid_json" and expected in error["message"]


def test_json_body_without_content_type_is_accepted():
    response = serve(url_event("POST", "/echo", body='{"a": 1}'))  # no headers at all
    assert response["statusCode"] == 200 and json.loads(response["body"])["json"] == {"a": 1}


def test_json_body_with_odd_content_type_is_accepted():
    response = serve(url_event("POST", "/echo", headers={"content-type": "text/plain"}, body='{"a": 1}'))
    assert response["statusCode"] == 200


# ------------------------------------------------------------------------------------------------- routing
def test_unknown_path_is_404_naming_the_routes():
    response = serve(url_event("GET", "/v2/nothing"))
    assert response["statusCode"] == 404
    error = error_of(response)
    assert error == {"message": "no route GET /v2/nothing; this function serves /accepted, /echo, /fail, /health",
                     "type": "invalid_request_error", "param": None, "code": "not_found"}


def test_wrong_method_is_405_with_allow():
    response = serve(url_event("GET", "/echo"))
    assert response["statusCode"] == 405
    assert response["headers"]["allow"] == "POST, PUT"
    assert error_of(response)["message"] == "GET is not allowed on /echo; use POST, PUT"


# ----------------------------------------------------------------------------------------- direct invokes
def test_direct_bare_body_goes_to_default_path():
    assert serve({"input": "hi"}) == {"method": "POST", "path": "/echo", "query": {}, "json": {"input": "hi"}}


def test_direct_routed_request_with_query_and_text_body():
    assert serve({"path": "/health"}) == {"status": "ok"}  # no body: GET
    out = serve({"path": "/echo?k=v", "method": "put", "body": '{"a": 1}', "headers": {"X-A": "b"}})
    assert out == {"method": "PUT", "path": "/echo", "query": {"k": "v"}, "json": {"a": 1}}
    out = serve({"path": "/echo", "body": {"already": "parsed"}})  # a body: POST
    assert out["json"] == {"already": "parsed"}


def test_direct_refusal_raises_bad_request_fault():
    with pytest.raises(VotiveFault) as info:
        serve({"path": "/health", "method": "DELETE"})
    assert info.value.code == "Votive.BadRequest"
    assert str(info.value) == "Votive.BadRequest: DELETE /health answered 405: DELETE is not allowed on /health; use GET"


def test_direct_routed_request_with_bad_types_is_refused():
    with pytest.raises(VotiveFault, match="'path' and 'method' as strings"):
        serve({"path": 7})


# ----------------------------------------------------------------------------------------- errors and logs
def test_client_error_logs_exactly_one_line(caplog):
    with caplog.at_level(logging.DEBUG, logger="votive"):
        serve(url_event("POST", "/echo", body="{"))
    assert len(caplog.records) == 1
    record = caplog.records[0]
    assert record.name == "votive" and record.levelno == logging.WARNING
    assert "\n" not in record.getMessage() and record.getMessage().startswith("400 POST /echo: ")


def test_route_exception_is_500_without_internals_and_the_log_has_the_trace(caplog):
    with caplog.at_level(logging.DEBUG, logger="votive"):
        response = serve(url_event("POST", "/fail", body="{}"))
    assert response["statusCode"] == 500
    error = error_of(response)
    assert error["type"] == "server_error" and error["code"] == "model_error"
    assert "Traceback" not in response["body"] and "divided" not in response["body"]
    assert "ZeroDivisionError" not in response["body"]
    [record] = caplog.records
    logged = record.getMessage()
    assert record.levelno == logging.ERROR and "ZeroDivisionError: the model divided by zero" in logged
    # the trace starts in the route, not in votive's plumbing
    trace_lines = [line for line in logged.splitlines() if line.strip().startswith("File ")]
    assert trace_lines and "test_handler_events.py" in trace_lines[0] and "in fail" in trace_lines[0]
    assert not any("votive/handlers" in line for line in trace_lines)
    # and the function keeps serving
    assert serve(url_event("GET", "/health"))["statusCode"] == 200


def test_direct_route_exception_raises_model_error_fault_with_trimmed_trace():
    with pytest.raises(VotiveFault) as info:
        serve({"path": "/fail", "body": {}})
    fault = info.value
    assert fault.code == "Votive.ModelError"
    assert fault.message == "ZeroDivisionError: the model divided by zero"
    assert "in fail" in fault.trace[0] and len(fault.trace) == 1


def test_fault_inside_the_plumbing_keeps_its_frames():
    try:
        events.dispatch(Request("GET", "/x"), None)  # routes=None: the plumbing itself breaks
    except AttributeError as e:
        fault = VotiveFault.from_exception(VotiveFault.MODEL_ERROR, e)
    assert fault.trace and all("votive/handlers/events.py" in line or "test_handler_events" in line
                               for line in fault.trace)
    assert any("in dispatch" in line for line in fault.trace)


def test_nan_in_a_url_response_is_500_not_invalid_json():
    routes = {"/nan": {"GET": lambda request: {"x": float("nan")}}}
    response = events.serve(url_event("GET", "/nan"), routes, default_path="/nan")
    assert response["statusCode"] == 500 and error_of(response)["type"] == "server_error"


def test_response_over_the_limit_is_refused_with_the_hint():
    routes = {"/big": {"GET": lambda request: {"x": "y" * 5000}}}
    response = events.serve(url_event("GET", "/big"), routes, default_path="/big", max_response_bytes=4096,
                            oversize_hint="ask for less")
    assert response["statusCode"] == 400
    error = error_of(response)
    assert error["code"] == "response_too_large" and error["message"].endswith("; ask for less")
    fits = events.serve(url_event("GET", "/big"), routes, default_path="/big", max_response_bytes=6000)
    assert fits["statusCode"] == 200


def test_http_error_body_is_openai_shaped():
    assert HttpError(400, "bad", param="input", code="x").body() == {
        "error": {"message": "bad", "type": "invalid_request_error", "param": "input", "code": "x"}}
    assert HttpError(500, "ours").body()["error"]["type"] == "server_error"

"""The generation Lambda handler: OpenAI's completions and chat completions on a fake decoder (answers, streams,
every bad input, failures), then on the real SmolLM2 with a few tokens.

Streaming through the emulators and the runtime loop is in test_streaming.py.
"""

from __future__ import annotations

import json
import logging

import pytest
from fake_llm import FakeModel

from votive.errors import ModelSourceError, VotiveFault
from votive.handlers import generation
from votive.handlers.generation import Settings, load_handler, make_handler
from votive.protocol.payload_v2 import HttpRequest, request_event
from votive.protocol.streaming import StreamingResponse

NOW = 1795574280.0


def url_event(path: str, body=None, method: str = "POST") -> dict:
    """The event a function URL sends for this request; a dict or list body is sent as JSON."""
    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    request = HttpRequest(method, path, [("Content-Type", "application/json")], data)
    return request_event(request, request_id="req-1", now=NOW)


def call(handler, path: str, body=None, method: str = "POST") -> tuple[int, dict]:
    """A whole (not streamed) answer -> (status, JSON body)."""
    answer = handler(url_event(path, body, method), None)
    assert isinstance(answer, dict), f"expected a payload 2.0 answer, got {type(answer).__name__}"
    assert answer["headers"]["content-type"] == "application/json"
    return answer["statusCode"], json.loads(answer["body"])


def stream(handler, path: str, body: dict) -> list:
    """A streamed answer -> the data of each Server-Sent Event, [DONE] as the string."""
    answer = handler(url_event(path, {**body, "stream": True}), None)
    assert isinstance(answer, StreamingResponse), answer
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    return parse_sse(b"".join(answer.body))


def parse_sse(raw: bytes) -> list:
    events = raw.decode("utf-8").split("\n\n")
    assert events[-1] == "", "the stream must end with a blank line"
    out = []
    for event in events[:-1]:
        assert event.startswith("data: "), event
        data = event[len("data: "):]
        out.append(data if data == "[DONE]" else json.loads(data))
    return out


@pytest.fixture
def model():
    return FakeModel(n_ctx=64)


@pytest.fixture
def handler(model):
    return make_handler(model, default_max_tokens=8, clock=lambda: NOW)


CHAT = {"messages": [{"role": "user", "content": "Say hello"}]}


# --- answers -------------------------------------------------------------------------------------------------


def test_completion_has_openai_shape_and_counts(handler, model):
    status, body = call(handler, "/v1/completions", {"model": "x", "prompt": "one two three", "max_tokens": 3})
    assert status == 200
    assert body["id"].startswith("cmpl-") and len(body["id"]) > 10
    assert body["object"] == "text_completion" and body["created"] == int(NOW) and body["model"] == "fake/llm"
    assert body["choices"] == [{"index": 0, "text": "Hello, world", "logprobs": None, "finish_reason": "length"}]
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7}
    assert model.calls[0]["prompt"] == [1, 5, 5, 7] and model.calls[0]["max_tokens"] == 3


def test_chat_renders_the_template_and_answers_a_message(handler, model):
    model.eos_after = 2
    status, body = call(handler, "/v1/chat/completions", {
        "messages": [{"role": "developer", "content": "Be brief"},
                     {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b c"}]}]})
    assert status == 200
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello,"},
                                "logprobs": None, "finish_reason": "stop"}]
    rendered = model.tokenizer.encode_chat([{"role": "system", "content": "Be brief"},
                                            {"role": "user", "content": "a\nb c"}])
    assert model.calls[0]["prompt"] == rendered  # developer read as system, text parts joined with a newline
    assert body["usage"]["prompt_tokens"] == len(rendered) and body["usage"]["completion_tokens"] == 2


def test_sampling_stop_and_defaults_reach_the_model(handler, model):
    call(handler, "/v1/completions", {"prompt": "hi", "temperature": 0, "top_p": 0.9, "top_k": 40, "min_p": 0.05,
                                      "repetition_penalty": 1.1, "seed": 7, "stop": ["\n", ""]})
    call(handler, "/v1/chat/completions", {**CHAT, "stop": "!", "max_completion_tokens": 5})
    first, second = model.calls
    assert first == {"prompt": [1, 4], "max_tokens": 8, "stop": ["\n"], "temperature": 0, "top_p": 0.9, "top_k": 40,
                     "min_p": 0.05, "repetition_penalty": 1.1, "seed": 7}
    assert second["temperature"] == 1.0  # OpenAI's default, not the decoder's greedy one
    assert second["stop"] == ["!"] and second["max_tokens"] == 5


def test_stop_string_ends_with_stop(handler):
    status, body = call(handler, "/v1/completions", {"prompt": "hi", "stop": [" world"], "max_tokens": 10})
    assert body["choices"][0]["text"] == "Hello," and body["choices"][0]["finish_reason"] == "stop"


def test_prompt_as_a_list_of_one_string(handler, model):
    assert call(handler, "/v1/completions", {"prompt": ["a b"], "max_tokens": 1})[0] == 200
    assert model.calls[0]["prompt"] == [1, 3, 3]


def test_streamed_completion_is_one_event_per_token_then_finish_and_done(handler):
    events = stream(handler, "/v1/completions", {"prompt": "hi", "max_tokens": 3})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert [c["choices"][0]["text"] for c in chunks] == ["Hello", ",", " world", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, None, "length"]
    assert {c["object"] for c in chunks} == {"text_completion"} and len({c["id"] for c in chunks}) == 1
    assert all("usage" not in c for c in chunks)


def test_streamed_chat_starts_with_the_role_and_can_report_usage(handler):
    events = stream(handler, "/v1/chat/completions", {**CHAT, "max_tokens": 2,
                                                      "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    first, *middle, finish, usage = events[:-1]
    assert first["object"] == "chat.completion.chunk"
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in middle] == [{"content": "Hello"}, {"content": ","}]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert all(c["usage"] is None for c in [first, *middle, finish])
    assert usage["choices"] == [] and usage["usage"] == {"prompt_tokens": 5, "completion_tokens": 2,
                                                         "total_tokens": 7}


def test_closing_a_stream_closes_the_generation(handler, model):
    answer = handler(url_event("/v1/completions", {"prompt": "hi", "stream": True, "max_tokens": 50}), None)
    body = iter(answer.body)
    next(body)
    answer.close()
    assert model.generations[0].closed and model.generations[0].completion_tokens == 1


def test_health_and_models(handler):
    status, health = call(handler, "/health", method="GET")
    assert status == 200
    assert health["model"] == "fake/llm" and health["kind"] == "generation" and health["n_ctx"] == 64
    assert health["backend"] == "numpy" and health["default_max_tokens"] == 8
    status, models = call(handler, "/v1/models", method="GET")
    assert models == {"object": "list", "data": [{"id": "fake/llm", "object": "model", "created": int(NOW),
                                                  "owned_by": "votive"}]}


def test_default_max_tokens_is_capped_by_the_context():
    model = FakeModel(n_ctx=6)
    call(make_handler(model, default_max_tokens=256), "/v1/completions", {"prompt": "a"})
    assert model.calls[0]["max_tokens"] == 6


def test_direct_invoke_routes_prompt_to_completions_and_messages_to_chat(handler):
    assert handler({"prompt": "hi", "max_tokens": 1}, None)["object"] == "text_completion"
    assert handler({**CHAT, "max_tokens": 1}, None)["object"] == "chat.completion"
    assert handler({"path": "/health"}, None)["kind"] == "generation"


def test_direct_invoke_cannot_stream(handler):
    with pytest.raises(VotiveFault) as err:
        handler({"prompt": "hi", "stream": True}, None)
    assert err.value.code == VotiveFault.BAD_REQUEST and "'stream' needs a function URL" in err.value.message


# --- bad input -----------------------------------------------------------------------------------------------


BAD_REQUESTS = [
    ("/v1/completions", b'{"prompt": "hi",', None, "invalid_json", "not valid JSON"),
    ("/v1/completions", ["hi"], None, "invalid_type", "must be a JSON object, found a JSON array"),
    ("/v1/completions", {}, "prompt", "missing_prompt", "'prompt' is required"),
    ("/v1/completions", {"prompt": 5}, "prompt", "invalid_type", "'prompt' must be a string, found a JSON number"),
    ("/v1/completions", {"prompt": [1, 2]}, "prompt", "unsupported_prompt", "token ids"),
    ("/v1/completions", {"prompt": ["a", "b"]}, "prompt", "invalid_prompt", "list of 2 items"),
    ("/v1/completions", {"prompt": "a\ud800"}, "prompt", "invalid_text", "lone surrogate at index 1"),
    ("/v1/completions", {"prompt": "a " * 70}, "prompt", "context_length_exceeded",
     "the prompt is 71 tokens, but the model's context holds 64"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 0}, "max_tokens", "invalid_value",
     "'max_tokens' is 0; it must be from 1 to 64"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 65}, "max_tokens", "invalid_value", "from 1 to 64"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": "5"}, "max_tokens", "invalid_type",
     "'max_tokens' must be an integer, found a JSON string"),
    ("/v1/completions", {"prompt": "hi", "max_tokens": 2.5}, "max_tokens", "invalid_type", "an integer"),
    ("/v1/completions", {"prompt": "hi", "temprature": 0.5, "foo": 1}, "foo", "unknown_parameter",
     "unknown parameters 'foo', 'temprature' for POST /v1/completions"),
    ("/v1/completions", {"prompt": "hi", "messages": []}, "messages", "unknown_parameter", "unknown parameter"),
    ("/v1/completions", {"prompt": "hi", "temperature": "hot"}, "temperature", "invalid_type", "a number"),
    ("/v1/completions", {"prompt": "hi", "temperature": True}, "temperature", "invalid_type", "found a JSON boolean"),
    ("/v1/completions", {"prompt": "hi", "temperature": 9}, "temperature", "invalid_value",
     "temperature must be between 0 and 5, got 9"),
    ("/v1/completions", {"prompt": "hi", "top_p": 0}, "top_p", "invalid_value", "top_p must be in (0, 1]"),
    ("/v1/completions", {"prompt": "hi", "top_k": 1.5}, "top_k", "invalid_type", "an integer"),
    ("/v1/completions", {"prompt": "hi", "seed": -1}, "seed", "invalid_value", "'seed' is -1"),
    ("/v1/completions", {"prompt": "hi", "n": 9}, "n", "invalid_value", "'n' is 9; this endpoint returns 1 to 8"),
    ("/v1/completions", {"prompt": "hi", "n": 0}, "n", "invalid_value", "1 to 8"),
    ("/v1/completions", {"prompt": "hi", "n": True}, "n", "invalid_type", "'n' must be an integer"),
    ("/v1/completions", {"prompt": "hi", "n": 2, "max_tokens": 40}, "n", "context_length_exceeded",
     "2 choices of 2 prompt tokens and up to 40 new ones each exceed the 64 positions"),
    ("/v1/completions", {"prompt": "hi", "echo": True}, "echo", "unsupported_parameter", "does not echo"),
    ("/v1/completions", {"prompt": "hi", "logprobs": 6}, "logprobs", "invalid_value", "from 0 to 5"),
    ("/v1/completions", {"prompt": "hi", "logprobs": True}, "logprobs", "invalid_type", "an integer"),
    ("/v1/chat/completions", {**CHAT, "logprobs": True, "top_logprobs": 21}, "top_logprobs", "invalid_value",
     "'top_logprobs' is 21; it must be from 0 to 20"),
    ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, "top_logprobs", "invalid_value", "needs \"logprobs\""),
    ("/v1/chat/completions", {**CHAT, "logprobs": 2}, "logprobs", "invalid_type", "a boolean"),
    ("/v1/completions", {"prompt": "hi", "best_of": 3}, "best_of", "unsupported_parameter", "one choice"),
    ("/v1/completions", {"prompt": "hi", "presence_penalty": 2.5}, "presence_penalty", "invalid_value",
     "presence_penalty must be between -2 and 2"),
    ("/v1/completions", {"prompt": "hi", "frequency_penalty": "x"}, "frequency_penalty", "invalid_type", "a number"),
    ("/v1/completions", {"prompt": "hi", "logit_bias": {"abc": 1}}, "logit_bias", "invalid_value",
     "keys are token ids"),
    ("/v1/completions", {"prompt": "hi", "logit_bias": {"5": 101}}, "logit_bias", "invalid_value",
     "gives token 5 the bias 101; a bias is a number from -100 to 100"),
    ("/v1/completions", {"prompt": "hi", "logit_bias": [1]}, "logit_bias", "invalid_type", "found a JSON array"),
    ("/v1/completions", {"prompt": "hi", "stop": 5}, "stop", "invalid_type", "'stop' must be a string or a list"),
    ("/v1/completions", {"prompt": "hi", "stop": list("abcde")}, "stop", "too_many_stops", "at most 4"),
    ("/v1/completions", {"prompt": "hi", "stream": "yes"}, "stream", "invalid_type", "a boolean"),
    ("/v1/completions", {"prompt": "hi", "stream_options": {"include_usage": True}}, "stream_options",
     "invalid_value", "only allowed with \"stream\": true"),
    ("/v1/completions", {"prompt": "hi", "stream": True, "stream_options": {"usage": True}}, "stream_options",
     "invalid_value", "must be {\"include_usage\": true|false}"),
    ("/v1/chat/completions", {}, "messages", "missing_messages", "'messages' is required"),
    ("/v1/chat/completions", {"messages": []}, "messages", "empty_messages", "'messages' is empty"),
    ("/v1/chat/completions", {"messages": "hi"}, "messages", "invalid_type", "found a JSON string"),
    ("/v1/chat/completions", {"messages": ["hi"]}, "messages", "invalid_type", "messages[0] is a JSON string"),
    ("/v1/chat/completions", {"messages": [{"role": "robot", "content": "x"}]}, "messages", "invalid_role",
     "messages[0].role is \"robot\"; expected 'system', 'user' or 'assistant'"),
    ("/v1/chat/completions", {"messages": [{"content": "x"}]}, "messages", "invalid_role", "role is null"),
    ("/v1/chat/completions", {"messages": [{"role": "tool", "content": 42, "tool_call_id": "a"}]}, "messages",
     "invalid_type", "(role tool) needs a string 'content'"),
    ("/v1/chat/completions", {"messages": [{"role": "user"}]}, "messages", "invalid_type",
     "messages[0].content must be a string or a list of text parts, found a JSON null"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
     "messages", "unsupported_content", "messages[0].content[0] is of type \"image_url\"; this model reads text"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]},
     "messages", "invalid_messages", "roles must alternate"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "\ud800"}]}, "messages", "invalid_messages",
     "lone surrogate"),
    ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, "tools", "unsupported_parameter",
     "cannot constrain its output"),
    ("/v1/chat/completions", {**CHAT, "response_format": {"type": "json_object"}}, "response_format",
     "unsupported_parameter", "cannot constrain its output"),
    ("/v1/chat/completions", {**CHAT, "echo": False}, "echo", "unknown_parameter", "unknown parameter 'echo'"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "a " * 70}]}, "messages",
     "context_length_exceeded", "the messages, as the chat template renders them, are 73 tokens"),
]


@pytest.mark.parametrize("path, body, param, code, message", BAD_REQUESTS)
def test_bad_request_is_400_openai_json_and_one_log_line(handler, model, caplog, path, body, param, code, message):
    with caplog.at_level(logging.INFO, logger="votive"):
        status, answer = call(handler, path, body)
    assert status == 400, answer
    error = answer["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param and error["code"] == code
    assert message in error["message"], error["message"]
    assert len(caplog.records) == 1 and caplog.records[0].levelname == "WARNING"
    assert caplog.records[0].getMessage().startswith(f"400 POST {path}")
    assert model.generations == []  # refused before any generation began


def test_bad_requests_are_refused_when_streaming_too(handler):
    answer = handler(url_event("/v1/completions", {"prompt": "hi", "stream": True, "max_tokens": 0}), None)
    assert answer["statusCode"] == 400 and "'max_tokens' is 0" in answer["body"]


def test_unknown_route_and_method(handler):
    assert call(handler, "/v1/embeddings", {"input": "x"})[0] == 404
    assert call(handler, "/v1/completions", method="GET")[0] == 405


def test_model_failure_is_500_without_trace_and_the_next_request_is_fine(handler, model, caplog):
    model.fail_at = 1
    with caplog.at_level(logging.ERROR, logger="votive"):
        status, body = call(handler, "/v1/completions", {"prompt": "hi"})
    assert status == 500
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "model_error"
    assert "fake model failure" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    assert "RuntimeError: fake model failure" in caplog.text  # the log has the cause and its trace
    model.fail_at = None
    assert call(handler, "/v1/completions", {"prompt": "hi", "max_tokens": 1})[0] == 200


def test_model_failure_mid_stream_ends_with_an_error_event(handler, model, caplog):
    model.fail_at = 2
    with caplog.at_level(logging.ERROR, logger="votive"):
        events = stream(handler, "/v1/chat/completions", CHAT)
    assert [e["choices"][0]["delta"] for e in events[:3]] == [{"role": "assistant", "content": ""},
                                                             {"content": "Hello"}, {"content": ","}]
    assert events[3] == {"error": {"message": "the model failed while answering; the cause is in the function's "
                                              "log", "type": "server_error", "param": None, "code": "model_error"}}
    assert len(events) == 4  # no [DONE]: the answer is incomplete
    assert "RuntimeError: fake model failure" in caplog.text
    assert model.generations[0].closed


def test_model_without_chat_template_is_told_to_use_completions(handler, model):
    from votive.errors import ModelConfigError

    def no_template(messages, add_generation_prompt=True):
        raise ModelConfigError("x.gguf: no tokenizer.chat_template")

    model.tokenizer.encode_chat = no_template
    status, body = call(handler, "/v1/chat/completions", CHAT)
    assert status == 400 and body["error"]["code"] == "no_chat_template"
    assert "send your own prompt to /v1/completions" in body["error"]["message"]


# --- configuration -------------------------------------------------------------------------------------------


def test_settings_from_the_environment():
    assert Settings.from_env({"VOTIVE_MODEL": " smollm2 "}) == Settings("smollm2", None, 256)
    assert Settings.from_env({"VOTIVE_MODEL": "m", "VOTIVE_N_CTX": "512", "VOTIVE_MAX_TOKENS": "32"}) == Settings(
        "m", 512, 32)


@pytest.mark.parametrize("environ, message", [
    ({}, "VOTIVE_MODEL is not set"),
    ({"VOTIVE_MODEL": "m", "VOTIVE_N_CTX": "big"}, "VOTIVE_N_CTX='big' is not a positive integer"),
    ({"VOTIVE_MODEL": "m", "VOTIVE_MAX_TOKENS": "0"}, "VOTIVE_MAX_TOKENS='0' is not a positive integer"),
])
def test_bad_settings_are_config_errors(environ, message):
    with pytest.raises(VotiveFault) as err:
        load_handler(environ, load=lambda source, n_ctx=None: FakeModel())
    assert err.value.code == VotiveFault.CONFIG_ERROR and message in err.value.message


def test_load_handler_passes_n_ctx_and_refuses_embedding_models():
    seen = {}

    def load(source, n_ctx=None):
        seen.update(source=source, n_ctx=n_ctx)
        return FakeModel()

    handler = load_handler({"VOTIVE_MODEL": "m.gguf", "VOTIVE_N_CTX": "128"}, load=load)
    assert seen == {"source": "m.gguf", "n_ctx": 128} and callable(handler)

    class Encoder:
        kind = "embedding"

    with pytest.raises(VotiveFault) as err:
        load_handler({"VOTIVE_MODEL": "minilm"}, load=lambda source, n_ctx=None: Encoder())
    assert err.value.code == VotiveFault.CONFIG_ERROR and "votive.handlers.embeddings.handler" in err.value.message


def test_model_that_cannot_load_is_a_model_load_error():
    def load(source, n_ctx=None):
        raise ModelSourceError("model source 'nope': no such file or folder")

    with pytest.raises(VotiveFault) as err:
        load_handler({"VOTIVE_MODEL": "nope"}, load=load)
    assert err.value.code == VotiveFault.MODEL_LOAD_ERROR
    assert err.value.message == "cannot load VOTIVE_MODEL='nope': model source 'nope': no such file or folder"


def test_importing_the_module_loads_nothing():
    import subprocess
    import sys

    code = ("import sys, votive.handlers.generation; "
            "print(sorted(m for m in ('numpy', 'jinja2', 'votive.models') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    assert generation.__getattr__  # the handler is built on first access, during Lambda's init


# --- the real SmolLM2 ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm():
    import votive

    return votive.load("smollm2", n_ctx=64)


def test_real_model_chat_streams_through_its_template(smollm):
    handler = make_handler(smollm)
    events = stream(handler, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                      "max_tokens": 2, "temperature": 0,
                                                      "stream_options": {"include_usage": True}})
    assert events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    prompt_ids = smollm.tokenizer.encode_chat([{"role": "user", "content": "Hi"}])
    assert usage["prompt_tokens"] == len(prompt_ids) and 1 <= usage["completion_tokens"] <= 2
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-2])
    assert text.strip(), "greedy decoding of a greeting produced no text"


def test_real_model_refuses_a_prompt_longer_than_its_context(smollm):
    status, body = call(make_handler(smollm), "/v1/completions", {"prompt": "word " * 100, "max_tokens": 1})
    assert status == 400 and body["error"]["code"] == "context_length_exceeded"
    assert "but the model's context holds 64" in body["error"]["message"]

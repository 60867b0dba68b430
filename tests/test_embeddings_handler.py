"""The embedding Lambda handler: OpenAI's /v1/embeddings on a fake encoder (every bad input, failures, limits)
and on the real all-MiniLM-L6-v2 (against sentence-transformers' reference, and through the openai client)."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from votive.errors import InputError, ModelSourceError, VotiveFault
from votive.handlers import embeddings
from votive.handlers.embeddings import Settings, load_handler, make_handler
from votive.handlers.events import LAMBDA_PAYLOAD_LIMIT


class FakeEncoder:
    """An encoder with the SentenceEncoder surface: each text's vector is a function of the text, 2 tokens each.

    `fail_with` makes the next encode raise it; `output` replaces the next result.
    """

    kind = "embedding"
    backend = "numpy"
    max_seq_length = 16

    def __init__(self, dim: int = 4, model_id: str = "fake/encoder"):
        self.dim, self.model_id = dim, model_id
        self.calls: list[tuple[list[str], int]] = []
        self.fail_with: Exception | None = None
        self.output = None

    def vector(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(sum(text.encode()) + len(text))
        v = rng.standard_normal(self.dim).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode(self, texts, batch_size=32):
        self.calls.append((list(texts), batch_size))
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        if self.output is not None:
            out, self.output = self.output, None
            return out, 2 * len(texts)
        return np.stack([self.vector(t) for t in texts]), 2 * len(texts)


def url_event(method="POST", path="/v1/embeddings", body=None, *, headers=None, b64=False) -> dict:
    """A function URL event (payload format 2.0); a dict body is sent as JSON text."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    event = {"version": "2.0", "rawPath": path, "rawQueryString": "", "isBase64Encoded": b64,
             "headers": {"content-type": "application/json"} if headers is None else headers,
             "requestContext": {"http": {"method": method, "path": path}}}
    if body is not None:
        event["body"] = body
    return event


@pytest.fixture
def fake():
    return FakeEncoder()


@pytest.fixture
def handler(fake):
    return make_handler(fake, max_inputs=5, batch_size=3)


def ok_body(response: dict) -> dict:
    assert response["statusCode"] == 200, response["body"]
    assert response["headers"] == {"content-type": "application/json"} and response["isBase64Encoded"] is False
    return json.loads(response["body"])


# ----------------------------------------------------------------------------------------------- answers
def test_embeddings_float_response_is_openai_shaped(handler, fake):
    body = ok_body(handler(url_event(body={"input": ["first", "second"], "model": "text-embedding-3-small"}), None))
    assert set(body) == {"object", "data", "model", "usage"}
    assert body["object"] == "list" and body["model"] == "fake/encoder"
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0), ("embedding", 1)]
    for d, text in zip(body["data"], ["first", "second"]):
        assert np.array(d["embedding"], dtype=np.float32).tolist() == fake.vector(text).tolist()  # exact
    assert fake.calls == [(["first", "second"], 3)]  # the configured batch size reaches the model


def test_single_string_input_and_empty_text(handler, fake):
    body = ok_body(handler(url_event(body={"input": "just one"}), None))
    assert len(body["data"]) == 1 and len(body["data"][0]["embedding"]) == 4
    body = ok_body(handler(url_event(body={"input": ["", "x"]}), None))  # "" is a text like any other
    assert len(body["data"]) == 2 and fake.calls[-1][0] == ["", "x"]


def test_base64_encoding_decodes_to_the_same_floats(handler, fake):
    texts = ["alpha", "beta", "gamma"]
    floats = ok_body(handler(url_event(body={"input": texts, "encoding_format": "float"}), None))
    b64 = ok_body(handler(url_event(body={"input": texts, "encoding_format": "base64"}), None))
    for f, b, text in zip(floats["data"], b64["data"], texts):
        decoded = np.frombuffer(base64.b64decode(b["embedding"]), dtype="<f4")
        assert decoded.tolist() == f["embedding"] == fake.vector(text).tolist()


def test_dimensions_equal_to_the_model_dim_and_null_fields_are_accepted(handler):
    body = {"input": "x", "dimensions": 4, "model": None, "encoding_format": None, "user": "u-1", "extra": 1}
    assert len(ok_body(handler(url_event(body=body), None))["data"][0]["embedding"]) == 4


def test_path_without_v1_prefix_and_trailing_slash(handler):
    ok_body(handler(url_event(path="/embeddings", body={"input": "x"}), None))
    ok_body(handler(url_event(path="/v1/embeddings/", body={"input": "x"}), None))


def test_health(handler):
    body = ok_body(handler(url_event("GET", "/health"), None))
    assert body["status"] == "ok" and body["model"] == "fake/encoder"
    assert (body["dimension"], body["backend"], body["max_seq_length"]) == (4, "numpy", 16)
    assert (body["max_inputs"], body["batch_size"]) == (5, 3)


def test_lenient_about_content_type_and_base64_bodies(handler):
    ok_body(handler(url_event(body={"input": "x"}, headers={}), None))
    ok_body(handler(url_event(body={"input": "x"}, headers={"content-type": "text/plain"}), None))
    encoded = base64.b64encode(json.dumps({"input": "x"}).encode()).decode()
    ok_body(handler(url_event(body=encoded, b64=True), None))


def test_direct_invoke_returns_the_response_itself(handler, fake):
    out = handler({"input": ["a", "b"], "model": "m"}, None)
    assert out["object"] == "list" and [d["index"] for d in out["data"]] == [0, 1]
    assert out["data"][1]["embedding"] == fake.vector("b").tolist()
    assert handler({"path": "/health"}, None)["dimension"] == 4


# ------------------------------------------------------------------------------------------- bad requests
TOKENS = "this endpoint embeds text only"
BAD_REQUESTS = [
    # (name, event, status, param, code, words the message must contain)
    ("malformed json", url_event(body='{"input": "x"'), 400, None, "invalid_json", "not valid JSON"),
    ("empty body", url_event(body=""), 400, None, "invalid_json", "the request body is empty"),
    ("body not an object", url_event(body=["x"]), 400, None, "invalid_type",
     "the request body must be a JSON object, found a JSON array"),
    ("input missing", url_event(body={"model": "m"}), 400, "input", "missing_input", "'input' is required"),
    ("input a number", url_event(body={"input": 3}), 400, "input", "invalid_type",
     "'input' must be a string or a list of strings, found a JSON number"),
    ("input an object", url_event(body={"input": {"text": "x"}}), 400, "input", "invalid_type", "JSON object"),
    ("input null", url_event(body={"input": None}), 400, "input", "invalid_type", "found a JSON null"),
    ("input empty list", url_event(body={"input": []}), 400, "input", "empty_input", "'input' is an empty list"),
    ("token ids", url_event(body={"input": [101, 2023, 102]}), 400, "input", "unsupported_input", TOKENS),
    ("token id arrays", url_event(body={"input": [[101, 102]]}), 400, "input", "unsupported_input", TOKENS),
    ("item null", url_event(body={"input": ["a", None]}), 400, "input", "invalid_type",
     "input[1] is a JSON null; expected a string"),
    ("item nested object", url_event(body={"input": ["a", "b", {"x": "y"}]}), 400, "input", "invalid_type",
     "input[2] is a JSON object"),
    ("item boolean", url_event(body={"input": [True]}), 400, "input", "invalid_type", "input[0] is a JSON boolean"),
    ("lone surrogate", url_event(body='{"input": ["ok", "bad \\ud800 text"]}'), 400, "input", "invalid_text",
     "input[1] contains an unpaired UTF-16 surrogate"),
    ("too many inputs", url_event(body={"input": ["x"] * 6}), 400, "input", "too_many_inputs",
     "'input' has 6 items, more than the 5 one request may send"),
    ("model not a string", url_event(body={"input": "x", "model": 5}), 400, "model", "invalid_type", "'model'"),
    ("unknown encoding", url_event(body={"input": "x", "encoding_format": "float16"}), 400, "encoding_format",
     "invalid_value", "'encoding_format' is 'float16'; expected one of 'float', 'base64', 'int8'"),
    ("other dimensions", url_event(body={"input": "x", "dimensions": 2}), 400, "dimensions", "invalid_value",
     "'dimensions' is 2, but fake/encoder makes 4-dimensional embeddings"),
    ("dimensions a string", url_event(body={"input": "x", "dimensions": "4"}), 400, "dimensions", "invalid_type",
     "'dimensions' must be an integer, found a JSON string"),
    ("invalid base64 body", url_event(body="%%%", b64=True), 400, None, "invalid_base64", "not valid base64"),
    ("unknown path", url_event(path="/v1/chat/completions", body={}), 404, None, "not_found",
     "no route POST /v1/chat/completions"),
    ("wrong method", url_event("GET", "/v1/embeddings"), 405, None, "method_not_allowed",
     "GET is not allowed on /v1/embeddings; use POST"),
    ("body over 6 MB", url_event(body={"input": "x" * LAMBDA_PAYLOAD_LIMIT}), 413, None, "body_too_large",
     "over Lambda's 6291456-byte payload limit"),
]


@pytest.mark.parametrize("event, status, param, code, words", [case[1:] for case in BAD_REQUESTS],
                         ids=[case[0] for case in BAD_REQUESTS])
def test_bad_requests_get_4xx_openai_errors_and_one_log_line(handler, fake, caplog, event, status, param, code,
                                                               words):
    with caplog.at_level(logging.DEBUG, logger="votive"):
        response = handler(event, None)
    assert response["statusCode"] == status
    assert response["headers"]["content-type"] == "application/json"
    error = json.loads(response["body"])["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert words in error["message"]
    assert len(caplog.records) == 1 and caplog.records[0].levelno == logging.WARNING
    assert fake.calls == []  # refused before the model ran
    if status == 405:
        assert response["headers"]["allow"] == "POST"


def test_direct_invoke_bad_request_raises_a_bad_request_fault(handler):
    with pytest.raises(VotiveFault) as info:
        handler({"input": []}, None)
    assert info.value.code == "Votive.BadRequest"
    assert str(info.value) == ("Votive.BadRequest: POST /v1/embeddings answered 400: 'input' is an empty list; "
                               "send at least one string")


def test_model_input_error_is_a_400(handler, fake):
    fake.fail_with = InputError("text 0 is too long for this model")
    response = handler(url_event(body={"input": "x"}), None)
    assert response["statusCode"] == 400
    assert json.loads(response["body"])["error"]["message"] == "text 0 is too long for this model"


def test_model_exception_is_500_without_trace_and_the_next_request_succeeds(handler, fake, caplog):
    fake.fail_with = RuntimeError("CUDA exploded at 0xdeadbeef")
    with caplog.at_level(logging.DEBUG, logger="votive"):
        response = handler(url_event(body={"input": "x"}), None)
    assert response["statusCode"] == 500
    error = json.loads(response["body"])["error"]
    assert error["type"] == "server_error" and error["code"] == "model_error"
    for secret in ("Traceback", "File ", "deadbeef", "RuntimeError"):
        assert secret not in response["body"]
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert "RuntimeError: CUDA exploded at 0xdeadbeef" in record.getMessage()
    assert "in encode" in record.getMessage()  # the trace, starting at the model
    ok_body(handler(url_event(body={"input": "x"}), None))


@pytest.mark.parametrize("output, words", [
    (np.full((1, 4), np.nan, np.float32), "non-finite values (NaN or inf), first in input[0]"),
    (np.zeros((1, 3), np.float32), "shape (1, 3), expected (1, 4)"),
])
def test_broken_model_output_is_500_not_a_wrong_answer(handler, fake, caplog, output, words):
    fake.output = output
    with caplog.at_level(logging.DEBUG, logger="votive"):
        response = handler(url_event(body={"input": "x"}), None)
    assert response["statusCode"] == 500 and words in caplog.records[0].getMessage()


def test_direct_invoke_model_exception_raises_model_error_fault(handler, fake):
    fake.fail_with = ValueError("bad weights")
    with pytest.raises(VotiveFault) as info:
        handler({"input": "x"}, None)
    assert info.value.code == "Votive.ModelError" and info.value.message == "ValueError: bad weights"
    assert "in encode" in info.value.trace[0]  # votive's frames trimmed: the trace starts in the model


def test_response_over_lambda_limit_is_refused_and_base64_fits():
    handler = make_handler(FakeEncoder(dim=2048), max_inputs=2048)
    texts = [f"text {i}" for i in range(200)]  # 200 x 2048 floats: about 8.6 MB as JSON numbers, 2.2 MB in base64
    response = handler(url_event(body={"input": texts}), None)
    assert response["statusCode"] == 400
    error = json.loads(response["body"])["error"]
    assert error["code"] == "response_too_large" and "encoding_format 'base64'" in error["message"]
    response = handler(url_event(body={"input": texts, "encoding_format": "base64"}), None)
    assert response["statusCode"] == 200 and len(response["body"]) < LAMBDA_PAYLOAD_LIMIT


# ------------------------------------------------------------------------------------------ configuration
def test_settings_from_env():
    assert Settings.from_env({"VOTIVE_MODEL": " minilm "}) == Settings("minilm", 2048, 32)
    assert Settings.from_env({"VOTIVE_MODEL": "m", "VOTIVE_MAX_INPUTS": "10", "VOTIVE_BATCH_SIZE": "8"}) == \
        Settings("m", 10, 8)


@pytest.mark.parametrize("environ, words", [
    ({}, "VOTIVE_MODEL is not set"),
    ({"VOTIVE_MODEL": "  "}, "VOTIVE_MODEL is not set"),
    ({"VOTIVE_MODEL": "m", "VOTIVE_MAX_INPUTS": "lots"}, "VOTIVE_MAX_INPUTS='lots' is not a positive integer"),
    ({"VOTIVE_MODEL": "m", "VOTIVE_BATCH_SIZE": "0"}, "VOTIVE_BATCH_SIZE='0' is not a positive integer"),
])
def test_bad_settings_are_config_faults(environ, words):
    with pytest.raises(VotiveFault) as info:
        load_handler(environ, load=lambda source: pytest.fail("must not load"))
    assert info.value.code == "Votive.ConfigError" and words in str(info.value)


def test_load_handler_uses_the_settings():
    loaded = []

    def load(source):
        loaded.append(source)
        return FakeEncoder()

    handler = load_handler({"VOTIVE_MODEL": "some/model", "VOTIVE_MAX_INPUTS": "2"}, load=load)
    assert loaded == ["some/model"]
    assert handler({"path": "/health"}, None)["max_inputs"] == 2
    with pytest.raises(VotiveFault, match="more than the 2 one request may send"):
        handler({"input": ["a", "b", "c"]}, None)


def test_model_that_cannot_load_is_a_model_load_fault():
    def load(source):
        raise ModelSourceError(f"{source}: no such folder, file, package or alias")

    with pytest.raises(VotiveFault) as info:
        load_handler({"VOTIVE_MODEL": "/nope"}, load=load)
    assert info.value.code == "Votive.ModelLoadError"
    assert str(info.value) == ("Votive.ModelLoadError: cannot load VOTIVE_MODEL='/nope': /nope: no such folder, "
                               "file, package or alias")
    assert info.value.__cause__ is None  # votive's own error: its message is the whole story


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("VOTIVE_")}
    return subprocess.run([sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True,
                          timeout=120)


def test_import_is_light_and_missing_model_fails_init():
    code = ("import sys, votive.handlers.embeddings as m\n"
            "heavy = [n for n in ('numpy', 'tokenizers', 'huggingface_hub', 'votive.models.bert') if n in sys.modules]\n"
            "print('heavy:', heavy, flush=True)\n"
            "m.handler\n")
    result = run_python(code)
    assert "heavy: []" in result.stdout
    assert result.returncode != 0
    assert "VotiveFault: Votive.ConfigError: VOTIVE_MODEL is not set" in result.stderr


def test_env_configured_handler_serves_the_real_model(minilm_dir):
    code = ("from votive.handlers.embeddings import handler\n"
            "out = handler({'input': ['hello', 'world']}, None)\n"
            "print(len(out['data']), len(out['data'][0]['embedding']), out['usage']['prompt_tokens'])\n")
    result = run_python(code, VOTIVE_MODEL=str(minilm_dir))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "384", "6"]


# -------------------------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def minilm(minilm_dir):
    from votive.backends import get_backend
    from votive.models.sentence_encoder import SentenceEncoder

    return SentenceEncoder.from_folder(minilm_dir, get_backend("numpy"), model_id="all-MiniLM-L6-v2")


@pytest.fixture(scope="module")
def reference(reference_dir):
    sentences = json.loads((reference_dir / "minilm_sentences.json").read_text())
    return sentences, np.load(reference_dir / "minilm_embeddings.npy")


def cosines(got, expected) -> np.ndarray:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)


def test_minilm_through_the_handler_matches_sentence_transformers(minilm, reference):
    sentences, expected = reference
    handler = make_handler(minilm)
    floats = ok_body(handler(url_event(body={"input": sentences["sentences"], "model": "x"}), None))
    got = np.array([d["embedding"] for d in floats["data"]], np.float32)
    assert got.shape == (8, 384) and cosines(got, expected).min() >= 0.9999
    assert floats["usage"]["prompt_tokens"] == sum(len(ids) for ids in sentences["input_ids"])
    assert floats["model"] == "all-MiniLM-L6-v2"
    b64 = ok_body(handler(url_event(body={"input": sentences["sentences"], "encoding_format": "base64"}), None))
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in b64["data"]])
    assert np.array_equal(decoded, got)


def test_openai_client_against_the_local_function_url(minilm, reference):
    openai = pytest.importorskip("openai")
    from votive.emulators.function_url import FunctionUrlServer

    sentences, expected = reference
    with FunctionUrlServer(make_handler(minilm), port=0) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="not-checked", max_retries=0)
        default = client.embeddings.create(model="text-embedding-3-small", input=sentences["sentences"])
        floats = client.embeddings.create(model="m", input=sentences["sentences"][:2], encoding_format="float")
        with pytest.raises(openai.BadRequestError) as info:
            client.embeddings.create(model="m", input=[])
        with pytest.raises(openai.BadRequestError, match="'dimensions' is 64"):
            client.embeddings.create(model="m", input="x", dimensions=64)
    got = np.array([d.embedding for d in default.data], np.float32)  # the client asked for base64 and decoded it
    assert [d.index for d in default.data] == list(range(8)) and default.model == "all-MiniLM-L6-v2"
    assert cosines(got, expected).min() >= 0.9999
    assert np.array_equal(np.array([d.embedding for d in floats.data], np.float32), got[:2])
    assert default.usage.prompt_tokens == default.usage.total_tokens > 0
    assert info.value.status_code == 400 and info.value.code == "empty_input"
    assert "'input' is an empty list" in info.value.message


def test_module_attribute_other_than_handler_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        embeddings.nothing  # noqa: B018

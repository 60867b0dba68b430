"""Enforced JSON output: the recognizer against json.loads on hand-picked documents, the schema subset and its
refusals, then SmolLM2 (real weights, 49k-token vocabulary) sampled at temperature 1 under many seeds: every
answer parses and validates, also when its token budget is small. Through the openai client, streamed and not,
and the bad requests as 400s."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from votive.emulators.function_url import FunctionUrlServer
from votive.text.json_recognizer import Recognizer
from votive.text.json_schema import SchemaError, compile_schema, validate

DATA = Path(__file__).resolve().parent / "data"
PERSON = {"type": "object", "properties": {
    "name": {"type": "string"}, "age": {"type": "integer"},
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    "pet": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}},
                                           "required": ["kind"], "additionalProperties": False}]}},
    "required": ["name", "age", "pet"], "additionalProperties": False}

@pytest.mark.parametrize("data, whole", [("é€😀".encode(), True), (b"\xc3", False), (b"\xed\xa0\x80", False),
                                         (b"\xe0\x80\x80", False), (b"\xff", False), (b"\xf4\x90\x80\x80", False)])
def test_strings_are_whole_utf8(data, whole):
    r = Recognizer(compile_schema({"type": "string"}))
    assert r.complete(r.feed(r.start, b'"' + data + b'"')) == whole


DOCUMENTS = ['{}', '{"a": 1}', '{"a": [1, -2.5e-3, 0, true, false, null, "x\\u00e9\\n\\"", {}]}', ' { "é" : "ü" }',
             '{"a": 01}', '{"a": 1,}', '[1]', '{"a" 1}', '{"a": tru}', '{"a": "x\n"}', '{"a": 1.}', '{"a": -}',
             '{"a": "\\x"}', '{"a": 1e}', '{} ', '{"a": [1 2]}']


@pytest.mark.parametrize("text", DOCUMENTS)
def test_json_object_recognizer_agrees_with_json_loads(text):
    r = Recognizer(compile_schema({"type": "object"}))
    try:
        expected = isinstance(json.loads(text), dict) and not text.endswith(" ")  # nothing may follow
    except ValueError:
        expected = False
    assert r.complete(r.feed(r.start, text.encode())) == expected


@pytest.mark.parametrize("doc, problem", [
    ({"name": "a", "age": 1, "pet": None}, None),
    ({"name": "a", "age": 1, "pet": {"kind": "cat"}, "tags": ["x"]}, None),
    ({"name": "a", "age": 1.5, "pet": None}, "$.age: expected integer, found number"),
    ({"name": "a", "age": 1}, "$: required property 'pet' is missing"),
    ({"name": "a", "age": 1, "pet": {"kind": "cow"}}, "$.pet: matches no anyOf alternative"),
    ({"name": "a", "age": 1, "pet": None, "tags": ["a", "b", "c", "d"]}, "$.tags: 4 items, expected 0 to 3"),
    ({"name": "a", "age": 1, "pet": None, "x": 1}, "$: property 'x' is not allowed"),
])
def test_recognizer_and_validator_agree_on_a_schema(doc, problem):
    node = compile_schema(PERSON)
    found = validate(doc, node)
    assert (found is None and problem is None) or (problem is not None and found.startswith(problem))
    r = Recognizer(node)
    assert r.complete(r.feed(r.start, json.dumps(doc).encode())) == (problem is None)


@pytest.mark.parametrize("schema, feature", [
    ({"type": "string", "pattern": "a+"}, "pattern"), ({"$ref": "#/$defs/x"}, "$ref"),
    ({"type": "string", "format": "date"}, "format"), ({"oneOf": [{}]}, "oneOf"),
    ({"type": "array", "items": [{}]}, "items"), ({"type": "integer", "minimum": 0}, "minimum"),
])
def test_unsupported_features_are_refused_by_name(schema, feature):
    with pytest.raises(SchemaError) as err:
        compile_schema(schema)
    assert err.value.feature == feature and repr(feature) in str(err.value)


@pytest.fixture(scope="module")
def smollm(smollm_gguf):
    import votive

    return votive.load(str(smollm_gguf))


@pytest.mark.parametrize("fmt", ["json_object", "json_schema"])
def test_smollm2_sampled_output_always_parses_and_validates(smollm, fmt):
    from votive.models.structured import Structured

    schema = {"type": "object"} if fmt == "json_object" else PERSON
    spec = {"type": fmt} if fmt == "json_object" else {"type": fmt, "json_schema": {"name": "p", "schema": PERSON}}
    make = Structured(smollm.tokenizer).response_format(spec)
    ids = smollm.tokenizer.encode_chat([{"role": "user", "content": "Describe a person as JSON."}])
    for seed in range(8):
        budget = 40 + 10 * seed  # small budgets too: the document is closed in time, whatever was sampled
        generation = smollm.start(ids, max_tokens=budget, temperature=1.0, seed=seed)
        generation.constraint = make(budget)
        text = generation.text()
        assert generation.finish_reason == "stop" and generation.completion_tokens < budget, (seed, text)
        assert validate(json.loads(text), compile_schema(schema)) is None, (seed, text)


@pytest.fixture(scope="module")
def client(smollm):
    openai = pytest.importorskip("openai")
    from votive.handlers.generation import make_handler

    server = FunctionUrlServer(make_handler(smollm, default_max_tokens=400), port=0)
    server.start()
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    server.stop()


def test_openai_client_json_schema_streamed_and_not(client):
    kwargs = dict(model="m", messages=[{"role": "user", "content": "A person as JSON"}], temperature=1, seed=11,
                  response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON,
                                                                          "strict": True}})
    whole = client.chat.completions.create(**kwargs)
    assert whole.choices[0].finish_reason == "stop"
    assert validate(json.loads(whole.choices[0].message.content), compile_schema(PERSON)) is None
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    obj = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "JSON please"}],
                                         response_format={"type": "json_object"}, temperature=1, seed=1)
    assert obj.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(obj.choices[0].message.content), dict)


def test_bad_response_formats_are_openai_400s(client):
    openai = pytest.importorskip("openai")
    user = [{"role": "user", "content": "hi"}]
    cases = [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "minLength": 2}}},
         "unsupported_schema_feature", "'minLength' is not supported"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": "a"}}},
         "invalid_schema", "required must be a list"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "required": ["a"],
                                                                          "additionalProperties": False}}},
         "invalid_schema", "no object could match"),
        ({"type": "yaml"}, "invalid_value", "'response_format' must be"),
        ({"type": "json_object", "schema": {}}, "invalid_value", "takes no 'schema'"),
    ]
    for response_format, code, words in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="m", messages=user, response_format=response_format)
        assert err.value.code == code and words in err.value.message, response_format
        assert err.value.body["param"] == "response_format"


def test_hugging_face_folder_token_bytes_and_constrained_output(tmp_path):
    """A Hugging Face folder (byte-level tokenizer.json, tests/data/hf_reference): each token's bytes as read for
    masking decode to what the tokenizer decodes, and a sampled answer is a valid document."""
    import importlib.util

    import votive
    from votive.models.json_constraint import token_pieces
    from votive.models.structured import Structured

    spec = importlib.util.spec_from_file_location("hf_folders", DATA / "hf_reference" / "hf_folders.py")
    hf_folders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hf_folders)
    model = votive.load(str(hf_folders.write_folder(hf_folders.SPECS["qwen2"], tmp_path / "qwen2")))
    pieces = token_pieces(model.tokenizer)
    ids = model.tokenize('héllo {"a": 1} ünïcode')
    assert b"".join(pieces[i] for i in ids).decode() == model.tokenizer.decode(ids)
    make = Structured(model.tokenizer).response_format({"type": "json_schema", "json_schema": {
        "name": "p", "schema": PERSON}})
    for seed in range(3):
        generation = model.start(ids, max_tokens=80, temperature=1.0, seed=seed)
        generation.constraint = make(80)
        text = generation.text()
        assert generation.finish_reason == "stop" and validate(json.loads(text), compile_schema(PERSON)) is None


def test_logprobs_of_a_constrained_answer_are_finite_json(smollm):
    from votive.handlers.generation import make_handler

    answer = make_handler(smollm)({"messages": [{"role": "user", "content": "JSON"}], "max_tokens": 30,
                                   "response_format": {"type": "json_object"}, "logprobs": True, "top_logprobs": 5,
                                   "seed": 2}, None)
    json.dumps(answer, allow_nan=False)  # no -inf for the tokens the constraint forbade
    choice = answer["choices"][0]
    assert isinstance(json.loads(choice["message"]["content"]), dict) and choice["finish_reason"] == "stop"
    assert len(choice["logprobs"]["content"]) == answer["usage"]["completion_tokens"]

"""Tool calling: each family's call format parsed from hand-written answers; forced calls (tool_choice required
or named) on a random-weight decoder with a Qwen-style template written here, through the openai client, streamed
and not; a whole tool loop through `votive serve`; and the bad requests that must be 400s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from votive.emulators.function_url import FunctionUrlServer
from votive.text.json_schema import compile_schema, validate
from votive.text.tool_calls import FORMATS, format_for, parse_calls, supports_tools

REPO = Path(__file__).resolve().parent.parent

# Written for this test in the shape of Qwen 2.5's template: tools listed in a system turn, calls and results in
# <tool_call> / <tool_response> blocks.
QWEN_STYLE = """{%- if tools %}<|im_start|>system
Call a tool as <tool_call>
{"name": NAME, "arguments": ARGS}
</tool_call>
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif message.tool_calls %}<|im_start|>assistant
{%- for call in message.tool_calls %}
<tool_call>
{{ {"name": call.function.name, "arguments": call.function.arguments} | tojson }}
</tool_call>
{%- endfor %}<|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
CHATML = ("{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "integer"}}, "required": ["zone"]}}}


def tiny_model(path: Path, template: str) -> Path:
    from votive.formats.gguf_write import write_gguf
    from votive.testing.synthetic import DecoderShape, decoder_metadata, decoder_tensors

    shape = DecoderShape(n_layers=2, dim=64, ffn_dim=128, n_heads=4, n_kv_heads=2, vocab=300, context=2048)
    meta = decoder_metadata(shape)
    meta["tokenizer.chat_template"] = template
    return write_gguf(path, meta, decoder_tensors(shape, "F32", 0, None))


@pytest.fixture(scope="module")
def qwen_style(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("tools") / "qwen-style.gguf", QWEN_STYLE)


@pytest.fixture(scope="module")
def client(qwen_style, tmp_path_factory):
    openai = pytest.importorskip("openai")
    import votive
    from votive.handlers.generation import make_handler

    server = FunctionUrlServer(make_handler(votive.load(str(qwen_style)), default_max_tokens=300), port=0)
    server.start()
    yield openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    server.stop()


# --- formats --------------------------------------------------------------------------------------------------

ARGS = {"city": "Paris", "unit": "c"}


@pytest.mark.parametrize("name, text", [
    ("hermes", 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}\n'
               '</tool_call>'),
    ("mistral", '[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]'),
    ("phi4-mini", '<|tool_call|>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]<|/tool_call|>'),
    ("llama3", '<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}'),
    ("llama3", '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}'),
    ("generic", '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\", \\"unit\\": \\"c\\"}"}'),
])
def test_each_format_parses_a_call(name, text):
    fmt = next(f for f in FORMATS if f.name == name)
    content, calls = parse_calls(text, fmt, {"get_weather"})
    assert [(c["name"], json.loads(c["arguments"])) for c in calls] == [("get_weather", ARGS)]
    assert content == ("Let me look." if name == "hermes" else "")


def test_parsing_leaves_text_that_is_not_a_call_of_a_known_tool():
    hermes = format_for("<tool_call> tools")
    assert parse_calls("Paris is sunny.", hermes, {"get_weather"}) == ("Paris is sunny.", [])
    text = '<tool_call>\n{"name": "rm_rf", "arguments": {}}\n</tool_call>'
    assert parse_calls(text, hermes, {"get_weather"}) == (text, [])
    two = ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "A", "unit": "c"}}\n</tool_call>\n'
           '<tool_call>\n{"name": "get_weather", "arguments": {"city": "B", "unit": "f"}}\n</tool_call>')
    assert [json.loads(c["arguments"])["city"] for c in parse_calls(two, hermes, {"get_weather"})[1]] == ["A", "B"]


def test_format_is_picked_from_the_template():
    assert format_for(QWEN_STYLE).name == "hermes"
    assert format_for("{{ tools }} <|python_tag|> ipython").name == "llama3"
    assert format_for("{{ tools }} [TOOL_CALLS]").name == "mistral"
    assert format_for("{{ tools }}").name == "generic"
    assert supports_tools(QWEN_STYLE) and not supports_tools(CHATML)


def test_smollm2_template_has_no_tool_support(smollm_gguf):
    import votive

    assert not supports_tools(votive.load(str(smollm_gguf)).tokenizer.chat_template_source)


# --- forced calls through the openai client --------------------------------------------------------------------

@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_forced_call_is_a_valid_call_of_an_allowed_tool(client, choice, seed):
    answer = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Weather in Paris?"}],
                                            tools=[WEATHER, TIME], tool_choice=choice, temperature=1, seed=seed)
    assert answer.choices[0].finish_reason == "tool_calls"
    [call] = answer.choices[0].message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    allowed = {"get_weather": WEATHER, "get_time": TIME}
    if isinstance(choice, dict):
        assert call.function.name == "get_time"
    assert "\ufffd" not in call.function.arguments  # strings are whole UTF-8, even from a random model
    schema = compile_schema(allowed[call.function.name]["function"]["parameters"])
    assert validate(json.loads(call.function.arguments), schema) is None


def test_streamed_tool_call_deltas_accumulate_as_openai_does(client):
    kwargs = dict(model="m", messages=[{"role": "user", "content": "Weather?"}], tools=[WEATHER],
                  tool_choice="required", temperature=1, seed=3)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[-1].choices[0].finish_reason == "tool_calls"
    calls: dict[int, dict] = {}
    for chunk in chunks:
        for delta in chunk.choices[0].delta.tool_calls or []:
            entry = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
            entry["id"] = entry["id"] or delta.id
            entry["name"] += delta.function.name or ""
            entry["arguments"] += delta.function.arguments or ""
    [call] = calls.values()
    expected = whole.choices[0].message.tool_calls[0]
    assert (call["name"], json.loads(call["arguments"])) == (expected.function.name,
                                                             json.loads(expected.function.arguments))


# Each family's marker in a minimal template that lists the tools: the forced answer must come back as the call.
FAMILY_TEMPLATES = {
    "llama3": "{{ tools | tojson }} <|python_tag|>{% for m in messages %}{{ m.content }}{% endfor %}",
    "mistral": "{{ tools | tojson }} [TOOL_CALLS]{% for m in messages %}{{ m.content }}{% endfor %}",
    "phi4-mini": "{{ tools | tojson }} <|tool_call|>{% for m in messages %}{{ m.content }}{% endfor %}",
    "generic": "{{ tools | tojson }}{% for m in messages %}{{ m.content }}{% endfor %}",
}


@pytest.mark.parametrize("family", sorted(FAMILY_TEMPLATES))
def test_forced_calls_round_trip_in_every_family_format(family, tmp_path):
    import votive
    from votive.handlers.generation import make_handler

    model = votive.load(str(tiny_model(tmp_path / f"{family}.gguf", FAMILY_TEMPLATES[family])))
    handler = make_handler(model, default_max_tokens=300)
    answer = handler({"messages": [{"role": "user", "content": "Weather?"}], "tools": [WEATHER],
                      "tool_choice": "required", "temperature": 1, "seed": 4}, None)
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    [call] = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    parameters = compile_schema(WEATHER["function"]["parameters"])
    assert validate(json.loads(call["function"]["arguments"]), parameters) is None


# --- bad requests ----------------------------------------------------------------------------------------------

def test_bad_tool_requests_are_openai_400s(client, tmp_path):
    openai = pytest.importorskip("openai")
    user = [{"role": "user", "content": "hi"}]
    cases = [
        (dict(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}}), "unknown_tool",
         "'tool_choice' names the function \"nope\""),
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {
            "s": {"type": "string", "pattern": "^a"}}}}}]), "unsupported_schema_feature", "'pattern'"),
        (dict(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "thing"}}}]),
         "invalid_schema", "'thing' is not a JSON Schema type"),
        (dict(tools=[{"type": "retrieval"}]), "invalid_value", "tools[0] must be"),
        (dict(tool_choice="required"), "invalid_value", "no 'tools' are given"),
    ]
    for kwargs, code, words in cases:
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="m", messages=user, **kwargs)
        assert err.value.status_code == 400 and err.value.code == code and words in err.value.message, kwargs

    import votive
    from votive.handlers.generation import make_handler

    server = FunctionUrlServer(make_handler(votive.load(str(tiny_model(tmp_path / "chatml.gguf", CHATML)))), port=0)
    server.start()
    try:
        plain = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            plain.chat.completions.create(model="m", messages=user, tools=[WEATHER])
        assert err.value.code == "tools_unsupported" and "no tool support" in err.value.message
    finally:
        server.stop()


# --- a whole loop through votive serve -------------------------------------------------------------------------

def test_tool_loop_through_votive_serve(qwen_style):
    """The model is made to call get_weather; the test answers as the tool; the model's final answer is forced
    to a JSON object with the schema asked for. Every turn goes through `votive serve` and the openai client."""
    openai = pytest.importorskip("openai")
    env = dict(os.environ, PYTHONPATH=str(REPO), VOTIVE_MAX_TOKENS="300")
    process = subprocess.Popen([sys.executable, "-m", "votive.cli", "serve", str(qwen_style), "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        ready = process.stdout.readline()
        assert " at http://127.0.0.1:" in ready, process.stderr.read() if process.poll() is not None else ready
        client = openai.OpenAI(base_url=ready.split(" at ", 1)[1].split()[0] + "/v1", api_key="unused",
                               max_retries=0, timeout=120)
        messages = [{"role": "user", "content": "What is the weather in Paris?"}]
        first = client.chat.completions.create(model="m", messages=messages, tools=[WEATHER], tool_choice="required",
                                               temperature=0.7, seed=5)
        [call] = first.choices[0].message.tool_calls
        assert call.function.name == "get_weather" and first.choices[0].finish_reason == "tool_calls"
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21})}]
        answer_schema = {"type": "object", "properties": {"summary": {"type": "string"}, "celsius": {"type": "number"}},
                         "required": ["summary", "celsius"], "additionalProperties": False}
        final = client.chat.completions.create(
            model="m", messages=messages, tools=[WEATHER], tool_choice="none", temperature=0.7, seed=5,
            response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": answer_schema}})
        assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls
        assert validate(json.loads(final.choices[0].message.content), compile_schema(answer_schema)) is None
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(10)
        process.stdout.close()
        process.stderr.close()


class ScriptedGeneration:
    """Pieces given by the test, as a Generation yields them."""

    def __init__(self, pieces):
        self.pieces, self.finish_reason = pieces, "stop"

    def __iter__(self):
        return iter(self.pieces)

    def text(self):
        return "".join(self.pieces)


@pytest.mark.parametrize("family, pieces, expected", [
    ("hermes", ["Let me ", "check.<tool", "_call>\n{\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"P\", "
                "\"unit\": \"c\"}}\n</tool_call>"], ["Let me ", "check.", "CALL"]),
    ("hermes", ["No ", "<tool", "s here."], ["No ", "<tools here."]),
    ("generic", ["  {\"name\": \"get_weather\", ", "\"arguments\": {\"city\": \"P\", \"unit\": \"c\"}}"], ["CALL"]),
    ("generic", ["Hello", " {world}"], ["Hello", " {world}"]),
    ("llama3", ["<|python", "_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"P\", \"unit\": \"c\"}}"],
     ["CALL"]),
])
def test_streamed_text_flows_until_it_may_be_a_call(family, pieces, expected):
    from votive.handlers.generation_tools import ToolCallGeneration
    from votive.models.structured import ToolPlan

    fmt = next(f for f in FORMATS if f.name == family)
    stream = ToolCallGeneration(ScriptedGeneration(pieces), ToolPlan([WEATHER], fmt, {"get_weather"}, "auto"))
    out = list(stream)
    texts = [p for p in out if isinstance(p, str)]
    deltas = [p["tool_calls"][0] for p in out if isinstance(p, dict)]
    assert texts == [e for e in expected if e != "CALL"]
    if "CALL" in expected:
        assert stream.finish_reason == "tool_calls" and deltas[0]["function"]["name"] == "get_weather"
        assert json.loads(deltas[1]["function"]["arguments"]) == {"city": "P", "unit": "c"}
    else:
        assert deltas == [] and stream.finish_reason == "stop"

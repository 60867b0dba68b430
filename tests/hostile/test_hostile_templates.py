"""Hostile chat templates (issue 19, item 3): a GGUF's chat template is untrusted text. Each reproduction runs in
a child process under a 2 GiB address-space limit and a timeout: no crash, no hang, no allocation near 1 GiB,
and a typed error (ChatTemplateLimitError), refused at load when the trial render meets it, and per request with
the template still serving other messages when only some messages trigger it. The bounds are
votive.text.template_bounds'."""

from __future__ import annotations

import json

import pytest
from fake_llm import FakeModel
from hostile_child import call_url as call
from hostile_child import run_limited

from votive.errors import ChatTemplateLimitError, VotiveFault
from votive.handlers.generation import load_handler, make_handler
from votive.text.chat import ChatTemplate

GIB = 1 << 30

# Each hostile expression, as the issue reproduced it, and variants of the same attack.
HOSTILE = {
    "ljust": "{{ 'a'.ljust(3000000000) }}",
    "center-filter": "{{ 'a'|center(3000000000) }}",
    "format-padding": "{{ '{:>3000000000}'.format('a') }}",
    "percent-padding": "{{ '%3000000000d' % 1 }}",
    "nested-ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "string-doubling": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                       "{% endfor %}{{ ns.s|length }}",
    "string-doubling-plus": "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s + ns.s %}"
                            "{% endfor %}{{ ns.s|length }}",
    "list-doubling-printed": "{% set ns = namespace(l=['x']) %}{% for i in range(40) %}{% set ns.l = [ns.l, ns.l] %}"
                             "{% endfor %}{{ ns.l|tojson }}",
    "nested-string-loops": "{% set s = 'x' * 100000 %}{% for a in s %}{% for b in s %}{% endfor %}{% endfor %}",
    "branching-macro": "{% macro f(n) %}{% if n < 60 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}"
                       "{{ f(0) }}",
    "huge-range": "{{ range(10**12)|length }}",
    "recursive-macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "string-times-huge": "{{ 'x' * 10**10 }}",
    "integer-power": "{{ 9 ** 999999 }}",
    "join-amplified": "{{ ('y' * 1000000)|list|join('z' * 100000) }}",
    "bytes-ljust": "{{ 'a'.encode().ljust(3000000000) }}",
    "bytes-times-huge": "{{ 'x'.encode() * 10**10 }}",
    "int-to-bytes": "{{ (1).to_bytes(3000000000, 'big') }}",
    "slices-beyond-budget": "{% set s = 'x' * 8000000 %}{% for i in range(100) %}{% set t = s[1:] %}{% endfor %}",
}

_LOAD = '''
from votive.text.chat import ChatTemplate
try:
    ChatTemplate(sys.argv[1]).compile()
    report(outcome="loaded")
except Exception as e:
    report(outcome="refused", error=error_of(e))
'''

_PER_MESSAGE = '''
from votive.text.chat import ChatTemplate
t = ChatTemplate(sys.argv[1])
t.compile()
results = []
for content in ("hi", "boom", "hi"):
    try:
        results.append({"text": t.render([{"role": "user", "content": content}])})
    except Exception as e:
        results.append({"error": error_of(e)})
report(outcome="rendered", results=results)
'''


def _no_large_allocation(result: dict) -> None:
    assert result["peak_bytes"] < GIB, f"peak memory {result['peak_bytes'] / GIB:.2f} GiB"


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_template_is_refused_at_load(case):
    result = run_limited(_LOAD, HOSTILE[case])
    assert result["outcome"] == "refused", result
    error = result["error"]
    assert error["type"] == "ModelConfigError", error
    assert "trial render" in error["message"] and "MemoryError" not in error["message"], error
    _no_large_allocation(result)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_template_fails_only_the_messages_that_trigger_it(case):
    source = ("{% if messages[-1]['content'] == 'boom' %}" + HOSTILE[case] + "{% endif %}"
              "{{ messages[-1]['content'] }}")
    result = run_limited(_PER_MESSAGE, source)
    first, boom, again = result["results"]
    assert first == {"text": "hi"} and again == {"text": "hi"}, result
    assert "ChatTemplateLimitError" in boom["error"]["classes"], boom
    assert "ChatTemplateError" in boom["error"]["classes"]
    assert "MemoryError" not in boom["error"]["message"], boom
    _no_large_allocation(result)


def test_ordinary_templates_render_within_the_bounds():
    # megabytes of messages through loops, filters, tojson and concatenation stay well inside the bounds
    t = ChatTemplate("{% for m in messages %}{{ '<|' ~ m.role ~ '|>' ~ (m.content | trim) ~ '\\n' }}{% endfor %}"
                     "{{ messages | tojson | length }}")
    big = "word " * 200_000  # 1 MB
    text = t.render([{"role": "user", "content": big}, {"role": "assistant", "content": "ok"}])
    assert text.startswith("<|user|>word word") and text.count("\n") == 2
    assert text.endswith(str(len(json.dumps([{"role": "user", "content": big},
                                               {"role": "assistant", "content": "ok"}]))))


# --- through the generation handler: a 500 in OpenAI's shape, and the next request is answered


TRIGGERED = ("{% if messages[-1]['content'] == 'boom' %}{{ 'a'.ljust(3000000000) }}{% endif %}"
             "{{ messages[-1]['content'] }}")


def _with_template(model: FakeModel, source: str) -> FakeModel:
    template = ChatTemplate(source)
    tokenizer = model.tokenizer
    tokenizer.chat_template_source, tokenizer.chat_template = source, template
    tokenizer.encode_chat = lambda messages, add_generation_prompt=True: tokenizer.encode(
        template.render(messages, add_generation_prompt))
    return model


def test_handler_answers_a_template_failure_as_openai_json_and_keeps_serving():
    handler = make_handler(_with_template(FakeModel(n_ctx=64), TRIGGERED), default_max_tokens=4)
    status, body = call(handler, "/v1/chat/completions", {"messages": [{"role": "user", "content": "boom"}]})
    assert status == 500
    assert body["error"]["type"] == "server_error" and body["error"]["code"] == "chat_template_error"
    assert "chat template cannot render these messages" in body["error"]["message"]
    status, body = call(handler, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and body["choices"][0]["message"]["content"]


def test_handler_refuses_a_template_that_fails_its_trial_render_at_init():
    model = _with_template(FakeModel(n_ctx=64), "{{ 'x' * 10**10 }}")
    with pytest.raises(VotiveFault) as caught:
        load_handler({"VOTIVE_MODEL": "m.gguf"}, load=lambda source, n_ctx=None: model)
    assert caught.value.code == VotiveFault.MODEL_LOAD_ERROR and "trial render" in caught.value.message
    # the same template, only triggered by some messages, loads
    load_handler({"VOTIVE_MODEL": "m.gguf"}, load=lambda source, n_ctx=None: _with_template(FakeModel(), TRIGGERED))


def test_limit_error_is_a_chat_template_error():
    with pytest.raises(ChatTemplateLimitError):
        ChatTemplate(TRIGGERED).render([{"role": "user", "content": "boom"}])

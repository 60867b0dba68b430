"""logprobs / top_logprobs, n > 1, seed, presence / frequency penalty and logit_bias: the sampler's arithmetic by
hand, then through the generation handler on the real SmolLM2 (both answer shapes, streamed and whole), the
VOTIVE_WARM_PREFIX prefix cache, and the official openai client through the function URL emulator.

The bad values of each field (400s) are in test_generation_handler.py's BAD_REQUESTS.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from test_generation_handler import call, stream

from votive.handlers.generation import load_handler, make_handler
from votive.models.sampling import Sampler, SamplingParams, log_softmax, top_logprobs

# --------------------------------------------------------------------------------------------- the sampler


def test_presence_and_frequency_penalties_follow_openais_formula_over_generated_tokens_only():
    logits = np.array([1.0, 2.0, 3.0, 4.0, 0.5], np.float32)
    sampler = Sampler(SamplingParams(presence_penalty=0.5, frequency_penalty=0.25))
    history = [4, 4, 4, 1, 2, 2, 0]  # the prompt: [4, 4, 4]; generated: 1 once, 2 twice, 0 once
    got = sampler.adjust(logits, history, n_prompt=3)
    # mu[j] - c[j] * frequency - (c[j] > 0) * presence
    want = [1.0 - 0.25 - 0.5, 2.0 - 0.25 - 0.5, 3.0 - 0.5 - 0.5, 4.0, 0.5]
    assert np.allclose(got, want) and got.dtype == np.float32
    assert np.array_equal(logits, [1.0, 2.0, 3.0, 4.0, 0.5])  # the model's logits are left alone


def test_logit_bias_is_added_before_the_choice_and_can_ban_or_force():
    logits = np.array([5.0, 1.0, 0.0], np.float32)
    assert np.allclose(Sampler(SamplingParams(logit_bias={0: -2.5, 2: 1})).adjust(logits, []), [2.5, 1, 1])
    assert Sampler(SamplingParams(logit_bias={0: -100}))(logits, []) == 1
    forced = Sampler(SamplingParams(temperature=1.0, seed=1, logit_bias={2: 100}))
    assert {forced(logits, []) for _ in range(50)} == {2}


def test_log_softmax_and_top_logprobs():
    logits = np.array([2.0, 1.0, 3.0, 1.0], np.float32)
    lp = log_softmax(logits)
    assert np.allclose(lp, np.log(np.exp(logits) / np.exp(logits).sum()))
    assert [t for t, _ in top_logprobs(lp, 3)] == [2, 0, 1]  # the tie between 1 and 3 goes to the lower id
    assert top_logprobs(lp, 0) == [] and len(top_logprobs(lp, 9)) == 4
    masked = log_softmax(np.array([2.0, -np.inf, 3.0, -np.inf], np.float32))  # a constraint's mask
    assert [t for t, _ in top_logprobs(masked, 4)] == [2, 0]


SEEDED = """
import json, votive
m = votive.load("smollm2", n_ctx=128)
g = m.start("The three best things about winter are", max_tokens=12, temperature=1.0, top_p=0.95, seed=%d,
            presence_penalty=0.6, frequency_penalty=0.3)
g.text()
print(json.dumps(g.token_ids))
"""


def test_a_seed_gives_the_same_tokens_in_another_process():
    def tokens(seed: int) -> list[int]:
        out = subprocess.run([sys.executable, "-c", SEEDED % seed], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = tokens(1234)
    assert len(first) == 12 and tokens(1234) == first
    assert tokens(1235) != first  # the seed is what fixes them


# ------------------------------------------------------------------------------------------- the handler

PROMPT = "The capital of France is"
CHAT = {"messages": [{"role": "user", "content": "Name a color."}]}


@pytest.fixture(scope="module")
def smollm():
    import votive

    return votive.load("smollm2", n_ctx=256)


@pytest.fixture(scope="module")
def handler(smollm):
    return make_handler(smollm, default_max_tokens=8)


def reference_logprobs(model, prompt_ids: list[int], tokens: list[int]) -> list[np.ndarray]:
    """Each step's log-softmax, in float64 by hand, from the model's own forward passes: the prompt, then one
    token at a time, as decoding runs them (a one-row pass may round unlike a batch, as in llama.cpp)."""
    cache = model.new_cache()
    out, logits = [], model.forward(prompt_ids, cache, 0)
    for i, token in enumerate(tokens):
        z = logits.astype(np.float64)
        out.append(z - z.max() - np.log(np.exp(z - z.max()).sum()))
        logits = model.forward([token], cache, len(prompt_ids) + i)
    return out


def test_completion_logprobs_match_a_fresh_evaluation(handler, smollm):
    status, body = call(handler, "/v1/completions", {"prompt": PROMPT, "max_tokens": 5, "temperature": 0,
                                                     "logprobs": 3})
    assert status == 200, body
    choice = body["choices"][0]
    lp = choice["logprobs"]
    assert set(lp) == {"tokens", "token_logprobs", "top_logprobs", "text_offset"}
    assert "".join(lp["tokens"]) == choice["text"] and len(lp["tokens"]) == body["usage"]["completion_tokens"]
    ids = [smollm.tokenize(t, add_special=False)[0] for t in lp["tokens"]]  # single-token pieces here
    refs = reference_logprobs(smollm, smollm.tokenize(PROMPT), ids)
    for i, (ref, token) in enumerate(zip(refs, ids)):
        assert abs(lp["token_logprobs"][i] - ref[token]) < 1e-12
        assert len(lp["top_logprobs"][i]) == 3
        assert max(lp["top_logprobs"][i].values()) == lp["token_logprobs"][i]  # greedy: the best is the one taken
        best = sorted(ref, reverse=True)[:3]
        assert np.allclose(sorted(lp["top_logprobs"][i].values(), reverse=True), best, rtol=0, atol=1e-12)
    assert lp["text_offset"][0] == len(PROMPT)
    assert lp["text_offset"][1:] == [len(PROMPT) + len("".join(lp["tokens"][:i])) for i in range(1, 5)]


def test_chat_logprobs_shape_streamed_and_whole(handler):
    body = {**CHAT, "max_tokens": 6, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    status, whole = call(handler, "/v1/chat/completions", body)
    assert status == 200, whole
    content = whole["choices"][0]["logprobs"]["content"]
    assert whole["choices"][0]["logprobs"]["refusal"] is None
    assert "".join(entry["token"] for entry in content) == whole["choices"][0]["message"]["content"]
    for entry in content:
        assert set(entry) == {"token", "logprob", "bytes", "top_logprobs"}
        assert bytes(entry["bytes"]).decode("utf-8") == entry["token"] and entry["logprob"] <= 0
        assert [t["logprob"] for t in entry["top_logprobs"]] == sorted((t["logprob"] for t in entry["top_logprobs"]),
                                                                       reverse=True)
        assert len(entry["top_logprobs"]) == 2 and entry["top_logprobs"][0]["token"] == entry["token"]
    events = stream(handler, "/v1/chat/completions", body)
    streamed = [e for chunk in events[1:-1] if chunk["choices"] and chunk["choices"][0]["logprobs"]
                for e in chunk["choices"][0]["logprobs"]["content"]]
    assert streamed == content  # each chunk carries its own tokens' entries
    for chunk in events[1:-2]:
        delta = chunk["choices"][0]["delta"].get("content")
        if delta:
            assert "".join(e["token"] for e in chunk["choices"][0]["logprobs"]["content"]) == delta
    no_top = call(handler, "/v1/chat/completions", {**CHAT, "max_tokens": 2, "logprobs": True})[1]
    assert all(e["top_logprobs"] == [] for e in no_top["choices"][0]["logprobs"]["content"])
    off = call(handler, "/v1/chat/completions", {**CHAT, "max_tokens": 2})[1]
    assert off["choices"][0]["logprobs"] is None


def test_n_choices_share_one_prompt_pass_and_their_usage_adds_up(handler, smollm, monkeypatch):
    calls = []
    forward = type(smollm).forward
    monkeypatch.setattr(smollm, "forward", lambda ids, cache, start: calls.append(len(ids)) or forward(
        smollm, ids, cache, start))
    body = {"prompt": PROMPT, "max_tokens": 6, "temperature": 1.0, "seed": 11, "n": 3}
    status, answer = call(handler, "/v1/completions", body)
    assert status == 200, answer
    n_prompt = len(smollm.tokenize(PROMPT))
    assert calls.count(n_prompt) == 1 and n_prompt > 1  # the prompt once, then one token at a time
    choices = answer["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2] and len({c["text"] for c in choices}) == 3
    again = smollm.start_choices(PROMPT, 3, max_tokens=6, temperature=1.0, seed=11)
    assert [g.text() for g in again] == [c["text"] for c in choices]
    assert answer["usage"]["completion_tokens"] == sum(len(g.token_ids) for g in again)
    alone = smollm.start(PROMPT, max_tokens=6, temperature=1.0, seed=11).text()
    assert choices[0]["text"] == alone  # choice 0 draws as a single generation with that seed does
    assert choices[2]["text"] == smollm.start(PROMPT, max_tokens=6, temperature=1.0, seed=[11, 2]).text()

    events = stream(handler, "/v1/completions", {**body, "stream_options": {"include_usage": True}})
    texts = {0: "", 1: "", 2: ""}
    finished = set()
    for chunk in events[:-2]:
        (c,) = chunk["choices"]
        texts[c["index"]] += c["text"]
        if c["finish_reason"]:
            finished.add(c["index"])
    assert finished == {0, 1, 2} and [texts[i] for i in range(3)] == [c["text"] for c in choices]
    assert events[-2]["usage"] == answer["usage"]


def test_logit_bias_through_the_handler(handler, smollm):
    plain = call(handler, "/v1/completions", {"prompt": PROMPT, "max_tokens": 1, "temperature": 0})[1]
    first = smollm.tokenize(plain["choices"][0]["text"], add_special=False)[0]
    banned = call(handler, "/v1/completions", {"prompt": PROMPT, "max_tokens": 1, "temperature": 0,
                                               "logit_bias": {str(first): -100}})[1]
    assert banned["choices"][0]["text"] != plain["choices"][0]["text"]
    forced = call(handler, "/v1/completions", {"prompt": PROMPT, "max_tokens": 3, "temperature": 0,
                                               "logit_bias": {"7042": 100}})[1]
    assert forced["choices"][0]["text"] == " Paris" * 3
    status, error = call(handler, "/v1/completions", {"prompt": PROMPT, "logit_bias": {"49152": 1}})
    assert status == 400 and error["error"]["param"] == "logit_bias"
    assert "token 49152, not in the vocabulary (0 to 49151)" in error["error"]["message"]
    penalised = call(handler, "/v1/completions", {"prompt": "a a a a a a", "max_tokens": 8, "temperature": 0,
                                                  "frequency_penalty": 2, "presence_penalty": 2})[1]
    plain = call(handler, "/v1/completions", {"prompt": "a a a a a a", "max_tokens": 8, "temperature": 0})[1]
    assert penalised["choices"][0]["text"] != plain["choices"][0]["text"]


def test_warm_prefix_is_cached_at_init_and_changes_no_answer(smollm):
    system = {"role": "system", "content": "You answer questions about the solar system in one sentence. " * 6}
    messages = [system, {"role": "user", "content": "How many planets are there?"}]
    load = lambda source, n_ctx=None: smollm  # noqa: E731
    warm = load_handler({"VOTIVE_MODEL": "smollm2", "VOTIVE_WARM_PREFIX": json.dumps([system])}, load=load)
    cold = load_handler({"VOTIVE_MODEL": "smollm2", "VOTIVE_PREFIX_CACHE_MB": "0"}, load=load)
    body = {"messages": messages, "max_tokens": 8, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    status, hot = call(warm, "/v1/chat/completions", body)
    assert status == 200, hot
    n_system = len(smollm.tokenizer.encode_chat([system], add_generation_prompt=False))
    assert hot["usage"]["prompt_tokens_details"] == {"cached_tokens": n_system}
    status, plain = call(cold, "/v1/chat/completions", body)
    assert "prompt_tokens_details" not in plain["usage"]
    assert hot["choices"] == plain["choices"]  # text and logprobs, to the bit
    story = "Once upon a time, in a kingdom by the sea, there lived"
    text = load_handler({"VOTIVE_MODEL": "smollm2", "VOTIVE_WARM_PREFIX": story}, load=load)
    usage = call(text, "/v1/completions", {"prompt": story + " an old fisherman who had never once caught a fish",
                                           "max_tokens": 1})[1]["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == len(smollm.tokenize(story))


def test_settings_for_n_and_the_prefix_cache():
    from fake_llm import FakeModel

    from votive.errors import VotiveFault
    from votive.handlers.generation import Settings

    assert Settings.from_env({"VOTIVE_MODEL": "m"}).prefix_cache_mb == 256
    assert Settings.from_env({"VOTIVE_MODEL": "m", "VOTIVE_PREFIX_CACHE_MB": "00"}).prefix_cache_mb == 0
    with pytest.raises(VotiveFault, match="VOTIVE_PREFIX_CACHE_MB='lots' is not a positive integer"):
        Settings.from_env({"VOTIVE_MODEL": "m", "VOTIVE_PREFIX_CACHE_MB": "lots"})
    handler = load_handler({"VOTIVE_MODEL": "m", "VOTIVE_MAX_N": "2"}, load=lambda source, n_ctx=None: FakeModel())
    status, error = call(handler, "/v1/completions", {"prompt": "a", "n": 3, "max_tokens": 2})
    assert status == 400 and "'n' is 3; this endpoint returns 1 to 2 choices" in error["error"]["message"]


def test_a_bad_warm_prefix_is_a_config_error(smollm):
    from votive.errors import VotiveFault

    with pytest.raises(VotiveFault) as err:
        load_handler({"VOTIVE_MODEL": "smollm2", "VOTIVE_WARM_PREFIX": "[{\"role\": \"robot\"}]"},
                     load=lambda source, n_ctx=None: smollm)
    assert err.value.code == VotiveFault.CONFIG_ERROR and err.value.message.startswith("VOTIVE_WARM_PREFIX:")


# ------------------------------------------------------------------------------------------ the openai client


def test_openai_client_parses_every_new_shape(smollm):
    openai = pytest.importorskip("openai")
    from votive.emulators.function_url import FunctionUrlServer

    server = FunctionUrlServer(make_handler(smollm, default_max_tokens=8), port=0)
    server.start()
    try:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        chat = client.chat.completions.create(model="m", messages=CHAT["messages"], max_tokens=4, temperature=0,
                                              logprobs=True, top_logprobs=3, n=2, seed=1)
        assert [c.index for c in chat.choices] == [0, 1]
        content = chat.choices[0].logprobs.content
        assert "".join(t.token for t in content) == chat.choices[0].message.content
        assert len(content[0].top_logprobs) == 3 and content[0].top_logprobs[0].logprob == content[0].logprob
        assert bytes(content[0].bytes).decode() == content[0].token
        assert chat.usage.completion_tokens == sum(len(c.logprobs.content) for c in chat.choices)

        chunks = list(client.chat.completions.create(
            model="m", messages=CHAT["messages"], max_tokens=4, temperature=0.7, seed=2, logprobs=True, n=2,
            presence_penalty=0.5, frequency_penalty=0.5, logit_bias={"7042": -5}, stream=True,
            stream_options={"include_usage": True}))
        indexes = {c.index for chunk in chunks for c in chunk.choices}
        assert indexes == {0, 1} and chunks[-1].usage.completion_tokens > 0
        entries = [e for chunk in chunks for c in chunk.choices if c.logprobs and c.index == 1
                   for e in c.logprobs.content]
        text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices if c.index == 1)
        assert "".join(e.token for e in entries) == text and text

        completion = client.completions.create(model="m", prompt=PROMPT, max_tokens=3, temperature=0, logprobs=2)
        lp = completion.choices[0].logprobs
        assert "".join(lp.tokens) == completion.choices[0].text and len(lp.top_logprobs[0]) == 2
        assert lp.text_offset[0] == len(PROMPT) and all(x <= 0 for x in lp.token_logprobs)
        streamed = list(client.completions.create(model="m", prompt=PROMPT, max_tokens=3, temperature=0,
                                                  logprobs=1, n=2, stream=True))
        tokens = [t for chunk in streamed for c in chunk.choices if c.index == 0 and c.logprobs
                  for t in c.logprobs.tokens]
        assert "".join(tokens) == completion.choices[0].text  # greedy: both choices are the same text
        with pytest.raises(openai.BadRequestError, match="'top_logprobs' is 21"):
            client.chat.completions.create(model="m", messages=CHAT["messages"], logprobs=True, top_logprobs=21)
    finally:
        server.stop()

"""LLaMA (SmolLM2-135M Q4_1) and Gemma 3 (270M Q4_K_M) decoders against llama.cpp's outputs on the same files.

The reference (../shared/reference/*_tokens.json) holds, per prompt, llama.cpp's prompt token ids, its greedy
continuation and its top-10 logits after the prompt. llama.cpp quantizes activations to 8 bits inside its dot
products and we may not round identically, so logits are compared within 1% of the logit range (max - min over
the vocabulary) and greedy text over the first 32 tokens.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import votive
from votive.errors import InputError

MODELS = {"smollm2": "smollm2_135m_tokens.json", "gemma3": "gemma3_270m_tokens.json"}


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_and_reference(request, reference_dir):
    model = votive.load(request.param, n_ctx=512)
    reference = json.loads((reference_dir / MODELS[request.param]).read_text())
    return model, reference["records"]


def test_prompt_token_ids_equal_llama_cpp(model_and_reference):
    model, records = model_and_reference
    for r in records:
        assert model.tokenize(r["prompt"]) == r["prompt_token_ids"], r["prompt"]


def test_first_step_logits_match_llama_cpp(model_and_reference):
    model, records = model_and_reference
    for r in records:
        logits = model.logits(r["prompt_token_ids"])
        assert logits.shape == (model.cfg.vocab_size,) and np.isfinite(logits).all()
        top10 = np.argsort(-logits, kind="stable")[:10]
        assert set(top10.tolist()) == set(r["first_step_top10_ids"]), r["prompt"]
        tolerance = 0.01 * float(logits.max() - logits.min())
        got = logits[r["first_step_top10_ids"]]
        assert np.abs(got - np.asarray(r["first_step_top10_logits"])).max() <= tolerance, r["prompt"]


def test_greedy_continuation_equals_llama_cpp(model_and_reference):
    model, records = model_and_reference
    for r in records:
        want = r["greedy_token_ids"][:32]
        gen = model.start(r["prompt_token_ids"], max_tokens=len(want), temperature=0)
        text = gen.text()
        assert gen.token_ids == want, r["prompt"]
        assert text == model.tokenizer.decode(want)


def test_streamed_pieces_join_to_the_text(model_and_reference):
    model, records = model_and_reference
    r = records[0]
    pieces = list(model.generate(r["prompt"], max_tokens=8, stream=True))
    assert len(pieces) >= 2 and "".join(pieces) == model.generate(r["prompt"], max_tokens=8)


def test_bad_generation_requests_are_input_errors(model_and_reference):
    model, _ = model_and_reference
    with pytest.raises(InputError, match="the prompt is 600 tokens but the context holds 512"):
        model.start([5] * 600)
    with pytest.raises(InputError, match="max_tokens must be a positive integer, got 0"):
        model.start("hi", max_tokens=0)
    with pytest.raises(InputError, match="unknown sampling parameter 'temprature'"):
        model.start("hi", temprature=0.5)
    with pytest.raises(InputError, match="top_p must be in \\(0, 1\\], got 0"):
        model.start("hi", top_p=0).text()


def test_sampling_is_reproducible_with_a_seed(model_and_reference):
    model, records = model_and_reference
    prompt = records[0]["prompt"]
    kwargs = dict(max_tokens=6, temperature=0.9, top_p=0.95, top_k=40, seed=7)
    assert model.generate(prompt, **kwargs) == model.generate(prompt, **kwargs)


def test_stop_string_cuts_the_text(model_and_reference):
    model, records = model_and_reference
    r = records[0]
    full = model.tokenizer.decode(r["greedy_token_ids"][:16])
    stop = full[3:6]
    gen = model.start(r["prompt_token_ids"], max_tokens=16, stop=[stop])
    assert gen.text() == full[: full.index(stop)] and gen.finish_reason == "stop"

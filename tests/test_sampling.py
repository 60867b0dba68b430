"""The sampler and the generation loop on hand-made logits: each knob does what llama.cpp's does."""

from __future__ import annotations

import numpy as np
import pytest

from votive.errors import InputError
from votive.models.decoding import Generation, _stop_prefix_len
from votive.models.sampling import Sampler, SamplingParams

LOGITS = np.array([1.0, 3.0, 2.0, 0.5, 2.9], np.float32)


def draws(n=2000, **kw):
    s = Sampler(SamplingParams(seed=0, **kw))
    return np.bincount([s(LOGITS, []) for _ in range(n)], minlength=len(LOGITS))


def test_greedy_is_argmax():
    assert Sampler(SamplingParams())(LOGITS, []) == 1


def test_top_k_keeps_the_k_best():
    counts = draws(temperature=1.0, top_k=2)
    assert set(np.flatnonzero(counts)) == {1, 4}


def test_top_p_keeps_the_smallest_set_reaching_p():
    p = np.exp(LOGITS - LOGITS.max())
    p /= p.sum()  # sorted: 1 (.38), 4 (.35), 2 (.14), 0 (.05), 3 (.03)
    assert p[1] + p[4] < 0.8 < p[1] + p[4] + p[2]
    assert set(np.flatnonzero(draws(temperature=1.0, top_p=0.8))) == {1, 4, 2}


def test_min_p_drops_tokens_far_below_the_best():
    # p(0)/p(1) = e^-2 = 0.135, p(2)/p(1) = e^-1 = 0.37
    assert set(np.flatnonzero(draws(temperature=1.0, min_p=0.2))) == {1, 2, 4}


def test_temperature_sharpens_and_flattens():
    cold, hot = draws(temperature=0.2), draws(temperature=5.0)
    assert cold[1] > hot[1] and cold[3] <= hot[3]


def test_repetition_penalty_follows_llama_cpp():
    s = Sampler(SamplingParams(repetition_penalty=2.0))
    # token 1 (3.0) seen -> 1.5, below token 4 (2.9): greedy moves to 4
    assert s(LOGITS, [1]) == 4
    negative = np.array([-1.0, -0.9, -3.0], np.float32)
    assert Sampler(SamplingParams(repetition_penalty=2.0))(negative, [1]) == 0  # -0.9 -> -1.8


def test_seed_reproduces_and_differs():
    a, b, c = (Sampler(SamplingParams(temperature=1.0, seed=s)) for s in (1, 1, 2))
    seq = lambda smp: [smp(LOGITS, []) for _ in range(50)]  # noqa: E731
    assert seq(a) == seq(b) != seq(c)


@pytest.mark.parametrize("field,value,expected", [
    ("temperature", -1, "temperature must be between 0 and 5, got -1"),
    ("top_p", 1.5, "top_p must be in (0, 1], got 1.5"),
    ("min_p", -0.1, "min_p must be in [0, 1], got -0.1"),
    ("top_k", -3, "top_k must be an integer >= 0, got -3"),
    ("repetition_penalty", 0, "repetition_penalty must be in (0, 10], got 0"),
])
def test_out_of_range_parameters_name_themselves(field, value, expected):
    with pytest.raises(InputError) as e:
        Sampler(SamplingParams(**{field: value}))
    assert str(e.value) == expected


# ------------------------------------------------------------------------- the loop, on a scripted model
class ScriptedTokenizer:
    def __init__(self, pieces):
        self.pieces = pieces

    def stream_decoder(self):
        pieces = self.pieces

        class D:
            def push(self, t):
                return pieces[t]

            def flush(self):
                return ""

        return D()


class ScriptedModel:
    """Emits tokens 1, 2, 3, ... (each the argmax of its logits); token 0 is EOS. Counts forward calls."""

    def __init__(self, script, pieces, n_ctx=64):
        self.script, self.tokenizer, self.n_ctx = list(script), ScriptedTokenizer(pieces), n_ctx
        self.eos_ids, self.calls = {0}, 0

    def new_cache(self):
        return None

    def forward(self, ids, cache, start):
        logits = np.zeros(len(self.tokenizer.pieces), np.float32)
        logits[self.script[self.calls]] = 1.0
        self.calls += 1
        return logits


def run(script, pieces, max_tokens=10, stop=()):
    model = ScriptedModel(script, pieces)
    gen = Generation(model, [5], max_tokens, SamplingParams(), list(stop))
    return list(gen), gen, model


PIECES = ["<eos>", "Hel", "lo", " wor", "ld", "!", "x"]


def test_eos_stops_with_finish_reason_stop():
    pieces, gen, _ = run([1, 2, 0], PIECES)
    assert pieces == ["Hel", "lo"] and gen.finish_reason == "stop" and gen.completion_tokens == 2


def test_max_tokens_gives_finish_reason_length():
    pieces, gen, _ = run([1, 2, 3, 4, 5], PIECES, max_tokens=3)
    assert "".join(pieces) == "Hello wor" and gen.finish_reason == "length"


def test_stop_string_spanning_tokens_is_held_back_and_cut():
    pieces, gen, model = run([1, 2, 3, 4, 5, 6], PIECES, stop=["o wo"])
    assert pieces == ["Hel", "l"] and gen.finish_reason == "stop"
    assert model.calls == 3  # prompt + 2 steps: nothing is computed after the token that completed the stop


def test_held_back_text_that_is_not_a_stop_is_released():
    pieces, gen, _ = run([1, 2, 3, 0], PIECES, stop=["lox"])
    assert "".join(pieces) == "Hello wor" and gen.finish_reason == "stop"


def test_closing_a_generation_stops_the_computation():
    model = ScriptedModel([1, 2, 3, 4, 5, 6, 1, 2], PIECES)
    gen = Generation(model, [5], 8, SamplingParams(), [])
    it = iter(gen)
    next(it)
    gen.close()
    assert list(it) == [] and model.calls == 1


def test_stop_prefix_length():
    assert _stop_prefix_len("abc", ["cde"]) == 1
    assert _stop_prefix_len("abcd", ["bcdx", "d"]) == 3
    assert _stop_prefix_len("abc", ["x"]) == 0

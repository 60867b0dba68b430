"""Choosing the next token from logits: greedy, temperature, top-k, top-p, min-p, repetition, presence and
frequency penalties, logit bias, seed.

The order follows llama.cpp's default sampler chain (common/sampling.cpp): logit bias and penalties, then
top-k, top-p and min-p filtering, then temperature and a seeded draw. Temperature 0 means greedy (argmax), as
llama.cpp and the OpenAI API treat it.

Presence and frequency penalties follow OpenAI's definition ("Frequency and presence penalties" in its API
guide): logit[j] -= frequency_penalty * c[j] + presence_penalty * (c[j] > 0), c[j] the number of times token j
was generated so far in this completion. Unlike llama.cpp (which counts the last penalty_last_n tokens, prompt
included), the prompt does not count: a system prompt full of a word does not push that word out of the answer.
The draw is numpy's PCG64 seeded with `seed`, so a seed gives the same tokens in any process, on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from votive.errors import InputError


@dataclass
class SamplingParams:
    """Every knob, with the OpenAI/llama.cpp meaning and the range we accept."""

    temperature: float = 0.0  # 0 = greedy; else logits / temperature before the draw; [0, 5]
    top_k: int = 0  # keep the k most likely tokens; 0 = off
    top_p: float = 1.0  # keep the smallest set whose probability reaches p; 1 = off; (0, 1]
    min_p: float = 0.0  # drop tokens below min_p * p(best); 0 = off; [0, 1]
    repetition_penalty: float = 1.0  # divide positive / multiply negative logits of seen tokens; 1 = off
    repeat_last_n: int = 64  # how many recent tokens the penalty looks at
    seed: int | list[int] | None = None  # fixed seed for reproducible draws (a list: numpy SeedSequence entropy)
    presence_penalty: float = 0.0  # OpenAI's: minus this from tokens generated at least once; [-2, 2]
    frequency_penalty: float = 0.0  # OpenAI's: minus this per time a token was generated; [-2, 2]
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit; [-100, 100] each

    def validate(self) -> "SamplingParams":
        checks = [
            ("temperature", 0 <= self.temperature <= 5, "between 0 and 5"),
            ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an integer >= 0"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("min_p", 0 <= self.min_p <= 1, "in [0, 1]"),
            ("repetition_penalty", 0 < self.repetition_penalty <= 10, "in (0, 10]"),
            ("repeat_last_n", isinstance(self.repeat_last_n, int) and self.repeat_last_n >= 0, "an integer >= 0"),
            ("presence_penalty", -2 <= self.presence_penalty <= 2, "between -2 and 2"),
            ("frequency_penalty", -2 <= self.frequency_penalty <= 2, "between -2 and 2"),
            ("logit_bias", all(-100 <= b <= 100 for b in (self.logit_bias or {}).values()),
             "a map of token ids to biases between -100 and 100"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise InputError(f"{name} must be {expected}, got {getattr(self, name)!r}")
        return self


class Sampler:
    """Stateful per generation: owns the random generator so a seed reproduces the whole sequence."""

    def __init__(self, params: SamplingParams):
        self.p = params.validate()
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history: list[int], n_prompt: int = 0) -> int:
        """logits: (vocab,) float32 for the next position; history: token ids so far, the first n_prompt of them
        the prompt's."""
        return self.pick(self.adjust(logits, history, n_prompt))

    def adjust(self, logits: np.ndarray, history: list[int], n_prompt: int = 0) -> np.ndarray:
        """The logits after the logit bias and the penalties, before any filtering or temperature: the
        distribution `logprobs` reports (as llama.cpp's server does, and OpenAI's API where it can be checked)."""
        p = self.p
        if p.logit_bias:
            logits = logits.copy()
            ids = np.fromiter(p.logit_bias, np.int64, len(p.logit_bias))
            logits[ids] += np.fromiter(p.logit_bias.values(), np.float32, len(ids))
        if p.repetition_penalty != 1.0 and history and p.repeat_last_n:
            logits = logits.copy()
            seen = np.unique(np.asarray(history[-p.repeat_last_n :], np.int64))
            vals = logits[seen]
            logits[seen] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and len(history) > n_prompt:
            logits = logits.copy()
            seen, counts = np.unique(np.asarray(history[n_prompt:], np.int64), return_counts=True)
            logits[seen] -= (p.frequency_penalty * counts + p.presence_penalty).astype(np.float32)
        return logits

    def pick(self, logits: np.ndarray) -> int:
        """The next token from adjusted logits: argmax at temperature 0, else filtered and drawn."""
        p = self.p
        if p.temperature == 0:
            return int(np.argmax(logits))
        ids = np.argsort(-logits, kind="stable")  # most likely first
        if p.top_k:
            ids = ids[: p.top_k]
        z = logits[ids].astype(np.float64)
        probs = np.exp(z - z[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1  # smallest prefix reaching top_p
            ids, z, probs = ids[:keep], z[:keep], probs[:keep]
        if p.min_p > 0:
            keep = probs >= p.min_p * probs[0]
            ids, z = ids[keep], z[keep]
        z = z / p.temperature
        w = np.exp(z - z.max())
        return int(ids[self.rng.choice(len(ids), p=w / w.sum())])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """(vocab,) -> log probabilities (vocab,) float64, max-shifted so no term overflows."""
    z = logits.astype(np.float64)
    z -= z.max()
    return z - np.log(np.exp(z).sum())


def top_logprobs(logprobs: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k most likely (token id, logprob), most likely first; ties by lower id, as a stable sort gives.
    Tokens a constraint forbids (logprob -inf) are never listed: JSON has no infinity."""
    if k <= 0:
        return []
    best = np.argpartition(-logprobs, k - 1)[:k] if k < logprobs.size else np.arange(logprobs.size)
    best = best[np.lexsort((best, -logprobs[best]))]
    return [(int(i), float(logprobs[i])) for i in best if np.isfinite(logprobs[i])]

"""Choosing the next token from logits: greedy, temperature, top-k, top-p, min-p, repetition penalty, seed.

The order follows llama.cpp's default sampler chain (common/sampling.cpp): penalties, then top-k, top-p and
min-p filtering, then temperature and a seeded draw. Temperature 0 means greedy (argmax), as llama.cpp and the
OpenAI API treat it.
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
    seed: int | None = None  # fixed seed for reproducible draws

    def validate(self) -> "SamplingParams":
        checks = [
            ("temperature", 0 <= self.temperature <= 5, "between 0 and 5"),
            ("top_k", isinstance(self.top_k, int) and self.top_k >= 0, "an integer >= 0"),
            ("top_p", 0 < self.top_p <= 1, "in (0, 1]"),
            ("min_p", 0 <= self.min_p <= 1, "in [0, 1]"),
            ("repetition_penalty", 0 < self.repetition_penalty <= 10, "in (0, 10]"),
            ("repeat_last_n", isinstance(self.repeat_last_n, int) and self.repeat_last_n >= 0, "an integer >= 0"),
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

    def __call__(self, logits: np.ndarray, history: list[int]) -> int:
        """logits: (vocab,) float32 for the next position; history: token ids so far (prompt included)."""
        p = self.p
        if p.repetition_penalty != 1.0 and history and p.repeat_last_n:
            logits = logits.copy()
            seen = np.unique(np.asarray(history[-p.repeat_last_n :], np.int64))
            vals = logits[seen]
            logits[seen] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
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

"""The generation loop every decoder shares: prompt in one batched pass, then one token at a time, with
sampling, stop tokens, stop strings, a token budget and text streamed as whole UTF-8 pieces.

A decoder file supplies `forward(ids, cache, start) -> logits of the last position` and `new_cache()`;
`TextGenerator` turns that into `generate`, `stream` and `tokenize`.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from votive.errors import InputError
from votive.models.sampling import Sampler, SamplingParams


class Generation:
    """One generation in progress: iterate it for text pieces; afterwards read finish_reason and the counts.

    Stopping it early (`close()`, or dropping the iterator, as a handler does when its client disconnects)
    stops the computation: no token is computed that nobody will read.
    """

    def __init__(self, model, prompt_ids: list[int], max_tokens: int, params: SamplingParams, stop: list[str]):
        self.model = model
        self.prompt_ids = prompt_ids
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: str | None = None  # "stop" (EOS or a stop string) or "length"
        self.token_ids: list[int] = []
        self._max_tokens = max_tokens
        self._sampler = Sampler(params)
        self._stop = [s for s in stop if s]
        self._pieces = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._pieces

    def close(self) -> None:
        self._pieces.close()

    def text(self) -> str:
        """Run to the end and return everything generated."""
        return "".join(self._pieces)

    def _run(self) -> Iterator[str]:
        model = self.model
        cache = model.new_cache()
        logits = model.forward(self.prompt_ids, cache, 0)  # (vocab,): the whole prompt in one pass
        history = list(self.prompt_ids)
        decoder = model.tokenizer.stream_decoder()  # yields text only once a UTF-8 character is complete
        pending = ""  # decoded text held back: it may be the start of a stop string
        for _ in range(self._max_tokens):
            token = self._sampler(logits, history)
            if token in model.eos_ids:
                self.finish_reason = "stop"
                break
            history.append(token)
            self.token_ids.append(token)
            self.completion_tokens += 1
            pending += decoder.push(token)
            cut = _find_stop(pending, self._stop)
            if cut is not None:
                if cut:
                    yield pending[:cut]
                self.finish_reason = "stop"
                return
            ready = len(pending) - _stop_prefix_len(pending, self._stop)
            if ready > 0:
                yield pending[:ready]
                pending = pending[ready:]
            if len(history) >= model.n_ctx:
                break
            logits = model.forward([token], cache, len(history) - 1)
        if self.finish_reason is None:
            self.finish_reason = "length"
        pending += decoder.flush()
        if pending:
            yield pending


def _find_stop(text: str, stops: list[str]) -> int | None:
    hits = [text.find(s) for s in stops if s in text]
    return min(hits) if hits else None


def _stop_prefix_len(text: str, stops: list[str]) -> int:
    """Length of the longest tail of `text` that begins some stop string (held back until resolved)."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


class TextGenerator:
    """What a decoder gains from `forward`: tokenize, generate, stream. Needs tokenizer, n_ctx, eos_ids."""

    kind = "generation"

    def tokenize(self, text: str, add_special: bool = True) -> list[int]:
        """Token ids of `text`, with BOS when the model file asks for it and special tokens parsed."""
        return self.tokenizer.encode(text, add_special=add_special)

    def start(self, prompt, *, max_tokens: int = 256, stop=None, **sampling) -> Generation:
        """Begin a generation. `prompt` is text or a list of token ids; `sampling` are SamplingParams fields."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise InputError("the prompt is empty")
        if len(ids) >= self.n_ctx:
            raise InputError(f"the prompt is {len(ids)} tokens but the context holds {self.n_ctx}")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        unknown = set(sampling) - set(SamplingParams.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown sampling parameter {sorted(unknown)[0]!r}")
        if isinstance(stop, str):
            stop = [stop]
        max_tokens = min(max_tokens, self.n_ctx - len(ids))
        return Generation(self, ids, max_tokens, SamplingParams(**sampling), list(stop or []))

    def generate(self, prompt, *, max_tokens: int = 256, stream: bool = False, stop=None, **sampling):
        """Generated text (a str), or with stream=True an iterator of text pieces as tokens are produced.

        Example:
            >>> llm = votive.load("smollm2")                                  # doctest: +SKIP
            >>> llm.generate("The capital of France is", max_tokens=4)        # doctest: +SKIP
            ' Paris.\\n\\n'
        """
        gen = self.start(prompt, max_tokens=max_tokens, stop=stop, **sampling)
        return iter(gen) if stream else gen.text()

    def logits(self, prompt) -> np.ndarray:
        """Logits (vocab,) for the position after `prompt` (text or ids): for tests and scoring."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        return self.forward(ids, self.new_cache(), 0)

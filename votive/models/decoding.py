"""The generation loop every decoder shares: prompt in batched passes, then one token at a time, with
sampling, stop tokens, stop strings, a token budget, log probabilities and text streamed as whole UTF-8 pieces.

A decoder file supplies `forward(ids, cache, start) -> logits of the last position`, `new_cache()` (a cache
with `prefix`, `load_prefix` and `fork`, as llama.KVCache) and `prompt_block`; `TextGenerator` turns that into
`generate`, `stream` and `tokenize`.

A prompt is evaluated once per request: `n` choices continue copies of its cache (`PromptPass.fork`), and a
`votive.models.prefix_cache.PrefixCache` lends the cache of a prompt that starts the same way, so only the rest
is computed. A prompt gives the same bits whether part of it came from the cache or not (`prompt_passes`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from votive.errors import InputError, check_deadline
from votive.models.config_checks import check_finite
from votive.models.sampling import Sampler, SamplingParams, log_softmax, top_logprobs

MAX_TOP_LOGPROBS = 20  # alternatives per token, as OpenAI's top_logprobs allows
# The fewest rows a prompt pass may have where passes are not cut (the CPU's C kernels, as llama.cpp's CPU
# backend): below 8 rows a K-quant product is summed in another order (vec_dot instead of the tiled kernel), and
# a single row's attention rounds unlike a batch's. A row's result does not otherwise depend on the pass.
MIN_PASS_ROWS = 8


def prompt_passes(model) -> tuple[int, int]:
    """(block, min_rows): how a prompt may be split into passes without changing a bit. With the model's
    `prompt_block` (the GPU's, whose products are chosen by row count), passes are cut at its multiples, from
    position 0, whatever is cached; without one, the prompt is one pass and a cached prefix leaves at least
    MIN_PASS_ROWS rows to compute. The prefix cache lends and keeps only prefixes that keep to these rules."""
    block = getattr(model, "prompt_block", 0)
    return (block, 1) if block else (0, MIN_PASS_ROWS)


def evaluate_prompt(model, ids: list[int], cache, start: int = 0) -> np.ndarray:
    """Run positions start.. of `ids` into `cache` (0..start-1 filled already); logits (vocab,) of the last.
    Passes are cut at multiples of model.prompt_block, counted from position 0, so the cut points do not
    depend on `start` when it is itself a multiple."""
    block = getattr(model, "prompt_block", 0)
    if not block:
        return model.forward(ids[start:], cache, start)
    logits = None
    while start < len(ids):
        end = min(len(ids), (start // block + 1) * block)
        logits = model.forward(ids[start:end], cache, start)
        start = end
    return logits


class PromptPass:
    """One request's prompt, evaluated on first use and shared by its choices: each `fork` is a cache of its
    own holding the prompt (a copy, except for the last taker) and the logits after it."""

    def __init__(self, model, ids: list[int], forks: int = 1, prefix_cache=None):
        self.model = model
        self.ids = ids
        self.cached_tokens = 0  # prompt positions lent by the prefix cache
        self._forks_left = forks
        self._prefix_cache = prefix_cache
        self._state = None  # (cache, logits) once evaluated

    def fork(self):
        if self._state is None:
            cache = self.model.new_cache()
            block, min_rows = prompt_passes(self.model)
            if self._prefix_cache is not None:
                self.cached_tokens = self._prefix_cache.restore(self.ids, cache, block, min_rows)
            logits = evaluate_prompt(self.model, self.ids, cache, self.cached_tokens)
            if self._prefix_cache is not None:
                self._prefix_cache.store(self.ids, cache, block, min_rows)
            self._state = (cache, logits)
        cache, logits = self._state
        self._forks_left -= 1
        if self._forks_left > 0:
            return cache.fork(self.model.ops, len(self.ids)), logits
        self._state = None  # the last taker writes its tokens into the original
        return cache, logits


class Generation:
    """One generation in progress: iterate it for text pieces; afterwards read finish_reason and the counts.

    Stopping it early (`close()`, or dropping the iterator, as a handler does when its client disconnects)
    stops the computation: no token is computed that nobody will read.
    """

    def __init__(self, model, prompt: PromptPass | list[int], max_tokens: int, params: SamplingParams,
                 stop: list[str], logprobs: int | None = None):
        if not isinstance(prompt, PromptPass):
            prompt = PromptPass(model, prompt)
        self.model = model
        self.prompt = prompt
        self.prompt_ids = prompt.ids
        self.prompt_tokens = len(prompt.ids)
        self.completion_tokens = 0
        self.finish_reason: str | None = None  # "stop" (EOS or a stop string) or "length"
        self.token_ids: list[int] = []
        # With logprobs (the number of alternatives, 0 to MAX_TOP_LOGPROBS), one entry per token generated:
        # (token id, its logprob, [(id, logprob) of the most likely alternatives]); see Sampler.adjust for which
        # distribution.
        self.logprobs: list[tuple[int, float, list[tuple[int, float]]]] | None = None if logprobs is None else []
        self._top = logprobs or 0
        self._max_tokens = max_tokens
        self._sampler = Sampler(params)
        # Optional, set before iterating: an object with mask(logits) -> logits (tokens it forbids at -inf) and
        # advance(token), e.g. votive.models.json_constraint.JsonConstraint for enforced JSON and tool calls.
        self.constraint = None
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
        cache, logits = self.prompt.fork()  # (vocab,): after the whole prompt
        history = list(self.prompt_ids)
        n_prompt = len(history)
        decoder = model.tokenizer.stream_decoder()  # yields text only once a UTF-8 character is complete
        pending = ""  # decoded text held back: it may be the start of a stop string
        for _ in range(self._max_tokens):
            check_finite(logits, lambda: f"{getattr(model, 'model_id', 'the model')}: the logits at position "
                                         f"{len(history)}")  # never sample from NaN
            adjusted = self._sampler.adjust(logits, history, n_prompt)
            if self.constraint is not None:
                adjusted = self.constraint.mask(adjusted)
            token = self._sampler.pick(adjusted)
            if self.constraint is not None:
                self.constraint.advance(token)
            if token in model.eos_ids:
                self.finish_reason = "stop"
                break
            history.append(token)
            self.token_ids.append(token)
            if self.logprobs is not None:
                lp = log_softmax(adjusted)
                self.logprobs.append((token, float(lp[token]), top_logprobs(lp, self._top)))
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
            # The invocation's deadline (votive.errors.check_deadline): past it, stop before the next token.
            check_deadline()
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

    def start(self, prompt, *, max_tokens: int = 256, stop=None, logprobs: int | None = None, prefix_cache=None,
              **sampling) -> Generation:
        """Begin a generation. `prompt` is text or a list of token ids; `sampling` are SamplingParams fields;
        `logprobs` (0..MAX_TOP_LOGPROBS alternatives) records each token's log probability; `prefix_cache` (a
        PrefixCache) lends and keeps prompt prefixes."""
        return self.start_choices(prompt, 1, max_tokens=max_tokens, stop=stop, logprobs=logprobs,
                                  prefix_cache=prefix_cache, **sampling)[0]

    def start_choices(self, prompt, n: int, *, max_tokens: int = 256, stop=None, logprobs: int | None = None,
                      prefix_cache=None, **sampling) -> list[Generation]:
        """`n` generations continuing one prompt, evaluated once. With a seed, choice i draws from
        default_rng([seed, i]) (choice 0 from default_rng(seed), as a single generation), so the choices differ
        and each reproduces."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise InputError("the prompt is empty")
        if len(ids) >= self.n_ctx:
            raise InputError(f"the prompt is {len(ids)} tokens but the context holds {self.n_ctx}")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise InputError(f"max_tokens must be a positive integer, got {max_tokens!r}")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise InputError(f"n must be a positive integer, got {n!r}")
        if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
            raise InputError(f"logprobs must be from 0 to {MAX_TOP_LOGPROBS}, got {logprobs!r}")
        unknown = set(sampling) - set(SamplingParams.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown sampling parameter {sorted(unknown)[0]!r}")
        bias = sampling.get("logit_bias")
        if bias and not all(isinstance(t, int) and 0 <= t < self.vocab_size for t in bias):
            bad = next(t for t in bias if not (isinstance(t, int) and 0 <= t < self.vocab_size))
            raise InputError(f"logit_bias names token {bad!r}, not in the vocabulary (0 to {self.vocab_size - 1})")
        if isinstance(stop, str):
            stop = [stop]
        max_tokens = min(max_tokens, self.n_ctx - len(ids))
        params = [SamplingParams(**sampling).validate() for _ in range(n)]
        seed = params[0].seed
        for i, p in enumerate(params[1:], 1):
            p.seed = None if seed is None else [seed, i]
        prompt_pass = PromptPass(self, ids, n, prefix_cache)
        return [Generation(self, prompt_pass, max_tokens, p, list(stop or []), logprobs) for p in params]

    def structured(self):
        """Enforced JSON output and tool calls for this model's requests (votive.models.structured)."""
        from votive.models.structured import Structured

        return Structured(self.tokenizer)

    @property
    def vocab_size(self) -> int:
        return self.cfg.vocab_size

    def new_prefix_cache(self, budget_bytes: int):
        """An empty `votive.models.prefix_cache.PrefixCache` of `budget_bytes` for this model's prompts."""
        from votive.models.prefix_cache import PrefixCache

        return PrefixCache(budget_bytes)

    def warm_prefix(self, prompt, prefix_cache) -> int:
        """Evaluate `prompt` (text or ids) into `prefix_cache`, kept there for good (VOTIVE_WARM_PREFIX, at init);
        returns the positions it holds."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not 0 < len(ids) < self.n_ctx:
            raise InputError(f"the warm prefix is {len(ids)} tokens; it must be 1 to {self.n_ctx - 1}")
        cache = self.new_cache()
        evaluate_prompt(self, ids, cache)
        block, min_rows = prompt_passes(self)
        return prefix_cache.store(ids, cache, block, min_rows, pinned=True)

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

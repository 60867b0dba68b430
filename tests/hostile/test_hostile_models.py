"""Malformed model files (issue 19, items 4 and 5): each case of hostile_models.py loaded by `votive.load` in a
child process under a 2 GiB address-space limit and a timeout, then asked for a greedy generation or an
embedding. No crash, no hang, no allocation near 1 GiB; metadata out of type or range is a ModelConfigError at
load naming the key; NaN or infinite small weights (norms, biases) are refused at load; NaN in a large matrix,
which load cannot scan cheaply, is a NumericalError on the first answer (a 500 from the handlers), never NaN
vectors or an empty 200."""

from __future__ import annotations

import pytest
from hostile_child import call_url as call
from hostile_child import run_limited
from hostile_models import ALL_CASES, build, expected

GIB = 1 << 30

_CHILD = '''
import tempfile
from pathlib import Path
import numpy as np
sys.path.insert(0, "tests/hostile")
from hostile_models import build
import votive
with tempfile.TemporaryDirectory() as d:
    path, options, action = build(sys.argv[1], Path(d))
    try:
        model = votive.load(str(path), **options)
    except Exception as e:
        report(outcome="refused at load", error=error_of(e))
        sys.exit(0)
    try:
        if action == "generate":
            report(outcome="answered", text=model.generate("hello", max_tokens=4, temperature=0))
        elif action == "score":
            v = model.score([("hello", "world"), ("the cat", "sat")])
            report(outcome="answered", finite=bool(np.isfinite(v).all()))
        else:
            v = model.embed(["hello world", "the cat sat"])
            report(outcome="answered", finite=bool(np.isfinite(v).all()))
    except Exception as e:
        report(outcome="refused at run", error=error_of(e))
'''


@pytest.mark.parametrize("case", ALL_CASES)
def test_malformed_model_is_a_typed_error(case):
    got = run_limited(_CHILD, case)  # fails on a crash or a hang
    assert got["peak_bytes"] < GIB
    want = expected(case)
    if want == "ok":
        assert got["outcome"] == "answered" and got["finite"], got
    elif want == "NumericalError":
        assert got["outcome"] == "refused at run" and "NumericalError" in got["error"]["classes"], got
    else:
        assert got["outcome"] == "refused at load", got
        assert "ModelConfigError" in got["error"]["classes"], got
        assert want in got["error"]["message"], got


def test_poisoned_answers_are_500_json(tmp_path):
    """A greedy chat completion and an embedding from NaN weights: 500 with an OpenAI-shaped error, not 200."""
    import votive
    from votive.handlers import embeddings, generation

    path, _, _ = build("nan-in-a-matrix", tmp_path / "gguf")
    status, body = call(generation.make_handler(votive.load(str(path))), "/v1/completions",
                        {"prompt": "hello", "max_tokens": 4, "temperature": 0})
    assert status == 500 and body["error"]["message"], body
    folder, _, _ = build("bert:nan-in-a-matrix", tmp_path / "bert")
    status, body = call(embeddings.make_handler(votive.load(str(folder))), "/v1/embeddings", {"input": ["hello"]})
    assert status == 500 and body["error"]["message"], body

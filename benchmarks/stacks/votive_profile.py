"""Per-op profile of votive's sentence encoder (embedding_bench.py --profile); runs in the project's venv.

Every op the encoder calls through the numpy backend is wrapped with a timer (the backend module's functions,
which BertModel reads as `ops.<name>` on each call), and so are the tokenizer and the pooling. What the wrapped
calls do not account for is "python": the interpreter's work between them (reshapes, transposes, slicing,
the batching loop). A wrapper costs about a microsecond a call; its own cost lands in the op it wraps.

    python votive_profile.py MODEL_DIR REFERENCE_DIR BATCHES PASSES

prints one JSON line: {batch: {"per_call_ms": total ms per embed call, "ops": {kind: ms per embed call},
"calls": {kind: calls per embed call}}}.
"""

import json
import sys
import time
from collections import defaultdict

# backend function -> the kind it is reported under
KINDS = {"linear": "linear", "matmul": "attention matmuls", "softmax": "softmax", "layer_norm": "layer_norm",
         "gelu": "gelu", "embedding": "embedding lookup"}


def main():
    model_dir, reference_dir, batches, passes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    import votive
    from votive.backends import numpy_backend
    from votive.models import sentence_encoder

    model = votive.load(model_dir)
    spent, calls = defaultdict(float), defaultdict(int)

    def timed(kind, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[kind] += time.perf_counter() - t
                calls[kind] += 1
        return wrapper

    for attr, kind in KINDS.items():
        setattr(numpy_backend, attr, timed(kind, getattr(numpy_backend, attr)))
    sentence_encoder.Pooling.__call__ = timed("pooling", sentence_encoder.Pooling.__call__)
    tokenizers = [o for o in _find_tokenizers(model)]
    for tok in tokenizers:
        tok.encode_batch = timed("tokenize", tok.encode_batch)

    with open(f"{reference_dir}/bench_sentences.json") as fh:
        sentences = json.load(fh)["sentences"]
    out = {}
    for batch in [int(b) for b in batches.split(",")]:
        chunks = [sentences[i:i + batch] for i in range(0, len(sentences), batch)]
        for c in chunks:  # warm-up
            model.embed(c)
        spent.clear(), calls.clear()
        t = time.perf_counter()
        for _ in range(passes):
            for c in chunks:
                model.embed(c)
        total = time.perf_counter() - t
        n = passes * len(chunks)
        ops = {k: 1e3 * v / n for k, v in sorted(spent.items(), key=lambda kv: -kv[1])}
        ops["python (rest)"] = 1e3 * total / n - sum(ops.values())
        out[str(batch)] = {"per_call_ms": 1e3 * total / n, "ops": ops,
                           "calls": {k: v / n for k, v in calls.items()}}
    print(json.dumps(out), flush=True)


def _find_tokenizers(model):
    """Objects with encode_batch reachable from the loaded model (its SentenceEncoder's tokenizer)."""
    seen, todo, found = set(), [model], []
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        tok = getattr(obj, "tokenizer", None)
        if tok is not None and hasattr(tok, "encode_batch") and id(tok) not in {id(f) for f in found}:
            found.append(tok)
        for name in ("encoder", "_encoder", "model", "_model", "runner", "_runner"):
            child = getattr(obj, name, None)
            if child is not None and not isinstance(child, (str, int, float)):
                todo.append(child)
    return found


if __name__ == "__main__":
    main()

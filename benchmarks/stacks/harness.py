"""The measuring loop every stack worker shares; it runs inside the stack's own venv.

A worker module defines one class with `import_libs()`, `load(model_dir)` and `embed(sentences) -> (n, 384)
float32 array`, then calls `main(ThatClass)`. The driver (benchmarks/embedding_bench.py) starts workers as
fresh processes and times them from outside; the in-process phase times printed here are only a breakdown.

Modes (argv[1]):
    cold MODEL_DIR SENTENCE [EXTRA...]
        import, load, embed one sentence, print {"phases": ..., "dim": ..., "norm": ...} and exit.
    throughput MODEL_DIR REFERENCE_DIR BATCHES PASSES [EXTRA...]
        load, check against the reference, one warm-up pass per batch size, then PASSES passes over the
        256 bench sentences at each batch size (interleaved), print the seconds of every pass.
    check MODEL_DIR REFERENCE_DIR [EXTRA...]
        load and print {"min_cosine": ...} against the reference embeddings.
    serve MODEL_DIR REFERENCE_DIR [EXTRA]
        load, print {"min_cosine": ...}, then for each stdin line "BATCH COUNT" embed the first COUNT bench
        sentences in batches of BATCH and print the seconds it took (embedding_ab.py alternates passes of
        several such processes, a fraction of a second each, so that load swings hit them alike). The first line
        also carries "weights_bytes" where the stack reports it; a line "dump PATH" saves the embeddings of all
        bench sentences (batches of 32) to PATH (.npy) and prints "ok".

EXTRA is handed to the stack's constructor (the ONNX file for the ORT stack). Only this module's standard
library imports run before the stack's own, so the cold start measures the stack, not the harness.
"""

import json
import sys
import time


def _reference(reference_dir):
    """The 8 reference sentences and their sentence-transformers embeddings (8, 384)."""
    import numpy as np

    with open(f"{reference_dir}/minilm_sentences.json") as fh:
        sentences = json.load(fh)["sentences"]
    return sentences, np.load(f"{reference_dir}/minilm_embeddings.npy")


def min_cosine(stack, reference_dir):
    """Lowest cosine between the stack's embeddings of the reference sentences and the reference ones."""
    import numpy as np

    sentences, expected = _reference(reference_dir)
    got = np.asarray(stack.embed(sentences), dtype=np.float64)
    expected = expected.astype(np.float64)
    if got.shape != expected.shape:
        raise SystemExit(f"embed returned shape {got.shape}, expected {expected.shape}")
    cos = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    return float(cos.min())


def _cold(stack, model_dir, sentence):
    t0 = time.perf_counter()
    stack.import_libs()
    t1 = time.perf_counter()
    stack.load(model_dir)
    t2 = time.perf_counter()
    vec = stack.embed([sentence])
    t3 = time.perf_counter()
    row = [float(x) for x in vec[0]]
    return {
        "phases": {"import": t1 - t0, "load": t2 - t1, "first_embed": t3 - t2},
        "dim": len(row),
        "norm": sum(x * x for x in row) ** 0.5,
    }


def _throughput(stack, model_dir, reference_dir, batches, passes):
    stack.import_libs()
    stack.load(model_dir)
    with open(f"{reference_dir}/bench_sentences.json") as fh:
        sentences = json.load(fh)["sentences"]
    check = min_cosine(stack, reference_dir)

    def one_pass(batch):
        t = time.perf_counter()
        for start in range(0, len(sentences), batch):
            stack.embed(sentences[start:start + batch])
        return time.perf_counter() - t

    for batch in batches:  # warm-up: allocator, thread pools, lazily built kernels
        one_pass(batch)
    seconds = {str(b): [] for b in batches}
    for _ in range(passes):  # interleave batch sizes so drift on a shared machine hits all of them
        for batch in batches:
            seconds[str(batch)].append(one_pass(batch))
    return {"sentences": len(sentences), "min_cosine": check, "seconds": seconds}


def main(stack_class):
    args = sys.argv[1:]
    usage = "usage: WORKER cold|throughput|check|serve MODEL_DIR ..."
    if not args:
        raise SystemExit(usage)
    mode, rest = args[0], args[1:]
    if mode == "cold" and len(rest) >= 2:
        stack = stack_class(*rest[2:])
        result = _cold(stack, rest[0], rest[1])
    elif mode == "throughput" and len(rest) >= 4:
        stack = stack_class(*rest[4:])
        batches = [int(b) for b in rest[2].split(",")]
        result = _throughput(stack, rest[0], rest[1], batches, int(rest[3]))
    elif mode == "check" and len(rest) >= 2:
        stack = stack_class(*rest[2:])
        stack.import_libs()
        stack.load(rest[0])
        result = {"min_cosine": min_cosine(stack, rest[1])}
    elif mode == "serve" and len(rest) >= 2:
        stack = stack_class(*rest[2:])
        stack.import_libs()
        stack.load(rest[0])
        first = {"min_cosine": min_cosine(stack, rest[1])}
        if hasattr(stack, "weights_bytes"):
            first["weights_bytes"] = stack.weights_bytes()
        print(json.dumps(first), flush=True)
        with open(f"{rest[1]}/bench_sentences.json") as fh:
            sentences = json.load(fh)["sentences"]
        for line in sys.stdin:
            if line.startswith("dump "):  # every bench sentence's embedding, in batches of 32, saved as .npy
                import numpy as np

                vecs = [stack.embed(sentences[s:s + 32]) for s in range(0, len(sentences), 32)]
                np.save(line.split(None, 1)[1].strip(), np.concatenate(vecs).astype(np.float32))
                print("ok", flush=True)
                continue
            batch, count = (int(x) for x in line.split())
            t = time.perf_counter()
            for start in range(0, count, batch):
                stack.embed(sentences[start:min(start + batch, count)])
            print(time.perf_counter() - t, flush=True)
        return
    else:
        raise SystemExit(usage)
    print(json.dumps(result), flush=True)

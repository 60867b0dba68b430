"""The Lambda bill per million embeddings (batch 1 and batch 32) and per million generated tokens, from measured
durations: votive, ONNX Runtime and sentence-transformers for embeddings, votive and llama.cpp for tokens.

Durations come from the benchmarks' results files (embedding_bench.py, llm_bench.py, and cold_start_bench.py
where it has run: its page-cold figures replace the warm-cache cold starts). Prices are votive's own table
(votive.client.pricing: per GB-second by architecture, per request, with the date they were read).

The model of a bill, per memory size M (MB) and architecture:

    warm request    duration = the measured time of one request on this machine's 2 cores, scaled to the vCPUs
                    Lambda gives M (below); billed rounded up to the millisecond
    cold request    the same plus a fresh process's spawn-to-first-answer time (Lambda bills the INIT phase
                    too since August 2025); not scaled: it is mostly reading files and importing, on one thread
    cost            (requests x price per request) + (billed seconds x M / 1024 x price per GB-second)

vCPUs: Lambda gives about 1 vCPU per 1769 MB, up to 6 at 10240 MB: v = min(6, M / 1769). The base is the
2-core figure measured here; a request on v < 2 vCPUs is taken to run 2 / v times as long (compute on fewer
cores, linearly), and on v >= 2 as long as measured here: no speed-up beyond the 2 cores measured is claimed
(batch-1 requests barely use a second core; see embedding_bench.py --profile). arm64 is priced with the
durations measured here on x86_64: nobody has measured them on Graviton.

Workloads: one request embeds 1 or 32 sentences (the bench sentences' throughput at that batch size); one
generation request is a 128-token prompt then --tokens-per-request generated tokens, at the measured prompt and
decode speeds.

    .venv/bin/python benchmarks/cost.py                  # prints the markdown tables
    .venv/bin/python benchmarks/cost.py --tokens-per-request 512 --llm-model smollm2
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"
sys.path.insert(0, str(REPO_DIR))

from votive.client import pricing  # noqa: E402  (the one price table)

MEMORY_MB = (1769, 3008, 10240)
MEASURED_CORES = 2
COLD_SHARES = (0.01, 0.10, 1.00)
ARCHES = ("x86_64", "arm64")
EMBED_STACKS = {"votive": "votive", "ort": "ONNX Runtime", "st": "sentence-transformers"}
LLM_STACKS = {"votive": "votive", "llamacpp": "llama.cpp"}
PROMPT_TOKENS = 128  # llm_bench's prompt


def vcpus(memory_mb: int) -> float:
    return min(6.0, memory_mb / 1769)


def scaled(seconds: float, memory_mb: int) -> float:
    """A request's duration at `memory_mb`, from the 2-core measurement (see the module docstring)."""
    return seconds * MEASURED_CORES / min(vcpus(memory_mb), MEASURED_CORES)


def billed(seconds: float) -> float:
    return math.ceil(seconds * 1000 - 1e-9) / 1000  # Lambda rounds each request up to the millisecond


def per_million(*, units_per_request: float, warm_s: float, cold_s: float, memory_mb: int, arch: str,
                cold_share: float) -> float:
    """USD per million units (embeddings or tokens)."""
    requests = 1e6 / units_per_request
    warm = billed(scaled(warm_s, memory_mb))
    cold = billed(scaled(warm_s, memory_mb) + cold_s)
    seconds = requests * ((1 - cold_share) * warm + cold_share * cold)
    return requests * pricing.LAMBDA_REQUEST + seconds * memory_mb / 1024 * pricing.LAMBDA_GB_S[arch]


# ------------------------------------------------------------------------------------------------ inputs
def load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def cold_seconds(cold: dict | None, key: str, fallback: float | None) -> tuple[float | None, str]:
    """Page-cold spawn-to-first-answer from cold_start_bench, else the warm-cache cold start."""
    if cold and key in cold.get("stacks", {}):
        return cold["stacks"][key]["cold_median"]["wall_s"], "page-cold"
    return fallback, "warm page cache"


def embed_inputs(emb: dict, cold: dict | None) -> dict:
    out = {}
    for name in EMBED_STACKS:
        tp = emb.get("throughput", {}).get(name)
        if not tp:
            continue
        fallback = emb.get("cold", {}).get(name, {}).get("median_wall_s")
        cs, basis = cold_seconds(cold, f"embed/{name}", fallback)
        out[name] = {"sps": {b: tp["sentences_per_s"][b] for b in ("1", "32")}, "cold_s": cs, "cold_basis": basis}
    return out


def llm_inputs(llm: dict, cold: dict | None, model: str) -> dict:
    rows = {r["figure"].strip(): r for r in llm["summary"] if r["model"] == model}
    out = {}
    for name in LLM_STACKS:
        fallback = rows["first token, spawn to exit"][name]
        cs, basis = cold_seconds(cold, f"llm:{model}/{name}", fallback)
        out[name] = {"decode": rows["decode"][name], "prompt": rows["prompt"][name], "cold_s": cs,
                     "cold_basis": basis}
    return out


# ------------------------------------------------------------------------------------------------ tables
def table(title: str, rows: list[tuple[str, int, dict]]) -> str:
    head = ["stack", "memory (MB)", "vCPUs"] + [f"{arch}, {int(c * 100)}% cold" for arch in ARCHES
                                                 for c in COLD_SHARES]
    lines = [f"**{title}** (USD per million)", "", "| " + " | ".join(head) + " |",
             "| " + " | ".join("---" for _ in head) + " |"]
    for stack, mem, cells in rows:
        values = [f"{cells[(arch, c)]:.2f}" if cells[(arch, c)] >= 1 else f"{cells[(arch, c)]:.3f}"
                  for arch in ARCHES for c in COLD_SHARES]
        lines.append(f"| {stack} | {mem} | {vcpus(mem):.1f} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def cells(**kw) -> dict:
    return {(arch, c): per_million(arch=arch, cold_share=c, **kw) for arch in ARCHES for c in COLD_SHARES}


def report(emb: dict | None, llm: dict | None, cold: dict | None, model: str, tokens: int) -> str:
    parts = [f"Lambda prices of {pricing.PRICES_DATE} (votive.client.pricing): x86_64 "
             f"${pricing.LAMBDA_GB_S['x86_64']:.10f}/GB-s, arm64 ${pricing.LAMBDA_GB_S['arm64']:.10f}/GB-s, "
             f"${pricing.LAMBDA_REQUEST * 1e6:.2f} per million requests."]
    inputs = []
    if emb:
        e = embed_inputs(emb, cold)
        for batch in ("1", "32"):
            rows = [(EMBED_STACKS[n], mem, cells(units_per_request=int(batch), warm_s=int(batch) / v["sps"][batch],
                                                 cold_s=v["cold_s"], memory_mb=mem))
                    for mem in MEMORY_MB for n, v in e.items()]
            parts.append(table(f"Embeddings, all-MiniLM-L6-v2, {batch} sentence{'s' if batch != '1' else ''} per "
                               "request", rows))
        meta = emb["meta"]
        inputs += [f"{EMBED_STACKS[n]}: {v['sps']['1']:.0f} / {v['sps']['32']:.0f} sentences/s at batch 1 / 32, "
                   f"cold start {v['cold_s']:.3f} s ({v['cold_basis']})" for n, v in e.items()]
        inputs.append(f"embedding run of {meta['date']}, load average {meta['loadavg_start'][0]:.2f} / "
                      f"{meta.get('loadavg_end', [float('nan')])[0]:.2f}")
    if llm:
        g = llm_inputs(llm, cold, model)
        rows = []
        for mem in MEMORY_MB:
            for n, v in g.items():
                warm_s = PROMPT_TOKENS / v["prompt"] + tokens / v["decode"]
                rows.append((LLM_STACKS[n], mem, cells(units_per_request=tokens, warm_s=warm_s, cold_s=v["cold_s"],
                                                       memory_mb=mem)))
        parts.append(table(f"Generated tokens, {model}, {PROMPT_TOKENS}-token prompt + {tokens} tokens per request",
                           rows))
        inputs += [f"{LLM_STACKS[n]} ({model}): prompt {v['prompt']:.0f} tok/s, decode {v['decode']:.1f} tok/s, "
                   f"first token {v['cold_s']:.3f} s ({v['cold_basis']})" for n, v in g.items()]
        meta = llm["meta"]
        inputs.append(f"LLM run of {meta['date']}, load average {meta['loadavg_start'][0]:.2f} / "
                      f"{meta.get('loadavg_end', [float('nan')])[0]:.2f}")
    parts.append("Measured on this machine's 2 cores: " + "; ".join(inputs) + ". Durations are scaled by "
                 "2 / min(vCPUs, 2) (no speed-up claimed beyond 2 cores); arm64 uses the x86_64 durations.")
    return "\n\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embed-results", type=Path, default=WORK_DIR / "embedding_results.json")
    parser.add_argument("--llm-results", type=Path, default=WORK_DIR / "llm_results.json")
    parser.add_argument("--cold-results", type=Path, default=WORK_DIR / "cold_start_results.json",
                        help="cold_start_bench.py's page-cold figures, used where present")
    parser.add_argument("--llm-model", default="gemma3")
    parser.add_argument("--tokens-per-request", type=int, default=256)
    parser.add_argument("--out", type=Path, default=WORK_DIR / "cost.md")
    args = parser.parse_args()
    emb, llm, cold = load_json(args.embed_results), load_json(args.llm_results), load_json(args.cold_results)
    if not emb and not llm:
        print("cost.py: no results files; run embedding_bench.py and/or llm_bench.py first", file=sys.stderr)
        return 1
    text = report(emb, llm, cold, args.llm_model, args.tokens_per_request)
    args.out.write_text(text)
    print(text)
    print(f"wrote {args.out}; load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""LLM benchmark: votive against llama.cpp (llama-cpp-python 0.3.36, built with GGML_NATIVE), one run.

Both stacks run the same GGUF files with 2 threads, each in its own venv, as fresh worker processes
(benchmarks/stacks/llm_*_worker.py) timed from outside. Rounds interleave the stacks so that drift on a shared
machine hits both alike; only the ratios taken within one run mean much. Figures are printed and written,
never asserted.

    workload      shared/reference/llm_bench_prompt.json: the base text x 3 with BOS, first 128 tokens as one
                  batch (prompt), then 64 greedy single-token steps with no early stop (decode)
    decode        tok/s = 64 / median decode seconds, over --rounds processes x --passes passes (after a
                  warm-up pass in each process); also as a share of the memory-bandwidth bound
    prompt        tok/s = 128 / median prompt seconds, same passes; --prompt-tokens 128,512 adds a speed run per
                  further length (the base text repeated until it has that many tokens, both stacks the same ids,
                  n_ctx the prompt plus the decode rounded up to 256 where over 512, one batch), reported as
                  "prompt, N tokens" and "decode after N tokens" (its 64 steps attend over that long a cache;
                  the bandwidth shares and the other figures stay those of the first length)
    first token   fresh process -> import -> load -> tokenize -> prompt -> first greedy token -> exit: wall
                  time from spawn to exit and peak RSS (os.wait4's ru_maxrss); median of --first-reps after
                  one untimed warm-up round; votive's bytecode is written first, as an installed package has it
    bandwidth     benchmarks/.work/read_bw (stacks/read_bw.c): 2 threads stream-read a 1 GB buffer on huge pages
                  (the hardware's rate) and on 4 KiB pages (what a file mapping gets); run at the start and the
                  end, the higher median counts. The decode bound is bandwidth / bytes of weights read per
                  token: every tensor in the file but the token embedding, which is counted only when it
                  doubles as the output matrix (tied, as in both models here); its row gather is not.

Run benchmarks/setup_llm_peers.py once first. Then, from the repo root:

    .venv/bin/python benchmarks/llm_bench.py            # full run
    .venv/bin/python benchmarks/llm_bench.py --quick    # fewer repetitions, for a smoke run

Writes benchmarks/.work/llm_results.json and benchmarks/.work/llm_results.md (a table to paste).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The embedding benchmark's process runner and table formatting serve here unchanged.
from embedding_bench import (
    VOTIVE_PYTHON,
    BenchError,
    ProcessResult,
    Stack,
    _fmt,
    _fmt_ratio,
    _mb,
    _met,
    compile_votive_bytecode,
    cpu_model,
    ratio,
    run_worker,
    versions,
    write_results,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"
REFERENCE_DIR = REPO_DIR / "tests" / "data" / "reference"  # copies of ../shared/reference
PROMPT_JSON = REFERENCE_DIR / "llm_bench_prompt.json"
LLAMA_VENV = WORK_DIR / "venv-llamacpp"
READ_BW = WORK_DIR / "read_bw"
THREADS = 2
BW_MB = 1024  # the probe's buffer: far larger than any cache, about 4x the larger model
BW_REPS = 7
BW_PAGES = ("huge", "small")  # the bound uses huge pages; small (4 KiB) pages are reported beside it
MIN_GREEDY_AGREE = 32  # the project's correctness bar: the first 32 greedy tokens equal llama.cpp's
PROMPT_TOKENS = 128  # the workload's prompt (stacks/llm_harness.py)
MAX_PROMPT_TOKENS = 4096  # --prompt-tokens: within both models' trained context


@dataclass(frozen=True)
class BenchModel:
    alias: str  # votive source alias; resolves to the GGUF file both stacks load
    title: str
    reference: str  # file in shared/reference with llama.cpp's tokens for 3 prompts


MODELS = {
    "gemma3": BenchModel("gemma3", "Gemma 3 270M Q4_K_M", "gemma3_270m_tokens.json"),
    "smollm2": BenchModel("smollm2", "SmolLM2-135M-Instruct Q4_1", "smollm2_135m_tokens.json"),
}

# The project's goals as votive / llama.cpp ratios: at least these for speeds, at most for time and memory.
DECODE_TARGET = {"votive/llamacpp": 1.0}
PROMPT_TARGET = {"votive/llamacpp": 0.5}
FIRST_TOKEN_TARGET = {"votive/llamacpp": 1.0}
PEAK_RSS_TARGET = {"votive/llamacpp": 1.2}
STACK_NAMES = ("votive", "llamacpp")
PHASES = {"import": "import", "load": "load", "prompt_first_token": "tokenize + prompt + first token"}


def context_for(prompt_tokens: int) -> int:
    """The n_ctx both workers load with for this prompt length (stacks/llm_harness.py's context_for)."""
    return max(512, (prompt_tokens + 64 + 255) // 256 * 256)


def make_stacks(votive_python: Path) -> dict[str, Stack]:
    return {
        "votive": Stack(
            "votive", "votive", votive_python, "llm_votive_worker.py",
            # The working tree first on the path: the benchmark measures this checkout.
            env={"PYTHONPATH": str(REPO_DIR), "VOTIVE_NUM_THREADS": str(THREADS)},
            versions_of=("numpy",),
        ),
        "llamacpp": Stack(
            "llamacpp", "llama.cpp", LLAMA_VENV / "bin" / "python", "llm_llamacpp_worker.py",
            versions_of=("llama-cpp-python", "numpy"),
        ),
    }


def model_path(model: BenchModel) -> str:
    """The GGUF file behind the alias (votive assembles and caches package models on first use)."""
    from votive.sources import resolve_source

    return str(resolve_source(model.alias).path)


def weight_bytes_per_token(path: str) -> dict:
    """Bytes of weights one decode step reads: every tensor, less the token embedding unless it is the output."""
    from votive.formats.gguf import GGUFFile

    tensors = GGUFFile(path).tensors
    tied = "output.weight" not in tensors
    embed = tensors["token_embd.weight"].nbytes
    total = sum(t.nbytes for t in tensors.values()) - (0 if tied else embed)
    output = embed if tied else tensors["output.weight"].nbytes
    return {"bytes": total, "output_bytes": output, "tied_output": tied, "file_bytes": os.path.getsize(path)}


# ------------------------------------------------------------------------------------------------ phases


def measure_bandwidth() -> dict[str, dict]:
    """The read probe with THREADS threads, per page size; {"error": ...} for one that is missing or fails."""
    out = {}
    for pages in BW_PAGES:
        if not READ_BW.exists():
            out[pages] = {"error": f"{READ_BW} missing: run benchmarks/setup_llm_peers.py"}
            continue
        cmd = [str(READ_BW), str(BW_MB), str(THREADS), str(BW_REPS), pages]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            out[pages] = {"error": f"read_bw exit {proc.returncode}: {proc.stderr.strip()}"}
        else:
            out[pages] = json.loads(proc.stdout)
    return out


def preflight(stacks: dict[str, Stack], models: dict[str, BenchModel], paths: dict[str, str],
              keep_mismatched: bool) -> dict[str, dict]:
    """Run each stack on each model's reference prompts; a stack that fails or disagrees is left out."""
    status: dict[str, dict] = {}
    for stack in stacks.values():
        entry = status[stack.name] = {"available": True, "reason": "", "checks": {}}
        if not stack.python.exists():
            hint = ": run benchmarks/setup_llm_peers.py" if stack.name == "llamacpp" else ""
            entry.update(available=False, reason=f"{stack.python} missing{hint}")
            continue
        entry["versions"] = versions(stack)
        for key, model in models.items():
            reference = str(REFERENCE_DIR / model.reference)
            result = run_worker(stack, "check", [paths[key], reference, str(MIN_GREEDY_AGREE)], f"{key}-check")
            if result.returncode != 0:
                entry.update(available=False, reason=f"{key}: {result.failure()}")
                break
            check = result.json()
            entry["checks"][key] = check
            entry.setdefault("info", check.get("info"))
            problem = reference_problem(check["records"])
            if problem and not keep_mismatched:
                entry.update(available=False, reason=f"{key}: {problem}")
                break
            if problem:
                entry["reason"] += f"{key}: {problem} (kept: --keep-mismatched). "
    return status


def reference_problem(records: list[dict]) -> str:
    """Why a stack's answers on the reference prompts disqualify it, or '' when they pass."""
    for rec in records:
        if not rec["prompt_ids_equal"]:
            return f"prompt ids of {rec['prompt']!r} differ from llama.cpp's reference"
        if rec["greedy_agree"] < MIN_GREEDY_AGREE:
            return (f"greedy tokens of {rec['prompt']!r} leave the reference at token {rec['greedy_agree']} "
                    f"(need the first {MIN_GREEDY_AGREE})")
    return ""


def first_token(stacks: list[Stack], key: str, path: str, reps: int) -> dict[str, dict]:
    """Fresh process to first generated token, `reps` interleaved rounds after one untimed warm-up round."""
    samples = {s.name: {"wall_s": [], "maxrss_bytes": [], "phases": [], "tokens": set(), "loadavg": []}
               for s in stacks}
    for rnd in range(reps + 1):
        for stack in stacks:
            result = run_worker(stack, "first", [path, str(PROMPT_JSON)], f"{key}-first{rnd}")
            check_ok(result, stack, f"{key} first-token run")
            if rnd == 0:
                continue  # warm-up: page cache, bytecode caches
            samples[stack.name]["wall_s"].append(result.wall_s)
            samples[stack.name]["maxrss_bytes"].append(result.maxrss_bytes)
            samples[stack.name]["phases"].append(result.json()["phases"])
            samples[stack.name]["tokens"].add(result.json()["token"])
            samples[stack.name]["loadavg"].append(os.getloadavg()[0])
        print(f"  {key} first-token round {rnd}/{reps} done (load {os.getloadavg()[0]:.2f})", flush=True)
    for s in samples.values():
        s["tokens"] = sorted(s["tokens"])
        s["median_wall_s"] = statistics.median(s["wall_s"])
        s["median_maxrss_bytes"] = statistics.median(s["maxrss_bytes"])
        s["median_phases_s"] = {k: statistics.median(p[k] for p in s["phases"]) for k in s["phases"][0]}
    return samples


def speed(stacks: list[Stack], key: str, path: str, rounds: int, passes: int,
          prompt_tokens: int = PROMPT_TOKENS) -> dict[str, dict]:
    """Prompt and decode tok/s: `rounds` processes per stack, interleaved, `passes` timed passes each."""
    samples = {s.name: {"prompt_s": [], "decode_s": [], "maxrss_bytes": [], "loadavg": []} for s in stacks}
    tag = "" if prompt_tokens == PROMPT_TOKENS else f"-p{prompt_tokens}"
    for rnd in range(rounds):
        for stack in stacks:
            result = run_worker(stack, "speed", [path, str(PROMPT_JSON), str(passes), str(prompt_tokens)],
                                f"{key}-speed{tag}{rnd}")
            check_ok(result, stack, f"{key} speed run")
            out = result.json()
            s = samples[stack.name]
            s["prompt_s"].extend(out["prompt_s"])
            s["decode_s"].extend(out["decode_s"])
            s["maxrss_bytes"].append(result.maxrss_bytes)
            s["loadavg"].append(os.getloadavg()[0])  # llama.cpp's spinning thread barriers suffer most from load
            s.update(prompt_tokens=out["prompt_tokens"], decode_tokens=out["decode_tokens"],
                     prompt_ids=out["prompt_ids"], tokens=out["tokens"])
        print(f"  {key} speed ({prompt_tokens}-token prompt) round {rnd + 1}/{rounds} done "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
    for s in samples.values():
        s["prompt_tok_s"] = s["prompt_tokens"] / statistics.median(s["prompt_s"])
        s["decode_tok_s"] = s["decode_tokens"] / statistics.median(s["decode_s"])
        s["best_prompt_tok_s"] = s["prompt_tokens"] / min(s["prompt_s"])  # for judging noise; not reported
        s["best_decode_tok_s"] = s["decode_tokens"] / min(s["decode_s"])
        s["median_maxrss_bytes"] = statistics.median(s["maxrss_bytes"])
    return samples


def check_ok(result: ProcessResult, stack: Stack, what: str) -> None:
    if result.returncode != 0:
        raise BenchError(f"{stack.name} {what} failed: {result.failure()}")


def agreement(speed_samples: dict[str, dict]) -> dict | None:
    """Do the two stacks see the same 128 prompt ids, and how many bench tokens agree before the first split."""
    if not all(n in speed_samples for n in STACK_NAMES):
        return None
    a, b = (speed_samples[n] for n in STACK_NAMES)
    agree = next((i for i, (x, y) in enumerate(zip(a["tokens"], b["tokens"])) if x != y), len(a["tokens"]))
    return {"prompt_ids_equal": a["prompt_ids"] == b["prompt_ids"], "greedy_agree": agree,
            "greedy_n": len(a["tokens"])}


# ---------------------------------------------------------------------------------------------- reporting


def bandwidth_gb_s(results: dict, pages: str = "huge") -> float | None:
    """The higher of the start and end medians for this page size."""
    found = [run[pages].get("median_gb_per_s") for run in results["bandwidth"].values()]
    found = [f for f in found if f is not None]
    return max(found) if found else None


def summary_rows(results: dict) -> list[dict]:
    """Per model, one row per figure: each stack's value, the votive/llama.cpp ratio and its target."""
    rows = []
    bw = {pages: bandwidth_gb_s(results, pages) for pages in BW_PAGES}
    for key, per_model in results["models"].items():
        first, spd = per_model.get("first", {}), per_model.get("speed", {})

        def pick(table, name, *keys):
            value = table.get(name)
            for k in keys:
                value = value.get(k) if isinstance(value, dict) else None
            return value

        def add(figure, unit, values, target=None, better="lower"):
            row = {"model": key, "figure": figure, "unit": unit, "better": better, "target": target, **values}
            row["votive/llamacpp"] = ratio(values.get("votive"), values.get("llamacpp"))
            row["met"] = _met(row)
            rows.append(row)

        decode = {n: pick(spd, n, "decode_tok_s") for n in STACK_NAMES}
        add("decode", "tok/s", decode, DECODE_TARGET, "higher")
        bytes_per_token = per_model["weights"]["bytes"]
        for pages, label in (("huge", "bandwidth bound"), ("small", "4 KiB-page bound")):
            share = {n: (v * bytes_per_token / (bw[pages] * 1e9) * 100 if v and bw[pages] else None)
                     for n, v in decode.items()}
            add(f"  decode, share of the {label}", "%", share)
            rows[-1]["votive/llamacpp"] = None  # the same ratio as decode's
        add("prompt", "tok/s", {n: pick(spd, n, "prompt_tok_s") for n in STACK_NAMES}, PROMPT_TARGET, "higher")
        for length, longer in per_model.get("prompt_lengths", {}).items():
            add(f"  prompt, {length} tokens", "tok/s", {n: pick(longer, n, "prompt_tok_s") for n in STACK_NAMES},
                PROMPT_TARGET, "higher")
            add(f"  decode after {length} tokens", "tok/s",
                {n: pick(longer, n, "decode_tok_s") for n in STACK_NAMES}, DECODE_TARGET, "higher")
        add("first token, spawn to exit", "s", {n: pick(first, n, "median_wall_s") for n in STACK_NAMES},
            FIRST_TOKEN_TARGET)
        for phase, label in PHASES.items():
            add(f"  in-process {label}", "s",
                {n: pick(first, n, "median_phases_s", phase) for n in STACK_NAMES})
        add("peak RSS, first-token process", "MB",
            {n: _mb(pick(first, n, "median_maxrss_bytes")) for n in STACK_NAMES}, PEAK_RSS_TARGET)
        add("  peak RSS, speed process", "MB", {n: _mb(pick(spd, n, "median_maxrss_bytes")) for n in STACK_NAMES})
    return rows


def markdown(results: dict) -> str:
    meta, cfg = results["meta"], results["config"]
    head = ["model", "figure", "votive", "llama.cpp", "votive / llama.cpp"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for row in results["summary"]:
        cells = [MODELS[row["model"]].title, f"{row['figure'].strip()} ({row['unit']})",
                 _fmt(row["votive"], row["unit"]), _fmt(row["llamacpp"], row["unit"]),
                 _fmt_ratio(row, "votive/llamacpp")]
        lines.append("| " + " | ".join(cells) + " |")
    bw = bandwidth_gb_s(results)
    bw_text = {pages: " / ".join(f"{run[pages]['median_gb_per_s']:.1f}" if "median_gb_per_s" in run[pages]
                                 else "n/a" for run in results["bandwidth"].values()) for pages in BW_PAGES}
    notes = [
        f"{meta['cpus']} cores ({meta['cpu_model']}), {meta['date']}; {THREADS} threads for both stacks; "
        f"prompt {cfg['prompt_tokens']} tokens in one batch, decode {cfg['decode_tokens']} greedy tokens; "
        f"speeds are medians over {cfg['rounds']} process(es) x {cfg['passes']} passes, first token the median "
        f"of {cfg['first_reps']} fresh processes.",
        f"Read bandwidth (2 threads, 1 GB, median of {BW_REPS}; start / end): huge pages {bw_text['huge']} GB/s, "
        f"4 KiB pages {bw_text['small']} GB/s." + ("" if bw is None else f" The bound uses {bw:.1f} GB/s."),
    ]
    for key, per_model in results["models"].items():
        w = per_model["weights"]
        bound = f", bound {bw * 1e9 / w['bytes']:.0f} tok/s" if bw else ""
        same = ""
        for length, agree in [(cfg["prompt_tokens"], per_model.get("agreement")),
                              *per_model.get("length_agreement", {}).items()]:
            if agree is not None:
                same += (f"; after {length} prompt tokens the stacks' bench tokens agree for "
                         f"{agree['greedy_agree']} of {agree['greedy_n']}"
                         + ("" if agree["prompt_ids_equal"] else " (prompt ids DIFFER)"))
        notes.append(f"{MODELS[key].title}: {w['bytes'] / 1e6:.1f} MB of weights read per token "
                     f"(output matrix {w['output_bytes'] / 1e6:.1f} MB{', tied' if w['tied_output'] else ''})"
                     f"{bound}{same}.")
    for name, st in results["stacks"].items():
        if not st["available"]:
            notes.append(f"{name} left out: {st['reason']}")
        elif st["reason"]:
            notes.append(f"{name}: {st['reason'].strip()}")
    notes.append(f"Load average at start / end: {meta['loadavg_start'][0]:.2f} / {meta['loadavg_end'][0]:.2f}."
                 + (f" {meta['busy_note']}" if meta.get("busy_note") else ""))
    return "\n".join(lines) + "\n\n" + "\n".join(notes) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gemma3,smollm2", help="comma-separated subset of gemma3,smollm2")
    parser.add_argument("--stacks", default="votive,llamacpp", help="comma-separated subset of votive,llamacpp")
    parser.add_argument("--first-reps", type=int, default=7, help="timed first-token processes per stack (>= 5)")
    parser.add_argument("--rounds", type=int, default=3, help="speed processes per stack and model")
    parser.add_argument("--passes", type=int, default=5, help="timed passes per speed process")
    parser.add_argument("--prompt-tokens", default=str(PROMPT_TOKENS),
                        help="comma-separated prompt lengths; the first is the workload's, each further one adds a "
                             "speed run reported as 'prompt, N tokens' and 'decode after N tokens' (e.g. 128,512)")
    parser.add_argument("--quick", action="store_true", help="5 first-token processes, 1 speed process x 3 passes")
    parser.add_argument("--keep-mismatched", action="store_true",
                        help="measure a stack even when it disagrees with the reference tokens")
    parser.add_argument("--votive-python", type=Path, default=VOTIVE_PYTHON)
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. 'machine busy')")
    parser.add_argument("--out", type=Path, default=WORK_DIR / "llm_results.json")
    args = parser.parse_args()
    if args.quick:
        args.first_reps, args.rounds, args.passes = 5, 1, 3
    if args.first_reps < 5:
        parser.error("--first-reps must be at least 5 (medians of fewer are too noisy here)")
    if args.rounds < 1 or args.passes < 1:
        parser.error("--rounds and --passes must be at least 1")
    try:
        lengths = [int(n) for n in args.prompt_tokens.split(",")]
    except ValueError:
        parser.error(f"--prompt-tokens {args.prompt_tokens!r}: comma-separated whole numbers")
    if any(n < 1 or n > MAX_PROMPT_TOKENS for n in lengths) or len(set(lengths)) != len(lengths):
        parser.error(f"--prompt-tokens: distinct lengths from 1 to {MAX_PROMPT_TOKENS}")
    all_stacks = make_stacks(args.votive_python)
    chosen, models = {}, {}
    picks = ((args.stacks, all_stacks, chosen, "stack"), (args.models, MODELS, models, "model"))
    for names, table, into, what in picks:
        for name in names.split(","):
            if name not in table:
                parser.error(f"unknown {what} {name!r}; choose from {', '.join(table)}")
            into[name] = table[name]
    (WORK_DIR / "logs").mkdir(parents=True, exist_ok=True)

    results = {
        "meta": {"date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "cpu_model": cpu_model(),
                 "python": platform.python_version(), "loadavg_start": os.getloadavg(), "busy_note": args.note},
        "config": {"first_reps": args.first_reps, "rounds": args.rounds, "passes": args.passes,
                   "threads": THREADS, "prompt_tokens": lengths[0], "decode_tokens": 64,
                   "n_ctx": context_for(lengths[0]), "prompt_lengths": lengths[1:],
                   "bandwidth_probe": f"read_bw {BW_MB} MB, {THREADS} threads, {BW_REPS} reps, huge and small pages"},
        "bandwidth": {},
        "models": {},
    }
    try:
        paths = {key: model_path(model) for key, model in models.items()}
    except Exception as exc:  # a model package missing or not assembled: nothing to measure
        print(f"llm_bench: cannot find the model files: {exc}", file=sys.stderr)
        return 1
    for key in models:
        results["models"][key] = {"path": paths[key], "weights": weight_bytes_per_token(paths[key])}
    results["bandwidth"]["start"] = measure_bandwidth()
    print("read bandwidth: " + ", ".join(f"{pages} pages {bw.get('median_gb_per_s', 'n/a')} GB/s"
                                         for pages, bw in results["bandwidth"]["start"].items()), flush=True)
    if "votive" in chosen:
        compile_votive_bytecode(chosen["votive"].python)
    print("preflight: each stack on each model's reference prompts...", flush=True)
    results["stacks"] = preflight(chosen, models, paths, args.keep_mismatched)
    for name, st in results["stacks"].items():
        state = ("ok" + (f"; {st['reason'].strip()}" if st["reason"] else "")) if st["available"] else "left out: "
        print(f"  {name}: {state}" + ("" if st["available"] else st["reason"]), flush=True)
    ready = [s for s in chosen.values() if results["stacks"][s.name]["available"]]
    if not ready:
        print("llm_bench: no stack is ready", file=sys.stderr)
        return 1
    try:
        for key in models:
            print(f"{key}: first token, {args.first_reps} rounds; speed, {args.rounds} x {args.passes}", flush=True)
            per_model = results["models"][key]
            per_model["first"] = first_token(ready, key, paths[key], args.first_reps)
            per_model["speed"] = speed(ready, key, paths[key], args.rounds, args.passes, lengths[0])
            per_model["prompt_lengths"] = {
                n: speed(ready, key, paths[key], args.rounds, args.passes, n) for n in lengths[1:]}
            per_model["agreement"] = agreement(per_model["speed"])
            per_model["length_agreement"] = {n: agreement(samples)
                                             for n, samples in per_model["prompt_lengths"].items()}
    except BenchError as exc:
        print(f"llm_bench: {exc}", file=sys.stderr)
        return 1
    results["bandwidth"]["end"] = measure_bandwidth()
    results["meta"]["loadavg_end"] = os.getloadavg()
    results["summary"] = summary_rows(results)
    write_results(args.out, results, markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

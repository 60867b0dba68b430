"""Finely interleaved throughput: votive (this tree), optionally votive from another tree, and ONNX Runtime.

On a loaded machine the load swings within seconds, and embedding_bench.py's throughput rounds (a process per
stack, a minute each) then compare stacks under different loads. Here each stack runs as one long-lived worker
(harness.py's `serve` mode) and the driver alternates short passes, A B C A B C ..., each a fraction of a
second, so a swing hits every stack alike; the median pass of each gives sentences/s, and the load average
is recorded every round. Figures are printed, never asserted.

    .venv/bin/python benchmarks/embedding_ab.py                           # votive vs ORT, batch 1 and 32
    .venv/bin/python benchmarks/embedding_ab.py --baseline-tree /tmp/old  # + votive from /tmp/old/votive
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import embedding_bench as eb  # noqa: E402

# batch size -> sentences per pass: about a quarter of a second each on an idle 2-core machine
PASS_SENTENCES = {1: 16, 32: 64}


def start(stack: eb.Stack, model: str) -> subprocess.Popen:
    cmd = [str(stack.python), str(eb.STACKS_DIR / stack.worker), "serve", model, str(eb.REFERENCE_DIR), *stack.extra]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=eb.worker_env(stack),
                            cwd=eb.WORK_DIR)
    cosine = json.loads(proc.stdout.readline())["min_cosine"]
    if cosine < eb.MIN_COSINE:
        raise SystemExit(f"{stack.name}: min cosine {cosine} to the reference")
    return proc


def one_pass(proc: subprocess.Popen, batch: int) -> float:
    proc.stdin.write(f"{batch} {PASS_SENTENCES[batch]}\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--baseline-tree", type=Path, help="a folder holding another votive/ to compare with")
    parser.add_argument("--out", type=Path, default=eb.WORK_DIR / "embedding_ab.json")
    args = parser.parse_args()
    stacks = eb.make_stacks(eb.REPO_DIR / ".venv" / "bin" / "python")
    chosen = [stacks["votive"], stacks["ort"]]
    if args.baseline_tree:
        base = eb.Stack("baseline", "votive baseline", stacks["votive"].python, "votive_worker.py",
                        env={"PYTHONPATH": str(args.baseline_tree)})
        subprocess.run([str(base.python), "-m", "compileall", "-q", str(args.baseline_tree / "votive")],
                       stdout=subprocess.DEVNULL)
        chosen.insert(0, base)
    eb.compile_votive_bytecode(stacks["votive"].python)
    model = eb.model_dir()
    procs = {s.name: start(s, model) for s in chosen}
    seconds = {name: {b: [] for b in PASS_SENTENCES} for name in procs}
    loads = [os.getloadavg()[0]]
    for name, proc in procs.items():  # warm-up
        for b in PASS_SENTENCES:
            one_pass(proc, b)
    for rnd in range(args.rounds):
        for b in PASS_SENTENCES:
            for name, proc in procs.items():
                seconds[name][b].append(one_pass(proc, b))
        loads.append(os.getloadavg()[0])
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    sps = {n: {b: PASS_SENTENCES[b] / statistics.median(v) for b, v in d.items()} for n, d in seconds.items()}
    args.out.write_text(json.dumps({"sentences_per_s": sps, "seconds": seconds, "loadavg": loads}))
    for b in PASS_SENTENCES:
        line = [f"batch {b}:"] + [f"{n} {sps[n][b]:.1f}/s" for n in sps]
        line += [f"{n}/ort {sps[n][b] / sps['ort'][b]:.3f}x" for n in sps if n != "ort"]
        print(" ".join(line))
    print(f"{args.rounds} rounds of alternating passes; load average min / median / max "
          f"{min(loads):.2f} / {statistics.median(loads):.2f} / {max(loads):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

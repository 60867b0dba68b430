"""Finely interleaved throughput: votive (this tree), optionally votive from another tree, and ONNX Runtime.

On a loaded machine the load swings within seconds, and embedding_bench.py's throughput rounds (a process per
stack, a minute each) then compare stacks under different loads. Here each stack runs as one long-lived worker
(harness.py's `serve` mode) and the driver alternates short passes, A B C A B C ..., each a fraction of a
second, so a swing hits every stack alike; the median pass of each gives sentences/s, and the load average
is recorded every round. Figures are printed, never asserted.

    .venv/bin/python benchmarks/embedding_ab.py                           # votive vs ORT, batch 1 and 32
    .venv/bin/python benchmarks/embedding_ab.py --baseline-tree /tmp/old  # + votive from /tmp/old/votive
    .venv/bin/python benchmarks/embedding_ab.py --quantized               # + votive q8_0 / int8 vs ORT int8

--quantized adds four stacks: `votive-q8_0` (votive.load(model, quantize="q8_0"): the six matrices of each layer
quantized to Q8_0 at load), `votive-int8` (quantize="int8": int8 with one scale per row), `votive-int8-stored`
(the same int8 model from the folder `votive convert --type int8` writes, .work/minilm-int8) and `ort-int8`
(onnxruntime.quantization.quantize_dynamic of .work/minilm.onnx with its defaults, QInt8 weights with one scale
per tensor, made once into .work/minilm-int8.onnx). It prints their ratios, each stack's mean / min cosine over
the 256 bench sentences to votive fp32's output (the reference: votive fp32 matches sentence-transformers to a
cosine of 1 - 1e-7, see the preflight), the weights' size (the ONNX file; votive's weights as held in memory after
load), the artifact's size (the ONNX file; the model.safetensors votive reads) and the cold start (spawn to exit of a process that imports, loads and embeds one sentence; median of
--cold-reps, stacks interleaved).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import embedding_bench as eb  # noqa: E402

# batch size -> sentences per pass: about a quarter of a second each on an idle 2-core machine
PASS_SENTENCES = {1: 16, 32: 64}
INT8_ONNX = eb.WORK_DIR / "minilm-int8.onnx"
INT8_FOLDER = eb.WORK_DIR / "minilm-int8"  # `votive convert --type int8` of the model, once
# ORT's quantizer needs `onnx`, which only venv-st has: links to it (and ml_dtypes, which it imports) go here.
ONNX_TOOLS = eb.WORK_DIR / "onnx-tools"
# Idle time before each pass, so that it starts on free cores: a worker's threads go on spinning after its own pass
# (ONNX Runtime's pool by default, votive's for 100 us), and without a pause the next stack's pass shares the cores
# with them, as it never would in a function serving one model.
SETTLE_S = 0.05
# A quantized stack is a different computation; below this cosine to its float reference its speed means nothing.
MIN_QUANT_COSINE = 0.9


def start(stack: eb.Stack, model: str, min_cosine: float = eb.MIN_COSINE) -> tuple[subprocess.Popen, dict]:
    cmd = [str(stack.python), str(eb.STACKS_DIR / stack.worker), "serve", model, str(eb.REFERENCE_DIR), *stack.extra]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=eb.worker_env(stack),
                            cwd=eb.WORK_DIR)
    first = json.loads(proc.stdout.readline())
    if first["min_cosine"] < min_cosine:
        raise SystemExit(f"{stack.name}: min cosine {first['min_cosine']} to the reference")
    return proc, first


def one_pass(proc: subprocess.Popen, batch: int) -> float:
    time.sleep(SETTLE_S)
    proc.stdin.write(f"{batch} {PASS_SENTENCES[batch]}\n")
    proc.stdin.flush()
    return float(proc.stdout.readline())


def dump(proc: subprocess.Popen, path: Path):
    """The worker's embeddings of the 256 bench sentences (256, 384)."""
    import numpy as np

    proc.stdin.write(f"dump {path}\n")
    proc.stdin.flush()
    if proc.stdout.readline().strip() != "ok":
        raise SystemExit(f"dump to {path} failed")
    return np.load(path).astype(np.float64)


def make_int8_onnx() -> None:
    """ORT's dynamic int8 model from the fp32 export, once."""
    if INT8_ONNX.is_file() and INT8_ONNX.stat().st_mtime >= eb.ONNX_PATH.stat().st_mtime:
        return
    site = next((eb.WORK_DIR / "venv-st" / "lib").glob("python3*/site-packages"))
    ONNX_TOOLS.mkdir(exist_ok=True)
    for package in ("onnx", "ml_dtypes"):
        link = ONNX_TOOLS / package
        if not link.exists():
            link.symlink_to(site / package)
    python = eb.WORK_DIR / "venv-ort" / "bin" / "python"
    env = {**os.environ, "PYTHONPATH": str(ONNX_TOOLS)}
    subprocess.run([str(python), str(eb.STACKS_DIR / "quantize_onnx.py"), str(eb.ONNX_PATH), str(INT8_ONNX)],
                   check=True, env=env)


def make_int8_folder(python: Path, kind: str = "int8") -> Path:
    """The model converted by this tree's `votive convert --type int8` (or `kind`: panels), made afresh each run
    (the format is this tree's); returns the folder."""
    folder = INT8_FOLDER if kind == "int8" else eb.WORK_DIR / f"minilm-{kind}"
    cli = [str(python), "-c", "import sys; from votive.cli import main; sys.exit(main(sys.argv[1:]))"]
    subprocess.run([*cli, "convert", str(eb.model_dir()), "--to", str(folder), "--type", kind, "--force"],
                   check=True, cwd=eb.REPO_DIR)
    return folder


def quantized_stacks(stacks: dict[str, eb.Stack]) -> list[eb.Stack]:
    make_int8_onnx()
    v, o = stacks["votive"], stacks["ort"]
    make_int8_folder(v.python)
    return [eb.Stack("votive-q8_0", "votive q8_0", v.python, v.worker, extra=["q8_0"], env=v.env),
            eb.Stack("votive-int8", "votive int8", v.python, v.worker, extra=["int8"], env=v.env),
            eb.Stack("votive-int8-stored", "votive int8 (converted folder)", v.python, v.worker,
                     extra=["stored", str(INT8_FOLDER)], env=v.env),
            eb.Stack("ort-int8", "ONNX Runtime int8", o.python, o.worker, extra=[str(INT8_ONNX)])]


def artifact_mb(chosen: list[eb.Stack]) -> dict[str, float]:
    """Bytes on disk of the weights each stack loads: the ONNX file, or the safetensors of votive's folder (the
    float model's for the stacks quantizing at load)."""
    float_weights = Path(eb.model_dir()) / "model.safetensors"
    files = {"ort": eb.ONNX_PATH, "ort-int8": INT8_ONNX, "votive-int8-stored": INT8_FOLDER / "model.safetensors"}
    return {s.name: files.get(s.name, float_weights).stat().st_size / eb.MB for s in chosen}


def cold_starts(chosen: list[eb.Stack], reps: int) -> dict[str, float]:
    """Median spawn-to-exit seconds of `cold` workers (import, load, embed one sentence), stacks interleaved after
    one untimed round that warms the page cache."""
    model = eb.model_dir()
    walls = {s.name: [] for s in chosen}
    for rnd in range(reps + 1):
        for s in chosen:
            res = eb.run_worker(s, "cold", [model, eb.COLD_SENTENCE], f"ab-cold-{s.name}")
            if res.returncode != 0:
                raise SystemExit(f"{s.name} cold start: {res.failure()}")
            if rnd:
                walls[s.name].append(res.wall_s)
    return {n: statistics.median(w) for n, w in walls.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--baseline-tree", type=Path, help="a folder holding another votive/ to compare with")
    parser.add_argument("--quantized", action="store_true", help="add votive q8_0 / int8 and ORT dynamic int8")
    parser.add_argument("--cold-reps", type=int, default=3, help="cold starts per stack with --quantized (0: none)")
    parser.add_argument("--out", type=Path, default=eb.WORK_DIR / "embedding_ab.json")
    args = parser.parse_args()
    stacks = eb.make_stacks(eb.VOTIVE_PYTHON)
    chosen = [stacks["votive"], stacks["ort"]]
    if args.baseline_tree:
        base = eb.Stack("baseline", "votive baseline", stacks["votive"].python, "votive_worker.py",
                        env={"PYTHONPATH": str(args.baseline_tree)})
        subprocess.run([str(base.python), "-m", "compileall", "-q", str(args.baseline_tree / "votive")],
                       stdout=subprocess.DEVNULL)
        chosen.insert(0, base)
    quantized = quantized_stacks(stacks) if args.quantized else []
    chosen += quantized
    eb.compile_votive_bytecode(stacks["votive"].python)
    model = eb.model_dir()
    started = {s.name: start(s, model, MIN_QUANT_COSINE if s in quantized else eb.MIN_COSINE) for s in chosen}
    procs = {name: proc for name, (proc, _) in started.items()}
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
    result = {}
    if quantized:
        import numpy as np

        vecs = {name: dump(proc, eb.WORK_DIR / f"ab-embeddings-{name}.npy") for name, proc in procs.items()}
        ref = vecs["votive"]
        cos = {n: (v * ref).sum(1) / (np.linalg.norm(v, axis=1) * np.linalg.norm(ref, axis=1)) for n, v in vecs.items()}
        result["cosine_to_votive_fp32"] = {n: {"mean": float(c.mean()), "min": float(c.min())} for n, c in cos.items()}
        result["weights_mb"] = {n: first.get("weights_bytes", 0) / eb.MB for n, (_, first) in started.items()}
        result["artifact_mb"] = artifact_mb(chosen)
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    if quantized and args.cold_reps:
        result["cold_start_s"] = cold_starts(chosen, args.cold_reps)
        loads.append(os.getloadavg()[0])
    sps = {n: {b: PASS_SENTENCES[b] / statistics.median(v) for b, v in d.items()} for n, d in seconds.items()}
    args.out.write_text(json.dumps({"sentences_per_s": sps, "seconds": seconds, "loadavg": loads, **result}))
    for b in PASS_SENTENCES:
        line = [f"batch {b}:"] + [f"{n} {sps[n][b]:.1f}/s" for n in sps]
        line += [f"{n}/ort {sps[n][b] / sps['ort'][b]:.3f}x" for n in sps if n not in ("ort", "ort-int8")]
        if quantized:
            line += [f"{n}/ort-int8 {sps[n][b] / sps['ort-int8'][b]:.3f}x"
                     for n in ("votive-q8_0", "votive-int8", "votive-int8-stored")]
        print(" ".join(line))
    if quantized:
        print("cosine to votive fp32 over the 256 bench sentences (mean / min): " + ", ".join(
            f"{n} {c['mean']:.6f} / {c['min']:.6f}" for n, c in result["cosine_to_votive_fp32"].items()))
        print("weights (MB; ONNX file, votive as held after load): " + ", ".join(
            f"{n} {mb:.1f}" for n, mb in result["weights_mb"].items()))
        print("artifact (MB on disk: the ONNX file, votive's model.safetensors): " + ", ".join(
            f"{n} {mb:.1f}" for n, mb in result["artifact_mb"].items()))
        if "cold_start_s" in result:
            print(f"cold start (s, median of {args.cold_reps}): " + ", ".join(
                f"{n} {s:.3f}" for n, s in result["cold_start_s"].items()))
    print(f"{args.rounds} rounds of alternating passes; load average min / median / max "
          f"{min(loads):.2f} / {statistics.median(loads):.2f} / {max(loads):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

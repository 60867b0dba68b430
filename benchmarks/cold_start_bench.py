"""Page-cache-cold starts: fresh process to first answer with the model's and the runtime's files evicted first.

A Lambda cold start reads the layer and the weights from storage that nobody has read lately; the cold starts of
embedding_bench.py and llm_bench.py run with a warm page cache. Here, before each cold run, every file the stack
needs is dropped from the page cache with posix_fadvise(POSIX_FADV_DONTNEED):

    the model (MiniLM's folder; the ONNX export for ORT; the GGUF file for the LLMs),
    the stack's runtime: the source and bytecode of every module the worker imported and every file it mapped
    (the interpreter, extension modules, shared libraries), found by one run under stacks/opened_files.py.

DONTNEED needs no root for files we can open, but it only drops clean pages that no process maps. mincore (through
mmap + ctypes) counts what is still resident afterwards, and the run prints it: pages that another process on
this shared machine has mapped (another engineer's Python from the same venv) stay, and are reported.

Each run is a fresh worker process (the stacks' workers of embedding_bench / llm_bench, their `cold` and `first`
modes). Timed from spawn to exit; the bytes it read from storage come from the child's /proc/<pid>/io
read_bytes, read after it exits but before it is reaped (waitid WNOWAIT), beside ru_inblock from wait4.
Rounds interleave the stacks: each round runs every stack cold (evicted) and then warm (right after, with its
files cached by the cold run). Only the ratios within one run mean anything on a shared machine; the load
average is printed beside them.

    .venv/bin/python benchmarks/cold_start_bench.py                   # MiniLM stacks and Gemma 3, 3 rounds
    .venv/bin/python benchmarks/cold_start_bench.py --what embed --rounds 5
    .venv/bin/python benchmarks/cold_start_bench.py --what embed --stacks votive,votive-int8,ort  # + the int8 folder
    .venv/bin/python benchmarks/cold_start_bench.py --what embed --stacks votive,votive-panels,ort  # + float panels
    .venv/bin/python benchmarks/cold_start_bench.py --what llm --llm-model smollm2

Writes benchmarks/.work/cold_start_results.json and .md.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import embedding_bench as eb  # noqa: E402  (benchmarks/ is not a package)
import llm_bench as lb  # noqa: E402

WORK_DIR = BENCH_DIR / ".work"
PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long)
_libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)


# ------------------------------------------------------------------------------------------ the page cache
def resident_bytes(path: str) -> int:
    """Bytes of `path` in the page cache: mincore over a read-only shared mapping of the whole file (mapping
    reads nothing; only touching would)."""
    try:
        size = os.path.getsize(path)
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    if size == 0:
        os.close(fd)
        return 0
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            return 0
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = (ctypes.c_ubyte * pages)()
            if _libc.mincore(ctypes.c_void_p(addr), size, vec) != 0:
                return 0
            return sum(v & 1 for v in bytes(vec)) * PAGE
        finally:
            _libc.munmap(ctypes.c_void_p(addr), size)
    finally:
        os.close(fd)


def evict(paths: list[str]) -> None:
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def runtime_files(cmd: list[str], env: dict, tag: str) -> list[str]:
    """The files a run of the worker `cmd` needed: its modules' sources and bytecode and every file it mapped
    (stacks/opened_files.py), found by one run of it. The interpreter's whole sys.path would be the safe
    superset, but a venv with torch in it holds 150,000 files: evicting and checking them takes half a minute."""
    out = WORK_DIR / "logs" / f"coldstart-{tag}-files.json"
    wrapped = [cmd[0], str(eb.STACKS_DIR / "opened_files.py"), str(out), *cmd[1:]]
    subprocess.run(wrapped, env=env, cwd=WORK_DIR, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads(out.read_text())


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:  # a runtime's scratch file (ORT's telemetry database) that came and went
        return 0


def model_files(path: str) -> list[str]:
    p = Path(path)
    return [str(f) for f in sorted(p.rglob("*")) if f.is_file()] if p.is_dir() else [str(p)]


# ------------------------------------------------------------------------------------------------- a run
def run_child(cmd: list[str], env: dict, log_stem: Path) -> dict:
    """Spawn to exit; read_bytes from /proc/<pid>/io after exit, before reaping; rusage from wait4."""
    with open(log_stem.with_suffix(".out"), "w") as out, open(log_stem.with_suffix(".err"), "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env, cwd=WORK_DIR)
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - start
        io = {}
        try:
            for line in Path(f"/proc/{proc.pid}/io").read_text().splitlines():
                key, value = line.split(":")
                io[key] = int(value)
        except OSError:
            pass
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        tail = log_stem.with_suffix(".err").read_text().strip().splitlines()[-1:]
        raise RuntimeError(f"{cmd[1]} exited {proc.returncode}: {tail}")
    lines = log_stem.with_suffix(".out").read_text().strip().splitlines()
    return {"wall_s": wall, "read_bytes": io.get("read_bytes"), "inblock_bytes": usage.ru_inblock * 512,
            "maxrss_bytes": usage.ru_maxrss * 1024, "phases": json.loads(lines[-1]).get("phases", {})}


class Case:
    """One stack on one model: how to start its worker, and which files make it cold."""

    def __init__(self, kind: str, name: str, python: Path, worker: str, args: list[str], env: dict,
                 model_paths: list[str]):
        self.kind, self.name, self.python, self.worker, self.args, self.env = kind, name, python, worker, args, env
        if not Path(python).exists():
            raise SystemExit(f"cold_start_bench: {python} missing: run benchmarks/setup_peers.py (and "
                             "setup_llm_peers.py for the LLMs)")
        self.files = sum((model_files(p) for p in model_paths), [])
        self.files = sorted(set(self.files + runtime_files(self.cmd(), env, f"{kind}-{name}".replace(":", "-"))))

    def cmd(self) -> list[str]:
        return [str(self.python), str(eb.STACKS_DIR / self.worker), *self.args]


def embed_cases(stack_names: list[str], alt_tree: Path | None = None) -> list[Case]:
    model = eb.model_dir()
    stacks = eb.make_stacks(eb.VOTIVE_PYTHON)
    cases = []
    for name in stack_names:
        if name in ("votive-int8", "votive-panels"):  # a folder `votive convert --type int8 / panels` writes
            import embedding_ab as ab

            s = stacks["votive"]
            folder = ab.make_int8_folder(s.python, name.removeprefix("votive-"))
            os.sync()  # just written: dirty pages stay cached through DONTNEED until they are on disk
            cases.append(Case("embed", name, s.python, s.worker,
                              ["cold", model, eb.COLD_SENTENCE, "stored", str(folder)], eb.worker_env(s),
                              [str(folder)]))
            continue
        s = stacks[name]
        paths = [model] + ([str(eb.ONNX_PATH)] if name == "ort" else [])
        cases.append(Case("embed", name, s.python, s.worker, ["cold", model, eb.COLD_SENTENCE, *s.extra],
                          eb.worker_env(s), paths))
        if name == "votive" and alt_tree:  # the same stack from another checkout, in the same rounds
            cases.append(Case("embed", "votive-alt", s.python, s.worker, ["cold", model, eb.COLD_SENTENCE],
                              {**eb.worker_env(s), "PYTHONPATH": str(alt_tree)}, paths))
    return cases


def llm_cases(model_key: str) -> list[Case]:
    path = lb.model_path(lb.MODELS[model_key])
    stacks = lb.make_stacks(eb.VOTIVE_PYTHON)
    cases = []
    for name, s in stacks.items():
        env = {k: v for k, v in os.environ.items() if k not in eb.THREAD_VARS}
        env.update(eb.OFFLINE_ENV)
        env.update(s.env)
        cases.append(Case(f"llm:{model_key}", name, s.python, s.worker, ["first", path, str(lb.PROMPT_JSON)], env,
                          [path]))
    return cases


def measure(cases: list[Case], rounds: int) -> dict:
    res = {c.kind + "/" + c.name: {"cold": [], "warm": [], "resident_after_evict": [], "files": len(c.files),
                                   "file_bytes": sum(_size(f) for f in c.files)} for c in cases}
    for case in cases:  # one untimed run each: bytecode written, nothing first-time left in the cold runs
        run_child(case.cmd(), case.env, WORK_DIR / "logs" / f"coldstart-{case.name}-prep")
    loads = [os.getloadavg()[0]]
    for rnd in range(rounds):
        for case in cases:
            key = case.kind + "/" + case.name
            evict(case.files)
            left = sum(resident_bytes(f) for f in case.files)
            res[key]["resident_after_evict"].append(left)
            res[key]["cold"].append(run_child(case.cmd(), case.env, WORK_DIR / "logs" / f"coldstart-{case.name}-c{rnd}"))
            res[key]["warm"].append(run_child(case.cmd(), case.env, WORK_DIR / "logs" / f"coldstart-{case.name}-w{rnd}"))
        loads.append(os.getloadavg()[0])
        print(f"  round {rnd + 1}/{rounds} done (load {loads[-1]:.2f})", flush=True)
    for r in res.values():
        for mode in ("cold", "warm"):
            runs = r[mode]
            r[f"{mode}_median"] = {k: statistics.median(x[k] or 0 for x in runs)
                                   for k in ("wall_s", "read_bytes", "inblock_bytes", "maxrss_bytes")}
    return {"stacks": res, "loadavg": loads}


# ------------------------------------------------------------------------------------------------ report
TITLES = {"votive": "votive", "votive-alt": "votive (--votive-alt tree)", "votive-int8": "votive int8 (converted folder)", "votive-panels": "votive (panels folder: votive convert --type panels)", "ort": "ONNX Runtime", "st": "sentence-transformers", "llamacpp": "llama.cpp"}


def markdown(results: dict) -> str:
    lines = ["| model / stack | cold: spawn to first answer (s) | warm (s) | cold / warm | read from storage, cold "
             "(MB) | warm (MB) | runtime + model files (MB) | still cached after eviction (MB) | cold: votive / "
             "this | warm: votive / this |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    stacks = results["stacks"]
    for key, r in stacks.items():
        kind, name = key.split("/")
        vot = stacks.get(f"{kind}/votive")
        c, w = r["cold_median"], r["warm_median"]
        rc = f"{vot['cold_median']['wall_s'] / c['wall_s']:.3f}x" if vot and not name.startswith("votive") else ""
        rw = f"{vot['warm_median']['wall_s'] / w['wall_s']:.3f}x" if vot and not name.startswith("votive") else ""
        model = "MiniLM" if kind == "embed" else kind.split(":")[1]
        lines.append(f"| {model} / {TITLES[name]} | {c['wall_s']:.3f} | {w['wall_s']:.3f} | "
                     f"{c['wall_s'] / w['wall_s']:.2f}x | {c['read_bytes'] / 1e6:.1f} | {w['read_bytes'] / 1e6:.1f} | "
                     f"{r['file_bytes'] / 1e6:.0f} | {max(r['resident_after_evict']) / 1e6:.1f} | {rc} | {rw} |")
    loads = results["loadavg"]
    return ("\n".join(lines) + f"\n\nMedians of {results['rounds']} rounds, stacks interleaved (each round: evict, "
            f"cold run, warm run). Load average per round: {', '.join(f'{x:.2f}' for x in loads)} "
            f"({os.cpu_count()} cores). {results['date']}.\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--what", default="embed,llm", help="embed, llm or both")
    parser.add_argument("--stacks", default="votive,ort,st", help="embedding stacks")
    parser.add_argument("--llm-model", default="gemma3", choices=sorted(lb.MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--votive-alt", type=Path, help="a folder holding another votive/, measured beside this one")
    parser.add_argument("--out", type=Path, default=WORK_DIR / "cold_start_results.json")
    args = parser.parse_args()
    (WORK_DIR / "logs").mkdir(parents=True, exist_ok=True)
    eb.compile_votive_bytecode(eb.REPO_DIR / ".venv" / "bin" / "python")
    cases = []
    if "embed" in args.what:
        cases += embed_cases(args.stacks.split(","), args.votive_alt)
    if "llm" in args.what:
        cases += llm_cases(args.llm_model)
    # Does eviction work here at all? Drop the first model file and look.
    probe = max(cases[0].files, key=_size)
    evict([probe])
    print(f"eviction check: {probe}: {resident_bytes(probe)} of {_size(probe)} bytes cached after DONTNEED (pages "
          "another process maps stay)", flush=True)
    results = measure(cases, args.rounds)
    results.update(rounds=args.rounds, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    table = markdown(results)
    args.out.write_text(json.dumps(results, indent=1))
    args.out.with_suffix(".md").write_text(table)
    print("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Package benchmark: votive's Lambda artifacts against the same handler's dependencies on its peers, one run.

    sizes         votive's runtime layer as `votive build lambda` writes it (unzipped, and the zip itself, which is
                  deflate level 9) and as `zip -9` over the unpacked files, for each target built; beside the
                  deploy sets of the sentence-transformers/torch and ONNX Runtime stacks (their handlers'
                  dependency closure from pip's metadata, measured in their venvs as embedding_bench.py does)
    cold start    the unpacked artifacts in a Lambda-like tree (votive.emulators.local_tree), the interpreter
                  isolated (-I -S), the real awslambdaric behind the Runtime API emulator: wall time from starting
                  the runtime process to the first embedding answered (init included), median of --reps after
                  one untimed round; beside the ONNX Runtime stack set up the same way (its deploy set in
                  /opt/python, the ONNX file and tokenizer in /opt/model, a handler that loads at init)

Run benchmarks/setup_peers.py once first (it builds the peer venvs and the ONNX export). Then:

    .venv/bin/python benchmarks/package_bench.py                 # builds x86_64/3.11, x86_64/3.12, arm64/3.12
    .venv/bin/python benchmarks/package_bench.py --reuse --reps 3

Figures are printed and written to benchmarks/.work/package_results.json and .md; never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
sys.path[:0] = [str(REPO_DIR), str(BENCH_DIR)]

import embedding_bench as eb  # noqa: E402  (the peers' venvs, deploy sets and zip sizes)

from votive.builders.archive import extract_zip  # noqa: E402
from votive.builders.lambda_build import LambdaTarget, build_lambda  # noqa: E402
from votive.builders.output import MANIFEST_NAME  # noqa: E402
from votive.builders.tools import BuildTools  # noqa: E402
from votive.emulators.local_tree import LambdaTree  # noqa: E402

WORK = eb.WORK_DIR
BUILDS = WORK / "package-builds"
TREES = WORK / "package-trees"
HERE_PY = f"{sys.version_info.major}.{sys.version_info.minor}"
TARGETS = (("x86_64", HERE_PY), ("x86_64", "3.12"), ("arm64", "3.12"))
LAYER_TARGET_MB = 50  # the targets for the runtime layer, unzipped
LAYER_TARGET_RATIO = {"ort": 0.3, "st": 0.05}


def build(arch: str, python: str, reuse: bool) -> dict:
    out = BUILDS / f"minilm-{arch}-py{python}"
    if reuse and (out / MANIFEST_NAME).is_file():
        return json.loads((out / MANIFEST_NAME).read_text())
    started = time.perf_counter()
    result = build_lambda("minilm", out, LambdaTarget(arch=arch, python=python, weights="layer"), force=True,
                          tools=BuildTools(log=lambda line: print(f"    {line}", flush=True)))
    print(f"  built {arch}/{python} in {time.perf_counter() - started:.0f} s", flush=True)
    return result.manifest


def layer_sizes(manifest: dict, folder: Path) -> dict:
    """The runtime layer: its zip as built, and `zip -9` over its unpacked files (as the peers are measured)."""
    layer = next(a for a in manifest["artifacts"] if a["role"] == "runtime")
    unpacked = WORK / "package-unpacked"
    shutil.rmtree(unpacked, ignore_errors=True)
    files = extract_zip(folder / layer["name"], unpacked)
    zip9 = eb.zipped_size([(unpacked, str(f.relative_to(unpacked))) for f in files], WORK / "package-zip9.zip")
    shutil.rmtree(unpacked)
    return {"unzipped_bytes": layer["unzipped_bytes"], "artifact_bytes": layer["zipped_bytes"], "zip9_bytes": zip9,
            "dependencies": manifest["runtime_layer"]["dependencies"]}


def votive_tree(folder: Path) -> LambdaTree:
    tree_root = TREES / "votive"
    shutil.rmtree(tree_root, ignore_errors=True)
    tree = LambdaTree(tree_root, HERE_PY)
    tree.install_build(folder)
    tree.install_runtime_packages(["awslambdaric"])
    return tree


def ort_tree(ort_stack) -> LambdaTree:
    """The ONNX Runtime stack laid out as a Lambda function would ship it."""
    tree_root = TREES / "ort"
    shutil.rmtree(tree_root, ignore_errors=True)
    tree = LambdaTree(tree_root, HERE_PY)
    for root, relative in eb.deploy_listing(ort_stack, eb.NEVER_DEPLOYED + ",huggingface-hub"):
        target = tree.opt / "python" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / relative, target)
    model = tree.opt / "model"
    model.mkdir()
    shutil.copy2(eb.ONNX_PATH, model / "minilm.onnx")
    shutil.copy2(Path(eb.model_dir()) / "tokenizer.json", model / "tokenizer.json")
    for name in ("ort_lambda.py", "ort_worker.py", "harness.py"):
        shutil.copy2(eb.STACKS_DIR / name, tree.task / name)
    tree.install_runtime_packages(["awslambdaric"])
    return tree


def first_answer(tree: LambdaTree, python: str, handler: str, env: dict) -> tuple[float, float, list]:
    """(seconds to init done, seconds to the first answer, the embedding) for one fresh runtime process."""
    started = time.perf_counter()
    with tree.emulator(python, handler, env=env, init_timeout_s=120) as function:
        ready = time.perf_counter()
        outcome = function.invoke({"input": [eb.COLD_SENTENCE]})
        answered = time.perf_counter()
    if not outcome.ok:
        raise eb.BenchError(f"{tree.root.name}: {outcome.error}")
    return ready - started, answered - started, json.loads(outcome.payload)["data"][0]["embedding"]


def cold_starts(trees: dict, reps: int) -> dict:
    samples = {name: {"init_s": [], "first_answer_s": []} for name in trees}
    vectors = {}
    for rep in range(reps + 1):  # the first round warms the page cache and writes the ORT tree's bytecode
        for name, (tree, python, handler, env) in trees.items():
            init_s, total_s, vectors[name] = first_answer(tree, python, handler, env)
            if rep:
                samples[name]["init_s"].append(init_s)
                samples[name]["first_answer_s"].append(total_s)
        print(f"  cold round {rep}{' (untimed)' if rep == 0 else ''} done", flush=True)
    a, b = (vectors[n] for n in ("votive", "ort"))
    cosine = sum(x * y for x, y in zip(a, b)) / (sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5)
    return {name: {key: statistics.median(values) for key, values in s.items()} | {"samples": s}
            for name, s in samples.items()} | {"cosine_votive_ort": cosine}


def markdown(results: dict) -> str:
    mb = lambda n: f"{n / eb.MB:.1f}"  # noqa: E731
    peers = results["peers"]
    lines = ["| what | unzipped MB | zip -9 MB | vs ORT (without huggingface_hub) | vs s-t |",
             "| --- | --- | --- | --- | --- |"]
    for key, layer in results["layers"].items():
        size = layer["unzipped_bytes"]
        lines.append(f"| votive runtime layer {key} ({', '.join(f'{k} {v}' for k, v in layer['dependencies'].items())}) "
                     f"| {mb(size)} | {mb(layer['zip9_bytes'])} | {size / peers['ort']['unzipped_bytes']:.2f}x "
                     f"({size / peers['ort_no_hub']['unzipped_bytes']:.2f}x) "
                     f"| {size / peers['st']['unzipped_bytes']:.3f}x |")
    for key, title in (("ort", "ONNX Runtime deploy set"), ("ort_no_hub", "ONNX Runtime deploy set without huggingface_hub"),
                       ("st", "sentence-transformers deploy set")):
        lines.append(f"| {title} | {mb(peers[key]['unzipped_bytes'])} | {mb(peers[key]['zip9_bytes'])} | | |")
    cold = results["cold_start"]
    lines += ["", "| cold start through the Runtime API (fresh awslambdaric process) | init done | first answer |",
              "| --- | --- | --- |"]
    for name, title in (("votive", "votive (unpacked layers + function zip)"), ("ort", "ONNX Runtime (same path)")):
        lines.append(f"| {title} | {cold[name]['init_s']:.2f} s | {cold[name]['first_answer_s']:.2f} s |")
    lines.append(f"| votive / ORT | {cold['votive']['init_s'] / cold['ort']['init_s']:.2f}x "
                 f"| {cold['votive']['first_answer_s'] / cold['ort']['first_answer_s']:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="timed cold starts per stack (default 5)")
    parser.add_argument("--reuse", action="store_true", help="reuse builds already in .work/package-builds")
    parser.add_argument("--note", default="", help="recorded with the results (e.g. 'machine busy')")
    args = parser.parse_args()
    stacks = eb.make_stacks(Path(sys.executable))
    missing = [s.name for s in stacks.values() if not s.python.exists()] + ([] if eb.ONNX_PATH.exists() else ["onnx"])
    if missing:
        print(f"package_bench: peers not set up ({', '.join(missing)}): run benchmarks/setup_peers.py", file=sys.stderr)
        return 1
    load_start = os.getloadavg()
    print("building", flush=True)
    manifests = {f"{arch}/{python}": (build(arch, python, args.reuse), BUILDS / f"minilm-{arch}-py{python}")
                 for arch, python in TARGETS}
    layers = {key: layer_sizes(manifest, folder) for key, (manifest, folder) in manifests.items()}
    print("measuring peer deploy sets", flush=True)
    cache_path = WORK / "deploy_zip_cache.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    peers = {"st": eb.deploy_set(stacks["st"], "st", eb.NEVER_DEPLOYED, cache),
             "ort": eb.deploy_set(stacks["ort"], "ort", eb.NEVER_DEPLOYED, cache),
             "ort_no_hub": eb.deploy_set(stacks["ort"], "ort_no_hub", eb.NEVER_DEPLOYED + ",huggingface-hub", cache)}
    cache_path.write_text(json.dumps(cache))
    print("cold starts", flush=True)
    here = manifests[f"x86_64/{HERE_PY}"][1]
    onnx_env = {"ORT_ONNX": str(TREES / "ort/opt/model/minilm.onnx"), "ORT_MODEL_DIR": str(TREES / "ort/opt/model")}
    trees = {"votive": (votive_tree(here), sys.executable, "votive_function.handler", {}),
             "ort": (ort_tree(stacks["ort"]), str(stacks["ort"].python), "ort_lambda.handler", onnx_env)}
    cold = cold_starts(trees, args.reps)
    results = {"layers": layers, "peers": peers, "cold_start": cold, "reps": args.reps, "note": args.note,
               "machine": {"cpu": eb.cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                           "load_start": load_start, "load_end": os.getloadavg()},
               "targets": {"layer_unzipped_mb": LAYER_TARGET_MB, "layer_ratio": LAYER_TARGET_RATIO}}
    (WORK / "package_results.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (WORK / "package_results.md").write_text(table + "\n")
    print(table)
    print(f"\ncosine between votive's and ORT's first answers: {cold['cosine_votive_ort']:.5f}; load average "
          f"{load_start[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build what the LLM benchmark sets beside votive: llama.cpp from source, and the read-bandwidth probe.

    venv-llamacpp  llama-cpp-python 0.3.36 compiled here from its sdist with GGML_NATIVE on, so llama.cpp uses
                   the instruction sets this CPU has, AMX excepted (see CMAKE_ARGS); pip's wheel cache is
                   bypassed, since a cached wheel may have been built with other flags. Takes 4 to 7 minutes
                   on 2 cores, longer when the machine is busy.
    read_bw        benchmarks/stacks/read_bw.c compiled with cc -O3 -march=native -pthread.

Everything lands in benchmarks/.work/ (git-ignored). Re-running is cheap: the build is skipped while the venv's
stamp (votive-build.json: pin and CMAKE_ARGS) matches and llama_cpp imports (--force-build redoes it), and the
probe is recompiled only when its source is newer. It reaches nothing but the pip registries. Each run ends by
checking the build: llama.cpp's prompt ids and 64 greedy tokens on the 3 reference prompts of each model must
equal shared/reference/*_tokens.json, so a broken build cannot reach the figures.

Run with the project venv (it resolves the model files through votive's `gemma3` and `smollm2` aliases):

    .venv/bin/python benchmarks/setup_llm_peers.py
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from llm_bench import LLAMA_VENV, MODELS, READ_BW, REFERENCE_DIR, model_path
from setup_peers import (STACKS_DIR, WORK_DIR, SetupError, ensure_venv, installed_versions, run, setup_votive_venv,
                         venv_python)

LLAMA_VERSION = "0.3.36"
LLAMA_PIN = f"llama-cpp-python=={LLAMA_VERSION}"
# GGML_NATIVE compiles for this CPU (-march=native), AMX included; on this project's machines (Firecracker VMs on
# Xeons that report AMX) ggml's AMX matmul dies with SIGSEGV at its first `ldtilecfg`, although the kernel grants
# AMX to the process. ggml builds that path only under __AMX_INT8__, so -mno-amx-int8 drops it and keeps every
# other native instruction set (AVX-512, VNNI, ...). One flag per variable: CMAKE_ARGS is split on spaces.
CMAKE_ARGS = "-DGGML_NATIVE=on -DCMAKE_C_FLAGS=-mno-amx-int8 -DCMAKE_CXX_FLAGS=-mno-amx-int8"
STAMP = LLAMA_VENV / "votive-build.json"
BUILD_LOG = WORK_DIR / "logs" / "llamacpp-build.log"


def build_wanted() -> dict:
    return {"pin": LLAMA_PIN, "cmake_args": CMAKE_ARGS}


def llama_built(py: Path) -> bool:
    """True when the stamp says this pin was built with these flags and the module still imports."""
    try:
        stamp = json.loads(STAMP.read_text())
    except (OSError, ValueError):
        return False
    if {k: stamp.get(k) for k in build_wanted()} != build_wanted():
        return False
    return subprocess.run([str(py), "-c", "import llama_cpp"], capture_output=True).returncode == 0


def build_llama(force: bool) -> dict[str, str]:
    py = ensure_venv(LLAMA_VENV)
    if force or not llama_built(py):
        BUILD_LOG.parent.mkdir(parents=True, exist_ok=True)
        print(f"+ building {LLAMA_PIN} with CMAKE_ARGS={CMAKE_ARGS} (many minutes; log: {BUILD_LOG})", flush=True)
        cmd = [str(py), "-m", "pip", "install", "-v", "--no-cache-dir", "--force-reinstall",
               "--no-binary", "llama-cpp-python", LLAMA_PIN]
        started = time.monotonic()
        env = {**os.environ, "CMAKE_ARGS": CMAKE_ARGS}
        with open(BUILD_LOG, "w") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
        if code != 0:
            raise SetupError(f"building {LLAMA_PIN} failed (exit {code}); see {BUILD_LOG}")
        STAMP.write_text(json.dumps({**build_wanted(), "built": time.strftime("%Y-%m-%d %H:%M"),
                                     "minutes": round((time.monotonic() - started) / 60, 1)}))
    else:
        print(f"= {LLAMA_PIN} already built with {CMAKE_ARGS} ({STAMP}; use --force-build to redo)")
    versions = installed_versions(py)
    if versions.get("llama-cpp-python") != LLAMA_VERSION:
        raise SetupError(f"venv-llamacpp: expected llama-cpp-python {LLAMA_VERSION}, "
                         f"found {versions.get('llama-cpp-python')!r}")
    return versions


def build_read_bw() -> None:
    source = STACKS_DIR / "read_bw.c"
    if READ_BW.exists() and READ_BW.stat().st_mtime >= source.stat().st_mtime:
        print(f"= {READ_BW} is up to date")
        return
    cc = os.environ.get("CC", "cc")
    run([cc, "-O3", "-march=native", "-pthread", "-o", READ_BW, source], "compiling the read-bandwidth probe")


def check_llama(paths: dict[str, str]) -> dict:
    """llama.cpp's prompt ids and greedy tokens on each model's reference prompts must equal the reference."""
    info = {}
    for key, model in MODELS.items():
        out = run([venv_python(LLAMA_VENV), STACKS_DIR / "llm_llamacpp_worker.py", "check", paths[key],
                   REFERENCE_DIR / model.reference], f"checking llama.cpp on {key}")
        result = json.loads(out.strip().splitlines()[-1])
        for rec in result["records"]:
            if not rec["prompt_ids_equal"] or rec["greedy_agree"] != rec["greedy_n"]:
                raise SetupError(
                    f"llama.cpp on {key} does not reproduce the reference for {rec['prompt']!r}: prompt ids "
                    f"{'equal' if rec['prompt_ids_equal'] else 'differ'}, greedy tokens agree for "
                    f"{rec['greedy_agree']} of {rec['greedy_n']}"
                )
        print(f"{key}: llama.cpp reproduces the reference prompt ids and greedy tokens of "
              f"{len(result['records'])} prompts")
        info = result["info"]
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force-build", action="store_true", help="build llama-cpp-python again")
    args = parser.parse_args()
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    try:
        versions = build_llama(args.force_build)
        setup_votive_venv()
        build_read_bw()
        paths = {key: model_path(model) for key, model in MODELS.items()}
        info = check_llama(paths)
    except SetupError as exc:
        print(f"setup_llm_peers: {exc}", file=sys.stderr)
        return 1
    print(f"venv-llamacpp: llama-cpp-python {versions['llama-cpp-python']}, numpy {versions.get('numpy')}")
    print(f"llama.cpp system info: {info.get('system_info')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

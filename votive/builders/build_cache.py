"""Lambda builds kept by their inputs, so that deploying or exporting the same model under another name copies
an identical earlier build (hard links) instead of spending 30-55 s building it again.

The key is a sha256 of everything that changes what `build_lambda` writes: the model as given, a local model's
files (path, size, modification time), the target (architecture, Python, weights placement, S3 location, stream,
quantization, the constraints file's bytes) and votive's own source files, which the build packs. What pip picks
from the index is not in it: a cached build keeps the dependency versions it was built with until it is rebuilt
(`--rebuild`), as does a Hub id without `@revision`.

    >>> folder = build_lambda_cached("minilm", Path(".votive/builds/api"), LambdaTarget())   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import votive
from votive.builders import lambda_build
from votive.builders.lambda_build import BuildResult, LambdaTarget
from votive.builders.output import MANIFEST_NAME, is_votive_build, staged_output
from votive.builders.tools import BuildTools

CACHE_FOLDER = ".by-inputs"  # beside the named builds, under the same root
_SOURCE_SUFFIXES = (".py", ".c", ".h", ".cu", ".cuh", ".json", ".txt", ".toml", ".jinja")


def build_key(model: str, target: LambdaTarget) -> str:
    """The sha256 (hex) of a build's inputs (see the module's docstring)."""
    digest = hashlib.sha256()
    fields = dataclasses.asdict(target)
    if target.constraints is not None:
        fields["constraints"] = hashlib.sha256(Path(target.constraints).read_bytes()).hexdigest()
    digest.update(json.dumps({"model": model, "target": fields}, sort_keys=True, default=str).encode())
    local = Path(model)
    if local.exists():
        _fingerprint(digest, local.resolve())
    package = Path(votive.__file__).resolve().parent
    _fingerprint(digest, package, contents=True)
    pyproject = package.parent / "pyproject.toml"  # the dependencies the build installs
    if pyproject.is_file():
        digest.update(pyproject.read_bytes())
    return digest.hexdigest()


def build_lambda_cached(model: str, out: Path, target: LambdaTarget = LambdaTarget(), *, force: bool = False,
                        tools: BuildTools | None = None, cache: Path | None = None) -> BuildResult:
    """`build_lambda` into `out`, through a cache of builds by inputs: an identical earlier build is linked into
    `out`; otherwise the build is made in the cache first.

    Args:
        cache: the cache folder (default `out`'s parent / .by-inputs).
        force: replace an earlier build at `out`, and build again even when the cache holds one (`--rebuild`).
    """
    tools = tools or BuildTools()
    cache = Path(cache) if cache is not None else Path(out).parent / CACHE_FOLDER
    cached = cache / build_key(model, target)[:24]
    if force or not is_votive_build(cached):
        cache.mkdir(parents=True, exist_ok=True)
        lambda_build.build_lambda(model, cached, target, force=is_votive_build(cached), tools=tools)
    else:
        tools.log(f"reusing an identical build of {model} ({cached})")
    with staged_output(Path(out), force=force or is_votive_build(Path(out))) as stage:
        for source in sorted(cached.rglob("*")):
            dest = stage / source.relative_to(cached)
            if source.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source, dest)  # builds are written whole and never changed in place, so sharing is safe
            except OSError:
                shutil.copy2(source, dest)
    return BuildResult(Path(out), json.loads((Path(out) / MANIFEST_NAME).read_text()))


def _fingerprint(digest, root: Path, *, contents: bool = False) -> None:
    """Add a file or folder's files (relative path, size, and mtime or, with `contents`, the bytes) to `digest`."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()
                                                 and "__pycache__" not in p.parts)
    for path in files:
        if contents and path.suffix not in _SOURCE_SUFFIXES:
            continue
        stat = path.stat()
        digest.update(f"{path.relative_to(root) if path != root else path.name}\0{stat.st_size}\0".encode())
        digest.update(path.read_bytes() if contents else str(stat.st_mtime_ns).encode())

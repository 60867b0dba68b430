"""The Python side of a deployed function: votive and its dependencies in one folder, built for the target.

`build_runtime_tree` fills a folder that goes on the target's import path (a Lambda layer's `python/`, an image's
`/opt/python`): dependencies from wheels for the target, votive's own modules that serving imports, the kernel
library built for the target, then slimmed, stripped and compiled to bytecode by the target's Python version.
"""

from __future__ import annotations

import fnmatch
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import votive
from votive.packaging.bytecode import BytecodeReport, compile_tree
from votive.packaging.dependencies import (
    LEFT_OUT,
    DependencyTarget,
    install_for_target,
    requirement_name,
    votive_requirements,
)
from votive.packaging.kernel_target import KernelReport, build_kernels, strip_program
from votive.packaging.slim import SLIM_RULES, SlimReport, StripReport, slim_tree, strip_shared_libraries
from votive.packaging.targets import MB
from votive.packaging.tools import BuildTools

# votive's own files that serving never needs (paths relative to the votive package), and why.
VOTIVE_LEFT_OUT: tuple[tuple[str, str], ...] = (
    ("cli.py", "the command line runs on the build machine"),
    ("runtime/csrc/*", "C sources; the library is built for the target"),
    ("runtime/kernel_build.py", "builds the C library"),
)
# Of these two packages only the modules that the rest imports go in: infra is mostly local emulators and deploy
# tooling, packaging mostly builders.
VOTIVE_BY_IMPORT = ("infra/", "packaging/")
# ... plus these, which run where the model is served: the function's entry point, the S3 fetch, the ASGI adapter
# (Modal) and the GPU image's kernel-cache warm-up.
VOTIVE_AT_RUNTIME = ("packaging/entry.py", "packaging/s3_weights.py", "packaging/asgi.py", "packaging/warm.py")


@dataclass(frozen=True)
class RuntimeTreeReport:
    """What went into a runtime tree."""

    dependencies: dict[str, str]  # distribution -> version installed for the target
    left_out: dict[str, str]  # distribution -> why it is not there
    kernels: KernelReport
    slimmed: SlimReport
    stripped: StripReport
    bytecode: BytecodeReport

    def to_json(self) -> dict:
        return {"dependencies": self.dependencies, "left_out": self.left_out, "kernels": self.kernels.to_json(),
                "slimmed": self.slimmed.to_json(), "stripped": self.stripped.to_json(),
                "bytecode": self.bytecode.to_json()}


def build_runtime_tree(site: Path, *, target: DependencyTarget, deployed_as: str, tools: BuildTools,
                       unused: Mapping[str, str] | None = None, unused_files: tuple[tuple[str, str], ...] = (),
                       extras: Iterable[str] = (), extra_requirements: Iterable[str] = (),
                       constraints: Path | None = None) -> RuntimeTreeReport:
    """Fill `site` with what serving needs on `target`.

    Args:
        site: an empty folder (created if missing).
        target: the interpreter version, CPU and glibc the folder is for.
        deployed_as: where `site` will be on the target ("/opt/python"), recorded in the bytecode.
        unused: votive requirements this model kind never imports (left out), with the reason.
        unused_files: slimming rules for files this model kind never imports, beside `SLIM_RULES`.
        extras: votive extras the model needs ("tokenizers" for a tokenizer votive does not run itself).
        extra_requirements: more to install, e.g. awslambdaric for a container image.
        constraints: a pip constraints file pinning versions.
    """
    left_out = {**LEFT_OUT, **(unused or {})}
    requirements = votive_requirements(left_out, extras) + list(extra_requirements)
    installed = install_for_target(tools, target, site, requirements, left_out=left_out, constraints=constraints)
    copy_votive(site / "votive")
    kernels = build_kernels(site / "votive" / "runtime" / "libvotive.so", target.arch, target.glibc, tools)
    slimmed = slim_tree(site, SLIM_RULES + tuple(unused_files))
    stripped = strip_shared_libraries(site, strip_program(target.arch, tools), tools)
    tools.log(f"slim: removed {slimmed.files} files ({slimmed.bytes / MB:.1f} MB); stripped {stripped.files} "
              f"libraries ({stripped.saved_bytes / MB:.1f} MB)")
    bytecode = compile_tree(site, deployed_as, target.python, tools)
    dependencies = {name: dist.version for name, dist in sorted(installed.items())}
    named = {requirement_name(r) for r in requirements}
    return RuntimeTreeReport(dependencies, {k: v for k, v in sorted(left_out.items()) if k not in named},
                             kernels, slimmed, stripped, bytecode)


def votive_files(package: Path | None = None) -> list[tuple[str, Path]]:
    """(path relative to the package, file) for each of votive's modules a deployed function may import.

    Every module of votive's serving packages (runtime, backends, models, handlers; models are also imported by
    name, so all of them go), then from infra/ and packaging/ only `VOTIVE_AT_RUNTIME` and what the chosen
    modules import, followed through `import` statements (read with ast, not run).
    """
    package = Path(package or Path(votive.__file__).parent)
    everything = {p.relative_to(package).as_posix(): p for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    chosen = {rel for rel in everything
              if not rel.startswith(VOTIVE_BY_IMPORT) and not any(fnmatch.fnmatchcase(rel, p) for p, _ in VOTIVE_LEFT_OUT)}
    chosen |= set(VOTIVE_AT_RUNTIME)
    todo = sorted(chosen)
    while todo:
        for imported in _votive_imports(todo.pop(), everything):
            if imported not in chosen:
                chosen.add(imported)
                todo.append(imported)
    return [(rel, everything[rel]) for rel in sorted(chosen)]


def _votive_imports(relative: str, everything: dict[str, Path]) -> set[str]:
    """The files of votive modules the file `relative` imports anywhere in its body (absolute or relative
    imports), with their packages' __init__.py."""
    import ast

    path = everything[relative]
    package = ["votive", *relative.split("/")[:-1]]  # the package the file is in
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names = [module] + [f"{module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "votive":
                continue
            for depth in range(2, len(parts) + 1):  # the module and every package above it
                stem = "/".join(parts[1:depth])
                for rel in (f"{stem}.py", f"{stem}/__init__.py"):
                    if rel in everything:
                        found.add(rel)
    return found


def copy_votive(dest: Path, package: Path | None = None) -> int:
    """Copy `votive_files()` into `dest` (the new package folder); returns how many."""
    files = votive_files(package)
    for relative, path in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return len(files)

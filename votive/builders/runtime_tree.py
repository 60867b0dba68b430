"""The Python side of a deployed function: votive and its dependencies in one folder, built for the target.

`build_runtime_tree` fills a folder that goes on the target's import path (a Lambda layer's `python/`, an image's
`/opt/python`): dependencies from wheels for the target, votive's own modules that serving imports, the kernel
library built for the target, then slimmed, stripped and compiled to bytecode by the target's Python version.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import votive
from votive.builders.bytecode import BytecodeReport, compile_tree
from votive.builders.dependencies import (
    LEFT_OUT,
    DependencyTarget,
    install_for_target,
    requirement_name,
    votive_requirements,
)
from votive.builders.kernel_target import KernelReport, build_kernels, strip_program
from votive.builders.slim import SLIM_RULES, SlimReport, StripReport, slim_tree, strip_shared_libraries
from votive.builders.targets import MB
from votive.builders.tools import BuildTools

# votive's serving packages: what a deployed function imports, shipped whole (ARCHITECTURE.md lists the same, and
# tests/test_architecture.py holds every import in them to this set). Everything else is build or test time.
SERVING_PACKAGES = ("__init__.py", "errors.py", "files.py", "sources.py", "package_models.py", "formats/", "quant/",
                    "text/", "backends/", "models/", "protocol/", "handlers/")
# Inside them, what the target gets built from rather than shipped: the C sources and their compiler.
BUILT_FOR_TARGET = ("quant/csrc/", "quant/kernel_build.py")


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
    kernels = build_kernels(site / "votive" / "quant" / "libvotive.so", target.arch, target.glibc, tools)
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
    """(path relative to the package, file) for each of votive's modules a deployed function may import: every
    module of `SERVING_PACKAGES` but `BUILT_FOR_TARGET`. (GPU images add the CUDA sources themselves:
    `cuda_kernels.copy_sources`.)"""
    package = Path(package or Path(votive.__file__).parent)
    chosen = []
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package).as_posix()
        if (path.is_file() and "__pycache__" not in path.parts and path.suffix == ".py"
                and relative.startswith(SERVING_PACKAGES) and not relative.startswith(BUILT_FOR_TARGET)):
            chosen.append((relative, path))
    return chosen


def copy_votive(dest: Path, package: Path | None = None) -> int:
    """Copy `votive_files()` into `dest` (the new package folder); returns how many."""
    files = votive_files(package)
    for relative, path in files:
        target = dest / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return len(files)

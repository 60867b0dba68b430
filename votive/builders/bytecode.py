"""Compile a tree's Python files to bytecode for the target interpreter, as the target will find them.

Lambda unpacks layers and the function onto a read-only filesystem, so a module without a usable `.pyc` is compiled
again in every cold start (and the result thrown away). The `.pyc` files must come from the same Python version
as the runtime (the magic number and the `cpython-312` tag in the name must match), so the target's interpreter
compiles them; with none available the build goes on without bytecode and says so.

They are "unchecked-hash" pycs (PEP 552): the interpreter loads them without looking at the source's timestamp,
which after unzipping is whatever the archive said, and without hashing the source either. The source paths
recorded in them (shown in tracebacks) are where the tree will live on the target (`/opt/python/...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from votive.builders.tools import BuildTools

INVALIDATION_MODE = "unchecked-hash"


@dataclass(frozen=True)
class BytecodeReport:
    interpreter: str | None  # the version that compiled, e.g. "3.12.1"; None when skipped
    files: int  # .pyc files written
    skipped: str | None = None  # why no bytecode was compiled

    def to_json(self) -> dict:
        return {"interpreter": self.interpreter, "invalidation_mode": INVALIDATION_MODE if self.files else None,
                "files": self.files, "skipped": self.skipped}


def compile_tree(root: Path, deployed_as: str, python_version: str, tools: BuildTools) -> BytecodeReport:
    """Write `__pycache__/*.cpython-XY.pyc` beside every `.py` under `root`.

    Args:
        root: the folder as staged here.
        deployed_as: the absolute path it will have on the target ("/opt/python"), recorded in the bytecode.
        python_version: the target's "3.12"; an interpreter of that version must be found (`BuildTools.find_python`).
        tools: runs the interpreter.

    Returns:
        What was compiled, or why nothing was.
    """
    python = tools.find_python(python_version)
    if python is None:
        reason = (f"no Python {python_version} interpreter here (python{python_version} on PATH or pyenv); "
                  "modules will be compiled at every cold start")
        tools.log(f"bytecode: skipped: {reason}")
        return BytecodeReport(None, 0, reason)
    root = Path(root).resolve()
    version = tools.check([python, "-I", "-c", "import platform; print(platform.python_version())"],
                          "ask the target interpreter for its version").strip()
    tools.check([python, "-I", "-m", "compileall", "-q", "-j", "0", "--invalidation-mode", INVALIDATION_MODE,
                 "-s", str(root), "-p", deployed_as, str(root)], f"compile bytecode with Python {version}")
    files = sum(1 for _ in root.rglob("__pycache__/*.pyc"))
    tools.log(f"bytecode: {files} files compiled with Python {version}")
    return BytecodeReport(version, files)

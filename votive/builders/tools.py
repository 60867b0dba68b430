"""The outside world a build reaches for, in one object: programs it runs, where it finds them, what it reports.

Builders take a `BuildTools` and never call subprocess, shutil.which or print themselves, so tests pass one whose
`run` records each command and plays the part of pip, the compiler or strip (see tests/test_packaging*.py).

    >>> tools = BuildTools(run=lambda args, **kw: print(args))       # doctest: +SKIP
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from votive.errors import PackagingError

Runner = Callable[..., "subprocess.CompletedProcess"]  # subprocess.run's signature


def _quiet(message: str) -> None:
    pass


def _pyenv_roots() -> tuple[Path, ...]:
    roots = [os.environ.get("PYENV_ROOT", ""), os.path.expanduser("~/.pyenv")]
    return tuple(Path(r) / "versions" for r in roots if r)


@dataclass
class BuildTools:
    """How a build runs programs and reports progress.

    Attributes:
        run: `subprocess.run` or a stand-in with its signature; every external program goes through it.
        which: finds a program on PATH (`shutil.which`).
        pip: the command that runs pip; it only downloads and unpacks wheels for the target, so any pip works.
        interpreter_dirs: folders holding one folder per Python version (pyenv's `versions/`), searched for an
            interpreter of the target's version to compile bytecode with.
        log: receives one line per build step.
    """

    run: Runner = subprocess.run
    which: Callable[[str], str | None] = shutil.which
    pip: Sequence[str] = (sys.executable, "-m", "pip")
    interpreter_dirs: Sequence[Path] = field(default_factory=_pyenv_roots)
    log: Callable[[str], None] = _quiet

    def check(self, args: Sequence[str], step: str, *, cwd: str | os.PathLike | None = None) -> str:
        """Run `args`; return its stdout, or raise PackagingError naming the step with the program's output."""
        args = [str(a) for a in args]
        try:
            done = self.run(args, capture_output=True, text=True, check=False, cwd=cwd)
        except FileNotFoundError:
            raise PackagingError(f"cannot {step}: program {args[0]!r} not found") from None
        if done.returncode != 0:
            output = (done.stderr or done.stdout or "").strip()
            tail = "\n".join(output.splitlines()[-20:])
            raise PackagingError(f"cannot {step}: `{shlex.join(args)}` exited with {done.returncode}\n{tail}")
        return done.stdout or ""

    def find_python(self, version: str) -> str | None:
        """An interpreter of `version` ('3.12'): this one if it matches, `pythonX.Y` on PATH, or pyenv's newest."""
        if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
            return sys.executable
        candidates = [self.which(f"python{version}")]
        for folder in self.interpreter_dirs:
            found = glob.glob(str(Path(folder) / f"{version}.*" / "bin" / f"python{version}"))
            candidates += sorted(found, key=_patch_level, reverse=True)
        for candidate in candidates:
            if candidate and self._reports_version(candidate, version):
                return candidate
        return None

    def _reports_version(self, python: str, version: str) -> bool:
        try:
            out = self.check([python, "-I", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], "ask for a version")
        except PackagingError:
            return False
        return out.strip() == version


def _patch_level(path: str) -> tuple[int, ...]:
    name = Path(path).parents[1].name  # .../versions/3.12.1/bin/python3.12
    return tuple(int(p) if p.isdigit() else -1 for p in name.split("."))

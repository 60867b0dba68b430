"""Run built artifacts by themselves: a folder laid out as Lambda lays out a function, and the real runtime client.

    ROOT/opt/                          the layers, unzipped (python/ is on the import path, model/ holds weights)
    ROOT/var/task/                     the function zip, unzipped (LAMBDA_TASK_ROOT, the working folder)
    ROOT/var/lang/lib/pythonX.Y/site-packages/
                                       what Lambda's Python runtime itself brings: awslambdaric, boto3
    ROOT/var/runtime/bootstrap.py      sets Lambda's import path, then runs awslambdaric
    ROOT/var/lang/bin/pythonX.Y        the interpreter a wrapper script is given (see below)
    ROOT/tmp/                          the function's /tmp

The interpreter starts isolated and without `site` (`python -I -S`): no PYTHONPATH, no user or virtualenv
site-packages, so nothing from the build machine's environment can be imported, only the standard library and
the tree. The bootstrap puts the tree's folders on sys.path in the order the Lambda Python runtime (3.11+) uses:
/var/task, /opt/python/lib/pythonX.Y/site-packages, /opt/python, the standard library,
/var/lang/lib/pythonX.Y/site-packages, /var/runtime. `RuntimeApiEmulator` then plays the Lambda service.

When the function's variables name a wrapper script (AWS_LAMBDA_EXEC_WRAPPER, a Lambda path such as
/var/task/votive-stream-runtime), the tree runs it as Lambda does: the script under the tree's root, given the
interpreter and then the bootstrap's arguments. That interpreter is var/lang/bin/pythonX.Y, a shell script running
the real one without `site` (`-S`): what the wrapper puts on PYTHONPATH is honoured, the build machine's
site-packages are still out of reach.

The tests and `benchmarks/package_bench.py` use this to prove that a build serves requests on its own.

The runtime's own packages are installed for the tree's Python by pip (`--python-version`, `--platform`,
wheels only), as a build installs a layer, never copied from this environment, and kept in a cache folder
keyed by the target, so that the next tree of the same version copies them. The interpreter is found as a build
finds one for bytecode (`pythonX.Y` on PATH, or under pyenv) unless a path is given.

Example:
    >>> tree = LambdaTree(Path("/tmp/t"), python_version="3.12")                              # doctest: +SKIP
    >>> tree.install_build(Path("build/minilm-lambda")); tree.install_runtime_packages()    # doctest: +SKIP
    >>> with tree.emulator() as function:                                                   # doctest: +SKIP
    ...     function.invoke({"input": "hello"})
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from votive.builders.archive import extract_zip
from votive.builders.dependencies import DependencyTarget, install_for_target, installed_distributions, normalize
from votive.builders.output import MANIFEST_NAME
from votive.builders.targets import LAMBDA_RUNTIMES, architecture
from votive.builders.tools import BuildTools
from votive.errors import PackagingError

# What Lambda's Python runtime provides beside the interpreter: its runtime client and the AWS SDK.
RUNTIME_DISTRIBUTIONS = ("awslambdaric", "boto3")

_BOOTSTRAP = '''"""Lambda's import path for a tree, then the runtime client named first on the command line (written
by votive.emulators.local_tree)."""
import runpy
import sys

sys.path[:0] = {front!r}
sys.path += {back!r}
runtime = sys.argv.pop(1)  # the runtime client module: awslambdaric, or votive's streaming loop
sys.argv[0] = runtime
runpy.run_module(runtime, run_name="__main__", alter_sys=True)
'''


class LambdaTree:
    """A Lambda-like folder tree under `root` for Python `python_version` ("3.11")."""

    def __init__(self, root: Path, python_version: str):
        self.root = Path(root).absolute()
        self.python_version = python_version
        self.opt = self.root / "opt"
        self.task = self.root / "var" / "task"
        self.runtime_site = self.root / "var" / "lang" / "lib" / f"python{python_version}" / "site-packages"
        self.bootstrap = self.root / "var" / "runtime" / "bootstrap.py"
        for folder in (self.opt, self.task, self.runtime_site, self.bootstrap.parent, self.root / "tmp"):
            folder.mkdir(parents=True, exist_ok=True)
        front, back = self.import_path()
        self.bootstrap.write_text(_BOOTSTRAP.format(front=front, back=back))

    def import_path(self) -> tuple[list[str], list[str]]:
        """The folders Lambda puts before the standard library on sys.path, and those it puts after it."""
        site = f"lib/python{self.python_version}/site-packages"
        return ([str(self.task), str(self.opt / "python" / site), str(self.opt / "python")],
                [str(self.runtime_site), str(self.bootstrap.parent)])

    def install_build(self, build: Path) -> dict:
        """Unzip a `votive build lambda` output: every layer into opt/, the function into var/task/.

        Returns:
            The build's manifest.

        Raises:
            PackagingError: the build is for another CPU than this machine's, or another Python than the tree's:
                its compiled modules could not load here.
        """
        manifest = json.loads((Path(build) / MANIFEST_NAME).read_text())
        target = manifest.get("target", {})
        here = architecture(platform.machine()).name
        if target.get("architecture", here) != here:
            raise PackagingError(f"{build} is built for {target['architecture']}, and this machine is {here}: the "
                                 f"tree can only run a build for {here} (build it with --arch {here})")
        if target.get("python", self.python_version) != self.python_version:
            raise PackagingError(f"{build} is built for Python {target['python']}, and this tree is for Python "
                                 f"{self.python_version}: make the tree with python_version={target['python']!r} "
                                 f"or build with --python {self.python_version}")
        for artifact in manifest["artifacts"]:
            dest = self.task if artifact["role"] == "function" else self.opt
            extract_zip(Path(build) / artifact["name"], dest)
        return manifest

    def install_dockerfile_context(self, context: Path) -> list[tuple[str, str]]:
        """Apply a build context's `COPY src dest` lines as Docker would, with dest under the tree's root.

        Returns:
            The (src, dest) pairs copied.
        """
        copies = []
        for line in (Path(context) / "Dockerfile").read_text().splitlines():
            parts = line.split()
            if not parts or parts[0] != "COPY":
                continue
            if len(parts) != 3 or parts[1].startswith("--"):
                raise PackagingError(f"{context}/Dockerfile: cannot apply {line!r} (expected COPY SRC DEST)")
            src, dest = Path(context) / parts[1], self.root / parts[2].lstrip("/")
            if src.is_dir():
                shutil.copytree(src, dest, dirs_exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest)
            copies.append((parts[1], parts[2]))
        return copies

    def install_runtime_packages(self, names: Sequence[str] = RUNTIME_DISTRIBUTIONS, *,
                                 tools: BuildTools | None = None, cache: Path | None = None) -> list[str]:
        """Install what Lambda's runtime ships (awslambdaric, boto3) for the tree's Python on this machine.

        pip installs wheels for the tree's Python version, this CPU and the older of this machine's glibc and the
        Lambda runtime's, as a build installs a layer; nothing is copied from the environment running this.
        The result is kept under `cache` (default ~/.cache/votive/lambda-runtime/, or $VOTIVE_CACHE_DIR) by
        target and names, so that the next tree copies it instead of asking pip again.

        Returns:
            The distributions installed, by normalized name.

        Raises:
            PackagingError: pip failed (no wheel for that Python, usually, or no way to reach the index).
        """
        target = self.package_target()
        key = hashlib.sha256(json.dumps([target.python, target.arch.name, target.glibc,
                                         sorted(normalize(n) for n in names)]).encode()).hexdigest()[:16]
        folder = (cache or default_cache()) / f"{target.abi}-{target.arch.machine}-{key}"
        if not folder.is_dir():
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=folder.name + ".", dir=folder.parent))
            try:
                install_for_target(tools or BuildTools(), target, staging / "site", list(names), left_out={})
                try:
                    (staging / "site").rename(folder)  # whole or not at all: another process may race us
                except OSError:
                    if not folder.is_dir():
                        raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(folder, self.runtime_site, dirs_exist_ok=True, symlinks=True)
        return sorted(installed_distributions(self.runtime_site))

    def package_target(self) -> DependencyTarget:
        """What the runtime's packages are installed for: the tree's Python, this CPU, a glibc this machine has."""
        glibc = host_glibc()
        runtime = LAMBDA_RUNTIMES.get(self.python_version)
        if runtime is not None:
            glibc = min(glibc, runtime.glibc)
        return DependencyTarget(python=self.python_version, arch=architecture(platform.machine()), glibc=glibc)

    def find_python(self, python: str | None = None, tools: BuildTools | None = None) -> str:
        """The interpreter to run: `python` if it is a path, else one of the tree's version found as a build
        finds one (`pythonX.Y` on PATH, or pyenv's), resolved to the real executable (not a pyenv shim, which
        the runtime's plain PATH could not run).

        Raises:
            PackagingError: none found, or the one named is another Python version than the tree's.
        """
        tools = tools or BuildTools()
        if python is None or python == f"python{self.python_version}":
            found = tools.find_python(self.python_version)
        else:
            found = python if os.sep in python else tools.which(python)
        if found is None:
            raise PackagingError(f"no Python {self.python_version} interpreter here (python{self.python_version} "
                                 f"on PATH or under pyenv, {', '.join(map(str, tools.interpreter_dirs))}); "
                                 f"install one (e.g. `pyenv install {self.python_version}`) or pass its path")
        out = tools.check([found, "-I", "-S", "-c", "import sys; print('%d.%d' % sys.version_info[:2]); "
                           "print(sys.executable)"], f"ask {found} for its version")
        version, _, executable = out.strip().partition("\n")
        if version != self.python_version:
            raise PackagingError(f"{found} is Python {version}, and this tree is for Python {self.python_version}")
        return executable.strip() or found

    def command(self, python: str, handler: str, runtime: str = "awslambdaric",
                wrapper: str | None = None) -> list[str]:
        """The command that starts the runtime client (a module run as `python -m`) on `handler` in this tree.

        Args:
            wrapper: the Lambda path of a wrapper script (AWS_LAMBDA_EXEC_WRAPPER): it is run instead, given the
                tree's interpreter and the bootstrap's arguments.
        """
        if wrapper is None:
            return [python, "-I", "-S", str(self.bootstrap), runtime, handler]
        script = self.root / wrapper.lstrip("/")
        if not os.access(script, os.X_OK):
            raise PackagingError(f"{script}: the wrapper script named by AWS_LAMBDA_EXEC_WRAPPER ({wrapper}) is "
                                 "missing or not executable; Lambda could not start the runtime")
        return [str(script), str(self.interpreter(python)), str(self.bootstrap), runtime, handler]

    def interpreter(self, python: str) -> Path:
        """var/lang/bin/pythonX.Y: runs `python` without `site`, as the interpreter handed to a wrapper script.

        Its import path ends with the runtime's site-packages (awslambdaric, boto3), as Lambda's interpreter's does.
        """
        path = self.root / "var" / "lang" / "bin" / f"python{self.python_version}"
        path.parent.mkdir(parents=True, exist_ok=True)
        site = shlex.quote(str(self.runtime_site))
        script = f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}"{site} exec {shlex.quote(python)} -S "$@"\n'
        path.write_text(script)
        path.chmod(0o755)
        return path

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The process environment besides Lambda's own variables: a plain PATH, the tree's /tmp, and `extra`."""
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "TMPDIR": str(self.root / "tmp"), "HOME": str(self.root / "tmp"),
                **(extra or {})}

    @contextmanager
    def emulator(self, python: str | None = None, handler: str = "votive_function.handler", *,
                 env: dict[str, str] | None = None, runtime: str = "awslambdaric", **options) -> Iterator:
        """A started `RuntimeApiEmulator` running `handler` in this tree; stopped on exit.

        Args:
            python: an interpreter of the tree's Python version: a path, a name on PATH, or None to find one
                (`find_python`).
            runtime: the runtime client module (`votive.handlers.stream_runtime` for an image built --stream).
            env: variables to add (VOTIVE_MODEL_S3, AWS_ENDPOINT_URL_S3, AWS_LAMBDA_EXEC_WRAPPER, ...).
            options: passed to RuntimeApiEmulator (environments, config, init_timeout_s, ...).
        """
        from votive.emulators.runtime_api import RuntimeApiEmulator

        command = self.command(self.find_python(python), handler, runtime, (env or {}).get("AWS_LAMBDA_EXEC_WRAPPER"))
        function = RuntimeApiEmulator(handler, command=command, cwd=self.task, env=self.environment(env),
                                      inherit_env=False, **options)
        function.start()
        try:
            yield function
        finally:
            function.stop()


def default_cache() -> Path:
    """Where installed runtime packages are kept between trees: $VOTIVE_CACHE_DIR or ~/.cache/votive."""
    root = os.environ.get("VOTIVE_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "votive")
    return Path(root) / "lambda-runtime"


def host_glibc() -> tuple[int, int]:
    """This machine's C library version, (2, 36); wheels for a newer one could not load here."""
    text = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None  # "glibc 2.36"
    if not text or not text.startswith("glibc "):
        raise PackagingError("this machine has no glibc, so Lambda's manylinux wheels cannot run here")
    major, minor = text.split()[1].split(".")[:2]
    return int(major), int(minor)

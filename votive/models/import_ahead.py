"""numpy's bytecode asked of the disk at once, before `import numpy` reads it one file after another.

On a page-cold start (a Lambda cold start: the layer has not been read lately) `import numpy` reads its ~90 .pyc
files one after another, each a small read that waits for the disk. `start` hands their names to a background
thread that calls posix_fadvise(WILLNEED) on each: the reads are queued together and served in parallel, and the
import finds them cached. MiniLM page-cold: 0.223 -> 0.210 s (benchmarks/cold_start_bench.py, 8 rounds, same run).
Tried and not kept: numpy's shared libraries (the same time: their first page faults read most of them anyway) and
votive's own bytecode (slower: six folders hold many modules a given model does not import).

A hint and nothing more: where numpy is already imported, has no bytecode, cannot be found, or the OS has no
fadvise, nothing happens, and a failure on any file is ignored (the import reads it as it would have).
"""

from __future__ import annotations

import os
import sys

# The packages `import numpy` (2.x) imports: its own folder and these subpackages.
NUMPY_IMPORTS = ("", "_core", "lib", "linalg", "_typing", "_utils", "matrixlib")


def start() -> None:
    """Ask for numpy's bytecode from a background thread, unless numpy is imported already; returns at once."""
    if "numpy" in sys.modules or not hasattr(os, "posix_fadvise"):
        return
    import _thread
    from importlib.util import find_spec

    spec = find_spec("numpy")  # a top-level name: found without importing anything
    if spec is None or not spec.submodule_search_locations:
        return
    _thread.start_new_thread(advise_numpy, (spec.submodule_search_locations[0],))


def advise_numpy(root: str) -> None:
    """`advise` on numpy's bytecode under `root`, the folders listed here too: on a cold disk each listing is a read
    the caller would otherwise wait for."""
    advise(bytecode_files(root, NUMPY_IMPORTS))


def bytecode_files(root: str, packages) -> list[str]:
    """The .pyc files this interpreter would load from packages `packages` (relative folders) of `root`."""
    tag = f".{sys.implementation.cache_tag}.pyc"
    files = []
    for package in packages:
        folder = os.path.join(root, package, "__pycache__")
        try:
            files += [os.path.join(folder, name) for name in sorted(os.listdir(folder)) if name.endswith(tag)]
        except OSError:  # no bytecode there (a source-only install): the import compiles, as it would have
            continue
    return files


def advise(files, fadvise=None) -> None:
    """posix_fadvise(WILLNEED) on each file: its pages are queued for reading, and the call returns."""
    fadvise = fadvise or os.posix_fadvise
    for path in files:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)

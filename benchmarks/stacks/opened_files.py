"""Run a worker script and then list the files it needed: cold_start_bench.py evicts these from the page cache.

    python opened_files.py OUT_JSON WORKER.py ARGS...

At exit, writes to OUT_JSON every imported module's source and bytecode file and every file mapped into the
process (/proc/self/maps: the interpreter, extension modules, shared libraries, memory-mapped weights). Files
read with open() and closed again (a tokenizer.json) are not seen; cold_start_bench adds the model's files itself.
"""

import atexit
import json
import os
import runpy
import sys


def _dump(out):
    import importlib.util

    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path:
            files.add(os.path.realpath(path))
            if path.endswith(".py"):
                try:
                    files.add(os.path.realpath(importlib.util.cache_from_source(path)))
                except (NotImplementedError, ValueError):
                    pass
    with open("/proc/self/maps") as fh:
        for line in fh:
            parts = line.split(None, 5)
            if len(parts) == 6 and parts[5].startswith("/"):
                files.add(parts[5].strip().removesuffix(" (deleted)"))
    with open(out, "w") as fh:
        json.dump(sorted(f for f in files if os.path.isfile(f)), fh)


if __name__ == "__main__":
    out, script = sys.argv[1], sys.argv[2]
    atexit.register(_dump, out)
    sys.argv = sys.argv[2:]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    runpy.run_path(script, run_name="__main__")

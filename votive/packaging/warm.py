"""Warm cupy's kernel cache while a GPU image is built: `python -m votive.packaging.warm`.

cupy compiles a CUDA kernel the first time it is launched and keeps the binary in CUPY_CACHE_DIR. Run during the
image build, this loads the model through the image's own entry point (/var/task/votive_function.py, with
VOTIVE_BACKEND=cupy) and answers one request, which launches, and so compiles and caches, every kernel a request
uses. The cache then ships in the image and a cold start finds it.

Compilation targets the GPU the build sees, so the build must see one of the kind the image will run on (with
BuildKit, a CDI GPU device; otherwise run this in a container started with `--gpus all` and commit it). Without
a GPU it exits with status 1 and says so, instead of leaving a cache that does not help.
"""

from __future__ import annotations

import sys
import time

ENTRY = "/var/task/votive_function.py"
# One request per model kind that runs every kernel a real request runs.
WARM_EVENTS = {
    "votive.handlers.embeddings.handler": {"input": ["warm up the kernel cache", "a second, longer text to batch"]},
    "votive.handlers.generation.handler": {"path": "/v1/completions", "body": {"prompt": "Hello", "max_tokens": 4}},
}


def main(entry: str = ENTRY) -> int:
    try:
        import cupy

        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception as err:  # no cupy, no driver, no device: all mean the same here
        print(f"votive warm: no GPU visible to the build ({type(err).__name__}: {err}); build on a machine whose "
              "build steps see a GPU, or pass --build-arg VOTIVE_WARM=0 and warm a running container", file=sys.stderr)
        return 1
    import json
    from pathlib import Path

    from votive.packaging.entry import CONFIG_NAME, function_handler

    started = time.perf_counter()
    handler = function_handler(entry)
    served = json.loads(Path(entry).with_name(CONFIG_NAME).read_text())["handler"]
    event = WARM_EVENTS.get(served, {"path": "/health"})
    handler(event, None)
    print(f"votive warm: {devices} GPU(s); kernels compiled and cached in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

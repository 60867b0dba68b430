"""Warm cupy's own kernel cache while a GPU image is built: `python -m votive.handlers.warm` (optional).

votive's CUDA kernels (quantized products, norms, attention) need no warming: the image compiles them ahead of
time, without a GPU (`python -m votive.quant.cuda_kernels build`, see votive.quant.cuda_kernels). What is
left is cupy's own elementwise kernels for the array arithmetic between them (a residual add, a cast into the KV
cache): cupy compiles each the first time it runs and keeps it in CUPY_CACHE_DIR. This step loads the model
through the image's entry point (/var/task/votive_function.py, VOTIVE_BACKEND=cupy) and answers one request,
which runs, and so compiles and caches, every one of them; the cache then ships in the image.

cupy compiles for the GPU it sees, so this needs a GPU visible to the build, of the kind the image will run on
(with BuildKit, a CDI GPU device; otherwise run it in a container started with `--gpus all` and commit it). The
Dockerfile runs it only with `--build-arg VOTIVE_WARM=1`. Without a GPU it exits with status 1 and says so,
instead of leaving a cache that does not help.
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
              "build steps see a GPU, or leave VOTIVE_WARM at 0 (votive's own kernels are compiled ahead of time "
              "either way)", file=sys.stderr)
        return 1
    import json
    from pathlib import Path

    from votive.handlers.entry import CONFIG_NAME, function_handler

    started = time.perf_counter()
    handler = function_handler(entry)
    served = json.loads(Path(entry).with_name(CONFIG_NAME).read_text())["handler"]
    event = WARM_EVENTS.get(served, {"path": "/health"})
    handler(event, None)
    print(f"votive warm: {devices} GPU(s); cupy's kernels compiled and cached in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

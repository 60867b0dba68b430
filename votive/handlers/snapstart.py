"""Lambda SnapStart hooks: warm the model before the snapshot, reseed the random generators after each restore.

With SnapStart, Lambda runs the function's init once, snapshots the process's memory, and starts later
environments from that snapshot. Two things follow. What init leaves cold (weight pages not yet touched, BLAS
buffers, the first kernel call's setup) stays cold in every restored copy, so `before_snapshot` runs one small
request through the handler first. And every restored copy starts with the same random generator state, so
sampling would repeat across environments: `after_restore` reseeds Python's and numpy's global generators from
the operating system.

The hooks are registered through `snapshot_restore_py`, which Lambda's Python runtimes (3.12 and later) provide
(and awslambdaric ships); where it cannot be imported `register_hooks` does nothing and returns False. Outside
SnapStart the registered hooks are simply never called.

Call it once at init, after the handler exists:

    handler = make_handler(...)
    snapstart.register_hooks(handler_name, handler)
"""

from __future__ import annotations

import logging
import os
import random
import sys
from typing import Any, Callable

log = logging.getLogger(__name__)

# A direct-invoke event per handler that makes the model do real (small) work.
WARM_EVENTS: dict[str, dict] = {
    "votive.handlers.embeddings.handler": {"input": ["SnapStart warm-up"]},
    "votive.handlers.generation.handler": {"prompt": "Hello", "max_tokens": 1, "temperature": 0},
}


def register_hooks(handler_name: str, handler: Callable[[Any, Any], Any], *, hooks=None) -> bool:
    """Register the warm-up and reseed hooks for `handler`; False when not running where SnapStart exists.

    Args:
        handler_name: module.function of the handler, to pick its warm-up event from WARM_EVENTS (a handler
            without one is not warmed, only reseeded).
        handler: the handler itself, `(event, context) -> answer`.
        hooks: the `snapshot_restore_py` module or a stand-in (default: imported, if present).
    """
    if hooks is None:
        try:
            import snapshot_restore_py as hooks  # provided by Lambda's Python runtime
        except ImportError:
            return False
    event = WARM_EVENTS.get(handler_name)
    if event is not None:
        hooks.register_before_snapshot(lambda: warm(handler, event))
    hooks.register_after_restore(reseed)
    return True


def warm(handler: Callable[[Any, Any], Any], event: dict) -> None:
    """Run one request through `handler`; a failure is logged, never raised (the snapshot is still worth taking)."""
    try:
        handler(dict(event), None)
    except Exception:
        log.exception("SnapStart warm-up request failed; the snapshot is taken without it")


def reseed() -> None:
    """Fresh seeds for Python's `random` and, if it is loaded, numpy's global generator."""
    random.seed(os.urandom(32))
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(int.from_bytes(os.urandom(4), "little"))

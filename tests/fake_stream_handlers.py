"""Handlers for the streaming tests, run in process or by votive's runtime loop in its own process
(`python -m votive.handlers.stream_runtime fake_stream_handlers.<name>`, tests/ as the task root).

With $FAKE_GATE_DIR set to a folder, each chunk or token waits for the file <folder>/<i> (the test creates it),
and a body that is closed writes how many chunks or tokens it made to <folder>/closed.
"""

from __future__ import annotations

import os
from pathlib import Path

from fake_llm import FakeModel, FileGate

from votive.handlers.generation import make_handler
from votive.protocol.streaming import StreamingResponse

GATE_DIR = os.environ.get("FAKE_GATE_DIR")


def _record_close(made: int) -> None:
    if GATE_DIR:
        Path(GATE_DIR, "closed").write_text(str(made))


def chunks(event, context):
    """A text/plain stream of ?n= lines (default 3), failing at ?fail_at= if given."""
    query = event.get("queryStringParameters") or {}
    n, fail_at = int(query.get("n", 3)), int(query.get("fail_at", -1))
    gate = FileGate(GATE_DIR) if GATE_DIR else None

    def body():
        made = 0
        try:
            for i in range(n):
                if gate is not None and not gate.wait(i):
                    raise RuntimeError(f"the test never released chunk {i}")
                if i == fail_at:
                    raise RuntimeError(f"chunk {i} failed")
                made += 1
                yield f"chunk {i}\n".encode()
        finally:
            _record_close(made)

    return StreamingResponse(200, {"content-type": "text/plain", "x-test": "yes"}, body(), cookies=["a=1"])


def http_answer(event, context):
    """A payload 2.0 dict for a function URL event; the event itself for a direct invoke."""
    if event.get("version") != "2.0":
        return {"echo": event}
    return {"statusCode": 201, "headers": {"content-type": "text/plain"}, "cookies": ["k=v"], "body": "made"}


def boom(event, context):
    raise ValueError("boom before any answer")


generation = make_handler(FakeModel(gate=FileGate(GATE_DIR) if GATE_DIR else None, n_ctx=4096,
                                    on_close=lambda g: _record_close(g.completion_tokens)))

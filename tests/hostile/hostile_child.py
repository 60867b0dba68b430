"""Run hostile input in a child process with an address-space limit and a timeout, and read back what it did;
and call a handler as a function URL would.

The child reports one JSON line: the outcome (or the exception's type, its classes and message) and its peak
resident memory. A crash (a signal, an abort on a failed allocation) shows as a non-zero return code, a hang as
the timeout; `run_limited` fails the test on either.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

ADDRESS_SPACE = 2 << 30  # 2 GiB: an allocation past it fails in the child instead of taking the machine
TIMEOUT = 120  # seconds: far past any bound under test, only there to turn a hang into a failure
REPO = Path(__file__).resolve().parents[2]

# Prepended to each child's code: `report(outcome)` and `report_error(exc)` print the one JSON line.
_PRELUDE = '''
import json, resource, sys
def _peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
def report(**outcome):
    print("RESULT " + json.dumps({**outcome, "peak_bytes": _peak()}), flush=True)
def error_of(e):
    return {"type": type(e).__name__, "classes": [c.__name__ for c in type(e).__mro__], "message": str(e)}
'''


def _limit_address_space() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def run_limited(code: str, *args: str, timeout: float = TIMEOUT) -> dict:
    """Run `code` (which calls report(...)) as `python -c` with `args`; returns what it reported."""
    try:
        done = subprocess.run([sys.executable, "-c", _PRELUDE + code, *args], capture_output=True, text=True,
                              timeout=timeout, cwd=REPO, preexec_fn=_limit_address_space)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the child hung: no answer after {timeout} s") from None
    assert done.returncode == 0, f"the child crashed (return code {done.returncode}):\n{done.stderr[-3000:]}"
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, f"the child reported nothing:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return json.loads(lines[0][len("RESULT "):])


def call_url(handler, path: str, body=None, method: str = "POST") -> tuple[int, dict]:
    """Call a votive handler as a function URL would -> (status, JSON body); a dict body is sent as JSON."""
    from votive.protocol.payload_v2 import HttpRequest, request_event

    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    event = request_event(HttpRequest(method, path, [("Content-Type", "application/json")], data),
                          request_id="req-1", now=0.0)
    answer = handler(event, None)
    return answer["statusCode"], json.loads(answer["body"]) if answer["body"] else None

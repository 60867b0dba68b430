"""Function URL handlers for tests/test_map.py: an embeddings endpoint whose vectors are a fixed function of each
text (so that any batching of a corpus has one right answer), with faults to inject. Importable as
`fake_map_handlers.<name>` (the map CLI tests run it in the test process; keep it free of test-only imports).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import time

import numpy as np

DIM = 8
_count = itertools.count()
_lock = threading.Lock()
hung = []  # texts whose first request hung
refuse = [True]  # refusing_embed refuses while this holds True


def vector(text: str) -> np.ndarray:
    """(DIM,) float32 from the text's sha256."""
    return np.frombuffer(hashlib.sha256(text.encode()).digest(), "<u4").astype(np.float32) / 2**32


def _answer(event, status=200, body=None):
    if body is None:
        texts = json.loads(event["body"])["input"]
        texts = [texts] if isinstance(texts, str) else texts
        data = [{"object": "embedding", "index": i, "embedding": base64.b64encode(vector(t).tobytes()).decode()}
                for i, t in enumerate(texts)]
        body = {"object": "list", "data": data, "model": "fake", "usage": {"prompt_tokens": len(texts)}}
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def embed(event, context):
    if event.get("rawPath") == "/health":
        return _answer(event, body={"status": "ok", "model": "fake", "dimension": DIM})
    return _answer(event)


def slow_embed(event, context):
    """50 ms a request: long enough for a test to kill a run half way."""
    time.sleep(0.05)
    return embed(event, context)


def faulty_embed(event, context):
    """One request in five gets a 500, one in seven a 429; the first request of the batch starting with
    "... 100" hangs for 3 s (past the client's timeout), once."""
    if event.get("rawPath") == "/health":
        return embed(event, context)
    with _lock:
        n = next(_count)
    texts = json.loads(event["body"])["input"]
    if texts[0].endswith(" 100"):
        with _lock:
            first = not hung
            hung.append(texts[0])
        if first:
            time.sleep(3)
            return _answer(event)
    if n % 5 == 4:
        return _answer(event, 500, {"error": {"message": "injected failure", "type": "server_error"}})
    if n % 7 == 6:
        return _answer(event, 429, {"error": {"message": "injected throttle", "type": "rate_limit"}})
    return _answer(event)


def refusing_embed(event, context):
    """Refuses (400) any batch holding the text "poison"."""
    if event.get("rawPath") == "/health":
        return embed(event, context)
    texts = json.loads(event["body"])["input"]
    if refuse[0] and "poison" in texts:
        return _answer(event, 400, {"error": {"message": "poison refused", "type": "invalid_request_error"}})
    return _answer(event)

"""Prompt prefixes kept between requests: the KV cache of recent prompts, so that a prompt starting the same way
(a system prompt, few-shot examples, a document asked about again) computes only the rest.

An entry is a prompt's token ids and copies of its keys and values (`KVCache.prefix`), on the model's device.
A new prompt borrows the longest run of leading tokens it shares with any entry: keys and values at a position
depend only on the tokens up to it, so an entry serves every prompt that shares a part of its beginning, not
only the ones that contain it whole. Entries are bounded by a byte budget and evicted least recently used first;
a pinned entry (VOTIVE_WARM_PREFIX, made at init so that it is inside the snapshot) is never evicted.

Bit-identity: the caller passes the model's pass rules (decoding.prompt_passes): `block`, where passes are cut
(on the GPU), and `min_rows`, the fewest rows a pass may have (on the CPU, whose products change their summation
order below 8 rows, as llama.cpp's do). A lent or kept prefix ends on a multiple of `block` and leaves at least
`min_rows` prompt tokens to compute, and a prompt shorter than `min_rows` is not kept, so every position is
computed in a pass of the kind the uncached prompt would have used. At least one prompt token is always
computed: its logits start the generation.

One cache serves one model: entries hold no model identity.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

DEFAULT_BUDGET_MB = 256  # VOTIVE_PREFIX_CACHE_MB's default: SmolLM2-135M keeps ~23 KB a token, so ~11,000 tokens


class PrefixCache:
    """Keys and values of recent prompts, at most `budget_bytes` of them (0: keeps nothing)."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.used_bytes = 0
        self.hits = 0  # prompts that borrowed a prefix
        self.borrowed_tokens = 0  # positions they did not compute
        self._entries: OrderedDict[tuple[int, ...], tuple] = OrderedDict()  # ids -> (k, v, nbytes, pinned); LRU first
        self._lock = threading.Lock()  # `votive serve` answers requests on threads

    def __len__(self) -> int:
        return len(self._entries)

    def restore(self, ids: list[int], cache, block: int = 0, min_rows: int = 1) -> int:
        """Fill `cache` with the longest prefix of `ids` held (ending on a multiple of `block`, and leaving at
        least `min_rows` tokens); returns its length, 0 when none."""
        with self._lock:
            best, best_key = 0, None
            for key in self._entries:
                n = _aligned(min(_common(key, ids), len(ids) - max(min_rows, 1)), block)
                if n > best:
                    best, best_key = n, key
            if best_key is None:
                return 0
            self._entries.move_to_end(best_key)
            k, v = self._entries[best_key][:2]
            self.hits += 1
            self.borrowed_tokens += best
        cache.load_prefix(k[:, :, :best], v[:, :, :, :best])
        return best

    def store(self, ids: list[int], cache, block: int = 0, min_rows: int = 1, pinned: bool = False) -> int:
        """Keep the prompt `ids` whose keys and values `cache` holds (up to a multiple of `block`; nothing for a
        prompt shorter than `min_rows`); returns the positions kept (0 when nothing was: over the budget, too
        short, or no longer than what is held)."""
        n = _aligned(len(ids), block)
        if n == 0 or len(ids) < min_rows or self.budget_bytes <= 0:
            return 0
        key = tuple(ids[:n])
        with self._lock:
            for other in list(self._entries):
                if _common(other, key) == n:  # held already, by this or a longer entry
                    if pinned and not self._entries[other][3]:
                        self._pin(other)
                    self._entries.move_to_end(other)
                    return n if other == key else 0
        k, v = cache.prefix(n)
        nbytes = int(k.nbytes + v.nbytes)
        if nbytes > self.budget_bytes:
            return 0
        with self._lock:
            for other in list(self._entries):  # entries this one contains are redundant now
                if _common(other, key) == len(other) and not self._entries[other][3]:
                    self._drop(other)
            pinned_bytes = sum(entry[2] for entry in self._entries.values() if entry[3])
            if pinned_bytes + nbytes > self.budget_bytes:
                return 0  # the pinned entries leave no room: evict nothing for it
            while self.used_bytes + nbytes > self.budget_bytes:
                self._evict_one()
            self._entries[key] = (k, v, nbytes, pinned)
            self.used_bytes += nbytes
        return n

    def _pin(self, key) -> None:
        k, v, nbytes, _ = self._entries[key]
        self._entries[key] = (k, v, nbytes, True)

    def _drop(self, key) -> None:
        self.used_bytes -= self._entries.pop(key)[2]

    def _evict_one(self) -> None:
        key = next(key for key, entry in self._entries.items() if not entry[3])  # least recently used first
        self._drop(key)


def _common(a, b) -> int:
    """Length of the common leading run of two id sequences."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _aligned(n: int, block: int) -> int:
    return n - n % block if block else n

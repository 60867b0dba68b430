"""SentencePiece-style merging for "llama" GGUF vocabularies (Gemma, LLaMA 1/2), giving llama.cpp's ids.

Spaces become "▁", then adjacent pieces merge greedily, best score first, as long as the merged text is a
token; characters no token covers become byte tokens <0xNN>. Pure Python (a dict lookup and a small heap per
word), since `tokenizers` has no model that merges by score this way.

Upstream: ggml-org/llama.cpp `src/llama-vocab.cpp` (read at commit 00ad355e): `llm_tokenizer_spm_session`.

Example:
    >>> vocab = {"<unk>": 0, "▁h": 1, "i": 2, "▁hi": 3}
    >>> SentencePieceMerger(vocab, [0.0, -1.0, -2.0, -0.5], 0, "example").encode(" hi")
    [3]
"""

from __future__ import annotations

import heapq

from votive.errors import InputError

_SPACE = "\u2581"  # "▁", SentencePiece's visible space


class SentencePieceMerger:
    """llama.cpp's llm_tokenizer_spm_session, run word by word with a cache.

    The merge loop: start from single characters; repeatedly merge the adjacent pair whose concatenation is a
    token with the highest score (leftmost on ties); then any piece that is not a token (a character outside the
    vocabulary) becomes its UTF-8 bytes as <0xNN> tokens.

    Why words: every merged piece is a token, so a boundary before a "▁" can only be crossed by a token that has
    "▁" after its first character. Gemma has one such token (">▁</"), LLaMA 2 has runs of "▁". We split the
    text before each "▁" except where one of those tokens fits across the boundary; merges never interact
    across the remaining boundaries, so merging each word alone gives the same ids and lets repeated words hit
    the cache.
    """

    CACHE_WORDS = 50_000  # cleared when full: prompts repeat words, a server sees many

    def __init__(self, vocab: dict[str, int], scores: list[float], unk_id: int | None, source: str):
        self._vocab = vocab
        self._scores = scores
        self._unk_id = unk_id
        self._source = source
        self._byte_ids = [vocab.get(f"<0x{b:02X}>") for b in range(256)]
        self._cache: dict[str, list[int]] = {}
        # Tokens with "▁" past their first character, keyed by the character before that "▁": (text, offset).
        crossing: dict[str, list[tuple[str, int]]] = {}
        for token in [t for t in vocab if t.find(_SPACE, 1) > 0]:
            at = token.find(_SPACE, 1)
            while at > 0:
                crossing.setdefault(token[at - 1], []).append((token, at))
                at = token.find(_SPACE, at + 1)
        self._crossing = crossing
        self._crossing_pairs = [c + _SPACE for c in crossing]

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        cache = self._cache
        for word in self._words(text.replace(" ", _SPACE)):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = self._merge(word)
                if len(cache) >= self.CACHE_WORDS:
                    cache.clear()
                cache[word] = word_ids
            ids.extend(word_ids)
        return ids

    def piece(self, text: str) -> bytes:
        return text.replace(_SPACE, " ").encode("utf-8")

    def _words(self, text: str) -> list[str]:
        if not any(pair in text for pair in self._crossing_pairs):
            parts = text.split(_SPACE)
            words = [_SPACE + p for p in parts[1:]]
            if parts[0]:
                words.insert(0, parts[0])
            return words
        # Some boundary may be crossed: cut only where no crossing token fits.
        words, start = [], 0
        pos = text.find(_SPACE, 1)
        while pos >= 0:
            fits = self._crossing.get(text[pos - 1], ())
            if not any(pos >= off and text.startswith(tok, pos - off) for tok, off in fits):
                words.append(text[start:pos])
                start = pos
            pos = text.find(_SPACE, pos + 1)
        words.append(text[start:])
        return words

    def _merge(self, word: str) -> list[int]:
        vocab, scores = self._vocab, self._scores
        n = len(word)
        if n == 1:
            tid = vocab.get(word)
            return [tid] if tid is not None else self._bytes_of(word)
        pieces = list(word)  # piece text by start index; "" once merged into its left neighbour
        prev = list(range(-1, n - 1))
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        heap = []  # (-score, left, right, merged text): highest score first, then leftmost
        for i in range(n - 1):
            text = pieces[i] + pieces[i + 1]
            tid = vocab.get(text)
            if tid is not None:
                heap.append((-scores[tid], i, i + 1, text))
        heapq.heapify(heap)
        while heap:
            _, left, right, text = heapq.heappop(heap)
            if pieces[left] + pieces[right] != text:  # stale: one side has merged since
                continue
            pieces[left], pieces[right] = text, ""
            after = nxt[right]
            nxt[left] = after
            if after >= 0:
                prev[after] = left
            before = prev[left]
            if before >= 0:
                merged = pieces[before] + text
                tid = vocab.get(merged)
                if tid is not None:
                    heapq.heappush(heap, (-scores[tid], before, left, merged))
            if after >= 0:
                merged = text + pieces[after]
                tid = vocab.get(merged)
                if tid is not None:
                    heapq.heappush(heap, (-scores[tid], left, after, merged))
        ids, i = [], 0
        while i >= 0:
            tid = vocab.get(pieces[i])
            if tid is not None:
                ids.append(tid)
            else:  # only single characters can be missing: merges always make tokens
                ids.extend(self._bytes_of(pieces[i]))
            i = nxt[i]
        return ids

    def _bytes_of(self, char: str) -> list[int]:
        ids = [self._byte_ids[b] for b in char.encode("utf-8")]
        if None in ids:
            if self._unk_id is None:
                raise InputError(
                    f"{self._source}: character {char!r} is not in the vocabulary, which has neither its byte "
                    "tokens nor an unknown token"
                )
            return [self._unk_id]  # llama.cpp would abort here; one <unk> is the kinder answer
        return ids

"""Constrained decoding: at each step, the tokens whose bytes cannot continue a valid JSON document (or one valid
for a schema, or a forced tool call) get a logit of -inf before the sampler sees them, and the end of generation
is allowed only once the document is complete. The output therefore always parses and validates.

Three layers, each cached for the next:
- `Vocabulary`: every token's bytes, sorted so that tokens sharing a prefix are neighbours (`lcp`, the length of
  the prefix each shares with the one before). Built once per tokenizer.
- `Automaton`: a `votive.text.json_recognizer.Recognizer` over one vocabulary, with the allowed-token mask of
  every recognizer state met so far (an LRU) and the byte transitions between states. Built once per (schema,
  wrapper text, vocabulary) and kept (`automaton_for`), so repeated requests with a schema pay only lookups.
- `JsonConstraint`: one generation's position in its automaton: `mask(logits)` before sampling, `advance(token)`
  after.

A mask is computed by walking the sorted vocabulary with one recognizer state per prefix depth: a token that
shares k bytes with the previous one resumes from the state after those k bytes, and when a byte kills the
state every following token with the same prefix is skipped. Inside a string (the common state, with nearly
every token allowed) the walk is replaced by a shortcut: a token of whole UTF-8 characters without a quote,
backslash or control byte leaves a string state unchanged, so only the few other tokens are walked.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict

import numpy as np

from votive.errors import InputError
from votive.text.json_recognizer import Distance, Recognizer
from votive.text.json_schema import Node

MASK_CACHE = 512  # recognizer states whose masks an automaton keeps (one bool per vocabulary entry each)
STEP_CACHE = 200_000  # (state, byte) transitions an automaton keeps
AUTOMATA = 32  # automata kept across requests
CLOSING_WINDOW = 64  # tokens before the budget's end from which every token must leave room to close the document

_STRING_SPECIAL = frozenset(b'"\\') | frozenset(range(0x20))


class Vocabulary:
    """The bytes of every token of one tokenizer, for masking.

    Args:
        pieces: pieces[i] is token i's bytes (b"" for control tokens, which constrained decoding never picks).
        eos_ids: the tokens that end a generation.
    """

    def __init__(self, pieces: list[bytes], eos_ids):
        self.pieces = pieces
        self.size = len(pieces)
        self.eos_ids = np.array(sorted(eos_ids), np.int64)
        ends = set(eos_ids)
        order = sorted((i for i, p in enumerate(pieces) if p and i not in ends), key=pieces.__getitem__)
        self.order = order  # token ids, their bytes in sorted order
        self.sorted = [pieces[i] for i in order]
        self.lcp = [0] * len(order)  # lcp[k]: bytes sorted[k] shares with sorted[k - 1]
        for k in range(1, len(order)):
            a, b = self.sorted[k - 1], self.sorted[k]
            n = min(len(a), len(b))
            j = 0
            while j < n and a[j] == b[j]:
                j += 1
            self.lcp[k] = j
        # Tokens that leave a string unchanged (no quote, backslash or control byte), and where the others' first
        # such byte is.
        self.single_byte: dict[int, int] = {}  # byte -> a token that is just that byte (to close documents)
        for i in order:
            if len(pieces[i]) == 1:
                self.single_byte.setdefault(pieces[i][0], i)
        self.plain_in_string = np.zeros(self.size, bool)
        self.string_special: list[tuple[int, int]] = []
        for i in order:
            at = next((k for k, b in enumerate(pieces[i]) if b in _STRING_SPECIAL), -1)
            if at < 0 and _whole_utf8(pieces[i]):
                self.plain_in_string[i] = True
            else:  # walked from its first special byte, or whole when it splits a character
                self.string_special.append((i, at if at >= 0 and _whole_utf8(pieces[i][:at]) else 0))


def _whole_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


_vocabularies: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def vocabulary_of(tokenizer) -> Vocabulary:
    """The tokenizer's Vocabulary, built on first use and kept as long as the tokenizer lives."""
    vocab = _vocabularies.get(tokenizer)
    if vocab is None:
        vocab = Vocabulary(token_pieces(tokenizer), tokenizer.eos_ids)
        _vocabularies[tokenizer] = vocab
    return vocab


def token_pieces(tokenizer) -> list[bytes]:
    """Every token's bytes: a GGUF tokenizer's own `token_bytes`; for a Hugging Face tokenizer.json, read from its
    vocabulary through the decoder it declares (byte-level, or SentencePiece's U+2581 and <0xXX> byte tokens)."""
    if hasattr(tokenizer, "token_bytes"):
        return [tokenizer.token_bytes(i) for i in range(len(tokenizer.tokens))]
    inner = tokenizer.tokenizer  # votive.text.hf_tokenizer.HFTokenizer: the tokenizers library's Tokenizer
    spec = json.loads(inner.to_str())
    decoder = json.dumps(spec.get("decoder"))
    special = {t["id"] for t in spec.get("added_tokens", []) if t.get("special")}
    added = {t["id"] for t in spec.get("added_tokens", [])}  # written as plain text, not in the model's alphabet
    vocab = inner.get_vocab(with_added_tokens=True)
    pieces = [b""] * max(tokenizer.vocab_size, max(vocab.values()) + 1)
    if '"ByteLevel"' in decoder:
        from votive.text.byte_level_bpe import _byte_decoder

        table = _byte_decoder()
        for text, i in vocab.items():
            if i not in special:
                plain = i in added or not all(ch in table for ch in text)
                pieces[i] = text.encode("utf-8") if plain else bytes(table[ch] for ch in text)
        return pieces
    if '"Metaspace"' in decoder or "\u2581" in decoder:
        for text, i in vocab.items():
            if i in special:
                continue
            if len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
                pieces[i] = bytes((int(text[3:5], 16),))
            else:
                pieces[i] = text.replace("\u2581", " ").encode("utf-8")
        return pieces
    raise InputError(f"{tokenizer.source}: structured output needs each token's bytes, and this tokenizer's decoder "
                     f"({decoder[:80]}) is not one votive reads them from (byte-level or SentencePiece)")


class Automaton:
    """A recognizer over one vocabulary, with its masks and transitions cached (see the module docstring)."""

    def __init__(self, recognizer: Recognizer, vocab: Vocabulary):
        self.recognizer = recognizer
        self.vocab = vocab
        self._masks: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._steps: dict = {}
        self._distance = Distance(recognizer)
        self._distances: dict = {}

    def distance(self, state: frozenset | None) -> int:
        """The fewest bytes that complete the document from `state` (cached)."""
        d = self._distances.get(state)
        if d is None:
            if len(self._distances) > STEP_CACHE:
                self._distances.clear()
            d = self._distances[state] = self._distance(state)
        return d

    def within(self, state: frozenset, allowed: np.ndarray, limit: int) -> np.ndarray:
        """`allowed` less the tokens after which the document needs more than `limit` bytes to complete; when
        that leaves nothing, the single-byte tokens that bring completion nearest (a budget running out)."""
        vocab = self.vocab
        out = allowed.copy()
        candidates = np.flatnonzero(allowed)
        if all(stack and stack[-1] == ("S", 0) for stack in state):  # plain tokens leave a string as it is
            if self.distance(state) > limit:
                out &= ~vocab.plain_in_string
            candidates = [i for i, _ in vocab.string_special if allowed[i]]
        ends = set(vocab.eos_ids.tolist())
        for i in candidates:
            if int(i) not in ends and self.distance(self.walk(state, vocab.pieces[i])) > limit:
                out[i] = False
        if out.any():
            return out
        nearest = {tid: self.distance(self.walk(state, bytes((b,)))) for b, tid in vocab.single_byte.items()}
        best = min(nearest.values())
        out[[tid for tid, d in nearest.items() if d == best]] = True
        return out

    def allowed(self, state: frozenset) -> np.ndarray:
        """(vocab,) bool: the tokens that keep `state` alive, and EOS when the document is complete."""
        with self._lock:  # environments served from threads share automata
            mask = self._masks.get(state)
            if mask is not None:
                self._masks.move_to_end(state)
                return mask
        mask = self._compute(state)
        with self._lock:
            self._masks[state] = mask
            if len(self._masks) > MASK_CACHE:
                self._masks.popitem(last=False)
        return mask

    def walk(self, state: frozenset | None, data: bytes) -> frozenset | None:
        """The state after `data` (None when dead), through the transition cache."""
        for b in data:
            if state is None:
                return None
            state = self._next(state, b)
        return state

    def _next(self, state: frozenset, b: int) -> frozenset | None:
        key = (state, b)
        nxt = self._steps.get(key, False)
        if nxt is False:
            if len(self._steps) > STEP_CACHE:
                self._steps.clear()
            nxt = self.recognizer.step(state, b) or None
            self._steps[key] = nxt
        return nxt

    def _compute(self, state: frozenset) -> np.ndarray:
        vocab = self.vocab
        mask = np.zeros(vocab.size, bool)
        if all(stack and stack[-1] == ("S", 0) for stack in state):  # inside a string: the shortcut
            mask |= vocab.plain_in_string
            for i, at in vocab.string_special:
                if self.walk(state, vocab.pieces[i][at:]) is not None:
                    mask[i] = True
        else:
            self._scan(state, mask)
        if self.recognizer.complete(state):
            mask[vocab.eos_ids] = True
        return mask

    def _scan(self, state: frozenset, mask: np.ndarray) -> None:
        order, pieces, lcp = self.vocab.order, self.vocab.sorted, self.vocab.lcp
        states = [state]  # states[d]: the state after the first d bytes of the current token
        n, k = len(order), 0
        while k < n:
            del states[lcp[k] + 1 :]
            piece = pieces[k]
            d = lcp[k]
            while d < len(piece):
                nxt = self._next(states[d], piece[d])
                if nxt is None:
                    break
                states.append(nxt)
                d += 1
            k += 1
            if d == len(piece):
                mask[order[k - 1]] = True
            else:  # piece[d] killed it: so it does every token sharing piece[:d + 1]
                while k < n and lcp[k] > d:
                    k += 1


_automata: OrderedDict = OrderedDict()
_automata_lock = threading.Lock()


def automaton_for(key: str, make_recognizer, vocab: Vocabulary) -> Automaton:
    """The cached automaton for `key` (the canonical text of what the recognizer enforces) over `vocab`, made with
    `make_recognizer()` on a miss."""
    full = (key, id(vocab))
    with _automata_lock:
        automaton = _automata.get(full)
        if automaton is None or automaton.vocab is not vocab:
            automaton = Automaton(make_recognizer(), vocab)
            _automata[full] = automaton
            if len(_automata) > AUTOMATA:
                _automata.popitem(last=False)
        _automata.move_to_end(full)
        return automaton


class JsonConstraint:
    """One generation's constraint: `mask(logits)` before each sampling step, `advance(token)` after it."""

    def __init__(self, automaton: Automaton, budget: int | None = None):
        self.automaton = automaton
        self.state: frozenset | None = automaton.recognizer.start
        self.budget = budget  # tokens the generation may make (its max_tokens): the document is closed within it
        self.used = 0

    @classmethod
    def for_schema(cls, tokenizer, node: Node, key: str, prefix: bytes = b"", suffix: bytes = b"",
                   budget: int | None = None) -> "JsonConstraint":
        """A constraint to documents valid for `node` between `prefix` and `suffix`; `key` names the schema and
        texts canonically (it keys the automaton cache)."""
        vocab = vocabulary_of(tokenizer)
        return cls(automaton_for(f"{key}|{prefix!r}|{suffix!r}", lambda: Recognizer(node, prefix, suffix), vocab),
                   budget)

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """logits (vocab,) with every token that cannot continue the document at -inf."""
        allowed = self.automaton.allowed(self.state)
        if self.budget is not None:
            left = self.budget - self.used  # tokens left, this one included; the last must be an end token
            if left <= self.automaton.distance(self.state) + 1 + CLOSING_WINDOW:
                allowed = self.automaton.within(self.state, allowed, left - 2)
        if allowed.shape[0] != logits.shape[0]:  # the output matrix may have padding rows past the tokenizer's
            padded = np.zeros(logits.shape[0], bool)
            n = min(allowed.shape[0], logits.shape[0])
            padded[:n] = allowed[:n]
            allowed = padded
        if not allowed.any():
            raise InputError("constrained decoding reached a state no token can continue (a vocabulary without "
                             "the bytes the schema needs)")
        return np.where(allowed, logits, np.float32(-np.inf)).astype(logits.dtype, copy=False)

    def advance(self, token: int) -> None:
        """Move past the chosen token (an end-of-generation token ends the document)."""
        self.used += 1
        if token in self.automaton.vocab.eos_ids:
            return
        self.state = self.automaton.walk(self.state, self.automaton.vocab.pieces[token])
        if self.state is None:
            raise InputError(f"token {token} does not continue the constrained document")

    @property
    def complete(self) -> bool:
        return self.automaton.recognizer.complete(self.state)

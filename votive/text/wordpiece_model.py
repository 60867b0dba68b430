"""The two ways BERT text becomes ids: the WordPiece model (a word to ids, greedy longest match first) and the
added vocabulary ([CLS], [SEP], [MASK] and user-added tokens, cut out of the text before anything else sees it).

Upstream: huggingface/tokenizers `tokenizers/src/` (read at commit 3ba8ad00; checked against tokenizers 0.23.3):
`models/wordpiece/mod.rs` (WordPiece::tokenize) and `tokenizer/added_vocabulary.rs` (find_matches,
extract_and_normalize).

Example:
    >>> WordPiece({"[UNK]": 0, "un": 1, "##aff": 2, "##able": 3})("unaffable")
    [1, 2, 3]
    >>> AddedTokenMatcher({"[SEP]": AddedToken("[SEP]", 102, normalized=False)}).split("a[SEP]b")
    [('a', None), ('', 102), ('b', None)]
"""

from __future__ import annotations

import re
from typing import NamedTuple

from votive.errors import ModelConfigError
from votive.text.bert_normalizer import WHITESPACE


# ----------------------------------------------------------------------------------------------- WordPiece
class WordPiece:
    """models/wordpiece: a word -> ids, greedy longest-match-first."""

    def __init__(self, vocab: dict[str, int], unk_token: str = "[UNK]", prefix: str = "##",
                 max_input_chars_per_word: int = 100, source: str = "WordPiece"):
        if unk_token not in vocab:
            raise ModelConfigError(f"{source}: the unknown token {unk_token!r} is not in the vocabulary")
        self.vocab = vocab
        self.unk_id = vocab[unk_token]
        self.prefix = prefix  # continuing_subword_prefix
        self.max_chars = max_input_chars_per_word
        # No entry is longer than this (in characters, prefix not counted for continuations), so a longer
        # candidate need not be looked up: the match found is the same, with fewer tries. The continuations'
        # bound follows from the first (a continuation is an entry): a second pass over a 30k vocabulary to make
        # it tight cost 3 ms of every cold start, for a few more lookups in words longer than it.
        self.longest_first = max(map(len, vocab), default=0)
        self.longest_next = max(self.longest_first - len(prefix), 0)

    def __call__(self, word: str) -> list[int]:
        n = len(word)
        if n > self.max_chars:
            return [self.unk_id]
        vocab, prefix = self.vocab, self.prefix
        ids = []
        start = 0
        while start < n:
            end = min(n, start + (self.longest_next if start else self.longest_first))
            while end > start:
                token_id = vocab.get(prefix + word[start:end] if start else word[:end])
                if token_id is not None:
                    break
                end -= 1
            else:  # no entry covers word[start:]: the whole word is unknown
                return [self.unk_id]
            ids.append(token_id)
            start = end
        return ids


# -------------------------------------------------------------------------------------------- added tokens
class AddedToken(NamedTuple):
    """One entry of tokenizer.json's added_tokens, with the id `tokenizers` gives it."""

    content: str
    id: int
    normalized: bool  # matched in the normalized text (true) or in the raw text (false: special tokens)
    lstrip: bool = False  # the match takes the whitespace before it
    rstrip: bool = False  # ... and after it


class AddedTokenMatcher:
    """Cuts added tokens out of a text as added_vocabulary.rs find_matches does: scanning left to right, the
    longest token that starts at the first place any does."""

    def __init__(self, tokens: dict[str, AddedToken]):
        self.tokens = tokens  # pattern (the text to find) -> token
        # re's alternation takes the first alternative that matches, so longest first gives leftmost-longest.
        self.pattern = re.compile("|".join(re.escape(p) for p in sorted(tokens, key=len, reverse=True)))

    def split(self, text: str) -> list[tuple[str, int | None]]:
        """The text as pieces: (text, None) between tokens, ("", id) for each token found."""
        pieces: list[tuple[str, int | None]] = []
        done = 0  # end of what the pieces so far cover
        for match in self.pattern.finditer(text):
            start, stop = match.span()
            token = self.tokens[match.group()]
            if token.lstrip:  # never back into what an earlier match took
                start = max(_whitespace_before(text, start), done)
            if token.rstrip:
                stop = _whitespace_after(text, stop)
            if done < start:
                pieces.append((text[done:start], None))
            pieces.append(("", token.id))
            done = stop
        if done < len(text):
            pieces.append((text[done:], None))
        return pieces


def added_token_matchers(added_tokens, normalizer, source: str):
    """(raw, normalized) AddedTokenMatchers of tokenizer.json's added tokens, each None when it has none: tokens
    with `normalized` false are found in the raw text, the others in the normalized text, spelled as `normalizer`
    (a callable, or None) makes them. ModelConfigError naming a token that normalizes to nothing or to another's."""
    raw = {t.content: t for t in added_tokens if not t.normalized}
    normalized = {}
    for t in added_tokens:
        if t.normalized:
            pattern = normalizer(t.content) if normalizer is not None else t.content
            if not pattern or pattern in normalized:
                raise ModelConfigError(f"{source}: added token {t.content!r} normalizes to {pattern!r}, "
                                       "which is empty or another token's")
            normalized[pattern] = t
    return (AddedTokenMatcher(raw) if raw else None), (AddedTokenMatcher(normalized) if normalized else None)


def _whitespace_before(text: str, i: int) -> int:
    while i > 0 and text[i - 1] in WHITESPACE:
        i -= 1
    return i


def _whitespace_after(text: str, i: int) -> int:
    while i < len(text) and text[i] in WHITESPACE:
        i += 1
    return i

"""SentencePiece Unigram tokenizers in pure Python (XLM-RoBERTa, multilingual-e5, bge-m3): the ids Hugging Face
`tokenizers` gives for their tokenizer.json, without the library.

Upstream: huggingface/tokenizers `tokenizers/src/` (read at commit 3ba8ad00; checked against tokenizers 0.23.3):
`models/unigram/model.rs` (Unigram::from, encode_optimized, tokenize) and `serialization.rs`,
`pre_tokenizers/metaspace.rs`, `pre_tokenizers/whitespace.rs` (WhitespaceSplit), `processors/roberta.rs` and
`template.rs`, `tokenizer/added_vocabulary.rs`, `tokenizer/pre_tokenizer.rs` (empty splits are dropped).

What `Tokenizer.encode` does to one text with such a file, and so what `UnigramTokenizer.encode` does:
1. Added tokens whose `normalized` flag is false (<s>, </s>, <mask> ...) are cut out of the raw text.
2. Each remaining piece is normalized (`spm_charsmap`: the Precompiled charsmap, then Strip / Replace, e.g. runs
   of two or more spaces -> "▁"); added tokens with `normalized` true are cut out of the result.
3. Metaspace: spaces become "▁", a "▁" is put in front (prepend_scheme "always": of every piece; "first": of the
   piece the text starts with), and the piece is split before each "▁" ("▁a▁▁b" -> "▁a", "▁", "▁b").
4. Unigram: each word's best segmentation, the one whose pieces' scores add up highest (Viterbi over character
   positions; a character no piece covers is the unknown token, scored 10 below the lowest piece, and unknown
   neighbours fuse into one); a fused unknown becomes its bytes' <0xNN> tokens when byte_fallback says so and
   they exist, else the unknown id.
5. Truncation to max_length minus the special tokens, then the template: <s> ... </s>.

Example:
    >>> Unigram([("<unk>", 0.0), ("▁a", -1.0), ("b", -2.0), ("▁ab", -2.5)], unk_id=0).encode("▁abx")
    [3, 0]
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from votive.errors import InputError, ModelConfigError
from votive.text.bert_normalizer import SURROGATE_RE, WHITESPACE
from votive.text.spm_charsmap import build_normalizer, normalizer_problem
from votive.text.tokenizer_json import (PairPiece, _template_problem, added_vocabulary, encode_pairs, pair_template,
                                        read_json, template_ids)
from votive.text.wordpiece_model import AddedToken, added_token_matchers

UNK_PENALTY = 10.0  # model.rs K_UNK_PENALTY: an unknown character scores this much below the lowest piece
CACHE_WORDS = 50_000  # words remembered, at most (then the memory starts over)
_SPACE = "\u2581"  # "▁"
_WHITESPACE_RE = re.compile(f"[{re.escape(WHITESPACE)}]+")  # WhitespaceSplit: char::is_whitespace runs


# ------------------------------------------------------------------------------------------------ the model
class Unigram:
    """models/unigram: a word -> the ids of its best segmentation.

    Args:
        vocab: (piece, score) per id, as tokenizer.json's model.vocab lists them.
        unk_id: the unknown token's id, or None (then a character no piece covers is an InputError, where
            tokenizers raises MissingUnkId).
        byte_fallback: unknown text becomes <0xNN> byte tokens when all of them are in the vocabulary.
    """

    def __init__(self, vocab: Sequence[tuple[str, float]], unk_id: int | None = None, byte_fallback: bool = False,
                 source: str = "Unigram"):
        if unk_id is not None and not 0 <= unk_id < len(vocab):
            raise ModelConfigError(f"{source}: unk_id {unk_id} is not an id of the {len(vocab)}-piece vocabulary")
        self.ids = {piece: i for i, (piece, _) in enumerate(vocab)}  # a repeated piece keeps its last id
        self.scores = [float(score) for _, score in vocab]
        self.unk_id = unk_id
        self.byte_fallback = byte_fallback
        self.unk_score = min(self.scores, default=float("inf")) - UNK_PENALTY
        self.longest = max(map(len, self.ids), default=0)  # in characters: no longer candidate is looked up
        self.source = source

    def segment(self, word: str) -> list[str]:
        """model.rs encode_optimized: the pieces of the best path, unknown runs fused."""
        n = len(word)
        if n == 0:
            return []
        ids, scores, unk_score = self.ids, self.scores, self.unk_score
        best = [0.0] * (n + 1)  # best path score ending at each character position
        start_of = [-1] * (n + 1)  # where that path's last piece starts (-1: no path yet)
        id_of = [0] * (n + 1)  # and its id
        for start in range(n):
            here = best[start]
            single = False
            for end in range(start + 1, min(n, start + self.longest) + 1):  # pieces in length order, as the trie
                token_id = ids.get(word[start:end])
                if token_id is None:
                    continue
                score = scores[token_id] + here
                if start_of[end] < 0 or score > best[end]:  # ties keep the earlier candidate
                    best[end], start_of[end], id_of[end] = score, start, token_id
                single = single or end == start + 1
            if not single:
                if self.unk_id is None:
                    raise InputError(f"{self.source}: no piece covers {word[start]!r} and the model has no "
                                     "unknown token")
                score = unk_score + here
                if start_of[start + 1] < 0 or score > best[start + 1]:
                    best[start + 1], start_of[start + 1], id_of[start + 1] = score, start, self.unk_id
        pieces: list[str] = []
        end, unknown_end = n, -1  # fuse_unk: a run of unknown pieces is one piece; where the run being read ends
        while end > 0:
            start = start_of[end]
            if id_of[end] == self.unk_id:
                if unknown_end < 0:
                    unknown_end = end
            else:
                if unknown_end >= 0:
                    pieces.append(word[end:unknown_end])
                    unknown_end = -1
                pieces.append(word[start:end])
            end = start
        if unknown_end >= 0:
            pieces.append(word[:unknown_end])
        pieces.reverse()
        return pieces

    def encode(self, word: str) -> list[int]:
        """model.rs tokenize: the ids of `word`'s pieces."""
        out: list[int] = []
        for piece in self.segment(word):
            token_id = self.ids.get(piece)
            if token_id is None:  # a fused unknown run
                if self.byte_fallback:
                    byte_ids = [self.ids.get(f"<0x{b:02X}>") for b in piece.encode("utf-8")]
                    if None not in byte_ids:
                        out += byte_ids
                        continue
                token_id = self.unk_id
            out.append(token_id)
        return out


# ------------------------------------------------------------------------------------------ pre-tokenizers
PREPEND_SCHEMES = ("always", "first", "never")


class Metaspace:
    """pre_tokenizers/metaspace.rs (with WhitespaceSplit before it when the file says so)."""

    def __init__(self, replacement: str = _SPACE, prepend_scheme: str = "always", split: bool = True,
                 whitespace_split: bool = False):
        self.replacement = replacement
        self.prepend_scheme = prepend_scheme
        self.split = split
        self.whitespace_split = whitespace_split  # a WhitespaceSplit first: words at whitespace, which goes

    def __call__(self, text: str, at_start: bool) -> list[str]:
        """The words of one normalized piece; `at_start`: the piece begins the text (prepend_scheme "first")."""
        if self.whitespace_split:
            return [w for word in _WHITESPACE_RE.split(text) if word for w in self._one(word, at_start)]
        return self._one(text, at_start)

    def _one(self, text: str, at_start: bool) -> list[str]:
        r = self.replacement
        text = text.replace(" ", r)
        if text and not text.startswith(r) and (self.prepend_scheme == "always" or
                                                (self.prepend_scheme == "first" and at_start)):
            text = r + text  # NormalizedString::prepend does nothing to an empty string
        if not self.split:
            return [text] if text else []
        parts = text.split(r)  # split on the replacement, each one merged with what follows it
        return ([parts[0]] if parts[0] else []) + [r + p for p in parts[1:]]


# --------------------------------------------------------------------------------------------- the tokenizer
class UnigramTokenizer:
    """Text -> token ids, special tokens included, truncated to `max_length`; what `tokenizers.Tokenizer` gives
    for a Unigram tokenizer.json with truncation set and padding off (see the module docstring).

    Args:
        model: the Unigram model.
        normalizer: text -> normalized text, or None.
        pre_tokenizer: the Metaspace step.
        added_tokens: the added vocabulary, with final ids.
        template: ids before and after the text.
        pair: the template for two texts (tokenizer_json.pair_template), or None: `encode_pair_batch` needs it.
        max_length: the longest result, special tokens included; None: no truncation.
    """

    def __init__(self, model: Unigram, *, normalizer, pre_tokenizer: Metaspace,
                 added_tokens: Sequence[AddedToken] = (), template: tuple[tuple[int, ...], tuple[int, ...]] = ((), ()),
                 pair: tuple[PairPiece, ...] | None = None, max_length: int | None = None, source: str = "tokenizer"):
        self.model, self.normalizer, self.pre_tokenizer = model, normalizer, pre_tokenizer
        self.before, self.after = tuple(template[0]), tuple(template[1])
        self.pair = pair
        n_special = len(self.before) + len(self.after)
        if max_length is not None and max_length < n_special:
            raise ModelConfigError(f"{source}: max_length {max_length} leaves no room for the template's "
                                   f"{n_special} special tokens")
        self.max_length = max_length
        self._keep = None if max_length is None else max_length - n_special
        self.source = source
        self._raw_tokens, self._normalized_tokens = added_token_matchers(added_tokens, normalizer, source)
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """One text -> its ids, <s> ... </s> included. InputError for a non-str or a lone surrogate."""
        return self._encode(text, "text")

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text -> its ids (what `tokenizers.Tokenizer.encode_batch` gives, as lists of ints)."""
        return [self._encode(text, f"text {i}") for i, text in enumerate(texts)]

    def encode_pair_batch(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Each (first, second) text pair -> (ids, token type ids) by the pair template (XLM-R's
        `<s> a </s> </s> b </s>`, all type 0), truncated 'longest_first' to `max_length` (what rerankers ask);
        `tokenizer_json.encode_pairs` says how."""
        return encode_pairs(self._text_ids, self.pair, self.max_length, pairs, self.source)

    def _encode(self, text: str, where: str) -> list[int]:
        return [*self.before, *self._text_ids(text, where, self._keep), *self.after]

    def _text_ids(self, text: str, where: str, keep: int | None) -> list[int]:
        """The ids of `text` alone (no template), at most `keep` of them."""
        if not isinstance(text, str):
            raise InputError(f"{where} is {type(text).__name__}, expected a string")
        if not text.isascii():
            bad = SURROGATE_RE.search(text)
            if bad is not None:
                raise InputError(f"{where} has a lone surrogate at index {bad.start()}; it is not valid Unicode")
        pieces = self._raw_tokens.split(text) if self._raw_tokens is not None else [(text, None)]
        ids: list[int] = []
        for i, (piece, token_id) in enumerate(pieces):
            ids += [token_id] if token_id is not None else self._ids_of_piece(piece, i == 0, keep)
            if keep is not None and len(ids) >= keep:  # truncation keeps the start: the rest is never used
                break
        if keep is not None:
            del ids[keep:]
        return ids

    def _ids_of_piece(self, piece: str, at_start: bool, keep: int | None) -> list[int]:
        if self.normalizer is not None:
            piece = self.normalizer(piece)
        if self._normalized_tokens is None:
            return self._ids_of_words(piece, at_start, keep)
        ids: list[int] = []
        for j, (part, token_id) in enumerate(self._normalized_tokens.split(piece)):
            ids += [token_id] if token_id is not None else self._ids_of_words(part, at_start and j == 0, keep)
            if keep is not None and len(ids) >= keep:
                break
        return ids

    def _ids_of_words(self, text: str, at_start: bool, keep: int | None) -> list[int]:
        cache, model = self._cache, self.model
        ids: list[int] = []
        for word in self.pre_tokenizer(text, at_start):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = model.encode(word)
                if len(cache) >= CACHE_WORDS:
                    cache.clear()
                cache[word] = word_ids
            ids += word_ids
            if keep is not None and len(ids) >= keep:
                break
        return ids

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_tokenizer_json(cls, path: Path, max_length: int | None = None) -> "UnigramTokenizer":
        """Read a tokenizer.json this module reproduces (see `unigram_problems`); its own truncation and padding
        settings are ignored: `max_length` truncates, nothing pads."""
        return cls.from_spec(read_json(path), str(path), max_length)

    @classmethod
    def from_spec(cls, spec: dict, source: str, max_length: int | None = None) -> "UnigramTokenizer":
        """As `from_tokenizer_json`, from the parsed JSON; ModelConfigError naming the first part it does not
        reproduce."""
        problems = unigram_problems(spec)
        if problems:
            raise ModelConfigError(f"{source}: {problems[0]}, which votive's own tokenizer does not reproduce")
        m = spec["model"]
        model = Unigram([(piece, score) for piece, score in m["vocab"]], m.get("unk_id"),
                        bool(m.get("byte_fallback", False)), source)
        post = spec.get("post_processor")
        pair = pair_template(post)
        if isinstance(post, dict) and post.get("type") == "RobertaProcessing":
            # processors/roberta.rs: <s> A </s> for one text, <s> A </s> </s> B </s> for two, every type id 0
            (cls_id,), (sep_id,) = (post["cls"][1],), (post["sep"][1],)
            post = {"type": "BertProcessing", "cls": post["cls"], "sep": post["sep"]}
            pair = (((cls_id,), 0), ("A", 0), ((sep_id, sep_id), 0), ("B", 0), ((sep_id,), 0))
        return cls(model, normalizer=build_normalizer(spec.get("normalizer"), source),
                   pre_tokenizer=_metaspace(spec["pre_tokenizer"]),
                   added_tokens=added_vocabulary(spec.get("added_tokens") or [], model.ids),
                   template=template_ids(post, source), pair=pair, max_length=max_length, source=source)


# ------------------------------------------------------------------------------ which files are reproduced
_ADDED_TOKEN_KEYS = {"id", "content", "single_word", "lstrip", "rstrip", "normalized", "special"}


def is_unigram(spec) -> bool:
    """The file's model is a Unigram model (a list vocabulary): `unigram_problems` is what to report for it."""
    model = spec.get("model") if isinstance(spec, dict) else None
    return isinstance(model, dict) and model.get("type") == "Unigram" and isinstance(model.get("vocab"), list)


def unigram_problems(spec) -> list[str]:
    """What in a parsed tokenizer.json `UnigramTokenizer` does not reproduce exactly; empty when nothing.

    Reproduced: a Unigram model; normalizers Precompiled, Strip, Replace (strings, and the regexes of
    spm_charsmap.ONIG_REGEXES), a Sequence of them, or none; a Metaspace pre-tokenizer, alone or after a
    WhitespaceSplit; TemplateProcessing, RobertaProcessing, BertProcessing or no post-processor; added tokens
    that are not single_word. The decoder, truncation and padding play no part in encoding here.
    """
    if not isinstance(spec, dict):
        return [f"a {type(spec).__name__} at the top level, not an object"]
    problems = []
    if spec.get("version") != "1.0":
        problems.append(f"format version {spec.get('version')!r}")
    model = spec.get("model")
    if not is_unigram(spec):
        problems.append(f"model type {model.get('type')}" if isinstance(model, dict) else f"model {model!r}")
    elif not all(isinstance(e, list) and len(e) == 2 and isinstance(e[0], str) and isinstance(e[1], (int, float))
                 for e in model["vocab"]):
        problems.append("a Unigram vocabulary that is not [piece, score] pairs")
    elif model.get("unk_id") is not None and not isinstance(model.get("unk_id"), int):
        problems.append(f"a Unigram unk_id {model.get('unk_id')!r}")
    problem = normalizer_problem(spec.get("normalizer"))
    if problem:
        problems.append(problem)
    pre = spec.get("pre_tokenizer")
    try:
        metaspace = _metaspace(pre)
    except ValueError as e:
        problems.append(str(e))
    else:
        normalized_tokens = any(isinstance(t, dict) and t.get("normalized") for t in spec.get("added_tokens") or [])
        if metaspace.prepend_scheme == "first" and (metaspace.whitespace_split or normalized_tokens):
            # "first" asks where a piece starts in the original text, which these splits move
            problems.append("a Metaspace with prepend_scheme 'first' after WhitespaceSplit or normalized added tokens")
    post = spec.get("post_processor")
    if isinstance(post, dict) and post.get("type") == "RobertaProcessing":
        post = {"type": "BertProcessing", "cls": post.get("cls"), "sep": post.get("sep")}
    if post is not None and _template_problem(post):
        problems.append(_template_problem(post))
    for token in spec.get("added_tokens") or []:
        if not isinstance(token, dict) or not isinstance(token.get("content"), str):
            problems.append(f"added token {token!r}")
        elif token.get("single_word"):
            problems.append(f"added token {token['content']!r} with single_word")
        elif token.keys() != _ADDED_TOKEN_KEYS:
            problems.append(f"added token {token['content']!r} with fields {sorted(token)}")
    return problems


def _metaspace(pre) -> Metaspace:
    """The Metaspace of a `pre_tokenizer` value; ValueError naming what is not one."""
    whitespace_split = False
    if isinstance(pre, dict) and pre.get("type") == "Sequence" and isinstance(pre.get("pretokenizers"), list):
        parts = pre["pretokenizers"]
        if len(parts) == 2 and isinstance(parts[0], dict) and parts[0] == {"type": "WhitespaceSplit"}:
            whitespace_split, pre = True, parts[1]
        else:
            kinds = ", ".join(str(p.get("type")) if isinstance(p, dict) else repr(p) for p in parts)
            raise ValueError(f"pre_tokenizer Sequence [{kinds}]")
    if not isinstance(pre, dict) or pre.get("type") != "Metaspace":
        raise ValueError(f"pre_tokenizer {pre.get('type') if isinstance(pre, dict) else repr(pre)}")
    replacement = pre.get("replacement")
    scheme = pre.get("prepend_scheme", "always")
    if pre.get("add_prefix_space") is False:  # metaspace.rs: the older spelling of prepend_scheme "never"
        if "prepend_scheme" in pre and scheme != "never":
            raise ValueError("a Metaspace whose add_prefix_space does not match its prepend_scheme")
        scheme = "never"
    if not isinstance(replacement, str) or len(replacement) != 1 or scheme not in PREPEND_SCHEMES:
        raise ValueError(f"a Metaspace with replacement {replacement!r} and prepend_scheme {scheme!r}")
    return Metaspace(replacement, scheme, bool(pre.get("split", True)), whitespace_split)

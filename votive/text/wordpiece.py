"""BERT's WordPiece tokenizer in pure Python: the ids Hugging Face `tokenizers` gives, without its 8 MB wheel.

Upstream: huggingface/tokenizers `tokenizers/src/` (read at commit 3ba8ad00; checked against tokenizers 0.23.3):
`normalizers/bert.rs` (BertNormalizer), `pre_tokenizers/bert.rs` (BertPreTokenizer), `models/wordpiece/mod.rs`
(WordPiece::tokenize, read_file), `tokenizer/added_vocabulary.rs` (add_tokens, find_matches,
extract_and_normalize), `processors/template.rs` and `bert.rs`, `tokenizer/mod.rs` (post_process); and for the
vocab.txt-only form `bindings/python/py_src/tokenizers/implementations/bert_wordpiece.py`.

What `Tokenizer.encode` does to one text, in order, and so what `WordPieceTokenizer.encode` does:
1. Added tokens whose `normalized` flag is false ([CLS], [SEP], [MASK] ...) are cut out of the raw text, each
   match the leftmost, and the longest there; they become their id and are not touched again.
2. Each remaining piece is normalized (BertNormalizer: drop control characters, whitespace to " ", spaces around
   CJK ideographs, NFD and drop nonspacing marks, lowercase), then added tokens with `normalized` true are cut
   out of it, matched in their normalized spelling.
3. BertPreTokenizer: split on whitespace, and every punctuation character is a word of its own.
4. WordPiece: each word greedily, longest vocabulary entry first, continuations spelled "##rest"; a word with a
   piece that no entry covers, or longer than max_input_chars_per_word, is the unknown token.
5. Truncation to max_length minus the special tokens, then the template: [CLS] ... [SEP].

This module runs those steps and loads a model folder's tokenizer; the parts live beside it:
`bert_normalizer` (steps 2 and 3, over Unicode tables frozen to what `tokenizers` does), `wordpiece_model`
(step 4 and the added-token matching of steps 1 and 2), `tokenizer_json` (which tokenizer.json files are
reproduced, and reading their parts).

Any tokenizer.json with a part this package does not reproduce (another model such as BPE or Unigram, another
normalizer or pre-tokenizer, single-word added tokens ...) is not guessed at: `load_tokenizer` hands it to the
`tokenizers` library when that is installed, and otherwise raises ModelConfigError naming the part.

Example:
    >>> tok = load_tokenizer(Path("all-MiniLM-L6-v2"), max_length=256)    # doctest: +SKIP
    >>> tok.encode_batch(["Hello, world!"])                               # doctest: +SKIP
    [[101, 7592, 1010, 2088, 999, 102]]
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from votive.errors import InputError, ModelConfigError
from votive.text.bert_normalizer import SURROGATE_RE, WHITESPACE, BertNormalizer, pre_tokenize
from votive.text.tokenizer_json import (PairPiece, added_vocabulary, encode_pairs, pair_template, read_json,
                                        template_ids, unsupported_features)
from votive.text.wordpiece_model import AddedToken, WordPiece, added_token_matchers

if TYPE_CHECKING:  # imported when a Unigram file is loaded (its Unicode tables take a moment)
    from votive.text.unigram import UnigramTokenizer

# Words tokenized once are remembered, up to this many (then the memory starts over): text repeats its words.
CACHE_WORDS = 50_000


# --------------------------------------------------------------------------------------------- the tokenizer
class WordPieceTokenizer:
    """Text -> token ids, special tokens included, truncated to `max_length`; what `tokenizers.Tokenizer` gives
    for a BERT tokenizer.json with truncation set and padding off.

    Args:
        wordpiece: the model.
        normalizer: BertNormalizer settings, or None for a tokenizer.json without a normalizer.
        added_tokens: the added vocabulary (special tokens and user-added ones), with their final ids.
        template: ids before and after the text (post_processor's single-sequence template).
        pair: the post_processor's template for two texts (see `tokenizer_json.pair_template`), or None when it
            has none; `encode_pair_batch` needs it.
        max_length: the longest result, special tokens included; None: no truncation.
        source: named in error messages.
    """

    def __init__(self, wordpiece: WordPiece, *, normalizer: BertNormalizer | None,
                 added_tokens: Sequence[AddedToken] = (), template: tuple[tuple[int, ...], tuple[int, ...]] = ((), ()),
                 pair: tuple[PairPiece, ...] | None = None, max_length: int | None = None,
                 source: str = "tokenizer"):
        self.wordpiece = wordpiece
        self.normalizer = normalizer
        self.before, self.after = tuple(template[0]), tuple(template[1])
        self.pair = pair
        n_special = len(self.before) + len(self.after)
        if max_length is not None and max_length < n_special:
            # tokenizers' own arithmetic wraps around here and truncates nothing; refuse instead
            raise ModelConfigError(f"{source}: max_length {max_length} leaves no room for the template's "
                                   f"{n_special} special tokens")
        self.max_length = max_length
        self._keep = None if max_length is None else max_length - n_special  # ids of the text itself
        self.source = source
        self._raw_tokens, self._normalized_tokens = added_token_matchers(added_tokens, normalizer, source)
        self._cache: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        """One text -> its ids, [CLS] ... [SEP] included.

        Raises:
            InputError: `text` is not a str, or holds a lone surrogate (not Unicode text).
        """
        return self._encode(text, "text")

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text -> its ids (what `tokenizers.Tokenizer.encode_batch` gives, as lists of ints)."""
        return [self._encode(text, f"text {i}") for i, text in enumerate(texts)]

    def encode_pair_batch(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Each (first, second) text pair -> (ids, token type ids) by the pair template, `[CLS] a [SEP] b [SEP]`
        with types 0 for the first part and 1 for the second in BERT's, truncated 'longest_first' to `max_length`
        as `tokenizers` does (utils/truncation.rs): what `tokenizers.Tokenizer.encode_batch(pairs)` gives.

        Raises:
            ModelConfigError: the tokenizer has no pair template, or max_length leaves no room for its specials.
            InputError: a text is not a str or not Unicode (named as "pair i, first/second text").
        """
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
        if self._raw_tokens is None:
            ids = self._ids_of_piece(text, keep)
        else:
            ids = []
            for piece, token_id in self._raw_tokens.split(text):
                ids += [token_id] if token_id is not None else self._ids_of_piece(piece, keep)
                if keep is not None and len(ids) >= keep:
                    break
        if keep is not None and len(ids) > keep:
            del ids[keep:]
        return ids

    def _ids_of_piece(self, piece: str, keep: int | None) -> list[int]:
        """Normalize, cut out normalized added tokens, split into words, WordPiece; stop once `keep` ids."""
        if self.normalizer is not None:
            piece = self.normalizer(piece)
        if self._normalized_tokens is None:
            return self._ids_of_words(piece, keep)
        ids: list[int] = []
        for part, token_id in self._normalized_tokens.split(piece):
            ids += [token_id] if token_id is not None else self._ids_of_words(part, keep)
            if keep is not None and len(ids) >= keep:
                break
        return ids

    def _ids_of_words(self, text: str, keep: int | None) -> list[int]:
        cache, wordpiece = self._cache, self.wordpiece
        ids: list[int] = []
        for word in pre_tokenize(text):
            word_ids = cache.get(word)
            if word_ids is None:
                word_ids = wordpiece(word)
                if len(cache) >= CACHE_WORDS:
                    cache.clear()
                cache[word] = word_ids
            ids += word_ids
            if keep is not None and len(ids) >= keep:  # truncation keeps the start: the rest is never used
                break
        return ids

    # ------------------------------------------------------------------------------------------- loading
    @classmethod
    def from_tokenizer_json(cls, path: Path, max_length: int | None = None) -> "WordPieceTokenizer":
        """Read a tokenizer.json this module reproduces (see `unsupported_features`).

        Its own truncation and padding settings are ignored: `max_length` truncates, nothing pads.

        Raises:
            ModelConfigError: the file cannot be read, is malformed, or uses a part this module does not
                reproduce (the message names it).
        """
        return cls.from_spec(read_json(path), str(path), max_length)

    @classmethod
    def from_spec(cls, spec: dict, source: str, max_length: int | None = None) -> "WordPieceTokenizer":
        """As `from_tokenizer_json`, from the parsed JSON."""
        problems = unsupported_features(spec)
        if problems:
            raise ModelConfigError(f"{source}: {problems[0]}, which votive's own tokenizer does not reproduce")
        model = spec["model"]
        vocab = model["vocab"]
        wordpiece = WordPiece(vocab, model["unk_token"], model["continuing_subword_prefix"],
                              model["max_input_chars_per_word"], source)
        norm = spec.get("normalizer")
        normalizer = None if norm is None else BertNormalizer(
            norm["clean_text"], norm["handle_chinese_chars"], norm.get("strip_accents"), norm["lowercase"])
        tokens = added_vocabulary(spec.get("added_tokens") or [], vocab)
        post = spec.get("post_processor")
        return cls(wordpiece, normalizer=normalizer, added_tokens=tokens, template=template_ids(post, source),
                   pair=pair_template(post), max_length=max_length, source=source)

    @classmethod
    def from_vocab_txt(cls, vocab_path: Path, config: dict | None = None,
                       max_length: int | None = None) -> "WordPieceTokenizer":
        """An older checkpoint's vocab.txt (one token a line, id = line number) as `tokenizers`'
        BertWordPieceTokenizer builds it, with tokenizer_config.json's settings as transformers reads them.

        Args:
            vocab_path: the vocab.txt.
            config: tokenizer_config.json's contents: do_lower_case (default true), strip_accents (null),
                tokenize_chinese_chars (true), and the unk/sep/cls/pad/mask token names.
            max_length: as for `from_tokenizer_json`.
        """
        config = config or {}
        try:
            text = Path(vocab_path).read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ModelConfigError(f"{vocab_path}: cannot read the vocabulary ({e})") from None
        lines = text.split("\n")
        if lines[-1] == "":  # the newline ending the last line starts no new one
            lines.pop()
        vocab = {}
        for i, line in enumerate(lines):  # a repeated token keeps its last line, as read_file's map insert does
            vocab[line.rstrip(WHITESPACE)] = i

        def name(key: str, default: str) -> str:
            value = config.get(key, default)
            value = value.get("content", default) if isinstance(value, dict) else value  # AddedToken as a dict
            if not isinstance(value, str):
                raise ModelConfigError(f"tokenizer_config.json beside {vocab_path}: {key} is {value!r}, "
                                       "expected a string")
            return value

        unk, sep, cls_, pad, mask = (name(k + "_token", d) for k, d in
                                     (("unk", "[UNK]"), ("sep", "[SEP]"), ("cls", "[CLS]"), ("pad", "[PAD]"),
                                      ("mask", "[MASK]")))
        for token, role in ((sep, "sep_token"), (cls_, "cls_token")):
            if token not in vocab:
                raise ModelConfigError(f"{vocab_path}: the {role} {token!r} is not in the vocabulary")
        specials = [AddedToken(t, vocab[t], normalized=False) for t in dict.fromkeys((unk, sep, cls_, pad, mask))
                    if t in vocab]
        normalizer = BertNormalizer(True, bool(config.get("tokenize_chinese_chars", True)),
                                    config.get("strip_accents"), bool(config.get("do_lower_case", True)))
        return cls(WordPiece(vocab, unk, "##", 100, str(vocab_path)), normalizer=normalizer, added_tokens=specials,
                   template=((vocab[cls_],), (vocab[sep],)),
                   pair=(((vocab[cls_],), 0), ("A", 0), ((vocab[sep],), 0), ("B", 1), ((vocab[sep],), 1)),
                   max_length=max_length, source=str(vocab_path))


# ----------------------------------------------------------------------------- the tokenizers library fallback
class LibraryTokenizer:
    """A `tokenizers.Tokenizer` behind the same calls, for the tokenizer.json files this module does not
    reproduce: truncation to `max_length`, no padding (a tokenizer.json often says Fixed-128 padding)."""

    def __init__(self, tokenizer, max_length: int | None = None, source: str = "tokenizer"):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.source = source
        tokenizer.no_padding()
        if max_length is not None:
            tokenizer.enable_truncation(max_length=max_length)

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        for i, text in enumerate(texts):  # the same messages as WordPieceTokenizer, before Rust sees the text
            if not isinstance(text, str):
                raise InputError(f"text {i} is {type(text).__name__}, expected a string")
            bad = None if text.isascii() else SURROGATE_RE.search(text)
            if bad is not None:
                raise InputError(f"text {i} has a lone surrogate at index {bad.start()}; it is not valid Unicode")
        return [e.ids for e in self.tokenizer.encode_batch(list(texts))]

    def encode_pair_batch(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """Each (first, second) pair -> (ids, token type ids) by the file's own pair template, truncated
        'longest_first' (the library's default strategy)."""
        for i, pair in enumerate(pairs):
            for text, which in zip(pair, ("first", "second")):
                if not isinstance(text, str):
                    raise InputError(f"pair {i}, {which} text is {type(text).__name__}, expected a string")
                bad = None if text.isascii() else SURROGATE_RE.search(text)
                if bad is not None:
                    raise InputError(f"pair {i}, {which} text has a lone surrogate at index {bad.start()}; it is "
                                     "not valid Unicode")
        return [(e.ids, e.type_ids) for e in self.tokenizer.encode_batch([tuple(p) for p in pairs])]


def _import_tokenizers():
    """The `tokenizers` module, or None when it is not installed."""
    try:
        import tokenizers
    except ImportError:
        return None
    return tokenizers


def load_tokenizer(folder: Path, max_length: int | None = None, *,
                   library: Callable[[], Any] = _import_tokenizers
                   ) -> WordPieceTokenizer | UnigramTokenizer | LibraryTokenizer:
    """The tokenizer of a model folder: its tokenizer.json, else its vocab.txt (+ tokenizer_config.json).

    A tokenizer.json this module reproduces is read here, a SentencePiece Unigram one (XLM-R's) by
    votive.text.unigram when it reproduces every part; any other goes to the `tokenizers` library.

    Args:
        folder: the model folder.
        max_length: truncate to this many ids, special tokens included (None: never).
        library: returns the `tokenizers` module or None (tests pass a stand-in).

    Returns:
        An object with `encode(text)` and `encode_batch(texts)` giving lists of ids.

    Raises:
        ModelConfigError: no tokenizer file, a malformed one, or one that needs `tokenizers` when it is not
            installed (the message names the part and says to install it).
    """
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if path.is_file():
        spec = read_json(path)
        problems = _own_tokenizer_problems(spec)
        if not problems and _is_unigram(spec):
            from votive.text.unigram import UnigramTokenizer

            return UnigramTokenizer.from_spec(spec, str(path), max_length)
        if not problems:
            return WordPieceTokenizer.from_spec(spec, str(path), max_length)
        tokenizers = library()
        if tokenizers is None:
            raise ModelConfigError(
                f"{path}: uses {'; '.join(problems)}, which votive's own tokenizer does not reproduce; install "
                "the `tokenizers` library for it (pip install 'votive[tokenizers]')")
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises plain Exception on a malformed file
            raise ModelConfigError(f"{path}: cannot load tokenizer ({e})") from None
        return LibraryTokenizer(tokenizer, max_length, str(path))
    if (folder / "vocab.txt").is_file():
        config_path = folder / "tokenizer_config.json"
        config = read_json(config_path) if config_path.is_file() else {}
        if not isinstance(config, dict):
            raise ModelConfigError(f"{config_path}: expected an object")
        return WordPieceTokenizer.from_vocab_txt(folder / "vocab.txt", config, max_length)
    raise ModelConfigError(f"{folder}: no tokenizer.json or vocab.txt")


def tokenizers_needed_for(folder: Path) -> str | None:
    """Why serving the model in `folder` needs the `tokenizers` library, or None when this module reads its
    tokenizer (or it has none). Packaging asks this to leave the library out of what it builds.

    Example:
        >>> tokenizers_needed_for(Path("all-MiniLM-L6-v2"))                          # doctest: +SKIP
        >>> tokenizers_needed_for(Path("gpt2"))                                       # doctest: +SKIP
        'tokenizer.json uses model type BPE; normalizer None; pre_tokenizer ByteLevel...'
    """
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    problems = _own_tokenizer_problems(read_json(path))
    return f"tokenizer.json uses {'; '.join(problems)}" if problems else None


def _is_unigram(spec) -> bool:
    """A SentencePiece Unigram tokenizer.json (XLM-R's): votive.text.unigram reads it."""
    model = spec.get("model") if isinstance(spec, dict) else None
    return isinstance(model, dict) and model.get("type") == "Unigram" and isinstance(model.get("vocab"), list)


def _own_tokenizer_problems(spec) -> list[str]:
    """What votive's own tokenizers do not reproduce in a parsed tokenizer.json: for a Unigram model what
    `unigram.unigram_problems` names (imported only then: its Unicode tables take a moment), else what
    `unsupported_features` names for WordPiece."""
    if _is_unigram(spec):
        from votive.text.unigram import unigram_problems

        return unigram_problems(spec)
    return unsupported_features(spec)


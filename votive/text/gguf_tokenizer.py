"""Tokenizers rebuilt from a GGUF file's metadata, giving the token ids llama.cpp gives.

Upstream: ggml-org/llama.cpp `src/llama-vocab.cpp` (read at commit 00ad355e): `llama_vocab::impl::load` for the
defaults and flags, `tokenizer_st_partition` for special tokens, `llm_tokenizer_spm_session` and
`llm_tokenizer_bpe_session` for the two merge algorithms, `token_to_piece` for decoding.

Two vocabulary kinds (`tokenizer.ggml.model`):
- "llama": SentencePiece-style (Gemma, LLaMA 1/2). Spaces become "▁", then adjacent pieces merge greedily,
  best score first, as long as the merged text is a token; characters no token covers become byte tokens
  <0xNN>. Pure Python here (a dict lookup and a small heap per word), since `tokenizers` has no model that
  merges by score this way.
- "gpt2": byte-level BPE (SmolLM, LLaMA 3, Qwen 2). The text is split by the pre-tokenizer's regexes, each
  piece's bytes map to printable characters, then ranked merges apply. Built into a `tokenizers` BPE at load
  (Rust: the regexes need \\p{L}, which `re` lacks, and it is fast).

What both share, as llama.cpp does it: control, user-defined and unknown tokens written in the text are cut out
first and emitted as single ids (longest token first, across the whole text); BOS/EOS are added only when the
file says so (`tokenizer.ggml.add_bos_token`, with llama.cpp's per-kind default when absent); decoding is the
concatenation of each token's piece (what llama.cpp's server streams), control tokens printing as nothing.

Example:
    >>> from votive.formats.gguf import GGUFFile                      # doctest: +SKIP
    >>> tok = GGUFTokenizer.from_gguf(GGUFFile("gemma-3-270m.gguf"))  # doctest: +SKIP
    >>> tok.encode("The capital of France is")                        # doctest: +SKIP
    [2, 818, 5279, 529, 7001, 563]
    >>> tok.decode([506, 5279])                                       # doctest: +SKIP
    ' the capital'
"""

from __future__ import annotations

import codecs
import heapq
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Callable, Iterable, Mapping, Sequence

from votive.errors import InputError, ModelConfigError


class TokenType(IntEnum):
    """`tokenizer.ggml.token_type` values (llama.cpp's llama_token_type)."""

    UNDEFINED = 0
    NORMAL = 1
    UNKNOWN = 2
    CONTROL = 3
    USER_DEFINED = 4
    UNUSED = 5
    BYTE = 6


# Tokens cut out of the text before merging (llama.cpp's cache_special_tokens). Only user-defined ones when the
# caller does not parse special tokens.
_SPECIAL_TYPES = frozenset((TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN))

# Token texts that end a turn, in the order we pick the end-of-turn id when the file names none (llama.cpp takes
# whichever its hash map yields first). SmolLM2's EOS is <|im_end|>; Gemma ends turns with <end_of_turn>.
END_OF_TURN_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>", "_<EOT>",
    "<end_of_utterance>",
)  # fmt: skip

# Token texts that end a generation (llama.cpp's special_eog_ids, found by text): the turn ends, end of message,
# "</s>", and the fill-in-the-middle pad/repo/file-separator tokens. llama.cpp also makes each one a control
# token whatever the file says, so it is parsed as special and never printed; so do we.
END_OF_GENERATION_TEXTS = END_OF_TURN_TEXTS + (
    "<|eom_id|>", "</s>",
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>",
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
    "<|file_sep|>",
)  # fmt: skip

# GGUF metadata keys, by TokenizerSpec field.
GGUF_KEYS = {
    "model": "tokenizer.ggml.model",
    "pre": "tokenizer.ggml.pre",
    "tokens": "tokenizer.ggml.tokens",
    "token_types": "tokenizer.ggml.token_type",
    "scores": "tokenizer.ggml.scores",
    "merges": "tokenizer.ggml.merges",
    "bos_id": "tokenizer.ggml.bos_token_id",
    "eos_id": "tokenizer.ggml.eos_token_id",
    "eot_id": "tokenizer.ggml.eot_token_id",
    "unk_id": "tokenizer.ggml.unknown_token_id",
    "pad_id": "tokenizer.ggml.padding_token_id",
    "add_bos": "tokenizer.ggml.add_bos_token",
    "add_eos": "tokenizer.ggml.add_eos_token",
    "add_space_prefix": "tokenizer.ggml.add_space_prefix",
    "chat_template": "tokenizer.chat_template",
}


@dataclass(frozen=True)
class TokenizerSpec:
    """Everything a GGUF file says about its tokenizer, as plain Python values. None means "not in the file".

    Build one with `from_metadata(gguf_file.metadata)`, or by hand for tests.
    """

    model: str  # tokenizer.ggml.model: "llama" (SentencePiece-style) or "gpt2" (byte-level BPE)
    tokens: Sequence[str]  # token text by id
    token_types: Sequence[int] | None = None  # TokenType by id; None: all NORMAL
    scores: Sequence[float] | None = None  # merge priority by id ("llama" only); None: all 0
    merges: Sequence[str] | None = None  # "left right" pairs, best first ("gpt2" only)
    pre: str | None = None  # tokenizer.ggml.pre: pre-tokenizer name, e.g. "smollm" ("gpt2" only)
    bos_id: int | None = None
    eos_id: int | None = None
    eot_id: int | None = None  # end of turn, when the file names one
    unk_id: int | None = None
    pad_id: int | None = None
    add_bos: bool | None = None  # prepend BOS when encoding with add_special
    add_eos: bool | None = None  # append EOS when encoding with add_special
    add_space_prefix: bool | None = None  # "llama" only: a space before text at the start or after a special token
    chat_template: str | None = None  # tokenizer.chat_template (Jinja)
    source: str = "GGUF metadata"  # where this came from, for error messages (the file's path)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], source: str = "GGUF metadata") -> "TokenizerSpec":
        """Read the tokenizer.* keys of a GGUF metadata mapping (numpy arrays and string sequences welcome).

        Raises:
            ModelConfigError: a key holds the wrong kind of value, or the vocabulary is missing.
        """
        if GGUF_KEYS["tokens"] not in metadata:
            raise ModelConfigError(f"{source}: no {GGUF_KEYS['tokens']}: the file carries no tokenizer")
        values: dict[str, Any] = {}
        for field, key in GGUF_KEYS.items():
            if key not in metadata:
                continue
            value = metadata[key]
            if field == "merges":
                value = _string_list(value, key, source)
            elif field == "tokens":
                value = _as_list(value)  # checked by GGUFTokenizer
            elif field in ("token_types", "scores"):
                if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
                    raise ModelConfigError(f"{source}: {key} is {type(value).__name__}, expected an array")
            elif field.endswith("_id"):
                value = _integer(value, key, source)
            elif field.startswith("add_"):
                value = _flag(value, key, source)
            elif not isinstance(value, str):
                raise ModelConfigError(f"{source}: {key} is {type(value).__name__}, expected a string")
            values[field] = value
        return cls(source=source, **values)


class GGUFTokenizer:
    """Text to token ids and back, as llama.cpp does it for the same GGUF file.

    Attributes:
        vocab_size (int): number of tokens.
        bos_id, eos_id, eot_id, unk_id, pad_id (int | None): the file's special ids.
        add_bos, add_eos (bool): whether `encode(add_special=True)` adds them.
        eog_ids (frozenset[int]): ids that end a generation: EOS, end of turn and the END_OF_GENERATION_TEXTS.
        eos_ids (frozenset[int]): the same set, under the name the decoders read.
        chat_template_source (str | None): the file's tokenizer.chat_template, else a built-in chosen by vocabulary.
    """

    def __init__(self, spec: TokenizerSpec):
        self.spec = spec
        source = spec.source
        kind = spec.model
        if kind not in _DEFAULTS:
            raise ModelConfigError(
                f"{source}: {GGUF_KEYS['model']} is {kind!r}; votive reads 'llama' (SentencePiece-style) and "
                "'gpt2' (byte-level BPE) vocabularies"
            )
        defaults = _DEFAULTS[kind]
        pre = _pre_tokenizer(spec) if kind == "gpt2" else None
        self.pre = pre
        tokens = _string_list(spec.tokens, GGUF_KEYS["tokens"], source)
        n = len(tokens)
        if n == 0:
            raise ModelConfigError(f"{source}: {GGUF_KEYS['tokens']} is empty")
        if "" in tokens:  # as llama.cpp: an empty token gets a placeholder, so it can never match text
            tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        self.tokens = tokens
        self.vocab_size = n
        self.vocab: dict[str, int] = dict(zip(tokens, range(n)))  # the bulk of the load time for 262k tokens
        if len(self.vocab) != n:
            raise ModelConfigError(f"{source}: {GGUF_KEYS['tokens']} has duplicates, e.g. {_first_duplicate(tokens)!r}")
        self.token_types = self._token_types(spec, n)

        # Special ids: the file's, else llama.cpp's default for the kind when it lies inside the vocabulary.
        def special(field: str) -> int | None:
            value = getattr(spec, field)
            if value is None:
                value = defaults.get(field)
                return value if value is not None and value < n else None
            if not 0 <= value < n:
                raise ModelConfigError(f"{source}: {GGUF_KEYS[field]} is {value}, outside the {n}-token vocabulary")
            return value

        self.bos_id, self.eos_id, self.eot_id = special("bos_id"), special("eos_id"), special("eot_id")
        self.unk_id, self.pad_id = special("unk_id"), special("pad_id")
        self.add_bos = _first_set(spec.add_bos, pre.add_bos if pre else None, defaults["add_bos"])
        self.add_eos = _first_set(spec.add_eos, defaults["add_eos"])
        self.add_space_prefix = _first_set(spec.add_space_prefix, defaults["add_space_prefix"]) and kind == "llama"
        for flag, field in (("add_bos", "bos_id"), ("add_eos", "eos_id")):
            if getattr(self, flag) and getattr(self, field) is None:
                raise ModelConfigError(f"{source}: {GGUF_KEYS[flag]} is true but {GGUF_KEYS[field]} is not set")

        self.eog_ids = self._end_of_generation_ids()  # before the special-token lists: it retypes some tokens
        types = self.token_types
        normal = int(TokenType.NORMAL)  # a plain int compares faster over 262k entries
        special_ids = [i for i, t in enumerate(types) if t != normal]
        special_ids = [i for i in special_ids if types[i] in _SPECIAL_TYPES]
        self._special_all = _SpecialTokens(tokens, special_ids)
        self._special_user = _SpecialTokens(tokens, [i for i in special_ids if types[i] == TokenType.USER_DEFINED])
        if kind == "llama":
            self._engine = _SentencePieceMerger(self.vocab, _scores(spec, n), self.unk_id, source)
        else:
            self._engine = _ByteLevelBPE(self.vocab, spec, pre)
        self._pieces: dict[int, bytes] = {}

        from votive.text.chat import builtin_template_for

        self.chat_template_source = spec.chat_template or builtin_template_for(self.vocab)
        self._chat_template = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], source: str = "GGUF metadata") -> "GGUFTokenizer":
        """The tokenizer a GGUF metadata mapping describes (see TokenizerSpec.from_metadata)."""
        return cls(TokenizerSpec.from_metadata(metadata, source))

    @classmethod
    def from_gguf(cls, gguf_file) -> "GGUFTokenizer":
        """The tokenizer of an open `votive.formats.gguf.GGUFFile` (anything with `.metadata` and `.path`)."""
        return cls.from_metadata(gguf_file.metadata, str(getattr(gguf_file, "path", "GGUF file")))

    # -- encoding

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of `text`, like llama.cpp's llama_tokenize(text, add_special, parse_special).

        Args:
            text: any str (lone surrogates excepted).
            add_special: add BOS/EOS where the file's add_bos_token/add_eos_token say so.
            parse_special: control tokens written in the text ("<|im_start|>", "<start_of_turn>") become their
                single ids, as llama.cpp's server and CLI do for prompts. When False only user-defined tokens
                are cut out and control-token text is tokenized as plain text.

        Raises:
            InputError: `text` is not a str, or is not encodable as UTF-8.
        """
        if not isinstance(text, str):
            raise InputError(f"text to tokenize must be a str, got {type(text).__name__}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InputError(f"text has a lone surrogate at index {e.start}; it is not valid Unicode") from None
        ids: list[int] = []
        if add_special and self.add_bos:
            ids.append(self.bos_id)
        specials = self._special_all if parse_special else self._special_user
        fragments = specials.split(text) if text else []
        engine = self._engine
        prev_special = True  # SentencePiece: a leading space before text that starts the input or follows a token
        for fragment in fragments:
            if isinstance(fragment, int):
                ids.append(fragment)
                prev_special = True
                continue
            if self.add_space_prefix and prev_special:
                fragment = " " + fragment
            ids.extend(engine.encode(fragment))
            prev_special = False
        if add_special and self.add_eos:
            ids.append(self.eos_id)
        return ids

    # -- decoding

    def token_bytes(self, token_id: int, special: bool = False) -> bytes:
        """The bytes one token stands for (llama.cpp's token_to_piece). Control and unknown tokens give b""
        unless `special`; a piece may be part of a multi-byte character."""
        token_id = self._check_id(token_id)
        kind = self.token_types[token_id]
        if kind == TokenType.CONTROL or kind == TokenType.UNKNOWN:
            return self.tokens[token_id].encode("utf-8") if special else b""
        piece = self._pieces.get(token_id)
        if piece is None:
            text = self.tokens[token_id]
            if kind == TokenType.USER_DEFINED:
                piece = text.encode("utf-8")
            elif kind == TokenType.NORMAL:
                piece = self._engine.piece(text)
            elif kind == TokenType.BYTE:
                piece = bytes((int(text[3:5], 16),))  # "<0x0A>"
            else:  # UNUSED, UNDEFINED: printed as nothing, as llama.cpp does
                piece = b""
            self._pieces[token_id] = piece
        return piece

    def decode(self, ids: Iterable[int], special: bool = False) -> str:
        """Text of a token sequence: the pieces joined; bytes that are not UTF-8 become U+FFFD.

        Raises:
            InputError: an id is not an integer inside the vocabulary.
        """
        return b"".join(self.token_bytes(i, special) for i in ids).decode("utf-8", errors="replace")

    def stream_decoder(self, special: bool = False) -> "StreamDecoder":
        """A decoder fed one id at a time that hands out only whole UTF-8 characters (for streaming)."""
        return StreamDecoder(lambda i: self.token_bytes(i, special))

    @property
    def eos_ids(self) -> frozenset[int]:
        return self.eog_ids

    def is_eog(self, token_id: int) -> bool:
        """Whether `token_id` ends a generation (EOS, end of turn, ...)."""
        return token_id in self.eog_ids

    # -- chat

    @property
    def chat_template(self):
        """The `votive.text.chat.ChatTemplate` for this model (compiled on first use).

        Raises:
            ModelConfigError: the file has no tokenizer.chat_template and no built-in template fits its vocabulary.
        """
        if self._chat_template is None:
            from votive.text.chat import ChatTemplate

            if self.chat_template_source is None:
                raise ModelConfigError(
                    f"{self.spec.source}: no {GGUF_KEYS['chat_template']} and no built-in template fits its "
                    "vocabulary (built-ins: Gemma turns, ChatML); give one as TokenizerSpec.chat_template"
                )
            self._chat_template = ChatTemplate(
                self.chat_template_source, bos_token=self._text_of(self.bos_id), eos_token=self._text_of(self.eos_id)
            )
        return self._chat_template

    def render_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **extra) -> str:
        """The prompt text the chat template makes of `messages` (see ChatTemplate.render)."""
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt, **extra)

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True, **extra
    ) -> list[int]:
        """Token ids of a chat prompt, as llama.cpp's server builds them.

        The rendered text is tokenized with special tokens parsed and BOS/EOS added per the file; a BOS the
        template wrote itself at the start (and an EOS at the end) is dropped first, so there is no double BOS.
        """
        text = self.render_chat(messages, add_generation_prompt=add_generation_prompt, **extra)
        bos, eos = self._text_of(self.bos_id), self._text_of(self.eos_id)
        if self.add_bos and bos and text.startswith(bos):
            text = text[len(bos) :]
        if self.add_eos and eos and text.endswith(eos):
            text = text[: -len(eos)]
        return self.encode(text, add_special=True, parse_special=True)

    # -- helpers

    def _text_of(self, token_id: int | None) -> str:
        return "" if token_id is None else self.tokens[token_id]

    def _check_id(self, token_id) -> int:
        try:
            i = int(token_id)
        except (TypeError, ValueError):
            raise InputError(f"token ids must be integers, got {token_id!r}") from None
        if i != token_id or not 0 <= i < self.vocab_size:
            raise InputError(f"token id {token_id!r} is outside the vocabulary (0..{self.vocab_size - 1})")
        return i

    @staticmethod
    def _token_types(spec: TokenizerSpec, n: int) -> list[int]:
        if spec.token_types is None:
            return [TokenType.NORMAL] * n
        types = _as_list(spec.token_types)
        if len(types) < n:
            raise ModelConfigError(
                f"{spec.source}: {GGUF_KEYS['token_types']} has {len(types)} entries for {n} tokens"
            )
        types = types[:n]
        if set(map(type, types)) - {int}:
            raise ModelConfigError(f"{spec.source}: {GGUF_KEYS['token_types']} holds non-integers")
        return types

    def _end_of_generation_ids(self) -> frozenset[int]:
        ids = {i for i in (self.eos_id, self.eot_id) if i is not None}
        for text in END_OF_GENERATION_TEXTS:
            i = self.vocab.get(text)
            if i is not None:
                ids.add(i)
                # llama.cpp makes these control tokens whatever the file says: never printed, parsed as special
                self.token_types[i] = TokenType.CONTROL
        if self.eot_id is None:
            self.eot_id = next((self.vocab[t] for t in END_OF_TURN_TEXTS if t in self.vocab), None)
        return frozenset(ids)


class StreamDecoder:
    """Turns token ids, one at a time, into text pieces that are always whole UTF-8 characters.

    Example:
        >>> d = tok.stream_decoder()                   # doctest: +SKIP
        >>> [d.push(i) for i in ids] + [d.flush()]     # doctest: +SKIP
        ['Hello', '', ' 😀', '']
    """

    def __init__(self, token_bytes: Callable[[int], bytes]):
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Text completed by this token; "" while a multi-byte character is still unfinished."""
        return self._utf8.decode(self._token_bytes(token_id))

    def flush(self) -> str:
        """Whatever is left at the end; an unfinished character becomes U+FFFD."""
        return self._utf8.decode(b"", final=True)


# -- special tokens in text ----------------------------------------------------------------------------------


class _SpecialTokens:
    """Cuts special-token text out of a string, the way llama.cpp's tokenizer_st_partition does.

    llama.cpp takes the special tokens longest first and splits every remaining text fragment at each
    occurrence of the current one, so a longer token wins over a shorter one wherever they overlap. Only the
    tokens that occur in the text matter, so they are found first: tokens are grouped by their first four
    characters, and a group is searched only when its prefix occurs in the text.
    """

    PREFIX = 4

    def __init__(self, tokens: list[str], ids: list[int]):
        groups: dict[str, list[tuple[str, int]]] = {}
        for i in ids:
            text = tokens[i]
            groups.setdefault(text[: self.PREFIX], []).append((text, i))
        self._groups = groups

    def split(self, text: str) -> list[str | int]:
        """`text` as a list of plain-text fragments (str) and special token ids (int), in order."""
        present = [
            (t, i) for prefix, group in self._groups.items() if prefix in text for t, i in group if t in text
        ]
        if not present:
            return [text]
        present.sort(key=lambda ti: (-len(ti[0]), ti[1]))  # longest first; equal lengths by id
        fragments: list[str | int] = [text]
        for token_text, token_id in present:
            out: list[str | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or token_text not in fragment:
                    out.append(fragment)
                    continue
                start = 0
                while (hit := fragment.find(token_text, start)) >= 0:
                    if hit > start:
                        out.append(fragment[start:hit])
                    out.append(token_id)
                    start = hit + len(token_text)
                if start < len(fragment):
                    out.append(fragment[start:])
            fragments = out
        return fragments


# -- SentencePiece-style merging ("llama") -------------------------------------------------------------------

_SPACE = "\u2581"  # "▁", SentencePiece's visible space


class _SentencePieceMerger:
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


# -- byte-level BPE ("gpt2") --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreTokenizer:
    """How a "gpt2" vocabulary splits text before merging (llama.cpp's llm_tokenizer_bpe regex_exprs)."""

    regexes: tuple[str, ...]  # applied in turn, each splitting the pieces the previous one left
    ignore_merges: bool = False  # a piece that is itself a token is taken whole
    add_bos: bool | None = None  # llama.cpp's default for add_bos_token when the file has none


_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3_REGEX = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_REGEX = _LLAMA3_REGEX.replace(r"\p{N}{1,3}", r"\p{N}")

# tokenizer.ggml.pre -> PreTokenizer, for the names llama.cpp maps to these regexes. The tests check "smollm"
# against llama.cpp's ids for the real SmolLM2 file, and one name per regex with SmolLM2's vocabulary.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo"), PreTokenizer((_GPT2_REGEX,))),
    **dict.fromkeys(("smollm", "starcoder", "refact", "codeshell"), PreTokenizer((r"\p{N}", _GPT2_REGEX))),
    **dict.fromkeys(
        ("llama3", "llama-v3", "llama-bpe", "falcon3"), PreTokenizer((_LLAMA3_REGEX,), ignore_merges=True, add_bos=True)
    ),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen"), PreTokenizer((_QWEN2_REGEX,))),
}


class _ByteLevelBPE:
    """A `tokenizers` BPE over the file's vocab and merges, with the pre-tokenizer's regexes as Split steps."""

    def __init__(self, vocab: dict[str, int], spec: TokenizerSpec, pre: PreTokenizer):
        try:
            from tokenizers import Regex, Tokenizer, models, pre_tokenizers
        except ImportError:  # optional since BERT models tokenize without it
            raise ModelConfigError(f"{spec.source}: a 'gpt2' (byte-level BPE) vocabulary needs the `tokenizers` "
                                   "library: pip install 'votive[tokenizers]'") from None

        if not spec.merges:
            raise ModelConfigError(f"{spec.source}: a 'gpt2' vocabulary needs {GGUF_KEYS['merges']}, which is missing")
        pairs = []
        for rank, merge in enumerate(spec.merges):
            cut = merge.find(" ", 1)  # as llama.cpp: the first space after the first character
            if cut < 0:
                raise ModelConfigError(f"{spec.source}: merge {rank} is {merge!r}, expected 'left right'")
            pairs.append((merge[:cut], merge[cut + 1 :]))
        try:
            bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre.ignore_merges)
        except Exception:  # a merge whose result is not a token; llama.cpp would never reach it either
            pairs = [(a, b) for a, b in pairs if a in vocab and b in vocab and a + b in vocab]
            bpe = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre.ignore_merges)
        tokenizer = Tokenizer(bpe)
        steps = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [*steps, pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
        )
        self._tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def piece(self, text: str) -> bytes:
        table = _byte_decoder()
        return bytes(table[c] for c in text) if all(c in table for c in text) else text.encode("utf-8")


_BYTE_DECODER: dict[str, int] | None = None


def _byte_decoder() -> dict[str, int]:
    """Printable character -> byte, inverting GPT-2's byte-to-unicode map: bytes that print as themselves
    (! to ~, ¡ to ¬, ® to ÿ) keep their code point; the other 68 take code points 256, 257, ... in byte order."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
        table = {chr(b): b for b in printable}
        extra = 256
        for b in range(256):
            if b not in printable:
                table[chr(extra)] = b
                extra += 1
        _BYTE_DECODER = table
    return _BYTE_DECODER


# -- metadata helpers --------------------------------------------------------------------------------------

# llama.cpp's defaults by vocabulary kind, used when the file lacks the key.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"bos_id": 1, "eos_id": 2, "unk_id": 0, "add_bos": True, "add_eos": False, "add_space_prefix": True},
    "gpt2": {"bos_id": 11, "eos_id": 11, "add_bos": False, "add_eos": False, "add_space_prefix": False},
}


def _pre_tokenizer(spec: TokenizerSpec) -> PreTokenizer:
    pre = PRE_TOKENIZERS.get(spec.pre or "")
    if pre is None:
        found = "is missing" if spec.pre is None else f"is {spec.pre!r}"
        raise ModelConfigError(
            f"{spec.source}: {GGUF_KEYS['pre']} {found}; votive knows the byte-level pre-tokenizers "
            f"{', '.join(sorted(PRE_TOKENIZERS))}"
        )
    return pre


def _scores(spec: TokenizerSpec, n: int) -> list[float]:
    if spec.scores is None:
        return [0.0] * n
    scores = _as_list(spec.scores)
    if len(scores) < n:
        raise ModelConfigError(f"{spec.source}: {GGUF_KEYS['scores']} has {len(scores)} entries for {n} tokens")
    return [float(s) for s in scores[:n]] if not isinstance(scores[0], float) else scores


def _as_list(value) -> list:
    return value.tolist() if hasattr(value, "tolist") else list(value)


def _string_list(value, key: str, source: str) -> list[str]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ModelConfigError(f"{source}: {key} is {type(value).__name__}, expected an array of strings")
    items = _as_list(value)
    if set(map(type, items)) - {str}:  # one C-speed pass; the loop below runs only for bad input
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise ModelConfigError(f"{source}: {key}[{i}] is {type(item).__name__}, expected a string")
    return items


def _integer(value, key: str, source: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ModelConfigError(f"{source}: {key} is {value!r}, expected an integer token id")
    return int(value)


def _flag(value, key: str, source: str) -> bool:
    if type(value).__name__ not in ("bool", "bool_"):
        raise ModelConfigError(f"{source}: {key} is {value!r}, expected true or false")
    return bool(value)


def _first_set(*values):
    return next(v for v in values if v is not None)


def _first_duplicate(tokens: list[str]) -> str:
    seen: set[str] = set()
    for t in tokens:
        if t in seen:
            return t
        seen.add(t)
    return ""

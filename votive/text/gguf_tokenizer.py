"""Tokenizers rebuilt from a GGUF file's metadata, giving the token ids llama.cpp gives.

Upstream: ggml-org/llama.cpp `src/llama-vocab.cpp` (read at commit 00ad355e): `llama_vocab::impl::load` for the
defaults and flags, `tokenizer_st_partition` for special tokens, `llm_tokenizer_spm_session` and
`llm_tokenizer_bpe_session` for the two merge algorithms, `token_to_piece` for decoding.

Two vocabulary kinds (`tokenizer.ggml.model`):
- "llama": SentencePiece-style (Gemma, LLaMA 1/2). Spaces become "▁", then adjacent pieces merge greedily,
  best score first, as long as the merged text is a token; characters no token covers become byte tokens
  <0xNN>. Pure Python, in `sentencepiece_merge`.
- "gpt2": byte-level BPE (SmolLM, LLaMA 3, Qwen 2). The text is split by the pre-tokenizer's regexes, each
  piece's bytes map to printable characters, then ranked merges apply. A `tokenizers` BPE built at load, in
  `byte_level_bpe`.

What both share, as llama.cpp does it: control, user-defined and unknown tokens written in the text are cut out
first and emitted as single ids (longest token first, across the whole text); BOS/EOS are added only when the
file says so (`tokenizer.ggml.add_bos_token`, with llama.cpp's per-kind default when absent); decoding is the
concatenation of each token's piece (what llama.cpp's server streams), control tokens printing as nothing.
That shared part is this module; the metadata keys are read into a `TokenizerSpec` in `gguf_vocab`.

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
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

from votive.errors import InputError, ModelConfigError
from votive.text.byte_level_bpe import ByteLevelBPE, pre_tokenizer_for
from votive.text.gguf_vocab import GGUF_KEYS, TokenizerSpec, TokenType, as_list, string_list
from votive.text.sentencepiece_merge import SentencePieceMerger

# Tokens cut out of the text before merging (llama.cpp's cache_special_tokens). Only user-defined ones when the
# caller does not parse special tokens.
_SPECIAL_TYPES = frozenset((TokenType.CONTROL, TokenType.USER_DEFINED, TokenType.UNKNOWN))

# Whitespace a special token with llama.cpp's RSTRIP attribute swallows after it (C's isspace).
_RSTRIPPED = " \t\n\v\f\r"

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

# llama.cpp's defaults by vocabulary kind, used when the file lacks the key.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "llama": {"bos_id": 1, "eos_id": 2, "unk_id": 0, "add_bos": True, "add_eos": False, "add_space_prefix": True},
    "gpt2": {"bos_id": 11, "eos_id": 11, "add_bos": False, "add_eos": False, "add_space_prefix": False},
}


_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


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
        pre = pre_tokenizer_for(spec) if kind == "gpt2" else None
        self.pre = pre
        tokens = string_list(spec.tokens, GGUF_KEYS["tokens"], source)
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
        byte = int(TokenType.BYTE)  # printed as the byte its text names: "<0x0A>", nothing else
        bad = next((i for i in special_ids if types[i] == byte and not _BYTE_TOKEN.fullmatch(tokens[i])), None)
        if bad is not None:
            raise ModelConfigError(f"{source}: {GGUF_KEYS['token_types']} types token {bad} ({tokens[bad]!r}) as BYTE, "
                                   "whose text must be <0xNN>")
        special_ids = [i for i in special_ids if types[i] in _SPECIAL_TYPES]
        self._rstrip_ids = _rstrip_ids(spec.model_name, special_ids, self.vocab)
        self._special_all = _SpecialTokens(tokens, special_ids)
        self._special_user = _SpecialTokens(tokens, [i for i in special_ids if types[i] == TokenType.USER_DEFINED])
        self._control_texts: list[str] | None = None
        if kind == "llama":
            self._engine = SentencePieceMerger(self.vocab, _scores(spec, n), self.unk_id, source)
        else:
            self._engine = ByteLevelBPE(self.vocab, spec, pre)
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

    parse_special_in_content = False  # True: control-token text in chat messages is parsed, as llama.cpp does

    def encode(self, text: str, add_special: bool = True, parse_special: bool = True, *,
               unguard: bool = False) -> list[int]:
        """Token ids of `text`, like llama.cpp's llama_tokenize(text, add_special, parse_special).

        Args:
            text: any str (lone surrogates excepted).
            add_special: add BOS/EOS where the file's add_bos_token/add_eos_token say so.
            parse_special: control tokens written in the text ("<|im_start|>", "<start_of_turn>") become their
                single ids, as llama.cpp's server and CLI do for prompts. When False only user-defined tokens
                are cut out and control-token text is tokenized as plain text.
            unguard: remove votive.text.content_guard's GUARD from the plain fragments (a chat prompt whose
                messages were guarded: their control-token text stays text).

        Raises:
            InputError: `text` is not a str, or is not encodable as UTF-8.
        """
        check_text(text)
        ids: list[int] = []
        if add_special and self.add_bos:
            ids.append(self.bos_id)
        specials = self._special_all if parse_special else self._special_user
        fragments = specials.split(text) if text else []
        engine = self._engine
        prev_special = True  # SentencePiece: a leading space before text that starts the input or follows a token
        rstrip = False
        for fragment in fragments:
            if isinstance(fragment, int):
                ids.append(fragment)
                prev_special, rstrip = True, fragment in self._rstrip_ids
                continue
            if unguard:
                fragment = _unguard(fragment)
            if rstrip and not (fragment := fragment.lstrip(_RSTRIPPED)):
                continue
            rstrip = False
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
        Control-token text inside the messages stays text (votive.text.content_guard) unless
        `parse_special_in_content` says to parse it as llama.cpp does.
        """
        guarded = not self.parse_special_in_content
        if guarded:
            from votive.text.content_guard import guard_messages

            messages = guard_messages(messages, self.control_texts())
        text = self.render_chat(messages, add_generation_prompt=add_generation_prompt, **extra)
        bos, eos = self._text_of(self.bos_id), self._text_of(self.eos_id)
        if self.add_bos and bos and text.startswith(bos):
            text = text[len(bos) :]
        if self.add_eos and eos and text.endswith(eos):
            text = text[: -len(eos)]
        return self.encode(text, add_special=True, parse_special=True, unguard=guarded)

    def control_texts(self) -> list[str]:
        """The texts of the control tokens `encode` parses (special tokens that are not user-defined words)."""
        if self._control_texts is None:
            user = {t for group in self._special_user._groups.values() for t, _ in group}
            self._control_texts = [t for group in self._special_all._groups.values() for t, _ in group
                                   if t not in user]
        return self._control_texts

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
        types = as_list(spec.token_types)
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


# -- metadata helpers ----------------------------------------------------------------------------------------


def check_text(text) -> None:
    """InputError unless `text` is a str that UTF-8 can encode (no lone surrogate): what a tokenizer takes."""
    if not isinstance(text, str):
        raise InputError(f"text to tokenize must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InputError(f"text has a lone surrogate at index {e.start}; it is not valid Unicode") from None


def _rstrip_ids(model_name: str | None, special_ids: list[int], vocab: dict[str, int]) -> frozenset[int]:
    """The special tokens that swallow the whitespace after them. llama.cpp's llama-vocab.cpp decides it by the
    model's name, not by anything in the vocabulary: for a general.name containing "phi-3" or "phi3" (any case),
    every special token and "</s>", but "<unk>", "<s>" and "<|endoftext|>"; for any other model, none."""
    name = (model_name or "").lower()
    if "phi-3" not in name and "phi3" not in name:
        return frozenset()
    ids = set(special_ids) | {vocab[t] for t in ("</s>",) if t in vocab}
    return frozenset(ids - {vocab[t] for t in ("<unk>", "<s>", "<|endoftext|>") if t in vocab})


def _scores(spec: TokenizerSpec, n: int) -> list[float]:
    """Merge score by token id ("llama" only): the file's as floats, all 0.0 when it has none."""
    if spec.scores is None:
        return [0.0] * n
    scores = as_list(spec.scores)
    if len(scores) < n:
        raise ModelConfigError(f"{spec.source}: {GGUF_KEYS['scores']} has {len(scores)} entries for {n} tokens")
    return [float(s) for s in scores[:n]] if not isinstance(scores[0], float) else scores


def _first_set(*values):
    return next(v for v in values if v is not None)


def _first_duplicate(tokens: list[str]) -> str:
    seen: set[str] = set()
    for t in tokens:
        if t in seen:
            return t
        seen.add(t)
    return ""


def _unguard(fragment: str) -> str:
    from votive.text.content_guard import unguard

    return unguard(fragment)

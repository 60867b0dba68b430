"""The WordPiece tokenizer of a BERT GGUF file (`tokenizer.ggml.model` "bert"), giving the ids llama.cpp gives.

Upstream: ggml-org/llama.cpp @ c392e50, `src/llama-vocab.cpp` (llm_tokenizer_wpm_session: preprocess and
tokenize; llama_vocab::impl::tokenize's WPM case; the "bert" defaults in llama_vocab::impl::load),
`scripts/gen-unicode-data.py` (the character tables `unicode.cpp` reads) and `convert_hf_to_gguf.py`
(BertModel.set_vocab: the phantom-space vocabulary).

The vocabulary is a BERT vocab.txt rewritten by the converter: a word-initial piece `hello` is stored as
`▁hello` (U+2581), a continuation `##llo` as `llo`, bracketed specials (`[CLS]`) unchanged. llama.cpp's
tokenizer differs from Hugging Face's BertTokenizer, and these are its rules, followed here:
- each code point is replaced by the FIRST code point of its NFD form (so a precomposed "é" becomes "e"), then
  lowercased by UnicodeData's simple mapping, always (the file has no do_lower_case);
- whitespace (PropList's White_Space) ends a word; NUL, U+FFFD, control / format / private-use code points
  (categories Cc Cf Co Cs) and marks (M*: a combining accent written apart, a Devanagari vowel sign) are
  dropped. Dropping marks is newer than the commit above: it is what the llama.cpp in llama-cpp-python 0.3.36
  does (tests/test_quantized_encoders.py pins it against that library); punctuation (P*), ASCII symbols (S* below 0x7F) and CJK ideographs are
  words of their own;
- each word, with "▁" before it, is split greedily into the longest vocabulary entries from the left; a word
  with any position no entry matches becomes the unknown token whole;
- [CLS] (`tokenizer.ggml.bos_token_id`, default 101) before and [SEP] (`tokenizer.ggml.seperator_token_id`,
  default 102) after, as llama_tokenize with add_special; special tokens written in the text are not parsed (what
  llama-cpp-python's `embed` asks for).
The character tables come from Python's unicodedata, which llama.cpp's generator also read; a code point whose
Unicode version differs between the two can tokenize differently. Files whose vocabulary has user-defined tokens
(which llama.cpp cuts out of the text before the words) are refused.
"""

from __future__ import annotations

import unicodedata
from typing import Sequence

from votive.errors import InputError, ModelConfigError
from votive.text.bert_normalizer import SURROGATE_RE
from votive.text.gguf_vocab import TokenType, string_list

PHANTOM_SPACE = "\u2581"  # the converter's mark of a word-initial piece
# llama.cpp's defaults for a "bert" vocabulary (llama_vocab::impl::load), used when the file names no id.
DEFAULT_IDS = {"cls": 101, "sep": 102, "unk": 100}
# GGUF metadata key of each id (gguf-py's Keys.Tokenizer); [CLS] is read as llama.cpp reads it, from BOS.
ID_KEYS = {"cls": "tokenizer.ggml.bos_token_id", "sep": "tokenizer.ggml.seperator_token_id",
           "unk": "tokenizer.ggml.unknown_token_id"}
# scripts/gen-unicode-data.py's whitespace table (PropList.txt's White_Space).
WHITESPACE = frozenset([*range(0x09, 0x0E), *range(0x2000, 0x200B), 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029,
                        0x202F, 0x205F, 0x3000])
CONTROL_CATEGORIES = frozenset({"Cc", "Cf", "Co", "Cs"})  # the generator's CODEPOINT_FLAG_CONTROL
# llm_tokenizer_wpm_session::is_chinese_char (its 0x2B920 is copied from Hugging Face's code, as noted there).
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
              (0x2B920, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))
_WORD_CACHE_LIMIT = 50_000  # words remembered (text repeats its words); the memory starts over past this


def _char_kind(ch: str) -> tuple[str, str]:
    """('space' | 'drop' | 'alone' | 'word', the character to keep) for one code point of the input, as
    llm_tokenizer_wpm_session::preprocess sees it after its NFD and lowercase tables."""
    cpt = ord(unicodedata.normalize("NFD", ch)[0])  # gen-unicode-data.py: the NFD form's first code point
    if cpt in WHITESPACE:
        return "space", ""
    category = unicodedata.category(chr(cpt))
    if cpt == 0 or cpt == 0xFFFD or category in CONTROL_CATEGORIES or category[0] == "M":
        return "drop", ""
    lower = chr(cpt).lower()  # UnicodeData's simple lowercase is one code point: the full mapping's first
    lower = lower[0] if lower else chr(cpt)
    if category[0] == "P" or (cpt < 0x7F and category[0] == "S") or any(a <= cpt <= b for a, b in CJK_RANGES):
        return "alone", lower
    return "word", lower


class GGUFWordPiece:
    """llama.cpp's WPM tokenizer over a GGUF vocabulary: `encode_batch(texts)` -> ids per text, [CLS] ... [SEP].

    Args:
        tokens: token text by id, as the GGUF stores them (phantom-space form).
        cls_id, sep_id, unk_id: the ids put around each text and for words the vocabulary cannot spell.
        max_length: the longest result, specials included (the model's position table); None: no limit. Longer
            texts keep their first max_length - 2 pieces and the closing [SEP].
        source: named in error messages.

    Example:
        >>> tok = GGUFWordPiece(["[UNK]", "[CLS]", "[SEP]", "▁hello", "▁world", "s", "▁!"], 1, 2, 0)
        >>> tok.encode_batch(["Hello worlds!"])
        [[1, 3, 4, 5, 6, 2]]
    """

    def __init__(self, tokens: Sequence[str], cls_id: int, sep_id: int, unk_id: int, *,
                 max_length: int | None = None, source: str = "GGUF vocabulary"):
        for name, value in (("cls", cls_id), ("sep", sep_id), ("unk", unk_id)):
            if not 0 <= value < len(tokens):
                raise ModelConfigError(f"{source}: {name} token id {value} is outside the {len(tokens)}-token "
                                       "vocabulary")
        if max_length is not None and max_length < 2:
            raise ModelConfigError(f"{source}: max_length {max_length} leaves no room for [CLS] and [SEP]")
        self.ids = {text: i for i, text in enumerate(tokens)}  # a repeated text keeps its last id, as llama.cpp
        self.max_chars = max((len(t) for t in tokens), default=0)
        self.cls_id, self.sep_id, self.unk_id = cls_id, sep_id, unk_id
        self.max_length = max_length
        self.source = source
        self._chars: dict[str, tuple[str, str]] = {}
        self._words: dict[str, list[int]] = {}

    @classmethod
    def from_gguf(cls, f, max_length: int | None = None) -> "GGUFWordPiece":
        """The tokenizer of an open GGUFFile whose tokenizer.ggml.model is "bert"."""
        source = str(f.path)
        model = f.get("tokenizer.ggml.model")
        if model != "bert":
            raise ModelConfigError(f"{source}: tokenizer.ggml.model is {model!r}; a BERT GGUF's is 'bert' (WordPiece)")
        tokens = string_list(f.require("tokenizer.ggml.tokens"), "tokenizer.ggml.tokens", source)
        types = f.get("tokenizer.ggml.token_type")
        if types is not None and any(int(t) == TokenType.USER_DEFINED for t in types):
            raise ModelConfigError(f"{source}: the vocabulary has user-defined tokens, which llama.cpp cuts out of "
                                   "the text first; votive's GGUF WordPiece does not")
        ids = {}
        for name, key in ID_KEYS.items():
            value = f.get(key, DEFAULT_IDS[name])
            if isinstance(value, bool) or not hasattr(value, "__index__"):
                raise ModelConfigError(f"{source}: {key} is {value!r}, expected an integer token id")
            ids[name] = int(value)
        return cls(tokens, ids["cls"], ids["sep"], ids["unk"], max_length=max_length, source=source)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text -> [CLS] pieces [SEP] (what llama_tokenize(text, add_special=True, parse_special=False)
        gives), cut to max_length."""
        out = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InputError(f"text {i} is {type(text).__name__}, expected a string")
            bad = None if text.isascii() else SURROGATE_RE.search(text)
            if bad is not None:
                raise InputError(f"text {i} has a lone surrogate at index {bad.start()}; it is not valid Unicode")
            ids = [self.cls_id]
            for word in self.words(text):
                ids += self._word_ids(word)
            if self.max_length is not None and len(ids) > self.max_length - 1:
                del ids[self.max_length - 1 :]
            ids.append(self.sep_id)
            out.append(ids)
        return out

    def words(self, text: str) -> list[str]:
        """llm_tokenizer_wpm_session::preprocess: the normalised words of `text`."""
        words, word = [], []
        for ch in text:
            kind = self._chars.get(ch)
            if kind is None:
                kind = self._chars[ch] = _char_kind(ch)
            what, keep = kind
            if what == "word":
                word.append(keep)
            elif what == "alone":
                if word:
                    words.append("".join(word))
                    word = []
                words.append(keep)
            elif what == "space" and word:
                words.append("".join(word))
                word = []
        if word:
            words.append("".join(word))
        return words

    def _word_ids(self, word: str) -> list[int]:
        """llm_tokenizer_wpm_session::tokenize for one word: longest matches of "▁" + word from the left."""
        known = self._words.get(word)
        if known is not None:
            return known
        text, ids, i = PHANTOM_SPACE + word, [], 0
        while i < len(text):
            for j in range(min(len(text), i + self.max_chars), i, -1):
                piece = self.ids.get(text[i:j])
                if piece is not None:
                    ids.append(piece)
                    i = j
                    break
            else:  # no piece starts here: the whole word is unknown
                ids = [self.unk_id]
                break
        if len(self._words) >= _WORD_CACHE_LIMIT:
            self._words.clear()
        self._words[word] = ids
        return ids

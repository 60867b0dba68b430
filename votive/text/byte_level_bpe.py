"""Byte-level BPE for "gpt2" GGUF vocabularies (SmolLM, LLaMA 3, Qwen 2), giving llama.cpp's ids.

The text is split by the pre-tokenizer's regexes, each piece's bytes map to printable characters, then ranked
merges apply. Built into a `tokenizers` BPE at load (Rust: the regexes need \\p{L}, which `re` lacks, and it is
fast); the library is imported only when such a vocabulary is loaded.

Upstream: ggml-org/llama.cpp `src/llama-vocab.cpp` (read at commit 00ad355e): `llm_tokenizer_bpe` (the regexes
by pre-tokenizer name) and `llm_tokenizer_bpe_session`.

Example:
    >>> pre_tokenizer_for(TokenizerSpec("gpt2", ["a"], pre="smollm")).regexes[0]
    '\\\\p{N}'
"""

from __future__ import annotations

from dataclasses import dataclass

from votive.errors import ModelConfigError
from votive.text.gguf_vocab import GGUF_KEYS, TokenizerSpec


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


def pre_tokenizer_for(spec: TokenizerSpec) -> PreTokenizer:
    """The pre-tokenizer the file's tokenizer.ggml.pre names; ModelConfigError listing the known names."""
    pre = PRE_TOKENIZERS.get(spec.pre or "")
    if pre is None:
        found = "is missing" if spec.pre is None else f"is {spec.pre!r}"
        raise ModelConfigError(
            f"{spec.source}: {GGUF_KEYS['pre']} {found}; votive knows the byte-level pre-tokenizers "
            f"{', '.join(sorted(PRE_TOKENIZERS))}"
        )
    return pre


class ByteLevelBPE:
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

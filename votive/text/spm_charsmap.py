"""The normalizers of SentencePiece tokenizer.json files (XLM-RoBERTa, multilingual-e5, bge-m3): SentencePiece's
precompiled charsmap ("Precompiled"), Replace, Strip, and a Sequence of them.

Upstream, at pinned commits:
- huggingface/spm_precompiled `src/lib.rs` (0.1.4, the version built into tokenizers 0.23.3; read at 3795b14):
  the charsmap layout, `DoubleArray::common_prefix_search`, `Precompiled::transform`.
- huggingface/tokenizers `tokenizers/src/normalizers/precompiled.rs`, `replace.rs`, `strip.rs`, `utils.rs`
  (read at 3ba8ad00; checked against tokenizers 0.23.3).
- The Darts-clone double array that SentencePiece writes (`DoubleArrayUnit` in darts.h): the unit bit layout.

The charsmap is [u32 trie size in bytes][trie: u32 units][normalized strings, each ending in NUL]. The trie maps
a UTF-8 byte string (one character, or a short sequence) to the offset of its replacement in the strings blob.
tokenizers applies it grapheme cluster by grapheme cluster, and not as a longest match:
- a cluster of fewer than 6 bytes for which some key is a prefix is replaced whole by the SHORTEST such key's
  string (so "Ａ" + U+0301, 5 bytes, becomes "A": the accent goes with it; "\\r\\n" becomes what "\\r" maps to);
- any other cluster is replaced character by character, each by its own entry or kept.
That is what `Precompiled` does (tests/test_unigram.py compares it with `tokenizers` on every code point).

Example:
    >>> Replace(" {2,}", "\u2581", regex=True)("a   b")
    'a\u2581b'
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Callable

from votive.errors import ModelConfigError
from votive.text.bert_normalizer import WHITESPACE
from votive.text.graphemes import clusters_in, joining_runs

# ---------------------------------------------------------------------------------------- the double array
# One u32 unit per trie slot (darts-clone DoubleArrayUnit). A node's children sit at (its base) ^ label, its value
# in the slot (its base) ^ 0; a slot whose label is not the byte looked up is no child.
LABEL_MASK = (1 << 31) | 0xFF  # label(): the byte; bit 31 set marks a value slot, which no byte matches
HAS_LEAF_BIT = 8  # has_leaf(): the node ends a key (its value slot is in use)
VALUE_MASK = (1 << 31) - 1  # value(): in a value slot, the offset of the replacement in the strings blob
MAX_CLUSTER_BYTES = 6  # precompiled.rs: clusters of fewer bytes are looked up whole
CACHE_CLUSTERS = 50_000  # clusters of several characters remembered, at most


def unit_offset(unit: int) -> int:
    """offset(): bits 10-31, shifted left by 8 more when bit 9 is set (large offsets)."""
    return (unit >> 10) << ((unit & (1 << 9)) >> 6)


def parse_charsmap(blob: bytes, source: str) -> tuple[list[int], bytes]:
    """(trie units, strings blob) of a precompiled charsmap; ModelConfigError when it is malformed."""
    if len(blob) < 4:
        raise ModelConfigError(f"{source}: precompiled_charsmap has {len(blob)} bytes, fewer than its 4-byte header")
    (trie_bytes,) = struct.unpack_from("<I", blob)
    n_units = trie_bytes // 4
    if 4 + 4 * n_units > len(blob) or n_units == 0:
        raise ModelConfigError(f"{source}: precompiled_charsmap says its trie has {trie_bytes} bytes; the charsmap "
                               f"has {len(blob) - 4} after the header")
    units = list(struct.unpack_from(f"<{n_units}I", blob, 4))
    strings = blob[4 + 4 * n_units :]
    try:
        strings.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelConfigError(f"{source}: precompiled_charsmap's replacement strings are not UTF-8 ({e})") from None
    return units, strings


def transform_ref(units: list[int], strings: bytes, key: bytes) -> bytes | None:
    """spm_precompiled `Precompiled::transform`: the replacement of the shortest entry that is a prefix of `key`,
    or None. The slow twin of the table `charsmap_entries` builds: one byte at a time through the trie."""
    node = unit_offset(units[0])
    for byte in key:
        if byte == 0:  # common_prefix_search stops at a NUL
            break
        node ^= byte
        if node >= len(units) or units[node] & LABEL_MASK != byte:
            return None
        unit = units[node]
        node ^= unit_offset(unit)
        if (unit >> HAS_LEAF_BIT) & 1:
            return _string_at(strings, units[node] & VALUE_MASK)
    return None


def charsmap_chars(units: list[int], strings: bytes, source: str) -> dict[int, str]:
    """Every key of at most 4 bytes that is one character -> its replacement (code point -> str, for
    str.translate): what `transform_ref` gives for each character, read off the trie breadth first (all 255 labels
    of a level at once, in numpy) instead of walked once per character. A key of at most 4 bytes that is not
    UTF-8 text (SentencePiece writes none) is refused: as part of a character it would change what that character
    finds."""
    import numpy as np

    array = np.asarray(units, dtype=np.int64)
    n = len(array)
    labels = array & LABEL_MASK
    byte_values = np.arange(1, 256, dtype=np.int64)
    bases_of = (array >> 10) << ((array & (1 << 9)) >> 6)  # unit_offset of every slot

    chars: dict[int, str] = {}
    prefixes, bases = [b""], bases_of[:1]  # the root: its children sit at 0 ^ offset
    for _ in range(4):  # a UTF-8 character has at most 4 bytes
        slots = bases[:, None] ^ byte_values[None, :]  # (nodes, 255): where each label's child would sit
        inside = slots < n
        found = inside & (labels[np.where(inside, slots, 0)] == byte_values[None, :])
        parent, label = np.nonzero(found)
        child = slots[parent, label]
        bases = child ^ bases_of[child]
        leaves = ((array[child] >> HAS_LEAF_BIT) & 1).astype(bool)
        prefixes = [prefixes[p] + bytes((b,)) for p, b in zip(parent.tolist(), (label + 1).tolist())]
        for key, base in zip([prefixes[i] for i in np.nonzero(leaves)[0]], bases[leaves].tolist()):
            value = _string_at(strings, int(array[base]) & VALUE_MASK) if base < n else None
            try:
                text, replacement = key.decode("utf-8"), value.decode("utf-8")
            except (UnicodeDecodeError, AttributeError):
                raise ModelConfigError(f"{source}: precompiled_charsmap entry {key!r} -> {value!r} is not UTF-8 "
                                       "text, which votive's Precompiled normalizer does not reproduce") from None
            if len(text) == 1:
                chars[ord(text)] = replacement
        if not len(bases):
            break
    return chars


def _string_at(strings: bytes, offset: int) -> bytes:
    """spm_precompiled normalized_at: the replacement starting at `offset`, up to its NUL."""
    end = strings.find(b"\0", offset)
    return strings[offset : end if end >= 0 else len(strings)]


# ------------------------------------------------------------------------------------- the normalizers
class Precompiled:
    """tokenizers' Precompiled normalizer over a SentencePiece charsmap (base64, as tokenizer.json holds it)."""

    def __init__(self, charsmap_base64: str, source: str = "Precompiled"):
        try:
            blob = base64.b64decode(charsmap_base64, validate=True)
        except (binascii.Error, ValueError, TypeError) as e:
            raise ModelConfigError(f"{source}: precompiled_charsmap is not base64 ({e})") from None
        self.units, self.strings = parse_charsmap(blob, source)
        # one character -> its replacement, for str.translate: clusters that are a single character, or too long
        # to be looked up whole, are replaced character by character
        self.chars = charsmap_chars(self.units, self.strings, source)
        self._clusters: dict[str, str] = {}  # short clusters of several characters, as replaced

    def __call__(self, text: str) -> str:
        out = []
        done = 0
        for start, stop in joining_runs(text):  # clusters of several characters can only be in these spans
            if done < start:
                out.append(text[done:start].translate(self.chars))
            out += [self._cluster(g) for g in clusters_in(text, start, stop)]
            done = stop
        out.append(text[done:].translate(self.chars))
        return "".join(out)

    def _cluster(self, cluster: str) -> str:
        if len(cluster) == 1:
            return self.chars.get(ord(cluster), cluster)
        done = self._clusters.get(cluster)
        if done is None:
            raw = cluster.encode("utf-8")
            found = transform_ref(self.units, self.strings, raw) if len(raw) < MAX_CLUSTER_BYTES else None
            done = found.decode("utf-8") if found is not None else cluster.translate(self.chars)
            if len(self._clusters) < CACHE_CLUSTERS:
                self._clusters[cluster] = done
        return done


class Replace:
    """normalizers/replace.rs: every non-overlapping match, left to right, becomes `content`."""

    def __init__(self, pattern: str, content: str, *, regex: bool = False):
        self.pattern = re.compile(pattern if regex else re.escape(pattern))
        self.content = content

    def __call__(self, text: str) -> str:
        return self.pattern.sub(lambda _: self.content, text)


# Replace patterns given as {"Regex": ...} are Oniguruma regexes; those votive reproduces, as Python `re` patterns
# with the same matches (Python 3.11 has no \z; its \Z is the very end, as Oniguruma's \z).
ONIG_REGEXES = {
    " {2,}": " {2,}",  # XLMRobertaConverter (SpmConverter.normalizer): runs of spaces -> one "▁"
    "\\A +| +\\z": "\\A +| +\\Z",  # SpmConverter for remove_extra_whitespaces: spaces at either end
    "\\A\u2581": "\\A\u2581",  # SpmConverter for add_dummy_prefix with legacy: a leading "▁" doubled
}


def build_normalizer(spec, source: str) -> Callable[[str], str] | None:
    """The normalizer of a tokenizer.json `normalizer` value (None: none); ModelConfigError for a part this module
    does not reproduce (`normalizer_problem` says which first)."""
    problem = normalizer_problem(spec)
    if problem:
        raise ModelConfigError(f"{source}: {problem}, which votive's own tokenizer does not reproduce")
    steps = [_step(part, source) for part in _flatten(spec)]
    if not steps:
        return None

    def normalize(text: str) -> str:
        for step in steps:
            text = step(text)
        return text

    return normalize


def normalizer_problem(spec) -> str | None:
    """Why the normalizer is not one `build_normalizer` reproduces, or None."""
    for part in _flatten(spec):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "Precompiled" and isinstance(part.get("precompiled_charsmap"), str):
            continue
        if kind == "Strip" and isinstance(part.get("strip_left"), bool) and isinstance(part.get("strip_right"), bool):
            continue
        if kind == "Replace" and isinstance(part.get("content"), str) and isinstance(part.get("pattern"), dict):
            pattern = part["pattern"]
            if isinstance(pattern.get("String"), str):
                continue
            if pattern.get("Regex") in ONIG_REGEXES:
                continue
            return f"a Replace normalizer with pattern {pattern}"
        return f"normalizer {kind if kind else repr(part)}"
    return None


def _flatten(spec) -> list:
    if spec is None:
        return []
    if isinstance(spec, dict) and spec.get("type") == "Sequence" and isinstance(spec.get("normalizers"), list):
        return [p for part in spec["normalizers"] for p in _flatten(part)]
    return [spec]


def _step(part: dict, source: str) -> Callable[[str], str]:
    kind = part["type"]
    if kind == "Precompiled":
        return Precompiled(part["precompiled_charsmap"], source)
    if kind == "Strip":
        return _strip(part["strip_left"], part["strip_right"])
    pattern = part["pattern"]
    if "String" in pattern:
        return Replace(pattern["String"], part["content"])
    return Replace(ONIG_REGEXES[pattern["Regex"]], part["content"], regex=True)


def _strip(left: bool, right: bool) -> Callable[[str], str]:
    """normalizers/strip.rs: whitespace as char::is_whitespace has it, not Python's str.isspace."""

    def strip(text: str) -> str:
        if left:
            text = text.lstrip(WHITESPACE)
        return text.rstrip(WHITESPACE) if right else text

    return strip

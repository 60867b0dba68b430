"""BERT's text clean-up before WordPiece: BertNormalizer and BertPreTokenizer, over Unicode character tables
frozen to what Hugging Face `tokenizers` does.

Upstream: huggingface/tokenizers `tokenizers/src/` (read at commit 3ba8ad00; checked against tokenizers 0.23.3):
`normalizers/bert.rs` (BertNormalizer) and `pre_tokenizers/bert.rs` (BertPreTokenizer).

Unicode versions. The Rust crates under `tokenizers` use tables of different ages: general categories of
Unicode 8.0 (control/format characters, punctuation, nonspacing marks, from the `unicode_categories` crate),
normalization data of Unicode 9.0, and case mapping of Rust's std (Unicode 16.0). Python's `unicodedata`
follows the interpreter (14.0 in 3.11, 15.1 in 3.13), so the character classes here are tables frozen to what
`tokenizers` does, and tests/test_wordpiece.py checks each one against it for every code point.

Example:
    >>> BertNormalizer()("Héllo,\\tWORLD")
    'hello, world'
    >>> pre_tokenize("hello, world")
    ['hello', ',', 'world']
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

# -------------------------------------------------------------------------------------------- character tables
# Hex code points and inclusive ranges. Each table is what `tokenizers` 0.23 does, found over all code points.

# Removed by clean_text: the crate's "other" categories Cc, Cf, Co, Cs of Unicode 8.0 (unassigned code points are
# kept), except tab, newline and carriage return, plus U+0000 and U+FFFD. Format characters assigned later
# (U+0890, U+13430 ...) are kept, as tokenizers keeps them.
_CONTROLS = """
    0000-0008 000B-000C 000E-001F 007F-009F 00AD 0600-0605 061C 06DD
    070F 180E 200B-200F 202A-202E 2060-2064 2066-206F E000-F8FF FEFF
    FFF9-FFFB FFFD 110BD 1BCA0-1BCA3 1D173-1D17A E0001 E0020-E007F F0000-FFFFD
    100000-10FFFD
"""  # 137681 code points

# Spaced apart by handle_chinese_chars (normalizers/bert.rs is_chinese_char; note 2B920, not 2B820).
_CJK = """
    3400-4DBF 4E00-9FFF F900-FAFF 20000-2A6DF 2A700-2B81F 2B920-2CEAF 2F800-2FA1F
"""  # 81264 code points

# Isolated by BertPreTokenizer: ASCII punctuation (every printable non-alphanumeric) and Unicode 8.0's P*.
# U+166D is here (Po in 8.0, So since) and punctuation assigned after 8.0 (U+2E43 ...) is not.
_PUNCTUATION = """
    0021-002F 003A-0040 005B-0060 007B-007E 00A1 00A7 00AB 00B6-00B7
    00BB 00BF 037E 0387 055A-055F 0589-058A 05BE 05C0
    05C3 05C6 05F3-05F4 0609-060A 060C-060D 061B 061E-061F 066A-066D
    06D4 0700-070D 07F7-07F9 0830-083E 085E 0964-0965 0970 0AF0
    0DF4 0E4F 0E5A-0E5B 0F04-0F12 0F14 0F3A-0F3D 0F85 0FD0-0FD4
    0FD9-0FDA 104A-104F 10FB 1360-1368 1400 166D-166E 169B-169C 16EB-16ED
    1735-1736 17D4-17D6 17D8-17DA 1800-180A 1944-1945 1A1E-1A1F 1AA0-1AA6 1AA8-1AAD
    1B5A-1B60 1BFC-1BFF 1C3B-1C3F 1C7E-1C7F 1CC0-1CC7 1CD3 2010-2027 2030-2043
    2045-2051 2053-205E 207D-207E 208D-208E 2308-230B 2329-232A 2768-2775 27C5-27C6
    27E6-27EF 2983-2998 29D8-29DB 29FC-29FD 2CF9-2CFC 2CFE-2CFF 2D70 2E00-2E2E
    2E30-2E42 3001-3003 3008-3011 3014-301F 3030 303D 30A0 30FB
    A4FE-A4FF A60D-A60F A673 A67E A6F2-A6F7 A874-A877 A8CE-A8CF A8F8-A8FA
    A8FC A92E-A92F A95F A9C1-A9CD A9DE-A9DF AA5C-AA5F AADE-AADF AAF0-AAF1
    ABEB FD3E-FD3F FE10-FE19 FE30-FE52 FE54-FE61 FE63 FE68 FE6A-FE6B
    FF01-FF03 FF05-FF0A FF0C-FF0F FF1A-FF1B FF1F-FF20 FF3B-FF3D FF3F FF5B
    FF5D FF5F-FF65 10100-10102 1039F 103D0 1056F 10857 1091F
    1093F 10A50-10A58 10A7F 10AF0-10AF6 10B39-10B3F 10B99-10B9C 11047-1104D 110BB-110BC
    110BE-110C1 11140-11143 11174-11175 111C5-111C9 111CD 111DB 111DD-111DF 11238-1123D
    112A9 114C6 115C1-115D7 11641-11643 1173C-1173E 12470-12474 16A6E-16A6F 16AF5
    16B37-16B3B 16B44 1BC9F 1DA87-1DA8B
"""  # 726 code points

# Dropped by strip_accents after NFD: Unicode 8.0's Mn (marks assigned later stay).
_NONSPACING_MARKS = """
    0300-033F 0342 0345-036F 0483-0487 0591-05BD 05BF 05C1-05C2 05C4-05C5
    05C7 0610-061A 064B-065F 0670 06D6-06DC 06DF-06E4 06E7-06E8 06EA-06ED
    0711 0730-074A 07A6-07B0 07EB-07F3 0816-0819 081B-0823 0825-0827 0829-082D
    0859-085B 08E3-0902 093A 093C 0941-0948 094D 0951-0957 0962-0963
    0981 09BC 09C1-09C4 09CD 09E2-09E3 0A01-0A02 0A3C 0A41-0A42
    0A47-0A48 0A4B-0A4D 0A51 0A70-0A71 0A75 0A81-0A82 0ABC 0AC1-0AC5
    0AC7-0AC8 0ACD 0AE2-0AE3 0B01 0B3C 0B3F 0B41-0B44 0B4D
    0B56 0B62-0B63 0B82 0BC0 0BCD 0C00 0C3E-0C40 0C46-0C47
    0C4A-0C4D 0C55-0C56 0C62-0C63 0C81 0CBC 0CBF 0CC6 0CCC-0CCD
    0CE2-0CE3 0D01 0D41-0D44 0D4D 0D62-0D63 0DCA 0DD2-0DD4 0DD6
    0E31 0E34-0E3A 0E47-0E4E 0EB1 0EB4-0EB9 0EBB-0EBC 0EC8-0ECD 0F18-0F19
    0F35 0F37 0F39 0F71-0F72 0F74 0F77 0F79-0F7E 0F80
    0F82-0F84 0F86-0F87 0F8D-0F92 0F94-0F97 0F99-0F9C 0F9E-0FA1 0FA3-0FA6 0FA8-0FAB
    0FAD-0FB8 0FBA-0FBC 0FC6 102D-1030 1032-1037 1039-103A 103D-103E 1058-1059
    105E-1060 1071-1074 1082 1085-1086 108D 109D 135D-135F 1712-1714
    1732-1734 1752-1753 1772-1773 17B4-17B5 17B7-17BD 17C6 17C9-17D3 17DD
    180B-180D 18A9 1920-1922 1927-1928 1932 1939-193B 1A17-1A18 1A1B
    1A56 1A58-1A5E 1A60 1A62 1A65-1A6C 1A73-1A7C 1A7F 1AB0-1ABD
    1B00-1B03 1B34 1B36-1B3A 1B3C 1B42 1B6B-1B73 1B80-1B81 1BA2-1BA5
    1BA8-1BA9 1BAB-1BAD 1BE6 1BE8-1BE9 1BED 1BEF-1BF1 1C2C-1C33 1C36-1C37
    1CD0-1CD2 1CD4-1CE0 1CE2-1CE8 1CED 1CF4 1CF8-1CF9 1DC0-1DF5 1DFC-1DFF
    20D0-20DC 20E1 20E5-20F0 2CEF-2CF1 2D7F 2DE0-2DFF 302A-302D 3099-309A
    A66F A674-A67D A69E-A69F A6F0-A6F1 A802 A806 A80B A825-A826
    A8C4 A8E0-A8F1 A926-A92D A947-A951 A980-A982 A9B3 A9B6-A9B9 A9BC
    A9E5 AA29-AA2E AA31-AA32 AA35-AA36 AA43 AA4C AA7C AAB0
    AAB2-AAB4 AAB7-AAB8 AABE-AABF AAC1 AAEC-AAED AAF6 ABE5 ABE8
    ABED FB1E FE00-FE0F FE20-FE2F 101FD 102E0 10376-1037A 10A01-10A03
    10A05-10A06 10A0C-10A0F 10A38-10A3A 10A3F 10AE5-10AE6 11001 11038-11046 1107F-11081
    110B3-110B6 110B9-110BA 11100-11102 11127-1112B 1112D 11130-11134 11173 11180-11181
    111B6-111BE 111CA-111CC 1122F-11231 11234 11236-11237 112DF 112E3-112EA 11300-11301
    1133C 11340 11366-1136C 11370-11374 114B3-114B8 114BA 114BF-114C0 114C2-114C3
    115B2-115B5 115BC-115BD 115BF-115C0 115DC-115DD 11633-1163A 1163D 1163F-11640 116AB
    116AD 116B0-116B5 116B7 1171D-1171F 11722-11725 11727-1172B 16AF0-16AF4 16B30-16B36
    16F8F-16F92 1BC9D-1BC9E 1D167-1D169 1D17B-1D182 1D185-1D18B 1D1AA-1D1AD 1D242-1D244 1DA00-1DA36
    1DA3B-1DA6C 1DA75 1DA84 1DA9B-1DA9F 1DAA1-1DAAF 1E8D0-1E8D6 E0100-E01EF
"""  # 1549 code points

# Characters Python's NFD would reorder or decompose but tokenizers' normalization tables (Unicode 9.0) do not
# know: combining marks and decomposable letters assigned later (up to Unicode 18). tokenizers treats each as a
# plain starter, so NFD runs on the text between them and leaves them as they are.
_NFD_UNKNOWN = """
    05C8-05C9 07FD 0897-089F 08CA-08D3 09FE 0C3C 0D3B-0D3C 0EBA
    1715 1ABF-1AF0 1DF6-1DFA A82C 105C9 105E4 10D24-10D27 10D69-10D6D
    10EAB-10EAC 10ECB-10ECF 10EF0-10EFB 10EFD-10EFF 10F46-10F50 10F82-10F85 11070 1133B
    11383 11385 1138E 11391 113C5 113C7-113C8 113CE-113D0 1145E
    11839-1183A 11938 1193D-1193E 11943 119E0 11A34 11A47 11A99
    11D42 11D44-11D45 11D97 11F41-11F42 16121-16128 1612F 16D68-16D6A 16FF0-16FF1
    1D127-1D128 1D250-1D252 1D25B-1D25C 1D25F 1D280-1D281 1E08F 1E130-1E136 1E2AE
    1E2EC-1E2EF 1E4EC-1E4EF 1E5EE-1E5EF 1E6E3 1E6E6 1E6EE-1E6EF 1E6F5
"""  # 209 code points

# White_Space (Rust's char::is_whitespace, and `\s` in Rust's regex): 25 code points. Not Python's str.isspace,
# which adds U+001C..U+001F.
WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B)))
              + "\u2028\u2029\u202f\u205f\u3000")
# clean_text turns these into " " (the rest of White_Space is Cc and is removed first).
_TO_SPACE = "\t\n\r\xa0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"

# Lowercase mappings Rust's std has (Unicode 16.0) and Python's str.lower does not yet: (first, last, delta) for
# runs that map by a fixed offset, and single code points.
_LOWER_RUNS = ((0x10D50, 0x10D65, 0x20), (0x16EA0, 0x16EB8, 0x1B))
_LOWER_SINGLE = {0x1C89: 0x1C8A, 0xA7CB: 0x0264, 0xA7CC: 0xA7CD, 0xA7CE: 0xA7CF, 0xA7D2: 0xA7D3, 0xA7D4: 0xA7D5,
                 0xA7DA: 0xA7DB, 0xA7DC: 0x019B}


def _char_class(table: str) -> str:
    """The body of a regex character class for a table of hex code points and ranges ("0300-036F 0483 ...")."""
    parts = []
    for item in table.split():
        first, _, last = item.partition("-")
        parts.append(f"\\U{int(first, 16):08x}" + (f"-\\U{int(last, 16):08x}" if last else ""))
    return "".join(parts)


def _escaped(chars: str) -> str:
    return "".join(f"\\U{ord(c):08x}" for c in chars)


_ASTRAL = "\\U00010000-\\U0010ffff"  # every code point above the BMP, as a class range


def _one_of(table: str, extra: str = "", *, negated: bool = False) -> str:
    """A regex matching one character of the table (and of `extra`, BMP characters), or with `negated`, one of
    neither.

    re tests the BMP part of a class against a bitmap but astral ranges one by one, for every character that
    misses the bitmap; so astral code points match one wide range first and the table's own astral ranges are
    checked by a lookbehind, only for astral characters (3-10x faster on text that has none).
    """
    bmp, astral = [], []
    for item in table.split():
        first, _, last = item.partition("-")
        if int(first, 16) <= 0xFFFF < int(last or first, 16):
            raise ValueError(f"table range {item} crosses U+FFFF")  # a fact about the tables, checked once
        (astral if int(first, 16) > 0xFFFF else bmp).append(item)
    low, high = _char_class(" ".join(bmp)) + _escaped(extra), _char_class(" ".join(astral))
    if negated:
        return f"(?:[^{low}{_ASTRAL}]|[{_ASTRAL}](?<![{high}]))" if high else f"[^{low}]"
    return f"(?:[{low}]|[{_ASTRAL}](?<=[{high}]))" if high else f"[{low}]"


_LOWER_EXTRA = {**{cp: cp + delta for first, last, delta in _LOWER_RUNS for cp in range(first, last + 1)},
                **_LOWER_SINGLE}
_ASCII_CONTROLS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]+")
_ASCII_TO_SPACE = str.maketrans("\t\n\r", "   ")
# BertPreTokenizer for ASCII text (_UnicodePatterns.words for the rest).
_ASCII_WORDS_RE = re.compile("[!-/:-@\\[-`{-~]|[^!-/:-@\\[-`{-~\t\n\x0b\x0c\r ]+")


# The tables as regex sources, by name. Compiling all takes ~5 ms (re expands large ranges one code point at a
# time), so each is compiled when first used: ASCII text never pays, Latin text pays only in part.
_PATTERN_SOURCES: dict[str, Callable[[], str]] = {
    "controls": lambda: f"{_one_of(_CONTROLS)}+",
    "to_space": lambda: f"[{_escaped(_TO_SPACE)}]",
    "cjk": lambda: _one_of(_CJK),
    "marks": lambda: f"{_one_of(_NONSPACING_MARKS)}+",
    "nfd_unknown": lambda: f"({_one_of(_NFD_UNKNOWN)})",  # a group: re.split keeps the characters
    "lower_extra": lambda: f"[{_escaped(''.join(map(chr, _LOWER_EXTRA)))}]",
    # BertPreTokenizer in one pass: a punctuation character alone, or a run of anything but punctuation and
    # whitespace
    "words": lambda: f"{_one_of(_PUNCTUATION)}|{_one_of(_PUNCTUATION, WHITESPACE, negated=True)}+",
}


class _UnicodePatterns:
    """`_PATTERN_SOURCES` compiled on first use, as attributes (patterns.cjk ...)."""

    def __getattr__(self, name: str) -> re.Pattern:  # called only while the attribute is missing
        if name not in _PATTERN_SOURCES:
            raise AttributeError(name)
        pattern = re.compile(_PATTERN_SOURCES[name]())
        setattr(self, name, pattern)
        return pattern


_UNICODE = _UnicodePatterns()

# A lone surrogate: a str can hold one, UTF-8 and `tokenizers` cannot, so the tokenizers refuse text with one.
SURROGATE_RE = re.compile("[\ud800-\udfff]")


# ------------------------------------------------------------------------------------------------ normalizer
class BertNormalizer(NamedTuple):
    """tokenizer.json's {"type": "BertNormalizer", ...}: the steps run in this order."""

    clean_text: bool = True  # drop control characters, U+0000 and U+FFFD; whitespace becomes " "
    handle_chinese_chars: bool = True  # " " before and after every CJK ideograph, so each is a word
    strip_accents: bool | None = None  # NFD, then drop nonspacing marks; None: do it when lowercasing
    lowercase: bool = True

    def __call__(self, text: str) -> str:
        strip = self.lowercase if self.strip_accents is None else self.strip_accents
        if text.isascii():  # no CJK, nothing to decompose, no marks: only controls and case
            if self.clean_text and not text.isprintable():
                text = _ASCII_CONTROLS_RE.sub("", text).translate(_ASCII_TO_SPACE)
            return text.lower() if self.lowercase else text
        patterns = _UNICODE
        if self.clean_text:
            text = patterns.to_space.sub(" ", patterns.controls.sub("", text))
        if self.handle_chinese_chars and max(text, default="") >= "\u3400":  # the first CJK code point
            text = patterns.cjk.sub(r" \g<0> ", text)
        if strip:
            text = patterns.marks.sub("", _nfd(text, patterns))
        if self.lowercase:
            text = _lowercase(text, patterns)
        return text


def _nfd(text: str, patterns: _UnicodePatterns) -> str:
    """NFD as tokenizers' tables do it: characters they do not know are left alone and bound what is reordered."""
    import unicodedata  # here: ASCII texts, the common case, never need it, and a cold start reads 1.2 MB for it

    if patterns.nfd_unknown.search(text) is None:
        return unicodedata.normalize("NFD", text)
    parts = patterns.nfd_unknown.split(text)  # text, unknown, text, unknown, ..., text
    parts[::2] = [unicodedata.normalize("NFD", p) for p in parts[::2]]
    return "".join(parts)


def _lowercase(text: str, patterns: _UnicodePatterns) -> str:
    """Per-character lowercasing as Rust's char::to_lowercase does it (str.lower would write a final sigma)."""
    if "\u03a3" in text:
        text = text.replace("\u03a3", "\u03c3")
    if max(text, default="") >= "\u1c89" and patterns.lower_extra.search(text) is not None:
        text = text.translate(_LOWER_EXTRA)
    return text.lower()


def pre_tokenize(text: str) -> list[str]:
    """BertPreTokenizer: words split on whitespace, every punctuation character a word of its own."""
    return (_ASCII_WORDS_RE if text.isascii() else _UNICODE.words).findall(text)

"""votive's own Unigram (SentencePiece) tokenizer against Hugging Face `tokenizers` (the independent reference): a
small XLM-R-style tokenizer.json trained offline with SentencePiece's nmt_nfkc rule and converted by transformers'
XLMRobertaConverter (tests/data/unigram), its normalizer on every code point, grapheme clusters probed through
charsmaps built here, ids on fuzzed multilingual text and on every code point, the settings XLM-R files vary
(prepend scheme, legacy Metaspace, WhitespaceSplit, RobertaProcessing, byte fallback, added tokens), and what
happens with a part this module does not reproduce."""

from __future__ import annotations

import base64
import copy
import json
import random
import struct
from pathlib import Path

import pytest

from votive.errors import InputError, ModelConfigError
from votive.text import graphemes
from votive.text.spm_charsmap import Precompiled, charsmap_chars, parse_charsmap, transform_ref
from votive.text.unigram import Unigram, UnigramTokenizer, unigram_problems
from votive.text.wordpiece import LibraryTokenizer, load_tokenizer, tokenizers_needed_for

tokenizers = pytest.importorskip("tokenizers")  # the reference; a dev dependency
from tokenizers import normalizers  # noqa: E402

DATA = Path(__file__).parent / "data" / "unigram"
ALL_CHARS = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


@pytest.fixture(scope="module")
def spec() -> dict:
    return json.loads((DATA / "tokenizer.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def charsmap(spec) -> str:
    return spec["normalizer"]["normalizers"][0]["precompiled_charsmap"]


def reference_tokenizer(path: Path, max_length: int | None):
    tok = tokenizers.Tokenizer.from_file(str(path))
    tok.no_padding()
    if max_length is not None:
        tok.enable_truncation(max_length=max_length)
    return tok


def assert_same_ids(texts: list[str], ours, theirs):
    got = ours.encode_batch(texts)
    expected = [e.ids for e in theirs.encode_batch(texts)]
    bad = [i for i, (a, b) in enumerate(zip(got, expected)) if a != b]
    assert not bad, (f"{len(bad)} of {len(texts)} texts differ; first {texts[bad[0]]!r}: votive {got[bad[0]]}, "
                     f"tokenizers {expected[bad[0]]} {theirs.encode(texts[bad[0]]).tokens}")


def assert_same_text(got: str, expected: str, what: str):
    if got != expected:
        i = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise AssertionError(f"{what}: differs at {i}: votive {got[max(0, i - 3):i + 3]!r}, "
                             f"tokenizers {expected[max(0, i - 3):i + 3]!r}")


def write_spec(folder: Path, spec: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------------ charsmaps built here
def build_charsmap(rules: dict[str | bytes, str]) -> bytes:
    """A precompiled charsmap (Darts-clone double array + NUL-ended strings) mapping each key to its string,
    written independently of votive's reader: breadth first, each node's children at a fresh base ^ label."""
    strings, offsets = b"", {}
    for key, value in rules.items():
        offsets[key] = len(strings)
        strings += value.encode("utf-8") + b"\0"
    trie: dict = {}
    for key in rules:
        node = trie
        for byte in key if isinstance(key, bytes) else key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[None] = offsets[key]
    units, used_bases = {0: 0}, set()
    queue = [(trie, 0, 0)]  # (node, its slot, its label)
    while queue:
        node, slot, label = queue.pop(0)
        labels = sorted(k for k in node if k is not None)
        need = labels + ([0] if None in node else [])
        base = 1
        while base in used_bases or any((base ^ c) in units for c in need):
            base += 1
        used_bases.add(base)
        for c in need:
            units[base ^ c] = 0
        units[slot] = ((slot ^ base) << 10) | ((None in node) << 8) | label
        if None in node:
            units[base] = (1 << 31) | node[None]
        queue += [(node[c], base ^ c, c) for c in labels]
    size = (max(max(units), max(used_bases)) | 0xFF) + 1  # every base ^ byte inside, as darts-clone's blocks
    array = [units.get(i, 0) for i in range(size)]
    return struct.pack(f"<I{len(array)}I", 4 * len(array), *array) + strings


def both(rules: dict[str, str]):
    blob = build_charsmap(rules)
    return Precompiled(base64.b64encode(blob).decode()), normalizers.Precompiled(blob)


# ------------------------------------------------------------------------------ the normalizer, all of it
def test_precompiled_matches_on_every_code_point(charsmap):
    """Every code point alone, and each between two "a"s: NFKC through the charsmap, grapheme by grapheme (a
    short cluster goes whole to the replacement of its shortest prefix entry)."""
    ours, theirs = Precompiled(charsmap), normalizers.Precompiled(base64.b64decode(charsmap))
    for text in (ALL_CHARS, "a".join(ALL_CHARS)):
        assert_same_text(ours(text), theirs.normalize_str(text), "Precompiled")
    # the rule that surprises: U+FF21 + U+0301 (5 bytes) is one cluster and becomes "A" without its accent
    assert ours("\uff21\u0301 \uff21\u0301\u0301") == theirs.normalize_str("\uff21\u0301 \uff21\u0301\u0301") == \
        "A A\u0301\u0301"


def test_cluster_boundaries_on_every_code_point():
    """With "a" and "é" as entries, a + c (and é + c) is replaced whole exactly when c joins the cluster before it
    (Extend, SpacingMark, ZWJ): each code point's grapheme property, as tokenizers' unicode-segmentation has it."""
    ours, theirs = both({"a": "<", "\u00e9": "[", "\r": "|"})
    for text in ("a".join(ALL_CHARS) + "a", "\n\u00e9".join(ALL_CHARS[:0x800])):
        assert_same_text(ours(text), theirs.normalize_str(text), "clusters")


POOLS = {
    "marks": "\u0300\u0301\u0308\u0327\u0345\u05b0\u064b\u0670\u093c\u094d\u09cd\u0e31\u1ab0\u1dc0\u20d0\ufe0f"
             "\ufe20\U000e0100\U0001f3fb\u200d\u200c\u0903\u093e\u0e33\u0eb3\u1b35",
    "prepend": "\u0600\u0605\u06dd\u070f\u0890\u08e2\u0d4e\U000110bd\U000111c2",
    "hangul": "\u1100\u1112\u115f\u1160\u1161\u11a7\u11a8\u11ff\ua960\ud7b0\ud7cb\uac00\uac01\ud7a3\uc5ec",
    "emoji": "\u00a9\u00ae\u203c\u2764\U0001f600\U0001f468\U0001f469\U0001f1e6\U0001f1eb\U0001f1f7",
    "indic": "\u0915\u0937\u0930\u094d\u093f\u09a8\u09cd\u0a95\u0acd\u0c15\u0c4d\u0d15\u0d4d\u1780\u17d2",
    "other": "a\u00e9\r\n\t \u0000\u001f\u0085\u00ad\u2028\ufeff\u3042\u4e2d\uff21\u0391",
}


def test_cluster_rules_on_fuzzed_sequences():
    """Random runs of joining characters (marks, Prepend, Hangul jamo and syllables, emoji with ZWJ and skin
    tones, regional indicators, Indic conjuncts, CR LF, controls), each of which is an entry: the rules GB3-GB13
    decide which clusters are short enough to be replaced whole."""
    rules = {c: f"<{ord(c):X}>" for pool in POOLS.values() for c in pool if c != "\0"}
    rules.update({"e\u0301": "E", "\r\n": "|", "\u0915\u094d": "K"})
    ours, theirs = both(rules)
    rng = random.Random(5)
    chars = "".join(POOLS.values())
    texts = ["".join(rng.choice(chars) for _ in range(rng.randint(1, 12))) for _ in range(4000)]
    text = "\u3000".join(texts)
    assert_same_text(ours(text), theirs.normalize_str(text), "fuzzed clusters")
    assert graphemes.clusters("\U0001f1eb\U0001f1f7\U0001f1e6") == ["\U0001f1eb\U0001f1f7", "\U0001f1e6"]


def test_fast_character_table_equals_the_trie_walk(charsmap):
    """charsmap_chars (read off the trie breadth first) against transform_ref (its slow twin, walked per
    character) for the BMP and every 7th astral code point."""
    units, strings = parse_charsmap(base64.b64decode(charsmap), "t")
    table = charsmap_chars(units, strings, "t")
    assert len(table) > 4000
    for c in ALL_CHARS[:0xF800] + ALL_CHARS[0xF800::7]:
        found = transform_ref(units, strings, c.encode("utf-8"))
        assert table.get(ord(c)) == (None if found is None else found.decode("utf-8")), repr(c)


@pytest.mark.parametrize("blob, message", [
    (b"\x01\x00", "precompiled_charsmap has 2 bytes, fewer than its 4-byte header"),
    (struct.pack("<I", 400) + b"\0" * 8, "precompiled_charsmap says its trie has 400 bytes; the charsmap has 8"),
    (struct.pack("<II", 4, 0) + b"\xff\0", "precompiled_charsmap's replacement strings are not UTF-8"),
])
def test_malformed_charsmaps_are_refused(blob, message):
    with pytest.raises(ModelConfigError, match=message):
        Precompiled(base64.b64encode(blob).decode(), "x.json")
    with pytest.raises(ModelConfigError, match="not base64"):
        Precompiled("not base64!", "x.json")


def test_a_key_that_is_part_of_a_character_is_refused():
    """SentencePiece writes whole characters as keys; an entry for a lone lead byte would change what every
    character starting with it finds (tokenizers does use it), so votive refuses the file instead of guessing."""
    blob = build_charsmap({b"\xc3": "x"})
    assert normalizers.Precompiled(blob).normalize_str("\u00e9a") == "xa"
    with pytest.raises(ModelConfigError, match=r"entry b'\\xc3' -> b'x' is not UTF-8 text"):
        Precompiled(base64.b64encode(blob).decode(), "x.json")


# ------------------------------------------------------------------------------------------------ the model
def test_unigram_model_segments_like_the_reference():
    pieces = [("<unk>", 0.0), ("a", 0.0), ("b", 0.0), ("c", 0.0), ("d", 0.0), ("cd", 1.0), ("ab", 2.0),
              ("abc", 5.0), ("abcd", 10.0)]
    model = Unigram(pieces, unk_id=0)
    assert model.segment("abcdacdxx") == ["abcd", "a", "cd", "xx"]  # model.rs's own example; "xx" fused
    theirs = tokenizers.Tokenizer(tokenizers.models.Unigram(pieces, 0, False))
    rng = random.Random(2)
    for _ in range(300):
        word = "".join(rng.choice("abcdxé") for _ in range(rng.randint(1, 15)))
        assert model.encode(word) == theirs.encode(word).ids, word
    assert model.encode("") == []
    with pytest.raises(ModelConfigError, match="unk_id 9 is not an id of the 9-piece vocabulary"):
        Unigram(pieces, unk_id=9)
    with pytest.raises(InputError, match="no piece covers 'x' and the model has no unknown token"):
        Unigram(pieces, unk_id=None).encode("ax")


def test_byte_fallback_and_ties():
    """Unknown runs become <0xNN> when every byte has a token, else the unknown id; equal-score paths keep the
    first found; a repeated piece takes its last id."""
    pieces = [("<unk>", 0.0), ("▁", -1.0), ("a", -2.0), ("b", -2.0), ("ab", -4.0), ("b", -3.0)]
    pieces += [(f"<0x{b:02X}>", -10.0) for b in b"\xc3\xa9\xe2"]
    rng = random.Random(4)
    words = ["".join(rng.choice(["a", "b", "é", "€", "▁", "ab"]) for _ in range(rng.randint(1, 8)))
             for _ in range(300)]
    for byte_fallback in (True, False):
        ours = Unigram(pieces, unk_id=0, byte_fallback=byte_fallback)
        theirs = tokenizers.Tokenizer(tokenizers.models.Unigram(pieces, 0, byte_fallback))
        for word in words + ["é", "é€", "€"]:
            assert ours.encode(word) == theirs.encode(word).ids, (byte_fallback, word)


# ------------------------------------------------------------------------------------------- the tokenizer
POOL = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»“”‘’…—",
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿĀāĂăĄąĆćİıŁłŒœŠšŸŽžßẞǅ",
    "ΑαΩωΣσςДдЖжЯяЁёЇїҐґ",
    "\u0300\u0301\u0308\u0327\u064b\u0670\u093c\u094d\u0e31\u200d\u200c\ufe0f\U0001f3fd",
    "北京你好的一是不了人有我東京語言質問ひらがなカタカナ서울안녕하세요\u1100\u1161\u11a8",
    "العربيةمرحباسؤالجواب\u0600\u06dd שלוםשאלה नमस्तेभाषाक्षत्रिय สวัสดีภาษา",
    "😀🤣👍🏽👨\u200d👩\u200d👧✨🇫🇷🇩🇪",
    "ＡＢＣｶﾀｶﾅﬁ½①Ⅻ™µÅ²㎏㍻ﾞﾟ\uff0c\u3000",
    "\x00\x01\x07\x0b\x0c\x1b\x1f\x7f\x85\xad\u200b\u200e\u2060\ufeff\ufffd\ue000",
    " \t\n\r\xa0\u1680\u2003\u2009\u2028\u202f\u205f\u3000  ",
]
SPECIALS = ["<s>", "</s>", "<pad>", "<unk>", "<mask>", " <mask>", "<mask> ", "<s", "<<s>>", "▁", "▁▁"]
WORDS = ["the", "machine", "learning", "model", "language", "question", "Москва", "язык", "北京", "東京", "서울",
         "question", "réponse", "größe", "γλώσσα", "भाषा", "ภาษา", "سؤال"]


def fuzz_texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 12)):
            r = rng.random()
            if r < 0.1:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.4:
                parts.append(rng.choice(WORDS))
            elif r < 0.45:
                parts.append(chr(rng.choice((rng.randrange(0xD800), rng.randrange(0xE000, 0x110000)))))
            else:
                pool = rng.choice(POOL)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
            if rng.random() < 0.5:
                parts.append(rng.choice(POOL[-1]))
        texts.append("".join(parts))
    return texts


def test_loads_without_the_library(spec):
    ours = load_tokenizer(DATA, 512, library=lambda: None)
    assert isinstance(ours, UnigramTokenizer)
    assert unigram_problems(spec) == [] and tokenizers_needed_for(DATA) is None


@pytest.mark.parametrize("max_length", [512, 2, 3, 9, 24, None])
def test_fuzzed_strings(max_length):
    texts = fuzz_texts(max_length or 1, 1200)
    assert_same_ids(texts, load_tokenizer(DATA, max_length),
                    reference_tokenizer(DATA / "tokenizer.json", max_length))


def test_every_code_point():
    """Every code point in words of 1-8, between spaces and inside words; sampled astral planes beyond the first
    two (unassigned and private use: the unknown token) keep the run short."""
    chars = "".join(c for c in ALL_CHARS if ord(c) < 0x30000 or ord(c) % 97 == 0)
    rng = random.Random(8)
    texts, i = [], 0
    while i < len(chars):
        k = rng.randint(1, 8)
        texts.append(" ".join(chars[i : i + k]) if k % 2 else chars[i : i + k])
        i += k
    texts = [" ".join(texts[j : j + 64]) for j in range(0, len(texts), 64)]
    assert_same_ids(texts, load_tokenizer(DATA, None), reference_tokenizer(DATA / "tokenizer.json", None))


def test_truncation_keeps_the_template():
    ours = load_tokenizer(DATA, 5)
    ids = ours.encode("the machine learning model language question")
    assert len(ids) == 5 and ids[0] == 0 and ids[-1] == 2
    assert load_tokenizer(DATA, 2).encode("anything") == [0, 2]
    with pytest.raises(ModelConfigError, match="max_length 1 leaves no room for the template's 2 special tokens"):
        load_tokenizer(DATA, 1)


def variant(spec: dict, change) -> dict:
    spec = copy.deepcopy(spec)
    change(spec)
    return spec


def _byte_fallback(s):
    s["model"]["byte_fallback"] = True
    s["model"]["vocab"][-1:-1] = [[f"<0x{b:02X}>", -20.0] for b in range(256)]


def _normalized_added(s):
    s["added_tokens"].append({"id": 0, "content": "Hello  World", "single_word": False, "lstrip": False,
                              "rstrip": True, "normalized": True, "special": False})
    s["added_tokens"].append({"id": 0, "content": "<new>", "single_word": False, "lstrip": True, "rstrip": False,
                              "normalized": False, "special": True})


VARIANTS = {
    "first": lambda s: s["pre_tokenizer"].update(prepend_scheme="first"),
    "never": lambda s: s["pre_tokenizer"].update(prepend_scheme="never"),
    "no split": lambda s: s["pre_tokenizer"].update(split=False),
    "legacy metaspace": lambda s: s.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁",
                                                          "str_rep": "▁", "add_prefix_space": True}),
    "legacy no prefix": lambda s: s.update(pre_tokenizer={"type": "Metaspace", "replacement": "▁",
                                                          "add_prefix_space": False, "prepend_scheme": "never"}),
    "whitespace split": lambda s: s.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always",
                                      "split": True}]}),
    "older normalizer": lambda s: s["normalizer"]["normalizers"].pop(1),  # e5's file: no Strip
    "spm whitespace": lambda s: s["normalizer"]["normalizers"].__setitem__(slice(1, None), [
        {"type": "Replace", "pattern": {"Regex": "\\A +| +\\z"}, "content": ""},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
        {"type": "Replace", "pattern": {"Regex": "\\A▁"}, "content": "▁▁"},
        {"type": "Strip", "strip_left": True, "strip_right": False}]),
    "no normalizer": lambda s: s.update(normalizer=None),
    "roberta processing": lambda s: s.update(post_processor={
        "type": "RobertaProcessing", "sep": ["</s>", 2], "cls": ["<s>", 0], "trim_offsets": True,
        "add_prefix_space": True}),
    "no post-processor": lambda s: s.update(post_processor=None),
    "byte fallback": _byte_fallback,
    "normalized added tokens": _normalized_added,
}


@pytest.mark.parametrize("name", VARIANTS)
def test_settings_xlm_r_files_vary(spec, tmp_path, name):
    folder = write_spec(tmp_path / "tok", variant(spec, VARIANTS[name]))
    texts = fuzz_texts(3, 400) + ["  Hello  World  <new>x", "<s>  a", " first", "x  <mask>  y", "▁▁a", ""]
    ours = load_tokenizer(folder, 40, library=lambda: None)
    assert isinstance(ours, UnigramTokenizer)
    assert_same_ids(texts, ours, reference_tokenizer(folder / "tokenizer.json", 40))


# ------------------------------------------------------------------------------ what it does not reproduce
@pytest.mark.parametrize("change, problem", [
    (lambda s: s["normalizer"]["normalizers"].append({"type": "NFKC"}), "normalizer NFKC"),
    (lambda s: s["normalizer"]["normalizers"].append(
        {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "}),
     "a Replace normalizer with pattern {'Regex': '\\\\s+'}"),
    (lambda s: s.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer Whitespace"),
    (lambda s: s.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [{"type": "Punctuation"}]}),
     "pre_tokenizer Sequence [Punctuation]"),
    (lambda s: s.update(pre_tokenizer={"type": "Sequence", "pretokenizers": [
        {"type": "WhitespaceSplit"}, {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first"}]}),
     "a Metaspace with prepend_scheme 'first' after WhitespaceSplit or normalized added tokens"),
    (lambda s: s["added_tokens"][4].update(single_word=True), "added token '<mask>' with single_word"),
    (lambda s: s["model"]["vocab"].__setitem__(5, ["x"]), "a Unigram vocabulary that is not [piece, score] pairs"),
    (lambda s: s.update(post_processor={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                                        "use_regex": True}), "post_processor ByteLevel"),
])
def test_unsupported_parts_go_to_the_library(spec, tmp_path, change, problem):
    broken = variant(spec, change)
    assert unigram_problems(broken) == [problem]
    folder = write_spec(tmp_path / "tok", broken)
    assert tokenizers_needed_for(folder) == f"tokenizer.json uses {problem}"
    if "vocabulary" not in problem:  # the library itself refuses that file
        assert isinstance(load_tokenizer(folder, 8), LibraryTokenizer)
    with pytest.raises(ModelConfigError, match="which votive's own tokenizer does not reproduce; install"):
        load_tokenizer(folder, 8, library=lambda: None)


def test_bad_texts():
    ours = load_tokenizer(DATA, 16)
    with pytest.raises(InputError, match=r"^text 1 has a lone surrogate at index 4; it is not valid Unicode$"):
        ours.encode_batch(["fine", "bad \udc80 text"])
    with pytest.raises(InputError, match=r"^text 0 is bytes, expected a string$"):
        ours.encode_batch([b"bytes"])


@pytest.mark.parametrize("post", ["template", "roberta"])
@pytest.mark.parametrize("max_length", [512, 9, 10, 4])
def test_pairs_for_rerankers(spec, tmp_path, post, max_length):
    """(query, document) pairs as XLM-R rerankers encode them: <s> A </s> </s> B </s>, every type id 0,
    truncated 'longest_first' (what votive.models.cross_encoder asks of a tokenizer)."""
    if post == "roberta":
        spec = variant(spec, VARIANTS["roberta processing"])
    folder = write_spec(tmp_path / "tok", spec)
    rng = random.Random(max_length)
    texts = fuzz_texts(max_length, 60)
    pairs = [(rng.choice(texts), rng.choice(texts)) for _ in range(150)] + [("", ""), ("a", ""), ("", "b")]
    ours = load_tokenizer(folder, max_length, library=lambda: None)
    theirs = reference_tokenizer(folder / "tokenizer.json", max_length)
    assert ours.encode_pair_batch(pairs) == [(e.ids, e.type_ids) for e in theirs.encode_batch(pairs)]

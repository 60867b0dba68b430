"""votive's own BERT tokenizer against Hugging Face `tokenizers` (the independent reference): every character
table over all code points, the real all-MiniLM-L6-v2 tokenizer on the reference sentences and thousands of
fuzzed strings, cased and uncased vocabularies, the vocab.txt-only form, added tokens, truncation, and what
happens with a tokenizer.json this module does not reproduce."""

from __future__ import annotations

import copy
import json
import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from votive.errors import InputError, ModelConfigError
from votive.text import bert_normalizer, wordpiece
from votive.text.wordpiece import (
    BertNormalizer,
    LibraryTokenizer,
    WordPieceTokenizer,
    load_tokenizer,
    pre_tokenize,
    tokenizers_needed_for,
    unsupported_features,
)

tokenizers = pytest.importorskip("tokenizers")  # the reference; a dev dependency
from tokenizers import normalizers, pre_tokenizers  # noqa: E402

ALL_CHARS = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)


@pytest.fixture(scope="module")
def minilm_spec(minilm_dir) -> dict:
    return json.loads((minilm_dir / "tokenizer.json").read_text(encoding="utf-8"))


def reference_tokenizer(path: Path, max_length: int | None):
    """`tokenizers` set up as votive's bert.py used it: truncation to max_length, padding off."""
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
    """Equal strings, or a message naming the first code points where they part."""
    if got != expected:
        i = next((k for k, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
        raise AssertionError(f"{what}: differs at {i}: votive {got[max(0, i - 3):i + 3]!r}, "
                             f"tokenizers {expected[max(0, i - 3):i + 3]!r}")


# ------------------------------------------------------------------------------- character tables, all of them
@pytest.mark.parametrize("settings", [
    dict(clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False),
    dict(clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False),
    dict(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False),
    dict(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True),
    dict(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True),
    dict(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=False),
])
def test_normalizer_matches_on_every_code_point(settings):
    """Each code point between two NULs ("\\x00" is a starter nothing decomposes to, so no mark reorders across
    it), and the whole string at once: clean_text's control set, whitespace, CJK ranges, NFD, Mn, lowercase."""
    text = "\x00".join(ALL_CHARS)
    theirs = normalizers.BertNormalizer(**settings).normalize_str(text)
    assert_same_text(BertNormalizer(**settings)(text), theirs, str(settings))


def test_pre_tokenizer_matches_on_every_code_point():
    """Every code point between two letters: punctuation is cut out alone, whitespace splits, the rest joins."""
    text = "a".join(ALL_CHARS)
    theirs = [piece for piece, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text)]
    got = pre_tokenize(text)
    assert len(got) == len(theirs) and got == theirs, next(
        (a, b) for a, b in zip(got + [None], theirs + [None]) if a != b)
    ascii_text = "a".join(map(chr, range(128))) + " x\x1c\x1fy"
    assert pre_tokenize(ascii_text) == [p for p, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(ascii_text)]


def test_nfd_leaves_marks_tokenizers_does_not_know_in_place():
    """Combining marks assigned after the Unicode version of tokenizers' normalization tables reorder in
    Python's NFD but not in theirs; sequences with each mark before and after known ones must agree."""
    marks = [c for c in ALL_CHARS if unicodedata.combining(c) or
             (unicodedata.decomposition(c) and not unicodedata.decomposition(c).startswith("<"))]
    text = "|".join(f"a{c}\u0334e\u0301{c}\u0316{c}{c}" for c in marks)
    theirs = normalizers.NFD().normalize_str(text)
    assert_same_text(bert_normalizer._nfd(text, bert_normalizer._UNICODE), theirs, "NFD")
    strip = dict(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False)
    assert_same_text(BertNormalizer(**strip)(text), normalizers.BertNormalizer(**strip).normalize_str(text), "strip")


def test_lowercase_is_per_character_like_rust():
    """str.lower writes a final sigma at the end of a word; Rust's per-character mapping never does."""
    normalizer = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=False, lowercase=True)
    assert normalizer("ΟΔΟΣ ΣΑ") == "οδοσ σα" != "ΟΔΟΣ ΣΑ".lower()
    assert normalizer("İ") == "i\u0307"  # one character becomes two


# -------------------------------------------------------------------------------- the real MiniLM tokenizer
def test_reference_sentences(minilm_dir, reference_dir):
    sentences = json.loads((reference_dir / "minilm_sentences.json").read_text())
    ours = load_tokenizer(minilm_dir, 256)
    assert isinstance(ours, WordPieceTokenizer)
    assert ours.encode_batch(sentences["sentences"]) == sentences["input_ids"]
    assert_same_ids(sentences["sentences"], ours, reference_tokenizer(minilm_dir / "tokenizer.json", 256))
    bench = json.loads((reference_dir / "bench_sentences.json").read_text())["sentences"]
    assert_same_ids(bench, ours, reference_tokenizer(minilm_dir / "tokenizer.json", 256))


POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿĀāĂăĄąĆćİıŁłŒœŠšŸŽžΣσςΑαΩωДдЖжЯяßẞǅ",
    "\u0300\u0301\u0302\u0303\u0308\u0316\u0327\u0334\u034f\u0483\u05b0\u064b\u0670\u093c\u0e31\u1ab0\u1dc0\u1df6"
    "\u20d0\ufe20\u1734\U000111c9",
    "中文字符漢字日本語かなカナ한국어㐀䶿鿿豈﨩𠀀𪜀𫝀𫠠𬺰丽\u3001\u3002\uff01",
    "العربيةمرحبا۔؟،\u061c\u0600",
    "😀🤣🤩🥰🥲🫠👍🏽👨\u200d👩\u200d👧✨🇫🇷",
    "\x00\x01\x07\x08\x0b\x0c\x0e\x1b\x1c\x1f\x7f\x85\xad\u200b\u200c\u200d\u200e\u2060\ufeff\ufffd\ue000"
    "\U000f0000\u0890\U00013430\U000e0041",
    " \t\n\r\xa0\u1680\u2000\u2003\u2009\u200a\u2028\u2029\u202f\u205f\u3000",
    "\u2e43\u166d\u2e55\u1c89\ua7cb\U00010d50\U00011938\u2cef",
]
SPECIALS = ["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[mask]", "[SEP", "[[SEP]]", "[ MASK ]"]


def fuzz_texts(seed: int, n: int) -> list[str]:
    """Random mixes of the pools above, literal special tokens, words over 100 characters, any code point."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(0, 14)):
            r = rng.random()
            if r < 0.1:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.15:
                parts.append("".join(rng.choice(POOLS[rng.choice((0, 2))]) for _ in range(rng.randint(90, 130))))
            elif r < 0.2:
                parts.append(chr(rng.choice((rng.randrange(0xD800), rng.randrange(0xE000, 0x110000)))))
            else:
                pool = rng.choice(POOLS)
                parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 8))))
            if rng.random() < 0.5:
                parts.append(rng.choice(POOLS[8]))
        texts.append("".join(parts))
    return texts


@pytest.mark.parametrize("max_length", [256, 2, 3, 7, 40, None])
def test_fuzzed_strings_on_minilm(minilm_dir, max_length):
    texts = fuzz_texts(max_length or 0, 1500)
    ours = load_tokenizer(minilm_dir, max_length)
    assert_same_ids(texts, ours, reference_tokenizer(minilm_dir / "tokenizer.json", max_length))


def test_truncation_keeps_special_tokens(minilm_dir):
    ours = load_tokenizer(minilm_dir, 5)
    assert ours.encode("one two three four five six") == [101, 2028, 2048, 2093, 102]
    assert load_tokenizer(minilm_dir, 2).encode("anything") == [101, 102]
    assert load_tokenizer(minilm_dir, None).encode("word " * 600)[-2:] == [2773, 102]  # 602 ids, all kept


def test_word_cache_is_bounded(minilm_dir, monkeypatch):
    monkeypatch.setattr(wordpiece, "CACHE_WORDS", 10)
    ours = load_tokenizer(minilm_dir, None)
    texts = [" ".join(f"w{i}x{j}" for j in range(30)) for i in range(5)]
    first = ours.encode_batch(texts)
    assert len(ours._cache) <= 10
    assert ours.encode_batch(texts) == first == [e.ids for e in reference_tokenizer(
        minilm_dir / "tokenizer.json", None).encode_batch(texts)]


# ----------------------------------------------------------------------------------- other vocabularies, built here
def small_spec(minilm_spec: dict, *, lowercase: bool, strip_accents=None, chinese=True, clean_text=True) -> dict:
    """A BERT tokenizer.json with a vocabulary of 4,000 MiniLM entries plus, when cased, their capitalized and
    accented forms; what differs from MiniLM's is what the test varies."""
    rng = random.Random(1)
    base = sorted(minilm_spec["model"]["vocab"], key=minilm_spec["model"]["vocab"].get)
    tokens = base[:1000] + rng.sample(base[1000:], 3000)
    if not lowercase:
        tokens += [t.capitalize() for t in tokens if t.isalpha()] + ["Élan", "##É", "Ñ", "##ñ", "İ", "Σ"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    spec = copy.deepcopy(minilm_spec)
    spec["model"]["vocab"] = vocab
    spec["normalizer"] = {"type": "BertNormalizer", "clean_text": clean_text, "handle_chinese_chars": chinese,
                          "strip_accents": strip_accents, "lowercase": lowercase}
    spec["added_tokens"] = [dict(t, id=vocab[t["content"]]) for t in spec["added_tokens"]]
    spec["post_processor"]["special_tokens"] = {
        name: dict(entry, ids=[vocab[name]]) for name, entry in spec["post_processor"]["special_tokens"].items()}
    return spec


def write_spec(folder: Path, spec: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    return folder


@pytest.mark.parametrize("variant", [
    dict(lowercase=False),  # bert-base-cased: no lowercasing, accents kept
    dict(lowercase=False, strip_accents=True),
    dict(lowercase=True, strip_accents=False),
    dict(lowercase=True, chinese=False, clean_text=False),
])
def test_cased_and_other_normalizer_settings(minilm_spec, tmp_path, variant):
    folder = write_spec(tmp_path / "tok", small_spec(minilm_spec, **variant))
    texts = fuzz_texts(7, 800) + ["Élan Ñandú ÉLAN", "Hello World", "ΣΟΦΙΑ İstanbul"]
    assert_same_ids(texts, load_tokenizer(folder, 64), reference_tokenizer(folder / "tokenizer.json", 64))


def test_added_tokens_normalized_stripped_and_new(minilm_spec, tmp_path):
    """User-added tokens: matched after normalization, taking whitespace around them (lstrip/rstrip), and ones
    not in the vocabulary, which get ids after it; a different prefix and a short word limit on the model."""
    spec = small_spec(minilm_spec, lowercase=True)
    spec["model"]["continuing_subword_prefix"] = "##"
    spec["model"]["max_input_chars_per_word"] = 12
    n = len(spec["model"]["vocab"])

    def added(content, normalized, lstrip=False, rstrip=False, special=False):
        return {"id": 0, "content": content, "single_word": False, "lstrip": lstrip, "rstrip": rstrip,
                "normalized": normalized, "special": special}

    # Whitespace never becomes an id, so lstrip/rstrip show only where the space they take would have let a
    # normalized token with a space at its edge (" hello", "world ") match in the piece left over.
    spec["added_tokens"] += [added("Hello World", True), added("<ent>", False, lstrip=True, rstrip=True),
                             added("ÉTÉ", True, rstrip=True), added("[MASK]", False, lstrip=True),
                             added("the", True), added("xyz_new", True), added("<ent>", False, rstrip=True),
                             added(" hello", True), added("world ", True), added("<ent>x", False)]
    folder = write_spec(tmp_path / "tok", spec)
    theirs = reference_tokenizer(folder / "tokenizer.json", 48)
    # new contents are numbered after the vocabulary in file order ("the" and "[MASK]" are in it); the file's
    # id 0 is not what counts
    assert [theirs.token_to_id(t) for t in ("Hello World", "<ent>", "ÉTÉ", "xyz_new", " hello", "<ent>x")] == [
        n, n + 1, n + 2, n + 3, n + 4, n + 6]
    texts = fuzz_texts(11, 600) + ["say hello world  <ent>  then été  x", "a <ent><ent> b", "  [MASK]  the",
                                   "HELLO WORLD xyz_new XYZ_NEW theory", "été\u0301 ÉTÉ", "<ent>",
                                   "<ent> hello", "x hello", "world [MASK]", "world x", "<ent>x <ent>xy"]
    rng = random.Random(3)
    texts += ["".join(rng.choice(["hello", "world", "<ent>", "été", " ", "the", "[MASK]", "x"]) for _ in range(9))
              for _ in range(300)]
    ours = load_tokenizer(folder, 48)
    assert ours.encode("xyz_new")[1:-1] == [n + 3] and ours.encode("HELLO world")[1:-1] == [n]
    assert ours.encode("the hello")[1:-1] == [ours.wordpiece.vocab["the"], n + 4]
    assert ours.encode("<ent> hello")[1:-1] == [n + 1, ours.wordpiece.vocab["hello"]]  # rstrip took the space
    assert ours.encode("<ent>x")[1:-1] == [n + 6]  # the longest token at the leftmost match
    assert_same_ids(texts, ours, theirs)


def test_other_prefix_bert_processing_and_no_normalizer(minilm_spec, tmp_path):
    spec = small_spec(minilm_spec, lowercase=True)
    spec["model"]["vocab"] = {k.replace("##", "@@"): v for k, v in spec["model"]["vocab"].items()}
    spec["model"]["continuing_subword_prefix"] = "@@"
    spec["post_processor"] = {"type": "BertProcessing", "sep": ["[SEP]", spec["model"]["vocab"]["[SEP]"]],
                              "cls": ["[CLS]", spec["model"]["vocab"]["[CLS]"]]}
    folder = write_spec(tmp_path / "a", spec)
    texts = fuzz_texts(5, 500)
    assert_same_ids(texts, load_tokenizer(folder, 30), reference_tokenizer(folder / "tokenizer.json", 30))
    spec["normalizer"] = None
    spec["post_processor"] = None
    folder = write_spec(tmp_path / "b", spec)
    assert_same_ids(texts, load_tokenizer(folder, 30), reference_tokenizer(folder / "tokenizer.json", 30))


# ---------------------------------------------------------------------------------- vocab.txt (older checkpoints)
@pytest.mark.parametrize("config", [
    {"do_lower_case": True},
    {"do_lower_case": False},
    {"do_lower_case": False, "strip_accents": True, "tokenize_chinese_chars": False},
    None,  # no tokenizer_config.json: lowercase, as BertWordPieceTokenizer defaults
])
def test_vocab_txt_form(minilm_spec, tmp_path, config):
    spec = small_spec(minilm_spec, lowercase=False)
    tokens = sorted(spec["model"]["vocab"], key=spec["model"]["vocab"].get)
    # CRLF endings, trailing whitespace, a repeated token and an empty line, as read_file takes them
    # (U+001C is no whitespace to Rust: "the\x1c" is a token of its own)
    # (at the end, so that these lines are the last word on "the")
    lines = tokens[:50] + [""] + tokens[50:] + ["the  ", "the\u3000", "the\x1c"]
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "vocab.txt").write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-8"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    config = config or {}
    theirs = tokenizers.implementations.BertWordPieceTokenizer(
        str(folder / "vocab.txt"), lowercase=config.get("do_lower_case", True),
        strip_accents=config.get("strip_accents"), handle_chinese_chars=config.get("tokenize_chinese_chars", True))
    theirs = theirs._tokenizer
    theirs.enable_truncation(max_length=64)
    ours = load_tokenizer(folder, 64)
    assert isinstance(ours, WordPieceTokenizer)
    assert_same_ids(fuzz_texts(13, 600) + ["The theory THE the"], ours, theirs)


def test_vocab_txt_of_minilm_equals_its_tokenizer_json(minilm_dir, tmp_path, reference_dir):
    (tmp_path / "vocab.txt").write_bytes((minilm_dir / "vocab.txt").read_bytes())
    (tmp_path / "tokenizer_config.json").write_bytes((minilm_dir / "tokenizer_config.json").read_bytes())
    texts = fuzz_texts(17, 500) + json.loads((reference_dir / "minilm_sentences.json").read_text())["sentences"]
    assert load_tokenizer(tmp_path, 256).encode_batch(texts) == load_tokenizer(minilm_dir, 256).encode_batch(texts)


# ------------------------------------------------------------------------------ what it does not reproduce
def bpe_folder(tmp_path: Path) -> Path:
    """A byte-level BPE tokenizer.json written by `tokenizers` itself."""
    from tokenizers import models
    from tokenizers import pre_tokenizers as pt

    tok = tokenizers.Tokenizer(models.BPE({"a": 0, "b": 1, "ab": 2, "[UNK]": 3}, [("a", "b")], unk_token="[UNK]"))
    tok.pre_tokenizer = pt.Whitespace()
    folder = tmp_path / "bpe"
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_other_models_go_to_the_tokenizers_library(tmp_path):
    folder = bpe_folder(tmp_path)
    assert tokenizers_needed_for(folder) == "tokenizer.json uses model type BPE; pre_tokenizer Whitespace"
    tok = load_tokenizer(folder, 3)
    assert isinstance(tok, LibraryTokenizer)
    assert tok.encode_batch(["ab ab ab a", "b"]) == [[2, 2, 2], [1]]  # truncated to 3, no padding
    with pytest.raises(InputError, match=r"^text 1 has a lone surrogate at index 2; it is not valid Unicode$"):
        tok.encode_batch(["ok", "ab\ud800"])


def test_without_the_library_an_unsupported_file_is_an_error_naming_it(tmp_path):
    folder = bpe_folder(tmp_path)
    with pytest.raises(ModelConfigError) as info:
        load_tokenizer(folder, 8, library=lambda: None)
    assert str(info.value) == (
        f"{folder / 'tokenizer.json'}: uses model type BPE; pre_tokenizer Whitespace, which votive's own tokenizer "
        "does not reproduce; install the `tokenizers` library for it (pip install 'votive[tokenizers]')")


@pytest.mark.parametrize("change, problem", [
    (lambda s: s["model"].update(type="Unigram"), "model type Unigram"),
    (lambda s: s.update(normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]}),
     "normalizer Sequence [NFKC, Lowercase]"),
    (lambda s: s["normalizer"].update(extra=True),
     "a BertNormalizer with fields ['clean_text', 'extra', 'handle_chinese_chars', 'lowercase', 'strip_accents', "
     "'type']"),
    (lambda s: s.update(pre_tokenizer={"type": "Whitespace"}), "pre_tokenizer Whitespace"),
    (lambda s: s.update(pre_tokenizer=None), "pre_tokenizer None"),
    (lambda s: s.update(post_processor={"type": "RobertaProcessing"}), "post_processor RobertaProcessing"),
    (lambda s: s["post_processor"].update(single=[{"Sequence": {"id": "A", "type_id": 0}}] * 2),
     "a single-sequence template [{'Sequence': {'id': 'A', 'type_id': 0}}, {'Sequence': {'id': 'A', 'type_id': "
     "0}}] (expected one Sequence A)"),
    (lambda s: s["added_tokens"][3].update(single_word=True), "added token '[SEP]' with single_word"),
    (lambda s: s["model"].pop("max_input_chars_per_word"), "a WordPiece model without ['max_input_chars_per_word']"),
    (lambda s: s.update(version="2.0"), "format version '2.0'"),
])
def test_unsupported_parts_are_named(minilm_spec, tmp_path, change, problem):
    spec = copy.deepcopy(minilm_spec)
    change(spec)
    assert unsupported_features(spec) == [problem]
    folder = write_spec(tmp_path / "tok", spec)
    assert tokenizers_needed_for(folder) == f"tokenizer.json uses {problem}"
    with pytest.raises(ModelConfigError, match=f"uses {re.escape(problem)}, which votive"):
        load_tokenizer(folder, 8, library=lambda: None)
    with pytest.raises(ModelConfigError, match="which votive's own tokenizer does not reproduce"):
        WordPieceTokenizer.from_spec(spec, "x.json")


def test_minilm_needs_no_library(minilm_dir):
    assert unsupported_features(json.loads((minilm_dir / "tokenizer.json").read_text())) == []
    assert tokenizers_needed_for(minilm_dir) is None


# --------------------------------------------------------------------------------------------- bad input
def test_bad_texts_and_settings(minilm_dir, minilm_spec, tmp_path):
    ours = load_tokenizer(minilm_dir, 16)
    with pytest.raises(InputError, match=r"^text 1 has a lone surrogate at index 4; it is not valid Unicode$"):
        ours.encode_batch(["fine", "bad \udc80 text"])
    with pytest.raises(InputError, match=r"^text 0 is bytes, expected a string$"):
        ours.encode_batch([b"bytes"])
    with pytest.raises(ModelConfigError, match=r"max_length 1 leaves no room for the template's 2 special tokens"):
        load_tokenizer(minilm_dir, 1)
    spec = copy.deepcopy(minilm_spec)
    spec["model"]["unk_token"] = "<unk>"
    with pytest.raises(ModelConfigError, match=r"the unknown token '<unk>' is not in the vocabulary"):
        WordPieceTokenizer.from_spec(spec, "t.json")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelConfigError, match=r"tokenizer.json: cannot read JSON"):
        load_tokenizer(tmp_path, 8)
    with pytest.raises(ModelConfigError, match=r"no tokenizer.json or vocab.txt"):
        load_tokenizer(tmp_path / "nothing", 8)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "vocab.txt").write_text("[UNK]\n[CLS]\nword\n")
    with pytest.raises(ModelConfigError, match=r"the sep_token '\[SEP\]' is not in the vocabulary"):
        load_tokenizer(tmp_path / "old", 8)


def test_loading_minilm_imports_no_tokenizers_library(minilm_dir):
    code = ("import sys\nfrom pathlib import Path\nfrom votive.models.sentence_encoder import _load_tokenizer\n"
            f"tok = _load_tokenizer(Path({str(minilm_dir)!r}), 256)\n"
            "print(tok.encode_batch(['Hello, world!']), 'tokenizers' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[[101,", "7592,", "1010,", "2088,", "999,", "102]]", "False"]

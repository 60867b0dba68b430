"""GGUF tokenizers against llama.cpp's ids, and chat templates against hand-written expected prompts.

Independent answers: the reference files in shared/reference (llama-cpp-python 0.3.36 tokenizing and decoding the
real SmolLM2 and Gemma 3 files), ids pinned below from the same llama.cpp (`Llama(path, vocab_only=True)
.tokenize(text.encode(), add_bos=True, special=...)`), tiny hand-built vocabularies with merges worked out by
hand, and, when they are installed, llama-cpp-python itself and transformers' chat template renderer.
"""

from __future__ import annotations

import json
import random
import time
from datetime import datetime

import pytest

from votive.errors import ChatTemplateError, InputError, ModelConfigError
from votive.formats.gguf import GGUFFile
from votive.text.chat import BUILTIN_TEMPLATES, ChatTemplate
from votive.text.gguf_tokenizer import GGUFTokenizer, TokenizerSpec, TokenType

SPACE = "\u2581"


@pytest.fixture(scope="module")
def smollm(smollm_gguf) -> GGUFTokenizer:
    return GGUFTokenizer.from_gguf(GGUFFile(smollm_gguf))


@pytest.fixture(scope="module")
def gemma(gemma_gguf) -> GGUFTokenizer:
    return GGUFTokenizer.from_gguf(GGUFFile(gemma_gguf))


@pytest.fixture(scope="module")
def tokenizers(smollm, gemma) -> dict[str, GGUFTokenizer]:
    return {"smollm": smollm, "gemma": gemma}


def _records(reference_dir, name):
    file = {"smollm": "smollm2_135m_tokens.json", "gemma": "gemma3_270m_tokens.json"}[name]
    return json.loads((reference_dir / file).read_text())["records"]


# -- the reference files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["smollm", "gemma"])
def test_prompt_ids_equal_llama_cpp(name, tokenizers, reference_dir):
    tok = tokenizers[name]
    for record in _records(reference_dir, name):
        assert tok.encode(record["prompt"]) == record["prompt_token_ids"], record["prompt"]


@pytest.mark.parametrize("name", ["smollm", "gemma"])
def test_decoding_greedy_ids_gives_llama_cpp_text(name, tokenizers, reference_dir):
    tok = tokenizers[name]
    for record in _records(reference_dir, name):
        assert tok.decode(record["greedy_token_ids"]) == record["greedy_text"]


@pytest.mark.parametrize("name", ["smollm", "gemma"])
def test_streaming_the_greedy_ids_gives_the_same_text(name, tokenizers, reference_dir):
    tok = tokenizers[name]
    for record in _records(reference_dir, name):
        d = tok.stream_decoder()
        pieces = [d.push(i) for i in record["greedy_token_ids"]] + [d.flush()]
        assert "".join(pieces) == record["greedy_text"]


# -- ids pinned from llama.cpp ---------------------------------------------------------------------------------

TEXTS = {
    "unicode": "Crème brûlée, naïve façade: 日本語 и русский",
    "emoji": "I ❤️ 🦙s 👍🏽👨‍👩‍👧",
    "spaces": "a  b   c    d\t\te",
    "newlines": "line one\nline two\n\n\nend\r\n",
    "digits": "In 2024, 1234567 people paid $3.50 each",
    "leading_space": " leading and trailing ",
    "code": "def f(x):\n    return x**2  # square",
    "contractions": "don't you'll they've I'm",
    "special_chat": "<|im_start|>user\nHi<|im_end|>\n<start_of_turn>model\nHey<end_of_turn>",
    "byte_fallback": "x\U00010001y",  # Linear B: not in Gemma's vocabulary, so four <0xNN> tokens
    "crossing": "<x> </y>",  # Gemma's one token with an inner space, ">▁</", spans two words
    "empty": "",
}

# (text, parse_special) -> ids, with BOS as the file asks (SmolLM2: none; Gemma: 2)
PINNED = {
    "smollm": {
        ("unicode", True): [25711, 11180, 1558, 1156, 41307, 92, 20174, 28, 15486, 46494, 40852, 42, 17097, 241, 115,
                            40993, 179, 120, 248, 29972, 216, 9175, 14714, 9382, 39511, 7872, 24958],
        ("emoji", True): [57, 4636, 247, 114, 31752, 15107, 116, 243, 99, 15107, 235, 231, 10813, 233, 138, 10813, 235,
                          118, 321, 231, 10813, 235, 119, 321, 231, 10813, 235, 117],
        ("spaces", True): [81, 216, 278, 256, 265, 333, 287, 197, 197, 85],
        ("newlines", True): [1311, 582, 198, 1311, 827, 1116, 198, 486, 2738],
        ("digits", True): [788, 216, 34, 32, 34, 36, 28, 216, 33, 34, 35, 36, 37, 38, 39, 701, 5940, 1885, 35, 30, 37,
                           32, 971],
        ("leading_space", True): [2899, 284, 35079, 216],
        ("code", True): [1604, 275, 24, 104, 727, 472, 1003, 1792, 828, 34, 216, 907, 5222],
        ("contractions", True): [12420, 982, 346, 3060, 502, 3543, 339, 5248],
        ("special_chat", True): [1, 4093, 198, 26843, 2, 198, 44, 3738, 79, 1714, 79, 20589, 46, 3980, 198, 22234, 44,
                                 486, 79, 1714, 79, 20589, 46],
        ("special_chat", False): [44, 108, 306, 79, 3738, 108, 46, 4093, 198, 26843, 44, 108, 306, 79, 486, 108, 46,
                                  198, 44, 3738, 79, 1714, 79, 20589, 46, 3980, 198, 22234, 44, 486, 79, 1714, 79,
                                  20589, 46],
        ("byte_fallback", True): [104, 187, 234, 218, 219, 105],
        ("empty", True): [],
    },
    "gemma": {
        ("unicode", True): [2, 15760, 9809, 125501, 155666, 236764, 120362, 96008, 236787, 33375, 238582, 1079, 170362],
        ("emoji", True): [2, 236777, 64813, 236743, 478, 397, 404, 391, 236751, 103712, 242713, 243874, 237243, 243767,
                          237243, 244814],
        ("spaces", True): [2, 236746, 138, 236763, 139, 236755, 140, 236753, 255969, 236744],
        ("newlines", True): [2, 1257, 886, 107, 1257, 1156, 109, 643, 251, 107],
        ("digits", True): [2, 902, 236743, 236778, 236771, 236778, 236812, 236764, 236743, 236770, 236778, 236800,
                           236812, 236810, 236825, 236832, 1331, 6382, 609, 236800, 236761, 236810, 236771, 1546],
        ("leading_space", True): [2, 5830, 532, 45330, 236743],
        ("code", True): [2, 2063, 517, 236769, 236781, 1473, 107, 140, 2060, 1123, 1018, 236778, 138, 236865, 6281],
        ("contractions", True): [2, 13246, 236789, 236745, 611, 236789, 859, 901, 236789, 560, 564, 236789, 236757],
        ("special_chat", True): [2, 236820, 236909, 548, 236779, 3041, 111038, 2364, 107, 10979, 236820, 236909, 548,
                                 236779, 643, 111038, 107, 105, 4368, 107, 17531, 106],
        ("special_chat", False): [2, 236820, 236909, 548, 236779, 3041, 111038, 2364, 107, 10979, 236820, 236909, 548,
                                  236779, 643, 111038, 107, 236820, 3041, 236779, 1340, 236779, 887, 236813, 4368, 107,
                                  17531, 236820, 643, 236779, 1340, 236779, 887, 236813],
        ("byte_fallback", True): [2, 236781, 478, 382, 366, 367, 236762],
        ("crossing", True): [2, 236820, 236781, 107068, 236762, 236813],
        ("empty", True): [2],
    },
}  # fmt: skip


@pytest.mark.parametrize(
    "name, text, parse_special", [(n, t, p) for n, cases in PINNED.items() for (t, p) in cases], ids=str
)
def test_ids_equal_pinned_llama_cpp_ids(name, text, parse_special, tokenizers):
    assert tokenizers[name].encode(TEXTS[text], parse_special=parse_special) == PINNED[name][(text, parse_special)]


@pytest.mark.parametrize("name", ["smollm", "gemma"])
def test_plain_text_round_trips(name, tokenizers):
    tok = tokenizers[name]
    for key in ("unicode", "emoji", "spaces", "newlines", "digits", "leading_space", "code", "byte_fallback"):
        assert tok.decode(tok.encode(TEXTS[key], add_special=False)) == TEXTS[key]


def test_bos_follows_the_file(smollm, gemma):
    assert (smollm.add_bos, gemma.add_bos) == (False, True)  # SmolLM2 says add_bos_token false, Gemma true
    assert smollm.encode("Hi")[0] != smollm.bos_id
    assert gemma.encode("Hi")[0] == gemma.bos_id == 2
    assert gemma.encode("Hi", add_special=False)[0] != 2


def test_special_tokens_are_single_ids_only_when_parsed(smollm, gemma):
    assert gemma.encode("<start_of_turn>", add_special=False) == [105]
    assert 105 not in gemma.encode("<start_of_turn>", add_special=False, parse_special=False)
    assert smollm.encode("a<|im_start|>b", add_special=False) == [81, 1, 82]
    assert 1 not in smollm.encode("a<|im_start|>b", parse_special=False)
    # user-defined tokens (Gemma's whitespace runs and HTML tags) are cut out either way, as in llama.cpp
    assert gemma.encode("<table>", add_special=False, parse_special=False) == [gemma.vocab["<table>"]]


def test_control_tokens_print_only_when_asked(smollm, gemma):
    assert smollm.decode([1, 81, 2]) == "a"
    assert smollm.decode([1, 81, 2], special=True) == "<|im_start|>a<|im_end|>"
    assert gemma.decode([2, 105, 107]) == "\n"
    assert gemma.decode([2, 105], special=True) == "<bos><start_of_turn>"


def test_end_of_generation_ids(smollm, gemma):
    # as llama.cpp's llama_vocab_is_eog: EOS, end of turn, and SmolLM2's <|endoftext|> and <reponame>
    assert smollm.eog_ids == {0, 2, 4} and smollm.eos_id == 2
    assert gemma.eog_ids == {1, 106, 212} and gemma.eot_id == 106  # <eos>, <end_of_turn>, </s>
    assert gemma.is_eog(106) and not gemma.is_eog(105)
    assert gemma.eos_ids == gemma.eog_ids


def test_stream_decoder_holds_back_unfinished_characters(smollm, gemma):
    for tok in (smollm, gemma):
        ids = tok.encode(TEXTS["byte_fallback"], add_special=False)
        d = tok.stream_decoder()
        pieces = [d.push(i) for i in ids]
        assert "".join(pieces) + d.flush() == TEXTS["byte_fallback"]
        assert "" in pieces and all("\ufffd" not in p for p in pieces)
    d = gemma.stream_decoder()
    assert d.push(478) == "" and d.flush() == "\ufffd"  # <0xF0> alone: a character cut short


def test_tokenizing_a_prompt_takes_milliseconds(gemma, smollm, reference_dir):
    text = json.loads((reference_dir / "llm_bench_prompt.json").read_text())["base_text"] * 3  # ~300 tokens
    for tok in (gemma, smollm):
        fresh = GGUFTokenizer(tok.spec)  # empty word cache
        start = time.perf_counter()
        ids = fresh.encode(text)
        assert len(ids) > 250 and time.perf_counter() - start < 0.1


# -- merging rules on hand-built vocabularies -------------------------------------------------------------------


def _spm(tokens, scores, types=None, **kw):
    return GGUFTokenizer(TokenizerSpec(model="llama", tokens=tokens, scores=scores, token_types=types, **kw))


BYTES = [f"<0x{b:02X}>" for b in range(256)]


def test_sentencepiece_merges_by_score_not_position():
    # "abc": the bigrams are ab (score -5) and bc (-1), so bc merges first and leaves a + bc
    tokens = ["<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "▁"] + BYTES
    scores = [0, 0, 0, -10, -10, -10, -5, -1, -10] + [0] * 256
    types = [2, 3, 3] + [1] * 6 + [6] * 256
    assert _spm(tokens, scores, types, add_space_prefix=False).encode("abc", add_special=False) == [3, 7]
    assert _spm(tokens, scores, types, add_space_prefix=False).encode("abc") == [1, 3, 7]  # BOS: "llama" default
    scores[6] = -0.5  # now ab wins and leaves ab + c
    assert _spm(tokens, scores, types, add_space_prefix=False).encode("abc", add_special=False) == [6, 5]
    scores[6] = scores[7] = -1  # a tie goes to the leftmost pair
    assert _spm(tokens, scores, types, add_space_prefix=False).encode("abc", add_special=False) == [6, 5]
    # a merged piece keeps merging while its concatenation with a neighbour is a token
    tokens2, scores2 = tokens + ["abc"], scores + [-3]
    types2 = types + [1]
    assert _spm(tokens2, scores2, types2, add_space_prefix=False).encode("abc", add_special=False) == [265]


def test_sentencepiece_space_prefix_and_byte_fallback():
    tokens = ["<unk>", "<s>", "</s>", "▁", "h", "i", "▁h", "▁hi"] + BYTES
    scores = [0, 0, 0, -5, -5, -5, -2, -1] + [0] * 256
    types = [2, 3, 3] + [1] * 5 + [6] * 256
    tok = _spm(tokens, scores, types)  # add_space_prefix: the "llama" default, true
    assert tok.encode("hi hi", add_special=False) == [7, 7]
    assert tok.decode([7, 7]) == " hi hi"
    # "é" is no token: its two UTF-8 bytes 0xC3 0xA9 become <0xC3> <0xA9> (ids 8 + byte)
    assert tok.encode("é", add_special=False) == [3, 8 + 0xC3, 8 + 0xA9]
    assert tok.decode([8 + 0xC3, 8 + 0xA9]) == "é"
    no_prefix = _spm(tokens, scores, types, add_space_prefix=False)
    assert no_prefix.encode("hi", add_special=False) == [4, 5]


def test_sentencepiece_word_splitting_matches_merging_the_whole_text():
    # A token with an inner "▁" ("x▁y") can join two words; splitting at spaces must not lose it.
    tokens = ["<unk>", "<s>", "</s>", "▁", "x", "y", "z", "x▁", "x▁y", "▁y", "▁z", "zx"] + BYTES
    scores = [0, 0, 0, -9, -9, -9, -9, -3, -1, -4, -4, -2] + [0] * 256
    types = [2, 3, 3] + [1] * 9 + [6] * 256
    tok = _spm(tokens, scores, types, add_space_prefix=False)
    rng = random.Random(7)
    merger = tok._engine
    for _ in range(300):
        text = "".join(rng.choice("xyz ") for _ in range(rng.randrange(1, 12)))
        assert tok.encode(text, add_special=False) == merger._merge(text.replace(" ", SPACE)), text
    # By hand: x ▁ y -> x▁ (-3) beats ▁y (-4), then x▁ + y -> x▁y: one token across the space
    assert tok.encode("x y", add_special=False) == [8]
    # z x ▁ y -> zx (-2) first, which strands the x; then ▁y; "zx▁y" is no token
    assert tok.encode("zx y", add_special=False) == [11, 9]


def test_byte_level_bpe_with_hand_built_merges():
    # GPT-2 byte-to-unicode: " " prints as "Ġ"; merges apply best rank first within each pre-tokenized piece.
    tokens = ["<|endoftext|>", "a", "b", "Ġ", "1", "2", "ab", "Ġa", "Ġab", "12"]
    merges = ["Ġ a", "a b", "Ġa b", "1 2"]
    types = [3] + [1] * 9
    tok = GGUFTokenizer(TokenizerSpec(model="gpt2", tokens=tokens, merges=merges, pre="smollm", token_types=types))
    assert tok.encode("ab ab") == [6, 8]  # " ab": Ġ+a (rank 0), then Ġa+b
    swapped = ["a b", "Ġ a", "Ġa b", "1 2"]
    tok2 = GGUFTokenizer(TokenizerSpec(model="gpt2", tokens=tokens, merges=swapped, pre="smollm"))
    assert tok2.encode("ab ab") == [6, 3, 6]  # " ab": a+b (rank 0) first strands Ġ; there is no "Ġ ab" merge
    assert tok.encode("12") == [4, 5]  # "smollm" splits digits one by one, so "1 2" never applies
    assert tok.decode([6, 8, 0]) == "ab ab"
    gpt2 = GGUFTokenizer(TokenizerSpec(model="gpt2", tokens=tokens, merges=merges, pre="gpt-2"))
    assert gpt2.encode("12") == [9]


def test_merges_split_at_the_first_space_after_the_first_character():
    # llama.cpp's rule: a merge that starts with a space (a piece of one space) splits at the next one
    tokens = ["<|endoftext|>", " ", "a", " a", "b", " ab"]
    spec = TokenizerSpec(model="gpt2", tokens=tokens, merges=["  a", " a b"], pre="gpt-2")
    model = json.loads(GGUFTokenizer(spec)._engine._tokenizer.to_str())["model"]
    assert [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]] == [
        (" ", "a"), (" a", "b")]
    with pytest.raises(ModelConfigError, match=r"merge 1 is 'ab', expected 'left right'"):
        GGUFTokenizer(TokenizerSpec(model="gpt2", tokens=tokens, merges=["  a", "ab"], pre="gpt-2"))


# -- bad input and bad metadata ----------------------------------------------------------------------------------


def test_bad_input_is_an_input_error(gemma):
    with pytest.raises(InputError, match="must be a str, got bytes"):
        gemma.encode(b"hi")
    with pytest.raises(InputError, match="lone surrogate at index 1"):
        gemma.encode("a\ud800")
    with pytest.raises(InputError, match=r"token id 262144 is outside the vocabulary \(0..262143\)"):
        gemma.decode([5, 262144])
    with pytest.raises(InputError, match="must be integers"):
        gemma.decode(["x"])


GOOD = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "smollm", "tokenizer.ggml.tokens": ["a", "b", "ab"],
        "tokenizer.ggml.merges": ["a b"]}  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"tokenizer.ggml.model": "bert"}, "tokenizer.ggml.model is 'bert'; votive reads 'llama'"),
        ({"tokenizer.ggml.pre": "tekken"}, "tokenizer.ggml.pre is 'tekken'; votive knows the byte-level"),
        ({"tokenizer.ggml.pre": None}, "tokenizer.ggml.pre is missing"),
        ({"tokenizer.ggml.merges": None}, "needs tokenizer.ggml.merges, which is missing"),
        ({"tokenizer.ggml.merges": ["ab"]}, "merge 0 is 'ab', expected 'left right'"),
        ({"tokenizer.ggml.tokens": ["a", "b", "a"]}, "has duplicates, e.g. 'a'"),
        ({"tokenizer.ggml.tokens": []}, "tokenizer.ggml.tokens is empty"),
        ({"tokenizer.ggml.tokens": None}, "no tokenizer.ggml.tokens"),
        ({"tokenizer.ggml.tokens": ["a", 7]}, r"tokenizer.ggml.tokens\[1\] is int, expected a string"),
        ({"tokenizer.ggml.eos_token_id": 3}, "eos_token_id is 3, outside the 3-token vocabulary"),
        ({"tokenizer.ggml.bos_token_id": "1"}, "bos_token_id is '1', expected an integer"),
        ({"tokenizer.ggml.add_bos_token": True}, "add_bos_token is true but tokenizer.ggml.bos_token_id is not set"),
        ({"tokenizer.ggml.add_bos_token": 1}, "add_bos_token is 1, expected true or false"),
        ({"tokenizer.ggml.token_type": [1]}, "token_type has 1 entries for 3 tokens"),
        ({"tokenizer.ggml.scores": 0.5}, "scores is float, expected an array"),
    ],
)
def test_bad_metadata_is_a_model_config_error(change, message):
    metadata = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with pytest.raises(ModelConfigError, match=message) as e:
        GGUFTokenizer.from_metadata(metadata, source="m.gguf")
    assert str(e.value).startswith("m.gguf: ")


def test_good_metadata_builds():
    tok = GGUFTokenizer.from_metadata(GOOD)
    assert tok.encode("ab") == [2] and tok.add_bos is False and tok.bos_id is None  # gpt2 default 11 is out of range


# -- chat templates ---------------------------------------------------------------------------------------------

CHAT = [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]


def test_smollm_file_template(smollm):
    # The file's template: no system message -> its default one; each message <|im_start|>role\n...<|im_end|>\n
    assert smollm.render_chat(CHAT) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
        "<|im_start|>assistant\n4.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    system = [{"role": "system", "content": "Be brief."}, CHAT[0]]
    assert smollm.render_chat(system, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n"
    )


def test_gemma_has_no_file_template_and_gets_the_builtin(gemma):
    assert "tokenizer.chat_template" not in GGUFFile(gemma.spec.source).metadata
    assert gemma.chat_template_source == BUILTIN_TEMPLATES["gemma"]
    assert gemma.render_chat(CHAT) == (
        "<bos><start_of_turn>user\nWhat is 2+2?<end_of_turn>\n"
        "<start_of_turn>model\n4.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    parts = [{"type": "text", "text": " Hi "}]
    system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": parts}]
    assert gemma.render_chat(system) == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )


def test_chat_ids_have_one_bos_and_parsed_turn_markers(gemma, smollm):
    ids = gemma.encode_chat(CHAT[:1])
    assert ids[:2] == [2, 105] and ids.count(2) == 1  # the template's "<bos>" is not doubled
    assert ids[-3:] == [105, 4368, 107]  # <start_of_turn> model \n
    # llama.cpp's ids for the rendered prompt (SmolLM2 adds no BOS)
    assert smollm.encode_chat(CHAT[:1]) == [
        1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2,
        198, 1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198, 1, 520, 9531, 198,
    ]  # fmt: skip


def test_template_refusal_is_a_chat_template_error(gemma):
    with pytest.raises(ChatTemplateError, match="refused the messages: Gemma chats alternate") as e:
        gemma.render_chat([{"role": "assistant", "content": "hi"}])
    assert e.value.template_message.endswith("turn 1 is assistant")
    assert isinstance(e.value, InputError)  # a bad request, for the handlers


def test_template_failures_and_bad_messages():
    t = ChatTemplate("{{ messages[0]['content'] + 1 }}")
    with pytest.raises(ChatTemplateError, match="failed on these messages: TypeError"):
        t.render([{"role": "user", "content": "x"}])
    with pytest.raises(ChatTemplateError, match="SecurityError"):  # the sandbox holds
        ChatTemplate("{{ messages.__class__.__mro__ }}").render([{"role": "user", "content": "x"}])
    with pytest.raises(InputError, match=r"messages\[1\] needs a string 'role'"):
        t.render([{"role": "user", "content": "x"}, {"content": "y"}])
    with pytest.raises(InputError, match="messages must be a list"):
        t.render("hello")
    with pytest.raises(ModelConfigError, match="not valid Jinja"):
        ChatTemplate("{% for %}").render([])


def test_template_environment_matches_transformers():
    t = ChatTemplate(
        "{{ messages | tojson }}|{{ strftime_now('%Y-%m-%d') }}|{{ bos_token }}{{ eos_token }}"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{{ m.role }}{% endfor %}",
        bos_token="<s>",
        eos_token="</s>",
        now=lambda: datetime(2026, 1, 2),
    )
    messages = [{"role": "user", "content": "<é>"}, {"role": "bot", "content": ""}]
    assert t.render(messages) == (
        '[{"role": "user", "content": "<é>"}, {"role": "bot", "content": ""}]|2026-01-02|<s></s>user'
    )


def test_missing_template_without_known_markers():
    tok = GGUFTokenizer.from_metadata(GOOD, source="m.gguf")
    with pytest.raises(ModelConfigError, match="m.gguf: no tokenizer.chat_template and no built-in template fits"):
        tok.render_chat(CHAT)


def test_chatml_builtin():
    assert ChatTemplate(BUILTIN_TEMPLATES["chatml"]).render(CHAT, add_generation_prompt=False) == (
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n4.<|im_end|>\n"
    )


# -- live cross-checks, when the independent implementations are installed ------------------------------------------


@pytest.mark.parametrize("name", ["smollm", "gemma"])
def test_random_texts_against_llama_cpp(name, tokenizers, smollm_gguf, gemma_gguf):
    llama_cpp = pytest.importorskip("llama_cpp")
    tok = tokenizers[name]
    ref = llama_cpp.Llama(str(smollm_gguf if name == "smollm" else gemma_gguf), vocab_only=True, verbose=False)
    atoms = [" ", "  ", "\n", "\n\n", "\t", "\r\n", "the", " the", "'s", "don't", "7", "42", "3.5", ",", "!", "<",
             ">", "</", "é", "日本", "한", "😀", "👍🏽", "\u200d", "\u00a0", "\x00", "<start_of_turn>", "<end_of_turn>",
             "<bos>", "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<table>", "</s>", "<0x41>", SPACE]  # fmt: skip
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randrange(1, 20)
        text = "".join(rng.choice(atoms) if rng.random() < 0.7 else chr(rng.randrange(0x20, 0x2FFF)) for _ in range(n))
        for special in (True, False):
            expected = ref.tokenize(text.encode(), add_bos=True, special=special)
            assert tok.encode(text, parse_special=special) == expected, (text, special)


@pytest.mark.parametrize("name", ["smollm", "gemma"])
def test_rendering_matches_transformers(name, tokenizers):
    pytest.importorskip("transformers")
    from transformers.utils.chat_template_utils import render_jinja_template

    tok = tokenizers[name]
    for messages in (CHAT, [{"role": "system", "content": "S"}, CHAT[0]]):
        for prompt in (True, False):
            (theirs,), _ = render_jinja_template(
                [messages],
                chat_template=tok.chat_template_source,
                add_generation_prompt=prompt,
                bos_token=tok.chat_template.bos_token,
                eos_token=tok.chat_template.eos_token,
            )
            assert tok.render_chat(messages, add_generation_prompt=prompt) == theirs


def test_token_types_are_read(gemma):
    assert gemma.token_types[238] == TokenType.BYTE and gemma.token_types[107] == TokenType.USER_DEFINED


@pytest.mark.parametrize("pre", ["gpt-2", "starcoder", "llama-bpe", "qwen2"])
def test_other_pre_tokenizers_against_llama_cpp(pre, smollm, tmp_path):
    """SmolLM2's vocabulary under other pre-tokenizer names, written to a tensorless GGUF llama.cpp can load."""
    llama_cpp = pytest.importorskip("llama_cpp")
    gguf = pytest.importorskip("gguf")
    path = str(tmp_path / f"{pre}.gguf")
    w = gguf.GGUFWriter(path, "llama")
    for add, value in [("context_length", 64), ("embedding_length", 8), ("block_count", 1), ("head_count", 1),
                       ("feed_forward_length", 8), ("head_count_kv", 1), ("rope_dimension_count", 8)]:  # fmt: skip
        getattr(w, f"add_{add}")(value)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(smollm.tokens)
    w.add_token_types([int(t) for t in smollm.spec.token_types])
    w.add_token_merges(smollm.spec.merges)
    w.add_bos_token_id(1)
    w.add_add_bos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ref = llama_cpp.Llama(path, vocab_only=True, verbose=False)
    ours = GGUFTokenizer.from_gguf(GGUFFile(path))
    atoms = [" ", "  ", "   ", "\n", "\n\n", " \n", "\t", "\r\n", "the", " The", "'s", "'S", "'LL", "7", "42", "12345",
             ",", "?!", "<", "é", "日本", "😀", "👍🏽", "\u00a0", "\u3000", "\u0301", "<|im_start|>"]  # fmt: skip
    rng = random.Random(pre)
    for _ in range(200):
        n = rng.randrange(1, 20)
        text = "".join(rng.choice(atoms) if rng.random() < 0.75 else chr(rng.randrange(0x20, 0x3000)) for _ in range(n))
        assert ours.encode(text) == ref.tokenize(text.encode(), add_bos=True, special=True), text


def test_a_byte_level_vocabulary_without_the_tokenizers_library_says_what_to_install(smollm_gguf, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed: importing it raises ImportError
    with pytest.raises(ModelConfigError, match=r"needs the `tokenizers` library: pip install 'votive\[tokenizers\]'"):
        GGUFTokenizer.from_gguf(GGUFFile(smollm_gguf))

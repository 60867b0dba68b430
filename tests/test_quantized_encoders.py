"""Quantized encoders and BERT GGUF embedding files, on the real all-MiniLM-L6-v2 (the `minilm_dir` fixture).

- `votive.load(folder, quantize="q8_0")`: the six matrices of each layer quantized at load and multiplied by
  votive's C kernels; held to sentence-transformers' embeddings (tests/data/reference, made by
  sentence-transformers, not by votive) at a cosine of at least 0.999 per sentence (measured: min 0.99957, mean
  0.99969). The float path is test_bert.py's, unchanged.
- `votive convert FOLDER --to x.gguf --type f32|f16|q8_0` writes llama.cpp's `bert` layout; llama.cpp itself
  (llama-cpp-python 0.3.36, the dev extras' pin) reads the file, tokenizes to the same ids as votive's GGUF
  WordPiece, and embeds to within a cosine of 0.9999 of votive (f32 / f16; measured min 0.999999: llama.cpp's
  tanh GELU against BERT's exact one) and 0.999 (q8_0; measured min 0.99986).
- `votive build lambda FOLDER --quantize q8_0` packs that GGUF for the embeddings handler.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_packaging_units import FakeToolchain

import votive
from votive.backends.numpy_linears import QuantLinear
from votive.builders.gguf_convert import convert_folder
from votive.builders.lambda_build import LambdaTarget, build_lambda
from votive.errors import InputError, ModelConfigError
from votive.formats.gguf import GGUFFile
from votive.formats.gguf_write import write_gguf
from votive.quant.ggml_types import GGMLType
from votive.text.gguf_wordpiece import GGUFWordPiece

# Texts where llama.cpp's WordPiece differs from Hugging Face's or is easy to get wrong: accents precomposed and
# combining, a spacing mark (Devanagari), an enclosing mark, CJK, control and format characters, specials written
# in the text, a long word, İ whose full lowercase is two code points.
TRICKY = ["Café résumé naïve", "Hello, WORLD!!  ünïcödé 東京 test", "[CLS] special [SEP] text", "a\u0301 combining",
          "ab\u0301c", "\u0915\u093f\u0924\u093e\u092c", "a\u20dd b", "tab\tnew\nline", "emoji 😀 ok",
          "İstanbul ß ﬁ Ω ½ ℌ", "\u200b a\u00adb \ufeffc", "x" * 300, "", "   "]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def reference(reference_dir):
    sentences = json.loads((reference_dir / "minilm_sentences.json").read_text())
    sentences = sentences["sentences"] if isinstance(sentences, dict) else sentences
    return sentences, np.load(reference_dir / "minilm_embeddings.npy")


@pytest.fixture(scope="module")
def ggufs(minilm_dir, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("gguf")
    return {t: convert_folder(minilm_dir, out / f"minilm.{t}.gguf", t).path for t in ("f32", "f16", "q8_0")}


# ------------------------------------------------------------------------------------- quantized at load
def test_q8_0_at_load_quantizes_the_layer_matrices_and_stays_within_0_999_of_sentence_transformers(
        minilm_dir, reference):
    sentences, expected = reference
    model = votive.load(str(minilm_dir), backend="numpy", quantize="q8_0")
    layer = model.model.layers[0].w
    for name in ("wq", "wk", "wv", "wo", "w_up", "w_down"):
        assert isinstance(layer[name], QuantLinear) and layer[name].ggml_type == GGMLType.Q8_0, name
    assert isinstance(layer["bq"], np.ndarray) and isinstance(model.model.w["tok_embed"], np.ndarray)
    got = model.embed(sentences)
    cos = _cosines(got, expected)
    assert cos.min() >= 0.999, cos
    assert not np.allclose(got, expected, atol=1e-6)  # quantized for real: not the float path's numbers
    # a batch of several sentences (B*T rows through one kernel call) gives each sentence's own embedding
    np.testing.assert_allclose(model.embed(sentences[:1]), got[:1], atol=1e-5)


def test_encoders_refuse_a_decoders_mixture_and_a_gguf_is_served_as_stored(minilm_dir, ggufs):
    with pytest.raises(InputError, match=r"quantize='q4_k_m' is llama.cpp's mixture for decoders; a BERT encoder"):
        votive.load(str(minilm_dir), backend="numpy", quantize="q4_k_m")
    with pytest.raises(InputError, match=r"quantize='q8_0' applies to Hugging Face folders \(safetensors\) of "
                                         r"decoders and embedding encoders only; a GGUF file is served as stored"):
        votive.load(str(ggufs["f32"]), backend="numpy", quantize="q8_0")


# ---------------------------------------------------------------------------------------------- BERT GGUF
def test_the_converted_gguf_has_llama_cpps_bert_layout(ggufs, minilm_dir):
    f = GGUFFile(ggufs["q8_0"])
    assert f.architecture == "bert"
    assert {k: f.get(k) for k in ("bert.block_count", "bert.embedding_length", "bert.feed_forward_length",
                                  "bert.attention.head_count", "bert.context_length", "bert.pooling_type",
                                  "bert.attention.causal", "tokenizer.ggml.model", "tokenizer.ggml.bos_token_id",
                                  "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.unknown_token_id")} == {
        "bert.block_count": 6, "bert.embedding_length": 384, "bert.feed_forward_length": 1536,
        "bert.attention.head_count": 12, "bert.context_length": 512, "bert.pooling_type": 1,
        "bert.attention.causal": False, "tokenizer.ggml.model": "bert", "tokenizer.ggml.bos_token_id": 101,
        "tokenizer.ggml.seperator_token_id": 102, "tokenizer.ggml.unknown_token_id": 100}
    tokens = f.get("tokenizer.ggml.tokens")
    assert (tokens[101], tokens[1037], tokens[2015]) == ("[CLS]", "\u2581a", "s")  # "a" starts a word, "##s" goes on
    types = {name: info.ggml_type.name for name, info in f.tensors.items()}
    assert (types["token_embd.weight"], types["position_embd.weight"], types["token_types.weight"]) == (
        "Q8_0", "F32", "F32")
    assert types["blk.5.ffn_down.weight"] == "Q8_0" and types["blk.0.attn_q.bias"] == "F32"
    assert len(types) == 5 + 6 * 16
    sizes = {t: p.stat().st_size for t, p in ggufs.items()}
    assert sizes["q8_0"] < 0.3 * (minilm_dir / "model.safetensors").stat().st_size < sizes["f16"] < sizes["f32"]


@pytest.mark.parametrize("kind", ["f32", "f16", "q8_0"])
def test_a_gguf_embeds_like_sentence_transformers(ggufs, reference, kind):
    """Independent of llama.cpp: the GGUF's pooled vectors point where sentence-transformers' (normalized) do."""
    sentences, expected = reference
    model = votive.load(str(ggufs[kind]), backend="numpy")
    assert model.normalized is False and model.dim == 384
    cos = _cosines(model.embed(sentences), expected)
    assert cos.min() >= (0.9999 if kind != "q8_0" else 0.999), cos


@pytest.fixture(scope="module")
def llama_cpp_embedder():
    llama_cpp = pytest.importorskip("llama_cpp")

    def open_(path):
        return llama_cpp.Llama(str(path), embedding=True, n_ctx=512, n_batch=512, n_ubatch=512, n_threads=2,
                               verbose=False)

    return open_


def test_gguf_wordpiece_gives_llama_cpps_ids(ggufs, reference, llama_cpp_embedder):
    llm = llama_cpp_embedder(ggufs["f16"])
    tokenizer = GGUFWordPiece.from_gguf(GGUFFile(ggufs["f16"]), 512)
    for text in reference[0] + TRICKY:
        assert tokenizer.encode_batch([text])[0] == llm.tokenize(text.encode(), add_bos=True, special=False), text


@pytest.mark.parametrize("kind, floor, rtol", [("f32", 0.9999, 1e-3), ("f16", 0.9999, 1e-3), ("q8_0", 0.999, 5e-3)])
def test_a_gguf_embeds_as_llama_cpp_does_unnormalized(ggufs, reference, llama_cpp_embedder, kind, floor, rtol):
    sentences = reference[0]
    expected = np.asarray(llama_cpp_embedder(ggufs[kind]).embed(sentences), np.float32)  # normalize=False default
    got = votive.load(str(ggufs[kind]), backend="numpy").embed(sentences)
    assert _cosines(got, expected).min() >= floor
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), np.linalg.norm(expected, axis=1), rtol=rtol)


def test_gguf_pooling_other_than_mean_or_cls_is_refused(ggufs, tmp_path):
    f = GGUFFile(ggufs["f32"])
    metadata = {**f.metadata, "bert.pooling_type": 0}
    tensors = {name: f[name] for name in f.tensors}
    path = write_gguf(tmp_path / "none.gguf", metadata, tensors, metadata_types=dict(f.metadata_types))
    with pytest.raises(ModelConfigError, match=r"bert.pooling_type is 0; votive embeds with MEAN \(1\) or CLS"):
        votive.load(str(path), backend="numpy")


# ------------------------------------------------------------------------------------------------- builds
def test_build_lambda_quantize_packs_the_bert_gguf_for_the_embeddings_handler(minilm_dir, reference, tmp_path):
    result = build_lambda(str(minilm_dir), tmp_path / "out", LambdaTarget(python="3.11", quantize="q8_0"),
                          tools=FakeToolchain().tools())
    quantized = result.manifest["weights"]["quantized"]
    gguf = quantized["to"]["file"]
    assert quantized["architecture"] == "bert" and gguf.endswith(".q8_0.gguf")
    assert quantized["to"]["bytes"] < 0.3 * quantized["from"]["safetensors_bytes"]
    zips = [p for p in (tmp_path / "out").iterdir() if p.name.startswith("votive-model-")]
    with zipfile.ZipFile(zips[0]) as zf:
        assert zf.namelist() == [f"model/{gguf}"]
        zf.extractall(tmp_path)
    with zipfile.ZipFile(tmp_path / "out" / "votive-function.zip") as zf:
        config = json.loads(zf.read("votive_function.json"))
    assert config["handler"] == "votive.handlers.embeddings.handler"
    layer = result.manifest["runtime_layer"]
    assert layer["left_out"]["tokenizers"] == "its GGUF vocabulary ('bert') is run by votive.text.gguf_wordpiece"
    runtime = next(p for p in (tmp_path / "out").iterdir() if p.name.startswith("votive-runtime-"))
    with zipfile.ZipFile(runtime) as zf:
        assert "python/votive/text/gguf_wordpiece.py" in zf.namelist()
    cos = _cosines(votive.load(str(tmp_path / "model" / gguf), backend="numpy").embed(reference[0]), reference[1])
    assert cos.min() >= 0.999


def test_votive_convert_writes_an_encoder_gguf(minilm_dir, tmp_path, capsys):
    from votive.cli import main

    assert main(["convert", str(minilm_dir), "--to", str(tmp_path / "m.gguf"), "--type", "f16"]) == 0
    assert "(bert, f16)" in capsys.readouterr().err
    assert GGUFFile(tmp_path / "m.gguf").tensors["blk.0.attn_q.weight"].ggml_type == GGMLType.F16
    with pytest.raises(InputError, match=r"--type q4_k_m is a llama.cpp mixture for decoders; a BERT encoder"):
        convert_folder(minilm_dir, tmp_path / "x.gguf", "q4_k_m")

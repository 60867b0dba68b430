"""`votive build lambda FOLDER --quantize q8_0`: a Hugging Face decoder folder shipped as one converted GGUF file.

The folder is test_convert.py's qwen3 (random BF16 weights in two shards, merges added by `_with_merges`), built
with test_packaging_units.py's fake toolchain. qwen3 keeps HF's Q/K row order in the GGUF (no permutation), and
Q8_0 quantizes the same blocks at load and at conversion, so the packed file's logits equal
`votive.load(folder, quantize="q8_0")`'s bit for bit (test_convert.py's module docstring).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from test_convert import PROMPT, _with_merges, hf_folders
from test_packaging_units import FakeToolchain, fake_model

import votive
from votive.builders.lambda_build import LambdaTarget, build_lambda
from votive.builders.report import lambda_summary
from votive.cli import main
from votive.errors import InputError

MODEL_ZIP = "votive-model-qwen3.zip"
GGUF = "qwen3.q8_0.gguf"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _with_merges(hf_folders.SPECS["qwen3"], tmp_path_factory.mktemp("hf") / "qwen3")


@pytest.fixture(scope="module")
def built(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "out"
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = build_lambda(str(folder), out, LambdaTarget(python="3.11", quantize="q8_0"),
                          tools=FakeToolchain().tools())
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # the user's folder is left as it was
    return result


def test_the_model_layer_holds_the_gguf_alone_and_the_function_points_at_it(built):
    with zipfile.ZipFile(built.out / MODEL_ZIP) as zf:
        assert zf.namelist() == [f"model/{GGUF}"]
    with zipfile.ZipFile(built.out / "votive-function.zip") as zf:
        config = json.loads(zf.read("votive_function.json"))
    assert config["model"] == {"placement": "layer", "path": f"/opt/model/{GGUF}"}
    assert config["handler"] == "votive.handlers.generation.handler"
    assert not (built.out / ".work").exists()
    # the GGUF's vocabulary is "gpt2": byte-level BPE merges, run by the tokenizers library
    assert "tokenizers" in built.manifest["runtime_layer"]["dependencies"]


def test_the_packed_gguf_gives_the_folders_q8_0_logits_bit_for_bit(built, folder, tmp_path):
    with zipfile.ZipFile(built.out / MODEL_ZIP) as zf:
        zf.extractall(tmp_path)
    packed = votive.load(str(tmp_path / "model" / GGUF), backend="numpy").logits(PROMPT)
    loaded = votive.load(str(folder), backend="numpy", quantize="q8_0").logits(PROMPT)
    np.testing.assert_array_equal(packed, loaded)


def test_manifest_and_summary_say_what_quantizing_saved(built, folder):
    weights = built.manifest["weights"]
    quantized = weights["quantized"]
    with zipfile.ZipFile(built.out / MODEL_ZIP) as zf:
        gguf_bytes = zf.getinfo(f"model/{GGUF}").file_size
    folder_files = sorted(p.name for p in folder.iterdir())
    assert quantized["type"] == "q8_0" and quantized["architecture"] == "qwen3"
    assert quantized["from"]["files"] == folder_files  # both shards, their index, configs, tokenizer
    assert quantized["from"]["bytes"] == sum((folder / name).stat().st_size for name in folder_files)
    assert quantized["from"]["safetensors_bytes"] == sum(
        (folder / name).stat().st_size for name in folder_files if name.endswith(".safetensors"))
    assert quantized["to"]["file"] == GGUF and quantized["fallbacks"] == {}
    assert weights["files"] == [{"name": GGUF, "size": gguf_bytes}] and weights["bytes"] == gguf_bytes
    assert gguf_bytes < quantized["from"]["safetensors_bytes"]  # BF16 -> Q8_0: 34 bytes per 32 weights, not 64
    before = quantized["from"]["bytes"]
    text = lambda_summary(built.manifest, built.out)
    assert (f"  quantized: q8_0, {len(folder_files)} files {before:,} bytes -> {GGUF} {gguf_bytes:,} bytes "
            f"(saved {before - gguf_bytes:,} bytes, {100 * (before - gguf_bytes) / before:.0f}%)") in text


def test_an_s3_build_stages_the_gguf_alone(folder, tmp_path):
    result = build_lambda(str(folder), tmp_path / "out", LambdaTarget(python="3.11", weights="s3", quantize="q8_0"),
                          tools=FakeToolchain().tools())
    assert [p.name for p in (tmp_path / "out" / "s3").iterdir()] == [GGUF]
    assert [f["name"] for f in result.manifest["weights"]["files"]] == [GGUF]
    assert result.manifest["weights"]["quantized"]["to"]["file"] == GGUF


# ------------------------------------------------------------------------------------------------------ refusals
def test_q4_k_m_build_packs_the_folders_q4_k_m_blocks(folder, tmp_path):
    """llama.cpp's Q4_K_M mixture (tests/test_q4_k_m.py holds it to llama.cpp's bytes): the packed file's logits
    equal votive.load(folder, quantize="q4_k_m")'s bit for bit."""
    result = build_lambda(str(folder), tmp_path / "out", LambdaTarget(python="3.11", quantize="q4_k_m"),
                          tools=FakeToolchain().tools())
    gguf = "qwen3.q4_k_m.gguf"
    with zipfile.ZipFile(tmp_path / "out" / MODEL_ZIP) as zf:
        assert zf.namelist() == [f"model/{gguf}"]
        zf.extractall(tmp_path)
    quantized = result.manifest["weights"]["quantized"]
    assert quantized["type"] == "q4_k_m" and quantized["to"]["file"] == gguf
    # hidden_size 64: no row is whole 256-element blocks, every matrix takes llama.cpp's fallback
    assert set(quantized["fallbacks"].values()) == {"Q5_0", "Q8_0"}
    packed = votive.load(str(tmp_path / "model" / gguf), backend="numpy").logits(PROMPT)
    loaded = votive.load(str(folder), backend="numpy", quantize="q4_k_m").logits(PROMPT)
    np.testing.assert_array_equal(packed, loaded)


@pytest.mark.parametrize("family", ["phi3", "gemma3"])
def test_q4_k_m_build_of_phi3_and_gemma3(family, tmp_path):
    """phi3 (fused attn_qkv and gate/up) and gemma3 (tied embedding) take llama.cpp's Q4_K_M rules as well
    (tests/test_q4_k_m.py holds them to llama.cpp's bytes); 64 positions, so phi3's longrope is the same in both."""
    name = "tiny-phi" if family == "phi3" else family  # a general.name with "phi3" gets Phi-3's SPM attributes
    folder = _with_merges(hf_folders.SPECS[family], tmp_path / name)
    result = build_lambda(str(folder), tmp_path / "out", LambdaTarget(python="3.11", quantize="q4_k_m"),
                          tools=FakeToolchain().tools())
    quantized = result.manifest["weights"]["quantized"]
    assert quantized["architecture"] == family and quantized["to"]["file"] == f"{name}.q4_k_m.gguf"
    with zipfile.ZipFile(tmp_path / "out" / f"votive-model-{name}.zip") as zf:
        zf.extractall(tmp_path)
    packed = votive.load(str(tmp_path / "model" / f"{name}.q4_k_m.gguf"), backend="numpy", n_ctx=64).logits(PROMPT)
    loaded = votive.load(str(folder), backend="numpy", n_ctx=64, quantize="q4_k_m").logits(PROMPT)
    np.testing.assert_array_equal(packed, loaded)


def test_a_bad_type_a_gguf_and_an_encoder_are_refused_before_any_work(folder, built, tmp_path):
    fake = FakeToolchain()
    with pytest.raises(InputError, match=r"^--quantize 'q4_0' is not a choice \(choices: f32, f16, q8_0, q4_k_m\)"):
        build_lambda(str(folder), tmp_path / "a", LambdaTarget(quantize="q4_0"), tools=fake.tools())
    gguf = built.out / MODEL_ZIP  # any .gguf will do: extract the built one
    with zipfile.ZipFile(gguf) as zf:
        zf.extractall(tmp_path)
    with pytest.raises(InputError, match=rf"^--quantize q8_0: .* is a GGUF file \({GGUF}\), already converted"):
        build_lambda(str(tmp_path / "model" / GGUF), tmp_path / "a", LambdaTarget(quantize="q8_0"),
                     tools=fake.tools())
    encoder = fake_model(tmp_path / "tiny-bert", 1000)
    with pytest.raises(InputError, match=r"^--quantize q8_0: .*tiny-bert is an encoder model that is not BERT "
                                         r"\(config.json model_type 'bert'\); --quantize converts decoder folders"):
        build_lambda(str(encoder), tmp_path / "a", LambdaTarget(quantize="q8_0"), tools=fake.tools())
    assert fake.calls == [] and not (tmp_path / "a").exists()


@pytest.mark.parametrize("args, message", [
    (["lambda", "--quantize", "q4_0"], "votive: error: --quantize 'q4_0' is not a choice (choices: f32, f16, q8_0, "
                                       "q4_k_m)"),
    (["image", "--quantize", "q8_0"], "votive: error: --quantize is supported by `votive build lambda` only, not "
                                      "image: convert first (votive convert FOLDER --to model.gguf --type q8_0)"),
    (["modal", "--quantize", "q8_0"], "votive: error: --quantize is supported by `votive build lambda` only, not "
                                      "modal"),
])
def test_cli_refusals_are_one_line_and_exit_2(folder, tmp_path, capsys, args, message):
    target, *flags = args
    assert main(["build", target, str(folder), "--out", str(tmp_path / "out"), *flags]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message)
    assert not (tmp_path / "out").exists()

"""`votive convert`: Hugging Face decoder folders written as GGUF files, run by llama.cpp and by votive.

The folders are tests/data/hf_reference/hf_folders.py's (random weights, numpy only) with a few merges added to
their byte-level BPE (`_with_merges`): a "gpt2" GGUF vocabulary without merges is refused by votive's GGUF
tokenizer (votive/text/byte_level_bpe.py), and llama.cpp's converter would write whatever merges tokenizer.json
holds. The vocabulary grows by the merged tokens, so the weights are drawn for that vocab_size.

What is checked:
- llama.cpp loads each converted file, and its logits after a prompt equal votive's on the same Q8_0 file bit
  for bit (x86): the file is read the same way by both stacks. F32 files agree to FLOAT32_TOL only: votive's
  F32 product sums in another order than llama.cpp's (a backend matter, not the file's);
- votive's logits from the file are close to votive's from the folder. They are not equal for `llama`: the
  converter permutes Q / K rows for adjacent-pair RoPE, where votive runs the folder with NEOX RoPE on HF's rows,
  so each q.k sum adds the same products in another order (a few float32 roundings, ~1e-7 relative). For qwen2 /
  qwen3 (no permutation) the F32 file gives the folder's logits bit for bit, the folder's F16 / BF16 matrices
  widened exactly either way. Q8_0 files are compared with the folder quantized at load (`quantize="q8_0"`):
  the same blocks, since the permutation moves whole rows. F16 files round BF16 / F32 weights to half
  (2^-11 relative), hence F16_TOL;
- the file's tokenizer gives the folder's ids for a text, in llama.cpp and in votive;
- refusals name what is wrong, and the CLI prints them on one line with exit code 2.
"""

from __future__ import annotations

import importlib.util
import json
import platform
from pathlib import Path

import numpy as np
import pytest

from votive.builders.gguf_convert import convert_folder, permute_qk
from votive.cli import main
from votive.errors import ModelConfigError
from votive.formats.gguf import GGUFFile
from votive.models import load_model
from votive.models.hf_checkpoint import HFConfig

DATA = Path(__file__).parent / "data" / "hf_reference"
PROMPT = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100]  # "Hello, world" as byte tokens
FAMILIES = ["llama", "qwen2", "qwen3", "phi3", "gemma3"]
FLOAT32_TOL = 1e-5  # relative to the largest |logit|: summation order only (module docstring)
F16_TOL = 2e-2  # weights rounded to half: ~2^-11 relative per weight, through two or three layers
TEXT = "Hello world, hello <|im_end|> He"
# Merges added to each folder's tokenizer: (left, right), GPT-2's byte characters ("Ġ" is the space).
MERGES = [("H", "e"), ("l", "l"), ("ll", "o"), ("Ġ", "w"), ("Ġw", "o"), ("He", "llo")]

X86_ONLY = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason=f"bit-exact parity with llama.cpp holds on x86 only (this is {platform.machine()})")


def _hf_folders():
    spec = importlib.util.spec_from_file_location("hf_folders", DATA / "hf_folders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hf_folders = _hf_folders()


def _with_merges(spec: dict, folder: Path) -> Path:
    """Write `spec`'s folder with MERGES in its tokenizer: the merged tokens take ids 256.., the specials move
    after them (the `tokenizers` library misnumbers added tokens that sit below vocabulary ids), and config.json,
    generation_config.json and the BOS post-processor follow the specials."""
    n, specials = len(MERGES), spec["specials"]
    config = dict(spec["config"], vocab_size=max(spec["config"]["vocab_size"], 256 + n + len(specials)))
    folder = hf_folders.write_folder(dict(spec, config=config), folder)
    moved = {256 + i: 256 + n + i for i in range(len(specials))}
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    for k, (left, right) in enumerate(MERGES):
        tokenizer["model"]["vocab"][left + right] = 256 + k
    tokenizer["model"]["merges"] = [f"{left} {right}" for left, right in MERGES]
    for added in tokenizer["added_tokens"]:
        added["id"] = moved[added["id"]]
    for token in (tokenizer["post_processor"].get("special_tokens") or {}).values():
        token["ids"] = [moved[i] for i in token["ids"]]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    for name in ("config.json", "generation_config.json"):
        data = json.loads((folder / name).read_text())
        for key in ("bos_token_id", "eos_token_id"):
            if data.get(key) is not None:
                data[key] = moved[data[key]]
        (folder / name).write_text(json.dumps(data))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    # general.name is the folder's name; llama.cpp gives a model named "phi3" Phi-3's RSTRIP attributes, looking up
    # "</s>", "<s>" and "<unk>" by text, which a byte-level vocabulary lacks (it refuses the file): so "tiny-phi"
    return {name: _with_merges(hf_folders.SPECS[name], root / ("tiny-phi" if name == "phi3" else name))
            for name in [*FAMILIES, "mistral"]}


@pytest.fixture(scope="module")
def converted(folders, tmp_path_factory):
    """(family, type) -> the converted file, written once."""
    root, out = tmp_path_factory.mktemp("gguf"), {}

    def get(name: str, type_name: str) -> Path:
        if (name, type_name) not in out:
            out[name, type_name] = convert_folder(folders[name], root / f"{name}.{type_name}.gguf", type_name).path
        return out[name, type_name]

    return get


def _llama_cpp():
    pytest.importorskip("llama_cpp")
    from llama_cpp_reference import LlamaCpp

    return LlamaCpp


# ------------------------------------------------------------------------------------------- against llama.cpp
@X86_ONLY
@pytest.mark.parametrize("name", FAMILIES)
def test_converted_q8_0_file_gives_llama_cpp_logits_bit_for_bit(converted, name):
    path = converted(name, "q8_0")
    with _llama_cpp()(path, 64) as reference:
        theirs = reference.logits(PROMPT)
    ours = load_model(str(path), backend="numpy", n_ctx=64).logits(PROMPT)
    assert ours.shape == theirs.shape
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", [*FAMILIES, "mistral"])
def test_converted_f32_file_gives_llama_cpp_logits_to_float32_rounding(converted, name):
    """Not bit for bit: votive's F32 matrix product sums in another order than llama.cpp's F32 path (measured
    1e-7 to 3e-7 relative on these files; votive/backends, not the file). Gemma 3's seven layers, sqrt(dim)-scaled
    embedding and 1 + w norms carry it further: 4.5e-5 measured, 2e-4 allowed."""
    path = converted(name, "f32")
    prompt = PROMPT[:6]  # within mistral's window of 8, which neither stack reads from the file
    with _llama_cpp()(path, 64) as reference:
        theirs = reference.logits(prompt)
    ours = load_model(str(path), backend="numpy", n_ctx=64).logits(prompt)
    tol = 2e-4 if name == "gemma3" else FLOAT32_TOL
    assert np.abs(ours - theirs).max() <= tol * np.abs(theirs).max()
    assert set(np.argsort(ours)[-10:]) == set(np.argsort(theirs)[-10:])


@pytest.mark.parametrize("name", FAMILIES)
def test_converted_tokenizer_gives_the_folders_ids_in_both_stacks(folders, converted, name):
    path = converted(name, "q8_0")
    folder_ids = load_model(str(folders[name]), backend="numpy").tokenizer.encode(TEXT)
    votive_ids = load_model(str(path), backend="numpy").tokenizer.encode(TEXT)
    with _llama_cpp()(path, 64) as reference:
        llama_ids = reference.tokenize(TEXT)
    assert votive_ids == llama_ids == folder_ids
    assert 256 + 5 in folder_ids  # a merged token ("Hello") is used


def test_mistral_file_has_no_window_key(converted):
    """llama.cpp's converter writes no window for `llama` (and its `llama` graph reads none)."""
    metadata = GGUFFile(converted("mistral", "f32")).metadata
    assert metadata["general.architecture"] == "llama" and "llama.attention.sliding_window" not in metadata


# --------------------------------------------------------------------------------------------- against the folder
@pytest.mark.parametrize("type_name", ["f32", "q8_0", "f16"])
@pytest.mark.parametrize("name", FAMILIES)
def test_converted_file_is_close_to_the_folder(folders, converted, name, type_name):
    file_logits = load_model(str(converted(name, type_name)), backend="numpy").logits(PROMPT)
    quantize = "q8_0" if type_name == "q8_0" else None
    folder_logits = load_model(str(folders[name]), backend="numpy", quantize=quantize).logits(PROMPT)
    tol = F16_TOL if type_name == "f16" else FLOAT32_TOL
    assert np.abs(file_logits - folder_logits).max() <= tol * np.abs(folder_logits).max()
    if name != "llama" and type_name != "f16":  # no permutation: the same arithmetic (module docstring)
        np.testing.assert_array_equal(file_logits, folder_logits)


def test_llama_file_holds_permuted_qk_and_llama3_rope_freqs(folders, converted):
    f = GGUFFile(converted("llama", "f32"))
    hf = HFConfig(folders["llama"])
    cfg = hf_folders.SPECS["llama"]["config"]
    weights = hf_folders.draw_weights(dict(hf_folders.SPECS["llama"], config=json.loads(
        (folders["llama"] / "config.json").read_text())))
    q = hf_folders.stored(weights["model.layers.1.self_attn.q_proj.weight"], "BF16")
    q = (q.astype(np.uint32) << 16).view(np.float32)  # the folder's BF16 widened
    np.testing.assert_array_equal(f["blk.1.attn_q.weight"], permute_qk(q, cfg["num_attention_heads"]))
    np.testing.assert_array_equal(f["rope_freqs.weight"], hf.rope(cfg["hidden_size"] // 4).freq_factors)
    assert f.metadata["general.architecture"] == "llama" and f.metadata["general.file_type"] == 0
    assert f.metadata["tokenizer.ggml.pre"] == "gpt-2" and f.metadata["tokenizer.ggml.add_bos_token"] is True


def test_q8_0_file_is_q8_0_but_norms(converted):
    f = GGUFFile(converted("qwen2", "q8_0"))
    types = {name: f.tensors[name].ggml_type.name for name in f.tensors}
    assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == types["blk.0.attn_q.bias"] == "F32"
    assert "output.weight" not in types  # tied: the converter writes no output matrix


def test_q4_k_m_of_rows_not_whole_32_element_blocks_is_f16(folders, tmp_path):
    """mistral's hidden_size 48 is not whole 32-element blocks: llama.cpp's Q4_K_M (tensor_type_fallback) stores
    every matrix F16, output.weight's Q8_0 included (tests/test_q4_k_m.py holds the bytes to llama.cpp's file)."""
    f = GGUFFile(convert_folder(folders["mistral"], tmp_path / "x.gguf", "q4_k_m").path)
    types = {f.tensors[name].ggml_type.name for name in f.tensors if not name.endswith("norm.weight")}
    assert types == {"F16"} and f.metadata["general.file_type"] == 15


# ------------------------------------------------------------------------------------------------------ refusals
def test_unknown_architecture_and_tensor_are_refused(folders, tmp_path):
    folder = Path(__import__("shutil").copytree(folders["qwen3"], tmp_path / "q"))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, architectures=["GPT2LMHeadModel"])))
    with pytest.raises(ModelConfigError, match=r"architecture 'GPT2LMHeadModel' cannot be converted"):
        convert_folder(folder, tmp_path / "x.gguf", "f32")
    (folder / "config.json").write_text(json.dumps(dict(config, rope_scaling={"rope_type": "linear", "factor": 2.0})))
    with pytest.raises(ModelConfigError, match=r"rope_scaling type 'linear' is not converted for qwen3"):
        convert_folder(folder, tmp_path / "x.gguf", "f32")


def test_cli_converts_and_refuses_on_one_line(folders, tmp_path, capsys):
    out = tmp_path / "m.gguf"
    assert main(["convert", str(folders["qwen3"]), "--to", str(out), "--type", "f16"]) == 0
    assert GGUFFile(out).tensors["blk.0.ffn_up.weight"].ggml_type.name == "F16"
    capsys.readouterr()
    assert main(["convert", str(folders["qwen3"]), "--to", str(out)]) == 2  # exists, no --force
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"votive: error: {out} already exists; pass --force" in err
    assert main(["convert", str(folders["qwen3"]), "--to", str(out), "--type", "q4_0"]) == 2
    assert "--type 'q4_0' is not a choice (choices: f32, f16, q8_0, q4_k_m)" in capsys.readouterr().err
    assert main(["convert", str(folders["qwen3"]), "--to", str(out), "--type", "q8_0", "--force"]) == 0
    assert GGUFFile(out).tensors["blk.0.ffn_up.weight"].ggml_type.name == "Q8_0"

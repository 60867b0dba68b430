"""`--type q4_k_m` / `quantize="q4_k_m"`: what llama.cpp's llama-quantize makes of a model with Q4_K_M, bit for bit.

Each folder below (random weights, tests/data/hf_reference/hf_folders.py, merges added as test_convert.py adds
them) is converted to an F32 GGUF by votive, and that file quantized by llama.cpp itself (llama_model_quantize,
LLAMA_FTYPE_MOSTLY_Q4_K_M, no importance matrix: llama-cpp-python 0.3.36, the dev extras' pin). `votive convert
--type q4_k_m` of the same folder must hold the same tensors with the same types and the same bytes: the mixture
(votive.quant.mixtures) and the quantizers (votive.quant.codecs) both reproduce llama.cpp's.

The shapes exercise every rule the dense families reach:
- "llama": rows of 256 (Q4_K; Q6_K for output.weight and attn_v / ffn_down on use_more_bits layers 2 and 3 of
  4) and ffn_down rows of 320, not whole 256-element blocks (Q4_K -> Q5_0, Q6_K -> Q8_0); untied, so
  token_embd.weight is Q4_K; Llama 3 rope_freqs.weight stays F32;
- "qwen2": tied (token_embd.weight takes output's Q6_K), biases stay F32;
- "qwen3": hidden size 288 = 9 x 32 (Q5_0 for most matrices, the tied token_embd as Q8_0, attn_v's Q6_K falling
  back to Q8_0), o_proj and down_proj rows of 256 still Q4_K / Q6_K;
- "llama_80" (GQA), "qwen2_80": 80 layers, llama.cpp's "70B" model type: attn_v is Q5_K off the use_more_bits
  layers, falling back to Q5_1 on these 64-wide rows.

Then `votive.load(folder, quantize="q4_k_m")` holds the same blocks: its logits equal the converted file's bit for
bit for qwen2 / qwen3 (llama's converted file has permuted Q / K rows, so its q.k sums run in another order:
test_convert.py's module docstring).
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

import numpy as np
import pytest
from test_convert import FLOAT32_TOL, PROMPT, _with_merges, hf_folders

import votive
from votive.builders.gguf_convert import convert_folder
from votive.errors import QuantError
from votive.formats.gguf import GGUFFile
from votive.quant.mixtures import MixtureModel, mixture_types, use_more_bits

SPECS = hf_folders.SPECS
FOLDERS = {
    "llama": dict(SPECS["llama"], seed=21, config=dict(
        SPECS["llama"]["config"], hidden_size=256, intermediate_size=320, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2)),
    "qwen2": dict(SPECS["qwen2"], seed=22, config=dict(
        SPECS["qwen2"]["config"], hidden_size=256, intermediate_size=512, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2)),
    "qwen3": dict(SPECS["qwen3"], seed=23, config=dict(
        SPECS["qwen3"]["config"], hidden_size=288, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64)),
    "llama_80": dict(SPECS["llama"], seed=25, dtype="F32", config=dict(
        SPECS["llama"]["config"], hidden_size=64, intermediate_size=64, num_hidden_layers=80,
        num_attention_heads=2, num_key_value_heads=1)),
    "qwen2_80": dict(SPECS["qwen2"], seed=24, dtype="F32", config=dict(
        SPECS["qwen2"]["config"], hidden_size=64, intermediate_size=64, num_hidden_layers=80,
        num_attention_heads=2, num_key_value_heads=1)),
}
# What each folder's Q4_K_M file holds, by tensor kind (blk.N. dropped) -> {type: count}: the rules spelled out,
# so that a change in llama.cpp's mixture and ours alike would still be caught.
EXPECTED_TYPES = {
    "llama": {"token_embd.weight": {"Q4_K": 1}, "output.weight": {"Q6_K": 1}, "attn_v.weight": {"Q4_K": 2, "Q6_K": 2},
              "ffn_down.weight": {"Q5_0": 2, "Q8_0": 2}, "attn_q.weight": {"Q4_K": 4}, "ffn_up.weight": {"Q4_K": 4},
              "rope_freqs.weight": {"F32": 1}},
    "qwen2": {"token_embd.weight": {"Q6_K": 1}, "attn_v.weight": {"Q4_K": 2, "Q6_K": 1},
              "ffn_down.weight": {"Q4_K": 2, "Q6_K": 1}, "attn_v.bias": {"F32": 3}},
    "qwen3": {"token_embd.weight": {"Q8_0": 1}, "attn_q.weight": {"Q5_0": 2}, "attn_output.weight": {"Q4_K": 2},
              "attn_v.weight": {"Q5_0": 1, "Q8_0": 1}, "ffn_down.weight": {"Q4_K": 1, "Q6_K": 1},
              "ffn_gate.weight": {"Q5_0": 2}},
    "llama_80": {"token_embd.weight": {"Q5_0": 1}, "output.weight": {"Q8_0": 1},
                 "attn_v.weight": {"Q5_1": 40, "Q8_0": 40}, "ffn_down.weight": {"Q5_0": 40, "Q8_0": 40}},
    "qwen2_80": {"token_embd.weight": {"Q8_0": 1}, "attn_v.weight": {"Q5_1": 40, "Q8_0": 40},
                 "ffn_down.weight": {"Q5_0": 40, "Q8_0": 40}, "attn_k.weight": {"Q5_0": 80}},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (folder, votive's q4_k_m file, llama.cpp's Q4_K_M file of votive's F32 file), made once."""
    pytest.importorskip("llama_cpp")
    from llama_cpp_reference import quantize

    root, made = tmp_path_factory.mktemp("q4_k_m"), {}

    def get(name: str) -> tuple[Path, Path, Path]:
        if name not in made:
            folder = _with_merges(FOLDERS[name], root / name)
            f32 = convert_folder(folder, root / f"{name}.f32.gguf", "f32").path
            theirs = quantize(f32, root / f"{name}.llama_cpp.gguf", "Q4_K_M")
            start = time.perf_counter()
            ours = convert_folder(folder, root / f"{name}.q4_k_m.gguf", "q4_k_m").path
            print(f"\n{name}: votive convert --type q4_k_m took {time.perf_counter() - start:.2f} s")
            made[name] = folder, ours, theirs
        return made[name]

    return get


def kinds(f: GGUFFile) -> dict[str, dict[str, int]]:
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for name, info in f.tensors.items():
        out[name.split(".", 2)[2] if name.startswith("blk.") else name][info.ggml_type.name] += 1
    return {kind: dict(counts) for kind, counts in out.items()}


@pytest.mark.parametrize("name", list(FOLDERS))
def test_q4_k_m_file_has_llama_cpps_types_and_bytes(files, name):
    _, ours_path, theirs_path = files(name)
    ours, theirs = GGUFFile(ours_path), GGUFFile(theirs_path)
    assert set(ours.tensors) == set(theirs.tensors)
    for tensor, info in theirs.tensors.items():
        assert ours.tensors[tensor].ggml_type == info.ggml_type, tensor
        assert ours.tensors[tensor].shape == info.shape, tensor
        mine, want = ours[tensor].view(np.uint8), theirs[tensor].view(np.uint8)
        assert np.array_equal(mine, want), f"{tensor} ({info.ggml_type.name}): bytes differ from llama.cpp's"
    assert ours.metadata["general.file_type"] == theirs.metadata["general.file_type"] == 15
    found = kinds(theirs)
    for kind, counts in EXPECTED_TYPES[name].items():
        assert found[kind] == counts, kind


@pytest.mark.parametrize("name", ["qwen2", "qwen3"])
def test_loading_the_folder_with_q4_k_m_gives_the_files_logits_bit_for_bit(files, name):
    folder, ours, _ = files(name)
    from_file = votive.load(str(ours), backend="numpy").logits(PROMPT)
    from_folder = votive.load(str(folder), backend="numpy", quantize="q4_k_m").logits(PROMPT)
    np.testing.assert_array_equal(from_folder, from_file)


def test_llama_folder_with_q4_k_m_is_its_file_up_to_the_qk_order(files):
    folder, ours, _ = files("llama")
    from_file = votive.load(str(ours), backend="numpy").logits(PROMPT)
    from_folder = votive.load(str(folder), backend="numpy", quantize="q4_k_m").logits(PROMPT)
    assert np.abs(from_file - from_folder).max() <= FLOAT32_TOL * np.abs(from_file).max()


# ------------------------------------------------------------------------------------------- the rules alone
def test_use_more_bits_is_llama_cpps():
    # llama.cpp's use_more_bits(i, 32): layers 0-3, 28-31, and 4 + 3k + 2 between
    assert [i for i in range(32) if use_more_bits(i, 32)] == [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    assert [i for i in range(2) if use_more_bits(i, 2)] == [1]


def test_llama_70b_attn_v_is_q5_k_and_its_65b_is_not():
    shapes = {f"blk.{i}.attn_v.weight": (1024, 8192) for i in range(80)} | {"output.weight": (32000, 8192)}
    gqa = mixture_types("q4_k_m", MixtureModel("llama", 80, 64, 8), shapes)
    mha = mixture_types("q4_k_m", MixtureModel("llama", 80, 64, 64), shapes)
    assert gqa["blk.11.attn_v.weight"].name == "Q5_K" and mha["blk.11.attn_v.weight"].name == "Q4_K"
    assert gqa["blk.12.attn_v.weight"].name == mha["blk.12.attn_v.weight"].name == "Q6_K"


def test_a_matrix_llama_cpp_cannot_quantize_is_refused():
    with pytest.raises(QuantError, match=r"output.weight: rows of 48 elements are not whole 32-element Q8_0 blocks, "
                                         r"and llama.cpp defines no fallback from Q8_0 \(it refuses the model\)"):
        mixture_types("q4_k_m", MixtureModel("llama", 1, 4, 4), {"output.weight": (100, 48)})
    with pytest.raises(QuantError, match=r"mirrored for architectures llama, qwen2, qwen3, not 'phi3'"):
        mixture_types("q4_k_m", MixtureModel("phi3", 1, 4, 4), {"output.weight": (100, 256)})


def test_votive_convert_cli_writes_q4_k_m_and_names_the_fallbacks(files, tmp_path, capsys):
    from votive.cli import main

    folder, ours, _ = files("llama")
    assert main(["convert", str(folder), "--to", str(tmp_path / "m.gguf"), "--type", "q4_k_m"]) == 0
    err = capsys.readouterr().err
    assert "(llama, q4_k_m)" in err
    assert ("votive: 4 matrices stored in another type, their rows not whole q4_k_m blocks (first: "
            "blk.0.ffn_down.weight as Q5_0)") in err
    assert (tmp_path / "m.gguf").read_bytes() == ours.read_bytes()

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
  layers, falling back to Q5_1 on these 64-wide rows;
- "mistral": rows of 48, not whole 32-element blocks either: every matrix F16, output.weight's Q8_0 included
  (bytes only: votive's F16 product does not round activations to half as llama.cpp's does, so no logits);
- "phi3": fused attn_qkv (Q4_K, Q6_K on use_more_bits layer 2 of 3: attn_v's rule, not the Q5_K of llama.cpp's
  unreachable ATTENTION_QKV branch) and fused gate/up ffn_up (Q4_K), untied, longrope's two factor tensors F32;
  "phi3_288": rows of 288 and 320 (Q5_0 / Q8_0 fallbacks, the tied token_embd Q8_0);
- "gemma3": tied token_embd (Q6_K), QK-norm and sandwich norms F32, seven layers (attn_v / ffn_down Q6_K on
  use_more_bits layers 2, 5 and 6); "gemma3_160": rows of 160 and 416 (fallbacks) beside attn_output's 256;
- "phi3_80", "gemma3_80": 80 layers with GQA, never "70B" for these architectures: attn_qkv / attn_v fall back
  from Q4_K to Q5_0, not from Q5_K to Q5_1.

Then `votive.load(folder, quantize="q4_k_m")` holds the same blocks: its logits equal the converted file's bit for
bit for qwen2 / qwen3 (llama's converted file has permuted Q / K rows, so its q.k sums run in another order:
test_convert.py's module docstring). For phi3 and gemma3, whose converted files need no permutation, the folder
loaded with quantize="q4_k_m" gives llama.cpp's logits on its own Q4_K_M file bit for bit (x86; both stacks in a
64-position context, so that phi3's longrope takes its short factors in both).
"""

from __future__ import annotations

import collections
import platform
import time
from pathlib import Path

import numpy as np
import pytest
from test_convert import FLOAT32_TOL, PROMPT, _with_merges, hf_folders

import votive
from votive.builders.gguf_convert import convert_folder
from votive.errors import QuantError
from votive.formats.gguf import GGUFFile
from votive.models import DECODERS
from votive.quant.mixtures import MODEL_70B, MixtureModel, mixture_types, use_more_bits

SPECS = hf_folders.SPECS
X86_ONLY = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason=f"bit-exact parity with llama.cpp holds on x86 only (this is {platform.machine()})")


def _longrope(n: int) -> dict:
    """phi3's longrope scaling with `n` (= rotated dims / 2) short and long factors."""
    return {"type": "longrope", "short_factor": [1.0 + 0.25 * k for k in range(n)],
            "long_factor": [2.0 + 1.5 * k for k in range(n)]}


def _gemma3_layers(n: int) -> list[str]:
    """Gemma 3's layout (the one a gemma3 GGUF can say): five sliding layers, then a global one."""
    return ["full_attention" if i % 6 == 5 else "sliding_attention" for i in range(n)]


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
    "mistral": SPECS["mistral"],
    "phi3": dict(SPECS["phi3"], seed=26, config=dict(
        SPECS["phi3"]["config"], hidden_size=256, intermediate_size=256, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, rope_scaling=_longrope(24))),
    "phi3_288": dict(SPECS["phi3"], seed=27, config=dict(
        SPECS["phi3"]["config"], hidden_size=288, intermediate_size=320, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, partial_rotary_factor=0.5, rope_scaling=_longrope(18))),
    "phi3_80": dict(SPECS["phi3"], seed=28, dtype="F32", config=dict(
        SPECS["phi3"]["config"], hidden_size=64, intermediate_size=64, num_hidden_layers=80,
        num_attention_heads=2, num_key_value_heads=1, partial_rotary_factor=1.0, rope_scaling=None)),
    "gemma3": dict(SPECS["gemma3"], seed=29, config=dict(
        SPECS["gemma3"]["config"], hidden_size=256, intermediate_size=512, num_attention_heads=4,
        num_key_value_heads=1, head_dim=64, query_pre_attn_scalar=64)),
    "gemma3_160": dict(SPECS["gemma3"], seed=30, config=dict(
        SPECS["gemma3"]["config"], hidden_size=160, intermediate_size=416, num_hidden_layers=6,
        num_attention_heads=2, num_key_value_heads=1, head_dim=128, query_pre_attn_scalar=128,
        layer_types=_gemma3_layers(6))),
    "gemma3_80": dict(SPECS["gemma3"], seed=31, dtype="F32", config=dict(
        SPECS["gemma3"]["config"], hidden_size=64, intermediate_size=64, num_hidden_layers=80,
        num_attention_heads=2, num_key_value_heads=1, layer_types=_gemma3_layers(80))),
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
    "mistral": {"token_embd.weight": {"F16": 1}, "output.weight": {"F16": 1}, "attn_v.weight": {"F16": 3},
                "ffn_down.weight": {"F16": 3}, "attn_q.weight": {"F16": 3}},
    "phi3": {"token_embd.weight": {"Q4_K": 1}, "output.weight": {"Q6_K": 1}, "attn_qkv.weight": {"Q4_K": 2, "Q6_K": 1},
             "ffn_up.weight": {"Q4_K": 3}, "ffn_down.weight": {"Q4_K": 2, "Q6_K": 1}, "attn_output.weight": {"Q4_K": 3},
             "rope_factors_long.weight": {"F32": 1}, "rope_factors_short.weight": {"F32": 1}},
    "phi3_288": {"token_embd.weight": {"Q8_0": 1}, "attn_qkv.weight": {"Q5_0": 1, "Q8_0": 1},
                 "ffn_up.weight": {"Q5_0": 2}, "ffn_down.weight": {"Q5_0": 1, "Q8_0": 1},
                 "attn_output.weight": {"Q5_0": 2}},
    "phi3_80": {"token_embd.weight": {"Q8_0": 1}, "attn_qkv.weight": {"Q5_0": 40, "Q8_0": 40},
                "ffn_down.weight": {"Q5_0": 40, "Q8_0": 40}},
    "gemma3": {"token_embd.weight": {"Q6_K": 1}, "attn_v.weight": {"Q4_K": 4, "Q6_K": 3},
               "ffn_down.weight": {"Q4_K": 4, "Q6_K": 3}, "attn_q.weight": {"Q4_K": 7}, "ffn_gate.weight": {"Q4_K": 7},
               "attn_q_norm.weight": {"F32": 7}, "post_attention_norm.weight": {"F32": 7}},
    "gemma3_160": {"token_embd.weight": {"Q8_0": 1}, "attn_output.weight": {"Q4_K": 6},
                   "attn_v.weight": {"Q5_0": 4, "Q8_0": 2}, "ffn_down.weight": {"Q5_0": 4, "Q8_0": 2},
                   "ffn_gate.weight": {"Q5_0": 6}},
    "gemma3_80": {"token_embd.weight": {"Q8_0": 1}, "attn_v.weight": {"Q5_0": 40, "Q8_0": 40},
                  "ffn_down.weight": {"Q5_0": 40, "Q8_0": 40}},
}
# Folders whose logits are held to llama.cpp's on its own file (no F16 fallback: module docstring of test_convert).
LLAMA_CPP_LOGITS = ["phi3", "phi3_288", "gemma3", "gemma3_160"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """name -> (folder, votive's q4_k_m file, llama.cpp's Q4_K_M file of votive's F32 file), made once."""
    pytest.importorskip("llama_cpp")
    from llama_cpp_reference import quantize

    root, made = tmp_path_factory.mktemp("q4_k_m"), {}

    def get(name: str) -> tuple[Path, Path, Path]:
        if name not in made:
            # llama.cpp gives a model whose general.name (the folder's name) holds "phi3" Phi-3's SPM attributes
            folder = _with_merges(FOLDERS[name], root / name.replace("phi3", "tiny-phi"))
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


@X86_ONLY
@pytest.mark.parametrize("name", LLAMA_CPP_LOGITS)
def test_loading_the_folder_with_q4_k_m_gives_llama_cpps_logits_on_its_file_bit_for_bit(files, name):
    from llama_cpp_reference import LlamaCpp

    folder, ours, theirs = files(name)
    with LlamaCpp(theirs, 64) as reference:
        want = reference.logits(PROMPT)
    from_folder = votive.load(str(folder), backend="numpy", n_ctx=64, quantize="q4_k_m").logits(PROMPT)
    assert from_folder.shape == want.shape
    np.testing.assert_array_equal(from_folder.view(np.uint32), want.view(np.uint32))
    from_file = votive.load(str(ours), backend="numpy", n_ctx=64).logits(PROMPT)
    np.testing.assert_array_equal(from_file.view(np.uint32), want.view(np.uint32))


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


def test_every_decoder_family_has_its_model_type_rule():
    # llama.cpp's load_arch_hparams: only llama (GQA) and qwen2 call 80 layers LLM_TYPE_70B
    assert set(DECODERS) == set(MODEL_70B)
    assert [arch for arch, rule in MODEL_70B.items() if rule(80, 64, 8)] == ["llama", "qwen2"]
    assert not any(rule(n, 64, 8) for rule in MODEL_70B.values() for n in (24, 32, 40, 79, 81))


def test_phi3_attn_qkv_takes_attn_vs_rule_not_the_qkv_branch():
    # llama_tensor_get_type_impl tests category_is_attn_v before its ATTENTION_QKV branch (Q5_K for Q4_K_M)
    shapes = {f"blk.{i}.attn_qkv.weight": (3072, 1024) for i in range(32)} | {"output.weight": (32064, 1024)}
    types = mixture_types("q4_k_m", MixtureModel("phi3", 32, 32, 8), shapes)
    assert {types[f"blk.{i}.attn_qkv.weight"].name for i in range(32) if not use_more_bits(i, 32)} == {"Q4_K"}
    assert {types[f"blk.{i}.attn_qkv.weight"].name for i in range(32) if use_more_bits(i, 32)} == {"Q6_K"}


def test_rows_not_whole_32_element_blocks_fall_back_to_f16_and_other_architectures_are_refused():
    # tensor_type_fallback: Q8_0 (output.weight's choice for rows not whole 256-element blocks) has no smaller
    # block to go to, so rows of 48 become F16, as Q4_K's Q5_0 and Q6_K's Q8_0 do
    shapes = {"output.weight": (100, 48), "blk.0.attn_v.weight": (48, 48), "blk.0.attn_q.weight": (48, 48)}
    types = mixture_types("q4_k_m", MixtureModel("llama", 1, 4, 4), shapes)
    assert {name: t.name for name, t in types.items()} == dict.fromkeys(shapes, "F16")
    with pytest.raises(QuantError, match=r"the q4_k_m mixture is mirrored for architectures llama, qwen2, qwen3, "
                                         r"phi3, gemma3, smollm3, not 'falcon' \(its llama.cpp model types are not "
                                         r"mirrored\)"):
        mixture_types("q4_k_m", MixtureModel("falcon", 1, 4, 4), {"output.weight": (100, 256)})
    with pytest.raises(QuantError, match=r"no mixture 'q5_k_m' \(mixtures: q4_k_m\)"):
        mixture_types("q5_k_m", MixtureModel("llama", 1, 4, 4), {"output.weight": (100, 256)})


def test_votive_convert_cli_writes_q4_k_m_and_names_the_fallbacks(files, tmp_path, capsys):
    from votive.cli import main

    folder, ours, _ = files("llama")
    assert main(["convert", str(folder), "--to", str(tmp_path / "m.gguf"), "--type", "q4_k_m"]) == 0
    err = capsys.readouterr().err
    assert "(llama, q4_k_m)" in err
    assert ("votive: 4 matrices stored in another type, their rows not whole q4_k_m blocks (first: "
            "blk.0.ffn_down.weight as Q5_0)") in err
    assert (tmp_path / "m.gguf").read_bytes() == ours.read_bytes()


@pytest.mark.parametrize("name, arch", [("phi3_288", "phi3"), ("gemma3", "gemma3")])
def test_votive_convert_cli_writes_phi3_and_gemma3_q4_k_m(files, tmp_path, capsys, name, arch):
    from votive.cli import main

    folder, ours, _ = files(name)
    assert main(["convert", str(folder), "--to", str(tmp_path / "m.gguf"), "--type", "q4_k_m"]) == 0
    assert f"({arch}, q4_k_m)" in capsys.readouterr().err
    assert (tmp_path / "m.gguf").read_bytes() == ours.read_bytes()

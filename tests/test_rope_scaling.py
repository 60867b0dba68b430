"""RoPE scaling as llama.cpp computes it: the table kernel against its twin, and Llama 3-style, linear and YaRN
files against llama.cpp itself; YaRN folders against transformers.

- The table (votive/quant/csrc/decoder_kernels.c rope_cache_rows, ggml's ggml_rope_cache_init) equals its numpy
  twin (kernels_ref.rope_cache_ref) bit for bit, for each combination of frequency factors, linear scale, YaRN
  ramp and attention factor; with no scaling it is the plain table. YaRN's ramp bounds and attention factor
  (rope_scaling.yarn_corr_dims / yarn_attn_factor) are checked against the formulas written out here.
- A random-weight Llama file carrying `rope_freqs.weight` (the factors computed as llama.cpp's
  convert_hf_to_gguf.py computes Llama 3.1's "llama3" scaling), or linear scaling, or YaRN, gives llama.cpp's
  logits bit for bit after a short prompt and after a 640-token one, and its 32 greedy ids. llama.cpp runs in a
  subprocess (llama-cpp-python 0.3.36), so an illegal instruction there fails one test, not the run.
- YaRN files of llama, qwen2, qwen3, smollm3 and phi3 (partial rotary), quantized by llama.cpp
  (tests/llama_cpp_reference.py), with original contexts shorter than the 640-token prompt: llama.cpp's logits
  bit for bit and its greedy ids; a 1-ulp change of the attention factor or a ramp bound shifted by one pair
  would show.
- Hugging Face YaRN folders (tests/data/hf_reference: qwen3_yarn, llama_yarn, qwen2_yarn) after a 300-token
  prompt: transformers' logits to float32 rounding; qwen3_yarn converted to a GGUF gives llama.cpp's logits bit
  for bit, and folders whose YaRN settings a GGUF cannot carry are refused by the converter.
- Settings votive does not compute exactly are refused, naming the key and value.
"""

from __future__ import annotations

import json
import math
import platform
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest

import votive
from votive.errors import KernelError, ModelConfigError
from votive.formats.gguf_write import write_gguf
from votive.models.rope_scaling import read_rope, yarn_attn_factor, yarn_corr_dims
from votive.quant import kernels, kernels_ref
from votive.testing.synthetic import DecoderShape, decoder_metadata, decoder_tensors

X86_ONLY = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason=f"bit-exact parity with llama.cpp holds on x86 only (this is {platform.machine()})")


# ------------------------------------------------------------------------------------------------ the table
def llama3_factors(base: float, dim: int, factor=8.0, low=1.0, high=4.0, old_context=32) -> np.ndarray:
    """rope_freqs as convert_hf_to_gguf.py (LlamaModel.generate_extra_tensors, rope_type "llama3") computes them,
    in its float32 frequencies and Python-float wavelengths. old_context is small so that a short test context
    spans all three bands (kept, smoothed, divided by factor)."""
    freqs = 1.0 / (np.float32(base) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)))
    low_wavelen, high_wavelen = old_context / low, old_context / high
    out = []
    for freq in freqs.tolist():
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, np.float32)


SCALINGS = {
    "plain": {},
    "factors": {"freq_factors": llama3_factors(500000.0, 64)},
    "linear": {"freq_scale": 0.25},
    "factors+linear": {"freq_factors": llama3_factors(500000.0, 64), "freq_scale": 0.5},
    "attn": {"attn_factor": 0.75},
    "yarn": {"freq_scale": 0.25, "ext_factor": 1.0, "corr_dims": (3.0, 14.0)},
    "yarn+factors+attn": {"freq_scale": 0.125, "ext_factor": 0.5, "attn_factor": 1.25, "corr_dims": (0.0, 31.0),
                          "freq_factors": llama3_factors(500000.0, 64)},
    "yarn narrow ramp": {"freq_scale": 0.5, "ext_factor": 1.0, "corr_dims": (7.0, 7.0)},
}


@pytest.mark.parametrize("name", sorted(SCALINGS))
def test_rope_table_equals_its_twin_bit_for_bit(name):
    lib = kernels.get()
    if lib is None:
        pytest.skip("libvotive.so is not built")
    got = lib.rope_cache(500000.0, 64, 700, 5, **SCALINGS[name])
    want = kernels_ref.rope_cache_ref(500000.0, 64, 700, 5, **SCALINGS[name])
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_unscaled_arguments_give_the_plain_table():
    plain = kernels.rope_cache(10000.0, 32, 50)
    same = kernels.rope_cache(10000.0, 32, 50, 0, 1.0, np.ones(16, np.float32), 0.0, 1.0, (5.0, 9.0))
    np.testing.assert_array_equal(plain.view(np.uint32), same.view(np.uint32))


def test_factors_and_scale_slow_the_angles():
    """Position p's pair i turns by p * theta_i / factor_i * freq_scale: check a pair against the formula."""
    factors = np.full(8, 4.0, np.float32)
    table = kernels.rope_cache(10000.0, 16, 3, 0, 0.5, factors)
    theta_3 = 10000.0 ** (-6 / 16)
    np.testing.assert_allclose(table[2, 6:8], [math.cos(2 * theta_3 / 8), math.sin(2 * theta_3 / 8)], rtol=1e-6)


def test_table_arguments_are_checked():
    with pytest.raises(KernelError, match=r"rope_cache: freq_factors must be a float array of shape \(8,\)"):
        kernels.rope_cache(10000.0, 16, 3, 0, 1.0, np.ones(7, np.float32))
    with pytest.raises(KernelError, match="rope_cache: freq_scale must be > 0, found 0.0"):
        kernels.rope_cache(10000.0, 16, 3, 0, 0.0)


def correction_range(dims: int, original: int, base: float, beta_fast=32.0, beta_slow=1.0) -> tuple:
    """YaRN's ramp bounds as the paper's reference code and transformers' find_correction_range (truncated) compute
    them, in double: the pair that turns beta times over the original context is
    dims * ln(original / (2 pi beta)) / (2 ln base)."""
    def pair(turns):
        return dims * math.log(original / (turns * 2 * math.pi)) / (2 * math.log(base))

    return max(math.floor(pair(beta_fast)), 0), min(math.ceil(pair(beta_slow)), dims - 1)


@pytest.mark.parametrize("dims, original, base", [(64, 512, 10000.0), (16, 64, 500000.0), (128, 4096, 1e6),
                                                  (32, 10**9, 10.0), (96, 100, 10000.0), (64, 32768, 1e6)])
def test_yarn_ramp_bounds_are_the_correction_range(dims, original, base):
    assert yarn_corr_dims(dims, original, base) == correction_range(dims, original, base)


def test_yarn_ramp_bounds_by_hand():
    # 64 * ln(512 / 64 pi) / (2 ln 10^4) = 3.25 and 64 * ln(512 / 2 pi) / (2 ln 10^4) = 15.29
    assert yarn_corr_dims(64, 512, 10000.0) == (3.0, 16.0)
    assert yarn_corr_dims(16, 64, 500000.0) == (0.0, 2.0)  # the first bound below pair 0
    # both past the last pair: ggml clamps the second bound only (then every pair keeps its unscaled angle)
    assert yarn_corr_dims(32, 10**9, 10.0) == (107.0, 31.0)


@pytest.mark.parametrize("factor", [2.0, 3.0, 4.0, 8.0, 40.0])
def test_yarn_magnitude_is_yarns_mscale(factor):
    """ggml multiplies cos and sin by attn_factor * (1 + 0.1 ln(1 / freq_scale)); with llama.cpp's attention
    factor that is YaRN's 0.1 ln(factor) + 1 up to float32 rounding, times rope.scaling.attn_factor; a Hugging Face
    attention_factor replaces YaRN's own."""
    freq_scale = float(np.float32(1) / np.float32(factor))
    ggml = 1 + 0.1 * math.log(1 / freq_scale)
    assert yarn_attn_factor(freq_scale) * ggml == pytest.approx(0.1 * math.log(factor) + 1, rel=5e-7)
    assert yarn_attn_factor(freq_scale, rope_attn_factor=0.5) * ggml == pytest.approx(
        0.5 * (0.1 * math.log(factor) + 1), rel=5e-7)
    assert yarn_attn_factor(freq_scale, mscale=1.25) * ggml == pytest.approx(1.25, rel=5e-7)
    table = kernels.rope_cache(10000.0, 16, 2, 0, freq_scale, None, 1.0, yarn_attn_factor(freq_scale), (0.0, 3.0))
    assert table[0, 0] == pytest.approx(0.1 * math.log(factor) + 1, rel=5e-7)  # cos 0 times the magnitude


def test_yarn_attention_factor_without_scaling_is_one():
    assert yarn_attn_factor(1.0) == 1.0 and yarn_attn_factor(1.0, rope_attn_factor=0.75) == 0.75


# ------------------------------------------------------------------------------------------------ GGUF files
SHAPE = DecoderShape(n_layers=2, dim=64, ffn_dim=128, n_heads=4, n_kv_heads=2, head_dim=16, vocab=311, context=2048,
                     rope_base=500000.0)


def write_llama(path, metadata=(), factors: bool = False, shape=SHAPE):
    meta = decoder_metadata(shape) | dict(metadata)
    tensors = decoder_tensors(shape, "Q8_0", seed=7)
    if factors:
        tensors["rope_freqs.weight"] = llama3_factors(shape.rope_base, shape.dh)
    return write_gguf(path, meta, tensors)


class FakeFile(SimpleNamespace):
    """What read_rope reads of a GGUF file: metadata, tensors by name, a path."""

    def get(self, key, default=None):
        return self.metadata.get(key, default)

    def __getitem__(self, name):
        return self.arrays[name]


def fake(metadata, arrays=None):
    arrays = arrays or {}
    return FakeFile(path="fake.gguf", metadata=metadata, tensors=dict.fromkeys(arrays), arrays=arrays)


YARN = {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0,
        "llama.rope.scaling.original_context_length": 64}


@pytest.mark.parametrize("arch, metadata, message", [
    ("llama", {"llama.rope.scaling.type": "longrope"}, "fake.gguf: llama.rope.scaling.type = 'longrope' is not "
     "supported for architecture 'llama' (votive runs longrope as llama.cpp does, for phi3 only)"),
    ("llama", {"llama.rope.scaling.type": "ntk"}, "fake.gguf: llama.rope.scaling.type = 'ntk' is not a RoPE scaling "
     "type votive implements (supported: none, linear, yarn)"),
    ("llama", {"llama.rope.dimension_count": 8}, "fake.gguf: llama.rope.dimension_count = 8 rotates part of each "
     "head (head size 16); partial rotary RoPE is not implemented"),
    ("gemma3", {"gemma3.rope.scaling.type": "yarn"}, "fake.gguf: gemma3.rope.scaling.type = 'yarn' is not "
     "supported for architecture 'gemma3' (votive runs YaRN for llama, phi3, qwen2, qwen3, smollm3)"),
    ("gemma3", {"gemma3.rope.scaling.attn_factor": 0.5}, "fake.gguf: gemma3.rope.scaling.attn_factor = 0.5 is not "
     "supported for architecture 'gemma3' (only 1: RoPE without a magnitude factor)"),
    ("llama", {"llama.rope.scaling.attn_factor": -1.0}, "fake.gguf: llama.rope.scaling.attn_factor = -1.0 must be "
     "a finite number > 0"),
    # YaRN keys llama.cpp does not read for these architectures, holding other values than the ones it uses
    ("llama", YARN | {"llama.rope.scaling.yarn_beta_fast": 16.0}, "fake.gguf: llama.rope.scaling.yarn_beta_fast = "
     "16.0 is not supported: llama.cpp does not read it for architecture 'llama' and uses 32.0 (votive runs what "
     "llama.cpp runs)"),
    ("llama", YARN | {"llama.rope.scaling.yarn_beta_slow": 2.0}, "fake.gguf: llama.rope.scaling.yarn_beta_slow = "
     "2.0 is not supported: llama.cpp does not read it for architecture 'llama' and uses 1.0 (votive runs what "
     "llama.cpp runs)"),
    ("llama", YARN | {"llama.rope.scaling.yarn_ext_factor": 0.5}, "fake.gguf: llama.rope.scaling.yarn_ext_factor "
     "= 0.5 is not supported: llama.cpp does not read it for architecture 'llama' and uses 1.0 (votive runs what "
     "llama.cpp runs)"),
    ("llama", {"llama.rope.scaling.yarn_ext_factor": 1.0}, "fake.gguf: llama.rope.scaling.yarn_ext_factor = 1.0 "
     "is not supported: llama.cpp does not read it for architecture 'llama' and uses 0.0 (votive runs what "
     "llama.cpp runs)"),
    ("qwen3", {"qwen3.rope.scaling.type": "yarn", "qwen3.rope.scaling.yarn_attn_factor": 1.2}, "fake.gguf: "
     "qwen3.rope.scaling.yarn_attn_factor = 1.2 is not supported: llama.cpp does not read it for architecture "
     "'qwen3' and uses 1.0 (votive runs what llama.cpp runs)"),
    ("qwen2", {"qwen2.rope.scaling.yarn_log_multiplier": 0.1}, "fake.gguf: qwen2.rope.scaling.yarn_log_multiplier "
     "= 0.1 is not supported: llama.cpp does not read it for architecture 'qwen2' and uses 0.0 (votive runs what "
     "llama.cpp runs)"),
    ("llama", YARN | {"llama.rope.scaling.yarn_beta_fast": "fast"}, "fake.gguf: llama.rope.scaling.yarn_beta_fast "
     "= 'fast' must be a number"),
    ("llama", {"llama.rope.scaling.type": "yarn"}, "fake.gguf: llama.rope.scaling.original_context_length = 0: "
     "YaRN needs the original context (or llama.context_length)"),
])
def test_unsupported_rope_settings_are_refused_naming_the_key(arch, metadata, message):
    with pytest.raises(ModelConfigError) as caught:
        read_rope(fake(metadata), arch, 16)
    assert str(caught.value) == message


def test_frequency_factors_are_refused_where_llama_cpp_does_not_read_them():
    with pytest.raises(ModelConfigError) as caught:
        read_rope(fake({}, {"rope_freqs.weight": np.ones(8, np.float32)}), "gemma3", 16)
    assert str(caught.value) == ("fake.gguf: tensor 'rope_freqs.weight' is not used by architecture 'gemma3' "
                                 "(llama.cpp reads it for ['llama'])")
    with pytest.raises(ModelConfigError, match=r"must be float32 of shape \(8,\), found float32 \(4,\)"):
        read_rope(fake({}, {"rope_freqs.weight": np.ones(4, np.float32)}), "llama", 16)


def test_settings_resolve_as_llama_cpp_resolves_them():
    assert read_rope(fake({}), "llama", 16).freq_scale == 1.0  # no keys: "linear" with factor 0, i.e. 1
    linear = read_rope(fake({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 3.0}), "llama", 16)
    assert linear.freq_scale == float(np.float32(1) / np.float32(3))
    assert read_rope(fake({"llama.rope.scale_linear": 4.0}), "llama", 16).freq_scale == 0.25  # the old key
    none = read_rope(fake({"llama.rope.scaling.type": "none", "llama.rope.scaling.factor": 4.0}), "llama", 16)
    assert none.freq_scale == 1.0  # llama-context.cpp: type none never scales
    assert (linear.ext_factor, none.ext_factor, linear.attn_factor) == (0.0, 0.0, 1.0)
    scaled = read_rope(fake({"llama.rope.scaling.attn_factor": 0.8}), "llama", 16)
    assert scaled.attn_factor == float(np.float32(0.8)) and scaled.ext_factor == 0.0  # cos, sin times 0.8


def test_yarn_settings_resolve_as_llama_cpp_resolves_them():
    yarn = read_rope(fake(YARN), "llama", 16)
    assert (yarn.scaling_type, yarn.freq_scale, yarn.ext_factor) == ("yarn", 0.25, 1.0)
    assert yarn.corr_dims == (0.0, 3.0) and yarn.attn_factor == yarn_attn_factor(0.25)  # base 10000
    # the original context defaults to the training context; the keys llama.cpp ignores may hold its values
    same = read_rope(fake({k: v for k, v in YARN.items() if "original" not in k} | {
        "llama.context_length": 64, "llama.rope.scaling.yarn_beta_fast": 32.0, "llama.rope.scaling.yarn_beta_slow": 1,
        "llama.rope.scaling.yarn_ext_factor": 1.0, "llama.rope.scaling.yarn_attn_factor": 1.0,
        "llama.rope.scaling.yarn_log_multiplier": 0.0}), "llama", 16)
    assert same == yarn
    damped = read_rope(fake(YARN | {"llama.rope.scaling.attn_factor": 0.5}), "llama", 16)
    assert damped.attn_factor == yarn_attn_factor(0.25, rope_attn_factor=0.5)
    # phi3 ramps over its turned dims only (llama.cpp's n_dims is n_rot)
    phi3 = read_rope(fake({"phi3.rope.scaling.type": "yarn", "phi3.rope.scaling.factor": 4.0,
                           "phi3.rope.scaling.original_context_length": 4096, "phi3.rope.dimension_count": 96}),
                     "phi3", 128)
    assert phi3.n_rot == 96 and phi3.corr_dims == yarn_corr_dims(96, 4096, 10000.0) != yarn_corr_dims(128, 4096,
                                                                                                    10000.0)


def test_a_gemma3_yarn_file_is_refused_at_load(tmp_path):
    shape = replace(SHAPE, arch="gemma3", tied=True, ffn_dim=128)
    path = write_gguf(tmp_path / "yarn.gguf", decoder_metadata(shape) | {"gemma3.rope.scaling.type": "yarn",
                      "gemma3.rope.scaling.factor": 4.0}, decoder_tensors(shape, "Q8_0", seed=7))
    with pytest.raises(ModelConfigError, match="gemma3.rope.scaling.type = 'yarn' is not supported for "
                                               "architecture 'gemma3'"):
        votive.load(str(path), n_ctx=64)


# ------------------------------------------------------------------------------------------- against llama.cpp
# Runs in a child process: prints, as JSON, llama.cpp's logits after each prompt and its greedy ids.
LLAMA_CPP_CHILD = r"""
import json, sys
import numpy as np
import llama_cpp
path, n_ctx, prompts, n_greedy = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4])
llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, n_threads=2, verbose=False)

def last_logits():
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()

out = []
for ids in prompts:
    llm.reset()  # eval drops the KV cache past n_tokens: a fresh sequence
    llm.eval(ids)
    logits = last_logits()
    record = {"logits": logits.view(np.uint32).tolist(), "greedy": []}
    for _ in range(n_greedy):
        record["greedy"].append(int(np.argmax(logits)))
        llm.eval(record["greedy"][-1:])
        logits = last_logits()
    out.append(record)
print(json.dumps(out))
"""


def llama_cpp_run(path, prompts, n_ctx=1024, n_greedy=32):
    pytest.importorskip("llama_cpp")
    done = subprocess.run([sys.executable, "-c", LLAMA_CPP_CHILD, str(path), str(n_ctx), json.dumps(prompts),
                           str(n_greedy)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"llama.cpp failed (status {done.returncode}): {done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


PROMPTS = [[1, 40, 77, 300, 5, 9, 123], [1] + [int(i) for i in np.random.default_rng(3).integers(3, 311, 640)]]
FILES = {
    "llama3 rope_freqs": ({}, True),
    "linear x4": ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 4.0}, False),
    "rope_freqs + linear x2": ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0}, True),
    "linear x2, attn_factor 0.8": ({"llama.rope.scaling.type": "linear", "llama.rope.scaling.factor": 2.0,
                                    "llama.rope.scaling.attn_factor": 0.8}, False),
    # original contexts shorter than the long prompt; llama.cpp's own values in the YaRN keys it ignores
    "yarn x4 over 64": (YARN, False),
    "yarn x3 over 512, attn_factor 0.8, yarn keys": ({
        "llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 3.0,
        "llama.rope.scaling.original_context_length": 512, "llama.rope.scaling.attn_factor": 0.8,
        "llama.rope.scaling.yarn_beta_fast": 32.0, "llama.rope.scaling.yarn_beta_slow": 1.0,
        "llama.rope.scaling.yarn_ext_factor": 1.0}, False),
    "rope_freqs + yarn x2 over 100": ({"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 2.0,
                                      "llama.rope.scaling.original_context_length": 100}, True),
}


@X86_ONLY
@pytest.mark.parametrize("name", sorted(FILES))
def test_logits_and_greedy_ids_equal_llama_cpp(tmp_path, name):
    metadata, factors = FILES[name]
    path = write_llama(tmp_path / "model.gguf", metadata, factors)
    want = llama_cpp_run(path, PROMPTS)
    model = votive.load(str(path), n_ctx=1024)
    assert (model.cfg.rope.freq_factors is not None) == factors
    for ids, ref in zip(PROMPTS, want):
        logits = model.logits(ids)
        np.testing.assert_array_equal(logits.view(np.uint32), np.array(ref["logits"], np.uint32),
                                      err_msg=f"{name}: {len(ids)}-token prompt")
        gen = model.start(ids, max_tokens=32, temperature=0)
        gen.text()
        assert gen.token_ids == ref["greedy"], f"{name}: {len(ids)}-token prompt"


@X86_ONLY
def test_ignoring_the_factors_would_be_caught(tmp_path):
    """The same weights without rope_freqs give other logits: the file-level test above can tell."""
    with_factors = votive.load(str(write_llama(tmp_path / "a.gguf", {}, True)), n_ctx=1024)
    without = votive.load(str(write_llama(tmp_path / "b.gguf", {}, False)), n_ctx=1024)
    assert not np.array_equal(with_factors.logits(PROMPTS[1]), without.logits(PROMPTS[1]))


# ------------------------------------------------------------------------------ YaRN across families, llama.cpp
def _families():
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    import llama_cpp_reference

    return llama_cpp_reference


def yarn_metadata(arch: str, factor: float, original: int, **more) -> dict:
    return {f"{arch}.rope.scaling.type": "yarn", f"{arch}.rope.scaling.factor": factor,
            f"{arch}.rope.scaling.original_context_length": original} | {
        f"{arch}.rope.scaling.{key}": value for key, value in more.items()}


# name -> (family, n_heads, n_kv_heads, head_dim, vocab, extra Shape fields, factor, original context, more keys).
# Ramps (llama.cpp's corr_dims, in pairs): llama (3, 16) of 32, qwen2 (0, 6) of 32, qwen3 (0, 5) of 16, smollm3
# (0, 7) of 32, phi3 over its 48 turned dims (1, 11) of 24.
YARN_FILES = {
    "llama x4 over 512": ("llama", 4, 2, 64, 389, {}, 4.0, 512, {}),
    "qwen2 x8 over 64": ("qwen2", 4, 2, 64, 443, {"tied": True}, 8.0, 64, {}),
    "qwen3 x4 over 256, attn_factor 0.9, yarn keys": ("qwen3", 8, 4, 32, 461, {}, 4.0, 256, {
        "attn_factor": 0.9, "yarn_beta_fast": 32.0, "yarn_beta_slow": 1.0, "yarn_ext_factor": 1.0}),
    "smollm3 x4 over 128": ("smollm3", 4, 1, 64, 383, {"n_layers": 4}, 4.0, 128, {}),
    "phi3 x2.5 over 300, 48 of 64 dims": ("phi3", 4, 2, 64, 389, {"rope_dims": 48}, 2.5, 300, {}),
}
YARN_LONG = 640  # prompt tokens: past every original context above


@pytest.fixture(scope="module")
def yarn_files(tmp_path_factory):
    """name -> (Shape, Q8_0 file quantized by llama.cpp), written on first use."""
    root, out = tmp_path_factory.mktemp("yarn"), {}

    def get(name):
        if name not in out:
            ref = _families()
            family, heads, kv, dh, vocab, extra, factor, original, more = YARN_FILES[name]
            shape = ref.Shape(family, n_heads=heads, n_kv_heads=kv, head_dim=dh, vocab=vocab, **extra)
            f32 = ref.write_f32_gguf(root / f"{len(out)}.F32.gguf", shape,
                                     metadata=yarn_metadata(shape.arch, factor, original, **more))
            out[name] = shape, ref.quantize(f32, root / f"{len(out)}.Q8_0.gguf", "Q8_0")
        return out[name]

    return get


@X86_ONLY
@pytest.mark.parametrize("name", sorted(YARN_FILES))
def test_yarn_files_equal_llama_cpp(yarn_files, name):
    ref = _families()
    shape, path = yarn_files(name)
    model = votive.load(str(path), n_ctx=1024)
    assert model.cfg.rope.scaling_type == "yarn" and model.cfg.rope.ext_factor == 1.0
    with ref.LlamaCpp(path, 1024) as llama:
        for n in (19, YARN_LONG):
            prompt = ref.random_prompt(shape, n, seed=n)
            theirs, their_ids = llama.greedy(prompt, 32)
            ours, our_ids = ref.votive_greedy(model, prompt, 32)
            np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32), err_msg=f"{name}, {n} tokens")
            assert our_ids == their_ids, f"{name}, {n} tokens"
            assert len(their_ids) >= 8, f"{name}: llama.cpp stopped after {len(their_ids)} ids; pick another seed"


@X86_ONLY
@pytest.mark.parametrize("change", ["attn_factor one ulp up", "ramp one pair later", "no ramp"])
def test_a_yarn_setting_off_by_a_little_would_be_caught(yarn_files, change):
    """The bit-for-bit comparison above pins every YaRN argument: each change below moves the logits."""
    ref = _families()
    shape, path = yarn_files("llama x4 over 512")
    model = votive.load(str(path), n_ctx=1024)
    prompt = ref.random_prompt(shape, YARN_LONG, seed=YARN_LONG)
    before = model.logits(prompt)
    rope = model.cfg.rope
    changed = {"attn_factor one ulp up": replace(rope, attn_factor=float(np.nextafter(np.float32(rope.attn_factor),
                                                                                      np.float32(2)))),
               "ramp one pair later": replace(rope, corr_dims=(rope.corr_dims[0], rope.corr_dims[1] + 1)),
               "no ramp": replace(rope, ext_factor=0.0)}[change]
    model.rope = changed.table(model.ops, model.cfg.head_dim, model.n_ctx)
    assert not np.array_equal(model.logits(prompt), before)


# --------------------------------------------------------------------------- YaRN folders, against transformers
def _hf():
    import test_hf_decoders

    return test_hf_decoders


YARN_FOLDERS = ["qwen3_yarn", "llama_yarn", "qwen2_yarn"]


@pytest.mark.parametrize("name", YARN_FOLDERS)
def test_yarn_folders_past_the_original_context_match_transformers(tmp_path, name):
    """A 300-token prompt, past each folder's original context, with transformers' float32 attention: its logits to
    float32 rounding (tests/data/hf_reference/README.md). Without YaRN's attention factor the logits would be off
    by far more."""
    from votive.backends import get_backend
    from votive.models import load_hf_decoder

    hf = _hf()
    folder = hf.hf_folders.write_folder(hf.hf_folders.SPECS[name], tmp_path / name)
    model = load_hf_decoder(folder, hf.Float32Attention(get_backend("numpy")), n_ctx=512)
    prompt, want = hf.hf_folders.LONG_PROMPTS[name], hf.REFERENCE[f"{name}/logits_long"]
    assert model.cfg.rope.scaling_type == "yarn"
    assert np.abs(model.logits(prompt) - want).max() <= hf.FLOAT32_TOL * np.abs(want).max()
    model.rope = replace(model.cfg.rope, attn_factor=model.cfg.rope.attn_factor * 1.001).table(
        model.ops, model.cfg.head_dim, model.n_ctx)
    assert np.abs(model.logits(prompt) - want).max() > 10 * hf.FLOAT32_TOL * np.abs(want).max()


def test_yarn_folder_settings_resolve_as_transformers_resolves_them(tmp_path):
    from votive.models.hf_checkpoint import HFConfig

    hf = _hf()
    ropes = {}
    for name in YARN_FOLDERS:
        folder = hf.hf_folders.write_folder(hf.hf_folders.SPECS[name], tmp_path / name)
        config = HFConfig(folder)
        ropes[name] = config.rope(config.get("head_dim", 32))
    # qwen3: Qwen's defaults, computed as llama.cpp computes them from a GGUF's keys
    assert ropes["qwen3_yarn"].corr_dims == yarn_corr_dims(32, 128, 1e6) == (0.0, 4.0)
    assert ropes["qwen3_yarn"].attn_factor == yarn_attn_factor(0.25)
    # llama: beta_fast 16 / beta_slow 2; magnitude get_mscale(4, 1) / get_mscale(4, 0.5)
    assert ropes["llama_yarn"].corr_dims == correction_range(32, 128, 10000.0, 16.0, 2.0) == (0, 5)
    magnitude = ropes["llama_yarn"].attn_factor * (1 + 0.1 * math.log(4))
    assert magnitude == pytest.approx((0.1 * math.log(4) + 1) / (0.05 * math.log(4) + 1), rel=5e-7)
    # qwen2: the ramp bounds not truncated, attention_factor 1.25
    low, high = ropes["qwen2_yarn"].corr_dims
    assert low == 0.0 and high == pytest.approx(32 * math.log(64 / (2 * math.pi)) / (2 * math.log(10000)), rel=1e-7)
    assert ropes["qwen2_yarn"].attn_factor * (1 + 0.1 * math.log(8)) == pytest.approx(1.25, rel=5e-7)


@pytest.mark.parametrize("name, change, message", [
    ("qwen3_yarn", {"extrapolation_factor": 1.0}, r"rope_scaling.extrapolation_factor = 1.0 is not supported for "
     r"rope_type 'yarn'"),
    ("qwen3_yarn", {"beta_fast": 1.0, "beta_slow": 32.0}, r"rope_scaling beta_fast / beta_slow give YaRN's ramp from "
     r"pair 3 to 0, which ggml's ramp does not compute as transformers does"),
    ("qwen3_yarn", {"factor": "4"}, r"rope_scaling.factor = '4' must be a finite number >= 0"),
    ("qwen3_yarn", {"truncate": "yes"}, r"rope_scaling.truncate = 'yes' must be true or false"),
    ("qwen3_yarn", {"original_max_position_embeddings": 0}, r"rope_scaling.original_max_position_embeddings = 0 "
     r"must be an int > 0"),
])
def test_yarn_folder_settings_votive_cannot_run_are_refused(tmp_path, name, change, message):
    from votive.models import load_model

    hf = _hf()
    spec = hf.hf_folders.SPECS[name]
    scaling = dict(spec["config"]["rope_scaling"], **change)
    folder = hf.hf_folders.write_folder(dict(spec, config=dict(spec["config"], rope_scaling=scaling)), tmp_path / "f")
    with pytest.raises(ModelConfigError, match=message):
        load_model(str(folder), backend="numpy")


def test_yarn_is_refused_for_classes_not_checked_against_transformers(tmp_path):
    from votive.models import load_model

    hf = _hf()
    spec = hf.hf_folders.SPECS["gemma3"]
    config = dict(spec["config"], rope_scaling={"rope_type": "yarn", "factor": 4.0,
                                                "original_max_position_embeddings": 128})
    folder = hf.hf_folders.write_folder(dict(spec, config=config), tmp_path / "g")
    with pytest.raises(ModelConfigError, match=r"rope_scaling.rope_type = 'yarn' is not supported for "
                                               r"Gemma3ForCausalLM \(votive runs YaRN for LlamaForCausalLM, "
                                               r"Qwen2ForCausalLM, Qwen3ForCausalLM\)"):
        load_model(str(folder), backend="numpy")


def test_a_second_original_context_is_refused(tmp_path):
    from votive.models import load_model

    hf = _hf()
    spec = hf.hf_folders.SPECS["qwen3_yarn"]
    folder = hf.hf_folders.write_folder(dict(spec, config=dict(spec["config"], original_max_position_embeddings=64)),
                                        tmp_path / "q")
    with pytest.raises(ModelConfigError, match=r"original_max_position_embeddings = 64 differs from "
                                               r"rope_scaling.original_max_position_embeddings = 128"):
        load_model(str(folder), backend="numpy")


# ------------------------------------------------------------------------------- YaRN folders, converted to GGUF
@X86_ONLY
def test_converted_yarn_folder_equals_llama_cpp_and_the_folder(tmp_path):
    """qwen3_yarn (Qwen's own YaRN setting) converted to Q8_0: the file holds the keys llama.cpp reads, both
    stacks give the same logits bit for bit after the 300-token prompt and the same 32 greedy ids, and votive's
    model of the folder, quantized at load, gives the file's logits exactly (qwen3 keeps HF's Q/K order)."""
    from test_convert import _with_merges

    from votive.builders.gguf_convert import convert_folder
    from votive.formats.gguf import GGUFFile
    from votive.models import load_model

    ref, hf = _families(), _hf()
    folder = _with_merges(hf.hf_folders.SPECS["qwen3_yarn"], tmp_path / "qwen3_yarn")
    path = convert_folder(folder, tmp_path / "q.gguf", "q8_0").path
    metadata = GGUFFile(path).metadata
    assert {k: v for k, v in metadata.items() if k.startswith("qwen3.rope.scaling")} == {
        "qwen3.rope.scaling.type": "yarn", "qwen3.rope.scaling.factor": 4.0,
        "qwen3.rope.scaling.original_context_length": 128}
    prompt = hf.hf_folders.LONG_PROMPTS["qwen3_yarn"]
    with ref.LlamaCpp(path, 512) as llama:
        theirs, their_ids = llama.greedy(prompt, 32)
    model = load_model(str(path), backend="numpy", n_ctx=512)
    ours, our_ids = ref.votive_greedy(model, prompt, 32)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32))
    assert our_ids == their_ids and len(their_ids) >= 8
    from_folder = load_model(str(folder), backend="numpy", n_ctx=512, quantize="q8_0")
    assert from_folder.cfg.rope == model.cfg.rope
    np.testing.assert_array_equal(from_folder.logits(prompt), ours)


@pytest.mark.parametrize("name, change, message", [
    ("llama_yarn", {}, r"rope_scaling.beta_fast = 16.0 cannot be written to a GGUF \(llama.cpp reads no YaRN betas "
     r"for this architecture and uses 32\)"),
    ("qwen2_yarn", {}, r"rope_scaling.attention_factor = 1.25 cannot be written to a GGUF \(llama.cpp computes "
     r"YaRN's attention factor from the factor alone\)"),
    ("qwen2_yarn", {"attention_factor": None}, r"rope_scaling.truncate = False cannot be written to a GGUF \(ggml "
     r"always truncates YaRN's ramp\)"),
    ("qwen3_yarn", {"mscale": 1.0, "mscale_all_dim": 0.5}, r"rope_scaling.mscale / mscale_all_dim cannot be written "
     r"to a GGUF"),
    ("qwen3_yarn", {"factor": None}, r"rope_scaling.factor is absent: llama.cpp's converter writes no YaRN without "
     r"it"),
    ("qwen3_yarn", {"beta_slow": 2.0}, r"rope_scaling.beta_slow = 2.0 cannot be written to a GGUF"),
])
def test_yarn_a_gguf_cannot_carry_is_refused_by_the_converter(tmp_path, name, change, message):
    from test_convert import _with_merges

    from votive.builders.gguf_convert import convert_folder

    hf = _hf()
    spec = hf.hf_folders.SPECS[name]
    scaling = {k: v for k, v in dict(spec["config"]["rope_scaling"], **change).items() if v is not None}
    folder = _with_merges(dict(spec, config=dict(spec["config"], rope_scaling=scaling)), tmp_path / name)
    with pytest.raises(ModelConfigError, match=message):
        convert_folder(folder, tmp_path / "x.gguf", "q8_0")
    assert not (tmp_path / "x.gguf").exists()

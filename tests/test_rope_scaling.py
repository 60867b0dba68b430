"""RoPE scaling as llama.cpp computes it: the table kernel against its twin, and Llama 3-style files against
llama.cpp itself.

- The table (votive/quant/csrc/decoder_kernels.c rope_cache_rows, ggml's ggml_rope_cache_init) equals its numpy
  twin (kernels_ref.rope_cache_ref) bit for bit, for each combination of frequency factors, linear scale, YaRN
  ramp and attention factor; with no scaling it is the plain table.
- A random-weight Llama file carrying `rope_freqs.weight` (the factors computed as llama.cpp's
  convert_hf_to_gguf.py computes Llama 3.1's "llama3" scaling), or linear scaling, gives llama.cpp's logits bit
  for bit after a short prompt and after a 600-token one, and its 32 greedy ids. llama.cpp runs in a
  subprocess (llama-cpp-python 0.3.36), so an illegal instruction there fails one test, not the run.
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
from votive.models.rope_scaling import read_rope
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


@pytest.mark.parametrize("key, value, message", [
    ("llama.rope.scaling.type", "yarn", "fake.gguf: llama.rope.scaling.type = 'yarn' is not supported yet (YaRN "
     "scaling; supported: none, linear, and rope_freqs frequency factors)"),
    ("llama.rope.scaling.type", "longrope", "fake.gguf: llama.rope.scaling.type = 'longrope' is not supported for "
     "architecture 'llama' (votive runs longrope as llama.cpp does, for phi3 only)"),
    ("llama.rope.scaling.type", "ntk", "fake.gguf: llama.rope.scaling.type = 'ntk' is not a RoPE scaling type votive "
     "implements (supported: none, linear)"),
    ("llama.rope.dimension_count", 8, "fake.gguf: llama.rope.dimension_count = 8 rotates part of each head (head "
     "size 16); partial rotary RoPE is not implemented"),
    ("llama.rope.scaling.attn_factor", 0.5, "fake.gguf: llama.rope.scaling.attn_factor = 0.5 is not supported (only "
     "1: RoPE without a magnitude factor)"),
    ("llama.rope.scaling.yarn_beta_fast", 32.0, "fake.gguf: llama.rope.scaling.yarn_beta_fast = 32.0 is a YaRN "
     "setting; YaRN is not supported yet"),
])
def test_unsupported_rope_settings_are_refused_naming_the_key(key, value, message):
    with pytest.raises(ModelConfigError) as caught:
        read_rope(fake({key: value}), "llama", 16)
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


def test_a_yarn_file_is_refused_at_load(tmp_path):
    path = write_llama(tmp_path / "yarn.gguf", {"llama.rope.scaling.type": "yarn", "llama.rope.scaling.factor": 4.0})
    with pytest.raises(ModelConfigError, match="llama.rope.scaling.type = 'yarn' is not supported yet"):
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

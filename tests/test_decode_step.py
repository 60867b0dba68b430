"""The C decode step (votive/models/decode_step.py, csrc/decode_step.c) against its slow twin, the Python forward.

Every family the step takes must give, token after token, the logits the forward gives, bit for bit: GGUF files
of each family quantized by llama.cpp (the paths tests/test_decoder_families.py and tests/test_phi3_smollm3.py
hold to llama.cpp's own logits, now with the step in them), Hugging Face folders quantized at load (Gemma 3's
among them: local and global layers, norms after each block, GeGLU), and the packaged real models. Families whose
layer the step does not know (phi3's partial rotary and fused products) are left to the forward, as is any class
that changes the layer without saying what it adds.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from llama_cpp_reference import ReferenceFiles, Shape, random_prompt
from votive.errors import KernelError
from votive.models import load_model
from votive.models.decode_step import DecodeStep, decode_step_for
from votive.quant import kernels

pytestmark = pytest.mark.skipif(kernels.get() is None, reason="the C library is not built here")

STEPS = 24
SHAPES = [
    Shape("llama", n_heads=8, n_kv_heads=2, head_dim=64, vocab=401, tied=True),
    Shape("mistral", n_heads=4, n_kv_heads=1, head_dim=64, vocab=373, window=16),  # the prompt outgrows it
    Shape("qwen2", n_heads=4, n_kv_heads=2, head_dim=64, vocab=443),
    Shape("qwen3", n_heads=4, n_kv_heads=1, head_dim=128, vocab=449, tied=True),
    Shape("smollm3", n_heads=8, n_kv_heads=2, head_dim=32, vocab=397, n_layers=4),  # layer 4 has no RoPE
]
TAKEN = {"llama", "mistral", "qwen2", "qwen3", "smollm3"}


def _hf_folders():
    data = Path(__file__).parent / "data" / "hf_reference" / "hf_folders.py"
    spec = importlib.util.spec_from_file_location("hf_folders", data)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hf_folders = _hf_folders()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> ReferenceFiles:
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    return ReferenceFiles(tmp_path_factory.mktemp("decode_step"))


def _decode(model, prompt: list[int], steps: int, *, step: bool, monkeypatch) -> list[np.ndarray]:
    """The logits after the prompt and after each of `steps` greedy tokens, with the step on or off."""
    monkeypatch.setenv("VOTIVE_DECODE_STEP", "1" if step else "0")
    model._step = False  # asked again under this setting
    cache = model.new_cache()
    logits = [model.forward(prompt, cache, 0)]
    for pos in range(len(prompt), len(prompt) + steps):
        logits.append(model.forward([int(np.argmax(logits[-1]))], cache, pos))
    assert (model._step is not None) == step
    return logits


def _assert_same(model, prompt, monkeypatch):
    slow = _decode(model, prompt, STEPS, step=False, monkeypatch=monkeypatch)
    fast = _decode(model, prompt, STEPS, step=True, monkeypatch=monkeypatch)
    for k, (a, b) in enumerate(zip(slow, fast)):
        assert np.array_equal(a, b), f"token {k}: logits differ by up to {np.abs(a - b).max():.3g}"


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_gguf_decoders_decode_the_same_through_the_step(files, shape, quant, monkeypatch):
    model = load_model(str(files.quantized(shape, quant)), backend="numpy", n_ctx=128)
    assert decode_step_for(model) is not None
    _assert_same(model, random_prompt(shape, 21, seed=3), monkeypatch)


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3", "gemma3"])  # (mistral's rows of 48: not Q8_0 blocks)
def test_hf_folders_quantized_at_load_decode_the_same_through_the_step(name, tmp_path, monkeypatch):
    folder = hf_folders.write_folder(hf_folders.SPECS[name], tmp_path / name)
    model = load_model(str(folder), backend="numpy", n_ctx=128, quantize="q8_0")
    _assert_same(model, hf_folders.PROMPTS[1], monkeypatch)


@pytest.mark.parametrize("alias", ["smollm2", "gemma3"])
def test_the_packaged_models_decode_the_same_through_the_step(alias, monkeypatch):
    model = load_model(alias, backend="numpy", n_ctx=96)
    _assert_same(model, model.tokenize("The capital of France is Paris, and the capital of Italy is"), monkeypatch)


def test_families_whose_layer_the_step_does_not_know_stay_with_the_forward(tmp_path):
    folder = hf_folders.write_folder(hf_folders.SPECS["phi3"], tmp_path / "phi3")
    assert decode_step_for(load_model(str(folder), backend="numpy", n_ctx=64, quantize="q8_0")) is None


def test_a_family_changing_its_layer_without_saying_so_is_left_to_the_forward(tmp_path):
    folder = hf_folders.write_folder(hf_folders.SPECS["llama"], tmp_path / "llama")
    model = load_model(str(folder), backend="numpy", n_ctx=64, quantize="q8_0")
    assert decode_step_for(model) is not None

    class Scaled(type(model)):
        def qkv(self, w, x):  # a change the step would not make
            q, k, v = super().qkv(w, x)
            return q * 2, k, v

    model.__class__ = Scaled
    assert decode_step_for(model) is None


def test_a_malformed_switch_is_refused(tmp_path, monkeypatch):
    folder = hf_folders.write_folder(hf_folders.SPECS["llama"], tmp_path / "llama")
    model = load_model(str(folder), backend="numpy", n_ctx=64, quantize="q8_0")
    monkeypatch.setenv("VOTIVE_DECODE_STEP", "off")
    with pytest.raises(KernelError, match="VOTIVE_DECODE_STEP must be 0 or 1, found 'off'"):
        model.forward([5], model.new_cache(), 0)


def test_unquantized_or_float32_caches_are_left_to_the_forward(tmp_path):
    folder = hf_folders.write_folder(hf_folders.SPECS["llama"], tmp_path / "llama")
    assert decode_step_for(load_model(str(folder), backend="numpy", n_ctx=64)) is None  # BF16 products: BLAS
    model = load_model(str(folder), backend="numpy", n_ctx=64, quantize="q8_0")
    step = decode_step_for(model)
    assert isinstance(step, DecodeStep)
    cache = model.new_cache()
    x = model.w["tok_embed"].rows([5])
    assert step.takes(x, cache, 0) and not step.takes(x, cache, 64)  # past the cache: the forward says so
    cache.k, cache.v = cache.k.astype(np.float32), cache.v.astype(np.float32)
    assert not step.takes(x, cache, 0)

"""Hugging Face decoder folders (config.json + safetensors + tokenizer.json) against transformers' own numbers.

The folders are rebuilt here from the seeds in tests/data/hf_reference/hf_folders.py (numpy only); the logits and
greedy ids transformers computed for them are in tests/data/hf_reference/reference.npz (README.md there says how
they were made). No torch is imported.

Tolerance. votive's decoder attention is llama.cpp's arithmetic: the KV cache holds float16, and queries and
attention probabilities are rounded to half before their products (votive/backends/numpy_backend.py
causal_attention). transformers' eager attention is float32 throughout. So the logits differ by a few half-precision
roundings (2^-11 relative, unit roundoff 4.9e-4) carried through the residual stream: we allow
max|diff| <= LOGIT_TOL * max|logit|, and measured at most 4.5e-4. That this is the only difference is shown by
`test_logits_with_float32_attention`, which swaps in a float32 attention and then agrees to FLOAT32_TOL (measured
4e-7 relative): every other step (weights widened exactly from BF16 / F16, RoPE with Llama 3 factors, the window,
biases, q/k norms) is transformers' float32 arithmetic up to summation order.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from votive.backends import get_backend
from votive.backends.numpy_linears import DenseLinear, QuantLinear
from votive.errors import InputError, ModelConfigError
from votive.formats.weights import bf16_to_f32
from votive.models import load_hf_decoder, load_model
from votive.quant.ggml_types import GGMLType

DATA = Path(__file__).parent / "data" / "hf_reference"
LOGIT_TOL = 1e-3  # relative to the largest |logit|: float16 attention (module docstring)
FLOAT32_TOL = 1e-5  # the same, with float32 attention
MIN_GREEDY = 16  # greedy steps that must agree before any near tie


def _hf_folders():
    spec = importlib.util.spec_from_file_location("hf_folders", DATA / "hf_folders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


hf_folders = _hf_folders()
REFERENCE = np.load(DATA / "reference.npz")
FAMILIES = list(hf_folders.SPECS)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {name: hf_folders.write_folder(spec, root / name) for name, spec in hf_folders.SPECS.items()}


# A context of 256 keeps phi3 within its original context, so votive turns RoPE by longrope's short factors, as
# transformers does for sequences that short (votive picks the factors by the context it allocates, as llama.cpp).
N_CTX = 256


@pytest.fixture(scope="module")
def models(folders):
    return {name: load_model(str(path), backend="numpy", n_ctx=N_CTX) for name, path in folders.items()}


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def _greedy(model, prompt: list[int], steps: int) -> list[int]:
    cache = model.new_cache()
    logits, ids = model.forward(prompt, cache, 0), []
    for _ in range(steps):
        ids.append(int(np.argmax(logits)))
        logits = model.forward([ids[-1]], cache, len(prompt) + len(ids) - 1)
    return ids


# ------------------------------------------------------------------------------------------ against transformers
@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("k", range(len(hf_folders.PROMPTS)))
def test_logits_match_transformers(models, name, k):
    want = REFERENCE[f"{name}/logits{k}"]
    got = models[name].logits(hf_folders.PROMPTS[k])
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= LOGIT_TOL * np.abs(want).max()
    assert set(np.argsort(got)[-10:]) == set(np.argsort(want)[-10:])


class Float32Attention:
    """The numpy backend with float32 keys, values and attention (and GELU), transformers' eager arithmetic."""

    def __init__(self, ops):
        self._ops = ops

    def __getattr__(self, name):
        return getattr(self._ops, name)

    @staticmethod
    def kv_cache(n_layers, n_kv_heads, n_ctx, head_dim):
        return (np.zeros((n_layers, n_kv_heads, n_ctx, head_dim), np.float32),  # keys (L, Hkv, ctx, Dh)
                np.zeros((n_layers, n_kv_heads, head_dim, n_ctx), np.float32))  # values (L, Hkv, Dh, ctx)

    @staticmethod
    def geglu(gate, up):
        """Gemma's gelu_pytorch_tanh(gate) * up in float32 (votive's CPU looks GELU up in ggml's half table)."""
        inner = np.float32(math.sqrt(2 / math.pi)) * (gate + np.float32(0.044715) * gate**3)
        return np.float32(0.5) * gate * (np.float32(1) + np.tanh(inner)) * up

    @staticmethod
    def causal_attention(q, k, v, q_start, scale, window=None):
        n, heads, _ = q.shape
        group = heads // k.shape[0]
        out = np.empty_like(q)  # (n, H, Dh)
        for i in range(n):
            pos = q_start + i
            lo = max(0, pos - window + 1) if window else 0
            for h in range(heads):
                s = k[h // group, lo : pos + 1] @ q[i, h] * scale  # (keys,)
                p = np.exp(s - s.max())
                out[i, h] = v[h // group, :, lo : pos + 1] @ (p / p.sum())
        return out


@pytest.mark.parametrize("name", FAMILIES)
def test_logits_with_float32_attention(folders, name):
    model = load_hf_decoder(folders[name], Float32Attention(get_backend("numpy")), n_ctx=N_CTX)
    for k, prompt in enumerate(hf_folders.PROMPTS):
        want = REFERENCE[f"{name}/logits{k}"]
        assert np.abs(model.logits(prompt) - want).max() <= FLOAT32_TOL * np.abs(want).max()


@pytest.mark.parametrize("name", FAMILIES)
@pytest.mark.parametrize("k", range(len(hf_folders.PROMPTS)))
def test_greedy_ids_match_transformers(models, name, k):
    want = REFERENCE[f"{name}/greedy{k}"]
    margins = REFERENCE[f"{name}/margin{k}"]
    tol = LOGIT_TOL * np.abs(REFERENCE[f"{name}/logits{k}"]).max()
    steps = int(np.argmax(margins < 2 * tol)) if (margins < 2 * tol).any() else len(want)  # up to a near tie
    assert steps >= MIN_GREEDY
    assert _greedy(models[name], hf_folders.PROMPTS[k], steps) == want[:steps].tolist()


def test_phi3_longrope_long_factors_past_the_original_context(folders):
    """A 300-token prompt in a 512-token context: past the original 256, both stacks turn by the long factors."""
    model = load_hf_decoder(folders["phi3"], Float32Attention(get_backend("numpy")), n_ctx=512)
    want = REFERENCE["phi3/logits_long"]
    assert np.abs(model.logits(hf_folders.LONG_PROMPTS["phi3"]) - want).max() <= FLOAT32_TOL * np.abs(want).max()


@pytest.mark.parametrize("change, message", [
    ({"rope_scaling": {"type": "longrope", "short_factor": [1.0] * 5, "long_factor": [1.0] * 6}},
     r"rope_scaling.short_factor must list 6 numbers > 0"),
    ({"partial_rotary_factor": 0.1}, r"partial_rotary_factor = 0.1 turns 1 of 16 dims"),
    ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, r"rope_type = 'dynamic' is not supported for Phi-3"),
])
def test_phi3_rope_settings_votive_cannot_run_are_refused(folders, tmp_path, change, message):
    folder = _copy(folders["phi3"], tmp_path)
    _edit_config(folder, **change)
    with pytest.raises(ModelConfigError, match=message):
        load_model(str(folder), backend="numpy")


@pytest.mark.parametrize("change, message", [
    ({"final_logit_softcapping": 30.0}, r"final_logit_softcapping = 30.0 is not supported"),
    ({"layer_types": ["sliding_attention", "full_attention", "full_attention"]},
     r"layer_types is not one global layer every 2"),
    ({"hidden_activation": "gelu"}, r"hidden_activation = 'gelu' is not supported"),
    ({"tie_word_embeddings": False}, r"tie_word_embeddings = False is not supported"),
])
def test_gemma3_settings_votive_cannot_run_are_refused(folders, tmp_path, change, message):
    folder = _copy(folders["gemma3"], tmp_path)
    _edit_config(folder, **change)
    with pytest.raises(ModelConfigError, match=message):
        load_model(str(folder), backend="numpy")


def test_gemma3_norms_are_one_plus_the_stored_weight(models):
    """Gemma3RMSNorm multiplies by 1 + w: the stored BF16 w, widened exactly, plus 1 in float32."""
    spec = hf_folders.SPECS["gemma3"]
    stored = bf16_to_f32(hf_folders.stored(hf_folders.draw_weights(spec)["model.norm.weight"], "BF16"))
    assert np.array_equal(models["gemma3"].w["norm"], stored + np.float32(1))


# --------------------------------------------------------------------------------------------- weights as stored
def test_bf16_weights_are_widened_exactly(models):
    spec = hf_folders.SPECS["llama"]
    bits = hf_folders.stored(hf_folders.draw_weights(spec)["model.layers.1.mlp.down_proj.weight"], "BF16")
    linear = models["llama"].layers[1]["w_down"]
    assert isinstance(linear, DenseLinear)
    assert np.array_equal(linear.weight.view(np.uint32), bf16_to_f32(bits).view(np.uint32))


def test_float32_weights_stay_views_of_the_file(models):
    weight = models["mistral"].layers[0]["wq"].weight  # mistral's folder is F32
    assert weight.dtype == np.float32 and not weight.flags.owndata and not weight.flags.writeable


def test_quantize_q8_0_at_load(folders, models):
    model = load_model(str(folders["qwen3"]), backend="numpy", quantize="q8_0")
    wq = model.layers[0]["wq"]
    assert isinstance(wq, QuantLinear) and wq.ggml_type == GGMLType.Q8_0
    from votive.quant.codecs import quantize

    f32 = bf16_to_f32(hf_folders.stored(hf_folders.draw_weights(hf_folders.SPECS["qwen3"])[
        "model.layers.0.self_attn.q_proj.weight"], "BF16"))
    assert np.array_equal(np.asarray(wq.blocks), quantize(f32, GGMLType.Q8_0.id))
    exact, quantized = models["qwen3"].logits(hf_folders.PROMPTS[0]), model.logits(hf_folders.PROMPTS[0])
    assert np.abs(quantized - exact).max() <= 0.05 * np.abs(exact).max()  # Q8_0: ~0.4% per weight
    assert np.argmax(quantized) == np.argmax(exact)


def test_quantize_choices_are_checked(folders):
    with pytest.raises(InputError, match=r"quantize='q5' is not a choice \(choices: q8_0, q4_k_m, int8, or None\)"):
        load_model(str(folders["llama"]), quantize="q5")
    with pytest.raises(InputError, match="quantize='int8' .* is for embedding encoders; a decoder quantizes to q8_0"):
        load_model(str(folders["llama"]), quantize="int8")


# ---------------------------------------------------------------------------------------------------- bad input
def test_a_tensor_of_another_shape_is_refused(folders, tmp_path):
    folder = _copy(folders["qwen2"], tmp_path)
    _edit_config(folder, intermediate_size=128)
    with pytest.raises(ModelConfigError, match=r"tensor 'model.layers.0.mlp.gate_proj.weight' has shape "
                                               r"\(160, 96\) but config.json implies \(128, 96\)"):
        load_model(str(folder), backend="numpy")


def test_more_layers_than_the_config_says_are_refused(folders, tmp_path):
    folder = _copy(folders["mistral"], tmp_path)
    _edit_config(folder, num_hidden_layers=2)
    with pytest.raises(ModelConfigError, match=r"tensor 'model.layers.2.input_layernorm.weight' exists but "
                                               r"config.json says num_hidden_layers = 2"):
        load_model(str(folder), backend="numpy")


def test_an_lm_head_the_config_ties_away_is_refused(folders, tmp_path):
    folder = _copy(folders["llama"], tmp_path)
    _edit_config(folder, tie_word_embeddings=True)
    with pytest.raises(ModelConfigError, match=r"'lm_head.weight' exists but config.json says tie_word_embeddings"):
        load_model(str(folder), backend="numpy")


@pytest.mark.parametrize("scaling, message", [
    ({"rope_type": "dynamic", "factor": 4.0}, r"rope_scaling.rope_type = 'dynamic' is not supported"),
    ({"rope_type": "linear", "factor": 2.0, "attention_factor": 0.5},
     r"rope_scaling.attention_factor = 0.5 is not supported for rope_type 'linear'"),
])
def test_rope_scaling_votive_cannot_run_is_refused(folders, tmp_path, scaling, message):
    folder = _copy(folders["llama"], tmp_path)
    _edit_config(folder, rope_scaling=scaling)
    with pytest.raises(ModelConfigError, match=message):
        load_model(str(folder), backend="numpy")


def test_an_unknown_decoder_class_is_refused_by_name(folders, tmp_path):
    folder = _copy(folders["qwen2"], tmp_path)
    _edit_config(folder, architectures=["FalconForCausalLM"])
    with pytest.raises(ModelConfigError, match=r"architecture 'FalconForCausalLM' is not supported \(supported: "
                                               r"LlamaForCausalLM, MistralForCausalLM"):
        load_model(str(folder), backend="numpy")


def test_qwen_sliding_window_is_refused(folders, tmp_path):
    folder = _copy(folders["qwen3"], tmp_path)
    _edit_config(folder, use_sliding_window=True, sliding_window=4)
    with pytest.raises(ModelConfigError, match=r"use_sliding_window = True is not supported"):
        load_model(str(folder), backend="numpy")


def test_missing_tokenizers_library_is_named(monkeypatch):
    from votive.text import hf_tokenizer

    monkeypatch.setitem(sys.modules, "tokenizers", None)
    with pytest.raises(ModelConfigError, match=r"needs the `tokenizers` library.*votive\[tokenizers\]"):
        hf_tokenizer._import_tokenizers()


# ------------------------------------------------------------------------------------------ tokenizer and serving
def test_end_ids_bos_and_chat_template(models):
    llama, qwen = models["llama"].tokenizer, models["qwen2"].tokenizer
    assert models["llama"].eos_ids == {257, 260}  # <|end_of_text|>, <|eot_id|> (EOS of every file)
    assert models["qwen2"].eos_ids == {256, 258}  # <|endoftext|>, <|im_end|>
    assert llama.encode("Hi") == [256, 72, 105]  # the post-processor's BOS
    assert qwen.encode("Hi") == [72, 105]
    # the template writes BOS; transformers encodes a chat without the post-processor, so BOS comes once
    assert llama.encode_chat([{"role": "user", "content": "Hi"}]) == [256, 258, *b"user", 259, 10, 10, 72, 105,
                                                                      260, 258, *b"assistant", 259, 10, 10]
    assert qwen.render_chat([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_streamed_text_is_the_decoded_ids(models):
    model = models["qwen3"]
    generation = model.start(hf_folders.PROMPTS[1], max_tokens=12)
    pieces = list(generation)
    assert "".join(pieces) == model.tokenizer.decode(generation.token_ids)
    assert generation.completion_tokens == 12 or generation.finish_reason == "stop"


def test_serve_picks_the_handler_by_model_kind(folders, tmp_path):
    from votive.cli.serve import DEFAULT_HANDLER, GENERATION_HANDLER, default_handler
    from votive.sources import resolve_source

    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"")
    assert default_handler(resolve_source(str(folders["llama"]))) == GENERATION_HANDLER
    assert default_handler(resolve_source(str(folders["qwen3"]))) == GENERATION_HANDLER
    assert default_handler(resolve_source(str(encoder))) == DEFAULT_HANDLER
    assert default_handler(resolve_source(str(gguf))) == GENERATION_HANDLER

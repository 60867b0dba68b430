"""phi3 (Phi-3 / Phi-4-mini) and smollm3 against llama.cpp on random-weight files (tests/llama_cpp_reference.py).

Each shape is written in F32 as llama.cpp's converter lays these families out (phi3: fused attn_qkv and gate/up
in ffn_up, optionally longrope's two factor tensors, its attention factor and a partial rotary; smollm3: LLaMA's
tensors), quantized by llama.cpp to Q4_K_M and Q8_0, and run by both stacks: the logits after a prompt must be
llama.cpp's bit for bit and 32 greedy ids its ids, also after 640-token prompts. The longrope shape runs in a
context under its original one (short factors) and in one over it (long factors); smollm3's shapes have four
layers, so that layer 3 is one without RoPE. A phi3 window longer than the prompt changes nothing (llama.cpp
reads no window for phi3); a shorter one is held to transformers' Phi3ForCausalLM.
"""

from __future__ import annotations

import platform
from dataclasses import replace

import numpy as np
import pytest
from llama_cpp_reference import (
    LlamaCpp,
    ReferenceFiles,
    Shape,
    quantize,
    random_prompt,
    random_tensors,
    votive_greedy,
    write_f32_gguf,
)

import votive
from votive.errors import ModelConfigError
from votive.text.gguf_tokenizer import GGUFTokenizer

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

X86_ONLY = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason=f"bit-exact parity with llama.cpp holds on x86 only (this is {platform.machine()})")

# MHA and GQA 4, tied and separate outputs; LONGROPE is Phi-4-mini in small: tied, 3/4 of each head rotated,
# longrope factors with an original context of 1024 in a context of 4096 (attention factor 1.095).
LONGROPE = Shape("phi3", n_heads=8, n_kv_heads=2, head_dim=32, vocab=401, tied=True, rope_dims=24, context=4096,
                 original_context=1024)
SHAPES = [
    Shape("phi3", n_heads=4, n_kv_heads=4, head_dim=64, vocab=389),
    LONGROPE,
    Shape("smollm3", n_heads=8, n_kv_heads=2, head_dim=32, vocab=397, n_layers=4),
    Shape("smollm3", n_heads=4, n_kv_heads=1, head_dim=64, vocab=383, n_layers=4, tied=True),
]
QUANTS = ("Q4_K_M", "Q8_0")
GREEDY_STEPS = 32
LONG_PROMPT = 640


def prompt_for(shape: Shape) -> list[int]:
    i = SHAPES.index(shape)
    return random_prompt(shape, 19 + 5 * i, seed=10 + i)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> ReferenceFiles:
    return ReferenceFiles(tmp_path_factory.mktemp("phi3_smollm3"))




# ------------------------------------------------------------------------------------ logits and greedy ids
@X86_ONLY
@pytest.mark.parametrize("shape, quant", [pytest.param(s, q, id=f"{s.name}-{q}") for s in SHAPES for q in QUANTS])
def test_logits_and_greedy_ids_equal_llama_cpp(files, shape, quant):
    theirs, their_ids = files.llama_cpp(shape, quant, prompt_for(shape), GREEDY_STEPS)
    ours, our_ids = votive_greedy(files.votive(shape, quant), prompt_for(shape), GREEDY_STEPS)
    assert ours.shape == (shape.vocab,)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32), err_msg=f"{shape.name} {quant}")
    assert our_ids == their_ids, f"{shape.name} {quant}"
    assert len(their_ids) >= 8, f"{shape.name} {quant}: llama.cpp stopped after {len(their_ids)} ids; pick another seed"


@X86_ONLY
@pytest.mark.parametrize("shape, n_ctx, long", [
    pytest.param(LONGROPE, 1024, False, id="longrope-under-the-original-context"),
    pytest.param(LONGROPE, 2048, True, id="longrope-over-the-original-context"),
    pytest.param(SHAPES[0], 1024, False, id="phi3-mha"),
    pytest.param(SHAPES[2], 1024, False, id="smollm3"),
])
def test_long_prompt_logits_and_greedy_ids_equal_llama_cpp(files, shape, n_ctx, long):
    prompt = random_prompt(shape, LONG_PROMPT, seed=99)
    theirs, their_ids = files.llama_cpp(shape, "Q4_K_M", prompt, GREEDY_STEPS, n_ctx=n_ctx)
    model = files.votive(shape, "Q4_K_M", n_ctx=n_ctx)
    if shape.original_context:
        rope = model.cfg.rope
        assert rope.factors(n_ctx) is (rope.long_factors if long else rope.freq_factors)
    ours, our_ids = votive_greedy(model, prompt, GREEDY_STEPS)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32), err_msg=f"{shape.name} {n_ctx}")
    assert our_ids == their_ids, f"{shape.name} {n_ctx}"


@X86_ONLY
def test_the_factor_sets_and_the_rope_less_layers_change_the_logits(files, tmp_path):
    """What the tests above hold votive to can fail: the long factors give other logits than the short ones, and
    smollm3's weights run as llama (RoPE in every layer) give other logits than smollm3's."""
    prompt = random_prompt(LONGROPE, LONG_PROMPT, seed=99)
    short = files.votive(LONGROPE, "Q4_K_M", n_ctx=1024).logits(prompt)
    assert not np.array_equal(short, files.votive(LONGROPE, "Q4_K_M", n_ctx=2048).logits(prompt))
    shape = SHAPES[2]
    as_llama = votive.load(str(quantize(write_f32_gguf(tmp_path / "llama.gguf", shape, arch="llama"),
                                        tmp_path / "llama.Q8_0.gguf", "Q8_0")), n_ctx=512)
    assert not np.array_equal(as_llama.logits(prompt_for(shape)), files.votive(shape, "Q8_0").logits(prompt_for(shape)))


# --------------------------------------------------------------------------------------------- phi3's window
@X86_ONLY
def test_a_phi3_window_longer_than_the_prompt_changes_nothing(files):
    windowed = replace(SHAPES[0], window=2047)  # Phi-3-mini-4k's sliding_window
    assert files.votive(windowed, "Q8_0").cfg.window == 2047
    theirs, _ = files.llama_cpp(windowed, "Q8_0", prompt_for(SHAPES[0]), 0)
    np.testing.assert_array_equal(files.votive(windowed, "Q8_0").logits(prompt_for(SHAPES[0])), theirs)


def transformers_phi3_logits(shape: Shape, tensors: dict, prompt: list[int], window: int | None) -> np.ndarray:
    """transformers' Phi3ForCausalLM (eager attention, float32) on the same weights: logits after `prompt`."""
    import torch
    from transformers import Phi3Config, Phi3ForCausalLM

    config = Phi3Config(vocab_size=shape.vocab, hidden_size=shape.dim, intermediate_size=shape.ffn_dim,
                        num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
                        num_key_value_heads=shape.n_kv_heads, rms_norm_eps=1e-6, rope_theta=10000.0,
                        max_position_embeddings=shape.context, original_max_position_embeddings=shape.context,
                        sliding_window=window, tie_word_embeddings=False, attn_implementation="eager",
                        pad_token_id=0, bos_token_id=1, eos_token_id=2)
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm": "input_layernorm", "attn_qkv": "self_attn.qkv_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_up": "mlp.gate_up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(shape.n_layers):
        names |= {f"blk.{i}.{ours}.weight": f"model.layers.{i}.{theirs}.weight" for ours, theirs in per_layer.items()}
    model = Phi3ForCausalLM(config).eval()
    model.load_state_dict({names[k]: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0, -1].numpy()


def test_a_phi3_window_attends_as_transformers(files):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    shape = replace(SHAPES[0], window=24)
    prompt = random_prompt(shape, 80, seed=5)  # past the 24-key window, in both layers
    model = votive.load(str(files.f32(shape)), n_ctx=256)
    ours = model.logits(prompt)
    tensors = random_tensors(shape)
    windowed = transformers_phi3_logits(shape, tensors, prompt, shape.window)
    full = transformers_phi3_logits(shape, tensors, prompt, None)
    # votive rounds keys, values, queries and attention weights to half as llama.cpp does; transformers does not
    tolerance = 0.001 * float(windowed.max() - windowed.min())
    assert np.abs(windowed - ours).max() <= tolerance
    assert np.abs(full - ours).max() > 10 * tolerance  # the window changes these logits: the check can fail


# ------------------------------------------------------------------------------------ chat and end of turn
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
PHI3 = SHAPES[0]  # separate output.weight: the stop test rewrites one of its rows


def test_phi3_chat_template_renders_as_transformers(files):
    pytest.importorskip("transformers")
    from transformers.utils.chat_template_utils import render_jinja_template

    tokenizer = files.votive(PHI3, "Q8_0").tokenizer
    for messages in (CHAT, [{"role": "system", "content": "Be brief."}, *CHAT]):
        for generation_prompt in (True, False):
            (theirs,), _ = render_jinja_template([messages], chat_template=tokenizer.chat_template_source,
                                                 add_generation_prompt=generation_prompt, eos_token="<|endoftext|>")
            assert tokenizer.render_chat(messages, add_generation_prompt=generation_prompt) == theirs
    assert tokenizer.render_chat(CHAT) == "<|user|>\nWhat is the capital of France?<|end|>\n<|assistant|>\n"


def test_phi3_chat_specials_are_single_ids(files):
    model = files.votive(PHI3, "Q8_0")
    specials = {model.tokenizer.vocab[s]: s for s in ("<|user|>", "<|end|>", "<|assistant|>")}
    assert [specials[t] for t in model.tokenizer.encode_chat(CHAT) if t in specials] == list(specials.values())


def test_phi3_chat_prompt_ids_equal_llama_cpp(files):
    """llama.cpp's llama-vocab.cpp gives every special token but <unk>, <s> and <|endoftext|> the RSTRIP attribute
    when general.name contains 'phi-3' or 'phi3' (this file's does): whitespace after them is dropped
    ('<|user|>\\nWhat' -> <|user|>, '\u2581What'). A model of another name keeps it."""
    model = files.votive(PHI3, "Q8_0")
    with LlamaCpp(files.quantized(PHI3, "Q8_0")) as reference:
        assert model.tokenizer.encode_chat(CHAT) == reference.tokenize(model.tokenizer.render_chat(CHAT))
    text = model.tokenizer.render_chat(CHAT)
    other = GGUFTokenizer(replace(model.tokenizer.spec, model_name="Some Other Model"))
    assert len(other.encode(text)) > len(model.tokenizer.encode(text))  # the whitespace stays, as tokens


@X86_ONLY
def test_phi3_generation_stops_at_end(files):
    """PHI3 with <|end|>'s output row set to 1.5 times that of the 4th token llama.cpp generates after the chat
    prompt, so that greedy decoding reaches <|end|> (which is not the file's EOS, <|endoftext|>) in a few steps."""
    plain = files.votive(PHI3, "Q8_0")
    end = plain.tokenizer.vocab["<|end|>"]
    assert end in plain.eos_ids and end != plain.tokenizer.vocab["<|endoftext|>"]
    prompt = plain.tokenizer.encode_chat(CHAT)
    _, tokens = files.llama_cpp(PHI3, "Q8_0", prompt, GREEDY_STEPS)
    assert len(tokens) > 3, f"llama.cpp ended the turn after {len(tokens)} tokens already; pick another seed"
    tensors = random_tensors(PHI3)
    tensors["output.weight"][end] = 1.5 * tensors["output.weight"][tokens[3]]
    folder = files.folder / "ends_turn"
    folder.mkdir()
    path = quantize(write_f32_gguf(folder / "f32.gguf", PHI3, tensors), folder / "q8_0.gguf", "Q8_0")
    with LlamaCpp(path) as reference:
        _, theirs = reference.greedy(prompt, GREEDY_STEPS)
        last = reference.logits(prompt + theirs)
    assert len(theirs) < GREEDY_STEPS and int(np.argmax(last)) == end, "the rigged row did not end the turn"
    generation = votive.load(str(path), n_ctx=512).start(prompt, max_tokens=GREEDY_STEPS, temperature=0)
    text = generation.text()
    assert generation.token_ids == theirs and generation.finish_reason == "stop" and "<|end|>" not in text


# --------------------------------------------------------------------------------------------- refusals
def refused(path) -> str:
    with pytest.raises(ModelConfigError) as caught:
        votive.load(str(path), n_ctx=64)
    return str(caught.value)


def test_a_phi3_file_with_separate_qkv_is_refused_naming_the_tensor(tmp_path):
    path = write_f32_gguf(tmp_path / "m.gguf", SHAPES[2], arch="phi3")  # LLaMA's tensor names
    assert refused(path) == f"{path}: missing tensor 'blk.0.attn_qkv.weight'"


def test_longrope_factors_outside_phi3_are_refused(tmp_path):
    tensors = random_tensors(SHAPES[2]) | {"rope_factors_long.weight": np.ones(16, np.float32)}
    path = write_f32_gguf(tmp_path / "m.gguf", SHAPES[2], tensors)
    assert refused(path) == f"{path}: 1 tensors this architecture does not use, e.g. 'rope_factors_long.weight'"


def test_bad_longrope_factors_are_refused_naming_the_tensor(tmp_path):
    tensors = random_tensors(LONGROPE)
    tensors["rope_factors_short.weight"] = tensors["rope_factors_short.weight"][:8]
    path = write_f32_gguf(tmp_path / "m.gguf", LONGROPE, tensors)
    assert refused(path) == (f"{path}: tensor 'rope_factors_short.weight' must be float32 of shape (12,), found "
                             f"float32 (8,)")


@pytest.mark.parametrize("shape, key, value, message", [
    (LONGROPE, "phi3.rope.scaling.yarn_beta_fast", 16.0,
     "phi3.rope.scaling.yarn_beta_fast = 16.0 is not supported: llama.cpp does not read it for architecture 'phi3' "
     "and uses 32.0 (votive runs what llama.cpp runs)"),
    (SHAPES[0], "phi3.rope.dimension_count", 66, "phi3.rope.dimension_count = 66 must be even and in 2..64 (the "
     "head size)"),
    (SHAPES[2], "smollm3.rope.dimension_count", 16, "smollm3.rope.dimension_count = 16 rotates part of each head "
     "(head size 32); partial rotary RoPE is not implemented"),
    (SHAPES[2], "smollm3.rope.scaling.type", "longrope", "smollm3.rope.scaling.type = 'longrope' is not supported "
     "for architecture 'smollm3' (votive runs longrope as llama.cpp does, for phi3 only)"),
])
def test_settings_votive_does_not_compute_exactly_are_refused_naming_the_key(tmp_path, shape, key, value, message):
    path = write_f32_gguf(tmp_path / "m.gguf", shape, metadata={key: value})
    assert refused(path) == f"{path}: {message}"

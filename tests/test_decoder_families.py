"""The decoder families (llama, Mistral's windowed llama, qwen2, qwen3) against llama.cpp on random-weight files.

Each shape is written in F32 and quantized by llama.cpp itself to Q4_K_M, Q5_K_M, Q8_0 and Q4_0
(tests/llama_cpp_reference.py), then both stacks run it: the logits after a prompt must be llama.cpp's bit for
bit, and 32 greedy tokens must be its tokens. On x86 votive's kernels sum every product in llama.cpp's order,
including the two it reaches by other routines: Q4_0 matrices of a multiple of 8 rows, which llama.cpp repacks at
load (ggml_gemv/gemm_q4_0_8x8_q8_0), and Q5_K's one-row product (ggml_vec_dot_q5_K_q8_K: the mins' term added
after the lanes' sum); tests/test_quant_kernels.py holds both to llama.cpp's own routines.
Mistral files with a window shorter than the prompt leave llama.cpp, which reads no window for "llama"
(votive/models/llama.py): there transformers' MistralForCausalLM is the reference.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest

import votive
from llama_cpp_reference import (FAMILIES, LlamaCpp, ReferenceFiles, Shape, quantize, random_prompt,
                                 random_tensors, top_ids, votive_greedy, write_f32_gguf)
from votive.errors import ModelConfigError

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

X86_ONLY = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="bit-exact parity holds on x86 only: votive's kernels follow llama.cpp's x86 summation orders, and "
    f"its ARM kernels sum in other orders (this is {platform.machine()})")

# GQA ratios 1, 2 and 4 (two of them per family); head_dim != 256 / n_heads where the family allows it (not
# qwen2, whose tensor shapes llama.cpp fixes to the width); odd vocabularies; tied and separate output matrices.
SHAPES = [
    Shape("llama", n_heads=4, n_kv_heads=4, head_dim=64, vocab=389),
    Shape("llama", n_heads=8, n_kv_heads=2, head_dim=64, vocab=401, tied=True),
    Shape("mistral", n_heads=8, n_kv_heads=4, head_dim=32, vocab=367, window=4096),
    Shape("mistral", n_heads=4, n_kv_heads=1, head_dim=128, vocab=373, window=512, tied=True),
    Shape("qwen2", n_heads=4, n_kv_heads=2, head_dim=64, vocab=443, tied=True),
    Shape("qwen2", n_heads=8, n_kv_heads=8, head_dim=32, vocab=457),
    Shape("qwen3", n_heads=4, n_kv_heads=1, head_dim=128, vocab=449, tied=True),
    Shape("qwen3", n_heads=8, n_kv_heads=4, head_dim=64, vocab=461),
]
EXACT_QUANTS = ("Q4_K_M", "Q5_K_M", "Q8_0", "Q4_0")
GREEDY_STEPS = 32
LONG_PROMPT = 640  # tokens: past 512, llama.cpp's default batch, and long enough for RoPE to turn far


def prompt_for(shape: Shape) -> list[int]:
    """A prompt of its own length per shape (17, 20, 23, ...): some products' summation order depends on the
    number of rows modulo 4 or 8."""
    i = SHAPES.index(shape)
    return random_prompt(shape, 17 + 3 * i, seed=i)


def cases(quants):
    return [pytest.param(s, q, id=f"{s.name}-{q}") for s in SHAPES for q in quants]


@pytest.fixture(scope="session")
def files(tmp_path_factory) -> ReferenceFiles:
    return ReferenceFiles(tmp_path_factory.mktemp("decoder_families"))




def assert_near(theirs: np.ndarray, ours: np.ndarray, tolerance: float, what: str) -> None:
    """Logits within `tolerance`, and the top-10 sets equal up to near ties: an id in one set only must be within
    the tolerance of llama.cpp's 10th logit (so that the difference alone can have moved it across)."""
    worst = float(np.abs(theirs - ours).max())
    assert worst <= tolerance, f"{what}: logits differ by up to {worst:.3g}, more than {tolerance:.3g}"
    tenth = np.sort(theirs)[::-1][9]
    for token in top_ids(theirs) ^ top_ids(ours):
        assert abs(theirs[token] - tenth) <= 2 * tolerance, (
            f"{what}: id {token} is in one top 10 only, {abs(theirs[token] - tenth):.3g} from the 10th logit")


# ------------------------------------------------------------------------------------------------ the logits
@X86_ONLY
@pytest.mark.parametrize("shape, quant", cases(EXACT_QUANTS))
def test_logits_equal_llama_cpp(files, shape, quant):
    theirs, _ = files.llama_cpp(shape, quant, prompt_for(shape), GREEDY_STEPS)
    ours = files.votive(shape, quant).logits(prompt_for(shape))
    assert ours.shape == theirs.shape == (shape.vocab,)
    np.testing.assert_array_equal(ours, theirs, err_msg=f"{shape.name} {quant}")


# ------------------------------------------------------------------------------------------ greedy decoding
@X86_ONLY
@pytest.mark.parametrize("shape, quant", cases(EXACT_QUANTS))
def test_greedy_tokens_equal_llama_cpp(files, shape, quant):
    _, theirs = files.llama_cpp(shape, quant, prompt_for(shape), GREEDY_STEPS)
    _, ours = votive_greedy(files.votive(shape, quant), prompt_for(shape), GREEDY_STEPS)
    assert ours == theirs, f"{shape.name} {quant}"
    assert len(theirs) >= 8, f"{shape.name} {quant}: llama.cpp stopped after {len(theirs)} tokens; pick another seed"


# --------------------------------------------------------------------------------------------- long prompts
LONG_SHAPES = [next(s for s in SHAPES if s.family == family) for family in FAMILIES]


@X86_ONLY
@pytest.mark.parametrize("shape", LONG_SHAPES, ids=lambda s: s.name)
def test_long_prompt_logits_and_greedy_tokens_equal_llama_cpp(files, shape):
    prompt = random_prompt(shape, LONG_PROMPT, seed=99)
    theirs, their_tokens = files.llama_cpp(shape, "Q4_K_M", prompt, GREEDY_STEPS, n_ctx=1024)
    ours, our_tokens = votive_greedy(files.votive(shape, "Q4_K_M", n_ctx=1024), prompt, GREEDY_STEPS)
    np.testing.assert_array_equal(ours, theirs, err_msg=shape.name)
    assert our_tokens == their_tokens, shape.name


# ------------------------------------------------------------------------------------------------ tokenizers
TEXTS = ["The capital of France is Paris.", "Hello world\n\n  and  what is\tthe capital?", "Qwen 2.5 é 日本 😀!",
         "<|im_start|>user\nHello<|im_end|>\n", "<s> the </s> <unk>"]


@pytest.mark.parametrize("shape", [SHAPES[0], SHAPES[4]], ids=lambda s: s.name)
def test_text_tokenizes_as_llama_cpp(files, shape):
    model = files.votive(shape, "Q8_0")
    with LlamaCpp(files.quantized(shape, "Q8_0")) as reference:
        for text in TEXTS:
            assert model.tokenize(text) == reference.tokenize(text), (shape.name, text)


# --------------------------------------------------------------------------------------------- chat (Qwen)
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
QWEN = SHAPES[5]  # qwen2, separate output.weight (the stop test rewrites one of its rows)


def test_qwen_chat_template_renders_as_transformers(files):
    pytest.importorskip("transformers")
    from transformers.utils.chat_template_utils import render_jinja_template

    tokenizer = files.votive(QWEN, "Q8_0").tokenizer
    for messages in (CHAT, [{"role": "system", "content": "Be brief."}, *CHAT]):
        for generation_prompt in (True, False):
            (theirs,), _ = render_jinja_template([messages], chat_template=tokenizer.chat_template_source,
                                                 add_generation_prompt=generation_prompt)
            assert tokenizer.render_chat(messages, add_generation_prompt=generation_prompt) == theirs
    assert tokenizer.render_chat(CHAT) == (
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="session")
def qwen_that_ends_its_turn(files):
    """QWEN quantized to Q8_0 with <|im_end|>'s output row set to 1.5 times that of the 4th token llama.cpp
    generates after the chat prompt, so that greedy decoding reaches <|im_end|> within a few tokens. Returns
    (votive model, chat prompt ids, llama.cpp's greedy tokens up to the end of turn)."""
    plain = files.votive(QWEN, "Q8_0")
    prompt = plain.tokenizer.encode_chat(CHAT)
    _, tokens = files.llama_cpp(QWEN, "Q8_0", prompt, GREEDY_STEPS)
    assert len(tokens) > 3, f"llama.cpp ended the turn after {len(tokens)} tokens already; pick another seed"
    tensors = random_tensors(QWEN)
    im_end = plain.tokenizer.vocab["<|im_end|>"]
    tensors["output.weight"][im_end] = 1.5 * tensors["output.weight"][tokens[3]]
    folder = files.folder / "ends_turn"
    folder.mkdir()
    path = quantize(write_f32_gguf(folder / "f32.gguf", QWEN, tensors), folder / "q8_0.gguf", "Q8_0")
    with LlamaCpp(path) as reference:
        _, tokens = reference.greedy(prompt, GREEDY_STEPS)
        last = reference.logits(prompt + tokens)
    assert len(tokens) < GREEDY_STEPS and int(np.argmax(last)) == im_end, "the rigged row did not end the turn"
    return votive.load(str(path), n_ctx=512), prompt, tokens


def test_qwen_chat_prompt_ids_equal_llama_cpp(files):
    model = files.votive(QWEN, "Q8_0")
    prompt = model.tokenizer.encode_chat(CHAT)
    with LlamaCpp(files.quantized(QWEN, "Q8_0")) as reference:
        assert prompt == reference.tokenize(model.tokenizer.render_chat(CHAT))
    specials = [model.tokenizer.vocab[t] for t in ("<|im_start|>", "<|im_end|>")]
    assert prompt.count(specials[0]) == 3 and prompt.count(specials[1]) == 2  # parsed as single ids


@X86_ONLY
def test_qwen_generation_stops_at_im_end(qwen_that_ends_its_turn):
    model, prompt, theirs = qwen_that_ends_its_turn
    assert model.tokenizer.vocab["<|im_end|>"] in model.eos_ids
    generation = model.start(prompt, max_tokens=GREEDY_STEPS, temperature=0)  # the chat handler's path
    text = generation.text()
    assert generation.token_ids == theirs and generation.finish_reason == "stop"
    assert text == model.tokenizer.decode(theirs) and "<|im_end|>" not in text


# ------------------------------------------------------------------------------------- Mistral's window
MISTRAL = Shape("mistral", n_heads=8, n_kv_heads=4, head_dim=32, vocab=367, window=24)


def transformers_mistral_logits(shape: Shape, tensors: dict, prompt: list[int], window: int | None) -> np.ndarray:
    """transformers' MistralForCausalLM (eager attention, float32) on the same weights: logits after `prompt`."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(vocab_size=shape.vocab, hidden_size=shape.dim, intermediate_size=shape.ffn_dim,
                           num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads,
                           num_key_value_heads=shape.n_kv_heads, head_dim=shape.head_dim, rms_norm_eps=1e-6,
                           rope_theta=FAMILIES["mistral"][2], max_position_embeddings=shape.context,
                           sliding_window=window, tie_word_embeddings=False, attn_implementation="eager")
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    per_layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                 "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                 "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                 "ffn_down": "mlp.down_proj"}
    for i in range(shape.n_layers):
        names |= {f"blk.{i}.{ours}.weight": f"model.layers.{i}.{theirs}.weight" for ours, theirs in per_layer.items()}
    model = MistralForCausalLM(config).eval()
    model.load_state_dict({names[k]: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    with torch.no_grad():
        return model(torch.tensor([prompt])).logits[0, -1].numpy()


def test_mistral_window_attends_as_transformers(files):
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    prompt = random_prompt(MISTRAL, 80, seed=5)  # past the 24-key window, in both layers
    model = votive.load(str(files.f32(MISTRAL)), n_ctx=256)
    assert model.cfg.window == 24
    ours = model.logits(prompt)
    tensors = random_tensors(MISTRAL)
    windowed = transformers_mistral_logits(MISTRAL, tensors, prompt, MISTRAL.window)
    full = transformers_mistral_logits(MISTRAL, tensors, prompt, None)
    # votive rounds keys, values, queries and attention weights to half as llama.cpp does; transformers does not
    tolerance = 0.001 * float(windowed.max() - windowed.min())  # measured: 0.03% of the range
    assert_near(windowed, ours, tolerance, "window 24")
    assert np.abs(full - ours).max() > 10 * tolerance  # the window changes these logits: the check can fail


@X86_ONLY
def test_mistral_window_longer_than_the_prompt_changes_nothing(files):
    shape = SHAPES[3]  # window 512: the prompt and its greedy tokens fit in it
    windowless = Shape("mistral", shape.n_heads, shape.n_kv_heads, shape.head_dim, shape.vocab, tied=True)
    assert files.votive(shape, "Q8_0").cfg.window == 512 and files.votive(windowless, "Q8_0").cfg.window == 0
    np.testing.assert_array_equal(files.votive(shape, "Q8_0").logits(prompt_for(shape)),
                                  files.votive(windowless, "Q8_0").logits(prompt_for(shape)))


# --------------------------------------------------------------------------------------------- refusals
def test_an_architecture_votive_does_not_implement_is_refused_by_name(tmp_path):
    path = write_f32_gguf(tmp_path / "m.gguf", SHAPES[0], arch="mamba")
    with pytest.raises(ModelConfigError) as caught:
        votive.load(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: architecture 'mamba' is not supported (supported: llama, gemma3, ")
    assert "qwen2" in message and "qwen3" in message


def test_a_tensor_the_family_does_not_use_is_refused_by_name(tmp_path):
    # qwen2's biases in a llama file: llama.cpp would add them, votive's llama does not implement them
    path = write_f32_gguf(tmp_path / "m.gguf", SHAPES[4], arch="llama")
    with pytest.raises(ModelConfigError) as caught:
        votive.load(str(path))
    assert str(caught.value) == f"{path}: 6 tensors this architecture does not use, e.g. 'blk.0.attn_k.bias'"


def test_a_missing_family_tensor_is_refused_by_name(tmp_path):
    tensors = {k: v for k, v in random_tensors(SHAPES[6]).items() if k != "blk.1.attn_k_norm.weight"}
    path = write_f32_gguf(tmp_path / "m.gguf", SHAPES[6], tensors)
    with pytest.raises(ModelConfigError) as caught:
        votive.load(str(path))
    assert str(caught.value) == f"{path}: missing tensor 'blk.1.attn_k_norm.weight'"

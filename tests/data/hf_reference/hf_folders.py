"""Small random-weight Hugging Face decoder folders, written with numpy alone from a seed (no torch, no
transformers), so that make_reference.py (which feeds them to transformers) and tests/test_hf_decoders.py (which
feeds them to votive) see the same bytes.

`write_folder(SPECS[name], folder)` writes config.json, the weights (one model.safetensors, or two shards and
model.safetensors.index.json), tokenizer.json (a byte-level BPE over the 256 bytes plus added specials, no merges),
tokenizer_config.json (BOS / EOS, chat template) and generation_config.json. Weights are drawn in float32 in the
order of `tensor_names`, then stored as the spec's dtype (BF16 rounded to nearest even from the float32 draw).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + "
    "m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PHI3_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
PHI3_SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]  # llama.cpp looks for <|end|>

# name -> what is written. Shapes cover GQA ratios 2 and 3, head_dim != hidden / heads (qwen3), odd vocab sizes,
# tied and untied outputs, Llama 3 rope scaling, a sliding window shorter than the prompt (mistral), each dtype.
SPECS = {
    "llama": dict(
        seed=1, arch="LlamaForCausalLM", model_type="llama", dtype="BF16", shards=1, specials=LLAMA3_SPECIALS,
        template=LLAMA3_TEMPLATE, bos="<|begin_of_text|>", eos="<|eot_id|>", config=dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=263, rms_norm_eps=1e-5, max_position_embeddings=256,
            rope_theta=500000.0, tie_word_embeddings=False,
            rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                              original_max_position_embeddings=32))),
    "mistral": dict(
        seed=2, arch="MistralForCausalLM", model_type="mistral", dtype="F32", shards=2, specials=LLAMA3_SPECIALS,
        template=LLAMA3_TEMPLATE, bos="<|begin_of_text|>", eos="<|end_of_text|>", config=dict(
            hidden_size=48, intermediate_size=80, num_hidden_layers=3, num_attention_heads=6,
            num_key_value_heads=2, head_dim=8, vocab_size=271, rms_norm_eps=1e-5, max_position_embeddings=128,
            rope_theta=10000.0, sliding_window=8, tie_word_embeddings=False)),
    "qwen2": dict(
        seed=3, arch="Qwen2ForCausalLM", model_type="qwen2", dtype="F16", shards=1, specials=CHATML_SPECIALS,
        template=CHATML_TEMPLATE, bos=None, eos="<|im_end|>", config=dict(
            hidden_size=96, intermediate_size=160, num_hidden_layers=2, num_attention_heads=6,
            num_key_value_heads=2, vocab_size=261, rms_norm_eps=1e-6, max_position_embeddings=512,
            rope_theta=1000000.0, use_sliding_window=False, sliding_window=None, tie_word_embeddings=True)),
    "qwen3": dict(
        seed=4, arch="Qwen3ForCausalLM", model_type="qwen3", dtype="BF16", shards=2, specials=CHATML_SPECIALS,
        template=CHATML_TEMPLATE, bos=None, eos="<|im_end|>", config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, vocab_size=259, rms_norm_eps=1e-6, max_position_embeddings=512,
            rope_theta=1000000.0, attention_bias=False, use_sliding_window=False, sliding_window=None,
            tie_word_embeddings=True)),
    # Phi-4-mini's shape of things: fused qkv / gate_up, 3/4 of each head turned, longrope (short factors: the
    # prompts stay within the original context), tied output; a window shorter than the long prompt.
    "phi3": dict(
        seed=5, arch="Phi3ForCausalLM", model_type="phi3", dtype="BF16", shards=1, specials=PHI3_SPECIALS,
        template=PHI3_TEMPLATE, bos=None, eos="<|end|>", config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=262, rms_norm_eps=1e-5, max_position_embeddings=1024,
            original_max_position_embeddings=256, partial_rotary_factor=0.75, rope_theta=10000.0,
            sliding_window=16, tie_word_embeddings=True, pad_token_id=256,
            rope_scaling=dict(type="longrope", short_factor=[1.0 + 0.25 * k for k in range(6)],
                              long_factor=[2.0 + 1.5 * k for k in range(6)]))),
    # Gemma 3: GQA 4 with head_dim 32 != hidden / heads, QK-norm, sandwich norms stored as w of x * (1 + w), five
    # sliding layers (window 8), a global one with linear RoPE scaling (as Gemma 3 4B), one more sliding, GeGLU,
    # tied output.
    "gemma3": dict(
        seed=6, arch="Gemma3ForCausalLM", model_type="gemma3_text", dtype="BF16", shards=1,
        specials=LLAMA3_SPECIALS, template=LLAMA3_TEMPLATE, bos="<|begin_of_text|>", eos="<|eot_id|>",
        act={"hidden_activation": "gelu_pytorch_tanh"}, config=dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=7, num_attention_heads=4,
            num_key_value_heads=1, head_dim=32, query_pre_attn_scalar=32, vocab_size=264, rms_norm_eps=1e-6,
            max_position_embeddings=512, rope_theta=1000000.0, rope_local_base_freq=10000.0,
            rope_scaling=dict(rope_type="linear", factor=2.0), sliding_window=8,
            layer_types=["sliding_attention"] * 5 + ["full_attention", "sliding_attention"],
            final_logit_softcapping=None, attn_logit_softcapping=None, tie_word_embeddings=True,
            pad_token_id=256)),
    # YaRN (tests/test_rope_scaling.py reads these too). qwen3_yarn: Qwen's own setting (factor 4 over an
    # original context; beta_fast 32, beta_slow 1 and the attention factor by default), which a GGUF expresses.
    # llama_yarn: other betas and an attention factor from mscale / mscale_all_dim; qwen2_yarn: the old "type"
    # key, an explicit attention_factor and an untruncated ramp. The original contexts are shorter than the
    # long prompt.
    "qwen3_yarn": dict(
        seed=7, arch="Qwen3ForCausalLM", model_type="qwen3", dtype="BF16", shards=1, specials=CHATML_SPECIALS,
        template=CHATML_TEMPLATE, bos=None, eos="<|im_end|>", config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=32, vocab_size=265, rms_norm_eps=1e-6, max_position_embeddings=512,
            rope_theta=1000000.0, attention_bias=False, use_sliding_window=False, sliding_window=None,
            tie_word_embeddings=True,
            rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=128))),
    "llama_yarn": dict(
        seed=8, arch="LlamaForCausalLM", model_type="llama", dtype="BF16", shards=1, specials=LLAMA3_SPECIALS,
        template=LLAMA3_TEMPLATE, bos="<|begin_of_text|>", eos="<|eot_id|>", config=dict(
            hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, vocab_size=267, rms_norm_eps=1e-5, max_position_embeddings=512,
            rope_theta=10000.0, tie_word_embeddings=False,
            rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=128, beta_fast=16.0,
                              beta_slow=2.0, mscale=1.0, mscale_all_dim=0.5))),
    "qwen2_yarn": dict(
        seed=9, arch="Qwen2ForCausalLM", model_type="qwen2", dtype="F16", shards=1, specials=CHATML_SPECIALS,
        template=CHATML_TEMPLATE, bos=None, eos="<|im_end|>", config=dict(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1, vocab_size=269, rms_norm_eps=1e-6, max_position_embeddings=512,
            rope_theta=10000.0, use_sliding_window=False, sliding_window=None, tie_word_embeddings=True,
            rope_scaling=dict(type="yarn", factor=8.0, original_max_position_embeddings=64, attention_factor=1.25,
                              truncate=False))),
}

# Prompts as token ids (the byte tokens of the vocabulary: 0..255), one short and one past mistral's window.
PROMPTS = [[72, 101, 108, 108, 111, 44, 32], [int(i) for i in np.arange(23) * 11 % 256]]
GREEDY_STEPS = 20
# A prompt past phi3's original context (256), where longrope switches to its long factors.
LONG_PROMPTS = {"phi3": [int(i) for i in np.arange(300) * 7 % 256]}
# Prompts past the YaRN folders' original contexts (128, 128, 64).
LONG_PROMPTS.update({name: [int(i) for i in np.arange(300) * 5 % 256] for name in ("qwen3_yarn", "llama_yarn",
                                                                                  "qwen2_yarn")})


def tensor_names(spec: dict) -> list[tuple[str, tuple[int, ...]]]:
    """(HF name, shape) of every tensor, in the order they are drawn."""
    c = spec["config"]
    dim, ffn, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    heads, kv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = c.get("head_dim") or dim // heads
    names = [("model.embed_tokens.weight", (vocab, dim))]
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        if spec["model_type"] == "gemma3_text":  # QK-norm and four norms a layer
            names += [(p + "input_layernorm.weight", (dim,)), (p + "self_attn.q_proj.weight", (heads * hd, dim)),
                      (p + "self_attn.k_proj.weight", (kv * hd, dim)), (p + "self_attn.v_proj.weight", (kv * hd, dim)),
                      (p + "self_attn.o_proj.weight", (dim, heads * hd)), (p + "self_attn.q_norm.weight", (hd,)),
                      (p + "self_attn.k_norm.weight", (hd,)), (p + "post_attention_layernorm.weight", (dim,)),
                      (p + "pre_feedforward_layernorm.weight", (dim,)), (p + "mlp.gate_proj.weight", (ffn, dim)),
                      (p + "mlp.up_proj.weight", (ffn, dim)), (p + "mlp.down_proj.weight", (dim, ffn)),
                      (p + "post_feedforward_layernorm.weight", (dim,))]
            continue
        if spec["model_type"] == "phi3":  # q, k, v rows in one matrix; gate, up rows in another
            names += [(p + "input_layernorm.weight", (dim,)),
                      (p + "self_attn.qkv_proj.weight", ((heads + 2 * kv) * hd, dim)),
                      (p + "self_attn.o_proj.weight", (dim, heads * hd)),
                      (p + "post_attention_layernorm.weight", (dim,)), (p + "mlp.gate_up_proj.weight", (2 * ffn, dim)),
                      (p + "mlp.down_proj.weight", (dim, ffn))]
            continue
        names += [(p + "input_layernorm.weight", (dim,)), (p + "self_attn.q_proj.weight", (heads * hd, dim)),
                  (p + "self_attn.k_proj.weight", (kv * hd, dim)), (p + "self_attn.v_proj.weight", (kv * hd, dim)),
                  (p + "self_attn.o_proj.weight", (dim, heads * hd))]
        if spec["model_type"] == "qwen2":
            names += [(p + "self_attn.q_proj.bias", (heads * hd,)), (p + "self_attn.k_proj.bias", (kv * hd,)),
                      (p + "self_attn.v_proj.bias", (kv * hd,))]
        if spec["model_type"] == "qwen3":
            names += [(p + "self_attn.q_norm.weight", (hd,)), (p + "self_attn.k_norm.weight", (hd,))]
        names += [(p + "post_attention_layernorm.weight", (dim,)), (p + "mlp.gate_proj.weight", (ffn, dim)),
                  (p + "mlp.up_proj.weight", (ffn, dim)), (p + "mlp.down_proj.weight", (dim, ffn))]
    names.append(("model.norm.weight", (dim,)))
    if not c["tie_word_embeddings"]:
        names.append(("lm_head.weight", (vocab, dim)))
    return names


def draw_weights(spec: dict) -> dict[str, np.ndarray]:
    """float32 weights: matrices ~ N(0, 1 / in) so activations stay O(1), norms ~ 1 + N(0, 0.1^2), biases and
    the embedding ~ N(0, 0.5^2) and N(0, 1)."""
    rng = np.random.default_rng(spec["seed"])
    out = {}
    for name, shape in tensor_names(spec):
        if name.endswith("embed_tokens.weight"):
            w = rng.standard_normal(shape)
        elif len(shape) == 2:
            w = rng.standard_normal(shape) / np.sqrt(shape[1])
        elif name.endswith(".bias"):
            w = 0.5 * rng.standard_normal(shape)
        else:
            w = 1.0 + 0.1 * rng.standard_normal(shape)
        out[name] = w.astype(np.float32)
    return out


def stored(w: np.ndarray, dtype: str) -> np.ndarray:
    """The array whose bytes a safetensors file of `dtype` holds (BF16: uint16 bits, rounded to nearest even)."""
    if dtype == "F32":
        return w
    if dtype == "F16":
        return w.astype(np.float16)
    bits = w.view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]]) -> None:
    """The format by hand (numpy has no bfloat16 for the safetensors package to write)."""
    header, offset, blobs = {}, 0, []
    for name, (dtype, arr) in tensors.items():
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def tokenizer_json(spec: dict) -> dict:
    """A byte-level BPE: the 256 byte symbols (GPT-2's byte-to-unicode map) as ids 0..255, no merges, the specials
    as added tokens from 256. Llama 3 style folders add BOS through the post-processor."""
    symbols = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    codes, n = symbols[:], 0
    for b in range(256):
        if b not in symbols:
            symbols.append(b)
            codes.append(256 + n)
            n += 1
    byte_char = {b: chr(c) for b, c in zip(symbols, codes)}
    vocab = {byte_char[b]: b for b in range(256)}
    added = [{"id": 256 + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(spec["specials"])]
    post = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    if spec["bos"]:
        bos = 256 + spec["specials"].index(spec["bos"])
        first = {"SpecialToken": {"id": spec["bos"], "type_id": 0}}
        post = {"type": "TemplateProcessing",
                "single": [first, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [first, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {spec["bos"]: {"id": spec["bos"], "ids": [bos], "tokens": [spec["bos"]]}}}
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }


def write_folder(spec: dict, folder: Path) -> Path:
    """Write the spec's checkpoint folder; returns it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specials = spec["specials"]
    eos_id = 256 + specials.index(spec["eos"])
    bos_id = 256 + specials.index(spec["bos"]) if spec["bos"] else None
    config = {"architectures": [spec["arch"]], "model_type": spec["model_type"], **spec.get("act", {"hidden_act": "silu"}),
              "bos_token_id": bos_id, "eos_token_id": eos_id,
              "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[spec["dtype"]], **spec["config"]}
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": bos_id, "eos_token_id": eos_id}))
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer_json(spec)))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": spec["bos"], "eos_token": spec["eos"], "chat_template": spec["template"],
         "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": spec["config"]["max_position_embeddings"]}))
    tensors = {name: (spec["dtype"], stored(w, spec["dtype"])) for name, w in draw_weights(spec).items()}
    if spec["shards"] == 1:
        write_safetensors(folder / "model.safetensors", tensors)
        return folder
    names = list(tensors)
    cut = len(names) // 2
    weight_map = {}
    for k, part in enumerate((names[:cut], names[cut:])):
        shard = f"model-{k + 1:05d}-of-00002.safetensors"
        write_safetensors(folder / shard, {n: tensors[n] for n in part})
        weight_map.update(dict.fromkeys(part, shard))
    total = sum(a.nbytes for _, a in tensors.values())
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return folder

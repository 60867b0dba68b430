"""llama.cpp as the reference decoder: small random-weight GGUF files of each family, quantized and run by llama.cpp.

The decoder tests (tests/test_decoder_families.py) hold votive to numbers it did not produce: a GGUF file of
family and shape written here with llama.cpp's own writer (gguf-py), in F32, quantized by llama.cpp's own
`llama_model_quantize` (so the quantized blocks and each tensor's type are llama.cpp's choices, not ours), then
run by llama.cpp (llama-cpp-python 0.3.36, the dev extras' pin) and by votive.

Shapes keep the files to a few MB: a width of 256 so that every matrix row holds whole 256-element K-quant
blocks (llama.cpp's quantizer falls back to other types for rows that do not), two layers, and vocabularies
of a few hundred real tokens:
- "spm" (llama, mistral): a SentencePiece-style vocabulary of the 256 byte tokens and pieces of a few words;
- "qwen" (qwen2, qwen3): a byte-level BPE vocabulary with merges, Qwen2's pre-tokenizer, Qwen's special
  tokens and Qwen2.5's chat template, as Qwen GGUF files carry them.
Weights are random but scaled as votive.testing.synthetic scales them (rows of standard deviation
1/sqrt(columns), norm weights near 1), so activations stay of order one through the layers and the logits
have a spread: greedy decoding picks among real contenders rather than ties.

llama.cpp runs through its C API (`LlamaCpp`; llama_cpp.Llama has no switch for weight repacking), with every
setting that changes the arithmetic stated: two threads, flash attention off (votive follows llama.cpp's other
attention path; the default, "auto", would turn flash attention on), the whole prompt in one batch (`n_batch` =
`n_ubatch` = the context: a product's summation order can depend on how many rows it multiplies), logits of the
last position only (what llama.cpp computes unless asked for all), and weight repacking on, its default, unless
a test turns it off to show what it changes.
"""

from __future__ import annotations

import collections
import ctypes
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ------------------------------------------------------------------------------------------------ the shapes
# Family -> (GGUF architecture, vocabulary, RoPE base). Mistral is the "llama" architecture with a window.
FAMILIES = {
    "llama": ("llama", "spm", 10000.0),
    "mistral": ("llama", "spm", 1000000.0),
    "qwen2": ("qwen2", "qwen", 1000000.0),
    "qwen3": ("qwen3", "qwen", 1000000.0),
}
# The same for the families tests/test_phi3_smollm3.py runs, kept apart: tests/test_decoder_families.py runs a
# shape of each family in FAMILIES.
MORE_FAMILIES = {
    "phi3": ("phi3", "phi3", 10000.0),
    "smollm3": ("smollm3", "spm", 5000000.0),
}


def family(name: str) -> tuple[str, str, float]:
    """(GGUF architecture, vocabulary, RoPE base) of family `name`, from FAMILIES or MORE_FAMILIES."""
    return FAMILIES[name] if name in FAMILIES else MORE_FAMILIES[name]

# Quantization name -> llama.cpp's llama_ftype value (include/llama.h); F16 and BF16 as llama-quantize writes them
# (matrices in that type, norms F32: what convert_hf_to_gguf.py --outtype f16 / bf16 writes).
FTYPES = {"Q4_K_M": 15, "Q5_K_M": 17, "Q8_0": 7, "Q4_0": 2, "F16": 1, "BF16": 32}


@dataclass(frozen=True)
class Shape:
    """A decoder's hyperparameters, in the terms of votive.models.llama.Config."""

    family: str  # a key of FAMILIES or MORE_FAMILIES
    n_heads: int
    n_kv_heads: int
    head_dim: int  # {arch}.attention.key_length; dim / n_heads is 256 / n_heads
    vocab: int
    tied: bool = False  # no output.weight: the token embedding is the output projection
    window: int = 0  # mistral: llama.attention.sliding_window
    n_layers: int = 2
    dim: int = 256
    ffn_dim: int = 512
    context: int = 2048  # {arch}.context_length
    rope_dims: int = 0  # phi3: {arch}.rope.dimension_count (partial rotary), unless 0
    original_context: int = 0  # phi3: longrope's original context; set, the file carries longrope factors

    @property
    def arch(self) -> str:
        return family(self.family)[0]

    @property
    def name(self) -> str:
        tags = [self.family, f"gqa{self.n_heads // self.n_kv_heads}", f"h{self.n_heads}x{self.head_dim}",
                f"v{self.vocab}"] + (["tied"] if self.tied else []) + ([f"w{self.window}"] if self.window else [])
        tags += ([f"n{self.n_layers}"] if self.n_layers != 2 else []) + (
            [f"rot{self.rope_dims}"] if self.rope_dims else []) + (
            [f"longrope{self.original_context}"] if self.original_context else [])
        return "-".join(tags)


# ------------------------------------------------------------------------------------------- vocabularies
# Words the vocabularies hold pieces of: the chat template's and a few common ones.
WORDS = ("system", "user", "assistant", "You", "are", "Qwen", "created", "by", "Alibaba", "Cloud", "a", "helpful",
         "the", "What", "is", "capital", "of", "France", "Paris", "Hello", "world", "and", "to", "in")

# Qwen2.5-Instruct's chat template, as its tokenizer_config.json and its GGUF files (tokenizer.chat_template) carry
# it. A raw string: the \n inside its Jinja string literals are Jinja escapes.
QWEN25_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # in Qwen's order (151643, 151644, 151645)
TOKEN_TYPES = {"normal": 1, "unknown": 2, "control": 3, "unused": 5, "byte": 6}  # gguf-py's TokenType


def _gpt2_byte_chars() -> list[str]:
    """GPT-2's printable stand-in for each byte 0..255 (its bytes_to_unicode): printable Latin-1 bytes stand for
    themselves, the others for code points from 256 up, in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def spm_vocabulary(size: int) -> dict:
    """A SentencePiece-style ("llama") vocabulary of `size` tokens: <unk>, <s>, </s>, the 256 byte tokens, every
    prefix of "▁" + each of WORDS (longer pieces score higher, so merges prefer them), then unused fillers."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [TOKEN_TYPES["unknown"], TOKEN_TYPES["control"], TOKEN_TYPES["control"]] + [TOKEN_TYPES["byte"]] * 256
    scores = [0.0] * len(tokens)
    for word in WORDS:
        piece = "\u2581" + word
        for end in range(1, len(piece) + 1):
            if piece[:end] not in tokens:
                tokens.append(piece[:end])
                types.append(TOKEN_TYPES["normal"])
                scores.append(float(end))
    if len(tokens) > size:
        raise ValueError(f"an spm vocabulary needs at least {len(tokens)} tokens for its words, asked for {size}")
    fillers = size - len(tokens)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), size)]
    return {"model": "llama", "tokens": tokens, "scores": scores + [-1e4] * fillers,
            "types": types + [TOKEN_TYPES["unused"]] * fillers, "bos": 1, "eos": 2, "unk": 0, "add_bos": True}


def qwen_vocabulary(size: int) -> dict:
    """A byte-level BPE ("gpt2") vocabulary as Qwen's: the 256 byte characters, merges building each of WORDS
    (and "Ġ" + each, for a word after a space), Qwen's three special tokens, then unused fillers; Qwen2's
    pre-tokenizer, no BOS added, <|im_end|> the end of a turn, and Qwen2.5's chat template."""
    tokens = _gpt2_byte_chars()
    merges = []
    for word in WORDS:
        for piece in (word, "Ġ" + word):
            for end in range(2, len(piece) + 1):
                if piece[:end] not in tokens:
                    merges.append(f"{piece[:end - 1]} {piece[end - 1]}")
                    tokens.append(piece[:end])
    types = [TOKEN_TYPES["normal"]] * len(tokens)
    tokens += QWEN_SPECIALS
    types += [TOKEN_TYPES["control"]] * len(QWEN_SPECIALS)
    if len(tokens) > size:
        raise ValueError(f"a qwen vocabulary needs at least {len(tokens)} tokens for its words, asked for {size}")
    fillers = size - len(tokens)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), size)]
    end_of_text, im_end = tokens.index("<|endoftext|>"), tokens.index("<|im_end|>")
    return {"model": "gpt2", "pre": "qwen2", "tokens": tokens, "types": types + [TOKEN_TYPES["unused"]] * fillers,
            "merges": merges, "bos": end_of_text, "eos": im_end, "pad": end_of_text, "add_bos": False,
            "chat_template": QWEN25_CHAT_TEMPLATE}


# Phi-3-mini-4k-instruct's chat template, as its tokenizer_config.json carries it (2024-05-08).
PHI3_CHAT_TEMPLATE = ("{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + "
                      "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + "
                      "message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>"
                      "\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt "
                      "%}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")
PHI3_SPECIALS = ("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>")  # control tokens


def phi3_vocabulary(size: int) -> dict:
    """A Phi-3-mini-style vocabulary: the SentencePiece one (spm_vocabulary) with Phi-3's special tokens after
    its pieces, <|endoftext|> the end of text and <|end|> the end of a turn, and Phi-3's chat template."""
    v = spm_vocabulary(size)
    first = v["types"].index(TOKEN_TYPES["unused"]) if TOKEN_TYPES["unused"] in v["types"] else size
    if first + len(PHI3_SPECIALS) > size:
        raise ValueError(f"a phi3 vocabulary needs at least {first + len(PHI3_SPECIALS)} tokens, asked for {size}")
    for i, text in enumerate(PHI3_SPECIALS, start=first):
        v["tokens"][i], v["types"][i], v["scores"][i] = text, TOKEN_TYPES["control"], 0.0
    return v | {"eos": first, "chat_template": PHI3_CHAT_TEMPLATE}


def vocabulary(shape: Shape) -> dict:
    kind = family(shape.family)[1]
    if kind == "phi3":
        return phi3_vocabulary(shape.vocab)
    return spm_vocabulary(shape.vocab) if kind == "spm" else qwen_vocabulary(shape.vocab)


def normal_token_ids(shape: Shape) -> np.ndarray:
    """Ids of the vocabulary's ordinary tokens (bytes, pieces; no control, unknown or filler token): what random
    prompts are drawn from."""
    types = np.asarray(vocabulary(shape)["types"])
    return np.flatnonzero((types == TOKEN_TYPES["normal"]) | (types == TOKEN_TYPES["byte"]))


# ---------------------------------------------------------------------------------------------- the writer
def permute_for_normal_rope(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's converter's LlamaModel.permute: Q/K rows of a Hugging Face LLaMA (rotate_half pairs i and
    i + head_dim/2) reordered so that ggml's "normal" RoPE, which pairs 2i and 2i+1, turns the same pairs."""
    rows, cols = w.shape
    return w.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def random_tensors(shape: Shape, seed: int = 0) -> dict:
    """GGUF name -> float32 weight of a random decoder of `shape`, numpy order (rows are outputs). Q and K rows
    are in Hugging Face's order: the writer permutes them where the GGUF layout wants it (LLaMA)."""
    rng = np.random.default_rng(seed)
    dh, arch = shape.head_dim, shape.arch

    def matrix(rows, cols):  # rows of standard deviation 1/sqrt(cols): activations keep their scale
        return (rng.standard_normal((rows, cols), np.float32) / np.float32(np.sqrt(cols))).astype(np.float32)

    def norm(n):  # RMSNorm weights near 1
        return (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)

    def bias(n):  # of the size of the products they are added to
        return (0.5 * rng.standard_normal(n)).astype(np.float32)

    tensors = {"token_embd.weight": matrix(shape.vocab, shape.dim), "output_norm.weight": norm(shape.dim)}
    if not shape.tied:
        tensors["output.weight"] = matrix(shape.vocab, shape.dim)
    for i in range(shape.n_layers):
        b = f"blk.{i}."
        tensors[b + "attn_norm.weight"] = norm(shape.dim)
        tensors[b + "attn_q.weight"] = matrix(shape.n_heads * dh, shape.dim)
        tensors[b + "attn_k.weight"] = matrix(shape.n_kv_heads * dh, shape.dim)
        tensors[b + "attn_v.weight"] = matrix(shape.n_kv_heads * dh, shape.dim)
        if arch == "qwen2":
            tensors[b + "attn_q.bias"] = bias(shape.n_heads * dh)
            tensors[b + "attn_k.bias"] = bias(shape.n_kv_heads * dh)
            tensors[b + "attn_v.bias"] = bias(shape.n_kv_heads * dh)
        if arch == "qwen3":
            tensors[b + "attn_q_norm.weight"] = norm(dh)
            tensors[b + "attn_k_norm.weight"] = norm(dh)
        tensors[b + "attn_output.weight"] = matrix(shape.dim, shape.n_heads * dh)
        tensors[b + "ffn_norm.weight"] = norm(shape.dim)
        tensors[b + "ffn_gate.weight"] = matrix(shape.ffn_dim, shape.dim)
        tensors[b + "ffn_up.weight"] = matrix(shape.ffn_dim, shape.dim)
        tensors[b + "ffn_down.weight"] = matrix(shape.dim, shape.ffn_dim)
    if arch == "phi3":
        tensors = phi3_tensors(shape, tensors, seed)
    return tensors


def phi3_tensors(shape: Shape, tensors: dict, seed: int) -> dict:
    """LLaMA-named weights in phi3's layout, as Phi3MiniModel converts them: q, k, v rows stacked into attn_qkv and
    gate, up rows into ffn_up (Hugging Face's qkv_proj and gate_up_proj; no permutation), and with
    `shape.original_context`, longrope's factors (short near 1, long up to ~20, as Phi-3's grow with the pair)."""
    out = {}
    for name, t in tensors.items():
        if name.endswith(("attn_k.weight", "attn_v.weight", "ffn_gate.weight")):
            continue
        if name.endswith("attn_q.weight"):
            b = name[: -len("attn_q.weight")]
            name, t = b + "attn_qkv.weight", np.concatenate([t, tensors[b + "attn_k.weight"],
                                                            tensors[b + "attn_v.weight"]])
        elif name.endswith("ffn_up.weight"):
            t = np.concatenate([tensors[name.replace("ffn_up", "ffn_gate")], t])
        out[name] = t
    if shape.original_context:
        rng = np.random.default_rng(seed + 1)  # its own stream: the other weights stay those of random_tensors
        pairs = (shape.rope_dims or shape.head_dim) // 2
        ramp = np.linspace(0.0, 1.0, pairs, dtype=np.float32)
        out["rope_factors_short.weight"] = (1.0 + 0.5 * ramp * rng.random(pairs)).astype(np.float32)
        out["rope_factors_long.weight"] = (1.0 + 20.0 * ramp * (0.5 + rng.random(pairs))).astype(np.float32)
    return out


def longrope_attn_factor(shape: Shape) -> float:
    """Phi3MiniModel's rope.scaling.attn_factor for longrope: sqrt(1 + ln(scale) / ln(original context)), scale
    the context over the original one (1 where that is not more than 1)."""
    scale = shape.context / shape.original_context
    return math.sqrt(1 + math.log(scale) / math.log(shape.original_context)) if scale > 1.0 else 1.0


def write_f32_gguf(path, shape: Shape, tensors: dict | None = None, *, arch: str | None = None,
                   metadata: dict | None = None) -> Path:
    """Write a decoder of `shape` with gguf-py's GGUFWriter, in F32: random_tensors(shape) unless `tensors` is
    given (same names, Hugging Face's Q/K order). `arch` overrides the architecture name (for refusal tests);
    `metadata` adds keys (name -> int, float, str or bool), written after the shape's."""
    import gguf

    arch = arch or shape.arch
    tensors = random_tensors(shape) if tensors is None else tensors
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"random {shape.name}")
    w.add_context_length(shape.context)
    w.add_embedding_length(shape.dim)
    w.add_block_count(shape.n_layers)
    w.add_feed_forward_length(shape.ffn_dim)
    w.add_head_count(shape.n_heads)
    w.add_head_count_kv(shape.n_kv_heads)
    w.add_key_length(shape.head_dim)
    w.add_value_length(shape.head_dim)
    w.add_rope_freq_base(family(shape.family)[2])
    w.add_layer_norm_rms_eps(1e-6)
    if shape.window:
        w.add_sliding_window(shape.window)
    if shape.rope_dims:
        w.add_rope_dimension_count(shape.rope_dims)
    if shape.original_context:  # what Phi3MiniModel writes for a longrope model (and no scaling type)
        w.add_rope_scaling_orig_ctx_len(shape.original_context)
        w.add_rope_scaling_attn_factors(longrope_attn_factor(shape))
    for key, value in (metadata or {}).items():
        adders = {bool: w.add_bool, int: w.add_uint32, float: w.add_float32, str: w.add_string}
        adders[type(value)](key, value)
    w.add_file_type(0)  # ALL_F32
    v = vocabulary(shape)
    w.add_tokenizer_model(v["model"])
    if "pre" in v:
        w.add_tokenizer_pre(v["pre"])
    w.add_token_list(v["tokens"])
    w.add_token_types(v["types"])
    if "scores" in v:
        w.add_token_scores(v["scores"])
    if "merges" in v:
        w.add_token_merges(v["merges"])
    w.add_bos_token_id(v["bos"])
    w.add_eos_token_id(v["eos"])
    if "unk" in v:
        w.add_unk_token_id(v["unk"])
    if "pad" in v:
        w.add_pad_token_id(v["pad"])
    w.add_add_bos_token(v["add_bos"])
    if "chat_template" in v:
        w.add_chat_template(v["chat_template"])
    for name, t in tensors.items():
        if arch in ("llama", "smollm3") and name.endswith(("attn_q.weight", "attn_k.weight")):  # as converted
            t = permute_for_normal_rope(t, shape.n_heads if "attn_q" in name else shape.n_kv_heads)
        w.add_tensor(name, np.ascontiguousarray(t, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


# ------------------------------------------------------------------------------------------- llama.cpp's side
class LlamaCppError(RuntimeError):
    """llama.cpp refused a file or a call; the message carries its last log lines."""


_LOG_TAIL: collections.deque = collections.deque(maxlen=12)  # llama.cpp's recent warnings and errors
_LOG_CALLBACK = None  # the ctypes callback, kept alive for as long as llama.cpp may call it


def _llama_cpp():
    """llama_cpp's C bindings, with llama.cpp's log routed into _LOG_TAIL (quantizing prints a line per tensor;
    a failure's explanation comes from the log)."""
    global _LOG_CALLBACK
    import llama_cpp

    if _LOG_CALLBACK is None:
        @llama_cpp.llama_log_callback
        def keep_warnings(level, text, user_data):
            if level >= 3:  # GGML_LOG_LEVEL_WARN, _ERROR, _CONT
                _LOG_TAIL.append(text.decode("utf-8", "replace").rstrip())

        _LOG_CALLBACK = keep_warnings
        llama_cpp.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p())
    return llama_cpp


def _failure(what: str) -> LlamaCppError:
    return LlamaCppError(f"{what}; llama.cpp's last log lines: {' | '.join(_LOG_TAIL) or '(none)'}")


def quantize(src, dst, quant: str) -> Path:
    """`src` (an F32 GGUF) quantized by llama.cpp's llama_model_quantize to `quant` (a key of FTYPES), as its
    llama-quantize tool does it (its mix of types per tensor included), into `dst`."""
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.nthread = 2
    params.ftype = FTYPES[quant]
    if llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) != 0:
        raise _failure(f"llama_model_quantize({src} -> {dst}, {quant}) failed")
    return Path(dst)


class LlamaCpp:
    """One GGUF file loaded by llama.cpp, and one context (one sequence) over it.

    Args:
        path: the GGUF file.
        n_ctx: positions the context holds; also the batch size, so that a prompt is one batch.
        repack: llama.cpp's weight repacking (`use_extra_bufts`, on by default): Q4_0 and Q4_K matrices of a
            multiple of 8 rows are interleaved at load and multiplied by other routines.
    """

    def __init__(self, path, n_ctx: int = 512, *, repack: bool = True):
        self.lib = lib = _llama_cpp()
        model_params = lib.llama_model_default_params()
        model_params.use_extra_bufts = repack
        self.model = lib.llama_model_load_from_file(str(path).encode(), model_params)
        if not self.model:
            raise _failure(f"llama.cpp could not load {path}")
        params = lib.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
        params.n_threads = params.n_threads_batch = 2
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        self.ctx = lib.llama_init_from_model(self.model, params)
        if not self.ctx:
            lib.llama_model_free(self.model)
            raise _failure(f"llama.cpp could not make a context for {path}")
        self.vocab = lib.llama_model_get_vocab(self.model)
        self.n_vocab = lib.llama_vocab_n_tokens(self.vocab)

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_free(self.ctx)
            self.lib.llama_model_free(self.model)
            self.ctx = self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _decode(self, ids) -> np.ndarray:
        """Evaluate `ids` after what the sequence holds; a copy of the last position's logits (n_vocab,)."""
        batch = (self.lib.llama_token * len(ids))(*[int(i) for i in ids])
        if self.lib.llama_decode(self.ctx, self.lib.llama_batch_get_one(batch, len(ids))) != 0:
            raise _failure(f"llama_decode of {len(ids)} tokens failed")
        logits = self.lib.llama_get_logits_ith(self.ctx, -1)
        return np.ctypeslib.as_array(logits, shape=(self.n_vocab,)).copy()

    def logits(self, ids) -> np.ndarray:
        """Logits (n_vocab,) after prompt `ids`, evaluated from an empty sequence as one batch."""
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        return self._decode(ids)

    def greedy(self, ids, n: int) -> tuple[np.ndarray, list[int]]:
        """The logits after prompt `ids`, and up to `n` greedy tokens (argmax, the first of equals), one decode
        call each; stops before an end-of-generation token, as votive's generation does."""
        first = logits = self.logits(ids)
        out = []
        for _ in range(n):
            token = int(np.argmax(logits))
            if self.lib.llama_vocab_is_eog(self.vocab, token):
                break
            out.append(token)
            logits = self._decode([token])
        return first, out

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """llama_tokenize, as llama.cpp's server tokenizes a prompt."""
        data = text.encode("utf-8")
        room = len(data) + 8
        out = (self.lib.llama_token * room)()
        n = self.lib.llama_tokenize(self.vocab, data, len(data), out, room, add_special, parse_special)
        if n < 0:
            raise _failure(f"llama_tokenize needs {-n} ids for {text!r}, had room for {room}")
        return list(out[:n])


class ReferenceFiles:
    """Decoder files of each shape, in F32 and quantized, written once into `folder` (a session's temporary
    folder), and llama.cpp's answers on them, computed once: several tests read the same ones."""

    def __init__(self, folder):
        self.folder = Path(folder)
        self._files: dict = {}
        self._answers: dict = {}
        self._models: dict = {}

    def f32(self, shape: Shape) -> Path:
        if shape not in self._files:
            self._files[shape] = write_f32_gguf(self.folder / f"{shape.name}.F32.gguf", shape)
        return self._files[shape]

    def quantized(self, shape: Shape, quant: str) -> Path:
        if (shape, quant) not in self._files:
            self._files[shape, quant] = quantize(self.f32(shape), self.folder / f"{shape.name}.{quant}.gguf", quant)
        return self._files[shape, quant]

    def llama_cpp(self, shape: Shape, quant: str, prompt: list[int], n: int, *, n_ctx: int = 512,
                  repack: bool = True) -> tuple[np.ndarray, list[int]]:
        """llama.cpp's logits after `prompt` and its `n` greedy tokens (LlamaCpp.greedy) on the quantized file."""
        key = (shape, quant, tuple(prompt), n, n_ctx, repack)
        if key not in self._answers:
            with LlamaCpp(self.quantized(shape, quant), n_ctx, repack=repack) as reference:
                self._answers[key] = reference.greedy(prompt, n)
        return self._answers[key]

    def votive(self, shape: Shape, quant: str, n_ctx: int = 512):
        """votive's model of the quantized file, loaded once."""
        key = (shape, quant, n_ctx)
        if key not in self._models:
            import votive

            self._models[key] = votive.load(str(self.quantized(shape, quant)), n_ctx=n_ctx)
        return self._models[key]


# ------------------------------------------------------------------------------------------------ votive's side
def votive_greedy(model, ids, n: int) -> tuple[np.ndarray, list[int]]:
    """votive's logits after prompt `ids` and its greedy continuation of up to `n` tokens, through the same
    calls a user makes (`logits`, `start` with temperature 0, which stops at an end-of-generation token)."""
    first = model.logits(list(ids))
    generation = model.start(list(ids), max_tokens=n, temperature=0)
    generation.text()
    return first, generation.token_ids


def random_prompt(shape: Shape, n: int, seed: int) -> list[int]:
    """`n` ids drawn from the shape's ordinary tokens."""
    pool = normal_token_ids(shape)
    return [int(i) for i in np.random.default_rng(seed).choice(pool, size=n)]


def top_ids(logits: np.ndarray, k: int = 10) -> set[int]:
    return set(np.argsort(-logits, kind="stable")[:k].tolist())

"""Decoder rerankers (Qwen3-Reranker): a causal LM asked whether a document meets a query, scored by the
probability of answering "yes" rather than "no" at the last position:

    text   = prefix + "<Instruct>: {instruction}\\n<Query>: {query}\\n<Document>: {document}" + suffix
             (the pair part truncated to max_length - |prefix| - |suffix| tokens, its tail first)
    logits = decoder(ids)[last]                                         (vocab,)
    score  = softmax([logits[no], logits[yes]])[1] = sigmoid(logits[yes] - logits[no])

From a Hugging Face folder, this is the Qwen3-Reranker model card's recipe (huggingface.co/Qwen/Qwen3-Reranker-0.6B,
"Transformers Usage", 2025-06): its prefix, suffix and default instruction, `convert_tokens_to_ids("yes" / "no")`,
truncation='longest_first' of the formatted pair, log_softmax over (no, yes) then exp. sentence-transformers
v6.3.0's generative CrossEncoder (LogitScore: logit[yes] - logit[no], then its default Sigmoid) gives the same
number. A plain Qwen3ForCausalLM folder says nothing of being a reranker, so votive reads one only where the
folder has `votive_reranker.json` (RECIPE_KEYS: what it may set; `{"recipe": "qwen3-reranker"}` takes the card's
defaults), which also makes votive.sources call it a "rerank" model.

From a GGUF file, llama.cpp's RANK pooling (`{arch}.pooling_type` = 4) as its convert_hf_to_gguf.py writes a
Qwen3-Reranker and its server scores one: the "yes" and "no" rows of the LM head are stored as `cls.output.weight`
(2, D), the prompt is the `tokenizer.chat_template.rerank` template with {query} and {document} replaced, and
the score is softmax(cls.output @ h_last)[0], h_last the last token's state after the output norm (llama-graph.cpp
build_pooling, RANK for qwen3; the server's rerank result is embd[0]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from votive.errors import InputError, ModelConfigError
from votive.models.config_checks import check_finite
from votive.models.cross_encoder import Ranked, _check_pairs
from votive.text.tokenizer_json import read_json

CONFIG_NAME = "votive_reranker.json"
RANK_POOLING = 4  # llama.cpp's LLAMA_POOLING_TYPE_RANK


# ---------------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Recipe:
    """How a pair becomes a prompt and the prompt a score (votive_reranker.json; defaults: the model card's)."""

    prefix: str = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and "
                   "the Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n"
                   "<|im_start|>user\n")
    pair: str = "<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"
    suffix: str = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    instruction: str = "Given a web search query, retrieve relevant passages that answer the query"
    true_token: str = "yes"  # a token of the vocabulary, as convert_tokens_to_ids takes it
    false_token: str = "no"
    max_length: int = 8192  # prompt tokens, prefix and suffix included (the card's max_length)

    @classmethod
    def from_folder(cls, folder: Path) -> "Recipe":
        path = Path(folder) / CONFIG_NAME
        raw = read_json(path)
        if not isinstance(raw, dict) or raw.get("recipe") != "qwen3-reranker":
            raise ModelConfigError(f"{path}: expected a JSON object with \"recipe\": \"qwen3-reranker\" (the only "
                                   f"decoder reranker votive runs)")
        unknown = sorted(set(raw) - set(RECIPE_KEYS) - {"recipe"})
        if unknown:
            raise ModelConfigError(f"{path}: unknown key {unknown[0]!r} (known: recipe, {', '.join(RECIPE_KEYS)})")
        for key, value in raw.items():
            kind = int if key == "max_length" else str
            if key != "recipe" and (not isinstance(value, kind) or isinstance(value, bool)):
                raise ModelConfigError(f"{path}: {key!r} must be a {kind.__name__}, found {value!r:.60}")
        return cls(**{k: v for k, v in raw.items() if k != "recipe"})


RECIPE_KEYS = ("prefix", "pair", "suffix", "instruction", "true_token", "false_token", "max_length")


# ------------------------------------------------------------------------------------------- the reranker
class DecoderReranker:
    """(query, document) pairs in, P(yes) per pair out; the surface of `CrossEncoder` (predict, score, rerank,
    tokenize, model_id, backend, max_seq_length), so the same /v1/rerank handler serves it.

    Args:
        decoder: a LlamaModel-family decoder (forward -> last logits; hidden -> states).
        encode_pair: (query, document) -> prompt ids, truncated.
        score_ids: prompt ids -> float score.
        max_seq_length: the longest prompt, in tokens.
    """

    kind = "rerank"

    def __init__(self, decoder, encode_pair, score_ids, max_seq_length: int, model_id: str):
        self.decoder, self.ops = decoder, decoder.ops
        self._encode_pair, self._score_ids = encode_pair, score_ids
        self.max_seq_length = max_seq_length
        self.model_id = model_id
        self.backend = self.ops.name

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> list[list[int]]:
        """The prompt ids of each pair, truncated as the recipe says."""
        out = []
        for i, (query, document) in enumerate(_check_pairs(pairs)):
            if not isinstance(query, str) or not isinstance(document, str):
                raise InputError(f"pair {i}: query and document must be strings")
            out.append(self._encode_pair(query, document))
        return out

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> tuple[np.ndarray, int]:
        """Score `pairs` -> (float32 (n,), total prompt tokens). Each prompt runs alone (`batch_size` is taken for
        the handler's sake): a causal decoder's last state does not depend on its batch's padding."""
        encoded = self.tokenize(pairs)
        scores = np.array([self._score_ids(ids) for ids in encoded], np.float32)
        check_finite(scores, f"{self.model_id}: the scores")  # broken weights: a 500, never NaN scores
        return scores, sum(len(ids) for ids in encoded)

    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        return self.predict(pairs, batch_size)[0]

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               batch_size: int = 32) -> list[Ranked]:
        """The documents' (index, score), best first (ties keep the documents' order), the first `top_n`."""
        if not isinstance(query, str):
            raise InputError(f"the query is {type(query).__name__}, expected a string")
        if isinstance(documents, str) or not isinstance(documents, (list, tuple)):
            raise InputError(f"expected a list of documents, got {type(documents).__name__}")
        scores = self.score([(query, d) for d in documents], batch_size)
        ranking = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [Ranked(i, float(scores[i])) for i in ranking[:top_n]]


def _yes_probability(l_yes: float, l_no: float) -> float:
    """softmax([l_no, l_yes])[1], as log_softmax then exp, in float64."""
    m = max(l_yes, l_no)
    return float(np.exp(l_yes - m) / (np.exp(l_yes - m) + np.exp(l_no - m)))


# ---------------------------------------------------------------------------------------------- loaders
def is_reranker_folder(folder: Path) -> bool:
    return (Path(folder) / CONFIG_NAME).is_file()


def from_folder(folder: Path, ops, model_id: str | None = None, quantize=None) -> DecoderReranker:
    """A Hugging Face decoder folder with votive_reranker.json (module docstring)."""
    from votive.models import load_hf_decoder
    from votive.models.hf_checkpoint import HFConfig
    from votive.models.llama import KVCache

    folder = Path(folder)
    recipe = Recipe.from_folder(folder)
    max_len = min(recipe.max_length, HFConfig(folder).require("max_position_embeddings"))
    decoder = load_hf_decoder(folder, ops, n_ctx=max_len, model_id=model_id or folder.name, quantize=quantize,
                              rows_only=True)  # scores a yes and a no row
    tok = decoder.tokenizer.tokenizer  # the `tokenizers` Tokenizer
    ids = {}
    for name in (recipe.true_token, recipe.false_token):
        ids[name] = tok.token_to_id(name)
        if ids[name] is None:
            raise ModelConfigError(f"{folder}: the vocabulary has no token {name!r} to score with")
    prefix = tok.encode(recipe.prefix, add_special_tokens=False).ids
    suffix = tok.encode(recipe.suffix, add_special_tokens=False).ids
    room = max_len - len(prefix) - len(suffix)
    if room < 1:
        raise ModelConfigError(f"{folder}: max_length {max_len} leaves no room for a pair after the prefix and "
                               f"suffix ({len(prefix) + len(suffix)} tokens)")
    tok.enable_truncation(room)

    def encode_pair(query: str, document: str) -> list[int]:
        from votive.text.gguf_tokenizer import check_text

        text = recipe.pair.format(instruction=recipe.instruction, query=query, document=document)
        check_text(text)
        return prefix + tok.encode(text, add_special_tokens=True).ids + suffix

    def score_ids(prompt: list[int]) -> float:
        cfg = decoder.cfg
        cache = KVCache(ops, cfg.n_layers, cfg.n_kv_heads, len(prompt), cfg.head_dim)
        logits = decoder.forward(prompt, cache, 0)  # (vocab,) of the last position
        return _yes_probability(float(logits[ids[recipe.true_token]]), float(logits[ids[recipe.false_token]]))

    return DecoderReranker(decoder, encode_pair, score_ids, max_len, decoder.model_id)


class _WithoutHead:
    """A GGUFFile with the classifier's tensors hidden from the decoder's binder (which refuses tensors its
    tables do not name); everything else is the file's."""

    HEAD = ("cls.output.weight", "cls.output.bias")

    def __init__(self, f):
        self._f = f
        self.tensors = {k: v for k, v in f.tensors.items() if k not in self.HEAD}

    def __getattr__(self, name):
        return getattr(self._f, name)

    def __getitem__(self, name):
        return self._f[name]


def from_gguf(path: Path, ops, model_id: str | None = None) -> DecoderReranker:
    """A decoder GGUF with RANK pooling and a `cls.output` head, scored as llama.cpp's server does (module
    docstring). ModelConfigError naming what is missing."""
    import importlib

    from votive.formats.gguf import GGUFFile
    from votive.models import DECODERS
    from votive.text.gguf_tokenizer import GGUFTokenizer

    path = Path(path)
    f = GGUFFile(path)
    arch = f.architecture
    if f.get(f"{arch}.pooling_type") != RANK_POOLING:
        raise ModelConfigError(f"{path}: {arch}.pooling_type is {f.get(f'{arch}.pooling_type')!r}, not RANK (4)")
    if arch != "qwen3":  # llama.cpp scores the last token with a softmax for qwen3 only; others differ
        raise ModelConfigError(f"{path}: RANK pooling of a {arch!r} model is not supported (supported: a qwen3 "
                               f"decoder with cls.output, llama.cpp's Qwen3-Reranker layout)")
    if "cls.output.weight" not in f.tensors:
        raise ModelConfigError(f"{path}: no 'cls.output.weight': a decoder reranker GGUF carries its yes / no rows "
                               f"there")
    if "cls.weight" in f.tensors:
        raise ModelConfigError(f"{path}: a 'cls.weight' dense layer before the head is not supported")
    template = f.get("tokenizer.chat_template.rerank")
    if not isinstance(template, str) or "{query}" not in template or "{document}" not in template:
        raise ModelConfigError(f"{path}: no 'tokenizer.chat_template.rerank' with {{query}} and {{document}}: the "
                               f"prompt a decoder reranker reads")
    context = f.require(f"{arch}.context_length")
    module, name = DECODERS[arch]
    cls = getattr(importlib.import_module(module), name)
    tokenizer = GGUFTokenizer.from_gguf(f)
    decoder = cls.from_gguf(_WithoutHead(f), ops, tokenizer, n_ctx=context, model_id=model_id or path.stem)
    head = ops.make_linear(f, "cls.output.weight")  # (n_labels, D)
    bias = np.asarray(f["cls.output.bias"], np.float32) if "cls.output.bias" in f.tensors else None

    def encode_pair(query: str, document: str) -> list[int]:
        text = template.replace("{query}", query).replace("{document}", document)
        ids = tokenizer.encode(text, add_special=True, parse_special=True)
        if len(ids) > decoder.n_ctx:
            raise InputError(f"the (query, document) prompt is {len(ids)} tokens, more than the model's "
                             f"{decoder.n_ctx}")
        return ids

    def score_ids(prompt: list[int]) -> float:
        h = decoder.hidden(prompt)[-1:]  # (1, D)
        logits = np.asarray(ops.to_numpy(head(h))[0], np.float64)  # (n_labels,)
        if bias is not None:
            logits = logits + bias
        e = np.exp(logits - logits.max())
        return float(e[0] / e.sum())

    return DecoderReranker(decoder, encode_pair, score_ids, decoder.n_ctx, decoder.model_id)

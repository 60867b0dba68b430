"""Decoders as sentence embedders (Qwen3-Embedding, any Qwen3 / Qwen2 / LLaMA checkpoint or GGUF with a pooling
setting): the decoder's final-normed hidden states pooled into one vector, served through `SentenceEncoder` so
that prompts, Matryoshka truncation, quantized precisions and the embeddings handler are those of every encoder.

    ids    = tokenizer(prompt + text), truncated to max_seq_length   (+ <|endoftext|>: Qwen3-Embedding's post-processor)
    h      = decoder.hidden(ids)                                    (n, D)  causal attention, after the output norm
    v      = pool(h): h[n - 1] (lasttoken), mean over n, h[0], ...  (D,)
    v      = v / ||v||                                              when modules.json has Normalize

Ported from, at pinned versions:
- sentence-transformers v6.3.0 `sentence_transformer/modules/pooling.py` (the modes, their concatenation order,
  the legacy `pooling_mode_*` keys and `lasttoken`: the state of the last token the mask keeps, whichever side the
  tokenizer pads) and `base/modules/transformer.py` (truncation to max_seq_length; the tokenizer's own
  post-processor adds the special tokens, after truncation);
- llama.cpp `src/llama-graph.cpp` (build_pooling: LAST takes the last token's `result_norm` row, MEAN averages
  them, CLS the first; no normalisation: llama_get_embeddings_seq returns the pooled row as it is, and so do
  llama-cpp-python's `embed` / `create_embedding` with their default normalize=False).

Each text runs through the decoder alone, unpadded: a causal decoder's states of real tokens do not depend on
padding on either side, so this is sentence-transformers' batch, row by row.
"""

from __future__ import annotations

from pathlib import Path

from votive.errors import ModelConfigError
from votive.models.embedding_controls import Prompts, matryoshka_dims
from votive.models.sentence_encoder import Pooling, SentenceEncoder, _max_seq_length
from votive.text.tokenizer_json import read_json

# sentence-transformers' pooling modes in its concatenation order, legacy config key -> mode.
POOLING_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
SUPPORTED_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "lasttoken")  # weightedmean: refused
# llama.cpp's llama_pooling_type -> mode. NONE (0) gives per-token states and RANK (4) a reranker's score
# (votive.models.decoder_reranker): not sentence embeddings.
GGUF_POOLING = {1: "mean", 2: "cls", 3: "lasttoken"}
HIDDEN_FAMILIES = ("LlamaModel", "Qwen2Model", "Qwen3Model", "SmolLM3Model")  # forward = LlamaModel's blocks


# ------------------------------------------------------------------------------------------------- pooling
class DecoderPooling(Pooling):
    """Pooling over a decoder's states: sentence-transformers' modes, lasttoken among them."""

    def __call__(self, ops, hidden, mask):
        """hidden (B, T, D), mask (B, T) of right-padded rows -> (B, D * len(modes))."""
        lengths = ops.to_numpy(mask).sum(axis=1)  # (B,) host ints
        parts = []
        for mode in self.modes:
            if mode == "cls":
                parts.append(hidden[:, 0])  # (B, D)
            elif mode == "lasttoken":
                rows = ops.asarray(list(range(len(lengths))), ops.int64)
                parts.append(hidden[rows, ops.asarray([int(n) - 1 for n in lengths], ops.int64)])  # (B, D)
            elif mode == "max":
                parts.append(ops.masked_max(hidden, mask))
            elif mode == "mean":
                parts.append(ops.masked_mean(hidden, mask))
            else:  # mean_sqrt_len_tokens
                mean = ops.masked_mean(hidden, mask)
                parts.append(mean * ops.asarray(mask, ops.float32).sum(axis=1, keepdims=True) ** 0.5)
        out = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        return ops.l2_normalize(out) if self.normalize else out

    @classmethod
    def from_folder(cls, folder: Path) -> "DecoderPooling":
        """modules.json's Pooling (legacy `pooling_mode_*` flags or v5+ `pooling_mode`) and Normalize."""
        modules_path = Path(folder) / "modules.json"
        modules = read_json(modules_path)
        if not isinstance(modules, list):
            raise ModelConfigError(f"{modules_path}: expected a list of modules")
        config, normalize, where = None, False, modules_path
        for m in modules:
            kind = str(m.get("type", "")).rsplit(".", 1)[-1]
            if kind == "Pooling":
                where = Path(folder) / m.get("path", "") / "config.json"
                config = read_json(where)
            elif kind == "Normalize":
                normalize = True
            elif kind != "Transformer":
                raise ModelConfigError(f"{modules_path}: module {m.get('type')!r} is not supported by votive")
        if config is None:
            raise ModelConfigError(f"{modules_path}: no Pooling module; a decoder's token states need one "
                                   "(Qwen3-Embedding: pooling_mode_lasttoken)")
        if "pooling_mode" in config:
            mode = config["pooling_mode"]
            modes = (mode,) if isinstance(mode, str) else tuple(mode)
        else:
            modes = tuple(mode for key, mode in POOLING_KEYS.items() if config.get(key))
        bad = [mode for mode in modes if mode not in SUPPORTED_MODES]
        if bad or not modes:
            raise ModelConfigError(f"{where}: pooling mode {bad[0] if bad else None!r} is not supported (supported: "
                                   f"{', '.join(SUPPORTED_MODES)})")
        return cls(modes=modes, normalize=normalize, include_prompt=config.get("include_prompt", True) is not False)


# -------------------------------------------------------------------------------------------- the trunk
class DecoderTrunk:
    """A decoder seen as an encoder family: `forward(ids, mask) -> (B, T, D)`, each row run alone through
    `hidden` (zeros past its length), `hidden_size`, `max_positions`, `ops`."""

    def __init__(self, decoder):
        if type(decoder).__name__ not in HIDDEN_FAMILIES:
            raise ModelConfigError(f"{type(decoder).__name__}: votive does not take hidden states from this "
                                   f"decoder family yet (supported: {', '.join(HIDDEN_FAMILIES)})")
        self.decoder, self.ops = decoder, decoder.ops
        self.hidden_size = decoder.cfg.dim
        self.max_positions = decoder.n_ctx

    def forward(self, ids, mask):
        ops = self.ops
        host_ids, lengths = ops.to_numpy(ids), ops.to_numpy(mask).sum(axis=1)
        B, T = host_ids.shape
        out = ops.empty((B, T, self.hidden_size), ops.float32)
        out[...] = 0.0  # padding rows: masked out of every pooling mode
        for b in range(B):
            n = int(lengths[b])
            out[b, :n] = self.decoder.hidden([int(i) for i in host_ids[b, :n]])  # (n, D)
        return out  # (B, T, D)


class PrefixedStore:
    """A folder's WeightStore seen under ...ForCausalLM's names: Qwen3-Embedding's checkpoints were saved from the
    bare model (transformers' AutoModel), so their tensors lack the `model.` prefix ("embed_tokens.weight",
    "layers.0...."); transformers adds it back at load (base_model_prefix), and so does this view."""

    def __init__(self, store):
        self.store, self.path = store, store.path
        self._names = {"model." + name: name for name in store.keys()}  # ours -> the file's

    def keys(self):
        return self._names.keys()

    def __contains__(self, name) -> bool:
        return name in self._names

    def dtype_of(self, name: str) -> str:
        return self.store.dtype_of(self._names.get(name, name))

    def raw(self, name: str):
        return self.store.raw(self._names.get(name, name))

    def get(self, name: str, shape=None):
        return self.store.get(self._names.get(name, name), shape)

    def read_ahead(self, names) -> None:
        self.store.read_ahead([self._names.get(name, name) for name in names])

    def __getattr__(self, name):
        return getattr(self.store, name)


def _store(folder: Path):
    """The folder's tensors, under the `model.` prefix when the checkpoint was saved without it."""
    from votive.formats.weights import WeightStore

    store = WeightStore(folder)
    bare = "embed_tokens.weight" in store and "model.embed_tokens.weight" not in store
    return PrefixedStore(store) if bare else store


# ------------------------------------------------------------------------------------------ tokenizers
class HFTruncating:
    """A folder's tokenizer.json as sentence-transformers calls it: post-processor on, truncated to max_len
    (the `tokenizers` library keeps room for the tokens the post-processor adds), no padding."""

    def __init__(self, hf_tokenizer, max_len: int):
        self.tokenizer = hf_tokenizer.tokenizer
        self.tokenizer.enable_truncation(max_len)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        from votive.text.gguf_tokenizer import check_text

        for t in texts:
            check_text(t)
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]


class GGUFTruncating:
    """A GGUF's tokenizer as llama-cpp-python's `embed` calls it: BOS / EOS as the file says, special-token text
    not parsed; a text past max_len keeps its first tokens and the closing EOS (where the file adds one)."""

    def __init__(self, tokenizer, max_len: int):
        self.tokenizer, self.max_len = tokenizer, max_len

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        out = []
        for text in texts:
            ids = self.tokenizer.encode(text, add_special=True, parse_special=False)
            if len(ids) > self.max_len:
                ids = ids[: self.max_len - 1] + ids[-1:] if self.tokenizer.add_eos else ids[: self.max_len]
            out.append(ids)
        return out


# ---------------------------------------------------------------------------------------------- loaders
def from_folder(folder: Path, ops, model_id: str | None = None, quantize=None) -> SentenceEncoder:
    """A sentence-transformers folder over a decoder (modules.json + config.json naming a ...ForCausalLM):
    max_seq_length from sentence_bert_config.json, capped by max_position_embeddings."""
    from votive.models import load_hf_decoder
    from votive.models.hf_checkpoint import HFConfig

    folder = Path(folder)
    limit = HFConfig(folder).require("max_position_embeddings")
    max_len = _max_seq_length(folder, limit)
    decoder = load_hf_decoder(folder, ops, n_ctx=max_len, model_id=model_id or folder.name, quantize=quantize,
                              store=_store(folder), rows_only=True)
    pooling = DecoderPooling.from_folder(folder)
    trunk = DecoderTrunk(decoder)
    dim = trunk.hidden_size * len(pooling.modes)
    return SentenceEncoder(trunk, HFTruncating(decoder.tokenizer, max_len), pooling, max_len, decoder.model_id,
                           Prompts.from_folder(folder), matryoshka_dims(folder, dim))


def from_gguf(path: Path, ops, model_id: str | None = None) -> SentenceEncoder:
    """A decoder GGUF whose `{arch}.pooling_type` is MEAN, CLS or LAST, embedded as llama.cpp does (no prompts,
    no normalisation); inputs up to `{arch}.context_length` tokens."""
    from votive.formats.gguf import GGUFFile
    from votive.models import load_gguf

    path = Path(path)
    f = GGUFFile(path)
    arch = f.architecture
    pooling = f.get(f"{arch}.pooling_type")
    if pooling not in GGUF_POOLING:
        raise ModelConfigError(f"{path}: {arch}.pooling_type is {pooling!r}; a decoder embeds with MEAN (1), CLS (2) "
                               f"or LAST (3) pooling")
    if f.get(f"{arch}.attention.causal", True) is not True:
        raise ModelConfigError(f"{path}: {arch}.attention.causal is false; votive's decoders attend causally")
    context = f.require(f"{arch}.context_length")
    decoder = load_gguf(path, ops, n_ctx=context, model_id=model_id or path.stem, rows_only=True)
    trunk = DecoderTrunk(decoder)
    return SentenceEncoder(trunk, GGUFTruncating(decoder.tokenizer, decoder.n_ctx),
                           DecoderPooling((GGUF_POOLING[pooling],), normalize=False), decoder.n_ctx, decoder.model_id)

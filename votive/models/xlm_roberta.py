"""XLM-RoBERTa (and RoBERTa) encoders: token ids -> XLMRobertaModel -> last hidden states, pooled by
votive.models.sentence_encoder. multilingual-e5-small/base/large, bge-m3's dense embeddings and the
paraphrase-multilingual models are this family.

Ported from transformers `src/transformers/models/xlm_roberta/modeling_xlm_roberta.py` @ v4.44.0
(XLMRobertaEmbeddings, create_position_ids_from_input_ids; its encoder layers are copies of BERT's, and RoBERTa's
`modeling_roberta.py` is the same file under other names, so model_type "roberta" loads here too).

What differs from BERT (votive.models.bert, whose EncoderLayer runs the blocks here, unchanged):
- positions: a token's position id is padding_idx + (the number of non-pad tokens up to and including it), a pad
  token's is padding_idx itself. With XLM-R's padding_idx 1 the first token sits at 2, so a table of
  max_position_embeddings = 514 rows covers 514 - 1 - 1 = 512 tokens (`max_positions`);
- one token type (type_vocab_size 1), added to every token;
- task checkpoints prefix every key with "roberta." (BERT's with "bert.").
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from pathlib import Path

from votive.errors import ModelConfigError
from votive.formats.weights import WeightStore
from votive.models.binding import encoder_arrays
from votive.models.bert import LAYER_WEIGHTS, MATRICES, EncoderLayer, extended_mask, run_layers
from votive.models.encoder_pass import encoder_pass_for
from votive.text.tokenizer_json import read_json

MODEL_TYPES = ("xlm-roberta", "roberta")  # config.json model_type values read here (the same math)


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class Config:
    """The upstream config.json, the fields XLMRobertaModel reads (defaults are xlm-roberta-base's)."""

    vocab_size: int = 250002  # rows of the token embedding table
    hidden_size: int = 768  # model width D
    num_hidden_layers: int = 12  # encoder blocks
    num_attention_heads: int = 12  # H; head size is D / H
    intermediate_size: int = 3072  # feed-forward width F
    max_position_embeddings: int = 514  # rows of the position table: padding_idx + 1 + the longest input
    type_vocab_size: int = 1  # one segment embedding, added everywhere
    layer_norm_eps: float = 1e-5
    hidden_act: str = "gelu"  # only exact GELU is supported (what XLM-R checkpoints use)
    position_embedding_type: str = "absolute"
    pad_token_id: int = 1  # padding_idx: positions count from padding_idx + 1

    @classmethod
    def from_json(cls, path: Path) -> "Config":
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ModelConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        if raw.get("model_type") not in MODEL_TYPES:
            raise ModelConfigError(f"{path}: model_type {raw.get('model_type')!r} is not an XLM-RoBERTa encoder")
        cfg = cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        if cfg.hidden_act != "gelu":
            raise ModelConfigError(f"{path}: hidden_act {cfg.hidden_act!r} is not supported (only 'gelu')")
        if cfg.position_embedding_type != "absolute":
            raise ModelConfigError(
                f"{path}: position_embedding_type {cfg.position_embedding_type!r} is not supported (only 'absolute')")
        if cfg.hidden_size % cfg.num_attention_heads:
            raise ModelConfigError(
                f"{path}: hidden_size {cfg.hidden_size} is not divisible by {cfg.num_attention_heads} heads")
        if not 0 <= cfg.pad_token_id < cfg.max_position_embeddings - 1:
            raise ModelConfigError(f"{path}: pad_token_id {cfg.pad_token_id} leaves no position in a table of "
                                   f"{cfg.max_position_embeddings}")
        return cfg


# -------------------------------------------------------------------------------------------- weight names
# Our name -> the checkpoint's (XLMRobertaModel's state dict; "roberta." before each in a task checkpoint). The
# per-layer names are BERT's LAYER_WEIGHTS, the same keys. Linear weights are stored (out, in).
WEIGHTS = {
    "tok_embed": "embeddings.word_embeddings.weight",  # (vocab, D)
    "pos_embed": "embeddings.position_embeddings.weight",  # (max_position_embeddings, D)
    "type_embed": "embeddings.token_type_embeddings.weight",  # (1, D)
    "embed_norm.w": "embeddings.LayerNorm.weight",  # (D,)
    "embed_norm.b": "embeddings.LayerNorm.bias",  # (D,)
}
# In checkpoints but not used by an encoder that pools token states: the pooler, a sequence classifier (read by
# votive.models.cross_encoder), the masked-LM head, the position_ids buffer.
UNUSED_PREFIXES = ("pooler.", "classifier.", "lm_head.", "embeddings.position_ids")


def _weight_shapes(cfg: Config) -> dict[str, tuple[int, ...]]:
    """Expected shape of every tensor, by our name (the comments in WEIGHTS / bert.LAYER_WEIGHTS, as numbers)."""
    D, F = cfg.hidden_size, cfg.intermediate_size
    shapes = {"tok_embed": (cfg.vocab_size, D), "pos_embed": (cfg.max_position_embeddings, D),
              "type_embed": (cfg.type_vocab_size, D), "embed_norm.w": (D,), "embed_norm.b": (D,)}
    shapes.update(dict.fromkeys(LAYER_WEIGHTS, (D,)))  # biases and norms
    shapes.update({"wq": (D, D), "wk": (D, D), "wv": (D, D), "wo": (D, D), "w_up": (F, D), "b_up": (F,),
                   "w_down": (D, F)})
    return shapes


def position_ids(ids, mask, padding_idx: int):
    """create_position_ids_from_input_ids, on host numpy arrays: padding_idx + the running count of non-pad
    tokens for each one, padding_idx for pads. A token counts when the mask has it and it is not the pad id
    (a literal <pad> in the text stays at padding_idx, as in transformers).

    Example:
        >>> import numpy as np
        >>> position_ids(np.array([[0, 9, 9, 2], [0, 9, 2, 0]]), np.array([[1, 1, 1, 1], [1, 1, 1, 0]]), 1)
        array([[2, 3, 4, 5],
               [2, 3, 4, 1]])
    """
    import numpy as np

    counts = (np.asarray(ids) != padding_idx) & (np.asarray(mask) != 0)  # (B, T)
    return np.cumsum(counts, axis=1) * counts + padding_idx  # (B, T)


# ------------------------------------------------------------------------------------------------- forward
class XLMRobertaModel:
    """The encoder: embeddings then `num_hidden_layers` BERT blocks; returns the last hidden states."""

    def __init__(self, ops, cfg: Config, weights: dict, layers: list[dict]):
        self.ops, self.cfg = ops, cfg
        self.w = weights  # WEIGHTS names -> arrays
        self.layers = [EncoderLayer(ops, lw, cfg) for lw in layers]
        self.whole = encoder_pass_for(ops, self.layers)  # every layer in one C call, or None

    def forward(self, ids, mask):
        """ids, mask: (B, T) integer arrays -> (B, T, D) float32 hidden states."""
        ops, w, cfg = self.ops, self.w, self.cfg
        positions = position_ids(ops.to_numpy(ids), ops.to_numpy(mask), cfg.pad_token_id)  # (B, T)
        x = ops.embedding(w["tok_embed"], ids)  # (B, T, D)
        x += ops.embedding(w["pos_embed"], ops.asarray(positions, ops.int64))  # (B, T, D)
        x += w["type_embed"][0]  # the one token type
        x = ops.layer_norm(x, w["embed_norm.w"], w["embed_norm.b"], cfg.layer_norm_eps)  # (B, T, D)
        mask_bias = extended_mask(ops, mask)  # (B, 1, 1, T): 0 for tokens, finfo(float32).min for padding
        return run_layers(ops, self.layers, x, mask, mask_bias, self.whole)  # (B, T, D): BERT's blocks, no padding

    @property
    def hidden_size(self) -> int:
        return self.cfg.hidden_size

    @property
    def max_positions(self) -> int:
        """The longest input the position table covers: its rows less padding_idx and the pad's own row."""
        return self.cfg.max_position_embeddings - self.cfg.pad_token_id - 1

    @classmethod
    def from_folder(cls, folder: Path, ops) -> "XLMRobertaModel":
        """A Hugging Face XLMRobertaModel folder (config.json, safetensors) on `ops`."""
        return cls.from_safetensors(WeightStore(folder), Config.from_json(Path(folder) / "config.json"), ops)

    @classmethod
    def from_safetensors(cls, store: WeightStore, cfg: Config, ops) -> "XLMRobertaModel":
        """Bind every tensor of WEIGHTS / bert.LAYER_WEIGHTS from `store`, checking shapes; unknown keys fail."""
        prefix = "roberta." if "roberta." + WEIGHTS["tok_embed"] in store else ""
        shapes = _weight_shapes(cfg)
        used = set()

        def fetch(ours: str, theirs: str):
            used.add(prefix + theirs)
            if ours == "tok_embed":
                store.advise_rows(prefix + theirs)  # 250k rows; a cold start reads those a text looks up
            return store.get(prefix + theirs, shape=shapes[ours])

        weights = {ours: ops.asarray(fetch(ours, theirs)) for ours, theirs in WEIGHTS.items()}
        layers = []
        for i in range(cfg.num_hidden_layers):
            names = {ours: theirs.format(i=i) for ours, theirs in LAYER_WEIGHTS.items()}
            release = partial(store.release, *(prefix + names[m] for m in MATRICES))
            layers.append(encoder_arrays(ops, {ours: fetch(ours, name) for ours, name in names.items()}, release))
        unknown = [n for n in store.keys()
                   if n not in used and not n.removeprefix(prefix).startswith(UNUSED_PREFIXES)]
        if unknown:
            raise ModelConfigError(
                f"{store.path}: {len(unknown)} tensors an XLM-RoBERTa encoder does not use, e.g. {unknown[0]!r} "
                f"(config says {cfg.num_hidden_layers} layers; is this really an XLMRobertaModel checkpoint?)")
        return cls(ops, cfg, weights, layers)

"""Cross-encoder rerankers: a (query, document) pair in, one relevance score out, as sentence-transformers'
`CrossEncoder` computes it for a Hugging Face `...ForSequenceClassification` folder:

    ids, types = pair template (query, document), truncated 'longest_first' to max_length
    h          = encoder family (config.json model_type -> ENCODERS)(ids, mask, types)   (B, T, D)
    logit      = out(tanh(dense(h[:, 0])))                                                 (B, 1)
    score      = activation(logit)                                sigmoid unless the config names another

The head is BERT's pooler and classifier (`bert.pooler.dense`, `classifier`) or RoBERTa's classification head
(`classifier.dense`, `classifier.out_proj`): the same math on the first token ([CLS] or <s>) under other names,
so one `ClassifierHead` reads either through `HEAD_WEIGHTS`. Dropout plays no part at inference.

Ported from, at pinned versions:
- transformers `models/bert/modeling_bert.py` (BertPooler, BertForSequenceClassification) and
  `models/roberta/modeling_roberta.py` (RobertaClassificationHead) @ v4.44.0;
- sentence-transformers `cross_encoder/model.py` @ v6.3.0 (`get_default_activation_fn`: config.json's
  `sentence_transformers.activation_fn`, else the pre-v4 `sbert_ce_default_activation_function`, else Sigmoid
  for one label; a path outside `torch.` is not trusted and falls back to that default; `rank` refuses models
  with more than one label) and `base/modules/transformer.py` (`preprocess`: padding, truncation
  'longest_first' to the tokenizer's `model_max_length` capped by config.json `max_position_embeddings`).

Example:
    >>> model = votive.load("cross-encoder/ms-marco-MiniLM-L6-v2")                      # doctest: +SKIP
    >>> model.rerank("capital of France?", ["Paris is the capital.", "Berlin is big."])  # doctest: +SKIP
    [Ranked(index=0, score=0.99...), Ranked(index=1, score=0.0...)]
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from votive.errors import InputError, ModelConfigError
from votive.formats.weights import WeightStore
from votive.models.config_checks import check_finite
from votive.models.sentence_encoder import encoder_class
from votive.text.tokenizer_json import read_json
from votive.text.wordpiece import load_tokenizer


# ---------------------------------------------------------------------------------------------------- config
@dataclass
class Config:
    """What config.json says about the classifier (the encoder's own fields are its family's)."""

    path: Path  # the config.json, named in errors
    model_type: str  # picks the encoder family (ENCODERS) and the head's names (HEAD_WEIGHTS)
    num_labels: int  # rows of the classifier; a reranker has one (`num_labels`, else len(`id2label`), else 2)
    activation: str  # a key of ACTIVATIONS: what turns the logit into the score
    max_position_embeddings: int | None  # caps the tokenizer's model_max_length, as sentence-transformers does

    @classmethod
    def from_json(cls, path: Path) -> "Config":
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ModelConfigError(f"{path}: expected a JSON object, found {type(raw).__name__}")
        archs = raw.get("architectures") or []
        if not any(isinstance(a, str) and a.endswith("ForSequenceClassification") for a in archs):
            raise ModelConfigError(f"{path}: architectures {archs} names no ...ForSequenceClassification model; a "
                                   "cross-encoder reranker is one")
        model_type = raw.get("model_type", "bert")
        if model_type not in HEAD_WEIGHTS:
            raise ModelConfigError(f"{path}: a {model_type!r} sequence classifier is not a reranker votive runs "
                                   f"(supported: {', '.join(HEAD_WEIGHTS)})")
        id2label = raw.get("id2label")
        num_labels = raw.get("num_labels") or (len(id2label) if isinstance(id2label, dict) and id2label else 2)
        if num_labels != 1:
            raise ModelConfigError(f"{path}: num_labels is {num_labels}; votive reranks with cross-encoders that "
                                   "give one score (num_labels 1), as sentence-transformers' CrossEncoder.rank "
                                   "does: a classifier over several labels has no one relevance score")
        return cls(path, model_type, num_labels, _activation(raw, path), raw.get("max_position_embeddings"))


# sentence-transformers' activation (the class path it saves) -> ours. One label defaults to Sigmoid.
def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp(-x) overflows to inf for a very negative logit: the score is then 0
        return 1.0 / (1.0 + np.exp(-x))


ACTIVATIONS = {
    "sigmoid": _sigmoid,  # torch.nn.Sigmoid: a probability of relevance
    "identity": lambda x: x,  # torch.nn.Identity: the raw logit (ms-marco cross-encoders since ST v4)
    "tanh": np.tanh,  # torch.nn.Tanh
}
ACTIVATION_PATHS = {
    "torch.nn.modules.activation.Sigmoid": "sigmoid", "torch.nn.Sigmoid": "sigmoid",
    "torch.nn.modules.linear.Identity": "identity", "torch.nn.Identity": "identity",
    "torch.nn.modules.activation.Tanh": "tanh", "torch.nn.Tanh": "tanh",
}


def _activation(raw: dict, path: Path) -> str:
    """get_default_activation_fn: the saved class path, else Sigmoid (for one label)."""
    st = raw.get("sentence_transformers")
    saved = st.get("activation_fn") if isinstance(st, dict) else None
    if saved is None:
        saved = raw.get("sbert_ce_default_activation_function")
    if saved is None or not (isinstance(saved, str) and saved.startswith("torch.")):
        return "sigmoid"  # nothing saved, or a path sentence-transformers does not trust without remote code
    if saved not in ACTIVATION_PATHS:
        raise ModelConfigError(f"{path}: activation_fn {saved!r} is not one votive applies (supported: "
                               f"{', '.join(sorted(ACTIVATION_PATHS))})")
    return ACTIVATION_PATHS[saved]


# -------------------------------------------------------------------------------------------- weight names
# config.json model_type -> our name -> the checkpoint's name. Linear weights are (out, in), as PyTorch keeps them.
HEAD_WEIGHTS = {
    "bert": {  # BertForSequenceClassification: BertPooler then classifier
        "dense.w": "bert.pooler.dense.weight",  # (D, D)
        "dense.b": "bert.pooler.dense.bias",  # (D,)
        "out.w": "classifier.weight",  # (num_labels, D)
        "out.b": "classifier.bias",  # (num_labels,)
    },
    "xlm-roberta": {  # XLMRobertaForSequenceClassification: RobertaClassificationHead
        "dense.w": "classifier.dense.weight",  # (D, D)
        "dense.b": "classifier.dense.bias",  # (D,)
        "out.w": "classifier.out_proj.weight",  # (num_labels, D)
        "out.b": "classifier.out_proj.bias",  # (num_labels,)
    },
}
HEAD_WEIGHTS["roberta"] = HEAD_WEIGHTS["xlm-roberta"]  # RobertaForSequenceClassification: the same head


# ---------------------------------------------------------------------------------------------------- layers
class ClassifierHead:
    """logits = out(tanh(dense(h_first))): a few (B, D) rows, computed on the host in float32 whatever the
    backend (the encoder's (B, T, D) states stay on it; only the first token's row comes back)."""

    def __init__(self, weights: dict[str, np.ndarray], activation: str):
        self.w = weights  # HEAD_WEIGHTS names -> float32 arrays, shapes as listed there
        self.activation = activation

    def __call__(self, first: np.ndarray) -> np.ndarray:
        """first: (B, D) the first token's final hidden state -> (B,) scores."""
        w = self.w
        h = np.tanh(first @ w["dense.w"].T + w["dense.b"])  # (B, D)
        logits = h @ w["out.w"].T + w["out.b"]  # (B, 1)
        return ACTIVATIONS[self.activation](logits[:, 0]).astype(np.float32)  # (B,)

    @classmethod
    def from_safetensors(cls, store: WeightStore, cfg: Config, hidden_size: int) -> "ClassifierHead":
        D, n = hidden_size, cfg.num_labels
        shapes = {"dense.w": (D, D), "dense.b": (D,), "out.w": (n, D), "out.b": (n,)}
        names = HEAD_WEIGHTS[cfg.model_type]
        missing = [theirs for theirs in names.values() if theirs not in store]
        if missing:
            raise ModelConfigError(f"{store.path}: no {missing[0]!r}: a {cfg.model_type} sequence classifier's "
                                   f"head is {', '.join(names.values())}")
        weights = {ours: np.array(store.get(theirs, shape=shapes[ours]), np.float32) for ours, theirs in names.items()}
        return cls(weights, cfg.activation)


class Ranked(NamedTuple):
    """One document's place in a ranking."""

    index: int  # its position in the documents given
    score: float  # its relevance score


# ------------------------------------------------------------------------------------------- the reranker
class CrossEncoder:
    """(query, document) pairs in, one float32 relevance score per pair out.

    Args:
        model: the encoder family's model: `forward(ids, mask[, token_types]) -> (B, T, D)`, `hidden_size`.
        head: the classifier on the first token, with the activation.
        tokenizer: `encode_pair_batch(pairs) -> [(ids, token types)]`, truncated to max_seq_length, unpadded.
        max_seq_length: the longest pair, special tokens included.
        model_id: how responses name the model.
    """

    kind = "rerank"

    def __init__(self, model, head: ClassifierHead, tokenizer, max_seq_length: int, model_id: str):
        self.model, self.ops = model, model.ops
        self.head = head
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length
        self.model_id = model_id
        self.backend = self.ops.name
        # A family whose forward takes no token types (RoBERTa's one segment) gets none: its transformers
        # tokenizer does not hand them to the model either (token_type_ids is not among its model_input_names).
        self._takes_types = "token_types" in inspect.signature(model.forward).parameters

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(ids, token type ids) per pair, special tokens included, truncated to max_seq_length."""
        return self.tokenizer.encode_pair_batch(_check_pairs(pairs))

    def predict(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> tuple[np.ndarray, int]:
        """Score `pairs` -> (float32 array (n,), total token count incl. special tokens).

        Pairs are sorted by length so each batch pads only to its own longest member, then put back in order.

        Raises:
            InputError: a text that is not a string or not Unicode, named by its pair.
        """
        encoded = self.tokenize(pairs)
        ops = self.ops
        scores = np.empty(len(encoded), np.float32)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
        n_tokens = 0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            T = max(len(encoded[i][0]) for i in idx)
            ids = [encoded[i][0] + [0] * (T - len(encoded[i][0])) for i in idx]
            types = [encoded[i][1] + [0] * (T - len(encoded[i][1])) for i in idx]
            mask = [[1] * len(encoded[i][0]) + [0] * (T - len(encoded[i][0])) for i in idx]
            n_tokens += sum(len(encoded[i][0]) for i in idx)
            ids, mask = ops.asarray(ids, ops.int64), ops.asarray(mask, ops.int64)  # (b, T) each
            if self._takes_types and any(any(row) for row in types):
                hidden = self.model.forward(ids, mask, ops.asarray(types, ops.int64))  # (b, T, D)
            else:
                hidden = self.model.forward(ids, mask)  # (b, T, D)
            scores[idx] = self.head(ops.to_numpy(hidden[:, 0]).astype(np.float32))  # (b,)
        check_finite(scores, f"{self.model_id}: the scores")  # broken weights: a 500, never NaN scores
        return scores, n_tokens

    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> np.ndarray:
        """Like sentence-transformers' `CrossEncoder.predict(pairs)`: n pairs -> (n,) float32 scores."""
        return self.predict(pairs, batch_size)[0]

    def rerank(self, query: str, documents: Sequence[str], top_n: int | None = None,
               batch_size: int = 32) -> list[Ranked]:
        """Like sentence-transformers' `CrossEncoder.rank`: the documents' (index, score), best first (ties keep
        the documents' order), the first `top_n` of them (None: all)."""
        if not isinstance(query, str):
            raise InputError(f"the query is {type(query).__name__}, expected a string")
        if isinstance(documents, str) or not isinstance(documents, (list, tuple)):
            raise InputError(f"expected a list of documents, got {type(documents).__name__}")
        scores = self.score([(query, d) for d in documents], batch_size)
        ranking = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [Ranked(i, float(scores[i])) for i in ranking[:top_n]]

    @classmethod
    def from_folder(cls, folder: Path, ops, model_id: str | None = None) -> "CrossEncoder":
        """A Hugging Face `...ForSequenceClassification` folder (config.json, safetensors, tokenizer) on `ops`."""
        folder = Path(folder)
        cfg = Config.from_json(folder / "config.json")
        model = encoder_class(folder).from_folder(folder, ops)
        head = ClassifierHead.from_safetensors(WeightStore(folder), cfg, model.hidden_size)
        max_len = _max_length(folder, cfg, model.max_positions)
        tokenizer = load_tokenizer(folder, max_len)
        if not hasattr(tokenizer, "encode_pair_batch"):
            raise ModelConfigError(f"{folder}: its tokenizer ({type(tokenizer).__name__}) cannot encode (query, "
                                   "document) pairs yet")
        tokenizer.encode_pair_batch([("", "")])  # a tokenizer without a pair template fails here, not per request
        return cls(model, head, tokenizer, max_len, model_id or folder.name)


# --------------------------------------------------------------------------------------------------- addenda
def _check_pairs(pairs) -> list[tuple[str, str]]:
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, (list, tuple)):
        raise InputError(f"expected a list of (query, document) pairs, got {type(pairs).__name__}")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise InputError(f"pair {i} is {pair!r:.80}, expected two strings")
    return [tuple(p) for p in pairs]


def _max_length(folder: Path, cfg: Config, limit: int) -> int:
    """tokenizer_config.json's model_max_length capped by config.json's max_position_embeddings, as the
    tokenizer sentence-transformers' CrossEncoder builds truncates; and never past the family's position table
    (`limit`)."""
    length = limit
    path = folder / "tokenizer_config.json"
    value = read_json(path).get("model_max_length") if path.is_file() else None
    if isinstance(value, int) and value > 0:
        length = min(length, value)
    if isinstance(cfg.max_position_embeddings, int) and cfg.max_position_embeddings > 0:
        length = min(length, cfg.max_position_embeddings)
    return length

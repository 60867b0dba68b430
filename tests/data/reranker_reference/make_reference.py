"""Write reference.npz and pairs.json: sentence-transformers' CrossEncoder scores for the random rerankers of
votive.testing.reranker_folders (see README.md beside this file). Not run by the test suite:

    .venv/bin/python tests/data/reranker_reference/make_reference.py
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
REPO = HERE.parents[2]
sys.path.insert(0, str(REPO))

from votive.testing.reranker_folders import (RerankerShape, write_reranker_folder,  # noqa: E402
                                             write_xlm_roberta_reranker)

# The XLM-R variant's tokenizer: the Unigram tokenizer.json of votive's Unigram tests (tests/data/unigram/).
UNIGRAM_TOKENIZER = REPO / "tests" / "data" / "unigram" / "tokenizer.json"

# name -> write_reranker_folder options. "json": tokenizer.json, model_max_length 40 (a 37-id budget for the two
# texts: odd, so the longer of two long texts keeps one more id), Sigmoid by default. "vocab": vocab.txt, no
# model_max_length (capped by max_position_embeddings 64), Identity saved as sentence-transformers v4+ saves it.
# "xlmr": write_xlm_roberta_reranker with the Unigram tokenizer.json, model_max_length 30 (a 26-id budget: the
# <s> A </s></s> B </s> template takes 4), positions from 2, one token type.
VARIANTS = {
    "json": {"seed": 1, "tokenizer": "json", "model_max_length": 40},
    "vocab": {"seed": 2, "tokenizer": "vocab", "activation_fn": "torch.nn.modules.linear.Identity"},
    "xlmr": {"seed": 3, "model_max_length": 30},
}


def write_variant(folder: Path, name: str) -> Path:
    """The folder of VARIANTS[name]."""
    if name == "xlmr":
        return write_xlm_roberta_reranker(folder, UNIGRAM_TOKENIZER, RerankerShape(max_position_embeddings=40),
                                          **VARIANTS[name])
    return write_reranker_folder(folder, **VARIANTS[name])


def texts() -> tuple[list[str], list[str]]:
    """Queries and documents: short and long (past either budget), empty, cased, accented, punctuated, unknown."""
    rng = np.random.default_rng(0)
    words = [w for w in RerankerShape().words if not w.startswith("##")]

    def sentence(n: int) -> str:
        return " ".join(rng.choice(words, n)).capitalize() + "."

    queries = ["What is the capital of France?", "who wrote the novel", sentence(45), "Ünïcödé café? ✨ x"]
    documents = ["Paris is the capital of France.", "Berlin is the capital of Germany.", "", "The cat sat on the mat.",
                 sentence(12), sentence(25), sentence(60), "A  museum,  known   for (large) books!",
                 "ÉCOLE? Ça va... 123 cats-dogs", "中文 text and 🙂 emoji"]
    return queries, documents


def main() -> None:
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import CrossEncoder

    queries, documents = texts()
    pairs = [(q, d) for q in queries for d in documents] + [(documents[6], queries[2]), (queries[2], queries[2])]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in VARIANTS:
            folder = write_variant(Path(tmp) / name, name)
            model = CrossEncoder(str(folder), device="cpu")
            out[f"{name}/max_length"] = np.array(model.max_seq_length)
            out[f"{name}/scores"] = model.predict(pairs, batch_size=32).astype(np.float32)
            enc = model.tokenizer([list(p) for p in pairs], padding=True, truncation="longest_first",
                                  max_length=model.max_seq_length, return_tensors="np")
            mask = enc["attention_mask"].astype(bool)
            out[f"{name}/ids"] = np.where(mask, enc["input_ids"], -1).astype(np.int32)
            types = enc.get("token_type_ids", np.zeros_like(enc["input_ids"]))  # XLM-R's tokenizer gives none
            out[f"{name}/types"] = np.where(mask, types, -1).astype(np.int32)
            ranked = model.rank(queries[0], documents)
            out[f"{name}/rank_index"] = np.array([r["corpus_id"] for r in ranked], np.int32)
            out[f"{name}/rank_score"] = np.array([r["score"] for r in ranked], np.float32)
            print(name, model.max_seq_length, type(model.activation_fn).__name__, out[f"{name}/scores"][:4])
    out["xlmr/tokenizer_sha256"] = np.array(hashlib.sha256(UNIGRAM_TOKENIZER.read_bytes()).hexdigest())
    np.savez(HERE / "reference.npz", **out)
    (HERE / "pairs.json").write_text(json.dumps({"queries": queries, "documents": documents, "pairs": pairs},
                                                ensure_ascii=False, indent=1) + "\n")
    print("sentence-transformers", sentence_transformers.__version__, "transformers", transformers.__version__,
          "tokenizers", tokenizers.__version__, "torch", torch.__version__, "numpy", np.__version__)


if __name__ == "__main__":
    main()

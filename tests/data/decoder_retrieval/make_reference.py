"""Write reference.npz: sentence-transformers' embeddings of the decoder embedder folder and the Qwen3-Reranker
model card's scores of the reranker folder (folders.py writes both). Run outside the suite, with torch,
transformers and sentence-transformers installed (README.md says which versions made the stored file):

    .venv/bin/python tests/data/decoder_retrieval/make_reference.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
import folders  # noqa: E402


def embeddings(folder: Path) -> dict:
    """SentenceTransformer.encode in float32 with eager attention: documents with no prompt, queries with
    prompt_name="query", batches of 3 (so rows of different lengths are left-padded together)."""
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu",
                             model_kwargs={"dtype": torch.float32, "attn_implementation": "eager"})
    out = {
        "emb/documents": st.encode(folders.DOCUMENTS, batch_size=3, convert_to_numpy=True),
        "emb/queries": st.encode(folders.QUERIES, prompt_name="query", batch_size=3, convert_to_numpy=True),
    }
    for name, texts in (("documents", folders.DOCUMENTS),
                        ("queries", [folders.QWEN3_EMBEDDING_PROMPTS["query"] + q for q in folders.QUERIES])):
        for k, text in enumerate(texts):  # the ids sentence-transformers feeds the model, unpadded
            f = st.preprocess([text])
            ids = f["input_ids"][0][f["attention_mask"][0].bool()]
            out[f"emb/ids/{name}{k}"] = ids.numpy().astype(np.int64)
    return out


def rerank_scores(folder: Path) -> dict:
    """The Qwen3-Reranker model card's "Transformers Usage" recipe, with its prefix, suffix and default
    instruction, max_length from votive_reranker.json, batches of 4 left-padded; float32, eager attention."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    max_length = json.loads((folder / "votive_reranker.json").read_text())["max_length"]
    prefix = ("<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
              "Instruct provided. Note that the answer can only be \"yes\" or \"no\".<|im_end|>\n<|im_start|>user\n")
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    prefix_tokens = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(suffix, add_special_tokens=False)
    instruction = "Given a web search query, retrieve relevant passages that answer the query"

    def process_inputs(pairs):
        inputs = tokenizer(pairs, padding=False, truncation="longest_first", return_attention_mask=False,
                           max_length=max_length - len(prefix_tokens) - len(suffix_tokens))
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        return tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)

    pairs = [(q, d) for q in folders.QUERIES for d in folders.DOCUMENTS]
    texts = [f"<Instruct>: {instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
    scores = []
    with torch.no_grad():
        for start in range(0, len(texts), 4):
            inputs = process_inputs(texts[start : start + 4])
            logits = model(**inputs).logits[:, -1, :]
            batch = torch.stack([logits[:, token_false_id], logits[:, token_true_id]], dim=1)
            scores += torch.nn.functional.log_softmax(batch, dim=1)[:, 1].exp().tolist()
    lengths = [len(process_inputs([t])["input_ids"][0]) for t in texts]
    return {"rerank/scores": np.asarray(scores, np.float64), "rerank/lengths": np.asarray(lengths, np.int64)}


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        out = embeddings(folders.write_embedder(Path(tmp) / "embedder"))
        out |= rerank_scores(folders.write_reranker(Path(tmp) / "reranker"))
    np.savez_compressed(HERE / "reference.npz", **out)
    print({k: v.shape for k, v in out.items() if not k.startswith("emb/ids")})


if __name__ == "__main__":
    main()

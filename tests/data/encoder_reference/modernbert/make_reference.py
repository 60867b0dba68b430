"""Write tokenizer.json and reference.npz: a byte-level BPE tokenizer in ModernBERT's form, and transformers' hidden
states and sentence embeddings for the folders of folders.py.

Run outside the suite, with torch, transformers and sentence-transformers installed (README.md says which versions
made the files):

    .venv/bin/python tests/data/encoder_reference/modernbert/make_reference.py

1. tokenizer.json: the `tokenizers` library trains a BPE of TOKENIZER_SIZE tokens on CORPUS (below), then it is
   given what answerdotai/ModernBERT-base's tokenizer.json has: an NFC normalizer, the ByteLevel pre-tokenizer
   (no prefix space, GPT-2's regex) and decoder, the [CLS] $A [SEP] TemplateProcessing post-processor, the special
   tokens [UNK] [CLS] [SEP] [PAD] and [MASK] (lstrip), and non-special added tokens |||IP_ADDRESS||| and a run of
   spaces.
2. For each folder: the ids of every text of folders.TEXTS from transformers' AutoTokenizer as sentence-
   transformers calls it (truncation to max_seq_length), checked equal to the `tokenizers` library's own; the
   last hidden states of `AutoModel.from_pretrained(folder, dtype=float32, attn_implementation="eager")` for all
   texts in one right-padded batch (`{name}/hidden{k}`, the real tokens' rows); and the pooled, L2-normalised
   embeddings (`{name}/embeddings`, 1_Pooling's mode over those states).
   Checked before anything is written: each text alone (no padding) gives the batch's rows; "sdpa" attention
   gives them too; and SentenceTransformer(folder) (eager and default attention) gives the embeddings. The
   largest differences are printed.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import sentence_transformers
import tokenizers
import torch
import transformers
from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers, processors, trainers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from folders import FOLDERS, TEXTS, TOKENIZER, write_folder  # noqa: E402

TOKENIZER_SIZE = 420  # 256 byte symbols, the trainer's specials, and about 160 merges
CORPUS = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the mat.",
    "Sentence embeddings turn each text into one vector; similar texts get similar vectors.",
    "Local attention looks at a window of nearby tokens, and global attention looks at all of them.",
    "ModernBERT alternates global and local attention layers and rotates queries and keys by their positions.",
    "A tokenizer splits text into pieces: words, parts of words, bytes, and the spaces between them.",
    "Hello world! Hello again, world. The world says hello back to everyone in the room.",
    "Serverless functions start cold, load their weights once, and then answer many requests quickly.",
    "Numbers like 12, 345 and 6789 appear in text too, as do dates such as 2024-12-05.",
    "the and of to in is that for on with as by at from it this be are was were an or",
]


def train_tokenizer(path: Path) -> None:
    tok = tokenizers.Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_SIZE, special_tokens=["<|endoftext|>", "<|padding|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 4, trainer)
    tok.add_tokens(["|||IP_ADDRESS|||", AddedToken("    ", normalized=True)])
    tok.add_special_tokens(["[UNK]", "[CLS]", "[SEP]", "[PAD]", AddedToken("[MASK]", lstrip=True)])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    tok.save(str(path))


def pooled(hidden: torch.Tensor, mask: torch.Tensor, mode: str) -> np.ndarray:
    """sentence-transformers' Pooling (cls or mean) then Normalize."""
    if mode == "cls":
        out = hidden[:, 0]
    else:
        m = mask[..., None].float()
        out = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(out, p=2, dim=1).numpy()


def main() -> None:
    torch.manual_seed(0)
    train_tokenizer(TOKENIZER)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (shape, _) in FOLDERS.items():
            folder = write_folder(name, Path(tmp) / name)
            hf_tok = transformers.AutoTokenizer.from_pretrained(folder)
            enc = hf_tok(TEXTS, padding=True, truncation=True, max_length=shape.max_seq_length, return_tensors="pt")
            lib = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
            lib.enable_truncation(shape.max_seq_length)
            lib_ids = [e.ids for e in lib.encode_batch(TEXTS)]
            ids = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
            assert ids == lib_ids, (name, ids, lib_ids)
            assert max(map(len, ids)) == shape.max_seq_length > 2 * shape.local_attention

            model, info = transformers.AutoModel.from_pretrained(
                folder, dtype=torch.float32, attn_implementation="eager", output_loading_info=True)
            assert type(model).__name__ == "ModernBertModel" and not info["missing_keys"], info
            with torch.no_grad():
                hidden = model(**enc).last_hidden_state  # (B, T, D)
                worst_alone = 0.0
                for k, row in enumerate(ids):
                    alone = model(input_ids=torch.tensor([row])).last_hidden_state[0]
                    worst_alone = max(worst_alone, (alone - hidden[k, : len(row)]).abs().max().item())
                sdpa = transformers.AutoModel.from_pretrained(folder, dtype=torch.float32,
                                                              attn_implementation="sdpa")
                sdpa_hidden = sdpa(**enc).last_hidden_state
            real = enc["attention_mask"].bool()
            worst_sdpa = (sdpa_hidden - hidden)[real].abs().max().item()
            embeddings = pooled(hidden, enc["attention_mask"], shape.pooling)
            worst_st = {}
            for attn in ("eager", None):
                kwargs = {"model_kwargs": {"attn_implementation": attn}} if attn else {}
                st = sentence_transformers.SentenceTransformer(str(folder), device="cpu", **kwargs)
                got = st.encode(TEXTS, batch_size=len(TEXTS), convert_to_numpy=True)
                worst_st[attn or "default"] = float(np.abs(got - embeddings).max())
            print(f"{name}: lengths {list(map(len, ids))}; alone vs padded batch {worst_alone:.2e}, sdpa vs eager "
                  f"{worst_sdpa:.2e}, sentence-transformers vs pooled eager {worst_st}")
            assert worst_alone < 1e-5 and worst_sdpa < 1e-5 and max(worst_st.values()) < 1e-5
            for k, row in enumerate(ids):
                out[f"{name}/ids{k}"] = np.array(row, np.int64)
                out[f"{name}/hidden{k}"] = hidden[k, : len(row)].numpy().astype(np.float32)
            out[f"{name}/embeddings"] = embeddings.astype(np.float32)
    np.savez_compressed(HERE / "reference.npz", **out)
    versions = {"transformers": transformers.__version__, "torch": torch.__version__,
                "sentence_transformers": sentence_transformers.__version__, "tokenizers": tokenizers.__version__}
    print("wrote", HERE / "reference.npz", json.dumps(versions))


if __name__ == "__main__":
    main()

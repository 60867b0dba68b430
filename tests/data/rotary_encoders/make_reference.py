"""Write reference.npz: independent embeddings of the random NomicBERT and GTE "new" folders of specs.py.

Run outside the suite (README.md says where the upstream GTE code comes from and which versions made the file):

    .venv/bin/python tests/data/rotary_encoders/make_reference.py UPSTREAM_GTE_DIR

For each NomicBERT variant it writes the folder and the same weights as a GGUF file (votive.testing.
rotary_encoder_folders), tokenizes TEXTS with the folder's WordPiece vocabulary (votive's tokenizer; the ids are
stored, and the tests check votive still produces them), and stores llama.cpp's mean-pooled embedding of each id
list (specs.llama_cpp_embeddings), L2-normalized:
- `nomic/{name}/ids`: int64 (n, Tmax), -1 after each text's end;
- `nomic/{name}/embeddings`: float32 (n, n_embd).

For each GTE variant it writes the folder, builds the upstream `NewModel` from UPSTREAM_GTE_DIR's
`configuration.py` and `modeling.py` (Alibaba-NLP/new-impl's, see README.md) with the folder's config.json, loads
model.safetensors with `load_state_dict(strict=True)`, runs the padded batch of all texts in float32 with eager
attention, and stores the masked mean of the last hidden states, L2-normalized (sentence-transformers' Pooling
and Normalize): `gte/{name}/ids`, `gte/{name}/embeddings`.

One shim: transformers 5 dropped `PreTrainedModel.get_extended_attention_mask`, which `NewModel.forward` calls;
it is put back with transformers 4's definition for a 2-D mask, (1 - mask[:, None, None, :]) * finfo(float32).min.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.numpy import load_file

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from specs import (GTE_VARIANTS, NOMIC_VARIANTS, TEXTS, llama_cpp_embeddings, normalized,  # noqa: E402
                   padded_ids)

from votive.backends import get_backend  # noqa: E402
from votive.models.sentence_encoder import SentenceEncoder  # noqa: E402
from votive.testing.rotary_encoder_folders import (write_gte_folder, write_nomic_bert_folder,  # noqa: E402
                                                   write_nomic_bert_gguf)


def token_ids(folder: Path) -> list[list[int]]:
    """TEXTS tokenized by the folder's WordPiece vocabulary, special tokens included."""
    return SentenceEncoder.from_folder(folder, get_backend("numpy")).tokenize(TEXTS)


def load_upstream_gte(src: Path):
    """configuration.py and modeling.py of `src` imported as the package `gte_new` (modeling imports
    `.configuration`); returns (NewConfig, NewModel)."""
    package = types.ModuleType("gte_new")
    package.__path__ = [str(src)]
    sys.modules["gte_new"] = package
    for name in ("configuration", "modeling"):
        spec = importlib.util.spec_from_file_location(f"gte_new.{name}", src / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"gte_new.{name}"] = module
        spec.loader.exec_module(module)
    modeling = sys.modules["gte_new.modeling"]

    def get_extended_attention_mask(self, attention_mask, input_shape):  # transformers 4's, for a 2-D mask
        return (1.0 - attention_mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min

    modeling.NewModel.get_extended_attention_mask = get_extended_attention_mask
    return sys.modules["gte_new.configuration"].NewConfig, modeling.NewModel


def gte_embeddings(folder: Path, ids: list[list[int]], new_config, new_model) -> np.ndarray:
    raw = json.loads((folder / "config.json").read_text())
    config = new_config(**{k: v for k, v in raw.items() if k not in ("architectures", "model_type")})
    config._attn_implementation = "eager"
    model = new_model(config, add_pooling_layer=False).eval()
    state = {k: torch.from_numpy(v) for k, v in load_file(str(folder / "model.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    T = max(map(len, ids))
    input_ids = torch.tensor([seq + [0] * (T - len(seq)) for seq in ids])
    mask = torch.tensor([[1] * len(seq) + [0] * (T - len(seq)) for seq in ids])
    with torch.no_grad():
        hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state  # (n, T, D)
    m = mask[..., None].to(torch.float32)
    return normalized(((hidden * m).sum(1) / m.sum(1)).numpy())


def main(upstream_gte: Path) -> None:
    torch.manual_seed(0)
    new_config, new_model = load_upstream_gte(upstream_gte)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in NOMIC_VARIANTS.items():
            folder = write_nomic_bert_folder(Path(tmp) / f"nomic-{name}", shape)
            gguf = write_nomic_bert_gguf(Path(tmp) / f"nomic-{name}.gguf", shape)
            ids = token_ids(folder)
            out[f"nomic/{name}/ids"] = padded_ids(ids)
            out[f"nomic/{name}/embeddings"] = normalized(llama_cpp_embeddings(gguf, ids))
        for name, shape in GTE_VARIANTS.items():
            folder = write_gte_folder(Path(tmp) / f"gte-{name}", shape)
            ids = token_ids(folder)
            out[f"gte/{name}/ids"] = padded_ids(ids)
            out[f"gte/{name}/embeddings"] = gte_embeddings(folder, ids, new_config, new_model)
    np.savez_compressed(HERE / "reference.npz", **out)
    import llama_cpp

    print(f"wrote {HERE / 'reference.npz'} with llama-cpp-python {llama_cpp.__version__}, transformers "
          f"{transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))

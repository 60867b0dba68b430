"""Write reference.npz: transformers' logits and greedy ids for the folders of hf_folders.py.

Run outside the suite, with torch and transformers installed (README.md says which versions made the file):

    .venv/bin/python tests/data/hf_reference/make_reference.py

For each spec it writes the folder into a temporary directory (numpy only, from the spec's seed), loads it with
`AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")` (BF16 / F16
weights widened exactly to float32), and stores, per prompt of hf_folders.PROMPTS:
- `{name}/logits{k}`: float32 (vocab,) logits of the position after the prompt;
- `{name}/greedy{k}`: int64 (GREEDY_STEPS,) ids of a greedy continuation: the argmax of the whole sequence's
  forward, step by step (not `generate()`, whose logits processors would, e.g., suppress EOS), and
  `{name}/margin{k}`: float32, each step's gap between the best and the second-best logit (a step whose gap is
  below the test tolerance is a near tie);
- `{name}/logits_long`: for the families of hf_folders.LONG_PROMPTS, the logits after that prompt.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from hf_folders import GREEDY_STEPS, LONG_PROMPTS, PROMPTS, SPECS, write_folder  # noqa: E402


def main() -> None:
    torch.manual_seed(0)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in SPECS.items():
            folder = write_folder(spec, Path(tmp) / name)
            model = transformers.AutoModelForCausalLM.from_pretrained(
                folder, dtype=torch.float32, attn_implementation="eager")
            model.eval()
            for k, prompt in enumerate(PROMPTS):
                ids = torch.tensor([prompt])
                with torch.no_grad():
                    out[f"{name}/logits{k}"] = model(ids).logits[0, -1].numpy().astype(np.float32)
                    seq, margins = list(prompt), []
                    for _ in range(GREEDY_STEPS):  # plain argmax: generate() would add logits processors
                        logits = model(torch.tensor([seq])).logits[0, -1].numpy()
                        top2 = np.sort(logits)[-2:]
                        margins.append(top2[1] - top2[0])
                        seq.append(int(np.argmax(logits)))
                out[f"{name}/greedy{k}"] = np.array(seq[len(prompt):], np.int64)
                out[f"{name}/margin{k}"] = np.array(margins, np.float32)
            if name in LONG_PROMPTS:  # past the original context: longrope's long factors
                with torch.no_grad():
                    logits = model(torch.tensor([LONG_PROMPTS[name]])).logits[0, -1]
                out[f"{name}/logits_long"] = logits.numpy().astype(np.float32)
    np.savez_compressed(HERE / "reference.npz", **out)
    print(f"wrote {HERE / 'reference.npz'} with transformers {transformers.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()

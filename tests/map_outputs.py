"""Reading a `votive map` output folder back, as a user would: the shards the manifest lists, in order."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_embeddings(out: Path) -> tuple[list[str], np.ndarray]:
    """(ids, vectors) of an embedding run's output folder, shard after shard in the manifest's order."""
    manifest = json.loads((out / "manifest.json").read_text())
    ids, vectors = [], []
    for name in sorted(manifest["shards"]):
        ids += json.loads((out / f"{name}.ids.json").read_text())
        vectors.append(np.load(out / f"{name}.npy"))
    return ids, np.concatenate(vectors)

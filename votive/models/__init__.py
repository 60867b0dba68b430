"""One file per architecture family; `load_model` picks the family from what a model folder or file holds."""

from __future__ import annotations

from pathlib import Path

from votive.errors import ModelConfigError


def load_model(source, *, backend: str | None = None):
    """Resolve `source` (see `votive.load`) and build the model its files describe."""
    from votive.backends import get_backend
    from votive.runtime.sources import resolve_source

    resolved = resolve_source(source)
    ops = get_backend(backend)
    path = Path(resolved.path)
    if path.is_dir() and (path / "config.json").is_file():
        from votive.models.bert import SentenceEncoder

        return SentenceEncoder.from_folder(path, ops, model_id=resolved.model_id)
    raise ModelConfigError(f"{path}: not a model votive can serve (expected a BERT folder with config.json)")

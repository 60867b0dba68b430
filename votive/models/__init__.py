"""One file per architecture family; `load_model` picks the family from what a model folder or file holds."""

from __future__ import annotations

from pathlib import Path

from votive.errors import ModelConfigError

# GGUF `general.architecture` -> (module, class) of the decoder family that reads it.
DECODERS = {
    "llama": ("votive.models.llama", "LlamaModel"),
    "gemma3": ("votive.models.gemma", "Gemma3Model"),
    "qwen2": ("votive.models.qwen2", "Qwen2Model"),
    "qwen3": ("votive.models.qwen3", "Qwen3Model"),
    "phi3": ("votive.models.phi3", "Phi3Model"),
    "smollm3": ("votive.models.smollm3", "SmolLM3Model"),
}


def load_model(source, *, backend: str | None = None, n_ctx: int | None = None):
    """Resolve `source` (see `votive.load`; a `ResolvedSource` is taken as it is) and build the model its files
    describe."""
    from votive.backends import get_backend
    from votive.sources import ResolvedSource, resolve_source

    resolved = source if isinstance(source, ResolvedSource) else resolve_source(source)
    ops = get_backend(backend)
    path = Path(resolved.path)
    if path.suffix == ".gguf":
        return load_gguf(path, ops, n_ctx=n_ctx, model_id=resolved.model_id)
    if path.is_dir() and (path / "config.json").is_file():
        from votive.models.bert import SentenceEncoder

        return SentenceEncoder.from_folder(path, ops, model_id=resolved.model_id)
    raise ModelConfigError(f"{path}: not a model votive can serve (a BERT folder with config.json, or a .gguf)")


def load_gguf(path: Path, ops, *, n_ctx: int | None = None, model_id: str = ""):
    import importlib

    from votive.formats.gguf import GGUFFile
    from votive.text.gguf_tokenizer import GGUFTokenizer

    f = GGUFFile(path)
    arch = f.architecture
    if arch not in DECODERS:
        raise ModelConfigError(f"{path}: architecture {arch!r} is not supported (supported: {', '.join(DECODERS)})")
    module, name = DECODERS[arch]
    cls = getattr(importlib.import_module(module), name)
    return cls.from_gguf(f, ops, GGUFTokenizer.from_gguf(f), n_ctx=n_ctx, model_id=model_id or path.stem)

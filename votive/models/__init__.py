"""One file per architecture family; `load_model` picks the family from what a model folder or file holds."""

from __future__ import annotations

from pathlib import Path

from votive.errors import InputError, ModelConfigError

# GGUF `general.architecture` -> (module, class) of the decoder family that reads it.
DECODERS = {
    "llama": ("votive.models.llama", "LlamaModel"),
    "gemma3": ("votive.models.gemma", "Gemma3Model"),
    "qwen2": ("votive.models.qwen2", "Qwen2Model"),
    "qwen3": ("votive.models.qwen3", "Qwen3Model"),
    "phi3": ("votive.models.phi3", "Phi3Model"),
    "smollm3": ("votive.models.smollm3", "SmolLM3Model"),
}
# Hugging Face config.json `architectures` -> (module, class) of the family whose from_safetensors reads it.
HF_DECODERS = {
    "LlamaForCausalLM": ("votive.models.llama", "LlamaModel"),
    "MistralForCausalLM": ("votive.models.llama", "LlamaModel"),
    "Qwen2ForCausalLM": ("votive.models.qwen2", "Qwen2Model"),
    "Qwen3ForCausalLM": ("votive.models.qwen3", "Qwen3Model"),
    "Phi3ForCausalLM": ("votive.models.phi3", "Phi3Model"),
    "Gemma3ForCausalLM": ("votive.models.gemma", "Gemma3Model"),
}


def load_model(source, *, backend: str | None = None, n_ctx: int | None = None, quantize: str | None = None):
    """Resolve `source` (see `votive.load`; a `ResolvedSource` is taken as it is) and build the model its files
    describe."""
    from votive.models import import_ahead

    import_ahead.start()  # before anything below imports numpy: a page-cold start reads its bytecode in parallel
    from votive.backends import get_backend
    from votive.sources import ResolvedSource, resolve_source

    from votive.models.config_checks import check_n_ctx

    check_n_ctx(n_ctx)  # 0 or -5: a ModelConfigError naming n_ctx, before anything is read
    qtype = None
    if quantize is not None:  # a bad choice is refused before anything is read
        from votive.models.hf_checkpoint import quantize_type

        qtype = quantize_type(quantize)
    resolved = source if isinstance(source, ResolvedSource) else resolve_source(source)
    path = Path(resolved.path)
    if qtype is not None and (path.suffix == ".gguf" or resolved.kind not in ("generation", "embeddings")):
        raise InputError(f"{path}: quantize={quantize!r} applies to Hugging Face folders (safetensors) of decoders "
                         f"and embedding encoders only; a GGUF file is served as stored")
    ops = get_backend(backend)
    if path.suffix == ".gguf":
        if resolved.kind != "generation":  # an encoder's GGUF (votive.sources: architecture or pooling_type)
            from votive.formats.gguf import GGUFFile

            if GGUFFile(path).architecture in DECODERS:  # a decoder with pooling: an embedder or a reranker
                from votive.models import decoder_embedder, decoder_reranker

                module = decoder_reranker if resolved.kind == "rerank" else decoder_embedder
                return module.from_gguf(path, ops, model_id=resolved.model_id or path.stem)
            from votive.models.sentence_encoder import SentenceEncoder

            return SentenceEncoder.from_gguf(path, ops, model_id=resolved.model_id or path.stem)
        return load_gguf(path, ops, n_ctx=n_ctx, model_id=resolved.model_id)
    if resolved.kind == "generation":
        return load_hf_decoder(path, ops, n_ctx=n_ctx, model_id=resolved.model_id, quantize=qtype)
    if resolved.kind == "rerank" and path.is_dir():
        from votive.models import decoder_reranker

        if decoder_reranker.is_reranker_folder(path):  # a decoder scoring yes / no (Qwen3-Reranker)
            return decoder_reranker.from_folder(path, ops, model_id=resolved.model_id)
        from votive.models.cross_encoder import CrossEncoder

        return CrossEncoder.from_folder(path, ops, model_id=resolved.model_id)
    if path.is_dir() and (path / "config.json").is_file():
        if is_decoder_folder(path):  # modules.json over a decoder (Qwen3-Embedding)
            from votive.models import decoder_embedder

            return decoder_embedder.from_folder(path, ops, model_id=resolved.model_id, quantize=qtype)
        from votive.models.sentence_encoder import SentenceEncoder

        return SentenceEncoder.from_folder(path, ops, model_id=resolved.model_id, quantize=qtype)
    raise ModelConfigError(f"{path}: not a model votive can serve (a model folder with config.json, or a .gguf)")


def is_decoder_folder(folder: Path) -> bool:
    """Whether config.json names a decoder votive runs (HF_DECODERS) rather than an encoder; asked of every
    embedding folder, so it lives here and not in decoder_embedder, which an encoder's load does not import."""
    import json

    try:
        archs = json.loads((Path(folder) / "config.json").read_bytes()).get("architectures")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(archs, list) and any(a in HF_DECODERS for a in archs)


def load_gguf(path: Path, ops, *, n_ctx: int | None = None, model_id: str = "", rows_only: bool = False):
    """A decoder GGUF as its family's model. rows_only: the caller looks up rows of the token table and computes
    no logits over it (an embedder), so not even a tied table is read ahead."""
    import importlib

    from votive.formats.gguf import GGUFFile
    from votive.text.gguf_tokenizer import GGUFTokenizer

    f = GGUFFile(path)
    arch = f.architecture
    if arch not in DECODERS:
        raise ModelConfigError(f"{path}: architecture {arch!r} is not supported (supported: {', '.join(DECODERS)})")
    # the first token reads every matrix whole (a tied token table too, as the output): their pages start coming in
    # now, from background threads (votive.formats.safetensors.read_ahead); an untied token table goes by rows
    by_rows = {"token_embd.weight", "output.weight"} if rows_only else (
        {"token_embd.weight"} if "output.weight" in f.tensors else set())
    f.read_ahead([n for n in f.tensors if n not in by_rows])
    module, name = DECODERS[arch]
    cls = getattr(importlib.import_module(module), name)
    return cls.from_gguf(f, ops, GGUFTokenizer.from_gguf(f), n_ctx=n_ctx, model_id=model_id or path.stem)


def load_hf_decoder(folder: Path, ops, *, n_ctx: int | None = None, model_id: str = "", quantize=None, store=None,
                    rows_only: bool = False):
    """A Hugging Face decoder folder (config.json, safetensors, tokenizer.json) as its family's model; `quantize`
    is a GGML type to quantize matrices to at load, a llama.cpp mixture's name ("q4_k_m"), or None
    (votive/models/hf_checkpoint.py). `store`: the folder's tensors seen another way (default its WeightStore).
    rows_only: as load_gguf's (an embedder, a reranker scoring a few tokens)."""
    import importlib

    from votive.formats.weights import WeightStore
    from votive.models.config_checks import check_config_json
    from votive.models.hf_checkpoint import ENCODER_INT8, HFConfig, HFWeights
    from votive.text.hf_tokenizer import HFTokenizer

    hf = HFConfig(folder)
    check_config_json(hf.data, hf.path)  # sizes and epsilons typed and in range, before a family divides by them
    arch = hf.architecture
    if arch not in HF_DECODERS:
        raise ModelConfigError(f"{hf.path}: architecture {arch!r} is not supported (supported: "
                               f"{', '.join(HF_DECODERS)})")
    module, name = HF_DECODERS[arch]
    cls = getattr(importlib.import_module(module), name)
    store = WeightStore(folder) if store is None else store
    # as load_gguf: every matrix starts coming in now, from background threads; an untied token table goes by rows
    by_rows = {"model.embed_tokens.weight", "lm_head.weight"} if rows_only else (
        {"model.embed_tokens.weight"} if "lm_head.weight" in store else set())
    store.read_ahead([n for n in store.keys() if n not in by_rows])
    if quantize == ENCODER_INT8:
        raise InputError(f"{folder}: quantize='int8' (one scale per row) is for embedding encoders; a decoder "
                         "quantizes to q8_0 or q4_k_m, the types llama.cpp runs")
    if isinstance(quantize, str):  # a llama.cpp mixture (q4_k_m): a type per matrix, as its GGUF tensor gets
        from votive.models.hf_checkpoint import hf_mixture

        gguf_arch = next(gguf for gguf, (family, _) in DECODERS.items() if family == module)
        quantize = hf_mixture(quantize, hf, store, importlib.import_module(module), gguf_arch)
    weights = HFWeights(store, quantize)
    return cls.from_safetensors(hf, weights, ops, HFTokenizer(folder), n_ctx=n_ctx,
                                model_id=model_id or Path(folder).name)

"""votive: serverless inference that starts cold in a fraction of a second.

    >>> import votive
    >>> model = votive.load("minilm")            # doctest: +SKIP
    >>> model.embed(["hello world"]).shape       # doctest: +SKIP
    (1, 384)
"""

__version__ = "0.1.0"


def load(source, *, backend: str | None = None, n_ctx: int | None = None):
    """Load a model for inference.

    Args:
        source: a model folder, a weight file, a Hugging Face Hub id (`hf:org/name`, `org/name`, `@revision`
            optional), or an installed model package (`pkg:NAME`, or an alias such as `minilm`); or a
            `votive.sources.ResolvedSource` already resolved (it is not resolved again).
        backend: "numpy" (CPU), "cupy" (NVIDIA GPU) or "auto"; default $VOTIVE_BACKEND, else "auto": cupy where
            an NVIDIA GPU and cupy are present, numpy otherwise (deciding imports no cupy).
        n_ctx: for decoders, the positions a generation's KV cache holds (default 4096, capped by the model's
            training context).

    Returns:
        An encoder (`.embed(texts)`) or, for GGUF decoders, a generator (`.generate(prompt)`).
    """
    from votive.models import load_model

    return load_model(source, backend=backend, n_ctx=n_ctx)

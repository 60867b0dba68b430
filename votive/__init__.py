"""votive: serverless inference that starts cold in a fraction of a second.

    >>> import votive
    >>> model = votive.load("minilm")            # doctest: +SKIP
    >>> model.embed(["hello world"]).shape       # doctest: +SKIP
    (1, 384)
"""

__version__ = "0.1.0"


def load(source, *, backend: str | None = None, n_ctx: int | None = None, quantize: str | None = None):
    """Load a model for inference.

    Args:
        source: a model folder, a weight file, a Hugging Face Hub id (`hf:org/name`, `org/name`, `@revision`
            optional), or an installed model package (`pkg:NAME`, or an alias such as `minilm`); or a
            `votive.sources.ResolvedSource` already resolved (it is not resolved again).
        backend: "numpy" (CPU), "cupy" (NVIDIA GPU) or "auto"; default $VOTIVE_BACKEND, else "auto": cupy where
            an NVIDIA GPU and cupy are present, numpy otherwise (deciding imports no cupy).
        n_ctx: for decoders, the positions a generation's KV cache holds (default 4096, capped by the model's
            training context).
        quantize: for a Hugging Face decoder folder (config.json + safetensors), "q8_0" quantizes its matrices
            at load with votive's quantizer; "q4_k_m" gives each matrix the type and blocks llama.cpp's Q4_K_M
            gives it (votive.quant.mixtures); None (default) keeps them as stored (bf16, f16 or f32); anything
            else is an InputError naming the choices.

    Returns:
        An encoder (`.embed(texts)`) or, for decoders (a GGUF file, or an HF `LlamaForCausalLM`,
        `MistralForCausalLM`, `Qwen2ForCausalLM` or `Qwen3ForCausalLM` folder), a generator (`.generate(prompt)`),
        or, for a cross-encoder (an HF `BertForSequenceClassification` or `XLMRobertaForSequenceClassification`
        folder), a reranker (`.rerank(query, documents)`, `.score(pairs)`).
    """
    from votive.models import load_model

    return load_model(source, backend=backend, n_ctx=n_ctx, quantize=quantize)

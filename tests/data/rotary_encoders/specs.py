"""What tests/test_nomic_bert.py and tests/test_gte.py compare, and how the references were computed (numpy, plus
llama_cpp imported only inside `llama_cpp_embeddings`): the shapes of the random folders, the texts, and
llama.cpp's side of the NomicBERT references.

The folders themselves are written by votive.testing.rotary_encoder_folders from these shapes (seed 0).
"""

from __future__ import annotations

import numpy as np

from votive.testing.rotary_encoder_folders import GteShape, NomicShape

# Texts of 3 to 40-odd tokens: batched three at a time they pad, and the long ones reach RoPE's slow pairs.
TEXTS = [
    "hello world",
    "the cat sat on the mat",
    "a dog",
    "hello",
    "the dog and the cat sat on the mat of the world and hello again",
    "is it",
    "the mat is on the cat and the cat is on the dog and the dog is on the world of the mat and hello hello",
    "quick brown foxes jump over lazy dogs",
]

# name -> NomicShape: nomic-embed-text-v1.5's settings (full rotary, base 1000); RoPE over half of each head,
# base 10000, n_inner 200 (rounded up to 256); interleaved pairs over 3/4 of each head.
NOMIC_VARIANTS = {
    "v15": NomicShape(),
    "partial": NomicShape(rotary_emb_fraction=0.5, rotary_emb_base=10000.0, n_inner=200),
    "interleaved": NomicShape(rotary_emb_fraction=0.75, rotary_emb_interleaved=True),
}

# name -> GteShape: gte-base-en-v1.5's settings (NTK factor 2 over base 500000, no segment table, packed qkv);
# and plain RoPE with a segment table and separate q, k, v.
GTE_VARIANTS = {
    "base": GteShape(),
    "plain": GteShape(rope_scaling=None, rope_theta=10000.0, type_vocab_size=2, pack_qkv=False),
}

BATCH_SIZE = 3  # votive's batches in the tests: every batch but one has padding


def padded_ids(ids: list[list[int]]) -> np.ndarray:
    """Token id lists as one int64 array, -1 after each list's end (how reference.npz stores them)."""
    out = np.full((len(ids), max(map(len, ids))), -1, np.int64)
    for row, seq in zip(out, ids):
        row[: len(seq)] = seq
    return out


def unpadded_ids(ids: np.ndarray) -> list[list[int]]:
    return [[int(t) for t in row if t >= 0] for row in ids]


def normalized(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def llama_cpp_embeddings(path, sequences: list[list[int]], n_ctx: int = 256) -> np.ndarray:
    """llama.cpp's mean-pooled embedding (n, dim) of each id list, one sequence per llama_encode, through the C
    API of llama-cpp-python: two threads, flash attention off, the whole sequence in one batch, positions
    0..len-1, pooling MEAN (the GGUF says so too). Not normalized."""
    import llama_cpp as lib

    model = lib.llama_model_load_from_file(str(path).encode(), lib.llama_model_default_params())
    if not model:
        raise RuntimeError(f"llama.cpp could not load {path}")
    params = lib.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
    params.n_threads = params.n_threads_batch = 2
    params.embeddings = True
    params.pooling_type = lib.LLAMA_POOLING_TYPE_MEAN
    params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
    ctx = lib.llama_init_from_model(model, params)
    if not ctx:
        lib.llama_model_free(model)
        raise RuntimeError(f"llama.cpp could not make a context for {path}")
    try:
        dim = lib.llama_model_n_embd(model)
        out = []
        for ids in sequences:
            memory = lib.llama_get_memory(ctx)
            if memory:  # encoders keep none; cleared in case a version does
                lib.llama_memory_clear(memory, True)
            batch = lib.llama_batch_init(len(ids), 0, 1)
            try:
                for j, token in enumerate(ids):
                    batch.token[j], batch.pos[j], batch.n_seq_id[j], batch.logits[j] = token, j, 1, 1
                    batch.seq_id[j][0] = 0
                batch.n_tokens = len(ids)
                if lib.llama_encode(ctx, batch) != 0:
                    raise RuntimeError(f"llama_encode of {len(ids)} tokens failed")
                vector = lib.llama_get_embeddings_seq(ctx, 0)
                out.append(np.ctypeslib.as_array(vector, shape=(dim,)).copy())
            finally:
                lib.llama_batch_free(batch)
        return np.array(out, np.float32)
    finally:
        lib.llama_free(ctx)
        lib.llama_model_free(model)

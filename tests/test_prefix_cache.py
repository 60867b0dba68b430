"""The prefix cache: what it keeps, lends and evicts (on real KV caches of a tiny shape), and that a prompt gives
the same bits with and without it: on SmolLM2 (numpy backend, one pass, and forced into 16-position passes), on a
K-quant model on the CPU, and on the GPU code (the CUDA kernels on the CPU emulator, and a real GPU where there
is one). Each also shows a split that does round differently, which the cache's rules avoid.
"""

from __future__ import annotations

import numpy as np
import pytest

from votive.backends import numpy_backend
from votive.models.llama import KVCache
from votive.models.prefix_cache import PrefixCache

L, H, CTX, DH = 2, 1, 32, 4
BYTES_PER_POSITION = 2 * L * H * DH * 2  # keys and values, float16


def filled_cache(ids) -> KVCache:
    """A cache whose position p holds ids[p] everywhere: what was lent is then readable."""
    cache = KVCache(numpy_backend, L, H, CTX, DH)
    cache.k[:], cache.v[:] = -1, -1
    for p, token in enumerate(ids):
        cache.k[:, :, p], cache.v[:, :, :, p] = token, token
    return cache


def lent(cache: KVCache, n: int) -> list[int]:
    return [int(x) for x in cache.k[0, 0, :n, 0]]


def test_a_prompt_borrows_the_longest_shared_beginning_and_computes_its_last_token():
    pc = PrefixCache(10**6)
    assert pc.store([5, 6, 7, 8, 9], filled_cache([5, 6, 7, 8, 9])) == 5
    assert pc.store([5, 6, 1], filled_cache([5, 6, 1])) == 3
    fresh = KVCache(numpy_backend, L, H, CTX, DH)
    assert pc.restore([5, 6, 7, 2, 2], fresh) == 3 and lent(fresh, 3) == [5, 6, 7]  # part of an entry serves
    fresh = KVCache(numpy_backend, L, H, CTX, DH)
    assert pc.restore([5, 6, 7, 8, 9], fresh) == 4  # never the whole prompt: its last logits are needed
    assert pc.restore([4, 6], KVCache(numpy_backend, L, H, CTX, DH)) == 0
    assert pc.restore([5, 6, 7, 8, 9, 10, 11], KVCache(numpy_backend, L, H, CTX, DH), block=4) == 4
    assert pc.restore([5, 6, 7, 8, 9, 10], KVCache(numpy_backend, L, H, CTX, DH), min_rows=3) == 3
    assert pc.hits == 4 and pc.borrowed_tokens == 14
    assert pc.store([1, 2], filled_cache([1, 2]), min_rows=3) == 0  # a pass shorter than min_rows is not kept


def test_stored_prefixes_end_on_the_block_and_contained_entries_are_dropped():
    pc = PrefixCache(10**6)
    assert pc.store([1, 2, 3, 4, 5, 6], filled_cache([1, 2, 3, 4, 5, 6]), block=4) == 4
    assert pc.store([1, 2, 3], filled_cache([1, 2, 3]), block=4) == 0  # shorter than a block
    assert pc.store([1, 2, 3, 4, 9, 9, 9, 9, 9], filled_cache([1, 2, 3, 4, 9, 9, 9, 9, 9]), block=4) == 8
    assert len(pc) == 1 and pc.used_bytes == 8 * BYTES_PER_POSITION  # [1, 2, 3, 4] is inside the new entry
    assert pc.store([1, 2, 3, 4], filled_cache([1, 2, 3, 4])) == 0 and len(pc) == 1  # held already


def test_least_recently_used_goes_first_and_pinned_entries_stay():
    pc = PrefixCache(12 * BYTES_PER_POSITION)
    pc.store([1] * 4, filled_cache([1] * 4), pinned=True)
    pc.store([2] * 4, filled_cache([2] * 4))
    pc.store([3] * 4, filled_cache([3] * 4))
    assert pc.restore([2, 2, 2, 2, 0], KVCache(numpy_backend, L, H, CTX, DH)) == 4  # 2s are now the most recent
    pc.store([4] * 4, filled_cache([4] * 4))  # over the budget: the 3s go
    held = {key[0] for key in pc._entries}
    assert held == {1, 2, 4} and pc.used_bytes == 12 * BYTES_PER_POSITION
    pc.store([5] * 8, filled_cache([5] * 8))  # needs two entries' room: 2s and 4s go, the pinned 1s stay
    assert {key[0] for key in pc._entries} == {1, 5}
    assert pc.store([6] * 12, filled_cache([6] * 12)) == 0  # the pinned entry leaves no room for it
    assert {key[0] for key in pc._entries} == {1, 5}  # and nothing was evicted for it
    assert PrefixCache(0).store([1, 2], filled_cache([1, 2])) == 0


# --------------------------------------------------------------------------------------- bit-identity, SmolLM2

SYSTEM = ("You are a careful assistant for a hardware shop. Answer in one short sentence, name the aisle, and "
          "never invent a product. ") * 3
QUESTIONS = ["Where are the hammers?", "Where are the screws?", "Do you sell paint?"]


@pytest.fixture(scope="module")
def smollm(smollm_gguf):
    import votive

    return votive.load(str(smollm_gguf), n_ctx=512)


def run(model, prompt, prefix_cache=None, **options):
    generation = model.start(prompt, max_tokens=6, logprobs=3, prefix_cache=prefix_cache, **options)
    text = generation.text()
    return text, generation.token_ids, generation.logprobs, generation.prompt.cached_tokens


@pytest.mark.parametrize("block", [0, 16])
def test_answers_are_bit_identical_with_and_without_the_cache(smollm, block, monkeypatch):
    monkeypatch.setattr(smollm, "_prompt_block", block)  # 0: the numpy backend's own (products row by row)
    assert smollm.prompt_block == block
    pc = smollm.new_prefix_cache(64 * 2**20)
    kept = smollm.warm_prefix(SYSTEM, pc)
    n_system = len(smollm.tokenize(SYSTEM))
    assert kept == (n_system - n_system % block if block else n_system)
    min_rows = 1 if block else 8
    for question in QUESTIONS:
        plain = run(smollm, SYSTEM + question)
        cached = run(smollm, SYSTEM + question, pc)
        assert cached[:3] == plain[:3], question  # text, token ids and every logprob, to the bit
        n_prompt = len(smollm.tokenize(SYSTEM + question))
        assert kept - 16 <= cached[3] <= n_prompt - min_rows and cached[3] % (block or 1) == 0
    again = run(smollm, SYSTEM + QUESTIONS[0], pc)  # its whole prompt is cached now, but for the last rows
    n_prompt = len(smollm.tokenize(SYSTEM + QUESTIONS[0]))
    assert again[3] == ((n_prompt - 1) // block * block if block else n_prompt - 8)
    assert again[:3] == run(smollm, SYSTEM + QUESTIONS[0])[:3]
    sampled = run(smollm, SYSTEM + QUESTIONS[1], pc, temperature=0.8, seed=3)
    assert sampled[:3] == run(smollm, SYSTEM + QUESTIONS[1], temperature=0.8, seed=3)[:3]


def split_logits(model, ids, split):
    cache = model.new_cache()
    model.forward(ids[:split], cache, 0)
    return model.forward(ids[split:], cache, split)


def test_on_the_cpu_a_pass_of_8_rows_or_more_rounds_as_one_pass(smollm, tmp_path):
    """Why prompt_block is 0 on the numpy backend, with MIN_PASS_ROWS: its C kernels (llama.cpp's order)
    compute each row on its own once a pass has 8 rows; a single row's attention rounds otherwise (as in
    llama.cpp, which gives the same logits for both splits below)."""
    ids = smollm.tokenize(SYSTEM + QUESTIONS[2])
    whole = smollm.forward(ids, smollm.new_cache(), 0)
    for split in (1, 17, len(ids) - 8):
        assert np.array_equal(split_logits(smollm, ids, split), whole), split
    short = smollm.tokenize("The quick brown fox jumps")
    assert len(short) == 5 and not np.array_equal(split_logits(smollm, short, 4), smollm.forward(short, smollm.new_cache(), 0))

    from votive.models import load_gguf
    from votive.testing.synthetic import DecoderShape, write_decoder_gguf

    shape = DecoderShape(n_layers=2, dim=256, ffn_dim=256, n_heads=4, n_kv_heads=2, vocab=300, context=256)
    model = load_gguf(write_decoder_gguf(tmp_path / "q6k.gguf", shape, "Q6_K", seed=5), numpy_backend, n_ctx=256)
    ids = [int(x) for x in np.random.default_rng(0).integers(3, 300, 120)]
    whole = model.forward(ids, model.new_cache(), 0)
    assert not np.array_equal(split_logits(model, ids, 113), whole)  # 7 rows: Q6_K's vec_dot, not the tiles
    assert np.array_equal(split_logits(model, ids, 112), whole)
    pc = model.new_prefix_cache(2**20)
    assert model.warm_prefix(ids[:115], pc) == 115
    plain = model.start(ids[:118], max_tokens=4, logprobs=1)
    cached = model.start(ids[:118], max_tokens=4, logprobs=1, prefix_cache=pc)
    assert (cached.text(), cached.logprobs) == (plain.text(), plain.logprobs) and cached.prompt.cached_tokens == 110


# ---------------------------------------------------------------------------------------- bit-identity, GPU code


def test_gpu_code_rounds_by_pass_size_so_passes_are_cut_at_the_block(cuda_ops, tmp_path):
    from votive.models import load_gguf
    from votive.testing.synthetic import DecoderShape, write_decoder_gguf

    shape = DecoderShape(n_layers=2, dim=256, ffn_dim=256, n_heads=4, n_kv_heads=2, vocab=300, context=128)
    model = load_gguf(write_decoder_gguf(tmp_path / "m.gguf", shape, "Q4_K", seed=5), cuda_ops, n_ctx=128)
    assert model.prompt_block == 64  # not the CPU's C kernels: products depend on the row count
    ids = [int(x) for x in np.random.default_rng(0).integers(3, 300, 60)]
    whole = model.forward(ids, model.new_cache(), 0)
    naive = []
    for split in (5, 50):
        cache = model.new_cache()
        model.forward(ids[:split], cache, 0)
        naive.append(np.array_equal(model.forward(ids[split:], cache, split), whole))
    if cuda_ops.xp is np:  # the emulator: 55 rows take cuBLAS's place, 10 the tiled product, 5 the matvec
        assert naive != [True, True], "a naive split rounds differently here; this test would catch a regression"

    model._prompt_block = 16  # the context is too short for 64-position blocks to show anything
    pc = model.new_prefix_cache(2**20)
    assert model.warm_prefix(ids[:40], pc) == 32
    for tail in ([7, 8, 9], [10] * 30):
        prompt = ids[:45] + tail
        plain = model.start(prompt, max_tokens=5, logprobs=2)
        cached = model.start(prompt, max_tokens=5, logprobs=2, prefix_cache=pc)
        assert (cached.text(), cached.logprobs) == (plain.text(), plain.logprobs)
        assert cached.prompt.cached_tokens == 32

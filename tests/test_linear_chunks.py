"""numpy_backend's column-chunked products (`_Chunks`, issue 15): large x @ W.T split over W's rows into OpenBLAS
calls on one thread each, taken by the caller and helper threads. Every output must equal the unsplit product
bit for bit, whatever the thread that took its chunk; a second caller while one runs gets the same numbers on its
own thread; a failure in a helper reaches the caller. No timing is asserted."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from votive.backends import get_backend, numpy_backend
from votive.models.sentence_encoder import SentenceEncoder


def _no_blas_threads(n):  # the count OpenBLAS would be set to: irrelevant where the test forces the split
    pass


@pytest.fixture
def chunks(monkeypatch):
    """A two-thread splitter, forced on whatever the machine's core count."""
    c = numpy_backend._Chunks(2, numpy_backend._set_blas_threads or _no_blas_threads)
    monkeypatch.setattr(numpy_backend, "_chunks", c)
    monkeypatch.setattr(numpy_backend, "SPLIT_MACS", 0)
    return c


def _plain(x, w, b=None):
    """The product as numpy_backend computes it without the splitter."""
    saved = numpy_backend._chunks
    numpy_backend._chunks = None
    try:
        return numpy_backend.linear(x, w, b)
    finally:
        numpy_backend._chunks = saved


@pytest.mark.parametrize("out_in", [(1152, 384), (384, 384), (1536, 384), (384, 1536), (1000, 200)])
def test_chunked_products_equal_the_whole_ones_bit_for_bit(chunks, out_in):
    rng = np.random.default_rng(out_in[0] + out_in[1])
    w = rng.standard_normal(out_in, dtype=np.float32)
    b = rng.standard_normal(out_in[0], dtype=np.float32)
    for rows in (1, 5, 15, 16, 17, 22, 40, 63, 64, 65, 130, 704):
        x = rng.standard_normal((rows, out_in[1]), dtype=np.float32)
        got = numpy_backend.linear(x, w, b)
        assert got.shape == (rows, out_in[0]) and got.flags.c_contiguous
        assert np.array_equal(got, _plain(x, w, b)), rows
        assert np.array_equal(got, x @ w.T + b), rows


def test_a_second_caller_while_one_runs_gets_the_same_numbers(chunks):
    rng = np.random.default_rng(5)
    w = rng.standard_normal((1536, 384), dtype=np.float32)
    xs = [rng.standard_normal((200, 384), dtype=np.float32) for _ in range(4)]
    expected = [x @ w.T for x in xs]
    results = [None] * 4

    def run(i):
        for _ in range(5):
            results[i] = numpy_backend.linear(xs[i], w)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got, want in zip(results, expected):
        assert np.array_equal(got, want)


def test_a_failure_in_a_helper_reaches_the_caller(chunks, monkeypatch):
    calls = []
    real = np.matmul

    def failing(*args, **kwargs):
        calls.append(threading.current_thread().name)
        if threading.current_thread().name == "votive-linear":
            raise MemoryError("helper failed")
        return real(*args, **kwargs)

    monkeypatch.setattr(numpy_backend.np, "matmul", failing)
    x = np.ones((64, 384), np.float32)
    w = np.ones((1536, 384), np.float32)
    for _ in range(20):  # until the helper takes a chunk (the caller may take them all on a fast machine)
        try:
            numpy_backend.linear(x, w)
        except MemoryError as e:
            assert "helper failed" in str(e)
            break
    else:
        pytest.skip("the helper thread never took a chunk")
    monkeypatch.setattr(numpy_backend.np, "matmul", real)
    assert np.array_equal(numpy_backend.linear(x, w), x @ w.T)  # the splitter still works afterwards


def test_minilm_embeddings_with_chunked_products_equal_the_whole_ones(chunks, minilm_dir, reference_dir):
    model = SentenceEncoder.from_folder(minilm_dir, get_backend("numpy"))
    sentences = json.loads((reference_dir / "bench_sentences.json").read_text())["sentences"][:40]
    split = [model.embed(sentences, batch_size=b) for b in (1, 32)]
    numpy_backend._chunks = None
    whole = [model.embed(sentences, batch_size=b) for b in (1, 32)]
    for a, b in zip(split, whole):
        assert np.array_equal(a, b)


def test_a_forked_child_multiplies_with_fresh_helpers(chunks):
    import os

    rng = np.random.default_rng(9)
    w = rng.standard_normal((1536, 384), dtype=np.float32)
    x = rng.standard_normal((64, 384), dtype=np.float32)
    expected = x @ w.T
    assert np.array_equal(numpy_backend.linear(x, w), expected)  # the parent's helper is running now
    pid = os.fork()
    if pid == 0:  # the child: its helper must be started again, not waited on forever
        ok = np.array_equal(numpy_backend.linear(x, w), expected)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

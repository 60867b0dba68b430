"""The GPU backend: how it is chosen (without importing cupy on a CPU), its op set, and whole models on it.

Whole-model tests run through the `cuda_ops` fixture: on the CPU emulator of the CUDA kernels in the default
suite, and on a real GPU under the `gpu` mark. Models are random-weight files written by the tests
(votive.testing.synthetic) in GGUF (decoders, several weight formats) and safetensors (BERT). The reference is
the numpy backend, with the decoders' weights widened to float32 (the GPU multiplies float32 activations by
dequantized weights, where the C kernels quantize the activations first).
"""

from __future__ import annotations

import ast
import inspect
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import votive
from votive.backends import GPU_DEVICE_NODES, get_backend, gpu_visible, numpy_backend
from votive.backends.numpy_linears import DenseLinear
from votive.errors import BackendError, KernelError
from votive.models import load_gguf
from votive.models.sentence_encoder import SentenceEncoder
from votive.quant.codecs import dequantize
from votive.testing.synthetic import DecoderShape, EncoderShape, write_bert_folder, write_decoder_gguf

REPO = Path(__file__).resolve().parents[1]
NO_GPU_HERE = not any(os.path.exists(node) for node in GPU_DEVICE_NODES)


# ----------------------------------------------------------------------------------------------- selection


def fake_cupy(folder: Path, body: str) -> Path:
    """A package named cupy whose __init__ runs `body`: stands in for cupy installed on a machine without CUDA."""
    (folder / "cupy").mkdir(parents=True)
    (folder / "cupy" / "__init__.py").write_text(body)
    return folder


@pytest.fixture
def clean_backend_modules(monkeypatch):
    for name in ("cupy", "votive.backends.cupy_backend"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield
    for name in ("cupy", "votive.backends.cupy_backend"):
        sys.modules.pop(name, None)


def test_auto_is_cupy_only_where_a_gpu_and_cupy_are(monkeypatch):
    monkeypatch.delenv("VOTIVE_BACKEND", raising=False)
    assert get_backend(gpu_visible=lambda: False) is numpy_backend
    assert get_backend("AUTO", gpu_visible=lambda: False) is numpy_backend
    monkeypatch.setenv("VOTIVE_BACKEND", "numpy")
    assert get_backend(gpu_visible=lambda: True) is numpy_backend  # an explicit choice is never second-guessed
    nodes = set()
    assert gpu_visible(exists=nodes.__contains__, find_spec=lambda name: object()) is False
    nodes.add("/dev/nvidia0")
    assert gpu_visible(exists=nodes.__contains__, find_spec=lambda name: object()) is True
    assert gpu_visible(exists=nodes.__contains__, find_spec=lambda name: None) is False  # no cupy installed
    with pytest.raises(BackendError, match="unknown backend 'tpu'; choose one of: numpy, cupy, auto"):
        get_backend("tpu")


def test_cupy_that_cannot_start_is_a_clear_error_or_a_fallback(tmp_path, monkeypatch, caplog,
                                                               clean_backend_modules):
    monkeypatch.syspath_prepend(str(fake_cupy(tmp_path / "a", "raise ImportError('libcuda.so.1: cannot open "
                                                                "shared object file')\n")))
    with pytest.raises(BackendError, match=r"backend 'cupy' is not available here: libcuda.so.1: cannot open "
                                           r"shared object file \(pip install 'votive\[gpu\]' installs cupy"):
        get_backend("cupy")
    with caplog.at_level(logging.WARNING, logger="votive"):
        assert get_backend("auto", gpu_visible=lambda: True) is numpy_backend
    assert "a GPU is present but the cupy backend cannot start" in caplog.text


def test_cupy_without_a_device_says_so(tmp_path, monkeypatch, clean_backend_modules):
    body = ("class _Runtime:\n    @staticmethod\n    def getDeviceCount():\n"
            "        raise RuntimeError('cudaErrorNoDevice: no CUDA-capable device is detected')\n"
            "class cuda:\n    runtime = _Runtime\n")
    monkeypatch.syspath_prepend(str(fake_cupy(tmp_path / "b", body)))
    with pytest.raises(BackendError, match="cupy is installed but CUDA does not answer: cudaErrorNoDevice"):
        get_backend("cupy")


@pytest.mark.skipif(not NO_GPU_HERE, reason="this machine has an NVIDIA device node, so auto rightly picks cupy")
def test_a_cpu_cold_start_never_imports_cupy(tmp_path):
    """With cupy installed (a fake that fails loudly if imported) but no GPU, loading and running a model on the
    default backend imports no cupy: `python -X importtime` lists every module imported."""
    folder = write_bert_folder(tmp_path / "bert")
    fake = fake_cupy(tmp_path / "site", "raise SystemExit('cupy was imported')\n")
    program = (f"import sys, votive; m = votive.load({str(folder)!r}); v = m.embed(['hello world']); "
               "print(m.backend, v.shape, 'cupy' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(REPO)])}
    env.pop("VOTIVE_BACKEND", None)
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", program], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["numpy", "(1,", "64)", "False"]
    # importtime lists `import` statements (not importlib.import_module, which picks the backend module itself).
    imported = [line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")]
    assert "votive.quant.kernels" in imported and not any(m.split(".")[0] == "cupy" for m in imported)


def test_cupy_backend_offers_every_op_of_numpy_backend():
    """cupy_backend's names are bound from CudaOps at import (which needs a GPU), so they are read from its source."""
    from votive.backends.cuda_ops import CudaOps

    source = (REPO / "votive" / "backends" / "cupy_backend.py").read_text()
    bound = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Attribute) and isinstance(value.value, ast.Name) and value.value.id == "_ops":
                bound[node.targets[0].id] = value.attr
    numpy_ops = {name for name, fn in vars(numpy_backend).items()
                 if inspect.isfunction(fn) and fn.__module__ == numpy_backend.__name__ and not name.startswith("_")}
    assert numpy_ops <= set(bound), f"cupy_backend lacks {sorted(numpy_ops - set(bound))}"
    assert all(bound[name] == name and callable(getattr(CudaOps, name)) for name in numpy_ops)
    for name in numpy_ops:  # the same parameters, so a model calls either the same way
        ours = list(inspect.signature(getattr(CudaOps, name)).parameters)[1:]
        assert ours == list(inspect.signature(getattr(numpy_backend, name)).parameters), name


# A cupy made of numpy and the CUDA emulator: cupy_backend and CupyKernels' search of the ahead-of-time build run
# for real on a machine without a GPU (which binary a device of a given capability loads, the compile fallback).
NUMPY_CUPY = """
import os
import numpy as _np
from numpy import *  # noqa: F401,F403 (the array API cupy mirrors)

asnumpy = _np.asarray
LOADED = []  # the binaries RawModule was given


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1


class _Device:
    compute_capability = os.environ["FAKE_CUPY_CAPABILITY"]


class cuda:
    runtime = _Runtime
    Device = _Device


class RawModule:
    def __init__(self, path):
        data = open(path, "rb").read()
        if not (data[:4] == b"\\x7fELF" or data.startswith(b"//")):  # a cubin, or PTX's leading comment
            raise RuntimeError(f"not a CUDA binary: {path}")
        LOADED.append(path)

    def get_function(self, name):
        import cuda_emulator

        return cuda_emulator.EmulatedKernels(os.environ["FAKE_CUPY_EMULATOR"]).function(name)
"""


@pytest.fixture(scope="module")
def sm80_build(tmp_path_factory):
    from votive.quant import cuda_kernels, nvrtc

    try:
        nv = nvrtc.load()
    except Exception as err:
        pytest.skip(f"NVRTC cannot be loaded here: {err}")
    out = tmp_path_factory.mktemp("aot")
    cuda_kernels.build(out, archs=(80,), nv=nv)  # a cubin for sm_80 and the PTX
    return out


@pytest.fixture
def numpy_cupy(tmp_path, monkeypatch, clean_backend_modules, cuda_ops):
    """Returns a function installing the fake cupy for a device of the given capability."""
    import cuda_emulator

    if cuda_ops.xp is not np:
        pytest.skip("the fake cupy stands in for a GPU only where there is none")

    def install(capability: str):
        monkeypatch.setenv("FAKE_CUPY_CAPABILITY", capability)
        monkeypatch.setenv("FAKE_CUPY_EMULATOR", str(cuda_ops.kernels.out_dir))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
        monkeypatch.delenv("VOTIVE_CUDA_KERNELS", raising=False)
        monkeypatch.syspath_prepend(str(fake_cupy(tmp_path / f"site{capability}", NUMPY_CUPY)))
        assert cuda_emulator  # the fake imports it by name: tests/ is on the path
    return install


@pytest.mark.parametrize("capability,binary", [("86", "sm_80.cubin"), ("120", "compute_75.ptx")])
def test_cupy_backend_loads_the_ahead_of_time_build(numpy_cupy, sm80_build, tmp_path, monkeypatch, capability,
                                                    binary):
    """An A10G (8.6) runs the sm_80 cubin, a GPU newer than every cubin the PTX; nothing is compiled."""
    numpy_cupy(capability)
    monkeypatch.setenv("VOTIVE_CUDA_KERNELS", str(sm80_build))
    path = write_decoder_gguf(tmp_path / "m.gguf", TINY, "Q8_0", seed=4)
    llm = votive.load(str(path), backend="cupy")
    from votive.backends import cupy_backend

    assert llm.backend == "cupy" and llm.ops is cupy_backend
    assert llm.generate("hi", max_tokens=3) == load_gguf(path, FloatReference()).generate("hi", max_tokens=3)
    loaded = cupy_backend.kernels.loaded_from
    assert set(loaded) == {"quant", "norm", "attention"}
    assert all(Path(p).parent.parent == sm80_build and Path(p).name == binary for p in loaded.values())
    assert not (tmp_path / "user-cache").exists()


def test_without_a_build_the_kernels_are_compiled_once_and_kept(numpy_cupy, tmp_path, caplog):
    numpy_cupy("80")
    from votive.quant import cuda_kernels

    with caplog.at_level(logging.WARNING, logger="votive"):
        first = cuda_kernels.CupyKernels()
        first.function("rms_norm")
    assert "compiled the CUDA 'norm' kernels for sm_80 at start-up" in caplog.text
    kept = Path(first.loaded_from["norm"])
    assert kept.name == "sm_80.cubin" and kept.is_relative_to(tmp_path / "user-cache" / "votive" / "cuda-kernels")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="votive"):
        again = cuda_kernels.CupyKernels()
        again.function("swiglu")
    assert again.loaded_from["norm"] == str(kept) and "compiled" not in caplog.text
    strict = cuda_kernels.CupyKernels(dirs=[tmp_path / "nothing"], compile_missing=False)
    with pytest.raises(KernelError, match="no usable CUDA binary of votive's 'quant' kernels for sm_80 in"):
        strict.function("qmatvec_q4_k")


# --------------------------------------------------------------------------------------------- whole models


class FloatReference:
    """numpy_backend with every decoder weight widened to float32 once, so that products are plain float32."""

    def __getattr__(self, name):
        return getattr(numpy_backend, name)

    @staticmethod
    def make_linear(gguf, name):
        info = gguf.tensors[name]
        return DenseLinear(dequantize(gguf[name], info.ggml_type.id).reshape(info.shape), name)


TINY = DecoderShape(n_layers=2, dim=256, ffn_dim=256, n_heads=4, n_kv_heads=2, vocab=300, context=64)  # k-quants: 256s
# (architecture, matrices, token embedding): the kernel tests cover every format; these, each path of a model.
DECODERS = [("llama", "Q4_K", None), ("llama", "Q5_0", "Q8_0"), ("llama", "F16", "BF16"), ("gemma3", "Q8_0", None),
            ("gemma3", "Q6_K", "Q5_K")]


@pytest.mark.parametrize("arch,weights,embed", DECODERS)
def test_decoder_logits_and_greedy_tokens_follow_the_float_reference(cuda_ops, tmp_path, arch, weights, embed):
    shape = DecoderShape(**{**vars(TINY), "arch": arch, "sliding_window": 4})
    path = write_decoder_gguf(tmp_path / f"{arch}.gguf", shape, weights, embed_type=embed, seed=3)
    gpu, ref = load_gguf(path, cuda_ops), load_gguf(path, FloatReference())
    assert gpu.backend == "cupy"
    ids = gpu.tokenize("hi there")
    gpu_cache, ref_cache = gpu.new_cache(), ref.new_cache()
    a, b = gpu.forward(ids, gpu_cache, 0), ref.forward(ids, ref_cache, 0)  # the prompt: qmatmul / qmatvec
    assert isinstance(a, np.ndarray) and a.shape == (shape.vocab,)
    for step in range(6):  # greedy decoding, teacher-forced on the GPU's choices
        spread = float(b.max() - b.min())
        assert np.abs(a - b).max() <= 2e-3 * spread, (step, np.abs(a - b).max(), spread)
        token = int(a.argmax())
        assert b[token] >= b.max() - 2e-3 * spread, f"step {step}: the GPU chose a token the reference ranks lower"
        pos = len(ids) + step
        a, b = gpu.forward([token], gpu_cache, pos), ref.forward([token], ref_cache, pos)
    assert pos + 1 > shape.sliding_window  # the sliding window was exercised (gemma3)


def test_generation_on_the_gpu_backend(cuda_ops, tmp_path):
    path = write_decoder_gguf(tmp_path / "m.gguf", TINY, "Q4_K", seed=5)
    gpu, cpu = load_gguf(path, cuda_ops), load_gguf(path, FloatReference())
    text = gpu.generate("hello", max_tokens=4)
    assert isinstance(text, str) and text == cpu.generate("hello", max_tokens=4)
    assert "".join(gpu.generate("hello", max_tokens=4, stream=True)) == text


def test_bert_embeddings_match_numpy(cuda_ops, tmp_path):
    folder = write_bert_folder(tmp_path / "bert", EncoderShape(max_position_embeddings=32), seed=2)
    gpu = SentenceEncoder.from_folder(folder, cuda_ops)
    cpu = SentenceEncoder.from_folder(folder, numpy_backend)
    texts = ["hello world", "the cat sat on the mat", "a", "dog dog dog dog dog dog dog dog"]
    got, want = gpu.embed(texts, batch_size=3), cpu.embed(texts, batch_size=3)  # padding within a batch
    assert isinstance(got, np.ndarray) and got.shape == (4, 64)
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


# ------------------------------------------------------------------------------------- a real GPU only


@pytest.mark.gpu
def test_votive_load_on_cupy_end_to_end(tmp_path, tmp_path_factory, monkeypatch):
    """votive.load(..., backend="cupy") with kernels from an ahead-of-time build ($VOTIVE_CUDA_KERNELS)."""
    from gpu_devices import gpu_and_kernels

    _, kernels = gpu_and_kernels(tmp_path_factory)
    monkeypatch.setenv("VOTIVE_CUDA_KERNELS", str(kernels.dirs[0]))
    monkeypatch.delitem(sys.modules, "votive.backends.cupy_backend", raising=False)
    llm_path = write_decoder_gguf(tmp_path / "m.gguf", TINY, "Q4_K", seed=5)
    llm = votive.load(str(llm_path), backend="cupy")
    assert llm.backend == "cupy" and llm.generate("hello", max_tokens=6) == load_gguf(
        llm_path, FloatReference()).generate("hello", max_tokens=6)
    enc = votive.load(str(write_bert_folder(tmp_path / "bert")), backend="cupy")
    assert enc.backend == "cupy" and enc.embed(["hello world"]).shape == (1, 64)
    from votive.backends import cupy_backend

    assert all(str(kernels.dirs[0]) in path for path in cupy_backend.kernels.loaded_from.values())


@pytest.mark.gpu
def test_gpu_cold_start_loads_kernels_without_compiling(tmp_path, tmp_path_factory):
    """A fresh process with the ahead-of-time cache: kernels come from it, nothing is compiled."""
    from gpu_devices import gpu_and_kernels

    _, kernels = gpu_and_kernels(tmp_path_factory)
    path = write_decoder_gguf(tmp_path / "m.gguf", TINY, "Q8_0", seed=1)
    program = ("import json, votive; m = votive.load(%r); m.generate('hi', max_tokens=2); "
               "from votive.backends import cupy_backend; print(json.dumps(cupy_backend.kernels.loaded_from))"
               % str(path))
    env = {**os.environ, "VOTIVE_CUDA_KERNELS": str(kernels.dirs[0]), "XDG_CACHE_HOME": str(tmp_path / "empty")}
    env.pop("VOTIVE_BACKEND", None)  # auto: this machine has a GPU
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(loaded) == {"quant", "norm", "attention"} and "compiled the CUDA" not in done.stderr
    assert all(p.startswith(str(kernels.dirs[0])) for p in loaded.values())

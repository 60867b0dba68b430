"""votive's CUDA kernels (votive/quant/cusrc) against their numpy twins, and their ahead-of-time compilation.

Every kernel test runs twice through the `cuda_ops` fixture: on the CPU emulator (tests/cuda_emu, in the default
suite) and on a real GPU (marked `gpu`, skipped where there is none). The twins are independent float64
computations written here, and votive.quant.codecs' dequantizers (which follow ggml's C, and are themselves
tested against the gguf package): on the emulator the block decoding agrees with them to the bit.

The compilation tests need NVRTC only (pip's nvidia-cuda-nvrtc-cu12, a dev dependency), no GPU.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from votive.backends.cuda_ops import CudaOps, GpuQuantLinear
from votive.backends.numpy_linears import FusedLinears
from votive.errors import InputError, KernelError
from votive.quant import cuda_kernels, nvrtc
from votive.quant.codecs import dequantize
from votive.quant.ggml_types import ggml_type
from votive.testing.synthetic import random_weight

# Format -> columns: whole blocks, at least two per row; the plain types take 40 (a tail of 8 past a 32 tile).
FORMAT_COLS = {"F32": 40, "F16": 40, "BF16": 40, "Q4_0": 96, "Q4_1": 96, "Q5_0": 96, "Q5_1": 96, "Q8_0": 96,
               "Q4_K": 512, "Q5_K": 512, "Q6_K": 512}
assert {ggml_type(f).id for f in FORMAT_COLS} == set(cuda_kernels.QUANT_FORMATS)


def on_emulator(ops: CudaOps) -> bool:
    return ops.xp is np


def put(ops, a):
    """A's values on the device: a copy, on the emulator too, since kernels write in place."""
    return ops.asarray(np.array(a, order="C"))


def stored(type_name: str, rows: int, cols: int, seed: int = 0) -> tuple[int, np.ndarray]:
    """(GGML type id, uint8 (rows, bytes_per_row)) of a random weight with finite, well-scaled blocks."""
    w = random_weight(np.random.default_rng(seed), type_name, rows, cols)
    data = w[1] if isinstance(w, tuple) else w
    return ggml_type(type_name).id, np.ascontiguousarray(data).view(np.uint8).reshape(rows, -1)


# ---------------------------------------------------------------------------------------- quantized products


@pytest.mark.parametrize("fmt", FORMAT_COLS)
@pytest.mark.parametrize("rows,n,path", [(37, 1, "qmatvec"), (37, 3, "qmatvec"), (5, 8, "qmatvec"), (130, 9, "qmatmul"),
                                         (65, 70, "qmatmul"), (65, 70, "cublas")])
def test_products_match_dequantized_weights(cuda_ops, fmt, rows, n, path, monkeypatch):
    """qmatvec (n <= 8), the tiled qmatmul (more), and the widened weight through cuBLAS (a prompt): odd row
    counts, partial tiles in both directions, column tails."""
    from votive.backends import cuda_linears as module

    if path == "qmatmul":
        monkeypatch.setattr(module, "DEQUANTIZE_MIN_TOKENS", 10**9)
    cols = FORMAT_COLS[fmt]
    type_id, blocks = stored(fmt, rows, cols, seed=rows + n)
    x = np.random.default_rng(n).standard_normal((n, cols)).astype(np.float32)
    lin = GpuQuantLinear(cuda_ops, put(cuda_ops, blocks), type_id, (rows, cols), "w")
    y = cuda_ops.to_numpy(lin(put(cuda_ops, x)))
    w = dequantize(blocks, type_id).astype(np.float64)  # (rows, cols)
    ref = x.astype(np.float64) @ w.T  # (n, rows)
    bound = np.abs(x).astype(np.float64) @ np.abs(w).T  # float32 accumulation error scales with this
    assert y.shape == (n, rows) and y.dtype == np.float32
    assert np.all(np.abs(y - ref) <= 2e-6 * bound + 1e-30), np.max(np.abs(y - ref) / bound)


@pytest.mark.parametrize("fmt", FORMAT_COLS)
def test_rows_and_dequantize_equal_ggml_dequantization(cuda_ops, fmt):
    cols = FORMAT_COLS[fmt]
    type_id, blocks = stored(fmt, 23, cols, seed=7)
    lin = GpuQuantLinear(cuda_ops, put(cuda_ops, blocks), type_id, (23, cols), "token_embd.weight")
    ids = [22, 0, 5, 5, 17]
    got_rows = cuda_ops.to_numpy(lin.rows(ids))
    got_all = cuda_ops.to_numpy(lin.dequantize())
    want = dequantize(blocks, type_id)
    if on_emulator(cuda_ops):  # same float operations in the same order, no fused multiply-adds: bit for bit
        np.testing.assert_array_equal(got_rows, want[ids])
        np.testing.assert_array_equal(got_all, want)
    else:  # the GPU may fuse q * d + m: one rounding apart
        np.testing.assert_allclose(got_rows, want[ids], rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(got_all, want, rtol=1e-6, atol=1e-30)
    with pytest.raises(InputError, match=r"token id 23 is outside the vocabulary \(23 rows of token_embd.weight\)"):
        lin.rows([1, 23])
    x = np.zeros(cols + 1, np.float32)
    x[1:] = np.random.default_rng(0).standard_normal(cols)
    shifted = put(cuda_ops, x)[1:].reshape(1, cols)  # 4 bytes past an aligned start: qmatvec reads float4
    np.testing.assert_allclose(cuda_ops.to_numpy(lin(shifted)), x[None, 1:] @ want.T, rtol=1e-4, atol=1e-5)
    with pytest.raises(KernelError, match=r"input \(2, 8\) is not \(n, "):
        lin(put(cuda_ops, np.zeros((2, 8), np.float32)))


def test_fused_products_share_one_weight_matrix(cuda_ops):
    """q/k/v as FusedLinears builds them: one stacked matrix, one launch; each linear still answers alone."""
    x = np.random.default_rng(9).standard_normal((3, 256)).astype(np.float32)
    parts = [stored("Q4_K", rows, 256, seed=rows) for rows in (64, 32, 32)]
    linears = [GpuQuantLinear(cuda_ops, put(cuda_ops, b), t, (b.shape[0], 256), f"w{i}") for i, (t, b) in
               enumerate(parts)]
    fused = FusedLinears(linears)
    assert fused._fused is not None and fused._fused.whole.out_features == 128
    for rows in (x[:1], x):  # one token: one launch; three: each its own
        got = [cuda_ops.to_numpy(y) for y in fused(put(cuda_ops, rows))]
        for (t, b), lin, y in zip(parts, linears, got):
            np.testing.assert_allclose(y, rows @ dequantize(b, t).T, rtol=1e-4, atol=1e-5)
            np.testing.assert_array_equal(cuda_ops.to_numpy(lin(put(cuda_ops, rows))), y)
    host_stacked = [GpuQuantLinear(cuda_ops, put(cuda_ops, b), t, (b.shape[0], 256), "h", host=b) for t, b in parts]
    whole = cuda_ops.to_numpy(FusedLinears(host_stacked)._fused.whole.blocks)
    np.testing.assert_array_equal(whole, np.concatenate([b for _, b in parts]))  # stacked on the host
    other = GpuQuantLinear(cuda_ops, put(cuda_ops, stored("Q8_0", 8, 256)[1]), 8, (8, 256), "v")
    assert FusedLinears([linears[0], other])._fused is None  # formats differ: separate launches


def test_half_blocks_with_subnormal_inf_and_nan_scales_decode_like_numpy(cuda_ops):
    """The block decoder widens every half-float bit pattern as numpy does (the emulator's bit code path, the
    GPU's cvt instruction)."""
    blocks = np.zeros((1, 34 * 8), np.uint8)  # 8 Q8_0 blocks
    scales = np.array([0x0001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x7E00, 0x8001], np.uint16)
    per_block = blocks.reshape(8, 34)
    per_block[:, 0:2] = scales.view(np.uint8).reshape(8, 2)
    per_block[:, 2:] = 1  # q = 1: x = d
    lin = GpuQuantLinear(cuda_ops, put(cuda_ops, blocks), 8, (1, 256), "w")
    got = cuda_ops.to_numpy(lin.dequantize())
    np.testing.assert_array_equal(got, dequantize(blocks, 8))


# -------------------------------------------------------------------------------------- norms, activations


def test_rms_norm(cuda_ops):
    rng = np.random.default_rng(1)
    for shape in [(3, 5, 64), (1, 2048), (2, 100)]:
        x = (3 * rng.standard_normal(shape)).astype(np.float32)
        w = rng.standard_normal(shape[-1]).astype(np.float32)
        got = cuda_ops.to_numpy(cuda_ops.rms_norm(put(cuda_ops, x), put(cuda_ops, w), 1e-6))
        x64 = x.astype(np.float64)
        ref = x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + 1e-6) * w
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_residual,with_affine", [(True, True), (False, False)])
def test_layer_norm_writes_into_x(cuda_ops, with_residual, with_affine):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 7, 384)).astype(np.float32) + 1
    res = rng.standard_normal(x.shape).astype(np.float32) if with_residual else None
    w, b = (rng.standard_normal(384).astype(np.float32) for _ in range(2))
    dx = put(cuda_ops, x)
    out = cuda_ops.layer_norm(dx, put(cuda_ops, w) if with_affine else None, put(cuda_ops, b) if with_affine else None,
                              1e-12, residual=None if res is None else put(cuda_ops, res))
    assert out is dx
    h = x.astype(np.float64) + (0 if res is None else res)
    ref = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12)
    if with_affine:
        ref = ref * w + b
    np.testing.assert_allclose(cuda_ops.to_numpy(out), ref, rtol=1e-5, atol=2e-5)


@pytest.mark.parametrize("mask_shape", [None, (2, 1, 1, 9), (1, 3, 1, 9), (2, 1, 5, 9)])
def test_softmax_with_broadcast_masks(cuda_ops, mask_shape):
    """(B, 1, 1, T) is BERT's padding mask; (1, H, 1, T) another single run of axes; (B, 1, Q, T) broadcasts in a
    way the kernel's row rule cannot express, so it is added first."""
    rng = np.random.default_rng(3)
    x = (4 * rng.standard_normal((2, 3, 5, 9))).astype(np.float32)
    mask = None if mask_shape is None else np.where(rng.random(mask_shape) < 0.3, -3e38, 0.0).astype(np.float32)
    if mask is not None:
        mask[..., 0] = 0  # every row keeps a key
    got = cuda_ops.to_numpy(cuda_ops.softmax(put(cuda_ops, x), mask=None if mask is None else put(cuda_ops, mask)))
    z = x.astype(np.float64) + (0 if mask is None else mask)
    z = np.exp(z - z.max(-1, keepdims=True))
    np.testing.assert_allclose(got, z / z.sum(-1, keepdims=True), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="last axis"):
        cuda_ops.softmax(put(cuda_ops, x), axis=0)


def test_elementwise_activations(cuda_ops):
    rng = np.random.default_rng(4)
    x = (3 * rng.standard_normal((3, 1000))).astype(np.float32)
    up = rng.standard_normal(x.shape).astype(np.float32)
    bias = rng.standard_normal(1000).astype(np.float32)
    x64 = x.astype(np.float64)
    erf = np.vectorize(math.erf)

    got = cuda_ops.to_numpy(cuda_ops.gelu(put(cuda_ops, x), put(cuda_ops, bias)))
    h = x64 + bias
    np.testing.assert_allclose(got, 0.5 * h * (1 + erf(h / math.sqrt(2))), rtol=1e-5, atol=1e-6)
    got = cuda_ops.to_numpy(cuda_ops.gelu(put(cuda_ops, x)))
    np.testing.assert_allclose(got, 0.5 * x64 * (1 + erf(x64 / math.sqrt(2))), rtol=1e-5, atol=1e-6)
    gelu_tanh = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    x[0, :2] = (-12, 11)  # ggml's cut-offs: 0 from -10 down, gate * up from 10 up
    gelu_tanh[0, :2] = (0, 11)
    got = cuda_ops.to_numpy(cuda_ops.geglu(put(cuda_ops, x), put(cuda_ops, up)))
    np.testing.assert_allclose(got, gelu_tanh * up, rtol=1e-5, atol=1e-6)
    x64 = x.astype(np.float64)
    silu = x64 / (1 + np.exp(-x64))
    gate = put(cuda_ops, x)
    out = cuda_ops.swiglu(gate, put(cuda_ops, up))
    assert out is gate
    np.testing.assert_allclose(cuda_ops.to_numpy(out), silu * up, rtol=1e-5, atol=1e-7)
    for gated in (cuda_ops.swiglu, cuda_ops.geglu):
        with pytest.raises(KernelError, match=f"{gated.__name__}: up"):
            gated(put(cuda_ops, x), put(cuda_ops, up[:, :10]))


# ---------------------------------------------------------------------------------------- RoPE, attention


@pytest.mark.parametrize("neox", [False, True])
def test_rope_rotates_pairs_in_place(cuda_ops, neox):
    rng = np.random.default_rng(5)
    n, heads, dims = 3, 4, 64
    x = rng.standard_normal((n, heads, dims)).astype(np.float32)
    angles = rng.uniform(-7, 7, (n, dims // 2))
    table = np.empty((n, dims), np.float32)
    table[:, 0::2], table[:, 1::2] = np.cos(angles), np.sin(angles)
    dx = put(cuda_ops, x)
    out = cuda_ops.rope(dx, put(cuda_ops, table), neox)
    assert out is dx
    i0, i1 = (slice(0, dims // 2), slice(dims // 2, None)) if neox else (slice(0, None, 2), slice(1, None, 2))
    c, s = np.cos(angles)[:, None, :], np.sin(angles)[:, None, :]
    ref = np.empty(x.shape)
    ref[..., i0] = x[..., i0] * c - x[..., i1] * s
    ref[..., i1] = x[..., i0] * s + x[..., i1] * c
    np.testing.assert_allclose(cuda_ops.to_numpy(out), ref, rtol=1e-5, atol=1e-6)


def attention_reference(q, k, v, q_start, scale, window):
    """float64 softmax(scale q k^T) v over the visible cache positions; k (Hkv, cap, D), v (Hkv, D, cap) halves."""
    n, heads, _ = q.shape
    group = heads // k.shape[0]
    out = np.empty(q.shape)
    for t in range(n):
        pos = q_start + t
        lo = max(0, pos - window + 1) if window else 0
        for h in range(heads):
            keys = k[h // group, lo : pos + 1].astype(np.float64)  # (m, D)
            s = keys @ q[t, h].astype(np.float64) * scale
            p = np.exp(s - s.max())
            out[t, h] = v[h // group, :, lo : pos + 1].astype(np.float64) @ (p / p.sum())
    return out


@pytest.mark.parametrize("n,q_start,heads,kv_heads,dims,window", [
    (1, 0, 4, 4, 64, None),  # the first token
    (1, 37, 8, 2, 64, None),  # decoding, GQA
    (6, 10, 4, 2, 40, None),  # a prompt chunk; head_dim not a multiple of 32
    (3, 30, 4, 1, 256, 8),  # Gemma's sliding window, head_dim 256
])
def test_causal_attention_over_a_half_cache(cuda_ops, n, q_start, heads, kv_heads, dims, window):
    rng = np.random.default_rng(n + q_start)
    capacity, filled = 48, q_start + n
    k_cache, v_cache = cuda_ops.kv_cache(2, kv_heads, capacity, dims)  # (L, Hkv, cap, D), (L, Hkv, D, cap)
    k = rng.standard_normal((kv_heads, filled, dims)).astype(np.float16)
    v = rng.standard_normal((kv_heads, dims, filled)).astype(np.float16)
    k_cache[1, :, :filled] = put(cuda_ops, k)  # written as KVCache.store writes it
    v_cache[1, :, :, :filled] = put(cuda_ops, v)
    q = rng.standard_normal((n, heads, dims)).astype(np.float32)
    scale = 1 / math.sqrt(dims)
    got = cuda_ops.to_numpy(cuda_ops.causal_attention(put(cuda_ops, q), k_cache[1], v_cache[1], q_start, scale,
                                                      window))
    k_full = np.zeros((kv_heads, capacity, dims), np.float16)
    k_full[:, :filled] = k
    v_full = np.zeros((kv_heads, dims, capacity), np.float16)
    v_full[:, :, :filled] = v
    np.testing.assert_allclose(got, attention_reference(q, k_full, v_full, q_start, scale, window), rtol=1e-4,
                               atol=1e-5)


def test_attention_refuses_what_it_cannot_compute(cuda_ops):
    k, v = cuda_ops.kv_cache(1, 2, 16, 320)
    q = put(cuda_ops, np.zeros((1, 4, 320), np.float32))
    with pytest.raises(KernelError, match="at most 256"):
        cuda_ops.causal_attention(q, k[0], v[0], 0, 1.0)
    k, v = cuda_ops.kv_cache(1, 2, 16, 64)
    with pytest.raises(KernelError, match="positions up to 16 in a cache of 16"):
        cuda_ops.causal_attention(put(cuda_ops, np.zeros((2, 4, 64), np.float32)), k[0], v[0], 15, 1.0)
    with pytest.raises(KernelError, match="do not fit"):
        cuda_ops.causal_attention(put(cuda_ops, np.zeros((1, 4, 32), np.float32)), k[0], v[0], 0, 1.0)


# ------------------------------------------------------------------------------ ahead-of-time compilation


@pytest.fixture(scope="module")
def nv():
    try:
        return nvrtc.load()
    except KernelError as err:  # the dev extra installs nvidia-cuda-nvrtc-cu12; only a stripped setup lacks it
        pytest.skip(f"NVRTC cannot be loaded here: {err}")


@pytest.fixture(scope="module")
def aot_build(nv, tmp_path_factory):
    out = tmp_path_factory.mktemp("aot")
    lines = []
    manifest = cuda_kernels.build(out, nv=nv, say=lines.append)
    return out, manifest, lines


def test_every_module_compiles_for_every_listed_architecture(aot_build, nv):
    """What a GPU image's build step runs: cubins for sm_75 .. sm_90 and PTX, every kernel present in each."""
    out, manifest, lines = aot_build
    assert manifest["format"] == "votive-cuda-kernels/1" and manifest["nvrtc"] == "%d.%d" % nv.version
    assert json.loads((out / cuda_kernels.MANIFEST).read_text()) == manifest
    assert lines[-1].startswith("compiled 18 binaries in")
    for module, spec in cuda_kernels.MODULES.items():
        folder = out / f"{module}-{cuda_kernels.source_key(module)}"
        names = sorted(p.name for p in folder.iterdir())
        assert names == ["compute_75.ptx", "sm_75.cubin", "sm_80.cubin", "sm_86.cubin", "sm_89.cubin", "sm_90.cubin"]
        ptx = (folder / "compute_75.ptx").read_text()
        entries = sorted(line.split()[2].split("(")[0] for line in ptx.splitlines() if line.startswith(".visible .entry"))
        assert entries == sorted(spec.kernels), f"{module}: the PTX defines other kernels than MODULES lists"
        for cubin in folder.glob("*.cubin"):
            data = cubin.read_bytes()
            assert data[:4] == b"\x7fELF" and all(k.encode() + b"\0" in data for k in spec.kernels)
        assert manifest["modules"][module]["files"] == [f"{folder.name}/{n}" for n in (
            "sm_75.cubin", "sm_80.cubin", "sm_86.cubin", "sm_89.cubin", "sm_90.cubin", "compute_75.ptx")]
    again = []
    cuda_kernels.build(out, nv=nv, say=again.append)
    assert again[-1].startswith("compiled 0 binaries")  # a second build finds everything in place


def test_other_nvrtc_versions_compile_the_kernels_too(tmp_path):
    """Every NVRTC installed here (e.g. CUDA 12 and 13 wheels) takes the sources, for one architecture."""
    found = nvrtc.load_all()
    if not found:
        pytest.skip("no NVRTC here")
    for nv in found:
        for module in cuda_kernels.MODULES:
            assert cuda_kernels.compile_module(module, "sm_80", nv)[:4] == b"\x7fELF"


def test_binaries_are_found_by_architecture(aot_build):
    out = aot_build[0]
    folder = out / f"quant-{cuda_kernels.source_key('quant')}"
    names = lambda cc: [p.name for p in cuda_kernels.candidates(out, "quant", cc)]  # noqa: E731
    assert names(86) == ["sm_86.cubin", "sm_80.cubin", "compute_75.ptx"]
    assert names(87) == ["sm_86.cubin", "sm_80.cubin", "compute_75.ptx"]  # same major, lower minor: compatible
    assert names(90) == ["sm_90.cubin", "compute_75.ptx"]
    assert names(120) == ["compute_75.ptx"]  # a GPU newer than every cubin runs the PTX
    assert names(70) == []  # older than the oldest target
    assert cuda_kernels.candidates(out / "elsewhere", "quant", 80) == []
    assert folder.is_dir()


def test_the_key_follows_every_source_and_header(tmp_path, monkeypatch):
    src = tmp_path / "cusrc"
    src.mkdir()
    for p in cuda_kernels.SOURCE_DIR.iterdir():
        (src / p.name).write_bytes(p.read_bytes())
    keys = {m: cuda_kernels.source_key(m) for m in cuda_kernels.MODULES}
    monkeypatch.setattr(cuda_kernels, "SOURCE_DIR", src)
    assert {m: cuda_kernels.source_key(m) for m in cuda_kernels.MODULES} == keys  # same text, same keys
    (src / "common.cuh").write_text((src / "common.cuh").read_text() + "\n// changed\n")
    assert all(cuda_kernels.source_key(m) != keys[m] for m in cuda_kernels.MODULES)  # a header changes them all
    (src / "norm.cu").unlink()
    with pytest.raises(KernelError, match="CUDA kernel source missing: .*norm.cu"):
        cuda_kernels.source_key("norm")
    with pytest.raises(KernelError, match="no CUDA kernel named 'nope'"):
        cuda_kernels.module_of("nope")


def test_compile_errors_carry_nvrtc_log(nv):
    with pytest.raises(KernelError, match=r"cannot compile bad.cu for sm_80 .*\n.*bad.cu\(1\)"):
        nv.compile('extern "C" __global__ void k() { undefined_thing(); }', "bad.cu", arch="sm_80")
    with pytest.raises(KernelError, match="cannot compile for sm_99"):
        cuda_kernels.build("unused", archs=(80, 99), nv=nv)


def test_cli_builds_and_reports_errors_in_one_line(tmp_path, nv):
    run = [sys.executable, "-m", "votive.quant.cuda_kernels", "build"]
    done = subprocess.run(run + ["--out", str(tmp_path / "k"), "--arch", "sm_80"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "k").glob("attention-*/*")) == ["compute_75.ptx", "sm_80.cubin"]
    done = subprocess.run(run + ["--out", str(tmp_path / "x"), "--arch", "eighty"], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip() == (
        "votive: error: --arch takes SM versions like 80,86,90, got 'eighty'")
    done = subprocess.run(run + ["--out", str(tmp_path / "x"), "--arch", "99"], capture_output=True, text=True)
    assert done.returncode == 1 and "cannot compile for sm_99" in done.stderr and done.stderr.count("\n") == 1


def test_nvrtc_is_looked_for_in_order(tmp_path):
    assert nvrtc.candidates({"VOTIVE_NVRTC": "/x/libnvrtc.so.12"}) == ["/x/libnvrtc.so.12"]
    found = nvrtc.candidates({})
    assert found[:2] == ["libnvrtc.so.12", "libnvrtc.so.13"]
    wheels = [p for p in found[2:]]
    assert wheels == sorted(wheels, key=lambda p: not p.endswith(".so.12"))  # CUDA 12's wheel first
    with pytest.raises(KernelError, match="no NVRTC library found; install it with `pip install "
                                          "nvidia-cuda-nvrtc-cu12`"):
        nvrtc.load({"VOTIVE_NVRTC": str(tmp_path / "missing.so")})

"""F16 and BF16 matrices against llama.cpp, bit for bit: the product against ggml's own mul_mat, and decoders
whose matrices are F16 or BF16 against llama.cpp.

ggml's CPU backend does not multiply float activations by a widened F16 (BF16) weight: it rounds the activations
to the weight's type first (type_traits_cpu[F16].vec_dot_type), then sums each output's exact products in the
lane order of llamafile's tinyBLAS (2 rows of x and more, a weight of 4k rows, rows of whole 16 (F16) or 32 (BF16)
elements) or of ggml_vec_dot_f16 / _bf16 (the rest: every decode step). votive.quant.kernels.half_matmul does the
same (csrc/half_kernels.h), and its numpy twin kernels_ref.half_matmul_ref too; both are held here to ggml_mul_mat
of the libggml that llama-cpp-python carries, called through ctypes, on shapes taking each path, on every ISA
build this CPU runs.

The decoders are random-weight files (tests/llama_cpp_reference.py) converted by llama.cpp's llama_model_quantize:
to Q8_0 with a feed-forward width of 112, whose ffn_down rows are not whole 32-element blocks and so stay F16 (the
quantizer's fallback), and all-F16 and all-BF16 files (what convert_hf_to_gguf.py --outtype f16 / bf16 writes):
logits after a prompt of 64 tokens and more, the logits of single-token decode steps, and 32 greedy ids.
"""

from __future__ import annotations

import ctypes
import platform
from pathlib import Path

import numpy as np
import pytest
from llama_cpp_reference import LlamaCpp, ReferenceFiles, Shape, random_prompt, votive_greedy

from votive.formats.gguf import GGMLType, GGUFFile
from votive.quant import kernels
from votive.quant.kernels_ref import bf16_round_ref, half_matmul_ref

llama_cpp = pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

pytestmark = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason=f"the orders followed are llama.cpp's x86 build's (this is {platform.machine()})")

F16, BF16 = GGMLType.F16.id, GGMLType.BF16.id


# ------------------------------------------------------------------------------ ggml_mul_mat through ctypes
class GgmlInitParams(ctypes.Structure):
    """struct ggml_init_params (ggml.h)."""

    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


class Ggml:
    """ggml_mul_mat of the libggml beside llama-cpp-python's libllama: one graph of one product per call, on
    `threads` threads, as llama.cpp's CPU backend computes a linear layer."""

    def __init__(self, folder: Path, threads: int = 2):
        self.base = base = ctypes.CDLL(str(folder / "libggml-base.so"))
        self.cpu = cpu = ctypes.CDLL(str(folder / "libggml-cpu.so"))
        self.threads = threads
        vp, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        signatures = ((base.ggml_init, [GgmlInitParams], vp), (base.ggml_new_tensor_2d, [vp, i32, i64, i64], vp),
                      (base.ggml_mul_mat, [vp, vp, vp], vp), (base.ggml_new_graph, [vp], vp),
                      (base.ggml_build_forward_expand, [vp, vp], None), (base.ggml_get_data, [vp], vp),
                      (base.ggml_free, [vp], None), (cpu.ggml_graph_compute_with_ctx, [vp, vp, i32], i32))
        for fn, args, res in signatures:
            fn.argtypes, fn.restype = args, res
        cpu.ggml_cpu_init()

    def mul_mat(self, w: np.ndarray, ggml_type: int, x: np.ndarray) -> np.ndarray:
        """x (n, cols) float32 times w (rows, cols) as stored (float16, or BF16 bits) -> (n, rows) float32."""
        (rows, cols), n = w.shape, x.shape[0]
        ctx = self.base.ggml_init(GgmlInitParams(w.nbytes + 4 * (x.size + n * rows) + (1 << 20), None, False))
        try:
            a = self.base.ggml_new_tensor_2d(ctx, ggml_type, cols, rows)  # ggml's ne: innermost first
            b = self.base.ggml_new_tensor_2d(ctx, GGMLType.F32.id, cols, n)
            ctypes.memmove(self.base.ggml_get_data(a), np.ascontiguousarray(w).ctypes.data, w.nbytes)
            ctypes.memmove(self.base.ggml_get_data(b), np.ascontiguousarray(x, np.float32).ctypes.data, x.size * 4)
            c = self.base.ggml_mul_mat(ctx, a, b)
            graph = self.base.ggml_new_graph(ctx)
            self.base.ggml_build_forward_expand(graph, c)
            assert self.cpu.ggml_graph_compute_with_ctx(ctx, graph, self.threads) == 0
            out = np.empty((n, rows), np.float32)
            ctypes.memmove(out.ctypes.data, self.base.ggml_get_data(c), out.nbytes)
            return out
        finally:
            self.base.ggml_free(ctx)


@pytest.fixture(scope="module")
def ggml() -> Ggml:
    folder = Path(llama_cpp.__file__).parent / "lib"
    if not (folder / "libggml-cpu.so").exists():
        pytest.skip(f"no libggml-cpu.so in {folder}")
    return Ggml(folder)


@pytest.fixture(params=["avx512", "avx2", "sse2"])
def isa(request):
    """Each kernel build this CPU runs, made active for the test."""
    lib = kernels.get()
    if lib is None or request.param not in lib.supported_isas():
        pytest.skip(f"no C library, or its {request.param} build does not run here")
    best = lib.isa
    lib.set_isa(request.param)
    yield lib
    lib.set_isa(best)


def stored(ggml_type: int, w: np.ndarray) -> np.ndarray:
    """float32 weights as the file stores them: float16, or BF16 bits."""
    return w.astype(np.float16) if ggml_type == F16 else bf16_round_ref(w)


# (rows, cols, n): tinyBLAS's order (n >= 2, rows % 4 == 0, cols % 16 (F16) or 32 (BF16) == 0) and the vec_dot
# order: one row of x; rows not a multiple of 4; cols not whole steps (112 is for F16, not for BF16); rows shorter
# than one 64-element step; steps with a remainder
SHAPES = [(64, 256, 1), (64, 256, 7), (256, 112, 70), (224, 256, 65), (66, 256, 9), (12, 200, 5), (300, 112, 1),
          (8, 48, 3), (5, 33, 4), (40, 96, 2), (1000, 512, 2)]


def draw(rng, ggml_type, rows, cols, n):
    w = stored(ggml_type, rng.standard_normal((rows, cols), np.float32) / np.float32(np.sqrt(cols)))
    x = (3 * rng.standard_normal((n, cols))).astype(np.float32)
    return w, x


@pytest.mark.parametrize("ggml_type", [F16, BF16], ids=["F16", "BF16"])
def test_the_product_is_ggml_mul_mat_bit_for_bit_on_every_isa(ggml, isa, ggml_type):
    rng = np.random.default_rng(1)
    for rows, cols, n in SHAPES:
        w, x = draw(rng, ggml_type, rows, cols, n)
        theirs = ggml.mul_mat(w, ggml_type, x)
        ours = isa.half_matmul(w, ggml_type, x, rows, cols)
        np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32), err_msg=f"{(rows, cols, n)}")
        # what votive computed before: float32 activations times the widened weight, not ggml's answer
        widened = w.astype(np.float32) if ggml_type == F16 else (w.astype(np.uint32) << 16).view(np.float32)
        assert not np.array_equal(x @ widened.T, theirs)


@pytest.mark.parametrize("ggml_type", [F16, BF16], ids=["F16", "BF16"])
def test_the_numpy_twin_is_ggml_mul_mat_bit_for_bit(ggml, ggml_type):
    rng = np.random.default_rng(2)
    for rows, cols, n in SHAPES:
        w, x = draw(rng, ggml_type, rows, cols, n)
        theirs = ggml.mul_mat(w, ggml_type, x)
        np.testing.assert_array_equal(half_matmul_ref(w, ggml_type, x).view(np.uint32), theirs.view(np.uint32),
                                      err_msg=f"{(rows, cols, n)}")


@pytest.mark.parametrize("ggml_type", [F16, BF16], ids=["F16", "BF16"])
@pytest.mark.parametrize("n", [1, 6])
def test_rounding_edges_are_ggml_s(ggml, ggml_type, n):
    """Activations past the half's range (inf), ties, NaN, and bfloat16 weights below 2^-126, which vdpbf16ps reads
    as zeros (in its lanes, not in the tail of ggml_vec_dot_bf16)."""
    rng = np.random.default_rng(3)
    w, x = draw(rng, ggml_type, 8, 96, n)
    if ggml_type == BF16:
        w[1, :] = bf16_round_ref(np.full(96, 1e-39, np.float32))  # subnormal: zeros in the lanes, kept in the tail
        x[:, ::7] = 1e30  # times 1e-39: 1e-9, which only the tail of ggml_vec_dot_bf16 (cols 64..95) adds
    x[0, 3] = 70000.0  # a half's inf
    x[-1, 5] = 1 + 2.0**-11  # midway between two halves: to even
    x[0, 71] = np.nan if n > 1 else 2.0**-20
    theirs = ggml.mul_mat(w, ggml_type, x)
    for ours in (kernels.half_matmul(w, ggml_type, x, 8, 96), half_matmul_ref(w, ggml_type, x)):
        np.testing.assert_array_equal(ours, theirs)  # NaNs in the same places, the rest equal


@pytest.mark.parametrize("library", [True, False], ids=["C", "twin"])
def test_refusals_name_the_kernel_and_what_it_takes(library, monkeypatch):
    from votive.errors import KernelError

    if not library:
        monkeypatch.setattr(kernels, "_default", [None])  # as after get() found no library
    w, x = np.zeros((4, 32), np.float16), np.zeros((2, 32), np.float32)
    with pytest.raises(KernelError, match=r"half_matmul: GGML type 0 \(F32\) rows are not supported by the C kernels "
                                          r"\(supported: F16, BF16\)"):
        kernels.half_matmul(w.astype(np.float32), 0, x, 4, 32)
    with pytest.raises(KernelError, match=r"half_matmul: x must be a C-contiguous float32 array of shape \(n, 32\)"):
        kernels.half_matmul(w, F16, x[:, :31].copy(), 4, 32)
    with pytest.raises(KernelError, match=r"half_matmul: blocks must be uint8 of shape \(5, 64\)"):
        kernels.half_matmul(w, F16, x, 5, 32)
    np.testing.assert_array_equal(kernels.half_matmul(w.view(np.uint8), F16, x[0], 4, 32), np.zeros(4, np.float32))


def test_threads_change_nothing(isa):
    rng = np.random.default_rng(4)
    w, x = draw(rng, F16, 1024, 256, 33)
    threads = isa.num_threads
    try:
        isa.set_num_threads(1)
        one = isa.half_matmul(w, F16, x, 1024, 256)
        isa.set_num_threads(2)
        np.testing.assert_array_equal(isa.half_matmul(w, F16, x, 1024, 256), one)
    finally:
        isa.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- decoders
# (shape, llama.cpp's conversion, prompt length). FFN 112: ffn_down's rows are 112 elements, not whole Q8_0 blocks,
# so llama_model_quantize keeps it F16 in a Q8_0 file. A prompt of 65 is one pass of 65 rows for llama.cpp, and must
# be one for votive too (passes of 64 and 1 would sum the last row in ggml_vec_dot's order).
FFN112 = 112
CASES = [
    (Shape("llama", n_heads=4, n_kv_heads=2, head_dim=64, vocab=389, ffn_dim=FFN112), "Q8_0", 70),
    (Shape("phi3", n_heads=4, n_kv_heads=4, head_dim=64, vocab=389, ffn_dim=FFN112), "Q8_0", 65),
    (Shape("llama", n_heads=4, n_kv_heads=2, head_dim=64, vocab=389), "F16", 65),
    (Shape("phi3", n_heads=8, n_kv_heads=2, head_dim=32, vocab=401, tied=True), "F16", 70),
    (Shape("llama", n_heads=4, n_kv_heads=2, head_dim=64, vocab=389, ffn_dim=FFN112), "BF16", 70),
    (Shape("qwen2", n_heads=4, n_kv_heads=2, head_dim=64, vocab=450), "BF16", 66),
]
GREEDY_STEPS = 32


def case_id(case) -> str:
    return f"{case[0].name}-ffn{case[0].ffn_dim}-{case[1]}"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> ReferenceFiles:
    return ReferenceFiles(tmp_path_factory.mktemp("f16_parity"))


def test_the_q8_0_files_keep_ffn_down_f16_and_the_others_are_all_half(files):
    for shape, quant, _ in CASES:
        types = {name: t.ggml_type for name, t in GGUFFile(files.quantized(shape, quant)).tensors.items()
                 if len(t.shape) == 2}
        half = {GGMLType.F16} if quant == "Q8_0" else {getattr(GGMLType, quant)}
        got = {name for name, t in types.items() if t in half}
        want = {n for n in types if "ffn_down" in n} if quant == "Q8_0" else set(types)
        assert got == want, f"{case_id((shape, quant, 0))}: {types}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_logits_and_greedy_ids_equal_llama_cpp(files, case):
    shape, quant, length = case
    prompt = random_prompt(shape, length, seed=20 + CASES.index(case))
    theirs, their_ids = files.llama_cpp(shape, quant, prompt, GREEDY_STEPS)
    ours, our_ids = votive_greedy(files.votive(shape, quant), prompt, GREEDY_STEPS)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32), err_msg=case_id(case))
    assert our_ids == their_ids, case_id(case)
    assert len(their_ids) >= 8, f"{case_id(case)}: llama.cpp stopped after {len(their_ids)} ids; pick another seed"


@pytest.mark.parametrize("case", [CASES[1], CASES[2], CASES[4]], ids=case_id)
def test_decode_step_logits_equal_llama_cpp(files, case):
    """The logits of each single-token step (every product one row of x: ggml_vec_dot's order), not just its argmax,
    after the prompt as generation evaluates it (decoding.evaluate_prompt: one pass of its 65 or 70 rows, as
    llama.cpp's)."""
    from votive.models.decoding import evaluate_prompt

    shape, quant, length = case
    prompt = random_prompt(shape, length, seed=40)
    steps = random_prompt(shape, 8, seed=41)
    model = files.votive(shape, quant)
    cache = model.new_cache()
    ours = [evaluate_prompt(model, prompt, cache)]
    for i, token in enumerate(steps):
        ours.append(model.forward([token], cache, length + i))
    with LlamaCpp(files.quantized(shape, quant)) as reference:
        theirs = [reference.logits(prompt)] + [reference._decode([token]) for token in steps]
    for i, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_array_equal(np.asarray(a).view(np.uint32), b.view(np.uint32), err_msg=f"step {i}")


@pytest.mark.parametrize("case", [CASES[2], CASES[4]], ids=case_id)
def test_without_the_c_library_the_numpy_twins_give_the_same_bits(files, case, monkeypatch):
    import votive

    monkeypatch.setattr(kernels, "_default", [None])  # as after get() found no library
    shape, quant, length = case
    prompt = random_prompt(shape, length, seed=20 + CASES.index(case))
    theirs, their_ids = files.llama_cpp(shape, quant, prompt, 8)
    ours, our_ids = votive_greedy(votive.load(str(files.quantized(shape, quant)), n_ctx=512), prompt, 8)
    np.testing.assert_array_equal(ours.view(np.uint32), theirs.view(np.uint32), err_msg=case_id(case))
    assert our_ids == their_ids


def test_a_gguf_half_matrix_is_read_in_place(files):
    from votive.backends.numpy_linears import HalfLinear, make_linear

    f = GGUFFile(files.quantized(CASES[2][0], "F16"))
    linear = make_linear(f, "blk.0.ffn_up.weight")
    assert isinstance(linear, HalfLinear)
    assert linear.weight.dtype == np.float16 and not linear.weight.flags.owndata and not linear.weight.flags.writeable
    np.testing.assert_array_equal(linear.rows([3, 0]), f["blk.0.ffn_up.weight"][[3, 0]].astype(np.float32))

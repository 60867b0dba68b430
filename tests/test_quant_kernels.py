"""The quantized C kernels (qmatmul, get_rows, activation quantization) against votive.quant.codecs.

The library is compiled from the current sources once per session, as in test_kernels.py. Every test of a
product runs on each kernel build this CPU runs and each of its int8 dot-product variants (maddubs or VNNI on
x86, vmull or sdot on arm64, plain C for sse2).

What "agree" means here, from the float order notes in votive/quant/codecs/activations.py:

- Activation quantization is bit for bit ggml's (same bytes as quants.quantize).
- get_rows is bit for bit quants.dequantize.
- qmatmul's plain C and NEON kernels are bit for bit quants.vec_dot (they follow its float order). The x86 ones sum
  the same exact integer products with other float roundings: each output is a float32 sum over nb blocks, so
  kernel and reference each differ from the exact value by at most (nb + 4) units of 2^-24 times M, the sum of
  the magnitudes of every product that went in (quants taken with the unsigned offset some kernels multiply
  with, plus the min terms): |C - ref| <= 2 (nb + 4) 2^-24 M. A wrong quant or scale anywhere moves an output by
  about M / (number of elements), thousands of times that bound.
- Against the float product of the dequantized weight and the unquantized x, the error is the activation
  quantization's: sum |W| |x - x_hat|, plus Q8_1's half-rounded block sums for Q4_1 and Q5_1.
"""

from __future__ import annotations

import platform
import shutil
import subprocess

import numpy as np
import pytest

from votive.errors import KernelError
from votive.formats.gguf import GGUFFile
from votive.quant import kernel_build, kernels
from votive.quant.codecs import FORMATS, VEC_DOT_TYPE, dequantize, quantize_activations, quantize_q8
from votive.quant.kernels_ref import get_rows_ref, qmatmul_ref
from votive.quant.llama_orders import llama_cpp_order_ref

QUANT_TYPES = sorted(VEC_DOT_TYPE)  # 2 Q4_0, 3 Q4_1, 6 Q5_0, 7 Q5_1, 8 Q8_0, 10..14 Q2_K..Q6_K
NAMES = {t: FORMATS[t].name for t in FORMATS}
U = 2.0**-24  # float32 unit roundoff


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    """libvotive.so freshly compiled from the current sources; skips without a C compiler."""
    if not shutil.which(kernel_build.default_cc()[0]):
        pytest.skip("no C compiler: the C kernels cannot be built here")
    path = kernel_build.build_library(tmp_path_factory.mktemp("qkernels") / kernel_build.LIBRARY_NAME)
    loaded = kernels.load(path)
    assert loaded is not None, f"{path} was built but does not load"
    return loaded


# Each kernel build of this architecture, with the names of its int8 dot-product variants (vt_quant_isa).
ARCH_ISAS = [name for name, _ in kernel_build.ISA_FLAGS.get(platform.machine(), kernel_build.GENERIC_ISA)]
DOT_VARIANTS = {"avx512": ("avx512", "avx512+vnni"), "avx2": ("avx2", "avx2+vnni"), "sse2": ("scalar",),
                "neon": ("neon", "neon+dotprod"), "generic": ("scalar",)}
VARIANTS = [(isa, dot) for isa in ARCH_ISAS for dot in DOT_VARIANTS[isa]]
EXACT = {"scalar", "neon", "neon+dotprod"}  # kernels in quants.vec_dot's float order


@pytest.fixture(params=VARIANTS, ids=["/".join(v) for v in VARIANTS])
def variant(request, lib):
    """A kernel build and dot-product variant this CPU runs, made active for the test; yields the dot name."""
    isa, dot = request.param
    if isa not in lib.supported_isas():
        pytest.skip(f"{isa} kernels do not run here")
    best_isa, best_dot = lib.isa, lib.quant_isa
    lib.set_isa(isa)
    try:
        lib.set_quant_isa(dot)
    except KernelError:
        lib.set_isa(best_isa)
        pytest.skip(f"{dot} does not run here")
    yield dot
    lib.set_isa(best_isa)
    lib.set_quant_isa(best_dot)


@pytest.fixture
def rng():
    return np.random.default_rng(20250)


def random_blocks(rng, ggml_type: int, rows: int, cols: int) -> np.ndarray:
    """uint8 (rows, bytes_per_row): random bytes with sane half scales (random bits there give inf and NaN);
    mins of Q4_1 and Q5_1 of either sign, as real files have."""
    fmt = FORMATS[ggml_type]
    raw = rng.integers(0, 256, (rows, cols // fmt.block_size * fmt.block_bytes), dtype=np.uint8)
    blocks = raw.view(fmt.layout)
    for name in ("d", "dmin", "m"):
        if name in fmt.layout.names:
            low = -0.05 if name == "m" else 2.0**-12
            blocks[name] = rng.uniform(low, 0.05, blocks[name].shape).astype(np.float16)
    return raw


def activation_parts(x: np.ndarray, ggml_type: int):
    """x quantized as the kernels do -> (scales d (n, nb), quants (n, nb, block), Q8_1's s or None), float64."""
    act = quantize_q8(x, ggml_type)
    afmt = FORMATS[VEC_DOT_TYPE[ggml_type]]
    b = act.view(afmt.layout).reshape(x.shape[0], -1)
    s = b["s"].astype(np.float64) if "s" in afmt.layout.names else None
    return b["d"].astype(np.float64), b["qs"].astype(np.float64), s


# Offsets some kernels add to signed quants to multiply them as unsigned (x86: Q4_0, Q5_0, Q8_0 with VNNI, Q3_K,
# Q6_K), taking offset * scale * (sum of the activations) off again; those parts are larger than the products
# of the quants themselves, and their rounding is relative to them, so they count in the magnitude.
UNSIGNED_OFFSET = {2: 8, 6: 16, 8: 128, 11: 4, 14: 32}


def magnitude(blocks: np.ndarray, ggml_type: int, x: np.ndarray) -> np.ndarray:
    """M per output (n, rows): the sum of |every product| a kernel adds for that output, in float64."""
    fmt = FORMATS[ggml_type]
    rows = blocks.shape[0]
    b = blocks.view(fmt.layout).reshape(-1)  # (rows * nb,)
    dy, qy, s = activation_parts(x, ggml_type)  # (n, nb), (n, nb, block), (n, nb)
    a = np.abs(dy[..., None] * qy).reshape(x.shape[0], -1)  # |activation| (n, cols)
    off = UNSIGNED_OFFSET.get(ggml_type, 0)
    if fmt.block_size == 32:
        q = np.abs(fmt.unpack(b).astype(np.float64)) + off  # (rows * nb, 32)
        per = np.abs(b["d"].astype(np.float64))[:, None] * q
        if "m" in fmt.layout.names:
            per = per + np.abs(b["m"].astype(np.float64))[:, None]
        mag = per.reshape(rows, -1) @ a.T  # (rows, n)
        if s is not None:
            mag += np.abs(b["m"].astype(np.float64)).reshape(rows, -1) @ np.abs(s).T
        return mag.T
    q, scales, *mins = fmt.unpack(b)  # q (rows * nb, S, L), scales (rows * nb, S)
    per = np.abs(b["d"].astype(np.float64)[:, None] * scales)[..., None] * (np.abs(q.astype(np.float64)) + off)
    if mins:
        per = per + (np.abs(b["dmin"].astype(np.float64)[:, None] * mins[0]))[..., None]
    return (per.reshape(rows, -1) @ a.T).T


def assert_close_to_reference(got: np.ndarray, blocks: np.ndarray, ggml_type: int, x: np.ndarray, exact: bool):
    """got (n, rows) against qmatmul_ref within the rounding bound of the module docstring (or bit for bit)."""
    want = qmatmul_ref(blocks, ggml_type, x)
    if exact:
        np.testing.assert_array_equal(got, want)
        return
    nb = x.shape[1] // FORMATS[ggml_type].block_size
    bound = 2 * (nb + 4) * U * magnitude(blocks, ggml_type, x)
    excess = np.abs(got.astype(np.float64) - want) - bound
    assert excess.max() <= 0, (
        f"{NAMES[ggml_type]}: {int((excess > 0).sum())} outputs beyond the rounding bound, worst at "
        f"{np.unravel_index(excess.argmax(), excess.shape)}: got {got.ravel()[excess.argmax()]}, "
        f"reference {want.ravel()[excess.argmax()]}, bound {bound.ravel()[excess.argmax()]:.3g}"
    )


# ------------------------------------------------------------------------------------ activations


@pytest.mark.parametrize("act_type", [8, 9, 15])
def test_activation_quantization_is_ggml_bit_for_bit(lib, variant, rng, act_type):
    block = FORMATS[act_type].block_size
    x = rng.normal(0, 1, (6, 4 * block)).astype(np.float32)
    x[1] *= 1e-6  # tiny values: d is a subnormal half (or rounds to zero)
    x[2, :block] = 0.0  # an all-zero block
    x[3] = np.round(x[3] * 4) / 2  # many exact halves: rounding ties for some scales
    x[4, :block] = np.arange(block) % 64 - 31.5  # ties at scale 1 once the max is +-127
    x[4, 0] = 127.0 if act_type != 15 else -127.0
    x[5] *= 1e4
    np.testing.assert_array_equal(lib.quantize_rows(x, act_type), quantize_activations(x, act_type))


# --------------------------------------------------------------------------------------- products


@pytest.mark.parametrize("ggml_type", QUANT_TYPES, ids=[NAMES[t] for t in QUANT_TYPES])
@pytest.mark.parametrize("rows, blocks_per_row, n", [(1, 1, 1), (7, 3, 1), (33, 2, 5), (20, 5, 9), (5, 1, 4)])
def test_qmatmul_matches_reference(lib, variant, rng, ggml_type, rows, blocks_per_row, n):
    cols = blocks_per_row * FORMATS[ggml_type].block_size
    w = random_blocks(rng, ggml_type, rows, cols)
    x = rng.normal(0, 1, (n, cols)).astype(np.float32)
    got = lib.qmatmul(w, ggml_type, x, rows, cols)
    assert got.shape == (n, rows) and got.dtype == np.float32
    assert_close_to_reference(got, w, ggml_type, x, exact=variant in EXACT)


@pytest.mark.parametrize("ggml_type", QUANT_TYPES, ids=[NAMES[t] for t in QUANT_TYPES])
@pytest.mark.parametrize("blocks_per_row", [2, 17])
def test_rows_of_a_product_equal_the_matrix_vector_products(lib, variant, rng, ggml_type, blocks_per_row):
    # tiles of 4 activation rows and a tail of 3: every output row the same bits as on its own (one activation row
    # takes two weight rows at a time for more formats than a tile does; 17 blocks: whole groups of 8 and a tail)
    cols = blocks_per_row * FORMATS[ggml_type].block_size
    w = random_blocks(rng, ggml_type, 21, cols)
    x = rng.normal(0, 1, (7, cols)).astype(np.float32)
    whole = lib.qmatmul(w, ggml_type, x, 21, cols)
    for i in range(7):
        np.testing.assert_array_equal(whole[i], lib.qmatmul(w, ggml_type, x[i], 21, cols))


@pytest.mark.parametrize("ggml_type", QUANT_TYPES, ids=[NAMES[t] for t in QUANT_TYPES])
def test_qmatmul_against_the_float_product(lib, rng, ggml_type):
    # the error is the activations' quantization error, carried by the weights
    cols = 2 * FORMATS[ggml_type].block_size
    w = random_blocks(rng, ggml_type, 13, cols)
    x = rng.normal(0, 1, (3, cols)).astype(np.float32)
    weights = dequantize(w, ggml_type).astype(np.float64)  # (13, cols)
    want = x.astype(np.float64) @ weights.T
    dy, qy, s = activation_parts(x, ggml_type)
    x_hat = (dy[..., None] * qy).reshape(x.shape)
    bound = np.abs(x - x_hat) @ np.abs(weights).T
    if s is not None:  # Q8_1's s is d * sum(q) rounded to half; Q4_1 and Q5_1 multiply it by the block's min
        mins = FORMATS[ggml_type].layout
        m = np.abs(w.view(mins).reshape(13, -1)["m"].astype(np.float64))  # (13, nb)
        bound += np.abs(s - dy * qy.sum(axis=-1)) @ m.T
    bound += 2 * (cols // FORMATS[ggml_type].block_size + 4) * U * magnitude(w, ggml_type, x)
    assert (np.abs(lib.qmatmul(w, ggml_type, x, 13, cols) - want) <= bound * (1 + 1e-9)).all()


@pytest.mark.parametrize("ggml_type, rows, n, orders", [
    (12, 16, 1, ("repack",)),  # Q4_K of 8k rows: repacked by llama.cpp; one activation row: its gemv
    (12, 16, 3, ("repack",) * 3),  # three rows: gemv each
    (12, 24, 6, ("repack_4",) * 4 + ("repack",) * 2),  # rows in fours by its gemm, the rest by gemv
    (12, 16, 11, ("repack_4",) * 8 + ("repack",) * 3),
    (12, 12, 9, ("tiled",) * 9),  # Q4_K not repacked (12 rows), a batch of 8 or more: the tiled matmul
    (11, 5, 8, ("tiled",) * 8),  # Q3_K, Q5_K, Q6_K from 8 activation rows
    (13, 7, 9, ("tiled",) * 9),
    (14, 9, 12, ("tiled",) * 12),
    (2, 16, 1, ("repack",)),  # Q4_0 of 8k rows: repacked by llama.cpp, its gemv and gemm sum alike
    (2, 24, 7, ("repack",) * 7),
    (2, 8, 9, ("repack",) * 9),
    (13, 7, 1, ("vec_dot",)),  # Q5_K below 8 activation rows: ggml_vec_dot_q5_K_q8_K, mins beside the lanes
    (13, 16, 5, ("vec_dot",) * 5),
    (6, 21, 9, ("vec_dot",) * 9),  # Q5_0: weight rows two at a time (the last alone), a tile of 8 and one row
    (6, 2, 1, ("vec_dot",)),
    (8, 5, 3, ("vec_dot",) * 3),  # Q8_0
], ids=["q4_K-gemv", "q4_K-gemv3", "q4_K-gemm6", "q4_K-gemm11", "q4_K-tiled", "q3_K-tiled", "q5_K-tiled",
        "q6_K-tiled", "q4_0-gemv", "q4_0-gemm7", "q4_0-gemm9", "q5_K-vec_dot", "q5_K-vec_dot5", "q5_0-pairs",
        "q5_0-gemv", "q8_0-vec_dot"])
def test_x86_products_follow_llama_cpp_orders(lib, variant, rng, ggml_type, rows, n, orders):
    # these orders are what makes Q4_K_M, Q5_K_M and Q4_0 decoders give llama.cpp's logits bit for bit
    # (tests/test_decoders.py, tests/test_decoder_families.py)
    if variant in EXACT:
        pytest.skip("only the x86 kernels follow llama.cpp's x86 orders; the others follow quants.vec_dot")
    cols = 512
    w = random_blocks(rng, ggml_type, rows, cols)
    x = rng.normal(0, 1, (n, cols)).astype(np.float32)
    got = lib.qmatmul(w, ggml_type, x, rows, cols)
    for i, order in enumerate(orders):
        np.testing.assert_array_equal(got[i], llama_cpp_order_ref(w, ggml_type, x, order)[i], err_msg=f"{order} {i}")


@pytest.mark.parametrize("ggml_type", [2, 3, 6, 7, 8], ids=["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"])
@pytest.mark.parametrize("blocks_per_row", [8, 9, 17])
def test_products_read_nothing_past_the_matrix(lib, variant, rng, ggml_type, blocks_per_row):
    """The kernels read blocks in vectors, and their scales 8 blocks at a time: a matrix that ends where readable
    memory ends, before a page that may not be read, gives the product it gives elsewhere (an over-read faults)."""
    import ctypes
    import mmap

    page = mmap.PAGESIZE
    cols = blocks_per_row * 32
    w = random_blocks(rng, ggml_type, 4, cols)  # an even count: the last two rows go together
    x = rng.normal(0, 1, (5, cols)).astype(np.float32)
    area = mmap.mmap(-1, 2 * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.mprotect(ctypes.c_void_p(base + page), ctypes.c_size_t(page), 0) == 0  # PROT_NONE
    try:
        at_edge = np.frombuffer(area, np.uint8, w.nbytes, page - w.nbytes).view(w.dtype).reshape(w.shape)
        at_edge[...] = w
        for n in (1, 2, 5):  # one activation row (two weight rows at a time, the last pair at the edge), tiles
            np.testing.assert_array_equal(lib.qmatmul(at_edge, ggml_type, x[:n], 4, cols),
                                          lib.qmatmul(w, ggml_type, x[:n], 4, cols))
        assert_close_to_reference(lib.qmatmul(w, ggml_type, x, 4, cols), w, ggml_type, x, exact=variant in EXACT)
    finally:
        del at_edge
        libc.mprotect(ctypes.c_void_p(base + page), ctypes.c_size_t(page), 3)  # readable again, then unmapped
        area.close()


def test_llama_orders_refuse_products_llama_cpp_sums_otherwise(rng):
    x = rng.normal(0, 1, (2, 256)).astype(np.float32)
    with pytest.raises(KernelError, match=r"GGML types \(2, 12\) in the 'repack' order, not of type 13"):
        llama_cpp_order_ref(random_blocks(rng, 13, 8, 256), 13, x, "repack")  # x86 repacks Q4_0 and Q4_K only
    with pytest.raises(KernelError, match=r"GGML types \(12,\) in the 'repack_4' order, not of type 2"):
        llama_cpp_order_ref(random_blocks(rng, 2, 8, 256), 2, x, "repack_4")  # Q4_0's gemm sums as its gemv
    with pytest.raises(KernelError, match=r"unknown order 'gemm' \(known: repack, repack_4, tiled, vec_dot\)"):
        llama_cpp_order_ref(random_blocks(rng, 12, 8, 256), 12, x, "gemm")


def _ggml_cpu():
    """llama-cpp-python's libggml-cpu through ctypes, with the routines the orders mirror; skips without them."""
    import ctypes
    from pathlib import Path

    llama_cpp = pytest.importorskip("llama_cpp")
    libs = Path(llama_cpp.__file__).parent / "lib"
    try:
        ctypes.CDLL(str(libs / "libggml-base.so"), mode=ctypes.RTLD_GLOBAL)
        cpu = ctypes.CDLL(str(libs / "libggml-cpu.so"), mode=ctypes.RTLD_GLOBAL)
        quantize_mat = cpu["_Z19ggml_quantize_mat_tILl8EL9ggml_type8EEvPKfPvll"]  # <8, GGML_TYPE_Q8_0>
        routines = (cpu.ggml_cpu_init, cpu.ggml_vec_dot_q5_K_q8_K, cpu.ggml_gemv_q4_0_8x8_q8_0,
                    cpu.ggml_gemm_q4_0_8x8_q8_0, cpu.ggml_cpu_has_avx2, cpu.ggml_cpu_has_fma)
    except (OSError, AttributeError) as e:
        pytest.skip(f"llama-cpp-python's libggml-cpu does not export what this test calls: {e}")
    if not (platform.machine() == "x86_64" and cpu.ggml_cpu_has_avx2() and cpu.ggml_cpu_has_fma()):
        pytest.skip("llama.cpp's libggml-cpu here is not an x86 AVX2 build: its routines sum in other orders")
    cpu.ggml_cpu_init()
    P, i, size = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    cpu.ggml_vec_dot_q5_K_q8_K.argtypes = [i, P, size, P, size, P, size, i]
    cpu.ggml_gemv_q4_0_8x8_q8_0.argtypes = cpu.ggml_gemm_q4_0_8x8_q8_0.argtypes = [i, P, size, P, P, i, i]
    quantize_mat.argtypes = [P, P, ctypes.c_int64, ctypes.c_int64]
    return cpu, quantize_mat, lambda a: a.ctypes.data_as(P)


def repack_q4_0_8x8(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 rows as llama.cpp repacks them (repack.cpp, make_block_q4_0x8 with interleave 8): per 8 rows and block,
    the 8 halves d, then 8 bytes of quants of each row in turn, twice, xor 0x88 (nibbles minus 8 as signed)."""
    groups, nb = blocks.shape[0] // 8, blocks.shape[1] // 18
    b = blocks.view(FORMATS[2].layout).reshape(groups, 8, nb).transpose(0, 2, 1)  # (groups, nb, 8 rows)
    d = np.ascontiguousarray(b["d"]).view(np.uint8).reshape(groups, nb, 16)
    qs = b["qs"].reshape(groups, nb, 8, 2, 8).transpose(0, 1, 3, 2, 4).reshape(groups, nb, 128) ^ 0x88
    return np.ascontiguousarray(np.concatenate([d, qs], axis=-1))


def test_llama_orders_equal_llama_cpp_own_routines(lib, rng):
    # the numpy twins (and the kernels held to them) against the routines of the llama.cpp that made the reference
    # logits, called on the same blocks and activations: ggml's x86 vec_dot of Q5_K, gemv and gemm of repacked Q4_0
    cpu, quantize_mat, ptr = _ggml_cpu()
    w = random_blocks(rng, 13, 6, 1024)
    x = rng.normal(0, 1, (3, 1024)).astype(np.float32)
    act = quantize_q8(x, 13)
    got = np.zeros((3, 6), np.float32)
    for c in range(3):
        for r in range(6):
            cpu.ggml_vec_dot_q5_K_q8_K(1024, ptr(got[c, r:]), 0, ptr(w[r]), 0, ptr(act[c]), 0, 1)
    np.testing.assert_array_equal(got, llama_cpp_order_ref(w, 13, x, "vec_dot"))
    np.testing.assert_array_equal(got, lib.qmatmul(w, 13, x, 6, 1024))
    w = random_blocks(rng, 2, 24, 640)  # 24 rows: the AVX-512 gemm's 16 columns and its AVX2 tail of 8
    x = rng.normal(0, 1, (16, 640)).astype(np.float32)
    packed, act = repack_q4_0_8x8(w), quantize_q8(x, 2)
    gemv, gemm = np.zeros((16, 24), np.float32), np.zeros((16, 24), np.float32)
    for c in range(16):
        cpu.ggml_gemv_q4_0_8x8_q8_0(640, ptr(gemv[c]), 24, ptr(packed), ptr(act[c]), 1, 24)
    interleaved = np.zeros((4, 20 * (8 + 128)), np.uint8)  # block_q8_0x4 per four rows, as its matmul makes them
    for g in range(4):
        quantize_mat(ptr(x[4 * g:]), ptr(interleaved[g]), 4, 640)
    cpu.ggml_gemm_q4_0_8x8_q8_0(640, ptr(gemm), 24, ptr(packed), ptr(interleaved), 16, 24)
    np.testing.assert_array_equal(gemm, gemv)
    np.testing.assert_array_equal(gemv, llama_cpp_order_ref(w, 2, x, "repack"))
    np.testing.assert_array_equal(gemv, lib.qmatmul(w, 2, x, 24, 640))


def test_one_and_two_threads_give_identical_bits(lib, rng):
    cols = 1024
    try:
        for ggml_type in (8, 12):
            w = random_blocks(rng, ggml_type, 1500, cols)
            for n in (1, 6):
                x = rng.normal(0, 1, (n, cols)).astype(np.float32)
                results = []
                for threads in (1, 2):
                    lib.set_num_threads(threads)
                    results.append(lib.qmatmul(w, ggml_type, x, 1500, cols))
                np.testing.assert_array_equal(*results)
    finally:
        lib.set_num_threads(None)


def test_unaligned_strided_and_read_only_weights(lib, rng):
    # a GGUF view: rows at any byte offset, further apart than their bytes, read-only
    w = random_blocks(rng, 6, 9, 96)  # Q5_0, 66 bytes per row
    buffer = np.zeros(1 + 9 * 70, np.uint8)
    view = np.lib.stride_tricks.as_strided(buffer[1:], shape=(9, 66), strides=(70, 1))
    view[...] = w
    view.flags.writeable = False
    x = rng.normal(0, 1, (3, 96)).astype(np.float32)
    np.testing.assert_array_equal(lib.qmatmul(view, 6, x, 9, 96), lib.qmatmul(w, 6, x, 9, 96))
    np.testing.assert_array_equal(lib.get_rows(view, 6, [8, 0], 96), lib.get_rows(w, 6, [8, 0], 96))


def test_activations_at_unaligned_addresses(lib, rng):
    w = random_blocks(rng, 12, 5, 256)
    x = rng.normal(0, 1, (2, 256)).astype(np.float32)
    raw = np.zeros(x.nbytes + 4, np.uint8)
    shifted = raw[2 : 2 + x.nbytes].view(np.float32).reshape(2, 256)  # 2 bytes off float alignment
    shifted[...] = x
    out = np.zeros(raw.nbytes + 8, np.uint8)[1 : 1 + 2 * 5 * 4].view(np.float32).reshape(2, 5)
    np.testing.assert_array_equal(lib.qmatmul(w, 12, shifted, 5, 256, out=out), lib.qmatmul(w, 12, x, 5, 256))


def test_output_given_and_one_dimensional_x(lib, rng):
    w = random_blocks(rng, 3, 6, 64)
    x = rng.normal(0, 1, 64).astype(np.float32)
    out = np.empty(6, np.float32)
    assert lib.qmatmul(w, 3, x, 6, 64, out=out) is out
    np.testing.assert_array_equal(out, lib.qmatmul(w, 3, x[None], 6, 64)[0])


def test_prepared_matrix_equals_qmatmul_and_takes_ggml_type_objects(lib, rng):
    from votive.quant.ggml_types import GGML_TYPES

    w = random_blocks(rng, 13, 9, 512)
    x = rng.normal(0, 1, (3, 512)).astype(np.float32)
    matrix = lib.matrix(w.copy(), GGML_TYPES[13], 9, 512)  # the only reference to its blocks: kept alive
    want = lib.qmatmul(w, 13, x, 9, 512)
    np.testing.assert_array_equal(matrix(x), want)
    out = np.empty((3, 9), np.float32)
    assert matrix(x, out) is out
    np.testing.assert_array_equal(out, want)
    assert lib.supports(GGML_TYPES[13]) and kernels.supports(GGML_TYPES[13])
    with pytest.raises(KernelError, match=r"qmatmul: x must be a C-contiguous float32 array of shape \(n, 512\)"):
        matrix(x[:, ::2])


def test_group_equals_its_products_one_by_one(lib, rng):
    # a layer's q, k, v in mixed formats (two activation formats), 1-D and 2-D x, big enough to be split
    weights = [(random_blocks(rng, 6, 640, 512), 6, 640), (random_blocks(rng, 12, 128, 512), 12, 128),
               (random_blocks(rng, 3, 96, 512), 3, 96), (random_blocks(rng, 8, 1, 512), 8, 1)]
    group = lib.group(weights, 512)
    assert group.out_features == (640, 128, 96, 1)
    for x in (rng.normal(0, 1, 512).astype(np.float32), rng.normal(0, 1, (5, 512)).astype(np.float32)):
        outs = group(x)
        for (w, t, rows), got in zip(weights, outs):
            assert got.flags.c_contiguous and got.shape == ((rows,) if x.ndim == 1 else (5, rows))
            np.testing.assert_array_equal(got, lib.qmatmul(w, t, x, rows, 512))
    with pytest.raises(KernelError, match="group: expected 1 to 16 matrices, found 17"):
        lib.group(weights * 4 + weights[:1], 512)
    with pytest.raises(KernelError, match=r"blocks must be uint8 of shape \(640, 352\)"):
        lib.group([(weights[1][0], 6, 640)], 512)


def test_nan_or_inf_in_an_activation_row_makes_that_row_nan(lib, rng):
    for ggml_type in (2, 3, 12):
        cols = FORMATS[ggml_type].block_size * 2
        w = random_blocks(rng, ggml_type, 4, cols)
        x = rng.normal(0, 1, (3, cols)).astype(np.float32)
        x[0, 5], x[2, -1] = np.nan, np.inf
        got = lib.qmatmul(w, ggml_type, x, 4, cols)
        assert np.isnan(got[0]).all() and np.isnan(got[2]).all() and np.isfinite(got[1]).all()


def test_zero_rows_and_empty_inputs(lib, rng):
    w = random_blocks(rng, 8, 3, 64)
    np.testing.assert_array_equal(lib.qmatmul(w, 8, np.zeros((2, 64), np.float32), 3, 64), np.zeros((2, 3)))
    assert lib.qmatmul(w, 8, np.zeros((0, 64), np.float32), 3, 64).shape == (0, 3)
    assert lib.get_rows(w, 8, np.array([], np.int64), 64).shape == (0, 64)


# ----------------------------------------------------------------------------------------- get_rows


@pytest.mark.parametrize("ggml_type", [0, 1, 30] + QUANT_TYPES, ids=[NAMES[t] for t in [0, 1, 30] + QUANT_TYPES])
def test_get_rows_is_dequantize_bit_for_bit(lib, variant, rng, ggml_type):
    # any bytes at all, scales included: inf, NaN and subnormal halves must come out as ggml gives them
    fmt = FORMATS[ggml_type]
    cols = 2 * fmt.block_size if fmt.block_size > 1 else 48
    raw = rng.integers(0, 256, (11, cols // fmt.block_size * fmt.block_bytes), dtype=np.uint8)
    blocks = raw if fmt.block_size > 1 else raw.view(fmt.layout)  # plain floats come typed from GGUFFile
    ids = np.array([10, 0, 4, 4, 7], np.int64)
    got = lib.get_rows(blocks, ggml_type, ids, cols)
    want = get_rows_ref(blocks, ggml_type, ids)
    assert got.shape == (5, cols)
    assert_same_floats(got, want)


def assert_same_floats(got: np.ndarray, want: np.ndarray):
    """Bit for bit, but any NaN matches any NaN (widening a signalling NaN half may set its quiet bit)."""
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    np.testing.assert_array_equal(got.view(np.uint32)[~nan], want.view(np.uint32)[~nan])


def test_get_rows_refuses_ids_outside_the_matrix(lib, rng):
    w = random_blocks(rng, 12, 4, 256)
    for ids in ([0, 4], [-1], [3, 2, 100]):
        with pytest.raises(KernelError, match=r"get_rows: row id (4|-1|100) is outside the matrix's 4 rows"):
            lib.get_rows(w, 12, ids, 256)
    with pytest.raises(KernelError, match="ids must be a 1-D array of integers"):
        lib.get_rows(w, 12, [0.5], 256)


# ------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda lib, w, x: lib.qmatmul(w, 1, x, 4, 64), "qmatmul: GGML type 1 (F16) weights are not supported"),
        (lambda lib, w, x: lib.qmatmul(w, 99, x, 4, 64), "qmatmul: GGML type 99 weights are not supported"),
        (lambda lib, w, x: lib.qmatmul(w, 8, x, 5, 64), "blocks must be uint8 of shape (5, 68)"),
        (lambda lib, w, x: lib.qmatmul(w, 8, x, 4, 60), "in_features must be a whole number of 32-element blocks"),
        (lambda lib, w, x: lib.qmatmul(w.view(np.int8), 8, x, 4, 64), "found int8 array of shape (4, 68)"),
        (lambda lib, w, x: lib.qmatmul(w[:, ::2], 8, x, 4, 64), "blocks must be uint8 of shape (4, 68)"),
        (lambda lib, w, x: lib.qmatmul(w, 8, x.astype(np.float64), 4, 64),
         "qmatmul: x must be a C-contiguous float32 array of shape (n, 64)"),
        (lambda lib, w, x: lib.qmatmul(w, 8, x[:, :32], 4, 64), "found float32 array of shape (2, 32)"),
        (lambda lib, w, x: lib.qmatmul(w, 8, x, 4, 64, out=np.empty((2, 5), np.float32)),
         "qmatmul: out must have shape (2, 4)"),
        (lambda lib, w, x: lib.get_rows(w, 15, [0], 256), "get_rows: GGML type 15 (Q8_K) rows are not supported"),
        (lambda lib, w, x: lib.quantize_rows(x, 12), "quantize_rows: act_type must be one of"),
        (lambda lib, w, x: lib.set_quant_isa("sve2"), "set_quant_isa: 'sve2' is not available"),
    ],
)
def test_bad_arguments_raise_clear_errors(lib, rng, call, message):
    w = random_blocks(rng, 8, 4, 64)
    x = rng.normal(0, 1, (2, 64)).astype(np.float32)
    with pytest.raises(KernelError) as err:
        call(lib, w, x)
    assert message in str(err.value)


# --------------------------------------------------------------------------------- real GGUF tensors


def _first_tensor_of_each_type(gguf: GGUFFile, rows: int = 384):
    seen = {}
    for name, info in gguf.tensors.items():
        if len(info.shape) == 2 and info.ggml_type.id in VEC_DOT_TYPE and info.ggml_type.id not in seen:
            seen[info.ggml_type.id] = (name, gguf[name][:rows], info.shape[1])
    return seen


@pytest.mark.parametrize("model", ["smollm_gguf", "gemma_gguf"])
def test_real_tensors_match_reference(lib, rng, request, model):
    gguf = GGUFFile(request.getfixturevalue(model))
    tensors = _first_tensor_of_each_type(gguf)
    assert tensors, "no quantized matrices found"
    for ggml_type, (name, blocks, cols) in tensors.items():
        x = rng.normal(0, 1, (3, cols)).astype(np.float32)
        got = lib.qmatmul(blocks, ggml_type, x, blocks.shape[0], cols)
        assert_close_to_reference(got, blocks, ggml_type, x, exact=lib.quant_isa in EXACT)
        ids = np.array([0, blocks.shape[0] - 1, 7])
        assert_same_floats(lib.get_rows(blocks, ggml_type, ids, cols), dequantize(blocks[ids], ggml_type))


# ----------------------------------------------------------------------------- the module and fallback


def test_module_functions_use_c_or_fall_back_to_the_reference(monkeypatch, rng):
    w = random_blocks(rng, 12, 6, 256)
    x = rng.normal(0, 1, (2, 256)).astype(np.float32)
    with_library = kernels.qmatmul(w, 12, x, 6, 256)
    monkeypatch.setattr(kernels, "_default", [None])  # as after get() found no library
    assert not kernels.supports(12)
    np.testing.assert_array_equal(kernels.qmatmul(w, 12, x, 6, 256), qmatmul_ref(w, 12, x))
    np.testing.assert_array_equal(kernels.get_rows(w, 12, [5, 1], 256), dequantize(w[[5, 1]], 12))
    bound = 2 * (1 + 4) * U * magnitude(w, 12, x)
    assert (np.abs(with_library - qmatmul_ref(w, 12, x)) <= bound).all()


def test_the_table_says_which_kernels_work_in_place(lib, rng):
    x = rng.normal(0, 1, (3, 2, 8)).astype(np.float32)
    k, v = np.zeros((1, 16, 8), np.float16), np.zeros((1, 8, 16), np.float16)
    blocks = np.zeros((4, 34), np.uint8)  # Q8_0, 4 rows of 32
    calls = {  # the first argument of each is what an in-place kernel returns
        "gelu": (x.copy(),), "layer_norm": (x.copy(), None, None, 1e-5), "softmax": (x.copy(),),
        "rms_norm": (x.copy(), None, 1e-5), "swiglu": (x.copy(), x),
        "geglu": (x.copy(), x, np.ones(1 << 16, np.float32)), "rope_cache": (100.0, 8, 3),
        "rope": (x.copy(), lib.rope_cache(100.0, 8, 3), False), "attention_f16": (x.copy(), k, v, 0, 0.5),
        "qmatmul": (blocks, 8, np.zeros((2, 32), np.float32), 4, 32),
        "get_rows": (blocks, 8, [1], 32), "quantize_rows": (np.zeros((2, 32), np.float32), 8),
        "half_matmul": (np.zeros((4, 32), np.float16), 1, np.zeros((2, 32), np.float32), 4, 32),
        "linear": (np.zeros((2, 8), np.float32), np.zeros((3, 8), np.float32)),
        "encoder_attention": (np.zeros((3, 12), np.float32), [0, 1, 3], 2, 0.5),
    }
    assert set(calls) == set(kernels.OPS) - {"qmatmul_group"}  # that one runs behind matrix and group
    for op, args in calls.items():
        assert (getattr(lib, op)(*args) is args[0]) == kernels.OPS[op].in_place, op


def test_geglu_is_the_numpy_lookup_bit_for_bit(lib, monkeypatch, rng):
    """vt_geglu (the prompt's GeGLU) against its twin, the numpy lookup numpy_backend ran before: ggml's GELU table
    at the gate rounded to half, the gate itself from 10 up, 0 from -10 down; also through the backend."""
    from votive.backends import numpy_backend
    from votive.quant.kernels_ref import geglu_ref

    table = numpy_backend._gelu_half_table()
    for shape in ((1, 5), (7, 640), (33, 2048)):  # one row; rows below and above a thread's chunk
        gate = rng.normal(0, 4, shape).astype(np.float32)
        gate.flat[:8] = [10.0, -10.0, 9.999999, -9.999999, 65504.0, 70000.0, -0.0, 1e-8]  # branches, half range
        up = rng.normal(0, 1, shape).astype(np.float32)
        want = geglu_ref(gate, up, table)
        assert want.dtype == np.float32
        np.testing.assert_array_equal(lib.geglu(gate.copy(), up, table), want, err_msg=str(shape))
        monkeypatch.setattr(kernels, "_default", [lib])
        np.testing.assert_array_equal(numpy_backend.geglu(gate.copy(), up), want)
        monkeypatch.setattr(kernels, "_default", [None])  # the numpy path without a library
        np.testing.assert_array_equal(numpy_backend.geglu(gate.copy(), up), want)
    # by hand: GELU(1) = 0.8412 (tanh form), looked up at half(1) = 1
    one = lib.geglu(np.array([[1.0, 12.0, -12.0]], np.float32), np.array([[2.0, 3.0, 4.0]], np.float32), table)
    np.testing.assert_allclose(one, [[2 * 0.8412, 36.0, 0.0]], atol=2e-3)


def test_decoder_rows_without_the_library_give_the_c_bits(lib, monkeypatch, rng):
    x = rng.normal(0, 2, (5, 3, 64)).astype(np.float32)
    w = rng.normal(1, 0.2, 64).astype(np.float32)
    up = rng.normal(0, 1, x.shape).astype(np.float32)
    table = lib.rope_cache(10000.0, 64, 5)
    k = rng.normal(0, 1, (1, 64, 64)).astype(np.float16)
    v = rng.normal(0, 1, (1, 64, 64)).astype(np.float16)
    runs = []
    for library in (lib, None):
        monkeypatch.setattr(kernels, "_default", [library])
        runs.append((kernels.rms_norm(x, w, 1e-6), kernels.swiglu(x.copy(), up), kernels.rope(x.copy(), table, True),
                     kernels.attention_f16(x, k, v, 2, 0.125)))
    for name, with_c, with_numpy in zip(("rms_norm", "swiglu", "rope", "attention_f16"), *runs):
        np.testing.assert_array_equal(with_c, with_numpy, err_msg=name)


def test_supports_lists_the_quantized_types(lib):
    assert [t for t in range(40) if lib.supports(t)] == QUANT_TYPES


def test_qlinear_runs_the_c_kernels(lib, monkeypatch, rng):
    from votive.backends.numpy_linears import QuantLinear

    monkeypatch.setattr(kernels, "_default", [lib])
    w = random_blocks(rng, 14, 10, 512)
    layer = QuantLinear(w, 14, (10, 512), "blk.0.ffn_down.weight")
    x = rng.normal(0, 1, (4, 512)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), lib.qmatmul(w, 14, x, 10, 512))
    np.testing.assert_array_equal(layer.rows([3, 9]), dequantize(w[[3, 9]], 14))


# ------------------------------------------------------------------------------ arm64, under qemu-user


def _digests(stdout: str) -> dict[str, str]:
    """The selftest's `digest <isa>/<dot> <hash>` lines: a hash of products on fixed inputs per kernel variant."""
    return dict(line.split()[1:3] for line in stdout.splitlines() if line.startswith("digest "))


def test_arm64_build_passes_its_selftest_under_qemu(tmp_path):
    cc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if not (cc and qemu) or platform.machine() != "x86_64":
        pytest.skip("needs aarch64-linux-gnu-gcc and qemu-aarch64 on an x86_64 host")
    library = kernel_build.build_library(tmp_path / "arm64" / kernel_build.LIBRARY_NAME, cc=[cc])
    selftest = kernel_build.build_selftest(library, cc=[cc])
    host = kernel_build.build_selftest(kernel_build.build_library(tmp_path / "host" / kernel_build.LIBRARY_NAME))
    done = subprocess.run([str(host)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    plain = _digests(done.stdout)["sse2/scalar"]
    for cpu in ("max", "cortex-a53"):  # with and without the dot-product extension
        done = subprocess.run([qemu, "-cpu", cpu, "-L", "/usr/aarch64-linux-gnu", str(selftest)],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr
        digests = _digests(done.stdout)
        assert set(digests) == ({"neon/neon", "neon/neon+dotprod"} if cpu == "max" else {"neon/neon"})
        # NEON follows the reference float order as the plain C kernels do: the same bits on both machines
        assert set(digests.values()) == {plain}, (digests, plain)

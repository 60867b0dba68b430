"""votive.quant.codecs against answers it did not produce.

- the gguf package (llama.cpp's gguf-py) for every dequantizer and the Q8_0 / F16 / BF16 quantizers, bit for bit;
- ggml's C reference quantizers for Q4_K, Q8_K and Q8_0: the pinned sha256 digests below are of the bytes that
  quantize_row_{q4_K,q8_K,q8_0}_ref (ggml-quants.c, built with and without -march=native -ffp-contract=fast;
  both gave these) wrote for `pinned_vector()`;
- blocks built by hand with known values, real blocks from SmolLM2 and Gemma 3 GGUF files, and ggml's
  test-quantize-fns error bounds;
- and every vectorized function against its plain-loop `_ref` twin.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from gguf import quants as gguf_quants
from gguf.constants import GGMLQuantizationType

from votive.errors import QuantError
from votive.formats.gguf import GGUFFile
from votive.quant import codecs as quants

F32 = np.float32
QUANTIZED = [2, 3, 6, 7, 8, 10, 11, 12, 13, 14]  # the block formats GGUF files use
PLAIN = [0, 1, 30]


def bits(a) -> np.ndarray:
    """float32 -> uint32, so comparisons are bit for bit (and -0.0 != 0.0)."""
    return np.ascontiguousarray(a, F32).view(np.uint32)


def gguf_dequantize(raw: np.ndarray, type_id: int) -> np.ndarray:
    return gguf_quants.dequantize(raw, GGMLQuantizationType(type_id)).reshape(raw.shape[0], -1)


def random_blocks(type_id: int, n_blocks: int, rng) -> np.ndarray:
    """Random bytes are legal quants, but a random half scale can be NaN or inf: give the scales sane values."""
    fmt = quants.FORMATS[type_id]
    if fmt.block_size == 1:
        values = (rng.standard_normal(n_blocks) * 3).astype(F32)
        return quants.quantize(values, type_id)
    raw = rng.integers(0, 256, (n_blocks, fmt.block_bytes), dtype=np.uint8)
    blocks = raw.view(fmt.layout).reshape(-1)
    for field in ("d", "dmin", "m"):
        if field in fmt.layout.names:
            blocks[field] = rng.uniform(-2, 2, n_blocks).astype(np.float16)
    return raw.reshape(1, -1)


def test_block_bytes_are_ggmls():
    expected = {"Q4_0": 18, "Q4_1": 20, "Q5_0": 22, "Q5_1": 24, "Q8_0": 34, "Q8_1": 36,
                "Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210, "Q8_K": 292,
                "F32": 4, "F16": 2, "BF16": 2}
    found = {f.name: f.block_bytes for f in quants.FORMATS.values()}
    assert found == expected
    for fmt in quants.FORMATS.values():
        assert fmt.layout.itemsize == fmt.block_bytes
        assert fmt.block_size == (1 if fmt.name in ("F32", "F16", "BF16") else 256 if "_K" in fmt.name else 32)


# ---- dequantization ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_id", QUANTIZED + PLAIN, ids=lambda t: quants.FORMATS[t].name)
def test_dequantize_matches_gguf_and_ref_on_random_blocks(type_id):
    rng = np.random.default_rng(type_id)
    raw = random_blocks(type_id, 96, rng)
    fmt = quants.FORMATS[type_id]
    rows = raw.reshape(3, -1)  # three rows of 32 blocks
    got = quants.dequantize(rows, type_id)
    assert got.shape == (3, 32 * fmt.block_size) and got.dtype == F32
    np.testing.assert_array_equal(bits(got), bits(gguf_dequantize(rows, type_id)))
    np.testing.assert_array_equal(bits(quants.dequantize_ref(rows, type_id)), bits(got))


def _q4_0(d, qs):
    return np.float16(d).tobytes() + bytes(qs)


def _half(v) -> bytes:
    return np.float16(v).tobytes()


j32 = np.arange(32)
e256 = np.arange(256)

# (type, one hand-built block, the values it holds), values worked out from ggml's block layouts.
HAND_BUILT = {
    # d = 1, byte j = 17 j: nibble j in both halves, so element j and element j + 16 are both j - 8.
    "Q4_0 nibbles": (2, _half(1.0) + bytes(range(0, 256, 17)), (j32 % 16) - 8.0),
    "Q4_1 d=0.5 m=-1": (3, _half(0.5) + _half(-1.0) + bytes(range(0, 256, 17)), 0.5 * (j32 % 16) - 1.0),
    # qh sets the fifth bit of elements 16..31 only.
    "Q5_0 high half": (6, _half(2.0) + struct.pack("<I", 0xFFFF0000) + bytes([0x21] * 16),
                       2.0 * (np.where(j32 < 16, 1, 2 + 16) - 16)),
    "Q5_1 all fifth bits": (7, _half(0.25) + _half(3.0) + struct.pack("<I", 0xFFFFFFFF) + bytes([0xF0] * 16),
                            0.25 * (np.where(j32 < 16, 0, 15) + 16) + 3.0),
    "Q8_0": (8, _half(0.125) + struct.pack("<32b", *range(-16, 16)), 0.125 * (j32 - 16.0)),
    # scales byte s = (min << 4) | scale with scale = s % 16, min 1; every qs byte 0xE4 holds 0,1,2,3 at
    # shifts 0,2,4,6, so element 128h + 32p + l has q = p.
    "Q2_K": (10, bytes([(1 << 4) | s for s in range(16)]) + bytes([0xE4] * 64) + _half(1.0) + _half(0.5),
             1.0 * (e256 // 16) * ((e256 % 128) // 32) - 0.5),
    # every scale is 33 (low nibble 1, high bits 2): 33 - 32 = 1; hmask all set so no -4.
    "Q3_K": (11, bytes([0xFF] * 32) + bytes([0xE4] * 64) + bytes([0x11] * 8 + [0xAA] * 4) + _half(1.0),
             1.0 * ((e256 % 128) // 32)),
    # sub-block j: scale j + 1, min j (all < 16, so no high bits); qs 0x5A: low nibble 10, high 5.
    "Q4_K": (12, _half(1.0) + _half(2.0)
             + bytes([1, 2, 3, 4, 0, 1, 2, 3] + [(j + 1) | (j << 4) for j in range(4, 8)]) + bytes([0x5A] * 128),
             (e256 // 32 + 1) * np.where((e256 // 32) % 2 == 0, 10, 5) - 2.0 * (e256 // 32)),
    # as Q4_K, and qh all set: every quant gains 16.
    "Q5_K": (13, _half(1.0) + _half(2.0)
             + bytes([1, 2, 3, 4, 0, 1, 2, 3] + [(j + 1) | (j << 4) for j in range(4, 8)])
             + bytes([0xFF] * 32) + bytes([0x5A] * 128),
             (e256 // 32 + 1) * (np.where((e256 // 32) % 2 == 0, 10, 5) + 16) - 2.0 * (e256 // 32)),
    # ql 0x21 (low 1, high 2), qh 0xE4: element 128h + 32p + l has q = [-31, -15, 2, 18][p]; scale s - 8.
    "Q6_K": (14, bytes([0x21] * 128) + bytes([0xE4] * 64) + struct.pack("<16b", *range(-8, 8)) + _half(0.5),
             0.5 * (e256 // 16 - 8) * np.array([-31, -15, 2, 18])[(e256 % 128) // 32]),
}


@pytest.mark.parametrize("case", list(HAND_BUILT))
def test_hand_built_block(case):
    type_id, block, expected = HAND_BUILT[case]
    assert len(block) == quants.FORMATS[type_id].block_bytes
    got = quants.dequantize(block, type_id)[0]
    np.testing.assert_array_equal(got, np.asarray(expected, F32))
    np.testing.assert_array_equal(bits(quants.dequantize_ref(block, type_id)[0]), bits(got))
    raw = np.frombuffer(block, np.uint8).reshape(1, -1)
    np.testing.assert_array_equal(bits(gguf_dequantize(raw, type_id)[0]), bits(got))


REAL_TENSORS = [
    ("smollm_gguf", "blk.0.attn_q.weight", "Q4_1"),
    ("smollm_gguf", "token_embd.weight", "Q8_0"),
    ("smollm_gguf", "blk.0.attn_norm.weight", "F32"),
    ("gemma_gguf", "token_embd.weight", "Q8_0"),
    ("gemma_gguf", "blk.0.attn_k.weight", "Q5_0"),
    ("gemma_gguf", "blk.0.attn_output.weight", "Q4_K"),
    ("gemma_gguf", "blk.0.ffn_down.weight", "Q6_K"),
    ("gemma_gguf", "output_norm.weight", "F32"),
]


@pytest.mark.parametrize("model, name, type_name", REAL_TENSORS, ids=[f"{m[:-5]}-{t}" for m, _, t in REAL_TENSORS])
def test_real_blocks_from_published_files(request, model, name, type_name):
    f = GGUFFile(request.getfixturevalue(model))
    info = f.tensors[name]
    assert info.ggml_type.name == type_name
    data = f[name]
    rows = data[:16] if data.ndim == 2 else data  # the first rows: enough blocks, little time
    cols = info.shape[-1]
    got = quants.dequantize(rows, info.ggml_type.id, cols)
    assert got.shape == (len(rows) if data.ndim == 2 else 1, cols)
    raw = np.ascontiguousarray(rows).view(np.uint8).reshape(got.shape[0], -1)
    np.testing.assert_array_equal(bits(got), bits(gguf_dequantize(raw, info.ggml_type.id)))
    np.testing.assert_array_equal(bits(quants.dequantize_ref(raw[:2], info.ggml_type.id)), bits(got[:2]))
    assert np.isfinite(got).all() and 0 < np.abs(got).max() < 1000  # trained weights, not garbage


# ---- quantization ------------------------------------------------------------------------------------------------


def pinned_vector() -> np.ndarray:
    """16 super-blocks of exactly computable values (no libm), with a zero sub-block, a constant one, an
    all-positive super-block and magnitudes from 2**-6 to 2**2."""
    i = np.arange(16 * 256)
    x = ((i * 7919) % 2003 - 1001).astype(F32) / F32(97.0)
    x *= F32(2.0) ** ((i // 256) % 9 - 6).astype(F32)
    x[256:288] = 0
    x[512:544] = 1.5
    x[768:1024] = np.abs(x[768:1024])
    return x


def ggml_test_vector(n: int = 32 * 128, offset: float = 0.0) -> np.ndarray:
    """test-quantize-fns' generate_data: 0.1 + 2 cos(i + offset), in float32."""
    cos = np.cos((np.arange(n, dtype=F32) + F32(offset)).astype(np.float64)).astype(F32)
    return (0.1 + (F32(2.0) * cos).astype(np.float64)).astype(F32)


def ggml_rmse(a: np.ndarray, b: np.ndarray) -> float:
    """test-quantize-fns' array_rmse, quirk included: sqrt(sum of squares) / n."""
    return float(np.sqrt(np.sum((a.astype(np.float64) - b.astype(np.float64)) ** 2)) / a.size)


def bell_vector(n_blocks: int = 4096) -> np.ndarray:
    """Many super-blocks of bell-shaped values, from exact float32 arithmetic on integers: enough blocks that
    float evaluation order shows (ggml built with FMA contraction writes 65 of these 4096 blocks differently;
    summing one of make_qkx2_quants' sums pairwise instead of in order changes a few)."""
    i = np.arange(n_blocks * 256, dtype=np.int64)
    u = [((i * a + b) % 65521).astype(F32) / F32(65521.0) for a, b in ((7919, 13), (104729, 7), (1299709, 101))]
    x = (u[0] + u[1] + u[2] - F32(1.5)) * F32(0.125)
    return x * (F32(2.0) ** ((i // 256) % 7 - 3).astype(F32))


# sha256 of ggml's quantize_row_q4_K_ref output for bell_vector(), built without FMA contraction.
GGML_BELL_Q4_K_SHA256 = "499c9554eb75b48b9e421fe16a73eabc5fbe1baaec16e92c9274a32c694c4c09"


def test_q4_K_quantizer_matches_ggml_c_on_many_blocks():
    got = quants.quantize(bell_vector(), 12)
    assert hashlib.sha256(got.tobytes()).hexdigest() == GGML_BELL_Q4_K_SHA256


# sha256 of ggml's quantize_row_*_ref output for pinned_vector(); see the module docstring.
GGML_PINNED_SHA256 = {
    12: "3a2a0470034bc8b1a40bb08acb66f60b1daf9097395a7e8b382a733b1ad6b849",
    15: "bfe01a97009bd9033e8e9d15acb71e0b77f859da69fea381369efa5afb17971a",
    8: "d7b2d50dfc32e5663b3a2fedbc4da9729e09b80c1ff7a68e2356ef7d499dd44c",
}


@pytest.mark.parametrize("type_id", [12, 15, 8], ids=["Q4_K", "Q8_K", "Q8_0"])
def test_quantizers_match_ggml_c_on_pinned_vector(type_id):
    x = pinned_vector()
    got = quants.quantize(x, type_id)
    assert got.shape == (1, 16 * 256 // quants.FORMATS[type_id].block_size * quants.FORMATS[type_id].block_bytes)
    assert hashlib.sha256(got.tobytes()).hexdigest() == GGML_PINNED_SHA256[type_id]
    np.testing.assert_array_equal(quants.quantize_ref(x, type_id), got)


def test_q4_K_first_pinned_block_fields():
    # d, dmin (halves) and the 12 packed scale bytes of ggml's first block, from the same C run as the digest.
    head = quants.quantize(pinned_vector(), 12)[0, :16].tobytes()
    assert head.hex() == "6b0d" "3119" "fefefffefefffefbeffdddbd"


@pytest.mark.parametrize("type_id", [12, 8, 9, 15], ids=["Q4_K", "Q8_0", "Q8_1", "Q8_K"])
def test_quantize_matches_ref_on_random_rows(type_id):
    rng = np.random.default_rng(type_id)
    x = rng.standard_normal((2, 1024)).astype(F32) * F32(0.05)
    x[0, :256] *= F32(40.0)  # a super-block of larger weights
    x[1, 256:288] = 0.0  # and an all-zero sub-block
    np.testing.assert_array_equal(quants.quantize_ref(x, type_id), quants.quantize(x, type_id))


@pytest.mark.parametrize("type_id", [8, 1, 30, 0], ids=["Q8_0", "F16", "BF16", "F32"])
def test_quantize_matches_gguf(type_id):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 256)).astype(F32)
    x[0, :32] = 0.0
    x[1, :32] = np.arange(-16, 16, dtype=F32) + F32(0.5)  # with 127 below, d = 1 and every x / d is a tie
    x[1, 0] = 127.0
    expected = gguf_quants.quantize(x, GGMLQuantizationType(type_id))
    got = quants.quantize(x, type_id)
    np.testing.assert_array_equal(got, np.ascontiguousarray(expected).view(np.uint8).reshape(got.shape))


def test_q8_0_rounds_ties_away_from_zero():
    x = np.zeros(32, F32)
    x[:7] = [127.0, 2.5, -2.5, 0.5, -0.5, 1.5, -126.5]  # amax 127: d = 1, so x / d is x
    block = quants.quantize(x, 8)[0].view(quants.FORMATS[8].layout)[0]
    assert block["d"] == np.float16(1.0)
    assert block["qs"][:7].tolist() == [127, 3, -3, 1, -1, 2, -127]  # rint would give 2, -2, 0, 0, 2, -126


@pytest.mark.parametrize("type_id, bound", [(8, 0.002), (12, 0.002), (9, 0.002), (15, 0.002)],
                         ids=["Q8_0", "Q4_K", "Q8_1", "Q8_K"])
def test_round_trip_error_within_ggml_bounds(type_id, bound):
    x = ggml_test_vector()
    err = ggml_rmse(x, quants.dequantize(quants.quantize(x, type_id), type_id)[0])
    assert err < bound
    assert err > 0  # the test vector is not exactly representable


def test_degenerate_blocks_quantize_to_zero_scales():
    x = np.zeros((2, 256), F32)
    x[1] = 0.75  # constant and positive: the fit's min is clamped to 0, one level fits all
    q4k = quants.quantize(x, 12).view(quants.FORMATS[12].layout)[:, 0]
    assert q4k["d"][0] == 0 and q4k["dmin"][0] == 0 and not q4k["qs"][0].any()
    np.testing.assert_array_equal(quants.dequantize(quants.quantize(x, 12), 12)[0], 0.0)
    np.testing.assert_allclose(quants.dequantize(quants.quantize(x, 12), 12)[1], 0.75, rtol=2e-3)
    q8k = quants.quantize(x, 15).view(quants.FORMATS[15].layout)[:, 0]
    assert q8k["d"][0] == 0 and not q8k["qs"][0].any() and not q8k["bsums"][0].any()


def test_q8_K_and_q8_1_carry_their_sums():
    rng = np.random.default_rng(8)
    x = rng.standard_normal(512).astype(F32)
    k = quants.quantize(x, 15).view(quants.FORMATS[15].layout)[0]
    np.testing.assert_array_equal(k["bsums"], k["qs"].reshape(2, 16, 16).sum(axis=2))
    assert (k["qs"].min(axis=1) >= -127).all() and (np.abs(k["qs"]).max(axis=1) == 127).all()
    one = quants.quantize(x, 9).view(quants.FORMATS[9].layout)[0]
    zero = quants.quantize(x, 8).view(quants.FORMATS[8].layout)[0]
    np.testing.assert_array_equal(one["qs"], zero["qs"])  # Q8_1 is Q8_0 plus s
    d32 = np.abs(x.reshape(-1, 32)).max(axis=1) / F32(127.0)
    np.testing.assert_array_equal(one["s"], (one["qs"].sum(axis=1).astype(F32) * d32).astype(np.float16))


# ---- dot products -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_id", QUANTIZED, ids=lambda t: quants.FORMATS[t].name)
def test_vec_dot_matches_ref_and_dequantized_dot(type_id):
    rng = np.random.default_rng(100 + type_id)
    cols = 512
    weights = random_blocks(type_id, 5 * cols // quants.FORMATS[type_id].block_size, rng).reshape(5, -1)
    x = rng.standard_normal(cols).astype(F32)
    act = quants.quantize_q8(x, type_id)
    got = quants.vec_dot(weights, act, type_id)
    assert got.shape == (5,) and got.dtype == F32
    np.testing.assert_array_equal(bits(quants.vec_dot_ref(weights, act, type_id)), bits(got))

    # Same sum in float64 from the gguf package's dequantized weights and the dequantized activation.
    w = gguf_dequantize(weights, type_id).astype(np.float64)
    a = quants.dequantize(act, quants.VEC_DOT_TYPE[type_id])[0].astype(np.float64)
    expected = w @ a
    tolerance = 1e-6 * np.abs(w * a).sum(axis=1)
    if quants.VEC_DOT_TYPE[type_id] == 9:
        # Q8_1's block sum s is stored as a half: the min term m * s is exact only to half precision.
        ab = act.view(quants.FORMATS[9].layout)[0]
        wb = weights.view(quants.FORMATS[type_id].layout)
        tolerance += 2.0**-11 * np.abs(wb["m"].astype(np.float64) * ab["s"].astype(np.float64)).sum(axis=1)
    assert (np.abs(got - expected) <= tolerance).all(), (got, expected, tolerance)


@pytest.mark.parametrize("type_id", [8, 12], ids=["Q8_0", "Q4_K"])
def test_vec_dot_error_within_ggml_bound(type_id):
    x1, x2 = ggml_test_vector(), ggml_test_vector(offset=1.0)
    dot = quants.vec_dot(quants.quantize(x1, type_id), quants.quantize_q8(x2, type_id), type_id)[0]
    exact = float(x1.astype(np.float64) @ x2.astype(np.float64))
    assert abs(dot - exact) / x1.size < 0.02  # MAX_DOT_PRODUCT_ERROR


# ---- shapes and errors -------------------------------------------------------------------------------------------


def test_accepted_data_forms():
    rng = np.random.default_rng(0)
    raw = random_blocks(12, 4, rng).reshape(2, -1)  # 2 rows of 512
    expected = quants.dequantize(raw, 12)
    np.testing.assert_array_equal(quants.dequantize(raw.ravel(), 12, cols=512), expected)
    np.testing.assert_array_equal(quants.dequantize(raw.tobytes(), 12, cols=512), expected)
    np.testing.assert_array_equal(quants.dequantize(raw.ravel(), 12), expected.reshape(1, -1))
    np.testing.assert_array_equal(quants.dequantize(raw[:, None, :], 12), expected)  # leading axes collapse
    np.testing.assert_array_equal(quants.dequantize(raw, "Q4_K"), expected)
    halves = rng.standard_normal((3, 4)).astype(np.float16)
    np.testing.assert_array_equal(quants.dequantize(halves, 1), halves.astype(F32))
    bf = np.array([[0x3F80, 0xC000]], np.uint16)  # bfloat16 bits of 1.0 and -2.0
    np.testing.assert_array_equal(quants.dequantize(bf, 30), [[1.0, -2.0]])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: quants.dequantize(b"\0" * 18, 99), "unknown ggml type id 99"),
        (lambda: quants.dequantize(b"\0" * 66, 16), "GGML type 16 (IQ2_XXS) is not supported by votive"),
        (lambda: quants.dequantize(b"\0" * 18, 4), "ggml type 4 (Q4_2) was removed"),
        (lambda: quants.dequantize(b"\0" * 20, 2), "Q4_0: a row of 20 bytes is not a whole number of 18-byte blocks"),
        (lambda: quants.dequantize(b"\0" * 36, 2, cols=48), "Q4_0: a row of 48 elements is not a whole number"),
        (lambda: quants.dequantize(b"\0" * 54, 2, cols=64), "Q4_0: 54 bytes are not whole rows of 64 elements"),
        (lambda: quants.dequantize(np.zeros((2, 36), np.uint8), 2, cols=32), "rows of 36 bytes do not hold 32"),
        (lambda: quants.dequantize(np.zeros(4, F32), 8), "Q8_0 data must be uint8 bytes, got an array of float32"),
        (lambda: quants.dequantize(np.zeros(4, F32), 1), "F16 data must be uint8 bytes or float16"),
        (lambda: quants.quantize(np.zeros(32), 2), "votive has no Q4_0 quantizer (it has: F32, F16, BF16, Q5_0, Q5_1, Q8_0"),
        (lambda: quants.quantize(np.zeros(100), 8), "Q8_0: a row of 100 elements is not a whole number of 32"),
        (lambda: quants.quantize(np.full(256, np.nan), 12), "cannot quantize to Q4_K: 256 values are NaN or inf"),
        (lambda: quants.quantize(np.full(1, 1e6), 1), "cannot store 1000000.0 (element 0) as F16"),
        (lambda: quants.quantize_q8(np.zeros(32), 0), "F32 has no quantized dot product"),
        (
            lambda: quants.vec_dot(np.zeros((1, 18), np.uint8), np.zeros(68, np.uint8), 2),
            "weight rows hold 32 elements but the activation is 1 row(s) of 64",
        ),
    ],
)
def test_errors_say_what_and_where(call, message):
    with pytest.raises(QuantError) as caught:
        call()
    assert message in str(caught.value)
    assert isinstance(caught.value, ValueError)

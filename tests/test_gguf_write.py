"""The GGUF writer: golden bytes, byte equality with gguf-py's GGUFWriter, exact round trips of the real models."""

from __future__ import annotations

import gguf
import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from votive.errors import WeightFileError
from votive.formats.gguf import GGUFFile
from votive.formats.gguf_write import write_gguf


def test_golden_bytes(tmp_path):
    path = write_gguf(tmp_path / "g.gguf", {"general.architecture": "t", "n": 5}, {"w": np.float32([1.0, 2.0])})
    expected = bytes.fromhex(
        "47475546"  # magic "GGUF"
        "03000000"  # version 3
        "0100000000000000"  # 1 tensor
        "0200000000000000"  # 2 metadata pairs
        "1400000000000000" + b"general.architecture".hex() +  # key: u64 length 20, bytes
        "08000000"  # value type STRING
        "0100000000000000" + b"t".hex() +  # the string "t"
        "0100000000000000" + b"n".hex() +  # key "n"
        "04000000"  # value type UINT32 (a Python int that fits)
        "05000000"  # 5
        "0100000000000000" + b"w".hex() +  # tensor name "w"
        "01000000"  # n_dims 1
        "0200000000000000"  # ne[0] = 2
        "00000000"  # ggml type F32
        "0000000000000000"  # offset 0 in the data section
        + "00" * 13  # header is 115 bytes: zero padding to 128
        + "0000803f" "00000040"  # 1.0, 2.0 as little-endian float32
        + "00" * 24  # the tensor padded to 32 bytes
    )  # fmt: skip
    assert path.read_bytes() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.gguf"]  # no temporary file left behind


def test_bytes_equal_gguf_py_writer(tmp_path):
    rng = np.random.default_rng(1)
    q4k = rng.integers(0, 256, (2, 2 * 144), dtype=np.uint8)  # two rows of two Q4_K blocks (512 elements)
    q8 = rng.integers(0, 256, (3, 34), dtype=np.uint8)
    bf16 = rng.integers(0, 2**16, (2, 3), dtype=np.uint16)
    f16 = rng.standard_normal((4, 2, 3)).astype(np.float16)
    i32 = np.arange(5, dtype=np.int32)

    theirs = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(str(theirs), "llama")
    w.add_custom_alignment(64)
    w.add_uint32("llama.block_count", 2)
    w.add_float32("llama.rope.freq_base", 10000.0)
    w.add_bool("tokenizer.ggml.add_bos_token", False)
    w.add_uint16("u16", 9)
    w.add_int64("i64", -(2**40))
    w.add_float64("f64", 1 / 3)
    w.add_array("tokenizer.ggml.tokens", ["<s>", "é", "▁the"])
    w.add_array("tokenizer.ggml.token_type", [1, 3, 1])  # gguf-py writes int lists as i32
    w.add_key_value("scores", [0.0, -1.5, 2.25], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.FLOAT32)
    w.add_tensor("q4k", q4k, raw_dtype=GGMLQuantizationType.Q4_K)
    w.add_tensor("q8", q8, raw_dtype=GGMLQuantizationType.Q8_0)
    w.add_tensor("bf16", bf16, raw_dtype=GGMLQuantizationType.BF16)
    w.add_tensor("f16", f16)
    w.add_tensor("i32", i32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    ours = write_gguf(
        tmp_path / "ours.gguf",
        {
            "general.architecture": "llama",
            "general.alignment": 64,
            "llama.block_count": 2,
            "llama.rope.freq_base": 10000.0,
            "tokenizer.ggml.add_bos_token": False,
            "u16": np.uint16(9),
            "i64": -(2**40),
            "f64": np.float64(1 / 3),
            "tokenizer.ggml.tokens": ["<s>", "é", "▁the"],
            "tokenizer.ggml.token_type": [1, 3, 1],
            "scores": np.float32([0.0, -1.5, 2.25]),
        },
        {"q4k": ("Q4_K", q4k), "q8": (8, q8), "bf16": ("BF16", bf16), "f16": f16, "i32": i32},
        alignment=64,
    )
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("model", ["smollm_gguf", "gemma_gguf"])
def test_real_model_round_trips_byte_for_byte(request, tmp_path, model):
    src_path = request.getfixturevalue(model)
    src = GGUFFile(src_path)
    tensors = {name: (info.ggml_type, src[name]) for name, info in src.tensors.items()}
    out = write_gguf(tmp_path / "copy.gguf", src.metadata, tensors, metadata_types=src.metadata_types)
    assert out.stat().st_size == src_path.stat().st_size
    with open(out, "rb") as a, open(src_path, "rb") as b:
        while chunk := a.read(1 << 24):
            assert chunk == b.read(1 << 24)


def test_inferred_metadata_types(tmp_path):
    metadata = {
        "u32": 5,
        "i32": -5,
        "i64": 2**40,
        "u64": 2**63,
        "f32": 1.5,
        "bool": True,
        "str": "s",
        "arr[i32]": [1, -2],
        "arr[i64]": [2**40, 0],
        "arr[u64]": [2**64 - 1],
        "arr[str]": ("x", "y"),
        "arr[f32]": [0.5],
        "arr[bool]": [True, False],
        "u16": np.uint16(7),
        "arr[i8]": np.array([1, -2], np.int8),
        "f64": np.float64(0.25),
    }
    path = write_gguf(tmp_path / "m.gguf", metadata, {})
    f = GGUFFile(path)
    assert f.metadata_types == {key: key for key in metadata}
    ref = gguf.GGUFReader(str(path))
    assert ref.fields["u16"].types == [gguf.GGUFValueType.UINT16]
    assert ref.fields["arr[i8]"].contents() == [1, -2] and ref.fields["u64"].contents() == 2**63


def test_explicit_types_override_inference(tmp_path):
    path = write_gguf(
        tmp_path / "m.gguf",
        {"a": 3, "b": [1, 2], "c": [], "d": 2.0},
        {},
        metadata_types={"a": "i16", "b": "arr[u8]", "c": "arr[str]", "d": "f64"},
    )
    f = GGUFFile(path)
    assert f.metadata_types == {"a": "i16", "b": "arr[u8]", "c": "arr[str]", "d": "f64"}
    assert f.metadata["b"].tolist() == [1, 2] and f.metadata["c"] == [] and f.metadata["d"] == 2.0


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "m.gguf"
    path.write_bytes(b"user data")
    with pytest.raises(WeightFileError) as e:
        write_gguf(path, {"a": 1}, {})
    assert str(e.value) == f"{path}: already exists; pass overwrite=True to replace it"
    assert path.read_bytes() == b"user data"
    write_gguf(path, {"a": 1}, {}, overwrite=True)
    assert GGUFFile(path).metadata == {"a": 1}


def _q4_0_rows(n_bytes: int) -> np.ndarray:
    return np.zeros((2, n_bytes), np.uint8)


@pytest.mark.parametrize(
    "metadata, tensors, kwargs, error, message",
    [
        ({}, {}, {"alignment": 48}, ValueError, "alignment must be a power of two, got 48"),
        ({"general.alignment": 64}, {}, {}, ValueError, "metadata general.alignment is 64, alignment 32"),
        ({"a": 1}, {}, {"metadata_types": {"b": "u8"}}, ValueError, "metadata_types names keys not in metadata: ['b']"),
        ({"a": []}, {}, {}, ValueError,
         "metadata 'a' is an empty list; give its element type in metadata_types, e.g. 'arr[i32]'"),
        ({"a": [1, "x"]}, {}, {}, TypeError, "metadata 'a': array elements mix int, str; GGUF arrays hold one type"),
        ({"a": [[1]]}, {}, {}, TypeError,
         "metadata 'a': nested arrays are not supported (llama.cpp cannot read them)"),
        ({"a": None}, {}, {}, TypeError, "metadata 'a': NoneType has no GGUF type"),
        ({"a": 2**64}, {}, {}, ValueError, "metadata 'a': values must lie in [0, 18446744073709551615] for u64"),
        ({"a": [-1, 2**64 - 1]}, {}, {}, ValueError,
         "metadata 'a': values must lie in [0, 18446744073709551615] for u64"),
        ({"a": [None]}, {}, {}, TypeError, "metadata 'a': array elements of type NoneType have no GGUF type"),
        ({"a": 300}, {}, {"metadata_types": {"a": "u8"}}, ValueError,
         "metadata 'a': values must lie in [0, 255] for u8"),
        ({"a": 1.5}, {}, {"metadata_types": {"a": "i32"}}, TypeError,
         "metadata 'a': i32 values must be integers, got float"),
        ({"a": "x"}, {}, {"metadata_types": {"a": "f32"}}, TypeError,
         "metadata 'a': f32 values must be numbers, got str"),
        ({"a": 1}, {}, {"metadata_types": {"a": "bool"}}, TypeError,
         "metadata 'a': bool values must be True or False, got int"),
        ({"a": 1}, {}, {"metadata_types": {"a": "arr[u8]"}}, TypeError, "metadata 'a' is typed arr[u8] but holds int"),
        ({"a": 1}, {}, {"metadata_types": {"a": "u128"}}, ValueError,
         "metadata 'a': unknown type name 'u128' (known: u8, i8, u16, i16, u32, i32, f32, bool, str, u64, i64, f64, "
         "and arr[<one of those>])"),
        ({"a": np.zeros((2, 2), np.int32)}, {}, {}, TypeError,
         "metadata 'a': a metadata array must be 1-D of a GGUF numeric type, got int32 (2, 2)"),
        ({}, {"w": np.zeros(2, np.complex64)}, {}, TypeError,
         "tensor 'w': numpy complex64 has no GGML type; pass (type, array) for BF16 or quants"),
        ({}, {"w": ("Q4_0", _q4_0_rows(20))}, {}, ValueError,
         "tensor 'w': rows of 20 bytes are not whole 18-byte Q4_0 blocks"),
        ({}, {"w": ("Q4_0", np.zeros((2, 18), np.float32))}, {}, TypeError,
         "tensor 'w': Q4_0 data must be uint8 rows of bytes, got float32 (2, 18)"),
        ({}, {"w": ("F16", np.zeros(2, np.float32))}, {}, TypeError,
         "tensor 'w': F16 data must be float16, got float32"),
        ({}, {"w": ("Q9_9", np.zeros(2, np.uint8))}, {}, ValueError, "unknown ggml type 'Q9_9' (known: F32, F16, "),
        ({}, {"w": (1, 2, 3)}, {}, TypeError, "tensor 'w': expected an array or (ggml type, array), got a 3-tuple"),
        ({}, {"n" * 65: np.zeros(2, np.float32)}, {}, ValueError, f"tensor '{'n' * 65}': names are at most 64 bytes"),
        ({}, {"w": np.zeros((1, 1, 1, 1, 1), np.float32)}, {}, ValueError,
         "tensor 'w': shape (1, 1, 1, 1, 1) must have at most 4 dimensions, none of them zero"),
        ({}, {"w": np.zeros((0, 4), np.float32)}, {}, ValueError,
         "tensor 'w': shape (0, 4) must have at most 4 dimensions, none of them zero"),
    ],
)  # fmt: skip
def test_unwritable_inputs_are_refused_before_writing(tmp_path, metadata, tensors, kwargs, error, message):
    path = tmp_path / "m.gguf"
    with pytest.raises(error) as e:
        write_gguf(path, metadata, tensors, **kwargs)
    # A message ending in a space is only the start (the rest lists every known type).
    assert str(e.value).startswith(message) and (str(e.value) == message or message.endswith(" "))
    assert list(tmp_path.iterdir()) == []


def test_bf16_and_quantized_round_trip(tmp_path):
    block, nbytes = GGML_QUANT_SIZES[GGMLQuantizationType.Q6_K]
    q6k = np.random.default_rng(2).integers(0, 256, (3, 2, 2 * nbytes), dtype=np.uint8)
    bits = np.array([[0x3F80, 0xC000]], np.uint16)  # bfloat16 1.0, -2.0
    f = GGUFFile(write_gguf(tmp_path / "m.gguf", {}, {"q": ("Q6_K", q6k), "b": ("BF16", bits)}))
    assert f.tensors["q"].shape == (3, 2, 2 * block) and np.array_equal(f["q"], q6k)
    assert f.tensors["b"].shape == (1, 2) and np.array_equal(f["b"], bits)

"""The mmap GGUF reader: agreement with gguf-py's reader, the GGML type table, and hostile files.

gguf-py (llama.cpp's own Python package) is the independent reference: on the two real models and on files its
GGUFWriter writes, names, types, shapes, offsets, sizes, bytes and every metadata value must equal its reader's.
Hostile and minimal files are written field by field with `struct` (tests/gguf_bytes.py); every rejection is a
WeightFileError whose whole message is pinned here.
"""

from __future__ import annotations

import time

import gguf
import numpy as np
import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf_bytes import (
    ARRAY,
    BF16,
    BOOL,
    F16,
    F32,
    FLOAT32,
    INT8,
    Q4_0,
    Q4_K,
    STRING,
    UINT8,
    UINT32,
    UINT64,
    gguf_file,
    gstr,
    kv,
    kv_array,
    kv_scalar,
    kv_str,
    kv_u32,
    tensor_info,
)
from raw_safetensors import reaches_mmap

from votive.errors import WeightFileError
from votive.formats.gguf import VALUE_TYPE_NAMES, GGUFFile, StringArray, ValueType
from votive.quant.ggml_types import GGML_TYPES, GGMLType, ggml_type

# ---------------------------------------------------------------------------------------------------------------
# The GGML type table


def test_type_table_matches_gguf_py():
    theirs = {t.value: t for t in GGMLQuantizationType}
    assert set(GGML_TYPES) <= set(theirs)  # a newer gguf may know types added to ggml since our table was written
    for type_id, ours in GGML_TYPES.items():
        assert ours.name == theirs[type_id].name
        block = (ours.block_size, ours.block_bytes)
        if ours.name == "Q8_1":
            # gguf-py still has two float scales (40 bytes); ggml-common.h has two halves since 2024 (36).
            assert block == (32, 36) and GGML_QUANT_SIZES[theirs[type_id]] == (32, 40)
        else:
            assert block == GGML_QUANT_SIZES[theirs[type_id]], ours.name


def test_type_lookup_by_id_name_and_attribute():
    assert ggml_type(12) is ggml_type("Q4_K") is GGMLType.Q4_K is GGML_TYPES[12]
    assert GGMLType.BF16.dtype == np.dtype("<u2") and not GGMLType.BF16.quantized
    assert GGMLType.Q6_K.quantized and GGMLType.Q6_K.row_bytes(512) == 420


def test_type_lookup_names_unknown_and_removed_types():
    with pytest.raises(ValueError, match=r"^unknown ggml type id 99 \(known ids: 0, 1, 2, 3, 6, "):
        ggml_type(99)
    with pytest.raises(ValueError) as e:
        ggml_type(31)
    assert str(e.value) == "ggml type 31 (Q4_0_4_4) was removed from ggml; re-quantize with a current llama.cpp"
    with pytest.raises(ValueError, match=r"^unknown ggml type 'Q9_K' \(known: F32, F16, Q4_0, "):
        ggml_type("Q9_K")
    with pytest.raises(ValueError) as e:
        GGMLType.Q4_K.row_bytes(640)
    assert str(e.value) == "a Q4_K row of 640 elements is not a whole number of 256-element blocks"


# ---------------------------------------------------------------------------------------------------------------
# The two real models against gguf-py


@pytest.fixture(scope="module", params=["smollm_gguf", "gemma_gguf"])
def real(request):
    """(our file, gguf-py's reader) for one real model; gguf-py takes ~12 s on Gemma's 262144 tokens, so once."""
    path = request.getfixturevalue(request.param)
    return GGUFFile(path), gguf.GGUFReader(path)


def _their_type_name(field) -> str:
    names = [VALUE_TYPE_NAMES[ValueType(int(t))] for t in field.types]
    return f"arr[{names[1]}]" if names[0] == "arr" else names[0]


def test_real_metadata_matches_gguf_py(real):
    f, ref = real
    fields = {k: v for k, v in ref.fields.items() if not k.startswith("GGUF.")}  # gguf-py's header pseudo-keys
    assert list(f.metadata) == list(fields)
    assert f.version == ref.fields["GGUF.version"].contents()
    assert f.alignment == ref.alignment and f.data_offset == ref.data_offset
    for key, field in fields.items():
        ours, theirs = f.metadata[key], field.contents()
        assert f.metadata_types[key] == _their_type_name(field), key
        if isinstance(ours, np.ndarray):
            assert not ours.flags.writeable and ours.tolist() == theirs, key
        elif isinstance(ours, StringArray):
            assert ours.tolist() == theirs, key
        else:
            assert ours == theirs and type(ours) is type(theirs), key


def test_real_tensors_match_gguf_py(real):
    f, ref = real
    assert list(f.tensors) == [t.name for t in ref.tensors]
    for t in ref.tensors:
        info, view = f.tensors[t.name], f[t.name]
        assert info.ggml_type.id == t.tensor_type
        assert info.shape == tuple(reversed(t.shape.tolist()))
        assert (info.offset, info.nbytes) == (t.data_offset, t.n_bytes)
        assert view.shape == info.view_shape == t.data.shape and view.dtype == t.data.dtype, t.name
        ours, theirs = view.reshape(-1).view(np.uint8), np.asarray(t.data).reshape(-1).view(np.uint8)
        assert np.array_equal(ours[:256], theirs[:256]) and np.array_equal(ours[-256:], theirs[-256:]), t.name


def test_real_views_are_zero_copy_read_only_and_at_their_offsets(real):
    f, _ = real
    base = np.frombuffer(f._map, np.uint8, count=1).ctypes.data
    for name, info in f.tensors.items():
        view = f[name]
        assert reaches_mmap(view) and not view.flags.writeable, name
        assert view.ctypes.data - base == info.offset and view.nbytes == info.nbytes, name


def test_real_hyperparameters(smollm_gguf, gemma_gguf):
    smollm, gemma = GGUFFile(smollm_gguf), GGUFFile(gemma_gguf)
    assert (smollm.architecture, smollm.require("llama.block_count", int)) == ("llama", 30)
    assert (gemma.architecture, gemma.require("gemma3.block_count", int)) == ("gemma3", 18)
    assert gemma.require("gemma3.rope.freq_base", float) == 1e6
    assert gemma.tensors["token_embd.weight"].shape == (262144, 640)
    assert gemma.tensors["token_embd.weight"].ggml_type is GGMLType.Q8_0
    assert smollm.tensors["blk.0.ffn_down.weight"].shape == (576, 1536)  # ne = [1536, 576]
    assert smollm["blk.0.ffn_down.weight"].shape == (576, 1536 // 32 * 20)  # rows of Q4_1 blocks


def test_opening_leaves_token_strings_undecoded(gemma_gguf):
    # The cold-start design: open walks the 262144 token strings but decodes none; first use decodes them all.
    start = time.perf_counter()
    f = GGUFFile(gemma_gguf)
    seconds = time.perf_counter() - start
    tokens = f.metadata["tokenizer.ggml.tokens"]
    assert isinstance(tokens, StringArray) and tokens._items is None and len(tokens) == 262144
    assert seconds < 1.0  # ~20 ms on a laptop core; only catches a parse that went quadratic or eager
    assert tokens[2] == "<bos>" and tokens._items is not None
    decoded = tokens._items
    assert tokens.tolist() == decoded and tokens.tolist() is not decoded and tokens._items is decoded
    scores = f.metadata["tokenizer.ggml.scores"]
    assert scores.dtype == np.float32 and scores.shape == (262144,) and reaches_mmap(scores)


# ---------------------------------------------------------------------------------------------------------------
# Files gguf-py's writer makes: every value type, many tensor types, a custom alignment


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    path = tmp_path_factory.mktemp("gguf") / "all.gguf"
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), "test")
    w.add_custom_alignment(64)
    w.add_uint8("t.u8", 255)
    w.add_int8("t.i8", -128)
    w.add_uint16("t.u16", 65535)
    w.add_int16("t.i16", -32768)
    w.add_uint32("t.u32", 2**32 - 1)
    w.add_int32("t.i32", -(2**31))
    w.add_float32("t.f32", 0.1)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓")
    w.add_uint64("t.u64", 2**64 - 1)
    w.add_int64("t.i64", -(2**63))
    w.add_float64("t.f64", 0.1)
    w.add_array("t.arr_str", ["a", "", "ü", "<0x0A>"])
    w.add_array("t.arr_i32", [1, -2, 3])
    w.add_array("t.arr_f32", [0.5, -1.25])
    w.add_array("t.arr_bool", [True, False])
    w.add_key_value("t.arr_u64", [2**64 - 1, 0], gguf.GGUFValueType.ARRAY, sub_type=gguf.GGUFValueType.UINT64)
    tensors = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal((2, 3, 4)).astype(np.float16),
        "f64": rng.standard_normal(7),
        "i8": rng.integers(-128, 128, (2, 2, 2, 2), dtype=np.int8),
        "i16": rng.integers(-(2**15), 2**15, 9, dtype=np.int16),
        "i32": rng.integers(-(2**31), 2**31, (4, 1), dtype=np.int32),
        "i64": rng.integers(-(2**63), 2**63, 3, dtype=np.int64),
    }
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    quantized = {  # name: (type, logical shape in numpy order)
        "q4_0": (GGMLQuantizationType.Q4_0, (3, 64)),
        "q4_k": (GGMLQuantizationType.Q4_K, (2, 512)),
        "q6_k": (GGMLQuantizationType.Q6_K, (2, 3, 256)),
        "q8_0": (GGMLQuantizationType.Q8_0, (32,)),
    }
    for name, (qtype, shape) in quantized.items():
        block, nbytes = GGML_QUANT_SIZES[qtype]
        raw = rng.integers(0, 256, shape[:-1] + (shape[-1] // block * nbytes,), dtype=np.uint8)
        tensors[name] = raw
        w.add_tensor(name, raw, raw_dtype=qtype)  # gguf-py takes quantized data as rows of bytes, as we give it
    tensors["bf16"] = rng.integers(0, 2**16, (5, 3), dtype=np.uint16)
    w.add_tensor("bf16", tensors["bf16"], raw_dtype=GGMLQuantizationType.BF16)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path, tensors


def test_written_file_matches_gguf_py_and_the_values_written(written):
    path, tensors = written
    f, ref = GGUFFile(path), gguf.GGUFReader(str(path))
    assert f.alignment == 64 and f.data_offset % 64 == 0
    expected = {
        "general.architecture": "test",
        "general.alignment": 64,
        "t.u8": 255,
        "t.i8": -128,
        "t.u16": 65535,
        "t.i16": -32768,
        "t.u32": 2**32 - 1,
        "t.i32": -(2**31),
        "t.f32": float(np.float32(0.1)),
        "t.bool": True,
        "t.str": "héllo ✓",
        "t.u64": 2**64 - 1,
        "t.i64": -(2**63),
        "t.f64": 0.1,
        "t.arr_str": ["a", "", "ü", "<0x0A>"],
        "t.arr_i32": [1, -2, 3],
        "t.arr_f32": [0.5, -1.25],
        "t.arr_bool": [True, False],
        "t.arr_u64": [2**64 - 1, 0],
    }
    got = {k: v.tolist() if isinstance(v, (np.ndarray, StringArray)) else v for k, v in f.metadata.items()}
    assert got == expected
    assert [f.metadata_types[k] for k in expected][2:] == [
        "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "u64", "i64", "f64",
        "arr[str]", "arr[i32]", "arr[f32]", "arr[bool]", "arr[u64]",
    ]  # fmt: skip
    assert f.metadata["t.arr_bool"].dtype == np.bool_
    for key, field in ref.fields.items():
        if not key.startswith("GGUF."):
            assert f.metadata_types[key] == _their_type_name(field), key
    for t in ref.tensors:
        info = f.tensors[t.name]
        assert (info.ggml_type.id, info.offset, info.nbytes) == (t.tensor_type, t.data_offset, t.n_bytes)
        assert info.offset % 64 == 0
        assert np.array_equal(f[t.name], tensors[t.name]) and f[t.name].dtype == tensors[t.name].dtype, t.name
    assert f.tensors["q6_k"].shape == (2, 3, 256) and f["q6_k"].shape == (2, 3, 210)
    assert f.tensors["bf16"].shape == f["bf16"].shape == (5, 3) and f["bf16"].dtype == np.uint16


# ---------------------------------------------------------------------------------------------------------------
# The smallest legal files


def _write(tmp_path, raw: bytes, name="m.gguf"):
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def test_smallest_file_has_no_keys_and_no_tensors(tmp_path):
    raw = gguf_file(pad=False)
    assert len(raw) == 24
    f = GGUFFile(_write(tmp_path, raw))
    assert (f.version, f.metadata, f.tensors, f.alignment, f.data_offset) == (3, {}, {}, 32, 32)
    assert gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors == []


def test_one_tensor_file_and_version_2(tmp_path):
    data = np.arange(8, dtype=np.float32)
    raw = gguf_file([kv_str("general.architecture", "x")], [tensor_info("w", [4, 2], F32, 0)], data.tobytes(),
                    version=2)  # fmt: skip
    f = GGUFFile(_write(tmp_path, raw))
    assert f.version == 2 and f.architecture == "x"
    assert f.tensors["w"].shape == (2, 4) and f.tensors["w"].offset == 128 and f.data_offset == 128
    assert np.array_equal(f["w"], data.reshape(2, 4))


def test_empty_strings_and_arrays(tmp_path):
    # gguf-py's writer skips empty strings and refuses empty arrays, but the format allows both, as does llama.cpp.
    raw = gguf_file([kv_str("blank", ""), kv_array("none", UINT32, []), kv_array("no_words", STRING, [])])
    f = GGUFFile(_write(tmp_path, raw))
    assert f.metadata["blank"] == "" and f.metadata["none"].tolist() == [] and f.metadata["no_words"] == []
    assert f.metadata_types == {"blank": "str", "none": "arr[u32]", "no_words": "arr[str]"}


def test_scalar_tensor_with_zero_dimensions(tmp_path):
    # n_dims 0 is a one-element scalar in llama.cpp (every ne defaults to 1); numpy's shape for it is ().
    raw = gguf_file([], [tensor_info("s", [], F32, 0)], np.float32(2.5).tobytes())
    f = GGUFFile(_write(tmp_path, raw))
    assert f.tensors["s"].shape == () and f["s"][()] == 2.5


def test_trailing_bytes_and_padding_after_the_last_tensor_are_allowed(tmp_path):
    raw = gguf_file([], [tensor_info("w", [2], F16, 0)], np.ones(2, np.float16).tobytes() + bytes(30) + b"tail")
    assert GGUFFile(_write(tmp_path, raw))["w"].tolist() == [1.0, 1.0]


def test_tensors_may_leave_gaps_between_them(tmp_path):
    infos = [tensor_info("a", [4], F32, 0), tensor_info("b", [4], F32, 64)]
    data = np.arange(4, dtype=np.float32).tobytes() + bytes(48) + np.ones(4, np.float32).tobytes()
    f = GGUFFile(_write(tmp_path, gguf_file([], infos, data)))
    assert f["a"].tolist() == [0, 1, 2, 3] and f["b"].tolist() == [1, 1, 1, 1]


# ---------------------------------------------------------------------------------------------------------------
# Hostile files: each breaks one rule, and the message says which


def _valid_kvs():
    return [kv_str("general.architecture", "x")]


def _one_tensor(ne=(32,), ggml=F32, offset=0, data=None, **kw):
    nbytes = GGML_TYPES[ggml].row_bytes(ne[0]) * int(np.prod(ne[1:], dtype=object))
    return gguf_file(_valid_kvs(), [tensor_info("w", list(ne), ggml, offset)], bytes(nbytes) if data is None else data,
                     **kw)  # fmt: skip


LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n"

HOSTILE = {
    "empty file": (b"", "file is 0 bytes, too short for the 24-byte GGUF header"),
    "truncated header": (b"GGUF\x03\x00\x00\x00\x00\x00", "file is 10 bytes, too short for the 24-byte GGUF header"),
    "bad magic": (gguf_file(magic=b"GGML"), "not a GGUF file: starts with b'GGML', expected b'GGUF'"),
    "safetensors file": (
        b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + bytes(20),
        "not a GGUF file: starts with b'\\x10\\x00\\x00\\x00', expected b'GGUF'",
    ),
    "git lfs pointer": (
        LFS_POINTER,
        "this is a Git LFS pointer, not the weights; fetch the real file with `git lfs pull` or download it from "
        "the Hub",
    ),
    "version 0": (gguf_file(version=0), "GGUF version 0 is not a valid version (expected 2 or 3)"),
    "version 1": (
        gguf_file(version=1),
        "GGUF version 1 is not supported (it predates 64-bit counts); convert the model with a current tool",
    ),
    "version 4": (gguf_file(version=4), "GGUF version 4 is newer than this reader supports (2 or 3)"),
    "big-endian": (
        gguf_file(version=0x03000000),
        "big-endian GGUF (version 3 stored byte-swapped); only little-endian files are supported",
    ),
    "key count beyond the file": (
        gguf_file(_valid_kvs(), n_kv=2**40),
        "header claims 1099511627776 metadata keys, more than the 96-byte file can hold",
    ),
    "key count one too many": (
        gguf_file(_valid_kvs(), n_kv=2, pad=False),
        "metadata key #1 length runs past the end of the file (needs 8 bytes at byte 65 of 65)",
    ),
    "tensor count beyond the file": (
        gguf_file(n_tensors=2**63),
        "header claims 9223372036854775808 tensors, more than the 32-byte file can hold",
    ),
    "key longer than GGUF allows": (
        gguf_file([gstr("k", length=70000)]),
        "metadata key #0 is 70000 bytes long, more than the 65535 GGUF allows",
    ),
    "key past the end": (
        gguf_file([gstr("k" * 20, length=1000)], pad=False),
        "metadata key #0 (1000 bytes) runs past the end of the file (needs 1000 bytes at byte 32 of 52)",
    ),
    "empty key": (gguf_file([kv_u32("", 1)]), "metadata key #0 is empty"),
    "key not UTF-8": (
        gguf_file([kv(b"\xff\xfe", UINT32, b"\x01\x00\x00\x00")]),
        "metadata key #0 at byte 32 is not valid UTF-8 (byte 0 of it)",
    ),
    "duplicate key": (gguf_file([kv_u32("a", 1), kv_u32("a", 2)]), "metadata key 'a' appears twice"),
    "unknown value type": (gguf_file([kv("a", 13, b"\x00")]), "metadata 'a' has unknown value type 13 (known: 0-12)"),
    "value past the end": (
        gguf_file([kv("a", UINT64, b"\x01\x02")], pad=False),
        "metadata 'a' runs past the end of the file (needs 8 bytes at byte 37 of 39)",
    ),
    "string length past the end": (
        gguf_file([kv("name", STRING, gstr("abc", length=2**63))]),
        "metadata 'name' (9223372036854775808 bytes) runs past the end of the file "
        "(needs 9223372036854775808 bytes at byte 48 of 64)",
    ),
    "string not UTF-8": (
        gguf_file([kv_str("name", b"caf\xe9")]),
        "metadata 'name' at byte 48 is not valid UTF-8 (byte 3 of it)",
    ),
    "bool stored as 2": (gguf_file([kv_scalar("b", BOOL, 2)]), "metadata 'b' is a bool stored as 2, expected 0 or 1"),
    "bool array holding 7": (
        gguf_file([kv_array("b", BOOL, [1, 0, 7])]),
        "metadata 'b': bool array holds 7 at index 2, expected 0 or 1",
    ),
    "array of unknown type": (
        gguf_file([kv("a", ARRAY, b"\x63\x00\x00\x00" + bytes(8))]),
        "metadata 'a' is an array of unknown value type 99 (known: 0-12)",
    ),
    "array of arrays": (
        gguf_file([kv("a", ARRAY, b"\x09\x00\x00\x00" + b"\x01" + bytes(7))]),
        "metadata 'a' is an array of arrays, which llama.cpp does not read either",
    ),
    "numeric array longer than the file": (
        gguf_file([kv_array("a", UINT32, [1, 2], count=2**62)]),
        "metadata 'a': array of 4611686018427387904 u32 runs past the end of the file",
    ),
    "string array longer than the file": (
        gguf_file([kv_array("a", STRING, ["x"], count=2**40)]),
        "metadata 'a': array of 1099511627776 strings runs past the end of the file",
    ),
    "string array whose last string runs past the end": (
        gguf_file([kv("a", ARRAY, b"\x08\x00\x00\x00" + (2).to_bytes(8, "little") + gstr("ab") + gstr("c", 99))],
                  pad=False),  # fmt: skip
        "metadata 'a': array of 2 strings starting at byte 49 runs past the end of the file",
    ),
    "string array with a length field cut off": (
        gguf_file([kv("a", ARRAY, b"\x08\x00\x00\x00" + (2).to_bytes(8, "little") + gstr("a" * 16) + b"\x01")],
                  pad=False),  # fmt: skip
        "metadata 'a': array of 2 strings starting at byte 49 runs past the end of the file",
    ),
    "string array with a 2**64 - 1 length": (
        gguf_file([kv("a", ARRAY, b"\x08\x00\x00\x00" + (2).to_bytes(8, "little") + gstr("a" * 16, 2**64 - 1))]),
        "metadata 'a': array of 2 strings starting at byte 49 runs past the end of the file",
    ),
    "alignment zero": (
        gguf_file([kv_u32("general.alignment", 0)]),
        "general.alignment is 0, expected a power of two",
    ),
    "alignment not a power of two": (
        gguf_file([kv_u32("general.alignment", 48)]),
        "general.alignment is 48, expected a power of two",
    ),
    "alignment of the wrong type": (
        gguf_file([kv_scalar("general.alignment", UINT64, 32)]),
        "general.alignment is u64, expected u32",
    ),
    "tensor name longer than 64 bytes": (
        gguf_file([], [tensor_info("n" * 65, [32], F32, 0)], bytes(128)),
        "tensor #0 name is 65 bytes long, more than the 64 GGUF allows",
    ),
    "tensor name not UTF-8": (
        gguf_file([], [tensor_info(b"w\xc3", [32], F32, 0)], bytes(128)),
        "tensor #0 name at byte 32 is not valid UTF-8 (byte 1 of it)",
    ),
    "duplicate tensor name": (
        gguf_file([], [tensor_info("w", [32], F32, 0), tensor_info("w", [32], F32, 128)], bytes(256)),
        "tensor name 'w' appears twice",
    ),
    "five dimensions": (
        gguf_file([], [tensor_info("w", [1, 1, 1, 1, 1], F32, 0)], bytes(32)),
        "tensor 'w' has 5 dimensions, more than the 4 GGUF allows",
    ),
    "a million dimensions": (
        gguf_file([], [tensor_info("w", [1], F32, 0, n_dims=1_000_000)], bytes(32)),
        "tensor 'w' has 1000000 dimensions, more than the 4 GGUF allows",
    ),
    "zero dimension": (
        _one_tensor(ne=(32, 0)),
        "tensor 'w' has a zero dimension (ne = [32, 0]); GGUF tensors cannot be empty",
    ),
    "dimensions cut off": (
        gguf_file([], [gstr("w" * 20) + b"\x02\x00\x00\x00" + bytes(8)], pad=False),
        f"tensor '{'w' * 20}' dimensions runs past the end of the file (needs 16 bytes at byte 56 of 64)",
    ),
    "dimensions whose uint64 product wraps to zero": (
        _one_tensor(ne=(2**32, 2**32), data=b""),
        "tensor 'w' (F32 (4294967296, 4294967296)) needs 73786976294838206464 bytes at byte 128, past the end "
        "of the 128-byte file",
    ),
    "dimension of 2**63": (
        _one_tensor(ne=(2**63,), data=bytes(64)),
        "tensor 'w' (F32 (9223372036854775808,)) needs 36893488147419103232 bytes at byte 128, past the end "
        "of the 192-byte file",
    ),
    "row not a whole number of blocks": (
        gguf_file([], [tensor_info("w", [33, 2], Q4_0, 0)], bytes(64)),
        "tensor 'w': rows of 33 elements are not a whole number of 32-element Q4_0 blocks",
    ),
    "unknown tensor type": (
        gguf_file([], [tensor_info("w", [32], 99, 0)], bytes(128)),
        "tensor 'w' has unknown ggml type 99",
    ),
    "removed tensor type": (
        gguf_file([], [tensor_info("w", [32], 31, 0)], bytes(128)),
        "tensor 'w' has ggml type 31 (Q4_0_4_4), which ggml has removed",
    ),
    "offset not aligned": (
        _one_tensor(offset=16, data=bytes(160)),
        "tensor 'w' data offset 16 is not a multiple of 32",
    ),
    "offset not aligned to a custom alignment": (
        gguf_file([kv_u32("general.alignment", 64)], [tensor_info("w", [8], F32, 32)], bytes(64), alignment=64),
        "tensor 'w' data offset 32 is not a multiple of 64",
    ),
    "tensors overlapping": (
        gguf_file([], [tensor_info("a", [32], F32, 0), tensor_info("b", [32], F32, 64)], bytes(256)),
        "tensor 'b' starts at data byte 64, before the end of 'a' (data bytes 0-128): tensors must be stored in "
        "order, without overlap",
    ),
    "tensors out of order": (
        gguf_file([], [tensor_info("a", [8], F32, 32), tensor_info("b", [8], F32, 0)], bytes(64)),
        "tensor 'b' starts at data byte 0, before the end of 'a' (data bytes 32-64): tensors must be stored in "
        "order, without overlap",
    ),
    "tensor data truncated": (
        _one_tensor(ne=(32, 4), data=bytes(500)),
        "tensor 'w' (F32 (4, 32)) needs 512 bytes at byte 128, past the end of the 628-byte file",
    ),
    "quantized tensor past the end": (
        _one_tensor(ne=(256, 2), ggml=Q4_K, offset=32, data=bytes(288)),
        "tensor 'w' (Q4_K (2, 256)) needs 288 bytes at byte 160, past the end of the 416-byte file",
    ),
    "no data section at all": (
        gguf_file([], [tensor_info("w", [8], BF16, 0)], pad=False),
        "tensor 'w' (BF16 (8,)) needs 16 bytes at byte 64, past the end of the 57-byte file",
    ),
    "tensor infos cut off": (
        gguf_file([], [tensor_info("w", [8], F32, 0)[:-3]], pad=False),
        "tensor 'w' offset runs past the end of the file (needs 8 bytes at byte 49 of 54)",
    ),
}


@pytest.mark.parametrize("raw, problem", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_file_is_rejected_with_its_reason(tmp_path, raw, problem):
    path = _write(tmp_path, raw)
    with pytest.raises(WeightFileError) as e:
        GGUFFile(path)
    assert e.value.problem == problem
    assert str(e.value) == f"{path}: {problem}"


def test_non_utf8_token_is_reported_when_the_strings_are_decoded(tmp_path):
    raw = gguf_file([kv_array("tokenizer.ggml.tokens", STRING, ["ok", "b\xe9".encode("latin-1")])])
    path = _write(tmp_path, raw)
    tokens = GGUFFile(path).metadata["tokenizer.ggml.tokens"]  # open only walks the lengths
    assert len(tokens) == 2
    with pytest.raises(WeightFileError) as e:
        tokens.tolist()
    assert str(e.value) == f"{path}: string 1 of the array at byte 69 is not valid UTF-8 (byte 1)"


def test_directories_and_missing_files_are_weight_file_errors(tmp_path):
    with pytest.raises(WeightFileError) as e:
        GGUFFile(tmp_path)
    assert e.value.problem == "not a regular file"
    with pytest.raises(WeightFileError) as e:
        GGUFFile(tmp_path / "absent.gguf")
    assert e.value.problem == "cannot read: No such file or directory"


# ---------------------------------------------------------------------------------------------------------------
# Metadata access


@pytest.fixture
def small(tmp_path):
    kvs = [
        kv_str("general.architecture", "llama"),
        kv_u32("llama.block_count", 2),
        kv_scalar("llama.rope.freq_base", FLOAT32, 10000.0),
        kv_scalar("flag", BOOL, 1),
        kv_scalar("tiny", INT8, -3),
        kv_array("ids", UINT8, [1, 2]),
        kv_array("words", STRING, ["a", "b"]),
    ]
    return GGUFFile(_write(tmp_path, gguf_file(kvs, [tensor_info("w", [4], F32, 0)], bytes(16))))


def test_require_and_get(small):
    assert small.architecture == "llama"
    assert small.require("llama.block_count") == 2 and small.require("llama.block_count", int) == 2
    assert small.require("llama.block_count", float) == 2.0
    assert small.require("llama.rope.freq_base", float) == 10000.0
    assert small.require("flag", bool) is True and small.require("tiny", int) == -3
    assert small.require("words", StringArray) == ["a", "b"] == small.metadata["words"]
    assert small.require("ids", np.ndarray).dtype == np.uint8
    assert small.get("absent") is None and small.get("absent", 7) == 7 and small.get("tiny") == -3


@pytest.mark.parametrize(
    "key, kind, problem",
    [
        ("llama.context_length", None, "missing metadata key 'llama.context_length'"),
        ("llama.context_length", int, "missing metadata key 'llama.context_length'"),
        ("general.architecture", int, "metadata key 'general.architecture' is str 'llama', expected int"),
        ("flag", int, "metadata key 'flag' is bool True, expected int"),
        ("llama.rope.freq_base", int, "metadata key 'llama.rope.freq_base' is f32 10000.0, expected int"),
        ("words", str, "metadata key 'words' is arr[str] StringArray(2 strings), expected str"),
    ],
)
def test_require_names_the_key_and_what_it_found(small, key, kind, problem):
    with pytest.raises(WeightFileError) as e:
        small.require(key, kind)
    assert e.value.problem == problem


def test_architecture_missing(tmp_path):
    f = GGUFFile(_write(tmp_path, gguf_file()))
    with pytest.raises(WeightFileError, match="missing metadata key 'general.architecture'$"):
        f.architecture


def test_tensor_mapping_protocol(small):
    assert list(small) == list(small.keys()) == ["w"] and len(small) == 1 and "w" in small and "x" not in small
    with pytest.raises(KeyError, match="no tensor named 'x'"):
        small["x"]


def test_string_array_behaves_like_a_tuple(small):
    words = small.metadata["words"]
    assert list(words) == ["a", "b"] and words[-1] == "b" and words[:1] == ["a"]
    assert words == ("a", "b") and words != ["a"] and words != "ab" and repr(words) == "StringArray(2 strings)"

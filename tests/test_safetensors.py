"""The mmap safetensors reader: agreement with the `safetensors` library, zero-copy views, and hostile files.

Hostile files are written byte by byte with `struct` (`write_raw` in tests/raw_safetensors.py), so each test
shows exactly what is on disk. Every rejection must be a WeightFileError whose whole message is pinned here.
"""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from raw_safetensors import entry, reaches_mmap, write_raw
from safetensors.numpy import load_file, save_file

from votive.errors import WeightFileError
from votive.formats.safetensors import MAX_HEADER_BYTES, MAX_NDIM, SafetensorsFile

# ---------------------------------------------------------------------------------------------------------------
# Agreement with the safetensors library


# Every dtype safetensors.numpy can write; BF16 has no numpy dtype and is tested in test_weights.py.
NUMPY_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "C64": np.complex64,
    "I64": np.int64,
    "U64": np.uint64,
    "I32": np.int32,
    "U32": np.uint32,
    "I16": np.int16,
    "U16": np.uint16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def golden_tensors() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for name, dtype in NUMPY_DTYPES.items():
        if dtype is np.bool_:
            out[name] = rng.integers(0, 2, size=(3, 5)).astype(bool)
        elif np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            out[name] = rng.integers(info.min, info.max, size=(2, 3, 4), dtype=dtype, endpoint=True)
        elif dtype is np.complex64:
            out[name] = (rng.standard_normal(7) + 1j * rng.standard_normal(7)).astype(dtype)
        else:
            out[name] = (rng.standard_normal((4, 6)) * 100).astype(dtype)
    out["scalar"] = np.array(3.5, dtype=np.float32)  # shape ()
    out["empty"] = np.zeros((0, 4), dtype=np.float32)  # zero elements
    out["special"] = np.array([np.inf, -np.inf, -0.0, np.finfo(np.float32).tiny], dtype=np.float32)
    return out


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    path = tmp_path_factory.mktemp("golden") / "golden.safetensors"
    tensors = golden_tensors()
    save_file(tensors, str(path), metadata={"format": "np", "note": "votive golden"})
    return path, tensors


def test_golden_file_matches_safetensors_library(golden):
    path, written = golden
    f = SafetensorsFile(path)
    theirs = load_file(str(path))
    assert sorted(f.keys()) == sorted(theirs) == sorted(written)
    for name, expected in theirs.items():
        ours = f[name]
        assert ours.dtype == expected.dtype == written[name].dtype, name
        assert ours.shape == expected.shape == written[name].shape, name
        assert ours.tobytes() == expected.tobytes() == written[name].tobytes(), name  # bit-exact, NaN-safe
        assert f.info[name].dtype == (name if name in NUMPY_DTYPES else "F32"), name
    assert f.metadata == {"format": "np", "note": "votive golden"}
    assert len(f) == len(written) and "F32" in f and "nope" not in f


def test_views_are_read_only_and_share_the_mapping(golden):
    path, _ = golden
    f = SafetensorsFile(path)
    whole = np.frombuffer(f._map, dtype=np.uint8)
    for name in f.keys():
        view = f[name]
        assert view.flags.writeable is False, name
        assert reaches_mmap(view), name
        if view.size:
            assert np.shares_memory(view, whole), name
    with pytest.raises(ValueError, match="read-only"):
        f["F32"][0, 0] = 1.0


def test_view_keeps_mapping_alive_after_file_object_is_dropped(golden):
    path, written = golden
    view = SafetensorsFile(path)["F64"]
    assert np.array_equal(view, written["F64"])


def test_missing_tensor_is_a_key_error_naming_it(golden):
    path, _ = golden
    with pytest.raises(KeyError) as e:
        SafetensorsFile(path)["nope"]
    assert e.value.args[0] == f"{path}: no tensor named 'nope'"


def test_real_minilm_checkpoint_matches_safetensors_library(minilm_dir):
    path = minilm_dir / "model.safetensors"
    f = SafetensorsFile(path)
    theirs = load_file(str(path))
    assert sorted(f.keys()) == sorted(theirs)
    assert len(theirs) > 50  # a real model, not an empty stand-in
    for name, expected in theirs.items():
        ours = f[name]
        assert ours.dtype == expected.dtype and ours.shape == expected.shape, name
        assert np.array_equal(ours, expected), name
        assert reaches_mmap(ours) and not ours.flags.writeable, name


# ---------------------------------------------------------------------------------------------------------------
# Legal edge cases


def test_smallest_legal_file_parses(tmp_path):
    f = SafetensorsFile(write_raw(tmp_path / "m.safetensors", "{}"))
    assert len(f) == 0 and f.metadata == {}


def test_header_padded_with_spaces_as_the_writers_do(tmp_path):
    path = write_raw(tmp_path / "m.safetensors", b"{}      ")
    assert path.stat().st_size == 16
    assert len(SafetensorsFile(path)) == 0


def test_leading_whitespace_and_null_metadata_are_accepted_like_the_reference(tmp_path):
    path = write_raw(tmp_path / "m.safetensors", ' \n{"__metadata__": null}')
    f = SafetensorsFile(path)
    assert f.metadata == {} and len(f) == 0
    assert load_file(str(path)) == {}


def test_zero_size_tensors_parse(tmp_path):
    data = struct.pack("<2f", 1.5, -2.0)
    header = {
        "first": entry("F32", [0], 0, 0),
        "w": entry("F32", [2], 0, 8),
        "middle": entry("I64", [3, 0], 8, 8),
        "last": entry("U8", [0, 0, 7], 8, 8),  # ends exactly at end of file
    }
    f = SafetensorsFile(write_raw(tmp_path / "m.safetensors", header, data))
    assert f["first"].shape == (0,) and f["middle"].shape == (3, 0) and f["last"].shape == (0, 0, 7)
    assert f["middle"].dtype == np.int64
    assert f["w"].tolist() == [1.5, -2.0]


def test_entries_in_any_order_and_unaligned_data_still_read_right(tmp_path):
    # Pad the header so the data starts 3 bytes past an 8-byte boundary: not aligned for F32, which numpy
    # handles (slowly) but must still read correctly. Header entries are listed out of offset order.
    header = json.dumps({"b": entry("F32", [1], 4, 8), "a": entry("I32", [1], 0, 4)})
    data = struct.pack("<i", -7) + struct.pack("<f", 0.25)
    f = SafetensorsFile(write_raw(tmp_path / "m.safetensors", header + " " * ((3 - len(header)) % 8), data))
    assert f.data_start % 8 == 3
    assert f["a"].tolist() == [-7] and f["b"].tolist() == [0.25]


def test_extra_keys_in_an_entry_are_ignored_like_the_reference(tmp_path):
    header = {"a": {**entry("U8", [1], 0, 1), "comment": "hi"}}
    assert SafetensorsFile(write_raw(tmp_path / "m.safetensors", header, b"\x05"))["a"].tolist() == [5]


def test_all_fp8_kinds_are_exposed_as_raw_bytes(tmp_path):
    names = ["F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ"]
    header = {n: entry(n, [2], 2 * i, 2 * i + 2) for i, n in enumerate(names)}
    f = SafetensorsFile(write_raw(tmp_path / "m.safetensors", header, bytes(range(10))))
    for i, n in enumerate(names):
        assert f[n].dtype == np.uint8 and f[n].tolist() == [2 * i, 2 * i + 1]


# ---------------------------------------------------------------------------------------------------------------
# Hostile files: each case is (id, how to build the bytes, the exact problem the message must state)

KNOWN = (
    "BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32, C64, "
    "F64, I64, U64"
)
ONE = {"a": entry("F32", [2], 0, 8)}  # a well-formed single tensor, to vary from
EIGHT = b"\0" * 8


def one(**changes) -> dict:
    return {"a": {**ONE["a"], **changes}}


def raw_bytes(b: bytes):
    return lambda p: p.write_bytes(b)


def header(h, data: bytes = b"", header_len=None):
    return lambda p: write_raw(p, h, data, header_len)


LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db\n"
    b"size 90868376\n"
)

HOSTILE = [
    ("empty file", raw_bytes(b""), "file is 0 bytes, too short for the 8-byte header length"),
    ("shorter than 8 bytes", raw_bytes(b"\x02\0\0\0\0"), "file is 5 bytes, too short for the 8-byte header length"),
    (
        "header length over the cap",
        header("{}", header_len=MAX_HEADER_BYTES + 1),
        f"header length {MAX_HEADER_BYTES + 1} exceeds the {MAX_HEADER_BYTES}-byte limit",
    ),
    (
        "header length near 2**64",
        raw_bytes(b"\xff" * 8 + b"{}"),
        f"header length {2**64 - 1} exceeds the {MAX_HEADER_BYTES}-byte limit",
    ),
    (
        "header past end of file",
        header("{}", header_len=100),
        "header length 100 runs past the end of the 10-byte file",
    ),
    (
        "LFS pointer",
        raw_bytes(LFS_POINTER),
        "this is a Git LFS pointer, not the weights; fetch the real file with `git lfs pull` "
        "or download it from the Hub",
    ),
    ("not UTF-8", header(b'{"\xff": 1}'), "header is not valid UTF-8 (byte 2)"),
    ("empty header", header(b""), "header is not a JSON object (it must start with '{')"),
    ("JSON array", header("[]"), "header is not a JSON object (it must start with '{')"),
    ("JSON string", header('"{}"'), "header is not a JSON object (it must start with '{')"),
    ("not JSON", header("{not json}"), (
        "header is not valid JSON: Expecting property name enclosed in double quotes at character 1"
    )),
    ("JSON then junk", header("{} x"), "header is not valid JSON: Extra data at character 3"),
    ("NUL padding", header(b"{}\0\0\0\0\0\0"), "header is not valid JSON: Extra data at character 2"),
    (
        "nesting too deep to parse",
        header('{"a":' + "[" * 100_000 + "]" * 100_000 + "}"),
        "header is not usable JSON: maximum recursion depth exceeded while decoding a JSON array from a unicode "
        "string",
    ),
    (
        "integer literal too long",
        header('{"a": {"dtype": "U8", "shape": [' + "9" * 5000 + '], "data_offsets": [0, 1]}}'),
        "header is not usable JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 "
        "digits; use sys.set_int_max_str_digits() to increase the limit",
    ),
    (
        "duplicate tensor names",
        header('{"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]}, '
               '"a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}}', b"xy"),
        "header names 'a' twice",
    ),
    ("entry not an object", header({"a": [1, 2]}), "tensor 'a': header entry is not an object"),
    (
        "entry without dtype",
        header({"a": {"shape": [1], "data_offsets": [0, 1]}}),
        "tensor 'a': header entry has no 'dtype'",
    ),
    ("unknown dtype", header(one(dtype="F17"), EIGHT), f"tensor 'a': unknown dtype 'F17' (known: {KNOWN})"),
    ("lowercase dtype", header(one(dtype="f32"), EIGHT), f"tensor 'a': unknown dtype 'f32' (known: {KNOWN})"),
    ("dtype not a string", header(one(dtype=["F32"]), EIGHT), f"tensor 'a': unknown dtype ['F32'] (known: {KNOWN})"),
    (
        "sub-byte dtype",
        header(one(dtype="F4"), EIGHT),
        "tensor 'a': dtype F4 packs elements below a byte; not supported",
    ),
    ("negative dim", header(one(shape=[-2]), EIGHT), "tensor 'a': shape [-2] is not a list of non-negative integers"),
    ("string dim", header(one(shape=["2"]), EIGHT), "tensor 'a': shape ['2'] is not a list of non-negative integers"),
    ("float dim", header(one(shape=[2.0]), EIGHT), "tensor 'a': shape [2.0] is not a list of non-negative integers"),
    ("bool dim", header(one(shape=[True]), EIGHT), "tensor 'a': shape [True] is not a list of non-negative integers"),
    ("shape not a list", header(one(shape=2), EIGHT), "tensor 'a': shape 2 is not a list of non-negative integers"),
    (
        "too many dims",
        header(one(shape=[1] * (MAX_NDIM + 1), data_offsets=[0, 4]), b"\0" * 4),
        f"tensor 'a': {MAX_NDIM + 1} dimensions, more than the {MAX_NDIM} numpy allows",
    ),
    (
        "dims too large for any array (zero-sized)",
        header(one(shape=[0, 2**62], data_offsets=[0, 0])),
        f"tensor 'a': shape (0, {2**62}) is too large for any array",
    ),
    (
        "offsets wrong length",
        header(one(data_offsets=[0, 4, 8]), EIGHT),
        "tensor 'a': data_offsets [0, 4, 8] is not [begin, end] with begin <= end",
    ),
    (
        "offsets begin > end",
        header(one(data_offsets=[8, 0]), EIGHT),
        "tensor 'a': data_offsets [8, 0] is not [begin, end] with begin <= end",
    ),
    (
        "negative offset",
        header(one(data_offsets=[-8, 0]), EIGHT),
        "tensor 'a': data_offsets [-8, 0] is not [begin, end] with begin <= end",
    ),
    (
        "float offset",
        header(one(data_offsets=[0, 8.0]), EIGHT),
        "tensor 'a': data_offsets [0, 8.0] is not [begin, end] with begin <= end",
    ),
    (
        "offsets not a list",
        header(one(data_offsets="0-8"), EIGHT),
        "tensor 'a': data_offsets '0-8' is not [begin, end] with begin <= end",
    ),
    (
        "byte span mismatch",
        header(one(shape=[3]), EIGHT),
        "tensor 'a': F32 (3,) needs 12 bytes but data_offsets span 8",
    ),
    (
        "gap at the start",
        header({"a": entry("U8", [4], 4, 8)}, EIGHT),
        "tensor 'a' starts at byte 4 but the data starts at 0: leaves a gap of 4 bytes",
    ),
    (
        "gap between tensors",
        header({"a": entry("U8", [2], 0, 2), "b": entry("U8", [4], 4, 8)}, EIGHT),
        "tensor 'b' starts at byte 4 but 'a' ends at 2: leaves a gap of 2 bytes",
    ),
    (
        "overlap",
        header({"a": entry("U8", [6], 0, 6), "b": entry("U8", [4], 4, 8)}, EIGHT),
        "tensor 'b' starts at byte 4 but 'a' ends at 6: overlaps it",
    ),
    (
        "two tensors on the same bytes",
        header({"a": entry("F32", [2], 0, 8), "b": entry("F32", [2], 0, 8)}, EIGHT),
        "tensor 'b' starts at byte 0 but 'a' ends at 8: overlaps it",
    ),
    ("trailing bytes", header(ONE, EIGHT + b"\0\0\0"), "3 trailing bytes: tensors end at data byte 8 of 11"),
    (
        "data truncated",
        header(ONE, b"\0" * 5),
        "file is truncated: tensors need 8 data bytes but only 5 follow the header",
    ),
    ("no tensors but data", header("{}", b"x"), "1 trailing bytes: tensors end at data byte 0 of 1"),
    (
        "metadata with a number",
        header({"__metadata__": {"epoch": 3}}),
        "__metadata__ must map strings to strings",
    ),
    ("metadata as a list", header({"__metadata__": []}), "__metadata__ must map strings to strings"),
    ("metadata as a string", header({"__metadata__": "x"}), "__metadata__ must map strings to strings"),
]


@pytest.mark.parametrize("build, problem", [c[1:] for c in HOSTILE], ids=[c[0] for c in HOSTILE])
def test_hostile_file_is_rejected_with_exact_message(tmp_path, build, problem):
    path = tmp_path / "hostile.safetensors"
    build(path)
    with pytest.raises(WeightFileError) as e:
        SafetensorsFile(path)
    assert e.value.problem == problem
    assert str(e.value) == f"{path}: {problem}"


def test_the_reference_library_refuses_every_hostile_case_but_duplicates(tmp_path):
    """Guard the table itself, so we are never stricter than the format by accident.

    The one deliberate difference: the reference keeps one of two same-named tensors; we refuse the file.
    """
    for name, build, _ in HOSTILE:
        if name == "duplicate tensor names":
            continue
        path = tmp_path / "ref.safetensors"
        build(path)
        with pytest.raises(Exception):
            load_file(str(path))


def test_missing_file(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(WeightFileError) as e:
        SafetensorsFile(path)
    assert str(e.value) == f"{path}: cannot read: No such file or directory"


def test_directory_and_fifo_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)  # opening this for reading would wait forever for a writer
    for path in (tmp_path, fifo):
        with pytest.raises(WeightFileError) as e:
            SafetensorsFile(path)
        assert str(e.value) == f"{path}: not a regular file"


# ------------------------------------------------------------------------------------------------ read-ahead
@pytest.mark.parametrize("spans, threads", [
    ([(0, 10_000), (10_000, 50_000), (90_001, 130_000)], 4),  # adjacent spans merge; a gap stays a gap
    ([(5, 6)], 4),  # one byte: one page, one share
    ([(4096 * 3, 4096 * 30 + 1), (0, 100)], 3),  # out of order; a byte past a page boundary takes that page
    ([(0, 4096 * 7)], 2),  # 7 pages in 2 shares: 4 and 3
    ([(10, 10), (20, 5)], 4),  # empty spans: nothing to read
])
def test_read_ahead_shares_cover_every_page_once(spans, threads):
    from votive.formats.safetensors import read_ahead_shares

    page = 4096
    shares = read_ahead_shares(spans, threads, page)
    wanted = {p for b, e in spans for p in range(b // page, -(-e // page)) if e > b}
    got = [p for share in shares for b, e in share for p in range(b // page, -(-e // page))]
    assert sorted(got) == sorted(wanted) and len(got) == len(set(got))
    assert len(shares) <= threads
    sizes = [sum(-(-(e - b) // page) for b, e in share) for share in shares]  # in pages
    assert len(set(sizes[:-1])) <= 1 and sizes[-1:] <= sizes[:1]  # equal shares, the last no larger (or none)
    assert all(share == sorted(share) for share in shares)


def test_read_ahead_reads_in_the_background_and_leaves_the_tensors_as_they_were(golden):
    import threading

    f = SafetensorsFile(golden[0])
    before = {name: f[name].copy() for name in f.keys()}
    f.read_ahead(list(f.keys()))
    for t in [t for t in threading.enumerate() if t.name == "votive-read-ahead"]:
        t.join(timeout=10)
        assert not t.is_alive()
    for name, value in before.items():
        np.testing.assert_array_equal(f[name], value)

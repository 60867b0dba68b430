"""WeightStore: zero-copy F32, once-only F16/BF16 widening, sharded checkpoints, and the errors around them."""

from __future__ import annotations

import json
import mmap
import struct
import sys

import numpy as np
import pytest
from raw_safetensors import entry, reaches_mmap, write_raw
from safetensors.numpy import load_file, save_file

from votive.errors import WeightFileError
from votive.formats.weights import SHARD_INDEX, WeightStore, bf16_to_f32

# BF16 values chosen to be exact in BF16 (8 significant bits), with their bit patterns worked out by hand:
# sign | 8 exponent bits | top 7 mantissa bits.
BF16_CASES = [
    (0x3F80, 1.0),
    (0xC020, -2.5),
    (0x4049, 3.140625),
    (0x0000, 0.0),
    (0x8000, -0.0),
    (0x7F80, np.inf),
    (0xFF80, -np.inf),
    (0x477F, 65280.0),
    (0x0080, 2.0**-126),  # smallest normal
    (0x0001, 2.0**-133),  # smallest subnormal
]


def write_bf16(path, name="w", bits=None, shape=None):
    """A one-tensor BF16 file, written from raw bits since numpy has no bfloat16."""
    bits = [b for b, _ in BF16_CASES] if bits is None else bits
    shape = [len(bits)] if shape is None else shape
    data = struct.pack(f"<{len(bits)}H", *bits)
    return write_raw(path, {name: entry("BF16", shape, 0, len(data))}, data)


@pytest.fixture
def mixed(tmp_path):
    """One file with F32, F16 and I64 tensors, written by the safetensors library."""
    rng = np.random.default_rng(1)
    tensors = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f16": rng.standard_normal((5, 2)).astype(np.float16),
        "ids": np.arange(6, dtype=np.int64).reshape(2, 3),
    }
    path = tmp_path / "model.safetensors"
    save_file(tensors, str(path))
    return path, tensors


def test_f32_is_a_view_not_a_copy(mixed):
    path, tensors = mixed
    store = WeightStore(path)
    w = store.get("f32")
    assert w.dtype == np.float32 and np.array_equal(w, tensors["f32"])
    assert reaches_mmap(w) and w.flags.writeable is False
    assert store.conversions == 0 and store.converted_bytes == 0


def test_f16_is_widened_once_and_counted(mixed):
    path, tensors = mixed
    store = WeightStore(path)
    first = store.get("f16")
    assert first.dtype == np.float32 and first.shape == (5, 2)
    assert np.array_equal(first, tensors["f16"].astype(np.float32))
    assert first.flags.writeable is False and not reaches_mmap(first)
    assert store.get("f16") is first
    assert store.conversions == 1 and store.converted_bytes == first.nbytes == 5 * 2 * 4
    store.get("f32")
    assert store.conversions == 1


def test_bf16_widened_values_match_hand_worked_bits(tmp_path):
    store = WeightStore(write_bf16(tmp_path / "m.safetensors"))
    raw = store.raw("w")
    assert raw.dtype == np.uint16 and reaches_mmap(raw) and raw.tolist() == [b for b, _ in BF16_CASES]
    out = store.get("w")
    assert out.dtype == np.float32 and out.flags.writeable is False
    assert out.tolist() == [v for _, v in BF16_CASES]
    assert [np.signbit(x) for x in out] == [np.signbit(v) for _, v in BF16_CASES]  # -0.0 keeps its sign
    assert store.get("w") is out and store.conversions == 1 and store.converted_bytes == out.nbytes


def test_bf16_matches_an_independent_byte_layout_for_every_pattern():
    every = np.arange(2**16, dtype=np.uint16)
    ours = bf16_to_f32(every)
    # Independent answer, built from bytes: a little-endian F32 whose low two bytes are zero and whose high two
    # bytes are the BF16's. Compared bit for bit, so every NaN payload (signalling ones too) must survive.
    f32_bytes = b"".join(b"\0\0" + struct.pack("<H", b) for b in range(2**16))
    assert ours.tobytes() == f32_bytes
    assert np.array_equal(ours, np.frombuffer(f32_bytes, dtype="<f4"), equal_nan=True)


def test_bf16_keeps_its_shape(tmp_path):
    store = WeightStore(write_bf16(tmp_path / "m.safetensors", bits=list(range(0x3F80, 0x3F86)), shape=[2, 3]))
    assert store.get("w", shape=(2, 3)).shape == (2, 3)


def test_counts_add_up_over_several_tensors(tmp_path, mixed):
    path, _ = mixed
    store = WeightStore(path)
    for _ in range(3):
        store.get("f16"), store.get("f32")
    assert store.conversions == 1
    other = WeightStore(write_bf16(tmp_path / "b.safetensors"))
    other.get("w")
    assert other.conversions == 1 and other.converted_bytes == 4 * len(BF16_CASES)


def test_non_float_tensor_asks_for_raw(mixed):
    path, tensors = mixed
    store = WeightStore(path)
    with pytest.raises(WeightFileError) as e:
        store.get("ids")
    assert str(e.value) == f"{path}: tensor 'ids' is I64; expected a float type (F32, F16, BF16)"
    assert np.array_equal(store.raw("ids"), tensors["ids"]) and store.dtype_of("ids") == "I64"


def test_shape_mismatch_names_both_shapes(mixed):
    path, _ = mixed
    store = WeightStore(path)
    assert store.get("f32", shape=[3, 4]).shape == (3, 4)
    with pytest.raises(WeightFileError) as e:
        store.get("f32", shape=(4, 3))
    assert str(e.value) == f"{path}: tensor 'f32' has shape (3, 4), expected (4, 3)"
    with pytest.raises(WeightFileError):  # checked before any conversion is made
        store.get("f16", shape=(2, 5))
    assert store.conversions == 0


def test_missing_tensor_is_named(mixed):
    path, _ = mixed
    store = WeightStore(path)
    for call in (store.get, store.raw, store.dtype_of):
        with pytest.raises(WeightFileError) as e:
            call("encoder.layer.99.weight")
        assert str(e.value) == f"{path}: missing tensor 'encoder.layer.99.weight'"
    assert "f32" in store and "nope" not in store and sorted(store.keys()) == ["f16", "f32", "ids"]


def test_real_minilm_folder_matches_safetensors_library(minilm_dir):
    store = WeightStore(minilm_dir)
    assert store.path == minilm_dir / "model.safetensors"
    theirs = load_file(str(minilm_dir / "model.safetensors"))
    assert sorted(store.keys()) == sorted(theirs)
    for name, expected in theirs.items():
        got = store.get(name) if expected.dtype == np.float32 else store.raw(name)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), name
        assert reaches_mmap(got), name
    assert store.conversions == 0
    store.advise_rows("embeddings.word_embeddings.weight")  # a hint only; must not fail


def test_token_table_is_marked_read_by_rows(minilm_dir):
    """An encoder's token table gets MADV_RANDOM (smaps: VmFlags rr) over its pages, the rest of the file not: a
    cold start's lookups then read only their rows' pages, not megabytes of read-around each."""
    import votive

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/smaps")
    model = votive.load(str(minilm_dir), backend="numpy")
    table = WeightStore(minilm_dir).raw("embeddings.word_embeddings.weight").nbytes
    target = str((minilm_dir / "model.safetensors").resolve())
    spans, current = [], None
    for line in open("/proc/self/smaps").read().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's first line: range, perms, offset, dev, inode, path
            lo, hi = (int(v, 16) for v in fields[0].split("-"))
            current = [hi - lo, False] if fields[-1] == target else None
            if current is not None:
                spans.append(current)
        elif current is not None and fields[0] == "VmFlags:":
            current[1] = "rr" in fields[1:]
    random = [size for size, rr in spans if rr]  # one per mapping of the file (other tests' models may hold theirs)
    assert random and all(table <= size <= table + 2 * mmap.PAGESIZE for size in random), spans
    assert any(not rr for _, rr in spans)  # the layers keep the default read-around
    assert model.embed(["still answers"]).shape == (1, 384)


# ---------------------------------------------------------------------------------------------------------------
# Folders


def test_missing_path(tmp_path):
    path = tmp_path / "absent.safetensors"
    with pytest.raises(WeightFileError) as e:
        WeightStore(path)
    assert str(e.value) == f"{path}: file not found"


def test_folder_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightFileError) as e:
        WeightStore(tmp_path)
    assert str(e.value) == f"{tmp_path}: no .safetensors weights in this folder"


def test_folder_with_several_files_and_no_index(tmp_path):
    for name in ("a.safetensors", "b.safetensors"):
        write_raw(tmp_path / name, "{}")
    with pytest.raises(WeightFileError) as e:
        WeightStore(tmp_path)
    assert str(e.value) == f"{tmp_path}: 2 .safetensors files but no {SHARD_INDEX} saying how they fit together"


def test_folder_with_one_oddly_named_file(tmp_path):
    write_bf16(tmp_path / "pytorch_model.safetensors")
    assert WeightStore(tmp_path).path == tmp_path / "pytorch_model.safetensors"


def test_folder_prefers_model_safetensors_over_strays(tmp_path):
    write_bf16(tmp_path / "model.safetensors")
    write_raw(tmp_path / "stray.safetensors", "{}")
    assert WeightStore(tmp_path).path == tmp_path / "model.safetensors"


# ---------------------------------------------------------------------------------------------------------------
# Sharded checkpoints


def write_sharded(folder, weight_map=None, extra_in_shard2=None):
    """Two shards and their index; returns the tensors written. weight_map overrides the true one."""
    shard1 = {"emb": np.arange(12, dtype=np.float32).reshape(3, 4), "norm": np.ones(4, dtype=np.float16)}
    shard2 = {"head": np.full((4, 2), 0.5, dtype=np.float32), **(extra_in_shard2 or {})}
    save_file(shard1, str(folder / "model-00001-of-00002.safetensors"))
    save_file(shard2, str(folder / "model-00002-of-00002.safetensors"))
    if weight_map is None:
        weight_map = {
            "emb": "model-00001-of-00002.safetensors",
            "norm": "model-00001-of-00002.safetensors",
            "head": "model-00002-of-00002.safetensors",
        }
    (folder / SHARD_INDEX).write_text(json.dumps({"metadata": {"total_size": 88}, "weight_map": weight_map}))
    return {**shard1, **shard2}


def test_sharded_checkpoint_loads_every_tensor(tmp_path):
    written = write_sharded(tmp_path)
    for where in (tmp_path, tmp_path / SHARD_INDEX):
        store = WeightStore(where)
        assert store.path == tmp_path / SHARD_INDEX
        assert sorted(store.keys()) == sorted(written)
        for name, expected in written.items():
            assert np.array_equal(store.get(name), expected.astype(np.float32)), name
        assert reaches_mmap(store.get("emb")) and reaches_mmap(store.get("head"))
        assert store.conversions == 1  # norm, the one F16 tensor
        assert store.get("emb", shape=(3, 4)).shape == (3, 4)


def sharded_error(folder) -> str:
    with pytest.raises(WeightFileError) as e:
        WeightStore(folder)
    return str(e.value)


S1, S2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"


def test_index_naming_a_missing_shard(tmp_path):
    write_sharded(tmp_path, weight_map={"emb": S1, "norm": S1, "head": "model-00003-of-00002.safetensors"})
    assert sharded_error(tmp_path) == (
        f"{tmp_path / SHARD_INDEX}: shard 'model-00003-of-00002.safetensors' named in the weight_map is missing"
    )


def test_tensor_missing_from_its_shard(tmp_path):
    write_sharded(tmp_path, weight_map={"emb": S1, "norm": S1, "head": S2, "lm_head": S2})
    assert sharded_error(tmp_path) == (
        f"{tmp_path / SHARD_INDEX}: tensor 'lm_head' is mapped to {S2} but that shard lacks it"
    )


def test_tensor_mapped_to_the_wrong_shard(tmp_path):
    write_sharded(tmp_path, weight_map={"emb": S1, "norm": S2, "head": S2})
    assert sharded_error(tmp_path) == (
        f"{tmp_path / SHARD_INDEX}: tensor 'norm' is mapped to {S2} but that shard lacks it"
    )


def test_tensor_in_a_shard_but_not_in_the_weight_map(tmp_path):
    write_sharded(tmp_path, weight_map={"emb": S1, "head": S2})
    assert sharded_error(tmp_path) == f"{tmp_path / SHARD_INDEX}: tensor 'norm' in {S1} is not in the weight_map"


def test_tensor_in_two_shards(tmp_path):
    write_sharded(tmp_path, extra_in_shard2={"emb": np.zeros((3, 4), dtype=np.float32)})
    assert sharded_error(tmp_path) == f"{tmp_path / SHARD_INDEX}: tensor 'emb' is in both {S1} and {S2}"


@pytest.mark.parametrize(
    "shard", ["../model-00001-of-00002.safetensors", "/etc/passwd", "sub\\x.safetensors", "..", ""]
)
def test_shard_name_that_is_a_path(tmp_path, shard):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    write_sharded(folder, weight_map={"emb": shard, "norm": S1, "head": S2})
    assert sharded_error(folder) == f"{folder / SHARD_INDEX}: tensor 'emb': shard name {shard!r} is not a file name"


def test_shard_name_that_is_not_a_string(tmp_path):
    write_sharded(tmp_path, weight_map={"emb": 1, "norm": S1, "head": S2})
    assert sharded_error(tmp_path) == f"{tmp_path / SHARD_INDEX}: tensor 'emb': shard name 1 is not a file name"


@pytest.mark.parametrize(
    "text, problem",
    [
        ("[]", "not a safetensors shard index: no 'weight_map' object"),
        ('{"metadata": {}}', "not a safetensors shard index: no 'weight_map' object"),
        ('{"weight_map": ["a"]}', "not a safetensors shard index: no 'weight_map' object"),
        ("{", "not a safetensors shard index (JSONDecodeError: Expecting property name enclosed in double quotes: "
              "line 1 column 2 (char 1))"),
        ("[" * 100_000, "not a safetensors shard index (RecursionError: maximum recursion depth exceeded while "
                        "decoding a JSON array from a unicode string)"),
    ],
    ids=["array", "no weight_map", "weight_map not an object", "not JSON", "too deep"],
)
def test_index_that_is_not_an_index(tmp_path, text, problem):
    write_sharded(tmp_path)
    (tmp_path / SHARD_INDEX).write_text(text)
    assert sharded_error(tmp_path) == f"{tmp_path / SHARD_INDEX}: {problem}"


def test_index_that_is_not_utf8(tmp_path):
    (tmp_path / SHARD_INDEX).write_bytes(b'{"weight_map": "\xff"}')
    assert sharded_error(tmp_path) == (
        f"{tmp_path / SHARD_INDEX}: not a safetensors shard index (UnicodeDecodeError: 'utf-8' codec can't decode "
        "byte 0xff in position 16: invalid start byte)"
    )


def test_missing_index_file(tmp_path):
    path = tmp_path / SHARD_INDEX
    with pytest.raises(WeightFileError) as e:
        WeightStore(path)
    assert str(e.value) == f"{path}: file not found"


def test_a_broken_shard_reports_the_shard(tmp_path):
    write_sharded(tmp_path)
    (tmp_path / S2).write_bytes(b"\0" * 4)
    assert sharded_error(tmp_path) == f"{tmp_path / S2}: file is 4 bytes, too short for the 8-byte header length"

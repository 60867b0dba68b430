"""Memory-mapped safetensors files: every tensor is a read-only numpy view into the mapping.

Format (https://github.com/huggingface/safetensors, README "Format"): an unsigned little-endian 64-bit header
length N, N bytes of UTF-8 JSON, then the data. The JSON maps each tensor name to its dtype, shape and
`data_offsets` [begin, end) relative to the start of the data, plus an optional `__metadata__` of strings.

The header is checked the way the reference Rust crate checks it (`safetensors/src/tensor.rs`,
`SafeTensors::read_metadata` and `Metadata::validate`): length prefix present, header no larger than
MAX_HEADER_BYTES and inside the file, UTF-8 JSON object, duplicate names rejected, known dtypes, tensors laid
out contiguously from offset 0 with no gaps or overlaps, each byte span equal to prod(shape) * itemsize, and no
bytes after the last tensor. Two limits are ours, because numpy must be able to make the view: at most
MAX_NDIM dimensions, and no tensor bigger than numpy's largest array. Every violation raises `WeightFileError`
naming the file and the problem.

Example:
    >>> f = SafetensorsFile("model.safetensors")          # doctest: +SKIP
    >>> f["embeddings.word_embeddings.weight"].shape       # doctest: +SKIP
    (30522, 384)
"""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from votive.errors import WeightFileError

# The Rust crate refuses headers above 100 MB; so do we, before reading them.
MAX_HEADER_BYTES = 100_000_000

# The most dimensions numpy can give an array (NPY_MAXDIMS): 32 before numpy 2, 64 since.
MAX_NDIM = 64 if int(np.__version__.split(".")[0]) >= 2 else 32

# numpy refuses arrays whose byte size does not fit its index type, even when a zero dimension makes them empty.
MAX_TENSOR_BYTES = np.iinfo(np.intp).max

# safetensors dtype string -> (numpy dtype of the stored bytes, bytes per element). Always little-endian:
# the format says so, and '<' keeps a big-endian host from reading the bytes backwards. BF16 and the FP8 types
# have no numpy dtype, so their raw bits are exposed as unsigned integers and converted on demand.
DTYPES: dict[str, tuple[np.dtype, int]] = {
    "BOOL": (np.dtype("?"), 1),
    "U8": (np.dtype("u1"), 1),
    "I8": (np.dtype("i1"), 1),
    "F8_E5M2": (np.dtype("u1"), 1),
    "F8_E4M3": (np.dtype("u1"), 1),
    "F8_E8M0": (np.dtype("u1"), 1),
    "F8_E4M3FNUZ": (np.dtype("u1"), 1),
    "F8_E5M2FNUZ": (np.dtype("u1"), 1),
    "I16": (np.dtype("<i2"), 2),
    "U16": (np.dtype("<u2"), 2),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
    "I32": (np.dtype("<i4"), 4),
    "U32": (np.dtype("<u4"), 4),
    "F32": (np.dtype("<f4"), 4),
    "C64": (np.dtype("<c8"), 8),
    "F64": (np.dtype("<f8"), 8),
    "I64": (np.dtype("<i8"), 8),
    "U64": (np.dtype("<u8"), 8),
}

# Dtypes the format defines that pack several elements into a byte: there is no numpy view of one element.
SUB_BYTE_DTYPES = ("F4", "F6_E2M3", "F6_E3M2")

# What a Git LFS pointer file starts with: a checkout made without `git lfs pull`.
LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/"


class TensorInfo(NamedTuple):
    """One entry of the header."""

    name: str
    dtype: str  # safetensors dtype string, a key of DTYPES
    shape: tuple[int, ...]
    begin: int  # byte offset of the first element, relative to the start of the data section
    end: int  # byte offset one past the last element


class SafetensorsFile:
    """A validated, memory-mapped safetensors file.

    Args:
        path (str or Path): the file to open.

    Raises:
        WeightFileError: the file cannot be read or breaks the format; the message names the file and the rule.

    `f[name]` returns the tensor as stored (a read-only view, no copy); `f.info[name]` its header entry;
    `f.metadata` the `__metadata__` strings. The mapping stays open while any view is alive.

    Example:
        >>> f = SafetensorsFile("model.safetensors")              # doctest: +SKIP
        >>> w = f["pooler.dense.weight"]; w.flags.writeable       # doctest: +SKIP
        False
    """

    def __init__(self, path):
        self.path = Path(path)
        self._stop_reading_ahead: list = []  # `read_ahead`'s readers end once it holds anything (`release`)
        try:
            # A FIFO would block open() forever and a device has no size: refuse anything but a regular file.
            if not stat.S_ISREG(os.stat(self.path).st_mode):
                raise WeightFileError(self.path, "not a regular file")
            with open(self.path, "rb") as fh:
                size = os.fstat(fh.fileno()).st_size
                prefix = fh.read(len(LFS_POINTER_PREFIX))
                if prefix == LFS_POINTER_PREFIX:
                    raise WeightFileError(
                        self.path,
                        "this is a Git LFS pointer, not the weights; fetch the real file with `git lfs pull` "
                        "or download it from the Hub",
                    )
                if size < 8:
                    raise WeightFileError(self.path, f"file is {size} bytes, too short for the 8-byte header length")
                (header_len,) = struct.unpack("<Q", prefix[:8])
                if header_len > MAX_HEADER_BYTES:
                    raise WeightFileError(
                        self.path, f"header length {header_len} exceeds the {MAX_HEADER_BYTES}-byte limit"
                    )
                if 8 + header_len > size:
                    raise WeightFileError(
                        self.path, f"header length {header_len} runs past the end of the {size}-byte file"
                    )
                fh.seek(8)
                header = fh.read(header_len)
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as e:
            raise WeightFileError(self.path, f"cannot read: {e.strerror or e}") from None
        self.data_start = 8 + header_len
        # Sizes come from the mapping itself, so the bounds checked below are the bounds the views will see.
        self.metadata, self.info = _parse_header(self.path, header, len(self._map) - self.data_start)

    def keys(self):
        return self.info.keys()

    def __contains__(self, name) -> bool:
        return name in self.info

    def __len__(self) -> int:
        return len(self.info)

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            t = self.info[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {name!r}") from None
        dtype, itemsize = DTYPES[t.dtype]
        count = (t.end - t.begin) // itemsize
        arr = np.frombuffer(self._map, dtype=dtype, count=count, offset=self.data_start + t.begin)
        return arr.reshape(t.shape)

    def advise_rows(self, name: str) -> None:
        """Tensor `name` is read a few rows at a time (a token table): see `advise_rows` below."""
        t = self.info[name]
        advise_rows(self._map, self.data_start + t.begin, t.end - t.begin)

    def release(self, name: str) -> None:
        """Tensor `name`'s pages may leave this process's memory (a copy of it now serves): the whole pages of its
        span are dropped from the mapping (MADV_DONTNEED); a later read faults them in again, unchanged (the file
        is mapped read-only). A hint: nothing where the OS has no madvise."""
        self._stop_reading_ahead.append(True)  # a reader behind would bring the pages back
        t = self.info[name]
        begin, end = self.data_start + t.begin, self.data_start + t.end
        first = -(-begin // mmap.PAGESIZE) * mmap.PAGESIZE  # pages shared with a neighbour stay
        last = end - end % mmap.PAGESIZE
        if hasattr(mmap, "MADV_DONTNEED") and last > first:
            self._map.madvise(mmap.MADV_DONTNEED, first, last - first)

    def read_ahead(self, names) -> None:
        """Start faulting in tensors `names` from background threads (`read_ahead` below); returns at once."""
        read_ahead(self._map, [(self.data_start + self.info[n].begin, self.data_start + self.info[n].end)
                               for n in names], stop=self._stop_reading_ahead)


def advise_rows(mapping: mmap.mmap, offset: int, nbytes: int) -> None:
    """Tell the kernel that bytes offset .. offset + nbytes of a file mapping are read a few rows at a time (an
    embedding table: a text looks up a few dozen of its rows). By default a page fault in a file mapping reads
    megabytes around it (8 MB measured here), so looking up 20 rows of MiniLM's 47 MB token table read most of
    it on a cold start; with MADV_RANDOM a fault reads its own page. A hint: ignored where the OS has none."""
    if not hasattr(mmap, "MADV_RANDOM") or nbytes <= 0:
        return
    start = offset - offset % mmap.PAGESIZE  # madvise takes whole pages: those the table shares are included
    mapping.madvise(mmap.MADV_RANDOM, start, min(offset + nbytes, len(mapping)) - start)


# Readers `read_ahead` starts: a cold virtio disk here serves one reader at 0.8-1.3 GB/s and four at about 2 GB/s.
READ_AHEAD_THREADS = 4


# Pages a reader touches between looks at its stop flag (4 MB).
READ_AHEAD_STEP = 1024


def read_ahead(mapping: mmap.mmap, spans, threads: int = READ_AHEAD_THREADS, stop: list | None = None) -> None:
    """Fault in the pages of byte spans [begin, end) of a file mapping from `threads` background threads, each a
    contiguous share of them, and return at once.

    A model's first forward pass would fault its weights in one page fault after another, each waiting for its
    read; several readers keep the disk serving several requests at once. MiniLM page-cold: its 43 MB of layers
    ready about 12 ms sooner, the whole start 5% shorter; cached pages cost a minor fault each, 2 ms of a warm
    start (benchmarks/cold_start_bench.py). The threads only read, one byte a page (numpy releases the GIL
    meanwhile), through a view of one span at a time; a mapping closed under them ends them quietly (a hint, not a
    read anyone waits for). Started with _thread: threading.Thread.start waits until the new thread runs, which on
    a busy 2-core machine cost the load about a millisecond per thread; these die with the process, as daemons.
    stop: a list; once it holds anything the readers end (pages released would otherwise come back)."""
    import _thread

    for part in read_ahead_shares(spans, threads, mmap.PAGESIZE):
        _thread.start_new_thread(_touch_pages, (mapping, part, [] if stop is None else stop))


def read_ahead_shares(spans, threads: int, page: int) -> list[list[tuple[int, int]]]:
    """Byte spans [begin, end) cut into at most `threads` shares of whole pages (the last may be shorter), each a
    list of spans in file order: every page a span touches is in exactly one share."""
    runs: list[list[int]] = []
    for begin, end in sorted(spans):
        if end <= begin:
            continue
        begin -= begin % page  # a page's first byte, so that every page of the span is touched
        if runs and begin <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([begin, end])
    pages = sum(-(-(end - begin) // page) for begin, end in runs)
    if pages == 0:
        return []
    per_share = -(-pages // threads)  # pages per thread, rounded up
    shares: list[list[tuple[int, int]]] = [[]]
    left = per_share
    for begin, end in runs:
        while begin < end:
            if left == 0:
                shares.append([])
                left = per_share
            take = min(left, -(-(end - begin) // page))  # pages; a run's last may be part of one
            shares[-1].append((begin, min(begin + take * page, end)))
            begin, left = begin + take * page, left - take
    return shares


def _touch_pages(mapping: mmap.mmap, part: list[tuple[int, int]], stop: list) -> None:
    step = READ_AHEAD_STEP * mmap.PAGESIZE
    try:
        for begin, end in part:
            for at in range(begin, end, step):
                if stop:
                    return
                np.frombuffer(mapping, np.uint8, count=min(step, end - at), offset=at)[:: mmap.PAGESIZE].max()
    except (ValueError, BufferError):  # the mapping was closed: nothing left to read ahead for
        pass


def _reject_duplicates(path):
    def hook(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise WeightFileError(path, f"header names {key!r} twice")
            seen.add(key)
        return dict(pairs)

    return hook


def _parse_header(path: Path, header: bytes, data_len: int) -> tuple[dict[str, str], dict[str, TensorInfo]]:
    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as e:
        raise WeightFileError(path, f"header is not valid UTF-8 (byte {e.start})") from None
    # serde_json (the reference) allows JSON whitespace before the object; so do we.
    if not text.lstrip(" \t\r\n").startswith("{"):
        raise WeightFileError(path, "header is not a JSON object (it must start with '{')")
    try:
        obj = json.loads(text, object_pairs_hook=_reject_duplicates(path))
    except json.JSONDecodeError as e:
        raise WeightFileError(path, f"header is not valid JSON: {e.msg} at character {e.pos}") from None
    except (ValueError, RecursionError) as e:  # an integer too long to convert, or nesting too deep to parse
        raise WeightFileError(path, f"header is not usable JSON: {e}") from None
    if not isinstance(obj, dict):
        raise WeightFileError(path, "header is not a JSON object")

    metadata = obj.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise WeightFileError(path, "__metadata__ must map strings to strings")

    infos = [_parse_entry(path, name, entry) for name, entry in obj.items()]
    # Contiguous from 0 in offset order: each tensor starts where the previous one ended.
    expected, previous = 0, None
    for t in sorted(infos, key=lambda t: (t.begin, t.end)):
        if t.begin != expected:
            after = f"{previous!r} ends" if previous is not None else "the data starts"
            what = "overlaps it" if t.begin < expected else f"leaves a gap of {t.begin - expected} bytes"
            raise WeightFileError(path, f"tensor {t.name!r} starts at byte {t.begin} but {after} at {expected}: {what}")
        expected, previous = t.end, t.name
    if expected < data_len:
        raise WeightFileError(
            path, f"{data_len - expected} trailing bytes: tensors end at data byte {expected} of {data_len}"
        )
    if expected > data_len:
        raise WeightFileError(
            path, f"file is truncated: tensors need {expected} data bytes but only {data_len} follow the header"
        )
    return metadata, {t.name: t for t in infos}


def _parse_entry(path: Path, name: str, entry) -> TensorInfo:
    if not isinstance(entry, dict):
        raise WeightFileError(path, f"tensor {name!r}: header entry is not an object")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in entry:
            raise WeightFileError(path, f"tensor {name!r}: header entry has no {key!r}")
    dtype = entry["dtype"]
    if dtype in SUB_BYTE_DTYPES:
        raise WeightFileError(path, f"tensor {name!r}: dtype {dtype} packs elements below a byte; not supported")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise WeightFileError(path, f"tensor {name!r}: unknown dtype {dtype!r} (known: {', '.join(DTYPES)})")
    shape = entry["shape"]
    # type() rather than isinstance: JSON true/false arrive as bool, a subclass of int.
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise WeightFileError(path, f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if len(shape) > MAX_NDIM:
        raise WeightFileError(path, f"tensor {name!r}: {len(shape)} dimensions, more than the {MAX_NDIM} numpy allows")
    offsets = entry["data_offsets"]
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(type(o) is int and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise WeightFileError(path, f"tensor {name!r}: data_offsets {offsets!r} is not [begin, end] with begin <= end")
    itemsize = DTYPES[dtype][1]
    # numpy sizes the array ignoring zero dimensions, so that is the product that must stay in range.
    if math.prod(d for d in shape if d) * itemsize > MAX_TENSOR_BYTES:
        raise WeightFileError(path, f"tensor {name!r}: shape {tuple(shape)} is too large for any array")
    nbytes = itemsize * math.prod(shape)
    begin, end = offsets
    if end - begin != nbytes:
        raise WeightFileError(
            path,
            f"tensor {name!r}: {dtype} {tuple(shape)} needs {nbytes} bytes but data_offsets span {end - begin}",
        )
    return TensorInfo(name, dtype, tuple(shape), begin, end)

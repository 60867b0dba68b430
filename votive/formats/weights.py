"""Weight residency: one name -> array view over one or more memory-mapped checkpoint files.

A model asks `WeightStore.get(name)` for each tensor it keeps. F32 tensors come back as views into the file
mapping (no copy, nothing read until touched); F16/BF16 tensors are widened to F32 once, on first request,
cached, and counted in `conversions` so tests and benchmarks can see exactly what was copied.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from votive.errors import WeightFileError
from votive.formats.safetensors import SafetensorsFile

SHARD_INDEX = "model.safetensors.index.json"


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """BF16 is the top half of an F32: shift the 16 stored bits into place."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


class WeightStore:
    """Named tensors from a single safetensors file or a sharded checkpoint (its index.json).

    Args:
        path (str or Path): a `.safetensors` file, a `model.safetensors.index.json`, or a folder holding one.
    """

    def __init__(self, path):
        path = Path(path)
        if path.is_dir():
            path = _weights_in_folder(path)
        self.path = path
        self._files: dict[str, SafetensorsFile] = {}
        self._where: dict[str, SafetensorsFile] = {}
        self._converted: dict[str, np.ndarray] = {}
        self.conversions = 0  # tensors widened to F32 (each counted once)
        self.converted_bytes = 0  # bytes those copies occupy
        if path.name.endswith(".index.json"):
            self._open_sharded(path)
        else:
            f = self._open(path)
            self._where = dict.fromkeys(f.keys(), f)

    def _open(self, path: Path) -> SafetensorsFile:
        key = str(path)
        if key not in self._files:
            if not path.is_file():
                raise WeightFileError(path, "file not found")
            self._files[key] = SafetensorsFile(path)
        return self._files[key]

    def _open_sharded(self, index_path: Path) -> None:
        if not index_path.is_file():
            raise WeightFileError(index_path, "file not found")
        try:
            index = json.loads(index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as e:  # ValueError covers bad UTF-8 and bad JSON
            raise WeightFileError(index_path, f"not a safetensors shard index ({type(e).__name__}: {e})") from None
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict):
            raise WeightFileError(index_path, "not a safetensors shard index: no 'weight_map' object")
        for name, shard in weight_map.items():
            # Plain file names only: a path could reach outside the folder. Symlinked shards (the Hub cache)
            # are fine, since only the name is checked, never where it points.
            if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in ("", ".", ".."):
                raise WeightFileError(index_path, f"tensor {name!r}: shard name {shard!r} is not a file name")
        for shard in dict.fromkeys(weight_map.values()):  # each shard once, in order of first mention
            if not (index_path.parent / shard).is_file():
                raise WeightFileError(index_path, f"shard {shard!r} named in the weight_map is missing")
            self._open(index_path.parent / shard)
        for name, shard in weight_map.items():
            if name not in self._files[str(index_path.parent / shard)]:
                raise WeightFileError(index_path, f"tensor {name!r} is mapped to {shard} but that shard lacks it")
        # Every tensor of every shard must be claimed by the index, and live in only one shard.
        for f in self._files.values():
            for name in f.keys():
                if name in self._where:
                    raise WeightFileError(
                        index_path, f"tensor {name!r} is in both {self._where[name].path.name} and {f.path.name}"
                    )
                self._where[name] = f
        for name, f in self._where.items():
            if name not in weight_map:
                raise WeightFileError(index_path, f"tensor {name!r} in {f.path.name} is not in the weight_map")

    def keys(self):
        return self._where.keys()

    def __contains__(self, name) -> bool:
        return name in self._where

    def dtype_of(self, name: str) -> str:
        return self._file_of(name).info[name].dtype

    def _file_of(self, name: str) -> SafetensorsFile:
        try:
            return self._where[name]
        except KeyError:
            raise WeightFileError(self.path, f"missing tensor {name!r}") from None

    def raw(self, name: str) -> np.ndarray:
        """The tensor exactly as stored (BF16 as uint16 bits), a read-only view."""
        return self._file_of(name)[name]

    def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The tensor as float32: a view for F32, a once-made copy for F16/BF16.

        Args:
            name: the checkpoint's tensor name.
            shape: if given, the shape the caller expects; a mismatch raises WeightFileError naming both.
        """
        f = self._file_of(name)
        dtype = f.info[name].dtype
        if shape is not None and tuple(shape) != f.info[name].shape:
            raise WeightFileError(f.path, f"tensor {name!r} has shape {f.info[name].shape}, expected {tuple(shape)}")
        if dtype == "F32":
            return f[name]
        if name not in self._converted:
            if dtype == "F16":
                out = f[name].astype(np.float32)
            elif dtype == "BF16":
                out = bf16_to_f32(f[name])
            else:
                raise WeightFileError(f.path, f"tensor {name!r} is {dtype}; expected a float type (F32, F16, BF16)")
            out.flags.writeable = False
            self._converted[name] = out
            self.conversions += 1
            self.converted_bytes += out.nbytes
        return self._converted[name]

    def release(self, *names: str) -> None:
        """Tensors `names` are no longer read through this store (packed copies serve them): their pages leave
        memory (votive.formats.safetensors), and converted F16 / BF16 copies are let go. A later `get` still
        answers."""
        for name in names:
            self._converted.pop(name, None)
            self._file_of(name).release(name)

    def read_ahead(self, names) -> None:
        """Start faulting in tensors `names` from background threads, a few per file
        (votive.formats.safetensors.read_ahead): what a model's first call reads whole. Returns at once."""
        by_file: dict[str, list[str]] = {}
        for name in names:
            by_file.setdefault(str(self._file_of(name).path), []).append(name)
        for path, group in by_file.items():
            self._files[path].read_ahead(group)

    def advise_rows(self, name: str) -> None:
        """Tensor `name` is read a few rows at a time (a token table): a cold start reads only the pages of the
        rows it looks up (votive.formats.safetensors.advise_rows). A float32 tensor only: a converted one is a copy."""
        self._file_of(name).advise_rows(name)


def _weights_in_folder(folder: Path) -> Path:
    """The checkpoint a model folder holds: a shard index if present, else its one safetensors file."""
    if (folder / SHARD_INDEX).is_file():
        return folder / SHARD_INDEX
    if (folder / "model.safetensors").is_file():
        return folder / "model.safetensors"
    found = sorted(folder.glob("*.safetensors"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise WeightFileError(folder, "no .safetensors weights in this folder")
    raise WeightFileError(
        folder, f"{len(found)} .safetensors files but no {SHARD_INDEX} saying how they fit together"
    )

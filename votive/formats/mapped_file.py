"""Opening a weight file for reading through a read-only memory map, with the checks every format shares."""

from __future__ import annotations

import mmap
import os
import stat
from pathlib import Path

from votive.errors import WeightFileError
from votive.formats.safetensors import LFS_POINTER_PREFIX


def map_weight_file(path: Path, head_size: int) -> tuple[bytes, mmap.mmap | None]:
    """The first `head_size` bytes of a regular file and a read-only map of all of it (None when it is empty).

    Raises:
        WeightFileError: not a regular file, unreadable, or a Git LFS pointer instead of the weights.

    Example:
        >>> head, mapping = map_weight_file(Path("model.gguf"), 24)   # doctest: +SKIP
    """
    try:
        # A FIFO would block open() forever and a device has no size: refuse anything but a regular file.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise WeightFileError(path, "not a regular file")
        with open(path, "rb") as fh:
            head = fh.read(max(head_size, len(LFS_POINTER_PREFIX)))
            if head.startswith(LFS_POINTER_PREFIX):
                raise WeightFileError(
                    path,
                    "this is a Git LFS pointer, not the weights; fetch the real file with `git lfs pull` "
                    "or download it from the Hub",
                )
            mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if head else None  # mmap refuses size 0
    except OSError as e:
        raise WeightFileError(path, f"cannot read: {e.strerror or e}") from None
    return head[:head_size], mapping

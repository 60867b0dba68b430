"""Build outputs that appear whole or not at all, and never replace anything without being asked.

A build writes into a temporary folder beside the destination and renames it into place at the end, so an
interrupted build leaves no half-written output (only a `.NAME.*.partial` folder, removed on the way out when it
can be). An existing destination is replaced only with `force`, and only when it is empty or an earlier votive
build (it holds `manifest.json` with votive's format marker): `--out ~ --force` must not delete a home folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from votive.errors import PackagingError

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "votive-build/1"


def check_destination(dest: Path, force: bool) -> Path:
    """Refuse a destination that exists (without `force`), is a file, or is a folder votive did not write."""
    dest = Path(dest).absolute()
    if not dest.exists() and not dest.is_symlink():
        if dest.parent.exists() and not dest.parent.is_dir():
            raise PackagingError(f"{dest.parent} is not a folder; cannot write {dest.name} into it")
        return dest
    if not force:
        raise PackagingError(f"{dest} already exists; pass --force to replace it, or choose another --out")
    if not dest.is_dir() or dest.is_symlink():
        raise PackagingError(f"{dest} exists and is not a folder; it is not replaced even with --force")
    if any(dest.iterdir()) and not is_votive_build(dest):
        raise PackagingError(f"{dest} is not a votive build (no {MANIFEST_NAME} of format {MANIFEST_FORMAT}); it is "
                             "not replaced even with --force: choose another --out")
    return dest


def is_votive_build(folder: Path) -> bool:
    try:
        return json.loads((folder / MANIFEST_NAME).read_text()).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


@contextmanager
def staged_output(dest: Path, force: bool = False) -> Iterator[Path]:
    """Yield an empty folder to build in; on success it becomes `dest` (replacing it under the rules above).

    Example:
        >>> with staged_output(Path("build/minilm"), force=True) as stage:      # doctest: +SKIP
        ...     (stage / "manifest.json").write_text("{}")
    """
    dest = check_destination(dest, force)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        yield stage
        stage.chmod(0o755)  # mkdtemp makes it private
        check_destination(dest, force)  # again: something may have appeared there during the build
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(stage, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, dest)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


def write_json(path: Path, obj: dict) -> None:
    """JSON with sorted keys and a final newline: the same object always gives the same bytes."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")

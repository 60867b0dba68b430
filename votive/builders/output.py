"""Build outputs that appear whole or not at all, and never replace anything without being asked.

A build writes into a temporary folder beside the destination and renames it into place at the end, so an
interrupted build leaves no half-written output (only a `.NAME.*.partial` folder, removed on the way out when it
can be, and by the next build of the same destination when it could not: `sweep_stale_stages`). An existing
destination is replaced only with `force`, and only when it is empty or an earlier votive build (it holds
`manifest.json` with votive's format marker): `--out ~ --force` must not delete a home folder.
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import re
import shutil
import tempfile
import time
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
    lock_fd, lock_path = _locked_stage_name(dest)  # held until the stage is gone: this build is alive
    stage, made = lock_path.with_suffix(""), False  # .NAME.XXXX.partial
    try:
        stage.mkdir(mode=0o700)
        made = True
        sweep_stale_stages(dest)
        yield stage
        stage.chmod(0o755)  # private while it is built
        check_destination(dest, force)  # again: something may have appeared there during the build
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            os.replace(dest, old / dest.name)
            os.replace(stage, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, dest)
    finally:
        if made and stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        lock_path.unlink(missing_ok=True)
        os.close(lock_fd)


# Stages of builds killed without a chance to clean up (kill -9, a lost machine). Each stage has a lock file
# beside it, `.NAME.XXXX.partial.lock`, on which its build holds an exclusive flock for as long as it runs; the
# kernel drops that lock when the process dies, however it dies. So a stage whose lock can be taken belongs to no
# live build. A stage without a lock file (made before votive kept them) is swept only once it is this old:
UNLOCKED_STAGE_AGE_S = 24 * 3600


def _locked_stage_name(dest: Path) -> tuple[int, Path]:
    """A new `.NAME.XXXX.partial.lock` beside `dest`, created and flocked -> (its descriptor, its path)."""
    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial.lock", dir=dest.parent)
    fcntl.flock(fd, fcntl.LOCK_EX)  # nobody else can hold it yet: the name is new
    return fd, Path(name)


def sweep_stale_stages(dest: Path, now: float | None = None) -> list[Path]:
    """Remove the `.NAME.*.partial` stages of `dest` that no live build holds (see above); only this
    destination's, never another's. Returns the stages removed."""
    dest = Path(dest).absolute()
    now = time.time() if now is None else now
    swept = []
    own = re.compile(rf"\.{re.escape(dest.name)}\.[a-z0-9_]{{8}}\.partial")  # tempfile's 8 random characters
    for stage in dest.parent.glob(f".{glob.escape(dest.name)}.*.partial"):
        if not own.fullmatch(stage.name) or not stage.is_dir() or stage.is_symlink():
            continue
        lock_path = stage.with_name(stage.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:  # a stage from before lock files: by age alone
            try:
                if now - stage.stat().st_mtime > UNLOCKED_STAGE_AGE_S:
                    shutil.rmtree(stage, ignore_errors=True)
                    swept.append(stage)
            except OSError:
                pass
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # a live build holds it
            os.close(fd)
            continue
        try:
            shutil.rmtree(stage, ignore_errors=True)
            lock_path.unlink(missing_ok=True)
            swept.append(stage)
        finally:
            os.close(fd)
    return swept


def write_json(path: Path, obj: dict) -> None:
    """JSON with sorted keys and a final newline: the same object always gives the same bytes."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")

"""Zip archives that come out byte for byte the same from the same files, and that unpack only inside their folder.

Reproducible: members are sorted by name, every member carries the same date (1980-01-01, the earliest a zip can
record) and one of two modes (0644, or 0755 for executables), directories are implied by the file names, and the
compression level is fixed. So the sha256 of an artifact depends only on what is in it, and a rebuild of
unchanged inputs uploads nothing new.

Safe: a member name must be a relative '/'-separated path with no '..', '.' or empty part, no backslash and no
drive letter, since unzip tools differ in what they do with those. A symbolic link in a folder being archived is
followed only when it points inside that folder (its target's bytes are stored under the link's name: Lambda
layers hold no links); one pointing outside is refused. `extract_zip` applies the same rules when reading.

(`votive.files.check_member_name`).
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from votive.errors import PackagingError
from votive.files import check_member_name, sha256_file

FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # zip dates start in 1980; a build's date is not part of what it contains
FILE_MODE = 0o644
EXECUTABLE_MODE = 0o755
COMPRESS_LEVEL = 9  # zlib's best: artifacts are built once and uploaded, often over a slow link
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Member:
    """One file to put in an archive: its name there, and its bytes from `source` or `data`."""

    name: str  # '/'-separated path inside the archive
    source: Path | None = None  # file to copy the bytes from
    data: bytes | None = None  # the bytes themselves (small generated files)
    executable: bool = False  # stored as 0755 instead of 0644

    def size(self) -> int:
        return len(self.data) if self.data is not None else self.source.stat().st_size


@dataclass(frozen=True)
class ArchiveInfo:
    """What was written: the archive's sha256, its size, the sum of its members' sizes, and their count."""

    path: Path
    sha256: str
    zipped_bytes: int
    unzipped_bytes: int
    files: int


def tree_members(root: Path, prefix: str = "", *, executable: Iterable[str] = ()) -> list[Member]:
    """Every file under `root`, named `prefix` + its path relative to `root`.

    A link to a file inside `root` is followed (the target's bytes are stored under the link's name). A link
    pointing outside `root`, or to a folder, is refused: nothing from elsewhere on the build machine may slip into
    an artifact, and a linked folder could loop.

    Args:
        root: the folder to archive.
        prefix: prepended to every name, e.g. "python/" for a layer.
        executable: names (with prefix) to store as 0755.
    """
    root = Path(root)
    real_root = root.resolve()
    executable = set(executable)
    members = []
    for folder, dirnames, filenames in os.walk(root):
        for dirname in dirnames:
            if Path(folder, dirname).is_symlink():
                raise PackagingError(f"{Path(folder, dirname)}: a link to a folder; an artifact holds no links")
        for filename in filenames:
            path = Path(folder, filename)
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(real_root) or not target.is_file():
                    where = "outside" if target.exists() else "missing from"
                    raise PackagingError(f"{path}: a link to {os.readlink(path)!r}, which is {where} {root}; an "
                                         "artifact may only hold files from inside the folder being packed")
            elif not path.is_file():
                raise PackagingError(f"{path}: not a regular file (a socket, device or pipe cannot go in an archive)")
            name = check_member_name(prefix + path.relative_to(root).as_posix(), str(root))
            members.append(Member(name, source=path, executable=name in executable))
    return members


def write_zip(dest: Path, members: Iterable[Member], *, level: int = COMPRESS_LEVEL) -> ArchiveInfo:
    """Write a reproducible zip of `members` to `dest` (via a temporary file and a rename).

    Raises:
        PackagingError: a member name is unsafe or appears twice.
    """
    dest = Path(dest)
    ordered = sorted(members, key=lambda m: m.name)
    seen = set()
    for member in ordered:
        check_member_name(member.name, str(dest))
        if member.name in seen:
            raise PackagingError(f"{dest}: two members named {member.name!r}")
        seen.add(member.name)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    unzipped = 0
    try:
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
            for member in ordered:
                info = zipfile.ZipInfo(member.name, date_time=FIXED_DATE)
                info.create_system = 3  # Unix, so that unzip honours the mode bits below
                mode = EXECUTABLE_MODE if member.executable else FILE_MODE
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                info._compresslevel = level  # read by ZipFile.open in 3.10-3.13 (3.13 also names it compress_level)
                info.file_size = member.size()  # lets zipfile decide on zip64 before writing
                unzipped += info.file_size
                with archive.open(info, "w") as out:
                    if member.data is not None:
                        out.write(member.data)
                    else:
                        with open(member.source, "rb") as src:
                            shutil.copyfileobj(src, out, _CHUNK)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    return ArchiveInfo(dest, sha256_file(dest), dest.stat().st_size, unzipped, len(ordered))


def extract_zip(archive: Path, dest: Path) -> list[Path]:
    """Unpack `archive` into `dest`, refusing members that would land outside it.

    Links stored in the archive are recreated only when they point inside `dest`. Files get mode 0755 when the
    archive gives them any execute bit, else 0644.

    Returns:
        The files written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    real_dest = dest.resolve()
    written = []
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            name = check_member_name(info.filename, str(archive))
            target = dest / name
            mode = info.external_attr >> 16
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(mode):
                link = zf.read(info).decode("utf-8")
                pointed = (target.parent / link).resolve()
                if os.path.isabs(link) or not pointed.is_relative_to(real_dest):
                    raise PackagingError(f"{archive}: member {name!r} is a link to {link!r}, outside the folder")
                target.symlink_to(link)
                continue
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            target.chmod(EXECUTABLE_MODE if mode & 0o111 else FILE_MODE)
            written.append(target)
    return written


def tree_size(root: Path) -> int:
    """Bytes in the regular files under `root` (links not followed)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())

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
import posixpath
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

    Links: a stored link is recreated only when it ends, through any chain of the archive's own links, at a
    regular file of the same archive (or one already in `dest`), by a relative target that stays inside `dest`:
    `lib.so -> lib.so.1 -> lib.so.1.2` in a layer unpacks as links. A link to a folder, to a missing name or to
    anything outside is refused, and so is every member whose path passes through a link. With no link
    standing for a folder, no later member can be steered elsewhere by an earlier one (a chain of links each
    checked alone can: `x -> p/q`, `A -> x/../..`, `p -> .` puts `A/..` outside). The whole archive is
    checked before anything is written; files are opened without following links.

    Files get mode 0755 when the archive gives them any execute bit, else 0644.

    Returns:
        The files written.

    Raises:
        PackagingError: an unsafe name, a duplicate, a link that is not a file link inside, or a path through a link.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    real_dest = dest.resolve()
    written = []
    with zipfile.ZipFile(archive) as zf:
        plan = _plan_extraction(zf, archive, real_dest)
        for name, info, link in plan:
            target = real_dest / name
            if info.is_dir():
                _make_folders(real_dest, name.rstrip("/").split("/"), archive)
                continue
            _make_folders(real_dest, name.split("/")[:-1], archive)
            if link is not None:
                try:
                    os.symlink(link, target)
                except FileExistsError:
                    raise PackagingError(f"{archive}: member {name!r} is a link, but {target} already exists") from None
                # a link `dest` held already (not one of ours) could still bend the target: see where it ends
                if not Path(os.path.realpath(target)).is_relative_to(real_dest):
                    target.unlink()
                    raise PackagingError(f"{archive}: member {name!r} is a link to {link!r}, outside the folder")
                continue
            mode = info.external_attr >> 16
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:  # ELOOP: a link already stands there (from an earlier archive)
                raise PackagingError(f"{archive}: member {name!r} cannot be written at {target}: {exc.strerror}") \
                    from None
            with zf.open(info) as src, open(fd, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            target.chmod(EXECUTABLE_MODE if mode & 0o111 else FILE_MODE)
            written.append(dest / name)
    return written


_MAX_LINK_HOPS = 40  # as Linux's MAXSYMLINKS


def _plan_extraction(zf: zipfile.ZipFile, archive: Path,
                     real_dest: Path) -> list[tuple[str, zipfile.ZipInfo, str | None]]:
    """Check every member of `zf` before anything is written: (name, info, link target or None) in archive order."""
    plan, links, files, folders, seen = [], {}, set(), set(), set()
    for info in zf.infolist():
        name = check_member_name(info.filename, str(archive))
        key = name.rstrip("/")
        if key in seen:
            raise PackagingError(f"{archive}: two members named {key!r}")
        seen.add(key)
        parts = key.split("/")
        folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
        link = None
        if info.is_dir():
            folders.add(key)
        elif stat.S_ISLNK(info.external_attr >> 16):
            link = links[key] = zf.read(info).decode("utf-8", "replace")
        else:
            files.add(key)
        plan.append((name, info, link))
    for name, link in links.items():
        if name in folders:
            raise PackagingError(f"{archive}: member {name!r} is a link, and also a folder of other members")
        end, hops = name, 0
        while end in links:
            step = links[end]
            end = posixpath.normpath(posixpath.join(posixpath.dirname(end), step))
            hops += 1
            if not step or posixpath.isabs(step) or end == ".." or end.startswith("../") or hops > _MAX_LINK_HOPS:
                raise PackagingError(f"{archive}: member {name!r} is a link to {link!r}, outside the folder "
                                     "(or a loop of links)")
        if end not in files and not _regular_file_inside(real_dest, end):
            what = "a folder" if end in folders else "nothing in the archive"
            raise PackagingError(f"{archive}: member {name!r} is a link to {link!r}, which is {what}; only links "
                                 "to files inside the archive are unpacked")
    return plan


def _regular_file_inside(real_dest: Path, name: str) -> bool:
    """Whether `name` is already a regular file under `real_dest`, reached without any link."""
    path = real_dest
    for part in name.split("/"):
        path = path / part
        if path.is_symlink():
            return False
    return path.is_file()


def _make_folders(real_dest: Path, parts: list[str], archive: Path) -> None:
    """Create `real_dest`/`parts`..., refusing to pass through a link or a file (mkdir would follow a link)."""
    path = real_dest
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise PackagingError(f"{archive}: {path} is a link; nothing is unpacked through a link")
        if not path.exists():
            path.mkdir()
        elif not path.is_dir():
            raise PackagingError(f"{archive}: {path} is a file, where a folder is needed")


def tree_size(root: Path) -> int:
    """Bytes in the regular files under `root` (links not followed)."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file() and not p.is_symlink())

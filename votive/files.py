"""Two facts about files that building, deploying and serving all check: a member name that stays inside its
folder, and a file's sha256 (staged weights are checked against it when a function fetches them).

    >>> check_member_name("python/votive/__init__.py")
    'python/votive/__init__.py'
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from votive.errors import PackagingError

_CHUNK = 1 << 20


def check_member_name(name: str, where: str = "archive") -> str:
    """Return `name` if it is a safe relative member name, else raise PackagingError saying what is wrong.

    Args:
        name: the member name, '/'-separated.
        where: the archive or folder, for the message.
    """
    problem = None
    if not name:
        problem = "is empty"
    elif "\\" in name or "\0" in name:
        problem = "contains a backslash or NUL (names are '/'-separated)"
    elif name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        problem = "is an absolute path"
    elif any(part in ("", ".", "..") for part in name.rstrip("/").split("/")):
        problem = "has an empty, '.' or '..' part"
    if problem:
        raise PackagingError(f"{where}: member name {name!r} {problem}; names must stay inside the archive's folder")
    return name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()

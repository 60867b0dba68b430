"""Hostile zips (issue 19, item 1): nothing an archive holds may be written outside the folder it is unpacked in,
however its links are chained; ordinary file links (a layer's lib.so -> lib.so.1) still unpack as links."""

from __future__ import annotations

import json
import os
import stat
import warnings
import zipfile
from pathlib import Path

import pytest

from votive.builders.archive import extract_zip
from votive.builders.output import MANIFEST_NAME
from votive.emulators.local_tree import LambdaTree
from votive.errors import PackagingError


def _zip(path: Path, members: list[tuple[str, str, str]]) -> Path:
    """members: (kind, name, data) with kind 'file', 'link' (data is the target) or 'dir'."""
    with zipfile.ZipFile(path, "w") as z, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of a duplicate name: that is the point
        for kind, name, data in members:
            if kind == "dir":
                z.writestr(zipfile.ZipInfo(name.rstrip("/") + "/"), "")
                continue
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = ((stat.S_IFLNK | 0o777) if kind == "link" else (stat.S_IFREG | 0o644)) << 16
            z.writestr(info, data)
    return path


def _outside(root: Path, dest: Path) -> list[str]:
    """Everything under `root` that is not under `dest` (nor the zip files and the folders leading to dest)."""
    above = {p for p in [dest, *dest.parents] if p.is_relative_to(root)}
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p not in above and not p.is_relative_to(dest) and p.suffix != ".zip")


# The issue's chain: each link alone points inside; `p -> .` re-points `x -> p/q`, so `A -> x/../..` leaves.
CHAIN = [("file", "q/keep", "x"), ("link", "x", "p/q"), ("link", "A", "x/../.."), ("link", "p", "."),
         ("file", "A/ESCAPED.txt", "!")]

HOSTILE = {
    "chain": CHAIN,
    "absolute": [("link", "abs", "/tmp"), ("file", "abs/ESCAPED.txt", "!")],
    "absolute-file": [("link", "passwd", "/etc/passwd")],
    "dotdot": [("link", "up", "../.."), ("file", "up/ESCAPED.txt", "!")],
    "dotdot-through-link": [("dir", "d/", ""), ("link", "d/l", "."), ("link", "esc", "d/l/../../.."),
                            ("file", "esc/ESCAPED.txt", "!")],
    "link-replaces-written-folder": [("file", "d/f", "x"), ("link", "d", "../.."), ("file", "d/ESCAPED.txt", "!")],
    "link-replaces-folder-entry": [("dir", "d/", ""), ("link", "d", "..")],
    "file-through-folder-link": [("dir", "sub/", ""), ("link", "dl", "sub"), ("file", "dl/f.txt", "x")],
    "link-to-folder": [("file", "sub/f", "x"), ("link", "dl", "sub")],
    "link-to-nothing": [("link", "dangling", "missing")],
    "loop": [("link", "a", "b"), ("link", "b", "a")],
    "link-then-file-same-name": [("file", "t", "x"), ("link", "l", "t"), ("file", "l", "overwrite")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_zip_is_refused_and_writes_nothing_outside(tmp_path, case):
    dest = tmp_path / "outer" / "dest"
    evil = _zip(tmp_path / "evil.zip", HOSTILE[case])
    with pytest.raises(PackagingError):
        extract_zip(evil, dest)
    assert _outside(tmp_path, dest) == []
    assert not list(dest.rglob("ESCAPED.txt"))


def test_the_issue_chain_through_lambda_tree_stays_in_var_task(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    _zip(build / "function.zip", CHAIN)
    (build / MANIFEST_NAME).write_text(json.dumps({"artifacts": [{"name": "function.zip", "role": "function"}]}))
    tree = LambdaTree(tmp_path / "tree", python_version="3.11")
    with pytest.raises(PackagingError, match="link"):
        tree.install_build(build)
    assert not list(tmp_path.rglob("ESCAPED.txt"))


def test_a_later_archive_cannot_write_through_an_earlier_archives_link(tmp_path):
    dest = tmp_path / "opt"
    extract_zip(_zip(tmp_path / "one.zip", [("file", "lib/a.so.1", "A"), ("link", "lib/a.so", "a.so.1")]), dest)
    with pytest.raises(PackagingError, match="cannot be written"):
        extract_zip(_zip(tmp_path / "two.zip", [("file", "lib/a.so", "overwrite")]), dest)
    with pytest.raises(PackagingError, match="is a link"):
        extract_zip(_zip(tmp_path / "three.zip", [("file", "lib/a.so/x", "y")]), dest)
    assert (dest / "lib/a.so.1").read_text() == "A"
    # a folder link placed in the destination by someone else is not passed through either
    (dest / "ext").symlink_to(tmp_path)
    with pytest.raises(PackagingError, match="is a link"):
        extract_zip(_zip(tmp_path / "four.zip", [("file", "ext/ESCAPED.txt", "!")]), dest)
    with pytest.raises(PackagingError):
        extract_zip(_zip(tmp_path / "five.zip", [("file", "f", "x"), ("link", "l", "ext/../f")]), dest)
    assert _outside(tmp_path, dest) == []


def test_ordinary_file_links_still_unpack(tmp_path):
    # a layer as `zip -y` stores it: chains of relative links ending at files, some in other folders
    dest = tmp_path / "opt"
    members = [("link", "lib/libz.so", "libz.so.1"), ("link", "lib/libz.so.1", "libz.so.1.3"),
               ("file", "lib/libz.so.1.3", "ELF"), ("dir", "bin/", ""), ("link", "bin/tool", "../lib/libz.so"),
               ("file", "python/pkg/__init__.py", "x = 1")]
    written = extract_zip(_zip(tmp_path / "layer.zip", members), dest)
    assert sorted(p.relative_to(dest).as_posix() for p in written) == ["lib/libz.so.1.3", "python/pkg/__init__.py"]
    assert os.readlink(dest / "lib/libz.so") == "libz.so.1"
    assert os.readlink(dest / "bin/tool") == "../lib/libz.so"
    assert (dest / "bin/tool").read_text() == "ELF"
    # a link to a file an earlier layer left in the same folder is fine too
    extract_zip(_zip(tmp_path / "layer2.zip", [("link", "python/alias.py", "pkg/__init__.py")]), dest)
    assert (dest / "python/alias.py").read_text() == "x = 1"

"""votive.models.import_ahead: which bytecode a load asks the disk for before `import numpy`, and that it only asks."""

import os
import sys

from votive.models import import_ahead


def _tree(tmp_path):
    tag = sys.implementation.cache_tag
    files = {
        "__pycache__/__init__.%s.pyc" % tag: b"a",
        "__pycache__/version.%s.pyc" % tag: b"b",
        "__pycache__/old.cpython-30.pyc": b"c",  # another interpreter's
        "_core/__pycache__/multiarray.%s.pyc" % tag: b"d",
        "_core/multiarray.py": b"e",  # a source, not bytecode
        "tests/__pycache__/test_x.%s.pyc" % tag: b"f",  # a package the import does not load
    }
    for name, data in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return tag


def test_bytecode_files_are_this_interpreters_in_the_named_packages(tmp_path):
    tag = _tree(tmp_path)
    got = import_ahead.bytecode_files(str(tmp_path), ("", "_core", "linalg"))  # linalg: no such folder
    assert got == [str(tmp_path / "__pycache__" / f"__init__.{tag}.pyc"),
                   str(tmp_path / "__pycache__" / f"version.{tag}.pyc"),
                   str(tmp_path / "_core" / "__pycache__" / f"multiarray.{tag}.pyc")]


def test_advise_asks_willneed_of_each_file_and_skips_what_it_cannot_open(tmp_path):
    _tree(tmp_path)
    files = import_ahead.bytecode_files(str(tmp_path), ("", "_core"))
    asked = []

    def fadvise(fd, offset, length, advice):
        asked.append((os.readlink(f"/proc/self/fd/{fd}"), offset, length, advice))
        if len(asked) == 2:
            raise OSError("not supported here")  # one file's refusal does not stop the others

    import_ahead.advise([str(tmp_path / "gone.pyc"), *files], fadvise)
    assert asked == [(f, 0, 0, os.POSIX_FADV_WILLNEED) for f in files]


def test_start_hands_numpys_bytecode_to_a_thread_only_before_numpy_is_imported(monkeypatch):
    import _thread

    import numpy

    started = []
    monkeypatch.setattr(_thread, "start_new_thread", lambda fn, args: started.append((fn, args)))
    import_ahead.start()  # numpy is imported: nothing to read ahead
    assert started == []

    monkeypatch.delitem(sys.modules, "numpy")
    import_ahead.start()
    root = os.path.dirname(numpy.__file__)
    assert started == [(import_ahead.advise_numpy, (root,))]
    asked = []
    monkeypatch.setattr(import_ahead, "advise", asked.append)
    import_ahead.advise_numpy(root)  # what the thread runs
    assert asked == [import_ahead.bytecode_files(root, import_ahead.NUMPY_IMPORTS)]
    assert os.path.join(root, "_core", "__pycache__") in {os.path.dirname(f) for f in asked[0]}

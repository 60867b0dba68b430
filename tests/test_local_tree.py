"""LambdaTree as the README shows it: interpreters found as a build finds them, Lambda's runtime packages installed
by pip for the tree's Python (not copied from here), and the runtime's own traceback when init fails."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import sys
from pathlib import Path

import pytest

from votive.builders.tools import BuildTools
from votive.emulators.local_tree import LambdaTree
from votive.errors import EmulatorError, PackagingError

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"
OTHER = "3.12" if HERE != "3.12" else "3.11"  # a Python that is not this one: nothing of ours fits it
README = Path(__file__).resolve().parents[1] / "README.md"


def _python_or_skip(version: str) -> str:
    found = BuildTools().find_python(version)
    if found is None:
        pytest.skip(f"no Python {version} interpreter here (PATH or pyenv)")
    return found


@pytest.fixture(scope="module")
def runtime_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("lambda-runtime-cache")


def _extension_tags(site: Path) -> set[str]:
    """The CPython tags of the compiled modules under `site` ('cpython-312')."""
    return {m.group(1) for path in site.rglob("*.so") if (m := re.search(r"\.(cpython-\d+)-", path.name))}


def test_runtime_packages_are_installed_for_the_trees_python_not_copied(tmp_path, runtime_cache):
    tree = LambdaTree(tmp_path / "fn", OTHER)
    installed = tree.install_runtime_packages(cache=runtime_cache)
    assert {"awslambdaric", "boto3", "botocore"} <= set(installed)
    tag = "cpython-" + OTHER.replace(".", "")
    assert _extension_tags(tree.runtime_site) == {tag}  # awslambdaric's runtime_client, for the tree's Python
    assert not (tree.runtime_site / "awslambdaric" / "__pycache__").exists()  # pip --no-compile, not a copy

    # The next tree of that version copies the cached install: pip is not asked again.
    def no_pip(args, **kwargs):
        raise AssertionError(f"pip ran again: {args}")

    again = LambdaTree(tmp_path / "fn2", OTHER)
    assert again.install_runtime_packages(cache=runtime_cache, tools=BuildTools(run=no_pip)) == installed
    assert _extension_tags(again.runtime_site) == {tag}


def test_the_interpreter_is_found_as_the_build_finds_it(tmp_path):
    python = _python_or_skip(OTHER)
    tree = LambdaTree(tmp_path / "fn", OTHER)
    found = tree.find_python()  # None: pythonX.Y on PATH, then pyenv's versions
    assert found == tree.find_python(f"python{OTHER}")
    assert os.path.isabs(found) and "shims" not in found  # the real executable, which a plain PATH can run
    assert os.path.realpath(found) == os.path.realpath(tree.find_python(python))
    with pytest.raises(PackagingError, match=rf"is Python {HERE}, and this tree is for Python {OTHER}"):
        tree.find_python(sys.executable)


def test_a_build_for_another_cpu_or_python_is_refused_saying_what_to_build(tmp_path):
    here = "arm64" if platform.machine() in ("aarch64", "arm64") else "x86_64"
    there = "x86_64" if here == "arm64" else "arm64"
    build = tmp_path / "build"
    build.mkdir()
    manifest = {"target": {"architecture": there, "python": HERE}, "artifacts": []}
    (build / "manifest.json").write_text(json.dumps(manifest))
    tree = LambdaTree(tmp_path / "fn", HERE)
    with pytest.raises(PackagingError, match=rf"built for {there}, and this machine is {here}.*--arch {here}"):
        tree.install_build(build)
    manifest["target"] = {"architecture": here, "python": OTHER}
    (build / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(PackagingError, match=rf"built for Python {OTHER}, and this tree is for Python {HERE}"):
        tree.install_build(build)


def test_init_failure_reports_the_runtimes_traceback(tmp_path, runtime_cache):
    tree = LambdaTree(tmp_path / "fn", HERE)
    tree.install_runtime_packages(cache=runtime_cache)
    (tree.task / "broken.py").write_text("def load():\n    raise RuntimeError('no weights here')\n\nload()\n")
    with pytest.raises(EmulatorError) as failed:
        with tree.emulator(sys.executable, "broken.handler", init_timeout_s=60):
            pass
    message = str(failed.value)
    assert "RuntimeError: no weights here" in message
    assert "Traceback (most recent call last):" in message
    assert 'broken.py", line 2, in load' in message


def test_a_runtime_dying_before_init_reports_its_output(tmp_path):
    tree = LambdaTree(tmp_path / "fn", HERE)  # no runtime packages: awslambdaric itself cannot be imported
    (tree.task / "fine.py").write_text("def handler(event, context):\n    return event\n")
    with pytest.raises(EmulatorError) as failed:
        with tree.emulator(sys.executable, "fine.handler", init_timeout_s=60):
            pass
    message = str(failed.value)
    assert "exit status 1 before asking for an event; its output ended:" in message
    assert "No module named awslambdaric" in message


def _readme_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    found = [b for b in blocks if "LambdaTree(" in b]
    assert len(found) == 1, "README.md should hold one LambdaTree snippet"
    return found[0]


def test_the_readme_snippet_runs_as_written(tmp_path, monkeypatch):
    _python_or_skip("3.12")
    snippet = _readme_snippet()
    assert snippet.count('"/tmp/fn"') == 1
    # As written, but in a folder of its own: the build goes to ./build/, the tree to a fresh folder.
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(snippet.replace('"/tmp/fn"', repr(str(tmp_path / "fn"))), "README.md", "exec"), {})
    printed = out.getvalue()
    assert printed.startswith("b'{") and '"embedding"' in printed, printed
    assert (tmp_path / "fn" / "var" / "lang" / "lib" / "python3.12" / "site-packages" / "awslambdaric").is_dir()

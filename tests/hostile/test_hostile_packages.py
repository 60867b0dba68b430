"""`pkg:` sources name installed packages, and importing one runs its code (issue 19, item 6): a package is
imported only when it holds a model file or its __init__.py names get_model_path / assemble; any other is
refused before it is imported, as `pkg:this` (the stdlib's Zen, a print on import) and a package whose import
has a side effect show."""

from __future__ import annotations

import sys

import pytest

from votive.errors import ModelSourceError
from votive.sources import resolve_source


@pytest.fixture
def site(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("votive_fake_side_effect", None)


def test_stdlib_module_is_refused_unimported(monkeypatch):
    monkeypatch.delitem(sys.modules, "this", raising=False)
    with pytest.raises(ModelSourceError, match="expected the package to hold one .gguf file"):
        resolve_source("pkg:this")
    assert "this" not in sys.modules


def test_package_without_model_or_hook_is_refused_before_its_code_runs(site):
    (site / "votive_fake_side_effect").mkdir()
    marker = site / "imported"
    (site / "votive_fake_side_effect" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ModelSourceError, match="found 0"):
        resolve_source("pkg:votive_fake_side_effect")
    assert not marker.exists() and "votive_fake_side_effect" not in sys.modules


def test_package_naming_a_hook_is_still_imported_for_it(site):
    (site / "votive_fake_side_effect").mkdir()
    target = site / "model.gguf"
    target.write_bytes(b"GGUF")
    (site / "votive_fake_side_effect" / "__init__.py").write_text(
        f"def get_model_path():\n    return {str(target)!r}\n")
    assert resolve_source("pkg:votive_fake_side_effect").path == target.resolve()

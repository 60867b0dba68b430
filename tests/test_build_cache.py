"""Deploys under different names of the same model share one build: `build_lambda_cached` keys builds by their
inputs and links an identical earlier one instead of building again."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from deploy_fakes import make_build

from votive.builders import build_cache
from votive.builders.build_cache import build_key, build_lambda_cached
from votive.builders.lambda_build import LambdaTarget


@pytest.fixture
def builds(monkeypatch):
    """Replaces the real build (30-55 s) with one writing a valid build folder; records each call."""
    made = []

    def fake_build(model, out, target, *, force=False, tools=None):
        assert force or not out.exists()
        make_build(out, model=model, arch=target.arch, python=target.python)
        made.append((model, target))

    monkeypatch.setattr(build_cache.lambda_build, "build_lambda", fake_build)
    return made


def test_the_key_follows_every_input_that_changes_the_build(tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    base = build_key(str(folder), LambdaTarget())
    assert build_key(str(folder), LambdaTarget()) == base
    for other in (LambdaTarget(arch="arm64"), LambdaTarget(python="3.13"), LambdaTarget(stream=True),
                  LambdaTarget(weights="s3"), LambdaTarget(s3_uri="s3://b/p/"), LambdaTarget(quantize="q8_0")):
        assert build_key(str(folder), other) != base, other
    (folder / "config.json").write_text('{"changed": 1}')
    assert build_key(str(folder), LambdaTarget()) != base  # a local model's files are part of it
    pins = tmp_path / "pins.txt"
    pins.write_text("numpy==2.2.6\n")
    pinned = build_key(str(folder), LambdaTarget(constraints=pins))
    pins.write_text("numpy==2.3.0\n")
    assert build_key(str(folder), LambdaTarget(constraints=pins)) != pinned  # the constraints' contents too


def test_a_second_name_links_the_first_build(tmp_path, builds):
    root = tmp_path / "builds"
    first = build_lambda_cached("minilm", root / "api", LambdaTarget())
    second = build_lambda_cached("minilm", root / "api-staging", LambdaTarget())
    assert len(builds) == 1
    assert first.manifest == second.manifest
    names = sorted(p.name for p in (root / "api").iterdir())
    assert names == sorted(p.name for p in (root / "api-staging").iterdir())
    for name in names:
        a, b = root / "api" / name, root / "api-staging" / name
        if a.is_file():
            assert a.read_bytes() == b.read_bytes() and os.path.samefile(a, b)  # linked, not copied

    build_lambda_cached("minilm", root / "api-arm", LambdaTarget(arch="arm64"))  # another target: built
    assert [t.arch for _, t in builds] == ["x86_64", "arm64"]
    build_lambda_cached("minilm", root / "api", LambdaTarget(), force=True)  # --rebuild: built again
    assert len(builds) == 3 and json.loads((root / "api" / "manifest.json").read_text())


def test_deploy_reuses_an_identical_build_made_for_another_name(tmp_path, builds, monkeypatch, capsys):
    from votive.cli.deployments import obtain_lambda_build

    monkeypatch.chdir(tmp_path)
    one = obtain_lambda_build("minilm", "one", arch=None, python="3.12", stream=False, rebuild=False)
    two = obtain_lambda_build("minilm", "two", arch=None, python="3.12", stream=False, rebuild=False)
    assert len(builds) == 1 and one.model == two.model == "minilm"
    assert "reusing an identical build of minilm" in capsys.readouterr().err
    assert Path(".votive/builds/two/manifest.json").is_file()

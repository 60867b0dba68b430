"""What one part hands another inside a process goes as an object, never through os.environ: a model source is
resolved once (votive serve, a built function's entry point) and votive.load takes it as it is; importing votive
changes no environment variable, and the numpy backend sets numpy's OpenBLAS threads through OpenBLAS itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


import votive
from votive import sources
from votive.handlers import embeddings, entry
from votive.protocol.payload_v2 import HttpRequest, request_event

REPO = Path(__file__).resolve().parent.parent


def _no_second_resolution(monkeypatch):
    def refuse(source, **kwargs):
        raise AssertionError(f"resolved a second time: {source!r}")

    monkeypatch.setattr(sources, "resolve_source", refuse)


def test_load_takes_a_resolved_source_as_it_is(minilm_dir, monkeypatch):
    resolved = sources.resolve_source("minilm")
    _no_second_resolution(monkeypatch)
    model = votive.load(resolved)
    assert model.model_id == resolved.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert model.embed(["hello"]).shape == (1, 384)


def test_handler_built_for_a_resolved_source_reads_no_model_variable(minilm_dir, monkeypatch):
    resolved = sources.resolve_source(minilm_dir)
    monkeypatch.delenv("VOTIVE_MODEL", raising=False)
    _no_second_resolution(monkeypatch)
    handler = embeddings.load_handler({"VOTIVE_BATCH_SIZE": "4"}, source=resolved)
    answer = handler({"input": ["hello", "world"]}, None)
    assert len(answer["data"]) == 2 and "VOTIVE_MODEL" not in os.environ


def test_serve_resolves_its_model_once(minilm_dir, monkeypatch):
    """`votive serve` resolves MODEL, picks the handler from it and builds that handler around the same object."""
    from votive.cli import serve

    seen = []
    real = sources.resolve_source

    def counting(source, **kwargs):
        seen.append(source)
        return real(source, **kwargs)

    monkeypatch.setattr(sources, "resolve_source", counting)
    resolved = sources.resolve_source(str(minilm_dir))
    init = serve.handler_init(serve.default_handler(resolved), resolved)
    handler = init()
    assert handler({"input": "hi"}, None)["model"] == resolved.model_id
    assert seen == [str(minilm_dir)]


def test_entry_point_leaves_the_environment_as_it_found_it(tmp_path, minilm_dir):
    (tmp_path / "votive_function.json").write_text(json.dumps(
        {"handler": "votive.handlers.embeddings.handler", "environment": {"VOTIVE_MAX_INPUTS": "3"},
         "model": {"placement": "layer", "path": str(minilm_dir)}}))
    environ = {"LAMBDA_TASK_ROOT": "/var/task"}
    before = dict(environ)
    handler = entry.function_handler(str(tmp_path / "votive_function.py"), environ)
    assert environ == before
    body = json.dumps({"input": ["a", "b", "c", "d"]}).encode()
    request = HttpRequest("POST", "/v1/embeddings", [("content-type", "application/json")], body)
    answer = handler(request_event(request, request_id="r", now=0.0), None)
    # the file's VOTIVE_MAX_INPUTS=3 reached the handler without passing through the environment
    assert answer["statusCode"] == 400 and "more than the 3" in json.loads(answer["body"])["error"]["message"]


def _python(code: str, **env) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    result = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                            check=True, cwd=REPO)
    return result.stdout.strip()


def test_importing_votive_changes_no_environment_variable():
    code = ("import os; before = dict(os.environ); import votive, votive.models, votive.handlers.embeddings; "
            "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    assert _python(code) == "[]"


def test_numpy_backend_sets_openblas_threads_through_openblas():
    code = ("import os; from votive.backends import numpy_backend as nb; from votive.quant import cpus; "
            "print(nb.blas_threads, cpus.available_cpus(), 'OPENBLAS_NUM_THREADS' in os.environ)")
    threads, cores, in_environ = _python(code).split()
    assert threads == cores and in_environ == "False"


def test_a_count_the_user_set_is_left_alone():
    code = "from votive.backends import numpy_backend as nb; print(nb.blas_threads)"
    assert _python(code, OPENBLAS_NUM_THREADS="1") == "None"

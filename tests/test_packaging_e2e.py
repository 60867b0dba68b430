"""Real builds, run by themselves: what `votive build` writes serves real requests with nothing else around.

Each Lambda build is unzipped into an empty tree laid out as Lambda lays it out (layers in opt/, the function in
var/task/, Lambda's own awslambdaric and boto3 in var/lang/...), and the same Python starts there isolated
(`-I -S`: no PYTHONPATH, no site-packages of this machine) with only Lambda's import path. The real awslambdaric
polls the Runtime API emulator, and requests arrive through the local function URL or as direct invokes. The
answers are checked against sentence-transformers' reference embeddings.

Builds are made once per session (pip reads wheels for the target from the package index; kernels, slimming,
bytecode and zips are real). The tree runs on this interpreter, so the Lambda builds target its Python version.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

from votive.builders.lambda_build import LambdaTarget, build_lambda
from votive.builders.targets import LAMBDA_RUNTIMES
from votive.emulators.local_tree import LambdaTree

PY = f"{sys.version_info.major}.{sys.version_info.minor}"
pytestmark = pytest.mark.skipif(PY not in LAMBDA_RUNTIMES, reason=f"Python {PY} is not a Lambda runtime")


@pytest.fixture(scope="session")
def lambda_builds(tmp_path_factory) -> dict:
    """MiniLM for this Python on x86_64, weights bundled in a layer and staged for S3: {placement: BuildResult}."""
    root = tmp_path_factory.mktemp("lambda-builds")
    return {placement: build_lambda("minilm", root / placement, LambdaTarget(arch="x86_64", python=PY,
                                                                            weights=placement))
            for placement in ("layer", "s3")}


@pytest.fixture(scope="module")
def reference(reference_dir):
    sentences = json.loads((reference_dir / "minilm_sentences.json").read_text())["sentences"]
    return sentences, np.load(reference_dir / "minilm_embeddings.npy")


@pytest.fixture(scope="module")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _s3_client(endpoint):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def _staged_tree(build: Path, client, bucket: str, tmp_path: Path, endpoint: str) -> tuple[LambdaTree, dict]:
    """Upload a build's s3/ folder under `bucket`/model/, unpack the build into a tree with Lambda's runtime
    packages (boto3 among them); returns the tree and the variables pointing the function at the bucket."""
    client.create_bucket(Bucket=bucket)
    staged = build / "s3"
    for path in sorted(p for p in staged.rglob("*") if p.is_file()):
        client.upload_file(str(path), bucket, "model/" + path.relative_to(staged).as_posix())
    tree = LambdaTree(tmp_path / "lambda", PY)
    tree.install_build(build)
    tree.install_runtime_packages()
    env = {"VOTIVE_MODEL_S3": f"s3://{bucket}/model/", "AWS_ENDPOINT_URL_S3": endpoint,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    return tree, env


def _post(url: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read())


def _cosines(got, expected) -> np.ndarray:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    return (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)


def _probe(tree: LambdaTree, code: str) -> dict:
    """Run `code` with the tree's import path in an isolated interpreter; it prints one JSON object."""
    front, back = tree.import_path()
    program = f"import sys, json; sys.path[:0] = {front!r}; sys.path += {back!r}\n{code}"
    done = subprocess.run([sys.executable, "-I", "-S", "-c", program], capture_output=True, text=True,
                          env=tree.environment(), cwd=tree.task, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_bundled_build_answers_real_requests_through_awslambdaric(lambda_builds, tmp_path, reference):
    from votive.emulators.function_url import FunctionUrlServer

    tree = LambdaTree(tmp_path / "lambda", PY)
    manifest = tree.install_build(lambda_builds["layer"].out)
    tree.install_runtime_packages()
    sentences, expected = reference
    with tree.emulator(sys.executable, init_timeout_s=120) as function:
        server = FunctionUrlServer(function)
        server.start()
        try:
            status, answer = _post(server.url, "/v1/embeddings", {"input": sentences, "model": "minilm"})
            with urllib.request.urlopen(server.url + "/health", timeout=30) as response:
                health = json.loads(response.read())
        finally:
            server.stop()
    assert status == 200 and answer["model"] == "all-MiniLM-L6-v2"
    got = [item["embedding"] for item in sorted(answer["data"], key=lambda d: d["index"])]
    assert _cosines(got, expected).min() > 0.9999
    assert health["model"] == "all-MiniLM-L6-v2" and health["dimension"] == 384
    assert manifest["weights"]["placement"] == "layer"


def test_the_tree_imports_only_what_the_build_put_there(lambda_builds, tmp_path):
    tree = LambdaTree(tmp_path / "lambda", PY)
    manifest = tree.install_build(lambda_builds["layer"].out)
    facts = _probe(tree, """
import importlib.util, numpy, votive
from votive.quant import kernels
lib = kernels.get()
print(json.dumps({"files": [numpy.__file__, votive.__file__, str(lib.path)],
                  "numpy": numpy.__version__, "isa": lib.isa,
                  "absent": [m for m in ("huggingface_hub", "jinja2", "awslambdaric", "pytest", "tokenizers")
                             if importlib.util.find_spec(m) is None]}))
""")
    opt = str(tree.opt / "python")
    assert all(path.startswith(opt) for path in facts["files"]), facts["files"]
    assert facts["numpy"] == manifest["runtime_layer"]["dependencies"]["numpy"]  # the target's, not this venv's
    assert facts["absent"] == ["huggingface_hub", "jinja2", "awslambdaric", "pytest", "tokenizers"]  # WordPiece: ours
    assert facts["isa"] in ("sse2", "avx2", "avx512")  # the kernel library built for the target loaded


def test_builds_are_reproducible(lambda_builds):
    """The two builds share every input of the runtime layer (wheels, votive, kernels), so its bytes match."""
    layer, s3 = (lambda_builds[p].artifact("runtime") for p in ("layer", "s3"))
    assert layer["sha256"] == s3["sha256"] and layer["unzipped_bytes"] == s3["unzipped_bytes"]
    manifest = lambda_builds["layer"].manifest
    for check in manifest["limits"]:
        assert check["ok"] or check["severity"] == "warning", check["message"]
    with zipfile.ZipFile(lambda_builds["layer"].out / layer["name"]) as zf:
        names = zf.namelist()
    assert f"python/numpy/__pycache__/__init__.cpython-{PY.replace('.', '')}.pyc" in names
    assert not [n for n in names if "huggingface_hub" in n or "/tests/" in n or n.endswith(".pyi")]


def test_s3_staged_build_fetches_its_weights_at_init(lambda_builds, tmp_path, reference, s3_endpoint):
    build = lambda_builds["s3"]
    assert build.manifest["weights"]["placement"] == "s3"
    client = _s3_client(s3_endpoint)
    tree, env = _staged_tree(build.out, client, "e2e-models", tmp_path, s3_endpoint)
    sentences, expected = reference
    with tree.emulator(sys.executable, env=env, init_timeout_s=120) as function:
        outcome = function.invoke({"input": sentences[:3]})
    assert outcome.ok, outcome.error
    got = [item["embedding"] for item in json.loads(outcome.payload)["data"]]
    assert _cosines(got, expected[:3]).min() > 0.9999
    fetched = tree.root / "tmp" / "votive-model"
    assert (fetched / "all-MiniLM-L6-v2" / "model.safetensors").is_file() and (fetched / ".votive-complete").is_file()

    # A later process in the same environment finds the checked files in /tmp and fetches nothing.
    for item in client.list_objects_v2(Bucket="e2e-models")["Contents"]:
        client.delete_object(Bucket="e2e-models", Key=item["Key"])
    with tree.emulator(sys.executable, env=env, init_timeout_s=120) as function:
        assert function.invoke({"input": "again"}).ok


def test_s3_staged_build_without_a_location_fails_init_saying_what_to_set(lambda_builds, tmp_path):
    from votive.errors import EmulatorError

    tree = LambdaTree(tmp_path / "lambda", PY)
    tree.install_build(lambda_builds["s3"].out)
    tree.install_runtime_packages(["awslambdaric"])
    with pytest.raises(EmulatorError, match="VOTIVE_MODEL_S3=s3://bucket/prefix/") as caught:
        with tree.emulator(sys.executable, init_timeout_s=120):
            pass
    assert "Votive.ConfigError" in caught.value.lambda_error["errorMessage"]


@pytest.mark.skipif(platform.machine() != "aarch64" and not shutil.which("aarch64-linux-gnu-gcc"),
                    reason="cross-building the kernels for arm64 needs aarch64-linux-gnu-gcc "
                           "(apt-get install gcc-aarch64-linux-gnu qemu-user)")
def test_arm64_build_is_built_for_aarch64(tmp_path):
    result = build_lambda("minilm", tmp_path / "arm", LambdaTarget(arch="arm64", python="3.12", weights="s3"))
    manifest = result.manifest
    assert manifest["target"]["machine"] == "aarch64" and manifest["target"]["glibc"] == "2.34"
    kernels = manifest["runtime_layer"]["kernels"]
    assert kernels["machine"] == "aarch64"
    if "qemu" in kernels["selftest"] or kernels["selftest"] == "passed (native)":
        assert kernels["selftest"].startswith("passed")
    with zipfile.ZipFile(result.out / result.artifact("runtime")["name"]) as zf:
        libraries = [n for n in zf.namelist() if ".so" in n.rsplit("/", 1)[-1]]
        machines = {n: int.from_bytes(zf.read(n)[18:20], "little") for n in libraries}
        wheel_tags = [line for n in zf.namelist() if n.endswith(".dist-info/WHEEL")
                      for line in zf.read(n).decode().splitlines() if line.startswith("Tag:")]
        pycs = [n for n in zf.namelist() if n.endswith(".pyc")]
    assert "python/votive/quant/libvotive.so" in machines
    assert set(machines.values()) == {183}, machines  # EM_AARCH64, every one
    assert wheel_tags and all(tag.endswith("aarch64") or tag.endswith("-any") for tag in wheel_tags), wheel_tags
    if manifest["runtime_layer"]["bytecode"]["files"]:
        assert all(".cpython-312." in n for n in pycs)


def test_image_context_runs_the_same_way(tmp_path, reference):
    from votive.builders.image_build import ImageTarget, build_image

    manifest = build_image("minilm", tmp_path / "image", ImageTarget(python=PY))
    assert manifest["built"] is False and manifest["build_command"].startswith("docker build --platform linux/amd64")
    dockerfile = (tmp_path / "image" / "Dockerfile").read_text()
    assert f"FROM python:{PY}-slim-bookworm" in dockerfile
    lines = dockerfile.splitlines()
    copies = [line for line in lines if line.startswith("COPY")]
    assert copies[0] == "COPY model/ /opt/model/"  # the weights' layer comes before the code's
    assert lines[-2:] == ['ENTRYPOINT ["/var/task/votive-entry"]', 'CMD ["votive_function.handler"]']
    assert manifest["image"]["runtime_client"] == ["/usr/local/bin/python", "-m", "awslambdaric"]
    tree = LambdaTree(tmp_path / "container", PY)
    tree.install_dockerfile_context(tmp_path / "image")  # awslambdaric comes from the image's own /opt/python
    sentences, expected = reference
    with tree.emulator(sys.executable, init_timeout_s=120) as function:
        outcome = function.invoke({"input": sentences[:2]})
    assert outcome.ok, outcome.error
    got = [item["embedding"] for item in json.loads(outcome.payload)["data"]]
    assert _cosines(got, expected[:2]).min() > 0.9999

    # Without AWS_LAMBDA_RUNTIME_API (`docker run -p 9000:8080`), the entry script serves HTTP itself. Run it as
    # the image would, with the image's ENV, this interpreter for the image's, and the tree as its root.
    entry = tree.root / "var/task/votive-entry"
    assert os.access(entry, os.X_OK)
    script = tmp_path / "votive-entry"
    script.write_text(entry.read_text().replace("/usr/local/bin/python", sys.executable))
    script.chmod(0o755)
    env = {"PATH": "/usr/bin:/bin", "PORT": "0", "LAMBDA_TASK_ROOT": str(tree.task),
           "PYTHONPATH": f"{tree.task}:{tree.opt / 'python'}", "PYTHONDONTWRITEBYTECODE": "1"}
    server = subprocess.Popen([str(script), "votive_function.handler"], cwd=tree.task, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = server.stdout.readline()
        assert " answering on " in banner, server.stderr.read()
        url = banner.split(" answering on ")[1].split()[0].replace("0.0.0.0", "127.0.0.1")
        for path, body in (("/v1/embeddings", {"input": sentences[:2]}),
                           ("/2015-03-31/functions/function/invocations", {"input": sentences[:2]})):
            request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                             headers={"content-type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                got = [item["embedding"] for item in json.loads(response.read())["data"]]
            assert _cosines(got, expected[:2]).min() > 0.9999, path
    finally:
        server.terminate()
        server.communicate(timeout=30)


def test_modal_app_constructs_offline_and_serves_through_its_own_lifecycle(tmp_path, reference):
    pytest.importorskip("modal")
    from votive.builders.modal_build import ModalTarget, build_modal

    out = tmp_path / "modal"
    manifest = build_modal("minilm", out, ModalTarget(python=PY, min_containers=1, max_containers=3))
    assert manifest["app"]["requirements"][0].startswith("numpy==")
    sentences, expected = reference
    program = f"""
import asyncio, json, os, sys
sys.path.insert(0, {str(out)!r})
import modal_app
spec = modal_app.app.registered_functions["Endpoint.*"]._spec_
user = modal_app.Endpoint._get_user_cls()
endpoint = user()
endpoint.load()
endpoint.place_on_gpu()
app = endpoint.web()
sent = []
async def receive():
    return {{"type": "http.request", "body": json.dumps({{"input": {sentences[:2]!r}}}).encode()}}
async def send(message):
    sent.append(message)
asyncio.run(app({{"type": "http", "method": "POST", "path": "/v1/embeddings", "headers": []}}, receive, send))
import votive
print(json.dumps({{"name": modal_app.app.name, "gpu": spec.gpus, "status": sent[0]["status"],
                  "answer": json.loads(sent[1]["body"]), "votive": votive.__file__}}))
"""
    env = {**os.environ, "VOTIVE_MODEL": str(out / "model" / "all-MiniLM-L6-v2")}
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=env, timeout=180,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts["name"] == "votive-sentence-transformers-all-minilm-l6-v2" and facts["gpu"] is None
    assert facts["votive"].startswith(str(out))  # the app's own copy of votive served
    assert facts["status"] == 200
    got = [item["embedding"] for item in facts["answer"]["data"]]
    assert _cosines(got, expected[:2]).min() > 0.9999


@pytest.mark.slow
def test_gguf_decoder_too_large_to_bundle_is_staged_and_served(gemma_gguf, tmp_path, s3_endpoint):
    """Gemma 3 270M (253 MB) cannot be bundled beside the runtime layer: the build stages it for S3, and the
    function fetches it at init and serves it from the tree."""
    result = build_lambda(str(gemma_gguf), tmp_path / "gemma", LambdaTarget(arch="x86_64", python=PY))
    manifest = result.manifest
    assert manifest["weights"]["placement"] == "s3" and "over Lambda's 250 MB" in manifest["weights"]["why"]
    assert "jinja2" in manifest["runtime_layer"]["dependencies"]  # chat templates
    tree, env = _staged_tree(result.out, _s3_client(s3_endpoint), "e2e-gguf", tmp_path, s3_endpoint)
    with tree.emulator(sys.executable, env=env, init_timeout_s=300) as function:
        health = function.invoke({"path": "/health"})
        completion = function.invoke({"prompt": "The capital of France is", "max_tokens": 6, "temperature": 0})
    assert health.ok and completion.ok, (health.error, completion.error)
    assert gemma_gguf.name in json.loads(health.payload)["model"]
    answer = json.loads(completion.payload)
    assert answer["choices"][0]["text"].strip() and 1 <= answer["usage"]["completion_tokens"] <= 6


@pytest.mark.slow
def test_streaming_image_streams_tokens_through_its_runtime_loop(smollm_gguf, tmp_path):
    """An image built --stream runs votive's runtime loop instead of awslambdaric and streams Server-Sent Events
    through the function URL as the tokens are made."""
    from votive.builders.image_build import STREAM_RUNTIME, ImageTarget, build_image
    from votive.emulators.function_url import FunctionUrlServer

    manifest = build_image(str(smollm_gguf), tmp_path / "image", ImageTarget(python=PY, stream=True))
    assert manifest["image"]["runtime_client"][-1] == STREAM_RUNTIME
    assert manifest["image"]["invoke_mode"] == "RESPONSE_STREAM"
    tree = LambdaTree(tmp_path / "container", PY)
    tree.install_dockerfile_context(tmp_path / "image")
    with tree.emulator(sys.executable, runtime=STREAM_RUNTIME, init_timeout_s=120) as function:
        server = FunctionUrlServer(function)
        server.start()
        try:
            body = {"prompt": "Once upon a time", "max_tokens": 6, "temperature": 0, "stream": True}
            request = urllib.request.Request(server.url + "/v1/completions", data=json.dumps(body).encode(),
                                             headers={"content-type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=120) as response:
                kind = response.headers["content-type"]
                events = [line for line in response.read().decode().splitlines() if line.startswith("data: ")]
        finally:
            server.stop()
    assert kind.startswith("text/event-stream")
    assert events[-1] == "data: [DONE]" and len(events) >= 3
    pieces = [json.loads(e[len("data: "):])["choices"][0]["text"] for e in events[:-1]
              if json.loads(e[len("data: "):]).get("choices")]
    assert "".join(pieces).strip()


@pytest.mark.slow  # ~40 s on 2 cores: a real build (pip for the target, kernels, a 98 MB model layer)
def test_streaming_zip_build_streams_chat_through_its_wrapper_script(tmp_path):
    """A zip built --stream, unpacked into a Lambda-like tree: the runtime is started through the wrapper script the
    manifest names in AWS_LAMBDA_EXEC_WRAPPER, as Lambda's managed Python runtime starts it, and a chat
    completion arrives through the function URL as Server-Sent Events, chunk by chunk."""
    from votive.emulators.function_url import FunctionUrlServer

    result = build_lambda("smollm2", tmp_path / "build", LambdaTarget(arch="x86_64", python=PY, stream=True))
    settings = result.manifest["settings"]
    assert settings["invoke_mode"] == "RESPONSE_STREAM" and result.manifest["weights"]["placement"] == "layer"
    tree = LambdaTree(tmp_path / "lambda", PY)
    tree.install_build(result.out)
    with tree.emulator(sys.executable, env=settings["environment"], init_timeout_s=120) as function:
        assert function.command[0] == str(tree.task / "votive-stream-runtime")
        server = FunctionUrlServer(function)
        server.start()
        try:
            body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6, "temperature": 0,
                    "stream": True}
            request = urllib.request.Request(server.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                             headers={"content-type": "application/json"}, method="POST")
            with urllib.request.urlopen(request, timeout=120) as response:
                kind = response.headers["content-type"]
                events = [line.decode().rstrip() for line in response if line.startswith(b"data: ")]
        finally:
            server.stop()
    assert kind.startswith("text/event-stream")
    assert events[-1] == "data: [DONE]" and len(events) >= 4, events
    deltas = [choice["delta"].get("content", "") for e in events[:-1]
              for choice in json.loads(e[len("data: "):]).get("choices", [])]
    assert len([d for d in deltas if d]) >= 2 and "".join(deltas).strip(), deltas

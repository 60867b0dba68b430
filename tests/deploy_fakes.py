"""Stand-ins for the deployment tests: small builds written by hand in the manifest layout `votive build lambda`
writes (votive.builders.lambda_build), AWS clients on a moto server, a recorder of the calls that change AWS,
and a progress UI that keeps its lines.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

READ_ONLY_PREFIXES = ("Get", "List", "Head", "Describe")
REGION = "eu-west-1"


def write_zip(path: Path, files: dict[str, bytes]) -> dict:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in sorted(files.items()):
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    return {"name": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "zipped_bytes": path.stat().st_size, "unzipped_bytes": sum(len(v) for v in files.values()),
            "files": len(files)}


def make_build(folder: Path, *, model: str = "minilm", arch: str = "x86_64", python: str = "3.12",
               code: bytes = b"handler = None\n", weights: str = "layer", weight_bytes: bytes = b"w" * 1000,
               unzipped_extra: int = 0, invoke_mode: str | None = None, memory_mb: int = 2048,
               environment: dict[str, str] | None = None, serves_with: str | None = None) -> Path:
    """A build folder: runtime layer, function zip, the weights as a layer or staged for S3, and the manifest.

    `unzipped_extra` inflates the runtime layer's recorded unzipped size (to test the 250 MB limit without
    writing 250 MB). The handler is the embeddings one, or the generation one for a streaming build.
    """
    streaming = invoke_mode == "RESPONSE_STREAM"
    serves_with = serves_with or f"votive.handlers.{'generation' if streaming else 'embeddings'}.handler"
    folder.mkdir(parents=True, exist_ok=True)
    runtime = f"python{python}"
    function = write_zip(folder / "votive-function.zip", {"votive_function.py": code,
                                                          "votive_function.json": b"{}"})
    layer = write_zip(folder / f"votive-runtime-{runtime}-{arch}.zip", {"python/votive/__init__.py": b"x = 1\n"})
    layer["unzipped_bytes"] += unzipped_extra
    artifacts = [dict(function, role="function", deploys_as="function code (/var/task)"),
                 dict(layer, role="runtime", deploys_as="layer (/opt/python)")]
    files = {"config.json": b"{}", "model.safetensors": weight_bytes}
    if weights == "layer":
        model_zip = write_zip(folder / "votive-model-test.zip", {f"model/{n}": d for n, d in files.items()})
        artifacts.append(dict(model_zip, role="model", deploys_as="layer (/opt/model)"))
    else:
        for name, data in files.items():
            (folder / "s3").mkdir(exist_ok=True)
            (folder / "s3" / name).write_bytes(data)
    settings = {"runtime": runtime, "architectures": [arch], "handler": "votive_function.handler",
                "memory_mb": memory_mb, "ephemeral_storage_mb": 512, "timeout_s": 30,
                "layers": [a["name"] for a in artifacts if a["role"] != "function"],
                "environment": {**(environment or {}),
                                **({"VOTIVE_MODEL_S3": "s3://BUCKET/PREFIX/"} if weights == "s3" else {})}}
    if invoke_mode:
        settings["invoke_mode"] = invoke_mode
    manifest = {
        "format": "votive-build/1", "platform": "aws-lambda",
        "model": {"source": model, "model_id": "test/" + model,
                  "kind": "encoder" if "embeddings" in serves_with else "decoder", "serves_with": serves_with},
        "target": {"runtime": runtime, "python": python, "architecture": arch},
        "artifacts": artifacts,
        "weights": {"placement": weights, "bytes": sum(map(len, files.values())),
                    "files": [{"name": n, "size": len(d)} for n, d in files.items()],
                    **({"s3": {"folder": "s3"}} if weights == "s3" else {})},
        "settings": settings, "limits": [], "warnings": [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


class RecordingUi:
    def __init__(self):
        self.lines: list[str] = []
        self.progress_calls: list[tuple[str, int, int]] = []

    def say(self, message: str) -> None:
        self.lines.append(message)

    def progress(self, label: str, done: int, total: int) -> None:
        self.progress_calls.append((label, done, total))


class CallRecorder:
    """Keeps every API call the given boto3 clients make that could change something: (operation, params)."""

    def __init__(self, *clients):
        self.calls: list[tuple[str, dict]] = []
        for client in clients:
            client.meta.events.register("provide-client-params", self._record)

    def _record(self, model, params, **_):
        if not model.name.startswith(READ_ONLY_PREFIXES):
            self.calls.append((model.name, params))

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def clear(self) -> None:
        self.calls.clear()


def fail_on(client, operation: str, code: str = "AccessDeniedException", message: str = "injected failure"):
    """Make `client`'s `operation` fail as AWS would (a ClientError), before it reaches the server."""
    from botocore.exceptions import ClientError

    def fail(model, **_):
        if model.name == operation:
            raise ClientError({"Error": {"Code": code, "Message": message}}, operation)

    client.meta.events.register("before-call", fail)
    return fail

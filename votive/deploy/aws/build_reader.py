"""A Lambda build as the deployer sees it: the artifacts `votive build lambda` wrote and what its manifest says.

The builder (votive.builders.lambda_build) writes a folder holding the runtime layer zip, the function zip, the weights
(bundled in a layer or the function zip, or as loose files staged for S3) and `manifest.json` naming each
artifact with its sha256 and sizes, the target (architecture, Python, runtime, handler) and the settings the
model needs. `read_build` turns that manifest into a `LambdaBuild`; it is the one place that knows the
manifest's layout. Every artifact is checked against its recorded size and sha256 before anything is uploaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from votive.builders.output import MANIFEST_FORMAT, MANIFEST_NAME
from votive.errors import DeployError
from votive.files import sha256_file

WEIGHTS_ENV = "VOTIVE_MODEL_S3"  # where the function fetches S3-staged weights from (votive.handlers.entry)


@dataclass(frozen=True)
class Artifact:
    """One file of a build."""

    name: str  # layer name ("runtime", "weights"), "function", or a weight file's path relative to its folder
    path: Path  # where it is on this machine
    sha256: str  # hex digest of the file's bytes
    size: int  # bytes on disk (zipped size for a zip)
    unzipped_size: int  # what it takes once unzipped (the size itself for a loose file)


@dataclass(frozen=True)
class LambdaBuild:
    """What a deployment needs to know about one build."""

    directory: Path
    model: str  # the model source it was built from, as given
    architecture: str  # "x86_64" or "arm64"
    runtime: str  # Lambda's Runtime value: "python3.12"
    handler: str  # the function's Handler setting
    function: Artifact  # the function zip
    layers: tuple[Artifact, ...] = ()  # in the order the function lists them
    s3_weights: tuple[Artifact, ...] = ()  # weight files the function fetches from S3 at init
    environment: dict[str, str] = field(default_factory=dict)  # variables the handler reads (VOTIVE_MODEL, ...)
    weights_bytes: int = 0  # the model's files, wherever they are placed
    memory_mb: int | None = None  # the memory the build suggests (weights, runtime, at least one vCPU)
    ephemeral_mb: int | None = None  # the /tmp the S3 weights need, when the build says
    timeout_s: int | None = None  # the timeout the build suggests for this kind of model
    streaming: bool = False  # votive's runtime loop streams answers (RESPONSE_STREAM), started by a wrapper script
    serves_with: str = ""  # the handler serving the model ("votive.handlers.embeddings.handler")
    manifest_sha256: str = ""

    @property
    def unzipped_total(self) -> int:
        """Function code plus layers, unzipped: what Lambda's 250 MB limit counts."""
        return self.function.unzipped_size + sum(layer.unzipped_size for layer in self.layers)

    @property
    def s3_weights_bytes(self) -> int:
        return sum(w.size for w in self.s3_weights)

    @property
    def weights_digest(self) -> str:
        """One digest for the S3 weights as a set: names and contents (their S3 folder is named after it)."""
        h = hashlib.sha256()
        for w in sorted(self.s3_weights, key=lambda w: w.name):
            h.update(f"{w.name}\0{w.sha256}\n".encode())
        return h.hexdigest()

    def artifacts(self) -> list[Artifact]:
        return [*self.layers, self.function, *self.s3_weights]


def is_build(path: Path) -> bool:
    """True if `path` is a folder holding a build manifest."""
    return (Path(path) / MANIFEST_NAME).is_file()


def read_build(directory: Path, *, verify: bool = True) -> LambdaBuild:
    """Read the manifest in `directory` and, with `verify`, check every artifact's size and sha256.

    Raises:
        DeployError: no manifest, a field missing or malformed, or an artifact missing or changed since the build.
    """
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    try:
        raw = path.read_bytes()
        manifest = json.loads(raw)
    except FileNotFoundError:
        raise DeployError(f"{directory} holds no {MANIFEST_NAME}: build it first with `votive build lambda`") from None
    except (OSError, ValueError) as exc:
        raise DeployError(f"{path}: cannot read the build manifest: {exc}") from None
    try:
        build = _from_manifest(directory, manifest, hashlib.sha256(raw).hexdigest())
    except (KeyError, TypeError, ValueError) as exc:
        raise DeployError(f"{path}: not a Lambda build manifest votive understands ({type(exc).__name__}: "
                          f"{exc})") from None
    if verify:
        computed = {w.name for w in build.s3_weights if w.name not in _recorded_digests(manifest)}
        for artifact in build.artifacts():
            if not (artifact in build.s3_weights and artifact.name in computed):  # just hashed: nothing to check
                check_artifact(artifact)
    return build


def _recorded_digests(manifest: dict) -> set[str]:
    return {f["name"] for f in manifest.get("weights", {}).get("files", []) if f.get("sha256")}


def check_artifact(artifact: Artifact) -> None:
    """DeployError unless the file is there with the size and sha256 the manifest recorded."""
    try:
        size = artifact.path.stat().st_size
    except OSError as exc:
        raise DeployError(f"{artifact.path}: build artifact missing: {exc.strerror}; rebuild") from None
    if size != artifact.size:
        raise DeployError(f"{artifact.path}: {size} bytes, but the manifest records {artifact.size}; it changed "
                          f"after the build: rebuild")
    digest = sha256_file(artifact.path)
    if digest != artifact.sha256:
        raise DeployError(f"{artifact.path}: sha256 {digest[:12]}..., the manifest records "
                          f"{artifact.sha256[:12]}...; it changed after the build: rebuild")


def _from_manifest(directory: Path, m: dict, manifest_sha256: str) -> LambdaBuild:
    if m.get("format") != MANIFEST_FORMAT or m.get("platform") != "aws-lambda":
        raise ValueError(f"format {m.get('format')!r} for {m.get('platform')!r}; expected {MANIFEST_FORMAT!r} for "
                         f"'aws-lambda'")
    settings = m["settings"]
    function, layers = None, {}
    for entry in m["artifacts"]:
        artifact = Artifact(name=str(entry["role"]), path=directory / entry["name"], sha256=str(entry["sha256"]),
                            size=int(entry["zipped_bytes"]), unzipped_size=int(entry["unzipped_bytes"]))
        if entry["role"] == "function":
            function = artifact
        else:
            layers[entry["name"]] = artifact
    if function is None:
        raise ValueError("no function zip among the artifacts")
    weights = m["weights"]
    s3_weights = []
    if weights["placement"] == "s3":
        folder = directory / weights["s3"]["folder"]
        for f in weights["files"]:
            path = folder / f["name"]
            # the manifest may leave the digest to the function's own configuration: then it is computed here
            digest = f.get("sha256") or (sha256_file(path) if path.is_file() else "")
            s3_weights.append(Artifact(str(f["name"]), path, digest, int(f["size"]), int(f["size"])))
    environment = {str(k): str(v) for k, v in settings.get("environment", {}).items() if k != WEIGHTS_ENV}
    return LambdaBuild(
        directory=directory,
        model=str(m["model"]["source"]),
        architecture=str(settings["architectures"][0]),
        runtime=str(settings["runtime"]),
        handler=str(settings["handler"]),
        function=function,
        layers=tuple(layers[name] for name in settings["layers"]),
        s3_weights=tuple(s3_weights),
        environment=environment,
        weights_bytes=int(weights.get("bytes", 0)),
        memory_mb=settings.get("memory_mb"),
        ephemeral_mb=settings.get("ephemeral_storage_mb"),
        timeout_s=settings.get("timeout_s"),
        streaming=settings.get("invoke_mode") == "RESPONSE_STREAM",
        serves_with=str(m["model"].get("serves_with") or ""),
        manifest_sha256=manifest_sha256,
    )

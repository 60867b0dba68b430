"""`votive build lambda`: a model as Lambda layers, a function zip and a manifest, for one architecture and Python.

What a build writes into its output folder:

    votive-runtime-python3.12-arm64.zip   layer: python/ = votive + numpy (+ tokenizers for a model whose
                                          tokenizer votive does not run itself), built for the target
    votive-model-<model>.zip              layer: model/ = the model's files (when they fit Lambda's limits)
    s3/<model files>                      ... or these, to upload to S3 and fetch at init (when they do not)
    votive-function.zip                   the function: votive_function.py (handler) + votive_function.json
                                          (+ votive-stream-runtime, the wrapper script, with --stream)
    manifest.json                         every artifact with sha256 and sizes, the target, the limits checked

With `quantize` ("q8_0", ...), a Hugging Face decoder folder is converted in the build's work area and its one
GGUF file is packed instead of the folder's files (a BERT encoder with "int8": the folder written again with int8
matrices; with "panels", which a float BERT folder gets without `quantize`: its float matrices stored as votive's
product reads them) (`votive.builders.model_files.quantize_model`); the manifest's weights.quantized says from
what, to what, and the bytes before and after.

Lambda unpacks layers under /opt (so /opt/python is on the import path and the model is at /opt/model) and the
function under /var/task; the function's handler is `votive_function.handler`.

With `stream` (generation models), the function zip also holds a wrapper script and the manifest's settings name
it in AWS_LAMBDA_EXEC_WRAPPER, so the managed Python runtime starts votive's streaming runtime loop instead of
awslambdaric, and the invoke mode is RESPONSE_STREAM (see `votive.builders.stream_wrapper`). Streaming is asked
for, not automatic: a streaming function's URL must be in RESPONSE_STREAM mode, which clients read differently.

Example:
    >>> result = build_lambda("minilm", Path("build/minilm"), LambdaTarget(arch="arm64"))    # doctest: +SKIP
    >>> result.manifest["artifacts"][0]["name"]                                                # doctest: +SKIP
    'votive-function.zip'
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import votive
from votive.builders import size_limits as limits
from votive.builders.archive import ArchiveInfo, Member, tree_members, write_zip
from votive.builders.bytecode import compile_tree
from votive.builders.dependencies import DependencyTarget
from votive.builders.model_files import ModelFiles, check_quantizable, collect_model, quantize_model
from votive.builders.output import MANIFEST_FORMAT, MANIFEST_NAME, check_destination, staged_output, write_json
from votive.builders.runtime_tree import build_runtime_tree
from votive.builders.slim import GPU_ONLY_RULES
from votive.builders.stream_wrapper import STREAMING_HANDLERS, WRAPPER_NAME, wrapper_environment, wrapper_script
from votive.builders.targets import LAMBDA_LIMITS, MB, architecture, lambda_runtime
from votive.builders.tools import BuildTools
from votive.errors import PackagingError
from votive.files import sha256_file
from votive.handlers.entry import CONFIG_NAME, ENTRY_MODULE, ENTRY_SOURCE

WEIGHT_PLACEMENTS = ("auto", "layer", "s3")
MODEL_MOUNT = "/opt/model"  # a layer's model/ folder, as Lambda unpacks it
S3_CACHE = "/tmp/votive-model"
FUNCTION_ZIP = "votive-function.zip"
S3_FOLDER = "s3"
# Weights barely compress (float and quantized data): level 1 saves within half a percent of level 9's bytes at
# a fraction of the time, which matters for models of hundreds of MB.
WEIGHTS_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class LambdaTarget:
    """What to build for.

    Attributes:
        arch: "x86_64" or "arm64" (Graviton: cheaper per GB-second, NEON kernels).
        python: the Lambda runtime's Python, "3.11", "3.12" or "3.13".
        weights: "auto" (a layer when everything fits in 250 MB unzipped, else S3), "layer" or "s3".
        s3_uri: where the staged weights will be uploaded (s3://bucket/prefix/); may also be set later on the
            function as VOTIVE_MODEL_S3.
        constraints: a pip constraints file pinning dependency versions.
        stream: run votive's streaming runtime loop through a wrapper script (RESPONSE_STREAM function URL);
            for models whose handler streams (generation).
        quantize: convert a Hugging Face decoder folder to one GGUF file of this type ("q8_0", "f16", "f32") and
            pack that instead of the folder's weights (a BERT encoder also takes "int8": a folder with int8
            matrices, or "panels": its float matrices stored packed); None packs the model's files as they are,
            but a float BERT encoder folder as "panels" (`panels_by_default`: the same embeddings, and a cold
            start that does not pack its matrices).
    """

    arch: str = "x86_64"
    python: str = "3.12"
    weights: str = "auto"
    s3_uri: str | None = None
    constraints: Path | None = None
    stream: bool = False
    quantize: str | None = None


@dataclass(frozen=True)
class BuildResult:
    out: Path  # the output folder
    manifest: dict  # what manifest.json holds

    def artifact(self, role: str) -> dict | None:
        return next((a for a in self.manifest["artifacts"] if a["role"] == role), None)


def build_lambda(model: str, out: Path, target: LambdaTarget = LambdaTarget(), *, force: bool = False,
                 tools: BuildTools | None = None) -> BuildResult:
    """Build the Lambda artifacts for `model` into the folder `out`.

    Args:
        model: any source `votive.load` takes: a folder, a .gguf, hf:org/name, pkg:NAME, an alias.
        out: the output folder; it must not exist unless `force` (and then must be an earlier build).
        target: architecture, Python version and where the weights go.
        force: replace an earlier build at `out`.
        tools: programs and progress reporting (default: the real ones, silent).

    Returns:
        The output folder and the manifest.

    Raises:
        PackagingError: a Lambda limit would be exceeded (the message says which, by how much, what to do), a tool
            failed, or `out` exists.
        ModelSourceError: the model cannot be found.
        InputError: `target.quantize` names a type the converter does not write, or the model is not a Hugging
            Face decoder folder.
        ModelConfigError: the folder holds something the converter cannot write (with `target.quantize`).
    """
    tools = tools or BuildTools()
    runtime = lambda_runtime(target.python)
    arch = architecture(target.arch)
    if target.weights not in WEIGHT_PLACEMENTS:
        raise PackagingError(f"weights placement {target.weights!r}; choose one of {', '.join(WEIGHT_PLACEMENTS)}")
    check_destination(out, force)  # before any work: an existing output is refused at once
    model_files = collect_model(model)
    quantize = target.quantize or ("panels" if panels_by_default(model_files) else None)
    if quantize is not None:
        check_quantizable(model_files, quantize, target.arch)  # refused before any work, as the others
    if target.stream and model_files.kind.handler not in STREAMING_HANDLERS:
        raise PackagingError(f"--stream: {model_files.model_id} is served by {model_files.kind.handler}, which answers "
                             "whole (only generation streams); build without --stream")
    if quantize is None:
        _check_model(model_files, tools)

    with staged_output(out, force) as stage:
        work = stage / ".work"
        quantized = None
        if quantize is not None:  # the limits are checked against what is packed: the converted file
            model_files, quantized = quantize_model(model_files, quantize, work / "quantized")
            tools.log(f"quantized: {quantized['to']['file']} ({quantize}), {quantized['from']['bytes']:,} "
                      f"-> {quantized['to']['bytes']:,} bytes")
            _check_model(model_files, tools)
        site = work / "layer" / "python"
        dep_target = DependencyTarget(runtime.python, arch, runtime.glibc)
        tree = build_runtime_tree(site, target=dep_target, deployed_as="/opt/python", tools=tools,
                                  unused=model_files.unused_requirements, extras=model_files.extras,
                                  unused_files=model_files.kind.unused_files + GPU_ONLY_RULES,
                                  constraints=target.constraints)
        runtime_zip = write_zip(stage / f"votive-runtime-{runtime.identifier}-{arch.name}.zip",
                                tree_members(site, "python/"))
        tools.log(f"layer: {runtime_zip.path.name} {runtime_zip.zipped_bytes / MB:.1f} MB zipped, "
                  f"{runtime_zip.unzipped_bytes / MB:.1f} MB unzipped")

        weights_bytes = model_files.total_bytes
        placement, placement_note = _place_weights(target.weights, runtime_zip.unzipped_bytes, weights_bytes)
        if placement == "s3":
            _raise_errors([limits.ephemeral_storage(limits.suggested_ephemeral_mb(weights_bytes))])
        model_config = _model_config(placement, model_files, target.s3_uri)

        function_dir = work / "function"
        function_dir.mkdir(parents=True)
        (function_dir / f"{ENTRY_MODULE}.py").write_text(ENTRY_SOURCE)
        write_json(function_dir / CONFIG_NAME, {"handler": model_files.kind.handler, "model": model_config,
                                                "environment": {}})
        if target.stream:
            (function_dir / WRAPPER_NAME).write_text(wrapper_script(runtime.python))
        compile_tree(function_dir, "/var/task", runtime.python, tools)
        function_zip = write_zip(stage / FUNCTION_ZIP, tree_members(function_dir, executable=[WRAPPER_NAME]))

        artifacts = [_artifact(function_zip, "function", "function code (/var/task)"),
                     _artifact(runtime_zip, "runtime", "layer (/opt/python)")]
        if placement == "layer":
            model_zip = write_zip(stage / f"votive-model-{model_files.slug}.zip",
                                  [Member(f"model/{name}", source=path) for name, path in model_files.layout],
                                  level=WEIGHTS_COMPRESS_LEVEL)
            artifacts.append(_artifact(model_zip, "model", f"layer ({MODEL_MOUNT})"))
        else:
            model_files.copy_to(stage / S3_FOLDER)  # uploaded as they are: keys are these names under the prefix
        # Listed now: a quantized GGUF lives in the work area, which goes next.
        packed = [{"name": n, "size": p.stat().st_size} for n, p in model_files.layout]
        shutil.rmtree(work)

        checks = _check_limits(artifacts, placement, weights_bytes)
        _raise_errors(checks)
        manifest = _manifest(model_files, runtime, arch, dep_target, tree, artifacts, placement, placement_note,
                             model_config, checks, weights_bytes, target.stream, packed, quantized)
        write_json(stage / MANIFEST_NAME, manifest)
    return BuildResult(Path(out).absolute(), manifest)


def panels_by_default(model_files: ModelFiles) -> bool:
    """A float BERT encoder folder (not already converted) is packed for Lambda with its matrices stored as panels
    (votive.builders.bert_folders.convert_bert_panels): loaded as it is, it would pack them at every cold start
    (~35 ms for MiniLM's 43 MB), for the same embeddings bit for bit. Only where votive's C library loads here (it
    does the packing)."""
    config = dict(model_files.files).get("config.json")
    if model_files.kind.name != "encoder" or model_files.weights or config is None:
        return False
    from votive.builders.gguf_convert_bert import is_bert_folder
    from votive.quant import kernels

    return is_bert_folder(config.parent) and b"quantization_config" not in config.read_bytes() and \
        kernels.available()


def _check_model(model_files: ModelFiles, tools: BuildTools) -> None:
    """The memory its weights need fits Lambda's; then say what is packed."""
    _raise_errors([limits.memory(limits.suggested_memory_mb(model_files.total_bytes))])
    tools.log(f"model: {model_files.model_id} ({model_files.kind.name}), {len(model_files.files)} files, "
              f"{model_files.total_bytes / MB:.1f} MB")


def _raise_errors(checks: list[limits.LimitCheck]) -> None:
    errors = [c for c in checks if not c.ok and c.severity == "error"]
    if errors:
        raise PackagingError("; ".join(c.message for c in errors))


def _place_weights(requested: str, runtime_unzipped: int, weights_bytes: int) -> tuple[str, str]:
    """'layer' or 's3', and why. Bundling must keep function + layers within Lambda's unzipped limit."""
    small_function = 64 * 1024  # the entry point and its config: a few kB; counted generously
    bundled_total = runtime_unzipped + weights_bytes + small_function
    fits = bundled_total <= LAMBDA_LIMITS.unzipped_total
    if requested == "s3":
        return "s3", "staged in S3 as asked (--weights s3)"
    if requested == "layer":
        if not fits:
            check = limits.unzipped_total({"runtime layer": runtime_unzipped, "model layer": weights_bytes,
                                           "function": small_function})
            raise PackagingError(check.message)
        return "layer", "bundled in a layer as asked (--weights layer)"
    if fits:
        return "layer", f"bundled: function and layers unzip to {bundled_total / MB:.1f} MB, within 250 MB"
    return "s3", (f"staged in S3: bundled, function and layers would unzip to {bundled_total / MB:.1f} MB, over "
                  "Lambda's 250 MB")


def _model_config(placement: str, model_files: ModelFiles, s3_uri: str | None) -> dict:
    if placement == "layer":
        return {"placement": "layer", "path": f"{MODEL_MOUNT}/{model_files.entry}"}
    if s3_uri is not None:
        from votive.handlers.s3_weights import parse_s3_uri

        s3_uri = parse_s3_uri(s3_uri).uri()  # checked now, not at the first cold start
    files = [{"name": name, "size": path.stat().st_size, "sha256": sha256_file(path)} for name, path in
             model_files.layout]
    return {"placement": "s3", "uri": s3_uri, "cache_dir": S3_CACHE, "entry": model_files.entry, "files": files}


def _artifact(info: ArchiveInfo, role: str, deploys_as: str) -> dict:
    return {"name": info.path.name, "role": role, "deploys_as": deploys_as, "sha256": info.sha256,
            "zipped_bytes": info.zipped_bytes, "unzipped_bytes": info.unzipped_bytes, "files": info.files}


def _check_limits(artifacts: list[dict], placement: str, weights_bytes: int) -> list[limits.LimitCheck]:
    checks = [limits.direct_upload(a["name"], a["zipped_bytes"]) for a in artifacts]
    checks.append(limits.unzipped_total({a["name"]: a["unzipped_bytes"] for a in artifacts}))
    checks.append(limits.layer_count(sum(1 for a in artifacts if a["role"] != "function")))
    checks.append(limits.memory(limits.suggested_memory_mb(weights_bytes)))
    if placement == "s3":
        checks.append(limits.ephemeral_storage(limits.suggested_ephemeral_mb(weights_bytes)))
    return checks


def _manifest(model_files, runtime, arch, dep_target, tree, artifacts, placement, placement_note, model_config,
              checks, weights_bytes, stream, packed, quantized) -> dict:
    environment = wrapper_environment() if stream else {}
    if placement == "s3":
        environment["VOTIVE_MODEL_S3"] = model_config.get("uri") or "s3://BUCKET/PREFIX/"
    settings = {
        "runtime": runtime.identifier,
        "architectures": [arch.name],
        "handler": f"{ENTRY_MODULE}.handler",
        "memory_mb": limits.suggested_memory_mb(weights_bytes),
        "ephemeral_storage_mb": (limits.suggested_ephemeral_mb(weights_bytes) if placement == "s3"
                                 else LAMBDA_LIMITS.ephemeral_storage_mb[0]),
        "timeout_s": model_files.kind.timeout_s,
        # Lambda's managed Python runtime posts an answer whole; a streaming build starts votive's own runtime loop
        # through the wrapper script named in its environment.
        "invoke_mode": "RESPONSE_STREAM" if stream else "BUFFERED",
        "layers": [a["name"] for a in artifacts if a["role"] != "function"],
        "environment": environment,
    }
    files = model_config["files"] if placement == "s3" else packed  # with sha256 when uploaded as they are
    weights = {"placement": placement, "why": placement_note, "bytes": weights_bytes, "files": files}
    if quantized is not None:
        weights["quantized"] = quantized
    if placement == "s3":
        weights["s3"] = {"folder": S3_FOLDER, "uri": model_config.get("uri"),
                         "upload": f"aws s3 cp --recursive {S3_FOLDER}/ {model_config.get('uri') or 's3://BUCKET/PREFIX/'}",
                         "fetched_to": model_config["cache_dir"]}
    return {
        "format": MANIFEST_FORMAT,
        "votive": votive.__version__,
        "platform": "aws-lambda",
        "model": {"source": model_files.source, "model_id": model_files.model_id, "kind": model_files.kind.name,
                  "serves_with": model_files.kind.handler},
        "target": {"runtime": runtime.identifier, "python": runtime.python, "architecture": arch.name,
                   "machine": arch.machine, "os": runtime.os, "glibc": "%d.%d" % runtime.glibc,
                   "wheel_abi": dep_target.abi},
        "artifacts": artifacts,
        "weights": weights,
        "runtime_layer": tree.to_json(),
        "settings": settings,
        "limits": [c.to_json() for c in checks],
        "warnings": [c.message for c in checks if not c.ok and c.severity == "warning"]
        + ([f"bytecode: {tree.bytecode.skipped}"] if tree.bytecode.skipped else [])
        + ([f"strip: {tree.stripped.skipped}"] if tree.stripped.skipped else [])
        + ([f"kernel self-test {tree.kernels.selftest}"] if tree.kernels.selftest.startswith("skipped") else []),
    }

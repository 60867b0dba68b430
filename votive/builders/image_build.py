"""`votive build image`: a container image build context for a model, for Lambda or a GPU serverless platform.

The context is self-contained: dependencies are resolved for the image's Python, CPU and C library by the same
steps as a Lambda layer, so `docker build` copies files and downloads nothing except the base image (and, for the
GPU image, the distribution's Python). Layout, in the image as in a Lambda deployment:

    model/   -> /opt/model     first, in its own image layer: a code change does not push the weights again
    python/  -> /opt/python    votive, its dependencies and awslambdaric (plus cupy for --gpu)
    task/    -> /var/task      votive_function.py + votive_function.json, the handler

The entry point is a script, `/var/task/votive-entry`, that runs the Lambda runtime client where a Lambda
service runs the image (it sets AWS_LAMBDA_RUNTIME_API) and votive's own endpoint everywhere else
(`votive.handlers.local_endpoint` on :8080, in place of AWS's Runtime Interface Emulator), so that
`docker run -p 9000:8080 IMAGE` answers `curl localhost:9000/v1/embeddings` and the Emulator's invoke path
alike, and a GPU container platform (ECS, SageMaker, Cloud Run, RunPod and the like: Lambda has no GPUs) can
serve it as it is. The runtime client is awslambdaric (`python -m awslambdaric votive_function.handler`), as for
any Lambda container image not built on AWS's base images; with `--stream` it is votive's own runtime loop
(`votive.handlers.stream_runtime`), which posts answers in Lambda's streaming mode, for a function URL in
RESPONSE_STREAM invoke mode (token-by-token generation). With `--gpu` the base is NVIDIA's CUDA runtime image, cupy is added,
VOTIVE_BACKEND=cupy, and a build step compiles votive's CUDA kernels ahead of time for every GPU generation
(`python -m votive.quant.cuda_kernels build`, NVRTC from the base image, no GPU needed) into
VOTIVE_CUDA_KERNELS, so that no start compiles them. An optional step (`--build-arg VOTIVE_WARM=1`, which needs a
GPU visible to the build) also warms cupy's own kernel cache for the array arithmetic between them (see
`votive.handlers.warm`).

When a Docker engine answers, the image is built; otherwise (as on the machines votive is developed on) the
context is written and the command to build it is printed.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import votive
from votive.builders.archive import tree_size
from votive.builders.bytecode import compile_tree
from votive.builders.dependencies import DependencyTarget
from votive.builders.model_files import collect_model
from votive.builders.output import MANIFEST_FORMAT, MANIFEST_NAME, check_destination, staged_output, write_json
from votive.builders.runtime_tree import build_runtime_tree
from votive.builders.slim import GPU_ONLY_RULES
from votive.builders.stream_wrapper import STREAM_RUNTIME
from votive.builders.targets import GPU_PINS, LAMBDA_LIMITS, architecture
from votive.builders.tools import BuildTools
from votive.errors import PackagingError
from votive.handlers.entry import CONFIG_NAME, ENTRY_MODULE, ENTRY_SOURCE
from votive.handlers.local_endpoint import INVOKE_PATH
from votive.quant import cuda_kernels

CUPY_CACHE = "/opt/cupy-cache"
CUDA_KERNELS = "/opt/votive-kernels"  # the ahead-of-time build of votive's CUDA kernels, $VOTIVE_CUDA_KERNELS
_KERNEL_BUILD = f"-m votive.quant.cuda_kernels build --out {CUDA_KERNELS}"  # run by the image's Python


@dataclass(frozen=True)
class BaseImage:
    """A base image and what the build must know about it."""

    image: str  # with {python} where the Python version goes
    glibc: tuple[int, int]  # the distribution's C library: wheels and the kernel library must not need newer
    python: str  # the interpreter's path in the image
    pythons: tuple[str, ...]  # the Python versions it offers
    setup: tuple[str, ...] = ()  # RUN steps before the files are copied


# Tags, not digests: pin a digest (image@sha256:...) in the Dockerfile for a build that never changes.
BASE_IMAGES: dict[str, BaseImage] = {
    # Debian 12 (glibc 2.36) with CPython from python.org's official image.
    "cpu": BaseImage("python:{python}-slim-bookworm", (2, 36), "/usr/local/bin/python", ("3.11", "3.12", "3.13")),
    # Ubuntu 24.04 (glibc 2.39) with the CUDA 12 runtime libraries (NVRTC included, which cupy compiles with).
    "gpu": BaseImage("nvidia/cuda:12.6.3-runtime-ubuntu24.04", (2, 39), "/usr/bin/python3", ("3.12",),
                     ("apt-get update && apt-get install -y --no-install-recommends python3 "
                      "&& rm -rf /var/lib/apt/lists/*",)),
}
# cupy built for CUDA 12, matching the base image's runtime, at the version the Modal app pins too
GPU_REQUIREMENTS = (f"cupy-cuda12x=={GPU_PINS['cupy-cuda12x']}",)
ENTRY_SCRIPT = "votive-entry"  # in /var/task: the runtime client on Lambda, votive's local endpoint elsewhere
LOCAL_PORT = 8080  # where the local endpoint answers, as the Runtime Interface Emulator does
IMAGE_REQUIREMENTS = ("awslambdaric",)  # the entry point; AWS's own base images have it, others need it


@dataclass(frozen=True)
class ImageTarget:
    gpu: bool = False
    python: str = "3.12"
    arch: str = "x86_64"
    tag: str | None = None  # image name for docker build; default votive-<model>
    stream: bool = False  # entry point votive's runtime loop, which streams (generation), instead of awslambdaric


def build_image(model: str, out: Path, target: ImageTarget = ImageTarget(), *, force: bool = False,
                tools: BuildTools | None = None) -> dict:
    """Write a Docker build context for `model` into `out` and build it when a Docker engine is available.

    Returns:
        The manifest (also written to out/manifest.json), with "build_command" and "built" (true when docker built
        the image here).
    """
    tools = tools or BuildTools()
    base = BASE_IMAGES["gpu" if target.gpu else "cpu"]
    if target.python not in base.pythons:
        raise PackagingError(f"the {'GPU' if target.gpu else 'CPU'} base image {base.image.format(python='X')} offers "
                             f"Python {', '.join(base.pythons)}, not {target.python}")
    arch = architecture(target.arch)
    if target.gpu and arch.name != "x86_64":
        raise PackagingError("the GPU image is built for x86_64 only (cupy's CUDA wheels); drop --arch arm64")
    check_destination(out, force)  # before any work: an existing output is refused at once
    model_files = collect_model(model)
    tag = target.tag or f"votive-{model_files.slug}" + ("-gpu" if target.gpu else "")
    with staged_output(out, force) as stage:
        model_files.copy_to(stage / "model")
        dep_target = DependencyTarget(target.python, arch, base.glibc)
        extra = IMAGE_REQUIREMENTS + (GPU_REQUIREMENTS if target.gpu else ())
        tree = build_runtime_tree(stage / "python", target=dep_target, deployed_as="/opt/python", tools=tools,
                                  unused=model_files.unused_requirements, extras=model_files.extras,
                                  unused_files=model_files.kind.unused_files + (() if target.gpu else GPU_ONLY_RULES),
                                  extra_requirements=extra)
        if target.gpu:  # the sources the image's kernel build step compiles (the runtime tree holds only .py)
            cuda_kernels.copy_sources(stage / "python" / "votive" / "quant" / "cusrc")
        task = stage / "task"
        task.mkdir()
        (task / f"{ENTRY_MODULE}.py").write_text(ENTRY_SOURCE)
        model_path = f"/opt/model/{model_files.entry}"
        environment = {"VOTIVE_BACKEND": "cupy"} if target.gpu else {}
        write_json(task / CONFIG_NAME, {"handler": model_files.kind.handler,
                                        "model": {"placement": "layer", "path": model_path},
                                        "environment": environment})
        compile_tree(task, "/var/task", target.python, tools)
        runtime_client = [base.python, "-m", STREAM_RUNTIME if target.stream else "awslambdaric"]
        (task / ENTRY_SCRIPT).write_text(entry_script(base.python, runtime_client))
        (task / ENTRY_SCRIPT).chmod(0o755)
        entrypoint = [f"/var/task/{ENTRY_SCRIPT}"]
        (stage / "Dockerfile").write_text(dockerfile(base, target, model_files.model_id, entrypoint))
        size = tree_size(stage)
        if size > LAMBDA_LIMITS.container_image:
            raise PackagingError(f"the image holds {size / 2**30:.1f} GB, over Lambda's 10 GB image limit: serve a "
                                 "quantized model")
        platform = "linux/amd64" if arch.name == "x86_64" else "linux/arm64"
        command = ["docker", "build", "--platform", platform, "-t", tag, str(Path(out).absolute())]
        manifest = {
            "format": MANIFEST_FORMAT, "votive": votive.__version__, "platform": "container-image",
            "model": {"source": model_files.source, "model_id": model_files.model_id, "kind": model_files.kind.name,
                      "serves_with": model_files.kind.handler},
            "target": {"base": base.image.format(python=target.python), "python": target.python,
                       "architecture": arch.name, "glibc": "%d.%d" % base.glibc, "gpu": target.gpu},
            "image": {"tag": tag, "entrypoint": entrypoint, "runtime_client": runtime_client,
                      "local": {"port": LOCAL_PORT, "run": f"docker run --rm -p 9000:{LOCAL_PORT} {tag}",
                                "answers": ["any path, as a function URL",
                                            f"POST {INVOKE_PATH}, as the Runtime Interface Emulator"]},
                      "invoke_mode": "RESPONSE_STREAM" if target.stream else "BUFFERED",
                      "cmd": [f"{ENTRY_MODULE}.handler"], "context_bytes": size,
                      "layers": {"model": tree_size(stage / "model"), "python": tree_size(stage / "python"),
                                 "task": tree_size(task)}},
            "runtime_layer": tree.to_json(),
            "build_command": " ".join(command),
        }
        if target.gpu:
            manifest["cuda_kernels"] = {"dir": CUDA_KERNELS, "archs": [f"sm_{a}" for a in cuda_kernels.ARCHS],
                                        "ptx": f"compute_{cuda_kernels.PTX_ARCH}",
                                        "command": f"{base.python} {_KERNEL_BUILD}"}
        write_json(stage / MANIFEST_NAME, manifest)
    manifest["built"] = _docker_build(command, tools)
    return manifest


def entry_script(python: str, runtime_client: list[str]) -> str:
    """The image's entry point: the runtime client under Lambda, votive's local endpoint anywhere else."""
    client = shlex.join(runtime_client)
    return f"""#!/bin/sh
# Written by `votive build image`. Lambda sets AWS_LAMBDA_RUNTIME_API: there the runtime client polls it.
# Anywhere else (docker run -p 9000:{LOCAL_PORT}, a GPU container platform) votive answers HTTP on
# ${{PORT:-{LOCAL_PORT}}} itself, as AWS's Runtime Interface Emulator would: any path as a function URL, and
# POST {INVOKE_PATH} with an event.
if [ -n "${{AWS_LAMBDA_RUNTIME_API:-}}" ]; then
    exec {client} "$@"
fi
exec {shlex.quote(python)} -m votive.handlers.local_endpoint "$@"
"""


def dockerfile(base: BaseImage, target: ImageTarget, model_id: str, entrypoint: list[str]) -> str:
    """The Dockerfile: base, settings, then model, dependencies and code, each its own layer, least changed first."""
    python = base.python
    lines = [
        f"# {model_id} served by votive {votive.__version__}: written by `votive build image`.",
        "# Build: docker build -t NAME .   (all files are in this folder; nothing is downloaded but the base)",
        f"FROM {base.image.format(python=target.python)}",
        "",
    ]
    lines += [f"RUN {step}" for step in base.setup]
    env = {"LAMBDA_TASK_ROOT": "/var/task", "PYTHONPATH": "/var/task:/opt/python", "PYTHONDONTWRITEBYTECODE": "1"}
    if target.gpu:
        env |= {"VOTIVE_BACKEND": "cupy", "VOTIVE_CUDA_KERNELS": CUDA_KERNELS, "CUPY_CACHE_DIR": CUPY_CACHE}
    lines += [f'ENV {k}="{v}"' for k, v in env.items()]
    lines += [
        "",
        "# The weights first, in a layer of their own: rebuilding after a code change does not push them again.",
        "COPY model/ /opt/model/",
        "COPY python/ /opt/python/",
    ]
    if target.gpu:
        lines += [
            "# votive's CUDA kernels compiled for every GPU generation (cubins and PTX) by NVRTC from the base image:",
            "# no GPU needed here, and no start compiles them.",
            f"RUN {python} {_KERNEL_BUILD}",
        ]
    lines += [
        "COPY task/ /var/task/",
        "WORKDIR /var/task",
    ]
    if target.gpu:
        lines += [
            "",
            "# Optional, with a GPU visible to the build: one request through the handler, so that cupy also compiles",
            "# and caches (CUPY_CACHE_DIR) its own kernels for the array arithmetic between votive's.",
            "ARG VOTIVE_WARM=0",
            f'RUN if [ "$VOTIVE_WARM" = "1" ]; then {python} -m votive.handlers.warm; fi',
        ]
    lines += [
        "",
        f"# On Lambda the runtime client; elsewhere (docker run -p 9000:{LOCAL_PORT}) votive's own endpoint.",
        f"EXPOSE {LOCAL_PORT}",
        "ENTRYPOINT [" + ", ".join(f'"{part}"' for part in entrypoint) + "]",
        f'CMD ["{ENTRY_MODULE}.handler"]',
        "",
    ]
    return "\n".join(lines)


def _docker_build(command: list[str], tools: BuildTools) -> bool:
    """Run `docker build` when an engine answers; False (and nothing run) when there is none."""
    if tools.which("docker") is None:
        return False
    try:
        tools.check(["docker", "info", "--format", "{{.ServerVersion}}"], "reach the Docker engine")
    except PackagingError:
        return False
    tools.log(f"docker: {' '.join(command)}")
    tools.check(command, "build the image")
    return True

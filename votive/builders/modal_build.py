"""`votive build modal`: a Modal app module serving a model with the same HTTP API as the Lambda handler.

The output folder holds `modal_app.py` (a literate module: read it, change its settings, `modal deploy` it),
`votive/` (votive's serving modules and the kernel library built for Modal's x86_64 containers) and, when the
weights are baked into the image, `model/`. The app:

- builds an image from `debian_slim` with dependencies pinned to the versions this machine runs;
- keeps the weights in the image (`--weights image`, the default) or in a `modal.Volume` (`--weights volume`,
  uploaded with `modal run modal_app.py::upload_weights`);
- loads the model in `@modal.enter(snap=True)`, so with `enable_memory_snapshot=True` a cold start restores a
  process that has imported everything and mapped the weights; a snapshot holds no GPU memory, so with a GPU the
  weights move to it in `@modal.enter(snap=False)`, after the restore; a GPU image compiles votive's CUDA
  kernels while it is built (`python -m votive.quant.cuda_kernels build`), so that no start compiles them;
- serves the Lambda handler's routes (POST /v1/embeddings, GET /health, ...) through `votive.handlers.asgi`;
- has a `@modal.method()` `invoke` taking Lambda's direct-invoke event `{"path", "body"}` (the same handler
  answers it, as on Lambda) and returning the JSON answer, so the SDK can call the class itself:
  `votive map modal:APP` sends batches with `Endpoint().invoke.map(...)` (votive.client.modal_map);
- exposes its scale settings (min/max containers, scale-down window, timeout) as constants at the top.

`modal_app.py` imports and constructs offline: `python -c "import modal_app"` needs no Modal account.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import votive
from votive.builders.kernel_target import build_kernels
from votive.builders.model_files import collect_model
from votive.builders.output import MANIFEST_FORMAT, MANIFEST_NAME, check_destination, staged_output, write_json
from votive.builders.runtime_tree import copy_votive
from votive.builders.targets import GPU_PINS, architecture
from votive.builders.tools import BuildTools
from votive.errors import PackagingError
from votive.quant import cuda_kernels

MODAL_GPUS = ("T4", "L4", "A10G", "A100", "H100")
MODAL_GLIBC = (2, 36)  # debian_slim is Debian 12
MODAL_PYTHONS = ("3.10", "3.11", "3.12", "3.13")
MODEL_PATH = "/model"
# With a GPU: cupy, and NVRTC for the image build step that compiles votive's CUDA kernels (no GPU needed there),
# at the versions the GPU image gets too (targets.GPU_PINS), whatever is installed here.
GPU_REQUIREMENTS = ("cupy-cuda12x", "nvidia-cuda-nvrtc-cu12")
INVOKE = {"class": "Endpoint", "method": "invoke"}  # the method answering direct-invoke events (the manifest says)


@dataclass(frozen=True)
class ModalTarget:
    gpu: str | None = None  # one of MODAL_GPUS, or None for CPU containers
    python: str = "3.12"
    weights: str = "image"  # "image" or "volume"
    app_name: str | None = None  # default votive-<model>
    volume: str = "votive-models"
    min_containers: int = 0
    max_containers: int = 10
    scaledown_window_s: int = 300
    timeout_s: int = 300


def build_modal(model: str, out: Path, target: ModalTarget = ModalTarget(), *, force: bool = False,
                tools: BuildTools | None = None) -> dict:
    """Write the Modal app for `model` into `out`; returns the manifest (also in out/manifest.json)."""
    tools = tools or BuildTools()
    if target.gpu is not None and target.gpu not in MODAL_GPUS:
        raise PackagingError(f"GPU {target.gpu!r}; choose one of {', '.join(MODAL_GPUS)}")
    if target.weights not in ("image", "volume"):
        raise PackagingError(f"weights placement {target.weights!r}; choose 'image' or 'volume'")
    if target.python not in MODAL_PYTHONS:
        raise PackagingError(f"Python {target.python!r}; Modal's debian_slim offers {', '.join(MODAL_PYTHONS)}")
    check_destination(out, force)  # before any work: an existing output is refused at once
    model_files = collect_model(model)
    app_name = target.app_name or f"votive-{model_files.slug}"[:64]
    requirements = _pins(model_files.unused_requirements, gpu=target.gpu is not None, extras=model_files.extras)
    with staged_output(out, force) as stage:
        copy_votive(stage / "votive")
        if target.gpu is not None:  # the CUDA sources the image's build step compiles
            cuda_kernels.copy_sources(stage / "votive" / "quant" / "cusrc")
        kernels = build_kernels(stage / "votive" / "quant" / "libvotive.so", architecture("x86_64"), MODAL_GLIBC,
                                tools)
        model_files.copy_to(stage / "model")  # baked into the image, or uploaded to the Volume from here
        model_path = f"{MODEL_PATH}/{model_files.entry}"
        (stage / "modal_app.py").write_text(render_app(
            app_name=app_name, model_id=model_files.model_id, handler=model_files.kind.handler,
            python=target.python, requirements=requirements, gpu=target.gpu, weights=target.weights,
            volume=target.volume, model_path=model_path, target=target,
        ))
        manifest = {
            "format": MANIFEST_FORMAT, "votive": votive.__version__, "platform": "modal",
            "model": {"source": model_files.source, "model_id": model_files.model_id, "kind": model_files.kind.name,
                      "serves_with": model_files.kind.handler},
            "app": {"name": app_name, "gpu": target.gpu, "python": target.python, "weights": target.weights,
                    "volume": target.volume if target.weights == "volume" else None, "requirements": requirements,
                    "memory_snapshot": True, "min_containers": target.min_containers,
                    "max_containers": target.max_containers, "scaledown_window_s": target.scaledown_window_s,
                    "invoke": dict(INVOKE)},
            "kernels": kernels.to_json(),
            "deploy_command": "modal deploy modal_app.py",
        }
        write_json(stage / MANIFEST_NAME, manifest)
    return manifest


def _pins(unused: dict[str, str], *, gpu: bool, extras: Iterable[str] = ()) -> list[str]:
    """votive's serving dependencies pinned to the versions installed here (what the tests ran)."""
    from votive.builders.dependencies import LEFT_OUT, requirement_name, votive_requirements

    names = [requirement_name(r) for r in votive_requirements({**LEFT_OUT, **unused}, extras)]
    pins = []
    for name in names:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            raise PackagingError(f"{name} is not installed here, so there is no version to pin it to") from None
        pins.append(f"{name}=={version}")
    return pins + ([f"{name}=={GPU_PINS[name]}" for name in GPU_REQUIREMENTS] if gpu else [])


def render_app(*, app_name: str, model_id: str, handler: str, python: str, requirements: list[str],
               gpu: str | None, weights: str, volume: str, model_path: str, target: ModalTarget) -> str:
    """The text of modal_app.py."""
    module = handler.rpartition(".")[0]
    upload = _UPLOAD if weights == "volume" else ""
    return string.Template(_APP).substitute(
        app_name=repr(app_name), model_id=model_id, module=repr(module), python=repr(python),
        requirements=",\n    ".join(repr(r) for r in requirements), gpu=repr(gpu), weights=repr(weights),
        volume=repr(volume), model_path=repr(model_path), model_root=repr(MODEL_PATH),
        min_containers=target.min_containers, max_containers=target.max_containers,
        scaledown=target.scaledown_window_s, timeout=target.timeout_s, votive_version=votive.__version__,
        upload=upload,
    )


_APP = '''"""Modal app serving $model_id with votive $votive_version (written by `votive build modal`).

    modal deploy modal_app.py       deploy; prints the endpoint URL
    modal serve modal_app.py        a temporary URL while you iterate

The endpoint answers the same routes as the Lambda function: POST /v1/embeddings (or the decoder's routes),
GET /health. `Endpoint.invoke` answers the same requests as a direct-invoke event {"path", "body"} through the
SDK (`modal.Cls.from_name(APP_NAME, "Endpoint")().invoke.map(events)`; `votive map modal:APP` does this).
Settings are the constants below; change them and deploy again.
"""

import pathlib

import modal

HERE = pathlib.Path(__file__).parent

APP_NAME = $app_name
HANDLER_MODULE = $module  # its `handler` serves requests, as on Lambda
PYTHON = $python
GPU = $gpu  # None: CPU containers; else a Modal GPU type ("T4", "L4", "A10G", "A100", "H100")
CUDA_KERNELS = "/opt/votive-kernels"  # votive's CUDA kernels, compiled while the image is built (GPU only)

# Where the weights live: "image" bakes them into the image (simplest; the image is rebuilt when they change),
# "volume" keeps them in a modal.Volume (smaller image; upload once with `modal run modal_app.py::upload_weights`).
WEIGHTS = $weights
VOLUME_NAME = $volume
MODEL_ROOT = $model_root
MODEL_PATH = $model_path

# Scale: containers kept warm (billed while idle), the most that may run, how long an idle one stays (seconds),
# and the longest a request may take.
MIN_CONTAINERS = $min_containers
MAX_CONTAINERS = $max_containers
SCALEDOWN_WINDOW_S = $scaledown
TIMEOUT_S = $timeout

# Dependencies pinned to the versions votive was built and tested with; votive itself is copied from ./votive.
REQUIREMENTS = [
    $requirements,
]

app = modal.App(APP_NAME)

image = (
    modal.Image.debian_slim(python_version=PYTHON)
    .pip_install(*REQUIREMENTS)
    .env({"VOTIVE_MODEL": MODEL_PATH})
    .add_local_dir(HERE / "votive", "/root/votive", copy=True)
)
if GPU is not None:
    # Compile votive's CUDA kernels for every GPU generation (cubins and PTX) while the image is built: NVRTC runs
    # on the builder's CPU, and no container start compiles them.
    image = image.run_commands(f"cd /root && python -m votive.quant.cuda_kernels build --out {CUDA_KERNELS}").env(
        {"VOTIVE_CUDA_KERNELS": CUDA_KERNELS})
volumes = {}
if WEIGHTS == "image":
    image = image.add_local_dir(HERE / "model", MODEL_ROOT, copy=True)
else:
    volumes = {MODEL_ROOT: modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)}


@app.cls(
    image=image,
    gpu=GPU,
    volumes=volumes,
    enable_memory_snapshot=True,
    min_containers=MIN_CONTAINERS,
    max_containers=MAX_CONTAINERS,
    scaledown_window=SCALEDOWN_WINDOW_S,
    timeout=TIMEOUT_S,
)
class Endpoint:
    @modal.enter(snap=True)
    def load(self):
        """Before the memory snapshot: import everything and load the model on the CPU (weights memory-mapped)."""
        import importlib
        import os

        os.environ["VOTIVE_BACKEND"] = "numpy"
        self.module = importlib.import_module(HANDLER_MODULE)
        self.handler = self.module.handler  # built on first access: loads the model

    @modal.enter(snap=False)
    def place_on_gpu(self):
        """After a restore: a snapshot holds no GPU memory, so the GPU copy of the weights is made here."""
        if GPU is not None:
            import os

            os.environ["VOTIVE_BACKEND"] = "cupy"
            self.handler = self.module.load_handler()

    @modal.method()
    def invoke(self, event):
        """A direct-invoke event {"path": "/v1/embeddings", "body": {...}} -> the JSON answer, as Lambda's Invoke
        API answers it (votive.handlers.events). A refused or failed request raises "Votive.BadRequest: ..." or
        "Votive.ModelError: ..." as a RuntimeError: Modal pickles the exception back to the caller, and votive's
        VotiveFault does not unpickle there."""
        from votive.errors import VotiveFault

        try:
            return self.handler(event, None)
        except VotiveFault as fault:
            raise RuntimeError(str(fault)) from None

    @modal.asgi_app()
    def web(self):
        from votive.handlers.asgi import lambda_asgi_app

        return lambda_asgi_app(lambda event, context: self.handler(event, context))
$upload'''

_UPLOAD = '''

@app.local_entrypoint()
def upload_weights():
    """Put ./model into the Volume: modal run modal_app.py::upload_weights"""
    volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
    with volume.batch_upload(force=True) as batch:
        batch.put_directory(str(HERE / "model"), "/")
    print(f"uploaded {HERE / 'model'} to volume {VOLUME_NAME}")
'''

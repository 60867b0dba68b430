"""The entry point of a function built by votive: find the model, then hand over to votive's handler.

A function zip (or image) built by `votive build` holds two files at its root: `votive_function.py`, two lines
that call `function_handler(__file__)`, and `votive_function.json`, its configuration:

    {"handler": "votive.handlers.embeddings.handler",        the handler that serves requests
     "model": {"placement": "layer", "path": "/opt/model/all-MiniLM-L6-v2"},   bundled in a layer (or image)
     "environment": {"VOTIVE_BATCH_SIZE": "32"}}             defaults for VOTIVE_* settings

or, for weights staged in S3 and fetched at init:

     "model": {"placement": "s3", "uri": "s3://bucket/prefix/" or null, "cache_dir": "/tmp/votive-model",
               "entry": "all-MiniLM-L6-v2", "files": [{"name": "all-MiniLM-L6-v2/config.json", "size": ...,
               "sha256": ...}, ...]}

"entry" is what VOTIVE_MODEL names inside the fetched folder: the model's folder, or its single .gguf file.

This runs during Lambda's init phase, once per process: the handler module is imported here, so its model loads
in init too, and the SnapStart hooks are registered (`votive.handlers.snapstart`: warm the model before the
snapshot, reseed random generators after each restore; a no-op where `snapshot_restore_py` cannot be imported). Variables set on the function win over the file: VOTIVE_MODEL (a model path: no fetch at all),
VOTIVE_MODEL_S3 (the bucket and prefix the staged files were uploaded to), and any VOTIVE_* setting.

Paths in the file are Lambda's absolute paths (/opt, /tmp). They are read relative to the root of the tree that
holds the task folder (LAMBDA_TASK_ROOT, /var/task on Lambda, so the root is "/"): the same zip then runs
unchanged in a Lambda-like tree under a temporary folder, which is how the tests run it.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from votive.errors import VotiveError, VotiveFault
from votive.handlers import snapstart

CONFIG_NAME = "votive_function.json"
ENTRY_MODULE = "votive_function"
ENTRY_SOURCE = '''"""Lambda entry point written by `votive build`; its settings are in votive_function.json beside it."""

from votive.handlers.entry import function_handler

handler = function_handler(__file__)
'''


def function_handler(entry_file: str, environ: Mapping[str, str] | None = None, *,
                     snapshot_hooks=None) -> Callable[[Any, Any], Any]:
    """Read the configuration beside `entry_file`, make the model local, import and return the serving handler.

    Args:
        entry_file: the entry module's file; the configuration is read beside it.
        environ: the process environment (default os.environ), read and never changed: the handler gets the
            file's VOTIVE_* defaults under it, and the model made local here as a resolved source.
        snapshot_hooks: the `snapshot_restore_py` module or a stand-in (default: imported when present).

    Raises:
        VotiveFault: Votive.ConfigError for a missing or malformed configuration, Votive.ModelLoadError when the
            model cannot be fetched; the handler's own faults pass through.
    """
    environ = os.environ if environ is None else environ
    config = read_config(Path(entry_file).with_name(CONFIG_NAME))
    settings = {**{name: str(value) for name, value in config.get("environment", {}).items()}, **environ}
    source = None
    if not settings.get("VOTIVE_MODEL", "").strip():
        from votive.sources import resolve_source

        try:
            source = resolve_source(local_model(config["model"], lambda_root(settings), settings))
        except VotiveFault:
            raise
        except VotiveError as err:
            raise VotiveFault(VotiveFault.MODEL_LOAD_ERROR, str(err)) from None
    module_name, _, attribute = config["handler"].rpartition(".")
    module = importlib.import_module(module_name)
    if attribute == "handler" and hasattr(module, "load_handler"):  # votive's handlers: settings passed, not set
        handler = module.load_handler(settings, source=source)
    else:
        handler = getattr(module, attribute)
    snapstart.register_hooks(config["handler"], handler, hooks=snapshot_hooks)
    return handler


def read_config(path: Path) -> dict:
    """The function's configuration; VotiveFault (Votive.ConfigError) naming the file when it is unusable."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise VotiveFault(VotiveFault.CONFIG_ERROR, f"{path}: cannot read the function's configuration ({err})")
    model = config.get("model") if isinstance(config, dict) else None
    if not isinstance(config.get("handler"), str) or "." not in config["handler"] or not isinstance(model, dict):
        raise VotiveFault(VotiveFault.CONFIG_ERROR,
                          f"{path}: expected {{'handler': 'module.function', 'model': {{...}}}}, found {config!r:.200}")
    if model.get("placement") not in ("layer", "s3"):
        raise VotiveFault(VotiveFault.CONFIG_ERROR,
                          f"{path}: model placement {model.get('placement')!r}; expected 'layer' or 's3'")
    return config


def lambda_root(environ: Mapping[str, str]) -> Path:
    """The folder Lambda's absolute paths are relative to: "/" on Lambda, the tree's root in a Lambda-like tree."""
    task = Path(environ.get("LAMBDA_TASK_ROOT") or "/var/task")
    return task.parents[1] if task.parts[-2:] == ("var", "task") else Path("/")


def local_model(model: dict, root: Path, environ: Mapping[str, str]) -> Path:
    """The model's local path: its bundled folder, or the folder the staged S3 files were fetched into."""
    if model["placement"] == "layer":
        return _under(root, model["path"])
    from votive.handlers.s3_weights import StagedFile, fetch_model

    uri = environ.get("VOTIVE_MODEL_S3", "").strip() or model.get("uri")
    if not uri:
        raise VotiveFault(VotiveFault.CONFIG_ERROR,
                          "the model's files are staged for S3 but no location is set: upload the build's s3/ folder "
                          "and set VOTIVE_MODEL_S3=s3://bucket/prefix/ on the function")
    files = [StagedFile.from_json(f) for f in model["files"]]
    folder = fetch_model(uri, files, _under(root, model.get("cache_dir", "/tmp/votive-model")),
                         log=logging.getLogger(__name__).info)
    return folder / model["entry"]


def _under(root: Path, lambda_path: str) -> Path:
    return root / str(lambda_path).lstrip("/")

"""`votive deploy modal`: a model as a Modal web endpoint on a GPU, and `votive destroy` for it.

The app itself is built by the packaging (`votive build modal`): a Python module defining `app = modal.App(...)`
with the model's class, its image, GPU, memory snapshot and scaling settings, and a web endpoint with the same
HTTP API as the Lambda handler. Deploying imports that module (which constructs the app offline), then hands the
app to Modal. Everything that talks to Modal's servers goes through `ModalSdk`, the one seam tests replace.

Example:
    >>> ModalDeployer(state=StateStore()).deploy("minilm", name="embed", gpu="L4")["url"]   # doctest: +SKIP
    'https://workspace--embed-model-serve.modal.run'
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from votive.deploy.state import StateStore
from votive.errors import DeployError

MODAL_NAME = re.compile(r"[A-Za-z0-9._-]{1,63}")  # Modal's rule for app names (and not an app id, ap-...)
DEFAULT_BUILD_ROOT = Path(".votive") / "builds"
# What `votive build modal` writes (votive.builders.modal_build): the module, and the class and method serving the
# web endpoint; a manifest may name others under app.module and app.endpoint.
APP_MODULE = "modal_app.py"
ENDPOINT = {"class": "Endpoint", "method": "web"}
CREDENTIALS_HELP = ("no Modal credentials found: run `modal token new` (or `modal token set`), or set "
                    "MODAL_TOKEN_ID and MODAL_TOKEN_SECRET")


class ModalSdk:
    """The calls that reach Modal's servers, through the modal package's public API (imported on first use)."""

    def missing_credentials(self) -> str | None:
        """None when a token is configured (environment or ~/.modal.toml), else what is missing."""
        from modal.config import config

        missing = [key for key in ("token_id", "token_secret") if not config.get(key)]
        if missing:
            return f"{CREDENTIALS_HELP} ({' and '.join('MODAL_' + k.upper() for k in missing)} not set)"
        return None

    def deploy(self, app, name: str, environment: str | None) -> None:
        app.deploy(name=name, environment_name=environment)

    def web_url(self, name: str, environment: str | None, endpoint: dict) -> str:
        """The URL of the deployed endpoint: {"class": C, "method": M} (looked up as `votive map` looks up the
        method it calls) or {"function": F}."""
        if "class" in endpoint:
            from votive.client.modal_map import ModalSdk as ClientSdk

            return ClientSdk().method(name, environment, endpoint).get_web_url()
        import modal

        return modal.Function.from_name(name, endpoint["function"], environment_name=environment).get_web_url()

    def stop(self, name: str, environment: str | None) -> None:
        import modal

        modal.App.lookup(name, environment_name=environment).stop()


class ModalDeployer:
    """Deploys and stops votive's Modal apps, recording them beside the AWS deployments.

    Args:
        state: where deployment records live.
        sdk: ModalSdk, or a stand-in for its network calls.
        build: `(model, out, gpu, min_containers, name) -> folder`, the packaging's Modal builder (default
            votive.builders.modal_build's).
        say: progress lines (default: stderr).
    """

    def __init__(self, *, state: StateStore, sdk: ModalSdk | None = None, build: Callable | None = None,
                 say: Callable[[str], None] | None = None):
        self.state = state
        self.sdk = sdk or ModalSdk()
        self.build = build or _packaging_build
        self.say = say or (lambda line: print(f"votive: {line}", file=sys.stderr, flush=True))

    def deploy(self, model: str, *, name: str | None = None, gpu: str | None = "T4", min_containers: int = 0,
               environment: str | None = None, rebuild: bool = False) -> dict:
        """Build (or reuse) the Modal app for `model`, deploy it, and return the record with its "url".

        Raises:
            DeployError: no credentials, a bad name, a name taken by an AWS deployment, or Modal refused.
        """
        missing = self.sdk.missing_credentials()
        if missing:
            raise DeployError(missing)
        if min_containers < 0:
            raise DeployError(f"--min-containers {min_containers}: expected 0 or more")
        folder = self._build_folder(model, name, gpu, min_containers, rebuild)
        manifest = read_modal_manifest(folder)
        name = name or manifest["app"]["name"]
        if not MODAL_NAME.fullmatch(name) or name.startswith("ap-"):
            raise DeployError(f"--name {name!r} is not a Modal app name: letters, digits, '.', '-' and '_', at most "
                              f"63, not starting with 'ap-'")
        if self.state.exists(name) and self.state.load(name)["provider"] != "modal":
            raise DeployError(f"{name} is already an {self.state.load(name)['provider']} deployment; destroy it "
                              f"first, or choose another --name")
        app = load_app(folder / manifest["app"]["module"])
        self.say(f"deploying Modal app {name} ({manifest['app'].get('gpu') or 'CPU'})")
        try:
            self.sdk.deploy(app, name, environment)
            url = self.sdk.web_url(name, environment, manifest["app"]["endpoint"])
        except DeployError:
            raise
        except Exception as exc:
            raise DeployError(f"modal deploy of {name} failed: {type(exc).__name__}: {_one_line(exc)}") from None
        record = {"name": name, "provider": "modal", "app": name, "environment": environment, "url": url,
                  "model": manifest.get("model", {}).get("source", model), "gpu": manifest["app"].get("gpu", gpu),
                  "build": str(folder),
                  "deployed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self.state.save(record)
        return record

    def destroy(self, name: str) -> None:
        """Stop the deployed app (its containers end, its URL stops answering) and drop the record."""
        record = self.state.load(name)
        if record["provider"] != "modal":
            raise DeployError(f"{name} is an {record['provider']} deployment, not a Modal one")
        missing = self.sdk.missing_credentials()
        if missing:
            raise DeployError(missing)
        try:
            self.sdk.stop(record["app"], record.get("environment"))
        except Exception as exc:
            if type(exc).__name__ != "NotFoundError":  # already gone: nothing left to stop
                raise DeployError(f"modal: cannot stop app {record['app']}: {_one_line(exc)}") from None
        self.state.delete(name)
        self.say(f"stopped Modal app {record['app']}")

    def _build_folder(self, model: str, name: str | None, gpu: str | None, min_containers: int, rebuild: bool
                      ) -> Path:
        given = Path(model)
        if is_modal_build(given):
            return given
        out = DEFAULT_BUILD_ROOT / f"{name or 'modal'}-modal"
        if is_modal_build(out) and not rebuild:
            app = read_modal_manifest(out)["app"]
            if app.get("gpu") == gpu and app.get("min_containers", 0) == min_containers and \
                    app["name"] == (name or app["name"]) and read_modal_manifest(out)["model"].get("source") == model:
                self.say(f"reusing the build in {out} (pass --rebuild to build again)")
                return out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.say(f"building the Modal app for {model} into {out}")
        return Path(self.build(model, out, gpu, min_containers, name))


def is_modal_build(folder: Path) -> bool:
    try:
        return json.loads((Path(folder) / "manifest.json").read_text()).get("platform") == "modal"
    except (OSError, ValueError, AttributeError):
        return False


def read_modal_manifest(folder: Path) -> dict:
    """The Modal build's manifest, with the app module and its endpoint filled in; DeployError when unusable."""
    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        app = manifest["app"]
        app["name"]  # noqa: B018  (required)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DeployError(f"{path}: not a Modal build manifest votive understands ({type(exc).__name__}: {exc}); "
                          f"build it with `votive build modal`") from None
    app.setdefault("module", APP_MODULE)
    app.setdefault("endpoint", dict(ENDPOINT))
    return manifest


def load_app(module_path: Path):
    """Import the app module (this constructs the app, offline) and return its `app`."""
    module_path = Path(module_path)
    spec = importlib.util.spec_from_file_location(f"votive_modal_{module_path.stem}", module_path)
    if spec is None or not module_path.is_file():
        raise DeployError(f"{module_path}: no such Modal app module; rebuild with `votive build modal`")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(module_path.parent))  # the module may import files built beside it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        raise DeployError(f"{module_path}: the Modal app does not construct: {type(exc).__name__}: "
                          f"{_one_line(exc)}") from None
    finally:
        sys.path.remove(str(module_path.parent))
    app = getattr(module, "app", None)
    if app is None or type(app).__name__ != "App":
        raise DeployError(f"{module_path}: defines no `app = modal.App(...)`")
    return app


def _packaging_build(model: str, out: Path, gpu: str | None, min_containers: int, name: str | None) -> Path:
    from votive.builders.modal_build import ModalTarget, build_modal

    build_modal(model, out, ModalTarget(gpu=gpu, min_containers=min_containers, app_name=name),
                force=is_modal_build(out))
    return out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:500] or type(exc).__name__


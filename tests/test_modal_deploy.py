"""`votive deploy modal`: the app `votive build modal` writes is constructed offline with its GPU, snapshot and
scale settings, and deployed through the modal SDK, replaced here only where it would reach Modal's servers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from votive.cli import main
from votive.deploy.modal_endpoint import ModalDeployer, ModalSdk, load_app
from votive.deploy.state import StateStore
from votive.errors import DeployError

modal = pytest.importorskip("modal")


@pytest.fixture(scope="module")
def app_build(tmp_path_factory) -> Path:
    """The real builder's Modal app for the packaged MiniLM, on an L4 with one warm container."""
    from votive.builders.modal_build import ModalTarget, build_modal

    out = tmp_path_factory.mktemp("modal") / "embed-gpu"
    build_modal("minilm", out, ModalTarget(gpu="L4", min_containers=1, app_name="embed-gpu"))
    return out


class OfflineSdk(ModalSdk):
    """ModalSdk with the calls that reach Modal's servers answered here; everything else is modal's own."""

    def __init__(self, credentials: bool = True):
        self.credentials = credentials
        self.deployed: list[tuple] = []
        self.stopped: list[tuple] = []

    def missing_credentials(self):
        return None if self.credentials else super().missing_credentials()

    def deploy(self, app, name, environment):
        self.deployed.append((app, name, environment))

    def web_url(self, name, environment, endpoint):
        return f"https://workspace--{name}-{endpoint['class'].lower()}-{endpoint['method']}.modal.run"

    def stop(self, name, environment):
        self.stopped.append((name, environment))


def test_app_constructs_offline_with_its_gpu_snapshot_and_scale_settings(app_build, monkeypatch):
    declared, entered = [], []
    real_cls, real_enter = modal.App.cls, modal.enter

    def spy_cls(self, **kwargs):
        declared.append(kwargs)
        return real_cls(self, **kwargs)

    def spy_enter(*, snap=False):
        entered.append(snap)
        return real_enter(snap=snap)

    monkeypatch.setattr(modal.App, "cls", spy_cls)
    monkeypatch.setattr(modal, "enter", spy_enter)
    app = load_app(app_build / "modal_app.py")

    assert isinstance(app, modal.App) and app.name == "embed-gpu"
    [settings] = declared
    assert settings["gpu"] == "L4" and settings["enable_memory_snapshot"] is True
    assert (settings["min_containers"], settings["max_containers"]) == (1, 10)
    assert isinstance(settings["image"], modal.Image)
    assert sorted(entered) == [False, True]  # load before the snapshot, GPU placement after the restore
    with pytest.warns(Warning):  # modal deprecates the listing; it is still the public way to see it
        assert list(app.registered_classes) == ["Endpoint"]


def test_deploy_hands_the_app_to_modal_and_records_the_url(app_build, tmp_path):
    sdk = OfflineSdk()
    state = StateStore(tmp_path / "state")
    record = ModalDeployer(state=state, sdk=sdk, say=lambda line: None).deploy(str(app_build), environment="dev")

    [(app, name, environment)] = sdk.deployed
    assert (app.name, name, environment) == ("embed-gpu", "embed-gpu", "dev")
    assert record["url"] == "https://workspace--embed-gpu-endpoint-web.modal.run"
    saved = state.load("embed-gpu")
    assert (saved["provider"], saved["gpu"], saved["model"]) == ("modal", "L4", "minilm")


def test_destroy_stops_the_app_and_forgets_it(app_build, tmp_path, capsys):
    sdk = OfflineSdk()
    state = StateStore(tmp_path / "state")
    deployer = ModalDeployer(state=state, sdk=sdk, say=lambda line: None)
    deployer.deploy(str(app_build), name="embed-x", environment=None)
    deployer.destroy("embed-x")
    assert sdk.stopped == [("embed-x", None)]
    assert not state.exists("embed-x")


def test_missing_credentials_are_one_line_before_anything_else(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    if ModalSdk().missing_credentials() is None:
        pytest.skip("this machine has a Modal token configured in ~/.modal.toml")
    built = []
    deployer = ModalDeployer(state=StateStore(tmp_path), sdk=OfflineSdk(credentials=False),
                             build=lambda *args: built.append(args))
    with pytest.raises(DeployError, match="no Modal credentials found: run `modal token new`.*MODAL_TOKEN_ID"):
        deployer.deploy("minilm", name="x")
    assert built == []  # refused before building anything

    assert main(["deploy", "modal", "minilm", "--name", "x", "--state-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("votive: error: no Modal credentials found") and err.count("\n") == 1


def test_bad_app_name_is_refused(app_build, tmp_path):
    deployer = ModalDeployer(state=StateStore(tmp_path), sdk=OfflineSdk(), say=lambda line: None)
    with pytest.raises(DeployError, match="is not a Modal app name"):
        deployer.deploy(str(app_build), name="no spaces please")


def test_a_name_taken_by_an_aws_deployment_is_refused(app_build, tmp_path):
    state = StateStore(tmp_path)
    state.save({"name": "shared", "provider": "aws", "region": "eu-west-1", "resources": []})
    deployer = ModalDeployer(state=state, sdk=OfflineSdk(), say=lambda line: None)
    with pytest.raises(DeployError, match="shared is already an aws deployment"):
        deployer.deploy(str(app_build), name="shared")


def test_an_app_module_that_does_not_construct_is_reported(tmp_path):
    (tmp_path / "modal_app.py").write_text("raise RuntimeError('broken on purpose')\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"platform": "modal", "app": {"name": "b"}}))
    deployer = ModalDeployer(state=StateStore(tmp_path / "s"), sdk=OfflineSdk(), say=lambda line: None)
    with pytest.raises(DeployError, match="the Modal app does not construct: RuntimeError: broken on purpose"):
        deployer.deploy(str(tmp_path))


def test_web_url_looks_up_the_class_method_or_the_function_by_name(monkeypatch):
    """ModalSdk.web_url itself, with only modal's lookups by name answered here: a class endpoint is found as
    `votive map` finds the method it calls (client.modal_map.ModalSdk.method), a function endpoint by its name."""
    looked_up = []

    class Method:
        def __init__(self, where):
            self.where = where

        def get_web_url(self):
            return f"https://{self.where}.modal.run"

    class Cls:
        def __init__(self, app, name, environment):
            self.app, self.name, self.environment = app, name, environment

        def __call__(self):
            return self

        def __getattr__(self, method):
            return Method(f"{self.app}-{self.name}-{method}-{self.environment}")

    def cls_from_name(app, name, environment_name=None):
        looked_up.append(("cls", app, name, environment_name))
        return Cls(app, name, environment_name)

    def function_from_name(app, name, environment_name=None):
        looked_up.append(("function", app, name, environment_name))
        return Method(f"{app}-{name}-{environment_name}")

    monkeypatch.setattr(modal.Cls, "from_name", cls_from_name)
    monkeypatch.setattr(modal.Function, "from_name", function_from_name)
    sdk = ModalSdk()
    assert sdk.web_url("embed", "dev", {"class": "Endpoint", "method": "web"}) == \
        "https://embed-Endpoint-web-dev.modal.run"
    assert sdk.web_url("embed", None, {"function": "serve"}) == "https://embed-serve-None.modal.run"
    assert looked_up == [("cls", "embed", "Endpoint", "dev"), ("function", "embed", "serve", None)]

"""`votive.toml`: a project's deployments, one table per stage, and how a deploy's settings are decided.

    [prod]
    model = "sentence-transformers/all-MiniLM-L6-v2"
    memory = 3008
    auth = "NONE"
    [prod.env]
    VOTIVE_MAX_INPUTS = "64"

A setting comes from, in order: a flag given to this deploy, the stage in votive.toml, the last deploy of the
same name (its record), votive's default. So a setting left out is never silently reverted: `--memory 3008`
once, then a deploy with only `--auth NONE`, keeps 3008 MB. `resolve` returns each setting with where it came
from, for the deploy to print.

Example:
    >>> settings = resolve(flags={"auth": "NONE"}, stage={}, recorded={"memory_mb": 3008})
    >>> settings["memory_mb"], settings["auth"]
    (Setting(value=3008, source='last deploy'), Setting(value='NONE', source='flag'))
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import NamedTuple

from votive.builders.targets import DEFAULT_MEMORY_MB
from votive.errors import DeployError

FILE = "votive.toml"
TARGETS = ("aws", "modal")


class Setting(NamedTuple):
    value: object
    source: str  # "flag", "votive.toml [prod]", "last deploy", "default"


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _table(value) -> bool:
    return isinstance(value, dict) and all(isinstance(v, (str, int, float, bool)) for v in value.values())


# TOML key -> (the option it sets, what it must be, the rule for the message)
KEYS = {
    "name": ("name", lambda v: isinstance(v, str) and v != "", "a function name"),
    "model": ("model", lambda v: isinstance(v, str) and v != "", "a model or build folder"),
    "target": ("target", lambda v: v in TARGETS, "aws or modal"),
    "region": ("region", lambda v: isinstance(v, str), "a region name"),
    "profile": ("profile", lambda v: isinstance(v, str), "an AWS profile name"),
    "arch": ("architecture", lambda v: v in ("x86_64", "arm64"), "x86_64 or arm64"),
    "python": ("python", lambda v: isinstance(v, str) and re.fullmatch(r"3\.\d+", v), "a version such as \"3.12\""),
    "memory": ("memory_mb", lambda v: type(v) is int and 128 <= v <= 10240, "MB, from 128 to 10240"),
    "timeout": ("timeout_s", lambda v: type(v) is int and 1 <= v <= 900, "seconds, from 1 to 900"),
    "auth": ("auth", lambda v: v in ("AWS_IAM", "NONE"), "AWS_IAM or NONE"),
    "snapstart": ("snapstart", lambda v: type(v) is bool, "true or false"),
    "provisioned": ("provisioned", lambda v: type(v) is int and v >= 0, "a number of environments (0: none)"),
    "stream": ("stream", lambda v: type(v) is bool, "true or false"),
    "bucket": ("bucket", lambda v: isinstance(v, str), "an S3 bucket name"),
    "log_retention": ("log_retention_days", lambda v: type(v) is int, "days"),
    "env": ("env", _table, "a table of VOTIVE_* variables"),
    "tags": ("tags", _table, "a table of tag names and values"),
    "vpc": ("vpc", lambda v: isinstance(v, dict), "a table with subnets and security_groups"),
    "gpu": ("gpu", lambda v: isinstance(v, str), "a Modal GPU type, or \"none\""),
    "min_containers": ("min_containers", lambda v: type(v) is int and v >= 0, "a number of containers"),
    "environment": ("environment", lambda v: isinstance(v, str), "a Modal environment"),
}
VPC_KEYS = ("subnets", "security_groups")

# What a setting is when nothing sets it (architecture None: the build's, or x86_64 for a new build).
DEFAULTS = {"architecture": None, "python": "3.12", "memory_mb": None, "timeout_s": None, "auth": "AWS_IAM",
            "stream": False, "snapstart": False, "provisioned": None, "bucket": None, "log_retention_days": 14,
            "env": {}, "tags": {}, "subnets": (), "security_groups": ()}


def load_toml(path: Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, from PyPI
        try:
            import tomli as tomllib
        except ImportError:
            raise DeployError(f"{path}: reading it on Python 3.10 needs tomli (pip install tomli)") from None
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise DeployError(f"{path}: not valid TOML: {exc}") from None


class ProjectFile:
    """The stages of one votive.toml, checked when read.

    Raises (on construction):
        DeployError: one line naming the file, the stage and the key that is wrong.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.stages: dict[str, dict] = {}
        for stage, table in load_toml(self.path).items():
            if not isinstance(table, dict):
                raise DeployError(f"{self.path}: {stage!r} is not a table; each stage is one: [{stage}] with "
                                  f"model = ..., target = ...")
            self.stages[stage] = self._check(stage, table)

    @classmethod
    def find(cls, directory: Path = Path(".")) -> ProjectFile | None:
        path = Path(directory) / FILE
        return cls(path) if path.is_file() else None

    def stage(self, name: str | None) -> tuple[str, dict]:
        """(stage name, its settings): `name`, or the file's only stage when `name` is None."""
        if name is None:
            if len(self.stages) != 1:
                raise DeployError(f"{self.path} declares {len(self.stages)} stages ({', '.join(self.stages) or 'none'})"
                                  f"; name one: votive deploy STAGE")
            name = next(iter(self.stages))
        if name not in self.stages:
            raise DeployError(f"{self.path} has no stage {name!r}; its stages: {', '.join(self.stages) or 'none'}")
        return name, self.stages[name]

    def _check(self, stage: str, table: dict) -> dict:
        settings = {"name": stage}
        for key, value in table.items():
            if key not in KEYS:
                raise DeployError(f"{self.path}: [{stage}] unknown key {key!r}; known keys: {', '.join(KEYS)}")
            option, accept, rule = KEYS[key]
            if not accept(value):
                raise DeployError(f"{self.path}: [{stage}] {key} = {value!r}: expected {rule}")
            if key == "vpc":
                unknown = set(value) - set(VPC_KEYS)
                if unknown or not all(_strings(value.get(k, [])) for k in VPC_KEYS):
                    raise DeployError(f"{self.path}: [{stage}.vpc] expected subnets = [\"subnet-...\"] and "
                                      f"security_groups = [\"sg-...\"]" + (f", found {sorted(unknown)[0]!r}"
                                                                           if unknown else ""))
                settings["subnets"] = tuple(value.get("subnets", ()))
                settings["security_groups"] = tuple(value.get("security_groups", ()))
            elif key in ("env", "tags"):
                settings[option] = {k: _text(v) for k, v in value.items()}
            else:
                settings[option] = value
        settings.setdefault("target", "aws")
        return settings


def resolve(*, flags: dict, stage: dict, recorded: dict | None, stage_name: str | None = None) -> dict[str, Setting]:
    """Every deploy setting with its source: flag, votive.toml's stage, the last deploy, default.

    Args:
        flags: the options given on the command line (None: not given); env and tags merge key by key, and an
            empty value (`--env KEY=`) removes the key.
        stage: the stage's settings (`ProjectFile.stage`), or {}.
        recorded: the last deploy's options (its record's "options"), or None.
    """
    where = f"{FILE} [{stage_name}]" if stage_name else FILE
    layers = [("default", DEFAULTS), ("last deploy", recorded or {}), (where, stage), ("flag", flags)]
    settings: dict[str, Setting] = {}
    for source, values in layers:
        for key, value in values.items():
            if key not in DEFAULTS or (value is None and source != "default"):  # name, region...: not settings
                continue
            if key == "provisioned" and value == 0:  # 0 says "none", and overrides a count set earlier
                settings[key] = Setting(None, source)
                continue
            if key in ("env", "tags") and key in settings and source != "default":
                merged = {**settings[key].value, **value}
                settings[key] = Setting({k: v for k, v in merged.items() if v != ""},
                                        source if value else settings[key].source)
                continue
            if key in ("subnets", "security_groups"):
                value = tuple(value)
            settings[key] = Setting(value, source)
    return settings


def describe_settings(settings: dict[str, Setting]) -> list[str]:
    """One line per setting: `memory_mb    3008  (last deploy)`, for the deploy to print."""
    lines = []
    for key, (value, source) in sorted(settings.items()):
        if value in (None, {}, ()):
            continue
        shown = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(value, dict) else \
            ", ".join(value) if isinstance(value, tuple) else value
        lines.append(f"{key:18} {shown}  ({source})")
    return lines


def starter(model: str | None, name: str | None = None) -> str:
    """The commented votive.toml `votive init` writes."""
    model = model or "sentence-transformers/all-MiniLM-L6-v2"
    name = name or re.sub(r"[^A-Za-z0-9-]+", "-", model.rsplit("/", 1)[-1]).strip("-").lower()[:50] or "votive"
    return f'''# votive.toml: the deployments of this project, one table per stage.
# `votive deploy dev` deploys the [dev] stage, `votive plan dev` shows what that would change first, and
# `votive list` shows what is deployed. A flag (votive deploy dev --memory 4096) overrides the file for one
# deploy; a setting the file and the flags leave out keeps its value from the last deploy.

[dev]
model = "{model}"  # a model (Hugging Face id, path, package) or a build folder
target = "aws"  # aws: Lambda behind a function URL; modal: a GPU web endpoint
name = "{name}-dev"  # the function's name
# region = "eu-west-1"  # default: AWS_REGION, or your profile's region
# profile = "default"  # the AWS profile to deploy with
# arch = "x86_64"  # or "arm64" (Graviton); default: the build's
memory = {DEFAULT_MEMORY_MB}  # MB; above 1769 MB Lambda gives more than one vCPU
# timeout = 60  # seconds; default: what the build suggests for the model
auth = "AWS_IAM"  # AWS_IAM: callers sign (votive invoke does); "NONE": public, and deploy asks first
# snapstart = true  # publish a version with SnapStart; the URL goes on its alias `live`
# provisioned = 1  # environments kept initialized on the alias (not with snapstart)
# stream = true  # generation models: stream answers (RESPONSE_STREAM)
# bucket = "my-artifacts"  # default: votive-ACCOUNT-REGION, created
log_retention = 14  # days CloudWatch keeps the logs

# [dev.env]  # the handler's settings (README: environment variables)
# VOTIVE_MAX_INPUTS = "64"
# VOTIVE_BATCH_SIZE = "32"

# [dev.tags]
# team = "search"

# [dev.vpc]  # run inside a VPC (both lists)
# subnets = ["subnet-0123456789abcdef0"]
# security_groups = ["sg-0123456789abcdef0"]

# [prod]
# model = "{model}"
# name = "{name}"
# memory = 3008
# snapstart = true
'''


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

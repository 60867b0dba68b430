"""The project subcommands of the `votive` command line: init (write votive.toml), plan (what a deploy of a stage
would change), list (the deployments recorded here), and `deploy [STAGE]`, which deploys what votive.toml declares.

`votive deploy STAGE` has no platform word: `route` turns it into `deploy stage STAGE` before argparse sees it,
so `deploy aws ...` and `deploy modal ...` keep their meaning.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from votive.cli.arguments import MODAL_GPU_DEFAULT, modal_gpu
from votive.cli.deployments import add_aws_settings, deploy_aws, state_store
from votive.errors import DeployError

PLATFORMS = ("aws", "modal", "stage")


def route(argv: list[str]) -> list[str]:
    """`deploy [STAGE] [flags]` -> `deploy stage [STAGE] [flags]`; anything else unchanged."""
    if argv and argv[0] == "deploy" and (len(argv) == 1 or argv[1] not in (*PLATFORMS, "-h", "--help")):
        return ["deploy", "stage", *argv[1:]]
    return argv


# --- deploy [STAGE], plan ------------------------------------------------------------------------------------


def add_deploy_stage(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", nargs="?", metavar="STAGE", help="the stage (default: the file's only one)")
    _add_stage_options(parser)
    parser.set_defaults(run=run_deploy_stage, plan_only=False)


def add_plan(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", nargs="?", metavar="STAGE", help="the stage (default: the file's only one)")
    _add_stage_options(parser)
    parser.set_defaults(run=run_deploy_stage, plan_only=True)


def _add_stage_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", type=Path, default=Path("votive.toml"), metavar="PATH",
                        help="the project file (default ./votive.toml)")
    parser.add_argument("--model", help="override the stage's model")
    parser.add_argument("--gpu", type=modal_gpu, help="modal stages: the GPU type")
    add_aws_settings(parser)


def run_deploy_stage(args: argparse.Namespace) -> int:
    from votive.deploy.project_file import ProjectFile

    if not args.file.is_file():
        raise DeployError(f"no {args.file} here: write one with `votive init MODEL`, or deploy with flags: "
                          f"votive deploy aws MODEL --name NAME")
    stage_name, stage = ProjectFile(args.file).stage(args.stage)
    model = args.model or stage.get("model")
    if not model:
        raise DeployError(f"{args.file}: [{stage_name}] has no model = \"...\"")
    args.plan = args.plan or args.plan_only
    if stage["target"] == "modal":
        return _deploy_modal_stage(args, stage, model)
    args.profile = args.profile or stage.get("profile")
    print(f"votive: stage {stage_name} of {args.file}: {model} as {stage['name']} on AWS Lambda", file=sys.stderr)
    return deploy_aws(args, model=model, name=stage["name"], region=args.region or stage.get("region"), stage=stage,
                      stage_name=stage_name)


def _deploy_modal_stage(args: argparse.Namespace, stage: dict, model: str) -> int:
    from votive.deploy.modal_endpoint import ModalDeployer

    gpu = args.gpu if args.gpu is not None else modal_gpu(stage.get("gpu", MODAL_GPU_DEFAULT))
    if args.plan:
        print(f"plan for {stage['name']}: deploy {model} as the Modal app {stage['name']} (GPU {gpu or 'none'}, "
              f"min containers {stage.get('min_containers', 0)}); Modal replaces the app's previous version")
        return 0
    record = ModalDeployer(state=state_store(args)).deploy(
        model, name=stage["name"], gpu=gpu, min_containers=stage.get("min_containers", 0),
        environment=stage.get("environment"), rebuild=args.rebuild)
    print(record["url"])
    return 0


# --- init ---------------------------------------------------------------------------------------------------


def add_init(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", metavar="MODEL", help="the model the starter's stages deploy")
    parser.add_argument("--name", help="the function name's stem (default: from the model)")
    parser.add_argument("--file", type=Path, default=Path("votive.toml"), metavar="PATH",
                        help="where to write it (default ./votive.toml)")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    parser.set_defaults(run=run_init)


def run_init(args: argparse.Namespace) -> int:
    from votive.deploy.project_file import ProjectFile, starter

    if args.file.exists() and not args.force:
        raise DeployError(f"{args.file} already exists; pass --force to replace it")
    text = starter(args.model, args.name)
    args.file.write_text(text, encoding="utf-8")
    ProjectFile(args.file)  # what init writes, deploy reads
    print(args.file)
    print(f"votive: wrote {args.file}; next: votive plan dev, then votive deploy dev", file=sys.stderr)
    return 0


# --- list ---------------------------------------------------------------------------------------------------


def add_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
    parser.add_argument("--file", type=Path, default=Path("votive.toml"), metavar="PATH",
                        help="the project file whose undeployed stages are listed too (default ./votive.toml)")
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="where deployment records live (default .votive/deployments)")
    parser.set_defaults(run=run_list)


def run_list(args: argparse.Namespace) -> int:
    rows = deployments(args)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("votive: no deployments recorded here (and no votive.toml stages)", file=sys.stderr)
        return 0
    columns = ("name", "stage", "provider", "region", "state", "url")
    widths = {c: max(len(c), *(len(str(r.get(c) or "-")) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row.get(c) or "-").ljust(widths[c]) for c in columns).rstrip())
    return 0


def deployments(args: argparse.Namespace) -> list[dict]:
    """One row per recorded deployment, and per votive.toml stage with no record ("not deployed")."""
    from votive.deploy.project_file import ProjectFile

    state = state_store(args)
    stages = {}
    if args.file.is_file():
        stages = {s["name"]: name for name, s in ProjectFile(args.file).stages.items()}
    rows = []
    for name in state.names():
        try:
            record = state.load(name)
        except DeployError as exc:
            rows.append({"name": name, "state": "unreadable", "error": str(exc)})
            continue
        # a record with resources but no URL is what a failed first deploy leaves for `votive destroy`
        status = "deployed" if record.get("url") else "incomplete"
        rows.append({"name": name, "stage": stages.get(name), "provider": record["provider"],
                     "region": record.get("region"), "state": status, "url": record.get("url"),
                     "model": record.get("model"), "deployed_at": record.get("deployed_at"),
                     "auth": record.get("auth"), "resources": len(record.get("resources", []))})
    recorded = {row["name"] for row in rows}
    rows += [{"name": name, "stage": stage, "state": "not deployed"} for name, stage in stages.items()
             if name not in recorded]
    return rows

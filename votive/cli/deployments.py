"""The deployment subcommands of the `votive` command line: deploy (aws, modal), destroy, status, logs, export.

`votive.cli` lists them in its SUBCOMMANDS table; the argument builders here import nothing heavy, and each
`run_*` imports boto3, modal or the builders only when it runs. Work functions return an exit code and raise
VotiveError for anything the user must fix.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from votive.cli.arguments import add_modal_gpu
from votive.errors import DeployError

DEFAULT_BUILD_ROOT = Path(".votive") / "builds"


# --- deploy ------------------------------------------------------------------------------------------------


def add_deploy(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("`votive deploy [STAGE]` (no platform) deploys a stage of ./votive.toml (votive init writes "
                     "one); flags after STAGE override the file.")
    platforms = parser.add_subparsers(title="platforms", metavar="PLATFORM", required=True)
    aws = platforms.add_parser("aws", help="AWS Lambda with a function URL", description=_AWS_HELP)
    aws.add_argument("model", metavar="MODEL", help="a build folder (votive build lambda), or a model to build first")
    aws.add_argument("--name", required=True, help="the function's name (and the deployment's)")
    add_aws_settings(aws)
    aws.set_defaults(run=run_deploy_aws)

    modal = platforms.add_parser("modal", help="a Modal GPU web endpoint", description=_MODAL_HELP)
    modal.add_argument("model", metavar="MODEL", help="a Modal app build folder (votive build modal), or a model")
    modal.add_argument("--name", help="the Modal app's name (default: from the build)")
    add_modal_gpu(modal)  # the same default and choices as `build modal`
    modal.add_argument("--min-containers", type=int, default=0, metavar="N",
                       help="containers kept warm (default 0: scale to zero)")
    modal.add_argument("--environment", help="Modal environment (default: your profile's)")
    modal.add_argument("--rebuild", action="store_true", help="build again even if an earlier build is there")
    modal.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                       help="where deployment records live (default .votive/deployments)")
    modal.set_defaults(run=run_deploy_modal)

    from votive.cli.project import add_deploy_stage

    add_deploy_stage(platforms.add_parser(
        "stage", help="a stage of votive.toml (also: votive deploy [STAGE])",
        description="Deploy what a stage of ./votive.toml declares; flags override the file for this deploy."))


def add_aws_settings(parser: argparse.ArgumentParser) -> None:
    """The function's settings. None of them has a default here: one left out keeps what votive.toml or the last
    deploy of the same name set (`votive.deploy.project_file.resolve`), so a redeploy never silently reverts one."""
    parser.add_argument("--region", help="AWS region (default: AWS_REGION or your profile's)")
    parser.add_argument("--arch", choices=("x86_64", "arm64"), help="CPU architecture (default: the build's, "
                                                                     "x86_64 for a new build)")
    parser.add_argument("--python", help="the Lambda Python runtime to build for (default 3.12)")
    parser.add_argument("--memory", type=int, metavar="MB",
                        help="memory size (default: the build's suggestion, at least 2048)")
    parser.add_argument("--timeout", type=int, metavar="S", help="function timeout in seconds (default: the build's)")
    parser.add_argument("--auth", choices=("AWS_IAM", "NONE"),
                        help="function URL auth: AWS_IAM (callers sign; default) or NONE (public: asks first)")
    parser.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                        help="RESPONSE_STREAM invoke mode (streamed generation)")
    parser.add_argument("--snapstart", action=argparse.BooleanOptionalAction, default=None,
                        help="publish a version with SnapStart and put the URL on its alias")
    parser.add_argument("--provisioned", type=int, metavar="N", help="provisioned concurrency on the alias (0: none)")
    parser.add_argument("--bucket", help="S3 bucket for the artifacts (default votive-ACCOUNT-REGION, created)")
    parser.add_argument("--log-retention", type=int, metavar="DAYS", help="log retention (default 14)")
    parser.add_argument("--env", action="append", type=key_value, metavar="KEY=VALUE",
                        help="a variable for the handler, e.g. VOTIVE_MAX_TOKENS=512 (repeatable; KEY= removes)")
    parser.add_argument("--tag", action="append", type=key_value, metavar="KEY=VALUE",
                        help="a tag on the function (repeatable; KEY= removes)")
    parser.add_argument("--subnet", action="append", metavar="ID", help="a VPC subnet (repeatable)")
    parser.add_argument("--security-group", action="append", metavar="ID", help="a VPC security group (repeatable)")
    parser.add_argument("--rebuild", action="store_true", help="build again even if an earlier build is there")
    parser.add_argument("--plan", action="store_true",
                        help="print what the deploy would change, resource by resource, and change nothing")
    parser.add_argument("--yes", "-y", action="store_true",
                        help="apply without asking (deploy asks before making a URL public, deleting or replacing)")
    parser.add_argument("--json", action="store_true",
                        help="print the deployment's record (with --plan: the changes) as JSON instead of the URL")
    add_common(parser)


_AWS_HELP = ("Deploy MODEL as an AWS Lambda function behind a function URL: upload the build to S3, create the "
             "execution role, log group, layers, function and URL, wait until it is Active and print the URL. "
             "Re-running with nothing changed changes nothing; a failure part-way undoes this deploy's changes. "
             "A setting left out keeps its value from votive.toml or the last deploy.")
_MODAL_HELP = "Deploy MODEL as a Modal web endpoint on a GPU and print its URL (needs Modal credentials)."


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, found {text!r}")
    return key, value


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="AWS profile (default: botocore's credentials chain)")
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="where deployment records live (default .votive/deployments)")


def run_deploy_aws(args: argparse.Namespace) -> int:
    return deploy_aws(args, model=args.model, name=args.name, region=args.region, stage={})


def setting_flags(args: argparse.Namespace) -> dict:
    """The settings given on the command line (None: not given), named as AwsOptions names them."""
    return {"architecture": args.arch, "python": args.python, "memory_mb": args.memory, "timeout_s": args.timeout,
            "auth": args.auth, "stream": args.stream, "snapstart": args.snapstart, "provisioned": args.provisioned,
            "bucket": args.bucket, "log_retention_days": args.log_retention,
            "env": dict(args.env) if args.env else None, "tags": dict(args.tag) if args.tag else None,
            "subnets": tuple(args.subnet) if args.subnet else None,
            "security_groups": tuple(args.security_group) if args.security_group else None}


def deploy_aws(args: argparse.Namespace, *, model: str, name: str, region: str | None, stage: dict,
               stage_name: str | None = None) -> int:
    """Deploy MODEL as NAME with the settings the flags, the stage, the last deploy and the defaults make."""
    from votive.deploy.aws.build_reader import is_build
    from votive.deploy.aws.deployer import AwsDeployer
    from votive.deploy.aws.lambda_config import AwsOptions, check_settings
    from votive.deploy.aws.quotas import check_region
    from votive.deploy.project_file import describe_settings, resolve

    state = state_store(args)
    recorded = state.load(name) if state.exists(name) else None
    last = recorded.get("options") if recorded and recorded.get("provider") == "aws" else None
    settings = resolve(flags=setting_flags(args), stage=stage, recorded=last, stage_name=stage_name)
    values = {key: setting.value for key, setting in settings.items()}
    python = values.pop("python")
    arch = values.pop("architecture")
    if arch is not None and settings["architecture"].source == "last deploy" and is_build(Path(model)):
        arch = None  # a build folder is for one architecture: the last deploy's does not override it
    # what can be refused without a build is refused before building (a build takes minutes)
    check_settings(AwsOptions(name=name, region="", architecture=arch or "x86_64", **values))
    clients = aws_clients(args, region=region or (recorded or {}).get("region"))
    check_region(clients.region, clients.lambda_regions())
    clients.account()
    build = obtain_lambda_build(model, name, arch=arch, python=python, stream=values["stream"],
                                rebuild=args.rebuild)
    options = AwsOptions(name=name, region=clients.region, architecture=arch or build.architecture, **values)
    settings.pop("python")
    lines = [f"votive: settings of {name} (flag > votive.toml > last deploy > default):",
             *(f"votive:   {line}" for line in describe_settings(settings))]
    deployer = AwsDeployer(clients, state=state)
    if args.plan:
        from votive.deploy.aws.changes import render

        changes = deployer.plan(options, build)
        print("\n".join(lines), file=sys.stderr)
        if getattr(args, "json", False):
            import dataclasses
            import json

            print(json.dumps([dataclasses.asdict(c) for c in changes], indent=2))
        else:
            print(render(changes, name))
        return 0
    record = deployer.deploy(options, build, approve=approver(name, yes=args.yes, settings=lines))
    if getattr(args, "json", False):
        import json

        print(json.dumps(record, indent=2, sort_keys=True, default=str))
    else:
        print(record["url"])
    hint = "" if options.auth == "NONE" else " (AWS_IAM: votive invoke signs with your AWS credentials)"
    print(f"votive: {name} is deployed{hint}; try: votive invoke {record['url']} --path /health",
          file=sys.stderr)
    return 0


def approver(name: str, *, yes: bool, settings: list[str] = ()):
    """The deployer's `approve`, called once the preflight passed: print the settings and the plan, and ask on the
    terminal when the plan makes a URL public, deletes or replaces something. Without a terminal it refuses
    unless --yes was given."""
    from votive.deploy.aws.changes import confirmation_reasons, render

    def approve(changes) -> None:
        print("\n".join([*settings, render(changes, name)]), file=sys.stderr)
        reasons = confirmation_reasons(changes)
        if not reasons or yes:
            return
        if not stdin_is_terminal():
            raise DeployError(f"this deploy {'; '.join(reasons)}, and there is no terminal to ask on: pass --yes "
                              f"to apply it (nothing was changed)")
        print(f"votive: this deploy {'; '.join(reasons)}.", file=sys.stderr)
        if input("votive: apply these changes? [y/N] ").strip().lower() not in ("y", "yes"):
            raise DeployError("deploy cancelled; nothing was changed")

    return approve


def stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def obtain_lambda_build(model: str, name: str, *, arch: str | None, python: str, stream: bool, rebuild: bool):
    """MODEL as a build: a build folder as it is, else an earlier build of the same model reused, else a new one
    (for `arch`, x86_64 when None)."""
    from votive.deploy.aws.build_reader import is_build, read_build

    given = Path(model)
    if is_build(given):
        return read_build(given)
    out = DEFAULT_BUILD_ROOT / name
    if is_build(out) and not rebuild:
        build = read_build(out)
        if (build.model == model and build.architecture == (arch or build.architecture)
                and build.streaming == stream and build.runtime == f"python{python}"):
            print(f"votive: reusing the build in {out} (pass --rebuild to build again)", file=sys.stderr)
            return build
    from votive.builders.build_cache import build_lambda_cached
    from votive.builders.lambda_build import LambdaTarget
    from votive.builders.tools import BuildTools

    arch = arch or "x86_64"
    streaming = ", streaming" if stream else ""
    print(f"votive: building {model} for Lambda ({arch}, Python {python}{streaming}) into {out}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    # an identical build made for another name is linked, not built again (keyed by everything that changes it)
    build_lambda_cached(model, out, LambdaTarget(arch=arch, python=python, stream=stream), force=rebuild,
                        tools=BuildTools(log=lambda line: print(f"votive: {line}", file=sys.stderr)))
    return read_build(out)


def run_deploy_modal(args: argparse.Namespace) -> int:
    from votive.deploy.modal_endpoint import ModalDeployer

    record = ModalDeployer(state=state_store(args)).deploy(
        args.model, name=args.name, gpu=args.gpu, min_containers=args.min_containers,
        environment=args.environment, rebuild=args.rebuild)
    print(record["url"])
    return 0


# --- destroy, status, logs ----------------------------------------------------------------------------------


def add_destroy(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the deployment's name")
    add_common(parser)
    parser.set_defaults(run=run_destroy)


def run_destroy(args: argparse.Namespace) -> int:
    record = state_store(args).load(args.name)
    if record["provider"] == "modal":
        from votive.deploy.modal_endpoint import ModalDeployer

        ModalDeployer(state=state_store(args)).destroy(args.name)
    else:
        _aws_deployer(args, record).destroy(args.name)
    print(f"votive: {args.name} is destroyed", file=sys.stderr)
    return 0


def add_status(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the deployment's name")
    parser.add_argument("--json", action="store_true", help="print the whole status as JSON")
    add_common(parser)
    parser.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    record = state_store(args).load(args.name)
    if record["provider"] != "aws":
        status = {"name": args.name, "provider": record["provider"], "url": record.get("url"), "recorded": record}
    else:
        status = _aws_deployer(args, record).status(args.name)
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
        return 0
    for key, value in status.items():
        if key != "recorded" and value is not None:
            print(f"{key:20} {value}")
    return 0 if status.get("state") != "missing" else 1


def add_logs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="the deployment's name")
    parser.add_argument("--since", default="10m", help="how far back to start: 30s, 10m, 2h, 1d (default 10m)")
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new events (Ctrl-C stops)")
    add_common(parser)
    parser.set_defaults(run=run_logs)


def run_logs(args: argparse.Namespace) -> int:
    from votive.client.logs import parse_since, tail_logs
    from votive.deploy.aws.quotas import DeploymentNames

    record = state_store(args).load(args.name)
    if record["provider"] != "aws":
        raise DeployError(f"{args.name} is a {record['provider']} deployment; see its logs with `modal app logs "
                          f"{record.get('app', args.name)}`")
    clients = aws_clients(args, region=record["region"])
    for line in tail_logs(clients.logs, DeploymentNames(args.name).log_group, since_s=parse_since(args.since),
                          follow=args.follow):
        print(line, flush=True)
    return 0


# --- shared -------------------------------------------------------------------------------------------------


def state_store(args: argparse.Namespace):
    from votive.deploy.state import DEFAULT_DIR, StateStore

    return StateStore(args.state_dir or DEFAULT_DIR)


def aws_clients(args: argparse.Namespace, *, region: str | None):
    from votive.client.aws_session import AwsClients, aws_errors

    clients = AwsClients(region or "", profile=args.profile)
    with aws_errors("read the AWS configuration"):
        # AWS_REGION is what Lambda and most SDKs read; botocore itself reads AWS_DEFAULT_REGION and the profile
        region = region or os.environ.get("AWS_REGION") or clients.session.region_name
    if not region:
        raise DeployError("no AWS region: pass --region, or set AWS_REGION or a region in your AWS profile")
    clients.region = region
    return clients


def _aws_deployer(args: argparse.Namespace, record: dict):
    from votive.deploy.aws.deployer import AwsDeployer

    return AwsDeployer(aws_clients(args, region=record["region"]), state=state_store(args))

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

from votive.errors import DeployError

DEFAULT_BUILD_ROOT = Path(".votive") / "builds"


# --- deploy ------------------------------------------------------------------------------------------------


def add_deploy(parser: argparse.ArgumentParser) -> None:
    platforms = parser.add_subparsers(title="platforms", metavar="PLATFORM", required=True)
    aws = platforms.add_parser("aws", help="AWS Lambda with a function URL", description=_AWS_HELP)
    aws.add_argument("model", metavar="MODEL", help="a build folder (votive build lambda), or a model to build first")
    aws.add_argument("--name", required=True, help="the function's name (and the deployment's)")
    aws.add_argument("--region", help="AWS region (default: AWS_REGION or your profile's)")
    aws.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64", help="CPU architecture (default x86_64)")
    aws.add_argument("--python", default="3.12", help="the Lambda Python runtime to build for (default 3.12)")
    aws.add_argument("--memory", type=int, metavar="MB", help="memory size (default: the build's suggestion, "
                                                              "at least 2048)")
    aws.add_argument("--timeout", type=int, metavar="S", help="function timeout in seconds (default: the build's)")
    aws.add_argument("--auth", choices=("AWS_IAM", "NONE"), default="AWS_IAM",
                     help="function URL auth: AWS_IAM (callers sign; default) or NONE (public)")
    aws.add_argument("--stream", action="store_true", help="RESPONSE_STREAM invoke mode (streamed generation)")
    aws.add_argument("--snapstart", action="store_true",
                     help="publish a version with SnapStart and put the URL on its alias")
    aws.add_argument("--provisioned", type=int, metavar="N", help="provisioned concurrency on the alias")
    aws.add_argument("--bucket", help="S3 bucket for the artifacts (default votive-ACCOUNT-REGION, created)")
    aws.add_argument("--log-retention", type=int, default=14, metavar="DAYS", help="log retention (default 14)")
    aws.add_argument("--rebuild", action="store_true", help="build again even if an earlier build is there")
    add_common(aws)
    aws.set_defaults(run=run_deploy_aws)

    modal = platforms.add_parser("modal", help="a Modal GPU web endpoint", description=_MODAL_HELP)
    modal.add_argument("model", metavar="MODEL", help="a Modal app build folder (votive build modal), or a model")
    modal.add_argument("--name", help="the Modal app's name (default: from the build)")
    modal.add_argument("--gpu", default="T4", type=_gpu,
                       help="GPU type: T4, L4, A10G, A100, H100, or none for CPU containers (default T4)")
    modal.add_argument("--min-containers", type=int, default=0, metavar="N",
                       help="containers kept warm (default 0: scale to zero)")
    modal.add_argument("--environment", help="Modal environment (default: your profile's)")
    modal.add_argument("--rebuild", action="store_true", help="build again even if an earlier build is there")
    modal.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                       help="where deployment records live (default .votive/deployments)")
    modal.set_defaults(run=run_deploy_modal)


_AWS_HELP = ("Deploy MODEL as an AWS Lambda function behind a function URL: upload the build to S3, create the "
             "execution role, log group, layers, function and URL, wait until it is Active and print the URL. "
             "Re-running with nothing changed changes nothing; a failure part-way undoes this deploy's changes.")
_MODAL_HELP = "Deploy MODEL as a Modal web endpoint on a GPU and print its URL (needs Modal credentials)."


def _gpu(text: str) -> str | None:
    return None if text.lower() in ("none", "cpu") else text.upper()


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", help="AWS profile (default: botocore's credentials chain)")
    parser.add_argument("--state-dir", type=Path, default=None, metavar="DIR",
                        help="where deployment records live (default .votive/deployments)")


def run_deploy_aws(args: argparse.Namespace) -> int:
    from votive.deploy.aws.deployer import AwsDeployer
    from votive.deploy.aws.lambda_config import AwsOptions
    from votive.deploy.aws.quotas import check_function_name, check_region

    clients = aws_clients(args, region=args.region)
    # what can be refused without a build is refused before building (a build takes minutes)
    check_function_name(args.name)
    check_region(clients.region, clients.lambda_regions())
    clients.account()
    build = obtain_lambda_build(args)
    options = AwsOptions(name=args.name, region=clients.region, architecture=args.arch, memory_mb=args.memory,
                         timeout_s=args.timeout, auth=args.auth, stream=args.stream, snapstart=args.snapstart,
                         provisioned=args.provisioned, bucket=args.bucket, log_retention_days=args.log_retention)
    record = AwsDeployer(clients, state=state_store(args)).deploy(options, build)
    print(record["url"])
    hint = "" if args.auth == "NONE" else " (AWS_IAM: votive invoke signs with your AWS credentials)"
    print(f"votive: {args.name} is deployed{hint}; try: votive invoke {record['url']} --path /health",
          file=sys.stderr)
    return 0


def obtain_lambda_build(args: argparse.Namespace):
    """MODEL as a build: a build folder as it is, else an earlier build of the same model reused, else a new one."""
    from votive.deploy.aws.build_reader import is_build, read_build

    given = Path(args.model)
    if is_build(given):
        return read_build(given)
    out = DEFAULT_BUILD_ROOT / args.name
    if is_build(out) and not args.rebuild:
        build = read_build(out)
        if (build.model == args.model and build.architecture == args.arch and build.streaming == args.stream
                and build.runtime == f"python{args.python}"):
            print(f"votive: reusing the build in {out} (pass --rebuild to build again)", file=sys.stderr)
            return build
    from votive.builders.lambda_build import LambdaTarget, build_lambda
    from votive.builders.tools import BuildTools

    streaming = ", streaming" if args.stream else ""
    print(f"votive: building {args.model} for Lambda ({args.arch}, Python {args.python}{streaming}) into {out}",
          file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    build_lambda(args.model, out, LambdaTarget(arch=args.arch, python=args.python, stream=args.stream),
                 force=is_build(out),
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


# --- export -------------------------------------------------------------------------------------------------


def add_export(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_subparsers(title="formats", metavar="FORMAT", required=True)
    cfn = formats.add_parser("cloudformation", help="a CloudFormation template and the artifacts it deploys",
                             description="Write the deployment `votive deploy aws` makes as a CloudFormation "
                                         "template (template.json) plus the list of artifacts to upload first.")
    cfn.add_argument("model", metavar="MODEL", help="a build folder, or a model to build first")
    cfn.add_argument("--name", required=True, help="the function's name")
    cfn.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder to write the template into")
    cfn.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64")
    cfn.add_argument("--python", default="3.12")
    cfn.add_argument("--memory", type=int, metavar="MB")
    cfn.add_argument("--timeout", type=int, metavar="S")
    cfn.add_argument("--auth", choices=("AWS_IAM", "NONE"), default="AWS_IAM")
    cfn.add_argument("--stream", action="store_true")
    cfn.add_argument("--snapstart", action="store_true")
    cfn.add_argument("--provisioned", type=int, metavar="N")
    cfn.add_argument("--log-retention", type=int, default=14, metavar="DAYS")
    cfn.add_argument("--rebuild", action="store_true")
    cfn.add_argument("--force", action="store_true", help="replace files an earlier export wrote in DIR")
    cfn.set_defaults(run=run_export_cloudformation)


def run_export_cloudformation(args: argparse.Namespace) -> int:
    from votive.deploy.aws.cloudformation import write_export
    from votive.deploy.aws.lambda_config import AwsOptions

    build = obtain_lambda_build(args)
    options = AwsOptions(name=args.name, region="", architecture=args.arch, memory_mb=args.memory,
                         timeout_s=args.timeout, auth=args.auth, stream=args.stream, snapstart=args.snapstart,
                         provisioned=args.provisioned, log_retention_days=args.log_retention)
    written = write_export(options, build, args.out, force=args.force)
    for path in written:
        print(path)
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

"""The export subcommands of the `votive` command line: a deployment as infrastructure as code, a CloudFormation
template (JSON or YAML, artifacts uploaded first) or a SAM template (sam deploy uploads the build's files)."""

from __future__ import annotations

import argparse
from pathlib import Path

from votive.cli.deployments import obtain_lambda_build


def add_export(parser: argparse.ArgumentParser) -> None:
    formats = parser.add_subparsers(title="formats", metavar="FORMAT", required=True)
    cfn = formats.add_parser("cloudformation", help="a CloudFormation template and the artifacts it deploys",
                             description="Write the deployment `votive deploy aws` makes as a CloudFormation "
                                         "template (template.json or .yaml) plus the list of artifacts to upload "
                                         "first (artifacts.json).")
    _add_options(cfn)
    cfn.add_argument("--format", choices=("json", "yaml"), default="json", dest="fmt",
                     help="the template's format (default json)")
    cfn.set_defaults(run=run_export_cloudformation)
    sam = formats.add_parser("sam", help="an AWS SAM template (template.yaml) for sam deploy",
                             description="Write the deployment `votive deploy aws` makes as an AWS SAM template, "
                                         "template.yaml, whose CodeUri and ContentUri point at the build's files: "
                                         "`sam deploy --guided` (or `aws cloudformation package`) uploads them.")
    _add_options(sam)
    sam.set_defaults(run=run_export_sam)
    sfn = formats.add_parser("stepfunctions", help="a Step Functions Distributed Map running votive map's job",
                             description="Write votive map's job as an AWS Step Functions Distributed Map "
                                         "(CloudFormation template): the corpus read from S3, items batched into "
                                         "invocations of the deployed function, throttles retried, results "
                                         "written to S3. For corpora past one client machine, or unattended runs.")
    sfn.add_argument("function", metavar="FUNCTION", help="the deployed function's name (name:alias) or ARN")
    sfn.add_argument("--input", required=True, metavar="S3_URI", help="the corpus, s3://bucket/key (JSONL or CSV)")
    sfn.add_argument("--output", required=True, metavar="S3_URI", help="where results go, s3://bucket/prefix/")
    sfn.add_argument("--format", choices=("jsonl", "csv"), dest="input_format",
                     help="the corpus format (default: from --input's name)")
    sfn.add_argument("--field", default="text", help="the item field holding the text (default text)")
    sfn.add_argument("--id-field", help="the item field holding its id (default: results in item order)")
    sfn.add_argument("--batch-size", type=int, default=64, metavar="N", help="items per invocation (default 64)")
    sfn.add_argument("--max-concurrency", type=int, default=100, metavar="N",
                     help="invocations at once (default 100); leave room for live traffic")
    sfn.add_argument("--tolerated-failure-percentage", type=int, default=0, metavar="P",
                     help="items that may fail before the run does (default 0)")
    sfn.add_argument("--template-format", choices=("json", "yaml"), default="json", dest="fmt")
    sfn.add_argument("--out", type=Path, default=Path("."), metavar="DIR", help="folder to write into")
    sfn.add_argument("--force", action="store_true", help="replace a template an earlier export wrote in DIR")
    sfn.set_defaults(run=run_export_stepfunctions)


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="a build folder, or a model to build first")
    parser.add_argument("--name", required=True, help="the function's name")
    parser.add_argument("--out", type=Path, default=Path("."), metavar="DIR",
                        help="folder to write the template into (default: here)")
    parser.add_argument("--arch", choices=("x86_64", "arm64"), help="CPU architecture (default: the build's, "
                                                                     "x86_64 for a new build)")
    parser.add_argument("--python", default="3.12", help="the Lambda Python runtime to build for (default 3.12)")
    parser.add_argument("--memory", type=int, metavar="MB", help="memory size (default: the build's, at least 2048)")
    parser.add_argument("--timeout", type=int, metavar="S", help="function timeout in seconds (default: the build's)")
    parser.add_argument("--auth", choices=("AWS_IAM", "NONE"), default="AWS_IAM",
                        help="function URL auth: AWS_IAM (callers sign; default) or NONE (public)")
    parser.add_argument("--stream", action="store_true", help="RESPONSE_STREAM invoke mode (streamed generation)")
    parser.add_argument("--snapstart", action="store_true",
                        help="publish a version with SnapStart and put the URL on its alias")
    parser.add_argument("--provisioned", type=int, metavar="N", help="provisioned concurrency on the alias")
    parser.add_argument("--log-retention", type=int, default=14, metavar="DAYS", help="log retention (default 14)")
    parser.add_argument("--rebuild", action="store_true", help="build again even if an earlier build is there")
    parser.add_argument("--force", action="store_true", help="replace files an earlier export wrote in DIR")


def _options(args: argparse.Namespace, build):
    from votive.deploy.aws.lambda_config import AwsOptions

    return AwsOptions(name=args.name, region="", architecture=args.arch or build.architecture,
                      memory_mb=args.memory, timeout_s=args.timeout, auth=args.auth, stream=args.stream,
                      snapstart=args.snapstart, provisioned=args.provisioned, log_retention_days=args.log_retention)


def _build(args: argparse.Namespace):
    from votive.deploy.aws.lambda_config import AwsOptions, check_settings

    # refused before a build (minutes) when the flags alone are wrong
    check_settings(AwsOptions(name=args.name, region="", auth=args.auth, stream=args.stream,
                              snapstart=args.snapstart, provisioned=args.provisioned, memory_mb=args.memory,
                              timeout_s=args.timeout, log_retention_days=args.log_retention))
    return obtain_lambda_build(args.model, args.name, arch=args.arch, python=args.python, stream=args.stream,
                               rebuild=args.rebuild)


def run_export_cloudformation(args: argparse.Namespace) -> int:
    from votive.deploy.aws.cloudformation import write_export

    build = _build(args)
    for path in write_export(_options(args, build), build, args.out, force=args.force, fmt=args.fmt):
        print(path)
    return 0


def run_export_sam(args: argparse.Namespace) -> int:
    import sys

    from votive.deploy.aws.sam import write_sam

    build = _build(args)
    written = write_sam(_options(args, build), build, args.out, force=args.force)
    for path in written:
        print(path)
    print(f"votive: next: cd {args.out} && sam deploy --guided --capabilities CAPABILITY_IAM", file=sys.stderr)
    return 0


def run_export_stepfunctions(args: argparse.Namespace) -> int:
    from votive.deploy.aws.stepfunctions import MapJob, write_state_machine

    fmt = args.input_format or ("csv" if args.input.lower().endswith(".csv") else "jsonl")
    job = MapJob(function=args.function, input_uri=args.input, output_uri=args.output, input_format=fmt,
                 field=args.field, id_field=args.id_field, batch_size=args.batch_size,
                 max_concurrency=args.max_concurrency, tolerated_failure_percentage=args.tolerated_failure_percentage)
    print(write_state_machine(job, args.out, force=args.force, fmt=args.fmt))
    return 0

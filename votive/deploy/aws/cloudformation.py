"""`votive export cloudformation`: the deployment `votive deploy aws` makes, as a CloudFormation template, for
teams that deploy with infrastructure as code.

The template holds the same resources with the same settings: the log group with retention, the execution role
with the same least-privilege policy (`aws_role`), the layers, the function (`lambda_config`), for SnapStart or
provisioned concurrency a version and the alias `live`, the function URL, and for auth NONE the two public
permissions. Artifacts are read from S3: upload them first to the keys listed in `artifacts.json` (the keys
carry each file's sha256, like the deployer's), then create the stack with the bucket as the ArtifactBucket
parameter and CAPABILITY_IAM. JSON, or YAML with `fmt="yaml"` (`template_text`); both files are mode 0644.

The published version's logical id is a digest of everything that makes the function what it is (code, layers,
architecture, memory, environment...), so any such change publishes a new version and moves the alias to it.

Example:
    >>> write_export(AwsOptions("embed", ""), read_build(Path("build/minilm")), Path("cfn/"))   # doctest: +SKIP
    [PosixPath('cfn/template.json'), PosixPath('cfn/artifacts.json')]
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from votive.deploy.aws.build_reader import WEIGHTS_ENV, LambdaBuild
from votive.deploy.aws.lambda_config import AwsOptions, check_options, function_configuration, weights_key_prefix
from votive.deploy.aws.quotas import ALIAS, DeploymentNames
from votive.deploy.aws.role import execution_policy, trust_policy
from votive.deploy.aws.storage import artifact_key
from votive.deploy.aws.template_text import render, write_text
from votive.errors import DeployError

TEMPLATE = "template"  # .json or .yaml
ARTIFACTS = "artifacts.json"


def template(options: AwsOptions, build: LambdaBuild) -> dict:
    """The CloudFormation template (a dict ready for json.dumps) for `options` and `build`."""
    check_options(options, build)
    names = DeploymentNames(options.name)
    weights_prefix = weights_key_prefix(options, build) if build.s3_weights else None
    resources: dict[str, dict] = {}

    resources["LogGroup"] = {"Type": "AWS::Logs::LogGroup", "Properties": {
        "LogGroupName": names.log_group, "RetentionInDays": options.log_retention_days}}
    weights_arn = f"arn:${{AWS::Partition}}:s3:::${{ArtifactBucket}}/{weights_prefix}*" if weights_prefix else None
    policy = execution_policy("${AWS::Partition}", "${AWS::Region}", "${AWS::AccountId}", names.log_group,
                              weights_arn, vpc=bool(options.subnets))
    resources["ExecutionRole"] = {"Type": "AWS::IAM::Role", "Properties": {
        "AssumeRolePolicyDocument": trust_policy(),
        "Policies": [{"PolicyName": names.inline_policy, "PolicyDocument": _substituted(policy)}],
        "Tags": [{"Key": "votive:deployment", "Value": options.name}]}}

    layer_refs = []
    for layer in build.layers:
        logical = "Layer" + _logical(layer.name)
        resources[logical] = {"Type": "AWS::Lambda::LayerVersion", "Properties": {
            "LayerName": names.layer_prefix + re.sub(r"[^A-Za-z0-9_-]", "-", layer.name),
            "Description": f"votive {layer.name} sha256:{layer.sha256[:16]}",
            "Content": {"S3Bucket": {"Ref": "ArtifactBucket"}, "S3Key": artifact_key(names.key_prefix, layer)},
            "CompatibleRuntimes": [build.runtime], "CompatibleArchitectures": [build.architecture]}}
        layer_refs.append({"Ref": logical})

    config = function_configuration(options, build, role_arn="ROLE", layer_arns=[], weights_uri=None)
    variables = dict(config["Environment"]["Variables"])
    if weights_prefix:
        variables[WEIGHTS_ENV] = {"Fn::Sub": f"s3://${{ArtifactBucket}}/{weights_prefix}"}
    function = {
        "FunctionName": options.name,
        "Runtime": config["Runtime"],
        "Handler": config["Handler"],
        "Role": {"Fn::GetAtt": ["ExecutionRole", "Arn"]},
        "Code": {"S3Bucket": {"Ref": "ArtifactBucket"}, "S3Key": artifact_key(names.key_prefix, build.function)},
        "Architectures": [build.architecture],
        "MemorySize": config["MemorySize"],
        "Timeout": config["Timeout"],
        "EphemeralStorage": config["EphemeralStorage"],
        "Layers": layer_refs,
        "Tags": [*({"Key": k, "Value": v} for k, v in sorted(options.tags.items())),
                 {"Key": "votive:deployment", "Value": options.name}, {"Key": "votive:model", "Value": build.model}],
    }
    if options.subnets:
        function["VpcConfig"] = config["VpcConfig"]
    if variables:
        function["Environment"] = {"Variables": variables}
    if options.snapstart:
        function["SnapStart"] = {"ApplyOn": "PublishedVersions"}
    resources["Function"] = {"Type": "AWS::Lambda::Function", "DependsOn": "LogGroup", "Properties": function}

    target = {"Ref": "Function"}
    url_properties = {"TargetFunctionArn": {"Fn::GetAtt": ["Function", "Arn"]}, "AuthType": options.auth,
                      "InvokeMode": options.invoke_mode}
    if options.published:
        version = "Version" + function_digest(function, build)[:12]
        resources[version] = {"Type": "AWS::Lambda::Version", "Properties": {"FunctionName": {"Ref": "Function"}}}
        alias = {"FunctionName": {"Ref": "Function"}, "FunctionVersion": {"Fn::GetAtt": [version, "Version"]},
                 "Name": ALIAS}
        if options.provisioned:
            alias["ProvisionedConcurrencyConfig"] = {"ProvisionedConcurrentExecutions": options.provisioned}
        resources["Alias"] = {"Type": "AWS::Lambda::Alias", "Properties": alias}
        url_properties["Qualifier"] = ALIAS
        target = {"Ref": "Alias"}
    resources["Url"] = {"Type": "AWS::Lambda::Url", "Properties": url_properties}
    if options.published:
        resources["Url"]["DependsOn"] = "Alias"
    if options.auth == "NONE":
        resources["PublicUrlPermission"] = {"Type": "AWS::Lambda::Permission", "Properties": {
            "FunctionName": target, "Action": "lambda:InvokeFunctionUrl", "Principal": "*",
            "FunctionUrlAuthType": "NONE"}}
        resources["PublicInvokePermission"] = {"Type": "AWS::Lambda::Permission", "Properties": {
            "FunctionName": target, "Action": "lambda:InvokeFunction", "Principal": "*",
            "InvokedViaFunctionUrl": True}}

    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"votive: {build.model} on AWS Lambda behind a function URL ({options.auth} auth, "
                       f"{options.invoke_mode})",
        "Parameters": {"ArtifactBucket": {
            "Type": "String", "Description": "the S3 bucket holding the artifacts listed in artifacts.json, in the "
                                             "stack's region"}},
        "Resources": resources,
        "Outputs": {"FunctionUrl": {"Value": {"Fn::GetAtt": ["Url", "FunctionUrl"]}},
                    "FunctionArn": {"Value": {"Fn::GetAtt": ["Function", "Arn"]}}},
    }


def function_digest(function: dict, build: LambdaBuild) -> str:
    """A digest of what makes the function what it is: its properties (code key, architecture, memory,
    environment, SnapStart, VPC...) and its layers' contents (their properties name them only by logical id).
    A version is immutable: named after this, any change makes a new version (and moves the alias) on update."""
    layers = [layer.sha256 for layer in build.layers]
    versioned = {k: v for k, v in function.items() if k != "Tags"}  # tags are not part of a version
    text = json.dumps({"function": versioned, "layers": layers}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def artifact_list(options: AwsOptions, build: LambdaBuild) -> list[dict]:
    """Each file to upload before creating the stack: local path, S3 key, sha256 and size."""
    names = DeploymentNames(options.name)
    entries = [(a, artifact_key(names.key_prefix, a)) for a in (*build.layers, build.function)]
    if build.s3_weights:
        prefix = weights_key_prefix(options, build)
        entries += [(w, prefix + w.name) for w in build.s3_weights]
    return [{"file": str(a.path.resolve()), "key": key, "sha256": a.sha256, "bytes": a.size} for a, key in entries]


def write_export(options: AwsOptions, build: LambdaBuild, out: Path, *, force: bool = False,
                 fmt: str = "json") -> list[Path]:
    """Write template.json (or .yaml) and artifacts.json into `out`, mode 0644; returns their paths.

    Raises:
        DeployError: the options do not fit the build, or a file is already there and `force` is not given.
    """
    out = Path(out)
    body = template(options, build)
    artifacts = {"bucket_parameter": "ArtifactBucket", "artifacts": artifact_list(options, build),
                 "upload": [f"aws s3 cp {a['file']} s3://$BUCKET/{a['key']}" for a in artifact_list(options, build)],
                 "deploy": f"aws cloudformation deploy --template-file {TEMPLATE}.{fmt} --stack-name "
                           f"votive-{options.name} --capabilities CAPABILITY_IAM --parameter-overrides "
                           f"ArtifactBucket=$BUCKET"}
    paths = [out / f"{TEMPLATE}.{fmt}", out / ARTIFACTS]
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise DeployError(f"{existing[0]} already exists; pass --force to replace it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    write_text(paths[0], render(body, fmt))
    write_text(paths[1], render(artifacts, "json"))
    return paths


def _substituted(value):
    """`value` with every string holding ${...} wrapped in Fn::Sub, so CloudFormation fills it in."""
    if isinstance(value, dict):
        return {k: _substituted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_substituted(v) for v in value]
    if isinstance(value, str) and "${" in value:
        return {"Fn::Sub": value}
    return value


def _logical(name: str) -> str:
    """A CloudFormation logical id part: letters and digits only, capitalised ('runtime' -> 'Runtime')."""
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", name) if part) or "Layer"

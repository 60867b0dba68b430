"""`votive export sam`: the deployment `votive deploy aws` makes, as an AWS SAM template (template.yaml) whose
`CodeUri` and layer `ContentUri` point at the build's files on this machine, for `sam deploy --guided` or
`aws cloudformation package` (which upload them and rewrite the paths).

It is the CloudFormation export (`cloudformation.template`, the same settings and least-privilege role) in
SAM's shorthand: an AWS::Serverless::Function with FunctionUrlConfig, AutoPublishAlias `live` when a version is
published (SnapStart, provisioned concurrency: SAM publishes a new version whenever the function changes), and
AWS::Serverless::LayerVersion layers. SAM adds the public URL's InvokeFunctionUrl permission itself; the
InvokeFunction one (conditioned on the call coming through the URL) is added here. Weights staged in S3 are not
files SAM uploads: they are listed in artifacts.json, under the ArtifactBucket parameter, as for CloudFormation.

Example:
    >>> write_sam(AwsOptions("embed", ""), read_build(Path("build/minilm")), Path("sam/"))   # doctest: +SKIP
    [PosixPath('sam/template.yaml')]
"""

from __future__ import annotations

import os
from pathlib import Path

from votive.deploy.aws.build_reader import LambdaBuild
from votive.deploy.aws.cloudformation import ARTIFACTS, artifact_list, template
from votive.deploy.aws.lambda_config import AwsOptions
from votive.deploy.aws.quotas import ALIAS
from votive.deploy.aws.template_text import render, write_text
from votive.errors import DeployError

SAM_TEMPLATE = "template.yaml"
TRANSFORM = "AWS::Serverless-2016-10-31"


def sam_template(options: AwsOptions, build: LambdaBuild, out: Path) -> dict:
    """The SAM template for `options` and `build`, with paths relative to the folder `out` it is written to."""
    body = template(options, build)
    resources = body["Resources"]
    function = resources.pop("Function")
    properties = dict(function["Properties"])
    properties.pop("Code")
    properties["CodeUri"] = _relative(build.function.path, out)
    properties["Tags"] = {t["Key"]: t["Value"] for t in properties["Tags"]}
    url = resources.pop("Url")["Properties"]
    properties["FunctionUrlConfig"] = {"AuthType": url["AuthType"], "InvokeMode": url["InvokeMode"]}
    target = {"Ref": "Function"}
    if options.published:
        alias = resources.pop("Alias")["Properties"]
        for logical in [k for k, r in resources.items() if r["Type"] == "AWS::Lambda::Version"]:
            del resources[logical]
        properties["AutoPublishAlias"] = ALIAS
        if "ProvisionedConcurrencyConfig" in alias:
            properties["ProvisionedConcurrencyConfig"] = alias["ProvisionedConcurrencyConfig"]
        target = {"Ref": f"FunctionAlias{ALIAS}"}  # the alias SAM generates for AutoPublishAlias
    resources.pop("PublicUrlPermission", None)  # SAM adds InvokeFunctionUrl for AuthType NONE itself
    if "PublicInvokePermission" in resources:
        resources["PublicInvokePermission"]["Properties"]["FunctionName"] = target
    for logical, resource in list(resources.items()):
        if resource["Type"] == "AWS::Lambda::LayerVersion":
            layer = resource["Properties"]
            artifact = next(a for a in build.layers if a.sha256[:16] in layer["Description"])
            resources[logical] = {"Type": "AWS::Serverless::LayerVersion", "Properties": {
                "LayerName": layer["LayerName"], "Description": layer["Description"],
                "ContentUri": _relative(artifact.path, out), "CompatibleRuntimes": layer["CompatibleRuntimes"],
                "CompatibleArchitectures": layer["CompatibleArchitectures"], "RetentionPolicy": "Delete"}}
    resources["Function"] = {"Type": "AWS::Serverless::Function", "DependsOn": "LogGroup",
                             "Properties": properties}
    body["Transform"] = TRANSFORM
    body["Outputs"]["FunctionUrl"] = {"Value": {"Fn::GetAtt": ["FunctionUrl", "FunctionUrl"]}}  # SAM's <id>Url
    if not build.s3_weights:
        del body["Parameters"]
    else:
        body["Parameters"]["ArtifactBucket"]["Description"] = (
            "the S3 bucket holding the weights listed in artifacts.json, in the stack's region")
    return {"AWSTemplateFormatVersion": body.pop("AWSTemplateFormatVersion"), "Transform": body.pop("Transform"),
            **body}


def write_sam(options: AwsOptions, build: LambdaBuild, out: Path, *, force: bool = False) -> list[Path]:
    """Write template.yaml (and, for S3 weights, artifacts.json) into `out`, mode 0644; returns their paths.

    Raises:
        DeployError: the options do not fit the build, or a file is already there and `force` is not given.
    """
    out = Path(out)
    paths = [out / SAM_TEMPLATE] + ([out / ARTIFACTS] if build.s3_weights else [])
    existing = [p for p in paths if p.exists()]
    if existing and not force:
        raise DeployError(f"{existing[0]} already exists; pass --force to replace it, or choose another --out")
    body = sam_template(options, build, out)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# votive export sam: {build.model} as {options.name}. Deploy with `sam deploy --guided` (it uploads "
              f"the\n# CodeUri/ContentUri files), or `aws cloudformation package` then `deploy` "
              f"--capabilities CAPABILITY_IAM.\n")
    write_text(paths[0], header + render(body, "yaml"))
    if build.s3_weights:
        weights = [a for a in artifact_list(options, build) if "/weights-" in a["key"]]
        write_text(paths[1], render({"bucket_parameter": "ArtifactBucket", "artifacts": weights,
                                     "upload": [f"aws s3 cp {a['file']} s3://$BUCKET/{a['key']}" for a in weights]},
                                    "json"))
    return paths


def _relative(path: Path, out: Path) -> str:
    """`path` as SAM resolves it: relative to the template's folder."""
    return os.path.relpath(Path(path).resolve(), Path(out).resolve())

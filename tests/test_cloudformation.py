"""`votive export cloudformation`: the template holds the deployment's resources with the deployer's settings,
and passes cfn-lint (run as a program, as a team's CI would)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy_fakes import make_build

from votive.cli import main
from votive.deploy.aws.build_reader import read_build
from votive.deploy.aws.cloudformation import artifact_list, template, write_export
from votive.deploy.aws.lambda_config import AwsOptions
from votive.errors import DeployError


def cfn_lint(path: Path) -> subprocess.CompletedProcess:
    program = shutil.which("cfn-lint", path=str(Path(sys.executable).parent)) or shutil.which("cfn-lint")
    if program is None:
        pytest.fail("cfn-lint is not installed (pip install cfn-lint)")
    return subprocess.run([program, "--regions", "eu-west-1", "us-east-1", "--", str(path)], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("builds")
    return {"layer": read_build(make_build(root / "layer")),
            "s3": read_build(make_build(root / "s3", weights="s3", weight_bytes=b"z" * 3000))}


@pytest.mark.parametrize("case, options", [
    ("layer", AwsOptions("embed", "", auth="NONE")),
    ("s3", AwsOptions("embed-iam", "", snapstart=False, provisioned=2, memory_mb=4096)),
    ("layer", AwsOptions("snap", "", snapstart=True, auth="NONE", log_retention_days=7)),
])
def test_exported_template_passes_cfn_lint(builds, tmp_path, case, options):
    written = write_export(options, builds[case], tmp_path)
    result = cfn_lint(written[0])
    assert result.returncode == 0, result.stdout + result.stderr


def test_template_matches_what_the_deployer_creates(builds):
    body = template(AwsOptions("embed", "", auth="NONE", snapstart=True, memory_mb=3008), builds["layer"])
    resources = body["Resources"]
    function = resources["Function"]["Properties"]
    assert (function["FunctionName"], function["Runtime"], function["Handler"]) == (
        "embed", "python3.12", "votive_function.handler")
    assert (function["MemorySize"], function["Architectures"]) == (3008, ["x86_64"])
    assert function["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert function["Layers"] == [{"Ref": "LayerRuntime"}, {"Ref": "LayerModel"}]
    assert resources["LogGroup"]["Properties"] == {"LogGroupName": "/aws/lambda/embed", "RetentionInDays": 14}
    assert resources["Url"]["Properties"]["Qualifier"] == "live"
    assert resources["Alias"]["Properties"]["Name"] == "live"
    actions = {r["Properties"]["Action"]: r["Properties"] for r in resources.values()
               if r["Type"] == "AWS::Lambda::Permission"}
    assert actions["lambda:InvokeFunctionUrl"]["FunctionUrlAuthType"] == "NONE"
    assert actions["lambda:InvokeFunction"]["InvokedViaFunctionUrl"] is True
    policy = resources["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    assert policy["Statement"][0]["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:logs:${AWS::Region}:${AWS::AccountId}:log-group:/aws/lambda/embed:*"}


def test_iam_auth_template_has_no_public_permission(builds):
    resources = template(AwsOptions("private", ""), builds["layer"])["Resources"]
    assert not [r for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"]
    assert resources["Url"]["Properties"]["AuthType"] == "AWS_IAM"


def test_s3_weights_are_listed_and_readable_by_the_role_only(builds):
    options = AwsOptions("big", "")
    body = template(options, builds["s3"])
    artifacts = artifact_list(options, builds["s3"])
    weights = [a for a in artifacts if "/weights-" in a["key"]]
    assert sorted(Path(a["file"]).name for a in weights) == ["config.json", "model.safetensors"]
    prefix = weights[0]["key"].rsplit("/", 1)[0]
    env = body["Resources"]["Function"]["Properties"]["Environment"]["Variables"]
    assert env["VOTIVE_MODEL_S3"] == {"Fn::Sub": f"s3://${{ArtifactBucket}}/{prefix}/"}
    statement = body["Resources"]["ExecutionRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][1]
    assert statement["Resource"] == {"Fn::Sub": f"arn:${{AWS::Partition}}:s3:::${{ArtifactBucket}}/{prefix}/*"}


def test_cli_writes_the_template_and_refuses_to_overwrite(tmp_path, capsys):
    build = make_build(tmp_path / "build")
    out = tmp_path / "cfn"
    assert main(["export", "cloudformation", str(build), "--name", "embed", "--out", str(out)]) == 0
    assert json.loads((out / "template.json").read_text())["Resources"]["Function"]["Type"] == \
        "AWS::Lambda::Function"
    listed = json.loads((out / "artifacts.json").read_text())["artifacts"]
    assert {Path(a["file"]).name for a in listed} == {p.name for p in build.glob("*.zip")}
    capsys.readouterr()
    assert main(["export", "cloudformation", str(build), "--name", "embed", "--out", str(out)]) == 2
    assert "template.json already exists; pass --force" in capsys.readouterr().err


def test_options_the_build_cannot_take_are_refused(builds):
    with pytest.raises(DeployError, match="--stream: minilm is served by .*embeddings.handler, which answers whole"):
        template(AwsOptions("x", "", stream=True), builds["layer"])

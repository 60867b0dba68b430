"""`votive export sam` and the CloudFormation export's fixes: the SAM template points at the build's files and
passes cfn-lint (which runs SAM's own transform), the YAML text reads back as the JSON template, files are
0644, the published version's logical id changes with anything that changes the function, and the memory
figure is the one default everywhere."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml  # cfn-lint's dependency: an independent YAML reader for the text votive writes itself
from deploy_fakes import make_build
from test_cloudformation import cfn_lint

from votive.builders.size_limits import suggested_memory_mb
from votive.builders.targets import DEFAULT_MEMORY_MB
from votive.cli import main
from votive.deploy.aws.build_reader import read_build
from votive.deploy.aws.cloudformation import template, write_export
from votive.deploy.aws.lambda_config import AwsOptions, memory_mb
from votive.deploy.aws.sam import sam_template, write_sam
from votive.deploy.aws.template_text import to_yaml


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("builds")
    return {"layer": read_build(make_build(root / "layer")),
            "s3": read_build(make_build(root / "s3", weights="s3", weight_bytes=b"z" * 3000)),
            "arm": read_build(make_build(root / "arm", arch="arm64")),
            "other-layer": read_build(make_build(root / "other", weight_bytes=b"v" * 1000))}


@pytest.mark.parametrize("case, options", [
    ("layer", AwsOptions("embed", "", auth="NONE")),
    ("layer", AwsOptions("snap", "", snapstart=True, auth="NONE", tags={"team": "search"})),
    ("s3", AwsOptions("big", "", provisioned=2, memory_mb=4096, env={"VOTIVE_MAX_INPUTS": "64"})),
    ("layer", AwsOptions("vpc", "", subnets=("subnet-0123456789abcdef0",),
                         security_groups=("sg-0123456789abcdef0",))),
])
def test_sam_template_passes_cfn_lint(builds, tmp_path, case, options):
    written = write_sam(options, builds[case], tmp_path)
    assert written[0].name == "template.yaml"
    result = cfn_lint(written[0])
    assert result.returncode == 0, result.stdout + result.stderr


def test_sam_template_points_at_the_build_files(builds, tmp_path):
    build = builds["layer"]
    out = tmp_path / "sam"
    body = yaml.safe_load(write_sam(AwsOptions("snap", "", snapstart=True, auth="NONE"), build, out)[0].read_text())
    assert body["Transform"] == "AWS::Serverless-2016-10-31"
    function = body["Resources"]["Function"]
    assert function["Type"] == "AWS::Serverless::Function"
    props = function["Properties"]
    assert (out / props["CodeUri"]).resolve() == build.function.path.resolve()
    assert not Path(props["CodeUri"]).is_absolute()
    assert props["FunctionUrlConfig"] == {"AuthType": "NONE", "InvokeMode": "BUFFERED"}
    assert props["AutoPublishAlias"] == "live" and props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert props["MemorySize"] == DEFAULT_MEMORY_MB
    layers = {k: r for k, r in body["Resources"].items() if r["Type"] == "AWS::Serverless::LayerVersion"}
    assert {(out / r["Properties"]["ContentUri"]).resolve() for r in layers.values()} == \
        {a.path.resolve() for a in build.layers}
    assert props["Layers"] == [{"Ref": name} for name in layers]
    # no hand-made version, alias or URL: SAM makes them from AutoPublishAlias and FunctionUrlConfig
    assert not {"AWS::Lambda::Version", "AWS::Lambda::Alias", "AWS::Lambda::Url"} & \
        {r["Type"] for r in body["Resources"].values()}
    invoke = body["Resources"]["PublicInvokePermission"]["Properties"]
    assert invoke["FunctionName"] == {"Ref": "FunctionAliaslive"} and invoke["InvokedViaFunctionUrl"] is True
    assert "Parameters" not in body  # nothing to upload by hand


def test_sam_with_s3_weights_lists_them_for_upload(builds, tmp_path):
    written = write_sam(AwsOptions("big", ""), builds["s3"], tmp_path)
    listed = json.loads(written[1].read_text())["artifacts"]
    assert sorted(Path(a["file"]).name for a in listed) == ["config.json", "model.safetensors"]
    body = sam_template(AwsOptions("big", ""), builds["s3"], tmp_path)
    assert "ArtifactBucket" in body["Parameters"]


def test_cli_export_sam_and_yaml_cloudformation(tmp_path, capsys):
    build = make_build(tmp_path / "build")
    assert main(["export", "sam", str(build), "--name", "embed", "--out", str(tmp_path / "sam")]) == 0
    assert "sam deploy --guided" in capsys.readouterr().err
    assert main(["export", "sam", str(build), "--name", "embed", "--out", str(tmp_path / "sam")]) == 2
    assert "template.yaml already exists; pass --force" in capsys.readouterr().err
    assert main(["export", "cloudformation", str(build), "--name", "embed", "--out", str(tmp_path / "cfn"),
                 "--format", "yaml"]) == 0
    text = (tmp_path / "cfn" / "template.yaml").read_text()
    assert yaml.safe_load(text) == template(AwsOptions("embed", ""), read_build(build))
    assert cfn_lint(tmp_path / "cfn" / "template.yaml").returncode == 0


def test_exported_files_are_0644(builds, tmp_path):
    paths = write_export(AwsOptions("embed", ""), builds["layer"], tmp_path / "cfn") + \
        write_sam(AwsOptions("embed", ""), builds["s3"], tmp_path / "sam")
    assert [stat.S_IMODE(p.stat().st_mode) for p in paths] == [0o644] * 4


def _version_id(options, build) -> str:
    [version] = [k for k, r in template(options, build)["Resources"].items() if r["Type"] == "AWS::Lambda::Version"]
    return version


def test_version_id_changes_with_anything_that_changes_the_function(builds):
    base = AwsOptions("snap", "", snapstart=True)
    same = _version_id(base, builds["layer"])
    assert _version_id(AwsOptions("snap", "", snapstart=True), builds["layer"]) == same
    assert builds["other-layer"].function.sha256 == builds["layer"].function.sha256  # only a layer differs
    changed = {
        "layer": _version_id(base, builds["other-layer"]),
        "architecture": _version_id(AwsOptions("snap", "", snapstart=True, architecture="arm64"), builds["arm"]),
        "memory": _version_id(AwsOptions("snap", "", snapstart=True, memory_mb=4096), builds["layer"]),
        "env": _version_id(AwsOptions("snap", "", snapstart=True, env={"VOTIVE_BATCH_SIZE": "8"}), builds["layer"]),
    }
    assert same not in changed.values() and len(set(changed.values())) == len(changed), changed
    # tags are not part of a version
    assert _version_id(AwsOptions("snap", "", snapstart=True, tags={"team": "x"}), builds["layer"]) == same


def test_one_memory_default_in_manifest_deploy_and_template(builds):
    assert DEFAULT_MEMORY_MB == 2048
    assert suggested_memory_mb(90 * 2**20) == DEFAULT_MEMORY_MB  # what the build's manifest records
    small = builds["layer"]
    assert memory_mb(AwsOptions("x", ""), small) == DEFAULT_MEMORY_MB
    assert template(AwsOptions("x", ""), small)["Resources"]["Function"]["Properties"]["MemorySize"] == 2048


def test_yaml_text_reads_back_as_the_same_data():
    data = {"A": {"Fn::Sub": "arn:${AWS::Partition}:s3:::b/*"}, "list": [{"k": 1, "m": [True, None]}, "x: y"],
            "empty": {}, "none": [], "quote\"d": "line\nbreak \u00e9", "num": 2.5, "yes": "yes", "s": "012"}
    assert yaml.safe_load(to_yaml(data)) == data

"""votive.toml stages, settings that never silently revert, plan before apply, confirmation, and `votive list`,
through `votive.cli.main` against the moto server. Every effect is read back from AWS."""

from __future__ import annotations

import json

import pytest
from deploy_fakes import REGION, make_build
from test_deploy_cli import aws_env  # noqa: F401  (the CLI pointed at moto)

from votive.cli import main
from votive.deploy.project_file import ProjectFile


def _conf(clients, name):
    return clients.lambda_.get_function_configuration(FunctionName=name)


def _err_lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


# --- votive init, votive.toml -------------------------------------------------------------------------------


def test_init_writes_a_commented_starter_that_deploy_reads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["init", "sentence-transformers/all-MiniLM-L6-v2"]) == 0
    text = (tmp_path / "votive.toml").read_text()
    assert text.startswith("# votive.toml") and "# [dev.env]" in text
    stage_name, stage = ProjectFile(tmp_path / "votive.toml").stage(None)
    assert (stage_name, stage["model"], stage["name"], stage["memory_mb"], stage["auth"], stage["target"]) == (
        "dev", "sentence-transformers/all-MiniLM-L6-v2", "all-minilm-l6-v2-dev", 2048, "AWS_IAM", "aws")
    capsys.readouterr()
    assert main(["init"]) == 2
    assert "votive.toml already exists; pass --force to replace it" in capsys.readouterr().err
    assert main(["init", "other", "--force"]) == 0
    assert ProjectFile(tmp_path / "votive.toml").stages["dev"]["model"] == "other"


@pytest.mark.parametrize("body, expected", [
    ('[dev]\nmodel = "m"\nmemroy = 3008\n', "votive.toml: [dev] unknown key 'memroy'; known keys: name, model"),
    ('[dev]\nmodel = "m"\nmemory = "big"\n', "votive.toml: [dev] memory = 'big': expected MB, from 128 to 10240"),
    ('[dev]\nmodel = "m"\nauth = "none"\n', "votive.toml: [dev] auth = 'none': expected AWS_IAM or NONE"),
    ('[dev]\nmodel = "m"\n[dev.vpc]\nsubnet = ["s"]\n', "[dev.vpc] expected subnets = [\"subnet-...\"]"),
    ('model = "m"\n', "votive.toml: 'model' is not a table"),
    ('[dev\n', "votive.toml: not valid TOML"),
])
def test_a_bad_file_is_one_line_naming_the_key_and_file(tmp_path, monkeypatch, capsys, body, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "votive.toml").write_text(body)
    assert main(["plan"]) == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1, err


def test_deploy_stage_deploys_what_the_file_declares(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    (tmp_path / "votive.toml").write_text(f'''
[dev]
model = "{build}"
name = "proj-fn"
memory = 3008
log_retention = 7
[dev.env]
VOTIVE_MAX_INPUTS = 64
[dev.tags]
team = "search"
[prod]
model = "{build}"
''')
    assert main(["deploy", "dev"]) == 0
    conf = _conf(aws_env, "proj-fn")
    assert conf["MemorySize"] == 3008 and conf["Environment"]["Variables"]["VOTIVE_MAX_INPUTS"] == "64"
    assert aws_env.lambda_.list_tags(Resource=conf["FunctionArn"])["Tags"]["team"] == "search"
    [group] = aws_env.logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/proj-fn")["logGroups"]
    assert group["retentionInDays"] == 7
    err = capsys.readouterr().err
    assert "memory_mb          3008  (votive.toml [dev])" in err and "auth               AWS_IAM  (default)" in err

    # a flag overrides the file for one deploy; the file's stage is named, there are two
    assert main(["deploy", "dev", "--memory", "4096"]) == 0
    assert _conf(aws_env, "proj-fn")["MemorySize"] == 4096
    capsys.readouterr()
    assert main(["deploy"]) == 2
    assert "declares 2 stages (dev, prod); name one: votive deploy STAGE" in capsys.readouterr().err


def test_an_omitted_flag_keeps_the_last_deploys_value(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    assert main(["deploy", "aws", str(build), "--name", "keep", "--memory", "3008", "--env",
                 "VOTIVE_MAX_TOKENS=512"]) == 0
    capsys.readouterr()
    assert main(["deploy", "aws", str(build), "--name", "keep", "--auth", "NONE", "--yes"]) == 0
    conf = _conf(aws_env, "keep")
    assert conf["MemorySize"] == 3008 and conf["Environment"]["Variables"]["VOTIVE_MAX_TOKENS"] == "512"
    assert aws_env.lambda_.get_function_url_config(FunctionName="keep")["AuthType"] == "NONE"
    lines = _err_lines(capsys)
    assert "votive:   memory_mb          3008  (last deploy)" in lines
    assert "votive:   auth               NONE  (flag)" in lines
    # the URL's auth changed: said so, and the function line does not claim nothing changed
    assert "votive: function URL auth AWS_IAM -> NONE" in lines
    assert not [line for line in lines if line.endswith(") unchanged")]
    assert main(["deploy", "aws", str(build), "--name", "keep", "--env", "VOTIVE_MAX_TOKENS=", "--yes",
                 "--auth", "AWS_IAM"]) == 0  # KEY= removes it
    assert "VOTIVE_MAX_TOKENS" not in _conf(aws_env, "keep").get("Environment", {}).get("Variables", {})


def test_plan_prints_each_change_and_changes_nothing(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    assert main(["deploy", "aws", str(build), "--name", "p", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "+ create   function p  (python3.12, x86_64, 2048 MB, 30 s)" in out
    assert "+ create   role votive-p" in out and "+ create   function URL on p  (auth AWS_IAM, BUFFERED)" in out
    assert aws_env.lambda_.list_functions()["Functions"] == [] and aws_env.s3.list_buckets()["Buckets"] == []

    assert main(["deploy", "aws", str(build), "--name", "p"]) == 0
    capsys.readouterr()
    assert main(["deploy", "aws", str(build), "--name", "p", "--plan"]) == 0
    assert capsys.readouterr().out.strip() == "plan for p: no changes"
    assert main(["deploy", "aws", str(build), "--name", "p", "--memory", "3008", "--auth", "NONE", "--env",
                 "VOTIVE_BATCH_SIZE=8", "--plan"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  ~ update   function p" in out
    assert "                 MemorySize: 2048 -> 3008" in out
    assert "                 env VOTIVE_BATCH_SIZE: (unset) -> 8" in out
    assert "  ~ update   function URL on p" in out and "                 AuthType: AWS_IAM -> NONE" in out
    assert "  + create   permission votive-url-public on p  (anyone may call the URL)" in out
    assert out[-1] == "2 to create, 2 to change"
    assert _conf(aws_env, "p")["MemorySize"] == 2048  # nothing applied
    assert aws_env.lambda_.get_function_url_config(FunctionName="p")["AuthType"] == "AWS_IAM"


def test_deploy_and_plan_print_json_when_asked(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    assert main(["deploy", "aws", str(build), "--name", "js", "--plan", "--json"]) == 0
    changes = json.loads(capsys.readouterr().out)
    assert {"action": "create", "resource": "role votive-js"}.items() <= next(
        c for c in changes if c["resource"] == "role votive-js").items()
    assert main(["deploy", "aws", str(build), "--name", "js", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["name"] == "js" and record["url"].startswith("http") and record["region"]


def test_plan_command_reads_the_stage(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    (tmp_path / "votive.toml").write_text(f'[dev]\nmodel = "{build}"\nname = "staged"\nsnapstart = true\n')
    assert main(["plan", "dev"]) == 0
    out = capsys.readouterr().out
    assert "+ create   alias staged:live" in out and "+ create   function URL on staged:live" in out
    assert aws_env.lambda_.list_functions()["Functions"] == []


def test_making_a_url_public_asks_first(aws_env, tmp_path, capsys, monkeypatch):  # noqa: F811
    build = make_build(tmp_path / "build")
    # no terminal, no --yes: refused in one line, nothing created
    assert main(["deploy", "aws", str(build), "--name", "pub", "--auth", "NONE"]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        "votive: error: this deploy makes the function URL public (auth NONE: anyone on the internet may call "
        "it), and there is no terminal to ask on: pass --yes to apply it (nothing was changed)")
    assert "  + create   function URL on pub  (auth NONE, BUFFERED)" in err  # the plan was shown
    assert aws_env.lambda_.list_functions()["Functions"] == [] and aws_env.s3.list_buckets()["Buckets"] == []

    answers = iter(["n", "yes"])
    monkeypatch.setattr("votive.cli.deployments.stdin_is_terminal", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert main(["deploy", "aws", str(build), "--name", "pub", "--auth", "NONE"]) == 2
    assert "deploy cancelled; nothing was changed" in capsys.readouterr().err
    assert aws_env.lambda_.list_functions()["Functions"] == []
    assert main(["deploy", "aws", str(build), "--name", "pub", "--auth", "NONE"]) == 0
    assert aws_env.lambda_.get_function_url_config(FunctionName="pub")["AuthType"] == "NONE"


def test_deleting_or_replacing_asks_first(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    assert main(["deploy", "aws", str(build), "--name", "d", "--auth", "NONE", "--yes"]) == 0
    capsys.readouterr()
    assert main(["deploy", "aws", str(build), "--name", "d", "--auth", "AWS_IAM"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "this deploy deletes permission votive-url-public on d; deletes permission votive-url-invoke on d" in err
    assert aws_env.lambda_.get_function_url_config(FunctionName="d")["AuthType"] == "NONE"
    # SnapStart moves the URL to the alias: a new address
    assert main(["deploy", "aws", str(build), "--name", "d", "--snapstart"]) == 2
    assert "replaces function URL on d:live" in capsys.readouterr().err.splitlines()[-1]
    assert main(["deploy", "aws", str(build), "--name", "d", "--auth", "AWS_IAM", "--yes"]) == 0
    with pytest.raises(aws_env.lambda_.exceptions.ResourceNotFoundException):
        aws_env.lambda_.get_policy(FunctionName="d")


def test_list_shows_recorded_deployments_and_undeployed_stages(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    (tmp_path / "votive.toml").write_text(f'[dev]\nmodel = "{build}"\nname = "a"\n[prod]\nmodel = "{build}"\n')
    assert main(["deploy", "dev"]) == 0
    (tmp_path / ".votive/deployments/half.json").write_text(json.dumps(
        {"name": "half", "provider": "aws", "region": REGION, "resources": [{"kind": "role", "name": "x"}]}))
    capsys.readouterr()
    assert main(["list", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert (rows["a"]["stage"], rows["a"]["state"], rows["a"]["region"]) == ("dev", "deployed", REGION)
    assert rows["a"]["url"].startswith("https://")
    assert rows["half"]["state"] == "incomplete" and rows["prod"]["state"] == "not deployed"
    assert main(["list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["NAME", "STAGE", "PROVIDER", "REGION", "STATE", "URL"]
    assert [line.split()[0] for line in table[1:]] == ["a", "half", "prod"]


def test_bad_settings_are_refused_before_any_build(aws_env, tmp_path, capsys, monkeypatch):  # noqa: F811
    built = []
    monkeypatch.setattr("votive.builders.lambda_build.build_lambda", lambda *a, **k: built.append(a))
    cases = [
        (["--stream", "--snapstart"], "--snapstart cannot go with --stream"),
        (["--env", "VOTIVE_MAX_TOKEN=5"], "--env VOTIVE_MAX_TOKEN: not a variable votive reads; these are:"),
        (["--env", "AWS_REGION=x"], "--env AWS_REGION: set by the build or by Lambda itself"),
        (["--subnet", "subnet-1"], "a VPC needs both subnets and security groups"),
        (["--tag", "aws:x=1"], "tag 'aws:x'"),
    ]
    for extra, expected in cases:
        assert main(["deploy", "aws", "minilm", "--name", "early", *extra]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    assert built == [] and aws_env.s3.list_buckets()["Buckets"] == []


def test_vpc_settings_reach_the_function_and_its_role(aws_env, tmp_path, capsys):  # noqa: F811
    build = make_build(tmp_path / "build")
    (tmp_path / "votive.toml").write_text(f'''[dev]
model = "{build}"
name = "private"
[dev.vpc]
subnets = ["subnet-0123456789abcdef0"]
security_groups = ["sg-0123456789abcdef0"]
''')
    assert main(["deploy"]) == 0
    vpc = _conf(aws_env, "private")["VpcConfig"]
    assert (vpc["SubnetIds"], vpc["SecurityGroupIds"]) == (["subnet-0123456789abcdef0"], ["sg-0123456789abcdef0"])
    policy = aws_env.iam.get_role_policy(RoleName="votive-private", PolicyName="votive-least-privilege")
    assert "ec2:CreateNetworkInterface" in policy["PolicyDocument"]["Statement"][-1]["Action"]
    capsys.readouterr()
    assert main(["plan"]) == 0
    assert capsys.readouterr().out.strip() == "plan for private: no changes"


def test_replacing_old_artifacts_is_cleanup_that_asks_nothing(aws_env, tmp_path, capsys):  # noqa: F811
    assert main(["deploy", "aws", str(make_build(tmp_path / "a")), "--name", "up"]) == 0
    newer = make_build(tmp_path / "b", weight_bytes=b"n" * 1000, code=b"handler = 2\n")
    capsys.readouterr()
    assert main(["deploy", "aws", str(newer), "--name", "up", "--plan"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  + create   layer version votive-up-model  (sha256 " + read_sha(newer, "model") + ")" in out
    superseded = [line for line in out if line.startswith("  - delete") and line.endswith("(superseded)")]
    assert len(superseded) == 3  # the old model layer version, the old model zip and the old function zip
    assert [line for line in out if "code sha256: " in line]
    assert main(["deploy", "aws", str(newer), "--name", "up"]) == 0  # no terminal, no --yes: nothing to ask


def read_sha(build, role: str) -> str:
    manifest = json.loads((build / "manifest.json").read_text())
    return next(a["sha256"] for a in manifest["artifacts"] if a["role"] == role)[:12]


def test_every_variable_the_serving_code_reads_is_known_to_env():
    """--env refuses unknown VOTIVE_ names (typos): so each one the serving parts read must be in a list."""
    import re
    from pathlib import Path

    import votive
    from votive.deploy.aws.lambda_config import BUILD_VARIABLES, GPU_VARIABLES, USER_VARIABLES

    root = Path(votive.__file__).parent
    serving = [root / "__init__.py", root / "sources.py", *[p for part in ("handlers", "models", "backends", "quant",
                                                                           "formats", "text", "protocol")
                                                            for p in (root / part).rglob("*.py")]]
    read = {name for path in serving for name in re.findall(r"[\"'](VOTIVE_[A-Z0-9_]+)[\"']", path.read_text())}
    assert read - set(USER_VARIABLES + BUILD_VARIABLES + GPU_VARIABLES) == set()
    assert {"VOTIVE_MAX_TOKENS", "VOTIVE_N_CTX"} <= read

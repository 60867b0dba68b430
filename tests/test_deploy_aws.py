"""`votive deploy aws` against a moto server over real HTTP: what it creates, that a re-deploy changes nothing,
that a failure part-way is undone, that destroy leaves nothing, and that bad input is refused before anything
is created. Every check reads AWS back through the APIs."""

from __future__ import annotations

import json
import urllib.request

import pytest
from deploy_fakes import REGION, CallRecorder, RecordingUi, fail_on, make_build

from votive.client.aws_session import AwsClients
from votive.deploy.aws.build_reader import read_build
from votive.deploy.aws.deployer import AwsDeployer
from votive.deploy.aws.lambda_config import AwsOptions
from votive.deploy.state import StateStore
from votive.errors import DeployError

ACCOUNT = "123456789012"  # moto's account
BUCKET = f"votive-{ACCOUNT}-{REGION}"


@pytest.fixture
def aws(moto_endpoint, monkeypatch):
    """A fresh moto account and fake credentials in the environment (botocore's chain finds them)."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    urllib.request.urlopen(urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")).close()
    return moto_endpoint


@pytest.fixture
def clients(aws):
    return AwsClients(REGION, endpoint_url=aws)


@pytest.fixture
def ui():
    return RecordingUi()


@pytest.fixture
def deployer(clients, tmp_path, ui):
    return AwsDeployer(clients, state=StateStore(tmp_path / "state"), ui=ui, sleep=lambda s: None)


@pytest.fixture
def build(tmp_path):
    return read_build(make_build(tmp_path / "build"))


def everything(clients) -> dict:
    """What exists in the account, by kind: enough to tell "nothing left"."""
    return {
        "functions": [f["FunctionName"] for f in clients.lambda_.list_functions()["Functions"]],
        "layers": [l["LayerName"] for l in clients.lambda_.list_layers()["Layers"]],
        "roles": [r["RoleName"] for r in clients.iam.list_roles()["Roles"]],
        "log_groups": [g["logGroupName"] for g in clients.logs.describe_log_groups()["logGroups"]],
        "buckets": [b["Name"] for b in clients.s3.list_buckets()["Buckets"]],
    }


NOTHING = {"functions": [], "layers": [], "roles": [], "log_groups": [], "buckets": []}


def test_deploy_creates_every_resource_as_asked(deployer, clients, build, tmp_path):
    record = deployer.deploy(AwsOptions("embed", REGION, memory_mb=3008, timeout_s=45, log_retention_days=30), build)

    conf = clients.lambda_.get_function(FunctionName="embed")["Configuration"]
    assert (conf["Runtime"], conf["Handler"], conf["Architectures"]) == ("python3.12", "votive_function.handler",
                                                                         ["x86_64"])
    assert (conf["MemorySize"], conf["Timeout"], conf["EphemeralStorage"]["Size"]) == (3008, 45, 512)
    assert conf["Role"] == f"arn:aws:iam::{ACCOUNT}:role/votive-embed"
    assert [l["Arn"].split(":")[-2:] for l in conf["Layers"]] == [["votive-embed-runtime", "1"],
                                                                   ["votive-embed-model", "1"]]
    assert clients.lambda_.list_tags(Resource=conf["FunctionArn"])["Tags"]["votive:model"] == "minilm"

    url = clients.lambda_.get_function_url_config(FunctionName="embed")
    assert (url["AuthType"], url["InvokeMode"]) == ("AWS_IAM", "BUFFERED")
    assert record["url"] == url["FunctionUrl"] and ".lambda-url.eu-west-1.on.aws" in record["url"]
    with pytest.raises(clients.lambda_.exceptions.ResourceNotFoundException):
        clients.lambda_.get_policy(FunctionName="embed")  # AWS_IAM: no public statements at all

    role = clients.iam.get_role(RoleName="votive-embed")["Role"]
    assert role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    policy = clients.iam.get_role_policy(RoleName="votive-embed", PolicyName="votive-least-privilege")
    [statement] = policy["PolicyDocument"]["Statement"]  # logs only: bundled weights need no S3 access
    assert statement["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"]
    assert statement["Resource"] == f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/embed:*"

    [group] = clients.logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/embed")["logGroups"]
    assert group["retentionInDays"] == 30

    for artifact in build.artifacts():
        key = f"votive/embed/{artifact.sha256[:16]}/{artifact.path.name}"
        head = clients.s3.head_object(Bucket=BUCKET, Key=key)
        assert head["Metadata"]["sha256"] == artifact.sha256 and head["ContentLength"] == artifact.size

    saved = json.loads((tmp_path / "state" / "embed.json").read_text())
    assert saved["url"] == record["url"] and saved["provider"] == "aws"
    kinds = [r["kind"] for r in saved["resources"]]
    assert kinds == ["bucket", "object", "object", "object", "log_group", "role", "layer_version", "layer_version",
                     "function", "url"]


def test_public_url_gets_both_permissions_with_their_conditions(deployer, clients, build):
    deployer.deploy(AwsOptions("public", REGION, auth="NONE"), build)

    assert clients.lambda_.get_function_url_config(FunctionName="public")["AuthType"] == "NONE"
    statements = {s["Sid"]: s for s in json.loads(clients.lambda_.get_policy(FunctionName="public")["Policy"])[
        "Statement"]}
    url, invoke = statements["votive-url-public"], statements["votive-url-invoke"]
    assert (url["Action"], url["Principal"]) == ("lambda:InvokeFunctionUrl", "*")
    assert _condition(url, "FunctionUrlAuthType") == "NONE"
    assert (invoke["Action"], invoke["Principal"]) == ("lambda:InvokeFunction", "*")
    assert str(_condition(invoke, "InvokedViaFunctionUrl")).lower() == "true"


def _condition(statement: dict, key: str):
    """A statement's condition value: moto keeps AddPermission's field, AWS writes a Condition block."""
    if key in statement:
        return statement[key]
    for block in statement.get("Condition", {}).values():
        for name, value in block.items():
            if name.endswith(key):
                return value
    raise AssertionError(f"no {key} in {statement}")


def test_redeploy_with_nothing_changed_changes_nothing(deployer, clients, build, ui):
    options = AwsOptions("same", REGION, auth="NONE")
    first = deployer.deploy(options, build)
    recorder = CallRecorder(clients.lambda_, clients.iam, clients.s3, clients.logs)
    ui.progress_calls.clear()

    second = deployer.deploy(options, build)

    assert recorder.names() == []
    assert ui.progress_calls == []  # nothing uploaded
    assert second["url"] == first["url"] and second["resources"] == first["resources"]


def test_redeploy_updates_only_what_changed(deployer, clients, build, tmp_path):
    deployer.deploy(AwsOptions("grow", REGION), build)
    old_code = f"votive/grow/{build.function.sha256[:16]}/votive-function.zip"
    recorder = CallRecorder(clients.lambda_, clients.iam, clients.logs)

    deployer.deploy(AwsOptions("grow", REGION, memory_mb=4096), build)
    assert recorder.names() == ["UpdateFunctionConfiguration"]
    assert recorder.calls[0][1] == {"FunctionName": "grow", "MemorySize": 4096}

    recorder.clear()
    rebuilt = read_build(make_build(tmp_path / "build2", code=b"handler = 'new'\n"))
    record = deployer.deploy(AwsOptions("grow", REGION, memory_mb=4096), rebuilt)
    assert recorder.names() == ["UpdateFunctionCode"]  # the layers are the same bytes: not republished
    conf = clients.lambda_.get_function_configuration(FunctionName="grow")
    assert conf["CodeSha256"] == _b64(rebuilt.function.sha256)
    # the superseded function zip is removed from the bucket, the new one is recorded
    keys = [o["Key"] for o in clients.s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
    assert old_code not in keys and record["code"]["key"] in keys


def _b64(hex_digest: str) -> str:
    import base64

    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def test_s3_weights_are_uploaded_and_only_they_are_readable(deployer, clients, tmp_path):
    build = read_build(make_build(tmp_path / "b", weights="s3", weight_bytes=b"x" * 5000))
    deployer.deploy(AwsOptions("big", REGION), build)

    conf = clients.lambda_.get_function_configuration(FunctionName="big")
    uri = conf["Environment"]["Variables"]["VOTIVE_MODEL_S3"]
    prefix = f"votive/big/weights-{build.weights_digest[:16]}/"
    assert uri == f"s3://{BUCKET}/{prefix}"
    for weight in build.s3_weights:
        body = clients.s3.get_object(Bucket=BUCKET, Key=prefix + weight.name)["Body"].read()
        assert body == weight.path.read_bytes()
    assert conf["EphemeralStorage"]["Size"] >= 512 and len(conf["Layers"]) == 1  # the runtime layer only
    statements = clients.iam.get_role_policy(RoleName="votive-big", PolicyName="votive-least-privilege")[
        "PolicyDocument"]["Statement"]
    assert statements[1] == {"Sid": "ReadOwnWeights", "Effect": "Allow", "Action": "s3:GetObject",
                             "Resource": f"arn:aws:s3:::{BUCKET}/{prefix}*"}


def test_snapstart_publishes_a_version_and_puts_the_url_on_its_alias(deployer, clients, build):
    recorder = CallRecorder(clients.lambda_)
    record = deployer.deploy(AwsOptions("snappy", REGION, snapstart=True, auth="NONE"), build)

    calls = dict(recorder.calls)
    assert calls["CreateFunction"]["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    alias = clients.lambda_.get_alias(FunctionName="snappy", Name="live")
    assert alias["FunctionVersion"] == record["version"] == "1"
    # moto keeps URLs per function, not per alias; what was asked for is checked on the wire
    assert calls["CreateFunctionUrlConfig"]["Qualifier"] == "live"
    assert [p.get("Qualifier") for name, p in recorder.calls if name == "AddPermission"] == ["live", "live"]
    assert record["qualifier"] == "live"


def test_provisioned_concurrency_is_set_on_the_alias_and_waited_for(clients, tmp_path, build, ui):
    states = iter(["IN_PROGRESS", "IN_PROGRESS", "READY"])
    sleeps = []
    provisioned = ProvisionedConcurrency(clients.lambda_, states)
    deployer = AwsDeployer(clients, state=StateStore(tmp_path / "s"), ui=ui, sleep=sleeps.append)
    deployer.deploy(AwsOptions("warm", REGION, provisioned=3), build)

    assert provisioned.requested == {("warm", "live"): 3}
    assert sleeps == [1.0, 2.0]  # polled until READY, with backoff, without really waiting


class ProvisionedConcurrency:
    """moto has no provisioned concurrency: answer those three operations here, at the client's boundary."""

    def __init__(self, client, states):
        self.requested = {}
        self.states = states
        self.params = {}
        client.meta.events.register("provide-client-params.lambda.*", self._keep)
        client.meta.events.register("before-call.lambda.*", self._answer)

    def _keep(self, model, params, **_):
        self.params = dict(params)

    def _answer(self, model, **_):
        from botocore.awsrequest import AWSResponse

        params = self.params
        key = (params.get("FunctionName"), params.get("Qualifier"))
        if model.name == "PutProvisionedConcurrencyConfig":
            self.requested[key] = params["ProvisionedConcurrentExecutions"]
            return AWSResponse("", 202, {}, None), {"Status": "IN_PROGRESS"}
        if model.name == "GetProvisionedConcurrencyConfig":
            if key not in self.requested:
                error = {"Code": "ProvisionedConcurrencyConfigNotFoundException", "Message": "none"}
                return AWSResponse("", 404, {}, None), {"Error": error}
            return AWSResponse("", 200, {}, None), {
                "RequestedProvisionedConcurrentExecutions": self.requested[key], "Status": next(self.states)}
        if model.name == "DeleteProvisionedConcurrencyConfig":
            self.requested.pop(key, None)
            return AWSResponse("", 204, {}, None), {}
        return None


def test_failure_part_way_is_undone_and_named(deployer, clients, build, tmp_path):
    fail_on(clients.lambda_, "CreateFunctionUrlConfig", message="not allowed to create URLs here")

    with pytest.raises(DeployError) as caught:
        deployer.deploy(AwsOptions("doomed", REGION), build)

    message = str(caught.value)
    assert "failed at step 'create the function URL'" in message
    assert "CreateFunctionUrlConfig: AccessDeniedException: not allowed to create URLs here" in message
    assert caught.value.step == "create the function URL"
    assert "\n" not in message
    assert everything(clients) == NOTHING
    assert not (tmp_path / "state" / "doomed.json").exists()


def test_failed_update_puts_the_previous_configuration_back(deployer, clients, build, tmp_path):
    deployer.deploy(AwsOptions("steady", REGION), build)
    before = clients.lambda_.get_function_configuration(FunctionName="steady")
    saved = (tmp_path / "state" / "steady.json").read_text()
    fail_on(clients.lambda_, "AddPermission")

    with pytest.raises(DeployError, match="set the function URL's resource policy"):
        deployer.deploy(AwsOptions("steady", REGION, memory_mb=8192, auth="NONE"), build)

    after = clients.lambda_.get_function_configuration(FunctionName="steady")
    assert after["MemorySize"] == before["MemorySize"] == 2048
    assert (tmp_path / "state" / "steady.json").read_text() == saved
    assert clients.lambda_.get_function_url_config(FunctionName="steady")["AuthType"] == "AWS_IAM"


def test_what_cannot_be_undone_stays_recorded_for_destroy(clients, tmp_path, build, ui):
    deployer = AwsDeployer(clients, state=StateStore(tmp_path / "state"), ui=ui, sleep=lambda s: None)
    failing_url = fail_on(clients.lambda_, "CreateFunctionUrlConfig")
    failing_delete = fail_on(clients.iam, "DeleteRole", code="ServiceFailure", message="IAM is down")

    with pytest.raises(DeployError) as caught:
        deployer.deploy(AwsOptions("sticky", REGION), build)
    message = str(caught.value)
    assert "could NOT undo 1 change(s): delete role votive-sticky (DeleteRole: ServiceFailure: IAM is down)" in message
    # one story: the log group and the rest were undone, the role was not; never "nothing had been changed"
    assert "nothing had been changed" not in message and "undid " in message
    record = json.loads((tmp_path / "state" / "sticky.json").read_text())
    assert [r["kind"] for r in record["resources"]] == ["role"]

    clients.lambda_.meta.events.unregister("before-call", failing_url)
    clients.iam.meta.events.unregister("before-call", failing_delete)
    deployer.destroy("sticky")
    assert everything(clients) == NOTHING


def test_destroy_leaves_nothing(deployer, clients, tmp_path):
    build = read_build(make_build(tmp_path / "b", weights="s3"))
    deployer.deploy(AwsOptions("gone", REGION, auth="NONE", snapstart=True), build)
    assert everything(clients) != NOTHING

    deleted = deployer.destroy("gone")

    assert everything(clients) == NOTHING
    assert "deleted function gone" in deleted
    assert not (tmp_path / "state" / "gone.json").exists()
    with pytest.raises(DeployError, match="no deployment named 'gone'"):
        deployer.destroy("gone")


def test_a_bucket_shared_with_another_deployment_is_kept(deployer, clients, build):
    deployer.deploy(AwsOptions("one", REGION), build)
    deployer.deploy(AwsOptions("two", REGION), build)
    deployer.destroy("one")
    assert clients.s3.list_buckets()["Buckets"][0]["Name"] == BUCKET
    deployer.destroy("two")
    assert everything(clients) == NOTHING


def test_status_reports_the_live_function(deployer, build):
    deployer.deploy(AwsOptions("seen", REGION, auth="NONE"), build)
    status = deployer.status("seen")
    assert status["state"] == "Active" and status["auth"] == "NONE" and status["code_matches_record"]
    assert status["url"] == status["recorded"]["url"]


def test_role_not_yet_assumable_is_retried(deployer, clients, build):
    from botocore.exceptions import ClientError

    attempts = []

    def not_yet(model, **_):
        if model.name == "CreateFunction" and len(attempts) < 2:
            attempts.append(1)
            raise ClientError({"Error": {"Code": "InvalidParameterValueException",
                                         "Message": "The role defined for the function cannot be assumed by Lambda."}},
                              "CreateFunction")

    clients.lambda_.meta.events.register("before-call", not_yet)
    sleeps = []
    deployer.sleep = sleeps.append
    deployer.deploy(AwsOptions("patient", REGION), build)
    assert len(attempts) == 2 and sleeps[:2] == [2.5, 2.5]


def test_function_that_fails_to_become_active_reports_lambdas_reason(deployer, clients, build):
    def failed(model, parsed, **_):
        if model.name == "GetFunctionConfiguration":
            parsed.update(State="Failed", StateReasonCode="InvalidImage", StateReason="layer too big")

    clients.lambda_.meta.events.register("after-call.lambda.GetFunctionConfiguration", failed)
    with pytest.raises(DeployError, match="InvalidImage: layer too big") as caught:
        deployer.deploy(AwsOptions("broken", REGION), build)
    assert "undid" in str(caught.value)
    assert everything(clients) == NOTHING


# --- refused before anything is created --------------------------------------------------------------------


@pytest.mark.parametrize("options, expected", [
    (AwsOptions("ok-name", "mars-north-1"), "unknown AWS region 'mars-north-1'"),
    (AwsOptions("bad name!", REGION), "is not a Lambda function name: it contains ' ' '!'"),
    (AwsOptions("x" * 65, REGION), "has 65 characters (at most 64)"),
    (AwsOptions("ok", REGION, memory_mb=64), "--memory 64 MB is outside what Lambda allows: 128 to 10240 MB"),
    (AwsOptions("ok", REGION, memory_mb=200), "--memory 200 MB cannot hold minilm: its weights take"),
    (AwsOptions("ok", REGION, timeout_s=901), "--timeout 901 s is outside"),
    (AwsOptions("ok", REGION, architecture="arm64"), "is for x86_64, but the deploy asks for --arch arm64"),
    (AwsOptions("ok", REGION, stream=True), "--stream: minilm is served by votive.handlers.embeddings.handler, "
                                            "which answers whole (only generation streams); deploy without --stream"),
    (AwsOptions("ok", REGION, snapstart=True, provisioned=2), "--snapstart and --provisioned cannot go together"),
    (AwsOptions("ok", REGION, bucket="Not_A_Bucket"), "is not an S3 bucket name"),
])
def test_bad_options_are_refused_before_anything_is_created(deployer, clients, build, options, expected):
    with pytest.raises(DeployError, match=None) as caught:
        deployer.deploy(options, build)
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert everything(clients) == NOTHING


def test_model_too_large_for_lambda_is_refused(deployer, clients, tmp_path):
    build = read_build(make_build(tmp_path / "b", unzipped_extra=300 * 2**20))
    with pytest.raises(DeployError, match=r"unzip to 300\.\d MiB, 50\.\d MiB over Lambda's 250\.0 MiB; rebuild with "
                                          r"the weights in S3"):
        deployer.deploy(AwsOptions("huge", REGION), build)
    assert everything(clients) == NOTHING


def test_snapstart_needs_python_312(deployer, tmp_path):
    build = read_build(make_build(tmp_path / "b", python="3.11"))
    with pytest.raises(DeployError, match="--snapstart needs one of the runtimes python3.12"):
        deployer.deploy(AwsOptions("old", REGION, snapstart=True), build)


def test_missing_credentials_are_one_line(deployer, clients, build, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(DeployError, match="no AWS credentials found: set AWS_PROFILE"):
        deployer.deploy(AwsOptions("nocreds", REGION), build)


def test_bucket_in_another_region_is_refused(deployer, aws, build):
    other = AwsClients("us-west-2", endpoint_url=aws)
    other.s3.create_bucket(Bucket="far-away", CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
    with pytest.raises(DeployError, match="bucket far-away is in us-west-2, but the function goes to eu-west-1"):
        deployer.deploy(AwsOptions("near", REGION, bucket="far-away"), build)
    assert [b["Name"] for b in other.s3.list_buckets()["Buckets"]] == ["far-away"]


def test_a_function_votive_did_not_create_is_not_taken_over(deployer, clients, build):
    clients.iam.create_role(RoleName="someone", AssumeRolePolicyDocument="{}")
    clients.lambda_.create_function(FunctionName="theirs", Runtime="python3.12", Handler="x.y",
                                    Role=f"arn:aws:iam::{ACCOUNT}:role/someone", Code={"ZipFile": b"PK\x05\x06" + b"\0" * 18})
    with pytest.raises(DeployError, match="a Lambda function named theirs already exists in eu-west-1 and this "
                                          "deployment did not create it"):
        deployer.deploy(AwsOptions("theirs", REGION), build)
    assert clients.lambda_.get_function(FunctionName="theirs")["Configuration"]["Handler"] == "x.y"


def test_an_artifact_changed_after_the_build_is_refused(tmp_path):
    folder = make_build(tmp_path / "b")
    (folder / "votive-function.zip").write_bytes(b"tampered")
    with pytest.raises(DeployError, match="votive-function.zip: 8 bytes, but the manifest records"):
        read_build(folder)


def test_a_piece_deleted_by_hand_is_made_again(deployer, clients, build):
    first = deployer.deploy(AwsOptions("mended", REGION), build)
    clients.lambda_.delete_function_url_config(FunctionName="mended")
    second = deployer.deploy(AwsOptions("mended", REGION), build)
    assert clients.lambda_.get_function_url_config(FunctionName="mended")["FunctionUrl"] == second["url"]
    assert [r["kind"] for r in second["resources"]] == [r["kind"] for r in first["resources"]]  # no duplicates


def test_console_progress_redraws_only_when_the_percentage_moves():
    import io

    from votive.deploy.ui import ConsoleUi

    class Tty(io.StringIO):
        def isatty(self):
            return True

    out = Tty()
    ui = ConsoleUi(out)
    for done in range(0, 1001, 1):
        ui.progress("f.zip", done, 1000)
    assert out.getvalue().count("\r") == 101 and out.getvalue().endswith("100% of 0.0 MiB\n")


def _streaming_build(folder):
    from votive.builders.stream_wrapper import wrapper_environment

    return read_build(make_build(folder, invoke_mode="RESPONSE_STREAM", environment=wrapper_environment()))


def test_stream_sets_the_url_to_response_stream_and_the_wrapper(deployer, clients, tmp_path):
    """A streaming build (votive build lambda --stream) deploys with its URL in RESPONSE_STREAM mode and the
    function's AWS_LAMBDA_EXEC_WRAPPER naming the wrapper script, so Lambda starts votive's runtime loop."""
    record = deployer.deploy(AwsOptions("talk", REGION, stream=True), _streaming_build(tmp_path / "b"))
    assert clients.lambda_.get_function_url_config(FunctionName="talk")["InvokeMode"] == "RESPONSE_STREAM"
    conf = clients.lambda_.get_function_configuration(FunctionName="talk")
    assert conf["Environment"]["Variables"]["AWS_LAMBDA_EXEC_WRAPPER"] == "/var/task/votive-stream-runtime"
    assert conf["Runtime"] == "python3.12" and conf["Handler"] == "votive_function.handler"
    assert record["invoke_mode"] == "RESPONSE_STREAM"


@pytest.mark.parametrize("options, expected", [
    (AwsOptions("talk", REGION), "streams (votive's runtime loop), which needs a RESPONSE_STREAM function URL"),
    (AwsOptions("talk", REGION, stream=True, snapstart=True), "--snapstart cannot go with --stream"),
])
def test_streaming_build_refuses_what_it_cannot_serve(deployer, clients, tmp_path, options, expected):
    with pytest.raises(DeployError) as caught:
        deployer.deploy(options, _streaming_build(tmp_path / "b"))
    assert expected in str(caught.value)
    assert everything(clients) == NOTHING


def test_closing_a_public_url_removes_its_permissions(deployer, clients, build):
    deployer.deploy(AwsOptions("closing", REGION, auth="NONE"), build)
    record = deployer.deploy(AwsOptions("closing", REGION, auth="AWS_IAM"), build)
    assert clients.lambda_.get_function_url_config(FunctionName="closing")["AuthType"] == "AWS_IAM"
    with pytest.raises(clients.lambda_.exceptions.ResourceNotFoundException):
        clients.lambda_.get_policy(FunctionName="closing")
    assert "permission" not in [r["kind"] for r in record["resources"]]

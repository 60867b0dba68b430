"""The Lambda side of a deployment: layers, the function, its published version and alias, provisioned
concurrency, the function URL and the URL's resource policy.

Each `ensure_*` makes Lambda match what is asked and does nothing when it already does: code is compared by
sha256 (Lambda's CodeSha256 is the base64 of the zip's digest), configuration field by field
(`lambda_config.configuration_changes`). What it creates is recorded on the run, what it changes gets an undo.
"""

from __future__ import annotations

import base64
import re

from votive.client.aws_session import error_code, is_not_found
from votive.deploy.aws.build_reader import Artifact
from votive.deploy.aws.lambda_config import configuration_changes, live_configuration
from votive.deploy.aws.quotas import DeploymentNames
from votive.deploy.journal import DeployRun
from votive.errors import DeployError

ROLE_RETRIES = 12  # IAM takes seconds to let Lambda assume a role it has just created
ROLE_RETRY_DELAY_S = 2.5


def lambda_sha256(hex_digest: str) -> str:
    """Lambda's CodeSha256 for a file whose sha256 is `hex_digest`: the digest in base64."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def layer_name(names: DeploymentNames, artifact: Artifact) -> str:
    """`votive-NAME-runtime`: layer names take letters, digits, '-' and '_'."""
    return names.layer_prefix + re.sub(r"[^A-Za-z0-9_-]", "-", artifact.name)


def ensure_layer(run: DeployRun, name: str, artifact: Artifact, bucket: str, key: str, *, runtime: str,
                 architecture: str) -> str:
    """The ARN of a layer version holding `artifact`: the one recorded if it still exists, else a new one."""
    lam = run.clients.lambda_
    for resource in run.record["resources"]:
        if resource["kind"] == "layer_version" and resource["name"] == name and \
                resource.get("sha256") == artifact.sha256:
            try:
                return lam.get_layer_version(LayerName=name, VersionNumber=int(resource["version"]))[
                    "LayerVersionArn"]
            except Exception as exc:
                if not is_not_found(exc):
                    raise
                run.forget(resource)
    published = lam.publish_layer_version(
        LayerName=name, Description=f"votive {artifact.name} sha256:{artifact.sha256[:16]}",
        Content={"S3Bucket": bucket, "S3Key": key}, CompatibleRuntimes=[runtime],
        CompatibleArchitectures=[architecture],
    )
    run.created({"kind": "layer_version", "name": name, "version": published["Version"],
                 "arn": published["LayerVersionArn"], "sha256": artifact.sha256})
    return published["LayerVersionArn"]


def get_function(run: DeployRun, name: str) -> dict | None:
    """GetFunction's answer, or None when there is no such function."""
    try:
        return run.clients.lambda_.get_function(FunctionName=name)
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


def ensure_function(run: DeployRun, name: str, *, config: dict, code: dict, code_sha256: str, architecture: str,
                    tags: dict, drop_tags: tuple = ()) -> bool:
    """Create the function, or update its code, configuration and tags where they differ; True if anything changed.

    Args:
        config: lambda_config.function_configuration(...).
        code: {"S3Bucket", "S3Key"} of the function zip.
        code_sha256: the zip's sha256 (hex).
        drop_tags: tag keys an earlier deploy set and this one no longer asks for.
    """
    lam = run.clients.lambda_
    existing = get_function(run, name)
    if existing is None:
        _create_with_retry(run, dict(FunctionName=name, Code=code, Architectures=[architecture], PackageType="Zip",
                                     Tags=tags, **config))
        run.created({"kind": "function", "name": name})
        wait_function_ready(run, name)
        return True
    live = existing["Configuration"]
    changed = False
    if live.get("CodeSha256") != lambda_sha256(code_sha256) or live.get("Architectures") != [architecture]:
        lam.update_function_code(FunctionName=name, Architectures=[architecture], **code)
        previous_code = run.record.get("code")
        if previous_code:
            run.on_undo(f"put the previous code back on {name}",
                        lambda: lam.update_function_code(FunctionName=name, Architectures=live["Architectures"],
                                                         S3Bucket=previous_code["bucket"],
                                                         S3Key=previous_code["key"]))
        wait_function_ready(run, name)
        changed = True
    changes = configuration_changes(config, live)
    if changes:
        lam.update_function_configuration(FunctionName=name, **changes)
        restore = {key: value for key, value in live_configuration(live).items() if key in changes}
        run.on_undo(f"put the previous configuration back on {name} ({', '.join(changes)})",
                    lambda: lam.update_function_configuration(FunctionName=name, **restore))
        wait_function_ready(run, name)
        changed = True
    return _ensure_tags(run, live["FunctionArn"], tags, drop_tags) or changed


def _ensure_tags(run: DeployRun, arn: str, tags: dict, drop: tuple) -> bool:
    lam = run.clients.lambda_
    current = lam.list_tags(Resource=arn).get("Tags") or {}
    missing = {k: v for k, v in tags.items() if current.get(k) != v}
    stale = [k for k in drop if k in current and k not in tags]
    if missing:
        lam.tag_resource(Resource=arn, Tags=missing)
        restore = {k: current[k] for k in missing if k in current}
        added = [k for k in missing if k not in current]
        run.on_undo(f"put the previous tags back on {arn}", lambda: (
            restore and lam.tag_resource(Resource=arn, Tags=restore),
            added and lam.untag_resource(Resource=arn, TagKeys=added)))
    if stale:
        lam.untag_resource(Resource=arn, TagKeys=stale)
        before = {k: current[k] for k in stale}
        run.on_undo(f"put the removed tags back on {arn}", lambda: lam.tag_resource(Resource=arn, Tags=before))
    return bool(missing or stale)


def wait_function_ready(run: DeployRun, name: str, qualifier: str | None = None) -> dict:
    """Wait until the function (or version) is Active and no update is in progress; its configuration.

    Raises:
        DeployError: Lambda reports the function Failed, with its reason.
    """
    lam = run.clients.lambda_
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    seen = {}

    def ready() -> bool:
        conf = lam.get_function_configuration(FunctionName=name, **kwargs)
        seen["conf"] = conf
        if conf.get("State") == "Failed" or conf.get("LastUpdateStatus") == "Failed":
            reason = conf.get("StateReason") or conf.get("LastUpdateStatusReason") or "no reason given"
            code = conf.get("StateReasonCode") or conf.get("LastUpdateStatusReasonCode") or "Failed"
            raise DeployError(f"Lambda reports {name}{':' + qualifier if qualifier else ''} failed: {code}: "
                              f"{reason}")
        return conf.get("State", "Active") == "Active" and conf.get("LastUpdateStatus") in (None, "Successful")

    run.wait(f"function {name}", ready)
    return seen["conf"]


def ensure_alias(run: DeployRun, name: str, alias: str) -> str:
    """Point `alias` at a published version of what $LATEST is now, publishing one if the alias's version differs
    (in code or configuration) or there is no alias yet; returns that version."""
    lam = run.clients.lambda_
    try:
        current = lam.get_alias(FunctionName=name, Name=alias)
    except Exception as exc:
        if not is_not_found(exc):
            raise
        current = None
    if current is not None:
        latest = lam.get_function_configuration(FunctionName=name)
        pinned = lam.get_function_configuration(FunctionName=name, Qualifier=current["FunctionVersion"])
        if pinned.get("CodeSha256") == latest.get("CodeSha256") and \
                live_configuration(pinned) == live_configuration(latest):
            return current["FunctionVersion"]
    version = lam.publish_version(FunctionName=name, Description=f"votive {run.record.get('model', '')}"[:256])[
        "Version"]
    if current is None or current["FunctionVersion"] != version:
        run.created({"kind": "version", "function": name, "version": version})
    wait_function_ready(run, name, version)  # with SnapStart, this is when the snapshot is taken
    if current is None:
        lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=version)
        run.created({"kind": "alias", "function": name, "name": alias})
    elif current["FunctionVersion"] != version:
        lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=version)
        before = current["FunctionVersion"]
        run.on_undo(f"point alias {alias} back at version {before}",
                    lambda: lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=before))
    return version


def ensure_provisioned(run: DeployRun, name: str, alias: str, count: int | None) -> None:
    """Provisioned concurrency on the alias: `count` environments kept initialized, or none (removed)."""
    lam = run.clients.lambda_
    try:
        current = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=alias)
    except Exception as exc:
        if not (is_not_found(exc) or error_code(exc) == "ProvisionedConcurrencyConfigNotFoundException"):
            raise
        current = None
    resource = {"kind": "provisioned", "function": name, "qualifier": alias}
    if not count:
        if current is not None and resource in run.record["resources"]:
            lam.delete_provisioned_concurrency_config(FunctionName=name, Qualifier=alias)
            run.forget(resource)
        return
    if current is not None and current.get("RequestedProvisionedConcurrentExecutions") == count:
        return
    lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=alias, ProvisionedConcurrentExecutions=count)
    if current is None:
        run.created(resource)
    else:
        before = current["RequestedProvisionedConcurrentExecutions"]
        run.on_undo(f"set provisioned concurrency of {name}:{alias} back to {before}",
                    lambda: lam.put_provisioned_concurrency_config(FunctionName=name, Qualifier=alias,
                                                                   ProvisionedConcurrentExecutions=before))

    def ready() -> bool:
        status = lam.get_provisioned_concurrency_config(FunctionName=name, Qualifier=alias)
        if status.get("Status") == "FAILED":
            raise DeployError(f"provisioned concurrency on {name}:{alias} failed: {status.get('StatusReason')}")
        return status.get("Status") == "READY"

    run.wait(f"provisioned concurrency on {name}:{alias}", ready)


def ensure_url(run: DeployRun, name: str, qualifier: str | None, *, auth: str, invoke_mode: str) -> str:
    """The function URL with this auth type and invoke mode, on `qualifier` (an alias) or the function; its URL."""
    lam = run.clients.lambda_
    q = {"Qualifier": qualifier} if qualifier else {}
    try:
        current = lam.get_function_url_config(FunctionName=name, **q)
    except Exception as exc:
        if not is_not_found(exc):
            raise
        current = lam.create_function_url_config(FunctionName=name, AuthType=auth, InvokeMode=invoke_mode, **q)
        run.created({"kind": "url", "function": name, "qualifier": qualifier})
        return current["FunctionUrl"]
    if current.get("AuthType") != auth or _mode(current) != invoke_mode:
        lam.update_function_url_config(FunctionName=name, AuthType=auth, InvokeMode=invoke_mode, **q)
        for field, old, new in (("auth", current.get("AuthType"), auth), ("invoke mode", _mode(current), invoke_mode)):
            if old != new:
                run.ui.say(f"function URL {field} {old} -> {new}")
        before = dict(AuthType=current["AuthType"], InvokeMode=_mode(current))
        run.on_undo(f"put the previous URL settings back on {name}",
                    lambda: lam.update_function_url_config(FunctionName=name, **before, **q))
    return current["FunctionUrl"]


def ensure_public_access(run: DeployRun, name: str, qualifier: str | None, *, public: bool) -> None:
    """For AuthType NONE, the resource policy a public URL needs; for AWS_IAM, none of it.

    Two statements, both to anyone ("*"): lambda:InvokeFunctionUrl, conditioned on the URL's auth type being
    NONE, and lambda:InvokeFunction, conditioned on the call coming through the function URL (new URLs need
    both since October 2025; the condition keeps direct Invoke calls closed).
    """
    names = DeploymentNames(name)
    lam = run.clients.lambda_
    q = {"Qualifier": qualifier} if qualifier else {}
    present = _statement_ids(run, name, q)
    wanted = {
        names.public_url_statement: dict(Action="lambda:InvokeFunctionUrl", FunctionUrlAuthType="NONE"),
        names.public_invoke_statement: dict(Action="lambda:InvokeFunction", InvokedViaFunctionUrl=True),
    }
    for sid, grant in wanted.items():
        resource = {"kind": "permission", "function": name, "sid": sid, "qualifier": qualifier}
        if public and sid not in present:
            lam.add_permission(FunctionName=name, StatementId=sid, Principal="*", **grant, **q)
            run.created(resource)
        elif not public and sid in present:
            lam.remove_permission(FunctionName=name, StatementId=sid, **q)
            run.on_undo(f"grant {grant['Action']} to everyone again on {name}",
                        lambda sid=sid, grant=grant: lam.add_permission(FunctionName=name, StatementId=sid,
                                                                        Principal="*", **grant, **q))
            if resource in run.record["resources"]:
                run.forget(resource)


def _statement_ids(run: DeployRun, name: str, q: dict) -> set[str]:
    import json

    try:
        policy = run.clients.lambda_.get_policy(FunctionName=name, **q)["Policy"]
    except Exception as exc:
        if is_not_found(exc):
            return set()
        raise
    return {statement.get("Sid") for statement in json.loads(policy).get("Statement", [])}


def _create_with_retry(run: DeployRun, request: dict) -> None:
    """CreateFunction, retried while IAM has not yet let Lambda assume the role just created."""
    for attempt in range(ROLE_RETRIES):
        try:
            run.clients.lambda_.create_function(**request)
            return
        except Exception as exc:
            message = str(exc)
            if error_code(exc) != "InvalidParameterValueException" or "role" not in message.lower() or \
                    attempt == ROLE_RETRIES - 1:
                raise
            run.sleep(ROLE_RETRY_DELAY_S)


def _mode(url_config: dict) -> str:
    # moto answers "Buffered" where Lambda answers "BUFFERED"
    return str(url_config.get("InvokeMode") or "BUFFERED").upper()

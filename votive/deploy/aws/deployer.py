"""`votive deploy aws`: one model as a Lambda function behind a function URL, created or updated through the AWS
APIs, the way Chalice's deployer works, and `votive destroy` for what it made.

A deploy runs in two halves. The preflight calls nothing that changes AWS: it checks the options against the
build and Lambda's limits, the region, the credentials (STS), the bucket's region, and that the function and
role names are free or already this deployment's. Then the steps, in order:

    bucket -> uploads -> log group -> execution role -> layers -> function -> [version + alias
    -> provisioned concurrency] -> function URL -> URL resource policy -> wait until Active

Each step leaves alone what already matches, so a re-deploy of an unchanged build changes nothing. A step that
fails stops the deploy, and everything this deploy created or changed is undone (newest first); the error
names the step and AWS's reason. Whatever could not be undone stays in the state file for `votive destroy`.

Example:
    >>> deployer = AwsDeployer(AwsClients("eu-west-1"), state=StateStore())           # doctest: +SKIP
    >>> record = deployer.deploy(AwsOptions("embed", "eu-west-1"), read_build(Path("build/")))  # doctest: +SKIP
    >>> record["url"]                                                                      # doctest: +SKIP
    'https://abc....lambda-url.eu-west-1.on.aws/'
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable

from votive.client.aws_session import AwsClients, aws_errors, describe, is_not_found
from votive.deploy.aws import function as fn
from votive.deploy.aws import quotas as limits
from votive.deploy.aws.build_reader import LambdaBuild
from votive.deploy.aws.changes import Change, artifact_keys, plan_changes
from votive.deploy.aws.lambda_config import (
    AwsOptions,
    check_environment,
    check_options,
    function_configuration,
    function_environment,
    weights_key_prefix,
)
from votive.deploy.aws.role import ensure_log_group, ensure_role, execution_policy
from votive.deploy.aws.storage import BucketCheck, check_bucket, create_bucket, upload
from votive.deploy.aws.teardown import delete_resource, describe_resource, teardown
from votive.deploy.journal import DeployRun
from votive.deploy.state import StateStore
from votive.deploy.ui import ConsoleUi
from votive.errors import DeployError


@dataclass(frozen=True)
class _Plan:
    """What the preflight found out: everything the steps need that is not created by them."""

    options: AwsOptions
    build: LambdaBuild
    names: limits.DeploymentNames
    account: str
    bucket: BucketCheck
    previous: dict | None  # the record of the last deploy of this name, if any
    weights_prefix: str | None  # the S3 folder of S3-staged weights

    @property
    def weights_uri(self) -> str | None:
        return f"s3://{self.bucket.name}/{self.weights_prefix}" if self.weights_prefix else None


class AwsDeployer:
    """Deploys, inspects and destroys votive functions in one account and region.

    Args:
        clients: AwsClients for the region (tests: pointed at a moto server).
        state: where deployment records live.
        ui: progress output (default ConsoleUi on stderr).
        sleep, clock: time.sleep and time.monotonic, or fakes so tests never wait.
        now: wall-clock seconds, for the record's timestamp.
    """

    def __init__(self, clients: AwsClients, *, state: StateStore, ui=None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, now: Callable[[], float] = time.time):
        self.clients = clients
        self.state = state
        self.ui = ui or ConsoleUi()
        self.sleep = sleep
        self.clock = clock
        self.now = now

    # --- deploy -------------------------------------------------------------------------------------------

    def deploy(self, options: AwsOptions, build: LambdaBuild,
               approve: Callable[[list[Change]], None] | None = None) -> dict:
        """Create or update the deployment; returns its record (the state file's content, with "url").

        Args:
            approve: shown the planned changes before anything is changed; raises to stop the deploy.

        Raises:
            DeployError: refused before anything was created (bad option, region, credentials, bucket, name
                taken), or failed at a step, after undoing what this deploy did.
        """
        plan = self.preflight(options, build)
        if approve is not None:
            approve(self._changes(plan))
        record = dict(plan.previous or {"name": options.name, "provider": "aws", "resources": []})
        record["resources"] = list(record["resources"])
        run = DeployRun(self.clients, record, self.state.save, self.ui, self.sleep, self.clock)
        try:
            self._apply(run, plan)
        except BaseException as exc:
            self._undo(run, plan, exc)
            raise
        self._clean_up(run)
        return run.record

    def plan(self, options: AwsOptions, build: LambdaBuild) -> list[Change]:
        """What a deploy of `options` and `build` would change, resource by resource; changes nothing."""
        return self._changes(self.preflight(options, build))

    def _changes(self, plan: _Plan) -> list[Change]:
        with aws_errors(f"read the current state of {plan.options.name}"):
            return plan_changes(self.clients, plan)

    def preflight(self, options: AwsOptions, build: LambdaBuild) -> _Plan:
        """Every check that needs no change to AWS; DeployError with one line if any fails."""
        check_options(options, build)
        with aws_errors("look up the Lambda regions"):
            limits.check_region(options.region, self.clients.lambda_regions())
        account = self.clients.account()
        names = limits.DeploymentNames(options.name)
        previous = self.state.load(options.name) if self.state.exists(options.name) else None
        if previous is not None and (previous["provider"] != "aws" or previous.get("region") != options.region):
            where = previous.get("region") or previous["provider"]
            raise DeployError(f"{options.name} is already deployed to {where} (recorded in "
                              f"{self.state.path(options.name)}); destroy it first, or choose another --name")
        ours = {(r["kind"], r.get("name")) for r in (previous or {}).get("resources", [])}
        with aws_errors("look for an existing function and role"):
            if ("function", names.function) not in ours and self._exists(
                    lambda: self.clients.lambda_.get_function(FunctionName=names.function)):
                raise DeployError(f"a Lambda function named {names.function} already exists in {options.region} "
                                  f"and this deployment did not create it; choose another --name")
            if ("role", names.role) not in ours and self._exists(
                    lambda: self.clients.iam.get_role(RoleName=names.role)):
                raise DeployError(f"an IAM role named {names.role} already exists and this deployment did not "
                                  f"create it; choose another --name")
        bucket_name = options.bucket or (previous or {}).get("bucket") or limits.default_bucket(account,
                                                                                                options.region)
        bucket = check_bucket(self.clients, bucket_name, options.region)
        weights_prefix = weights_key_prefix(options, build) if build.s3_weights else None
        if options.memory_mb and build.memory_mb and options.memory_mb < build.memory_mb:
            self.ui.say(f"warning: --memory {options.memory_mb} MB is below the {build.memory_mb} MB the build "
                        f"suggests; Lambda gives less CPU to less memory (a full vCPU at 1769 MB)")
        plan = _Plan(options, build, names, account, bucket, previous, weights_prefix)
        check_environment(function_environment(build, plan.weights_uri))
        return plan

    def _apply(self, run: DeployRun, plan: _Plan) -> None:
        options, build, names = plan.options, plan.build, plan.names
        lam = self.clients.lambda_
        bucket = plan.bucket.name
        run.record.update(region=options.region, account=plan.account, bucket=bucket, model=build.model,
                          build=str(build.directory), manifest_sha256=build.manifest_sha256, options=asdict(options))
        self.state.save(run.record)

        if not plan.bucket.exists:
            with run.step(f"create the bucket {bucket}"):
                self.ui.say(f"creating bucket s3://{bucket} in {options.region}")
                create_bucket(run, bucket, options.region)
        elif bucket == limits.default_bucket(plan.account, options.region) and \
                {"kind": "bucket", "name": bucket} not in run.record["resources"]:
            # votive's own bucket is shared by the account's deployments: each records it, and whichever is
            # destroyed last finds it empty and removes it
            run.created({"kind": "bucket", "name": bucket})
        keys = artifact_keys(plan)
        with run.step("upload the artifacts"):
            for artifact in build.artifacts():
                if not upload(run, bucket, keys[artifact], artifact):
                    self.ui.say(f"s3://{bucket}/{keys[artifact]} is already there")
        with run.step(f"create the log group {names.log_group}"):
            ensure_log_group(run, names.log_group, options.log_retention_days)
        with run.step(f"create the execution role {names.role}"):
            weights_arn = f"arn:{limits.partition(options.region)}:s3:::{bucket}/{plan.weights_prefix}*" \
                if plan.weights_prefix else None
            policy = execution_policy(limits.partition(options.region), options.region, plan.account,
                                      names.log_group, weights_arn, vpc=bool(options.subnets))
            role_arn = ensure_role(run, names.role, names.inline_policy, policy)
        layer_arns = []
        with run.step("publish the layers"):
            for layer in build.layers:
                layer_arns.append(fn.ensure_layer(run, fn.layer_name(names, layer), layer, bucket, keys[layer],
                                                  runtime=build.runtime, architecture=build.architecture))
        config = function_configuration(options, build, role_arn=role_arn, layer_arns=layer_arns,
                                        weights_uri=plan.weights_uri)
        code = {"S3Bucket": bucket, "S3Key": keys[build.function]}
        with run.step(f"create or update the function {names.function}"):
            changed = fn.ensure_function(run, names.function, config=config, code=code,
                                         code_sha256=build.function.sha256, architecture=build.architecture,
                                         tags={**options.tags, "votive:deployment": names.function,
                                               "votive:model": build.model[:256]},
                                         drop_tags=tuple((plan.previous or {}).get("options", {}).get("tags") or ()))
            self.ui.say(f"function {names.function} ({build.runtime}, {build.architecture}, {config['MemorySize']} "
                        f"MB) {'deployed' if changed else 'code and configuration unchanged'}")
        qualifier = None
        if options.published:
            qualifier = limits.ALIAS
            with run.step(f"publish a version and point the alias {qualifier} at it"):
                version = fn.ensure_alias(run, names.function, qualifier)
                run.record["version"] = version
            with run.step("configure provisioned concurrency"):
                fn.ensure_provisioned(run, names.function, qualifier, options.provisioned)
        with run.step("create the function URL"):
            url = fn.ensure_url(run, names.function, qualifier, auth=options.auth, invoke_mode=options.invoke_mode)
        with run.step("set the function URL's resource policy"):
            fn.ensure_public_access(run, names.function, qualifier, public=options.auth == "NONE")
        with run.step("wait for the function to be Active"):
            conf = fn.wait_function_ready(run, names.function, qualifier)
        run.record.update(
            url=url, auth=options.auth, invoke_mode=options.invoke_mode, qualifier=qualifier,
            function_arn=conf.get("FunctionArn") or lam.get_function(FunctionName=names.function)[
                "Configuration"]["FunctionArn"],
            code={"bucket": bucket, "key": keys[build.function], "sha256": build.function.sha256},
            layers=layer_arns, objects=sorted(keys.values()), configuration=config,
            deployed_at=datetime.fromtimestamp(self.now(), timezone.utc).isoformat(timespec="seconds"),
        )
        if not options.published:
            run.record.pop("version", None)
        self.state.save(run.record)

    def _undo(self, run: DeployRun, plan: _Plan, exc: BaseException) -> None:
        """Undo the failed deploy's journal, restore the record, and raise DeployError saying what happened."""
        step = run.current_step or "prepare"
        self.ui.say(f"step '{step}' failed: {describe(exc)}; undoing this deploy's changes")
        undone, failed = run.undo()
        before = {_key(r) for r in (plan.previous or {}).get("resources", [])}
        leftover = [r for r in run.record["resources"] if _key(r) not in before]
        if plan.previous is not None:
            self.state.save({**plan.previous, "resources": plan.previous["resources"] + leftover})
        elif leftover:
            self.state.save({**run.record, "resources": leftover})
        else:
            self.state.delete(plan.options.name)
        if isinstance(exc, KeyboardInterrupt):
            return  # the CLI exits 130 on it; the undo above is all there is to do
        # three cases that must not contradict each other: all undone, some not undone, nothing to undo
        summary = f"undid {len(undone)} change(s)" if undone else ""
        if failed:
            summary += (f"{'; ' if summary else ''}could NOT undo {len(failed)} change(s): {'; '.join(failed)} "
                        f"(still recorded: `votive destroy {plan.options.name}` removes them)")
        summary = summary or "nothing had been changed yet"
        raise DeployError(f"deploy of {plan.options.name} failed at step '{step}': {describe(exc)}; {summary}",
                          step=step) from None

    def _clean_up(self, run: DeployRun) -> None:
        """Remove what this deployment created earlier and no longer uses: old layer versions, old artifacts,
        a URL or alias on a qualifier no longer wanted. Failures only warn: the deploy itself succeeded."""
        record = run.record
        in_use_layers, in_use_keys = set(record["layers"]), {(record["bucket"], key) for key in record["objects"]}
        qualifier = record["qualifier"]
        stale = []
        for r in record["resources"]:
            kind = r["kind"]
            if (kind == "layer_version" and r["arn"] not in in_use_layers) or \
                    (kind == "object" and (r["bucket"], r["key"]) not in in_use_keys) or \
                    (kind in ("url", "permission") and r.get("qualifier") != qualifier) or \
                    (kind in ("alias", "provisioned") and qualifier is None) or \
                    (kind == "version" and str(r["version"]) != str(record.get("version"))):
                stale.append(r)
        for r in reversed(stale):
            try:
                delete_resource(self.clients, r)
            except Exception as exc:
                self.ui.say(f"warning: could not delete the unused {describe_resource(r)}: {describe(exc)}")
                continue
            run.forget(r)

    # --- inspect and destroy --------------------------------------------------------------------------------

    def destroy(self, name: str) -> list[str]:
        """Delete everything deployment `name` created, newest first, and its record; returns what was deleted.

        Raises:
            DeployError: some resources could not be deleted (they stay recorded, so destroy can be re-run).
        """
        record = self.state.load(name)
        self.clients.account()  # no credentials: one line now, not one failure per resource
        deleted = []
        failed = teardown(self.clients, record["resources"],
                          lambda line: (self.ui.say(line), deleted.append(line)))
        if failed:
            self.state.save({**record, "resources": [r for r, _ in failed][::-1]})
            reasons = "; ".join(f"{describe_resource(r)}: {why}" for r, why in failed)
            raise DeployError(f"destroy {name}: could not delete {len(failed)} resource(s): {reasons}; they stay "
                              f"recorded, run destroy again once fixed")
        self.state.delete(name)
        return deleted

    def status(self, name: str) -> dict:
        """What Lambda reports for the deployment now, beside what was recorded."""
        record = self.state.load(name)
        lam = self.clients.lambda_
        q = {"Qualifier": record["qualifier"]} if record.get("qualifier") else {}
        with aws_errors(f"read the status of {name}"):
            try:
                conf = lam.get_function_configuration(FunctionName=name, **q)
            except Exception as exc:
                if not is_not_found(exc):
                    raise
                return {"name": name, "state": "missing", "recorded": record}
            try:
                url = lam.get_function_url_config(FunctionName=name, **q)
            except Exception as exc:
                if not is_not_found(exc):
                    raise
                url = {}
        code = record.get("code", {})
        return {
            "name": name, "region": record["region"], "model": record.get("model"), "state": conf.get("State"),
            "last_update": conf.get("LastUpdateStatus"), "url": url.get("FunctionUrl"), "auth": url.get("AuthType"),
            "invoke_mode": url.get("InvokeMode"), "version": conf.get("Version"), "memory_mb": conf.get("MemorySize"),
            "architecture": (conf.get("Architectures") or ["x86_64"])[0], "runtime": conf.get("Runtime"),
            "code_matches_record": bool(code) and conf.get("CodeSha256") == fn.lambda_sha256(code["sha256"]),
            "deployed_at": record.get("deployed_at"), "recorded": record,
        }

    @staticmethod
    def _exists(call: Callable[[], object]) -> bool:
        try:
            call()
        except Exception as exc:
            if is_not_found(exc):
                return False
            raise
        return True


def _key(resource: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in resource.items()))

"""What a deploy would change, resource by resource, read from AWS without changing anything: the plan
`votive plan` and `votive deploy --plan` print, and the summary `deploy` shows (and asks about) before applying.

Like a CloudFormation change set, each entry is one resource with an action: create, update (field old -> new),
replace (a new one takes the old one's place: the function on a new architecture or runtime, the URL moving to
the alias) or delete. Deletes of artifacts a new one supersedes (an old layer version, an old upload, an old
published version) are marked `superseded`: they are the deploy's normal cleanup. `confirmation_reasons` names
what a person must agree to: a URL made public, anything else deleted, a function or URL replaced.

Example:
    >>> print(render([Change("update", "function embed", (("MemorySize", "2048", "3008"),))], "embed"))
    plan for embed:
      ~ update   function embed
                     MemorySize: 2048 -> 3008
    1 to change
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from votive.client.aws_session import error_code, is_not_found
from votive.deploy.aws import function as fn
from votive.deploy.aws.lambda_config import function_configuration, live_configuration
from votive.deploy.aws.quotas import ALIAS, default_bucket, mib, partition
from votive.deploy.aws.role import execution_policy
from votive.deploy.aws.storage import artifact_key

SYMBOLS = {"create": "+", "update": "~", "replace": "!", "delete": "-"}


@dataclass(frozen=True)
class Change:
    action: str  # create, update, replace, delete
    resource: str  # "function embed", "bucket votive-...": what describe_resource would say
    fields: tuple[tuple[str, str, str], ...] = ()  # (field, old, new) for an update or replace
    note: str = ""
    superseded: bool = False  # a delete of an old artifact the new one replaces: cleanup, asks nothing
    public: bool = False  # the change leaves a function URL open to anyone (auth NONE)


def artifact_keys(plan) -> dict:
    """Each artifact of the build -> its S3 key: the deployment's folder, or the weights folder for S3 weights."""
    keys = {}
    for artifact in plan.build.artifacts():
        if artifact in plan.build.s3_weights:
            keys[artifact] = plan.weights_prefix + artifact.name
        else:
            keys[artifact] = artifact_key(plan.names.key_prefix, artifact)
    return keys


def plan_changes(clients, plan) -> list[Change]:
    """The changes a deploy of `plan` (the deployer's preflight) would make, read from AWS and the record."""
    options, build, names = plan.options, plan.build, plan.names
    previous = plan.previous or {}
    recorded = previous.get("resources", [])
    bucket = plan.bucket.name
    changes: list[Change] = []
    if not plan.bucket.exists:
        changes.append(Change("create", f"bucket {bucket}", note=f"in {options.region}"))
    keys = artifact_keys(plan)
    for artifact, key in keys.items():
        if not plan.bucket.exists or not _exists(lambda: clients.s3.head_object(Bucket=bucket, Key=key)):
            changes.append(Change("create", f"object s3://{bucket}/{key}",
                                  note=f"upload {artifact.path.name}, {mib(artifact.size)}"))

    groups = [g for g in clients.logs.describe_log_groups(logGroupNamePrefix=names.log_group).get("logGroups", [])
              if g["logGroupName"] == names.log_group]
    if not groups:
        changes.append(Change("create", f"log group {names.log_group}",
                              note=f"retention {options.log_retention_days} days"))
    elif groups[0].get("retentionInDays") != options.log_retention_days:
        changes.append(Change("update", f"log group {names.log_group}", (
            ("retention days", str(groups[0].get("retentionInDays")), str(options.log_retention_days)),)))

    role = _get(lambda: clients.iam.get_role(RoleName=names.role))
    if role is None:
        changes.append(Change("create", f"role {names.role}", note="execution role with its inline policy"))
    else:
        weights_arn = f"arn:{partition(options.region)}:s3:::{bucket}/{plan.weights_prefix}*" \
            if plan.weights_prefix else None
        wanted = execution_policy(partition(options.region), options.region, plan.account, names.log_group,
                                  weights_arn, vpc=bool(options.subnets))
        policy = _get(lambda: clients.iam.get_role_policy(RoleName=names.role, PolicyName=names.inline_policy))
        document = (policy or {}).get("PolicyDocument")
        document = json.loads(document) if isinstance(document, str) else document
        if document != wanted:
            changes.append(Change("update", f"role {names.role}", (
                ("policy statements", _sids(document), _sids(wanted)),)))

    layer_arns = []
    for layer in build.layers:
        name = fn.layer_name(names, layer)
        mine = [r for r in recorded if r["kind"] == "layer_version" and r["name"] == name]
        same = [r for r in mine if r.get("sha256") == layer.sha256]
        if same:
            layer_arns.append(same[0]["arn"])
        else:
            changes.append(Change("create", f"layer version {name}", note=f"sha256 {layer.sha256[:12]}"))
            layer_arns.append(f"{name}:(new)")
        changes += [Change("delete", f"layer version {r['arn']}", superseded=True) for r in mine if r not in same]

    config = function_configuration(options, build, role_arn=role["Role"]["Arn"] if role else "(new role)",
                                    layer_arns=layer_arns, weights_uri=plan.weights_uri)
    live = _get(lambda: clients.lambda_.get_function(FunctionName=names.function))
    function_changed = live is None
    if live is None:
        changes.append(Change("create", f"function {names.function}", note=(
            f"{build.runtime}, {build.architecture}, {config['MemorySize']} MB, {config['Timeout']} s")))
    else:
        conf = live["Configuration"]
        fields = []
        if conf.get("CodeSha256") != fn.lambda_sha256(build.function.sha256):
            fields.append(("code sha256", _hex(conf.get("CodeSha256")), build.function.sha256[:12]))
        old_arch = (conf.get("Architectures") or ["x86_64"])[0]
        if old_arch != build.architecture:
            fields.append(("Architectures", old_arch, build.architecture))
        current = live_configuration(conf)
        for key, value in config.items():
            if current.get(key) != value and not (key == "Role" and role is None):
                fields += _field_changes(key, current.get(key), value)
        fields += _tag_changes(clients, conf.get("FunctionArn"), options, previous)
        replace = old_arch != build.architecture or conf.get("Runtime") != build.runtime
        if fields:
            function_changed = True
            changes.append(Change("replace" if replace else "update", f"function {names.function}", tuple(fields),
                                  note="in place: same name and URL" if replace else ""))

    qualifier = ALIAS if options.published else None
    changes += _published_changes(clients, plan, recorded, live, function_changed)
    changes += _url_changes(clients, plan, live, qualifier)

    in_use = set(keys.values())
    changes += [Change("delete", f"object s3://{r['bucket']}/{r['key']}", superseded=True) for r in recorded
                if r["kind"] == "object" and not (r["bucket"] == bucket and r["key"] in in_use)]
    if previous.get("bucket") and previous["bucket"] != bucket and previous["bucket"] != default_bucket(
            plan.account, options.region):
        changes.append(Change("update", "artifact bucket", (("bucket", previous["bucket"], bucket),)))
    return changes


def _published_changes(clients, plan, recorded, live, function_changed: bool) -> list[Change]:
    options, names = plan.options, plan.names
    alias = _get(lambda: clients.lambda_.get_alias(FunctionName=names.function, Name=ALIAS)) if live else None
    changes = []
    if not options.published:
        if alias is not None or any(r["kind"] == "alias" for r in recorded):
            changes.append(Change("delete", f"alias {names.function}:{ALIAS}",
                                  note="no SnapStart or provisioned concurrency: the URL goes on the function"))
            changes += [Change("delete", f"version {names.function}:{r['version']}", superseded=True)
                        for r in recorded if r["kind"] == "version"]
        if any(r["kind"] == "provisioned" for r in recorded):
            changes.append(Change("delete", f"provisioned concurrency on {names.function}:{ALIAS}"))
        return changes
    if alias is None:
        changes.append(Change("create", f"version {names.function}:(new)",
                              note="SnapStart snapshot" if options.snapstart else ""))
        changes.append(Change("create", f"alias {names.function}:{ALIAS}"))
    elif function_changed:
        changes.append(Change("create", f"version {names.function}:(new)"))
        changes.append(Change("update", f"alias {names.function}:{ALIAS}",
                              (("version", str(alias["FunctionVersion"]), "(new)"),)))
    current = None
    if alias is not None:
        try:
            current = clients.lambda_.get_provisioned_concurrency_config(FunctionName=names.function, Qualifier=ALIAS)
        except Exception as exc:
            if not (is_not_found(exc) or error_code(exc) == "ProvisionedConcurrencyConfigNotFoundException"):
                raise
    before = (current or {}).get("RequestedProvisionedConcurrentExecutions")
    where = f"provisioned concurrency on {names.function}:{ALIAS}"
    if options.provisioned and before is None:
        changes.append(Change("create", where, note=f"{options.provisioned} environments"))
    elif options.provisioned and before != options.provisioned:
        changes.append(Change("update", where, (("environments", str(before), str(options.provisioned)),)))
    elif not options.provisioned and before is not None:
        changes.append(Change("delete", where))
    return changes


def _url_changes(clients, plan, live, qualifier: str | None) -> list[Change]:
    options, names, previous = plan.options, plan.names, plan.previous or {}
    public = options.auth == "NONE"
    where = f"function URL on {names.function}{':' + qualifier if qualifier else ''}"
    q = {"Qualifier": qualifier} if qualifier else {}
    if live is not None and qualifier and not _get(lambda: clients.lambda_.get_alias(FunctionName=names.function,
                                                                                     Name=qualifier)):
        live = None  # no alias yet, so nothing on it (moto answers for a missing qualifier with the function's)
    url = _get(lambda: clients.lambda_.get_function_url_config(FunctionName=names.function, **q)) if live else None
    changes = []
    if url is None:
        settings = f"auth {options.auth}, {options.invoke_mode}"
        if previous.get("url") and previous.get("qualifier") != qualifier:
            changes.append(Change("replace", where, (("address", previous["url"], "(a new URL)"),),
                                  note=f"{settings}; the old URL is deleted", public=public))
        else:
            changes.append(Change("create", where, note=settings, public=public))
    else:
        fields = []
        if url.get("AuthType") != options.auth:
            fields.append(("AuthType", str(url.get("AuthType")), options.auth))
        if fn._mode(url) != options.invoke_mode:
            fields.append(("InvokeMode", fn._mode(url), options.invoke_mode))
        if fields:
            changes.append(Change("update", where, tuple(fields), public=public and url.get("AuthType") != "NONE"))
    present = set()
    if live is not None:
        policy = _get(lambda: clients.lambda_.get_policy(FunctionName=names.function, **q))
        present = {s.get("Sid") for s in json.loads((policy or {}).get("Policy") or "{}").get("Statement", [])}
    for sid in (names.public_url_statement, names.public_invoke_statement):
        if public and sid not in present:
            changes.append(Change("create", f"permission {sid} on {names.function}{':' + qualifier if qualifier else ''}",
                                  note="anyone may call the URL", public=True))
        elif not public and sid in present:
            changes.append(Change("delete", f"permission {sid} on {names.function}"
                                            f"{':' + qualifier if qualifier else ''}", note="the URL becomes private"))
    return changes


def confirmation_reasons(changes: list[Change]) -> list[str]:
    """What in `changes` a person must agree to before it is applied (empty: nothing needs asking)."""
    reasons = []
    if any(c.public for c in changes):
        reasons.append("makes the function URL public (auth NONE: anyone on the internet may call it)")
    reasons += [f"deletes {c.resource}" for c in changes if c.action == "delete" and not c.superseded]
    reasons += [f"replaces {c.resource}" for c in changes if c.action == "replace"]
    return reasons


def render(changes: list[Change], name: str) -> str:
    """The plan as text, one resource a line and one line per changed field, then a count."""
    lines = [f"plan for {name}:"]
    if not changes:
        return f"plan for {name}: no changes"
    for c in changes:
        note = f"  ({c.note})" if c.note else ""
        superseded = "  (superseded)" if c.superseded else ""
        lines.append(f"  {SYMBOLS[c.action]} {c.action:8} {c.resource}{note}{superseded}")
        lines += [f"                 {field}: {old} -> {new}" for field, old, new in c.fields]
    counts = {a: sum(c.action == a for c in changes) for a in SYMBOLS}
    words = {"create": "to create", "update": "to change", "replace": "to replace", "delete": "to delete"}
    lines.append(", ".join(f"{n} {words[a]}" for a, n in counts.items() if n))
    return "\n".join(lines)


def _field_changes(key: str, old, new) -> list[tuple[str, str, str]]:
    if key == "Environment":
        before, after = (old or {}).get("Variables", {}), new["Variables"]
        return [(f"env {k}", before.get(k, "(unset)"), after.get(k, "(unset)"))
                for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    if key == "Layers":
        return [("Layers", ", ".join(_short(a) for a in old or []) or "(none)",
                 ", ".join(_short(a) for a in new) or "(none)")]
    if key in ("SnapStart", "EphemeralStorage"):
        (field, before), (_, after) = next(iter((old or {"": None}).items())), next(iter(new.items()))
        return [(f"{key}.{field}", str(before), str(after))]
    if key == "VpcConfig":
        return [(f"VpcConfig.{k}", ", ".join(old.get(k) or []) or "(none)", ", ".join(new[k]) or "(none)")
                for k in new if (old or {}).get(k) != new[k]]
    return [(key, str(old), str(new))]


def _tag_changes(clients, arn: str | None, options, previous: dict) -> list[tuple[str, str, str]]:
    if not arn:
        return []
    current = clients.lambda_.list_tags(Resource=arn).get("Tags") or {}
    dropped = set((previous.get("options") or {}).get("tags") or {}) - set(options.tags)
    return [(f"tag {k}", current.get(k, "(unset)"), options.tags.get(k, "(unset)"))
            for k in sorted(set(options.tags) | dropped) if current.get(k) != options.tags.get(k)
            and (k in options.tags or k in current)]


def _short(arn: str) -> str:
    return arn.rsplit(":", 2)[-2] + ":" + arn.rsplit(":", 1)[-1] if arn.count(":") >= 2 else arn


def _hex(code_sha256: str | None) -> str:
    return base64.b64decode(code_sha256).hex()[:12] if code_sha256 else "(none)"


def _sids(policy: dict | None) -> str:
    return ", ".join(s.get("Sid", "?") for s in (policy or {}).get("Statement", [])) or "(none)"


def _get(call):
    """The call's answer, or None when AWS says the thing does not exist."""
    try:
        return call()
    except Exception as exc:
        if is_not_found(exc):
            return None
        raise


def _exists(call) -> bool:
    return _get(call) is not None

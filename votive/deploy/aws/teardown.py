"""Deleting what a deployment created: one function per kind of resource, shared by `destroy` and by the undo of
a deploy that failed part-way.

A resource is the small dict the deployer records (`{"kind": "role", "name": ...}`); `delete_resource` removes it
and treats "already gone" as done, so destroying twice, or after someone deleted a piece by hand, works.
`teardown` deletes a list in reverse (the order they were created in, so a function goes before its role) and
carries on past failures, returning those it could not delete.
"""

from __future__ import annotations

from typing import Callable

from votive.client.aws_session import AwsClients, describe, is_not_found

Resource = dict  # {"kind": ..., plus the identifiers that kind needs}


def describe_resource(resource: Resource) -> str:
    """'role votive-demo', 'object s3://bucket/key', for messages."""
    kind = resource["kind"]
    if kind == "object":
        return f"object s3://{resource['bucket']}/{resource['key']}"
    if kind in ("url", "permission", "provisioned", "alias", "version"):
        qualifier = resource.get("qualifier") or resource.get("name") or resource.get("version")
        label = resource.get("sid", "")
        where = f"{resource['function']}:{qualifier}" if qualifier else resource["function"]
        return f"{kind.replace('_', ' ')} {label + ' on ' if label else ''}{where}"
    return f"{kind.replace('_', ' ')} {resource.get('arn') or resource['name']}"


def delete_resource(clients: AwsClients, resource: Resource) -> bool:
    """Delete one resource; nothing happens if it is already gone. False when it was rightly kept (a shared
    bucket other deployments still use). Raises botocore's errors otherwise."""
    try:
        return _DELETERS[resource["kind"]](clients, resource) is not False
    except Exception as exc:
        if not is_not_found(exc):
            raise
    return True


def teardown(clients: AwsClients, resources: list[Resource], report: Callable[[str], None] = lambda _: None
             ) -> list[tuple[Resource, str]]:
    """Delete `resources` newest first; returns (resource, why) for each one that could not be deleted."""
    failed = []
    for resource in reversed(resources):
        try:
            if delete_resource(clients, resource):
                report(f"deleted {describe_resource(resource)}")
            else:
                report(f"kept {describe_resource(resource)} (shared: other deployments' files are still in it)")
        except Exception as exc:
            failed.append((resource, describe(exc)))
            report(f"could not delete {describe_resource(resource)}: {describe(exc)}")
    return failed


def _bucket(clients: AwsClients, r: Resource) -> bool:
    # Shared by every deployment in the account and region: removed only once nothing else is left in it.
    listing = clients.s3.list_objects_v2(Bucket=r["name"], MaxKeys=1)
    if listing.get("KeyCount", 0) != 0:
        return False
    clients.s3.delete_bucket(Bucket=r["name"])
    return True


def _object(clients: AwsClients, r: Resource) -> None:
    clients.s3.delete_object(Bucket=r["bucket"], Key=r["key"])


def _log_group(clients: AwsClients, r: Resource) -> None:
    clients.logs.delete_log_group(logGroupName=r["name"])


def _role(clients: AwsClients, r: Resource) -> None:
    # IAM refuses to delete a role that still has policies.
    for policy in clients.iam.list_role_policies(RoleName=r["name"])["PolicyNames"]:
        clients.iam.delete_role_policy(RoleName=r["name"], PolicyName=policy)
    clients.iam.delete_role(RoleName=r["name"])


def _layer_version(clients: AwsClients, r: Resource) -> None:
    clients.lambda_.delete_layer_version(LayerName=r["name"], VersionNumber=int(r["version"]))


def _function(clients: AwsClients, r: Resource) -> None:
    # Deleting the function deletes its versions, aliases, URLs, policy and provisioned concurrency with it.
    clients.lambda_.delete_function(FunctionName=r["name"])


def _version(clients: AwsClients, r: Resource) -> None:
    clients.lambda_.delete_function(FunctionName=r["function"], Qualifier=str(r["version"]))


def _alias(clients: AwsClients, r: Resource) -> None:
    clients.lambda_.delete_alias(FunctionName=r["function"], Name=r["name"])


def _url(clients: AwsClients, r: Resource) -> None:
    clients.lambda_.delete_function_url_config(FunctionName=r["function"], **_qualifier(r))


def _permission(clients: AwsClients, r: Resource) -> None:
    clients.lambda_.remove_permission(FunctionName=r["function"], StatementId=r["sid"], **_qualifier(r))


def _provisioned(clients: AwsClients, r: Resource) -> None:
    clients.lambda_.delete_provisioned_concurrency_config(FunctionName=r["function"], Qualifier=r["qualifier"])


def _qualifier(r: Resource) -> dict:
    return {"Qualifier": r["qualifier"]} if r.get("qualifier") else {}


_DELETERS: dict[str, Callable[[AwsClients, Resource], object]] = {
    "bucket": _bucket,
    "object": _object,
    "log_group": _log_group,
    "role": _role,
    "layer_version": _layer_version,
    "function": _function,
    "version": _version,
    "alias": _alias,
    "url": _url,
    "permission": _permission,
    "provisioned": _provisioned,
}

"""The function's execution role and its log group, with least privilege.

The role may do two things: write to its own log group, and (only when the weights are staged in S3) read the
objects under its own weights folder. The log group is created by the deploy with a retention period, so the
role needs no logs:CreateLogGroup and logs do not pile up forever. The policy documents are plain functions so
the CloudFormation export grants exactly the same.

Example:
    >>> execution_policy("aws", "eu-west-1", "123456789012", "/aws/lambda/demo", None)["Statement"][0]["Resource"]
    'arn:aws:logs:eu-west-1:123456789012:log-group:/aws/lambda/demo:*'
"""

from __future__ import annotations

import json

from votive.client.aws_session import is_not_found
from votive.deploy.journal import DeployRun

POLICY_VERSION = "2012-10-17"


def trust_policy() -> dict:
    """Who may assume the role: the Lambda service, nothing else."""
    return {"Version": POLICY_VERSION, "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}


# What Lambda does on the role's behalf to attach a function to a VPC (AWSLambdaVPCAccessExecutionRole's list).
VPC_ACTIONS = ["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
               "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]


def execution_policy(partition: str, region: str, account: str, log_group: str, weights_arn: str | None,
                     vpc: bool = False) -> dict:
    """The role's one inline policy.

    Args:
        partition, region, account: where the log group is.
        log_group: the function's log group name.
        weights_arn: `arn:aws:s3:::bucket/prefix/*` for S3-staged weights, or None (no S3 access at all).
        vpc: the function runs in a VPC: Lambda manages its network interfaces (EC2 takes no resource here).
    """
    statements = [{
        "Sid": "WriteOwnLogs",
        "Effect": "Allow",
        "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": f"arn:{partition}:logs:{region}:{account}:log-group:{log_group}:*",
    }]
    if weights_arn:
        statements.append({"Sid": "ReadOwnWeights", "Effect": "Allow", "Action": "s3:GetObject",
                           "Resource": weights_arn})
    if vpc:
        statements.append({"Sid": "ManageVpcInterfaces", "Effect": "Allow", "Action": VPC_ACTIONS, "Resource": "*"})
    return {"Version": POLICY_VERSION, "Statement": statements}


def ensure_log_group(run: DeployRun, name: str, retention_days: int) -> None:
    """Create the log group with its retention, or set the retention on the one there."""
    logs = run.clients.logs
    found = [g for g in logs.describe_log_groups(logGroupNamePrefix=name).get("logGroups", [])
             if g["logGroupName"] == name]
    if not found:
        logs.create_log_group(logGroupName=name, tags={"votive:deployment": run.record["name"]})
        run.created({"kind": "log_group", "name": name})
        logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)
        return
    before = found[0].get("retentionInDays")
    if before != retention_days:
        logs.put_retention_policy(logGroupName=name, retentionInDays=retention_days)
        if before is None:
            run.on_undo(f"remove the retention of {name}", lambda: logs.delete_retention_policy(logGroupName=name))
        else:
            run.on_undo(f"set the retention of {name} back to {before} days",
                        lambda: logs.put_retention_policy(logGroupName=name, retentionInDays=before))


def ensure_role(run: DeployRun, role_name: str, policy_name: str, policy: dict) -> str:
    """Create the role with its inline policy, or bring the policy up to date; returns the role's ARN."""
    iam = run.clients.iam
    try:
        arn = iam.get_role(RoleName=role_name)["Role"]["Arn"]
    except Exception as exc:
        if not is_not_found(exc):
            raise
        arn = iam.create_role(
            RoleName=role_name, AssumeRolePolicyDocument=json.dumps(trust_policy()),
            Description=f"Execution role of the votive function {run.record['name']}",
            Tags=[{"Key": "votive:deployment", "Value": run.record["name"]}],
        )["Role"]["Arn"]
        run.created({"kind": "role", "name": role_name})
        iam.put_role_policy(RoleName=role_name, PolicyName=policy_name, PolicyDocument=json.dumps(policy))
        return arn
    try:
        before = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
    except Exception as exc:
        if not is_not_found(exc):
            raise
        before = None
    if isinstance(before, str):  # boto3 decodes IAM's URL-encoded JSON; a stand-in may hand back the text
        before = json.loads(before)
    if before != policy:
        iam.put_role_policy(RoleName=role_name, PolicyName=policy_name, PolicyDocument=json.dumps(policy))
        if before is None:
            run.on_undo(f"remove policy {policy_name} from {role_name}",
                        lambda: iam.delete_role_policy(RoleName=role_name, PolicyName=policy_name))
        else:
            run.on_undo(f"restore policy {policy_name} of {role_name}",
                        lambda: iam.put_role_policy(RoleName=role_name, PolicyName=policy_name,
                                                    PolicyDocument=json.dumps(before)))
    return arn

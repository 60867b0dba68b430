"""`votive export stepfunctions`: `votive map`'s job as an AWS Step Functions Distributed Map, for corpora past
what one client machine should drive, or runs nobody watches.

The template holds a STANDARD state machine and its role. Its one Map state, in DISTRIBUTED mode:
- reads the corpus from S3 (ItemReader: JSONL or CSV, s3:getObject);
- batches items into requests (ItemBatcher: MaxItemsPerBatch), each a Lambda invocation of the deployed votive
  function with the event `{"Items": [...], "BatchInput": {"field", "id_field"}}`, which votive's handlers answer
  directly (votive.handlers.batch_events);
- runs at most MaxConcurrency child executions, retries throttles (Lambda.TooManyRequestsException) and Lambda's
  transient errors with backoff, and fails the run only past ToleratedFailurePercentage;
- writes every batch's answer to S3 (ResultWriter), beside a manifest Step Functions makes.

The function is named, not created: deploy it first (`votive deploy aws`), then `aws cloudformation deploy
--template-file template.json --stack-name NAME --capabilities CAPABILITY_IAM` and start an execution.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from votive.errors import InputError

# Lambda's errors worth retrying: throttles and its own transient failures.
RETRIED = ["Lambda.TooManyRequestsException", "Lambda.ServiceException", "Lambda.AWSLambdaException",
           "Lambda.SdkClientException"]


@dataclass(frozen=True)
class MapJob:
    function: str  # the deployed function's name (or ARN), optionally name:alias
    input_uri: str  # s3://bucket/key of the JSONL or CSV corpus
    output_uri: str  # s3://bucket/prefix/ for the results
    input_format: str = "jsonl"  # "jsonl" or "csv"
    field: str = "text"  # the item field (column) holding the text
    id_field: str | None = None  # the item field holding its id
    batch_size: int = 64  # items per invocation
    max_concurrency: int = 100  # child executions at once
    tolerated_failure_percentage: int = 0  # of items; past it the run fails
    retries: int = 6  # tries after the first, per batch


def state_machine_template(job: MapJob) -> dict:
    """The CloudFormation template (a dict) of `job`'s state machine and role."""
    in_bucket, in_key = _s3(job.input_uri, "--input")
    out_bucket, out_prefix = _s3(job.output_uri, "--output")
    if job.input_format not in ("jsonl", "csv"):
        raise InputError(f"--format {job.input_format!r}: a Distributed Map reads JSONL or CSV")
    if not (1 <= job.batch_size and 1 <= job.max_concurrency <= 10000 and 0 <= job.tolerated_failure_percentage
            <= 100):
        raise InputError("--batch-size and --max-concurrency (1..10000) must be positive, "
                         "--tolerated-failure-percentage 0..100")
    reader_config = {"InputType": "JSONL"} if job.input_format == "jsonl" else {
        "InputType": "CSV", "CSVHeaderLocation": "FIRST_ROW"}
    invoke = {
        "Type": "Task",
        "Resource": "arn:aws:states:::lambda:invoke",
        "Parameters": {"FunctionName": job.function, "Payload.$": "$"},
        "OutputPath": "$.Payload",
        "Retry": [{"ErrorEquals": RETRIED, "IntervalSeconds": 2, "BackoffRate": 2.0, "MaxAttempts": job.retries,
                   "JitterStrategy": "FULL"}],
        "End": True,
    }
    batch_input = {"field": job.field}
    if job.id_field:
        batch_input["id_field"] = job.id_field
    definition = {
        "Comment": f"votive map over {job.input_uri} with {job.function}",
        "StartAt": "Map",
        "States": {"Map": {
            "Type": "Map",
            "ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": reader_config,
                           "Parameters": {"Bucket": in_bucket, "Key": in_key}},
            "ItemBatcher": {"MaxItemsPerBatch": job.batch_size, "BatchInput": batch_input},
            "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                              "StartAt": "Invoke", "States": {"Invoke": invoke}},
            "MaxConcurrency": job.max_concurrency,
            "ToleratedFailurePercentage": job.tolerated_failure_percentage,
            "ResultWriter": {"Resource": "arn:aws:states:::s3:putObject",
                             "Parameters": {"Bucket": out_bucket, "Prefix": out_prefix}},
            "End": True,
        }},
    }
    policy = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": _function_arns(job.function)},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{in_bucket}/{in_key}"},
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject", "s3:ListMultipartUploadParts",
                                       "s3:AbortMultipartUpload"],
         "Resource": f"arn:aws:s3:::{out_bucket}/{out_prefix}*"},
        {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": [f"arn:aws:s3:::{in_bucket}",
                                                                    f"arn:aws:s3:::{out_bucket}"]},
        # a Distributed Map runs its batches as child executions of this same state machine
        {"Effect": "Allow", "Action": ["states:StartExecution", "states:DescribeExecution", "states:StopExecution"],
         "Resource": "*"},
    ]}
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": definition["Comment"],
        "Resources": {
            "MapRole": {"Type": "AWS::IAM::Role", "Properties": {
                "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                    "Effect": "Allow", "Principal": {"Service": "states.amazonaws.com"},
                    "Action": "sts:AssumeRole"}]},
                "Policies": [{"PolicyName": "votive-map", "PolicyDocument": policy}]}},
            "MapStateMachine": {"Type": "AWS::StepFunctions::StateMachine", "Properties": {
                "StateMachineType": "STANDARD",
                "RoleArn": {"Fn::GetAtt": ["MapRole", "Arn"]},
                "Definition": definition}},  # an object: cfn-lint checks it against the States language
        },
        "Outputs": {"StateMachineArn": {"Value": {"Ref": "MapStateMachine"}}},
    }


def write_state_machine(job: MapJob, out: Path, *, force: bool = False, fmt: str = "json") -> Path:
    """Write the template into `out` (template.json or .yaml, mode 0644); InputError if it exists and not force."""
    from votive.deploy.aws.template_text import to_yaml, write_text

    path = Path(out) / f"template.{fmt}"
    if path.exists() and not force:
        raise InputError(f"{path} exists; pass --force to replace it")
    template = state_machine_template(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, to_yaml(template) if fmt == "yaml" else json.dumps(template, indent=1) + "\n")
    return path


def _s3(uri: str, flag: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:] or not uri[5:].split("/", 1)[0]:
        raise InputError(f"{flag} must be s3://BUCKET/KEY, found {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def _function_arns(function: str) -> list:
    """The function (at its alias, if named) and its versions and aliases, as IAM resources."""
    if function.startswith("arn:"):
        base = function.split(":function:")[0] + ":function:" + function.split(":function:")[1].split(":")[0]
        return [function, base + ":*"]
    name = function.split(":")[0]
    prefix = "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
    return [{"Fn::Sub": prefix + function}, {"Fn::Sub": prefix + name + ":*"}]

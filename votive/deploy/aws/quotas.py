"""AWS Lambda's limits and naming rules, and the names votive gives what it creates for one deployment.

Facts live in tables here (Lambda developer guide, "Lambda quotas" and the API reference's constraints), so
the deployer, the CloudFormation export and the checks before a deploy all read the same numbers. Every check
raises DeployError with one line saying what, the value found and what is allowed, before anything is created.

Example:
    >>> names = DeploymentNames("embed-demo")
    >>> names.role, names.log_group
    ('votive-embed-demo', '/aws/lambda/embed-demo')
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from votive.errors import DeployError

# Size, memory and /tmp quotas are the packaging's table (votive.builders.targets.LAMBDA_LIMITS); these are
# the ones only a deployment meets.
TIMEOUT_S = (1, 900)
ENVIRONMENT_BYTES = 4096  # all environment variables' names and values together
SNAPSTART_EPHEMERAL_MB = 512  # SnapStart functions cannot have more /tmp than the default

# Managed runtimes that can take SnapStart (Python from 3.12 on).
SNAPSTART_RUNTIMES = frozenset({"python3.12", "python3.13", "python3.14"})
AUTH_TYPES = ("NONE", "AWS_IAM")
ALIAS = "live"  # the alias a published version gets (SnapStart, provisioned concurrency); the URL points at it
LOG_RETENTION_DAYS = 14
# Values CloudWatch Logs accepts for a log group's retention.
RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                  3288, 3653)

FUNCTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # CreateFunction's rule for a plain name
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
ROLE_NAME_MAX = 64

# Region name prefix -> partition, for ARNs (arn:<partition>:...).
PARTITIONS = (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"), ("", "aws"))


@dataclass(frozen=True)
class DeploymentNames:
    """The names of everything one deployment creates, all derived from the function name.

    Attributes:
        function: the Lambda function (the deployment's name).
        role: its execution role (IAM role names are at most 64 characters: a long name is cut and hashed).
        log_group: the log group Lambda writes to by default.
        layer_prefix: layer names are this plus the layer's own name ("runtime", "weights").
        key_prefix: where its artifacts go in the bucket.
    """

    function: str

    @property
    def role(self) -> str:
        role = f"votive-{self.function}"
        if len(role) <= ROLE_NAME_MAX:
            return role
        digest = hashlib.sha256(self.function.encode()).hexdigest()[:8]
        return f"{role[:ROLE_NAME_MAX - 9]}-{digest}"

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.function}"

    @property
    def layer_prefix(self) -> str:
        return f"votive-{self.function}-"

    @property
    def key_prefix(self) -> str:
        return f"votive/{self.function}/"

    inline_policy = "votive-least-privilege"  # the execution role's one inline policy
    public_url_statement = "votive-url-public"  # lambda:InvokeFunctionUrl for AuthType NONE
    public_invoke_statement = "votive-url-invoke"  # lambda:InvokeFunction, only via the function URL


def partition(region: str) -> str:
    """The ARN partition of a region: 'aws', 'aws-cn' or 'aws-us-gov'."""
    return next(name for prefix, name in PARTITIONS if region.startswith(prefix))


def default_bucket(account: str, region: str) -> str:
    """The bucket votive uses when none is given: one per account and region."""
    return f"votive-{account}-{region}"


def check_region(region: str | None, known: list[str]) -> str:
    """`region` if Lambda is offered there (per `known`, botocore's endpoint data), else DeployError."""
    if not region:
        raise DeployError("no AWS region: pass --region, or set AWS_REGION or a region in your AWS profile")
    if region not in known:
        close = [r for r in known if r.split("-")[0] == region.split("-")[0]] or known
        raise DeployError(f"unknown AWS region {region!r} for Lambda; expected one of: {', '.join(close)}")
    return region


def check_function_name(name: str) -> str:
    """`name` if Lambda accepts it as a function name (1-64 of A-Z a-z 0-9 - _), else DeployError."""
    if not FUNCTION_NAME.fullmatch(name):
        bad = sorted({c for c in name if not re.fullmatch(r"[A-Za-z0-9_-]", c)})
        why = f"has {len(name)} characters (at most 64)" if len(name) > 64 or not name else \
            f"contains {' '.join(repr(c) for c in bad)}"
        raise DeployError(f"--name {name!r} is not a Lambda function name: it {why}; use letters, digits, '-' and "
                          f"'_', at most 64")
    return name


def check_bucket_name(name: str) -> str:
    """`name` if S3 accepts it as a bucket name (3-63 of a-z 0-9 . -, starting and ending alphanumeric)."""
    if not BUCKET_NAME.fullmatch(name) or ".." in name:
        raise DeployError(f"--bucket {name!r} is not an S3 bucket name: 3 to 63 characters of a-z, 0-9, '.' and "
                          f"'-', starting and ending with a letter or digit")
    return name


def check_range(option: str, value: int, bounds: tuple[int, int], unit: str) -> int:
    """`value` if within `bounds` (inclusive), else DeployError naming the option."""
    low, high = bounds
    if not low <= value <= high:
        raise DeployError(f"{option} {value} {unit} is outside what Lambda allows: {low} to {high} {unit}")
    return value


def mib(n_bytes: int) -> str:
    """Bytes as MiB with one decimal, for messages (AWS's "MB" limits are MiB)."""
    return f"{n_bytes / 2**20:.1f} MiB"

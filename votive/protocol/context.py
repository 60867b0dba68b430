"""What a Lambda execution environment looks like from the inside: the function's settings (`FunctionConfig`),
the context object passed to the handler (`LambdaContext`) and the environment variables the runtime starts with
(`lambda_environment`), field for field as awslambdaric gives them.

Every AWS identifier made up for a local run is obviously fake: account 000000000000 in region `xx-local-1`, so
nothing local can be mistaken for, or reach, a real resource.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

FAKE_ACCOUNT_ID = "000000000000"
FAKE_REGION = "xx-local-1"
# Lambda refuses request and response payloads above 6 MB (6 * 2**20 bytes) for synchronous invocations.
PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024

@dataclass(frozen=True)
class FunctionConfig:
    """The settings of the emulated function, as a deployed one would have them.

    Example:
        >>> FunctionConfig(name="embed").arn
        'arn:aws:lambda:xx-local-1:000000000000:function:embed'
    """

    name: str = "votive-local"  # AWS_LAMBDA_FUNCTION_NAME
    memory_mb: int = 1024  # AWS_LAMBDA_FUNCTION_MEMORY_SIZE; locally nothing enforces it
    timeout_s: float = 30.0  # the function timeout; past it the invocation fails with Sandbox.Timedout
    version: str = "$LATEST"  # AWS_LAMBDA_FUNCTION_VERSION: unpublished code is always $LATEST
    region: str = FAKE_REGION
    account_id: str = FAKE_ACCOUNT_ID

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.name}"


def new_log_stream_name(version: str = "$LATEST", now: float | None = None) -> str:
    """A log stream name shaped like Lambda's: one per execution environment, '2026/11/25/[$LATEST]<32 hex>'."""
    day = time.strftime("%Y/%m/%d", time.gmtime(time.time() if now is None else now))
    return f"{day}/[{version}]{uuid.uuid4().hex}"


@dataclass
class CognitoIdentity:
    """context.identity: set only for calls from the AWS Mobile SDK; None here, as for function URLs."""

    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


@dataclass
class LambdaContext:
    """The `context` argument of a Python handler, field for field as awslambdaric builds it.

    Args:
        aws_request_id: the invocation's id (also requestContext.requestId of a function URL event).
        deadline_ms: epoch milliseconds at which the function timeout expires.
        config: the function's settings.
        log_stream_name: the environment's log stream (one per environment).
        clock: returns epoch seconds; pass a fake one in tests.
    """

    aws_request_id: str
    deadline_ms: int
    config: FunctionConfig
    log_stream_name: str
    clock: Callable[[], float] = time.time
    client_context: Any = None
    identity: CognitoIdentity = field(default_factory=CognitoIdentity)
    tenant_id: str | None = None

    @property
    def function_name(self) -> str:
        return self.config.name

    @property
    def function_version(self) -> str:
        return self.config.version

    @property
    def invoked_function_arn(self) -> str:
        return self.config.arn

    @property
    def memory_limit_in_mb(self) -> str:
        # awslambdaric reads it from the environment, so deployed code sees a string, not an int.
        return str(self.config.memory_mb)

    @property
    def log_group_name(self) -> str:
        return self.config.log_group_name

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds left before the function timeout, never negative."""
        return max(0, self.deadline_ms - int(self.clock() * 1000))

    def log(self, message) -> None:
        sys.stdout.write(str(message))


def lambda_environment(
    config: FunctionConfig,
    *,
    handler: str,
    runtime_api: str,
    task_root: str,
    log_stream_name: str,
    python_version: str | None = None,
) -> dict[str, str]:
    """The variables Lambda's Python runtime starts with (the reserved ones; no credentials are ever set).

    Args:
        handler: "module.function" (_HANDLER).
        runtime_api: host:port of the Runtime API the runtime client polls (AWS_LAMBDA_RUNTIME_API).
        task_root: the folder holding the function code (LAMBDA_TASK_ROOT, /var/task when deployed).
        python_version: "3.11"; defaults to this interpreter's.
    """
    if python_version is None:
        python_version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return {
        "_HANDLER": handler,
        "AWS_LAMBDA_RUNTIME_API": runtime_api,
        "LAMBDA_TASK_ROOT": task_root,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_python{python_version}",
        "AWS_LAMBDA_FUNCTION_NAME": config.name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
        "AWS_LAMBDA_FUNCTION_VERSION": config.version,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "AWS_LAMBDA_LOG_GROUP_NAME": config.log_group_name,
        "AWS_LAMBDA_LOG_STREAM_NAME": log_stream_name,
        "AWS_REGION": config.region,
        "AWS_DEFAULT_REGION": config.region,
        "TZ": ":UTC",
        "LANG": "en_US.UTF-8",
    }

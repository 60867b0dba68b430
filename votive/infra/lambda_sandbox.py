"""What a Lambda execution environment looks like from the inside, emulated for local runs.

One table of facts per thing the function can observe: the settings (`FunctionConfig`), the context object
passed to the handler (`LambdaContext`), the environment variables the runtime starts with
(`lambda_environment`), how the handler named "module.function" is found (`load_handler`), and the error
objects Lambda reports ({errorMessage, errorType, requestId, stackTrace}). The field names and error codes follow
awslambdaric (the Python runtime interface client) so that code tested here behaves the same once deployed.

Every AWS identifier is obviously fake: account 000000000000 in region `xx-local-1`, so nothing local can be
mistaken for, or reach, a real resource.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

FAKE_ACCOUNT_ID = "000000000000"
FAKE_REGION = "xx-local-1"
# Lambda refuses request and response payloads above 6 MB (6 * 2**20 bytes) for synchronous invocations.
PAYLOAD_LIMIT_BYTES = 6 * 1024 * 1024

# Error types the Python runtime reports, as spelled by awslambdaric's FaultException.
IMPORT_MODULE_ERROR = "Runtime.ImportModuleError"
HANDLER_NOT_FOUND = "Runtime.HandlerNotFound"
MALFORMED_HANDLER_NAME = "Runtime.MalformedHandlerName"
USER_CODE_SYNTAX_ERROR = "Runtime.UserCodeSyntaxError"
MARSHAL_ERROR = "Runtime.MarshalError"
UNMARSHAL_ERROR = "Runtime.UnmarshalError"
# Errors the Lambda service itself reports when the runtime cannot answer.
EXIT_ERROR = "Runtime.ExitError"
TIMEOUT_ERROR = "Sandbox.Timedout"
RESPONSE_TOO_LARGE = "Function.ResponseSizeTooLarge"

HandlerFunction = Callable[[Any, Any], Any]


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


class HandlerInitError(Exception):
    """The handler could not be loaded; `error` is the object Lambda would report through /init/error."""

    def __init__(self, error: dict):
        self.error = error
        super().__init__(f"{error['errorType']}: {error['errorMessage']}")


def load_handler(handler: str | HandlerFunction) -> HandlerFunction:
    """Import "package.module.function" the way awslambdaric does, or accept a callable as is.

    Raises:
        HandlerInitError: with Lambda's error type (Runtime.ImportModuleError, Runtime.HandlerNotFound, ...);
            an exception raised while the module initializes keeps its own type name, as in Lambda.
    """
    if callable(handler):
        return handler
    module_name, _, function_name = str(handler).rpartition(".")
    if not module_name or not function_name:
        raise HandlerInitError(
            lambda_error(f"Bad handler '{handler}': expected 'module.function'", MALFORMED_HANDLER_NAME)
        )
    try:
        module = importlib.import_module(module_name.replace("/", "."))
    except ImportError as exc:
        raise HandlerInitError(
            lambda_error(f"Unable to import module '{module_name}': {exc}", IMPORT_MODULE_ERROR)
        ) from exc
    except SyntaxError as exc:
        raise HandlerInitError(
            lambda_error(f"Syntax error in module '{module_name}': {exc}", USER_CODE_SYNTAX_ERROR)
        ) from exc
    except Exception as exc:
        raise HandlerInitError(error_from_exception(exc)) from exc
    try:
        function = getattr(module, function_name)
    except AttributeError:
        raise HandlerInitError(
            lambda_error(f"Handler '{function_name}' missing on module '{module_name}'", HANDLER_NOT_FOUND)
        ) from None
    except Exception as exc:  # a module __getattr__ that builds the handler (and loads the model) on access
        raise HandlerInitError(error_from_exception(exc)) from exc
    if not callable(function):
        raise HandlerInitError(
            lambda_error(f"Handler '{function_name}' on module '{module_name}' is not callable", HANDLER_NOT_FOUND)
        )
    return function


def lambda_error(message: str, error_type: str, request_id: str = "", stack_trace: list | None = None) -> dict:
    """Lambda's error object, the body of /invocation/{id}/error and of a failed Invoke."""
    return {"errorMessage": message, "errorType": error_type, "requestId": request_id, "stackTrace": stack_trace or []}


def error_from_exception(exc: BaseException, request_id: str = "", skip_frames: int = 0) -> dict:
    """The error object awslambdaric posts for an exception escaping the handler: type name, message, frames.

    `skip_frames` drops the caller's own frames from the top, as awslambdaric drops bootstrap.py's.
    """
    frames = traceback.extract_tb(exc.__traceback__)[skip_frames:]
    return lambda_error(str(exc), type(exc).__name__, request_id, traceback.format_list(frames))


def response_too_large(size: int, request_id: str) -> dict:
    """The error Lambda reports when a function's response is over the 6 MB payload limit."""
    message = (
        f"Response payload size ({size} bytes) exceeded maximum allowed payload size ({PAYLOAD_LIMIT_BYTES} bytes)."
    )
    return lambda_error(message, RESPONSE_TOO_LARGE, request_id)


def marshal_result(result: Any) -> tuple[bytes, str]:
    """Serialize a handler's return value as awslambdaric does: bytes pass through, the rest becomes JSON.

    Raises:
        TypeError, ValueError: the value is not JSON-serializable (Lambda reports Runtime.MarshalError).
    """
    if isinstance(result, bytes):
        return result, "application/unknown"
    return json.dumps(result, allow_nan=True).encode("utf-8"), "application/json"

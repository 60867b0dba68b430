"""The error objects Lambda reports ({errorMessage, errorType, requestId, stackTrace}), with the error types
awslambdaric and the Lambda service spell, and a handler's result marshalled as awslambdaric marshals it."""

from __future__ import annotations

import json
import traceback
from typing import Any

from votive.protocol.context import PAYLOAD_LIMIT_BYTES

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

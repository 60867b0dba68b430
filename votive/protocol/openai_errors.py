"""The error body OpenAI's API answers with, so that OpenAI clients raise their usual exceptions on votive's
errors: the handlers' (`votive.handlers.http_errors`) and the local function URL's own refusals alike.

    >>> error_body(413, "too large", code="request_too_large")
    {'error': {'message': 'too large', 'type': 'invalid_request_error', 'param': None, 'code': 'request_too_large'}}
"""

from __future__ import annotations


def error_type(status: int) -> str:
    """OpenAI's error type: a 4xx is the client's to fix, anything else is the server's."""
    return "invalid_request_error" if status < 500 else "server_error"


def error_body(status: int, message: str, *, param: str | None = None, code: str | None = None) -> dict:
    """{"error": {"message", "type", "param", "code"}} for an answer of `status`."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}

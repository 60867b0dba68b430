"""HTTP errors in the shape OpenAI's API answers with, so OpenAI clients raise their usual exceptions.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "input", "code": "invalid_type"}}

`HttpError` never leaves a handler: `votive.handlers.events` turns it into a function URL response, or, for a
direct invoke, into a `votive.errors.VotiveFault`.
"""

from __future__ import annotations

from votive.protocol.openai_errors import error_body, error_type


class HttpError(Exception):
    """A request the handler refuses or cannot answer, with everything the HTTP answer needs.

    Args:
        status: HTTP status code (4xx: the client's fault; 500: ours or the model's).
        message: what was wrong and where, expected vs found; shown to the client as is.
        param: the request field at fault ("input", "encoding_format"), or None.
        code: a short stable machine-readable reason ("invalid_type", "too_many_inputs"), or None.
        headers: extra response headers (405 answers carry `allow`).

    Example:
        >>> HttpError(400, "'input' is empty", param="input", code="empty_input").body()["error"]["type"]
        'invalid_request_error'
    """

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None):
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}
        super().__init__(f"{status}: {message}")

    @property
    def type(self) -> str:
        """OpenAI's error type: a 4xx is the client's to fix, anything else is ours."""
        return error_type(self.status)

    def body(self) -> dict:
        """The JSON body OpenAI's API would send."""
        return error_body(self.status, self.message, param=self.param, code=self.code)

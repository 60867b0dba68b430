"""`votive invoke --function NAME`: call a Lambda function directly through the Invoke API (no function URL).

With `stream` it uses InvokeWithResponseStream and hands each payload chunk over as it arrives, for functions
whose handler streams; otherwise the answer comes whole. A function error (the handler raised) is not an
exception here: it is reported in the result, as Lambda reports it, with the payload describing it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable

from votive.client.aws_session import aws_errors


@dataclass
class FunctionResult:
    payload: bytes  # the function's answer (empty when streamed: the chunks went to on_chunk)
    error: str | None  # "<errorType>: <errorMessage>" when the function raised, else None


def invoke_function(lambda_client, name: str, payload: bytes, *, qualifier: str | None = None, stream: bool = False,
                    on_chunk: Callable[[bytes], None] = lambda chunk: None) -> FunctionResult:
    """Invoke `name` (at `qualifier`, an alias or version) with `payload` (JSON bytes).

    Raises:
        DeployError: the call itself failed (no such function, no permission, no credentials).
    """
    kwargs = {"FunctionName": name, "Payload": payload}
    if qualifier:
        kwargs["Qualifier"] = qualifier
    with aws_errors(f"invoke {name}"):
        if not stream:
            response = lambda_client.invoke(**kwargs)
            body = response["Payload"].read()
            return FunctionResult(body, _error(body) if response.get("FunctionError") else None)
        response = lambda_client.invoke_with_response_stream(**kwargs)
        error = None
        for event in response["EventStream"]:
            if "PayloadChunk" in event:
                on_chunk(event["PayloadChunk"]["Payload"])
            elif "InvokeComplete" in event and event["InvokeComplete"].get("ErrorCode"):
                complete = event["InvokeComplete"]
                error = f"{complete['ErrorCode']}: {complete.get('ErrorDetails', '')}".rstrip(": ")
        return FunctionResult(b"", error)


def _error(body: bytes) -> str:
    """Lambda's error payload {"errorType", "errorMessage"} as one line."""
    try:
        error = json.loads(body)
        return f"{error.get('errorType', 'Error')}: {error.get('errorMessage', '')}"
    except (ValueError, AttributeError):
        return body.decode("utf-8", "replace")[:500]

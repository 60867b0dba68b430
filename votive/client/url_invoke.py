"""Call a function URL, local (`votive serve`) or deployed, the way `votive invoke` does.

Only urllib: invoking must not pull in requests or boto3. A deployed URL with auth type AWS_IAM needs each
request signed with SigV4: the `sign` argument (a callable that adds the signature headers to the prepared
`urllib.request.Request`, made by `votive.client.sigv4.sigv4_signer`) does that, so this module never imports
AWS code. A streamed answer (RESPONSE_STREAM) is handed to `on_chunk` piece by piece as it arrives.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from votive.errors import EndpointError, InputError

Signer = Callable[[urllib.request.Request], None]
STREAM_READ = 64 * 1024


@dataclass
class InvokeResult:
    """What the endpoint answered."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def read_data(text: str) -> bytes:
    """The request body from `--data`: JSON text, or @path to a file holding JSON; checked to be JSON.

    Raises:
        InputError: the file cannot be read, or the text is not JSON (with where it stops parsing).

    Example:
        >>> read_data('{"input": ["hi"]}')
        b'{"input": ["hi"]}'
    """
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise InputError(f"--data {text}: cannot read {path}: {exc.strerror or exc}") from None
        where = str(path)
    else:
        raw = text.encode("utf-8")
        where = "--data"
    try:
        json.loads(raw)
    except ValueError as exc:
        raise InputError(f"{where} is not valid JSON: {exc}") from None
    return raw


def endpoint_url(url: str, path: str | None = None) -> str:
    """`url` with `path` (and its query) put in place of the URL's own path when given.

    Raises:
        InputError: the URL is not http(s)://host...
    """
    split = urllib.parse.urlsplit(url)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise InputError(f"URL must look like http(s)://host[:port][/path], found {url!r}")
    if path is None:
        return url
    path_part, _, query = path.partition("?")
    return urllib.parse.urlunsplit((split.scheme, split.netloc, "/" + path_part.lstrip("/"), query, ""))


def invoke_url(
    url: str,
    *,
    data: bytes | None = None,
    path: str | None = None,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    sign: Signer | None = None,
    on_chunk: Callable[[bytes], None] | None = None,
) -> InvokeResult:
    """Send one request and return the answer, whatever its status.

    Args:
        url: the function URL (http://127.0.0.1:9000 locally).
        data: the JSON body; sent as application/json.
        path: a path to call on that URL, e.g. /v1/embeddings.
        method: default POST with data, GET without.
        headers: extra request headers.
        timeout_s: for connecting and for each read.
        sign: adds authentication headers (SigV4) to the request just before it is sent.
        on_chunk: called with each piece of a successful answer's body as it arrives (a streamed response), which
            is then not kept: the result's body is empty.

    Raises:
        EndpointError: the endpoint cannot be reached or does not answer in time.
    """
    target = endpoint_url(url, path)
    method = (method or ("POST" if data is not None else "GET")).upper()
    request = urllib.request.Request(target, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    if sign is not None:
        sign(request)
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            if on_chunk is None:
                body = response.read()
            else:
                body = b""
                while chunk := response.read1(STREAM_READ):  # returns what has arrived, up to STREAM_READ
                    try:
                        on_chunk(chunk)
                    except OSError as exc:  # the reader's side (`| head` closed the pipe), not the connection
                        raise _ConsumerError(exc) from None
            return InvokeResult(response.status, response.reason, list(response.headers.items()), body)
    except _ConsumerError as wrapped:
        raise wrapped.error from None
    except urllib.error.HTTPError as exc:
        with exc:
            return InvokeResult(exc.code, str(exc.reason), list(exc.headers.items()), exc.read())
    except urllib.error.URLError as exc:
        raise EndpointError(f"cannot reach {target}: {exc.reason}") from None
    except (socket.timeout, TimeoutError):
        raise EndpointError(f"{target} did not answer within {timeout_s:g} s") from None
    except (ConnectionError, OSError) as exc:
        raise EndpointError(f"connection to {target} failed: {exc}") from None


class _ConsumerError(Exception):
    """An error raised by `on_chunk`, carried past the connection-error handling unchanged."""

    def __init__(self, error: OSError):
        super().__init__(str(error))
        self.error = error

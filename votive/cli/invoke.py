"""`votive invoke`: a request to a function URL, local or deployed (SigV4-signed where it must be), or a direct
Lambda invoke by function name, and the answer printed."""

from __future__ import annotations

import argparse
import sys

from votive.cli.arguments import seconds
from votive.cli.deployments import add_common, aws_clients, state_store
from votive.errors import DeployError, EndpointError, InputError


def add_invoke(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", nargs="?", metavar="URL", help="function URL, e.g. http://127.0.0.1:9000")
    parser.add_argument("--data", "-d", help="JSON body, or @file holding it")
    parser.add_argument("--path", help="path to call on the URL, e.g. /v1/embeddings")
    parser.add_argument("--method", "-X", help="HTTP method (default POST with --data, else GET)")
    parser.add_argument(
        "--header", "-H", action="append", default=[], metavar="'NAME: VALUE'", help="extra header (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=seconds, default=60.0, metavar="S", help="seconds to wait (default 60)"
    )
    add_invoke_options(parser)  # --stream, --sign, --region, --function for deployed functions
    parser.set_defaults(run=run_invoke)


def run_invoke(args: argparse.Namespace) -> int:
    from votive.client.url_invoke import invoke_url, read_data

    data = read_data(args.data) if args.data is not None else None
    if args.stream and data is not None:
        data = ask_to_stream(data)
    headers = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise InputError(f"--header must look like 'Name: value', found {header!r}")
        headers[name.strip()] = value.strip()
    if args.function:
        return run_invoke_function(args, data)
    if args.url is None:
        raise InputError("invoke needs a URL, or --function NAME")
    printer = StreamPrinter(raw=args.raw) if args.stream else None
    result = invoke_url(
        args.url, data=data, path=args.path, method=args.method, headers=headers, timeout_s=args.timeout,
        sign=invoke_signer(args), on_chunk=printer.write if printer else None,
    )
    stream_failed = printer.finish() if printer else False
    out = sys.stdout.buffer
    out.write(result.body if result.body.endswith(b"\n") or not result.body else result.body + b"\n")
    out.flush()
    # After the body, which ends with a newline: never `}HTTP 200 OK` on a terminal.
    print(f"HTTP {result.status} {result.reason}", file=sys.stderr)
    return 0 if result.ok and not stream_failed else 1


def ask_to_stream(data: bytes) -> bytes:
    """--stream on a chat or completion request: add `"stream": true` to the body unless it says otherwise."""
    import json

    body = json.loads(data)  # read_data checked it is JSON
    if not isinstance(body, dict) or "stream" in body or not ("messages" in body or "prompt" in body):
        return data
    return json.dumps({**body, "stream": True}).encode("utf-8")


class StreamPrinter:
    """Prints a streamed answer as it arrives: the text of its events (or, with `raw`, the bytes as sent)."""

    def __init__(self, raw: bool = False):
        from votive.client.stream_text import StreamText

        self.raw = raw
        self.reader = StreamText()
        self.last = b"\n"  # the last byte written: the output must end with a newline

    def write(self, chunk: bytes) -> None:
        self._out(chunk if self.raw else self.reader.feed(chunk).encode("utf-8"))

    def finish(self) -> bool:
        """End the output with a newline; True when the stream carried an error event (said on stderr)."""
        if not self.raw:
            self._out(self.reader.end().encode("utf-8"))
        if self.last != b"\n":
            self._out(b"\n")
        for error in self.reader.errors:
            print(f"votive: the stream ended with an error: {error}", file=sys.stderr)
        return bool(self.reader.errors)

    def _out(self, data: bytes) -> None:
        if data:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
            self.last = data[-1:]


def add_invoke_options(parser: argparse.ArgumentParser) -> None:
    """The options `votive invoke` has for deployed functions."""
    parser.add_argument("--stream", action="store_true",
                        help="stream the answer: adds \"stream\": true to a chat or completion body and prints "
                             "the text as it arrives")
    parser.add_argument("--raw", action="store_true",
                        help="with --stream: print the server-sent events as they arrive instead of their text")
    parser.add_argument("--sign", choices=("auto", "always", "never"), default="auto",
                        help="SigV4-sign the request with your AWS credentials: auto (default) signs for a "
                             "recorded AWS_IAM deployment, or any *.lambda-url.*.on.aws URL when credentials "
                             "are found")
    parser.add_argument("--region", help="region to sign for, when the URL does not name one")
    parser.add_argument("--function", metavar="NAME",
                        help="invoke the Lambda function NAME directly through the AWS API instead of a URL")
    add_common(parser)


def invoke_signer(args: argparse.Namespace):
    """The `sign` callable for `votive invoke URL`, or None when the request goes unsigned."""
    from votive.client.sigv4 import is_function_url, sigv4_signer

    if args.sign == "never":
        return None
    if args.sign == "always":
        return sigv4_signer(args.url, region=args.region, profile=args.profile)
    recorded = recorded_auth(state_store(args), args.url)
    if recorded == "NONE" or (recorded is None and not is_function_url(args.url)):
        return None
    try:
        return sigv4_signer(args.url, region=args.region, profile=args.profile)
    except EndpointError:
        if recorded == "AWS_IAM":
            raise
        return None  # an unrecorded URL may well be public: try without


def run_invoke_function(args: argparse.Namespace, data: bytes | None) -> int:
    """`votive invoke --function NAME`: a direct Lambda Invoke of the function (its alias when recorded)."""
    from votive.client.lambda_invoke import invoke_function

    record = state_store(args).load(args.function) if state_store(args).exists(args.function) else {}
    clients = aws_clients(args, region=args.region or record.get("region"))
    out = sys.stdout.buffer
    printer = StreamPrinter(raw=args.raw) if args.stream else None
    result = invoke_function(clients.lambda_, args.function, data or b"{}", qualifier=record.get("qualifier"),
                             stream=args.stream, on_chunk=printer.write if printer else (lambda chunk: None))
    if printer is not None:
        if printer.finish():
            return 1
    else:
        out.write(result.payload if result.payload.endswith(b"\n") else result.payload + b"\n")
        out.flush()
    if result.error:
        print(f"votive: {args.function} raised {result.error}", file=sys.stderr)
        return 1
    return 0


def recorded_auth(state, url: str) -> str | None:
    """The auth type of the recorded deployment serving `url`, if one here does."""
    wanted = url.rstrip("/").split("?")[0]
    for name in state.names():
        try:
            record = state.load(name)
        except DeployError:
            continue
        if record.get("url") and wanted.startswith(record["url"].rstrip("/")):
            return record.get("auth")
    return None

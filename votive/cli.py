"""The `votive` command line.

Each subcommand is one row of SUBCOMMANDS: a name, a one-line help, and a function that adds its arguments
and points `run` at the function doing the work. Work functions return an exit code. Library errors
(VotiveError) become one line `votive: error: ...` on stderr and exit code 2; Ctrl-C exits 130 without a
traceback. Imports happen inside the work functions so that `votive --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys

from votive.errors import InputError, VotiveError
from votive.infra import deploy_commands  # argument builders only: boto3, modal and the builders load when run

DEFAULT_HANDLER = "votive.handlers.embeddings.handler"
GENERATION_HANDLER = "votive.handlers.generation.handler"  # the default for a GGUF model
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script passes it to sys.exit)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except VotiveError as exc:
        print(f"votive: error: {_one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="votive", description="Serverless inference endpoints that start cold in a fraction of a second."
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    for name, help_text, add_arguments in SUBCOMMANDS:
        add_arguments(commands.add_parser(name, help=help_text, description=help_text))
    return parser


# --- serve -------------------------------------------------------------------------------------------------


def _add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", metavar="MODEL", help="model folder, .gguf file, alias or Hub id (sets VOTIVE_MODEL)"
    )
    parser.add_argument("--port", type=_port, default=9000, help="port to listen on (default 9000; 0 picks one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument(
        "--environments",
        type=_positive_int,
        default=1,
        metavar="N",
        help="execution environments, each running one request at a time (default 1)",
    )
    parser.add_argument(
        "--handler",
        help=f"module.function to serve (default {DEFAULT_HANDLER}, or {GENERATION_HANDLER} for a GGUF model)",
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=30.0, metavar="S", help="function timeout (default 30 s)"
    )
    parser.add_argument(
        "--runtime-api",
        action="store_true",
        help="run the handler under the real awslambdaric runtime client behind an emulated Runtime API, "
        "one process per environment, instead of in this process",
    )
    parser.add_argument(
        "--runtime",
        choices=("awslambdaric", "votive"),
        help="runtime client for --runtime-api: awslambdaric (answers whole, a BUFFERED function URL) or votive's "
        "streaming runtime (a RESPONSE_STREAM function URL); default votive for the generation handler, "
        "awslambdaric for any other",
    )
    parser.add_argument("--python", default=sys.executable, help="interpreter for --runtime-api (default: this one)")
    parser.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import logging
    import os

    from votive.infra.function_url import FunctionUrlServer
    from votive.infra.in_process import InProcessFunction
    from votive.infra.lambda_sandbox import FunctionConfig
    from votive.infra.runtime_api import RuntimeApiEmulator

    if args.model is None and args.handler is None:
        raise InputError("serve needs a MODEL for the default handler, or --handler module.function")
    handler = args.handler or _default_handler(args.model)
    env = {}
    if args.model is not None:
        # A folder given relative to here must still resolve in a runtime started elsewhere.
        env["VOTIVE_MODEL"] = os.path.abspath(args.model) if os.path.exists(args.model) else args.model
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    config = FunctionConfig(timeout_s=args.timeout)
    runtime = args.runtime or ("votive" if handler == GENERATION_HANDLER else "awslambdaric")
    if args.runtime_api:
        # votive's runtime speaks the Runtime API's streaming mode, which awslambdaric cannot
        command = [args.python, "-m", "votive.handlers.stream_runtime", handler] if runtime == "votive" else None
        function = RuntimeApiEmulator(
            handler, environments=args.environments, config=config, python=args.python, env=env, command=command
        )
    else:
        os.environ.update(env)
        function = InProcessFunction(handler, environments=args.environments, config=config)
    server = FunctionUrlServer(function, host=args.host, port=args.port)
    server.start()
    try:
        mode = f"{runtime} runtime" if args.runtime_api else "in-process"
        print(f"votive: serving {handler} at {server.url} ({args.environments} environment(s), {mode})", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print(f"votive: warning: listening on {args.host} without any authentication", file=sys.stderr)
        server.wait()
    finally:
        server.stop()
    return 0


def _default_handler(model: str) -> str:
    """The generation handler for a GGUF model, the embedding handler for anything else."""
    from votive.runtime.sources import resolve_source

    return GENERATION_HANDLER if resolve_source(model).format == "gguf" else DEFAULT_HANDLER


# --- invoke ------------------------------------------------------------------------------------------------


def _add_invoke(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", nargs="?", metavar="URL", help="function URL, e.g. http://127.0.0.1:9000")
    parser.add_argument("--data", "-d", help="JSON body, or @file holding it")
    parser.add_argument("--path", help="path to call on the URL, e.g. /v1/embeddings")
    parser.add_argument("--method", "-X", help="HTTP method (default POST with --data, else GET)")
    parser.add_argument(
        "--header", "-H", action="append", default=[], metavar="'NAME: VALUE'", help="extra header (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=60.0, metavar="S", help="seconds to wait (default 60)"
    )
    deploy_commands.add_invoke_options(parser)  # --stream, --sign, --region, --function for deployed functions
    parser.set_defaults(run=_run_invoke)


def _run_invoke(args: argparse.Namespace) -> int:
    from votive.infra.invoke import invoke_url, read_data

    data = read_data(args.data) if args.data is not None else None
    headers = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise InputError(f"--header must look like 'Name: value', found {header!r}")
        headers[name.strip()] = value.strip()
    if args.function:
        return deploy_commands.run_invoke_function(args, data)
    if args.url is None:
        raise InputError("invoke needs a URL, or --function NAME")
    out = sys.stdout.buffer
    result = invoke_url(
        args.url, data=data, path=args.path, method=args.method, headers=headers, timeout_s=args.timeout,
        sign=deploy_commands.invoke_signer(args),
        on_chunk=(lambda chunk: (out.write(chunk), out.flush())) if args.stream else None,
    )
    print(f"HTTP {result.status} {result.reason}", file=sys.stderr)
    sys.stdout.buffer.write(result.body if result.body.endswith(b"\n") or not result.body else result.body + b"\n")
    sys.stdout.flush()
    return 0 if result.ok else 1


# --- demo --------------------------------------------------------------------------------------------------

DEMO_INPUT = ["How do I reset my password?", "I forgot my password and need to change it."]


def _add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default="minilm", help="embedding model to serve (default: minilm)")
    parser.add_argument("--port", type=_port, default=9000, help="port to listen on (default 9000; 0 picks one)")
    parser.add_argument("--exit", action="store_true", help="stop after answering the demo request")
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    """Serve MODEL on a local function URL, send it one real OpenAI-style request over HTTP, print the answer."""
    import json
    import os
    import time

    from votive.infra.function_url import FunctionUrlServer
    from votive.infra.in_process import InProcessFunction
    from votive.infra.invoke import invoke_url

    os.environ["VOTIVE_MODEL"] = args.model
    started = time.perf_counter()
    server = FunctionUrlServer(InProcessFunction(DEFAULT_HANDLER), port=args.port)
    server.start()
    try:
        print(f"votive: {args.model} is served at {server.url} (function init {time.perf_counter() - started:.2f} s)")
        body = {"model": args.model, "input": DEMO_INPUT}
        print(f"POST {server.url}/v1/embeddings {json.dumps(body)}")
        result = invoke_url(server.url, path="/v1/embeddings", data=json.dumps(body).encode())
        answer = json.loads(result.body)
        if not result.ok:
            print(f"HTTP {result.status}: {json.dumps(answer)}", file=sys.stderr)
            return 1
        vectors = [item["embedding"] for item in answer["data"]]
        cosine = sum(a * b for a, b in zip(*vectors))  # the served vectors are L2-normalised
        print(
            f"HTTP {result.status}: {len(vectors)} embeddings of {len(vectors[0])} floats from {answer['model']}, "
            f"{answer['usage']['prompt_tokens']} tokens; first values {[round(v, 4) for v in vectors[0][:4]]}; "
            f"cosine between the two sentences {cosine:.4f}"
        )
        if args.exit:
            return 0
        print(f"Still serving; try: votive invoke {server.url} --path /v1/embeddings --data "
              "'{\"input\": \"hello\"}'   (Ctrl-C stops)", flush=True)
        server.wait()
    finally:
        server.stop()
    return 0


# --- build -------------------------------------------------------------------------------------------------


def _add_build(parser: argparse.ArgumentParser) -> None:
    targets = parser.add_subparsers(title="targets", metavar="TARGET", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("model", metavar="MODEL", help="model folder, weight file, Hub id, pkg:NAME or alias")
    common.add_argument("--out", help="output folder (default build/<model>-<target>)")
    common.add_argument("--force", action="store_true", help="replace an earlier build in --out")

    lam = targets.add_parser("lambda", parents=[common], help="Lambda layers, function zip and manifest",
                             description="Build Lambda layers (runtime, model), a function zip and manifest.json.")
    lam.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64", help="CPU (default x86_64)")
    lam.add_argument("--python", choices=("3.11", "3.12", "3.13"), default="3.12", help="runtime (default 3.12)")
    lam.add_argument("--weights", choices=("auto", "layer", "s3"), default="auto",
                     help="a layer when function + layers fit in 250 MB unzipped, else S3 (default auto)")
    lam.add_argument("--s3-uri", metavar="s3://BUCKET/PREFIX/", help="where S3-staged weights will be uploaded")
    lam.add_argument("--constraint", metavar="FILE", help="pip constraints file pinning dependency versions")
    lam.add_argument("--stream", action="store_true",
                     help="stream answers (generation): votive's runtime loop via a wrapper script, RESPONSE_STREAM")
    lam.set_defaults(run=_run_build, target="lambda")

    image = targets.add_parser("image", parents=[common], help="container image build context (Dockerfile + app)",
                               description="Write a container image build context; build it if Docker is here.")
    image.add_argument("--gpu", action="store_true", help="CUDA base image, cupy, kernel cache warmed at build")
    image.add_argument("--arch", choices=("x86_64", "arm64"), default="x86_64", help="CPU (default x86_64)")
    image.add_argument("--python", default="3.12", help="the image's Python (default 3.12)")
    image.add_argument("--tag", help="image name (default votive-<model>)")
    image.add_argument("--stream", action="store_true",
                       help="entry point votive's runtime loop, which streams answers (generation), not awslambdaric")
    image.set_defaults(run=_run_build, target="image")

    modal = targets.add_parser("modal", parents=[common], help="a Modal app module",
                               description="Write a Modal app serving the model over HTTP.")
    modal.add_argument("--gpu", choices=("T4", "L4", "A10G", "A100", "H100"), help="GPU type (default: CPU only)")
    modal.add_argument("--python", default="3.12", help="the image's Python (default 3.12)")
    modal.add_argument("--weights", choices=("image", "volume"), default="image",
                       help="bake the weights into the image, or keep them in a modal.Volume (default image)")
    modal.add_argument("--min-containers", type=_non_negative_int, default=0, metavar="N", help="kept warm (default 0)")
    modal.add_argument("--max-containers", type=_positive_int, default=10, metavar="N", help="at most (default 10)")
    modal.set_defaults(run=_run_build, target="modal")


def _run_build(args: argparse.Namespace) -> int:
    import re
    from pathlib import Path

    from votive.packaging import report
    from votive.packaging.tools import BuildTools

    tools = BuildTools(log=lambda line: print(f"votive: {line}", file=sys.stderr, flush=True))
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", args.model).strip("-.") or "model"
    out = Path(args.out or Path("build") / f"{slug}-{args.target}")
    if args.target == "lambda":
        from votive.packaging.lambda_build import LambdaTarget, build_lambda

        target = LambdaTarget(arch=args.arch, python=args.python, weights=args.weights, s3_uri=args.s3_uri,
                              constraints=Path(args.constraint) if args.constraint else None, stream=args.stream)
        result = build_lambda(args.model, out, target, force=args.force, tools=tools)
        print(report.lambda_summary(result.manifest, result.out))
    elif args.target == "image":
        from votive.packaging.image_build import ImageTarget, build_image

        target = ImageTarget(gpu=args.gpu, python=args.python, arch=args.arch, tag=args.tag, stream=args.stream)
        print(report.image_summary(build_image(args.model, out, target, force=args.force, tools=tools), out))
    else:
        from votive.packaging.modal_build import ModalTarget, build_modal

        target = ModalTarget(gpu=args.gpu, python=args.python, weights=args.weights,
                             min_containers=args.min_containers, max_containers=args.max_containers)
        print(report.modal_summary(build_modal(args.model, out, target, force=args.force, tools=tools), out))
    return 0


# --- the table -----------------------------------------------------------------------------------------------

SUBCOMMANDS = (
    ("serve", "serve a model behind a local Lambda function URL", _add_serve),
    ("invoke", "send a request to a function URL and print the answer", _add_invoke),
    ("demo", "serve an embedding model locally and answer one real request through its function URL", _add_demo),
    ("build", "build deployable artifacts: Lambda layers and function zip, a container image, a Modal app",
     _add_build),
    ("deploy", "deploy a model to AWS Lambda (function URL) or Modal (GPU web endpoint)", deploy_commands.add_deploy),
    ("destroy", "remove everything a deployment created", deploy_commands.add_destroy),
    ("status", "show a deployment's state, URL and settings", deploy_commands.add_status),
    ("logs", "print a deployed function's CloudWatch logs (--follow for new ones)", deploy_commands.add_logs),
    ("export", "write a deployment as infrastructure as code (a CloudFormation template)", deploy_commands.add_export),
)


# --- argument types ----------------------------------------------------------------------------------------


def _checked(convert, what: str, accept, rule: str):
    """An argparse type: convert the text, then check the value against `rule`."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{rule}, found {text}")
        return value

    return parse


_positive_int = _checked(int, "a whole number", lambda v: v >= 1, "must be at least 1")
_non_negative_int = _checked(int, "a whole number", lambda v: v >= 0, "must be 0 or more")
_seconds = _checked(float, "a number of seconds", lambda v: 0 < v <= 86400, "must be more than 0 and at most 86400")
_port = _checked(int, "a port number", lambda v: 0 <= v <= 65535, "must be from 0 to 65535")


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in message.splitlines() if part.strip())


if __name__ == "__main__":
    sys.exit(main())

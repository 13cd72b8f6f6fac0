"""The `feedwarden` command: worker, offline scoring, embedded broker and the demo run.

Heavy imports happen inside each command, so `feedwarden --help` is quick
and the worker never imports training code (torch).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import BinaryIO, cast

STREAM_COMMANDS = ("worker", "score", "broker", "run", "bench")
EXIT_CONFIG = 2


def count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _binary(path: Path, mode: str) -> contextlib.AbstractContextManager[BinaryIO]:
    """The file at `path`, or for "-" the standard stream (left open)."""
    if str(path) != "-":
        return cast(BinaryIO, path.open(mode))
    return contextlib.nullcontext(sys.stdin.buffer if "r" in mode else sys.stdout.buffer)


def build_parser(with_training: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="feedwarden", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    worker = commands.add_parser("worker", help="run the streaming worker (settings from env vars)")
    worker.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    worker.set_defaults(handler=_worker)

    score = commands.add_parser("score", help="score a JSONL file of posts offline")
    score.add_argument("--in", dest="source", type=Path, required=True,
                       help="posts, one JSON object a line ('-': standard input)")
    score.add_argument("--out", dest="sink", type=Path, required=True,
                       help="one result line per input line ('-': standard output)")
    score.add_argument("--bundle", type=Path, help="bundle directory (default: the packaged bundle)")
    score.add_argument("--batch-size", type=int, default=64)
    score.add_argument("--providers", default="auto", choices=("auto", "cpu", "cuda"))
    score.set_defaults(handler=_score)

    broker = commands.add_parser("broker", help="run an embedded Tansu broker and print its bootstrap")
    broker.add_argument("--partitions", type=int, default=1, help="partitions of the worker's topics")
    broker.set_defaults(handler=_broker)

    run = commands.add_parser("run", help="embedded broker + worker + replay of the sample stream")
    run.add_argument("--posts", type=int, default=60, help="sample posts to replay (cycled, unique ids)")
    run.add_argument("--malformed", type=int, default=16, help="malformed payloads to replay")
    run.add_argument("--once", action="store_true", help="exit once every decision has arrived")
    run.add_argument("--timeout", type=float, default=120.0, help="with --once: give up after this long")
    run.add_argument("--web-port", type=int, default=6066)
    run.set_defaults(handler=_run)

    bench = commands.add_parser(
        "bench", help="engine vs end-to-end throughput, latency at half load, stages and RSS")
    bench.add_argument("--posts", type=int, help="posts per phase (default 5000; 300 with --quick)")
    bench.add_argument("--batch-size", type=int, help="worker micro-batch (default: FEEDWARDEN_BATCH_SIZE)")
    bench.add_argument("--paced-seconds", type=float, help="paced-load duration (default 15; 4 with --quick)")
    bench.add_argument("--paced-rate", type=float,
                       help="paced load in posts/s (default: half the measured end-to-end maximum)")
    bench.add_argument("--producer-linger-ms", type=int, default=5,
                       help="the paced producer's linger.ms (default 5, the Kafka producer's default "
                       "since Apache Kafka 4.0; 0 sends one request per post)")
    bench.add_argument("--source", type=Path, help="JSONL posts with a text field (default: Janitr valid "
                       "texts if ../shared/data is present, else the packaged samples)")
    bench.add_argument("--quick", action="store_true", help="small run (a smoke test)")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON")
    bench.add_argument("--repeat", type=count, default=1,
                       help="whole runs; more than 1 prints each run's headline figures and their medians")
    bench.set_defaults(handler=_bench)

    if with_training:
        _register_training(commands)
    return parser


def _register_training(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the training engineer's commands when that module is installed and importable."""
    try:
        module = importlib.import_module("feedwarden.training.cli")
    except ImportError as exc:  # training extras (torch, ...) not installed
        logging.getLogger(__name__).debug("training commands unavailable: %s", exc)
        return
    module.register(commands)
    importlib.import_module("feedwarden.training.retrain").register(commands)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Our own commands never need training code; skip importing it for them.
    ours = bool(argv) and argv[0] in STREAM_COMMANDS
    args = build_parser(with_training=not ours).parse_args(argv)
    return int(args.handler(args) or 0)


def _worker(args: argparse.Namespace) -> int:
    from feedwarden.models.bundle import BundleError
    from feedwarden.policy import PolicyError
    from feedwarden.stream.settings import Settings, SettingsError
    from feedwarden.stream.worker import run_worker

    try:
        settings = Settings.from_env()
        run_worker(settings, loglevel=args.log_level)
    except (SettingsError, BundleError, PolicyError) as exc:
        print(f"feedwarden worker: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def _score(args: argparse.Namespace) -> int:
    from feedwarden.models.bundle import default_bundle_path
    from feedwarden.stream.offline import score_file
    from feedwarden.stream.records import MAX_TEXT_CHARS
    from feedwarden.stream.topology import Scorer

    scorer = Scorer.from_bundle(args.bundle or default_bundle_path(), providers=args.providers)
    started = time.monotonic()

    def progress(lines: int) -> None:
        if lines % (args.batch_size * 64) == 0:
            rate = lines / max(1e-9, time.monotonic() - started)
            print(f"scored {lines} lines ({rate:.0f}/s)", file=sys.stderr, flush=True)

    with _binary(args.source, "rb") as source, _binary(args.sink, "wb") as sink:
        counts = score_file(source, sink, scorer, max_text_chars=MAX_TEXT_CHARS,
                            chunk_size=args.batch_size * 8, progress=progress)
    elapsed = time.monotonic() - started
    where = "standard output" if str(args.sink) == "-" else args.sink
    print(f"{counts['decided']} decided, {counts['errors']} bad lines, {elapsed:.1f}s -> {where}",
          file=sys.stderr)
    return 0


def _broker(args: argparse.Namespace) -> int:
    import asyncio

    from feedwarden.stream.broker import create_topics, start_broker
    from feedwarden.stream.settings import Topics

    with start_broker() as broker:
        asyncio.run(create_topics(broker.bootstrap, Topics().all(), default_partitions=args.partitions))
        print(f"KAFKA_BOOTSTRAP={broker.bootstrap}", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        try:
            while broker.alive():
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
        print(f"broker exited; see {broker.log_path}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from feedwarden.stream.runner import RunOptions, run

    return run(RunOptions(posts=args.posts, malformed=args.malformed, once=args.once,
                          timeout_s=args.timeout, web_port=args.web_port))


def _bench(args: argparse.Namespace) -> int:
    from feedwarden.stream.bench import BenchOptions, bench

    options = BenchOptions(
        posts=args.posts or (300 if args.quick else 5000), batch_size=args.batch_size,
        paced_seconds=args.paced_seconds or (4.0 if args.quick else 15.0),
        paced_rate=args.paced_rate, producer_linger_ms=args.producer_linger_ms,
        engine_repeats=1 if args.quick else 2, source=args.source, as_json=args.json,
        repeat=args.repeat,
    )
    return bench(options)


if __name__ == "__main__":
    sys.exit(main())

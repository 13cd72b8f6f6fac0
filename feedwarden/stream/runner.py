"""`feedwarden run`: an embedded broker, a worker subprocess and a replay of sample traffic.

Decisions and dead letters are printed as they arrive. Every child is
stopped on exit, Ctrl-C or SIGTERM: the worker first (so it commits), then
the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from feedwarden.stream.broker import EmbeddedBroker, free_port, start_broker
from feedwarden.stream.samples import malformed_payloads, numbered_posts
from feedwarden.stream.settings import Settings
from feedwarden.stream.worker import ensure_topics

# Tansu answers JoinGroup after half the session timeout; keep it short locally.
LOCAL_SESSION_TIMEOUT_S = "6"
TEXT_PREVIEW = 60
SHOWN_HITS = 2  # most severe first; the rest are counted
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """SIGINT or SIGTERM arrived: unwind, stopping the worker and then the broker."""


@dataclass(frozen=True)
class RunOptions:
    posts: int
    malformed: int
    once: bool
    timeout_s: float
    web_port: int


def run(options: RunOptions, out: TextIO = sys.stdout) -> int:
    """The demo job; returns the process exit code."""
    # Explicit handlers: a shell may start us with SIGINT ignored (background jobs).
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in STOP_SIGNALS}
    try:
        with start_broker() as broker:
            env = local_worker_env(broker, options.web_port)
            settings = Settings.from_env(env)
            asyncio.run(ensure_topics(settings))
            print(f"broker   {broker.bootstrap} (embedded Tansu, memory only)", file=out)
            with worker_process(env) as worker:
                print(f"worker   pid {worker.pid}; metrics http://127.0.0.1:{settings.web_port}/metrics, "
                      f"readiness /readyz", file=out)
                return asyncio.run(_until_stopped(_replay_and_watch(settings, options, worker, out)))
    except Stopped:
        print("stopping", file=out)
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _raise_stopped(signum: int, frame: object) -> None:
    raise Stopped


async def _until_stopped(job: Coroutine[Any, Any, int]) -> int:
    """Await `job`; a stop signal cancels it, so its own cleanup (stopping its Kafka clients)
    runs before Stopped unwinds the rest. Raised from a signal handler inside the event loop,
    Stopped could land in a Kafka client's internals and leave its stop() hanging: `run`
    then outlived a SIGTERM sent after the sample stream was decided by over 60 s, 2 times in 7."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await job
    except asyncio.CancelledError:
        raise Stopped from None
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)  # which resets it to the default...
            signal.signal(sig, _raise_stopped)  # ...so a stop during the children's shutdown still unwinds


def local_worker_env(broker: EmbeddedBroker, web_port: int) -> dict[str, str]:
    port = web_port if _port_free(web_port) else free_port()
    return os.environ | {
        "KAFKA_BOOTSTRAP": broker.bootstrap,
        "FEEDWARDEN_WEB_PORT": str(port),
        "FEEDWARDEN_WEB_BIND": "127.0.0.1",
        "FEEDWARDEN_SESSION_TIMEOUT_S": LOCAL_SESSION_TIMEOUT_S,
    }


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def worker_process(env: Mapping[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """A `feedwarden worker` child in its own session, so a terminal Ctrl-C reaches only us."""
    process = subprocess.Popen(
        [sys.executable, "-m", "feedwarden.cli", "worker", "--log-level", "warning"],
        env=dict(env), stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        yield process
    finally:
        stop_process(process)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _replay_and_watch(
    settings: Settings, options: RunOptions, worker: subprocess.Popen[bytes], out: TextIO
) -> int:
    posts = list(numbered_posts(options.posts))
    bad = malformed_payloads(options.malformed)
    texts = {str(p["id"]): str(p["text"]) for p in posts}
    await produce_posts(settings, [orjson.dumps(p) for p in posts] + [payload for _, payload in bad])
    print(f"replayed {len(posts)} posts and {len(bad)} malformed payloads to '{settings.topics.posts}'",
          file=out)
    expected = {settings.topics.decisions: len(posts), settings.topics.dlq: len(bad)}
    return await _watch(settings, options, expected, texts, worker, out)


async def produce_posts(settings: Settings, payloads: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap, acks="all")
    await producer.start()
    try:
        for payload in payloads:
            await producer.send(settings.topics.posts, payload)
        await producer.flush()
    finally:
        await producer.stop()


async def _watch(
    settings: Settings,
    options: RunOptions,
    expected: dict[str, int],
    texts: dict[str, str],
    worker: subprocess.Popen[bytes],
    out: TextIO,
) -> int:
    consumer = AIOKafkaConsumer(
        *expected, bootstrap_servers=settings.bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen = dict.fromkeys(expected, 0)
    started = time.monotonic()
    announced = False
    try:
        while True:
            complete = all(seen[t] >= n for t, n in expected.items())
            if complete and not announced:
                print(f"done: {seen[settings.topics.decisions]} decisions, {seen[settings.topics.dlq]} dead "
                      f"letters in {time.monotonic() - started:.1f}s"
                      + ("" if options.once else "; still watching, Ctrl-C stops"), file=out, flush=True)
                announced = True
            if complete and options.once:
                return 0
            if worker.poll() is not None:
                print(f"worker exited with code {worker.returncode}", file=out)
                return 1
            if options.once and time.monotonic() - started > options.timeout_s:
                print(f"timed out: {seen} of {expected}", file=out)
                return 1
            batches = await consumer.getmany(timeout_ms=500)
            for tp, messages in batches.items():
                for message in messages:
                    seen[tp.topic] += 1
                    print(_describe(tp.topic, message.value or b"", settings, texts), file=out, flush=True)
    finally:
        await consumer.stop()


def _describe(topic: str, value: bytes, settings: Settings, texts: dict[str, str]) -> str:
    record = orjson.loads(value)
    if topic == settings.topics.dlq:
        where = f"{record['topic']}/{record['partition']}/{record['offset']}"
        return f"DLQ    {record['error']:<18} {where:<14} {record['raw'][:TEXT_PREVIEW]!r}"
    hits = record["labels"]
    reasons = ", ".join(f"{h['label']} {h['score']:.2f}>{h['action']}" for h in hits[:SHOWN_HITS]) or "-"
    if len(hits) > SHOWN_HITS:
        reasons += f" +{len(hits) - SHOWN_HITS}"
    text = texts.get(record["post_id"], "")[:TEXT_PREVIEW]
    return f"{record['action'].upper():<6} {record['post_id']:<20} {reasons:<48} {text!r}"

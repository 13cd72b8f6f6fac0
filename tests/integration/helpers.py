"""Integration helpers: worker subprocesses, a producer and a collector of output topics."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from feedwarden.stream.broker import free_port
from feedwarden.stream.settings import Topics

# Tansu answers JoinGroup after half the session timeout: keep it short.
SESSION_TIMEOUT_S = "6"


@dataclass
class Worker:
    """A `feedwarden worker` subprocess with its own web port."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.env['FEEDWARDEN_WEB_PORT']}"

    def start(self) -> None:
        self.env["FEEDWARDEN_WEB_PORT"] = str(free_port())
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "feedwarden.cli", "worker", "--log-level", "info"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.alive():
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    async def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.alive(), f"worker died:\n{self.log_tail()}"
            if (await asyncio.to_thread(self.get, "/readyz"))[0] == 200:
                return
            await asyncio.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def worker_env(bootstrap: str, topics: Topics, bundle: Path, group: str, partitions: int) -> dict[str, str]:
    return os.environ | {
        "KAFKA_BOOTSTRAP": bootstrap,
        "FEEDWARDEN_BUNDLE": str(bundle),
        "FEEDWARDEN_GROUP_ID": group,
        "FEEDWARDEN_PARTITIONS": str(partitions),
        "FEEDWARDEN_SESSION_TIMEOUT_S": SESSION_TIMEOUT_S,
        "FEEDWARDEN_WEB_BIND": "127.0.0.1",
        "FEEDWARDEN_PROVIDERS": "cpu",
        "FEEDWARDEN_TOPIC_POSTS": topics.posts,
        "FEEDWARDEN_TOPIC_DECISIONS": topics.decisions,
        "FEEDWARDEN_TOPIC_HIDE": topics.hide,
        "FEEDWARDEN_TOPIC_WARN": topics.warn,
        "FEEDWARDEN_TOPIC_BADGE": topics.badge,
        "FEEDWARDEN_TOPIC_DLQ": topics.dlq,
    }


async def produce(
    bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes]]
) -> list[tuple[int, int]]:
    """Send (key, value) pairs; returns each one's (partition, offset)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=2 << 20)
    await producer.start()
    try:
        acks = [await producer.send(topic, value, key=key) for key, value in items]
        return [(meta.partition, meta.offset) for meta in await asyncio.gather(*acks)]
    finally:
        await producer.stop()


@dataclass
class Collector:
    """Reads every output topic from the beginning, keeping raw values per topic."""

    bootstrap: str
    topics: tuple[str, ...]
    records: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=lambda: defaultdict(list))
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Collector:
        consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        await consumer.start()
        self._task = asyncio.create_task(self._run(consumer))
        return self

    async def _run(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                for tp, messages in (await consumer.getmany(timeout_ms=300)).items():
                    self.records[tp.topic].extend((m.key or b"", m.value or b"") for m in messages)
        finally:
            await consumer.stop()

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def wait_for(self, done: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                counts = {t: len(v) for t, v in self.records.items()}
                raise AssertionError(f"timed out waiting for {what}; have {counts}")
            await asyncio.sleep(0.2)


def interleave(posts: list[bytes], bad: list[tuple[str, bytes]]) -> list[tuple[bytes | None, bytes]]:
    """Posts keyed by id, an unkeyed malformed payload after every len(posts)/len(bad) posts."""
    every = len(posts) // len(bad)
    stream: list[tuple[bytes | None, bytes]] = []
    for index, post in enumerate(posts):
        stream.append((orjson.loads(post)["id"].encode(), post))
        if index % every == every - 1 and index // every < len(bad):
            stream.append((None, bad[index // every][1]))
    return stream

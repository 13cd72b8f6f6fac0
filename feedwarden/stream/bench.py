"""`feedwarden bench`: worker throughput on the embedded broker, per batch size.

For each batch size a fresh worker subprocess meets a backlog of sample
posts; the clock runs from its first ready answer to the last decision, so
startup and group join are excluded. Batch sizes and per-stage time come
from the worker's own /metrics.
"""

from __future__ import annotations

import asyncio
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import orjson
from aiokafka import AIOKafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from feedwarden.stream.broker import EmbeddedBroker, free_port, start_broker
from feedwarden.stream.runner import local_worker_env, produce_posts, worker_process
from feedwarden.stream.samples import numbered_posts
from feedwarden.stream.settings import Settings, Topics
from feedwarden.stream.worker import ensure_topics

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class BenchResult:
    batch_size: int
    posts: int
    seconds: float
    batches: int
    stage_seconds: dict[str, float]

    @property
    def posts_per_second(self) -> float:
        return self.posts / self.seconds

    def describe(self) -> str:
        total = sum(self.stage_seconds.values()) or 1.0
        shares = ", ".join(f"{stage} {seconds / total:.0%}" for stage, seconds in
                           sorted(self.stage_seconds.items(), key=lambda kv: -kv[1]))
        return (f"batch {self.batch_size:>4}: {self.posts} posts in {self.seconds:.1f}s = "
                f"{self.posts_per_second:.0f} posts/s; {self.batches} batches, mean "
                f"{self.posts / max(1, self.batches):.1f} posts; time by stage: {shares}")


def bench(posts: int, batch_sizes: Sequence[int], out: TextIO = sys.stdout) -> int:
    with start_broker() as broker:
        print(f"broker {broker.bootstrap}; {posts} sample posts per run", file=out, flush=True)
        for batch_size in batch_sizes:
            result = _one_run(broker, posts, batch_size)
            print(result.describe(), file=out, flush=True)
    return 0


def _one_run(broker: EmbeddedBroker, posts: int, batch_size: int) -> BenchResult:
    run = uuid.uuid4().hex[:6]
    env = local_worker_env(broker, free_port()) | {
        "FEEDWARDEN_BATCH_SIZE": str(batch_size),
        "FEEDWARDEN_GROUP_ID": f"bench-{run}",
        "FEEDWARDEN_TOPIC_POSTS": f"bench-posts-{run}",
        "FEEDWARDEN_TOPIC_DECISIONS": f"bench-decisions-{run}",
    }
    settings = Settings.from_env(env)
    asyncio.run(ensure_topics(settings))
    asyncio.run(produce_posts(settings, [orjson.dumps(p) for p in numbered_posts(posts)]))
    url = f"http://127.0.0.1:{settings.web_port}"
    with worker_process(env):
        _wait_ready(url)
        started = time.monotonic()
        asyncio.run(_await_decisions(settings.bootstrap, settings.topics, posts))
        seconds = time.monotonic() - started
        batches, stages = _batch_metrics(_get(url + "/metrics"))
    return BenchResult(batch_size, posts, seconds, batches, stages)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode()


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            _get(url + "/readyz")
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise TimeoutError(f"worker at {url} not ready in {READY_TIMEOUT_S:.0f}s")


async def _await_decisions(bootstrap: str, topics: Topics, expected: int) -> None:
    consumer = AIOKafkaConsumer(topics.decisions, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        seen = 0
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=200)
            seen += sum(len(messages) for messages in batches.values())
    finally:
        await consumer.stop()


def _batch_metrics(exposition: str) -> tuple[int, dict[str, float]]:
    batches, stages = 0, {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "feedwarden_batch_size_count":
                batches = int(sample.value)
            elif sample.name == "feedwarden_batch_stage_seconds_sum":
                stages[sample.labels["stage"]] = sample.value
    return batches, stages
